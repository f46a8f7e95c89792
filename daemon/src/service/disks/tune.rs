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

pub use novacron_domain::model::IoTune;

/// QEMU's rules on the limits (`IoTune::problems`), as one refusal naming every field.
pub(crate) fn check_iotune(t: &IoTune) -> Result<(), Error> {
    let problems = t.problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        message: problems
            .iter()
            .map(|(f, why)| format!("{f}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
        details: problems
            .iter()
            .map(|(f, why)| FieldError::new(*f, why.clone()))
            .collect(),
    })
}

/// `block_set_io_throttle`'s arguments for the device at QOM path or qdev id `id`.
pub(crate) fn qmp_args(t: &IoTune, id: &str) -> Value {
    let mut a = json!({
        "id": id,
        "bps": t.total_bytes_sec, "bps_rd": t.read_bytes_sec,
        "bps_wr": t.write_bytes_sec, "iops": t.total_iops_sec,
        "iops_rd": t.read_iops_sec, "iops_wr": t.write_iops_sec,
        "bps_max": t.total_bytes_sec_max, "bps_rd_max": t.read_bytes_sec_max,
        "bps_wr_max": t.write_bytes_sec_max, "iops_max": t.total_iops_sec_max,
        "iops_rd_max": t.read_iops_sec_max, "iops_wr_max": t.write_iops_sec_max,
    });
    // A length of 0 is QEMU's error, not its default: only lengths given are sent.
    for (k, v) in [
        ("bps_max_length", t.total_bytes_sec_max_length),
        ("bps_rd_max_length", t.read_bytes_sec_max_length),
        ("bps_wr_max_length", t.write_bytes_sec_max_length),
        ("iops_max_length", t.total_iops_sec_max_length),
        ("iops_rd_max_length", t.read_iops_sec_max_length),
        ("iops_wr_max_length", t.write_iops_sec_max_length),
        ("iops_size", t.size_iops_sec),
    ] {
        if v > 0 {
            a[k] = json!(v);
        }
    }
    if let Some(g) = &t.group_name {
        a["group"] = json!(g);
    }
    a
}

/// The limits `query-block`'s `inserted` reports (burst lengths only where a burst is set:
/// QEMU reports its default of 1 s otherwise).
pub(crate) fn from_inserted(i: &Value) -> IoTune {
    let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
    let len = |max: &str, k: &str| if n(max) > 0 { n(k) } else { 0 };
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
        total_bytes_sec_max_length: len("bps_max", "bps_max_length"),
        read_bytes_sec_max_length: len("bps_rd_max", "bps_rd_max_length"),
        write_bytes_sec_max_length: len("bps_wr_max", "bps_wr_max_length"),
        total_iops_sec_max_length: len("iops_max", "iops_max_length"),
        read_iops_sec_max_length: len("iops_rd_max", "iops_rd_max_length"),
        write_iops_sec_max_length: len("iops_wr_max", "iops_wr_max_length"),
        size_iops_sec: n("iops_size"),
        group_name: i
            .get("group")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
            .map(str::to_owned),
    }
}

/// What `query-block` reads back after a `block_set_io_throttle` with `args` that QEMU
/// accepted: its burst length of 1 s where a burst was given none; the group as QEMU keeps it
/// (the one named, else the group the disk was in while it stays throttled; the per-device
/// group QEMU makes for a disk named in none is no shared group: `None`).
pub(crate) fn applied(args: &Value, before: Option<&IoTune>) -> IoTune {
    let mut v = args.clone();
    for k in [
        "bps_max",
        "bps_rd_max",
        "bps_wr_max",
        "iops_max",
        "iops_rd_max",
        "iops_wr_max",
    ] {
        let len = format!("{k}_length");
        if v[k].as_u64().unwrap_or(0) > 0 && v.get(&len).is_none() {
            v[len] = json!(1);
        }
    }
    let mut t = from_inserted(&v);
    let throttled = !IoTune {
        group_name: None,
        ..t.clone()
    }
    .is_unlimited();
    if !throttled {
        t.group_name = None;
    } else if t.group_name.is_none() {
        t.group_name = before
            .filter(|b| !b.is_unlimited())
            .and_then(|b| b.group_name.clone());
    }
    t
}

/// `query-block`'s entry for the device with qdev id `qdev`.
async fn query_block(qmp: &novacron_qmp::Client, name: &str, qdev: &str) -> Result<Value, Error> {
    let all = qmp
        .execute_raw("query-block", None)
        .await
        .map_err(|e| qmp_error(name, "query-block", e))?;
    find_block(&all, qdev)
        .cloned()
        .ok_or_else(|| Error::Internal(format!("QEMU reports no block device for '{qdev}'")))
}

/// The QOM path of the block backend of disk device `qdev`: a virtio-blk-pci proxy's child
/// (`/machine/peripheral/<id>/virtio-backend`), other devices' own id.
fn backend_path(disk: &novacron_domain::model::Disk, qdev: &str) -> String {
    match disk.target.bus {
        novacron_domain::model::DiskBus::Virtio => {
            format!("/machine/peripheral/{qdev}/virtio-backend")
        }
        _ => qdev.to_owned(),
    }
}

/// The entry of `query-block`'s answer `all` for qdev id `qdev` (a virtio-blk-pci proxy's
/// backend is its child, `/machine/peripheral/<id>/virtio-backend`).
fn find_block<'a>(all: &'a Value, qdev: &str) -> Option<&'a Value> {
    let path = format!("/machine/peripheral/{qdev}/");
    all.as_array().into_iter().flatten().find(|b| {
        b.get("qdev")
            .and_then(Value::as_str)
            .is_some_and(|q| q == qdev || q.starts_with(&path) || q.ends_with(&format!("/{qdev}")))
    })
}

/// The definition's `<iotune>` of every disk with a medium, set on a new QEMU before the
/// guest runs (it waits under `-S`). As libvirt does with `-blockdev`: `block_set_io_throttle`
/// per device (there are no `-drive` throttling options then), rather than a throttle-group
/// object and a throttle filter node in the graph, which would sit between the device and the
/// format node that snapshots, resize and the live `blkdeviotune` all work on.
pub(crate) async fn apply_iotune(
    qmp: &novacron_qmp::Client,
    name: &str,
    disks: &[novacron_domain::model::Disk],
) -> Result<(), Error> {
    let wanted: Vec<_> = disks
        .iter()
        .filter(|d| d.source.is_some())
        .filter_map(|d| {
            d.iotune
                .as_ref()
                .filter(|t| !t.is_unlimited())
                .map(|t| (d.target.dev.as_str(), hotplug::qdev_id(d), t))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let all = qmp
        .execute_raw("query-block", None)
        .await
        .map_err(|e| qmp_error(name, "query-block", e))?;
    for (dev, qdev, t) in wanted {
        let path = find_block(&all, &qdev)
            .and_then(|b| b["qdev"].as_str())
            .unwrap_or(&qdev)
            .to_owned();
        qmp.execute_raw("block_set_io_throttle", Some(&qmp_args(t, &path)))
            .await
            .map_err(|e| qmp_error(name, &format!("I/O limits (<iotune>) of disk {dev}"), e))?;
    }
    Ok(())
}

/// Puts `tune` on disk `target` of `disks` and on every other disk of its group (a group has
/// one set of limits, as libvirt keeps them); unlimited becomes no `<iotune>` at all.
fn set_limits(
    disks: &mut [novacron_domain::model::Disk],
    name: &str,
    target: &str,
    tune: &IoTune,
) -> Result<(), Error> {
    if !disks.iter().any(|d| d.target.dev == target) {
        return Err(unknown_target(name, target));
    }
    let value = (!tune.is_unlimited()).then(|| tune.clone());
    for d in disks.iter_mut() {
        let peer = tune.group_name.is_some()
            && d.iotune.as_ref().and_then(|t| t.group_name.as_ref()) == tune.group_name.as_ref();
        if d.target.dev == target || peer {
            d.iotune = value.clone();
        }
    }
    Ok(())
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
        // The size this daemon last gave the node, else QEMU's (one `query-block`).
        let current = match live.known_disk_size(&node) {
            Some(s) => s,
            None => query_block(qmp, name, &d.qdev)
                .await?
                .pointer("/inserted/image/virtual-size")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        };
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
        .map_err(|e| {
            // Whatever QEMU did, the next resize asks it again.
            live.forget_disk_sizes();
            qmp_error(name, "blockresize", e)
        })?;
        live.note_disk_size(&node, size);
        Ok(size)
    }

    /// `blkdeviotune` without values: the limits in force on a running guest's disk, or the
    /// definition's `<iotune>` of a stopped one.
    pub async fn disk_iotune(&self, name: &str, target: &str) -> Result<IoTune, Error> {
        let h = self.inner.handle(name)?;
        if h.run().live().is_none() {
            let def = h.definition();
            let d = def
                .config
                .config()
                .devices
                .disks
                .iter()
                .find(|d| d.target.dev == target)
                .ok_or_else(|| unknown_target(name, target))?;
            return Ok(d.iotune.clone().unwrap_or_default());
        }
        let live = running(&h, "read the I/O limits of")?;
        let d = live
            .devices()
            .find(target)
            .cloned()
            .ok_or_else(|| unknown_target(name, target))?;
        let info = query_block(live.qmp(name)?, name, &d.qdev).await?;
        Ok(from_inserted(info.get("inserted").unwrap_or(&Value::Null)))
    }

    /// `blkdeviotune`: sets the limits of a running guest's disk (`--live`: returned as QEMU
    /// reports them afterwards, and kept in the live device set) and/or of the definition's
    /// disk (`--config`: its `<iotune>`, applied at every start). Disks of the same group get
    /// the same limits. The new definition is validated before anything changes.
    pub async fn set_disk_iotune(
        &self,
        name: &str,
        target: &str,
        tune: IoTune,
        scope: DiskScope,
    ) -> Result<IoTune, Error> {
        check_iotune(&tune)?;
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope)?;
        let new_definition = if config {
            let mut c = h.definition().config.config().clone();
            set_limits(&mut c.devices.disks, name, target, &tune)?;
            c.clone().validate()?;
            Some(c)
        } else {
            None
        };
        let mut shown = None;
        if let Some(live) = live {
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
            // Known from the bus without asking QEMU; should QEMU not know it, its own
            // `query-block` says which it is.
            let path = backend_path(&d.disk, &d.qdev);
            if let Err(first) = qmp
                .execute_raw("block_set_io_throttle", Some(&qmp_args(&tune, &path)))
                .await
            {
                let asked = query_block(qmp, name, &d.qdev).await?["qdev"]
                    .as_str()
                    .unwrap_or(&d.qdev)
                    .to_owned();
                if asked == path {
                    return Err(qmp_error(name, "blkdeviotune", first));
                }
                qmp.execute_raw("block_set_io_throttle", Some(&qmp_args(&tune, &asked)))
                    .await
                    .map_err(|e| qmp_error(name, "blkdeviotune", e))?;
            }
            // What QEMU now has in force, known without a `query-block` (which stats every
            // image of the guest): `blkdeviotune` without values still reads QEMU's.
            let now = applied(&qmp_args(&tune, &path), d.disk.iotune.as_ref());
            let mut devices = live.devices();
            let mut disks: Vec<_> = devices.disks.iter().map(|x| x.disk.clone()).collect();
            set_limits(&mut disks, name, target, &now)?;
            for (x, disk) in devices.disks.iter_mut().zip(disks) {
                x.disk.iotune = disk.iotune;
            }
            inner.save_live(name, &live, devices).await?;
            shown = Some(now);
        }
        if let Some(c) = new_definition {
            inner.save_definition(&h, c).await?;
        }
        Ok(shown.unwrap_or(tune))
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
                // Removed before the nodes go (QEMU frees a set once nothing uses it).
                for s in &sets {
                    let _ = qmp
                        .execute_raw("remove-fd", Some(&json!({"fdset-id": s})))
                        .await;
                }
                for n in [old.clone(), hotplug::storage_node(old)] {
                    if let Err(e) = qmp
                        .execute_raw("blockdev-del", Some(&json!({"node-name": n})))
                        .await
                    {
                        tracing::warn!(domain = name, node = %n, error = %e, "change-media");
                    }
                }
            }
            // A medium is read-only and never committed into: QEMU holds its files now, the
            // daemon's descriptors go (the sets stay while the medium is in).
            for s in &new_sets {
                crate::service::snapshots::live::release_set(qmp, *s).await;
            }
            if let Some(x) = devices.find_mut(target) {
                x.disk.source = source.clone();
                x.node = new_node.clone();
                x.fd_sets = new_sets;
            }
            inner.save_live(name, &live, devices).await?;
            // QEMU keeps a throttle on the device's BlockBackend across a media change, but
            // one that had no medium never got its `<iotune>` (QEMU refuses limits without a
            // medium: "Device has no medium"), so the new medium gets them here (the same
            // values again are a no-op). Checked with query-block on QEMU 7.2.
            if new_node.is_some() {
                apply_iotune(qmp, name, std::slice::from_ref(&disk)).await?;
            }
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
