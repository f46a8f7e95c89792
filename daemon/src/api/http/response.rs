//! Building responses.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde::Serialize;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;
pub type Response = hyper::Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = hyper::Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", body),
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            format!(
                r#"{{"error":{{"code":"internal","message":"cannot encode the response: {e}"}}}}"#
            ),
        ),
    }
}

pub fn xml_response(status: StatusCode, xml: String) -> Response {
    with_type(status, "application/xml", xml)
}

pub fn no_content() -> Response {
    let mut r = hyper::Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}
