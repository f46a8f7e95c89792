//! Deleting a snapshot (merge its file with the one above it, then forget it) and reverting
//! a stopped guest to one (fresh overlays over its files). Deletion writes its journal
//! before any block job starts; `finish` is shared with crash recovery.

use std::time::Duration;

use novacron_domain::model::DiskFormat;
use novacron_domain::{Error, Kind};

use super::meta::{CommitStep, FileRec, Journal, JournalOp, Tree};
use super::{invalid, io_err, live, live_nodes, placement, DeleteRequest, Where};
use crate::service::domain::{DomainHandle, Live};
use crate::service::jobs::{AsyncJob, Job};
use crate::service::Service;

/// Longest a merge job may run before the deletion gives up waiting (the job goes on; the
/// journal finishes it later).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What merging `name` away takes, per disk; refused when a disk branches there.
fn plan(tree: &Tree, name: &str) -> Result<Vec<CommitStep>, Error> {
    let s = tree
        .snapshots
        .get(name)
        .ok_or_else(|| Error::not_found(Kind::Snapshot, name))?;
    let mut steps = Vec::new();
    for (target, d) in &s.disks {
        let deps = tree.dependents(&d.file);
        match deps.as_slice() {
            [] => {}
            [top] => steps.push(CommitStep {
                disk: target.clone(),
                top: top.clone(),
                base: d.file.clone(),
                job_id: None,
                top_node: None,
                base_node: None,
                active: tree.active.get(target) == Some(top),
                done: false,
            }),
            more => {
                return Err(invalid(
                    "snapshot",
                    format!(
                        "snapshot '{name}' is a branch point on disk {target} ({} images \
                         depend on it); delete the branches first",
                        more.len()
                    ),
                ))
            }
        }
    }
    Ok(steps)
}

impl Service {
    pub async fn snapshot_delete(
        &self,
        domain: &str,
        name: &str,
        req: DeleteRequest,
    ) -> Result<(), Error> {
        let h = self.inner.handle(domain)?;
        // The synchronous slot first (the long one does not admit `Modify` beside it).
        let _job = h.begin(Job::Modify, self.inner.job_wait()).await?;
        let _long = h.jobs.begin_async(domain, AsyncJob::Snapshot)?;
        let place = placement(&h, "delete a snapshot of")?;
        let mut tree = self.load_settled(&h, &place).await?;
        if tree.journal.is_some() {
            return Err(Error::Busy {
                name: domain.to_owned(),
                detail: "an interrupted snapshot deletion is being finished".into(),
            });
        }
        let mut steps = plan(&tree, name)?;
        if let Where::Running(l) = &place {
            self.name_nodes(&h, l, &mut tree, &mut steps).await?;
        }
        tree.journal = Some(Journal {
            op: JournalOp::Delete,
            snapshot: name.to_owned(),
            steps,
            overlays: Vec::new(),
            snap: None,
            qemu: None,
        });
        self.save_tree(domain, &tree).await?;
        self.run_journal(&h, &place, &mut tree, req.speed, false)
            .await?;
        self.finish(&h, &place, tree).await
    }

    /// Finds the node names of each step's images in the running QEMU.
    async fn name_nodes(
        &self,
        h: &DomainHandle,
        l: &Live,
        tree: &mut Tree,
        steps: &mut [CommitStep],
    ) -> Result<(), Error> {
        let qemu_err = |message: String| Error::Qemu {
            name: h.name.clone(),
            operation: "snapshot-delete".into(),
            message,
        };
        let nodes = live_nodes(tree, l)?;
        let q = l.qmp(&h.name)?;
        let graph = live::graph(q).await.map_err(qemu_err)?;
        for s in steps.iter_mut() {
            let active = tree.active.get(&s.disk).cloned().unwrap_or_default();
            let top_node = nodes
                .nodes
                .get(&active)
                .cloned()
                .ok_or_else(|| qemu_err(format!("no node known for {active}")))?;
            // Files down the chain from the active one, paired with nodes down the graph.
            let mut files = vec![active.clone()];
            while let Some(b) = files
                .last()
                .and_then(|f| tree.files.get(f))
                .and_then(|f| f.backing.clone())
            {
                files.push(b);
            }
            let chain = graph.chain(&top_node);
            let node_of = |file: &str| {
                files
                    .iter()
                    .position(|f| f == file)
                    .and_then(|i| chain.get(i).cloned())
            };
            s.top_node = node_of(&s.top);
            s.base_node = node_of(&s.base);
            if s.top_node.is_none() || s.base_node.is_none() {
                return Err(qemu_err(format!(
                    "disk {}: the running chain {chain:?} does not hold {} and {}",
                    s.disk, s.top, s.base
                )));
            }
            s.job_id = Some(format!("snapdel-{}", s.disk));
            if let (Some(l), Some(n)) = (&mut tree.live, &s.base_node) {
                l.nodes.insert(s.base.clone(), n.clone());
            }
            live::ensure_writable(
                q,
                &graph,
                s.base_node.as_deref().unwrap_or_default(),
                &s.base,
            )
            .await
            .map_err(qemu_err)?;
        }
        Ok(())
    }

    /// Runs the journal's steps that are not done; each is marked done on disk as it ends.
    /// `resume`: after a restart (a live job may still be running).
    pub(super) async fn run_journal(
        &self,
        h: &DomainHandle,
        place: &Where,
        tree: &mut Tree,
        speed: Option<u64>,
        resume: bool,
    ) -> Result<(), Error> {
        let domain = h.name.clone();
        let Some(journal) = tree.journal.clone() else {
            return Ok(());
        };
        for (i, step) in journal.steps.iter().enumerate() {
            if step.done {
                continue;
            }
            match place {
                Where::Running(l) => {
                    let q = l.qmp(&domain)?;
                    let active_node = tree
                        .live
                        .as_ref()
                        .and_then(|n| n.nodes.get(tree.active.get(&step.disk)?))
                        .cloned()
                        .unwrap_or_default();
                    let mut again = resume;
                    if resume {
                        // No job: either it ended (the top is out of the chain) or it never
                        // started; then it starts now.
                        let job = live::job(q, step.job_id.as_deref().unwrap_or_default())
                            .await
                            .map_err(|m| qemu(&domain, m))?;
                        if job.is_none() {
                            let g = live::graph(q).await.map_err(|m| qemu(&domain, m))?;
                            let base_node = step.base_node.as_deref().unwrap_or_default();
                            let top_node = step.top_node.as_deref().unwrap_or_default();
                            // A top gone together with its base (the disk detached since)
                            // says nothing about the commit: the top may hold writes the
                            // base never got, so nothing is marked done or unlinked.
                            if !g.has(base_node) && !g.has(top_node) {
                                return Err(Error::Busy {
                                    name: domain.clone(),
                                    detail: format!(
                                        "the deletion of snapshot '{}' cannot tell whether disk \
                                         '{}' was committed (its nodes are gone from QEMU): \
                                         nothing was removed; stop the guest to finish it",
                                        tree.journal.as_ref().map_or("", |j| &j.snapshot),
                                        step.disk
                                    ),
                                });
                            }
                            if !g.in_use(top_node) {
                                mark_done(tree, i);
                                self.save_tree(&domain, tree).await?;
                                continue;
                            }
                            again = false;
                        }
                    }
                    crate::service::hold::point(
                        &self.inner.config.run_dir,
                        "snapshot-before-commit",
                    )
                    .await;
                    match live::commit(q, step, &active_node, speed, again, COMMIT_TIMEOUT).await {
                        Ok(()) => {}
                        Err(live::CommitError::Failed(m)) => return Err(qemu(&domain, m)),
                        Err(live::CommitError::Refused(m)) => {
                            return Err(self.refused(h, l, tree, i, m).await);
                        }
                    }
                }
                Where::Stopped => {
                    let (top, base) = (step.top.clone(), step.base.clone());
                    let base_format = tree
                        .files
                        .get(&base)
                        .map_or(DiskFormat::Qcow2, |f| f.format);
                    let above = tree.dependents(&top);
                    tokio::task::spawn_blocking(move || {
                        crate::host::qemu_img::commit(&top, &base)
                            .map_err(|e| io_err("commit", &top, e))?;
                        for e in above {
                            crate::host::qemu_img::rebase_unsafe(&e, &base, base_format)
                                .map_err(|m| io_err("rebase", &e, m))?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??;
                }
            }
            mark_done(tree, i);
            self.save_tree(&domain, tree).await?;
        }
        Ok(())
    }

    /// QEMU refused to start step `i`'s commit: nothing of it was written. With no step done
    /// the deletion is rolled back (the journal goes, the snapshot stays, a retry may run
    /// at once); otherwise the journal stays for the recovery to finish. A paused guest's
    /// refusal over image locks is explained: QEMU 7.2 closes a descriptor the daemon takes
    /// out of a set only while the guest runs (see `live::ensure_writable`).
    async fn refused(
        &self,
        h: &DomainHandle,
        l: &Live,
        tree: &mut Tree,
        i: usize,
        m: String,
    ) -> Error {
        let domain = h.name.as_str();
        let untouched = tree
            .journal
            .as_ref()
            .is_some_and(|j| j.steps.iter().all(|s| !s.done));
        let mut message = m;
        if message.contains("lock") {
            let paused = match l.qmp(domain) {
                Ok(q) => !q
                    .execute(&novacron_qmp::commands::QueryStatus)
                    .await
                    .is_ok_and(|s| s.running),
                Err(_) => false,
            };
            if paused {
                message.push_str(
                    " (the guest is paused: QEMU 7.2 closes the read-only descriptor it \
                     opened this image with, whose image lock refuses the commit, only while \
                     the guest runs; resume the guest or stop it, then delete again)",
                );
            }
        }
        if untouched {
            tree.journal = None;
            if let Err(e) = self.save_tree(domain, tree).await {
                tracing::error!(domain, error = %e, "rolling back a refused snapshot deletion");
            }
        } else {
            tracing::warn!(
                domain,
                step = i,
                "a commit refused after earlier steps merged; the next snapshot operation (or a restart) finishes the deletion"
            );
        }
        qemu(domain, message)
    }

    /// After every step is done: drop the merged nodes, move references, forget the
    /// snapshot, unlink what no longer has references.
    pub(super) async fn finish(
        &self,
        h: &DomainHandle,
        place: &Where,
        mut tree: Tree,
    ) -> Result<(), Error> {
        let Some(journal) = tree.journal.take() else {
            return Ok(());
        };
        let mut changes = Vec::new();
        // A running guest whose active layer was committed reads the base's node now: its
        // live device set follows (recorded below with the tree).
        let live = match place {
            Where::Running(l) => Some(l.clone()),
            Where::Stopped => None,
        };
        let mut devices = live.as_ref().map(|l| l.devices());
        let mut followed = false;
        for s in &journal.steps {
            if let (Where::Running(l), Some(node)) = (place, &s.top_node) {
                if let Ok(q) = l.qmp(&h.name) {
                    live::del_nodes(q, node).await;
                }
            }
            if tree.active.get(&s.disk) == Some(&s.top) {
                let f = tree
                    .files
                    .get(&s.base)
                    .map_or(DiskFormat::Qcow2, |f| f.format);
                if let (Some(d), Some(node)) = (devices.as_mut(), &s.base_node) {
                    followed |= d.switch_top(&s.disk, &s.base, f, node);
                }
                changes.push(super::Repoint {
                    target: s.disk.clone(),
                    from: Some(s.top.clone()),
                    to: s.base.clone(),
                    format: f,
                    unresolved_by_target: false,
                });
            }
            tree.redirect(&s.top, &s.base);
        }
        // A full snapshot's RAM file goes once no snapshot names it (after the tree is saved;
        // one left by a crash in between is removed by the next daemon's recovery).
        let memory: Vec<String> = tree
            .snapshots
            .get(&journal.snapshot)
            .and_then(|s| s.memory_file.clone())
            .into_iter()
            .collect();
        tree.unlink_snapshot(&journal.snapshot);
        let mut unlink = tree.collect_garbage();
        unlink.extend(tree.memory_files_unused(&memory));
        // The runtime record before the tree (a rename, no fsync): while the journal is on
        // disk a restarted daemon finishes this again, so the record never stays behind.
        if let (Some(l), Some(d), true) = (live, devices, followed) {
            self.inner.save_live(&h.name, &l, d).await?;
        }
        // The definition before the tree: the journal on disk covers a crash or a refusal
        // between them (finished again at restart); the other order could leave the
        // definition on the committed top with no journal left to say so.
        self.repoint_definition(h, &changes).await?;
        self.save_tree(&h.name, &tree).await?;
        self.unlink_files(unlink).await;
        Ok(())
    }

    /// Points a stopped guest's disks at fresh overlays over snapshot `name`'s files; the
    /// snapshot stays; what only the old state used is unlinked.
    pub async fn snapshot_revert(&self, domain: &str, name: &str) -> Result<(), Error> {
        let h = self.inner.handle(domain)?;
        // The synchronous slot first (the long one does not admit `Modify` beside it).
        let _job = h.begin(Job::Modify, self.inner.job_wait()).await?;
        let _long = h.jobs.begin_async(domain, AsyncJob::Snapshot)?;
        let mut tree = self.load_settled(&h, &placement(&h, "revert")?).await?;
        if tree.journal.is_some() {
            return Err(Error::Busy {
                name: domain.to_owned(),
                detail: "an interrupted snapshot deletion is being finished".into(),
            });
        }
        // An interrupted revert's overlays or RAM save wait for the recovery (as the revert
        // to a snapshot with memory refuses too): this revert would garbage-collect around them.
        if tree.pending_revert.is_some() || tree.pending_memory.is_some() {
            return Err(Error::Busy {
                name: domain.to_owned(),
                detail: "an interrupted snapshot operation is being finished".into(),
            });
        }
        let s = tree
            .snapshots
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(Kind::Snapshot, name))?;
        if s.memory_file.is_some() {
            return self.revert_with_memory(&h, tree, s).await;
        }
        if let Where::Running(_) = placement(&h, "revert")? {
            return Err(Error::WrongState {
                name: domain.to_owned(),
                state: h.state(),
                operation: "revert (a disk-only snapshot of)",
            });
        }
        self.revert_disks(&h, &mut tree, &s).await.map(drop)
    }

    /// Points the (stopped) guest's disks at fresh overlays over snapshot `s`'s files, makes
    /// it current and unlinks what only the old state used; returns the disks' new files.
    pub(super) async fn revert_disks(
        &self,
        h: &DomainHandle,
        tree: &mut Tree,
        s: &super::meta::Snap,
    ) -> Result<Vec<(String, String, DiskFormat)>, Error> {
        let made = self.revert_overlays(h, tree, s).await?;
        match self.adopt_revert(h, tree, &s.name, made).await {
            Ok(changes) => Ok(changes),
            // Settled at once as a restart would: rolled back when the definition was not
            // written, finished when only the tree was not.
            Err(e) => match self.settle_revert(h, tree).await {
                Ok(Some(changes)) => Ok(changes),
                Ok(None) => Err(e),
                Err(e2) => {
                    tracing::warn!(domain = h.name, error = %e2, "a failed revert left pending");
                    Err(e)
                }
            },
        }
    }

    /// Makes a fresh overlay over each of snapshot `s`'s files, recorded as the tree's
    /// pending revert first (on failure the ones made are removed again, nothing pending).
    pub(super) async fn revert_overlays(
        &self,
        h: &DomainHandle,
        tree: &mut Tree,
        s: &super::meta::Snap,
    ) -> Result<Vec<RevertOverlay>, Error> {
        let (domain, name) = (h.name.as_str(), s.name.as_str());
        // The daemon makes these names up, not the user: one a file already has (dots in
        // domain and snapshot names let names meet) is skipped for the next free one, before
        // the pending record names it (no recovery ever touches that file, and a retry
        // never lands on it again).
        let (disks, d, n, first) = (
            s.disks.clone(),
            domain.to_owned(),
            name.to_owned(),
            tree.next + 1,
        );
        let (next, made) =
            tokio::task::spawn_blocking(move || free_overlays(&d, &n, &disks, first))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
        tree.next = next;
        // The `next` bump and the names recorded before any file exists: a crash while they
        // are made leaves them to the recovery (removed), never an unrecorded file whose
        // name the next revert would take again.
        tree.pending_revert = Some(super::meta::PendingRevert {
            snapshot: name.to_owned(),
            overlays: made.iter().map(|m| m.overlay.clone()).collect(),
            backing: made
                .iter()
                .map(|m| (m.overlay.clone(), m.file.clone()))
                .collect(),
        });
        self.save_tree(domain, tree).await?;
        let work = made.clone();
        let made_files = tokio::task::spawn_blocking(move || {
            let mut done: Vec<String> = Vec::new();
            for m in &work {
                // The size from the header as recorded (never probed: a raw disk may hold a
                // guest-written qcow2 header).
                let r = crate::host::qemu_img::virtual_size(&m.file, m.format)
                    .and_then(|size| {
                        crate::host::qemu_img::create_overlay(&m.overlay, &m.file, m.format, size)
                    })
                    .map_err(|e| io_err("create overlay", &m.overlay, e));
                if let Err(e) = r {
                    for f in done {
                        let _ = std::fs::remove_file(f);
                    }
                    return Err(e);
                }
                done.push(m.overlay.clone());
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
        .and_then(|r| r);
        if let Err(e) = made_files {
            // What was made is removed again: nothing pending (best effort: one left is
            // removed by the recovery).
            tree.pending_revert = None;
            if let Err(e) = self.save_tree(domain, tree).await {
                tracing::warn!(domain, error = %e, "snapshot metadata after a failed revert");
            }
            return Err(e);
        }
        crate::service::hold::point(&self.inner.config.run_dir, "revert-overlays-made").await;
        Ok(made)
    }

    /// Makes the overlays `made` the disks' files (tree and definition), snapshot `name`
    /// current, and unlinks what only the old state used; returns the disks' new files.
    /// The definition first, the tree without its pending record last (as a snapshot's
    /// finish and a deletion order them): a crash or a failure in between leaves the pending
    /// record, from which the revert is finished (the definition names the overlays) or
    /// rolled back (`recover::settle_revert`). The other order could leave the definition on
    /// files the tree no longer tracks (and unlinks).
    pub(super) async fn adopt_revert(
        &self,
        h: &DomainHandle,
        tree: &mut Tree,
        name: &str,
        made: Vec<RevertOverlay>,
    ) -> Result<Vec<(String, String, DiskFormat)>, Error> {
        let repoints: Vec<super::Repoint> = made
            .iter()
            .map(|m| super::Repoint {
                target: m.target.clone(),
                from: None,
                to: m.overlay.clone(),
                format: DiskFormat::Qcow2,
                unresolved_by_target: false,
            })
            .collect();
        self.repoint_definition(h, &repoints).await?;
        crate::service::hold::point(&self.inner.config.run_dir, "revert-repointed").await;
        // `tree` keeps its pending record until the tree without it is on disk.
        let mut adopted = tree.clone();
        let mut changes = Vec::new();
        for m in made {
            adopted.files.insert(
                m.overlay.clone(),
                FileRec {
                    format: DiskFormat::Qcow2,
                    backing: Some(m.file),
                    owned: true,
                    refs: 0,
                },
            );
            adopted.active.insert(m.target.clone(), m.overlay.clone());
            changes.push((m.target, m.overlay, DiskFormat::Qcow2));
        }
        adopted.current = Some(name.to_owned());
        adopted.pending_revert = None;
        let unlink = adopted.collect_garbage();
        self.save_tree(&h.name, &adopted).await?;
        *tree = adopted;
        self.unlink_files(unlink).await;
        Ok(changes)
    }
}

/// How many `r<N>` names in a row a revert tries before it gives up (each taken by a file).
const FREE_NAME_TRIES: u64 = 64;

/// Blocking: the revert's overlays over snapshot `snap`'s `disks` under the first counter
/// from `first` on whose names no file (or symlink) has yet, with that counter.
fn free_overlays(
    domain: &str,
    snap: &str,
    disks: &std::collections::BTreeMap<String, super::meta::SnapDisk>,
    first: u64,
) -> Result<(u64, Vec<RevertOverlay>), Error> {
    let made = |n: u64| -> Vec<RevertOverlay> {
        disks
            .iter()
            .map(|(target, d)| {
                let dir = std::path::Path::new(&d.file)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| ".".into());
                RevertOverlay {
                    target: target.clone(),
                    overlay: format!("{dir}/{domain}.{target}.{snap}.r{n}.qcow2"),
                    file: d.file.clone(),
                    format: d.format,
                }
            })
            .collect()
    };
    let mut taken = None;
    for n in first..first + FREE_NAME_TRIES {
        let m = made(n);
        match m
            .iter()
            .try_for_each(|o| super::create::refuse_existing(&o.overlay))
        {
            Ok(()) => return Ok((n, m)),
            Err(e) => taken = Some(e),
        }
    }
    let last = taken.map(|e| e.to_string()).unwrap_or_default();
    Err(invalid(
        "name",
        format!(
            "no free overlay name for a revert to snapshot '{snap}': the {FREE_NAME_TRIES} \
             names from r{first} on are all taken by files ({last})"
        ),
    ))
}

/// A revert's fresh overlay over one of the snapshot's files.
#[derive(Debug, Clone)]
pub(super) struct RevertOverlay {
    pub target: String,
    pub overlay: String,
    /// The snapshot's file it is backed by, and that file's format.
    pub file: String,
    pub format: DiskFormat,
}

fn mark_done(tree: &mut Tree, i: usize) {
    if let Some(s) = tree.journal.as_mut().and_then(|j| j.steps.get_mut(i)) {
        s.done = true;
    }
}

pub(super) fn qemu(domain: &str, message: String) -> Error {
    Error::Qemu {
        name: domain.to_owned(),
        operation: "snapshot-delete".into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::snapshots::meta::SnapDisk;

    fn disks(dir: &std::path::Path) -> std::collections::BTreeMap<String, SnapDisk> {
        ["vda", "vdb"]
            .into_iter()
            .map(|t| {
                let file = dir.join(format!("{t}.qcow2")).display().to_string();
                (
                    t.to_owned(),
                    SnapDisk {
                        file,
                        format: DiskFormat::Qcow2,
                    },
                )
            })
            .collect()
    }

    /// One disk's name taken moves every disk to the next counter; the taken file is left.
    #[test]
    fn free_overlays_skips_a_counter_whose_name_a_file_has() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("d.vdb.s.r5.qcow2");
        std::fs::write(&taken, b"theirs").unwrap();
        let (n, made) = free_overlays("d", "s", &disks(dir.path()), 5).unwrap();
        assert_eq!(n, 6);
        let names: Vec<_> = made.iter().map(|m| m.overlay.clone()).collect();
        let at = |t: &str| {
            dir.path()
                .join(format!("d.{t}.s.r6.qcow2"))
                .display()
                .to_string()
        };
        assert_eq!(names, [at("vda"), at("vdb")]);
        assert_eq!(std::fs::read(&taken).unwrap(), b"theirs");
    }

    /// A run of taken names longer than the tries: refused, naming the range.
    #[test]
    fn free_overlays_gives_up_after_its_tries() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=FREE_NAME_TRIES {
            std::os::unix::fs::symlink(
                "/nonexistent",
                dir.path().join(format!("d.vda.s.r{n}.qcow2")),
            )
            .unwrap();
        }
        let e = free_overlays("d", "s", &disks(dir.path()), 1).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { message, .. }
                if message.contains("no free overlay name") && message.contains("from r1 on")),
            "{e:?}"
        );
        // From r2 on, the first free one is within the tries (a dangling symlink counts as
        // taken).
        let (n, _) = free_overlays("d", "s", &disks(dir.path()), 2).unwrap();
        assert_eq!(n, FREE_NAME_TRIES + 1);
    }
}
