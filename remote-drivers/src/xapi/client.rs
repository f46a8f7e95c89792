//! The XenAPI client: one host's transport (JSON-RPC, falling back to XML-RPC), its session
//! and `Async.*` task polling.
//!
//! JSON-RPC 2.0 is tried first at `<base>/jsonrpc`. A host that answers it with 404 or with XML
//! (hosts before JSON-RPC support) is spoken to in XML-RPC at `<base>/` from then on; the
//! choice is remembered for the client's life. The session is logged in lazily, shared by all
//! calls, and logged in again once when the host says `SESSION_INVALID`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::{Fault, XapiError};
use super::methods::{self, Method};
use super::xmlrpc;
use crate::config::{Credentials, HostConfig, Secret};
use crate::http::{self, TransportError, MAX_BODY};

/// The API version we announce at login (XenServer 8 / XCP-ng 8.x speak 2.21).
const API_VERSION: &str = "2.21";
const ORIGINATOR: &str = "novacrond";
/// Task polling: start quick (most power operations take well under a second on XAPI), back
/// off to this.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    JsonRpc,
    XmlRpc,
}

/// What one HTTP exchange gave: the value, or the host's XAPI failure.
type Outcome = Result<Value, Fault>;

pub(crate) struct Client {
    host: String,
    jsonrpc_url: url::Url,
    xmlrpc_url: url::Url,
    http: reqwest::Client,
    user: String,
    password: Secret,
    request_timeout: Duration,
    protocol: Mutex<Option<Protocol>>,
    session: Mutex<Option<String>>,
    /// Serialises logins so concurrent first calls log in once.
    login_gate: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl Client {
    pub(crate) fn new(config: &HostConfig) -> Result<Self, novacron_domain::Error> {
        let (user, password) = match &config.credentials {
            Credentials::Password { user, password } => (user.clone(), password.clone()),
            Credentials::Token { .. } => {
                return Err(novacron_domain::Error::InvalidConfig(format!(
                    "host '{}': XAPI logs in with a user and password, not a token",
                    config.name
                )))
            }
        };
        let http = http::client(config).map_err(|e| e.into_error(&config.name))?;
        let (jsonrpc_url, xmlrpc_url) = endpoints(&config.url).map_err(|e| {
            novacron_domain::Error::InvalidConfig(format!("host '{}': {e}", config.name))
        })?;
        Ok(Self {
            host: config.name.clone(),
            jsonrpc_url,
            xmlrpc_url,
            http,
            user,
            password,
            request_timeout: config.timeouts.request,
            protocol: Mutex::new(None),
            session: Mutex::new(None),
            login_gate: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The protocol in use, once one has worked.
    pub(crate) fn protocol(&self) -> Option<Protocol> {
        *lock(&self.protocol)
    }

    /// A sessioned call: `args` exclude the session reference.
    pub(crate) async fn call(&self, method: &Method, args: Vec<Value>) -> Result<Value, XapiError> {
        self.call_named(method, method.name, args).await
    }

    async fn call_named(
        &self,
        method: &Method,
        wire_name: &str,
        args: Vec<Value>,
    ) -> Result<Value, XapiError> {
        if !method.session || args.len() + 1 != method.arity {
            return Err(XapiError::Internal(format!(
                "{}: called with {} parameters, declared {}",
                method.name,
                args.len() + 1,
                method.arity
            )));
        }
        let mut relogged = false;
        loop {
            let session = self.session().await?;
            let mut params = Vec::with_capacity(args.len() + 1);
            params.push(Value::String(session.clone()));
            params.extend(args.iter().cloned());
            match self.rpc(wire_name, &params).await? {
                Ok(v) => return Ok(v),
                Err(f) if f.code == "SESSION_INVALID" && !relogged => {
                    tracing::debug!(host = %self.host, method = wire_name, "XAPI session expired; logging in again");
                    self.forget_session(&session);
                    relogged = true;
                }
                Err(f) => return Err(XapiError::Fault(f)),
            }
        }
    }

    /// Runs `method` as `Async.<method>` and waits for its task until `deadline`; on time-out
    /// the task is cancelled and `XapiError::Timeout { after: limit }` returned. The task's
    /// result (a reference for `clone`-like calls, empty for power operations). The task is
    /// destroyed however this ends, also when the caller drops this future mid-wait (then the
    /// cancel and destroy run in a spawned task).
    pub(crate) async fn run_task(
        self: &Arc<Self>,
        method: &Method,
        args: Vec<Value>,
        operation: &'static str,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Value, XapiError> {
        let name = format!("Async.{}", method.name);
        let task = self.call_named(method, &name, args).await?;
        let task = as_ref_string(&task, &name)?;
        let mut guard = TaskGuard {
            client: self.clone(),
            task: Some(task.clone()),
        };
        let outcome = self
            .wait_task(&task, &name, operation, deadline, limit)
            .await;
        if matches!(outcome, Err(XapiError::Timeout { .. })) {
            // Best effort: the operation may still complete on the host.
            let _ = self.call(&methods::TASK_CANCEL, vec![json!(task)]).await;
        }
        // Tasks live on the host until destroyed; do not leak them.
        if let Err(e) = self.call(&methods::TASK_DESTROY, vec![json!(task)]).await {
            tracing::debug!(host = %self.host, task = %task, error = %e, "task.destroy failed");
        }
        guard.task = None;
        outcome
    }

    async fn wait_task(
        &self,
        task: &str,
        name: &str,
        operation: &'static str,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Value, XapiError> {
        let mut pause = POLL_FIRST;
        loop {
            let status = self
                .call(&methods::TASK_GET_STATUS, vec![json!(task)])
                .await?;
            match status.as_str() {
                Some("pending") | Some("cancelling") => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(XapiError::Timeout {
                            operation,
                            after: limit,
                        });
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                Some("success") => {
                    let result = self
                        .call(&methods::TASK_GET_RESULT, vec![json!(task)])
                        .await?;
                    return task_result(result, name);
                }
                Some("failure") | Some("cancelled") => {
                    let info = self
                        .call(&methods::TASK_GET_ERROR_INFO, vec![json!(task)])
                        .await?;
                    let items = info.as_array().cloned().unwrap_or_default();
                    let mut fault = Fault::from_description(&items);
                    if items.is_empty() {
                        fault.code = format!("TASK_{}", status.as_str().unwrap_or("FAILED"))
                            .to_ascii_uppercase();
                    }
                    return Err(XapiError::Fault(fault));
                }
                _ => {
                    return Err(XapiError::Malformed {
                        method: "task.get_status".into(),
                        detail: format!("unknown task status {status}"),
                    })
                }
            }
        }
    }

    /// Logs out if logged in (best effort: the host expires idle sessions anyway).
    pub(crate) async fn logout(&self) {
        let session = lock(&self.session).take();
        if let Some(s) = session {
            let _ = self.rpc(methods::LOGOUT.name, &[Value::String(s)]).await;
        }
    }

    async fn session(&self) -> Result<String, XapiError> {
        if let Some(s) = lock(&self.session).clone() {
            return Ok(s);
        }
        let _gate = self.login_gate.lock().await;
        if let Some(s) = lock(&self.session).clone() {
            return Ok(s);
        }
        let s = self.login().await?;
        *lock(&self.session) = Some(s.clone());
        Ok(s)
    }

    fn forget_session(&self, stale: &str) {
        let mut s = lock(&self.session);
        if s.as_deref() == Some(stale) {
            *s = None;
        }
    }

    async fn login(&self) -> Result<String, XapiError> {
        let params = [
            json!(self.user),
            json!(self.password.expose()),
            json!(API_VERSION),
            json!(ORIGINATOR),
        ];
        debug_assert_eq!(params.len(), methods::LOGIN.arity);
        match self.rpc(methods::LOGIN.name, &params).await? {
            Ok(v) => as_ref_string(&v, methods::LOGIN.name),
            Err(mut f) => {
                // The password must never travel on in an error, whatever the host echoes.
                let secret = self.password.expose();
                if !secret.is_empty() {
                    for p in &mut f.params {
                        *p = p.replace(secret, "***");
                    }
                }
                Err(XapiError::Fault(f))
            }
        }
    }

    /// One exchange, in whichever protocol the host speaks.
    async fn rpc(&self, method: &str, params: &[Value]) -> Result<Outcome, XapiError> {
        match self.protocol() {
            Some(Protocol::XmlRpc) => self.xmlrpc(method, params).await,
            Some(Protocol::JsonRpc) => match self.jsonrpc(method, params).await? {
                Some(outcome) => Ok(outcome),
                None => Err(XapiError::Malformed {
                    method: method.to_owned(),
                    detail: "the host stopped answering JSON-RPC".into(),
                }),
            },
            None => match self.jsonrpc(method, params).await? {
                Some(outcome) => {
                    self.settle(Protocol::JsonRpc);
                    Ok(outcome)
                }
                None => {
                    let outcome = self.xmlrpc(method, params).await?;
                    self.settle(Protocol::XmlRpc);
                    Ok(outcome)
                }
            },
        }
    }

    fn settle(&self, p: Protocol) {
        let mut current = lock(&self.protocol);
        if current.is_none() {
            tracing::debug!(host = %self.host, protocol = ?p, "XAPI wire protocol chosen");
            *current = Some(p);
        }
    }

    /// `None` when the host does not speak JSON-RPC (404, or an XML answer).
    async fn jsonrpc(&self, method: &str, params: &[Value]) -> Result<Option<Outcome>, XapiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
        let response = self
            .http
            .post(self.jsonrpc_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| TransportError::from_reqwest(e, self.request_timeout))?;
        let status = response.status();
        let xml = content_type(&response).contains("xml");
        let body = http::read_bounded(response, MAX_BODY, self.request_timeout).await?;
        if status == reqwest::StatusCode::NOT_FOUND || (status.is_success() && xml) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(TransportError::Status {
                status: status.as_u16(),
                body: http::excerpt(&body),
            }
            .into());
        }
        let name = method.to_owned();
        let outcome = http::parse_off_runtime(body, move |b| parse_jsonrpc(b, &name)).await??;
        Ok(Some(outcome))
    }

    async fn xmlrpc(&self, method: &str, params: &[Value]) -> Result<Outcome, XapiError> {
        let response = self
            .http
            .post(self.xmlrpc_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(xmlrpc::encode_call(method, params))
            .send()
            .await
            .map_err(|e| TransportError::from_reqwest(e, self.request_timeout))?;
        let status = response.status();
        let body = http::read_bounded(response, MAX_BODY, self.request_timeout).await?;
        if !status.is_success() {
            return Err(TransportError::Status {
                status: status.as_u16(),
                body: http::excerpt(&body),
            }
            .into());
        }
        let value = http::parse_off_runtime(body, xmlrpc::decode_response)
            .await?
            .map_err(|detail| XapiError::Malformed {
                method: method.to_owned(),
                detail,
            })?;
        parse_status_struct(value, method)
    }
}

/// Cancels and destroys a task whose wait was dropped before it could (the caller's time
/// limit fired, or the caller went away): a leaked task stays on the host until destroyed.
struct TaskGuard {
    client: Arc<Client>,
    task: Option<String>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        tracing::debug!(host = %client.host, task = %task, "call abandoned; cancelling its XAPI task");
        runtime.spawn(async move {
            let _ = client.call(&methods::TASK_CANCEL, vec![json!(task)]).await;
            if let Err(e) = client.call(&methods::TASK_DESTROY, vec![json!(task)]).await {
                tracing::debug!(host = %client.host, task = %task, error = %e, "task.destroy failed");
            }
        });
    }
}

/// `<base>/jsonrpc` and `<base>/` (a base with a path keeps it).
pub(crate) fn endpoints(base: &url::Url) -> Result<(url::Url, url::Url), String> {
    let mut root = base.clone();
    if !root.path().ends_with('/') {
        let p = format!("{}/", root.path());
        root.set_path(&p);
    }
    root.set_query(None);
    root.set_fragment(None);
    let json = root
        .join("jsonrpc")
        .map_err(|e| format!("URL {base}: {e}"))?;
    Ok((json, root))
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A JSON-RPC 2.0 (or 1.0-style) answer: `result`, or `error` with XAPI's code in `message`
/// and its parameters in `data`.
pub(crate) fn parse_jsonrpc(body: &[u8], method: &str) -> Result<Outcome, XapiError> {
    let malformed = |detail: String| XapiError::Malformed {
        method: method.to_owned(),
        detail,
    };
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not JSON ({e}): {}", http::excerpt(body))))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(malformed("not a JSON object".into()));
    };
    match obj.remove("error") {
        Some(Value::Null) | None => obj
            .remove("result")
            .map(Ok)
            .ok_or_else(|| malformed("neither result nor error".into())),
        Some(Value::Object(mut e)) => {
            let mut items = vec![e.remove("message").unwrap_or(Value::Null)];
            match e.remove("data") {
                Some(Value::Array(data)) => items.extend(data),
                Some(Value::Null) | None => {}
                Some(other) => items.push(other),
            }
            Ok(Err(Fault::from_description(&items)))
        }
        // JSON-RPC 1.0 style: the error is the description array itself.
        Some(Value::Array(items)) => Ok(Err(Fault::from_description(&items))),
        Some(other) => Err(malformed(format!("unexpected error value {other}"))),
    }
}

/// XML-RPC's `{Status, Value | ErrorDescription}`.
pub(crate) fn parse_status_struct(value: Value, method: &str) -> Result<Outcome, XapiError> {
    let malformed = |detail: &str| XapiError::Malformed {
        method: method.to_owned(),
        detail: detail.to_owned(),
    };
    let Value::Object(mut obj) = value else {
        return Err(malformed("not a Status struct"));
    };
    match obj.get("Status").and_then(Value::as_str) {
        Some("Success") => obj
            .remove("Value")
            .map(Ok)
            .ok_or_else(|| malformed("Success without Value")),
        Some(_) => match obj.remove("ErrorDescription") {
            Some(Value::Array(items)) => Ok(Err(Fault::from_description(&items))),
            _ => Err(malformed("Failure without ErrorDescription")),
        },
        None => Err(malformed("no Status in the answer")),
    }
}

fn as_ref_string(v: &Value, method: &str) -> Result<String, XapiError> {
    v.as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| XapiError::Malformed {
            method: method.to_owned(),
            detail: format!("expected a reference, got {v}"),
        })
}

/// A task's result is the XML-RPC encoding of the value (`<value>OpaqueRef:..</value>`), or
/// empty for void.
fn task_result(result: Value, method: &str) -> Result<Value, XapiError> {
    let text = result.as_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    if text.starts_with("<value") {
        return xmlrpc::decode_value(text).map_err(|detail| XapiError::Malformed {
            method: method.to_owned(),
            detail,
        });
    }
    Ok(Value::String(text.to_owned()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path() {
        let (j, x) = endpoints(&url::Url::parse("https://xcp.example").unwrap()).unwrap();
        assert_eq!(j.as_str(), "https://xcp.example/jsonrpc");
        assert_eq!(x.as_str(), "https://xcp.example/");
        let (j, _) = endpoints(&url::Url::parse("https://p.example/xapi?x=1").unwrap()).unwrap();
        assert_eq!(j.as_str(), "https://p.example/xapi/jsonrpc");
    }

    #[test]
    fn jsonrpc_errors_become_faults() {
        let body = br#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:x"]},"id":1}"#;
        let f = parse_jsonrpc(body, "VM.get_all").unwrap().unwrap_err();
        assert_eq!(f.code, "SESSION_INVALID");
        assert_eq!(f.params, vec!["OpaqueRef:x".to_owned()]);
        let ok = parse_jsonrpc(br#"{"jsonrpc":"2.0","result":[1],"id":1}"#, "m").unwrap();
        assert_eq!(ok.unwrap(), json!([1]));
        match parse_jsonrpc(b"<html/>", "m") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Malformed { method: "m", detail: "not JSON (expected value at line 1 column 1): <html/>" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_jsonrpc(b"{}", "m") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Malformed { method: "m", detail: "neither result nor error" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        let v1 = parse_jsonrpc(
            br#"{"result":null,"error":["HANDLE_INVALID","VM","r"],"id":1}"#,
            "m",
        );
        assert_eq!(v1.unwrap().unwrap_err().code, "HANDLE_INVALID");
    }

    #[test]
    fn status_structs() {
        let f = parse_status_struct(
            json!({"Status": "Failure", "ErrorDescription": ["VM_IS_TEMPLATE", "r"]}),
            "m",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(f.code, "VM_IS_TEMPLATE");
        match parse_status_struct(json!({"Value": 1}), "m") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Malformed { method: "m", detail: "no Status in the answer" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_status_struct(json!("x"), "m") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Malformed { method: "m", detail: "not a Status struct" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn task_results() {
        assert_eq!(task_result(json!(""), "m").unwrap(), Value::Null);
        assert_eq!(
            task_result(json!("<value>OpaqueRef:a</value>"), "m").unwrap(),
            json!("OpaqueRef:a")
        );
    }
}
