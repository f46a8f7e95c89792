//! Disks of a defined or running guest: list, attach, detach, resize, I/O throttling and
//! CD-ROM media, with virsh's `--live`/`--config` semantics. QEMU's `-blockdev` model with the
//! node names the command line uses (`qemu::hotplug`); files are opened here and passed as
//! descriptors (fd sets), never by name. Every change to a running guest is written to its
//! runtime record (the live device set) before it is reported done.

mod attach;
mod detach;
pub mod slots;
mod tune;

use std::sync::Arc;

use novacron_domain::model::{Address, ControllerKind, Disk, DomainConfig};
use novacron_domain::{Error, FieldError};
use serde::{Deserialize, Serialize};

pub use detach::DEFAULT_DETACH_TIMEOUT;
pub use slots::DEFAULT_HOTPLUG_SLOTS;
pub(crate) use tune::apply_iotune;
pub use tune::{IoTune, MediaChange};

use super::domain::{Definition, DomainHandle, Live};
use super::Inner;
use crate::persist::live_devices::LiveDevices;

/// virsh's `--live`, `--config`, `--persistent` (both); none given: the running guest if it
/// runs, else the definition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskScope {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    #[serde(default)]
    pub persistent: bool,
}

/// One disk as `domblklist` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DiskEntry {
    pub target: String,
    pub bus: &'static str,
    pub device: &'static str,
    /// The file, device or network URI; none for an empty tray.
    pub source: Option<String>,
    /// The format node (running guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdev: Option<String>,
    /// `attached`, or `detaching` (the guest has not released it yet), or `defined`.
    pub state: &'static str,
    pub disk: Disk,
}

fn source_text(d: &Disk) -> Option<String> {
    use novacron_domain::model::DiskSource;
    d.source.as_ref().map(|s| match s {
        DiskSource::File { path } => path.clone(),
        DiskSource::Block { dev } => dev.clone(),
        DiskSource::Network(n) => format!("{n:?}"),
        DiskSource::Volume { pool, volume } => format!("{pool}/{volume}"),
    })
}

fn entry(d: &Disk, node: Option<String>, qdev: Option<String>, state: &'static str) -> DiskEntry {
    DiskEntry {
        target: d.target.dev.clone(),
        bus: d.target.bus.as_str(),
        device: match d.device {
            novacron_domain::model::DiskDevice::Disk => "disk",
            novacron_domain::model::DiskDevice::Cdrom => "cdrom",
        },
        source: source_text(d),
        node,
        qdev,
        state,
        disk: d.clone(),
    }
}

pub(super) fn unknown_target(name: &str, target: &str) -> Error {
    Error::Invalid {
        message: format!("domain '{name}' has no disk '{target}'"),
        details: vec![FieldError::new("target", format!("no disk '{target}'"))],
    }
}

/// `(live, config)` for `scope` on `h` now; refuses what cannot apply.
fn resolve(h: &DomainHandle, scope: DiskScope) -> Result<(Option<Arc<Live>>, bool), Error> {
    let live = h.run().live().cloned();
    let running = live.is_some();
    let (want_live, want_config) = if scope.persistent {
        (running, true)
    } else if !scope.live && !scope.config {
        (running, !running)
    } else {
        (scope.live, scope.config)
    };
    if want_live && !running {
        return Err(Error::WrongState {
            name: h.name.clone(),
            state: h.state(),
            operation: "change the disks of (--live)",
        });
    }
    if want_config && !h.definition().persistent {
        return Err(Error::InvalidConfig(format!(
            "domain '{}' is transient: it has no persistent definition (--config)",
            h.name
        )));
    }
    Ok((if want_live { live } else { None }, want_config))
}

impl Inner {
    /// Writes the live device set into the runtime record, atomically; only then is a live
    /// change reported done.
    pub(super) async fn save_live(
        &self,
        name: &str,
        live: &Live,
        devices: LiveDevices,
    ) -> Result<(), Error> {
        live.set_devices(devices);
        self.records
            .save(&live.record_now())
            .await
            .map_err(|e| Error::Io {
                action: "write (after a disk change) the runtime record",
                path: self.paths.record(name).display().to_string(),
                message: e.to_string(),
            })
    }

    /// Validates and saves `config` as `h`'s persistent definition (same trust).
    pub(in crate::service) async fn save_definition(
        &self,
        h: &DomainHandle,
        config: DomainConfig,
    ) -> Result<(), Error> {
        let definition = h.definition();
        let trust = definition.trust;
        let validated = self.prepare(config, Some(definition))?;
        self.definitions
            .save(validated.config(), trust)
            .await
            .map_err(|e| Error::Io {
                action: "write the definition",
                path: self.paths.definition(&h.name).display().to_string(),
                message: e.to_string(),
            })?;
        h.set_definition(Definition {
            config: validated,
            persistent: true,
            trust,
        });
        self.events.publish(
            &h.name,
            super::events::EventKind::Defined { persistent: true },
        );
        Ok(())
    }
}

impl super::Service {
    /// `domblklist`: the running guest's disks (with node names and detach state), or the
    /// definition's when it is off or `config` is asked for.
    pub fn list_disks(&self, name: &str, config: bool) -> Result<Vec<DiskEntry>, Error> {
        let h = self.inner.handle(name)?;
        match (h.run().live(), config) {
            (Some(live), false) => Ok(live
                .devices()
                .disks
                .iter()
                .map(|d| {
                    entry(
                        &d.disk,
                        d.node.clone(),
                        Some(d.qdev.clone()),
                        if d.detaching { "detaching" } else { "attached" },
                    )
                })
                .collect()),
            _ => Ok(h
                .definition()
                .config
                .config()
                .devices
                .disks
                .iter()
                .map(|d| entry(d, None, None, "defined"))
                .collect()),
        }
    }
}

/// PCIe root ports (`pci.N`) of `config` with nothing on them, lowest first.
pub(super) fn free_root_ports(config: &DomainConfig) -> Vec<u32> {
    let used = used_buses(config);
    let mut ports: Vec<u32> = config
        .devices
        .controllers
        .iter()
        .filter(|c| matches!(c.kind, ControllerKind::PcieRootPort { .. }))
        .map(|c| c.index)
        .filter(|i| !used.contains(i))
        .collect();
    ports.sort_unstable();
    ports
}

/// Every PCI bus number some device of `config` sits on (any device kind: read from the
/// model's serialised form, so a device kind added later is not missed).
fn used_buses(config: &DomainConfig) -> Vec<u32> {
    fn walk(v: &serde_json::Value, out: &mut Vec<u32>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("type").and_then(|t| t.as_str()) == Some("pci") {
                    if let Some(b) = m.get("bus").and_then(serde_json::Value::as_u64) {
                        out.push(u32::try_from(b).unwrap_or(u32::MAX));
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(&config.devices) {
        walk(&v, &mut out);
    }
    out
}

/// The root port a disk's address names, if it names one.
pub(super) fn root_port_of(disk: &Disk) -> Option<u32> {
    match disk.address {
        Some(Address::Pci { bus, slot: 0, .. }) if bus != 0 => Some(u32::from(bus)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_port_with_a_device_is_not_free() {
        let xml = "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory>\
            <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
            <controller type='pci' index='1' model='pcie-root-port'/>\
            <controller type='pci' index='2' model='pcie-root-port'/>\
            <controller type='pci' index='3' model='pcie-root-port'/>\
            <interface type='user'><model type='virtio'/>\
              <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>\
            </devices></domain>";
        let c = DomainConfig::from_xml(xml).unwrap();
        assert_eq!(free_root_ports(&c), [2, 3]);
    }
}
