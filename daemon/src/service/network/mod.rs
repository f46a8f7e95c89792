//! Virtual networks: definitions under `<state>/networks`, runtime records under
//! `<run>/networks`, start/stop through `host`, adoption after a daemon restart, leases.
//! Mutations are serialized by one async lock (networks change rarely); queries read a
//! snapshot and never wait behind a start.

mod defaults;
mod host;
pub mod record;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use serde::Serialize;

use novacron_domain::network::{self as net, NetworkConfig, NetworkKind};
use novacron_domain::{Error, FieldError, Kind};

pub use crate::host::net::dnsmasq::Lease;
use crate::host::net::{dnsmasq, firewall_probe, netlink};
use host::HostDirs;
use record::Record;

/// One network as the list and info show it.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub uuid: Option<String>,
    pub active: bool,
    pub autostart: bool,
    /// nat, route, isolated, bridge, private, vepa, passthrough.
    pub forward: &'static str,
    pub bridge: Option<String>,
    /// `192.168.100.1/24`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Running dnsmasq pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnsmasq_pid: Option<u32>,
}

/// How a guest NIC on a network is plugged (for the taps code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// A tap on this bridge; `isolated`: set the bridge port `isolated on`.
    Bridge { bridge: String, isolated: bool },
    /// A macvtap on `dev` in `mode` (bridge, private, vepa, passthrough).
    Direct { dev: String, mode: &'static str },
}

#[derive(Clone)]
struct Entry {
    config: NetworkConfig,
    autostart: bool,
    record: Option<Record>,
}

pub struct Networks {
    /// `<state>/networks`: `<name>.json` definitions, `<name>.autostart` markers.
    defs: PathBuf,
    dirs: HostDirs,
    state: RwLock<BTreeMap<String, Entry>>,
    ops: tokio::sync::Mutex<()>,
    /// Foreign firewalls found at open that drop forwarded traffic.
    foreign_drops: RwLock<Vec<firewall_probe::ForeignDrop>>,
}

fn io_err(action: &'static str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        action,
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn not_found(name: &str) -> Error {
    Error::not_found(Kind::Network, name)
}

fn invalid(path: &str, message: String) -> Error {
    Error::Invalid {
        message: format!("{path}: {message}"),
        details: vec![FieldError::new(path, message)],
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

impl Networks {
    /// Loads definitions, adopts what a previous daemon left running (or cleans it), defines
    /// `default` on first use, starts autostart networks and probes for foreign firewalls.
    pub async fn open(state_dir: PathBuf, run_dir: PathBuf) -> Networks {
        let defs = state_dir.join("networks");
        let run = run_dir.join("networks");
        let (d, r) = (defs.clone(), run.clone());
        let (first, loaded, records) = blocking(move || {
            let first = !d.exists();
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::create_dir_all(&r);
            (first, load_definitions(&d), record::load_all(&r))
        })
        .await
        .unwrap_or_default();
        let nets = Networks {
            defs,
            dirs: HostDirs {
                run,
                ip_forward: PathBuf::from(crate::host::net::sysctl::IP_FORWARD),
            },
            state: RwLock::new(loaded),
            ops: tokio::sync::Mutex::new(()),
            foreign_drops: RwLock::new(Vec::new()),
        };
        let Ok(nl) = netlink::Netlink::connect() else {
            tracing::warn!("no netlink socket: virtual networks cannot start");
            return nets;
        };
        nets.adopt(&nl, records).await;
        if first {
            if let Err(e) = nets.define_default(&nl).await {
                tracing::warn!(error = %e, "cannot define the default network");
            }
        }
        let autostart: Vec<String> = nets
            .snapshot()
            .into_iter()
            .filter(|(_, e)| e.autostart && e.record.is_none())
            .map(|(n, _)| n)
            .collect();
        for name in autostart {
            if let Err(e) = nets.start(&name).await {
                tracing::warn!(network = %name, error = %e, "autostart failed");
            }
        }
        let drops = blocking(firewall_probe::probe).await.unwrap_or_default();
        for d in &drops {
            tracing::warn!(chain = %d.chain, fix = %d.fix, "a foreign firewall drops forwarded traffic: guests on NAT networks cannot reach beyond the host");
        }
        *nets
            .foreign_drops
            .write()
            .unwrap_or_else(PoisonError::into_inner) = drops;
        nets
    }

    fn snapshot(&self) -> BTreeMap<String, Entry> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>)) {
        f(&mut self.state.write().unwrap_or_else(PoisonError::into_inner));
    }

    /// Adopts the records of defined running networks, putting back in place what went
    /// missing while no daemon ran; only a network whose bridge is gone (or not ours) is
    /// torn down and started again. Cleans the rest.
    async fn adopt(&self, nl: &netlink::Netlink, records: Vec<Record>) {
        for mut r in records {
            let config = self.snapshot().get(&r.network).map(|e| e.config.clone());
            let defined = config.is_some();
            if let (true, Some(n)) = (r.active, &config) {
                match host::repair(nl, &self.dirs, n, &mut r).await {
                    Ok(repaired) => {
                        tracing::info!(network = %r.network, ?repaired, "adopted a running network");
                        self.update(|s| {
                            if let Some(e) = s.get_mut(&r.network) {
                                e.record = Some(r.clone());
                            }
                        });
                        continue;
                    }
                    Err(host::BridgeLost(why)) => {
                        tracing::warn!(network = %r.network, %why, "a running network lost its bridge; starting it again");
                    }
                }
            }
            let restart = r.active && defined;
            tracing::info!(network = %r.network, restart, "cleaning what a previous daemon left of a network");
            host::undo(nl, &self.dirs, &mut r, &[]).await;
            let (dir, name) = (self.dirs.run.clone(), r.network.clone());
            let _ = blocking(move || record::remove(&dir, &name)).await;
            if restart {
                if let Err(e) = self.start(&r.network).await {
                    tracing::warn!(network = %r.network, error = %e, "cannot restart a network found broken");
                }
            }
        }
    }

    /// Defines (or redefines, while stopped) a network. Fills in what the daemon chooses: the
    /// uuid, our bridge's name and MAC. Returns the stored definition.
    pub async fn define(&self, mut n: NetworkConfig) -> Result<NetworkConfig, Error> {
        net::check_network(&n)?;
        let _g = self.ops.lock().await;
        let snap = self.snapshot();
        if let Some(e) = snap.get(&n.name) {
            if e.record.is_some() {
                return Err(invalid(
                    "name",
                    format!("network '{}' is active: stop it before redefining", n.name),
                ));
            }
            if n.uuid.is_none() {
                n.uuid = e.config.uuid;
            }
        }
        let nl = netlink::Netlink::connect().map_err(|e| Error::Internal(e.to_string()))?;
        let ours = running_bridge_indexes(&nl, &snap).await;
        let host_subnets = nl
            .host_subnets(&ours)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        net::check_conflicts(&n, snap.values().map(|e| &e.config), &host_subnets)?;
        defaults::fill(&mut n, &snap, &nl).await;
        let (dir, cfg) = (self.defs.clone(), n.clone());
        blocking(move || {
            let bytes =
                serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Internal(e.to_string()))?;
            let p = dir.join(format!("{}.json", cfg.name));
            crate::persist::write_atomic(&p, &bytes, 0o600).map_err(|e| io_err("write", &p, e))
        })
        .await??;
        let autostart = snap.get(&n.name).is_some_and(|e| e.autostart);
        self.update(|s| {
            s.insert(
                n.name.clone(),
                Entry {
                    config: n.clone(),
                    autostart,
                    record: None,
                },
            );
        });
        Ok(n)
    }

    async fn define_default(&self, nl: &netlink::Netlink) -> Result<(), Error> {
        let snap = self.snapshot();
        let ours = running_bridge_indexes(nl, &snap).await;
        let host = nl
            .host_subnets(&ours)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let n = defaults::default_network(&snap, &host)?;
        self.define(n).await.map(|_| ())
    }

    /// Undefines a stopped network that no domain uses (`users`: the domains whose
    /// definitions name it).
    pub async fn undefine(&self, name: &str, users: &[String]) -> Result<(), Error> {
        let _g = self.ops.lock().await;
        let e = self
            .snapshot()
            .remove(name)
            .ok_or_else(|| not_found(name))?;
        if !users.is_empty() {
            return Err(invalid(
                "name",
                format!(
                    "network '{name}' is used by domain(s) {}",
                    users
                        .iter()
                        .map(|u| format!("'{u}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if e.record.is_some() {
            return Err(invalid(
                "name",
                format!("network '{name}' is active: stop it (net-destroy) first"),
            ));
        }
        let dir = self.defs.clone();
        let n = name.to_owned();
        blocking(move || {
            for f in [format!("{n}.json"), format!("{n}.autostart")] {
                let p = dir.join(f);
                crate::persist::remove_durable(&p).map_err(|e| io_err("remove", &p, e))?;
            }
            Ok::<(), Error>(())
        })
        .await??;
        self.update(|s| {
            s.remove(name);
        });
        Ok(())
    }

    /// Starts a network: our bridge, table and dnsmasq (managed kinds); a host bridge must
    /// exist; macvtap networks only record their device.
    pub async fn start(&self, name: &str) -> Result<(), Error> {
        let _g = self.ops.lock().await;
        let snap = self.snapshot();
        let e = snap.get(name).ok_or_else(|| not_found(name))?;
        if e.record.is_some() {
            return Err(invalid(
                "name",
                format!("network '{name}' is already active"),
            ));
        }
        let n = e.config.clone();
        let nl = netlink::Netlink::connect().map_err(|e| Error::Internal(e.to_string()))?;
        let mut r = Record::new(name, n.bridge.as_ref().map(|b| b.name.clone()));
        match n.kind() {
            NetworkKind::Managed(_) => {
                // The host may have changed since define.
                let ours = running_bridge_indexes(&nl, &snap).await;
                let host_subnets = nl
                    .host_subnets(&ours)
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let others = snap
                    .values()
                    .filter(|o| o.record.is_some())
                    .map(|o| &o.config);
                net::check_conflicts(&n, others, &host_subnets)?;
                let bridge =
                    n.bridge.as_ref().map(|b| b.name.clone()).ok_or_else(|| {
                        Error::Internal(format!("network '{name}' has no bridge"))
                    })?;
                host::bring_up(&nl, &self.dirs, &n, &bridge, &mut r).await?;
            }
            NetworkKind::HostBridge(b) | NetworkKind::Direct { dev: b, .. } => {
                if nl
                    .link(b)
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .is_none()
                {
                    let field = if n.is_managed() || matches!(n.kind(), NetworkKind::HostBridge(_))
                    {
                        "bridge.name"
                    } else {
                        "forward.interfaces[0]"
                    };
                    return Err(invalid(field, format!("no interface '{b}' on this host")));
                }
                let (dir, rr) = (self.dirs.run.clone(), r.clone());
                blocking(move || record::save(&dir, &rr))
                    .await?
                    .map_err(|e| io_err("write", &self.dirs.run, e))?;
            }
        }
        self.update(|s| {
            if let Some(e) = s.get_mut(name) {
                e.record = Some(r);
            }
        });
        Ok(())
    }

    /// Stops a network and undoes exactly what its start did.
    pub async fn stop(&self, name: &str) -> Result<(), Error> {
        let _g = self.ops.lock().await;
        let snap = self.snapshot();
        let e = snap.get(name).ok_or_else(|| not_found(name))?;
        let Some(mut r) = e.record.clone() else {
            return Err(invalid("name", format!("network '{name}' is not active")));
        };
        r.active = false;
        let (dir, rr) = (self.dirs.run.clone(), r.clone());
        blocking(move || record::save(&dir, &rr))
            .await?
            .map_err(|e| io_err("write", &self.dirs.run, e))?;
        let nl = netlink::Netlink::connect().map_err(|e| Error::Internal(e.to_string()))?;
        let keep: Vec<String> = snap
            .iter()
            .filter(|(k, o)| {
                *k != name
                    && o.record.is_some()
                    && matches!(
                        o.config.kind(),
                        NetworkKind::Managed(net::ForwardMode::Nat | net::ForwardMode::Route)
                    )
            })
            .map(|(k, _)| k.clone())
            .collect();
        host::undo(&nl, &self.dirs, &mut r, &keep).await;
        if let Some(heir) = keep.first() {
            // The undo may have handed our ip_forward restore to `heir`'s record on disk: its
            // in-memory record must carry it too, or its own stop would never restore it.
            let p = record::path(&self.dirs.run, heir);
            let reread = blocking(move || {
                std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            })
            .await?;
            if let Some(h) = reread {
                self.update(|s| {
                    if let Some(e) = s.get_mut(&h.network) {
                        if e.record.is_some() {
                            e.record = Some(h.clone());
                        }
                    }
                });
            }
        }
        let (dir, n) = (self.dirs.run.clone(), name.to_owned());
        blocking(move || record::remove(&dir, &n))
            .await?
            .map_err(|e| io_err("remove", &self.dirs.run, e))?;
        self.update(|s| {
            if let Some(e) = s.get_mut(name) {
                e.record = None;
            }
        });
        Ok(())
    }

    /// Stops every running network (daemon shutdown is NOT this: networks outlive the daemon).
    pub async fn stop_all(&self) {
        for (name, e) in self.snapshot() {
            if e.record.is_some() {
                let _ = self.stop(&name).await;
            }
        }
    }

    pub async fn set_autostart(&self, name: &str, on: bool) -> Result<(), Error> {
        let _g = self.ops.lock().await;
        if !self.snapshot().contains_key(name) {
            return Err(not_found(name));
        }
        let p = self.defs.join(format!("{name}.autostart"));
        blocking(move || {
            if on {
                crate::persist::write_atomic(&p, b"", 0o600).map_err(|e| io_err("write", &p, e))
            } else {
                crate::persist::remove_durable(&p)
                    .map(|_| ())
                    .map_err(|e| io_err("remove", &p, e))
            }
        })
        .await??;
        self.update(|s| {
            if let Some(e) = s.get_mut(name) {
                e.autostart = on;
            }
        });
        Ok(())
    }

    fn info_of(name: &str, e: &Entry) -> NetworkInfo {
        NetworkInfo {
            name: name.to_owned(),
            uuid: e.config.uuid.map(|u| u.to_string()),
            active: e.record.is_some(),
            autostart: e.autostart,
            forward: e.config.forward.mode.as_str(),
            bridge: e.config.bridge.as_ref().map(|b| b.name.clone()),
            address: e
                .config
                .ip
                .as_ref()
                .map(|i| format!("{}/{}", i.address, i.prefix)),
            dnsmasq_pid: e.record.as_ref().and_then(Record::dnsmasq).map(|p| p.pid),
        }
    }

    pub fn list(&self) -> Vec<NetworkInfo> {
        self.snapshot()
            .iter()
            .map(|(n, e)| Self::info_of(n, e))
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<NetworkInfo, Error> {
        let s = self.snapshot();
        s.get(name)
            .map(|e| Self::info_of(name, e))
            .ok_or_else(|| not_found(name))
    }

    pub fn config(&self, name: &str) -> Result<NetworkConfig, Error> {
        self.snapshot()
            .get(name)
            .map(|e| e.config.clone())
            .ok_or_else(|| not_found(name))
    }

    /// The current DHCP leases of a network (empty while it is stopped).
    pub async fn leases(&self, name: &str) -> Result<Vec<Lease>, Error> {
        let active = self
            .snapshot()
            .get(name)
            .map(|e| e.record.is_some())
            .ok_or_else(|| not_found(name))?;
        if !active {
            return Ok(Vec::new());
        }
        let files = dnsmasq::Files::new(&self.dirs.run, name);
        blocking(move || dnsmasq::leases(&files)).await
    }

    /// The leased IPv4 addresses of `mac` on any running network (domain info).
    pub async fn addresses_of(
        &self,
        macs: Vec<novacron_domain::model::ids::MacAddr>,
    ) -> Vec<(String, Lease)> {
        let mut out = Vec::new();
        for (name, e) in self.snapshot() {
            if e.record.is_none() {
                continue;
            }
            let files = dnsmasq::Files::new(&self.dirs.run, &name);
            let leases = blocking(move || dnsmasq::leases(&files))
                .await
                .unwrap_or_default();
            out.extend(
                leases
                    .into_iter()
                    .filter(|l| macs.contains(&l.mac))
                    .map(|l| (name.clone(), l)),
            );
        }
        out
    }

    /// How a NIC on `name` is plugged: the one function the taps code calls for
    /// `<interface type='network'>`. The network must be active.
    pub fn attachment(&self, name: &str) -> Result<Attachment, Error> {
        let s = self.snapshot();
        let e = s.get(name).ok_or_else(|| not_found(name))?;
        if e.record.is_none() {
            return Err(invalid(
                "source.network",
                format!("network '{name}' is not active (net-start it)"),
            ));
        }
        Ok(match e.config.kind() {
            NetworkKind::Managed(_) | NetworkKind::HostBridge(_) => Attachment::Bridge {
                bridge: e
                    .config
                    .bridge
                    .as_ref()
                    .map(|b| b.name.clone())
                    .unwrap_or_default(),
                isolated: e.config.isolated_ports,
            },
            NetworkKind::Direct { dev, mode } => Attachment::Direct {
                dev: dev.to_owned(),
                mode: mode.as_str(),
            },
        })
    }

    /// Foreign firewalls found at open that drop forwarded traffic, with the fix.
    pub fn foreign_drops(&self) -> Vec<firewall_probe::ForeignDrop> {
        self.foreign_drops
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Indexes of the bridges of our running networks (their addresses are ours, not the host's).
async fn running_bridge_indexes(nl: &netlink::Netlink, s: &BTreeMap<String, Entry>) -> Vec<u32> {
    let mut out = Vec::new();
    for e in s
        .values()
        .filter(|e| e.record.is_some() && e.config.is_managed())
    {
        if let Some(b) = &e.config.bridge {
            if let Ok(Some(l)) = nl.link(&b.name).await {
                out.push(l.index);
            }
        }
    }
    out
}

fn load_definitions(dir: &std::path::Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<NetworkConfig>(&b).map_err(|e| e.to_string()))
            .and_then(|n| {
                net::check_stored_network(&n)
                    .map(|()| n)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(n) => {
                let autostart = dir.join(format!("{}.autostart", n.name)).exists();
                out.insert(
                    n.name.clone(),
                    Entry {
                        config: n,
                        autostart,
                        record: None,
                    },
                );
            }
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "network definition skipped"),
        }
    }
    out
}

impl super::Service {
    /// Domains whose definitions have an interface on network `name`.
    pub fn network_users(&self, name: &str) -> Vec<String> {
        let handles: Vec<_> = self
            .inner
            .domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        handles
            .iter()
            .filter(|h| {
                h.definition().config.devices.interfaces.iter().any(|i| {
                    matches!(&i.source, novacron_domain::model::InterfaceSource::Network { network } if network == name)
                })
            })
            .map(|h| h.name.clone())
            .collect()
    }
}
