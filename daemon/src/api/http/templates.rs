//! `/v1/templates/...`: domain templates. Each handler parses, runs one operation (changes
//! through the executor) and renders.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, StatusCode};

use super::auth::Caller;
use super::error::ApiError;
use super::request::{decode_segment, flag, query, read_body};
use super::response::{json_response, no_content, Response};
use super::Ctx;
use crate::ops::templates::{TemplateCreate, TemplateDelete, TemplateDeploy, TemplateUpdate};
use crate::ops::{Executor, Operation, Target};
use crate::service::templates::{CreateRequest, DeployRequest, UpdateRequest};

/// The template endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateEndpoint {
    List,
    Create,
    Info,
    Update,
    Delete,
    Deploy,
}

impl TemplateEndpoint {
    pub fn info(self) -> &'static crate::ops::OpInfo {
        use crate::ops::table as t;
        match self {
            TemplateEndpoint::List => &t::TEMPLATE_LIST,
            TemplateEndpoint::Create => &t::TEMPLATE_CREATE,
            TemplateEndpoint::Info => &t::TEMPLATE_INFO,
            TemplateEndpoint::Update => &t::TEMPLATE_UPDATE,
            TemplateEndpoint::Delete => &t::TEMPLATE_DELETE,
            TemplateEndpoint::Deploy => &t::TEMPLATE_DEPLOY,
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Runs `op` to its end (`wait`), or in the background: `202` with the operation.
async fn run_or_spawn<O>(
    exec: &Executor,
    caller: Caller,
    op: O,
    wait: bool,
    done: StatusCode,
) -> Result<Response, ApiError>
where
    O: Operation,
    O::Response: serde::Serialize,
    ApiError: From<O::Failure>,
{
    if wait {
        let r = exec.run(caller.actor, Target::Local, op).await?;
        return Ok(json_response(done, &r));
    }
    let op = exec.spawn(caller.actor, Target::Local, op)?;
    let mut r = json_response(StatusCode::ACCEPTED, &op);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/operations/{}", op.id)) {
        r.headers_mut().insert(LOCATION, v);
    }
    Ok(r)
}

pub(crate) async fn dispatch(
    endpoint: TemplateEndpoint,
    req: Request<Incoming>,
    ctx: &Ctx,
    caller: Caller,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    let exec = Executor::new(svc.clone());
    let template = decode_segment(req.uri().path().split('/').nth(3).unwrap_or_default())?;
    match endpoint {
        TemplateEndpoint::List => Ok(json_response(StatusCode::OK, &svc.template_list().await?)),
        TemplateEndpoint::Info => Ok(json_response(
            StatusCode::OK,
            &svc.template_info(&template).await?,
        )),
        TemplateEndpoint::Create => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let request: CreateRequest = parse_json(&read_body(req).await?)?;
            run_or_spawn(
                &exec,
                caller,
                TemplateCreate { request },
                wait,
                StatusCode::CREATED,
            )
            .await
        }
        TemplateEndpoint::Update => {
            let wait = flag(&query(&req)?, "wait", true)?;
            let request: UpdateRequest = parse_json(&read_body(req).await?)?;
            let op = TemplateUpdate { template, request };
            run_or_spawn(&exec, caller, op, wait, StatusCode::OK).await
        }
        TemplateEndpoint::Delete => {
            let q = query(&req)?;
            let version = q
                .get("version")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "query parameter version: {v:?} is not a version number"
                        ))
                    })
                })
                .transpose()?;
            exec.run(
                caller.actor,
                Target::Local,
                TemplateDelete { template, version },
            )
            .await?;
            Ok(no_content())
        }
        TemplateEndpoint::Deploy => {
            let request: DeployRequest = parse_json(&read_body(req).await?)?;
            let op = TemplateDeploy { template, request };
            let r = exec.run(caller.actor, Target::Local, op).await?;
            Ok(json_response(StatusCode::CREATED, &r))
        }
    }
}
