//! Taking a snapshot: overlays made by the daemon, then one transaction (running) or the
//! definition repointed (stopped).

use std::os::unix::fs::OpenOptionsExt;

use novacron_domain::model::DiskFormat;
use novacron_domain::snapshot::SnapshotState;
use novacron_domain::Error;

use super::meta::{FileRec, Snap, SnapDisk, SnapKind, Tree};
use super::quiesce::{self, Quiesce};
use super::{
    check_name, ensure_chain, invalid, io_err, live, live_nodes, now, placement, select_disks,
    CreateRequest, SnapshotInfo, Where,
};
use crate::service::jobs::{AsyncJob, Job};
use crate::service::Service;

const MAX_DESCRIPTION: usize = 4096;

/// One disk's part of a snapshot being taken.
pub(super) struct Plan {
    target: String,
    /// The active file now: frozen by this snapshot.
    file: String,
    format: DiskFormat,
    overlay: String,
    node: String,
}

/// A new snapshot freezing each planned disk's file (not yet in a tree).
pub(super) fn new_snap(
    req: &CreateRequest,
    plans: &[Plan],
    kind: SnapKind,
    state: SnapshotState,
) -> Snap {
    Snap {
        name: req.name.clone(),
        description: req.description.clone(),
        parent: None,
        children: Vec::new(),
        created: now(),
        kind,
        state,
        quiesced: false,
        disks: plans
            .iter()
            .map(|p| {
                (
                    p.target.clone(),
                    SnapDisk {
                        file: p.file.clone(),
                        format: p.format,
                    },
                )
            })
            .collect(),
        overlays: plans
            .iter()
            .map(|p| (p.target.clone(), p.overlay.clone()))
            .collect(),
        memory_file: None,
        domain_xml: None,
        live_vcpus: None,
        downtime_ms: None,
    }
}

/// Puts `snap` into the tree under the current snapshot and makes it current.
pub(super) fn insert_snap(tree: &mut Tree, mut snap: Snap) {
    let name = snap.name.clone();
    snap.parent = tree.current.clone();
    if let Some(p) = snap.parent.as_ref().and_then(|p| tree.snapshots.get_mut(p)) {
        p.children.push(name.clone());
    }
    tree.snapshots.insert(name.clone(), snap);
    tree.current = Some(name);
}

/// Records the overlays as the disks' active files (owned, backed by the frozen files) and,
/// `running`, their live node names; returns the definition's changes.
pub(super) fn adopt_overlays(
    tree: &mut Tree,
    plans: &[Plan],
    running: bool,
) -> Vec<(String, String, DiskFormat)> {
    for p in plans {
        tree.files.insert(
            p.overlay.clone(),
            FileRec {
                format: DiskFormat::Qcow2,
                backing: Some(p.file.clone()),
                owned: true,
                refs: 0,
            },
        );
        tree.active.insert(p.target.clone(), p.overlay.clone());
        if let (Some(l), true) = (&mut tree.live, running) {
            l.nodes.insert(p.overlay.clone(), p.node.clone());
        }
    }
    tree.recount();
    plans
        .iter()
        .map(|p| (p.target.clone(), p.overlay.clone(), DiskFormat::Qcow2))
        .collect()
}

/// Overlays made and opened, not yet the disks' active layers.
pub(super) struct Prepared {
    pub plans: Vec<Plan>,
    fds: Vec<std::os::fd::OwnedFd>,
    nodes: Option<super::meta::LiveNodes>,
}

/// Removes overlay files a failed snapshot made.
pub(super) async fn remove_overlays(plans: &[Plan]) {
    let files: Vec<String> = plans.iter().map(|p| p.overlay.clone()).collect();
    let _ = tokio::task::spawn_blocking(move || {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    })
    .await;
}

fn overlay_path(file: &str, domain: &str, target: &str, snap: &str) -> String {
    let dir = std::path::Path::new(file)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    format!("{dir}/{domain}.{target}.{snap}.qcow2")
}

impl Service {
    pub async fn snapshot_create(
        &self,
        domain: &str,
        req: CreateRequest,
    ) -> Result<SnapshotInfo, Error> {
        check_name(&req.name)?;
        if let Some(d) = &req.description {
            if d.len() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n') {
                return Err(invalid(
                    "description",
                    format!("at most {MAX_DESCRIPTION} bytes, no control characters"),
                ));
            }
        }
        let h = self.inner.handle(domain)?;
        // The synchronous slot first (the long one does not admit `Modify` beside it).
        let _job = h.begin(Job::Modify, self.inner.job_wait()).await?;
        let _long = h.jobs.begin_async(domain, AsyncJob::Snapshot)?;
        let mut tree = self.load_tree(domain).await?;
        if tree.snapshots.contains_key(&req.name) {
            return Err(invalid(
                "name",
                format!("snapshot '{}' already exists", req.name),
            ));
        }
        if tree.journal.is_some() {
            return Err(Error::Busy {
                name: domain.to_owned(),
                detail: "an interrupted snapshot deletion is being finished".into(),
            });
        }
        let place = placement(&h, "snapshot")?;
        if let Some(mode) = req.memory {
            // libvirt too: quiescing is for disk-only snapshots (the RAM holds what the
            // filesystems have not written yet, and it is saved).
            if req.quiesce != Quiesce::Off {
                return Err(invalid(
                    "quiesce",
                    "a snapshot with memory saves the guest's RAM, so it is consistent without \
                     freezing the filesystems: quiesce is for disk-only snapshots"
                        .into(),
                ));
            }
            let Where::Running(live) = place else {
                return Err(Error::WrongState {
                    name: domain.to_owned(),
                    state: h.state(),
                    operation: "take a snapshot with memory of (it is not running)",
                });
            };
            return self.take_with_memory(&h, &live, tree, &req, mode).await;
        }
        // Freeze (when asked) and always thaw afterwards, within deadlines.
        let mut quiesced = false;
        let froze = match req.quiesce {
            Quiesce::Off => false,
            mode => match quiesce::freeze_within(self, domain).await {
                Ok(_) => {
                    quiesced = true;
                    true
                }
                Err(e) => {
                    // A freeze that timed out may still have frozen the guest: thaw regardless.
                    if matches!(e, quiesce::QuiesceError::Timeout { .. }) {
                        quiesce::thaw_within(self, domain).await;
                    }
                    if mode == Quiesce::Required {
                        return Err(invalid("quiesce", format!("required, but {e}")));
                    }
                    tracing::info!(domain, error = %e, "snapshot not quiesced (best-effort)");
                    false
                }
            },
        };
        let taken = self.take(&h, &place, &mut tree, &req).await;
        if froze {
            quiesce::thaw_within(self, domain).await;
        }
        let plans = taken?;
        let snap = new_snap(
            &req,
            &plans,
            SnapKind::DiskOnly,
            SnapshotState::DiskSnapshot,
        );
        let snap = Snap { quiesced, ..snap };
        insert_snap(&mut tree, snap);
        let changes = adopt_overlays(&mut tree, &plans, matches!(place, Where::Running(_)));
        // Both made durable (fsync'd) at once: their fsyncs share a journal commit instead of
        // waiting one after the other. A crash between the two leaves either the tree without
        // the definition (as the sequential order could) or the definition on the overlay
        // without the snapshot in the tree: the guest starts on the overlay (nothing lost),
        // the tree records it as a file it did not make (never unlinked), and the call was
        // never answered.
        let (saved, repointed) = tokio::join!(
            self.save_tree(domain, &tree),
            self.repoint_definition(&h, &changes)
        );
        saved?;
        repointed?;
        let s = &tree.snapshots[&req.name];
        Ok(super::info(&tree, s))
    }

    /// Makes the overlays and switches the disks to them; on failure undoes what it did.
    pub(super) async fn take(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        tree: &mut Tree,
        req: &CreateRequest,
    ) -> Result<Vec<Plan>, Error> {
        let prepared = self.prepare_overlays(h, place, tree, req).await?;
        self.switch_overlays(h, place, prepared).await
    }

    /// The overlay files made and opened (the guest untouched); removed again on failure.
    pub(super) async fn prepare_overlays(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        tree: &mut Tree,
        req: &CreateRequest,
    ) -> Result<Prepared, Error> {
        let domain = h.name.clone();
        // The disks and their active files now.
        let (sel, nodes) = match place {
            Where::Running(l) => {
                let nodes = live_nodes(tree, l)?;
                let sel = select_disks(&l.record.config)?;
                (sel, Some(nodes))
            }
            Where::Stopped => {
                // A volume disk's file is what gets the overlay (the definition then names
                // the overlay file, as libvirt's external snapshot of a volume disk does).
                let def = h.definition();
                let volumes = self
                    .inner
                    .volume_disks(
                        def.config.config(),
                        crate::service::storage::disk_volumes::Formats::Start,
                    )
                    .await?;
                let sel = select_disks(volumes.as_ref().unwrap_or(def.config.config()))?;
                for d in &sel {
                    tree.active.insert(d.target.clone(), d.path.clone());
                }
                (sel, None)
            }
        };
        let mut plans = Vec::new();
        for d in &sel {
            let file = tree
                .active
                .get(&d.target)
                .cloned()
                .unwrap_or(d.path.clone());
            tree.next += 1;
            plans.push(Plan {
                target: d.target.clone(),
                overlay: overlay_path(&file, &domain, &d.target, &req.name),
                node: format!("nc{}", tree.next),
                format: DiskFormat::Raw,
                file,
            });
        }
        // Image facts and overlay files (blocking).
        let mut t = std::mem::take(tree);
        let work: Vec<(String, String, DiskFormat)> = plans
            .iter()
            .zip(&sel)
            .map(|(p, d)| (p.file.clone(), p.overlay.clone(), d.format))
            .collect();
        let (t, made) = tokio::task::spawn_blocking(move || {
            let mut made: Vec<Result<(DiskFormat, std::fs::File), Error>> = Vec::new();
            for (file, overlay, declared) in &work {
                let r = (|| {
                    // `qemu-img info` only for files the tree does not know yet (the first
                    // snapshot of a disk); a known file's format is the recorded one and its
                    // size comes from its header.
                    ensure_chain(&mut t, file, *declared)?;
                    let format = t.files.get(file).map_or(DiskFormat::Raw, |r| r.format);
                    let size = crate::host::qemu_img::virtual_size(file, format)
                        .map_err(|e| io_err("read image", file, e))?;
                    crate::host::qemu_img::create_overlay(overlay, file, format, size)
                        .map_err(|e| io_err("create overlay", overlay, e))?;
                    let fd = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                        .open(overlay)
                        .map_err(|e| io_err("open overlay", overlay, e))?;
                    Ok((format, fd))
                })();
                let failed = r.is_err();
                made.push(r);
                if failed {
                    break;
                }
            }
            (t, made)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        *tree = t;
        let mut fds = Vec::new();
        let mut failure = None;
        for (p, m) in plans.iter_mut().zip(made) {
            match m {
                Ok((format, fd)) => {
                    p.format = format;
                    fds.push(std::os::fd::OwnedFd::from(fd));
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            remove_overlays(&plans[..fds.len()]).await;
            return Err(e);
        }
        Ok(Prepared { plans, fds, nodes })
    }

    /// Switches a running guest's disks to the prepared overlays in one transaction; on
    /// failure the nodes and files go again.
    pub(super) async fn switch_overlays(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        prepared: Prepared,
    ) -> Result<Vec<Plan>, Error> {
        let domain = h.name.clone();
        let Prepared { plans, fds, nodes } = prepared;
        let (Where::Running(l), Some(nodes)) = (place, nodes) else {
            return Ok(plans);
        };
        let q = l.qmp(&domain)?;
        let qemu_err = |message: String| Error::Qemu {
            name: domain.clone(),
            operation: "snapshot".into(),
            message,
        };
        let mut added = 0;
        let mut r = Ok(());
        for (p, fd) in plans.iter().zip(&fds) {
            if let Err(e) = live::add_overlay(q, fd, &p.node).await {
                r = Err(e);
                break;
            }
            added += 1;
        }
        if r.is_ok() {
            let mut pairs = Vec::new();
            for p in &plans {
                match nodes.nodes.get(&p.file) {
                    Some(n) => pairs.push((n.clone(), p.node.clone())),
                    None => {
                        r = Err(format!("no node known for {} (disk {})", p.file, p.target));
                        break;
                    }
                }
            }
            if r.is_ok() {
                r = live::snapshot_transaction(q, &pairs).await;
            }
        }
        if let Err(e) = r {
            for p in &plans[..added] {
                live::del_nodes(q, &p.node).await;
            }
            remove_overlays(&plans).await;
            return Err(qemu_err(e));
        }
        Ok(plans)
    }
}
