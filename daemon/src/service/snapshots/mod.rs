//! Disk snapshots: external qcow2 overlays over every writable disk, taken in one QMP
//! `transaction` on a running guest (crash-consistent; application-consistent with the
//! guest agent's freeze, see `quiesce`), with `qemu-img` on a stopped one. Deleting merges a
//! snapshot's file with the one above it (`block-commit` live, `qemu-img commit` offline) and
//! drops the nodes; reverting a stopped guest points its disks at a fresh overlay over the
//! snapshot. Our metadata (`meta`) keeps the tree and a reference count for every file; the
//! journal makes a deletion finish after a daemon crash, and a creation finish or roll back
//! (`recover`).

mod create;
mod delete;
pub mod live;
mod memory;
pub mod meta;
pub mod quiesce;
mod recover;
pub mod schedule;
mod unfinished;

use std::sync::Arc;

use novacron_domain::model::{DiskDevice, DiskFormat, DiskSource, DomainConfig};
use novacron_domain::snapshot::{
    DiskSnapshotMode, DomainSnapshot, SnapshotDisk, SnapshotMemory, SnapshotState,
};
use novacron_domain::{DomainState, Error, FieldError, Kind};
use serde::{Deserialize, Serialize};

use super::domain::{Definition, DomainHandle, Live};
use super::Service;
use meta::{LiveNodes, SnapKind, Tree};

pub use quiesce::Quiesce;
pub(crate) use recover::spawn_recovery;

/// A create request (`virsh snapshot-create-as NAME SNAP --disk-only [--quiesce]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub quiesce: Quiesce,
    /// A full snapshot: the guest's RAM too (`virsh snapshot-create-as --memspec
    /// snapshot=external [--live]`). Absent: disk-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryMode>,
}

/// How a full snapshot saves the RAM of a running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryMode {
    /// Paused while QEMU writes the RAM out (`migrate` to a file), then resumed.
    Paused,
    /// Paused only while the devices are saved; RAM is written while the guest runs
    /// (QEMU's `background-snapshot`: needs userfaultfd write-protection on the host).
    Live,
}

/// A delete request: `speed` limits the merge job (bytes/s; live only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[serde(default)]
    pub speed: Option<u64>,
}

/// One snapshot as the faces show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub description: Option<String>,
    pub parent: Option<String>,
    pub children: Vec<String>,
    pub current: bool,
    pub created: u64,
    pub kind: SnapKind,
    pub state: SnapshotState,
    pub quiesced: bool,
    /// Disk target -> the file holding it as it was.
    pub disks: std::collections::BTreeMap<String, String>,
    /// A full snapshot's RAM state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_file: Option<String>,
    /// A live full snapshot: how long the guest was paused (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// The list: every snapshot, and the tree as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotList {
    pub current: Option<String>,
    pub snapshots: Vec<SnapshotInfo>,
    pub tree: String,
}

fn info(tree: &Tree, s: &meta::Snap) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        description: s.description.clone(),
        parent: s.parent.clone(),
        children: s.children.clone(),
        current: tree.current.as_deref() == Some(s.name.as_str()),
        created: s.created,
        kind: s.kind,
        state: s.state,
        quiesced: s.quiesced,
        disks: s
            .disks
            .iter()
            .map(|(t, d)| (t.clone(), d.file.clone()))
            .collect(),
        memory_file: s.memory_file.clone(),
        downtime_ms: s.downtime_ms,
    }
}

/// A definition disk to point at another file ([`Service::repoint_definition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repoint {
    pub target: String,
    /// The file the disk must name now to be repointed; `None`: whatever it names (a revert
    /// makes the disk the snapshot's).
    pub from: Option<String>,
    pub to: String,
    pub format: DiskFormat,
    /// A volume disk whose pool cannot be read now (undefined while the guest runs) cannot
    /// be compared with `from`: moved anyway, by its target. Only a snapshot's creation asks
    /// for this: left on the frozen file, the next start would write to it.
    pub unresolved_by_target: bool,
}

/// A disk a snapshot covers.
#[derive(Debug, Clone)]
pub(crate) struct DiskSel {
    pub index: usize,
    pub target: String,
    pub path: String,
    /// The format the definition declares: the only one the file is ever read as.
    pub format: DiskFormat,
}

/// The disks of `config` a snapshot covers: writable file disks. Read-only media and CD-ROMs
/// are left out (libvirt's `snapshot='no'`); block devices and network disks are refused.
pub(crate) fn select_disks(config: &DomainConfig) -> Result<Vec<DiskSel>, Error> {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (i, d) in config.devices.disks.iter().enumerate() {
        if d.device == DiskDevice::Cdrom || d.readonly || d.shareable {
            continue;
        }
        match &d.source {
            Some(DiskSource::File { path }) => out.push(DiskSel {
                index: i,
                target: d.target.dev.clone(),
                path: path.clone(),
                format: d.driver.format,
            }),
            None => {}
            Some(_) => refused.push(FieldError::new(
                format!("devices.disks[{i}].source"),
                "only file disks can have external snapshots (block devices and network \
                 disks cannot)",
            )),
        }
    }
    if !refused.is_empty() {
        return Err(Error::Invalid {
            message: refused
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            details: refused,
        });
    }
    if out.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "domain '{}' has no writable file disk to snapshot",
            config.name
        )));
    }
    Ok(out)
}

fn invalid(field: &str, message: String) -> Error {
    Error::Invalid {
        message: format!("{field}: {message}"),
        details: vec![FieldError::new(field, message)],
    }
}

pub fn check_name(name: &str) -> Result<(), Error> {
    match novacron_domain::snapshot::name_problem(name) {
        Some(why) => Err(invalid("name", format!("snapshot name {why}"))),
        None => Ok(()),
    }
}

fn io_err(action: &'static str, path: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Io {
        action,
        path: path.to_string(),
        message: e.to_string(),
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Blocking: makes sure `path` (of the `declared` format) and its backing chain are in
/// `tree.files`. Formats are never probed: the top is read as declared, each backing file as
/// its child's header records (a guest can write a qcow2 header into a raw disk, naming any
/// file as its backing).
pub(crate) fn ensure_chain(tree: &mut Tree, path: &str, declared: DiskFormat) -> Result<(), Error> {
    let mut at = path.to_owned();
    let mut format = declared;
    for _ in 0..crate::host::storage_roots::MAX_CHAIN {
        if tree.files.contains_key(&at) {
            return Ok(());
        }
        let (backing, backing_format) = match format {
            DiskFormat::Raw => (None, None),
            DiskFormat::Qcow2 => {
                let i = crate::host::qemu_img::info_as(&at, format)
                    .map_err(|e| io_err("read image", &at, e))?;
                (i.backing, i.backing_format)
            }
        };
        tree.files.insert(
            at.clone(),
            meta::FileRec {
                format,
                backing: backing.clone(),
                owned: false,
                refs: 0,
            },
        );
        let Some(b) = backing else {
            return Ok(());
        };
        format = match backing_format.as_deref() {
            Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "{at}: its backing file {b} has {} (raw or qcow2 recorded in the image \
                     are the only ones read)",
                    other.map_or("no recorded format".to_owned(), |f| format!("format {f}"))
                )))
            }
        };
        at = b;
    }
    Err(Error::InvalidConfig(format!(
        "{path}: backing chain too deep"
    )))
}

impl Service {
    fn state_dir(&self) -> std::path::PathBuf {
        self.inner.config.state_dir.clone()
    }

    pub(crate) async fn load_tree(&self, domain: &str) -> Result<Tree, Error> {
        let (dir, d) = (self.state_dir(), domain.to_owned());
        tokio::task::spawn_blocking(move || meta::load(&dir, &d))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| io_err("read", meta::path(&self.state_dir(), domain).display(), e))
    }

    pub(crate) async fn save_tree(&self, domain: &str, tree: &Tree) -> Result<(), Error> {
        let (dir, d, t) = (self.state_dir(), domain.to_owned(), tree.clone());
        tokio::task::spawn_blocking(move || meta::save(&dir, &d, &t))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| io_err("write", meta::path(&self.state_dir(), domain).display(), e))
    }

    /// Points the definition's disks at new files; persisted first if persistent. A disk is
    /// repointed only while it names the file the change moves away from (a volume disk: the
    /// file in its pool): a definition disk under the same target naming another file (a
    /// `--config` disk beside a live-only hot-plugged one) is left alone, as libvirt updates
    /// the definition only where the source matches.
    pub(crate) async fn repoint_definition(
        &self,
        h: &DomainHandle,
        changes: &[Repoint],
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let def = h.definition();
        let mut config = def.config.config().clone();
        // The files its disks name, resolved as the usage check resolves them (a pool's
        // definition is read: off the workers).
        let (c, pools) = (config.clone(), self.pools());
        let files = tokio::task::spawn_blocking(move || {
            crate::service::storage::usage::file_disks(&c, &pools)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let mut changed = false;
        for c in changes {
            let Some(d) = config
                .devices
                .disks
                .iter_mut()
                .find(|d| d.target.dev == c.target)
            else {
                continue;
            };
            let names_from = |from: &String| files.iter().any(|(t, f)| *t == c.target && f == from);
            let unresolved = c.unresolved_by_target
                && matches!(d.source, Some(DiskSource::Volume { .. }))
                && !files.iter().any(|(t, _)| *t == c.target);
            if !unresolved && !c.from.as_ref().is_none_or(names_from) {
                tracing::info!(
                    domain = h.name,
                    disk = c.target,
                    file = c.to,
                    "the definition's disk names another file than the one snapshotted: left"
                );
                continue;
            }
            d.source = Some(DiskSource::File { path: c.to.clone() });
            d.driver.format = c.format;
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        let validated = config.validate().map_err(Error::from)?;
        if def.persistent {
            self.inner
                .definitions
                .save(validated.config(), def.trust)
                .await
                .map_err(|e| io_err("write the definition of", &h.name, e))?;
        }
        h.set_definition(Definition {
            config: Arc::new(validated),
            ..def
        });
        Ok(())
    }

    /// Unlinks files the tree let go of (after the tree is on disk).
    pub(crate) async fn unlink_files(&self, files: Vec<String>) {
        if files.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                match std::fs::remove_file(&f) {
                    Ok(()) => tracing::info!(file = f, "unreferenced snapshot overlay removed"),
                    Err(e) => tracing::warn!(file = f, error = %e, "cannot remove overlay"),
                }
            }
        })
        .await;
    }

    pub async fn snapshot_list(&self, domain: &str) -> Result<SnapshotList, Error> {
        self.inner.handle(domain)?;
        let tree = self.load_tree(domain).await?;
        let mut snapshots: Vec<SnapshotInfo> =
            tree.snapshots.values().map(|s| info(&tree, s)).collect();
        snapshots.sort_by_key(|s| (s.created, s.name.clone()));
        Ok(SnapshotList {
            current: tree.current.clone(),
            tree: tree.render(),
            snapshots,
        })
    }

    pub async fn snapshot_get(&self, domain: &str, name: &str) -> Result<SnapshotInfo, Error> {
        self.inner.handle(domain)?;
        let tree = self.load_tree(domain).await?;
        let s = tree
            .snapshots
            .get(name)
            .ok_or_else(|| Error::not_found(Kind::Snapshot, name))?;
        Ok(info(&tree, s))
    }

    /// libvirt's `<domainsnapshot>` of one snapshot.
    pub async fn snapshot_xml(&self, domain: &str, name: &str) -> Result<DomainSnapshot, Error> {
        self.inner.handle(domain)?;
        let tree = self.load_tree(domain).await?;
        let s = tree
            .snapshots
            .get(name)
            .ok_or_else(|| Error::not_found(Kind::Snapshot, name))?;
        Ok(DomainSnapshot {
            name: s.name.clone(),
            description: s.description.clone(),
            state: Some(s.state),
            creation_time: Some(s.created),
            parent: s.parent.clone(),
            memory: match &s.memory_file {
                Some(f) => SnapshotMemory::External { file: f.clone() },
                None => SnapshotMemory::No,
            },
            disks: s
                .disks
                .iter()
                .map(|(t, d)| SnapshotDisk {
                    name: t.clone(),
                    snapshot: DiskSnapshotMode::External,
                    source: s.overlays.get(t).cloned(),
                    driver: Some(if s.overlays.contains_key(t) {
                        DiskFormat::Qcow2
                    } else {
                        d.format
                    }),
                })
                .collect(),
        })
    }
}

/// The node map of the running QEMU `live`: the tree's when recorded for this process, with
/// each disk's active file on the node its live device set names (hot-plugged disks
/// included); fills `tree.active` for disks the tree does not know yet.
pub(crate) fn live_nodes(tree: &mut Tree, live: &Live) -> Result<LiveNodes, Error> {
    let sel = select_disks(&live.config())?;
    let devices = live.devices();
    let mut nodes = match &tree.live {
        Some(l) if l.pid == live.pid && l.start_time == live.record.start_time => l.clone(),
        _ => {
            // Another QEMU: its disks run on what it was started (or hot-plugged) with.
            for d in &sel {
                tree.active.insert(d.target.clone(), d.path.clone());
            }
            LiveNodes {
                pid: live.pid,
                start_time: live.record.start_time,
                nodes: Default::default(),
            }
        }
    };
    for d in sel {
        // In the same QEMU the tree's active layer is the file the disk runs on, unless the
        // disk was detached and another attached under its target since: then the recorded
        // node belongs to the new disk, and an overlay planned over the old file would claim
        // the new disk's data. Refused, changing nothing (the old disk's files stay
        // referenced; a restart of the guest starts a new tree view).
        if let Some(active) = tree.active.get(&d.target).filter(|a| **a != d.path) {
            return Err(Error::Busy {
                name: live.record.name.clone(),
                detail: format!(
                    "disk '{}' now runs on '{}', but the snapshot tree's active layer for it is \
                     '{active}' (the disk was replaced since): restart the guest to snapshot it",
                    d.target, d.path
                ),
            });
        }
        let node = devices
            .find(&d.target)
            .and_then(|x| x.node.clone())
            .unwrap_or_else(|| format!("disk{}", d.index));
        nodes.nodes.insert(d.path.clone(), node);
        tree.active.entry(d.target).or_insert(d.path);
    }
    tree.live = Some(nodes.clone());
    Ok(nodes)
}

pub(crate) enum Where {
    Running(Arc<Live>),
    Stopped,
}

pub(crate) fn placement(h: &DomainHandle, operation: &'static str) -> Result<Where, Error> {
    match h.state() {
        DomainState::Running | DomainState::Paused => match h.run().live() {
            Some(l) => {
                // Snapshots, commits and streams change which node a disk's device reads and
                // may grow a base: sizes known from earlier resizes no longer hold.
                l.forget_disk_sizes();
                Ok(Where::Running(l.clone()))
            }
            None => Err(Error::WrongState {
                name: h.name.clone(),
                state: h.state(),
                operation,
            }),
        },
        DomainState::Shutoff | DomainState::Crashed => Ok(Where::Stopped),
        state => Err(Error::WrongState {
            name: h.name.clone(),
            state,
            operation,
        }),
    }
}
