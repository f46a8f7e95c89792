//! NIC hotplug (virsh attach-interface / detach-interface / domif-setlink / domiflist):
//! the tap made and recorded first, then `getfd` + `netdev_add` + `device_add` on a free
//! PCIe root port; detach is `device_del`, then waiting for DEVICE_DELETED in the domain's
//! async job slot with a deadline, then `netdev_del` and the link removed.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use novacron_domain::model::{Address, Interface, InterfaceSource, MacAddr, NicModel};
use novacron_domain::{Error, FieldError};
use novacron_qmp::commands::{DeviceAdd, DeviceDel, GetFd};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::domain::{DomainHandle, Live, Run};
use super::super::jobs::{AsyncJob, Job};
use super::super::lifecycle::qmp_error;
use super::super::{Inner, Service};
use super::ledger::{Ledger, MadeLink};
use crate::host::taps::link::Netlink;

/// How long a detach waits for the guest by default.
pub const DETACH_DEADLINE: Duration = Duration::from_secs(20);

/// Where a NIC change applies (virsh `--live` / `--config`). Neither: live when the guest
/// runs, else its definition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// One NIC as `domiflist` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    pub mac: String,
    /// `bridge`, `network`, `direct`, `user`, `vhostuser`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bridge, network or host device.
    pub source: Option<String>,
    pub model: String,
    /// The host interface the daemon made for it, while the guest runs.
    pub ifname: Option<String>,
    /// `up` or `down`.
    pub link: String,
}

fn source_of(nic: &Interface) -> (&'static str, Option<String>) {
    match &nic.source {
        InterfaceSource::Bridge { bridge } => ("bridge", Some(bridge.clone())),
        InterfaceSource::Network { network } => ("network", Some(network.clone())),
        InterfaceSource::Direct { dev, .. } => ("direct", Some(dev.clone())),
        InterfaceSource::User => ("user", None),
        InterfaceSource::VhostUser { path, .. } => ("vhostuser", Some(path.clone())),
    }
}

fn bad_mac(mac: &str) -> Error {
    Error::Invalid {
        message: format!("mac: '{}' is not a MAC address", mac.escape_debug()),
        details: vec![FieldError::new(
            "mac",
            "not a MAC address (xx:xx:xx:xx:xx:xx)",
        )],
    }
}

fn no_nic(domain: &str, mac: MacAddr) -> Error {
    Error::Invalid {
        message: format!("mac: domain '{domain}' has no NIC with MAC {mac}"),
        details: vec![FieldError::new("mac", format!("no NIC with MAC {mac}"))],
    }
}

/// Parses a MAC from a request.
pub fn parse_mac(mac: &str) -> Result<MacAddr, Error> {
    mac.parse::<MacAddr>().map_err(|_| bad_mac(mac))
}

pub(super) async fn load_ledger(inner: &Arc<Inner>, domain: &str) -> Result<Ledger, Error> {
    inner
        .nic_ledgers
        .get(domain)
        .await
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::Internal(format!("NIC ledger of '{domain}': {e}")))
}

pub(super) async fn save_ledger(inner: &Arc<Inner>, domain: &str, l: &Ledger) -> Result<(), Error> {
    inner
        .nic_ledgers
        .save(domain, l)
        .await
        .map_err(|e| Error::Io {
            action: "write the NIC ledger of",
            path: domain.to_owned(),
            message: e.to_string(),
        })
}

/// The NICs a running guest has now: the started ones still plugged (device `net<i>`) and
/// the hot-added ones, each with its ledger entry if the daemon made a link for it.
pub(super) fn live_nics(live: &Live, l: &Ledger) -> Vec<(Interface, String, Option<MadeLink>)> {
    let mut out = Vec::new();
    for (i, nic) in live.config().devices.interfaces.into_iter().enumerate() {
        let device = format!("net{i}");
        if l.unplugged.contains(&device) {
            continue;
        }
        let made = l.links.iter().find(|m| m.device == device).cloned();
        out.push((nic, device, made));
    }
    for m in &l.links {
        if let Some(nic) = &m.hotplugged {
            out.push((nic.clone(), m.device.clone(), Some(m.clone())));
        }
    }
    out
}

/// The NICs a running guest has now, in the order a command line for the same device set
/// gives them (the started ones still plugged, then the hot-added ones at the root ports they
/// were plugged into): what a migration's destination starts with.
pub(crate) async fn live_interfaces(
    inner: &Arc<Inner>,
    name: &str,
    live: &Live,
) -> Result<Vec<Interface>, Error> {
    let l = load_ledger(inner, name).await?;
    Ok(live_nics(live, &l)
        .into_iter()
        .map(|(nic, _, _)| nic)
        .collect())
}

pub(super) fn running(h: &DomainHandle) -> Option<Arc<Live>> {
    match h.run() {
        Run::Up { live, .. } => Some(live),
        _ => None,
    }
}

/// Resolves the scope against the domain's state: live needs a running guest, config a
/// persistent definition.
pub(super) fn resolve_scope(
    h: &DomainHandle,
    scope: Scope,
    op: &'static str,
) -> Result<Scope, Error> {
    let up = running(h).is_some();
    let scope = if !scope.live && !scope.config {
        Scope {
            live: up,
            config: !up,
        }
    } else {
        scope
    };
    if scope.live && !up {
        return Err(Error::WrongState {
            name: h.name.clone(),
            state: h.state(),
            operation: op,
        });
    }
    if scope.config && !h.definition().persistent {
        return Err(Error::Invalid {
            message: format!(
                "config: domain '{}' is transient: it has no definition to change",
                h.name
            ),
            details: vec![FieldError::new("config", "the domain is transient")],
        });
    }
    Ok(scope)
}

/// The `pci.N` root ports (from `query-pci`). Which devices sit behind one is not there
/// until the guest's firmware numbered the bus: [`occupied`] asks QOM instead.
fn root_ports(pci: &Value) -> Vec<String> {
    let mut ports = Vec::new();
    for bus in pci.as_array().into_iter().flatten() {
        for dev in bus["devices"].as_array().into_iter().flatten() {
            if let (Some(id), Some(_)) = (dev["qdev_id"].as_str(), dev.get("pci_bridge")) {
                if id.starts_with("pci.") {
                    ports.push(id.to_owned());
                }
            }
        }
    }
    ports
}

/// Whether the bus of root port `port` has a device: its QOM bus object links each child as
/// `child[N]`.
async fn occupied(qmp: &novacron_qmp::Client, port: &str) -> Result<bool, novacron_qmp::Error> {
    let path = format!("/machine/peripheral/{port}/{port}");
    let props = qmp
        .execute_raw("qom-list", Some(&json!({ "path": path })))
        .await?;
    Ok(props
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"].as_str().is_some_and(|n| n.starts_with("child["))))
}

fn qemu_model(model: NicModel) -> &'static str {
    match model {
        NicModel::Virtio => "virtio-net-pci",
        NicModel::E1000e => "e1000e",
        NicModel::E1000 => "e1000",
        NicModel::Rtl8139 => "rtl8139",
    }
}

impl Service {
    /// `domiflist`: the guest's NICs (live when it runs, else as defined).
    pub async fn interfaces(&self, name: &str) -> Result<Vec<NicInfo>, Error> {
        let h = self.inner.handle(name)?;
        let info = |nic: &Interface, made: Option<&MadeLink>| {
            let (kind, source) = source_of(nic);
            NicInfo {
                mac: nic.mac.map(|m| m.to_string()).unwrap_or_default(),
                kind: kind.to_owned(),
                source,
                model: nic.model.as_str().to_owned(),
                ifname: made.map(|m| m.ifname.clone()),
                link: if made.is_some_and(|m| m.link_down) {
                    "down"
                } else {
                    "up"
                }
                .to_owned(),
            }
        };
        match running(&h) {
            Some(live) => {
                let l = load_ledger(&self.inner, name).await?;
                Ok(live_nics(&live, &l)
                    .iter()
                    .map(|(nic, _, made)| info(nic, made.as_ref()))
                    .collect())
            }
            None => Ok(h
                .definition()
                .config
                .config()
                .devices
                .interfaces
                .iter()
                .map(|n| info(n, None))
                .collect()),
        }
    }

    /// `attach-interface`: adds `nic` live (tap made, recorded, passed by `getfd`, plugged on
    /// a free root port) and/or to the definition. Returns the NIC as attached.
    pub async fn attach_interface(
        &self,
        name: &str,
        nic: Interface,
        scope: Scope,
    ) -> Result<NicInfo, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let mut nic = nic;
        let mut made = None;
        {
            let _job = h.begin(Job::Modify, inner.job_wait()).await?;
            let scope = resolve_scope(&h, scope, "attach-interface")?;
            // The ledger is read once: the MAC check, the slot and the port come from it.
            let mut ledger = match running(&h) {
                Some(_) => Some(load_ledger(inner, name).await?),
                None => None,
            };
            // A free MAC, or the caller's when no other NIC on this host has it.
            let mut probe = h.definition().config.config().clone();
            if let (Some(live), Some(l)) = (running(&h), ledger.as_ref()) {
                probe.devices.interfaces =
                    live_nics(&live, l).into_iter().map(|(n, _, _)| n).collect();
            }
            let used = super::macs::in_use_with_ledgers(inner, name).await;
            let own: Vec<MacAddr> = probe
                .devices
                .interfaces
                .iter()
                .filter_map(|n| n.mac)
                .collect();
            match nic.mac {
                Some(m) => {
                    let other = used
                        .get(&m)
                        .cloned()
                        .or_else(|| own.contains(&m).then(|| name.to_owned()));
                    if let Some(other) = other {
                        return Err(Error::Invalid {
                            message: format!("mac: MAC {m} is already used by domain '{other}'"),
                            details: vec![FieldError::new(
                                "mac",
                                format!("MAC {m} is already used by domain '{other}'"),
                            )],
                        });
                    }
                }
                None => {
                    let mut all = used;
                    for m in own {
                        all.insert(m, name.to_owned());
                    }
                    nic.mac = Some(super::macs::draw(&all));
                }
            }
            // The definition must accept the NIC (validation names what is wrong).
            let mut with = h.definition().config.config().clone();
            with.devices.interfaces.push(nic.clone());
            // ...and the caller may name what it names (a host NIC is admin-only).
            let validated = Arc::new(with.clone().validate()?);
            inner.admit(&validated).await?;
            if scope.live {
                let live = running(&h).ok_or_else(|| Error::Internal("guest stopped".into()))?;
                let l = ledger
                    .as_mut()
                    .ok_or_else(|| Error::Internal("guest started meanwhile".into()))?;
                made = Some(attach_live(inner, &h, &live, &nic, l).await?);
            }
            if scope.config {
                drop(validated);
                drop(_job);
                self.define(with).await?;
            }
        }
        let (kind, source) = source_of(&nic);
        Ok(NicInfo {
            mac: nic.mac.map(|m| m.to_string()).unwrap_or_default(),
            kind: kind.to_owned(),
            source,
            model: nic.model.as_str().to_owned(),
            ifname: made.map(|m| m.ifname),
            link: if nic.link_down { "down" } else { "up" }.to_owned(),
        })
    }

    /// `detach-interface`: `device_del`, DEVICE_DELETED awaited in the async job slot until
    /// `deadline`, then `netdev_del` and the link removed; and/or removed from the definition.
    /// A guest that never releases the device (no OS) ends in `timeout`, the NIC still there.
    pub async fn detach_interface(
        &self,
        name: &str,
        mac: &str,
        scope: Scope,
        deadline: Option<Duration>,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let mac = parse_mac(mac)?;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let scope = resolve_scope(&h, scope, "detach-interface")?;
        let defined = h.definition().config.config().clone();
        if scope.config
            && !defined
                .devices
                .interfaces
                .iter()
                .any(|n| n.mac == Some(mac))
            && !scope.live
        {
            return Err(no_nic(name, mac));
        }
        if scope.live {
            let live = running(&h).ok_or_else(|| Error::Internal("guest stopped".into()))?;
            let l = load_ledger(inner, name).await?;
            let Some((_, device, made)) = live_nics(&live, &l)
                .into_iter()
                .find(|(n, _, _)| n.mac == Some(mac))
            else {
                return Err(no_nic(name, mac));
            };
            let qmp = live.qmp(name)?;
            let mut events = qmp.subscribe();
            let absent = match qmp.execute(&DeviceDel { id: device.clone() }).await {
                Ok(_) => false,
                // Never plugged (an attach whose outcome was unknown kept it recorded):
                // nothing to wait for, the rest is removed.
                Err(novacron_qmp::Error::Qmp { error, .. })
                    if error.class.as_str() == "DeviceNotFound" =>
                {
                    true
                }
                Err(e) => return Err(qmp_error(name, "detach-interface", e)),
            };
            // The guest's answer is awaited in the async slot: other jobs may run meanwhile.
            let _long = h.jobs.begin_async(name, AsyncJob::NicUnplug)?;
            drop(job);
            let deadline = deadline.unwrap_or(DETACH_DEADLINE);
            let dev = device.clone();
            let released = if absent {
                Ok(())
            } else {
                events
                    .wait_for(deadline, |e| {
                        matches!(&e.kind, novacron_qmp::EventKind::DeviceDeleted { device: Some(d), .. } if *d == dev)
                    })
                    .await
                    .map(drop)
            };
            if released.is_err() {
                return Err(Error::Timeout {
                    operation:
                        "detach-interface (the guest did not release the NIC; it stays attached)",
                    after: deadline,
                });
            }
            let netdev = made.as_ref().map_or_else(
                || device.replacen("net", "hostnet", 1),
                |m| m.netdev.clone(),
            );
            if let Err(e) = qmp
                .execute_raw("netdev_del", Some(&json!({ "id": netdev })))
                .await
            {
                tracing::warn!(domain = name, error = %e, "netdev_del after the NIC left");
            }
            let _job = h.begin(Job::Modify, inner.job_wait()).await?;
            let mut l = load_ledger(inner, name).await?;
            if let Some(m) = &made {
                if let Ok(nl) = Netlink::open() {
                    let alias = crate::host::taps::marker_for(name);
                    super::qos::remove_link(&nl, &alias, &m.ifname, m.ifindex).await;
                }
                l.links.retain(|x| x.device != m.device);
            }
            if made.as_ref().is_none_or(|m| m.hotplugged.is_none()) {
                l.unplugged.push(device);
            }
            save_ledger(inner, name, &l).await?;
        }
        if scope.config {
            let mut cfg = h.definition().config.config().clone();
            let before = cfg.devices.interfaces.len();
            cfg.devices.interfaces.retain(|n| n.mac != Some(mac));
            if cfg.devices.interfaces.len() != before {
                self.define(cfg).await?;
            } else if !scope.live {
                return Err(no_nic(name, mac));
            }
        }
        Ok(())
    }

    /// `domif-setlink`: the NIC's link up or down as the guest sees it (QMP `set_link`).
    pub async fn set_interface_link(&self, name: &str, mac: &str, up: bool) -> Result<(), Error> {
        let inner = &self.inner;
        let mac = parse_mac(mac)?;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let Some(live) = running(&h) else {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "domif-setlink",
            });
        };
        let mut l = load_ledger(inner, name).await?;
        let Some((_, device, made)) = live_nics(&live, &l)
            .into_iter()
            .find(|(n, _, _)| n.mac == Some(mac))
        else {
            return Err(no_nic(name, mac));
        };
        live.qmp(name)?
            .execute_raw("set_link", Some(&json!({ "name": device, "up": up })))
            .await
            .map_err(|e| qmp_error(name, "domif-setlink", e))?;
        if let Some(m) = made {
            for x in l.links.iter_mut().filter(|x| x.device == m.device) {
                x.link_down = !up;
            }
            save_ledger(inner, name, &l).await?;
        }
        Ok(())
    }
}

/// The root ports hot-added NICs of `l` sit on (their recorded address).
pub(crate) fn ledger_ports(l: &Ledger) -> Vec<u32> {
    l.links
        .iter()
        .filter_map(|m| m.hotplugged.as_ref()?.address.as_ref())
        .filter_map(|a| match a {
            Address::Pci { bus, slot: 0, .. } if *bus != 0 => Some(u32::from(*bus)),
            _ => None,
        })
        .collect()
}

/// The root ports hot-added NICs of running guest `domain` sit on (for disk hotplug, whose
/// live device set does not list them).
pub(crate) async fn nic_ports(inner: &Arc<Inner>, domain: &str) -> Result<Vec<u32>, Error> {
    Ok(ledger_ports(&load_ledger(inner, domain).await?))
}

/// A free PCIe root port for a hot-added NIC. The running config and the ledger say which
/// ports are taken (one QMP `qom-list` confirms the first candidate, so nothing placed behind
/// the daemon's back is plugged over); only when every candidate is taken are all the
/// guest's root ports asked (`query-pci` + a `qom-list` each).
async fn free_port(
    name: &str,
    qmp: &novacron_qmp::Client,
    config: &novacron_domain::DomainConfig,
    l: &Ledger,
) -> Result<(u32, String), Error> {
    let err = |e| qmp_error(name, "attach-interface", e);
    let taken = ledger_ports(l);
    let candidates: Vec<u32> = super::super::disks::free_root_ports(config)
        .into_iter()
        .filter(|p| !taken.contains(p))
        .collect();
    for port in candidates {
        let id = format!("pci.{port}");
        if !occupied(qmp, &id).await.map_err(err)? {
            return Ok((port, id));
        }
    }
    let pci = qmp.execute_raw("query-pci", None).await.map_err(err)?;
    for id in root_ports(&pci) {
        let Some(port) = id.strip_prefix("pci.").and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !taken.contains(&port) && !occupied(qmp, &id).await.map_err(err)? {
            return Ok((port, id));
        }
    }
    Err(Error::Invalid {
        message: format!(
            "domain '{name}' has no free PCIe root port to plug a NIC into; define spare \
             <controller type='pci' model='pcie-root-port'/> controllers"
        ),
        details: vec![FieldError::new(
            "devices.controllers",
            "no free pcie-root-port",
        )],
    })
}

/// The lowest free slot of an i440fx guest's root bus `pci.0` (QEMU's own choice for a
/// device given no address): what `query-pci` shows taken, and what the ledger recorded for
/// hot-added NICs (one whose unplug is still pending is in both). Never 0 (host bridge) or 1
/// (PIIX3).
async fn free_root_slot(name: &str, qmp: &novacron_qmp::Client, l: &Ledger) -> Result<u8, Error> {
    let pci = qmp
        .execute_raw("query-pci", None)
        .await
        .map_err(|e| qmp_error(name, "attach-interface", e))?;
    let mut taken: Vec<u64> = pci
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["bus"] == 0)
        .flat_map(|b| b["devices"].as_array().into_iter().flatten())
        .filter_map(|d| d["slot"].as_u64())
        .collect();
    taken.extend(
        l.links
            .iter()
            .filter_map(|m| m.hotplugged.as_ref()?.address.as_ref())
            .filter_map(|a| match a {
                Address::Pci { bus: 0, slot, .. } => Some(u64::from(*slot)),
                _ => None,
            }),
    );
    (2u8..32)
        .find(|s| !taken.contains(&u64::from(*s)))
        .ok_or_else(|| Error::Invalid {
            message: format!("domain '{name}' has no free slot on pci.0 to plug a NIC into"),
            details: vec![FieldError::new("devices", "no free slot on pci.0")],
        })
}

/// Makes the link, records it (the one durable write before the answer), hands it to QEMU
/// and plugs the device; undoes each step when a later one fails. `l` is the guest's ledger
/// as read by the caller under the job; it is updated and saved here.
async fn attach_live(
    inner: &Arc<Inner>,
    h: &DomainHandle,
    live: &Live,
    nic: &Interface,
    l: &mut Ledger,
) -> Result<MadeLink, Error> {
    let name = h.name.as_str();
    let config = live.config();
    let uuid = config
        .uuid
        .map(|u| u.0)
        .ok_or_else(|| Error::Internal(format!("domain '{name}' runs without a uuid")))?;
    // A slot no started or hot-added NIC used: QEMU ids and the tap name derive from it.
    let started = config.devices.interfaces.len() as u32;
    let slot = (started..)
        .find(|s| !l.links.iter().any(|m| m.device == format!("net{s}")))
        .unwrap_or(started);
    let index = config.devices.interfaces.len();
    let qmp = live.qmp(name)?;
    let mut nic = nic.clone();
    let Some(attachment) = super::attachment(inner, index, &nic.source)? else {
        return Err(Error::Invalid {
            message: "source: only bridge, network and direct NICs can be hot-added".into(),
            details: vec![FieldError::new(
                "source",
                "only bridge, network and direct NICs can be hot-added",
            )],
        });
    };
    let nl = Netlink::open().map_err(|e| Error::Internal(format!("netlink: {e}")))?;
    // Where it plugs in (a QMP question) and the link (netlink, the tap device) at once.
    let place = async {
        if config.os.is_i440fx() {
            // A slot of its own on the root bus, chosen here and recorded: left to QEMU, the
            // same NIC given on a migration destination's (or a revert's) command line would
            // be placed before the devices the source placed first, at another slot, and
            // the stream (whose sections are named by PCI address) would not load.
            let slot = free_root_slot(name, qmp, l).await?;
            let address = Address::Pci {
                domain: 0,
                bus: 0,
                slot,
                function: 0,
                multifunction: None,
            };
            Ok::<_, Error>((address, "pci.0".to_owned()))
        } else {
            let (port, id) = free_port(name, qmp, &config, l).await?;
            // Recorded with the NIC: the next hotplug (NIC or disk) knows the port is taken.
            Ok((novacron_domain::qemu::hotplug::root_port_address(port), id))
        }
    };
    let link = super::make_link(&nl, name, &uuid, slot, index, &nic, &attachment);
    let (place, link) = tokio::join!(place, link);
    let alias = crate::host::taps::marker_for(name);
    let (mut made, taps, vhost) = link?;
    // The descriptors are held until the link and its table are removed: the tap's name is
    // not free for another daemon's tap (and table) meanwhile.
    let (address, bus) = match place {
        Ok(p) => p,
        Err(e) => {
            super::qos::remove_link(&nl, &alias, &made.ifname, made.ifindex).await;
            return Err(e);
        }
    };
    // Recorded at the address it is plugged into: a migration's destination (and anything
    // else replaying the live set) must put it at the same address, which names the device's
    // state in the stream.
    nic.address = Some(address);
    made.hotplugged = Some(nic.clone());
    // A netdev id no earlier attempt used: a stale `hostnet<slot>` left in QEMU makes this
    // attempt's netdev_add fail, never its device_add plug into that stale backend.
    made.netdev = format!(
        "{}-{:08x}",
        made.netdev,
        getrandom::u32().unwrap_or_default()
    );
    l.links.push(made.clone());
    let undo_link = |l: &mut Ledger| l.links.retain(|m| m.device != made.device);
    if let Err(e) = save_ledger(inner, name, l).await {
        super::qos::remove_link(&nl, &alias, &made.ifname, made.ifindex).await;
        undo_link(l);
        return Err(e);
    }
    let plugged = plug(
        name,
        qmp,
        slot,
        &made.netdev,
        &nic,
        &taps,
        vhost.as_deref(),
        bus,
    )
    .await;
    if let Err(PlugFailure {
        error,
        device_may_exist: true,
    }) = plugged
    {
        // Not guessed away: the NIC stays recorded with its link (what QEMU holds stays
        // held), so it is listed, migrates with the guest, and detach or stop removes it.
        return Err(Error::Internal(format!(
            "{error}; the NIC ({mac}, device {device}) may be in the guest all the same: it \
             stays recorded, detach it to remove it",
            mac = made.mac,
            device = made.device
        )));
    }
    if let Err(PlugFailure { error: e, .. }) = plugged {
        super::qos::remove_link(&nl, &alias, &made.ifname, made.ifindex).await;
        drop((taps, vhost));
        undo_link(l);
        // Only if the ledger is still there: a guest that stopped meanwhile had it removed.
        let device = made.device.clone();
        let _ = inner
            .nic_ledgers
            .update(name, move |l| l.links.retain(|m| m.device != device))
            .await;
        return Err(e);
    }
    Ok(made)
}

/// Hands the descriptors to QEMU and plugs the device. The last `getfd`, `netdev_add` and
/// `device_add` (and `set_link` for a NIC that starts down) are sent together: QEMU runs a
/// monitor's commands in the order sent, so each finds what the one before made (or fails
/// because it is not there), and the NIC is plugged two round trips sooner. Earlier
/// descriptors are each taken before the next is sent (the QMP client lets one command with
/// descriptors be unanswered at a time). When QEMU refused the device, nothing handed stays
/// in QEMU; when the device may be there (`device_add` answered nothing, or `set_link`
/// failed after it), the failure says so and the NIC is kept as it is.
#[allow(clippy::too_many_arguments)]
async fn plug(
    name: &str,
    qmp: &novacron_qmp::Client,
    slot: u32,
    netdev: &str,
    nic: &Interface,
    taps: &[OwnedFd],
    vhost: Option<&[OwnedFd]>,
    bus: String,
) -> Result<(), PlugFailure> {
    use novacron_qmp::Error as QmpError;
    let err = |e| PlugFailure::refused(qmp_error(name, "attach-interface", e));
    // Each descriptor goes by `getfd` under its own name; a multi-queue NIC names them all,
    // colon-separated, as the command line's fds=/vhostfds= lists.
    let tapfds: Vec<String> = (0..taps.len())
        .map(|q| format!("tapfd{slot}q{q}"))
        .collect();
    let vhost = vhost.unwrap_or_default();
    let vhostfds: Vec<String> = (0..vhost.len())
        .map(|q| format!("vhostfd{slot}q{q}"))
        .collect();
    let mut args = if tapfds.len() == 1 {
        json!({ "type": "tap", "id": netdev, "fd": tapfds[0] })
    } else {
        json!({ "type": "tap", "id": netdev, "fds": tapfds.join(":") })
    };
    if !vhostfds.is_empty() {
        args["vhost"] = json!(true);
        if vhostfds.len() == 1 && tapfds.len() == 1 {
            args["vhostfd"] = json!(vhostfds[0]);
        } else {
            args["vhostfds"] = json!(vhostfds.join(":"));
        }
    }
    let add = device_add(nic, slot, netdev, taps.len(), Some(bus));
    let device = format!("net{slot}");
    let mut handed: Vec<(&String, &OwnedFd)> = tapfds
        .iter()
        .zip(taps)
        .chain(vhostfds.iter().zip(vhost))
        .collect();
    let Some((last, last_fd)) = handed.pop() else {
        return Err(PlugFailure::refused(Error::Internal(
            "no tap descriptor".into(),
        )));
    };
    let mut given: Vec<&String> = Vec::new();
    for (n, fd) in handed {
        if let Err(e) = qmp.send_fd(n, fd.as_fd()).await {
            close_fds(qmp, &given).await;
            return Err(err(e));
        }
        given.push(n);
    }
    given.push(last);
    // One deadline for the batch, the longest of its commands' (device_add's): QEMU runs
    // them in turn, so the earlier ones' shorter limits could run out while the device
    // still gets plugged.
    let within = qmp.timeout_for("device_add");
    let getfd = GetFd {
        fdname: last.clone(),
    };
    let down = json!({ "name": device, "up": false });
    let batch = async {
        let got = qmp.send(&getfd, &[last_fd.as_fd()], within).await?;
        let added = qmp.send_raw("netdev_add", Some(&args), within)?;
        let plugged = qmp.send(&add, &[], within).await?;
        let link = if nic.link_down {
            Some(qmp.send_raw("set_link", Some(&down), within)?)
        } else {
            None
        };
        Ok::<_, QmpError>((got, added, plugged, link))
    }
    .await;
    let (got, added, plugged, link) = match batch {
        Ok((g, a, p, l)) => {
            let link = async {
                match l {
                    Some(l) => l.await.map(drop),
                    None => Ok(()),
                }
            };
            tokio::join!(g, a, p, link)
        }
        Err(e) => {
            // The connection failed while sending: a queued getfd may still have run.
            close_fds(qmp, &given).await;
            return Err(err(e));
        }
    };
    if got.is_ok() && added.is_ok() && plugged.is_ok() && link.is_ok() {
        return Ok(());
    }
    // QEMU's error reply means that command did nothing; no answer (a timeout, a closed
    // connection) means it may have run. A descriptor no netdev took is closed either way
    // (a name a netdev took is gone already: that closefd fails, harmlessly).
    fn may_exist<T>(r: &Result<T, novacron_qmp::Error>) -> bool {
        !matches!(r, Err(novacron_qmp::Error::Qmp { .. }))
    }
    let device_may_exist = may_exist(&plugged);
    if !device_may_exist && may_exist(&added) {
        let _ = qmp
            .execute_raw("netdev_del", Some(&json!({ "id": netdev })))
            .await;
    }
    close_fds(qmp, &given).await;
    // The first failure is the cause; the later ones followed from it.
    let first = [got.err(), added.err(), plugged.err(), link.err()]
        .into_iter()
        .flatten()
        .next()
        .map_or_else(
            || Error::Internal("attach-interface failed".into()),
            |e| qmp_error(name, "attach-interface", e),
        );
    Err(PlugFailure {
        error: first,
        device_may_exist,
    })
}

/// Why `plug` failed, and whether the device may be in the guest all the same.
struct PlugFailure {
    error: Error,
    device_may_exist: bool,
}

impl PlugFailure {
    fn refused(error: Error) -> PlugFailure {
        PlugFailure {
            error,
            device_may_exist: false,
        }
    }
}

/// `device_add` of NIC `nic` on `bus`, using netdev `netdev` with `queues` queues.
fn device_add(
    nic: &Interface,
    slot: u32,
    netdev: &str,
    queues: usize,
    bus: Option<String>,
) -> DeviceAdd {
    let mut properties = serde_json::Map::new();
    properties.insert("netdev".into(), json!(netdev));
    properties.insert(
        "mac".into(),
        json!(nic.mac.map(|m| m.to_string()).unwrap_or_default()),
    );
    // On the root bus (i440fx) the slot chosen and recorded; a root port has one slot.
    if let Some(Address::Pci { bus: 0, slot, .. }) = nic.address {
        properties.insert("addr".into(), json!(format!("{slot:#x}")));
    }
    if let (NicModel::Virtio, Some(m)) = (nic.model, nic.mtu) {
        properties.insert("host_mtu".into(), json!(m));
    }
    if nic.model == NicModel::Virtio && queues > 1 {
        // One MSI-X vector per queue plus config and control, as at start.
        properties.insert("mq".into(), json!(true));
        properties.insert("vectors".into(), json!(2 * queues + 2));
    }
    DeviceAdd {
        driver: qemu_model(nic.model).to_owned(),
        id: Some(format!("net{slot}")),
        bus,
        properties,
    }
}

/// Closes descriptors QEMU took by `getfd` that no netdev took over (errors ignored: a name
/// a failed `netdev_add` consumed is gone already).
async fn close_fds(qmp: &novacron_qmp::Client, names: &[&String]) {
    for n in names {
        let _ = qmp
            .execute_raw("closefd", Some(&json!({ "fdname": n })))
            .await;
    }
}

#[cfg(test)]
#[path = "plug_tests.rs"]
mod plug_tests;
