//! The HTTP API (hyper 1.x): a Unix socket by default, TCP with bearer tokens when configured.
//! See daemon/API.md and daemon/openapi.json.

mod addresses;
mod agent;
mod auth;
mod disks;
pub mod error;
mod events;
mod hosts;
mod limits;
mod live_resources;
pub mod metrics;
mod migration;
mod networks;
mod pools;
mod ratelog;
mod request;
mod response;
pub mod routes;
mod snapshots;
mod templates;
pub mod tls;
mod ui;
mod websocket;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiToken, Config};
use crate::service::audit::{Actor, Asked, Refusal, Refused};
use crate::Service;
use auth::Caller;
use limits::{Caps, ConnSlot, Limits};
use response::Response;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

/// A new connection must send its first request head within this (after the TLS handshake,
/// which has its own deadline), or is disconnected. Later heads get the idle timeout.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
const MAX_HEADERS: usize = 64;
/// How long in-flight requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub(crate) struct Ctx {
    pub service: Service,
    pub shutdown: CancellationToken,
    limits: Arc<Limits>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The listeners, bound: binding is separate from serving so the daemon can report readiness
/// only once the sockets exist.
pub struct Listeners {
    unix: UnixListener,
    tcp: Option<TcpListener>,
    /// TLS on `tcp`, when a certificate is configured.
    tls: Option<TlsAcceptor>,
    tokens: Arc<Vec<ApiToken>>,
    limits: Arc<Limits>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        // First: a bad certificate or key must not leave a socket behind.
        let tls = match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let path = config.api_socket();
        let unix =
            activated_or_bind(&path, config.api.socket_group.as_deref()).map_err(|source| {
                ServeError::Bind {
                    what: path.display().to_string(),
                    source,
                }
            })?;
        let tcp = match config.api.listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServeError::Bind {
                            what: addr.to_string(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        // The bound address, so `listen = "127.0.0.1:0"` reports the port it got.
        if let Some(addr) = tcp.as_ref().and_then(|l| l.local_addr().ok()) {
            if tls.is_some() {
                tracing::info!(%addr, "HTTP API on TCP with TLS");
            } else {
                tracing::warn!(
                    %addr,
                    "HTTP API on TCP without TLS: bearer tokens travel in clear text \
                     (set api.tls_cert and api.tls_key)"
                );
            }
        }
        // Descriptors are what a connection flood exhausts: take all the kernel allows, and
        // size the caps so the daemon and root keep their share.
        let nofile = limits::raise_nofile();
        let caps = Caps::resolve(&config.api, nofile);
        tracing::info!(nofile, ?caps, "HTTP API connection limits");
        Ok(Listeners {
            unix,
            tcp,
            tls,
            tokens: Arc::new(config.api.tokens.clone()),
            limits: Limits::new(caps),
        })
    }

    /// Serves until `shutdown`, then lets in-flight requests finish (bounded).
    pub async fn serve(self, service: Service, shutdown: CancellationToken) {
        let limits = self.limits.clone();
        let ctx = Arc::new(Ctx {
            service,
            shutdown: shutdown.clone(),
            limits: limits.clone(),
        });
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.unix.accept() => match accepted {
                    Ok((stream, _)) => {
                        let uid = stream.peer_cred().ok().map(|c| c.uid());
                        match limits.admit_unix(uid) {
                            Ok(slot) => serve_conn(graceful.watcher(), stream, ctx.clone(), Auth::Peer(auth::unix_caller(uid)), slot),
                            Err(refusal) => {
                                audit_connection_refused(&ctx, "http-unix", uid, None, &refusal);
                                limits.refuse(stream, refusal, true)
                            }
                        }
                    }
                    Err(e) => accept_failed(&limits, e).await,
                },
                accepted = accept_tcp(&self.tcp) => match accepted {
                    Ok((stream, addr)) => {
                        // Unauthenticated peers may hold a connection for up to the handshake
                        // and header deadlines: bound how many per address and in total, so
                        // they cannot exhaust descriptors nor lock token holders out.
                        let permit = match limits.admit_tcp(addr.ip()) {
                            Ok(slot) => slot,
                            Err(refusal) => {
                                audit_connection_refused(&ctx, "http-tcp", None, Some(addr), &refusal);
                                limits.refuse(stream, refusal, self.tls.is_none());
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        let auth = Auth::Token(self.tokens.clone(), stream.peer_addr().ok());
                        match &self.tls {
                            Some(acceptor) => serve_tls(
                                acceptor.clone(),
                                graceful.watcher(),
                                stream,
                                ctx.clone(),
                                auth,
                                permit,
                            ),
                            None => serve_conn(graceful.watcher(), stream, ctx.clone(), auth, permit),
                        }
                    }
                    Err(e) => accept_failed(&limits, e).await,
                },
            }
        }
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open after {DRAIN:?}; closing them");
        }
    }
}

async fn accept_tcp(
    tcp: &Option<TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match tcp {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Out of descriptors and the like: log (rate-limited), pause briefly, keep serving.
async fn accept_failed(limits: &Limits, e: std::io::Error) {
    limits.accept_failed(&e);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The socket systemd passed (`novacrond.socket`), else one bound here.
fn activated_or_bind(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    match crate::systemd::take_unix_listener()? {
        Some(listener) => {
            tracing::info!("HTTP API on the socket passed by systemd");
            listener.set_nonblocking(true)?;
            UnixListener::from_std(listener)
        }
        None => bind_unix(path, group),
    }
}

fn bind_unix(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous daemon (it cannot still be serving: we hold the run dir).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(group) = group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => nix::unistd::chown(path, None, Some(g.gid))?,
            _ => tracing::warn!(
                group,
                "API socket group does not exist; socket left root-only"
            ),
        }
    }
    Ok(listener)
}

enum Auth {
    Peer(Caller),
    /// The tokens, and the connection's peer (for the audit log).
    Token(Arc<Vec<ApiToken>>, Option<std::net::SocketAddr>),
}

/// The TLS handshake runs in the connection's own task (bounded), so a slow client cannot
/// hold up the accept loop; then the connection is served as any other.
fn serve_tls(
    acceptor: TlsAcceptor,
    watcher: Watcher,
    stream: tokio::net::TcpStream,
    ctx: Arc<Ctx>,
    auth: Auth,
    permit: ConnSlot,
) {
    tokio::spawn(async move {
        let peer = stream.peer_addr().ok();
        let shaken = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            shaken = tls::handshake(&acceptor, stream) => shaken,
        };
        match shaken {
            Ok(stream) => serve_conn(watcher, stream, ctx, auth, permit),
            Err(e) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
        }
    });
}

/// `slot`: the connection's place under the limits, held as long as the connection lives.
fn serve_conn<S>(watcher: Watcher, stream: S, ctx: Arc<Ctx>, auth: Auth, slot: ConnSlot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let auth = Arc::new(auth);
    let slot = Arc::new(slot);
    let first_request = Arc::new(tokio::sync::Notify::new());
    let idle = ctx.limits.caps.idle;
    let shutdown = ctx.shutdown.clone();
    let service = {
        let slot = slot.clone();
        let first_request = first_request.clone();
        service_fn(move |req: Request<Incoming>| {
            let (ctx, auth, slot) = (ctx.clone(), auth.clone(), slot.clone());
            first_request.notify_one();
            async move { Ok::<_, Infallible>(admitted(req, &ctx, &auth, &slot).await) }
        })
    };
    let mut builder = http1::Builder::new();
    // The header timeout also runs while a kept-alive connection waits for its next request,
    // so it is the idle timeout; the first request has the shorter deadline below.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_headers(MAX_HEADERS);
    // With upgrades (the console and VNC websockets), which hyper-util's graceful watcher
    // does not take: the same done by hand, the watcher held until the connection ends so
    // the drain waits for it.
    let conn = async move {
        let _watcher = watcher;
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => ended,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    tokio::spawn(async move {
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => Some(ended),
            _ = first_request.notified() => None,
            _ = tokio::time::sleep(HEADER_DEADLINE) => {
                tracing::debug!("no request head within {HEADER_DEADLINE:?}; closing");
                return;
            }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => conn.await,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
        drop(slot);
    });
}

/// The connection layer around `handle`: a valid token moves the connection out of the
/// unauthenticated caps; a connection that has never authenticated is closed after its 401.
async fn admitted(req: Request<Incoming>, ctx: &Ctx, auth: &Auth, slot: &ConnSlot) -> Response {
    if let Auth::Token(tokens, _) = auth {
        if auth::token_caller(&req, tokens).is_ok() {
            slot.authenticated();
        }
    }
    let mut response = handle(req, ctx, auth).await;
    if response.status() == StatusCode::UNAUTHORIZED && !slot.is_authenticated() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn handle(req: Request<Incoming>, ctx: &Ctx, auth: &Auth) -> Response {
    // The dashboard's static files need no token (the login page is one of them).
    if ui::is_ui(req.method(), req.uri().path()) {
        return ui::serve(req.uri().path(), req.headers());
    }
    // Websockets authenticate by ticket (browsers cannot send headers on them).
    if let Some(ws) = websocket::route(&req) {
        return websocket::serve(req, ctx, auth, ws).await;
    }
    let (caller, peer) = match auth {
        Auth::Peer(caller) => (Ok(caller.clone()), None),
        Auth::Token(tokens, peer) => (auth::token_caller(&req, tokens), *peer),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Who is asked about when the call is refused: the caller, or the peer without a token.
    let mut actor = Actor {
        via: "http-tcp",
        ..Actor::default()
    };
    let result = match caller {
        Ok(mut caller) => {
            caller.actor.peer = peer;
            actor = caller.actor.clone();
            crate::service::audit::as_actor(actor.clone(), routes::dispatch(req, ctx, caller)).await
        }
        Err(e) => Err(e),
    };
    actor.peer = peer;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, message = %e.message, "request refused");
            if let Some(outcome) = refused(e.status) {
                // Every authorisation failure, wherever in the routes it was decided.
                ctx.service.audit_refused(Refusal {
                    actor,
                    asked: Asked::http(method.as_str(), &path),
                    outcome,
                    reason: e.message.clone(),
                });
            }
            e.into_response()
        }
    }
}

/// A connection refused at a cap, audited like any refusal (folded per caller, so a flood
/// costs a line or two a second, not one per connection).
fn audit_connection_refused(
    ctx: &Ctx,
    via: &'static str,
    uid: Option<u32>,
    peer: Option<std::net::SocketAddr>,
    refusal: &limits::Refusal,
) {
    ctx.service.audit_refused(Refusal {
        actor: Actor {
            via,
            uid,
            peer,
            ..Actor::default()
        },
        asked: Asked::Connection { connection: via },
        outcome: Refused::TooMany,
        reason: refusal.to_string(),
    });
}

/// The statuses that are refusals of the caller (authorisation, caps).
fn refused(status: hyper::StatusCode) -> Option<Refused> {
    match status {
        hyper::StatusCode::UNAUTHORIZED => Some(Refused::Unauthorized),
        hyper::StatusCode::FORBIDDEN => Some(Refused::Forbidden),
        hyper::StatusCode::TOO_MANY_REQUESTS => Some(Refused::TooMany),
        _ => None,
    }
}
