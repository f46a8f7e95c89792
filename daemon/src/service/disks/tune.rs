//! Changes to a running guest's disks that keep the device: live resize (`block_resize` by
//! node name, grow only), I/O throttling (`block_set_io_throttle` by qdev id, read back from
//! `query-block`) and CD-ROM media (`blockdev-open-tray`, `-remove-medium`, `-insert-medium`
//! with a node of ours, `-close-tray`).

use std::os::fd::AsFd;
use std::sync::Arc;

use novacron_domain::model::{DiskDevice, DiskSource};
use novacron_domain::qemu::hotplug;
use novacron_domain::{Error, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::domain::Live;
use super::super::jobs::Job;
use super::super::lifecycle::qmp_error;
use super::{entry, resolve, unknown_target, DiskEntry, DiskScope};
use crate::service::Service;

/// The largest size a disk may be grown to (64 TiB): a typo of a unit is refused, not
/// written into a sparse file.
pub const MAX_DISK_BYTES: u64 = 64 << 40;

fn invalid(field: &str, message: String) -> Error {
    Error::Invalid {
        message: message.clone(),
        details: vec![FieldError::new(field, message)],
    }
}

fn running(h: &super::super::domain::DomainHandle, op: &'static str) -> Result<Arc<Live>, Error> {
    h.run().live().cloned().ok_or_else(|| Error::WrongState {
        name: h.name.clone(),
        state: h.state(),
        operation: op,
    })
}

/// libvirt's `<iotune>` (virsh `blkdeviotune`): 0 or absent is unlimited. Bytes and
/// operations per second, total or per direction (not both), bursts (`*_max`) and how long
/// a burst may last, and a group name that makes disks share one limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoTune {
    #[serde(default)]
    pub total_bytes_sec: u64,
    #[serde(default)]
    pub read_bytes_sec: u64,
    #[serde(default)]
    pub write_bytes_sec: u64,
    #[serde(default)]
    pub total_iops_sec: u64,
    #[serde(default)]
    pub read_iops_sec: u64,
    #[serde(default)]
    pub write_iops_sec: u64,
    #[serde(default)]
    pub total_bytes_sec_max: u64,
    #[serde(default)]
    pub read_bytes_sec_max: u64,
    #[serde(default)]
    pub write_bytes_sec_max: u64,
    #[serde(default)]
    pub total_iops_sec_max: u64,
    #[serde(default)]
    pub read_iops_sec_max: u64,
    #[serde(default)]
    pub write_iops_sec_max: u64,
    /// Seconds a burst may last (QEMU's `*_max_length`); 0 leaves QEMU's default (1 s).
    #[serde(default)]
    pub total_bytes_sec_max_length: u64,
    #[serde(default)]
    pub total_iops_sec_max_length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

/// QEMU's own limit on every throttle value (1e15).
const MAX_THROTTLE: u64 = 1_000_000_000_000_000;

impl IoTune {
    fn check(&self) -> Result<(), Error> {
        let pairs = [
            (
                "bytes_sec",
                self.total_bytes_sec,
                self.read_bytes_sec,
                self.write_bytes_sec,
            ),
            (
                "iops_sec",
                self.total_iops_sec,
                self.read_iops_sec,
                self.write_iops_sec,
            ),
        ];
        for (what, total, r, w) in pairs {
            if total != 0 && (r != 0 || w != 0) {
                return Err(invalid(
                    &format!("total_{what}"),
                    format!("total_{what} cannot be combined with read_{what}/write_{what}"),
                ));
            }
        }
        let all = [
            ("total_bytes_sec", self.total_bytes_sec),
            ("total_bytes_sec_max", self.total_bytes_sec_max),
            ("total_iops_sec_max", self.total_iops_sec_max),
            ("read_bytes_sec_max", self.read_bytes_sec_max),
            ("write_bytes_sec_max", self.write_bytes_sec_max),
            ("read_iops_sec_max", self.read_iops_sec_max),
            ("write_iops_sec_max", self.write_iops_sec_max),
        ];
        for (f, v) in all {
            if v > MAX_THROTTLE {
                return Err(invalid(f, format!("{f}: at most {MAX_THROTTLE}")));
            }
        }
        if let Some(g) = &self.group_name {
            if g.is_empty()
                || g.len() > 64
                || !g
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    "group_name",
                    "group_name: 1 to 64 of A-Z a-z 0-9 - _ .".into(),
                ));
            }
        }
        Ok(())
    }

    fn qmp_args(&self, id: &str) -> Value {
        let mut a = json!({
            "id": id,
            "bps": self.total_bytes_sec, "bps_rd": self.read_bytes_sec,
            "bps_wr": self.write_bytes_sec, "iops": self.total_iops_sec,
            "iops_rd": self.read_iops_sec, "iops_wr": self.write_iops_sec,
            "bps_max": self.total_bytes_sec_max, "bps_rd_max": self.read_bytes_sec_max,
            "bps_wr_max": self.write_bytes_sec_max, "iops_max": self.total_iops_sec_max,
            "iops_rd_max": self.read_iops_sec_max, "iops_wr_max": self.write_iops_sec_max,
        });
        if self.total_bytes_sec_max_length > 0 {
            a["bps_max_length"] = json!(self.total_bytes_sec_max_length);
        }
        if self.total_iops_sec_max_length > 0 {
            a["iops_max_length"] = json!(self.total_iops_sec_max_length);
        }
        if let Some(g) = &self.group_name {
            a["group"] = json!(g);
        }
        a
    }

    fn from_inserted(i: &Value) -> IoTune {
        let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
        IoTune {
            total_bytes_sec: n("bps"),
            read_bytes_sec: n("bps_rd"),
            write_bytes_sec: n("bps_wr"),
            total_iops_sec: n("iops"),
            read_iops_sec: n("iops_rd"),
            write_iops_sec: n("iops_wr"),
            total_bytes_sec_max: n("bps_max"),
            read_bytes_sec_max: n("bps_rd_max"),
            write_bytes_sec_max: n("bps_wr_max"),
            total_iops_sec_max: n("iops_max"),
            read_iops_sec_max: n("iops_rd_max"),
            write_iops_sec_max: n("iops_wr_max"),
            total_bytes_sec_max_length: if n("bps_max") > 0 {
                n("bps_max_length")
            } else {
                0
            },
            total_iops_sec_max_length: if n("iops_max") > 0 {
                n("iops_max_length")
            } else {
                0
            },
            group_name: i
                .get("group")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
        }
    }
}

/// `query-block`'s entry for the device with qdev id `qdev`.
async fn query_block(qmp: &novacron_qmp::Client, name: &str, qdev: &str) -> Result<Value, Error> {
    let all = qmp
        .execute_raw("query-block", None)
        .await
        .map_err(|e| qmp_error(name, "query-block", e))?;
    let path = format!("/machine/peripheral/{qdev}/");
    all.as_array()
        .into_iter()
        .flatten()
        .find(|b| {
            b.get("qdev").and_then(Value::as_str).is_some_and(|q| {
                q == qdev || q.starts_with(&path) || q.ends_with(&format!("/{qdev}"))
            })
        })
        .cloned()
        .ok_or_else(|| Error::Internal(format!("QEMU reports no block device for '{qdev}'")))
}

/// What a media change does (virsh `change-media --eject/--insert/--update`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaChange {
    /// `eject`, `insert` (the tray must be empty) or `update` (replace whatever is in).
    pub action: MediaAction,
    /// The image for insert/update.
    #[serde(default)]
    pub source: Option<String>,
    /// Open the tray even if the guest locked it.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaAction {
    Eject,
    Insert,
    Update,
}

impl Service {
    /// `blockresize`: grows a running guest's disk to `size` bytes.
    pub async fn resize_disk(&self, name: &str, target: &str, size: u64) -> Result<u64, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let live = running(&h, "resize a disk of")?;
        let d = live
            .devices()
            .find(target)
            .cloned()
            .ok_or_else(|| unknown_target(name, target))?;
        if d.disk.readonly || d.disk.device == DiskDevice::Cdrom || d.detaching {
            return Err(invalid(
                "target",
                format!("disk '{target}' is read-only, a CD-ROM or being detached"),
            ));
        }
        let Some(node) = d.node.clone() else {
            return Err(invalid("target", format!("disk '{target}' has no medium")));
        };
        if size == 0 || size > MAX_DISK_BYTES || size % 512 != 0 {
            return Err(invalid(
                "size",
                format!(
                    "size: a multiple of 512 bytes, 512 to {MAX_DISK_BYTES} (64 TiB); got {size}"
                ),
            ));
        }
        let qmp = live.qmp(name)?;
        let info = query_block(qmp, name, &d.qdev).await?;
        let current = info
            .pointer("/inserted/image/virtual-size")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if size < current {
            return Err(invalid(
                "size",
                format!(
                    "disk '{target}' is {current} bytes: shrinking to {size} would cut off the \
                     guest's data (only growing is supported)"
                ),
            ));
        }
        qmp.execute_raw(
            "block_resize",
            Some(&json!({"node-name": node, "size": size})),
        )
        .await
        .map_err(|e| qmp_error(name, "blockresize", e))?;
        Ok(size)
    }

    /// `blkdeviotune` without values: the limits in force on a running guest's disk.
    pub async fn disk_iotune(&self, name: &str, target: &str) -> Result<IoTune, Error> {
        let h = self.inner.handle(name)?;
        let live = running(&h, "read the I/O limits of")?;
        let d = live
            .devices()
            .find(target)
            .cloned()
            .ok_or_else(|| unknown_target(name, target))?;
        let info = query_block(live.qmp(name)?, name, &d.qdev).await?;
        Ok(IoTune::from_inserted(
            info.get("inserted").unwrap_or(&Value::Null),
        ))
    }

    /// `blkdeviotune --live`: sets the limits of a running guest's disk; returns them as QEMU
    /// reports them afterwards. (Limits in the definition, `<iotune>`, are not supported yet.)
    pub async fn set_disk_iotune(
        &self,
        name: &str,
        target: &str,
        tune: IoTune,
        scope: DiskScope,
    ) -> Result<IoTune, Error> {
        tune.check()?;
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope)?;
        if config {
            return Err(invalid(
                "config",
                "I/O limits in the definition (<iotune>) are not supported yet: set them \
                 --live on the running guest"
                    .into(),
            ));
        }
        let Some(live) = live else {
            return Err(Error::Internal("no live scope".into()));
        };
        let d = live
            .devices()
            .find(target)
            .cloned()
            .ok_or_else(|| unknown_target(name, target))?;
        if d.node.is_none() {
            return Err(invalid("target", format!("disk '{target}' has no medium")));
        }
        let qmp = live.qmp(name)?;
        // By QOM path: a virtio-blk-pci proxy's id names no block backend, its child does.
        let path = query_block(qmp, name, &d.qdev).await?["qdev"]
            .as_str()
            .unwrap_or(&d.qdev)
            .to_owned();
        qmp.execute_raw("block_set_io_throttle", Some(&tune.qmp_args(&path)))
            .await
            .map_err(|e| qmp_error(name, "blkdeviotune", e))?;
        let info = query_block(qmp, name, &d.qdev).await?;
        Ok(IoTune::from_inserted(
            info.get("inserted").unwrap_or(&Value::Null),
        ))
    }

    /// `change-media`: ejects, inserts or replaces a CD-ROM's medium (running guest: with a
    /// node of ours over a descriptor; definition: the source), per `scope`.
    pub async fn change_media(
        &self,
        name: &str,
        target: &str,
        change: MediaChange,
        scope: DiskScope,
    ) -> Result<DiskEntry, Error> {
        let inner = &self.inner;
        let source = match (change.action, &change.source) {
            (MediaAction::Eject, None) => None,
            (MediaAction::Eject, Some(_)) => {
                return Err(invalid("source", "eject takes no source".into()))
            }
            (_, None) => return Err(invalid("source", "insert/update need a source".into())),
            (_, Some(s)) => Some(DiskSource::File { path: s.clone() }),
        };
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope)?;
        let defined = h.definition().config.config().clone();
        let mut new_definition = None;
        if config {
            let mut c = defined.clone();
            let d = c
                .devices
                .disks
                .iter_mut()
                .find(|d| d.target.dev == target)
                .ok_or_else(|| unknown_target(name, target))?;
            if d.device != DiskDevice::Cdrom {
                return Err(invalid(
                    "target",
                    format!("disk '{target}' is not a CD-ROM"),
                ));
            }
            d.source = source.clone();
            new_definition = Some(c);
        }
        let mut shown = None;
        if let Some(live) = live {
            let mut devices = live.devices();
            let d = devices
                .find(target)
                .cloned()
                .ok_or_else(|| unknown_target(name, target))?;
            if d.disk.device != DiskDevice::Cdrom {
                return Err(invalid(
                    "target",
                    format!("disk '{target}' is not a CD-ROM"),
                ));
            }
            if change.action == MediaAction::Insert && d.node.is_some() {
                return Err(invalid(
                    "action",
                    format!("disk '{target}' has a medium: eject it first or use update"),
                ));
            }
            let mut disk = d.disk.clone();
            disk.source = source.clone();
            // The new medium's file, checked and opened as attach opens one.
            let opened = match &source {
                None => None,
                Some(_) => {
                    let checked = Arc::new(super::attach::probe(&defined, &disk).validate()?);
                    let trust = inner.admit(&checked).await?;
                    Some(
                        inner
                            .open_guest_files(name, checked.config(), trust, 0, 0)
                            .await?,
                    )
                }
            };
            let qmp = live.qmp(name)?;
            let q = |what: &'static str| move |e| qmp_error(name, what, e);
            let id = json!({"id": d.qdev});
            let mut new_node = None;
            let mut new_sets = Vec::new();
            if let Some(files) = opened {
                let node = devices.free_node();
                let mut paths = Vec::new();
                for (_, fd) in &files.fds {
                    let info = qmp
                        .add_fd(fd.as_fd(), None, Some("change-media"))
                        .await
                        .map_err(q("change-media (add-fd)"))?;
                    new_sets.push(info.fdset_id);
                    paths.push(format!("/dev/fdset/{}", info.fdset_id));
                }
                let top = paths.first().cloned().unwrap_or_default();
                for args in hotplug::blockdev_args(&disk, &node, &top, &[]) {
                    qmp.execute_raw("blockdev-add", Some(&args))
                        .await
                        .map_err(q("change-media (blockdev-add)"))?;
                }
                new_node = Some(node);
            }
            let mut open = id.clone();
            open["force"] = json!(change.force);
            qmp.execute_raw("blockdev-open-tray", Some(&open))
                .await
                .map_err(q("change-media (blockdev-open-tray)"))?;
            if d.node.is_some() {
                qmp.execute_raw("blockdev-remove-medium", Some(&id))
                    .await
                    .map_err(q("change-media (blockdev-remove-medium)"))?;
            }
            if let Some(node) = &new_node {
                let mut ins = id.clone();
                ins["node-name"] = json!(node);
                qmp.execute_raw("blockdev-insert-medium", Some(&ins))
                    .await
                    .map_err(q("change-media (blockdev-insert-medium)"))?;
                qmp.execute_raw("blockdev-close-tray", Some(&id))
                    .await
                    .map_err(q("change-media (blockdev-close-tray)"))?;
            }
            // The old medium's nodes and descriptors go.
            if let Some(old) = &d.node {
                let mut sets = d.fd_sets.clone();
                if sets.is_empty() {
                    sets = super::detach::fd_sets_of(qmp, old).await;
                }
                for n in [old.clone(), hotplug::storage_node(old)] {
                    if let Err(e) = qmp
                        .execute_raw("blockdev-del", Some(&json!({"node-name": n})))
                        .await
                    {
                        tracing::warn!(domain = name, node = %n, error = %e, "change-media");
                    }
                }
                for s in sets {
                    let _ = qmp
                        .execute_raw("remove-fd", Some(&json!({"fdset-id": s})))
                        .await;
                }
            }
            if let Some(x) = devices.find_mut(target) {
                x.disk.source = source.clone();
                x.node = new_node.clone();
                x.fd_sets = new_sets;
            }
            inner.save_live(name, &live, devices).await?;
            shown = Some(entry(&disk, new_node, Some(d.qdev.clone()), "attached"));
        }
        if let Some(c) = new_definition {
            inner.save_definition(&h, c).await?;
        }
        shown
            .or_else(|| {
                h.definition()
                    .config
                    .config()
                    .devices
                    .disks
                    .iter()
                    .find(|d| d.target.dev == target)
                    .map(|d| entry(d, None, None, "defined"))
            })
            .ok_or_else(|| unknown_target(name, target))
    }
}
