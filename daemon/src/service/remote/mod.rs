//! Remote vendor hypervisors, behind the same service as local guests.
//!
//! The registry holds one [`RemoteHost`] per configured or registered host. Every call on a
//! remote host goes through it (time limits, breaker, stale inventory live in
//! `novacron-remote-drivers`), so the faces stay translations, and a vendor that hangs costs
//! only its own callers: the registry's lock is held for lookups, never across a vendor call.

mod poller;
mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use novacron_domain::{DomainInfo, Error};
use novacron_remote_drivers::discover::Discovered;
use novacron_remote_drivers::{DriverKind, HostStatus, Inventory, RemoteHost, TlsOptions};

pub use crate::config::remote::{HostEntry, RemoteConfig};
pub(crate) use poller::{spawn as spawn_poller, Known};
use store::HostStore;

use super::Service;

/// Where a host's registration came from: configured hosts are changed in the file only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Api,
}

/// `GET /v1/hosts` row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostView {
    #[serde(flatten)]
    pub status: HostStatus,
    pub origin: Origin,
}

/// What `POST /v1/hosts` carries: an entry whose credentials come inline (stored 0600 by us).
#[derive(Debug, Clone)]
pub struct Registration {
    pub entry: HostEntry,
    /// `user = ...` / `password = ...` (or token) lines, as a credentials file holds them.
    pub credentials: novacron_remote_drivers::Secret,
}

struct Registered {
    host: Arc<RemoteHost>,
    origin: Origin,
}

pub(crate) struct RemoteHosts {
    hosts: RwLock<BTreeMap<String, Registered>>,
    store: HostStore,
    disabled: Vec<DriverKind>,
    /// Serialises registrations so two for one name cannot both write files.
    registering: tokio::sync::Mutex<()>,
    /// Hosts that could not be set up at startup, and why.
    problems: Vec<String>,
}

impl RemoteHosts {
    /// Loads the configured and the API-registered hosts. A host that cannot be set up is
    /// reported (`problems`) and left out; it never stops the daemon or local guests.
    pub fn load(config: &RemoteConfig, state_dir: &std::path::Path) -> Self {
        let store = HostStore::new(state_dir.join("hosts"));
        let mut problems = Vec::new();
        let mut hosts = BTreeMap::new();
        let (stored, bad) = store.load_all();
        problems.extend(
            bad.into_iter()
                .map(|(path, why)| format!("{}: {why}", path.display())),
        );
        let entries = config
            .hosts
            .iter()
            .map(|e| (e, Origin::Config))
            .chain(stored.iter().map(|e| (e, Origin::Api)));
        for (entry, origin) in entries {
            if hosts.contains_key(&entry.name) {
                problems.push(format!(
                    "remote host '{}' is defined twice; the first definition is used",
                    entry.name
                ));
                continue;
            }
            match open_host(entry, &config.disabled_drivers) {
                Ok(host) => {
                    hosts.insert(
                        entry.name.clone(),
                        Registered {
                            host: Arc::new(host),
                            origin,
                        },
                    );
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        for p in &problems {
            tracing::warn!("{p}");
        }
        Self {
            hosts: RwLock::new(hosts),
            store,
            disabled: config.disabled_drivers.clone(),
            registering: tokio::sync::Mutex::new(()),
            problems,
        }
    }

    fn get(&self, name: &str) -> Result<Arc<RemoteHost>, Error> {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|r| r.host.clone())
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::RemoteHost, name))
    }

    pub fn all(&self) -> Vec<Arc<RemoteHost>> {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|r| r.host.clone())
            .collect()
    }

    fn views(&self) -> Vec<HostView> {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|r| HostView {
                status: r.host.status(),
                origin: r.origin,
            })
            .collect()
    }
}

fn open_host(entry: &HostEntry, disabled: &[DriverKind]) -> Result<RemoteHost, Error> {
    if disabled.contains(&entry.driver) {
        return Err(Error::InvalidConfig(format!(
            "remote host '{}': the {} driver is disabled (remote.disabled_drivers)",
            entry.name, entry.driver
        )));
    }
    let config = entry
        .to_host_config()
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    RemoteHost::connect(config)
}

impl Service {
    /// Every remote host with its breaker state and the age of its last inventory.
    pub fn remote_hosts(&self) -> Vec<HostView> {
        self.inner.remote.views()
    }

    /// Hosts left out at startup (bad entry, unreadable credentials, disabled driver).
    pub fn remote_problems(&self) -> Vec<String> {
        self.inner.remote.problems.clone()
    }

    pub fn remote_host(&self, host: &str) -> Result<HostView, Error> {
        self.inner
            .remote
            .views()
            .into_iter()
            .find(|v| v.status.name == host)
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::RemoteHost, host))
    }

    /// The host's domains, or its last inventory marked stale while it cannot answer.
    /// `state`, `name` (a `*`/`?` glob): only the matching domains (the whole listing still
    /// feeds events).
    pub async fn remote_list(
        &self,
        host: &str,
        state: Option<novacron_domain::DomainState>,
        name: Option<&str>,
    ) -> Result<Inventory, Error> {
        let host = self.inner.remote.get(host)?;
        let asked_at = std::time::Instant::now();
        let mut inventory = host.inventory().await?;
        if inventory.stale.is_none() {
            poller::observe(&self.inner, host.name(), &inventory.domains, asked_at);
        }
        if let Some(state) = state {
            inventory.domains.retain(|d| d.state == state);
        }
        if let Some(glob) = name {
            inventory
                .domains
                .retain(|d| super::status::glob_match(glob, &d.name));
        }
        Ok(inventory)
    }

    pub async fn remote_get(&self, host: &str, name: &str) -> Result<DomainInfo, Error> {
        self.inner.remote.get(host)?.get(name).await
    }

    /// The registered host named `host`, for an operation to run on (`ops`).
    pub fn remote_target(&self, host: &str) -> Result<Arc<RemoteHost>, Error> {
        self.inner.remote.get(host)
    }

    /// A remote domain as a vendor call left it; its state is published as an event.
    pub async fn remote_after(&self, host: &RemoteHost, name: &str) -> Result<DomainInfo, Error> {
        let asked_at = std::time::Instant::now();
        let info = host.get(name).await?;
        poller::observe_one(&self.inner, host.name(), &info.summary, asked_at);
        Ok(info)
    }

    /// The configured graceful-shutdown wait, for vendors as for local guests.
    pub fn default_shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.config.shutdown_timeout_secs)
    }

    /// Registers a host through the API: checked, its credentials stored 0600, then live.
    pub async fn register_host(&self, registration: Registration) -> Result<HostView, Error> {
        let remote = &self.inner.remote;
        let _serial = remote.registering.lock().await;
        let mut entry = registration.entry;
        if entry.credentials_file.is_some() || entry.credential.is_some() {
            return Err(Error::InvalidConfig(format!(
                "remote host '{}': give credentials inline when registering through the API",
                entry.name
            )));
        }
        crate::config::remote::check_name(&entry.name)
            .map_err(|reason| Error::InvalidConfig(format!("remote host: {reason}")))?;
        // Ours to store: the entry points at the 0600 file written below.
        entry.credentials_file = Some(remote.store.credentials_path(&entry.name));
        entry
            .check()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        if self
            .inner
            .config
            .remote
            .hosts
            .iter()
            .any(|h| h.name == entry.name)
        {
            return Err(Error::AlreadyExists(format!(
                "remote host {} (defined in the configuration file)",
                entry.name
            )));
        }
        if remote.get(&entry.name).is_ok() {
            return Err(Error::AlreadyExists(format!("remote host {}", entry.name)));
        }
        // A request-named path, read by the driver as root: only a small regular file from
        // the allowed directory (the driver reads it again from there, bounded by this check).
        if let Some(ca) = &entry.ca_file {
            crate::service::request_file::read(
                "ca_file",
                ca,
                &self.inner.config.request_files_dir(),
            )
            .await?;
        }
        // Parse before storing: a malformed credential is refused and nothing is written.
        novacron_remote_drivers::Credentials::parse(registration.credentials.expose())
            .map_err(|e| Error::InvalidConfig(format!("remote host '{}': {e}", entry.name)))?;
        remote
            .store
            .save(&entry, registration.credentials.expose().to_owned())
            .await
            .map_err(|e| Error::Internal(format!("storing remote host: {e}")))?;
        let opened = {
            let entry = entry.clone();
            let disabled = remote.disabled.clone();
            tokio::task::spawn_blocking(move || open_host(&entry, &disabled))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(e.to_string())))
        };
        let host = match opened {
            Ok(host) => host,
            Err(e) => {
                // Refused: nothing of it stays behind.
                if let Err(rm) = remote.store.remove(&entry.name).await {
                    tracing::warn!(host = %entry.name, "removing a refused registration: {rm}");
                }
                return Err(e);
            }
        };
        let view = HostView {
            status: host.status(),
            origin: Origin::Api,
        };
        remote
            .hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                entry.name.clone(),
                Registered {
                    host: Arc::new(host),
                    origin: Origin::Api,
                },
            );
        Ok(view)
    }

    /// Forgets an API-registered host (its stored credentials too). Configured hosts are
    /// removed from the configuration file instead.
    pub async fn unregister_host(&self, name: &str) -> Result<(), Error> {
        let remote = &self.inner.remote;
        let _serial = remote.registering.lock().await;
        let origin = remote
            .hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|r| r.origin)
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::RemoteHost, name))?;
        if origin == Origin::Config {
            return Err(Error::InvalidConfig(format!(
                "remote host '{name}' is defined in the configuration file; remove it there"
            )));
        }
        remote
            .store
            .remove(name)
            .await
            .map_err(|e| Error::Internal(format!("removing remote host {name}: {e}")))?;
        remote
            .hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        poller::forget(&self.inner, name);
        Ok(())
    }

    /// Which vendor API answers at each address. Registers nothing.
    pub async fn discover_hosts(
        &self,
        addresses: &[String],
        tls: TlsOptions,
        timeout: Duration,
    ) -> Vec<Discovered> {
        let probes = addresses
            .iter()
            .map(|a| novacron_remote_drivers::discover::discover(a, &tls, timeout));
        futures_util::future::join_all(probes).await
    }
}
