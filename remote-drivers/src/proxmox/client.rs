//! The PVE REST transport: `<base>/api2/json`, authentication, bounded answers, task polling.
//!
//! Authentication is an API token (`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`,
//! stateless) or a ticket: `POST /access/ticket` with the password gives the `PVEAuthCookie`
//! ticket and a `CSRFPreventionToken` that every write carries. Tickets live 2 h; we log in
//! again after [`TICKET_RENEW_AFTER`], or once when PVE answers 401 (the ticket expired or
//! pveproxy restarted with a new key). Secrets go only into headers and the login form.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use novacron_domain::Error;
use reqwest::header::{HeaderValue, AUTHORIZATION, COOKIE};
use reqwest::Method;
use serde_json::Value;

use crate::config::{Credentials, HostConfig, Secret, Timeouts};
use crate::http::{self, TransportError};

use super::error::PveError;

/// PVE tickets expire after 2 h; renew well before.
pub const TICKET_RENEW_AFTER: Duration = Duration::from_secs(90 * 60);
/// The most request shapes a recording keeps.
const RECORD_MAX: usize = 10_000;

/// One request as the schema sees it: method, path template, parameter names (no values).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestShape {
    pub method: String,
    /// The PVE path template (`/nodes/{node}/qemu/{vmid}/status/start`).
    pub template: String,
    /// Query or form parameter names, sorted.
    pub params: Vec<String>,
}

/// A request: a path template with its arguments, and parameters (query for GET/DELETE, form
/// body otherwise).
pub struct Call<'a> {
    pub method: Method,
    pub template: &'a str,
    pub args: Vec<(&'static str, String)>,
    pub params: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, template: &'a str, args: &[(&'static str, &str)]) -> Self {
        Self {
            method,
            template,
            args: args.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
            params: Vec::new(),
        }
    }

    pub fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.params.push((name, value.to_string()));
        self
    }
}

struct Ticket {
    ticket: Secret,
    csrf: Secret,
    at: Instant,
}

pub struct Client {
    host: String,
    http: reqwest::Client,
    /// `<base>/api2/json` (no trailing slash).
    api: url::Url,
    credentials: Credentials,
    timeouts: Timeouts,
    ticket: tokio::sync::Mutex<Option<Ticket>>,
    recording: Mutex<Option<Vec<RequestShape>>>,
}

impl Client {
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        let http = http::client(config).map_err(|e| e.into_error(&config.name))?;
        Ok(Self {
            host: config.name.clone(),
            http,
            api: api_base(&config.url),
            credentials: config.credentials.clone(),
            timeouts: config.timeouts,
            ticket: tokio::sync::Mutex::new(None),
            recording: Mutex::new(None),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Starts (or stops and discards) recording the shape of every request sent.
    pub fn record(&self, on: bool) {
        *self.recording.lock().unwrap_or_else(|p| p.into_inner()) = on.then(Vec::new);
    }

    pub fn recorded(&self) -> Vec<RequestShape> {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    fn note(&self, call: &Call<'_>) {
        let mut rec = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = rec.as_mut() {
            if rec.len() < RECORD_MAX {
                let mut params: Vec<String> =
                    call.params.iter().map(|(n, _)| (*n).to_owned()).collect();
                params.sort();
                params.dedup();
                rec.push(RequestShape {
                    method: call.method.to_string(),
                    template: call.template.to_owned(),
                    params,
                });
            }
        }
    }

    /// Sends `call` and returns its `data`. A 401 on a ticket session logs in once more.
    pub async fn call(&self, call: Call<'_>) -> Result<Value, Error> {
        let args: Vec<(&str, &str)> = call.args.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let url = render(&self.api, call.template, &args)?;
        self.note(&call);
        let mut relogged = false;
        loop {
            let auth = self.auth(relogged).await?;
            let mut req = self.http.request(call.method.clone(), url.clone());
            req = match call.method {
                Method::GET | Method::DELETE => req.query(&call.params),
                _ => req.form(&call.params),
            };
            for (name, value) in auth.headers(&call.method) {
                req = req.header(name, value);
            }
            let response = req.send().await.map_err(|e| {
                self.transport(TransportError::from_reqwest(e, self.timeouts.request))
            })?;
            let status = response.status().as_u16();
            if status == 401 && !relogged && auth.renewable {
                relogged = true;
                continue;
            }
            return self.decode(response, call.template).await;
        }
    }

    fn transport(&self, e: TransportError) -> Error {
        e.into_error(&self.host)
    }

    async fn decode(&self, response: reqwest::Response, what: &str) -> Result<Value, Error> {
        let status = response.status();
        let reason = reason_phrase(&response);
        let body = http::read_bounded(response, http::MAX_BODY, self.timeouts.request)
            .await
            .map_err(|e| self.transport(e))?;
        // A large inventory is parsed on the blocking pool (the raw body is kept for errors).
        let parsed: Option<Value> =
            http::parse_off_runtime(body.clone(), |b| serde_json::from_slice(b).ok())
                .await
                .map_err(|e| self.transport(e))?;
        if status.is_success() {
            let Some(mut doc) = parsed else {
                return Err(PveError::Decode {
                    what: what.to_owned(),
                    detail: format!("not JSON: {}", http::excerpt(&body)),
                }
                .into_error(&self.host));
            };
            return Ok(doc.get_mut("data").map(Value::take).unwrap_or(Value::Null));
        }
        Err(api_error(status.as_u16(), reason, parsed.as_ref(), &body).into_error(&self.host))
    }

    /// The headers that authenticate a call; logs in first when a ticket is needed.
    async fn auth(&self, force_login: bool) -> Result<Auth, Error> {
        match &self.credentials {
            Credentials::Token { id, secret } => {
                let mut v =
                    HeaderValue::from_str(&format!("PVEAPIToken={id}={}", secret.expose()))
                        .map_err(|_| {
                            Error::InvalidConfig(format!(
                                "host '{}': the API token id or secret holds characters a header cannot",
                                self.host
                            ))
                        })?;
                v.set_sensitive(true);
                Ok(Auth {
                    authorization: Some(v),
                    cookie: None,
                    csrf: None,
                    renewable: false,
                })
            }
            Credentials::Password { user, password } => {
                let mut slot = self.ticket.lock().await;
                let fresh = slot
                    .as_ref()
                    .is_some_and(|t| t.at.elapsed() < TICKET_RENEW_AFTER);
                if force_login || !fresh {
                    *slot = Some(self.login(user, password).await?);
                }
                let Some(t) = slot.as_ref() else {
                    return Err(Error::Internal("PVE ticket missing after login".into()));
                };
                let header = |s: String| {
                    HeaderValue::from_str(&s).map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                };
                let bad = |_| PveError::Decode {
                    what: "/access/ticket".into(),
                    detail: "the ticket or CSRF token holds characters a header cannot".into(),
                };
                Ok(Auth {
                    authorization: None,
                    cookie: Some(
                        header(format!("PVEAuthCookie={}", t.ticket.expose()))
                            .map_err(bad)
                            .map_err(|e| e.into_error(&self.host))?,
                    ),
                    csrf: Some(
                        header(t.csrf.expose().to_owned())
                            .map_err(bad)
                            .map_err(|e| e.into_error(&self.host))?,
                    ),
                    renewable: true,
                })
            }
        }
    }

    async fn login(&self, user: &str, password: &Secret) -> Result<Ticket, Error> {
        let url = render(&self.api, "/access/ticket", &[])?;
        let call = Call::new(Method::POST, "/access/ticket", &[])
            .param("username", user)
            .param("password", "");
        self.note(&call);
        tracing::debug!(host = %self.host, user, "PVE ticket login");
        let response = self
            .http
            .post(url)
            .form(&[("username", user), ("password", password.expose())])
            .send()
            .await
            .map_err(|e| self.transport(TransportError::from_reqwest(e, self.timeouts.request)))?;
        let data = self.decode(response, "/access/ticket").await?;
        let field = |name: &str| data.get(name).and_then(Value::as_str).map(Secret::new);
        match (field("ticket"), field("CSRFPreventionToken")) {
            (Some(ticket), Some(csrf)) => Ok(Ticket {
                ticket,
                csrf,
                at: Instant::now(),
            }),
            _ => Err(PveError::Decode {
                what: "/access/ticket".into(),
                detail: "no ticket or CSRFPreventionToken in the answer (two-factor login is not supported)"
                    .into(),
            }
            .into_error(&self.host)),
        }
    }

    /// Waits for the worker task `upid` to stop, until `deadline`. OK (or `WARNINGS: n`, a task
    /// that finished with warnings) is success; any other exit status is PVE's fault text.
    pub async fn wait_task(
        &self,
        upid: &str,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<(), Error> {
        let info = Upid::parse(upid).ok_or_else(|| {
            PveError::Decode {
                what: operation.to_owned(),
                detail: format!("'{upid}' is not a task UPID"),
            }
            .into_error(&self.host)
        })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let data = self
                .call(Call::new(
                    Method::GET,
                    "/nodes/{node}/tasks/{upid}/status",
                    &[("node", info.node), ("upid", upid)],
                ))
                .await?;
            if data.get("status").and_then(Value::as_str) == Some("stopped") {
                let exit = data
                    .get("exitstatus")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown exit status");
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(());
                }
                return Err(PveError::Task {
                    kind: info.kind.to_owned(),
                    exitstatus: exit.to_owned(),
                }
                .into_error(&self.host));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    operation,
                    after: now - started,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

struct Auth {
    authorization: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
    csrf: Option<HeaderValue>,
    /// A ticket, which a new login can replace.
    renewable: bool,
}

impl Auth {
    fn headers(&self, method: &Method) -> Vec<(reqwest::header::HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Some(v) = &self.authorization {
            out.push((AUTHORIZATION, v.clone()));
        }
        if let Some(v) = &self.cookie {
            out.push((COOKIE, v.clone()));
        }
        if let Some(v) = &self.csrf {
            if !matches!(*method, Method::GET | Method::HEAD) {
                out.push((
                    reqwest::header::HeaderName::from_static("csrfpreventiontoken"),
                    v.clone(),
                ));
            }
        }
        out
    }
}

/// The fields of a UPID we need: `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`.
pub struct Upid<'a> {
    pub node: &'a str,
    pub kind: &'a str,
}

impl<'a> Upid<'a> {
    pub fn parse(upid: &'a str) -> Option<Self> {
        let mut parts = upid.split(':');
        if parts.next()? != "UPID" {
            return None;
        }
        let node = parts.next().filter(|n| !n.is_empty())?;
        let kind = parts.nth(3)?;
        Some(Self { node, kind })
    }
}

/// `<base>/api2/json`, whatever the base's path.
pub fn api_base(base: &url::Url) -> url::Url {
    let mut api = base.clone();
    api.set_query(None);
    api.set_fragment(None);
    let path = api.path().trim_end_matches('/').to_owned();
    api.set_path(&format!("{path}/api2/json"));
    api
}

/// The URL of `template` with its `{name}` segments replaced by `args`, each percent-encoded as
/// one path segment.
pub fn render(api: &url::Url, template: &str, args: &[(&str, &str)]) -> Result<url::Url, Error> {
    let mut url = api.clone();
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| Error::InvalidConfig(format!("'{api}' cannot be a base URL")))?;
        for seg in template.split('/').filter(|s| !s.is_empty()) {
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let value = args
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| {
                            Error::Internal(format!("no value for {{{name}}} in {template}"))
                        })?;
                    segs.push(value);
                }
                None => {
                    segs.push(seg);
                }
            }
        }
    }
    Ok(url)
}

/// PVE's error: the JSON body's message and per-field errors, else the status line's reason.
fn api_error(status: u16, reason: Option<String>, body: Option<&Value>, raw: &[u8]) -> PveError {
    let message = body
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .or(reason)
        .unwrap_or_else(|| {
            let text = http::excerpt(raw);
            if text.is_empty() {
                format!("HTTP status {status} with no message")
            } else {
                text
            }
        });
    let errors: BTreeMap<String, String> = body
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .take(64)
                .map(|(k, v)| {
                    let text = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    PveError::Api {
        status,
        message,
        errors,
    }
}

/// The status line's reason phrase when it is not the standard one (PVE puts its error there).
pub fn reason_phrase(response: &reqwest::Response) -> Option<String> {
    response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_owned())
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_segments() {
        let api = api_base(&url::Url::parse("https://pve:8006/").unwrap());
        assert_eq!(api.as_str(), "https://pve:8006/api2/json");
        let u = render(
            &api,
            "/nodes/{node}/tasks/{upid}/status",
            &[
                ("node", "pve1"),
                ("upid", "UPID:pve1:1:2:3:qmstart:100:root@pam!t:"),
            ],
        )
        .unwrap();
        assert_eq!(
            u.path(),
            "/api2/json/nodes/pve1/tasks/UPID:pve1:1:2:3:qmstart:100:root@pam!t:/status"
        );
        let u = render(&api, "/nodes/{node}", &[("node", "a/b")]).unwrap();
        assert_eq!(u.path(), "/api2/json/nodes/a%2Fb");
        match render(&api, "/nodes/{node}", &[]) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Internal("no value for {node} in /nodes/{node}")"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn upids_parse() {
        let u = Upid::parse("UPID:pve2:000003E8:00001B58:6560A1B2:qmigrate:100:root@pam:").unwrap();
        assert_eq!((u.node, u.kind), ("pve2", "qmigrate"));
        assert!(Upid::parse("nope").is_none());
        assert!(Upid::parse("UPID::1").is_none());
    }

    #[test]
    fn errors_prefer_the_body_then_the_reason() {
        let body = serde_json::json!({"data": null, "message": "VM 100 not running\n"});
        match api_error(500, Some("ignored".into()), Some(&body), b"") {
            PveError::Api { message, .. } => assert_eq!(message, "VM 100 not running"),
            other => panic!("{other:?}"),
        }
        match api_error(401, Some("No ticket".into()), None, b"") {
            PveError::Api { message, .. } => assert_eq!(message, "No ticket"),
            other => panic!("{other:?}"),
        }
    }
}
