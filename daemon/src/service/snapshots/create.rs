//! Taking a snapshot: overlays made by the daemon, then one transaction (running) or the
//! definition repointed (stopped). The overlays are in the tree's journal before the first
//! file exists; a crash anywhere after that is settled from it (`recover`).

use novacron_domain::model::DiskFormat;
use novacron_domain::snapshot::SnapshotState;
use novacron_domain::Error;

use super::meta::{
    FileRec, Journal, JournalOp, OverlayStep, QemuId, Snap, SnapDisk, SnapKind, Tree,
};
use super::quiesce::{self, Quiesce};
use super::{
    check_name, ensure_chain, invalid, io_err, live, live_nodes, now, placement, select_disks,
    CreateRequest, Repoint, SnapshotInfo, Where,
};
use crate::service::jobs::{AsyncJob, Job};
use crate::service::Service;

const MAX_DESCRIPTION: usize = 4096;

/// One disk's part of a snapshot being taken (as its journal records it).
pub(super) type Plan = OverlayStep;

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
/// `running`, their live node names; returns the definition's changes (each disk that names
/// its frozen file moves to the overlay).
pub(super) fn adopt_overlays(tree: &mut Tree, plans: &[Plan], running: bool) -> Vec<Repoint> {
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
        .map(|p| Repoint {
            target: p.target.clone(),
            from: Some(p.file.clone()),
            to: p.overlay.clone(),
            format: DiskFormat::Qcow2,
            unresolved_by_target: true,
        })
        .collect()
}

/// Overlays planned (no file made yet): each frozen file's virtual size beside its plan.
pub(super) struct Planned {
    pub plans: Vec<Plan>,
    sizes: Vec<u64>,
    nodes: Option<super::meta::LiveNodes>,
}

/// Why a running guest's disks were not switched to their overlays.
pub(super) enum SwitchError {
    /// Nothing switched (QEMU refused, or the switch never started): the nodes and the files
    /// went again; the journal may go.
    Undone(Error),
    /// The transaction got no answer (a timeout, the connection closed): QEMU may run on the
    /// overlays. The journal and the files stay; `load_settled` decides from the block graph.
    Unknown(Error),
}

impl From<SwitchError> for Error {
    fn from(e: SwitchError) -> Error {
        match e {
            SwitchError::Undone(e) | SwitchError::Unknown(e) => e,
        }
    }
}

/// Overlays made and opened, not yet the disks' active layers.
pub(super) struct Prepared {
    pub plans: Vec<Plan>,
    fds: Vec<std::os::fd::OwnedFd>,
    nodes: Option<super::meta::LiveNodes>,
}

/// Records in `tree` (not yet saved) that the planned overlays are about to be made and
/// switched to: recovery finishes or rolls back from this (`recover`).
pub(super) fn journal_create(
    tree: &mut Tree,
    name: &str,
    planned: &Planned,
    snap: Option<Snap>,
    place: &Where,
) {
    tree.journal = Some(Journal {
        op: JournalOp::Create,
        snapshot: name.to_owned(),
        steps: Vec::new(),
        overlays: planned.plans.clone(),
        snap: snap.map(Box::new),
        qemu: match place {
            Where::Running(l) => Some(QemuId {
                pid: l.pid,
                start_time: l.record.start_time,
            }),
            Where::Stopped => None,
        },
    });
}

/// Makes the overlays (blocking) durable: contents and directory entries.
pub(super) async fn sync_overlays(plans: &[Plan]) -> Result<(), Error> {
    let files: Vec<String> = plans.iter().map(|p| p.overlay.clone()).collect();
    tokio::task::spawn_blocking(move || {
        crate::host::qemu_img::sync_overlays(files.iter().map(String::as_str))
            .map_err(|e| io_err("fsync", files.join(", "), e))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
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

/// Blocking: refuses an overlay name a file (or a symlink) already has. Dots are allowed in
/// domain and snapshot names: another domain's (or snapshot's) file may already have it.
/// Called before the journal (or a revert's pending record) names it, so no recovery ever
/// touches that file.
pub(super) fn refuse_existing(overlay: &str) -> Result<(), Error> {
    if std::fs::symlink_metadata(overlay).is_ok() {
        return Err(invalid(
            "name",
            format!("the overlay file {overlay} already exists"),
        ));
    }
    Ok(())
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
        let place = placement(&h, "snapshot")?;
        let mut tree = self.load_settled(&h, &place).await?;
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
        let taken = self.take(&h, &place, &mut tree, &req, quiesced).await;
        if froze {
            quiesce::thaw_within(self, domain).await;
        }
        let plans = taken?;
        self.finish_create(&h, &mut tree, &plans, matches!(place, Where::Running(_)))
            .await?;
        let s = &tree.snapshots[&req.name];
        Ok(super::info(&tree, s))
    }

    /// The disks run on (or, stopped, will start from) the overlays: the snapshot in the
    /// journal joins the tree, the overlays become the active files, the definition names the
    /// overlays, then the journal goes. The overlays (written unsynced) and the definition are
    /// made durable at once; the tree without its journal only after both: a crash (or a
    /// failed repoint) before then leaves the journal, which recovery finishes the same way
    /// (`recover`). Saved together, the tree could land without its journal while the
    /// definition still named the frozen file: nothing left to recover from, and the next
    /// cold boot would lose every write since the snapshot.
    pub(super) async fn finish_create(
        &self,
        h: &crate::service::domain::DomainHandle,
        tree: &mut Tree,
        plans: &[Plan],
        running: bool,
    ) -> Result<(), Error> {
        crate::service::hold::point(&self.inner.config.run_dir, "snapshot-switched").await;
        // The journal stays in `tree` until the last write: a caller that saves `tree` after
        // a failure here keeps it (the definition may still name the frozen files).
        if let Some(snap) = tree.journal.as_ref().and_then(|j| j.snap.clone()) {
            insert_snap(tree, *snap);
        }
        let changes = adopt_overlays(tree, plans, running);
        // The runtime record first (a rename, no fsync): while the journal is on disk a
        // restarted daemon repeats this, so the record never stays behind the tree.
        self.follow_overlays(h, plans, running).await?;
        let (synced, repointed) =
            tokio::join!(sync_overlays(plans), self.repoint_definition(h, &changes));
        synced?;
        repointed?;
        crate::service::hold::point(&self.inner.config.run_dir, "snapshot-repointed").await;
        tree.journal = None;
        self.save_tree(&h.name, tree).await
    }

    /// `running` (in the QEMU that switched): the live device set follows the switch, each
    /// disk on its overlay's node and file (what a migration's destination, a resize, a
    /// detach and a restarted daemon read), in the runtime record's one write.
    async fn follow_overlays(
        &self,
        h: &crate::service::domain::DomainHandle,
        plans: &[Plan],
        running: bool,
    ) -> Result<(), Error> {
        let Some(live) = h.run().live().filter(|_| running).cloned() else {
            return Ok(());
        };
        let mut devices = live.devices();
        let mut changed = false;
        for p in plans {
            changed |= devices.switch_top(&p.target, &p.overlay, DiskFormat::Qcow2, &p.node);
        }
        if !changed {
            return Ok(());
        }
        self.inner.save_live(&h.name, &live, devices).await
    }

    /// Plans the overlays, records them in the journal (durably, before any file is made),
    /// makes them and switches the disks to them; on failure undoes what it did.
    pub(super) async fn take(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        tree: &mut Tree,
        req: &CreateRequest,
        quiesced: bool,
    ) -> Result<Vec<Plan>, Error> {
        let planned = self.plan_overlays(h, place, tree, req).await?;
        let snap = new_snap(
            req,
            &planned.plans,
            SnapKind::DiskOnly,
            SnapshotState::DiskSnapshot,
        );
        journal_create(
            tree,
            &req.name,
            &planned,
            Some(Snap { quiesced, ..snap }),
            place,
        );
        self.save_tree(&h.name, tree).await?;
        let prepared = match self.make_overlays(planned).await {
            Ok(p) => p,
            Err(e) => {
                self.drop_journal(&h.name, tree).await;
                return Err(e);
            }
        };
        match self.switch_overlays(h, place, prepared).await {
            Ok(plans) => Ok(plans),
            Err(SwitchError::Undone(e)) => {
                self.drop_journal(&h.name, tree).await;
                Err(e)
            }
            Err(SwitchError::Unknown(e)) => Err(e),
        }
    }

    /// After a failure that removed what the journal announced: the journal goes (best
    /// effort: one left behind is settled by the next snapshot operation or restart).
    pub(super) async fn drop_journal(&self, domain: &str, tree: &mut Tree) {
        tree.journal = None;
        if let Err(e) = self.save_tree(domain, tree).await {
            tracing::warn!(domain, error = %e, "snapshot journal after a failed snapshot");
        }
    }

    /// Plans the overlays (the guest untouched, no file made): names, node names, each frozen
    /// file's format (recorded in the tree) and size.
    pub(super) async fn plan_overlays(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        tree: &mut Tree,
        req: &CreateRequest,
    ) -> Result<Planned, Error> {
        let domain = h.name.clone();
        // The disks and their active files now.
        let (sel, nodes) = match place {
            Where::Running(l) => {
                let nodes = live_nodes(tree, l)?;
                // The disks it has now (hot-plugged ones included), on their active files.
                let sel = select_disks(&l.config())?;
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
        // Image facts (blocking).
        let mut t = std::mem::take(tree);
        let work: Vec<(String, DiskFormat, String)> = plans
            .iter()
            .zip(&sel)
            .map(|(p, d)| (p.file.clone(), d.format, p.overlay.clone()))
            .collect();
        let (t, facts) = tokio::task::spawn_blocking(move || {
            let facts = work
                .iter()
                .map(|(file, declared, overlay)| {
                    refuse_existing(overlay)?;
                    // `qemu-img info` only for files the tree does not know yet (the first
                    // snapshot of a disk); a known file's format is the recorded one and its
                    // size comes from its header.
                    ensure_chain(&mut t, file, *declared)?;
                    let format = t.files.get(file).map_or(DiskFormat::Raw, |r| r.format);
                    let size = crate::host::qemu_img::virtual_size(file, format)
                        .map_err(|e| io_err("read image", file, e))?;
                    Ok((format, size))
                })
                .collect::<Result<Vec<_>, Error>>();
            (t, facts)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        *tree = t;
        let mut sizes = Vec::new();
        for (p, (format, size)) in plans.iter_mut().zip(facts?) {
            p.format = format;
            sizes.push(size);
        }
        Ok(Planned {
            plans,
            sizes,
            nodes,
        })
    }

    /// The planned overlay files made (not yet fsync'd: `finish_create` syncs them with the
    /// metadata) and opened; removed again on failure.
    pub(super) async fn make_overlays(&self, planned: Planned) -> Result<Prepared, Error> {
        let Planned {
            plans,
            sizes,
            nodes,
        } = planned;
        let work: Vec<(String, String, DiskFormat, u64)> = plans
            .iter()
            .zip(&sizes)
            .map(|(p, size)| (p.file.clone(), p.overlay.clone(), p.format, *size))
            .collect();
        let made = tokio::task::spawn_blocking(move || {
            let mut fds = Vec::new();
            for (file, overlay, format, size) in &work {
                match crate::host::qemu_img::create_overlay_unsynced(overlay, file, *format, *size)
                {
                    Ok(f) => fds.push(std::os::fd::OwnedFd::from(f)),
                    Err(e) => {
                        for (_, o, _, _) in &work[..fds.len()] {
                            let _ = std::fs::remove_file(o);
                        }
                        return Err(io_err("create overlay", overlay, e));
                    }
                }
            }
            Ok(fds)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Prepared {
            plans,
            fds: made?,
            nodes,
        })
    }

    /// Switches a running guest's disks to the prepared overlays in one transaction; on
    /// failure the nodes and files go again, unless QEMU may have switched (see
    /// [`SwitchError`]).
    pub(super) async fn switch_overlays(
        &self,
        h: &crate::service::domain::DomainHandle,
        place: &Where,
        prepared: Prepared,
    ) -> Result<Vec<Plan>, SwitchError> {
        let domain = h.name.clone();
        let Prepared { plans, fds, nodes } = prepared;
        let (Where::Running(l), Some(nodes)) = (place, nodes) else {
            return Ok(plans);
        };
        let q = l.qmp(&domain).map_err(SwitchError::Undone)?;
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
                crate::service::hold::point(&self.inner.config.run_dir, "snapshot-before-switch")
                    .await;
                r = match live::snapshot_transaction(q, &pairs).await {
                    Ok(()) => Ok(()),
                    // QEMU's error reply: the transaction did nothing.
                    Err(e @ novacron_qmp::Error::Qmp { .. }) => Err(format!("transaction: {e}")),
                    Err(e) => {
                        return Err(SwitchError::Unknown(qemu_err(format!(
                            "transaction: {e}; whether the disks switched to their overlays \
                             is settled by the next snapshot operation (or a restart)"
                        ))))
                    }
                };
            }
        }
        if let Err(e) = r {
            for p in &plans[..added] {
                live::del_nodes(q, &p.node).await;
            }
            remove_overlays(&plans).await;
            return Err(SwitchError::Undone(qemu_err(e)));
        }
        Ok(plans)
    }
}
