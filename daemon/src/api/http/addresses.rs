//! `GET /v1/domains/{name}/addresses?source=lease|agent&timeout_secs=N` (domifaddr).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::request::query;
use super::response::{json_response, Response};
use crate::ops::addresses::DomIfAddr;
use crate::ops::{Executor, Target};
use crate::service::audit::Actor;
use crate::service::nics::addresses::AddressSource;

pub(crate) async fn dispatch(
    domain: String,
    req: Request<Incoming>,
    exec: &Executor,
    actor: Actor,
) -> Result<Response, ApiError> {
    let q = query(&req)?;
    let source = match q.get("source") {
        None => AddressSource::Lease,
        Some(s) => AddressSource::parse(s)?,
    };
    let timeout_secs = match q.get("timeout_secs") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter timeout_secs must be a whole number of seconds, not {v:?}"
            ))
        })?),
    };
    let op = DomIfAddr {
        domain,
        source,
        timeout_secs,
    };
    Ok(json_response(
        StatusCode::OK,
        &exec.run(actor, Target::Local, op).await?,
    ))
}
