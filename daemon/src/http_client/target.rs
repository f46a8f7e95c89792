//! Where the daemon is and how to reach it: HTTP/1.1 over a Unix socket (the default), or
//! TCP, plain or with TLS (`https://`). One connection per request keeps the client stateless; the daemon is local or
//! near, so the handshake costs next to nothing.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::{ClientError, Tls};

/// A remote host that does not answer SYNs would otherwise hang the CLI for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port[/prefix]`, or `https://` with `tls`.
    Tcp {
        host: String,
        port: u16,
        /// Path prefix before `/v1/...` (empty, or starting with `/` without a trailing one).
        prefix: String,
        /// TLS, verifying the server's certificate for `host`; `None` for plain `http://`.
        tls: Option<Tls>,
    },
}

impl Target {
    /// Parses `http://host[:port][/prefix]` or `https://…`; https trusts the public roots
    /// (`Tls::public_roots`) unless `with_tls` says otherwise.
    pub fn from_url(url: &str) -> Result<Target, ClientError> {
        let bad = |why: &str| ClientError::BadTarget(format!("invalid URL {url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => (Some(Tls::public_roots()), 443),
            _ => return Err(bad("the scheme must be http:// or https://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        // `[::1]` comes back with its brackets; the socket API wants the bare address.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Target::Tcp {
            host,
            port: uri.port_u16().unwrap_or(default_port),
            prefix,
            tls,
        })
    }

    /// Replaces whom an `https://` target trusts (e.g. `Tls::from_ca_file`). Refused for
    /// other targets: a CA means nothing to plain HTTP.
    pub fn with_tls(self, trust: Tls) -> Result<Target, ClientError> {
        match self {
            Target::Tcp {
                host,
                port,
                prefix,
                tls: Some(_),
            } => Ok(Target::Tcp {
                host,
                port,
                prefix,
                tls: Some(trust),
            }),
            other => Err(ClientError::BadTarget(format!(
                "{}: a CA certificate applies to https:// URLs only",
                other.describe()
            ))),
        }
    }

    /// The daemon's default socket for this user, mirroring the daemon's default `run_dir`:
    /// `/run/novacron` for root, else `$XDG_RUNTIME_DIR/novacron`, else `/tmp/novacron-<uid>`.
    /// A user whose own daemon is not running but who may use the system daemon (a member
    /// of the `novacron` group) gets the system socket.
    pub fn default_socket() -> PathBuf {
        let euid = nix::unistd::geteuid();
        let own = default_socket_for(
            euid.is_root(),
            euid.as_raw(),
            std::env::var_os("XDG_RUNTIME_DIR"),
        );
        let system = PathBuf::from("/run/novacron/novacrond.sock");
        if !own.exists() && system.exists() {
            system
        } else {
            own
        }
    }

    /// For messages: the socket path or the URL.
    pub fn describe(&self) -> String {
        match self {
            Target::Unix(path) => path.display().to_string(),
            Target::Tcp {
                host,
                port,
                prefix,
                tls,
            } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{port}{prefix}")
                } else {
                    format!("{scheme}://{host}:{port}{prefix}")
                }
            }
        }
    }

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> String {
        match self {
            // Required by HTTP/1.1 but meaningless on a Unix socket.
            Target::Unix(_) => "localhost".to_owned(),
            Target::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Target::Tcp { host, port, .. } => format!("{host}:{port}"),
        }
    }

    /// The request target for an API path such as `/v1/domains`.
    pub(crate) fn path(&self, api_path: &str) -> String {
        match self {
            Target::Unix(_) => api_path.to_owned(),
            Target::Tcp { prefix, .. } => format!("{prefix}{api_path}"),
        }
    }

    /// Opens a connection, sends `req` and returns the response head with its body still
    /// streaming. The connection lives until the body is dropped or read to the end.
    pub(crate) async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self {
            Target::Unix(path) => {
                let stream = connect_with_timeout(self, UnixStream::connect(path)).await?;
                exchange(stream, req).await
            }
            Target::Tcp {
                host, port, tls, ..
            } => {
                let stream =
                    connect_with_timeout(self, TcpStream::connect((host.as_str(), *port))).await?;
                // Requests are small and interactive; do not let Nagle delay them.
                let _ = stream.set_nodelay(true);
                match tls {
                    // A failed handshake (an untrusted certificate, a plain-HTTP peer) is a
                    // failure to connect, reported with the URL.
                    Some(tls) => {
                        let stream = connect_with_timeout(self, tls.connect(host, stream)).await?;
                        exchange(stream, req).await
                    }
                    None => exchange(stream, req).await,
                }
            }
        }
    }
}

fn default_socket_for(
    root: bool,
    uid: u32,
    xdg_runtime_dir: Option<std::ffi::OsString>,
) -> PathBuf {
    let run_dir = if root {
        PathBuf::from("/run/novacron")
    } else {
        // XDG: a relative value is invalid and must be ignored (as the daemon does).
        match xdg_runtime_dir.map(PathBuf::from) {
            Some(dir) if dir.is_absolute() => dir.join("novacron"),
            _ => PathBuf::from(format!("/tmp/novacron-{uid}")),
        }
    };
    run_dir.join("novacrond.sock")
}

async fn connect_with_timeout<S>(
    target: &Target,
    connect: impl std::future::Future<Output = io::Result<S>>,
) -> Result<S, ClientError> {
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        )),
    };
    result.map_err(|source| ClientError::Connect {
        target: target.describe(),
        source,
    })
}

async fn exchange<S, B>(stream: S, req: Request<B>) -> Result<Response<Incoming>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection future drives the socket; it ends with the exchange. Its error, if any,
    // also surfaces through `send_request` or the body, so it is not reported twice.
    // With upgrades: `novactl console` turns its request into a websocket.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_http_urls() {
        assert_eq!(
            Target::from_url("http://host.example:8443").unwrap(),
            Target::Tcp {
                host: "host.example".into(),
                port: 8443,
                prefix: String::new(),
                tls: None,
            }
        );
        let t = Target::from_url("http://[::1]:9000/api/").unwrap();
        assert_eq!(
            t,
            Target::Tcp {
                host: "::1".into(),
                port: 9000,
                prefix: "/api".into(),
                tls: None,
            }
        );
        assert_eq!(t.authority(), "[::1]:9000");
        assert_eq!(t.path("/v1/host"), "/api/v1/host");
        assert_eq!(t.describe(), "http://[::1]:9000/api");
        assert_eq!(
            Target::from_url("http://h").unwrap().authority(),
            "h:80".to_owned()
        );
    }

    #[test]
    fn parses_https_urls() {
        let t = Target::from_url("https://h.example/nc").unwrap();
        assert_eq!(t.authority(), "h.example:443");
        assert_eq!(t.describe(), "https://h.example:443/nc");
        assert!(matches!(&t, Target::Tcp { tls: Some(tls), .. } if tls.ca_file().is_none()));
        let e = Target::from_url("http://h:1")
            .unwrap()
            .with_tls(Tls::public_roots())
            .unwrap_err()
            .to_string();
        assert!(e.contains("https:// URLs only"), "{e}");
        assert!(t.with_tls(Tls::public_roots()).is_ok());
    }

    #[test]
    fn refuses_other_urls() {
        match Target::from_url("ftp://h") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"BadTarget("invalid URL \"ftp://h\": the scheme must be http:// or https://")"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match Target::from_url("h:80") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"BadTarget("invalid URL \"h:80\": the scheme must be http:// or https://")"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match Target::from_url("http://h/?x=1") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"BadTarget("invalid URL \"http://h/?x=1\": a query is not allowed")"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn default_socket_paths() {
        assert_eq!(
            default_socket_for(true, 0, Some("/run/user/0".into())),
            Path::new("/run/novacron/novacrond.sock")
        );
        assert_eq!(
            default_socket_for(false, 1000, Some("/run/user/1000".into())),
            Path::new("/run/user/1000/novacron/novacrond.sock")
        );
        assert_eq!(
            default_socket_for(false, 1000, Some("relative".into())),
            Path::new("/tmp/novacron-1000/novacrond.sock")
        );
        assert_eq!(
            default_socket_for(false, 1000, None),
            Path::new("/tmp/novacron-1000/novacrond.sock")
        );
    }
}
