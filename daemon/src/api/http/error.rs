//! API errors: `{"error": {"code", "message"}}` with a stable code and the matching status.

use hyper::StatusCode;
use novacron_domain::{Error, ErrorCode};
use serde_json::json;

use super::response::{json_response, Response};
use crate::service::passthrough::PassthroughError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        )
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
        ApiError::new(status_for(code), code.as_str(), e.to_string())
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
}
