//! What PVE says went wrong, kept word for word, and which of our codes it is.
//!
//! PVE has no fault names: an API error is an HTTP status plus a message (in the JSON body's
//! `message`, or only in the status line's reason phrase) and, for parameter errors, a map
//! field → text; a worker task fails with its exit status text. So the "fault" we keep is
//! `HTTP <status>` or `task <type>`, and the class comes from the status and the message,
//! matched against the wording of qemu-server and pve-manager.

use std::collections::BTreeMap;

use novacron_domain::{Error, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// A non-2xx answer.
    #[error("HTTP {status}: {message}")]
    Api {
        status: u16,
        message: String,
        /// Per-parameter errors (`{"errors": {"name": "..."}}`).
        errors: BTreeMap<String, String>,
    },
    /// A worker task that ended with an exit status other than OK.
    #[error("task {kind}: {exitstatus}")]
    Task { kind: String, exitstatus: String },
    /// An answer we cannot read.
    #[error("unexpected answer to {what}: {detail}")]
    Decode { what: String, detail: String },
}

impl PveError {
    /// The driver error, keeping PVE's text in full.
    pub fn into_error(self, host: &str) -> Error {
        match self {
            Self::Api {
                status,
                message,
                errors,
            } => {
                let mut text = message.trim().to_owned();
                for (field, why) in &errors {
                    text.push_str(&format!("; {field}: {}", why.trim()));
                }
                Error::Vendor {
                    host: host.to_owned(),
                    code: classify(Some(status), &text),
                    fault: format!("HTTP {status}"),
                    message: text,
                }
            }
            Self::Task { kind, exitstatus } => Error::Vendor {
                host: host.to_owned(),
                code: classify(None, &exitstatus),
                fault: format!("task {kind}"),
                message: exitstatus,
            },
            Self::Decode { .. } => Error::Remote {
                host: host.to_owned(),
                message: self.to_string(),
            },
        }
    }
}

/// Our code for a PVE status (None for a task) and message.
pub fn classify(status: Option<u16>, message: &str) -> ErrorCode {
    let m = message.to_ascii_lowercase();
    match status {
        Some(401 | 403) => return ErrorCode::Remote,
        Some(400) => return ErrorCode::InvalidConfig,
        Some(501) => return ErrorCode::Unsupported,
        // pveproxy could not reach the node the request was for.
        Some(595 | 596) => return ErrorCode::Unavailable,
        _ => {}
    }
    if m.contains("does not exist") && (m.contains("configuration file") || m.contains("vm ")) {
        ErrorCode::NotFound
    } else if m.contains("powerdown failed - got timeout") {
        ErrorCode::Timeout
    } else if m.contains("already exists") {
        ErrorCode::AlreadyExists
    } else if m.contains("is locked") || m.contains("can't lock file") {
        ErrorCode::Busy
    } else if m.contains("no quorum") {
        ErrorCode::Unavailable
    } else if m.contains("not running")
        || m.contains("already running")
        || m.contains("is running")
        || m.contains("is paused")
        || m.contains("not paused")
        || m.contains("template")
        || m.contains("not suspended")
    {
        ErrorCode::WrongState
    } else {
        ErrorCode::Remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_wording_maps_to_our_codes() {
        let cases = [
            (Some(500), "VM 100 not running", ErrorCode::WrongState),
            (None, "VM 100 already running", ErrorCode::WrongState),
            (
                Some(500),
                "VM 100 is running - destroy failed",
                ErrorCode::WrongState,
            ),
            (
                Some(500),
                "Configuration file 'nodes/pve1/qemu-server/7.conf' does not exist",
                ErrorCode::NotFound,
            ),
            (Some(401), "authentication failure", ErrorCode::Remote),
            (
                Some(400),
                "Parameter verification failed.",
                ErrorCode::InvalidConfig,
            ),
            (None, "VM is locked (backup)", ErrorCode::Busy),
            (
                None,
                "VM quit/powerdown failed - got timeout",
                ErrorCode::Timeout,
            ),
            (
                Some(500),
                "unable to create VM 100 - VM 100 already exists on node 'pve1'",
                ErrorCode::AlreadyExists,
            ),
            (Some(595), "No route to host", ErrorCode::Unavailable),
            (Some(500), "something else entirely", ErrorCode::Remote),
        ];
        for (status, message, code) in cases {
            assert_eq!(classify(status, message), code, "{status:?} {message}");
        }
    }

    #[test]
    fn api_error_keeps_message_and_field_errors() {
        let e = PveError::Api {
            status: 400,
            message: "Parameter verification failed.\n".into(),
            errors: [("name".to_owned(), "invalid format - value 'a b'".to_owned())].into(),
        }
        .into_error("pve");
        match e {
            Error::Vendor {
                code,
                fault,
                message,
                host,
            } => {
                assert_eq!(code, ErrorCode::InvalidConfig);
                assert_eq!(fault, "HTTP 400");
                assert_eq!(host, "pve");
                assert_eq!(
                    message,
                    "Parameter verification failed.; name: invalid format - value 'a b'"
                );
            }
            other => panic!("expected a vendor error, got {other:?}"),
        }
    }
}
