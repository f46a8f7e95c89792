//! The HTTP API (hyper 1.x): a Unix socket by default, TCP with bearer tokens when configured.
//! See daemon/API.md and daemon/openapi.json.

mod auth;
pub mod error;
mod events;
mod hosts;
pub mod metrics;
mod migration;
mod request;
mod response;
pub mod routes;
pub mod tls;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiToken, Config};
use crate::Service;
use auth::Caller;
use response::Response;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

/// A slow client must send its request head within this, or is disconnected.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
const MAX_HEADERS: usize = 64;
/// Concurrent TCP connections (authenticated or not yet).
const MAX_TCP_CONNECTIONS: usize = 256;
/// How long in-flight requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub(crate) struct Ctx {
    pub service: Service,
    pub shutdown: CancellationToken,
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
        Ok(Listeners {
            unix,
            tcp,
            tls,
            tokens: Arc::new(config.api.tokens.clone()),
        })
    }

    /// Serves until `shutdown`, then lets in-flight requests finish (bounded).
    pub async fn serve(self, service: Service, shutdown: CancellationToken) {
        let ctx = Arc::new(Ctx {
            service,
            shutdown: shutdown.clone(),
        });
        let graceful = GracefulShutdown::new();
        let tcp_slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.unix.accept() => match accepted {
                    Ok((stream, _)) => {
                        let uid = stream.peer_cred().ok().map(|c| c.uid());
                        serve_conn(graceful.watcher(), stream, ctx.clone(), Auth::Peer(auth::unix_caller(uid)), None);
                    }
                    Err(e) => accept_failed(e).await,
                },
                accepted = accept_tcp(&self.tcp) => match accepted {
                    Ok(stream) => {
                        // Unauthenticated peers may hold a connection for up to the handshake
                        // and header deadlines: bound how many, so they cannot exhaust the
                        // daemon's descriptors (which QMP, logs and records need).
                        let Ok(permit) = tcp_slots.clone().try_acquire_owned() else {
                            tracing::warn!("too many TCP connections; refusing one");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let auth = Auth::Token(self.tokens.clone());
                        match &self.tls {
                            Some(acceptor) => serve_tls(
                                acceptor.clone(),
                                graceful.watcher(),
                                stream,
                                ctx.clone(),
                                auth,
                                permit,
                            ),
                            None => {
                                serve_conn(graceful.watcher(), stream, ctx.clone(), auth, Some(permit))
                            }
                        }
                    }
                    Err(e) => accept_failed(e).await,
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

async fn accept_tcp(tcp: &Option<TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match tcp {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Out of descriptors and the like: log, pause briefly, keep serving.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
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
    Token(Arc<Vec<ApiToken>>),
}

/// The TLS handshake runs in the connection's own task (bounded), so a slow client cannot
/// hold up the accept loop; then the connection is served as any other.
fn serve_tls(
    acceptor: TlsAcceptor,
    watcher: Watcher,
    stream: tokio::net::TcpStream,
    ctx: Arc<Ctx>,
    auth: Auth,
    permit: OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let peer = stream.peer_addr().ok();
        let shaken = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            shaken = tls::handshake(&acceptor, stream) => shaken,
        };
        match shaken {
            Ok(stream) => serve_conn(watcher, stream, ctx, auth, Some(permit)),
            Err(e) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
        }
    });
}

/// `permit`: the TCP connection slot, held as long as the connection lives.
fn serve_conn<S>(
    watcher: Watcher,
    stream: S,
    ctx: Arc<Ctx>,
    auth: Auth,
    permit: Option<OwnedSemaphorePermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let auth = Arc::new(auth);
    let service = service_fn(move |req: Request<Incoming>| {
        let (ctx, auth) = (ctx.clone(), auth.clone());
        async move { Ok::<_, Infallible>(handle(req, &ctx, &auth).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_headers(MAX_HEADERS);
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
        drop(permit);
    });
}

async fn handle(req: Request<Incoming>, ctx: &Ctx, auth: &Auth) -> Response {
    let caller = match auth {
        Auth::Peer(caller) => Ok(caller.clone()),
        Auth::Token(tokens) => auth::token_caller(&req, tokens),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = match caller {
        Ok(caller) => {
            let actor = caller.actor.clone();
            crate::service::audit::as_actor(actor, routes::dispatch(req, ctx, caller)).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, message = %e.message, "request refused");
            e.into_response()
        }
    }
}
