//! Reading requests: bounded bodies with a deadline, content types, query strings.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};

use super::error::ApiError;

/// Definitions are small; so is every other body this API takes.
pub const MAX_BODY: usize = novacron_domain::MAX_DOCUMENT_BYTES;
/// A client that has not sent its whole body by then is cut off (slow-loris).
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body is over the {MAX_BODY} byte limit"),
    )
}

/// The whole body, refusing more than [`MAX_BODY`] bytes or a body that trickles in.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!("request body not received within {BODY_DEADLINE:?}"),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The body as UTF-8 text.
pub fn text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))
}

/// The media type of the body, without parameters, lowercased.
pub fn content_type<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

pub fn is_xml(media: &str) -> bool {
    media == "application/xml" || media == "text/xml"
}

/// Whether the client prefers XML over JSON.
pub fn wants_xml<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            let first = accept.split(',').next().unwrap_or("");
            is_xml(first.split(';').next().unwrap_or("").trim())
        })
}

/// Query parameters (`a=b&c=d`, percent-decoded); a malformed escape is a 400.
pub fn query<B>(req: &Request<B>) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// A percent-encoded path segment (`+` is a plus here, not a space).
pub fn decode_segment(s: &str) -> Result<String, ApiError> {
    decode_with(s, false)
}

fn decode(s: &str) -> Result<String, ApiError> {
    decode_with(s, true)
}

fn decode_with(s: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request(format!("bad percent escape in '{s}'")))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("'{s}' is not UTF-8 once decoded")))
}

/// A boolean query flag: absent is `default`; `true`/`false`/`1`/`0` otherwise a 400.
pub fn flag(query: &HashMap<String, String>, key: &str, default: bool) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true" | "1" | "") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "query parameter {key} must be true or false, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let req = Request::builder()
            .uri("/v1/domains?name=web%2A&state=running&x=a+b")
            .body(())
            .unwrap();
        let q = query(&req).unwrap();
        assert_eq!(q["name"], "web*");
        assert_eq!(q["x"], "a b");
        let bad = Request::builder()
            .uri("/v1/domains?name=%zz")
            .body(())
            .unwrap();
        match query(&bad) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"ApiError { status: 400, code: "bad_request", message: "bad percent escape in '%zz'" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
