//! `detach-disk`: `device_del`, then the wait for the guest to release the device
//! (DEVICE_DELETED) as the domain's long-running job with a deadline, and only then
//! `blockdev-del` (format, then storage node) and `remove-fd`. A guest that never answers
//! (no OS, or one that refuses) gets a typed timeout: the disk stays in the live set marked
//! `detaching`, the domain stays usable, and a later detach finishes the job once QEMU has
//! let go of the device.

use std::sync::Arc;
use std::time::Duration;

use novacron_domain::model::DiskBus;
use novacron_domain::{Error, FieldError};
use novacron_qmp::EventKind;
use serde_json::{json, Value};

use super::super::domain::{DomainHandle, Live};
use super::super::jobs::{AsyncJob, Job};
use super::super::Inner;
use super::{entry, resolve, unknown_target, DiskEntry, DiskScope};
use crate::service::Service;

/// How long a detach waits for the guest by default (libvirt waits 5 s, then reports the
/// unplug as still in progress).
pub const DEFAULT_DETACH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a request may ask for.
pub const MAX_DETACH_TIMEOUT: Duration = Duration::from_secs(600);

impl Service {
    pub async fn detach_disk(
        &self,
        name: &str,
        target: &str,
        scope: DiskScope,
        timeout: Option<Duration>,
    ) -> Result<DiskEntry, Error> {
        let timeout = timeout.unwrap_or(DEFAULT_DETACH_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_DETACH_TIMEOUT {
            return Err(Error::Invalid {
                message: format!("timeout: 1 to {} seconds", MAX_DETACH_TIMEOUT.as_secs()),
                details: vec![FieldError::new("timeout", "out of range")],
            });
        }
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope)?;
        // An unfinished snapshot operation reads this disk's nodes from the block graph to
        // finish or roll back: detaching it first would take away what it decides by.
        if live.is_some() {
            self.refuse_while_snapshot_unfinished(name).await?;
        }
        let defined = h.definition().config.config().clone();
        let in_definition = defined
            .devices
            .disks
            .iter()
            .position(|d| d.target.dev == target);
        let mut shown = None;
        if config {
            let i = in_definition.ok_or_else(|| unknown_target(name, target))?;
            shown = Some(entry(&defined.devices.disks[i], None, None, "defined"));
        }
        let Some(live) = live else {
            let mut c = defined;
            c.devices.disks.retain(|d| d.target.dev != target);
            inner.save_definition(&h, c).await?;
            return shown.ok_or_else(|| unknown_target(name, target));
        };
        let devices = live.devices();
        let Some(d) = devices.find(target).cloned() else {
            return Err(unknown_target(name, target));
        };
        if d.disk.target.bus != DiskBus::Virtio {
            return Err(Error::Invalid {
                message: format!(
                    "disk '{target}' is on bus '{}', which cannot be hot-unplugged (only virtio \
                     disks can)",
                    d.disk.target.bus.as_str()
                ),
                details: vec![FieldError::new("target", "not hot-unpluggable")],
            });
        }
        // The definition changes at once (--config); the guest's release may take a while.
        if config {
            let mut c = defined;
            c.devices.disks.retain(|x| x.target.dev != target);
            inner.save_definition(&h, c).await?;
        }
        let _unplug = h.jobs.begin_async(name, AsyncJob::Unplug)?;
        let qmp = live.qmp(name)?.clone();
        let mut events = qmp.subscribe();
        let gone = match qmp
            .execute_raw("device_del", Some(&json!({ "id": d.qdev })))
            .await
        {
            Ok(_) => false,
            // Released after an earlier detach gave up waiting: only the nodes are left.
            Err(novacron_qmp::Error::Qmp { error, .. })
                if d.detaching && error.class.as_str() == "DeviceNotFound" =>
            {
                true
            }
            // Still pending from an earlier detach: wait for it again.
            Err(novacron_qmp::Error::Qmp { .. }) if d.detaching => false,
            Err(e) => {
                return Err(super::super::lifecycle::qmp_error(
                    name,
                    "detach-disk (device_del)",
                    e,
                ))
            }
        };
        if !d.detaching {
            let mut devices = devices.clone();
            if let Some(x) = devices.find_mut(target) {
                x.detaching = true;
            }
            inner.save_live(name, &live, devices).await?;
        }
        // The wait holds only the long-running slot: queries and other jobs go on meanwhile.
        drop(job);
        if !gone {
            let qdev = d.qdev.clone();
            let waited = events
                .wait_for(timeout, |e| {
                    matches!(&e.kind, EventKind::DeviceDeleted { device: Some(x), .. } if *x == qdev)
                })
                .await;
            match waited {
                Ok(_) => {}
                Err(novacron_qmp::Error::EventTimeout(_)) => {
                    return Err(Error::Timeout {
                        operation: "detach-disk: the guest did not release the device (no \
                                    DEVICE_DELETED); it stays attached, marked detaching, and \
                                    the definition is unchanged unless --config was given",
                        after: timeout,
                    })
                }
                Err(e) => {
                    return Err(super::super::lifecycle::qmp_error(
                        name,
                        "detach-disk (waiting for DEVICE_DELETED)",
                        e,
                    ))
                }
            }
        }
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        release_nodes(inner, &h, &live, target).await?;
        Ok(entry(
            &d.disk,
            d.node.clone(),
            Some(d.qdev.clone()),
            "detached",
        ))
    }
}

/// After the device is gone: `blockdev-del` of the format then the storage node, the fd sets
/// that held its files, and the disk out of the live set (recorded).
async fn release_nodes(
    inner: &Arc<Inner>,
    h: &DomainHandle,
    live: &Arc<Live>,
    target: &str,
) -> Result<(), Error> {
    let name = h.name.as_str();
    let qmp = live.qmp(name)?;
    let mut devices = live.devices();
    let Some(d) = devices.find(target).cloned() else {
        return Ok(());
    };
    let mut sets = d.fd_sets.clone();
    if let Some(node) = &d.node {
        // A disk from the command line: its fd sets are the ones its nodes' files name.
        if sets.is_empty() {
            sets = fd_sets_of(qmp, node).await;
        }
        // Removed first: a set QEMU still uses stays until the node goes (blockdev-del
        // below), then QEMU frees it; one already released early is no error this way.
        release_sets(qmp, name, &sets).await;
        sets.clear();
        // A live snapshot put an overlay on top: the layers it froze are named nodes of their
        // own below it, which outlive the top's deletion unless deleted too (top first).
        let chain = match super::super::snapshots::live::graph(qmp).await {
            Ok(g) => g.chain(node),
            Err(_) => Vec::new(),
        };
        let below: Vec<&String> = chain
            .iter()
            .skip(1)
            .filter(|n| !n.starts_with('#'))
            .collect();
        for n in [
            node.clone(),
            novacron_domain::qemu::hotplug::storage_node(node),
        ] {
            if let Err(e) = qmp
                .execute_raw("blockdev-del", Some(&json!({ "node-name": n })))
                .await
            {
                return Err(super::super::lifecycle::qmp_error(
                    name,
                    "detach-disk (blockdev-del)",
                    e,
                ));
            }
        }
        for n in below {
            super::super::snapshots::live::del_nodes(qmp, n).await;
        }
    }
    release_sets(qmp, name, &sets).await;
    devices.disks.retain(|x| x.disk.target.dev != target);
    inner.save_live(name, live, devices).await
}

async fn release_sets(qmp: &novacron_qmp::Client, name: &str, sets: &[u64]) {
    for s in sets {
        if let Err(e) = qmp
            .execute_raw("remove-fd", Some(&json!({ "fdset-id": s })))
            .await
        {
            tracing::warn!(domain = name, set = s, error = %e, "detach-disk: remove-fd");
        }
    }
}

/// The `/dev/fdset/N` numbers the files of format node `node` (and its chain) are opened as.
pub(super) async fn fd_sets_of(qmp: &novacron_qmp::Client, node: &str) -> Vec<u64> {
    let Ok(nodes) = qmp.execute_raw("query-named-block-nodes", None).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<u64>) {
        match v {
            Value::String(s) => {
                if let Some(n) = s.strip_prefix("/dev/fdset/").and_then(|n| n.parse().ok()) {
                    out.push(n);
                }
            }
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let storage = novacron_domain::qemu::hotplug::storage_node(node);
    for n in nodes.as_array().into_iter().flatten() {
        let name = n.get("node-name").and_then(Value::as_str);
        if name == Some(node) || name == Some(storage.as_str()) {
            walk(n.get("image").unwrap_or(&Value::Null), &mut out);
            walk(n.get("file").unwrap_or(&Value::Null), &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
