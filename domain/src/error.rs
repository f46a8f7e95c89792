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

/// Error shared by all drivers and the service layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("domain '{0}' not found")]
    NotFound(String),
    #[error("domain '{0}' already exists")]
    AlreadyExists(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
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
    /// A definition (or start) the caller's role does not allow; the message lists every
    /// refused field with its rule.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl Error {
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::InvalidConfig(_) => ErrorCode::InvalidConfig,
            Self::WrongState { .. } => ErrorCode::WrongState,
            Self::Busy { .. } => ErrorCode::Busy,
            Self::Unsupported { .. } => ErrorCode::Unsupported,
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Remote { .. } => ErrorCode::Remote,
            Self::Vendor { code, .. } => *code,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Forbidden(_) => ErrorCode::Forbidden,
        }
    }

    /// Full D-Bus error name, e.g. `org.novacron1.Error.NotFound`.
    pub fn dbus_name(&self) -> String {
        format!("org.novacron1.Error.{}", self.code().dbus_suffix())
    }
}

impl From<crate::xml::XmlError> for Error {
    fn from(e: crate::xml::XmlError) -> Self {
        Self::InvalidConfig(e.to_string())
    }
}

impl From<crate::validate::ValidationErrors> for Error {
    fn from(e: crate::validate::ValidationErrors) -> Self {
        Self::InvalidConfig(e.to_string())
    }
}
