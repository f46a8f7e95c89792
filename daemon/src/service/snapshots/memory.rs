//! Full snapshots (disks and RAM). Taking one: the guest is paused (`stop`), its disks get
//! overlays in the same transaction a disk-only snapshot uses, and QEMU writes its state
//! (`migrate` to a descriptor the daemon opened on `<snap>.ram.tmp` in the domain's snapshot
//! directory), which is fsync'd and renamed; the guest then runs on. In live mode QEMU's
//! `background-snapshot` restarts the vCPUs as soon as the devices are saved and writes the
//! RAM while the guest runs (userfaultfd write-protection keeps the pages as they were).
//! Reverting: the guest's QEMU is replaced by a new one started with the device set recorded
//! in the snapshot (as a migration's destination is), `-incoming defer`, fresh overlays over
//! the snapshot's disks, the state loaded from the file, then `cont`.
//!
//! As libvirt's external revert does, the old guest is stopped first (SIGTERM, so QEMU closes
//! its images cleanly; SIGKILL after a grace period): a revert discards the running state by
//! definition. What must not be discarded before the load is known good is what was on disk:
//! the fresh overlays are adopted (tree, definition, the old state's files unlinked) only once
//! QEMU has loaded the state. A failed load leaves the domain stopped on the disks it had,
//! restartable, the snapshot kept, the overlays removed, with QEMU's own words (from its log:
//! QMP's error-desc is empty for a failed load) in the error.
//!
//! Keeping the old guest paused until the new one has loaded is not done: both QEMUs would
//! hold the guest's RAM at once (twice its memory, hugepages included, for the load's
//! duration) and everything a QEMU holds per domain would need a second identity while both
//! live: the QMP socket, runtime record, guest directory and memory-backing file are named
//! by the domain, taps by its uuid and NIC slot, pinned CPUs, VFIO devices (which cannot be
//! opened twice), display ports and the cgroup are held by one process. Image locks would
//! not conflict (the new QEMU reads the snapshot's files, which the old one has read-only at
//! most). That is a local migration's machinery, a large change for a failure that now loses
//! nothing on disk.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use novacron_domain::model::{DiskFormat, DiskSource};
use novacron_domain::snapshot::SnapshotState;
use novacron_domain::{DomainConfig, Error};
use novacron_qmp::commands::{
    Cont, Migrate, MigrateIncoming, MigrateSetCapabilities, MigrationCapabilityStatus,
    QueryMigrate, QueryStatus, Stop,
};
use novacron_qmp::qapi::{MigrationCapability, MigrationStatus};
use novacron_qmp::{Client, EventKind, Subscription};
use serde_json::json;

use super::create::{insert_snap, new_snap, Plan};
use super::meta::{self, PendingMemory, Snap, SnapKind, Tree};
use super::{invalid, io_err, placement, CreateRequest, MemoryMode, SnapshotInfo, Where};
use crate::service::domain::{DomainHandle, Intent, Live, Monitor, Run, UpState};
use crate::service::events::StateReason;
use crate::service::Service;

/// The names QEMU's monitor knows the state file's descriptor by (`getfd`).
const SAVE_FD: &str = "novacron-ram-save";
const LOAD_FD: &str = "novacron-ram-load";
/// Longest a RAM save or load may take (QEMU writes at disk speed).
const TRANSFER_WAIT: Duration = Duration::from_secs(3600);
/// How long the old QEMU of a reverted guest gets to exit on SIGTERM, then after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long a revert's QEMU that failed its load gets to exit by itself (and log why).
const EXIT_WAIT: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(10);
/// `max-bandwidth` while writing a state file: unlimited, as libvirt sets it for a save to a
/// file (QEMU's default throttles a migration to 128 MiB/s).
const UNLIMITED: u64 = i64::MAX as u64;

/// `<dir>/<snap>.ram` and the temporary name it is written under.
pub(super) fn state_files(dir: &Path, snap: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{snap}.ram")),
        dir.join(format!(".{snap}.ram.tmp")),
    )
}

fn qemu(domain: &str, operation: &str, message: impl std::fmt::Display) -> Error {
    Error::Qemu {
        name: domain.to_owned(),
        operation: operation.to_owned(),
        message: message.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

/// The migration capabilities a state file is written or read with.
async fn set_capabilities(q: &Client, background: bool) -> Result<(), novacron_qmp::Error> {
    q.execute(&MigrateSetCapabilities {
        capabilities: vec![
            MigrationCapabilityStatus {
                capability: MigrationCapability::Events,
                state: true,
            },
            MigrationCapabilityStatus {
                capability: MigrationCapability::BackgroundSnapshot,
                state: background,
            },
        ],
    })
    .await
    .map(drop)
}

/// What a save's wait saw.
#[derive(Default)]
struct Ended {
    /// QEMU restarted the vCPUs itself (a background snapshot): when, by its clock (µs).
    resumed_us: Option<i64>,
}

fn micros(t: &novacron_qmp::Event) -> i64 {
    let t = t.timestamp;
    t.seconds * 1_000_000 + t.microseconds
}

/// Waits for the migration on `q` to end by its MIGRATION events (`events` subscribed before
/// it began), noting a RESUME on the way.
async fn wait_migration(q: &Client, events: &mut Subscription) -> Result<Ended, String> {
    let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
    let mut ended = Ended::default();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = events
            .wait_for(left, |e| {
                matches!(e.kind, EventKind::Migration { .. } | EventKind::Resume)
            })
            .await
            .map_err(|e| format!("waiting for QEMU's migration: {e}"))?;
        match &e.kind {
            EventKind::Resume => ended.resumed_us = Some(micros(&e)),
            EventKind::Migration {
                status: MigrationStatus::Completed,
            } => return Ok(ended),
            EventKind::Migration {
                status: status @ (MigrationStatus::Failed | MigrationStatus::Cancelled),
            } => {
                let why = q
                    .execute(&QueryMigrate)
                    .await
                    .ok()
                    .and_then(|i| i.error_desc)
                    .unwrap_or_default();
                return Err(if why.is_empty() {
                    format!("QEMU's migration ended {status:?}")
                } else {
                    format!("QEMU's migration ended {status:?}: {why}")
                });
            }
            _ => {}
        }
    }
}

impl Service {
    /// A full snapshot of the running guest `live` (the caller holds the domain's jobs and
    /// checked the name).
    pub(super) async fn take_with_memory(
        &self,
        h: &DomainHandle,
        live: &Arc<Live>,
        mut tree: Tree,
        req: &CreateRequest,
        mode: MemoryMode,
    ) -> Result<SnapshotInfo, Error> {
        let domain = h.name.clone();
        let q = live.qmp(&domain)?.clone();
        let op = "snapshot-create --memory";
        if tree.pending_memory.is_some() {
            return Err(Error::Busy {
                name: domain,
                detail: "an interrupted snapshot with memory is being rolled back".into(),
            });
        }
        // The device set now (hot-plugged vCPUs, memory and disks): what a revert replays.
        let set = crate::service::migration::device_set(
            &self.inner,
            &domain,
            live,
            h.definition().config.config(),
        )
        .await?;
        let (xml, live_vcpus) = (set.config.to_xml(), set.live_vcpus);
        let was_running = q
            .execute(&QueryStatus)
            .await
            .map_err(|e| qemu(&domain, op, e))?
            .running;
        // A paused guest has no downtime to spare, and QEMU's background snapshot would
        // start its vCPUs: its RAM is written as in paused mode.
        let background = mode == MemoryMode::Live && was_running;
        if let Err(e) = set_capabilities(&q, background).await {
            return Err(if background {
                invalid(
                    "memory",
                    format!(
                        "'live' needs QEMU's background-snapshot, which QEMU refuses here \
                         ({e}): {}; take it with memory 'paused'",
                        self.userfaultfd_why(&e.to_string()).await
                    ),
                )
            } else {
                qemu(&domain, op, e)
            });
        }
        let bandwidth = live::raw(&q, "query-migrate-parameters", json!({}))
            .await
            .ok()
            .and_then(|p| p["max-bandwidth"].as_u64());
        let _ = live::raw(
            &q,
            "migrate-set-parameters",
            json!({ "max-bandwidth": UNLIMITED }),
        )
        .await;
        let dir = meta::dir(&self.state_dir(), &domain);
        let (file, temp) = state_files(&dir, &req.name);
        let t = temp.clone();
        // The state file is at most the guest's RAM (memory devices included) plus QEMU's
        // device state; a margin covers the latter. It shares the filesystem with every
        // definition and record, so a save that cannot fit is refused before the pause.
        let need = live
            .config()
            .memory
            .memory_kib
            .saturating_mul(1024)
            .saturating_add(STATE_MARGIN);
        let opened = blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(t.parent().unwrap_or(Path::new(".")))
                .map_err(|e| io_err("create", t.display(), e))?;
            let fd = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&t)
                .map(OwnedFd::from)
                .map_err(|e| io_err("create the RAM state file", t.display(), e))?;
            let st = nix::sys::statvfs::fstatvfs(fd.as_fd())
                .map_err(|e| io_err("statvfs", t.display(), e))?;
            let available = st.blocks_available().saturating_mul(st.fragment_size());
            if available < need {
                let _ = std::fs::remove_file(&t);
                return Ok(Err(available));
            }
            Ok(Ok(fd))
        })
        .await;
        let fd = match opened {
            Ok(Ok(fd)) => fd,
            Ok(Err(available)) => {
                restore_settings(&q, bandwidth).await;
                return Err(invalid(
                    "memory",
                    format!(
                        "the snapshot directory {} has {available} bytes available, the RAM \
                         state of '{domain}' needs up to {need} bytes",
                        dir.display()
                    ),
                ));
            }
            Err(e) => {
                restore_settings(&q, bandwidth).await;
                return Err(e);
            }
        };
        // The overlays are planned and made before the guest pauses (its pause is QMP only).
        let place = Where::Running(live.clone());
        let planned = match self.plan_overlays(h, &place, &mut tree, req).await {
            Ok(p) => p,
            Err(e) => {
                let t = temp.clone();
                let _ = blocking(move || {
                    let _ = std::fs::remove_file(&t);
                    Ok(())
                })
                .await;
                restore_settings(&q, bandwidth).await;
                return Err(e);
            }
        };
        // Recorded before the overlay files are made and QEMU gets the descriptor: a daemon
        // restarted from here on settles the overlays as a disk-only snapshot's (`recover`;
        // the journal names no snapshot: this one's RAM is gone), removes the partial file
        // and resumes the guest.
        super::create::journal_create(&mut tree, &req.name, &planned, None, &place);
        tree.pending_memory = Some(PendingMemory {
            snapshot: req.name.clone(),
            temp_file: temp.display().to_string(),
            was_running,
            pid: live.pid,
            start_time: live.record.start_time,
        });
        let mut events = q.subscribe();
        let prepared = match self.save_tree(&domain, &tree).await {
            Ok(()) => self.make_overlays(planned).await,
            Err(e) => Err(e),
        };
        let paused = match prepared {
            Ok(p) if was_running => match q.execute(&Stop).await {
                Ok(_) => Ok(p),
                Err(e) => {
                    super::create::remove_overlays(&p.plans).await;
                    Err(qemu(&domain, op, e))
                }
            },
            other => other,
        };
        // Set when QEMU may have switched the disks without saying so: the journal stays.
        let mut switch_unknown = false;
        let result = match paused {
            Ok(prepared) => {
                self.save_ram(
                    h,
                    live,
                    &q,
                    &mut events,
                    &mut tree,
                    prepared,
                    &fd,
                    &file,
                    &temp,
                    background,
                    &mut switch_unknown,
                )
                .await
            }
            Err(e) => Err(e),
        };
        drop(fd);
        let restore = restore_settings(&q, bandwidth);
        let (plans, ended) = match result {
            Ok(ok) => ok,
            Err(e) => {
                // Rolled back: no state file, no snapshot; overlays already switched to stay
                // the disks' active files (nothing of the guest's is lost), the guest runs on.
                // A switch QEMU did not answer keeps its journal (the next snapshot operation
                // settles it from the block graph).
                tree.pending_memory = None;
                if !switch_unknown {
                    tree.journal = None;
                }
                let t = temp.clone();
                let _ = blocking(move || {
                    let _ = std::fs::remove_file(&t);
                    Ok(())
                })
                .await;
                if let Err(e) = self.save_tree(&domain, &tree).await {
                    tracing::warn!(domain, error = %e, "snapshot metadata after a failed RAM save");
                }
                if was_running && !q.execute(&QueryStatus).await.is_ok_and(|s| s.running) {
                    if let Err(e) = q.execute(&Cont).await {
                        tracing::error!(domain, error = %e, "cannot resume the guest after a failed RAM save");
                    }
                }
                restore.await;
                return Err(e);
            }
        };
        // The paused guest runs on: before the metadata's write, which the guest need not
        // wait for (the state file is durable already; a crash now only forgets it).
        if was_running && !background {
            if let Err(e) = q.execute(&Cont).await {
                tracing::error!(domain, error = %e, "cannot resume the guest after its RAM save");
            }
        }
        restore.await;
        let state = if was_running {
            SnapshotState::Running
        } else {
            SnapshotState::Paused
        };
        let mut snap = new_snap(req, &plans, SnapKind::Memory, state);
        snap.memory_file = Some(file.display().to_string());
        snap.domain_xml = Some(xml);
        snap.live_vcpus = live_vcpus;
        snap.downtime_ms = match (background, ended.stopped_us, ended.saved.resumed_us) {
            (true, Some(a), Some(b)) => Some(u64::try_from((b - a).max(0)).unwrap_or(0) / 1000),
            _ => None,
        };
        insert_snap(&mut tree, snap);
        tree.pending_memory = None;
        tree.recount();
        self.save_tree(&domain, &tree).await?;
        let s = &tree.snapshots[&req.name];
        Ok(super::info(&tree, s))
    }

    /// Why QEMU has no userfaultfd write-protection: as the post-copy check says, an
    /// unprivileged QEMU gets userfaultfd only with `vm.unprivileged_userfaultfd = 1`.
    async fn userfaultfd_why(&self, qemu_said: &str) -> String {
        const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";
        if qemu_said.contains("memory configuration") {
            return "it write-protects the guest's memory with userfaultfd, which QEMU 7.2 does \
                    for anonymous memory only, not for a <memoryBacking> file or hugepages"
                .to_owned();
        }
        let off = tokio::fs::read_to_string(SYSCTL)
            .await
            .is_ok_and(|v| v.trim() == "0");
        match self.inner.run_as.as_ref().filter(|r| !r.uid.is_root()) {
            Some(user) if off => format!(
                "it write-protects the guest's memory with userfaultfd, QEMU runs as '{}' \
                 here, and this host gives userfaultfd to unprivileged processes only with \
                 vm.unprivileged_userfaultfd = 1 (it is 0)",
                user.user
            ),
            _ => "it write-protects the guest's memory with userfaultfd, and this kernel \
                  offers no write-protection for it"
                .to_owned(),
        }
    }

    /// With the guest paused (or, for a background snapshot, about to be): the disks'
    /// overlays in one transaction, recorded, then the RAM written, fsync'd and renamed.
    #[allow(clippy::too_many_arguments)]
    async fn save_ram(
        &self,
        h: &DomainHandle,
        live: &Arc<Live>,
        q: &Client,
        events: &mut Subscription,
        tree: &mut Tree,
        prepared: super::create::Prepared,
        fd: &OwnedFd,
        file: &Path,
        temp: &Path,
        background: bool,
        switch_unknown: &mut bool,
    ) -> Result<(Vec<Plan>, Saved), Error> {
        let domain = h.name.clone();
        let op = "snapshot-create --memory";
        // QEMU's STOP event carries its clock: the start of the guest's pause (for a
        // background snapshot's downtime; `stop` emitted it before answering).
        let stopped_us = if background {
            events
                .wait_for(Duration::from_secs(5), |e| {
                    matches!(e.kind, EventKind::Stop)
                })
                .await
                .ok()
                .map(|e| micros(&e))
        } else {
            None
        };
        let plans = match self
            .switch_overlays(h, &Where::Running(live.clone()), prepared)
            .await
        {
            Ok(p) => p,
            Err(super::create::SwitchError::Undone(e)) => return Err(e),
            Err(super::create::SwitchError::Unknown(e)) => {
                *switch_unknown = true;
                return Err(e);
            }
        };
        let started = async {
            q.send_fd(SAVE_FD, fd.as_fd())
                .await
                .map_err(|e| qemu(&domain, op, e))?;
            q.execute(&Migrate {
                uri: format!("fd:{SAVE_FD}"),
                resume: None,
            })
            .await
            .map_err(|e| qemu(&domain, op, e))
        }
        .await;
        if let Err(e) = started {
            // The disks run on the overlays now: the tree and the definition must say so, or
            // the next cold boot would start from the overlays' bases and lose every write.
            if let Err(e) = self.finish_create(h, tree, &plans, true).await {
                tracing::error!(domain, error = %e, "recording the overlays after a refused RAM save");
                // The journal stays: the next snapshot operation or restart finishes it.
                *switch_unknown = true;
            }
            return Err(e);
        }
        // The overlays recorded while QEMU writes (a background snapshot's guest runs again
        // meanwhile); a failure here cancels the save.
        if let Err(e) = self.finish_create(h, tree, &plans, true).await {
            // The journal stays (see above).
            *switch_unknown = true;
            let _ = q.execute(&novacron_qmp::commands::MigrateCancel).await;
            let _ = wait_migration(q, events).await;
            return Err(e);
        }
        let ended = wait_migration(q, events)
            .await
            .map_err(|e| qemu(&domain, op, e))?;
        let copy = fd
            .try_clone()
            .map_err(|e| io_err("duplicate", temp.display(), e))?;
        let (f, t) = (file.to_owned(), temp.to_owned());
        blocking(move || {
            std::fs::File::from(copy)
                .sync_all()
                .map_err(|e| io_err("fsync", t.display(), e))?;
            std::fs::rename(&t, &f).map_err(|e| io_err("rename", t.display(), e))?;
            if let Some(d) = f.parent() {
                std::fs::File::open(d)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("fsync", d.display(), e))?;
            }
            Ok(())
        })
        .await?;
        Ok((
            plans,
            Saved {
                stopped_us,
                saved: ended,
            },
        ))
    }

    /// Replaces the guest with a new QEMU continuing from full snapshot `s` (the caller holds
    /// the domain's jobs).
    pub(super) async fn revert_with_memory(
        &self,
        h: &Arc<DomainHandle>,
        mut tree: Tree,
        s: Snap,
    ) -> Result<(), Error> {
        let inner = self.inner.clone();
        let domain = h.name.clone();
        let op = "snapshot-revert";
        let (Some(file), Some(xml)) = (s.memory_file.clone(), s.domain_xml.clone()) else {
            return Err(Error::Internal(format!(
                "snapshot '{}' has a RAM state file but no recorded device set",
                s.name
            )));
        };
        if tree.pending_memory.is_some() || tree.journal.is_some() || tree.pending_revert.is_some()
        {
            return Err(Error::Busy {
                name: domain,
                detail: "an interrupted snapshot operation is being finished".into(),
            });
        }
        let mut config = DomainConfig::from_xml(&xml).map_err(|e| {
            Error::Internal(format!(
                "snapshot '{}': its recorded domain cannot be read: {e}",
                s.name
            ))
        })?;
        let place = placement(h, "revert")?;
        if matches!(place, Where::Running(_)) && !h.definition().persistent {
            return Err(Error::InvalidConfig(format!(
                "domain '{domain}' is transient: it ends with its QEMU, and a revert to a \
                 snapshot with memory starts a new QEMU; define it first"
            )));
        }
        // Opened before anything changes: a missing or replaced file refuses the revert.
        let f = file.clone();
        let state_fd = blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&f)
                .map_err(|e| io_err("open the RAM state file", &f, e))?;
            let meta = file
                .metadata()
                .map_err(|e| io_err("read the RAM state file", &f, e))?;
            if !meta.is_file() {
                return Err(io_err("read the RAM state file", &f, "not a regular file"));
            }
            Ok(OwnedFd::from(file))
        })
        .await?;
        let began = std::time::Instant::now();
        // The fresh overlays first, while the old guest still runs (they only read the
        // snapshot's files). Until the new QEMU has loaded the state, the tree and the
        // definition keep the disks the guest had: a failed load leaves the domain stopped
        // on them, nothing lost. Recorded as pending, so a restart removes them.
        // (`revert_overlays` records them as pending before it makes them.)
        let made = self.revert_overlays(h, &mut tree, &s).await?;
        let disks = began.elapsed();
        if let Where::Running(old) = &place {
            // The old guest is discarded, as libvirt's revert does (why it is not kept paused
            // until the load is done: see the module's comment).
            old.set_intent(Intent::Destroy);
            if let Err(e) = stop_old(h, old).await.map_err(|e| qemu(&domain, op, e)) {
                self.drop_revert(&domain, &mut tree, true).await;
                return Err(e);
            }
        }
        let killed = began.elapsed();
        for m in &made {
            if let Some(d) = config
                .devices
                .disks
                .iter_mut()
                .find(|d| d.target.dev == m.target)
            {
                d.source = Some(DiskSource::File {
                    path: m.overlay.clone(),
                });
                d.driver.format = DiskFormat::Qcow2;
            }
        }
        let failed = |e: Error| {
            let reason = StateReason::StartFailed(e.to_string());
            (e, reason)
        };
        if let Err(e) = h.transition(&inner.events, Run::Starting, StateReason::Starting) {
            self.drop_revert(&domain, &mut tree, true).await;
            return Err(e);
        }
        let trust = h.definition().trust;
        // What this QEMU writes to its log from here on is its own (QEMU says why a load
        // failed there, not over QMP).
        let log = inner.paths.qemu_log(&domain);
        let log_offset = {
            let l = log.clone();
            blocking(move || Ok(std::fs::metadata(&l).map_or(0, |m| m.len())))
                .await
                .unwrap_or(0)
        };
        // The runtime record marks it incoming: a daemon restarted before the load is done
        // discards this QEMU (the guest stays off on the disks it had).
        let mark = format!("revert-{}", s.name);
        let launched = match crate::service::lifecycle::launch_as(
            &inner,
            &domain,
            &config,
            Some(&mark),
            trust,
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                self.drop_revert(&domain, &mut tree, true).await;
                let (e, reason) = failed(e);
                let _ = h.transition(&inner.events, Run::Off, reason);
                return Err(e);
            }
        };
        let started = began.elapsed();
        let loaded = async {
            let q = launched.live.qmp(&domain)?.clone();
            if let Some(count) = s.live_vcpus {
                crate::service::live_resources::vcpus::plug_before_incoming(
                    &inner,
                    &domain,
                    &launched.live,
                    count,
                )
                .await?;
            }
            set_capabilities(&q, false)
                .await
                .map_err(|e| qemu(&domain, op, e))?;
            let mut events = q.subscribe();
            q.send_fd(LOAD_FD, state_fd.as_fd())
                .await
                .map_err(|e| qemu(&domain, op, e))?;
            q.execute(&MigrateIncoming {
                uri: format!("fd:{LOAD_FD}"),
            })
            .await
            .map_err(|e| qemu(&domain, op, e))?;
            wait_migration(&q, &mut events)
                .await
                .map_err(Failure::Load)?;
            // The state is in: the fresh overlays become the disks' files (tree, definition;
            // what only the old state used is unlinked now, not before).
            self.adopt_revert(h, &mut tree, &s.name, made.clone())
                .await?;
            // With the live set as replayed before the load (hot-plugged vCPUs).
            let mut record = launched.live.record_now();
            record.incoming = None;
            inner.records.save(&record).await.map_err(|e| {
                Error::Internal(format!(
                    "cannot write the runtime record of '{domain}': {e}"
                ))
            })?;
            Ok::<_, Failure>((q, record))
        }
        .await;
        drop(state_fd);
        let mut launched = launched;
        let (q, record) = match loaded {
            Ok(ok) => ok,
            Err(failure) => {
                let load_failed = matches!(failure, Failure::Load(_));
                if load_failed {
                    // QEMU exits by itself after a failed incoming load, saying why on its
                    // stderr (QMP's error-desc stays empty): its log holds the reason once
                    // it is gone.
                    let _ = tokio::time::timeout(EXIT_WAIT, launched.child.wait()).await;
                }
                crate::service::migration::kill_unstarted(&inner, &domain, launched).await;
                let e = match failure {
                    Failure::Other(e) => e,
                    Failure::Load(why) => {
                        let l = log.clone();
                        let said = blocking(move || Ok(qemu_said(&l, log_offset)))
                            .await
                            .unwrap_or_default();
                        qemu(
                            &domain,
                            op,
                            format!(
                                "loading snapshot '{}' (state file {file}) failed: {why}; \
                                 QEMU said: {said}; the guest is stopped on the disks it had",
                                s.name
                            ),
                        )
                    }
                };
                // Still pending unless adopted: settled as a restart would (finished when the
                // adoption's repoint was written and only its tree write failed).
                if let Err(e) = self.settle_revert(h, &mut tree).await {
                    tracing::warn!(domain, error = %e, "snapshot metadata after a failed revert");
                }
                let (e, reason) = failed(e);
                let _ = h.transition(&inner.events, Run::Off, reason);
                return Err(e);
            }
        };
        let load_done = began.elapsed();
        let live = Arc::new(Live::new(
            launched.live.pid,
            record,
            Monitor::Connected(q.clone()),
        ));
        let running = s.state != SnapshotState::Paused;
        h.transition(
            &inner.events,
            Run::Up {
                live: live.clone(),
                state: if running {
                    UpState::Running
                } else {
                    UpState::Paused
                },
            },
            StateReason::Restored,
        )?;
        if running {
            if let Err(e) = q.execute(&Cont).await {
                tracing::error!(domain, error = %e, "cannot resume the reverted guest");
            }
        }
        if let Some(known) = launched.pinned_threads {
            crate::service::placement::pin_late_threads(h.clone(), live.clone(), known);
        }
        crate::service::supervise::spawn(
            inner.clone(),
            h.clone(),
            live,
            Some(launched.child),
            Some(launched.events),
        );
        // Where a revert's time goes (cumulative ms; the overlays are made first, then the
        // old QEMU stopped).
        tracing::info!(
            domain,
            snapshot = s.name,
            disks_ms = disks.as_millis() as u64,
            killed_ms = killed.as_millis() as u64,
            started_ms = started.as_millis() as u64,
            loaded_ms = load_done.as_millis() as u64,
            total_ms = began.elapsed().as_millis() as u64,
            "reverted to a snapshot with memory"
        );
        Ok(())
    }

    /// A revert that did not get to its load's end: its fresh overlays are removed and, when
    /// `recorded`, the tree no longer lists them as pending (the tree and the definition
    /// never named them as the disks' files).
    pub(super) async fn drop_revert(&self, domain: &str, tree: &mut Tree, recorded: bool) {
        let Some(pending) = tree.pending_revert.take() else {
            return;
        };
        let _ = blocking(move || {
            for f in pending.overlays {
                // Only a file made over the snapshot's file (its header says so): another
                // file under the name is not the revert's and stays.
                let ours = pending
                    .backing
                    .get(&f)
                    .is_some_and(|b| super::recover::made_over(&f, b));
                if !ours {
                    if std::fs::symlink_metadata(&f).is_ok() {
                        tracing::warn!(
                            file = f,
                            "a revert's overlay name holds a file not made by the revert: left"
                        );
                    }
                    continue;
                }
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = f, error = %e, "cannot remove a revert's overlay")
                    }
                }
            }
            Ok(())
        })
        .await;
        if recorded {
            if let Err(e) = self.save_tree(domain, tree).await {
                tracing::error!(domain, error = %e, "snapshot metadata after a failed revert");
            }
        }
    }

    /// After a restart: a RAM save the previous daemon left unfinished is rolled back (its
    /// partial file removed, a guest it paused resumed), and state files no snapshot names
    /// (a crash between a deletion's metadata and its unlink) are removed.
    pub(super) async fn recover_memory(&self, domain: &str) -> Result<(), Error> {
        let tree = self.load_tree(domain).await?;
        if tree.pending_memory.is_none()
            && tree.pending_revert.is_none()
            && self.orphan_states(domain, &tree).await?.is_empty()
        {
            return Ok(());
        }
        let h = self.inner.handle(domain)?;
        let _job = h
            .begin(crate::service::jobs::Job::Modify, Duration::from_secs(60))
            .await?;
        let mut tree = self.load_tree(domain).await?;
        if let Some(p) = tree.pending_memory.take() {
            let t = p.temp_file.clone();
            blocking(move || match std::fs::remove_file(&t) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("remove", &t, e)),
            })
            .await?;
            if let Where::Running(l) = placement(&h, "recover a snapshot of")? {
                let same = l.pid == p.pid && l.record.start_time == p.start_time;
                if same {
                    let q = l.qmp(domain)?;
                    // A save that still runs is cancelled first (it writes a removed file).
                    let _ = q.execute(&novacron_qmp::commands::MigrateCancel).await;
                    let _ = set_capabilities(q, false).await;
                    if p.was_running && !q.execute(&QueryStatus).await.is_ok_and(|s| s.running) {
                        q.execute(&Cont)
                            .await
                            .map_err(|e| qemu(domain, "resume after an interrupted RAM save", e))?;
                    }
                }
            }
            self.save_tree(domain, &tree).await?;
            tracing::info!(
                domain,
                snapshot = p.snapshot,
                "interrupted snapshot with memory rolled back"
            );
        }
        // A revert cut short: before the definition named its fresh overlays they go (a
        // revert with memory's QEMU was discarded, its record is marked incoming: the guest
        // is off on the disks it had); after, the revert is finished (the guest is off on
        // the snapshot's disks).
        if let Some(p) = tree.pending_revert.clone() {
            let finished = self.settle_revert(&h, &mut tree).await?.is_some();
            tracing::info!(
                domain,
                snapshot = p.snapshot,
                "interrupted revert {}",
                if finished { "finished" } else { "rolled back" }
            );
        }
        let orphans = self.orphan_states(domain, &tree).await?;
        self.unlink_files(orphans).await;
        Ok(())
    }

    /// State files in the domain's snapshot directory that no snapshot names and no save in
    /// flight writes (only names this module makes).
    async fn orphan_states(&self, domain: &str, tree: &Tree) -> Result<Vec<String>, Error> {
        let dir = meta::dir(&self.state_dir(), domain);
        // Compared by file name, not by path: a state directory spelled differently (a
        // symlink resolved, a moved directory) must never make every state file an orphan.
        let file_name = |p: &str| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        };
        let known: Vec<String> = tree
            .snapshots
            .values()
            .filter_map(|s| s.memory_file.as_deref().and_then(file_name))
            .chain(tree.snapshots.keys().map(|n| format!("{n}.ram")))
            .chain(
                tree.pending_memory
                    .iter()
                    .filter_map(|p| file_name(&p.temp_file)),
            )
            .collect();
        blocking(move || {
            let mut out = Vec::new();
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(out);
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours =
                    name.ends_with(".ram") || (name.starts_with('.') && name.ends_with(".ram.tmp"));
                let path = e.path().display().to_string();
                if ours && !known.contains(&name) {
                    out.push(path);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Stops the QEMU `old` of a guest being reverted as `destroy` does: SIGTERM, on which QEMU
/// closes its images cleanly (what the guest wrote and QEMU still cached reaches the disks,
/// which a failed load leaves the domain on), then SIGKILL after a grace period.
async fn stop_old(h: &DomainHandle, old: &Arc<Live>) -> Result<(), String> {
    let mut watch = h.watch();
    old.signal(Signal::SIGTERM)
        .map_err(|e| format!("cannot signal QEMU: {e}"))?;
    let gone = crate::service::lifecycle::gone(&mut watch, old);
    if tokio::time::timeout(TERM_GRACE, gone).await.is_ok() {
        return Ok(());
    }
    tracing::warn!(
        domain = h.name,
        pid = old.pid,
        "QEMU ignored SIGTERM; sending SIGKILL"
    );
    old.signal(Signal::SIGKILL)
        .map_err(|e| format!("cannot signal QEMU: {e}"))?;
    tokio::time::timeout(KILL_WAIT, crate::service::lifecycle::gone(&mut watch, old))
        .await
        .map_err(|_| {
            format!(
                "QEMU (pid {}) still runs {:?} after SIGKILL",
                old.pid,
                TERM_GRACE + KILL_WAIT
            )
        })
}

/// Why a revert's new QEMU did not get the guest running.
enum Failure {
    /// QEMU failed the load (the state file's fault, or a device set it refuses).
    Load(String),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

/// QEMU's own lines in its log from `offset` on (the daemon's start stamp left out), the
/// last ones first cut to a readable length.
fn qemu_said(log: &Path, offset: u64) -> String {
    let text = crate::qemu::spawn::log_since(log, offset, 8192);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.split_whitespace().nth(1) != Some("novacrond:"))
        .collect();
    if lines.is_empty() {
        return "nothing".to_owned();
    }
    let joined = lines.join(" / ");
    match joined.char_indices().rev().nth(1023) {
        Some((i, _)) => format!("...{}", &joined[i..]),
        None => joined,
    }
}

/// Room for QEMU's device state beside the RAM in a state file (bytes).
const STATE_MARGIN: u64 = 64 << 20;

/// Puts back what a save changed in QEMU's migration settings (a later live migration must
/// not run unthrottled or with background-snapshot on).
async fn restore_settings(q: &Client, bandwidth: Option<u64>) {
    let _ = set_capabilities(q, false).await;
    if let Some(b) = bandwidth {
        let _ = live::raw(q, "migrate-set-parameters", json!({ "max-bandwidth": b })).await;
    }
}

/// A save's timing by QEMU's clock.
struct Saved {
    stopped_us: Option<i64>,
    saved: Ended,
}

use super::live;
