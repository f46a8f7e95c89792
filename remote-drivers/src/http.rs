//! The HTTP client every adapter uses, and how transport failures become driver errors.
//!
//! One `reqwest::Client` per host keeps connections alive between calls (connection reuse) and
//! holds that host's cookies (the vSphere session). Response bodies are read with a bound: a
//! vendor endpoint is untrusted input like any other.

use std::time::{Duration, Instant};

use novacron_domain::Error;

use crate::config::HostConfig;

/// The largest response body an adapter reads (a 10 000-VM inventory is well under this).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Classifies a reqwest error without its URL query (adapters never put secrets in URLs,
    /// but a vendor redirect could).
    pub fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        let e = e.without_url();
        if e.is_timeout() {
            Self::Timeout(timeout)
        } else if e.is_connect() {
            Self::Connect(error_chain(&e))
        } else {
            Self::Other(error_chain(&e))
        }
    }

    /// The driver error for host `host`: unreachable and timed-out hosts are `Unavailable` /
    /// `Timeout` (they count against the breaker); anything else is a remote failure.
    pub fn into_error(self, host: &str) -> Error {
        match self {
            Self::Connect(reason) => Error::Unavailable {
                host: host.to_owned(),
                reason,
            },
            Self::Timeout(after) => Error::Timeout {
                operation: "remote request",
                after,
            },
            other => Error::Remote {
                host: host.to_owned(),
                message: other.to_string(),
            },
        }
    }
}

/// `e` and its sources on one line (reqwest's top-level message alone is often just
/// "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The client for one host: its timeouts, its TLS policy, pooled connections, a cookie jar.
pub fn client(config: &HostConfig) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(config.timeouts.connect)
        .timeout(config.timeouts.request)
        .pool_idle_timeout(Duration::from_secs(90))
        .cookie_store(true)
        .user_agent(concat!("novacrond/", env!("CARGO_PKG_VERSION")));
    if !config.tls.verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = &config.tls.ca_file {
        let pem = read_ca_file(path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TransportError::Tls(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TransportError::Tls(format!(
                "CA file {}: no PEM certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| TransportError::Tls(error_chain(&e)))
}

/// A CA bundle is a few KiB; the cap bounds what a wrong path (`/dev/zero`) can make us read.
const MAX_CA_FILE: u64 = 1 << 20;

/// Reads the CA bundle: a regular file only (a FIFO or a device is refused before it is
/// opened, so the read cannot hang), at most [`MAX_CA_FILE`] bytes.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, TransportError> {
    use std::io::Read;
    let fail = |why: String| TransportError::Tls(format!("CA file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut pem))
        .map_err(|e| fail(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(fail(format!("over the {MAX_CA_FILE} byte limit")));
    }
    Ok(pem)
}

/// Reads a response body, refusing one over `limit` bytes before buffering it all.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, TransportError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(TransportError::TooLarge { limit });
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(TransportError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Bodies up to this size are parsed where they arrive; larger ones on the blocking pool.
pub const PARSE_INLINE_MAX: usize = 256 * 1024;

/// Runs `parse` over `body`, on the blocking pool when the body is large: parsing tens of MB
/// of vendor XML or JSON on a runtime thread would stall every other host (and the local API)
/// sharing that thread.
pub async fn parse_off_runtime<T, F>(body: bytes::Bytes, parse: F) -> Result<T, TransportError>
where
    F: FnOnce(&[u8]) -> T + Send + 'static,
    T: Send + 'static,
{
    if body.len() <= PARSE_INLINE_MAX {
        return Ok(parse(&body));
    }
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|e| TransportError::Other(format!("parser task: {e}")))
}

/// The part of a host's time limit (`outer`, enforced by [`crate::host::RemoteHost`]) an
/// adapter gives its own deadline: a little less, so the adapter times out first, with the
/// vendor's own error, and still has time to cancel what it started on the host.
pub fn inner_limit(outer: Duration) -> Duration {
    // A tenth, at least 250 ms (a cancel takes a round trip or two) but never over half the
    // limit, and at most 2 s.
    let floor = Duration::from_millis(250).min(outer / 2);
    outer.saturating_sub((outer / 10).clamp(floor, Duration::from_secs(2)))
}

/// A migration's own timeout, capped (with a warning, not silently) at `cap`, the adapter's
/// share of the host's operation limit (which bounds every lifecycle call, see
/// [`inner_limit`]); no timeout asked means `cap`.
pub fn migration_limit(asked: Option<Duration>, cap: Duration, host: &str) -> Duration {
    match asked {
        Some(t) if t > cap => {
            tracing::warn!(
                host, asked = ?t, cap = ?cap,
                "migration timeout exceeds the host's operation limit; capped (raise the host's operation timeout to allow longer migrations)"
            );
            cap
        }
        Some(t) => t,
        None => cap,
    }
}

/// `now + d` without the panic `Instant + Duration` has on overflow (a caller may pass a huge
/// shutdown timeout): saturates to a deadline centuries away.
pub fn deadline_after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// [`deadline_after`] for tokio's clock (which the paused test clock also drives).
pub fn tokio_deadline_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(deadline_after(now.into_std(), d))
}

/// A short, printable excerpt of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut text = text.trim().to_owned();
    if body.len() > MAX {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_small_regular_files() {
        let e = read_ca_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = read_ca_file(&fifo).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'x'; (MAX_CA_FILE + 1) as usize]).unwrap();
        assert!(read_ca_file(&big)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let ok = dir.path().join("ca.pem");
        std::fs::write(&ok, b"pem").unwrap();
        assert_eq!(read_ca_file(&ok).unwrap(), b"pem");
    }

    #[test]
    fn inner_limits_leave_a_margin() {
        assert_eq!(
            inner_limit(Duration::from_secs(600)),
            Duration::from_secs(598)
        );
        assert_eq!(
            inner_limit(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(inner_limit(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(
            inner_limit(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(inner_limit(Duration::ZERO), Duration::ZERO);
        assert!(inner_limit(Duration::MAX) < Duration::MAX);
    }

    #[test]
    fn huge_durations_saturate() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600));
        assert_eq!(
            deadline_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let t = tokio::time::Instant::now();
        assert!(tokio_deadline_after(t, Duration::MAX) > t);
    }

    #[tokio::test]
    async fn large_bodies_parse_off_the_runtime() {
        let small = bytes::Bytes::from_static(b"abc");
        let here = std::thread::current().id();
        let (len, same) = parse_off_runtime(small, move |b| {
            (b.len(), std::thread::current().id() == here)
        })
        .await
        .unwrap();
        assert_eq!((len, same), (3, true));
        let big = bytes::Bytes::from(vec![b'x'; PARSE_INLINE_MAX + 1]);
        let (len, same) =
            parse_off_runtime(big, move |b| (b.len(), std::thread::current().id() == here))
                .await
                .unwrap();
        assert_eq!((len, same), (PARSE_INLINE_MAX + 1, false));
    }
}
