//! The pool and volume methods of `org.novacron1.Manager` (declared in `objects.rs`, whose
//! one interface block zbus requires): queries answer JSON (the HTTP bodies), changes ask
//! polkit and run one operation each. Volume data streams stay on HTTP.

use novacron_domain::storage::{VolumeConfig, VolumeFormat};
use serde::Serialize;
use zbus::message::Header;
use zbus::Connection;

use super::error::DbusError;
use super::polkit;
use crate::ops::volumes::{
    PoolDefine, PoolUndefine, Vol, VolClone, VolCreate, VolDelete, VolImport, VolResize,
};
use crate::ops::{Executor, Operation, Target};
use crate::service::storage::{CloneRequest, ImportRequest};
use crate::service::Service;

pub fn to_json<T: Serialize>(v: &T) -> Result<String, DbusError> {
    serde_json::to_string(v).map_err(|e| DbusError::Internal(e.to_string()))
}

pub(super) async fn run<O>(
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

pub async fn define_pool(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    xml: &str,
) -> Result<String, DbusError> {
    to_json(&run(svc, conn, header, PoolDefine::parse(xml, true)).await?)
}

pub async fn undefine_pool(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
) -> Result<(), DbusError> {
    run(
        svc,
        conn,
        header,
        PoolUndefine {
            pool: pool.to_owned(),
        },
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn create_volume(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
    name: &str,
    capacity: u64,
    format: &str,
    allocation: u64,
) -> Result<String, DbusError> {
    let format: VolumeFormat = format.parse().map_err(DbusError::invalid_args)?;
    let config = VolumeConfig {
        name: name.to_owned(),
        capacity,
        allocation: Some(allocation),
        format,
        backing: None,
    };
    to_json(&run(svc, conn, header, VolCreate::new(pool.to_owned(), config)).await?)
}

pub async fn resize_volume(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
    volume: &str,
    capacity: u64,
    shrink: bool,
) -> Result<String, DbusError> {
    let op = VolResize {
        vol: Vol::new(pool, volume),
        capacity,
        shrink,
    };
    to_json(&run(svc, conn, header, op).await?)
}

pub async fn delete_volume(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
    volume: &str,
) -> Result<(), DbusError> {
    run(
        svc,
        conn,
        header,
        VolDelete {
            vol: Vol::new(pool, volume),
        },
    )
    .await
}

pub async fn clone_volume(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
    volume: &str,
    name: &str,
    linked: bool,
) -> Result<String, DbusError> {
    let op = VolClone {
        vol: Vol::new(pool, volume),
        request: CloneRequest {
            name: name.to_owned(),
            linked,
            format: None,
        },
    };
    to_json(&run(svc, conn, header, op).await?)
}

/// `vol-import`: `path` on the daemon's host becomes volume `name` of `pool`; `move` renames it
/// (on the pool's file system) instead of copying.
#[allow(clippy::too_many_arguments)]
pub async fn import_volume(
    svc: &Service,
    conn: &Connection,
    header: &Header<'_>,
    pool: &str,
    name: &str,
    path: &str,
    move_file: bool,
) -> Result<String, DbusError> {
    let op = VolImport {
        vol: Vol::new(pool, name),
        request: ImportRequest {
            path: path.to_owned(),
            move_file,
            format: None,
        },
    };
    to_json(&run(svc, conn, header, op).await?)
}
