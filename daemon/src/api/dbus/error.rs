//! D-Bus errors: every service [`ErrorCode`] is `org.novacron1.Error.<DbusSuffix>` carrying the
//! service's message; malformed arguments and refused authorisation use the standard
//! `org.freedesktop.DBus.Error.*` names.
//!
//! An error that names fields (invalid definition, refused host files) ends its message with
//! one more line, `{"details":[{"path","message","line"?}…]}`, the same list as HTTP's
//! `details`: the message must stay the one string argument, since GLib (gdbus) shows no
//! text for an error whose body is anything else.

use novacron_domain::{Error, ErrorCode};
use zbus::fdo;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.novacron1.Error")]
pub enum DbusError {
    /// Standard D-Bus errors (`InvalidArgs`, `AccessDenied`, ...).
    #[zbus(error)]
    ZBus(zbus::Error),
    NotFound(String),
    AlreadyExists(String),
    InvalidConfig(String),
    WrongState(String),
    Busy(String),
    Unsupported(String),
    Timeout(String),
    Internal(String),
    Remote(String),
    Unavailable(String),
    Forbidden(String),
}

impl DbusError {
    pub fn from_code(code: ErrorCode, message: String) -> DbusError {
        match code {
            ErrorCode::NotFound => DbusError::NotFound(message),
            ErrorCode::AlreadyExists => DbusError::AlreadyExists(message),
            ErrorCode::InvalidConfig => DbusError::InvalidConfig(message),
            ErrorCode::WrongState => DbusError::WrongState(message),
            ErrorCode::Busy => DbusError::Busy(message),
            ErrorCode::Unsupported => DbusError::Unsupported(message),
            ErrorCode::Timeout => DbusError::Timeout(message),
            ErrorCode::Internal => DbusError::Internal(message),
            ErrorCode::Remote => DbusError::Remote(message),
            ErrorCode::Unavailable => DbusError::Unavailable(message),
            ErrorCode::Forbidden => DbusError::Forbidden(message),
        }
    }

    pub fn invalid_args(message: impl Into<String>) -> DbusError {
        DbusError::ZBus(fdo::Error::InvalidArgs(message.into()).into())
    }

    pub fn access_denied(message: impl Into<String>) -> DbusError {
        DbusError::ZBus(fdo::Error::AccessDenied(message.into()).into())
    }
}

impl From<Error> for DbusError {
    fn from(e: Error) -> DbusError {
        DbusError::from_code(e.code(), with_details(&e))
    }
}

/// The message, plus the details line when the error has fields.
fn with_details(e: &Error) -> String {
    let message = e.to_string();
    if e.details().is_empty() {
        return message;
    }
    let details = serde_json::json!({ "details": e.details() });
    format!("{message}\n{details}")
}

/// For property getters, which zbus types as `fdo::Result`: a domain that went away is an
/// unknown object; anything else keeps the service's message.
pub fn to_fdo(e: Error) -> fdo::Error {
    match e.code() {
        ErrorCode::NotFound => fdo::Error::UnknownObject(e.to_string()),
        _ => fdo::Error::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError as _;

    #[test]
    fn every_service_code_maps_to_its_dbus_name_with_the_message() {
        for code in ErrorCode::ALL {
            let e = DbusError::from_code(code, format!("m-{code}"));
            assert_eq!(
                e.name().as_str(),
                format!("org.novacron1.Error.{}", code.dbus_suffix())
            );
            assert_eq!(e.description(), Some(format!("m-{code}").as_str()));
        }
        let e: DbusError = Error::not_found(novacron_domain::Kind::Domain, "vm9").into();
        assert_eq!(e.name().as_str(), "org.novacron1.Error.NotFound");
        assert_eq!(e.description(), Some("domain 'vm9' not found"));
        let e: DbusError = Error::Invalid {
            message: "a: bad; b: bad".into(),
            details: vec![
                novacron_domain::FieldError::new("a", "bad"),
                novacron_domain::FieldError::new("b", "bad"),
            ],
        }
        .into();
        assert_eq!(e.name().as_str(), "org.novacron1.Error.InvalidConfig");
        let text = e.description().unwrap();
        let (message, tail) = text.rsplit_once('\n').unwrap();
        assert_eq!(message, "invalid configuration: a: bad; b: bad");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(tail).unwrap(),
            serde_json::json!({"details": [{"path": "a", "message": "bad"}, {"path": "b", "message": "bad"}]})
        );
        // The standard names (InvalidArgs, AccessDenied) are what the wire carries; zbus only
        // resolves them when replying, so tests/dbus.rs checks them end to end.
    }
}
