//! After a restart: a deletion the journal says was in flight is finished — a live job still
//! running is driven to its end (an active commit completed once ready), one that ended is
//! recognised from the block graph, one that never started is started; a stopped guest's
//! `qemu-img commit` is run again (repeating it writes the same data). Nothing is unlinked
//! before the tree without the snapshot is on disk.
//!
//! A creation the journal says was in flight is finished or rolled back by what the disks
//! run on: in the QEMU it was switching, its block graph (every overlay node backed: switched,
//! finish; none: roll back, the nodes deleted and the files removed); with no guest running,
//! finished whenever every overlay file is whole (an overlay never switched to is empty and
//! reads as its base, so finishing never loses a write), rolled back when one is missing or
//! unreadable (the crash came before the last was made, so before the switch). Never a file
//! removed that may hold guest writes: anything else is reported and left as it is.

use std::time::Duration;

use novacron_domain::model::{DiskFormat, DiskSource};
use novacron_domain::Error;

use super::meta::{Journal, JournalOp, Tree};
use super::{live, placement, Where};
use crate::service::domain::DomainHandle;
use crate::service::jobs::AsyncJob;
use crate::service::Service;

/// What an interrupted creation's disks say.
enum Outcome {
    /// The disks run on the overlays (or will start from them): finish. `same`: in the QEMU
    /// the journal names (its node names are adopted).
    Forward { same: bool },
    /// No disk switched: these overlay nodes (added, not switched) go, then the files.
    /// `qemu`: in the QEMU the journal names (descriptors it may still hold go too).
    Rollback { nodes: Vec<String>, qemu: bool },
}

/// Looks at every domain's tree once, in the background; then starts the schedules.
pub(crate) fn spawn_recovery(svc: Service) {
    tokio::spawn(async move {
        let names: Vec<String> = svc.list().into_iter().map(|d| d.name).collect();
        for name in names {
            let tree = match svc.load_tree(&name).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(domain = name, error = %e, "snapshot metadata unreadable");
                    continue;
                }
            };
            // The disks first: a snapshot with memory then loses only its RAM part.
            if tree
                .journal
                .as_ref()
                .is_some_and(|j| j.op == JournalOp::Create)
            {
                if let Err(e) = svc.recover_create(&name).await {
                    tracing::warn!(domain = name, error = %e, "interrupted snapshot creation");
                }
            }
            if let Err(e) = svc.recover_memory(&name).await {
                tracing::warn!(domain = name, error = %e, "interrupted snapshot with memory");
            }
            if !tree
                .journal
                .as_ref()
                .is_some_and(|j| j.op == JournalOp::Delete)
            {
                continue;
            }
            match svc.finish_interrupted(&name).await {
                Ok(()) => tracing::info!(domain = name, "interrupted snapshot deletion finished"),
                Err(e) => {
                    tracing::warn!(domain = name, error = %e, "interrupted snapshot deletion")
                }
            }
        }
        super::schedule::spawn_all(&svc);
    });
}

impl Service {
    async fn finish_interrupted(&self, name: &str) -> Result<(), novacron_domain::Error> {
        let h = self.inner.handle(name)?;
        let _job = h
            .begin(crate::service::jobs::Job::Modify, Duration::from_secs(60))
            .await?;
        let _long = h.jobs.begin_async(name, AsyncJob::Snapshot)?;
        let tree = self.load_tree(name).await?;
        if !tree
            .journal
            .as_ref()
            .is_some_and(|j| j.op == JournalOp::Delete)
        {
            return Ok(());
        }
        let place = placement(&h, "finish a snapshot deletion of")?;
        self.settle_delete(&h, &place, tree).await
    }

    /// Finishes the deletion `tree`'s journal records (the caller holds the domain's jobs).
    async fn settle_delete(
        &self,
        h: &DomainHandle,
        place: &Where,
        mut tree: Tree,
    ) -> Result<(), Error> {
        let name = h.name.as_str();
        if let Where::Running(l) = place {
            // The nodes were recorded for this very QEMU; a restarted guest has other ones,
            // and its images are closed: then the offline path applies.
            let same = tree
                .live
                .as_ref()
                .is_some_and(|n| n.pid == l.pid && n.start_time == l.record.start_time);
            if !same {
                return Err(novacron_domain::Error::Busy {
                    name: name.to_owned(),
                    detail: "the guest was restarted while a snapshot deletion was in flight; \
                             stop it to finish the deletion"
                        .into(),
                });
            }
        }
        self.run_journal(h, place, &mut tree, None, true).await?;
        self.finish(h, place, tree).await
    }
}

/// Whether `o.overlay` is the overlay this journal made (blocking): see [`made_over`].
fn made_for(o: &super::meta::OverlayStep) -> bool {
    made_over(&o.overlay, &o.file)
}

/// Whether `overlay` is an overlay made over `frozen` (blocking): a qcow2 file (not a
/// symlink) whose header names `frozen` as its backing. Recovery adopts or removes only
/// such a file: another file under the name (a name another domain's file had) stays.
pub(super) fn made_over(overlay: &str, frozen: &str) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(overlay)
        .ok()
        .and_then(|mut f| crate::host::qcow2::refs(&mut f).ok())
        .is_some_and(|r| r.backing.as_deref() == Some(frozen))
}

impl Service {
    /// After a restart: settles a creation the journal says was in flight.
    async fn recover_create(&self, name: &str) -> Result<(), Error> {
        let h = self.inner.handle(name)?;
        let _job = h
            .begin(crate::service::jobs::Job::Modify, Duration::from_secs(60))
            .await?;
        let _long = h.jobs.begin_async(name, AsyncJob::Snapshot)?;
        let place = placement(&h, "finish a snapshot of")?;
        self.load_settled(&h, &place).await.map(drop)
    }

    /// The tree, with a creation a crash interrupted settled first (the caller holds the
    /// domain's jobs): every snapshot operation starts here, so one missed by recovery (the
    /// guest was busy) is settled by the next.
    pub(super) async fn load_settled(
        &self,
        h: &DomainHandle,
        place: &Where,
    ) -> Result<Tree, Error> {
        let mut tree = self.load_tree(&h.name).await?;
        if tree
            .journal
            .as_ref()
            .is_some_and(|j| j.op == JournalOp::Delete)
        {
            // A deletion left unfinished (a commit refused after earlier steps merged, a
            // failed wait): finished here, not only by a restart.
            self.settle_delete(h, place, tree).await?;
            tracing::info!(domain = h.name, "interrupted snapshot deletion finished");
            return self.load_tree(&h.name).await;
        }
        let Some(j) = tree.journal.clone().filter(|j| j.op == JournalOp::Create) else {
            return Ok(tree);
        };
        match self.create_outcome(h, place, &j, &tree).await? {
            Outcome::Forward { same } => {
                self.finish_create(h, &mut tree, &j.overlays, same).await?;
                tracing::info!(
                    domain = h.name,
                    snapshot = j.snapshot,
                    "interrupted snapshot creation finished"
                );
            }
            Outcome::Rollback { nodes, qemu } => {
                if let (Where::Running(l), true) = (place, qemu) {
                    let q = l.qmp(&h.name)?;
                    for n in &nodes {
                        live::del_nodes(q, n).await;
                    }
                    // A crash between add-fd and blockdev-add leaves the descriptor in a set
                    // (its opaque is the node name).
                    for o in &j.overlays {
                        live::release_fds(q, &o.node).await;
                    }
                }
                // A definition already on an overlay (a previous recovery's finish got as far
                // as the repoint) goes back to the frozen file.
                let back: Vec<super::Repoint> = j
                    .overlays
                    .iter()
                    .map(|o| super::Repoint {
                        target: o.target.clone(),
                        from: Some(o.overlay.clone()),
                        to: o.file.clone(),
                        format: o.format,
                        unresolved_by_target: false,
                    })
                    .collect();
                // The files before the journal: a crash in between rolls back again.
                self.repoint_definition(h, &back).await?;
                // Only files this snapshot made (the header names its frozen file): a name
                // another domain's file already had is never unlinked.
                let candidates = j.overlays.clone();
                let ours = tokio::task::spawn_blocking(move || {
                    candidates.into_iter().filter(made_for).collect::<Vec<_>>()
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
                super::create::remove_overlays(&ours).await;
                tree.journal = None;
                self.save_tree(&h.name, &tree).await?;
                tracing::info!(
                    domain = h.name,
                    snapshot = j.snapshot,
                    "interrupted snapshot creation rolled back"
                );
            }
        }
        Ok(tree)
    }

    async fn create_outcome(
        &self,
        h: &DomainHandle,
        place: &Where,
        j: &Journal,
        tree: &Tree,
    ) -> Result<Outcome, Error> {
        let partial = |what: String| Error::Qemu {
            name: h.name.clone(),
            operation: "finish an interrupted snapshot".into(),
            message: format!(
                "snapshot '{}': {what}; its overlay files are left in place",
                j.snapshot
            ),
        };
        let Where::Running(l) = place else {
            // No guest: whole overlays are finished, a missing or unreadable one means the
            // crash came before the last was made (the switch comes after).
            let files = j.overlays.clone();
            let whole = tokio::task::spawn_blocking(move || {
                files
                    .iter()
                    .filter(|o| {
                        made_for(o)
                            && crate::host::qemu_img::info_as(&o.overlay, DiskFormat::Qcow2).is_ok()
                    })
                    .count()
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
            // A running guest's snapshot (`qemu` set) whose QEMU is gone: a whole overlay may
            // hold flushed writes beside a missing one, so a mix is only reported.
            return if whole == j.overlays.len() {
                Ok(Outcome::Forward { same: false })
            } else if whole == 0 || j.qemu.is_none() {
                Ok(Outcome::Rollback {
                    nodes: Vec::new(),
                    qemu: false,
                })
            } else {
                Err(partial(format!(
                    "{whole} of {} overlays are whole and the guest that may have written to \
                     them is gone",
                    j.overlays.len()
                )))
            };
        };
        let same = j
            .qemu
            .is_some_and(|id| id.pid == l.pid && id.start_time == l.record.start_time);
        if same {
            let q = l.qmp(&h.name)?;
            let graph = live::graph(q).await.map_err(&partial)?;
            // blockdev-add made each overlay node without a backing; the transaction gave it
            // the frozen file's node as one.
            let chains: Vec<Vec<String>> =
                j.overlays.iter().map(|o| graph.chain(&o.node)).collect();
            let switched = chains.iter().filter(|c| c.len() > 1).count();
            if switched == j.overlays.len() {
                return Ok(Outcome::Forward { same: true });
            }
            // A missing overlay node is no proof of "not switched" (a detached disk takes
            // its overlay node with it): only while the frozen file's node is still its
            // device's top node did the disk never run on the overlay.
            let frozen_on_top = |o: &super::meta::OverlayStep| {
                tree.live
                    .as_ref()
                    .and_then(|n| n.nodes.get(&o.file))
                    .is_some_and(|n| graph.is_device_top(n))
            };
            let unswitched = j
                .overlays
                .iter()
                .zip(&chains)
                .all(|(o, c)| c.len() == 1 || (c.is_empty() && frozen_on_top(o)));
            if switched == 0 && !unswitched {
                return Err(partial(
                    "an overlay node is missing while its disk no longer runs on the frozen \
                     file (detached?)"
                        .into(),
                ));
            }
            if switched == 0 {
                return Ok(Outcome::Rollback {
                    nodes: j
                        .overlays
                        .iter()
                        .zip(&chains)
                        .filter(|(_, c)| !c.is_empty())
                        .map(|(o, _)| o.node.clone())
                        .collect(),
                    qemu: true,
                });
            }
            return Err(partial(format!(
                "{switched} of {} disks switched to their overlays (a transaction switches all \
                 or none)",
                j.overlays.len()
            )));
        }
        // Another QEMU (the guest was started again before this settled): what it runs on.
        let disks = l.config().devices.disks;
        let on_overlay = |o: &super::meta::OverlayStep| {
            disks.iter().any(|d| {
                d.target.dev == o.target
                    && matches!(&d.source, Some(DiskSource::File { path }) if *path == o.overlay)
            })
        };
        let on = j.overlays.iter().filter(|o| on_overlay(o)).count();
        if on == j.overlays.len() {
            return Ok(Outcome::Forward { same: false });
        }
        if on == 0 && j.qemu.is_none() {
            // A stopped guest's snapshot: no QEMU ever wrote into its overlays.
            return Ok(Outcome::Rollback {
                nodes: Vec::new(),
                qemu: false,
            });
        }
        Err(Error::Busy {
            name: h.name.clone(),
            detail: format!(
                "the guest was restarted while snapshot '{}' was being taken and runs on \
                 {on} of its {} overlays; stop it to finish the snapshot",
                j.snapshot,
                j.overlays.len()
            ),
        })
    }
}

impl Service {
    /// Settles the revert `tree` records as pending (the caller holds the domain's jobs, so
    /// none is in flight). The definition names its fresh overlays once the revert's repoint
    /// is written (its commit point, `adopt_revert`): then the revert is finished from the
    /// record (each overlay's disk is the snapshot's disk whose file it is made over) and its
    /// new files are returned; otherwise nothing names them and they go (`drop_revert`).
    pub(super) async fn settle_revert(
        &self,
        h: &DomainHandle,
        tree: &mut Tree,
    ) -> Result<Option<Vec<(String, String, DiskFormat)>>, Error> {
        let Some(p) = tree.pending_revert.clone() else {
            return Ok(None);
        };
        // The definition is written whole: one disk on an overlay means all were moved.
        let named = h.definition().config.config().devices.disks.iter().any(
            |d| matches!(&d.source, Some(DiskSource::File { path }) if p.overlays.contains(path)),
        );
        if !named {
            self.drop_revert(&h.name, tree, true).await;
            return Ok(None);
        }
        let snap = tree.snapshots.get(&p.snapshot);
        let made = p
            .overlays
            .iter()
            .map(|o| {
                let file = p.backing.get(o)?;
                let (target, d) = snap?.disks.iter().find(|(_, d)| d.file == *file)?;
                Some(super::delete::RevertOverlay {
                    target: target.clone(),
                    overlay: o.clone(),
                    file: d.file.clone(),
                    format: d.format,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::Internal(format!(
                    "the definition of '{}' names the overlays of an unfinished revert to \
                     snapshot '{}', but its record does not say which disk each is for; \
                     the tree and the files are left as they are",
                    h.name, p.snapshot
                ))
            })?;
        self.adopt_revert(h, tree, &p.snapshot, made)
            .await
            .map(Some)
    }
}
