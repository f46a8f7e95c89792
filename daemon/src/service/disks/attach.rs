//! `attach-disk`: the file is checked by the one trust function define uses and opened here;
//! QEMU gets descriptors (`add-fd`, `/dev/fdset/N`), then `blockdev-add` (storage, format)
//! and `device_add` (virtio-blk on a free PCIe root port). A step that fails undoes the ones
//! before it; the live set is recorded before success is reported.

use std::os::fd::AsFd;
use std::sync::Arc;

use novacron_domain::model::{Devices, Disk, DiskBus, DiskSource, DomainConfig, Firmware};
use novacron_domain::qemu::hotplug;
use novacron_domain::{BackingImage, Error, FieldError};
use serde_json::{json, Value};

use super::super::domain::Live;
use super::super::jobs::Job;
use super::super::Inner;
use super::{entry, free_root_ports, resolve, root_port_of, DiskEntry, DiskScope};
use crate::persist::live_devices::LiveDisk;
use crate::service::Service;

fn invalid(field: &str, message: String) -> Error {
    Error::Invalid {
        message: message.clone(),
        details: vec![FieldError::new(field, message)],
    }
}

/// A config holding only `disk` (and what validation needs of `base`): what the trust check
/// and the file opening see, so they judge the new disk alone, by the caller's role.
pub(super) fn probe(base: &DomainConfig, disk: &Disk) -> DomainConfig {
    let mut p = base.clone();
    p.os.firmware = Firmware::Bios;
    p.os.kernel = None;
    p.devices = Devices {
        disks: vec![disk.clone()],
        controllers: base.devices.controllers.clone(),
        ..Devices::default()
    };
    p
}

/// `config` with `disk` added; validated (duplicate targets, buses, addresses).
fn with_disk(config: &DomainConfig, disk: &Disk) -> Result<DomainConfig, Error> {
    if config
        .devices
        .disks
        .iter()
        .any(|d| d.target.dev == disk.target.dev)
    {
        return Err(invalid(
            "disk.target.dev",
            format!(
                "domain '{}' already has a disk '{}'",
                config.name, disk.target.dev
            ),
        ));
    }
    let mut c = config.clone();
    c.devices.disks.push(disk.clone());
    c.clone().validate()?;
    Ok(c)
}

impl Service {
    pub async fn attach_disk(
        &self,
        name: &str,
        mut disk: Disk,
        scope: DiskScope,
    ) -> Result<DiskEntry, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope)?;
        let defined = h.definition().config.config().clone();
        if let Some(live) = &live {
            // Placed first, so the definition (with --config) records the same slot.
            let running = live.config();
            if disk.target.bus != DiskBus::Virtio {
                return Err(invalid(
                    "disk.target.bus",
                    format!(
                        "a running guest takes virtio disks only (bus '{}' cannot be hot-plugged)",
                        disk.target.bus.as_str()
                    ),
                ));
            }
            if running.os.is_i440fx() {
                return Err(invalid(
                    "disk",
                    "hot-plug needs a q35 guest (PCIe root ports)".into(),
                ));
            }
            // Hot-added NICs are in their ledger, not in the live device set.
            let nics = crate::service::nics::hotplug::nic_ports(inner, name).await?;
            let free: Vec<u32> = free_root_ports(&running)
                .into_iter()
                .filter(|p| !nics.contains(p))
                .collect();
            let port = match root_port_of(&disk) {
                Some(p) if free.contains(&p) => p,
                Some(p) => {
                    return Err(invalid(
                        "disk.address",
                        format!("root port pci.{p} is not a free PCIe root port of '{name}'"),
                    ))
                }
                None => *free.first().ok_or_else(|| {
                    invalid(
                        "disk",
                        format!(
                            "domain '{name}' has no free PCIe root port left for a hot-plugged \
                             disk (define it with more hot-plug slots)"
                        ),
                    )
                })?,
            };
            disk.address = Some(hotplug::root_port_address(port));
            with_disk(&running, &disk)?;
        }
        let new_definition = if config {
            Some(with_disk(&defined, &disk)?)
        } else {
            None
        };
        // The caller's role decides which files it may name: the same check as define.
        let checked = Arc::new(probe(&defined, &disk).validate()?);
        let trust = inner.admit(&checked).await?;
        let mut shown = entry(&disk, None, None, "defined");
        if let Some(live) = &live {
            shown = attach_live(inner, name, live, &disk, trust, &checked).await?;
        }
        if let Some(c) = new_definition {
            inner.save_definition(&h, c).await?;
        }
        Ok(shown)
    }
}

async fn attach_live(
    inner: &Arc<Inner>,
    name: &str,
    live: &Arc<Live>,
    disk: &Disk,
    trust: crate::persist::definitions::Trust,
    checked: &novacron_domain::ValidatedDomain,
) -> Result<DiskEntry, Error> {
    // A volume disk runs as its file (as at start): the live set names the file and keeps
    // the volume for the live view.
    let named = disk;
    let disk = &inner
        .volume_disk(disk, crate::service::storage::disk_volumes::Formats::Exact)
        .await?;
    let Some(source) = &disk.source else {
        return Err(invalid(
            "disk.source",
            "a hot-plugged disk needs a source".into(),
        ));
    };
    if matches!(source, DiskSource::Network(_)) {
        return Err(invalid(
            "disk.source",
            "network disks are not hot-plugged yet (define them and start the guest)".into(),
        ));
    }
    let files = inner
        .open_guest_files(name, checked.config(), trust, 0, 0)
        .await?;
    let qmp = live.qmp(name)?;
    let err = |what: &str, e: novacron_qmp::Error| {
        super::super::lifecycle::qmp_error(name, &format!("attach-disk ({what})"), e)
    };
    // Every descriptor into a set of its own; QEMU numbers the sets.
    let mut sets: Vec<u64> = Vec::new();
    let mut paths = Vec::new();
    let mut undo = Undo {
        sets: Vec::new(),
        nodes: Vec::new(),
    };
    for (_, fd) in &files.fds {
        match qmp.add_fd(fd.as_fd(), None, Some("attach-disk")).await {
            Ok(info) => {
                sets.push(info.fdset_id);
                undo.sets.push(info.fdset_id);
                paths.push(format!("/dev/fdset/{}", info.fdset_id));
            }
            Err(e) => {
                undo.run(live, name).await;
                return Err(err("add-fd", e));
            }
        }
    }
    let Some((top, below)) = paths.split_first() else {
        return Err(Error::Internal("attach-disk: no file was opened".into()));
    };
    let chain: Vec<BackingImage> = files
        .backing_chains
        .values()
        .next()
        .map(|c| {
            c.iter()
                .zip(below)
                .map(|(b, p)| BackingImage {
                    format: b.format,
                    path: p.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut devices = live.devices();
    let node = devices.free_node();
    let [storage, format] = hotplug::blockdev_args(disk, &node, top, &chain);
    for (args, node_name) in [
        (storage, hotplug::storage_node(&node)),
        (format, node.clone()),
    ] {
        if let Err(e) = qmp.execute_raw("blockdev-add", Some(&args)).await {
            undo.run(live, name).await;
            return Err(err("blockdev-add", e));
        }
        undo.nodes.push(node_name);
    }
    let port = super::root_port_of(disk).unwrap_or(0);
    let dev = hotplug::virtio_device_args(disk, &node, port);
    if let Err(e) = qmp.execute_raw("device_add", Some(&dev)).await {
        undo.run(live, name).await;
        return Err(err("device_add", e));
    }
    let qdev = hotplug::qdev_id(disk);
    // Its `<iotune>` before it is reported attached (validated as QEMU checks it; should QEMU
    // still refuse, the device goes again, as when it cannot be recorded).
    if let Err(e) = super::apply_iotune(qmp, name, std::slice::from_ref(disk)).await {
        let _ = qmp
            .execute_raw("device_del", Some(&json!({"id": qdev})))
            .await;
        return Err(e);
    }
    // QEMU holds its own duplicate of the top file now: the set's descriptor goes (QEMU keeps
    // the set while it uses the file), so attached disks do not pile up descriptors. A
    // read-only file's set stays: a commit into a backing image reopens it read-write
    // through its set (see snapshots::live::ensure_writable) and read-only again after.
    if !disk.readonly {
        if let Some(top) = sets.first() {
            super::super::snapshots::live::release_set(qmp, *top).await;
        }
    }
    devices.disks.push(LiveDisk {
        disk: disk.clone(),
        node: Some(node.clone()),
        qdev: qdev.clone(),
        fd_sets: sets,
        detaching: false,
        volume: crate::persist::live_devices::VolumeOrigin::of(named, disk),
    });
    if let Err(e) = inner.save_live(name, live, devices).await {
        // Not recorded, so not kept: a restarted daemon must not find a disk it never knew.
        let _ = qmp
            .execute_raw("device_del", Some(&json!({"id": qdev})))
            .await;
        return Err(e);
    }
    Ok(entry(disk, Some(node), Some(qdev), "attached"))
}

/// What a failed attach takes back, newest first.
struct Undo {
    sets: Vec<u64>,
    nodes: Vec<String>,
}

impl Undo {
    async fn run(&self, live: &Live, name: &str) {
        let Ok(qmp) = live.qmp(name) else { return };
        for n in self.nodes.iter().rev() {
            let args: Value = json!({ "node-name": n });
            if let Err(e) = qmp.execute_raw("blockdev-del", Some(&args)).await {
                tracing::warn!(domain = name, node = %n, error = %e, "attach-disk undo");
            }
        }
        for s in &self.sets {
            let args: Value = json!({ "fdset-id": s });
            if let Err(e) = qmp.execute_raw("remove-fd", Some(&args)).await {
                tracing::warn!(domain = name, set = s, error = %e, "attach-disk undo");
            }
        }
    }
}
