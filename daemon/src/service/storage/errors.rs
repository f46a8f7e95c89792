//! The typed refusals of the storage operations, each naming the field at fault.

use novacron_domain::{Error, FieldError, Kind};

/// `field: message`, as `Invalid` with the field in `details`.
pub fn invalid(field: &str, message: impl Into<String>) -> Error {
    let message = message.into();
    Error::Invalid {
        message: format!("{field}: {message}"),
        details: vec![FieldError::new(field, message)],
    }
}

pub fn forbidden(field: &str, message: impl Into<String>) -> Error {
    let message = message.into();
    Error::Forbidden {
        message: format!("{field}: {message}"),
        details: vec![FieldError::new(field, message)],
    }
}

pub fn no_volume(pool: &str, name: &str) -> Error {
    Error::not_found(Kind::Volume, format!("{pool}/{name}"))
}

pub fn io(action: &'static str, path: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::Io {
        action,
        path: path.into(),
        message: e.to_string(),
    }
}

/// A blocking task that panicked or was cancelled.
pub fn joined(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("storage task failed: {e}"))
}
