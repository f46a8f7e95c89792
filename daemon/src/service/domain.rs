//! One domain as the service holds it: its definition, its run state (a watch channel, so
//! queries read a snapshot without waiting and jobs can await a state), and its job slots.

use std::sync::{Arc, Mutex, PoisonError};

use novacron_domain::{DomainState, Error, ValidatedDomain};
use novacron_qmp::Client;
use tokio::sync::watch;

use super::events::{EventBus, EventKind, StateReason};
use super::jobs::{Job, JobGuard, JobSlots};
use crate::persist::RuntimeRecord;

/// The run state machine of ARCHITECTURE.md. A QEMU process exists exactly in `Up`, and only
/// there is there a `Live` to talk to.
#[derive(Clone)]
pub enum Run {
    Off,
    Crashed(String),
    Starting,
    Up { live: Arc<Live>, state: UpState },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpState {
    Running,
    Paused,
    ShuttingDown,
    Migrating,
}

impl Run {
    pub fn state(&self) -> DomainState {
        match self {
            Run::Off => DomainState::Shutoff,
            Run::Crashed(_) => DomainState::Crashed,
            Run::Starting => DomainState::Starting,
            Run::Up { state, .. } => match state {
                UpState::Running => DomainState::Running,
                UpState::Paused => DomainState::Paused,
                UpState::ShuttingDown => DomainState::ShuttingDown,
                UpState::Migrating => DomainState::Migrating,
            },
        }
    }

    pub fn live(&self) -> Option<&Arc<Live>> {
        match self {
            Run::Up { live, .. } => Some(live),
            _ => None,
        }
    }
}

/// What the daemon asked of a running QEMU, so that its exit or SHUTDOWN event is read right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    None,
    Shutdown,
    /// A reboot asked at this time; a power-off long after it is the guest's own.
    Reboot(std::time::Instant),
    Destroy,
    /// The guest was migrated away: this QEMU quits because its guest runs elsewhere now.
    Migrated,
}

/// A running QEMU process.
pub struct Live {
    pub pid: u32,
    pub record: RuntimeRecord,
    pub monitor: Monitor,
    intent: Mutex<Intent>,
    /// The pins in force: the started config's, as changed live since (also in the record).
    cputune: Mutex<Option<novacron_domain::model::CpuTune>>,
    /// Set as soon as the process is known to be gone, before its pid can be reused.
    exited: std::sync::atomic::AtomicBool,
    /// The disks QEMU has now (attach, detach, media changes and snapshots since the start).
    devices: Mutex<crate::persist::live_devices::LiveDevices>,
    /// Virtual sizes of block nodes as this daemon last set them (`block_resize`), so a resize
    /// checks "never shrink" without a `query-block` round trip. Only this daemon changes a
    /// node's size, under the domain's job slot; anything else that may change the block graph
    /// (a new device set, snapshots, commits, QMP passthrough) forgets them all.
    disk_sizes: Mutex<std::collections::HashMap<String, u64>>,
}

/// The QMP connection, or why there is none (a reconnect that failed: the guest is left alone).
pub enum Monitor {
    Connected(Client),
    Lost(String),
}

impl Live {
    pub fn new(pid: u32, record: RuntimeRecord, monitor: Monitor) -> Live {
        let devices = record
            .live_devices
            .clone()
            .unwrap_or_else(|| crate::persist::live_devices::LiveDevices::at_start(&record.config));
        Live {
            pid,
            devices: Mutex::new(devices),
            disk_sizes: Mutex::default(),
            cputune: Mutex::new(record.config.cputune.clone()),
            record,
            monitor,
            intent: Mutex::new(Intent::None),
            exited: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn mark_exited(&self) {
        self.exited.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn has_exited(&self) -> bool {
        self.exited.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Signals this QEMU, only if it is provably still the same process (not exited, same
    /// start time): a reused pid is never signalled. A process already gone is not an error.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
        if self.exited.load(std::sync::atomic::Ordering::SeqCst)
            || !crate::qemu::procinfo::is_same_alive(self.pid, self.record.start_time)
        {
            return Ok(());
        }
        crate::qemu::spawn::signal(self.pid, signal)
    }

    pub fn qmp(&self, domain: &str) -> Result<&Client, Error> {
        match &self.monitor {
            Monitor::Connected(c) => Ok(c),
            Monitor::Lost(why) => Err(Error::Qemu {
                name: domain.to_owned(),
                operation: "QMP".to_owned(),
                message: format!("no QMP connection (pid {}): {why}", self.pid),
            }),
        }
    }

    /// The config this QEMU runs with now: the started one with the live pin changes.
    pub fn config(&self) -> novacron_domain::DomainConfig {
        let mut config = self.record.config.clone();
        config.cputune = self.cputune();
        let devices = self.devices();
        // vCPUs, memory devices and the balloon target as hot-plugged since the start.
        let vcpus = devices.vcpus(&self.record.config);
        // Unchanged since the start: the config as started (no `current` spelled out).
        if vcpus != config.vcpu.current.unwrap_or(config.vcpu.count) {
            config.vcpu.current = Some(vcpus);
        }
        // `<memory>` includes the memory devices (libvirt): the boot RAM it was started with
        // plus the devices it has now, as libvirt's total grows and shrinks with hotplug.
        let boot = self.record.config.boot_memory_kib();
        config.devices.memory = devices.memory(&self.record.config);
        config.memory.memory_kib = boot.saturating_add(novacron_domain::model::memory_devices_kib(
            &config.devices.memory,
        ));
        if let Some(b) = devices.balloon_kib {
            config.memory.current_kib = Some(b);
        }
        config.devices.disks = devices.disks.into_iter().map(|d| d.disk).collect();
        config
    }

    /// [`Live::config`] as the user wrote it, for the faces (XML, JSON): a disk still on the
    /// file its pool volume resolved to shows the volume (`<disk type='volume'>`).
    pub fn view_config(&self) -> novacron_domain::DomainConfig {
        let mut config = self.config();
        config.devices.disks = self
            .devices()
            .disks
            .iter()
            .map(crate::persist::live_devices::LiveDisk::as_named)
            .collect();
        config
    }

    /// The live device set (see `persist::live_devices`).
    pub fn devices(&self) -> crate::persist::live_devices::LiveDevices {
        self.devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_devices(&self, devices: crate::persist::live_devices::LiveDevices) {
        *self.devices.lock().unwrap_or_else(PoisonError::into_inner) = devices;
        self.forget_disk_sizes();
    }

    /// The size block node `node` was last resized to by this daemon, if nothing since may
    /// have changed it.
    pub fn known_disk_size(&self, node: &str) -> Option<u64> {
        let sizes = self
            .disk_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sizes.get(node).copied()
    }

    pub fn note_disk_size(&self, node: &str, size: u64) {
        let mut sizes = self
            .disk_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sizes.insert(node.to_owned(), size);
    }

    /// Called before anything that may change the block graph or a node's size.
    pub fn forget_disk_sizes(&self) {
        self.disk_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The record as it stands now: the started one with the live pins and device set, what
    /// every rewrite of the record saves.
    pub fn record_now(&self) -> RuntimeRecord {
        let mut record = self.record.clone();
        record.config.cputune = self.cputune();
        record.live_devices = Some(self.devices());
        record
    }

    pub fn cputune(&self) -> Option<novacron_domain::model::CpuTune> {
        self.cputune
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_cputune(&self, cputune: Option<novacron_domain::model::CpuTune>) {
        *self.cputune.lock().unwrap_or_else(PoisonError::into_inner) = cputune;
    }

    pub fn intent(&self) -> Intent {
        *self.intent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets `new` only if the intent is still `expected` (one lock: no lost update, e.g. a
    /// shutdown timing out must not undo a destroy that started meanwhile).
    pub fn replace_intent_if(&self, expected: Intent, new: Intent) -> bool {
        let mut intent = self.intent.lock().unwrap_or_else(PoisonError::into_inner);
        if *intent == expected {
            *intent = new;
            true
        } else {
            false
        }
    }

    pub fn set_intent(&self, intent: Intent) {
        *self.intent.lock().unwrap_or_else(PoisonError::into_inner) = intent;
    }
}

/// The definition: persistent (an XML file on disk) or transient (gone when the guest stops).
#[derive(Clone)]
pub struct Definition {
    pub config: Arc<ValidatedDomain>,
    pub persistent: bool,
    /// The rules it was accepted under; every start is held to them.
    pub trust: crate::persist::definitions::Trust,
}

pub struct DomainHandle {
    pub name: String,
    pub jobs: JobSlots,
    /// Set (under the service's map lock) once this handle left the map: a job that was
    /// waiting for its slot meanwhile must not act on it.
    removed: std::sync::atomic::AtomicBool,
    definition: Mutex<Definition>,
    run: watch::Sender<Run>,
}

impl DomainHandle {
    pub fn new(definition: Definition, run: Run) -> DomainHandle {
        DomainHandle {
            name: definition.config.name.clone(),
            jobs: JobSlots::default(),
            removed: std::sync::atomic::AtomicBool::new(false),
            definition: Mutex::new(definition),
            run: watch::Sender::new(run),
        }
    }

    /// Takes the synchronous job slot; `NotFound` if the domain went away while waiting.
    pub async fn begin(&self, job: Job, wait: std::time::Duration) -> Result<JobGuard<'_>, Error> {
        let guard = self.jobs.begin(&self.name, job, wait).await?;
        if self.is_removed() {
            return Err(Error::not_found(novacron_domain::Kind::Domain, &self.name));
        }
        Ok(guard)
    }

    pub fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn definition(&self) -> Definition {
        self.definition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_definition(&self, definition: Definition) {
        *self
            .definition
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = definition;
    }

    /// A snapshot of the run state; never waits behind a job.
    pub fn run(&self) -> Run {
        self.run.borrow().clone()
    }

    pub fn state(&self) -> DomainState {
        self.run.borrow().state()
    }

    pub fn watch(&self) -> watch::Receiver<Run> {
        self.run.subscribe()
    }

    /// Moves to `to` if the lifecycle allows the edge; publishes the change. A move to the state
    /// already held is a no-op (the job and the QMP event that report one change both call this).
    pub fn transition(&self, events: &EventBus, to: Run, reason: StateReason) -> Result<(), Error> {
        let mut outcome = Ok(());
        self.run.send_if_modified(|run| {
            let from = run.state();
            let next = to.state();
            if from == next && same_process(run, &to) {
                return false;
            }
            if from != next && !from.can_transition_to(next) {
                outcome = Err(Error::Internal(format!(
                    "domain '{}': illegal transition {from} -> {next}",
                    self.name
                )));
                return false;
            }
            *run = to;
            // Published while the change is being committed, so events come out in the order
            // the changes happened even when a job and the supervisor race.
            if from != next {
                events.publish(
                    &self.name,
                    EventKind::StateChanged {
                        from,
                        to: next,
                        reason,
                    },
                );
            }
            true
        });
        outcome
    }

    /// Changes the state of a running domain without replacing its process; no-op when the
    /// domain is not up (its process is gone, so the change no longer applies).
    pub fn set_up_state(&self, events: &EventBus, state: UpState, reason: StateReason) {
        let Run::Up { live, .. } = self.run() else {
            return;
        };
        if let Err(e) = self.transition(events, Run::Up { live, state }, reason) {
            tracing::warn!(domain = %self.name, error = %e, "state change refused");
        }
    }
}

fn same_process(a: &Run, b: &Run) -> bool {
    match (a.live(), b.live()) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    }
}
