//! The console websockets: `GET /v1/domains/{name}/console` (serial bytes) and `.../vnc`
//! (raw RFB, as noVNC speaks it), over hyper's upgrade and tungstenite.
//!
//! Browsers cannot set headers on a websocket, so these routes authenticate by a one-use
//! ticket in the URL (`?ticket=`, minted by `POST .../console/ticket` or `.../vnc/ticket`);
//! the connection then acts as the ticket's minter. Every refusal is answered before the
//! upgrade (401 unknown/used/expired ticket, 403 a ticket for another domain or kind, 404 an
//! unknown domain) and audited.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::auth::{self, Caller};
use super::error::ApiError;
use super::response::{full, Response};
use super::{Auth, Ctx};
use crate::config::Role;
use crate::service::audit::{Actor, Asked, Refusal};
use crate::service::console::{Kind, Mode};
use crate::service::Service;

/// Largest frame or message a client may send (keystrokes and RFB client messages are
/// small); a larger one closes the connection (1009) and is audited.
pub const MAX_FRAME: usize = 64 * 1024;
/// Console output (history, and what piled up since the last send) leaves in frames of at
/// most this.
const OUT_FRAME: usize = 64 * 1024;
/// A ping this often; a client silent for `DEAD` is gone.
const PING: Duration = Duration::from_secs(15);
const DEAD: Duration = Duration::from_secs(45);
/// A client that takes longer than this to accept one frame is cut off.
const SEND_DEADLINE: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The websocket routes: `(kind, domain)` for `GET /v1/domains/{name}/console|vnc`.
pub(super) fn route<B>(req: &Request<B>) -> Option<(Kind, String)> {
    if req.method() != Method::GET {
        return None;
    }
    let rest = req.uri().path().strip_prefix("/v1/domains/")?;
    let (name, tail) = rest.split_once('/')?;
    let kind = match tail {
        "console" => Kind::Console,
        "vnc" => Kind::Vnc,
        _ => return None,
    };
    (!name.is_empty()).then(|| (kind, name.to_owned()))
}

/// Authenticates by ticket, checks the domain, and upgrades; every refusal audited.
pub(super) async fn serve(
    req: Request<Incoming>,
    ctx: &Ctx,
    auth: &Auth,
    (kind, name): (Kind, String),
) -> Response {
    let path = req.uri().path().to_owned();
    let (mut base, peer) = match auth {
        Auth::Peer(caller) => (caller.actor.clone(), None),
        Auth::Token(_, peer) => (
            Actor {
                via: "http-tcp",
                peer: *peer,
                ..Actor::default()
            },
            *peer,
        ),
    };
    base.peer = peer;
    match upgrade(req, ctx, auth, kind, &name, base.clone()).await {
        Ok(r) => r,
        Err((e, actor)) => {
            if let Some(outcome) = super::refused(e.status) {
                ctx.service.audit_refused(Refusal {
                    actor: actor.unwrap_or(base),
                    asked: Asked::http("GET", &path),
                    outcome,
                    reason: e.message.clone(),
                });
            }
            e.into_response()
        }
    }
}

type Refused = (ApiError, Option<Actor>);

async fn upgrade(
    req: Request<Incoming>,
    ctx: &Ctx,
    auth: &Auth,
    kind: Kind,
    name: &str,
    base: Actor,
) -> Result<Response, Refused> {
    // A bearer token, when one is sent, must be good and allowed these routes too.
    if let Auth::Token(tokens, _) = auth {
        if req.headers().contains_key(hyper::header::AUTHORIZATION) {
            let caller = auth::token_caller(&req, tokens).map_err(|e| (e, None))?;
            let info = match kind {
                Kind::Console => &crate::ops::table::CONSOLE,
                Kind::Vnc => &crate::ops::table::VNC,
            };
            info.access
                .check(Some(caller.role), info.what)
                .map_err(|why| {
                    (
                        ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
                        Some(caller.actor.clone()),
                    )
                })?;
        }
    }
    let query = super::request::query(&req).map_err(|e| (e, None))?;
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let ticket = query.get("ticket").ok_or_else(|| {
        (
            unauthorized(crate::service::console::TicketError::Missing(kind.as_str()).to_string()),
            None,
        )
    })?;
    let minter = ctx.service.redeem_ticket(ticket, name, kind).map_err(|e| {
        let status = if e.forbidden() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        let code = if e.forbidden() {
            "forbidden"
        } else {
            "unauthorized"
        };
        (ApiError::new(status, code, e.to_string()), None)
    })?;
    // The connection acts as whoever minted the ticket, seen from this connection.
    let actor = Actor {
        via: base.via,
        peer: base.peer,
        ..minter
    };
    let refuse = |e: ApiError| (e, Some(actor.clone()));
    let mode = match query.get("mode").map(String::as_str) {
        None | Some("viewer") => Mode::Viewer,
        Some("writer") => Mode::Writer,
        Some(other) => {
            return Err(refuse(ApiError::bad_request(format!(
                "query parameter mode: {other:?} is not viewer or writer"
            ))))
        }
    };
    let key = handshake_key(&req).map_err(refuse)?;
    let protocol = wants_binary(&req);
    // Checked before the upgrade: an unknown or stopped domain is an HTTP answer.
    let session = match kind {
        Kind::Console => Session::Console(
            ctx.service
                .console(name)
                .map_err(|e| refuse(e.into()))?
                .join(mode),
        ),
        Kind::Vnc => Session::Vnc(
            ctx.service
                .vnc_connect(name)
                .await
                .map_err(|e| refuse(e.into()))?,
        ),
    };
    let caller = Caller {
        role: actor.role.unwrap_or(Role::Operator),
        actor: actor.clone(),
    };
    let slot = ctx.limits.admit_stream(&caller).map_err(refuse)?;
    let svc = ctx.service.clone();
    let shutdown = ctx.shutdown.clone();
    let op = kind.as_str();
    let name = name.to_owned();
    svc.audit_console(actor.clone(), op, &name, "ok", None);
    let upgrading = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _slot = slot;
        let io = match upgrading.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(domain = %name, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_frame_size(Some(MAX_FRAME))
            .max_message_size(Some(MAX_FRAME));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(io), WsRole::Server, Some(config)).await;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(ws, session, &svc, &actor, &name, op) => {}
        }
    });
    let mut r = hyper::Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    if protocol {
        h.insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
    }
    Ok(r)
}

enum Session {
    Console(crate::service::console::Viewer),
    Vnc(tokio::net::UnixStream),
}

/// `Sec-WebSocket-Accept` for a well-formed websocket request, else 400.
fn handshake_key<B>(req: &Request<B>) -> Result<String, ApiError> {
    let h = req.headers();
    let has = |name: hyper::header::HeaderName, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    if !has(UPGRADE, "websocket") || !has(CONNECTION, "upgrade") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this route is a websocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .get("sec-websocket-key")
        .ok_or_else(|| ApiError::bad_request("Sec-WebSocket-Key is missing"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

fn wants_binary<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "binary")
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn send(ws: &mut futures_util::stream::SplitSink<Ws, Message>, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_DEADLINE, ws.send(m)).await,
        Ok(Ok(()))
    )
}

/// Console output as binary frames of at most `OUT_FRAME`, written with one flush (one
/// write to the socket when it takes them), all within one send deadline.
async fn send_output(ws: &mut futures_util::stream::SplitSink<Ws, Message>, b: Bytes) -> bool {
    let all = async {
        let mut at = 0;
        while at < b.len() {
            let end = b.len().min(at + OUT_FRAME);
            ws.feed(Message::Binary(b.slice(at..end))).await?;
            at = end;
        }
        ws.flush().await
    };
    matches!(tokio::time::timeout(SEND_DEADLINE, all).await, Ok(Ok(())))
}

/// What a client sent that ends the session.
enum Inbound {
    Data(Bytes),
    Alive,
    Closed,
    TooLarge(String),
}

fn inbound(m: Option<Result<Message, WsError>>) -> Inbound {
    match m {
        Some(Ok(Message::Binary(b))) => Inbound::Data(b),
        // xterm.js's attach addon sends keystrokes as text.
        Some(Ok(Message::Text(t))) => Inbound::Data(Bytes::copy_from_slice(t.as_bytes())),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Inbound::Alive,
        Some(Err(WsError::Capacity(e))) => Inbound::TooLarge(e.to_string()),
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Inbound::Closed,
    }
}

async fn run(ws: Ws, session: Session, svc: &Service, actor: &Actor, name: &str, op: &str) {
    let (mut tx, mut rx) = ws.split();
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    let mut seen = Instant::now();
    let ending: Option<Message> = match session {
        Session::Console(mut viewer) => {
            let history = Bytes::from(std::mem::take(&mut viewer.history));
            if !send_output(&mut tx, history).await {
                return;
            }
            loop {
                tokio::select! {
                    out = viewer.recv() => match out {
                        Ok(b) => if !send_output(&mut tx, b).await { return },
                        Err(why) => {
                            use crate::service::console::serial::Ended;
                            break Some(match why {
                                Ended::TooSlow => close(CloseCode::Policy, "too slow: fell behind the console output"),
                                Ended::TakenOver => close(CloseCode::Library(4001), "another client took the writer's seat"),
                                Ended::Gone => close(CloseCode::Away, "the guest stopped"),
                            });
                        }
                    },
                    m = rx.next() => match inbound(m) {
                        Inbound::Data(b) => { seen = Instant::now(); viewer.input(b).await; }
                        Inbound::Alive => seen = Instant::now(),
                        Inbound::Closed => return,
                        Inbound::TooLarge(e) => {
                            svc.audit_console(actor.clone(), op, name, "frame_too_large", Some(e));
                            break Some(close(CloseCode::Size, "frame over the size limit"));
                        }
                    },
                    _ = ping.tick() => {
                        if seen.elapsed() > DEAD {
                            break Some(close(CloseCode::Away, "no pong"));
                        }
                        if !send(&mut tx, Message::Ping(Bytes::new())).await { return }
                    }
                }
            }
        }
        Session::Vnc(stream) => {
            let (mut rd, mut wr) = stream.into_split();
            let mut buf = vec![0u8; OUT_FRAME];
            loop {
                tokio::select! {
                    n = rd.read(&mut buf) => match n {
                        Ok(0) | Err(_) => break Some(close(CloseCode::Away, "the VNC server closed the connection")),
                        Ok(n) => if !send(&mut tx, Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await { return },
                    },
                    m = rx.next() => match inbound(m) {
                        Inbound::Data(b) => {
                            seen = Instant::now();
                            if wr.write_all(&b).await.is_err() { break None }
                        }
                        Inbound::Alive => seen = Instant::now(),
                        Inbound::Closed => return,
                        Inbound::TooLarge(e) => {
                            svc.audit_console(actor.clone(), op, name, "frame_too_large", Some(e));
                            break Some(close(CloseCode::Size, "frame over the size limit"));
                        }
                    },
                    _ = ping.tick() => {
                        if seen.elapsed() > DEAD {
                            break Some(close(CloseCode::Away, "no pong"));
                        }
                        if !send(&mut tx, Message::Ping(Bytes::new())).await { return }
                    }
                }
            }
        }
    };
    if let Some(m) = ending {
        let _ = send(&mut tx, m).await;
    }
}
