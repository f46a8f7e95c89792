//! The snapshot and guest-agent methods of `org.novacron1.Domain` (declared in `objects.rs`,
//! whose one interface block zbus requires): queries answer the HTTP JSON bodies, changes ask
//! polkit and run one operation each (`crate::ops::snapshots`, `crate::ops::agent`). The raw
//! agent command is admin-only and stays off D-Bus (its one gate is polkit's manage).

use zbus::message::Header;
use zbus::Connection;

use super::error::DbusError;
use super::storage::{run, to_json};
use crate::ops::agent::{Agent, AgentAction};
use crate::ops::snapshots::{SetSchedule, SnapshotCreate, SnapshotDelete, SnapshotRevert};
use crate::service::snapshots::schedule::Schedule;
use crate::service::snapshots::{CreateRequest, DeleteRequest};
use crate::service::Service;

/// A JSON argument; "" (or blanks) is the request's defaults.
fn json_arg<T: serde::de::DeserializeOwned + Default>(
    what: &str,
    json: &str,
) -> Result<T, DbusError> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| DbusError::invalid_args(format!("{what}: {e}")))
}

/// `snapshot-create-as`: `request` is the JSON body of `POST .../snapshots`
/// (`{"name", "description"?, "quiesce"?}`).
pub async fn create(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    domain: &str,
    request: &str,
) -> Result<String, DbusError> {
    let request: CreateRequest = serde_json::from_str(request)
        .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
    let op = SnapshotCreate {
        domain: domain.to_owned(),
        request,
    };
    to_json(&run(svc, conn, header, op).await?)
}

/// `snapshot-delete`: `options` is `{"speed"?}` as JSON, or "".
pub async fn delete(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    domain: &str,
    snapshot: &str,
    options: &str,
) -> Result<(), DbusError> {
    let request: DeleteRequest = json_arg("options", options)?;
    let op = SnapshotDelete {
        domain: domain.to_owned(),
        snapshot: snapshot.to_owned(),
        request,
    };
    run(svc, conn, header, op).await
}

pub async fn revert(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    domain: &str,
    snapshot: &str,
) -> Result<(), DbusError> {
    let op = SnapshotRevert {
        domain: domain.to_owned(),
        snapshot: snapshot.to_owned(),
    };
    run(svc, conn, header, op).await
}

/// Sets the schedule (`schedule` as the JSON body of `PUT .../snapshot-schedule`) or, with
/// `None`, removes it; answers the schedule now in force as JSON ("null" when none).
pub async fn set_schedule(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    domain: &str,
    schedule: Option<&str>,
) -> Result<String, DbusError> {
    let schedule = match schedule {
        Some(json) => Some(
            serde_json::from_str::<Schedule>(json)
                .map_err(|e| DbusError::invalid_args(format!("schedule: {e}")))?,
        ),
        None => None,
    };
    let op = SetSchedule {
        domain: domain.to_owned(),
        schedule,
    };
    to_json(&run(svc, conn, header, op).await?)
}

/// The schedule as JSON; a domain without one is `NotFound`, as HTTP's 404.
pub async fn schedule(svc: &Service, domain: &str) -> Result<String, DbusError> {
    match svc.snapshot_schedule(domain).await? {
        Some(s) => to_json(&s),
        None => Err(DbusError::NotFound(format!(
            "domain '{domain}' has no snapshot schedule"
        ))),
    }
}

/// One guest agent call (`timeout_secs` 0: the default deadline), answered as HTTP's JSON.
pub async fn agent(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    domain: &str,
    action: AgentAction,
    timeout_secs: u64,
) -> Result<String, DbusError> {
    let op = Agent {
        domain: domain.to_owned(),
        action,
        timeout_secs: (timeout_secs > 0).then_some(timeout_secs),
    };
    to_json(&run(svc, conn, header, op).await?)
}
