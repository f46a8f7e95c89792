//! JSON calls to a daemon's HTTP API on its Unix socket (through curl, as a client makes
//! them): the request, a call that must succeed, a QMP command through the daemon, a
//! domain's state and a definition.

use std::path::Path;

use serde_json::{json, Value};

use super::daemon::{curl, Reply};

const JSON: &str = "Content-Type: application/json";

/// `method path` with `body` as JSON (none: no body).
pub fn call(s: &Path, method: &str, path: &str, body: Option<&Value>) -> Reply {
    match body {
        Some(b) => curl(
            s,
            method,
            path,
            &["-H", JSON, "--data-binary", &b.to_string()],
        ),
        None => curl(s, method, path, &[]),
    }
}

/// [`call`] that must answer 2xx: its JSON (`Null` for an empty body). `context` (say, the
/// daemon's log) is shown beside a failure.
pub fn ok_or(
    s: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    context: impl FnOnce() -> String,
) -> Value {
    let r = call(s, method, path, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}\n{}",
        r.status,
        r.body,
        context()
    );
    if r.body.trim().is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// [`call`] that must answer 2xx: its JSON (`Null` for an empty body).
pub fn ok(s: &Path, method: &str, path: &str, body: Option<&Value>) -> Value {
    ok_or(s, method, path, body, String::new)
}

/// QMP command `execute` (with `arguments`) to `domain` through the daemon: its `return`.
pub fn qmp_args(s: &Path, domain: &str, execute: &str, arguments: Value) -> Value {
    ok(
        s,
        "POST",
        &format!("/v1/domains/{domain}/qmp"),
        Some(&json!({ "execute": execute, "arguments": arguments })),
    )["return"]
        .clone()
}

/// [`qmp_args`] without arguments.
pub fn qmp(s: &Path, domain: &str, execute: &str) -> Value {
    qmp_args(s, domain, execute, json!({}))
}

/// The domain's state as the API names it (`running`, `shutoff`, ...).
pub fn state(s: &Path, domain: &str) -> String {
    ok(s, "GET", &format!("/v1/domains/{domain}"), None)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Defines a domain from libvirt XML (created or replaced).
pub fn define(s: &Path, xml: &str) {
    let r = curl(
        s,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
}
