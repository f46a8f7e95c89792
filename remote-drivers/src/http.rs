//! The HTTP client every adapter uses, and how transport failures become driver errors.
//!
//! One `reqwest::Client` per host keeps connections alive between calls (connection reuse) and
//! holds that host's cookies (the vSphere session). Response bodies are read with a bound: a
//! vendor endpoint is untrusted input like any other.

use std::time::Duration;

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
        let pem = std::fs::read(path)
            .map_err(|e| TransportError::Tls(format!("CA file {}: {e}", path.display())))?;
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
