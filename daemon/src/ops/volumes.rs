//! Pools and volumes (`pool-define`, `vol-create-as`, `vol-clone`...): the changes, each one
//! operation audited under `pool` or `pool/volume`. Listing and reading are queries the faces
//! answer from the service directly, like domain lists.

use bytes::Bytes;
use novacron_domain::storage::{PoolConfig, VolumeConfig, VolumeInfo};
use novacron_domain::Error;
use tokio::sync::mpsc;

use super::{table, OpInfo, Operation};
use crate::service::storage::volumes::Uploaded;
use crate::service::storage::{CloneRequest, ImportRequest, PoolView};
use crate::service::Service;

/// The audit target of a volume.
fn key(pool: &str, volume: &str) -> String {
    format!("{pool}/{volume}")
}

/// The request as sent: a parse failure is the operation's own (audited) failure.
pub struct PoolDefine {
    pub config: Result<PoolConfig, String>,
    target: String,
}

impl PoolDefine {
    /// From libvirt pool XML (`xml`) or the JSON model.
    pub fn parse(body: &str, xml: bool) -> PoolDefine {
        let config = if xml {
            PoolConfig::from_xml(body).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(body).map_err(|e| format!("invalid pool JSON: {e}"))
        };
        let target = config
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_else(|_| "(unparsed pool)".to_owned());
        PoolDefine { config, target }
    }
}

fn unparsed(what: &str, e: String) -> Error {
    Error::Invalid {
        message: e.clone(),
        details: vec![novacron_domain::FieldError::new(what, e)],
    }
}

impl Operation for PoolDefine {
    type Response = PoolView;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::POOL_DEFINE
    }
    fn target(&self) -> &str {
        &self.target
    }
    async fn local(self, svc: Service) -> Result<PoolView, Error> {
        svc.pool_define(self.config.map_err(|e| unparsed("pool", e))?)
            .await
    }
}

pub struct PoolUndefine {
    pub pool: String,
}

impl Operation for PoolUndefine {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::POOL_UNDEFINE
    }
    fn target(&self) -> &str {
        &self.pool
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.pool_undefine(&self.pool).await
    }
}

pub struct VolCreate {
    pub pool: String,
    pub config: Result<VolumeConfig, String>,
    target: String,
}

impl VolCreate {
    pub fn new(pool: String, config: VolumeConfig) -> VolCreate {
        let target = key(&pool, &config.name);
        VolCreate {
            pool,
            config: Ok(config),
            target,
        }
    }

    /// From libvirt volume XML (`xml`) or the JSON model; a parse failure is audited.
    pub fn parse(pool: String, body: &str, xml: bool) -> VolCreate {
        let config = if xml {
            VolumeConfig::from_xml(body).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(body).map_err(|e| format!("invalid volume JSON: {e}"))
        };
        let target = key(
            &pool,
            config
                .as_ref()
                .map(|c| c.name.as_str())
                .unwrap_or("(unparsed volume)"),
        );
        VolCreate {
            pool,
            config,
            target,
        }
    }
}

impl Operation for VolCreate {
    type Response = VolumeInfo;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_CREATE
    }
    fn target(&self) -> &str {
        &self.target
    }
    async fn local(self, svc: Service) -> Result<VolumeInfo, Error> {
        let config = self.config.map_err(|e| unparsed("volume", e))?;
        svc.vol_create(&self.pool, config).await
    }
}

/// The pool and volume every other volume operation names.
pub struct Vol {
    pub pool: String,
    pub volume: String,
    target: String,
}

impl Vol {
    pub fn new(pool: impl Into<String>, volume: impl Into<String>) -> Vol {
        let (pool, volume) = (pool.into(), volume.into());
        Vol {
            target: key(&pool, &volume),
            pool,
            volume,
        }
    }
}

pub struct VolResize {
    pub vol: Vol,
    pub capacity: u64,
    pub shrink: bool,
}

impl Operation for VolResize {
    type Response = VolumeInfo;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_RESIZE
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<VolumeInfo, Error> {
        svc.vol_resize(&self.vol.pool, &self.vol.volume, self.capacity, self.shrink)
            .await
    }
}

pub struct VolDelete {
    pub vol: Vol,
}

impl Operation for VolDelete {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_DELETE
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.vol_delete(&self.vol.pool, &self.vol.volume).await
    }
}

pub struct VolClone {
    pub vol: Vol,
    pub request: CloneRequest,
}

impl Operation for VolClone {
    type Response = VolumeInfo;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_CLONE
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<VolumeInfo, Error> {
        svc.vol_clone(&self.vol.pool, &self.vol.volume, self.request)
            .await
    }
}

/// The body arrives through `data` (the face pumps the request body into it).
pub struct VolUpload {
    pub vol: Vol,
    pub offset: u64,
    pub length: Option<u64>,
    pub data: mpsc::Receiver<Result<Bytes, String>>,
}

impl Operation for VolUpload {
    type Response = Uploaded;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_UPLOAD
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<Uploaded, Error> {
        svc.vol_upload(
            &self.vol.pool,
            &self.vol.volume,
            self.offset,
            self.length,
            self.data,
        )
        .await
    }
}

/// Opens the stream; the face sends it. Audited: it hands out a volume's contents.
pub struct VolDownload {
    pub vol: Vol,
    pub offset: u64,
    pub length: Option<u64>,
}

impl Operation for VolDownload {
    type Response = (u64, mpsc::Receiver<Bytes>);
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_DOWNLOAD
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<(u64, mpsc::Receiver<Bytes>), Error> {
        svc.vol_download(&self.vol.pool, &self.vol.volume, self.offset, self.length)
            .await
    }
}

/// `vol-import`: the file at `request.path` becomes volume `vol` (audited under `pool/volume`).
pub struct VolImport {
    pub vol: Vol,
    pub request: ImportRequest,
}

impl Operation for VolImport {
    type Response = VolumeInfo;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VOL_IMPORT
    }
    fn target(&self) -> &str {
        &self.vol.target
    }
    async fn local(self, svc: Service) -> Result<VolumeInfo, Error> {
        svc.vol_import(&self.vol.pool, &self.vol.volume, self.request)
            .await
    }
}
