//! vSphere failures, and how each becomes a driver [`Error`].
//!
//! A vim fault is a healthy server refusing: it becomes `Error::Vendor` with the fault's name
//! and text kept (it does not count against the circuit breaker). Transport failures go
//! through [`TransportError::into_error`] (they do count). Nothing here ever holds a request
//! body, so the password sent by `Login` cannot reach an error.

use novacron_domain::{Error, ErrorCode};

use super::soap::{Fault, ParseError};
use crate::http::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    #[error("{}: {}", .0.name, describe(.0))]
    Fault(Fault),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The answer was not the SOAP we expected (a proxy page, a truncated body...).
    #[error("unexpected answer to {method}: {reason}")]
    Protocol {
        method: &'static str,
        reason: String,
    },
}

impl VsphereError {
    pub fn protocol(method: &'static str, reason: impl Into<String>) -> Self {
        Self::Protocol {
            method,
            reason: reason.into(),
        }
    }

    pub fn from_parse(method: &'static str, e: ParseError) -> Self {
        Self::protocol(method, e.to_string())
    }

    pub fn fault_name(&self) -> Option<&str> {
        match self {
            Self::Fault(f) => Some(&f.name),
            _ => None,
        }
    }

    pub fn into_error(self, host: &str) -> Error {
        match self {
            Self::Fault(f) => Error::Vendor {
                host: host.to_owned(),
                code: classify(&f.name),
                message: describe(&f),
                fault: f.name,
            },
            Self::Transport(t) => t.into_error(host),
            Self::Protocol { .. } => Error::Remote {
                host: host.to_owned(),
                message: self.to_string(),
            },
        }
    }
}

/// The fault's text plus the fields that say what went wrong (power states, names, objects),
/// since vcsim and some vCenter faults carry an empty `faultstring`.
fn describe(f: &Fault) -> String {
    const TELLING: &[&str] = &[
        "requestedState",
        "existingState",
        "name",
        "obj",
        "invalidProperty",
        "property",
        "file",
        "operationName",
    ];
    let fields: Vec<String> = TELLING
        .iter()
        .filter_map(|k| f.field(k).map(|v| format!("{k}={v}")))
        .collect();
    match (f.message.is_empty(), fields.is_empty()) {
        (false, true) => f.message.clone(),
        (false, false) => format!("{} ({})", f.message, fields.join(", ")),
        (true, false) => fields.join(", "),
        (true, true) => "(no message)".to_owned(),
    }
}

/// Our code for a vim fault type.
pub fn classify(fault: &str) -> ErrorCode {
    match fault {
        "InvalidPowerState" | "InvalidState" | "ToolsUnavailable" | "InvalidHostState"
        | "VmPowerOnDisabled" | "HostNotConnected" => ErrorCode::WrongState,
        "ManagedObjectNotFound" | "NotFound" => ErrorCode::NotFound,
        "DuplicateName" | "AlreadyExists" | "FileAlreadyExists" => ErrorCode::AlreadyExists,
        "NotSupported" | "NotImplemented" | "MethodNotFound" | "MethodDisabled" => {
            ErrorCode::Unsupported
        }
        "TaskInProgress" | "ConcurrentAccess" => ErrorCode::Busy,
        "InvalidArgument"
        | "InvalidRequest"
        | "InvalidVmConfig"
        | "InvalidDatastorePath"
        | "InvalidName"
        | "InsufficientResourcesFault"
        | "OutOfBounds" => ErrorCode::InvalidConfig,
        // InvalidLogin, NotAuthenticated, NoPermission and anything unknown: the remote said no.
        _ => ErrorCode::Remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(name: &str, message: &str, fields: &[(&str, &str)]) -> VsphereError {
        VsphereError::Fault(Fault {
            name: name.into(),
            message: message.into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        })
    }

    #[test]
    fn faults_keep_name_text_and_states() {
        let e = fault(
            "InvalidPowerState",
            "",
            &[
                ("requestedState", "poweredOn"),
                ("existingState", "poweredOn"),
            ],
        )
        .into_error("vc1");
        assert_eq!(e.code(), ErrorCode::WrongState);
        let shown = e.to_string();
        assert!(shown.contains("InvalidPowerState"), "{shown}");
        assert!(
            shown.contains("requestedState=poweredOn, existingState=poweredOn"),
            "{shown}"
        );
    }

    #[test]
    fn classification() {
        for (name, code) in [
            ("InvalidLogin", ErrorCode::Remote),
            ("ManagedObjectNotFound", ErrorCode::NotFound),
            ("DuplicateName", ErrorCode::AlreadyExists),
            ("NotSupported", ErrorCode::Unsupported),
            ("InvalidState", ErrorCode::WrongState),
            ("TaskInProgress", ErrorCode::Busy),
            ("SomethingNew", ErrorCode::Remote),
        ] {
            assert_eq!(classify(name), code, "{name}");
        }
        let e = fault("InvalidLogin", "Login failure", &[]).into_error("vc1");
        assert!(matches!(&e, Error::Vendor { fault, .. } if fault == "InvalidLogin"));
        assert!(!crate::breaker::counts_against_host(&e));
    }
}
