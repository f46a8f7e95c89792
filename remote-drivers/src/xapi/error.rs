//! XAPI failures and how they become driver errors.
//!
//! XAPI reports a failure as an array `[CODE, param...]` (XML-RPC `ErrorDescription`, JSON-RPC
//! `error.message` + `error.data`). The code is kept as the `fault` of `Error::Vendor` and the
//! parameters as its message, so nothing the host said is lost; the code picks our class.

use std::time::Duration;

use novacron_domain::{Error, ErrorCode};

use crate::http::TransportError;

/// A XAPI failure: its code and parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {}", params.join(", "))]
pub struct Fault {
    pub code: String,
    pub params: Vec<String>,
}

impl Fault {
    /// From `[CODE, params...]` as XAPI sends it; non-string parameters are printed as JSON.
    pub(crate) fn from_description(items: &[serde_json::Value]) -> Self {
        let mut parts = items.iter().map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        Self {
            code: parts
                .next()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "UNKNOWN_ERROR".into()),
            params: parts.collect(),
        }
    }
}

/// Everything a XAPI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum XapiError {
    /// The host answered with a failure.
    #[error("{0}")]
    Fault(Fault),
    /// The host could not be asked (or its answer could not be read).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The host answered something that is not the XenAPI shape we expect.
    #[error("{method}: unexpected answer: {detail}")]
    Malformed { method: String, detail: String },
    /// A task did not finish in time (it was cancelled).
    #[error("{operation} did not finish within {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// A call the adapter itself got wrong (arity against its own method table).
    #[error("{0}")]
    Internal(String),
}

/// Per-message fault codes the adapter classifies (checked against the published model by
/// the contract test). Protocol-level ones (SESSION_INVALID, HANDLE_INVALID, UUID_INVALID,
/// MESSAGE_METHOD_UNKNOWN...) come from XAPI's dispatcher and are not listed per message.
#[cfg(test)]
pub(crate) const MESSAGE_FAULTS: &[&str] = &[
    "VM_BAD_POWER_STATE",
    "SESSION_AUTHENTICATION_FAILED",
    "OPERATION_NOT_ALLOWED",
    "VM_IS_TEMPLATE",
    "OTHER_OPERATION_IN_PROGRESS",
    "VALUE_NOT_SUPPORTED",
    "MEMORY_CONSTRAINT_VIOLATION",
    "HOST_NOT_ENOUGH_FREE_MEMORY",
];

/// Our class for a XAPI fault code.
pub(crate) fn classify(code: &str) -> ErrorCode {
    match code {
        "VM_BAD_POWER_STATE" | "OPERATION_NOT_ALLOWED" | "VM_MIGRATE_FAILED" => {
            ErrorCode::WrongState
        }
        "HANDLE_INVALID" | "UUID_INVALID" => ErrorCode::NotFound,
        "OTHER_OPERATION_IN_PROGRESS" => ErrorCode::Busy,
        "VM_IS_TEMPLATE"
        | "VALUE_NOT_SUPPORTED"
        | "MEMORY_CONSTRAINT_VIOLATION"
        | "FIELD_TYPE_ERROR"
        | "HOST_NOT_ENOUGH_FREE_MEMORY" => ErrorCode::InvalidConfig,
        "MESSAGE_METHOD_UNKNOWN" | "NOT_IMPLEMENTED" => ErrorCode::Unsupported,
        "MESSAGE_PARAMETER_COUNT_MISMATCH" => ErrorCode::Internal,
        "TASK_CANCELLED" => ErrorCode::Timeout,
        // SESSION_AUTHENTICATION_FAILED, SESSION_INVALID after a re-login, and anything else
        // the host refuses: a remote fault, named.
        _ => ErrorCode::Remote,
    }
}

impl XapiError {
    /// The driver error for host `host`; `subject` (a domain name) is prefixed to a vendor
    /// fault's text so the message says which VM the host refused.
    pub(crate) fn into_error(self, host: &str, subject: Option<&str>) -> Error {
        match self {
            Self::Fault(f) => {
                let code = classify(&f.code);
                let detail = describe(&f);
                Error::Vendor {
                    host: host.to_owned(),
                    code,
                    message: match subject {
                        Some(s) => format!("'{s}': {detail}"),
                        None => detail,
                    },
                    fault: f.code,
                }
            }
            Self::Transport(t) => t.into_error(host),
            Self::Malformed { method, detail } => Error::Remote {
                host: host.to_owned(),
                message: format!("{method}: unexpected answer: {detail}"),
            },
            Self::Timeout { operation, after } => Error::Timeout { operation, after },
            Self::Internal(m) => Error::Internal(m),
        }
    }
}

/// The fault's parameters in words where XAPI's meaning is known, verbatim otherwise.
fn describe(f: &Fault) -> String {
    match (f.code.as_str(), f.params.as_slice()) {
        ("VM_BAD_POWER_STATE", [vm, expected, actual, ..]) => {
            format!("VM is {actual}, the operation needs it {expected} ({vm})")
        }
        ("HANDLE_INVALID", [class, r, ..]) => format!("no {class} with reference {r}"),
        ("UUID_INVALID", [class, u, ..]) => format!("no {class} with UUID {u}"),
        _ => f.params.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_power_state_keeps_the_vendor_text() {
        let f = Fault::from_description(&[
            json!("VM_BAD_POWER_STATE"),
            json!("OpaqueRef:1"),
            json!("halted"),
            json!("running"),
        ]);
        let e = XapiError::Fault(f).into_error("xcp", Some("web"));
        assert_eq!(e.code(), ErrorCode::WrongState);
        let text = e.to_string();
        for part in [
            "VM_BAD_POWER_STATE",
            "running",
            "halted",
            "'web'",
            "OpaqueRef:1",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[test]
    fn codes_map_to_our_classes() {
        for (code, ours) in [
            ("HANDLE_INVALID", ErrorCode::NotFound),
            ("UUID_INVALID", ErrorCode::NotFound),
            ("SESSION_AUTHENTICATION_FAILED", ErrorCode::Remote),
            ("OTHER_OPERATION_IN_PROGRESS", ErrorCode::Busy),
            ("VM_IS_TEMPLATE", ErrorCode::InvalidConfig),
            ("MESSAGE_METHOD_UNKNOWN", ErrorCode::Unsupported),
            ("SOMETHING_NEW", ErrorCode::Remote),
        ] {
            assert_eq!(classify(code), ours, "{code}");
        }
    }

    #[test]
    fn odd_descriptions_do_not_panic() {
        let f = Fault::from_description(&[]);
        assert_eq!(f.code, "UNKNOWN_ERROR");
        let f = Fault::from_description(&[json!(5), json!({"a": 1})]);
        assert_eq!(f.code, "5");
        assert_eq!(f.params, vec!["{\"a\":1}".to_owned()]);
    }
}
