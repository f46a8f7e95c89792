//! Is this a XAPI host? Asked without credentials.
//!
//! `pool.get_all` with an empty session is harmless: a XAPI host answers `SESSION_INVALID`
//! (JSON-RPC at `/jsonrpc`, or XML-RPC at `/` on hosts without JSON-RPC). XAPI discloses no
//! version without a session (`host.get_software_version` needs one), so a found host is
//! reported without a version; `capabilities` gives it once logged in.

use std::time::Duration;

use serde_json::{json, Value};

use super::client::{endpoints, parse_jsonrpc, parse_status_struct};
use super::methods;
use super::xmlrpc;
use crate::http::{self, TransportError};

/// Bodies larger than this are not a XAPI error answer.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// `Some("")` (found, version unknown) if XAPI answers at `base`.
pub async fn probe(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let Ok((jsonrpc_url, xmlrpc_url)) = endpoints(base) else {
        return Ok(None);
    };
    let method = methods::POOL_GET_ALL.name;
    let params = [Value::String(String::new())];
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 0});
    let response = client
        .post(jsonrpc_url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    let status = response.status();
    let is_xml = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("xml"));
    let answer = match http::read_bounded(response, PROBE_BODY_LIMIT, timeout).await {
        Ok(b) => b,
        Err(TransportError::TooLarge { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if status.is_success() && !is_xml {
        return Ok(found(parse_jsonrpc(&answer, method).ok()));
    }
    if status != reqwest::StatusCode::NOT_FOUND && !(status.is_success() && is_xml) {
        return Ok(None);
    }
    // No JSON-RPC here: an older XAPI speaks XML-RPC at the root.
    let response = client
        .post(xmlrpc_url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(xmlrpc::encode_call(method, &params))
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let answer = match http::read_bounded(response, PROBE_BODY_LIMIT, timeout).await {
        Ok(b) => b,
        Err(TransportError::TooLarge { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let outcome = xmlrpc::decode_response(&answer)
        .ok()
        .and_then(|v| parse_status_struct(v, method).ok());
    Ok(found(outcome))
}

fn found(outcome: Option<Result<Value, super::error::Fault>>) -> Option<String> {
    match outcome {
        Some(Err(f)) if f.code == "SESSION_INVALID" => Some(String::new()),
        _ => None,
    }
}
