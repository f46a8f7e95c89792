//! CPU pinning: `vcpupin`, `<vcpu cpuset>`, `emulatorpin` and `iothreadpin` applied to QEMU's
//! threads before the guest runs, then verified by reading back what the kernel took
//! (`Cpus_allowed_list`).

use std::collections::BTreeSet;
use std::path::Path;

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use novacron_domain::model::{CpuTune, IdSet, IothreadPin, VcpuPin};
use novacron_domain::DomainConfig;

use super::topology::parse_cpulist;

/// One thread and the host CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPin {
    /// For messages: `vCPU 0`, `iothread 1`, `emulator thread 1234`.
    pub what: String,
    pub kind: ThreadKind,
    pub tid: u32,
    pub cpus: Vec<u32>,
}

/// What a QEMU thread is, as pinning names it (`vcpupin`, `iothreadpin`, `emulatorpin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Vcpu(u32),
    Iothread(u32),
    Emulator,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{what}: QEMU reported no thread for it")]
    NoThread { what: String },
    #[error("cannot pin {what} (thread {tid}) to CPUs {cpus:?}: {source}")]
    Apply {
        what: String,
        tid: u32,
        cpus: Vec<u32>,
        #[source]
        source: nix::Error,
    },
    #[error("{what} (thread {tid}) asked for CPUs {asked:?} but the kernel shows {actual:?}")]
    Mismatch {
        what: String,
        tid: u32,
        asked: Vec<u32>,
        actual: Vec<u32>,
    },
    #[error("cannot read the affinity of thread {tid}: {reason}")]
    Read { tid: u32, reason: String },
}

/// Whether the config asks for any pinning at all (nothing to do otherwise).
pub fn wanted(config: &DomainConfig) -> bool {
    config.vcpu.cpuset.is_some()
        || config.cputune.as_ref().is_some_and(|t| {
            !t.vcpupins.is_empty() || t.emulatorpin.is_some() || !t.iothreadpins.is_empty()
        })
}

/// The pins for a QEMU: `vcpus` are (vCPU index, thread id) and `iothreads` (QEMU id, thread
/// id) as QMP reports them; `tids` are all the process's threads. A vCPU without its own
/// `vcpupin` follows `<vcpu cpuset>`; threads that are neither vCPUs nor iothreads are the
/// emulator's, pinned by `emulatorpin` (else also by `<vcpu cpuset>`, as libvirt does).
pub fn plan(
    config: &DomainConfig,
    vcpus: &[(u32, u32)],
    iothreads: &[(String, u32)],
    tids: &[u32],
) -> Result<Vec<ThreadPin>, PinError> {
    let tune = config.cputune.clone().unwrap_or_default();
    let default_vcpu = config
        .vcpu
        .cpuset
        .as_ref()
        .map(|s| s.iter().collect::<Vec<_>>());
    let mut pins = Vec::new();
    for vcpu in 0..config.vcpu.current.unwrap_or(config.vcpu.count) {
        let explicit = tune.vcpupins.iter().find(|p| p.vcpu == vcpu);
        let cpus = explicit
            .map(|p| p.cpuset.iter().collect())
            .or_else(|| default_vcpu.clone());
        if let Some(cpus) = cpus {
            let what = format!("vCPU {vcpu}");
            let tid = vcpus
                .iter()
                .find(|(i, _)| *i == vcpu)
                .map(|(_, t)| *t)
                .ok_or_else(|| PinError::NoThread { what: what.clone() })?;
            pins.push(ThreadPin {
                what,
                kind: ThreadKind::Vcpu(vcpu),
                tid,
                cpus,
            });
        }
    }
    for pin in &tune.iothreadpins {
        let what = format!("iothread {}", pin.iothread);
        let id = format!("iothread{}", pin.iothread);
        let tid = iothreads
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| *t)
            .ok_or_else(|| PinError::NoThread { what: what.clone() })?;
        pins.push(ThreadPin {
            what,
            kind: ThreadKind::Iothread(pin.iothread),
            tid,
            cpus: pin.cpuset.iter().collect(),
        });
    }
    let emulator = tune
        .emulatorpin
        .as_ref()
        .map(|s| s.iter().collect::<Vec<_>>())
        .or(default_vcpu);
    if let Some(cpus) = emulator {
        let special: BTreeSet<u32> = vcpus
            .iter()
            .map(|(_, t)| *t)
            .chain(iothreads.iter().map(|(_, t)| *t))
            .collect();
        for &tid in tids.iter().filter(|t| !special.contains(t)) {
            pins.push(ThreadPin {
                what: format!("emulator thread {tid}"),
                kind: ThreadKind::Emulator,
                tid,
                cpus: cpus.clone(),
            });
        }
    }
    Ok(pins)
}

/// `tune` with `kind` pinned to `cpus` (replacing any earlier pin of that thread).
pub fn with_pin(tune: Option<CpuTune>, kind: ThreadKind, cpus: IdSet) -> CpuTune {
    let mut tune = tune.unwrap_or_default();
    match kind {
        ThreadKind::Vcpu(vcpu) => {
            tune.vcpupins.retain(|p| p.vcpu != vcpu);
            tune.vcpupins.push(VcpuPin { vcpu, cpuset: cpus });
            tune.vcpupins.sort_by_key(|p| p.vcpu);
        }
        ThreadKind::Iothread(iothread) => {
            tune.iothreadpins.retain(|p| p.iothread != iothread);
            tune.iothreadpins.push(IothreadPin {
                iothread,
                cpuset: cpus,
            });
            tune.iothreadpins.sort_by_key(|p| p.iothread);
        }
        ThreadKind::Emulator => tune.emulatorpin = Some(cpus),
    }
    tune
}

/// What the config asks for one thread: its own pin, else `<vcpu cpuset>` (which covers
/// vCPUs and the emulator, not iothreads); `None` when it may run anywhere.
pub fn asked(config: &DomainConfig, kind: ThreadKind) -> Option<IdSet> {
    let tune = config.cputune.as_ref();
    let default = config.vcpu.cpuset.clone();
    match kind {
        ThreadKind::Vcpu(vcpu) => tune
            .and_then(|t| t.vcpupins.iter().find(|p| p.vcpu == vcpu))
            .map(|p| p.cpuset.clone())
            .or(default),
        ThreadKind::Iothread(id) => tune
            .and_then(|t| t.iothreadpins.iter().find(|p| p.iothread == id))
            .map(|p| p.cpuset.clone()),
        ThreadKind::Emulator => tune.and_then(|t| t.emulatorpin.clone()).or(default),
    }
}

/// Every CPU some thread of the guest is pinned to, or `None` when a thread is unpinned (so
/// the guest as a whole may use any CPU): what a per-guest cpuset cgroup allows.
pub fn cpus_of_all_threads(config: &DomainConfig) -> Option<Vec<u32>> {
    let vcpus = config.vcpu.current.unwrap_or(config.vcpu.count);
    let kinds = (0..vcpus)
        .map(ThreadKind::Vcpu)
        .chain((1..=config.iothreads.unwrap_or(0)).map(ThreadKind::Iothread))
        .chain([ThreadKind::Emulator]);
    let mut all = BTreeSet::new();
    for kind in kinds {
        all.extend(asked(config, kind)?.iter());
    }
    Some(all.into_iter().collect())
}

/// Applies every pin and reads each back from `/proc/<pid>/task/<tid>/status`.
pub fn apply(pid: u32, pins: &[ThreadPin]) -> Result<(), PinError> {
    for pin in pins {
        let mut set = CpuSet::new();
        for &cpu in &pin.cpus {
            set.set(cpu as usize).map_err(|source| PinError::Apply {
                what: pin.what.clone(),
                tid: pin.tid,
                cpus: pin.cpus.clone(),
                source,
            })?;
        }
        let tid = i32::try_from(pin.tid).unwrap_or(i32::MAX);
        sched_setaffinity(Pid::from_raw(tid), &set).map_err(|source| PinError::Apply {
            what: pin.what.clone(),
            tid: pin.tid,
            cpus: pin.cpus.clone(),
            source,
        })?;
        let actual = affinity(pid, pin.tid)?;
        if actual != pin.cpus {
            return Err(PinError::Mismatch {
                what: pin.what.clone(),
                tid: pin.tid,
                asked: pin.cpus.clone(),
                actual,
            });
        }
    }
    Ok(())
}

/// The CPUs a thread may run on, as the kernel shows them (`Cpus_allowed_list`).
pub fn affinity(pid: u32, tid: u32) -> Result<Vec<u32>, PinError> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).map_err(|e| {
            PinError::Read {
                tid,
                reason: e.to_string(),
            }
        })?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| PinError::Read {
            tid,
            reason: "no Cpus_allowed_list".into(),
        })?;
    parse_cpulist(list.trim()).map_err(|reason| PinError::Read { tid, reason })
}

/// The thread ids of a process.
pub fn threads(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut tids: Vec<u32> =
        std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    tids.sort_unstable();
    Ok(tids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(xml_tune: &str, vcpu: &str) -> DomainConfig {
        DomainConfig::from_xml(&format!(
            "<domain type='kvm'><name>p</name><memory>65536</memory>{vcpu}
               <cputune>{xml_tune}</cputune><iothreads>1</iothreads>
               <os><type>hvm</type></os></domain>"
        ))
        .unwrap()
    }

    #[test]
    fn vcpupin_overrides_the_default_cpuset_and_the_rest_are_emulator_threads() {
        let c = config(
            "<vcpupin vcpu='1' cpuset='3'/><iothreadpin iothread='1' cpuset='2'/>",
            "<vcpu cpuset='0-1'>2</vcpu>",
        );
        assert!(wanted(&c));
        let pins = plan(
            &c,
            &[(0, 11), (1, 12)],
            &[("iothread1".into(), 13)],
            &[10, 11, 12, 13, 14],
        )
        .unwrap();
        let by = |tid| pins.iter().find(|p| p.tid == tid).map(|p| p.cpus.clone());
        assert_eq!(by(11), Some(vec![0, 1]), "vCPU 0 follows <vcpu cpuset>");
        assert_eq!(by(12), Some(vec![3]), "vCPU 1 has its own pin");
        assert_eq!(by(13), Some(vec![2]), "the iothread");
        assert_eq!(
            by(10),
            Some(vec![0, 1]),
            "emulator threads follow <vcpu cpuset>"
        );
        assert_eq!(by(14), Some(vec![0, 1]));
    }

    #[test]
    fn a_new_pin_replaces_the_old_and_the_union_needs_every_thread_pinned() {
        let c = config(
            "<vcpupin vcpu='1' cpuset='3'/><emulatorpin cpuset='0'/>",
            "<vcpu>2</vcpu>",
        );
        assert_eq!(
            cpus_of_all_threads(&c),
            None,
            "vCPU 0 and iothread 1 are free"
        );
        let mut c2 = c.clone();
        let tune = with_pin(c2.cputune.take(), ThreadKind::Vcpu(1), "1".parse().unwrap());
        let tune = with_pin(Some(tune), ThreadKind::Vcpu(0), "2".parse().unwrap());
        let tune = with_pin(Some(tune), ThreadKind::Iothread(1), "2".parse().unwrap());
        assert_eq!(
            tune.vcpupins
                .iter()
                .map(|p| (p.vcpu, p.cpuset.to_string()))
                .collect::<Vec<_>>(),
            [(0, "2".to_owned()), (1, "1".to_owned())]
        );
        c2.cputune = Some(tune);
        assert_eq!(cpus_of_all_threads(&c2), Some(vec![0, 1, 2]));
        assert_eq!(
            asked(&c2, ThreadKind::Emulator).map(|s| s.to_string()),
            Some("0".into())
        );
    }

    #[test]
    fn a_missing_thread_is_an_error_and_no_pinning_is_no_plan() {
        let c = config("<vcpupin vcpu='1' cpuset='0'/>", "<vcpu>2</vcpu>");
        let err = plan(&c, &[(0, 11)], &[], &[10, 11]).unwrap_err();
        assert!(err.to_string().contains("vCPU 1"), "{err}");
        let none = config("", "<vcpu>1</vcpu>");
        assert!(!wanted(&none));
        assert!(plan(&none, &[(0, 11)], &[], &[10, 11]).unwrap().is_empty());
    }
}
