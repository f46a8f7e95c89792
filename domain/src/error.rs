//! The error every `Driver` operation returns, with a stable machine code per variant.
//!
//! The code travels unchanged to HTTP (`{"error":{"code","message"}}`) and to D-Bus
//! (`org.novacron1.Error.<Code>`), so it must never change once published.

use std::time::Duration;

use crate::state::DomainState;

/// Stable, machine-readable error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidConfig,
    WrongState,
    Busy,
    Unsupported,
    Timeout,
    Internal,
    Remote,
    /// A remote host cannot be reached, or its circuit breaker is open.
    Unavailable,
    /// The caller's role may not do this (e.g. name a host file outside the storage roots).
    Forbidden,
}

impl ErrorCode {
    /// snake_case form used in HTTP bodies and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::InvalidConfig => "invalid_config",
            Self::WrongState => "wrong_state",
            Self::Busy => "busy",
            Self::Unsupported => "unsupported",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::Remote => "remote",
            Self::Unavailable => "unavailable",
            Self::Forbidden => "forbidden",
        }
    }

    /// CamelCase suffix for D-Bus error names.
    pub const fn dbus_suffix(self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::InvalidConfig => "InvalidConfig",
            Self::WrongState => "WrongState",
            Self::Busy => "Busy",
            Self::Unsupported => "Unsupported",
            Self::Timeout => "Timeout",
            Self::Internal => "Internal",
            Self::Remote => "Remote",
            Self::Unavailable => "Unavailable",
            Self::Forbidden => "Forbidden",
        }
    }

    /// Every code, for exhaustive mapping tests in the API layers.
    pub const ALL: [ErrorCode; 11] = [
        Self::NotFound,
        Self::AlreadyExists,
        Self::InvalidConfig,
        Self::WrongState,
        Self::Busy,
        Self::Unsupported,
        Self::Timeout,
        Self::Internal,
        Self::Remote,
        Self::Unavailable,
        Self::Forbidden,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `not_found` error names, so the message says what was looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Domain,
    RemoteHost,
    /// A background operation (`/v1/operations/{id}`).
    Operation,
    Migration,
    Snapshot,
    Pool,
    Volume,
    Network,
    /// A domain template (`/v1/templates/{template}`).
    Template,
}

impl Kind {
    /// Lower-case noun used in messages ("remote host 'vc1' not found").
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::RemoteHost => "remote host",
            Self::Operation => "operation",
            Self::Migration => "migration",
            Self::Snapshot => "snapshot",
            Self::Pool => "pool",
            Self::Volume => "volume",
            Self::Network => "network",
            Self::Template => "template",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused field of a request: where (`devices.disks[1].source.file`, or an XML path)
/// and why. Travels as `details` on HTTP and as the second error argument on D-Bus, so a
/// client can mark the field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    /// 1-based line in the submitted XML, when the error came from the XML reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Error shared by all drivers and the service layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} '{name}' not found")]
    NotFound { kind: Kind, name: String },
    #[error("domain '{0}' already exists")]
    AlreadyExists(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Invalid input with the fields at fault; `message` lists them too, for humans.
    #[error("invalid configuration: {message}")]
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("cannot {operation} domain '{name}' while it is {state}")]
    WrongState {
        name: String,
        state: DomainState,
        operation: &'static str,
    },
    #[error("domain '{name}' is busy: {detail}")]
    Busy { name: String, detail: String },
    #[error("operation '{operation}' is not supported by driver '{driver}'")]
    Unsupported {
        driver: String,
        operation: &'static str,
    },
    #[error("{operation} timed out after {}s", after.as_secs_f64())]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// A QEMU process that did not answer its monitor in time (hung, or the host is starved).
    #[error("{operation} of domain '{name}': QEMU did not answer within {}s", after.as_secs_f64())]
    QemuTimeout {
        name: String,
        operation: String,
        after: Duration,
    },
    /// QEMU refused or failed a command, could not be started, or died under us.
    #[error("{operation} of domain '{name}': {message}")]
    Qemu {
        name: String,
        operation: String,
        message: String,
    },
    /// Host I/O on a named file or directory failed.
    #[error("cannot {action} {path}: {message}")]
    Io {
        action: &'static str,
        path: String,
        message: String,
    },
    #[error("remote host '{host}': {message}")]
    Remote { host: String, message: String },
    /// A remote hypervisor's own fault, classified into one of our codes; `fault` keeps the
    /// vendor's name for it (`InvalidPowerState`, `VM_BAD_POWER_STATE`...) and `message` its
    /// text, so nothing the vendor said is lost in translation.
    #[error("remote host '{host}': {fault}: {message}")]
    Vendor {
        host: String,
        code: ErrorCode,
        fault: String,
        message: String,
    },
    /// A remote host that cannot be reached or whose breaker is open.
    #[error("remote host '{host}' is unavailable: {reason}")]
    Unavailable { host: String, reason: String },
    /// The domain's guest agent did not answer within the call's deadline (hung, or busy);
    /// the domain itself stays responsive.
    #[error("guest agent of domain '{name}': {command} unanswered within {}s", after.as_secs_f64())]
    AgentTimeout {
        name: String,
        command: String,
        after: Duration,
    },
    /// No guest agent to talk to: no agent channel, or the guest has not opened it.
    #[error("guest agent of domain '{name}' is not connected: {reason}")]
    AgentUnavailable { name: String, reason: String },
    /// The guest agent refused or failed a command (its error class and text), or answered
    /// something that is not its protocol.
    #[error("guest agent of domain '{name}': {command}: {message}")]
    Agent {
        name: String,
        command: String,
        message: String,
    },
    /// A definition (or start) the caller's role does not allow; the message lists every
    /// refused field with its rule, `details` the same one per field.
    #[error("forbidden: {message}")]
    Forbidden {
        message: String,
        details: Vec<FieldError>,
    },
}

impl Error {
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::InvalidConfig(_) | Self::Invalid { .. } => ErrorCode::InvalidConfig,
            Self::WrongState { .. } => ErrorCode::WrongState,
            Self::Busy { .. } => ErrorCode::Busy,
            Self::Unsupported { .. } => ErrorCode::Unsupported,
            Self::Timeout { .. } | Self::QemuTimeout { .. } => ErrorCode::Timeout,
            Self::Internal(_) | Self::Qemu { .. } | Self::Io { .. } => ErrorCode::Internal,
            Self::Remote { .. } => ErrorCode::Remote,
            Self::Vendor { code, .. } => *code,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::AgentTimeout { .. } => ErrorCode::Timeout,
            Self::AgentUnavailable { .. } => ErrorCode::Unavailable,
            Self::Agent { .. } => ErrorCode::Internal,
        }
    }

    /// `kind 'name' not found`.
    pub fn not_found(kind: Kind, name: impl Into<String>) -> Error {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// The fields at fault, for errors that have them (empty otherwise).
    pub fn details(&self) -> &[FieldError] {
        match self {
            Self::Invalid { details, .. } | Self::Forbidden { details, .. } => details,
            _ => &[],
        }
    }

    /// Full D-Bus error name, e.g. `org.novacron1.Error.NotFound`.
    pub fn dbus_name(&self) -> String {
        format!("org.novacron1.Error.{}", self.code().dbus_suffix())
    }
}

/// An XML error with a node keeps it as the one detail (path and line); a document-level
/// one (syntax, size) has none.
impl From<crate::xml::XmlError> for Error {
    fn from(e: crate::xml::XmlError) -> Self {
        let message = e.to_string();
        let details = match e.path() {
            Some(path) => vec![FieldError {
                path: path.to_owned(),
                message: message.clone(),
                line: e.line(),
            }],
            None => Vec::new(),
        };
        Self::Invalid { message, details }
    }
}

impl From<crate::validate::ValidationErrors> for Error {
    fn from(e: crate::validate::ValidationErrors) -> Self {
        let details =
            e.0.iter()
                .map(|v| FieldError::new(&v.path, v.problem.to_string()))
                .collect();
        Self::Invalid {
            message: e.to_string(),
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, ValidationError, ValidationErrors};

    #[test]
    fn not_found_names_what_was_not_found() {
        let cases = [
            (Kind::Domain, "web", "domain 'web' not found"),
            (Kind::RemoteHost, "vc1", "remote host 'vc1' not found"),
            (Kind::Operation, "op-7", "operation 'op-7' not found"),
            (Kind::Migration, "m1", "migration 'm1' not found"),
            (Kind::Pool, "p", "pool 'p' not found"),
            (Kind::Volume, "v", "volume 'v' not found"),
            (Kind::Network, "n", "network 'n' not found"),
            (Kind::Snapshot, "s", "snapshot 's' not found"),
        ];
        for (kind, name, text) in cases {
            let e = Error::not_found(kind, name);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.code(), ErrorCode::NotFound);
            assert!(e.details().is_empty());
        }
    }

    #[test]
    fn validation_keeps_every_field_as_a_detail() {
        let errs = ValidationErrors(vec![
            ValidationError {
                path: "name".into(),
                problem: Problem::Empty,
            },
            ValidationError {
                path: "devices.disks[1].source.file".into(),
                problem: Problem::BadPath,
            },
        ]);
        let e = Error::from(errs);
        assert_eq!(e.code(), ErrorCode::InvalidConfig);
        let paths: Vec<_> = e.details().iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["name", "devices.disks[1].source.file"]);
        assert_eq!(e.details()[0].message, "must not be empty");
        // The message still reads on its own, every field in it.
        assert_eq!(
            e.to_string(),
            "invalid configuration: name: must not be empty; devices.disks[1].source.file: \
             must be an absolute path without control characters or surrounding whitespace"
        );
        let json = serde_json::to_value(e.details()).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"path": "name", "message": "must not be empty"})
        );
    }

    #[test]
    fn xml_errors_keep_their_node_and_line() {
        let e = Error::from(crate::xml::XmlError::UnsupportedElement {
            name: "bogus".into(),
            path: "domain/devices/bogus".into(),
            line: 4,
        });
        assert_eq!(e.code(), ErrorCode::InvalidConfig);
        let d = &e.details()[0];
        assert_eq!(d.path, "domain/devices/bogus");
        assert_eq!(d.line, Some(4));
        assert!(d.message.contains("<bogus>"), "{d}");
        let e = Error::from(crate::xml::XmlError::TooManyElements);
        assert!(e.details().is_empty());
    }

    #[test]
    fn qemu_timeouts_are_timeouts_and_name_the_domain() {
        let e = Error::QemuTimeout {
            name: "web".into(),
            operation: "shutdown".into(),
            after: Duration::from_secs(5),
        };
        assert_eq!(e.code(), ErrorCode::Timeout);
        assert_eq!(
            e.to_string(),
            "shutdown of domain 'web': QEMU did not answer within 5s"
        );
    }

    #[test]
    fn forbidden_carries_its_fields() {
        let e = Error::Forbidden {
            message: "a: no".into(),
            details: vec![FieldError::new("a", "no")],
        };
        assert_eq!(e.code(), ErrorCode::Forbidden);
        assert_eq!(e.details().len(), 1);
        assert_eq!(e.to_string(), "forbidden: a: no");
    }
}
