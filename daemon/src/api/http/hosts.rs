//! `/v1/hosts/...`: remote vendor hosts and their domains. Each handler parses, runs one
//! operation (changes go through the executor with a remote target) and renders, like the
//! local routes; access levels come from the operation table.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::request::{decode_segment, flag, query, read_body};
use super::response::{json_response, no_content, Response};
use super::Ctx;
use crate::ops::lifecycle::Kind;
use crate::ops::{hosts, Executor, Target};
use crate::service::remote::{HostEntry, Registration};

/// The remote endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEndpoint {
    List,
    Register,
    Discover,
    Get,
    Unregister,
    Domains,
    Domain,
    Action(Kind),
}

/// Discovery probes are bounded; an address list is short.
const MAX_DISCOVER_ADDRESSES: usize = 64;
const DEFAULT_DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DISCOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// `/v1/hosts/{host}/domains/{name}/...`: the host and domain segments, percent-decoded
/// (vendor VM names often hold spaces: "Windows Server 2019").
fn segments(path: &str) -> Result<(String, String), ApiError> {
    let mut s = path.split('/').skip(3);
    let host = decode_segment(s.next().unwrap_or_default())?;
    let name = decode_segment(s.nth(1).unwrap_or_default())?;
    Ok((host, name))
}

pub(crate) async fn dispatch(
    endpoint: HostEndpoint,
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let actor = caller.actor;
    let (host, name) = segments(req.uri().path())?;
    match endpoint {
        HostEndpoint::List => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "hosts": svc.remote_hosts(),
                "problems": svc.remote_problems(),
            }),
        )),
        HostEndpoint::Register => {
            // The body carries credentials: administrators only (the table's access level,
            // checked before the body is read).
            let body: RegisterBody = parse(&read_body(req).await?)?;
            let registration = body.into_registration()?;
            let op = hosts::RegisterHost { registration };
            let view = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::CREATED, &view))
        }
        HostEndpoint::Discover => {
            // Probing arbitrary addresses from the daemon's network position is an
            // administrator's call (the table's access level).
            let body: DiscoverBody = parse(&read_body(req).await?)?;
            if body.addresses.is_empty() || body.addresses.len() > MAX_DISCOVER_ADDRESSES {
                return Err(ApiError::bad_request(format!(
                    "addresses: give 1 to {MAX_DISCOVER_ADDRESSES} addresses"
                )));
            }
            let timeout = body
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_DISCOVER_TIMEOUT);
            if timeout.is_zero() || timeout > MAX_DISCOVER_TIMEOUT {
                return Err(ApiError::bad_request(format!(
                    "timeout_secs: must be 1 to {}",
                    MAX_DISCOVER_TIMEOUT.as_secs()
                )));
            }
            let tls = novacron_remote_drivers::TlsOptions {
                verify: body.tls_verify.unwrap_or(true),
                ca_file: None,
            };
            let found = svc.discover_hosts(&body.addresses, tls, timeout).await;
            Ok(json_response(StatusCode::OK, &found))
        }
        HostEndpoint::Get => Ok(json_response(StatusCode::OK, &svc.remote_host(&host)?)),
        HostEndpoint::Unregister => {
            let op = hosts::UnregisterHost { host };
            exec.run(actor, Target::Local, op).await?;
            Ok(no_content())
        }
        HostEndpoint::Domains => {
            let q = query(&req)?;
            let state = q
                .get("state")
                .map(|s| {
                    s.parse::<novacron_domain::DomainState>()
                        .map_err(|e| ApiError::bad_request(format!("query parameter state: {e}")))
                })
                .transpose()?;
            let name = q.get("name").map(String::as_str);
            let inventory = svc.remote_list(&host, state, name).await?;
            Ok(json_response(StatusCode::OK, &inventory))
        }
        HostEndpoint::Domain => Ok(json_response(
            StatusCode::OK,
            &svc.remote_get(&host, &name).await?,
        )),
        HostEndpoint::Action(kind) => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let op = super::routes::read_lifecycle(kind, name, req).await?;
            super::routes::run_lifecycle(&exec, actor, Target::Remote(host), op, wait).await
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde_json's message names the field and column; it never echoes string values.
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverBody {
    addresses: Vec<String>,
    tls_verify: Option<bool>,
    timeout_secs: Option<u64>,
}

/// `POST /v1/hosts`: the entry's fields, with the credentials inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    /// Parsed after, so a wrong value is named with its field.
    driver: String,
    url: String,
    credentials: CredentialsBody,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    request_timeout_secs: Option<u64>,
    #[serde(default)]
    read_timeout_secs: Option<u64>,
    #[serde(default)]
    operation_timeout_secs: Option<u64>,
    #[serde(default)]
    breaker_failures: Option<u32>,
    #[serde(default)]
    breaker_open_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CredentialsBody {
    Password(PasswordBody),
    Token(TokenBody),
}

/// Exactly these fields: a body with both a password and a token matches neither.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    user: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token_id: String,
    token_secret: String,
}

impl RegisterBody {
    fn into_registration(self) -> Result<Registration, ApiError> {
        // Stored as `key = value` lines, read back trimmed: a value that would not survive
        // that round trip is refused rather than silently changed.
        let line_safe = |field: &str, v: &str| {
            if v.is_empty() || v.contains(['\n', '\r']) || v.trim() != v {
                Err(ApiError::bad_request(format!(
                    "credentials.{field}: must be one non-empty line without leading or trailing whitespace"
                )))
            } else {
                Ok(())
            }
        };
        let text = match &self.credentials {
            CredentialsBody::Password(PasswordBody { user, password }) => {
                line_safe("user", user)?;
                line_safe("password", password)?;
                format!("user = {user}\npassword = {password}\n")
            }
            CredentialsBody::Token(TokenBody {
                token_id,
                token_secret,
            }) => {
                line_safe("token_id", token_id)?;
                line_safe("token_secret", token_secret)?;
                format!("token_id = {token_id}\ntoken_secret = {token_secret}\n")
            }
        };
        let driver = self
            .driver
            .parse::<novacron_remote_drivers::DriverKind>()
            .map_err(|e| ApiError::bad_request(format!("driver: {e}")))?;
        Ok(Registration {
            entry: HostEntry {
                name: self.name,
                driver,
                url: self.url,
                credentials_file: None,
                credential: None,
                tls_verify: self.tls_verify.unwrap_or(true),
                ca_file: self.ca_file,
                request_timeout_secs: self.request_timeout_secs,
                read_timeout_secs: self.read_timeout_secs,
                operation_timeout_secs: self.operation_timeout_secs,
                breaker_failures: self.breaker_failures,
                breaker_open_secs: self.breaker_open_secs,
            },
            credentials: novacron_remote_drivers::Secret::new(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_pick_host_and_domain() {
        assert_eq!(
            segments("/v1/hosts/vc1/domains/Windows%20Server+2019/start").unwrap(),
            ("vc1".to_owned(), "Windows Server+2019".to_owned())
        );
        assert_eq!(
            segments("/v1/hosts/vc1").unwrap(),
            ("vc1".to_owned(), String::new())
        );
        match segments("/v1/hosts/vc1/domains/%zz") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"ApiError { status: 400, code: "bad_request", message: "bad percent escape in '%zz'" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_body_with_both_a_password_and_a_token_is_refused() {
        let both = r#"{"name":"h","driver":"xapi","url":"https://x","credentials":{"user":"u","password":"p","token_id":"t","token_secret":"s"}}"#;
        match serde_json::from_str::<RegisterBody>(both) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Error("data did not match any variant of untagged enum CredentialsBody", line: 1, column: 122)"#
            ),
            Ok(_) => panic!("accepted"),
        }
        let padded = r#"{"name":"h","driver":"xapi","url":"https://x","credentials":{"user":"u","password":" p"}}"#;
        let body: RegisterBody = serde_json::from_str(padded).unwrap();
        match body.into_registration() {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"ApiError { status: 400, code: "bad_request", message: "credentials.password: must be one non-empty line without leading or trailing whitespace" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn credentials_with_newlines_are_refused_without_echo() {
        let body: RegisterBody = serde_json::from_str(
            r#"{"name":"h","driver":"xapi","url":"https://x","credentials":{"user":"u","password":"a\nb=c"}}"#,
        )
        .unwrap();
        let e = body.into_registration().err().unwrap();
        assert!(e.message.contains("credentials.password") && !e.message.contains("b=c"));
    }
}
