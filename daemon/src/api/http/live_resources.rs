//! `/v1/domains/{name}/vcpus` and `/v1/domains/{name}/memory...`: vCPU and memory hotplug,
//! the balloon and memory statistics. Parse, run the operation (`ops::live_resources`),
//! render.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::request::{decode_segment, flag, query, read_body};
use super::response::{json_response, Response};
use super::Ctx;
use crate::ops::live_resources::{
    AttachMemory, AttachMemoryRequest, DetachMemory, DetachMemoryOptions, DomMemInfo, DomMemStat,
    SetMaxMem, SetMaxMemRequest, SetMem, SetMemRequest, SetVcpus, SetVcpusRequest,
    UpdateMemoryDevice, UpdateMemoryRequest, VcpuCountOp,
};
use crate::ops::{table, Executor, OpInfo, Target};
use crate::service::audit::Actor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceEndpoint {
    SetVcpus,
    VcpuCount,
    SetMem,
    MemStats,
    MemStatsPeriod,
    MemInfo,
    UpdateMemoryDevice,
    AttachMemory,
    DetachMemory,
    SetMaxMem,
}

impl ResourceEndpoint {
    pub fn info(self) -> &'static OpInfo {
        match self {
            Self::SetVcpus => &table::SETVCPUS,
            Self::VcpuCount => &table::VCPUCOUNT,
            Self::SetMem => &table::SETMEM,
            Self::MemStats => &table::DOMMEMSTAT,
            Self::MemStatsPeriod => &table::DOMMEMSTAT_PERIOD,
            Self::MemInfo => &table::DOMMEMINFO,
            Self::UpdateMemoryDevice => &table::UPDATE_MEMORY_DEVICE,
            Self::AttachMemory => &table::ATTACH_MEMORY,
            Self::DetachMemory => &table::DETACH_MEMORY,
            Self::SetMaxMem => &table::SETMAXMEM,
        }
    }
}

/// `(domain, device alias)` from `/v1/domains/{name}/memory/devices/{alias}`.
fn segments(path: &str) -> Result<(String, String), ApiError> {
    let mut s = path.split('/').skip(3);
    let name = decode_segment(s.next().unwrap_or_default())?;
    let alias = decode_segment(s.nth(2).unwrap_or_default())?;
    Ok((name, alias))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn seconds(
    q: &std::collections::HashMap<String, String>,
    k: &str,
) -> Result<Option<u64>, ApiError> {
    match q.get(k) {
        None => Ok(None),
        Some(t) => t.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {k} must be whole seconds, not {t:?}"
            ))
        }),
    }
}

pub(crate) async fn dispatch(
    endpoint: ResourceEndpoint,
    req: Request<Incoming>,
    ctx: &Ctx,
    actor: Actor,
) -> Result<Response, ApiError> {
    let exec = Executor::new(ctx.service.clone());
    let (name, alias) = segments(req.uri().path())?;
    let q = query(&req)?;
    let wait = flag(&q, "wait", true)?;
    match endpoint {
        ResourceEndpoint::VcpuCount => {
            let op = VcpuCountOp { domain: name };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::SetVcpus => {
            let request: SetVcpusRequest = parse(&read_body(req).await?)?;
            let op = SetVcpus {
                domain: name,
                request,
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
        ResourceEndpoint::SetMem => {
            let request: SetMemRequest = parse(&read_body(req).await?)?;
            let op = SetMem {
                domain: name,
                request,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::SetMaxMem => {
            let request: SetMaxMemRequest = parse(&read_body(req).await?)?;
            let op = SetMaxMem {
                domain: name,
                request,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::MemStats | ResourceEndpoint::MemStatsPeriod => {
            let period = if endpoint == ResourceEndpoint::MemStatsPeriod {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    period: u32,
                }
                Some(parse::<Body>(&read_body(req).await?)?.period)
            } else {
                None
            };
            let op = DomMemStat {
                domain: name,
                period,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::MemInfo => {
            let op = DomMemInfo {
                domain: name,
                config: flag(&q, "config", false)?,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::UpdateMemoryDevice => {
            let request: UpdateMemoryRequest = parse(&read_body(req).await?)?;
            let op = UpdateMemoryDevice {
                domain: name,
                alias,
                request,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::AttachMemory => {
            let body: AttachMemoryRequest = parse(&read_body(req).await?)?;
            let (device, scope) = body.device()?;
            let op = AttachMemory {
                domain: name,
                device,
                scope,
            };
            Ok(json_response(
                StatusCode::CREATED,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        ResourceEndpoint::DetachMemory => {
            let options = DetachMemoryOptions {
                live: flag(&q, "live", false)?,
                config: flag(&q, "config", false)?,
                timeout: seconds(&q, "timeout")?,
            };
            let op = DetachMemory {
                domain: name,
                alias,
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
    }
}
