//! Disks of a domain: `attach-disk`, `detach-disk`, `blockresize`, `blkdeviotune`,
//! `change-media` (virsh's names). Every face sends the same JSON requests (below), so HTTP,
//! D-Bus and novactl cannot disagree.

use std::time::Duration;

use novacron_domain::model::Disk;
use novacron_domain::{Error, FieldError};
use serde::Deserialize;

use super::{table, OpInfo, Operation};
use crate::service::disks::{DiskEntry, DiskScope, IoTune, MediaChange};
use crate::service::Service;

/// An attach request: the disk as libvirt XML (`xml`, one `<disk>` element, read by the same
/// reader as a definition's disks) or as the JSON model (`disk`), and the scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    #[serde(default)]
    pub xml: Option<String>,
    #[serde(default)]
    pub disk: Option<Disk>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    #[serde(default)]
    pub persistent: bool,
}

impl AttachRequest {
    pub fn disk(self) -> Result<(Disk, DiskScope), Error> {
        let disk = match (self.xml, self.disk) {
            (Some(x), None) => novacron_domain::xml::parse_disk(&x)?,
            (None, Some(d)) => d,
            _ => {
                return Err(Error::Invalid {
                    message: "give the disk as exactly one of `xml` or `disk`".into(),
                    details: vec![FieldError::new("xml", "exactly one of xml, disk")],
                })
            }
        };
        let scope = DiskScope {
            live: self.live,
            config: self.config,
            persistent: self.persistent,
        };
        Ok((disk, scope))
    }
}

#[derive(Debug, Clone)]
pub struct AttachDisk {
    pub domain: String,
    pub disk: Disk,
    pub scope: DiskScope,
}

impl Operation for AttachDisk {
    type Response = DiskEntry;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::ATTACH_DISK
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<DiskEntry, Error> {
        svc.attach_disk(&self.domain, self.disk, self.scope).await
    }
}

/// A detach request's options (query parameters on HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachOptions {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    #[serde(default)]
    pub persistent: bool,
    /// Seconds to wait for the guest to release the device (default 10, at most 600).
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DetachDisk {
    pub domain: String,
    pub disk: String,
    pub options: DetachOptions,
}

impl Operation for DetachDisk {
    type Response = DiskEntry;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::DETACH_DISK
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<DiskEntry, Error> {
        let timeout = self.options.timeout.map(Duration::from_secs);
        let o = &self.options;
        let scope = DiskScope {
            live: o.live,
            config: o.config,
            persistent: o.persistent,
        };
        svc.detach_disk(&self.domain, &self.disk, scope, timeout)
            .await
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    /// The new size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct ResizeDisk {
    pub domain: String,
    pub disk: String,
    pub size: u64,
}

impl Operation for ResizeDisk {
    type Response = u64;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::BLOCKRESIZE
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<u64, Error> {
        svc.resize_disk(&self.domain, &self.disk, self.size).await
    }
}

/// A `blkdeviotune` body: the limits plus `live`/`config`/`persistent`.
#[derive(Debug, Clone)]
pub struct IoTuneRequest {
    pub scope: DiskScope,
    pub tune: IoTune,
}

impl IoTuneRequest {
    pub fn parse(body: &[u8]) -> Result<IoTuneRequest, Error> {
        let (scope, rest) = split_scope(body)?;
        let tune = serde_json::from_value(rest).map_err(|e| bad_body(&e))?;
        Ok(IoTuneRequest { scope, tune })
    }
}

fn bad_body(e: &dyn std::fmt::Display) -> Error {
    Error::Invalid {
        message: format!("invalid JSON body: {e}"),
        details: vec![FieldError::new("body", e.to_string())],
    }
}

/// The scope flags of a JSON object body, and the rest (read strictly by its own type).
fn split_scope(body: &[u8]) -> Result<(DiskScope, serde_json::Value), Error> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| bad_body(&e))?;
    let mut flag = |k: &str| match v.remove(k) {
        None => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(other) => Err(bad_body(&format!("{k} must be true or false, not {other}"))),
    };
    let scope = DiskScope {
        live: flag("live")?,
        config: flag("config")?,
        persistent: flag("persistent")?,
    };
    Ok((scope, serde_json::Value::Object(v)))
}

#[derive(Debug, Clone)]
pub struct SetIoTune {
    pub domain: String,
    pub disk: String,
    pub tune: IoTune,
    pub scope: DiskScope,
}

impl Operation for SetIoTune {
    type Response = IoTune;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::BLKDEVIOTUNE
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<IoTune, Error> {
        svc.set_disk_iotune(&self.domain, &self.disk, self.tune, self.scope)
            .await
    }
}

/// A `change-media` body: the change plus `live`/`config`/`persistent`.
#[derive(Debug, Clone)]
pub struct MediaRequest {
    pub scope: DiskScope,
    pub change: MediaChange,
}

impl MediaRequest {
    pub fn parse(body: &[u8]) -> Result<MediaRequest, Error> {
        let (scope, rest) = split_scope(body)?;
        let change = serde_json::from_value(rest).map_err(|e| bad_body(&e))?;
        Ok(MediaRequest { scope, change })
    }
}

#[derive(Debug, Clone)]
pub struct ChangeMedia {
    pub domain: String,
    pub disk: String,
    pub change: MediaChange,
    pub scope: DiskScope,
}

impl Operation for ChangeMedia {
    type Response = DiskEntry;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::CHANGE_MEDIA
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<DiskEntry, Error> {
        svc.change_media(&self.domain, &self.disk, self.change, self.scope)
            .await
    }
}
