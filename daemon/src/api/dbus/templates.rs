//! The template methods of `org.novacron1.Manager` (declared in `objects.rs`): queries answer
//! JSON (the HTTP bodies), changes ask polkit and run one operation each. Empty strings and a
//! version of 0 mean "not given" (D-Bus has no optional arguments).

use zbus::message::Header;
use zbus::Connection;

use super::error::DbusError;
use super::polkit;
use super::storage::to_json;
use crate::ops::templates::{TemplateCreate, TemplateDelete, TemplateDeploy, TemplateUpdate};
use crate::ops::{Executor, Operation, Target};
use crate::service::templates::{CreateRequest, DeployRequest, UpdateRequest};
use crate::service::Service;

fn given(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

async fn run<O>(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    op: O,
) -> Result<O::Response, DbusError>
where
    O: Operation,
    DbusError: From<O::Failure>,
{
    let actor = polkit::authorize(conn, header, svc).await?;
    Ok(Executor::new(svc.clone())
        .run(actor, Target::Local, op)
        .await?)
}

pub async fn list(svc: &Service) -> Result<String, DbusError> {
    to_json(&svc.template_list().await?)
}

pub async fn info(svc: &Service, name: &str) -> Result<String, DbusError> {
    to_json(&svc.template_info(name).await?)
}

pub async fn create(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    name: &str,
    domain: &str,
    pool: &str,
    description: &str,
) -> Result<String, DbusError> {
    let request = CreateRequest {
        name: name.to_owned(),
        domain: domain.to_owned(),
        pool: given(pool),
        description: given(description),
    };
    to_json(&run(svc, conn, header, TemplateCreate { request }).await?)
}

pub async fn update(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    name: &str,
    domain: &str,
    pool: &str,
    description: &str,
) -> Result<String, DbusError> {
    let op = TemplateUpdate {
        template: name.to_owned(),
        request: UpdateRequest {
            domain: given(domain),
            pool: given(pool),
            description: given(description),
        },
    };
    to_json(&run(svc, conn, header, op).await?)
}

pub async fn delete(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    name: &str,
    version: u32,
) -> Result<(), DbusError> {
    let op = TemplateDelete {
        template: name.to_owned(),
        version: (version != 0).then_some(version),
    };
    run(svc, conn, header, op).await
}

#[allow(clippy::too_many_arguments)]
pub async fn deploy(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    template: &str,
    name: &str,
    version: u32,
    pool: &str,
    start: bool,
) -> Result<String, DbusError> {
    let op = TemplateDeploy {
        template: template.to_owned(),
        request: DeployRequest {
            name: name.to_owned(),
            version: (version != 0).then_some(version),
            pool: given(pool),
            start,
        },
    };
    to_json(&run(svc, conn, header, op).await?)
}
