//! The one error type of the client library: what went wrong, and for server refusals the
//! HTTP status and the server's stable error code, so callers can branch on them.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached at all (no socket, refused, unreachable host).
    #[error("cannot connect to the daemon at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The server answered with an error body `{"error": {"code", "message"}}`.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The connection broke or the peer spoke something other than HTTP/1.1.
    #[error("HTTP error talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    /// The server's answer did not follow the contract.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// A response body (or one event) over the client's bound.
    #[error("the daemon's answer is over the {limit} byte limit")]
    TooLarge { limit: usize },
    /// The target URL is malformed or names something this build cannot speak.
    #[error("{0}")]
    BadTarget(String),
    /// Invalid request input caught before sending (e.g. a header value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// The server's error code (`not_found`, `wrong_state`, ...), when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of a server refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for a non-success response from its status and raw body. A body that
    /// is not the contract's error shape still yields a useful message (e.g. from a proxy).
    pub(crate) fn from_response(status: u16, body: &[u8]) -> ClientError {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: String,
            message: String,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => ClientError::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP status {status}")
                } else {
                    // Keep a stray HTML page or similar from flooding the terminal.
                    let short: String = text.chars().take(200).collect();
                    format!("HTTP status {status}: {short}")
                };
                ClientError::Api {
                    status,
                    code: String::new(),
                    message,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_error_body() {
        let e = ClientError::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"domain 'x' not found"}}"#,
        );
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.to_string(), "domain 'x' not found");
    }

    #[test]
    fn tolerates_foreign_error_body() {
        let e = ClientError::from_response(502, b"<html>bad gateway</html>");
        assert_eq!(e.code(), Some(""));
        assert_eq!(e.to_string(), "HTTP status 502: <html>bad gateway</html>");
        let e = ClientError::from_response(500, b"");
        assert_eq!(e.to_string(), "HTTP status 500");
    }
}
