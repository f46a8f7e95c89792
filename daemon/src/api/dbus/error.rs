//! D-Bus errors: every service [`ErrorCode`] is `org.novacron1.Error.<DbusSuffix>` carrying the
//! service's message; malformed arguments and refused authorisation use the standard
//! `org.freedesktop.DBus.Error.*` names.
//!
//! An error that names fields (invalid definition, refused host files) carries them as a
//! second reply argument of type `a(ss)`, `(path, message)` per field, after the message
//! string every D-Bus error starts with. Tools that show only the message (gdbus, busctl)
//! still see every field in its text. zbus's derive builds one-argument errors only, hence
//! the hand-written [`zbus::DBusError`] impl below.

use novacron_domain::{Error, ErrorCode, FieldError};
use zbus::fdo;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

#[derive(Debug)]
pub enum DbusError {
    /// Standard D-Bus errors (`InvalidArgs`, `AccessDenied`, ...).
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
    /// A service error with the fields at fault.
    Fields {
        code: ErrorCode,
        message: String,
        details: Vec<FieldError>,
    },
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

    fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            DbusError::ZBus(_) => return None,
            DbusError::NotFound(_) => ErrorCode::NotFound,
            DbusError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            DbusError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            DbusError::WrongState(_) => ErrorCode::WrongState,
            DbusError::Busy(_) => ErrorCode::Busy,
            DbusError::Unsupported(_) => ErrorCode::Unsupported,
            DbusError::Timeout(_) => ErrorCode::Timeout,
            DbusError::Internal(_) => ErrorCode::Internal,
            DbusError::Remote(_) => ErrorCode::Remote,
            DbusError::Unavailable(_) => ErrorCode::Unavailable,
            DbusError::Forbidden(_) => ErrorCode::Forbidden,
            DbusError::Fields { code, .. } => *code,
        })
    }

    /// The fields at fault, `(path, message)` as the second reply argument carries them.
    pub fn details(&self) -> Vec<(&str, &str)> {
        match self {
            DbusError::Fields { details, .. } => details
                .iter()
                .map(|d| (d.path.as_str(), d.message.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl zbus::DBusError for DbusError {
    fn name(&self) -> ErrorName<'_> {
        match self.code() {
            Some(code) => ErrorName::from_static_str_unchecked(dbus_name(code)),
            // As zbus's derive names its catch-all variant; the standard name is in the text.
            None => ErrorName::from_static_str_unchecked("org.freedesktop.zbus.Error"),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            DbusError::ZBus(zbus::Error::MethodError(_, desc, _)) => desc.as_deref(),
            DbusError::ZBus(_) => None,
            DbusError::NotFound(m)
            | DbusError::AlreadyExists(m)
            | DbusError::InvalidConfig(m)
            | DbusError::WrongState(m)
            | DbusError::Busy(m)
            | DbusError::Unsupported(m)
            | DbusError::Timeout(m)
            | DbusError::Internal(m)
            | DbusError::Remote(m)
            | DbusError::Unavailable(m)
            | DbusError::Forbidden(m)
            | DbusError::Fields { message: m, .. } => Some(m),
        }
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        let name = zbus::DBusError::name(self);
        let builder = Message::error(call, name)?;
        match self {
            DbusError::ZBus(e) => {
                let text = zbus::DBusError::description(self)
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string());
                builder.build(&(text,))
            }
            DbusError::Fields { message, .. } => builder.build(&(message, self.details())),
            _ => builder.build(&(zbus::DBusError::description(self).unwrap_or_default(),)),
        }
    }
}

/// `org.novacron1.Error.<Suffix>` as a static string (an `ErrorName` borrows its text).
const fn dbus_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "org.novacron1.Error.NotFound",
        ErrorCode::AlreadyExists => "org.novacron1.Error.AlreadyExists",
        ErrorCode::InvalidConfig => "org.novacron1.Error.InvalidConfig",
        ErrorCode::WrongState => "org.novacron1.Error.WrongState",
        ErrorCode::Busy => "org.novacron1.Error.Busy",
        ErrorCode::Unsupported => "org.novacron1.Error.Unsupported",
        ErrorCode::Timeout => "org.novacron1.Error.Timeout",
        ErrorCode::Internal => "org.novacron1.Error.Internal",
        ErrorCode::Remote => "org.novacron1.Error.Remote",
        ErrorCode::Unavailable => "org.novacron1.Error.Unavailable",
        ErrorCode::Forbidden => "org.novacron1.Error.Forbidden",
    }
}

impl std::fmt::Display for DbusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = zbus::DBusError::name(self);
        let description = zbus::DBusError::description(self).unwrap_or("no description");
        write!(f, "{name}: {description}")
    }
}

impl std::error::Error for DbusError {}

impl From<zbus::Error> for DbusError {
    fn from(e: zbus::Error) -> DbusError {
        DbusError::ZBus(e)
    }
}

impl From<Error> for DbusError {
    fn from(e: Error) -> DbusError {
        if e.details().is_empty() {
            DbusError::from_code(e.code(), e.to_string())
        } else {
            DbusError::Fields {
                code: e.code(),
                message: e.to_string(),
                details: e.details().to_vec(),
            }
        }
    }
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
        assert!(e.details().is_empty());
        let e: DbusError = Error::Invalid {
            message: "a: bad; b: bad".into(),
            details: vec![FieldError::new("a", "bad"), FieldError::new("b", "bad")],
        }
        .into();
        assert_eq!(e.name().as_str(), "org.novacron1.Error.InvalidConfig");
        assert_eq!(e.details(), [("a", "bad"), ("b", "bad")]);
        for code in ErrorCode::ALL {
            assert_eq!(
                dbus_name(code),
                format!("org.novacron1.Error.{}", code.dbus_suffix())
            );
        }
        // The standard names (InvalidArgs, AccessDenied) are what the wire carries; zbus only
        // resolves them when replying, so tests/dbus.rs checks them end to end.
    }
}
