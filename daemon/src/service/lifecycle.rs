//! Start, stop and everything between.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use novacron_domain::model::VirtType;
use novacron_domain::{
    build_argv, Accel, CpuChoice, DomainConfig, DomainState, DomainSummary, Error, FdSetEntry,
    LaunchContext, MonitorSocket,
};
use novacron_qmp::commands::{Cont, Stop, SystemPowerdown, SystemReset};
use novacron_qmp::Subscription;
use tokio::sync::watch;

use super::domain::{Definition, DomainHandle, Intent, Live, Monitor, Run, UpState};
use super::events::StateReason;
use super::jobs::Job;
use super::{summary, supervise, Inner, Service};
use crate::persist::RuntimeRecord;
use crate::qemu::{procinfo, spawn};

/// Who `shutdown` asks to power the guest off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// The ACPI power button (`system_powerdown`).
    #[default]
    Acpi,
    /// The guest agent (`guest-shutdown`).
    Agent,
}

impl ShutdownMode {
    pub fn is_acpi(&self) -> bool {
        *self == ShutdownMode::Acpi
    }
}

/// How `shutdown` behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShutdownOptions {
    /// How long the guest gets to power off; the configured default when `None`.
    pub timeout: Option<Duration>,
    /// Destroy the guest if it has not powered off in time.
    pub force: bool,
}

impl ShutdownOptions {
    /// From what the faces receive: a timeout in seconds where absent or 0 means the
    /// configured default (D-Bus has no "absent", so both faces read 0 the same way).
    pub fn from_secs(timeout_secs: Option<u64>, force: bool) -> ShutdownOptions {
        ShutdownOptions {
            timeout: timeout_secs.filter(|s| *s > 0).map(Duration::from_secs),
            force,
        }
    }
}

/// How long a QEMU gets to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long a new QEMU gets to open its QMP socket.
const MONITOR_WAIT: Duration = Duration::from_secs(30);

impl Service {
    pub fn operation(&self, id: &str) -> Option<super::operations::Operation> {
        self.inner.operations.get(id)
    }

    pub async fn start(&self, name: &str) -> Result<(), Error> {
        let h = self.inner.handle(name)?;
        let _job = h.begin(Job::Start, self.inner.job_wait()).await?;
        start_locked(&self.inner, &h).await
    }

    /// Creates and starts a transient domain: no definition is written; it is gone once it
    /// stops.
    pub async fn create(&self, config: DomainConfig) -> Result<DomainSummary, Error> {
        let inner = &self.inner;
        let config = super::disks::slots::reserve(config, inner.config.hotplug_slots);
        let validated = inner.prepare(config, None)?;
        let trust = inner.admit(&validated).await?;
        let name = validated.name.clone();
        let definition = Definition {
            config: validated,
            persistent: false,
            trust,
        };
        let uuid = definition.config.uuid;
        let (h, created) =
            inner.insert_or_get(&name, uuid, || DomainHandle::new(definition, Run::Off))?;
        if !created {
            return Err(Error::AlreadyExists(name));
        }
        inner.events.publish(
            &name,
            super::events::EventKind::Defined { persistent: false },
        );
        let result = async {
            let _job = h.begin(Job::Start, inner.job_wait()).await?;
            start_locked(inner, &h).await
        }
        .await;
        match result {
            Ok(()) => Ok(summary(&h)),
            Err(e) => {
                // An NVRAM made for autoselected firmware before the start failed goes with
                // the transient domain (while its name is still taken).
                if let Err(e) =
                    crate::persist::atomic::remove_durable_async(inner.paths.nvram(&name)).await
                {
                    tracing::warn!(domain = %name, error = %e, "cannot remove the NVRAM");
                }
                inner.remove_if_same(&name, &h);
                Err(e)
            }
        }
    }

    /// Presses the ACPI power button and waits for the guest to power off.
    pub async fn shutdown(&self, name: &str, options: ShutdownOptions) -> Result<(), Error> {
        self.shutdown_by(name, options, ShutdownMode::Acpi).await
    }

    /// [`Service::shutdown`], asking the guest by `mode`: the ACPI power button, or its agent
    /// (`guest-shutdown`, virsh's `--mode agent`). The agent is asked outside the job slot.
    pub async fn shutdown_by(
        &self,
        name: &str,
        options: ShutdownOptions,
        mode: ShutdownMode,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let timeout = options
            .timeout
            .unwrap_or_else(|| inner.config.shutdown_timeout());
        let live = {
            let _job = h.begin(Job::Shutdown, inner.job_wait()).await?;
            let live = up(&h, "shutdown", &[UpState::Running, UpState::ShuttingDown])?;
            live.set_intent(Intent::Shutdown);
            if mode == ShutdownMode::Acpi {
                live.qmp(name)?
                    .execute(&SystemPowerdown)
                    .await
                    .map_err(|e| qmp_error(name, "shutdown", e))?;
            }
            h.set_up_state(
                &inner.events,
                UpState::ShuttingDown,
                StateReason::ShutdownRequested,
            );
            live
        };
        if mode == ShutdownMode::Agent {
            let asked = self
                .agent_shutdown(name, super::agent::DEFAULT_TIMEOUT.min(timeout))
                .await;
            if let Err(e) = asked {
                // Nothing was asked of the guest: back to running, unless a destroy took over.
                if live.replace_intent_if(Intent::Shutdown, Intent::None) {
                    h.set_up_state(
                        &inner.events,
                        UpState::Running,
                        StateReason::ShutdownTimedOut,
                    );
                }
                return Err(e);
            }
        }
        // Wait without holding the job: a destroy must be able to cut in.
        let mut watch = h.watch();
        if tokio::time::timeout(timeout, gone(&mut watch, &live))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if options.force {
            tracing::info!(
                domain = name,
                "guest ignored the power button; destroying it"
            );
            return self.destroy(name).await;
        }
        // Only if nothing else (a destroy) has taken over meanwhile.
        if live.replace_intent_if(Intent::Shutdown, Intent::None) {
            h.set_up_state(
                &inner.events,
                UpState::Running,
                StateReason::ShutdownTimedOut,
            );
        }
        Err(Error::Timeout {
            operation: "shutdown",
            after: timeout,
        })
    }

    /// Stops the guest at once: SIGTERM, then SIGKILL if QEMU has not exited after a grace
    /// period (a hung or SIGSTOPped QEMU included).
    pub async fn destroy(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Destroy, inner.job_wait()).await?;
        let Some(live) = h.run().live().cloned() else {
            return Err(wrong_state(&h, "destroy"));
        };
        live.set_intent(Intent::Destroy);
        let mut watch = h.watch();
        live.signal(Signal::SIGTERM).map_err(|e| Error::Qemu {
            name: name.to_owned(),
            operation: "destroy".to_owned(),
            message: format!("cannot signal QEMU (pid {}): {e}", live.pid),
        })?;
        if tokio::time::timeout(TERM_GRACE, gone(&mut watch, &live))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(
            domain = name,
            pid = live.pid,
            "QEMU ignored SIGTERM; sending SIGKILL"
        );
        live.signal(Signal::SIGKILL).map_err(|e| Error::Qemu {
            name: name.to_owned(),
            operation: "destroy".to_owned(),
            message: format!("cannot signal QEMU (pid {}): {e}", live.pid),
        })?;
        tokio::time::timeout(Duration::from_secs(10), gone(&mut watch, &live))
            .await
            .map_err(|_| Error::Timeout {
                operation: "destroy",
                after: TERM_GRACE + Duration::from_secs(10),
            })
    }

    pub async fn suspend(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Suspend, inner.job_wait()).await?;
        let live = up(&h, "suspend", &[UpState::Running])?;
        live.qmp(name)?
            .execute(&Stop)
            .await
            .map_err(|e| qmp_error(name, "suspend", e))?;
        h.set_up_state(&inner.events, UpState::Paused, StateReason::Paused);
        Ok(())
    }

    pub async fn resume(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Resume, inner.job_wait()).await?;
        let live = up(&h, "resume", &[UpState::Paused])?;
        live.qmp(name)?
            .execute(&Cont)
            .await
            .map_err(|e| qmp_error(name, "resume", e))?;
        h.set_up_state(&inner.events, UpState::Running, StateReason::Resumed);
        Ok(())
    }

    /// Asks the guest to reboot: the power button, then (when the guest has powered off) a
    /// reset and continue in the same QEMU process, as libvirt's fake reboot does. Returns
    /// once the request is made.
    pub async fn reboot(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Reboot, inner.job_wait()).await?;
        let live = up(&h, "reboot", &[UpState::Running])?;
        live.set_intent(Intent::Reboot(std::time::Instant::now()));
        live.qmp(name)?
            .execute(&SystemPowerdown)
            .await
            .map(drop)
            .map_err(|e| qmp_error(name, "reboot", e))
    }

    /// Hard reset, like pressing the reset button.
    pub async fn reset(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Reset, inner.job_wait()).await?;
        let live = up(&h, "reset", &[UpState::Running, UpState::Paused])?;
        live.qmp(name)?
            .execute(&SystemReset)
            .await
            .map(drop)
            .map_err(|e| qmp_error(name, "reset", e))
    }
}

/// Starts a domain whose Start job the caller holds.
pub(super) async fn start_locked(inner: &Arc<Inner>, h: &Arc<DomainHandle>) -> Result<(), Error> {
    match h.state() {
        DomainState::Shutoff | DomainState::Crashed => {}
        _ => return Err(wrong_state(h, "start")),
    }
    // A record left behind that the daemon could not verify may belong to a QEMU still
    // running this guest: a second QEMU on the same disks would corrupt them.
    let record = inner.paths.record(&h.name);
    if tokio::fs::try_exists(&record).await.unwrap_or(true) {
        return Err(Error::Internal(format!(
            "domain '{}' has a runtime record ({}) for a QEMU the daemon could not verify; \
             check that no QEMU runs this guest, then remove the record",
            h.name,
            record.display()
        )));
    }
    let definition = h.definition();
    h.transition(&inner.events, Run::Starting, StateReason::Starting)?;
    match launch(inner, &h.name, definition.config.config(), definition.trust).await {
        Ok(launched) => {
            let live = launched.live;
            if let Some(known) = launched.pinned_threads {
                super::placement::pin_late_threads(h.clone(), live.clone(), known);
            }
            h.transition(
                &inner.events,
                Run::Up {
                    live: live.clone(),
                    state: UpState::Running,
                },
                StateReason::Booted,
            )?;
            supervise::spawn(
                inner.clone(),
                h.clone(),
                live,
                Some(launched.child),
                Some(launched.events),
            );
            Ok(())
        }
        Err(e) => {
            h.transition(
                &inner.events,
                Run::Off,
                StateReason::StartFailed(e.to_string()),
            )?;
            Err(e)
        }
    }
}

pub(super) struct Launched {
    pub live: Arc<Live>,
    pub child: tokio::process::Child,
    pub events: Subscription,
    /// The threads pinned before the vCPUs ran, when the config pins any.
    pub pinned_threads: Option<Vec<u32>>,
}

/// Spawns QEMU paused (`-S`), connects QMP, records the runtime state, then lets the vCPUs
/// run. On any failure nothing is left behind: QEMU killed, runtime files removed.
async fn launch(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
    trust: super::trust::Trust,
) -> Result<Launched, Error> {
    launch_as(inner, name, config, None, trust).await
}

/// As `launch`; with `incoming` (the migration's id), QEMU waits for a migration stream
/// (`-incoming defer`), is recorded as such and left paused: the migration code resumes it
/// once the stream is complete.
pub(super) async fn launch_as(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
    incoming: Option<&str>,
    trust: super::trust::Trust,
) -> Result<Launched, Error> {
    let accel = match config.virt_type {
        VirtType::Kvm => match &inner.kvm {
            Ok(()) => Accel::Kvm,
            Err(why) => {
                return Err(Error::InvalidConfig(format!(
                    "domain '{name}' has type 'kvm', but KVM is not usable on this host ({why}); \
                     define it with type 'qemu' to run under TCG"
                )))
            }
        },
        VirtType::Qemu => Accel::Tcg,
    };
    if config.memtune.is_some() && !super::placement::memory_limits_apply(inner) {
        return Err(Error::InvalidConfig(format!(
            "domain '{name}' has <memtune>, whose limits live in a per-guest cgroup: set \
             [cgroups] mode = \"auto\" or \"on\" on a host with the memory controller"
        )));
    }
    // host-model and autoselected firmware settled for this host: the config the guest runs
    // with (argv, record, live info). The host files are opened by the definition's rules.
    // Volume disks first: from here on they are the files of their pools, checked and
    // opened as any disk file.
    let volumes = inner
        .volume_disks(config, super::storage::disk_volumes::Formats::Start)
        .await?;
    // The disks as named, for the live view (a volume disk keeps its pool and volume).
    let named = config;
    let config = volumes.as_ref().unwrap_or(config);
    let definition_config = config;
    let resolved =
        super::resolve::resolve(inner, name, config, super::resolve::Effects::Apply).await?;
    let config = &resolved.config;
    let paths = &inner.paths;
    let socket = paths.qmp_socket(name);
    let guest_dir = paths.guest_dir(name);
    let file_backed = config
        .memory_backing
        .as_ref()
        .is_some_and(|b| b.source == Some(novacron_domain::model::MemorySource::File));
    let memory_dir = paths.memory_dir(name).filter(|_| file_backed);
    let log = paths.qemu_log(name);
    // A pty console becomes a socket the daemon reads (and logs) instead of QEMU's logfile.
    let wired = super::console::wire(config, &guest_dir.join(super::console::SOCKET_NAME));
    let console = (!config.devices.serials.is_empty() || !config.devices.consoles.is_empty())
        && wired.is_none();
    // Every host file, opened (and for non-admin definitions checked against the storage
    // roots again) by the daemon: QEMU gets descriptors, not names.
    let mut files = inner
        .open_guest_files(
            name,
            definition_config,
            trust,
            FIRST_GUEST_FD,
            FIRST_GUEST_SET,
        )
        .await?;
    if let Some((loader, nvram)) = resolved.firmware.clone() {
        // Chosen by the daemon (descriptors, its state dir): opened as named.
        files = tokio::task::spawn_blocking(move || {
            files.add_daemon_file(
                "os.firmware.loader.path",
                &loader,
                false,
                FIRST_GUEST_FD,
                FIRST_GUEST_SET,
            )?;
            files.add_daemon_file(
                "os.firmware.nvram.path",
                &nvram,
                true,
                FIRST_GUEST_FD,
                FIRST_GUEST_SET,
            )?;
            Ok::<_, String>(files)
        })
        .await
        .map_err(|e| Error::Internal(format!("opening the firmware of '{name}' failed: {e}")))?
        .map_err(|e| Error::InvalidConfig(format!("domain '{name}': firmware: {e}")))?;
    }
    let emulator = {
        let (configured, arch) = (inner.config.emulator.clone(), config.os.arch);
        tokio::task::spawn_blocking(move || crate::qemu::emulator::for_arch(&configured, arch))
            .await
            .unwrap_or_else(|_| inner.config.emulator.clone())
    };
    // Reserved until this start fails (dropped) or the guest stops (the supervisor).
    let displays = super::displays::assign(inner, name, config)?;
    // Taps and macvtaps, made and recorded in the NIC ledger before QEMU exists; their
    // descriptors follow the guest's files.
    let first_net_fd = files
        .fds
        .iter()
        .map(|(at, _)| at + 1)
        .max()
        .unwrap_or(FIRST_GUEST_FD)
        .max(FIRST_GUEST_FD);
    let nics = super::nics::prepare(inner, name, config, first_net_fd).await?;
    let context = LaunchContext {
        emulator,
        accel,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Fd(MONITOR_FD),
        fd_sets: console
            .then(|| FdSetEntry {
                fd: SERIAL_LOG_FD,
                set: SERIAL_LOG_SET,
                opaque: "serial-log".to_owned(),
            })
            .into_iter()
            .chain(files.fd_sets.iter().cloned())
            .collect(),
        runtime_dir: guest_dir.clone(),
        memory_dir: memory_dir.clone(),
        serial_log: console.then(|| format!("/dev/fdset/{SERIAL_LOG_SET}").into()),
        net_fds: nics.net_fds.clone(),
        vnc_display: displays.vnc_display,
        spice_port: displays.spice_port,
        swtpm_socket: None,
        sandbox: inner.config.sandbox,
        host_paths: files.host_paths.clone(),
        backing_chains: files.backing_chains.clone(),
    };
    // Validated at define time; revalidating here is cheap and keeps the argv builder's
    // contract (a ValidatedDomain) without trusting a stale copy. Both happen before anything
    // is created on disk, so a refusal leaves nothing to clean.
    let validated = wired.unwrap_or_else(|| config.clone()).validate()?;
    // What the host cannot give (vCPUs, memory, nodes, page sizes, CPUs to pin to, a machine
    // type this QEMU lacks) is refused here, with the reasons, rather than by QEMU.
    let mut argv = build_argv(&validated, &context)
        .map_err(|e| Error::InvalidConfig(format!("domain '{name}': {e}")))?;
    if incoming.is_some() {
        argv.extend(["-incoming".to_owned(), "defer".to_owned()]);
    }
    // Hugepages reserved (if allowed), the fit check, host devices detached to vfio-pci: all
    // given back below if the start fails, and by the supervisor once QEMU exits.
    let (held, pages_claim) = super::host_resources::take(inner, name, config).await?;
    let mut virtiofsd = Vec::new();
    let spawned = match prepare_runtime(inner, name, console, &guest_dir, memory_dir, &socket).await
    {
        // Each virtiofs share's virtiofsd listens before QEMU connects to it.
        Ok(handover) => {
            match super::virtiofsd::start(inner, name, config, &files, &guest_dir, &log).await {
                Ok(v) => {
                    virtiofsd = v;
                    Ok(handover)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let served = super::virtiofsd::dir_fds(config, &files);
    let spawned = match spawned {
        Ok(handover) => {
            let mut inherit = vec![spawn::Inherited {
                fd: handover.monitor.as_fd(),
                at: MONITOR_FD,
            }];
            if let Some(serial) = &handover.serial_log {
                inherit.push(spawn::Inherited {
                    fd: serial.as_fd(),
                    at: SERIAL_LOG_FD,
                });
            }
            // virtiofsd serves those directories: QEMU never needs them.
            inherit.extend(files.fds.iter().filter(|(at, _)| !served.contains(at)).map(
                |(at, fd)| spawn::Inherited {
                    fd: fd.as_fd(),
                    at: *at,
                },
            ));
            inherit.extend(nics.fds.iter().map(|(at, fd)| spawn::Inherited {
                fd: fd.as_fd(),
                at: *at,
            }));
            // QEMU holds its own copies afterwards; ours are closed when `handover` drops.
            let lock_memory = config.memory_backing.as_ref().is_some_and(|b| b.locked)
                || !config.devices.hostdevs.is_empty();
            spawn::spawn(&argv, &log, &inherit, inner.run_as.as_ref(), lock_memory)
                .map_err(|e| start_failed(name, e))
        }
        Err(e) => Err(e),
    };
    let mut spawned = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            super::virtiofsd::stop(&virtiofsd).await;
            supervise::remove_runtime_files(inner, name).await;
            super::host_resources::give_back(inner, name, &held).await;
            return Err(e);
        }
    };
    // QEMU holds the links now; from here on, any end of it removes them.
    nics.keep();
    let pid = spawned.pid;
    let result = async {
        // Everything the record holds is known once QEMU is forked, so it is made durable
        // while QEMU initialises rather than after: off the critical path, yet still before
        // the guest runs. A daemon that dies from here on finds this guest again.
        let record = RuntimeRecord {
            version: crate::persist::records::RECORD_VERSION,
            name: name.to_owned(),
            pid,
            start_time: procinfo::start_time(pid).map_err(|e| Error::Internal(e.to_string()))?,
            boot_id: procinfo::boot_id().map_err(|e| Error::Internal(e.to_string()))?,
            qmp_socket: socket.clone(),
            argv,
            config: displays.live_config.clone(),
            started_at_unix_ms: super::events::now_unix_ms(),
            held: held.clone(),
            incoming: incoming.map(|id| crate::persist::records::IncomingMark {
                id: id.to_owned(),
                phase: crate::persist::records::IncomingPhase::Prepared,
            }),
            qemu_log: Some(log.clone()),
            display_ports: displays.ports.clone(),
            virtiofsd: virtiofsd.clone(),
            // The set at start, with the volume each volume disk was named by.
            live_devices: volumes.is_some().then(|| {
                crate::persist::live_devices::LiveDevices::at_start_named(
                    &displays.live_config,
                    named,
                )
            }),
        };
        let scoped = async {
            match &inner.scopes {
                Some(scopes) => scopes
                    .place_limited(name, pid, &super::placement::scope_limits(inner, config))
                    .await
                    .map(drop),
                None => Ok(()),
            }
        };
        // The cgroup move (tens of ms on cgroup v1) overlaps QEMU's initialisation too; it
        // is done before the threads are pinned below, since it resets their affinity.
        let (saved, connected, scoped, caged) = tokio::join!(
            inner.records.save(&record),
            spawn::connect_monitor(&mut spawned, &socket, &log, MONITOR_WAIT),
            scoped,
            super::placement::enter_cgroup(inner, name, pid, config)
        );
        // QEMU answering QMP has mapped its memory: the pools now show it.
        drop(pages_claim);
        let qmp = connected.map_err(|e| start_failed(name, e))?;
        scoped.map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?;
        caged?;
        saved.map_err(|e| Error::Io {
            action: "write the runtime record",
            path: inner.paths.record(name).display().to_string(),
            message: e.to_string(),
        })?;
        super::host_resources::recorded(inner, name).await;
        // Subscribe before the guest runs, so the supervisor misses nothing.
        let events = qmp.subscribe();
        let pinned_threads = if crate::host::pinning::wanted(config) {
            super::placement::pin_threads(&qmp, pid, config)
                .await
                .map(Some)
                .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?
        } else {
            None
        };
        // The definition's I/O limits, before the guest's first request.
        super::disks::apply_iotune(&qmp, name, &config.devices.disks).await?;
        super::nics::initial_link_states(&qmp, name, config).await?;
        if incoming.is_none() {
            // An incoming guest's balloon state comes with its stream.
            super::live_resources::apply_balloon_at_start(&qmp, name, config).await?;
            qmp.execute(&Cont)
                .await
                .map_err(|e| qmp_error(name, "start", e))?;
        }
        Ok((record, qmp, events, pinned_threads))
    }
    .await;
    match result {
        Ok((record, qmp, events, pinned_threads)) => {
            displays.keep();
            Ok(Launched {
                live: Arc::new(Live::new(pid, record, Monitor::Connected(qmp))),
                child: spawned.child,
                events,
                pinned_threads,
            })
        }
        Err(e) => {
            let _ = spawn::signal(pid, Signal::SIGKILL);
            let _ = spawned.child.wait().await;
            super::virtiofsd::stop(&virtiofsd).await;
            supervise::remove_runtime_files(inner, name).await;
            super::host_resources::give_back(inner, name, &held).await;
            Err(e)
        }
    }
}

/// QEMU's monitor socket, as fd 3: bound by the daemon, so QEMU (maybe an unprivileged user)
/// needs no access to the run directory, and the socket exists before QEMU does.
const MONITOR_FD: i32 = 3;
/// The serial console log, opened by the daemon and handed over in fd set 1.
const SERIAL_LOG_FD: i32 = 4;
const SERIAL_LOG_SET: u32 = 1;
/// The guest's own files (disks, firmware, boot images...) follow, one fd set each.
const FIRST_GUEST_FD: i32 = 5;
const FIRST_GUEST_SET: u32 = 2;

/// What the daemon opens for a new QEMU.
struct Handover {
    monitor: std::os::unix::net::UnixListener,
    serial_log: Option<std::fs::File>,
}

/// Creates the guest's runtime directory and, for file-backed RAM in a configured
/// `memory_backing_dir`, its memory directory (mode 0700, owned by the QEMU user), binds its
/// monitor socket (mode 0600) and opens its serial log when it has a console.
async fn prepare_runtime(
    inner: &Arc<Inner>,
    name: &str,
    console: bool,
    guest_dir: &std::path::Path,
    memory_dir: Option<std::path::PathBuf>,
    socket: &std::path::Path,
) -> Result<Handover, Error> {
    let (dir, sock) = (guest_dir.to_owned(), socket.to_owned());
    let serial = console.then(|| inner.paths.serial_log(name));
    let owner = inner.run_as.as_ref().map(|r| (r.uid, r.gid));
    tokio::task::spawn_blocking(move || -> std::io::Result<Handover> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // A stale socket from a QEMU that died with the host would make the bind fail.
        match std::fs::remove_file(&sock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for dir in std::iter::once(&dir).chain(memory_dir.as_ref()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(dir, Some(uid), Some(gid))?;
            }
        }
        let monitor = std::os::unix::net::UnixListener::bind(&sock)?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        let serial_log = serial
            .map(|p| crate::qemu::logs::open_append(&p))
            .transpose()?;
        Ok(Handover {
            monitor,
            serial_log,
        })
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("cannot prepare the runtime of '{name}': {e}")))
}

fn start_failed(name: &str, e: spawn::SpawnError) -> Error {
    Error::Qemu {
        name: name.to_owned(),
        operation: "start".to_owned(),
        message: e.to_string(),
    }
}

/// A QMP failure as the service reports it: a monitor that did not answer is `timeout`
/// (the guest may be hung), anything else names the domain and the QEMU step.
pub(super) fn qmp_error(name: &str, operation: &str, e: novacron_qmp::Error) -> Error {
    match e {
        novacron_qmp::Error::Timeout { after, .. } => Error::QemuTimeout {
            name: name.to_owned(),
            operation: operation.to_owned(),
            after,
        },
        e => Error::Qemu {
            name: name.to_owned(),
            operation: operation.to_owned(),
            message: e.to_string(),
        },
    }
}

pub(super) fn wrong_state(h: &DomainHandle, operation: &'static str) -> Error {
    Error::WrongState {
        name: h.name.clone(),
        state: h.state(),
        operation,
    }
}

/// The live process if the domain is up in one of `allowed`.
fn up(h: &DomainHandle, operation: &'static str, allowed: &[UpState]) -> Result<Arc<Live>, Error> {
    match h.run() {
        Run::Up { live, state } if allowed.contains(&state) => Ok(live),
        _ => Err(wrong_state(h, operation)),
    }
}

/// Resolves once `live` is no longer the domain's process.
pub(super) async fn gone(watch: &mut watch::Receiver<Run>, live: &Arc<Live>) {
    let _ = watch
        .wait_for(|run| !run.live().is_some_and(|l| Arc::ptr_eq(l, live)))
        .await;
}
