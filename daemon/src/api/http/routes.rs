//! The route table (also what the OpenAPI coverage test reads) and the handlers: each one
//! parses, calls the service once, and renders the result.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Request, StatusCode};
use novacron_domain::{DomainConfig, DomainState};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::ApiError;
use super::hosts::{HostEndpoint, RemoteActionName};
use super::migration::MigrationEndpoint;
use super::request::{content_type, flag, is_xml, query, read_body, text, wants_xml};
use super::response::{json_response, no_content, with_type, xml_response, Response};
use super::Ctx;
use crate::config::Role;
use crate::service::{Action, ListFilter, ShutdownOptions};

/// What a request is for, once its path and method are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ListDomains,
    DefineDomain,
    GetDomain,
    UndefineDomain,
    DomainXml,
    DomainAction(ActionName),
    SetAutostart,
    Pinning,
    Pin,
    Qmp,
    GetOperation,
    Host,
    Events,
    OpenApi,
    Metrics,
    /// `/v1/hosts/...`: remote vendor hosts (see `hosts.rs`).
    Remote(HostEndpoint),
    Migration(MigrationEndpoint),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionName {
    Start,
    Shutdown,
    Destroy,
    Suspend,
    Resume,
    Reboot,
    Reset,
}

/// Every route: method, path template (`{x}` is one segment), endpoint.
pub const ROUTES: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/v1/domains", Endpoint::ListDomains),
    (Method::POST, "/v1/domains", Endpoint::DefineDomain),
    (Method::GET, "/v1/domains/{name}", Endpoint::GetDomain),
    (
        Method::DELETE,
        "/v1/domains/{name}",
        Endpoint::UndefineDomain,
    ),
    (Method::GET, "/v1/domains/{name}/xml", Endpoint::DomainXml),
    (
        Method::POST,
        "/v1/domains/{name}/start",
        Endpoint::DomainAction(ActionName::Start),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/shutdown",
        Endpoint::DomainAction(ActionName::Shutdown),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/destroy",
        Endpoint::DomainAction(ActionName::Destroy),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/suspend",
        Endpoint::DomainAction(ActionName::Suspend),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/resume",
        Endpoint::DomainAction(ActionName::Resume),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/reboot",
        Endpoint::DomainAction(ActionName::Reboot),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/reset",
        Endpoint::DomainAction(ActionName::Reset),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/autostart",
        Endpoint::SetAutostart,
    ),
    (Method::GET, "/v1/domains/{name}/pinning", Endpoint::Pinning),
    (Method::PUT, "/v1/domains/{name}/pinning", Endpoint::Pin),
    (Method::POST, "/v1/domains/{name}/qmp", Endpoint::Qmp),
    (Method::GET, "/v1/operations/{id}", Endpoint::GetOperation),
    (Method::GET, "/v1/host", Endpoint::Host),
    (Method::GET, "/v1/events", Endpoint::Events),
    (Method::GET, "/v1/openapi.json", Endpoint::OpenApi),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (
        Method::GET,
        "/v1/hosts",
        Endpoint::Remote(HostEndpoint::List),
    ),
    (
        Method::POST,
        "/v1/hosts",
        Endpoint::Remote(HostEndpoint::Register),
    ),
    // Before "/v1/hosts/{host}" so "discover" is never taken for a host name.
    (
        Method::POST,
        "/v1/hosts/discover",
        Endpoint::Remote(HostEndpoint::Discover),
    ),
    (
        Method::GET,
        "/v1/hosts/{host}",
        Endpoint::Remote(HostEndpoint::Get),
    ),
    (
        Method::DELETE,
        "/v1/hosts/{host}",
        Endpoint::Remote(HostEndpoint::Unregister),
    ),
    (
        Method::GET,
        "/v1/hosts/{host}/domains",
        Endpoint::Remote(HostEndpoint::Domains),
    ),
    (
        Method::GET,
        "/v1/hosts/{host}/domains/{name}",
        Endpoint::Remote(HostEndpoint::Domain),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/start",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Start)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/shutdown",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Shutdown)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/destroy",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Destroy)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/suspend",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Suspend)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/resume",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Resume)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/reboot",
        Endpoint::Remote(HostEndpoint::Action(RemoteActionName::Reboot)),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/migrate",
        Endpoint::Migration(MigrationEndpoint::Migrate),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/migration",
        Endpoint::Migration(MigrationEndpoint::Progress),
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/migration",
        Endpoint::Migration(MigrationEndpoint::Cancel),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/migration/postcopy",
        Endpoint::Migration(MigrationEndpoint::Postcopy),
    ),
    (
        Method::POST,
        "/v1/migrations/incoming",
        Endpoint::Migration(MigrationEndpoint::Prepare),
    ),
    (
        Method::GET,
        "/v1/migrations/incoming/{id}",
        Endpoint::Migration(MigrationEndpoint::Incoming),
    ),
    (
        Method::DELETE,
        "/v1/migrations/incoming/{id}",
        Endpoint::Migration(MigrationEndpoint::Abort),
    ),
    (
        Method::POST,
        "/v1/migrations/incoming/{id}/finish",
        Endpoint::Migration(MigrationEndpoint::Finish),
    ),
];

/// Finds the endpoint and the one `{…}` parameter, or 404 / 405.
pub fn resolve<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(Endpoint, Option<&'p str>), ApiError> {
    let mut path_known = false;
    for (m, template, endpoint) in ROUTES {
        if let Some(param) = match_template(template, path) {
            if m == method {
                return Ok((*endpoint, param));
            }
            path_known = true;
        }
    }
    if path_known {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        ))
    } else {
        Err(ApiError::not_found(format!("no such resource: {path}")))
    }
}

/// `Some(param)` when `path` fits `template`; the parameter must be a non-empty segment.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                param = Some(ps);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

pub(crate) async fn dispatch(
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    let (endpoint, param) = resolve(req.method(), &path)?;
    // Audited with every other 403 in `handle`.
    if let Err(why) = role_reaches(caller.role, endpoint) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    }
    let param = param.unwrap_or_default().to_owned();
    let svc = &ctx.service;
    match endpoint {
        Endpoint::ListDomains => {
            let q = query(&req)?;
            let state = q
                .get("state")
                .map(|s| {
                    s.parse::<DomainState>()
                        .map_err(|e| ApiError::bad_request(format!("query parameter state: {e}")))
                })
                .transpose()?;
            let filter = ListFilter {
                state,
                name: q.get("name").cloned(),
            };
            Ok(json_response(StatusCode::OK, &svc.list_status(&filter)))
        }
        Endpoint::DefineDomain => {
            let transient = flag(&query(&req)?, "transient", false)?;
            let config = read_definition(req).await?;
            if transient {
                let summary = svc.create(config).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &svc.status(&summary.name)?,
                ))
            } else {
                let existed = svc.status(&config.name).is_ok();
                let summary = svc.define(config).await?;
                let status = if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok(json_response(status, &svc.status(&summary.name)?))
            }
        }
        Endpoint::GetDomain => {
            let details = svc.details(&param)?;
            if wants_xml(&req) {
                Ok(xml_response(StatusCode::OK, details.config.to_xml()))
            } else {
                Ok(json_response(StatusCode::OK, &details))
            }
        }
        Endpoint::DomainXml => Ok(xml_response(
            StatusCode::OK,
            svc.get(&param)?.config.to_xml(),
        )),
        Endpoint::UndefineDomain => {
            svc.undefine(&param).await?;
            Ok(no_content())
        }
        Endpoint::DomainAction(name) => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let action = read_action(name, req).await?;
            if wait {
                let status = svc.perform_and_report(&param, action).await?;
                Ok(json_response(StatusCode::OK, &status))
            } else {
                let op = svc.perform_in_background(&param, action)?;
                let mut r = json_response(StatusCode::ACCEPTED, &op);
                if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
                    r.headers_mut().insert(LOCATION, v);
                }
                Ok(r)
            }
        }
        Endpoint::SetAutostart => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                enabled: bool,
            }
            let body: Body = parse_json(&read_body(req).await?)?;
            svc.set_autostart(&param, body.enabled).await?;
            Ok(json_response(StatusCode::OK, &svc.status(&param)?))
        }
        Endpoint::Pinning => {
            let config = flag(&query(&req)?, "config", false)?;
            Ok(json_response(
                StatusCode::OK,
                &svc.pinning(&param, config).await?,
            ))
        }
        Endpoint::Pin => {
            let body: PinBody = parse_json(&read_body(req).await?)?;
            let kind = body.target()?;
            let scope = crate::service::placement::PinScope {
                live: body.live,
                config: body.config,
            };
            Ok(json_response(
                StatusCode::OK,
                &svc.pin(&param, kind, &body.cpuset, scope).await?,
            ))
        }
        Endpoint::Qmp => {
            if caller.role != Role::Admin {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "QMP passthrough is for administrators",
                ));
            }
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                execute: String,
                arguments: Option<Value>,
            }
            let body: Body = parse_json(&read_body(req).await?)?;
            let ret = svc
                .qmp_passthrough(&param, &body.execute, body.arguments.as_ref())
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "return": ret }),
            ))
        }
        Endpoint::GetOperation => match svc.operation(&param) {
            Some(op) => Ok(json_response(StatusCode::OK, &op)),
            None => Err(
                novacron_domain::Error::not_found(novacron_domain::Kind::Operation, param).into(),
            ),
        },
        Endpoint::Host => Ok(json_response(StatusCode::OK, &svc.host_info().await)),
        Endpoint::Events => super::events::stream(&req, ctx, &caller),
        Endpoint::Remote(endpoint) => super::hosts::dispatch(endpoint, req, ctx, caller).await,
        Endpoint::Migration(endpoint) => {
            super::migration::dispatch(endpoint, &param, req, ctx).await
        }
        Endpoint::OpenApi => Ok(with_type(
            StatusCode::OK,
            "application/json",
            super::OPENAPI,
        )),
        Endpoint::Metrics => Ok(with_type(
            StatusCode::OK,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(&svc.metrics().await),
        )),
    }
}

/// Which endpoints a role reaches: the migration peer protocol (`/v1/migrations/incoming...`)
/// belongs to peers (and admins); a peer's token reaches nothing else.
pub fn role_reaches(role: Role, endpoint: Endpoint) -> Result<(), &'static str> {
    use MigrationEndpoint::{Abort, Finish, Incoming, Prepare};
    let peer_route = matches!(
        endpoint,
        Endpoint::Migration(Prepare | Incoming | Finish | Abort)
    );
    match role {
        Role::Admin => Ok(()),
        Role::MigrationPeer if peer_route => Ok(()),
        Role::MigrationPeer => {
            Err("a migration peer token may only use the /v1/migrations/incoming routes")
        }
        Role::Operator if peer_route => Err(
            "the /v1/migrations/incoming routes are for migration peers (role migration_peer) \
             and administrators",
        ),
        Role::Operator => Ok(()),
    }
}

/// A definition in the body, as libvirt XML or JSON by content type.
async fn read_definition(req: Request<Incoming>) -> Result<DomainConfig, ApiError> {
    let media = content_type(&req).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a definition needs Content-Type application/xml or application/json",
        )
    })?;
    let body = read_body(req).await?;
    let body = text(&body)?;
    if is_xml(&media) {
        DomainConfig::from_xml(body).map_err(|e| novacron_domain::Error::from(e).into())
    } else if media == "application/json" {
        DomainConfig::from_json(body).map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{media} is not a definition format (use application/xml or application/json)"),
        ))
    }
}

async fn read_action(name: ActionName, req: Request<Incoming>) -> Result<Action, ApiError> {
    Ok(match name {
        ActionName::Start => Action::Start,
        ActionName::Destroy => Action::Destroy,
        ActionName::Suspend => Action::Suspend,
        ActionName::Resume => Action::Resume,
        ActionName::Reboot => Action::Reboot,
        ActionName::Reset => Action::Reset,
        ActionName::Shutdown => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Body {
                timeout_secs: Option<u64>,
                #[serde(default)]
                force: bool,
            }
            let body = read_body(req).await?;
            let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
                Body::default()
            } else {
                parse_json(&body)?
            };
            Action::Shutdown(ShutdownOptions::from_secs(body.timeout_secs, body.force))
        }
    })
}

/// `PUT /v1/domains/{name}/pinning`: exactly one of `vcpu`, `iothread`, `emulator: true`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    vcpu: Option<u32>,
    iothread: Option<u32>,
    #[serde(default)]
    emulator: bool,
    cpuset: String,
    #[serde(default)]
    live: bool,
    #[serde(default)]
    config: bool,
}

impl PinBody {
    fn target(&self) -> Result<crate::host::pinning::ThreadKind, ApiError> {
        use crate::host::pinning::ThreadKind;
        match (self.vcpu, self.iothread, self.emulator) {
            (Some(n), None, false) => Ok(ThreadKind::Vcpu(n)),
            (None, Some(n), false) => Ok(ThreadKind::Iothread(n)),
            (None, None, true) => Ok(ThreadKind::Emulator),
            _ => Err(ApiError::bad_request(
                "name exactly one thread to pin: \"vcpu\": N, \"iothread\": N or \"emulator\": true",
            )),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_served_route_is_in_the_openapi_document_and_back() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), (*p).to_owned()))
            .collect();
        assert_eq!(served, documented);
    }

    #[test]
    fn routing() {
        assert_eq!(
            resolve(&Method::POST, "/v1/domains/vm1/start").unwrap(),
            (Endpoint::DomainAction(ActionName::Start), Some("vm1"))
        );
        assert_eq!(
            resolve(&Method::GET, "/v1/domains").unwrap(),
            (Endpoint::ListDomains, None)
        );
        assert_eq!(
            resolve(&Method::PUT, "/v1/domains").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            resolve(&Method::GET, "/v1/nothing").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            resolve(&Method::GET, "/v1/domains//xml")
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            resolve(&Method::GET, "/v1/domains/a/b/c")
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
    }
}
