//! The route table (also what the OpenAPI coverage test reads) and the handlers: each one
//! parses, runs one operation (`crate::ops`) through the executor, and renders the result.
//! Access levels come from the operation table, never from here.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Request, StatusCode};
use novacron_domain::{DomainConfig, DomainState};
use serde::Deserialize;
use serde_json::Value;

use super::agent::AgentEndpoint;
use super::auth::Caller;
use super::disks::DiskEndpoint;
use super::error::ApiError;
use super::hosts::HostEndpoint;
use super::live_resources::ResourceEndpoint;
use super::migration::MigrationEndpoint;
use super::networks::NetworkEndpoint;
use super::pools::PoolEndpoint;
use super::request::{content_type, flag, is_xml, query, read_body, text, wants_xml};
use super::response::{json_response, no_content, with_type, xml_response, Response};
use super::snapshots::SnapshotEndpoint;
use super::templates::TemplateEndpoint;
use super::Ctx;
use crate::ops::agent::AgentAction;
use crate::ops::lifecycle::{Kind, Lifecycle, ShutdownRequest};
use crate::ops::{self, table, Executor, OpInfo, Target};
use crate::service::ListFilter;

/// What a request is for, once its path and method are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ListDomains,
    DefineDomain,
    GetDomain,
    UndefineDomain,
    DomainXml,
    Lifecycle(Kind),
    SetAutostart,
    SetMetadata,
    // NICs (taps).
    Interfaces,
    AttachInterface,
    DetachInterface,
    InterfaceLink,
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
    /// `/v1/domains/{name}/snapshots...` (see `snapshots.rs`).
    Snapshot(SnapshotEndpoint),
    /// Consoles (issue 20): tickets, the websockets (served in `websocket.rs`), screenshots.
    Ticket(crate::service::console::Kind),
    Websocket(crate::service::console::Kind),
    Screenshot,
    /// `/v1/pools/...`: pools and volumes (see `pools.rs`).
    Pools(PoolEndpoint),
    Webhooks,
    /// `/v1/domains/{name}/agent...`: the guest agent (see `agent.rs`).
    Agent(AgentEndpoint),
    /// `/v1/domains/{name}/disks...` (see `disks.rs`).
    Disks(DiskEndpoint),
    /// `/v1/networks/...`: virtual networks (see `networks.rs`).
    Network(NetworkEndpoint),
    /// `/v1/domains/{name}/addresses`: domifaddr (see `addresses.rs`).
    Addresses,
    /// `/v1/templates/...`: domain templates (see `templates.rs`).
    Templates(TemplateEndpoint),
    /// `/v1/domains/{name}/vcpus`, `/v1/domains/{name}/memory...` (see `live_resources.rs`).
    Resources(ResourceEndpoint),
    /// `/v1/domains/{name}/interfaces/{mac}/bandwidth`: domiftune.
    InterfaceTune,
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
        Endpoint::Lifecycle(Kind::Start),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/shutdown",
        Endpoint::Lifecycle(Kind::Shutdown),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/destroy",
        Endpoint::Lifecycle(Kind::Destroy),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/suspend",
        Endpoint::Lifecycle(Kind::Suspend),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/resume",
        Endpoint::Lifecycle(Kind::Resume),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/reboot",
        Endpoint::Lifecycle(Kind::Reboot),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/reset",
        Endpoint::Lifecycle(Kind::Reset),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/autostart",
        Endpoint::SetAutostart,
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/metadata",
        Endpoint::SetMetadata,
    ),
    (
        Method::GET,
        "/v1/domains/{name}/interfaces",
        Endpoint::Interfaces,
    ),
    (
        Method::POST,
        "/v1/domains/{name}/interfaces",
        Endpoint::AttachInterface,
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/interfaces/{mac}",
        Endpoint::DetachInterface,
    ),
    (
        Method::POST,
        "/v1/domains/{name}/interfaces/{mac}/link",
        Endpoint::InterfaceLink,
    ),
    (
        Method::POST,
        "/v1/domains/{name}/snapshots",
        Endpoint::Snapshot(SnapshotEndpoint::Create),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/snapshots",
        Endpoint::Snapshot(SnapshotEndpoint::List),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/snapshots/{snap}",
        Endpoint::Snapshot(SnapshotEndpoint::Info),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/snapshots/{snap}/xml",
        Endpoint::Snapshot(SnapshotEndpoint::Xml),
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/snapshots/{snap}",
        Endpoint::Snapshot(SnapshotEndpoint::Delete),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/snapshots/{snap}/revert",
        Endpoint::Snapshot(SnapshotEndpoint::Revert),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/snapshot-schedule",
        Endpoint::Snapshot(SnapshotEndpoint::Schedule),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/snapshot-schedule",
        Endpoint::Snapshot(SnapshotEndpoint::ScheduleSet),
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/snapshot-schedule",
        Endpoint::Snapshot(SnapshotEndpoint::ScheduleDelete),
    ),
    (Method::GET, "/v1/domains/{name}/pinning", Endpoint::Pinning),
    (Method::PUT, "/v1/domains/{name}/pinning", Endpoint::Pin),
    (Method::POST, "/v1/domains/{name}/qmp", Endpoint::Qmp),
    (
        Method::GET,
        "/v1/domains/{name}/agent",
        Endpoint::Agent(AgentEndpoint::Action(AgentAction::Info)),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/agent/ping",
        Endpoint::Agent(AgentEndpoint::Action(AgentAction::Ping)),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/agent/fsfreeze",
        Endpoint::Agent(AgentEndpoint::Action(AgentAction::FsFreeze)),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/agent/fsthaw",
        Endpoint::Agent(AgentEndpoint::Action(AgentAction::FsThaw)),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/agent/interfaces",
        Endpoint::Agent(AgentEndpoint::Action(AgentAction::Interfaces)),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/agent/command",
        Endpoint::Agent(AgentEndpoint::Command),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/disks",
        Endpoint::Disks(DiskEndpoint::List),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/disks",
        Endpoint::Disks(DiskEndpoint::Attach),
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/disks/{target}",
        Endpoint::Disks(DiskEndpoint::Detach),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/disks/{target}/resize",
        Endpoint::Disks(DiskEndpoint::Resize),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/disks/{target}/iotune",
        Endpoint::Disks(DiskEndpoint::SetIoTune),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/disks/{target}/iotune",
        Endpoint::Disks(DiskEndpoint::IoTune),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/disks/{target}/media",
        Endpoint::Disks(DiskEndpoint::Media),
    ),
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
        Endpoint::Remote(HostEndpoint::Action(Kind::Start)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/shutdown",
        Endpoint::Remote(HostEndpoint::Action(Kind::Shutdown)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/destroy",
        Endpoint::Remote(HostEndpoint::Action(Kind::Destroy)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/suspend",
        Endpoint::Remote(HostEndpoint::Action(Kind::Suspend)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/resume",
        Endpoint::Remote(HostEndpoint::Action(Kind::Resume)),
    ),
    (
        Method::POST,
        "/v1/hosts/{host}/domains/{name}/reboot",
        Endpoint::Remote(HostEndpoint::Action(Kind::Reboot)),
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
    (
        Method::POST,
        "/v1/domains/{name}/console/ticket",
        Endpoint::Ticket(crate::service::console::Kind::Console),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/vnc/ticket",
        Endpoint::Ticket(crate::service::console::Kind::Vnc),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/console",
        Endpoint::Websocket(crate::service::console::Kind::Console),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/vnc",
        Endpoint::Websocket(crate::service::console::Kind::Vnc),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/screenshot",
        Endpoint::Screenshot,
    ),
    (
        Method::GET,
        "/v1/pools",
        Endpoint::Pools(PoolEndpoint::List),
    ),
    (
        Method::POST,
        "/v1/pools",
        Endpoint::Pools(PoolEndpoint::Define),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}",
        Endpoint::Pools(PoolEndpoint::Info),
    ),
    (
        Method::DELETE,
        "/v1/pools/{pool}",
        Endpoint::Pools(PoolEndpoint::Undefine),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}/xml",
        Endpoint::Pools(PoolEndpoint::Xml),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}/volumes",
        Endpoint::Pools(PoolEndpoint::Volumes),
    ),
    (
        Method::POST,
        "/v1/pools/{pool}/volumes",
        Endpoint::Pools(PoolEndpoint::CreateVolume),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}/volumes/{volume}",
        Endpoint::Pools(PoolEndpoint::Volume),
    ),
    (
        Method::DELETE,
        "/v1/pools/{pool}/volumes/{volume}",
        Endpoint::Pools(PoolEndpoint::DeleteVolume),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}/volumes/{volume}/xml",
        Endpoint::Pools(PoolEndpoint::VolumeXml),
    ),
    (
        Method::POST,
        "/v1/pools/{pool}/volumes/{volume}/resize",
        Endpoint::Pools(PoolEndpoint::Resize),
    ),
    (
        Method::POST,
        "/v1/pools/{pool}/volumes/{volume}/clone",
        Endpoint::Pools(PoolEndpoint::Clone),
    ),
    (
        Method::PUT,
        "/v1/pools/{pool}/volumes/{volume}/data",
        Endpoint::Pools(PoolEndpoint::Upload),
    ),
    (
        Method::GET,
        "/v1/pools/{pool}/volumes/{volume}/data",
        Endpoint::Pools(PoolEndpoint::Download),
    ),
    (Method::GET, "/v1/webhooks", Endpoint::Webhooks),
    (
        Method::GET,
        "/v1/networks",
        Endpoint::Network(NetworkEndpoint::List),
    ),
    (
        Method::POST,
        "/v1/networks",
        Endpoint::Network(NetworkEndpoint::Define),
    ),
    (
        Method::GET,
        "/v1/networks/{name}",
        Endpoint::Network(NetworkEndpoint::Info),
    ),
    (
        Method::DELETE,
        "/v1/networks/{name}",
        Endpoint::Network(NetworkEndpoint::Undefine),
    ),
    (
        Method::GET,
        "/v1/networks/{name}/xml",
        Endpoint::Network(NetworkEndpoint::Xml),
    ),
    (
        Method::POST,
        "/v1/networks/{name}/start",
        Endpoint::Network(NetworkEndpoint::Start),
    ),
    (
        Method::POST,
        "/v1/networks/{name}/stop",
        Endpoint::Network(NetworkEndpoint::Stop),
    ),
    (
        Method::POST,
        "/v1/networks/{name}/autostart",
        Endpoint::Network(NetworkEndpoint::Autostart),
    ),
    (
        Method::GET,
        "/v1/networks/{name}/leases",
        Endpoint::Network(NetworkEndpoint::Leases),
    ),
    (
        Method::POST,
        "/v1/pools/{pool}/volumes/{volume}/import",
        Endpoint::Pools(PoolEndpoint::Import),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/addresses",
        Endpoint::Addresses,
    ),
    (
        Method::GET,
        "/v1/templates",
        Endpoint::Templates(TemplateEndpoint::List),
    ),
    (
        Method::POST,
        "/v1/templates",
        Endpoint::Templates(TemplateEndpoint::Create),
    ),
    (
        Method::GET,
        "/v1/templates/{template}",
        Endpoint::Templates(TemplateEndpoint::Info),
    ),
    (
        Method::PATCH,
        "/v1/templates/{template}",
        Endpoint::Templates(TemplateEndpoint::Update),
    ),
    (
        Method::DELETE,
        "/v1/templates/{template}",
        Endpoint::Templates(TemplateEndpoint::Delete),
    ),
    (
        Method::POST,
        "/v1/templates/{template}/deploy",
        Endpoint::Templates(TemplateEndpoint::Deploy),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/vcpus",
        Endpoint::Resources(ResourceEndpoint::SetVcpus),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/vcpus",
        Endpoint::Resources(ResourceEndpoint::VcpuCount),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/memory/balloon",
        Endpoint::Resources(ResourceEndpoint::SetMem),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/memory/stats",
        Endpoint::Resources(ResourceEndpoint::MemStats),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/memory/stats",
        Endpoint::Resources(ResourceEndpoint::MemStatsPeriod),
    ),
    (
        Method::GET,
        "/v1/domains/{name}/memory",
        Endpoint::Resources(ResourceEndpoint::MemInfo),
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/memory/devices/{alias}",
        Endpoint::Resources(ResourceEndpoint::UpdateMemoryDevice),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/memory/devices",
        Endpoint::Resources(ResourceEndpoint::AttachMemory),
    ),
    (
        Method::DELETE,
        "/v1/domains/{name}/memory/devices/{alias}",
        Endpoint::Resources(ResourceEndpoint::DetachMemory),
    ),
    (
        Method::POST,
        "/v1/domains/{name}/interfaces/{mac}/bandwidth",
        Endpoint::InterfaceTune,
    ),
    (
        Method::PUT,
        "/v1/domains/{name}/memory/maximum",
        Endpoint::Resources(ResourceEndpoint::SetMaxMem),
    ),
];

impl Endpoint {
    /// The operation this route runs: its access level, name and other faces.
    pub fn info(self) -> &'static OpInfo {
        use MigrationEndpoint as M;
        match self {
            Endpoint::ListDomains => &table::LIST,
            // Define and create share the route (`?transient=true`) and the access level.
            Endpoint::DefineDomain => &table::DEFINE,
            Endpoint::GetDomain => &table::GET,
            Endpoint::UndefineDomain => &table::UNDEFINE,
            Endpoint::DomainXml => &table::XML,
            Endpoint::Lifecycle(kind) => kind.info(),
            Endpoint::SetAutostart => &table::AUTOSTART,
            Endpoint::SetMetadata => &table::SET_METADATA,
            Endpoint::Interfaces => &table::DOMIFLIST,
            Endpoint::AttachInterface => &table::ATTACH_INTERFACE,
            Endpoint::DetachInterface => &table::DETACH_INTERFACE,
            Endpoint::InterfaceLink => &table::DOMIF_SETLINK,
            Endpoint::InterfaceTune => &table::DOMIFTUNE,
            Endpoint::Pinning => &table::PINNING,
            // The three pin operations share the route and the access level.
            Endpoint::Pin => &table::VCPUPIN,
            Endpoint::Qmp => &table::QMP,
            Endpoint::GetOperation => &table::OPERATION,
            Endpoint::Host => &table::HOST,
            Endpoint::Events => &table::EVENTS,
            Endpoint::OpenApi => &table::OPENAPI,
            Endpoint::Metrics => &table::METRICS,
            Endpoint::Remote(HostEndpoint::List) => &table::HOSTS,
            Endpoint::Remote(HostEndpoint::Register) => &table::REGISTER_HOST,
            Endpoint::Remote(HostEndpoint::Discover) => &table::DISCOVER_HOSTS,
            Endpoint::Remote(HostEndpoint::Get) => &table::HOST_GET,
            Endpoint::Remote(HostEndpoint::Unregister) => &table::UNREGISTER_HOST,
            Endpoint::Remote(HostEndpoint::Domains) => &table::LIST,
            Endpoint::Remote(HostEndpoint::Domain) => &table::GET,
            Endpoint::Remote(HostEndpoint::Action(kind)) => kind.info(),
            Endpoint::Migration(M::Migrate) => &table::MIGRATE,
            Endpoint::Migration(M::Progress) => &table::MIGRATION,
            Endpoint::Migration(M::Cancel) => &table::MIGRATE_CANCEL,
            Endpoint::Migration(M::Postcopy) => &table::MIGRATE_POSTCOPY,
            Endpoint::Migration(M::Prepare) => &table::INCOMING_PREPARE,
            Endpoint::Migration(M::Incoming) => &table::INCOMING_GET,
            Endpoint::Migration(M::Finish) => &table::INCOMING_FINISH,
            Endpoint::Migration(M::Abort) => &table::INCOMING_ABORT,
            Endpoint::Snapshot(e) => e.info(),
            Endpoint::Ticket(crate::service::console::Kind::Console) => &table::CONSOLE_TICKET,
            Endpoint::Ticket(crate::service::console::Kind::Vnc) => &table::VNC_TICKET,
            Endpoint::Websocket(crate::service::console::Kind::Console) => &table::CONSOLE,
            Endpoint::Websocket(crate::service::console::Kind::Vnc) => &table::VNC,
            Endpoint::Screenshot => &table::SCREENSHOT,
            Endpoint::Pools(p) => p.info(),
            Endpoint::Webhooks => &table::WEBHOOKS,
            Endpoint::Agent(e) => e.info(),
            Endpoint::Disks(DiskEndpoint::List) => &table::DOMBLKLIST,
            Endpoint::Disks(DiskEndpoint::Attach) => &table::ATTACH_DISK,
            Endpoint::Disks(DiskEndpoint::Detach) => &table::DETACH_DISK,
            Endpoint::Disks(DiskEndpoint::Resize) => &table::BLOCKRESIZE,
            Endpoint::Disks(DiskEndpoint::SetIoTune) => &table::BLKDEVIOTUNE,
            Endpoint::Disks(DiskEndpoint::IoTune) => &table::DISK_IOTUNE,
            Endpoint::Disks(DiskEndpoint::Media) => &table::CHANGE_MEDIA,
            Endpoint::Network(n) => match n {
                NetworkEndpoint::List => &table::NET_LIST,
                NetworkEndpoint::Define => &table::NET_DEFINE,
                NetworkEndpoint::Info => &table::NET_INFO,
                NetworkEndpoint::Xml => &table::NET_DUMPXML,
                NetworkEndpoint::Undefine => &table::NET_UNDEFINE,
                NetworkEndpoint::Start => &table::NET_START,
                NetworkEndpoint::Stop => &table::NET_DESTROY,
                NetworkEndpoint::Autostart => &table::NET_AUTOSTART,
                NetworkEndpoint::Leases => &table::NET_LEASES,
            },
            Endpoint::Addresses => &table::DOMIFADDR,
            Endpoint::Templates(t) => t.info(),
            Endpoint::Resources(r) => r.info(),
        }
    }
}

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

/// The `n`th `/`-separated segment of `path` (`/v1/domains/{name}/...`: 3 is the name),
/// for routes with two parameters (the matcher hands over the last one).
fn path_segment(path: &str, n: usize) -> String {
    path.split('/').nth(n).unwrap_or_default().to_owned()
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
    // Checked before any body is read; audited with every other 403 in `handle`. The
    // executor checks again (for callers that are not this face).
    let info = endpoint.info();
    if let Err(why) = info.access.check(Some(caller.role), info.what) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    }
    let param = param.unwrap_or_default().to_owned();
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let actor = caller.actor.clone();
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
                tag: q.get("tag").cloned(),
            };
            Ok(json_response(StatusCode::OK, &svc.list_status(&filter)))
        }
        Endpoint::DefineDomain => {
            let q = query(&req)?;
            let transient = flag(&q, "transient", false)?;
            let dry_run = flag(&q, "dry_run", false)?;
            let config = read_definition(req).await?;
            if transient && dry_run {
                return Err(ApiError::bad_request(
                    "dry_run: validates a definition; it cannot be combined with transient",
                ));
            }
            if transient {
                let create = ops::define::Create { config };
                let status = exec.run(actor, Target::Local, create).await?;
                Ok(json_response(StatusCode::CREATED, &status))
            } else {
                let define = ops::define::Define { config, dry_run };
                match exec.run(actor, Target::Local, define).await? {
                    ops::define::Defined::Done { status, created } => {
                        let code = if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        Ok(json_response(code, &status))
                    }
                    ops::define::Defined::Checked(checked) => {
                        Ok(json_response(StatusCode::OK, &checked))
                    }
                }
            }
        }
        Endpoint::GetDomain => {
            let details = svc.details_with_addresses(&param).await?;
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
            let undefine = ops::define::Undefine { domain: param };
            exec.run(actor, Target::Local, undefine).await?;
            Ok(no_content())
        }
        Endpoint::Lifecycle(kind) => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let op = read_lifecycle(kind, param, req).await?;
            run_lifecycle(&exec, actor, Target::Local, op, wait).await
        }
        Endpoint::SetAutostart => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                enabled: bool,
            }
            let body: Body = parse_json(&read_body(req).await?)?;
            let op = ops::autostart::SetAutostart {
                domain: param,
                enabled: body.enabled,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::SetMetadata => {
            let change = parse_json(&read_body(req).await?)?;
            let op = ops::metadata::SetMetadata {
                domain: param,
                change,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::Interfaces => {
            let op = ops::interfaces::ListInterfaces { domain: param };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::AttachInterface => {
            let request = parse_json(&read_body(req).await?)?;
            let op = ops::interfaces::AttachInterface {
                domain: param,
                request,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::DetachInterface => {
            let q = query(&req)?;
            let wait_secs = q
                .get("wait_secs")
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        ApiError::bad_request("query parameter wait_secs: not a number of seconds")
                    })
                })
                .transpose()?;
            let op = ops::interfaces::DetachInterface {
                domain: path_segment(&path, 3),
                mac: param,
                scope: crate::service::nics::hotplug::Scope {
                    live: flag(&q, "live", false)?,
                    config: flag(&q, "config", false)?,
                },
                wait_secs,
            };
            exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({})))
        }
        Endpoint::InterfaceLink => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                state: String,
            }
            let body: Body = parse_json(&read_body(req).await?)?;
            let up = match body.state.as_str() {
                "up" => true,
                "down" => false,
                _ => return Err(ApiError::bad_request("state: must be \"up\" or \"down\"")),
            };
            let op = ops::interfaces::SetInterfaceLink {
                domain: path_segment(&path, 3),
                mac: param,
                up,
            };
            exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({})))
        }
        Endpoint::InterfaceTune => {
            let op = ops::interfaces::InterfaceTune {
                domain: path_segment(&path, 3),
                interface: param,
                request: parse_json(&read_body(req).await?)?,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
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
            let op = ops::pinning::Pin {
                domain: param,
                thread: body.target()?,
                cpuset: body.cpuset,
                scope: crate::service::placement::PinScope {
                    live: body.live,
                    config: body.config,
                },
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::Qmp => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                execute: String,
                arguments: Option<Value>,
            }
            let body: Body = parse_json(&read_body(req).await?)?;
            let op = ops::qmp::Qmp {
                domain: param,
                execute: body.execute,
                arguments: body.arguments,
            };
            let ret = exec.run(actor, Target::Local, op).await?;
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
        Endpoint::Disks(endpoint) => super::disks::dispatch(endpoint, req, ctx, actor).await,
        Endpoint::Resources(endpoint) => {
            super::live_resources::dispatch(endpoint, req, ctx, actor).await
        }
        Endpoint::Migration(endpoint) => {
            super::migration::dispatch(endpoint, &param, req, ctx).await
        }
        Endpoint::Pools(endpoint) => super::pools::dispatch(endpoint, req, ctx, caller).await,
        Endpoint::Templates(endpoint) => {
            super::templates::dispatch(endpoint, req, ctx, caller).await
        }
        Endpoint::Agent(endpoint) => {
            super::agent::dispatch(endpoint, param, req, &exec, actor).await
        }
        Endpoint::Network(endpoint) => {
            super::networks::dispatch(endpoint, param, req, ctx, caller).await
        }
        Endpoint::Snapshot(endpoint) => {
            super::snapshots::dispatch(endpoint, &path, req, ctx, caller).await
        }
        Endpoint::OpenApi => Ok(with_type(
            StatusCode::OK,
            "application/json",
            super::OPENAPI,
        )),
        Endpoint::Ticket(kind) => {
            let op = ops::console::MintTicket {
                domain: param,
                kind,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        // Websockets are answered before routing (`websocket.rs`); a plain GET lands here.
        Endpoint::Websocket(_) => Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this route is a websocket (with ?ticket=)",
        )),
        Endpoint::Screenshot => {
            let op = ops::console::Screenshot { domain: param };
            Ok(with_type(
                StatusCode::OK,
                "image/png",
                exec.run(actor, Target::Local, op).await?,
            ))
        }
        Endpoint::Webhooks => Ok(json_response(
            StatusCode::OK,
            &exec
                .run(actor, Target::Local, ops::console::Webhooks)
                .await?,
        )),
        Endpoint::Metrics => Ok(with_type(
            StatusCode::OK,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(&svc.metrics().await)
                + &super::metrics::render_host(&svc.host_metrics().await),
        )),
        Endpoint::Addresses => super::addresses::dispatch(param, req, &exec, actor).await,
    }
}

/// Runs a lifecycle operation on `target`: to its end (`200` with the status), or in the
/// background (`202` with the operation and its `Location`).
pub(super) async fn run_lifecycle(
    exec: &Executor,
    actor: crate::service::audit::Actor,
    target: Target,
    op: Lifecycle,
    wait: bool,
) -> Result<Response, ApiError> {
    if wait {
        let outcome = exec.run(actor, target, op).await?;
        Ok(json_response(StatusCode::OK, &outcome))
    } else {
        let op = exec.spawn(actor, target, op)?;
        let mut r = json_response(StatusCode::ACCEPTED, &op);
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
            r.headers_mut().insert(LOCATION, v);
        }
        Ok(r)
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

/// The lifecycle request: the shutdown options from the body (empty: the defaults).
pub(super) async fn read_lifecycle(
    kind: Kind,
    domain: String,
    req: Request<Incoming>,
) -> Result<Lifecycle, ApiError> {
    if kind != Kind::Shutdown {
        return Ok(Lifecycle::new(kind, domain));
    }
    let body = read_body(req).await?;
    let request: ShutdownRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ShutdownRequest::default()
    } else {
        parse_json(&body)?
    };
    Ok(Lifecycle::shutdown(domain, request))
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
                // Path-level keys (`parameters`, `summary`) are not operations.
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "parameters" | "summary" | "description"))
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), (*p).to_owned()))
            .collect();
        assert_eq!(served, documented);
    }

    /// Each route is the HTTP face of the operation it names in the table, and every
    /// operation with an HTTP face in the table is served.
    #[test]
    fn routes_and_the_operation_table_agree() {
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), (*p).to_owned()))
            .collect();
        for (m, p, e) in ROUTES {
            let info = e.info();
            let route = Some((m.as_str(), *p));
            assert!(
                info.http == route || info.http_remote == route,
                "{m} {p} runs {} whose table rows say {:?} / {:?}",
                info.name,
                info.http,
                info.http_remote
            );
        }
        for info in crate::ops::ALL {
            for (m, p) in info.http.iter().chain(info.http_remote.iter()) {
                assert!(
                    served.contains(&(m.to_string(), p.to_string())),
                    "{} has no route {m} {p}",
                    info.name
                );
            }
        }
    }

    #[test]
    fn routing() {
        assert_eq!(
            resolve(&Method::POST, "/v1/domains/vm1/start").unwrap(),
            (Endpoint::Lifecycle(Kind::Start), Some("vm1"))
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
