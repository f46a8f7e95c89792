//! The service: every operation on domains, once. The HTTP and D-Bus faces and the CLI only
//! translate to and from these calls.

pub mod agent;
pub mod audit;
mod autostart;
pub mod console;
mod defaults;
pub mod disks;
mod displays;
pub mod domain;
pub mod dry_run;
mod event_log;
pub mod events;
mod hold;
pub mod host_info;
pub mod host_metrics;
mod host_resources;
pub mod jobs;
mod lifecycle;
pub mod live_resources;
pub mod metadata;
pub mod metrics;
pub mod migration;
pub mod network;
pub mod nics;
pub mod operations;
pub mod passthrough;
pub mod placement;
pub mod qemu_user;
mod reconnect;
pub mod remote;
pub mod request_file;
mod resolve;
pub mod snapshots;
pub mod status;
pub mod storage;
mod supervise;
pub mod templates;
pub mod trust;
mod uuids;
mod virtiofsd;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use novacron_domain::{DomainConfig, DomainInfo, DomainState, DomainSummary, Error};

use crate::config::Config;
use crate::paths::Paths;
use crate::persist::{DefinitionStore, Problem, RecordStore};
use domain::{Definition, DomainHandle, Run};
use events::{EventBus, EventKind};
use jobs::Job;

pub use lifecycle::{ShutdownMode, ShutdownOptions};
pub use status::{DomainDetails, DomainStatus, ListFilter};

/// The daemon's one service object. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub paths: Paths,
    pub definitions: DefinitionStore,
    pub records: RecordStore,
    /// Name -> domain. Held only for lookups and inserts, never across an await.
    pub domains: RwLock<BTreeMap<String, Arc<DomainHandle>>>,
    pub events: EventBus,
    pub problems: Mutex<Vec<Problem>>,
    pub kvm: Result<(), String>,
    pub operations: Arc<operations::Operations>,
    pub audit: audit::AuditLog,
    /// Held for the service's lifetime: one daemon per run directory.
    _instance_lock: nix::fcntl::Flock<std::fs::File>,
    /// systemd's manager, where each QEMU gets its own scope.
    pub scopes: Option<crate::qemu::scope::Scopes>,
    /// Per-guest cgroups where no systemd scope carries the limits (decided at open).
    pub cgroups: crate::host::cgroup::GuestCgroups,
    /// Where non-admin definitions may name files.
    pub storage_roots: crate::host::storage_roots::StorageRoots,
    /// Who QEMU runs as (`qemu_user`), resolved once at open.
    pub run_as: Option<crate::qemu::spawn::RunAs>,
    /// KVM/QEMU/sysfs host facts; static parts cached after the first probe.
    pub host: crate::host::HostProbe,
    /// Live migrations from and to this host.
    pub migrations: migration::Registry,
    /// Remote vendor hosts proxied through this daemon.
    pub remote: remote::RemoteHosts,
    /// Last seen power state of each remote domain, for events.
    pub remote_known: remote::Known,
    /// Ports of running guests' autoport displays.
    pub display_ports: crate::host::display_ports::DisplayPorts,
    /// Serial consoles of running guests and websocket tickets.
    pub consoles: console::Consoles,
    /// Event notifications to the configured endpoints.
    pub webhooks: webhooks::Webhooks,
    /// Guest agents of running domains.
    pub agents: agent::Agents,
    /// Virtual networks (bridges, nftables, dnsmasq).
    pub networks: network::Networks,
    /// Running guests' NIC ledgers (the links made for them).
    pub nic_ledgers: nics::ledgers::Ledgers,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the daemon's directories: {0}")]
    Dirs(#[source] std::io::Error),
    #[error(transparent)]
    Scopes(Box<crate::qemu::scope::ScopeError>),
    #[error("[cgroups] mode \"on\" cannot be honoured: {0}")]
    Cgroups(#[source] crate::host::cgroup::CgroupError),
    #[error("another novacrond already manages {0} (it holds the lock on that file)")]
    AlreadyRunning(std::path::PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    QemuUser(#[from] qemu_user::QemuUserError),
}

impl Service {
    /// Opens the state: loads definitions, finds the guests a previous daemon left running,
    /// verifies each is still the same QEMU, reconnects, and resumes supervising them. Bad files
    /// are reported (see [`Service::problems`]) and skipped, never deleted.
    pub async fn open(config: Config) -> Result<Service, OpenError> {
        let paths = Paths::new(&config);
        let dirs = paths.clone();
        let storage_roots =
            crate::host::storage_roots::StorageRoots::new(&config.state_dir, &config.storage_roots);
        let roots = storage_roots.clone();
        tokio::task::spawn_blocking(move || dirs.create_dirs().and_then(|()| roots.create_dirs()))
            .await
            .map_err(|e| OpenError::Dirs(std::io::Error::other(e)))?
            .map_err(OpenError::Dirs)?;
        let qemu = qemu_user::prepare(&config, &paths).await?;
        // Two daemons on one run directory would both adopt the same guests and write the
        // same records: the second refuses to start.
        let instance_lock = lock_instance(paths.run_dir_lock()).await?;
        // Imports a previous daemon did not finish left only hidden temporary files.
        let sweep = storage::pools::Pools {
            roots: storage_roots.clone(),
            dir: config.state_dir.join("pools"),
        };
        let _ = tokio::task::spawn_blocking(move || storage::import::sweep(&sweep)).await;
        let scopes = crate::qemu::scope::Scopes::connect(&config.scopes)
            .await
            .map_err(|e| OpenError::Scopes(Box::new(e)))?;
        let cgroups = match &scopes {
            // Under systemd the scope carries the limits instead.
            Some(_) => crate::host::cgroup::GuestCgroups::none(),
            None => {
                let c = config.cgroups.clone();
                tokio::task::spawn_blocking(move || {
                    crate::host::cgroup::GuestCgroups::decide(c.mode, || {
                        crate::host::cgroup::Cgroups::detect(&c.parent)
                    })
                })
                .await
                .map_err(|e| OpenError::Dirs(std::io::Error::other(e)))?
                .map_err(OpenError::Cgroups)?
            }
        };
        let remote = {
            let (remote_config, state_dir) = (config.remote.clone(), config.state_dir.clone());
            tokio::task::spawn_blocking(move || {
                remote::RemoteHosts::load(&remote_config, &state_dir)
            })
            .await
            .map_err(|e| OpenError::Dirs(std::io::Error::other(e)))?
        };
        let events = EventBus::default();
        // Subscribed before anything is published (the reconnects below included).
        let webhooks = webhooks::Webhooks::start(&config.webhooks, events.subscribe());
        let ticket_ttl = config.ticket_ttl();
        let networks =
            network::Networks::open(config.state_dir.clone(), config.run_dir.clone()).await;
        let run_dir = config.run_dir.clone();
        let nic_ledgers =
            tokio::task::spawn_blocking(move || nics::ledgers::Ledgers::load(run_dir))
                .await
                .map_err(|e| OpenError::Dirs(std::io::Error::other(e)))?;
        let inner = Arc::new(Inner {
            nic_ledgers,
            networks,
            _instance_lock: instance_lock,
            remote,
            remote_known: remote::Known::default(),
            display_ports: crate::host::display_ports::DisplayPorts::new(&config.graphics),
            scopes,
            cgroups,
            audit: audit::AuditLog::new(paths.audit_log(), events.uuids.clone()),
            run_as: qemu.run_as,
            storage_roots,
            host: crate::host::HostProbe::from_config(&config),
            definitions: DefinitionStore::new(paths.definitions_dir()),
            records: RecordStore::new(paths.records_dir()),
            config,
            paths,
            domains: RwLock::new(BTreeMap::new()),
            events,
            problems: Mutex::new(Vec::new()),
            kvm: qemu.kvm,
            operations: Arc::default(),
            migrations: migration::Registry::default(),
            consoles: console::Consoles::new(ticket_ttl),
            webhooks,
            agents: agent::Agents::default(),
        });
        reconnect::recover(&inner).await;
        nics::recover(&inner).await;
        migration::recover(&inner).await;
        snapshots::spawn_recovery(Service {
            inner: inner.clone(),
        });
        templates::recover(&Service {
            inner: inner.clone(),
        })
        .await;
        spawn_log_capper(Arc::downgrade(&inner));
        spawn_refusal_flusher(Arc::downgrade(&inner), inner.audit.folded_signal());
        remote::spawn_poller(
            Arc::downgrade(&inner),
            Duration::from_secs(inner.config.remote.poll_secs),
        );
        Ok(Service { inner })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Virtual networks.
    pub fn networks(&self) -> &network::Networks {
        &self.inner.networks
    }

    /// Whether guests of type 'kvm' can start: `/dev/kvm` as the QEMU user sees it (checked
    /// at open); the error says why not.
    pub fn kvm_usable(&self) -> Result<(), String> {
        self.inner.kvm.clone()
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The audit log, for the operation executor (`ops`).
    pub(crate) fn audit_log(&self) -> &audit::AuditLog {
        &self.inner.audit
    }

    /// The background operations (`?wait=false`), for the operation executor.
    pub(crate) fn background(&self) -> &Arc<operations::Operations> {
        &self.inner.operations
    }

    /// Files in the state or run directories that could not be used, with the reason.
    pub fn problems(&self) -> Vec<Problem> {
        self.inner
            .problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every domain, sorted by name. Reads snapshots only: never waits behind a job or a QEMU.
    pub fn list(&self) -> Vec<DomainSummary> {
        self.inner
            .read_domains()
            .values()
            .map(|h| summary(h))
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        let h = self.inner.handle(name)?;
        let config = match h.run().live() {
            // A running guest is described by the config it was started with (its volume
            // disks as named, not as the files they resolved to).
            Some(live) => live.view_config(),
            None => h.definition().config.config().clone(),
        };
        Ok(DomainInfo {
            summary: summary(&h),
            config,
        })
    }

    /// Defines (or redefines) a persistent domain. A running domain keeps its current config
    /// until its next start. The XML is on disk before this returns. The behaviour only: the
    /// faces reach it through `ops` (detached, audited, counted).
    pub async fn define(&self, config: DomainConfig) -> Result<DomainSummary, Error> {
        let existing = self.inner.read_domains().get(&config.name).cloned();
        let config = disks::slots::reserve(config, self.inner.config.hotplug_slots);
        let validated = self
            .inner
            .prepare(config, existing.as_ref().map(|h| h.definition()))?;
        let trust = self.inner.admit(&validated).await?;
        self.define_validated(validated, trust, 3).await
    }

    /// `retries`: the handle may leave the map while we wait for its job (an undefine, a
    /// transient guest ending); then define again on a fresh one.
    fn define_validated(
        &self,
        validated: Arc<novacron_domain::ValidatedDomain>,
        trust: trust::Trust,
        retries: u32,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<DomainSummary, Error>> + Send + '_>,
    > {
        Box::pin(async move {
            let inner = &self.inner;
            let name = validated.name.clone();
            let definition = Definition {
                config: validated.clone(),
                persistent: true,
                trust,
            };
            let (h, created) = inner.insert_or_get(&name, validated.uuid, || {
                DomainHandle::new(definition.clone(), Run::Off)
            })?;
            let _job = match h.begin(Job::Define, inner.config.job_wait()).await {
                Ok(job) => job,
                Err(Error::NotFound { .. }) if retries > 0 => {
                    return self.define_validated(validated, trust, retries - 1).await
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = inner.definitions.save(validated.config(), trust).await {
                if created {
                    inner.remove_if_same(&name, &h);
                }
                return Err(Error::Internal(format!(
                    "cannot write the definition of '{name}': {e}"
                )));
            }
            h.set_definition(definition);
            inner
                .events
                .publish(&name, EventKind::Defined { persistent: true });
            Ok(summary(&h))
        })
    }

    /// Runs a mutation to its end even if the caller stops waiting. The faces' operations are
    /// detached by `ops::Executor`; only the migration peer protocol still uses this.
    pub(crate) async fn detached<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    {
        let actor = audit::current();
        tokio::spawn(audit::as_actor(actor, work))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("operation task failed: {e}"))))
    }

    /// Waits (at most `within`) until the jobs running now have finished. A stopping daemon
    /// calls this after its APIs stopped taking requests, so it never exits half-way through
    /// a start and leaves a QEMU nobody recorded.
    pub async fn quiesce(&self, within: Duration) {
        let handles: Vec<Arc<DomainHandle>> = self.inner.read_domains().values().cloned().collect();
        let deadline = tokio::time::Instant::now() + within;
        for h in handles {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(e) = h.jobs.begin(&h.name, Job::Modify, left).await {
                tracing::warn!(domain = %h.name, error = %e, "still busy at exit");
            }
        }
    }

    /// Removes the persistent definition. A running domain stays running, as a transient one.
    pub async fn undefine(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Undefine, inner.config.job_wait()).await?;
        let mut definition = h.definition();
        if !definition.persistent {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}' is transient: it has no definition to remove"
            )));
        }
        // A later domain of the same name must not inherit the old one's autostart.
        if let Err(e) =
            crate::persist::atomic::remove_durable_async(self.autostart_marker(name)).await
        {
            tracing::warn!(domain = name, error = %e, "cannot remove the autostart marker");
        }
        inner
            .definitions
            .remove(name)
            .await
            .map_err(|e| Error::Io {
                action: "remove the definition",
                path: inner.paths.definition(name).display().to_string(),
                message: e.to_string(),
            })?;
        // The NVRAM the daemon made for autoselected firmware goes with the definition (virsh
        // undefine --nvram): a later domain of the same name starts from the template. A
        // running guest keeps writing to its open, now unlinked, store until it stops. An
        // explicit <nvram> path is the user's file and is kept.
        if let Err(e) = crate::persist::atomic::remove_durable_async(inner.paths.nvram(name)).await
        {
            tracing::warn!(domain = name, error = %e, "cannot remove the NVRAM");
        }
        if h.state().is_live() || h.state() == DomainState::Starting {
            definition.persistent = false;
            h.set_definition(definition);
        } else {
            inner.remove_if_same(name, &h);
        }
        inner.events.publish(name, EventKind::Undefined);
        Ok(())
    }
}

fn summary(h: &DomainHandle) -> DomainSummary {
    let definition = h.definition();
    DomainSummary {
        name: h.name.clone(),
        uuid: definition.config.uuid.map(|u| u.to_string()),
        state: h.state(),
    }
}

impl Inner {
    fn read_domains(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<DomainHandle>>> {
        self.domains.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_domains(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<DomainHandle>>> {
        self.domains.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn handle(&self, name: &str) -> Result<Arc<DomainHandle>, Error> {
        self.read_domains()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::Domain, name))
    }

    /// The handle named `name`, created by `make` if absent; `true` when it was created. The
    /// uuid is checked against every other domain under the same lock, so two concurrent
    /// definitions cannot both claim it.
    fn insert_or_get(
        &self,
        name: &str,
        uuid: Option<novacron_domain::model::Uuid>,
        make: impl FnOnce() -> DomainHandle,
    ) -> Result<(Arc<DomainHandle>, bool), Error> {
        let mut domains = self.write_domains();
        if let Some(uuid) = uuid {
            let clash = domains
                .values()
                .find(|h| h.name != name && h.definition().config.uuid == Some(uuid));
            if let Some(other) = clash {
                return Err(Error::InvalidConfig(format!(
                    "uuid {uuid} is already used by domain '{}'",
                    other.name
                )));
            }
        }
        self.events.uuids.remember(name, uuid);
        if let Some(h) = domains.get(name) {
            return Ok((h.clone(), false));
        }
        let h = Arc::new(make());
        domains.insert(name.to_owned(), h.clone());
        Ok((h, true))
    }

    /// Removes `name` if it still maps to `handle` (not to a newer domain of the same name).
    fn remove_if_same(&self, name: &str, handle: &Arc<DomainHandle>) {
        let mut domains = self.write_domains();
        if domains.get(name).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            domains.remove(name);
            handle.mark_removed();
        }
    }

    /// What define and create both do to a new definition: fill in what libvirt would (uuid,
    /// MACs), validate, and check that its name makes safe paths and its uuid is unique.
    fn prepare(
        &self,
        config: DomainConfig,
        existing: Option<Definition>,
    ) -> Result<Arc<novacron_domain::ValidatedDomain>, Error> {
        // Free MACs drawn, explicit duplicates refused (before the defaults' random ones).
        let config = nics::macs::assign(self, config)?;
        let validated = defaults::complete(config, existing).validate()?;
        self.paths
            .check_name(&validated.name)
            .map_err(|e| Error::Invalid {
                message: e.to_string(),
                details: vec![novacron_domain::FieldError::new("name", e.to_string())],
            })?;
        self.check_uuid_unique(&validated)?;
        Ok(Arc::new(validated))
    }

    fn check_uuid_unique(&self, config: &novacron_domain::ValidatedDomain) -> Result<(), Error> {
        let Some(uuid) = config.uuid else {
            return Ok(());
        };
        let clash = self.read_domains().values().find_map(|h| {
            let other = h.definition();
            (h.name != config.name && other.config.uuid == Some(uuid)).then(|| h.name.clone())
        });
        match clash {
            Some(other) => Err(Error::InvalidConfig(format!(
                "uuid {uuid} is already used by domain '{other}'"
            ))),
            None => Ok(()),
        }
    }

    fn job_wait(&self) -> Duration {
        self.config.job_wait()
    }
}

async fn lock_instance(
    path: std::path::PathBuf,
) -> Result<nix::fcntl::Flock<std::fs::File>, OpenError> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| OpenError::Lock {
                path: path.clone(),
                source,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => OpenError::AlreadyRunning(path.clone()),
                e => OpenError::Lock {
                    path: path.clone(),
                    source: e.into(),
                },
            },
        )
    })
    .await
    .map_err(|e| OpenError::Dirs(std::io::Error::other(e)))?
}

/// Writes the counts of folded refusals once their window ends (see `AuditLog::refused`).
fn spawn_refusal_flusher(inner: Weak<Inner>, folded: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        loop {
            folded.notified().await;
            tokio::time::sleep(audit::FOLD_WINDOW).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if inner.audit.flush_refusals() {
                folded.notify_one();
            }
        }
    });
}

/// The QEMU log a live guest writes: the one its record names, else (a guest an older daemon
/// started) the old place beside the audit log.
fn guest_qemu_log(inner: &Inner, h: &DomainHandle) -> std::path::PathBuf {
    match h.run().live() {
        Some(live) => match &live.record.qemu_log {
            Some(log) => log.clone(),
            None => inner.paths.legacy_qemu_log(&h.name),
        },
        None => inner.paths.qemu_log(&h.name),
    }
}

/// Keeps every running guest's log files under the configured cap.
fn spawn_log_capper(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let max = inner.config.log_max_bytes;
            let files: Vec<_> = inner
                .read_domains()
                .values()
                .filter(|h| h.state().is_live())
                .flat_map(|h| [guest_qemu_log(&inner, h), inner.paths.serial_log(&h.name)])
                .collect();
            let audit = inner.audit.path().to_owned();
            drop(inner);
            let _ = tokio::task::spawn_blocking(move || {
                for f in files {
                    // A guest's cap never applies to the daemon's own trail, whatever a
                    // guest started by an older daemon shares a file with.
                    if crate::qemu::logs::same_file(&f, &audit) {
                        continue;
                    }
                    if let Err(e) = crate::qemu::logs::cap_log(&f, max) {
                        tracing::warn!(file = %f.display(), error = %e, "cannot cap log");
                    }
                }
            })
            .await;
        }
    });
}
