//! Live migration: the operator's routes under `/v1/domains/{name}/migrat...` and the peer
//! protocol under `/v1/migrations/incoming`. Each handler parses, calls the service once and
//! renders, like the other routes.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::request::{flag, query, read_body};
use super::response::{json_response, no_content, Response};
use super::Ctx;
use crate::service::migration::{IncomingRequest, MigrateRequest};

/// The migration endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationEndpoint {
    Migrate,
    Progress,
    Cancel,
    Postcopy,
    Prepare,
    Incoming,
    Finish,
    Abort,
}

pub(crate) async fn dispatch(
    endpoint: MigrationEndpoint,
    param: &str,
    req: Request<Incoming>,
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let svc = &ctx.service;
    match endpoint {
        MigrationEndpoint::Migrate => {
            let wait = flag(&query(&req)?, "wait", false)?;
            let request: MigrateRequest = parse(&read_body(req).await?)?;
            let progress = svc.migrate(param, request, wait).await?;
            let status = if wait {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(status, &progress))
        }
        MigrationEndpoint::Progress => Ok(json_response(StatusCode::OK, &svc.migration(param)?)),
        MigrationEndpoint::Cancel => Ok(json_response(
            StatusCode::OK,
            &svc.cancel_migration(param).await?,
        )),
        MigrationEndpoint::Postcopy => Ok(json_response(
            StatusCode::ACCEPTED,
            &svc.start_postcopy(param)?,
        )),
        MigrationEndpoint::Prepare => {
            let request: IncomingRequest = parse(&read_body(req).await?)?;
            Ok(json_response(
                StatusCode::CREATED,
                &svc.prepare_incoming(request).await?,
            ))
        }
        MigrationEndpoint::Incoming => Ok(json_response(
            StatusCode::OK,
            &svc.incoming_migration(param)?,
        )),
        MigrationEndpoint::Finish => Ok(json_response(
            StatusCode::OK,
            &svc.finish_incoming(param).await?,
        )),
        MigrationEndpoint::Abort => {
            svc.abort_incoming(param).await?;
            Ok(no_content())
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
