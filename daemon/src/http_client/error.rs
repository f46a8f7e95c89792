//! The one error type of the client library: what went wrong, and for server refusals the
//! HTTP status and the server's stable error code, so callers can branch on them.

use std::io;

pub use novacron_domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached at all (no socket, refused, unreachable host).
    #[error("cannot connect to the daemon at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The server answered with an error body `{"error": {"code", "message", "details"?}}`;
    /// shown as the message, then one `path: message` line per field at fault.
    #[error("{}", api_text(message, details))]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The fields the server named (empty when it named none).
        details: Vec<FieldError>,
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

    /// The fields a server refusal named (`invalid_config`, `forbidden`), if any.
    pub fn details(&self) -> &[FieldError] {
        match self {
            ClientError::Api { details, .. } => details,
            _ => &[],
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
            #[serde(default)]
            details: Vec<FieldError>,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => ClientError::Api {
                status,
                code: error.code,
                message: error.message,
                details: error.details,
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
                    details: Vec::new(),
                }
            }
        }
    }
}

/// The message, then one line per field. The server's message lists the fields too
/// (`invalid configuration: a: x; b: y`); when it does, only its lead-in and any remark after
/// the fields are kept, so each field is printed once.
fn api_text(message: &str, details: &[FieldError]) -> String {
    let (Some(first), Some(last)) = (details.first(), details.last()) else {
        return message.to_owned();
    };
    let mut out = match (
        message.find(&first.to_string()),
        message.rfind(&last.to_string()),
    ) {
        (Some(start), Some(end)) if start <= end => {
            let tail = message[end + last.to_string().len()..].trim();
            let mut head = message[..start].trim_end().to_owned();
            if !tail.is_empty() {
                head.push(' ');
                head.push_str(tail);
            }
            head
        }
        _ => message.to_owned(),
    };
    for d in details {
        out.push_str(&format!("\n  {d}"));
    }
    out
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
    fn keeps_the_fields_and_prints_one_line_each() {
        let e = ClientError::from_response(
            400,
            br#"{"error":{"code":"invalid_config","message":"invalid configuration: name: must not be empty; vcpu: value 0 is outside 1..=4096","details":[{"path":"name","message":"must not be empty"},{"path":"vcpu","message":"value 0 is outside 1..=4096"}]}}"#,
        );
        assert_eq!(e.code(), Some("invalid_config"));
        let paths: Vec<_> = e.details().iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["name", "vcpu"]);
        assert_eq!(
            e.to_string(),
            "invalid configuration:\n  name: must not be empty\n  vcpu: value 0 is outside 1..=4096"
        );
        // A remark after the fields (the storage-roots hint) stays on the first line; a
        // message that does not list the fields is kept whole.
        let e = ClientError::from_response(
            403,
            br#"{"error":{"code":"forbidden","message":"forbidden: a: no (ask an admin)","details":[{"path":"a","message":"no"}]}}"#,
        );
        assert_eq!(e.to_string(), "forbidden: (ask an admin)\n  a: no");
        let e = ClientError::from_response(
            400,
            br#"{"error":{"code":"invalid_config","message":"bad <x> (line 3)","details":[{"path":"domain/x","message":"bad <x>","line":3}]}}"#,
        );
        assert_eq!(e.details()[0].line, Some(3));
        assert_eq!(e.to_string(), "bad <x> (line 3)\n  domain/x: bad <x>");
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
