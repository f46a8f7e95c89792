//! API errors: `{"error": {"code", "message", "details"?}}` with a stable code and the
//! matching status; `details` lists the fields at fault (`[{"path", "message", "line"?}]`)
//! when the service named them, so a UI can mark each one.

use hyper::StatusCode;
use novacron_domain::{Error, ErrorCode, FieldError};
use serde_json::json;

use super::response::{json_response, Response};
use crate::service::passthrough::PassthroughError;

pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
}

/// `details` only when there are any, so the common case reads as before.
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ApiError");
        d.field("status", &self.status.as_u16())
            .field("code", &self.code)
            .field("message", &self.message);
        if !self.details.is_empty() {
            d.field("details", &self.details);
        }
        d.finish()
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            error["details"] = json!(self.details);
        }
        json_response(self.status, &json!({ "error": error }))
    }
}

/// The one mapping from service error codes to HTTP.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::WrongState | ErrorCode::Busy => StatusCode::CONFLICT,
        ErrorCode::InvalidConfig => StatusCode::BAD_REQUEST,
        ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Remote => StatusCode::BAD_GATEWAY,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = e.code();
        let mut api = ApiError::new(status_for(code), code.as_str(), e.to_string());
        api.details = e.details().to_vec();
        api
    }
}

impl From<PassthroughError> for ApiError {
    fn from(e: PassthroughError) -> ApiError {
        match e {
            PassthroughError::Domain(e) => e.into(),
            e @ PassthroughError::Qmp { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "qmp_error", e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_code_has_a_client_or_server_error_status() {
        for code in ErrorCode::ALL {
            let s = status_for(code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
    }

    #[test]
    fn details_appear_only_when_the_service_named_fields() {
        let e: ApiError = Error::not_found(novacron_domain::Kind::RemoteHost, "vc1").into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "remote host 'vc1' not found");
        assert!(e.details.is_empty());
        let e: ApiError = Error::Forbidden {
            message: "a: no; b: no".into(),
            details: vec![FieldError::new("a", "no"), FieldError::new("b", "no")],
        }
        .into();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.details.len(), 2);
    }
}
