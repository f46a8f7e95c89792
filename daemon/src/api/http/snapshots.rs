//! `/v1/domains/{name}/snapshots/...`: parse, run one operation, render. Changes may run in
//! the background (`?wait=false`: 202 with the operation to poll).

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, StatusCode};
use serde::Serialize;

use super::auth::Caller;
use super::error::ApiError;
use super::request::{decode_segment, flag, query, read_body};
use super::response::{json_response, no_content, xml_response, Response};
use super::Ctx;
use crate::ops::snapshots::{SetSchedule, SnapshotCreate, SnapshotDelete, SnapshotRevert};
use crate::ops::{table, Executor, OpInfo, Operation, Target};
use crate::service::snapshots::schedule::Schedule;
use crate::service::snapshots::{CreateRequest, DeleteRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEndpoint {
    Create,
    List,
    Info,
    Xml,
    Delete,
    Revert,
    Schedule,
    ScheduleSet,
    ScheduleDelete,
}

impl SnapshotEndpoint {
    pub fn info(self) -> &'static OpInfo {
        match self {
            SnapshotEndpoint::Create => &table::SNAPSHOT_CREATE,
            SnapshotEndpoint::List => &table::SNAPSHOT_LIST,
            SnapshotEndpoint::Info => &table::SNAPSHOT_INFO,
            SnapshotEndpoint::Xml => &table::SNAPSHOT_XML,
            SnapshotEndpoint::Delete => &table::SNAPSHOT_DELETE,
            SnapshotEndpoint::Revert => &table::SNAPSHOT_REVERT,
            SnapshotEndpoint::Schedule => &table::SNAPSHOT_SCHEDULE,
            SnapshotEndpoint::ScheduleSet => &table::SNAPSHOT_SCHEDULE_SET,
            SnapshotEndpoint::ScheduleDelete => &table::SNAPSHOT_SCHEDULE_DELETE,
        }
    }
}

/// `/v1/domains/{name}/snapshots[/{snap}...]`: the domain and snapshot segments, decoded.
fn segments(path: &str) -> Result<(String, String), ApiError> {
    let mut s = path.split('/').skip(3);
    let name = decode_segment(s.next().unwrap_or_default())?;
    let snap = decode_segment(s.nth(1).unwrap_or_default())?;
    Ok((name, snap))
}

fn body_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn run<O>(
    exec: &Executor,
    actor: crate::service::audit::Actor,
    op: O,
    wait: bool,
    code: StatusCode,
) -> Result<Response, ApiError>
where
    O: Operation<Failure = novacron_domain::Error>,
    O::Response: Serialize,
{
    if wait {
        let out = exec.run(actor, Target::Local, op).await?;
        let v = serde_json::to_value(&out).unwrap_or_default();
        if v.is_null() {
            return Ok(no_content());
        }
        Ok(json_response(code, &v))
    } else {
        let op = exec.spawn(actor, Target::Local, op)?;
        let mut r = json_response(StatusCode::ACCEPTED, &op);
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
            r.headers_mut().insert(LOCATION, v);
        }
        Ok(r)
    }
}

pub(crate) async fn dispatch(
    endpoint: SnapshotEndpoint,
    path: &str,
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (domain, snapshot) = segments(path)?;
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let actor = caller.actor.clone();
    let wait = flag(&query(&req)?, "wait", true)?;
    match endpoint {
        SnapshotEndpoint::List => Ok(json_response(
            StatusCode::OK,
            &svc.snapshot_list(&domain).await?,
        )),
        SnapshotEndpoint::Info => Ok(json_response(
            StatusCode::OK,
            &svc.snapshot_get(&domain, &snapshot).await?,
        )),
        SnapshotEndpoint::Xml => Ok(xml_response(
            StatusCode::OK,
            svc.snapshot_xml(&domain, &snapshot).await?.to_xml(),
        )),
        SnapshotEndpoint::Create => {
            let request: CreateRequest = body_json(&read_body(req).await?)?;
            let op = SnapshotCreate { domain, request };
            run(&exec, actor, op, wait, StatusCode::CREATED).await
        }
        SnapshotEndpoint::Delete => {
            let request: DeleteRequest = body_json(&read_body(req).await?)?;
            let op = SnapshotDelete {
                domain,
                snapshot,
                request,
            };
            run(&exec, actor, op, wait, StatusCode::OK).await
        }
        SnapshotEndpoint::Revert => {
            let op = SnapshotRevert { domain, snapshot };
            run(&exec, actor, op, wait, StatusCode::OK).await
        }
        SnapshotEndpoint::Schedule => match svc.snapshot_schedule(&domain).await? {
            Some(s) => Ok(json_response(StatusCode::OK, &s)),
            None => Err(ApiError::not_found(format!(
                "domain '{domain}' has no snapshot schedule"
            ))),
        },
        SnapshotEndpoint::ScheduleSet => {
            let body = read_body(req).await?;
            let schedule: Schedule = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let op = SetSchedule {
                domain,
                schedule: Some(schedule),
            };
            run(&exec, actor, op, true, StatusCode::OK).await
        }
        SnapshotEndpoint::ScheduleDelete => {
            let op = SetSchedule {
                domain,
                schedule: None,
            };
            run(&exec, actor, op, true, StatusCode::OK).await
        }
    }
}
