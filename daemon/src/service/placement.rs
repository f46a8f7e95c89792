//! Placement of a running guest on the host: its threads' CPU pins (applied before `cont`,
//! changed live, restored after a daemon restart where they drifted) and its cgroup.

use std::sync::Arc;

use novacron_domain::model::IdSet;
use novacron_domain::{DomainConfig, Error};
use serde::{Deserialize, Serialize};

use super::domain::{Definition, DomainHandle, Live, Run};
use super::jobs::Job;
use super::{Inner, Service};
use crate::host::cgroup::{self, CgroupMode, Cgroups, Limits};
use crate::host::pinning::{self, ThreadKind, ThreadPin};

/// Which copy of the pins a change applies to, as `virsh vcpupin --live --config`; neither
/// means the current one (live while the guest runs, else the definition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinScope {
    pub live: bool,
    pub config: bool,
}

/// The pins of a guest: what each thread may run on and what the config asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinning {
    /// `live`: read from the running QEMU's threads (`Cpus_allowed_list`); `config`: from the
    /// definition, where an unpinned thread may use every online host CPU.
    pub source: String,
    pub vcpus: Vec<ThreadAffinity>,
    pub emulator: ThreadAffinity,
    pub iothreads: Vec<ThreadAffinity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadAffinity {
    /// The vCPU index or iothread id; absent for the emulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Host thread ids (live only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread_ids: Vec<u32>,
    /// The host CPUs it may run on (`0-3,8`).
    pub affinity: String,
    /// What the config asks, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// A thread whose affinity a restarted daemon found changed, and put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub thread: String,
    pub tid: u32,
    pub expected: String,
    pub found: String,
}

impl Service {
    /// The pins of `name`: live when it runs (unless `config`), else from the definition.
    pub async fn pinning(&self, name: &str, config: bool) -> Result<Pinning, Error> {
        let h = self.inner.handle(name)?;
        match h.run().live().filter(|_| !config) {
            Some(live) => live_view(live, name).await,
            None => config_view(&self.inner, h.definition().config.config()).await,
        }
    }

    /// Pins one thread (`virsh vcpupin`/`emulatorpin`/`iothreadpin`) to `cpuset`, live with
    /// sched_setaffinity (verified from /proc, recorded so a restarted daemon keeps it) and/or
    /// in the persistent definition. Bad input changes nothing.
    pub async fn pin(
        &self,
        name: &str,
        kind: ThreadKind,
        cpuset: &str,
        scope: PinScope,
    ) -> Result<Pinning, Error> {
        self.pin_inner(name, kind, cpuset, scope).await
    }

    async fn pin_inner(
        &self,
        name: &str,
        kind: ThreadKind,
        cpuset: &str,
        scope: PinScope,
    ) -> Result<Pinning, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let what = describe(kind);
        let set: IdSet = cpuset
            .parse()
            .map_err(|e| Error::InvalidConfig(format!("cpuset for {what} of '{name}': {e}")))?;
        let online = online_cpus(inner).await?;
        let offline: Vec<u32> = set.iter().filter(|c| !online.contains(c)).collect();
        if !offline.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "cpuset '{cpuset}' for {what} of '{name}' names host CPU(s) {} that are not \
                 online (online: {})",
                cgroup::list(&offline),
                cgroup::list(&online)
            )));
        }
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let live = match h.run() {
            Run::Up { live, .. } => Some(live),
            _ => None,
        };
        let (do_live, do_config) = match (scope.live, scope.config) {
            (false, false) => (live.is_some(), live.is_none()),
            (l, c) => (l, c),
        };
        let definition = h.definition();
        if do_live && live.is_none() {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "change the live pinning of",
            });
        }
        if do_config && !definition.persistent {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}' is transient: it has no persistent definition to pin in"
            )));
        }
        // Both new configs are built and validated before anything changes.
        let pinned = |config: &DomainConfig| -> Result<DomainConfig, Error> {
            check_target(config, kind, name)?;
            let mut config = config.clone();
            config.cputune = Some(pinning::with_pin(config.cputune.take(), kind, set.clone()));
            config.clone().validate()?;
            Ok(config)
        };
        let live_change = match (&live, do_live) {
            (Some(live), true) => Some((live.clone(), pinned(&live.config())?)),
            _ => None,
        };
        let config_change = if do_config {
            Some(pinned(definition.config.config())?.validate()?)
        } else {
            None
        };
        if let Some((live, config)) = live_change {
            apply_live(inner, name, &live, &config, kind).await?;
        }
        if let Some(validated) = config_change {
            let trust = h.definition().trust;
            inner
                .definitions
                .save(validated.config(), trust)
                .await
                .map_err(|e| Error::Io {
                    action: "write the definition",
                    path: inner.paths.definition(name).display().to_string(),
                    message: e.to_string(),
                })?;
            h.set_definition(Definition {
                config: Arc::new(validated),
                persistent: true,
                trust,
            });
        }
        match (h.run().live(), do_live || !do_config) {
            (Some(live), true) => live_view(live, name).await,
            _ => config_view(inner, h.definition().config.config()).await,
        }
    }
}

fn describe(kind: ThreadKind) -> String {
    match kind {
        ThreadKind::Vcpu(n) => format!("vCPU {n}"),
        ThreadKind::Iothread(n) => format!("iothread {n}"),
        ThreadKind::Emulator => "the emulator threads".to_owned(),
    }
}

fn check_target(config: &DomainConfig, kind: ThreadKind, name: &str) -> Result<(), Error> {
    match kind {
        ThreadKind::Vcpu(n) => {
            let vcpus = config.vcpu.current.unwrap_or(config.vcpu.count);
            if n >= vcpus {
                return Err(Error::InvalidConfig(format!(
                    "domain '{name}' has vCPUs 0-{}: there is no vCPU {n}",
                    vcpus.saturating_sub(1)
                )));
            }
        }
        ThreadKind::Iothread(n) => {
            let count = config.iothreads.unwrap_or(0);
            if n == 0 || n > count {
                return Err(Error::InvalidConfig(format!(
                    "domain '{name}' has {count} iothread(s) (ids 1-{count}): there is no \
                     iothread {n}"
                )));
            }
        }
        ThreadKind::Emulator => {}
    }
    Ok(())
}

/// Applies a live pin change: the guest's cpuset cgroup (if it has one) first, since writing
/// it resets every thread's affinity, then the pins, each verified; then the record.
async fn apply_live(
    inner: &Arc<Inner>,
    name: &str,
    live: &Arc<Live>,
    config: &DomainConfig,
    kind: ThreadKind,
) -> Result<(), Error> {
    let qmp = live.qmp(name)?;
    let threads = query_threads(qmp)
        .await
        .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?;
    let cgroups = cgroups(inner)?;
    // Under systemd the scope holds the cpuset: widen or narrow it first, then re-pin all.
    let scoped = match &inner.scopes {
        Some(scopes) if inner.config.cgroups.mode != CgroupMode::Off => {
            let cpus = pinning::cpus_of_all_threads(config);
            scopes
                .set_cpus(name, live.pid, cpus.as_deref())
                .await
                .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?;
            true
        }
        _ => false,
    };
    let (pid, cfg, domain) = (live.pid, config.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let pins = plan(pid, &cfg, &threads)?;
        let guest_cgroup = cgroups.filter(|c| c.guest(&domain).dirs.iter().all(|d| d.exists()));
        match guest_cgroup {
            Some(cg) => {
                let cpus = pinning::cpus_of_all_threads(&cfg);
                cg.set_cpus(&domain, cpus.as_deref())
                    .map_err(|e| e.to_string())?;
                pinning::apply(pid, &pins).map_err(|e| e.to_string())
            }
            None if scoped => pinning::apply(pid, &pins).map_err(|e| e.to_string()),
            None => {
                let only: Vec<ThreadPin> = pins.into_iter().filter(|p| p.kind == kind).collect();
                pinning::apply(pid, &only).map_err(|e| e.to_string())
            }
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?;
    live.set_cputune(config.cputune.clone());
    let record = live.record_now();
    inner.records.save(&record).await.map_err(|e| Error::Io {
        action: "update (after pinning) the runtime record",
        path: inner.paths.record(name).display().to_string(),
        message: e.to_string(),
    })
}

/// vCPU and iothread thread ids, as QMP reports them.
pub(super) struct Threads {
    vcpus: Vec<(u32, u32)>,
    iothreads: Vec<(String, u32)>,
}

pub(super) async fn query_threads(qmp: &novacron_qmp::Client) -> Result<Threads, String> {
    use novacron_qmp::commands::{QueryCpusFast, QueryIothreads};
    let tid = |t: i64| u32::try_from(t).map_err(|_| format!("QEMU reported thread id {t}"));
    let vcpus = qmp
        .execute(&QueryCpusFast)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|c| Ok((c.cpu_index, tid(c.thread_id)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let iothreads = qmp
        .execute(&QueryIothreads)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| Ok((t.id, tid(t.thread_id)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Threads { vcpus, iothreads })
}

/// The full plan for a QEMU now (blocking: lists its threads in /proc).
fn plan(pid: u32, config: &DomainConfig, threads: &Threads) -> Result<Vec<ThreadPin>, String> {
    let tids = pinning::threads(pid).map_err(|e| format!("listing QEMU's threads: {e}"))?;
    pinning::plan(config, &threads.vcpus, &threads.iothreads, &tids).map_err(|e| e.to_string())
}

/// Pins vCPU, iothread and emulator threads as the config asks, before the vCPUs first run.
/// Returns the threads it found (see `pin_late_threads` for those that come later).
pub(super) async fn pin_threads(
    qmp: &novacron_qmp::Client,
    pid: u32,
    config: &DomainConfig,
) -> Result<Vec<u32>, String> {
    let threads = query_threads(qmp).await?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let tids = pinning::threads(pid).map_err(|e| format!("listing QEMU's threads: {e}"))?;
        let pins = pinning::plan(&config, &threads.vcpus, &threads.iothreads, &tids)
            .map_err(|e| e.to_string())?;
        pinning::apply(pid, &pins).map_err(|e| e.to_string())?;
        Ok(tids)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// How long after a start threads that appear are watched for.
const LATE_THREADS_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Brings threads that appear once the vCPUs run under the emulator pin. Linux (6.14 on)
/// creates KVM's NX huge page recovery thread (`kvm-nx-lpage-re`) inside QEMU on the first
/// `KVM_RUN`, with the affinity of whichever vCPU thread got there first: left alone it sits on
/// a vCPU's CPUs, against `emulatorpin`, and the next daemon would "restore" it as drift.
/// Threads QEMU itself starts later inherit the (pinned) affinity of their creator and match.
/// `known` are the threads pinned before the vCPUs ran.
pub(super) fn pin_late_threads(h: Arc<DomainHandle>, live: Arc<Live>, known: Vec<u32>) {
    tokio::spawn(async move {
        let Ok(qmp) = live.qmp(&h.name).cloned() else {
            return;
        };
        let Ok(threads) = query_threads(&qmp).await else {
            return;
        };
        let threads = Arc::new(threads);
        let pid = live.pid;
        let mut seen: std::collections::BTreeSet<u32> = known.into_iter().collect();
        let deadline = tokio::time::Instant::now() + LATE_THREADS_FOR;
        let mut pause = std::time::Duration::from_millis(5);
        while tokio::time::Instant::now() < deadline && !live.has_exited() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
            let Ok(tids) = pinning::threads(pid) else {
                return;
            };
            if tids.iter().all(|t| seen.contains(t)) {
                continue;
            }
            // Under the domain's job, so a live pin change cannot interleave with this one.
            let Ok(_job) = h
                .begin(Job::Modify, std::time::Duration::from_secs(5))
                .await
            else {
                continue;
            };
            if live.has_exited() {
                return;
            }
            let (config, all, threads) = (live.config(), tids.clone(), threads.clone());
            let new: Vec<u32> = tids.into_iter().filter(|t| !seen.contains(t)).collect();
            let fresh = new.clone();
            let pinned = tokio::task::spawn_blocking(move || -> Result<Vec<ThreadPin>, String> {
                let pins = pinning::plan(&config, &threads.vcpus, &threads.iothreads, &all)
                    .map_err(|e| e.to_string())?;
                let mut moved = Vec::new();
                for pin in pins.into_iter().filter(|p| fresh.contains(&p.tid)) {
                    // A worker that ended since it was listed has nothing to pin.
                    let Ok(found) = pinning::affinity(pid, pin.tid) else {
                        continue;
                    };
                    if found != pin.cpus {
                        pinning::apply(pid, std::slice::from_ref(&pin))
                            .map_err(|e| e.to_string())?;
                        moved.push(pin);
                    }
                }
                Ok(moved)
            })
            .await;
            match pinned {
                Ok(Ok(moved)) => {
                    for pin in moved {
                        tracing::info!(domain = %h.name, tid = pin.tid, cpus = ?pin.cpus,
                            "a thread that appeared after the start is pinned as an emulator thread");
                    }
                    seen.extend(new);
                }
                Ok(Err(e)) => {
                    tracing::warn!(domain = %h.name, error = %e, "cannot pin a late QEMU thread");
                    seen.extend(new);
                }
                Err(_) => return,
            }
        }
    });
}

/// After a daemon restart: every pinned thread whose affinity differs from the plan is put
/// back; threads that match are not touched. Returns what had drifted.
pub(super) async fn restore_drifted(
    qmp: &novacron_qmp::Client,
    pid: u32,
    config: &DomainConfig,
) -> Result<Vec<Drift>, String> {
    if !pinning::wanted(config) {
        return Ok(Vec::new());
    }
    let threads = query_threads(qmp).await?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let mut drifted = Vec::new();
        for pin in plan(pid, &config, &threads)? {
            let found = match pinning::affinity(pid, pin.tid) {
                Ok(found) => found,
                // A worker thread that ended since it was listed.
                Err(_)
                    if !std::path::Path::new(&format!("/proc/{pid}/task/{}", pin.tid)).exists() =>
                {
                    continue
                }
                Err(e) => return Err(e.to_string()),
            };
            if found != pin.cpus {
                pinning::apply(pid, std::slice::from_ref(&pin)).map_err(|e| e.to_string())?;
                drifted.push(Drift {
                    thread: pin.what.clone(),
                    tid: pin.tid,
                    expected: cgroup::list(&pin.cpus),
                    found: cgroup::list(&found),
                });
            }
        }
        Ok(drifted)
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn live_view(live: &Arc<Live>, name: &str) -> Result<Pinning, Error> {
    let threads = query_threads(live.qmp(name)?)
        .await
        .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?;
    let (pid, config) = (live.pid, live.config());
    tokio::task::spawn_blocking(move || -> Result<Pinning, String> {
        let read = |tid: u32| {
            pinning::affinity(pid, tid)
                .map(|c| cgroup::list(&c))
                .map_err(|e| e.to_string())
        };
        let asked = |kind| pinning::asked(&config, kind).map(|s| s.to_string());
        let vcpus = threads
            .vcpus
            .iter()
            .map(|&(i, tid)| {
                Ok(ThreadAffinity {
                    id: Some(i),
                    thread_ids: vec![tid],
                    affinity: read(tid)?,
                    pinned: asked(ThreadKind::Vcpu(i)),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let iothreads = threads
            .iothreads
            .iter()
            .map(|(id, tid)| {
                let id = id.strip_prefix("iothread").and_then(|n| n.parse().ok());
                Ok(ThreadAffinity {
                    id,
                    thread_ids: vec![*tid],
                    affinity: read(*tid)?,
                    pinned: id.and_then(|n| asked(ThreadKind::Iothread(n))),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let special: Vec<u32> = threads
            .vcpus
            .iter()
            .map(|(_, t)| *t)
            .chain(threads.iothreads.iter().map(|(_, t)| *t))
            .collect();
        let tids = pinning::threads(pid).map_err(|e| e.to_string())?;
        let emulator = ThreadAffinity {
            id: None,
            thread_ids: tids.into_iter().filter(|t| !special.contains(t)).collect(),
            affinity: read(pid)?,
            pinned: asked(ThreadKind::Emulator),
        };
        Ok(Pinning {
            source: "live".into(),
            vcpus,
            emulator,
            iothreads,
        })
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))
}

async fn config_view(inner: &Arc<Inner>, config: &DomainConfig) -> Result<Pinning, Error> {
    let all = cgroup::list(&online_cpus(inner).await?);
    let entry = |id, kind| {
        let pinned = pinning::asked(config, kind).map(|s| s.to_string());
        ThreadAffinity {
            id,
            thread_ids: Vec::new(),
            affinity: pinned.clone().unwrap_or_else(|| all.clone()),
            pinned,
        }
    };
    let vcpus = config.vcpu.current.unwrap_or(config.vcpu.count);
    Ok(Pinning {
        source: "config".into(),
        vcpus: (0..vcpus)
            .map(|i| entry(Some(i), ThreadKind::Vcpu(i)))
            .collect(),
        emulator: entry(None, ThreadKind::Emulator),
        iothreads: (1..=config.iothreads.unwrap_or(0))
            .map(|i| entry(Some(i), ThreadKind::Iothread(i)))
            .collect(),
    })
}

async fn online_cpus(inner: &Arc<Inner>) -> Result<Vec<u32>, Error> {
    let sysfs = crate::host::SysfsRoot::new(&inner.config.sysfs_root);
    tokio::task::spawn_blocking(move || crate::host::Topology::read(&sysfs))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map(|t| t.online_cpus().collect())
        .map_err(|e| Error::Internal(format!("reading the host's CPUs: {e}")))
}

/// The cgroup manager when `[cgroups]` asks for one and the host can give the controllers
/// (decided once at open, see [`cgroup::GuestCgroups::decide`]).
fn cgroups(inner: &Inner) -> Result<Option<Cgroups>, Error> {
    Ok(inner.cgroups.active().cloned())
}

/// What a guest's cgroup limits: CPUs from the pins, memory nodes from a strict numatune,
/// memory from `<memtune>`.
pub fn limits(config: &DomainConfig) -> Limits {
    use novacron_domain::model::NumaMode;
    let mems = config
        .numatune
        .as_ref()
        .and_then(|n| n.memory.as_ref())
        .filter(|p| matches!(p.mode, NumaMode::Strict | NumaMode::Restrictive))
        .map(|p| p.nodeset.iter().collect());
    let memtune = config.memtune.as_ref();
    let kib_to_bytes = |kib: u64| kib.saturating_mul(1024);
    Limits {
        cpus: pinning::cpus_of_all_threads(config),
        mems,
        memory_max_bytes: memtune.and_then(|t| t.hard_limit_kib).map(kib_to_bytes),
        memory_high_bytes: memtune.and_then(|t| t.soft_limit_kib).map(kib_to_bytes),
    }
}

/// Whether a guest's memory limits (`<memtune>`) reach the kernel here: through its own
/// cgroup, or its systemd scope when `[cgroups]` is not off.
pub(super) fn memory_limits_apply(inner: &Inner) -> bool {
    inner.cgroups.active().is_some()
        || (inner.scopes.is_some() && inner.config.cgroups.mode != CgroupMode::Off)
}

/// The limits a guest's systemd scope carries: with `[cgroups]` on or auto, as the cgroup
/// would; none when cgroups are off.
pub(super) fn scope_limits(inner: &Inner, config: &DomainConfig) -> Limits {
    match inner.config.cgroups.mode {
        CgroupMode::Off => Limits::default(),
        CgroupMode::Auto | CgroupMode::On => limits(config),
    }
}

/// Moves a new QEMU into its own cgroup, before its threads are pinned.
pub(super) async fn enter_cgroup(
    inner: &Arc<Inner>,
    name: &str,
    pid: u32,
    config: &DomainConfig,
) -> Result<(), Error> {
    if inner.cgroups.active().is_none() {
        return Ok(());
    }
    let (limits, domain, inner2) = (limits(config), name.to_owned(), inner.clone());
    tokio::task::spawn_blocking(move || inner2.cgroups.place(&domain, pid, &limits))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map(|guest| tracing::debug!(domain = name, ?guest, "QEMU placed in its cgroup"))
        .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))
}

/// Removes a guest's cgroup once its QEMU is gone.
pub(super) async fn leave_cgroup(inner: &Arc<Inner>, name: &str) {
    let Ok(Some(cgroups)) = cgroups(inner) else {
        return;
    };
    let guest = cgroups.guest(name);
    let _ = tokio::task::spawn_blocking(move || {
        cgroup::remove(&guest, std::time::Duration::from_secs(2))
    })
    .await;
}
