//! Hot-plug slots: a q35 guest's devices can only be hot-plugged onto PCIe root ports (the
//! root complex itself takes none), so define gives every q35 guest `hotplug_slots` free ones
//! (libvirt adds root ports as devices need them, Proxmox reserves a range). They are written
//! into the definition: the layout is the same at every start and on a migration's
//! destination.

use novacron_domain::model::{Address, Controller, ControllerKind, DomainConfig, RootPortModel};

/// The default of `hotplug_slots` (owned by the configuration).
pub use crate::config::DEFAULT_HOTPLUG_SLOTS;
/// The PCIe root complex has 32 slots; others need some.
const MAX_SLOTS: u32 = 24;

/// `config` with root ports added until `want` of them are free (none for i440fx).
pub fn reserve(mut config: DomainConfig, want: u32) -> DomainConfig {
    if config.os.is_i440fx() {
        return config;
    }
    let free = u32::try_from(super::free_root_ports(&config).len()).unwrap_or(u32::MAX);
    let pci = |k: &ControllerKind| {
        matches!(
            k,
            ControllerKind::PcieRoot
                | ControllerKind::PcieRootPort { .. }
                | ControllerKind::PciRoot
        )
    };
    let first = config
        .devices
        .controllers
        .iter()
        .filter(|c| pci(&c.kind))
        .map(|c| c.index + 1)
        .max()
        .unwrap_or(1)
        .max(1);
    // Each at a free slot of the root complex, given explicitly: a port QEMU placed itself
    // would take the first free slot, which a device with an explicit address may want.
    let mut slots = free_root_slots(&config).into_iter();
    let missing = want.min(MAX_SLOTS).saturating_sub(free);
    for index in first..first + missing {
        let Some(slot) = slots.next() else { break };
        config.devices.controllers.push(Controller {
            index,
            kind: ControllerKind::PcieRootPort {
                chassis: None,
                port: None,
                model: RootPortModel::default(),
            },
            address: Some(Address::Pci {
                domain: 0,
                bus: 0,
                slot,
                function: 0,
                multifunction: None,
            }),
        });
    }
    config
}

/// Slots of `pcie.0` no device of `config` names, from 0x10 (clear of where QEMU and libvirt
/// put devices first), then 0x02..0x0f; never 0 (host bridge), 1 (VGA) or 0x1f (ICH9).
fn free_root_slots(config: &DomainConfig) -> Vec<u8> {
    fn walk(v: &serde_json::Value, out: &mut Vec<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("type").and_then(|t| t.as_str()) == Some("pci")
                    && m.get("bus").and_then(serde_json::Value::as_u64) == Some(0)
                {
                    if let Some(s) = m.get("slot").and_then(serde_json::Value::as_u64) {
                        out.push(s);
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut used = Vec::new();
    if let Ok(v) = serde_json::to_value(&config.devices) {
        walk(&v, &mut used);
    }
    (0x10..0x1f)
        .chain(0x02..0x10)
        .filter(|s| !used.contains(&u64::from(*s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q35(devices: &str) -> DomainConfig {
        DomainConfig::from_xml(&format!(
            "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>{devices}</devices>\
             </domain>"
        ))
        .unwrap()
    }

    #[test]
    fn a_q35_guest_gets_free_root_ports_once() {
        let c = reserve(q35(""), 4);
        assert_eq!(super::super::free_root_ports(&c), [1, 2, 3, 4]);
        // Defining the result again adds nothing: the layout is stable.
        assert_eq!(reserve(c.clone(), 4), c);
        c.validate().unwrap();
        // Ports in use do not count; new ones number after the highest.
        let c = reserve(
            q35("<controller type='pci' index='3' model='pcie-root-port'/>\
                 <interface type='user'><model type='virtio'/>\
                 <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>\
                 </interface>"),
            2,
        );
        assert_eq!(super::super::free_root_ports(&c), [4, 5]);
    }
}
