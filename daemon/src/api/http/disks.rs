//! `/v1/domains/{name}/disks...`: a domain's disks (attach, detach, resize, I/O limits,
//! CD-ROM media). Parse, run the operation (`ops::disks`), render.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::request::{decode_segment, flag, query, read_body};
use super::response::{json_response, Response};
use super::Ctx;
use crate::ops::disks::{
    AttachDisk, AttachRequest, ChangeMedia, DetachDisk, DetachOptions, IoTuneRequest, MediaRequest,
    ResizeDisk, ResizeRequest, SetIoTune,
};
use crate::ops::{Executor, Target};
use crate::service::audit::Actor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskEndpoint {
    List,
    Attach,
    Detach,
    Resize,
    SetIoTune,
    IoTune,
    Media,
}

/// `(domain, disk target)` from `/v1/domains/{name}/disks[/{target}...]`.
fn segments(path: &str) -> Result<(String, String), ApiError> {
    let mut s = path.split('/').skip(3);
    let name = decode_segment(s.next().unwrap_or_default())?;
    let target = decode_segment(s.nth(1).unwrap_or_default())?;
    Ok((name, target))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) async fn dispatch(
    endpoint: DiskEndpoint,
    req: Request<Incoming>,
    ctx: &Ctx,
    actor: Actor,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let (name, target) = segments(req.uri().path())?;
    match endpoint {
        DiskEndpoint::List => {
            let config = flag(&query(&req)?, "config", false)?;
            Ok(json_response(
                StatusCode::OK,
                &svc.list_disks(&name, config)?,
            ))
        }
        DiskEndpoint::IoTune => Ok(json_response(
            StatusCode::OK,
            &svc.disk_iotune(&name, &target).await?,
        )),
        DiskEndpoint::Attach => {
            let body: AttachRequest = parse(&read_body(req).await?)?;
            let (disk, scope) = body.disk()?;
            let op = AttachDisk {
                domain: name,
                disk,
                scope,
            };
            let entry = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::CREATED, &entry))
        }
        DiskEndpoint::Detach => {
            let q = query(&req)?;
            let wait = flag(&q, "wait", true)?;
            let timeout = match q.get("timeout") {
                None => None,
                Some(t) => Some(t.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter timeout must be whole seconds, not {t:?}"
                    ))
                })?),
            };
            let options = DetachOptions {
                live: flag(&q, "live", false)?,
                config: flag(&q, "config", false)?,
                persistent: flag(&q, "persistent", false)?,
                timeout,
            };
            let op = DetachDisk {
                domain: name,
                disk: target,
                options,
            };
            if wait {
                Ok(json_response(
                    StatusCode::OK,
                    &exec.run(actor, Target::Local, op).await?,
                ))
            } else {
                let op = exec.spawn(actor, Target::Local, op)?;
                Ok(json_response(StatusCode::ACCEPTED, &op))
            }
        }
        DiskEndpoint::Resize => {
            let body: ResizeRequest = parse(&read_body(req).await?)?;
            let op = ResizeDisk {
                domain: name,
                disk: target,
                size: body.size,
            };
            let size = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "size": size }),
            ))
        }
        DiskEndpoint::SetIoTune => {
            let body = IoTuneRequest::parse(&read_body(req).await?)?;
            let op = SetIoTune {
                domain: name,
                disk: target,
                tune: body.tune,
                scope: body.scope,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        DiskEndpoint::Media => {
            let body = MediaRequest::parse(&read_body(req).await?)?;
            let op = ChangeMedia {
                domain: name,
                disk: target,
                change: body.change,
                scope: body.scope,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
    }
}
