//! What the machine type decides: which built-in controllers exist (i440fx: PIIX3 IDE and
//! `pci.0`; q35: ICH9 AHCI and `pcie.0`), where IDE disks sit, USB companion controllers,
//! and the PCI slots the chipset occupies.

use std::collections::BTreeMap;

use super::{Problem, V};
use crate::model::*;

/// PIIX3 IDE: 2 buses with 2 units each, on controller 0.
pub(crate) const IDE_BUSES: u16 = 2;
pub(crate) const IDE_UNITS: u16 = 2;

/// `(bus, unit)` of an IDE disk: its drive address, or libvirt's derivation from the
/// target name (`hda` 0/0, `hdb` 0/1, `hdc` 1/0, `hdd` 1/1). `None` past `hdd`.
pub(crate) fn ide_slot(disk: &Disk) -> Option<(u16, u16)> {
    match disk.address {
        Some(Address::Drive { bus, unit, .. }) => Some((bus, unit)),
        _ => {
            let r = disk.target.dev.strip_prefix("hd")?;
            let [b] = r.as_bytes() else { return None };
            let idx = u16::from(b.checked_sub(b'a')?);
            (idx < IDE_BUSES * IDE_UNITS).then_some((idx / IDE_UNITS, idx % IDE_UNITS))
        }
    }
}

pub(super) fn devices(v: &mut V, d: &DomainConfig) {
    let i440fx = d.os.is_i440fx();
    let dv = &d.devices;
    let board = if i440fx { "i440fx" } else { "q35" };
    for (i, c) in dv.controllers.iter().enumerate() {
        let p = format!("devices.controllers[{i}]");
        let wrong = match c.kind {
            ControllerKind::PcieRoot => (i440fx).then_some("pcie-root (the q35 root bus)"),
            ControllerKind::PcieRootPort { .. } => {
                (i440fx).then_some("pcie-root-port (i440fx has no PCI Express)")
            }
            ControllerKind::Sata => {
                (i440fx).then_some("a SATA controller (i440fx has no built-in AHCI)")
            }
            ControllerKind::PciRoot => (!i440fx).then_some("pci-root (the i440fx root bus)"),
            ControllerKind::Ide => {
                (!i440fx).then_some("an IDE controller (q35 has none: use SATA)")
            }
            _ => None,
        };
        if let Some(what) = wrong {
            v.err(
                format!("{p}.type"),
                Problem::Unsupported(format!("{what} on a {board} machine")),
            );
        }
        if c.kind == ControllerKind::Ide {
            if c.index != 0 {
                v.err(
                    format!("{p}.index"),
                    Problem::Unsupported("only the built-in IDE controller 0".into()),
                );
            }
            if !matches!(
                c.address,
                None | Some(Address::Pci {
                    bus: 0,
                    slot: 1,
                    function: 1,
                    ..
                })
            ) {
                v.err(
                    format!("{p}.address"),
                    Problem::Inconsistent("the PIIX3 IDE controller is at 00:01.1".into()),
                );
            }
        }
        if let ControllerKind::Usb {
            model: UsbModel::Ich9Uhci { n, startport },
            ..
        } = c.kind
        {
            if !(1..=3).contains(&n) {
                v.range(format!("{p}.model"), n, 1, 3);
            }
            if let Some(sp) = startport {
                // EHCI has 6 ports; a UHCI companion serves 2 of them.
                v.range(format!("{p}.master.startport"), sp, 0, 4);
                let master = dv.controllers.iter().any(|m| {
                    m.index == c.index
                        && matches!(
                            m.kind,
                            ControllerKind::Usb {
                                model: UsbModel::Ich9Ehci1,
                                ..
                            }
                        )
                });
                if !master {
                    v.err(
                        format!("{p}.master"),
                        Problem::DanglingReference(format!(
                            "an ich9-ehci1 controller with index {}",
                            c.index
                        )),
                    );
                }
            }
        }
    }
    // Companions: one of each number per master; standalone ones need their own index.
    let mut companions = BTreeMap::new();
    for (i, c) in dv.controllers.iter().enumerate() {
        if let ControllerKind::Usb {
            model: UsbModel::Ich9Uhci { n, startport },
            ..
        } = c.kind
        {
            let clash = companions.insert((c.index, n), i).is_some()
                || (startport.is_none()
                    && dv.controllers.iter().enumerate().any(|(j, o)| {
                        j != i && o.index == c.index && matches!(o.kind, ControllerKind::Usb { .. })
                    }));
            if clash {
                v.err(
                    format!("devices.controllers[{i}].index"),
                    Problem::Duplicate(format!("usb controller index {}", c.index)),
                );
            }
        }
    }
    ide(v, d, i440fx);
    if i440fx {
        chipset_slots(v, dv);
        if dv
            .watchdog
            .as_ref()
            .is_some_and(|w| w.model == WatchdogModel::Itco)
        {
            v.err(
                "devices.watchdog.model",
                Problem::Unsupported("itco (part of ICH9, q35 only)".into()),
            );
        }
    }
}

fn ide(v: &mut V, d: &DomainConfig, i440fx: bool) {
    let mut slots = BTreeMap::new();
    for (i, disk) in d.devices.disks.iter().enumerate() {
        let p = format!("devices.disks[{i}]");
        if i440fx && disk.target.bus == DiskBus::Sata {
            v.err(
                format!("{p}.target.bus"),
                Problem::Unsupported("sata on an i440fx machine (no AHCI): use ide".into()),
            );
        }
        if disk.target.bus != DiskBus::Ide {
            continue;
        }
        if !i440fx {
            v.err(
                format!("{p}.target.bus"),
                Problem::Unsupported("ide on a q35 machine (no IDE controller): use sata".into()),
            );
            continue;
        }
        if let Some(Address::Drive {
            controller,
            bus,
            target,
            unit,
        }) = disk.address
        {
            if controller != 0 || target != 0 || bus >= IDE_BUSES || unit >= IDE_UNITS {
                v.err(
                    format!("{p}.address"),
                    Problem::Inconsistent(
                        "IDE address must be controller 0, bus 0-1, target 0, unit 0-1".into(),
                    ),
                );
                continue;
            }
        }
        match ide_slot(disk) {
            None => v.err(
                format!("{p}.target.dev"),
                Problem::Inconsistent(
                    "IDE disks without an address must be hda..hdd (2 buses x 2 units)".into(),
                ),
            ),
            Some(s) => {
                if let Some(prev) = slots.insert(s, i) {
                    v.err(
                        format!("{p}.address"),
                        Problem::Duplicate(format!(
                            "IDE bus {} unit {} (also devices.disks[{prev}])",
                            s.0, s.1
                        )),
                    );
                }
            }
        }
    }
}

/// On i440fx, 00:00.0 is the host bridge and slot 1 the PIIX3 (ISA 1.0, IDE 1.1, USB 1.2,
/// power management 1.3); only the IDE and PIIX3 USB controllers may be placed there. There
/// is no bus but the root (no PCI bridges are supported).
fn chipset_slots(v: &mut V, dv: &Devices) {
    let mut check = |p: String, a: &Option<Address>, allowed: Option<u8>| {
        let Some(Address::Pci {
            bus,
            slot,
            function,
            ..
        }) = *a
        else {
            return;
        };
        if bus != 0 {
            v.err(
                p,
                Problem::DanglingReference(format!("PCI bus {bus:#04x} (i440fx has only bus 0)")),
            );
        } else if slot == 0 || (slot == 1 && allowed != Some(function)) {
            v.err(
                p,
                Problem::Inconsistent(format!(
                    "00:{slot:02x}.{function:x} belongs to the i440fx chipset"
                )),
            );
        }
    };
    for (i, c) in dv.controllers.iter().enumerate() {
        let allowed = match c.kind {
            ControllerKind::Ide => Some(1),
            ControllerKind::Usb {
                model: UsbModel::Piix3Uhci,
                ..
            } => Some(2),
            _ => None,
        };
        check(
            format!("devices.controllers[{i}].address"),
            &c.address,
            allowed,
        );
    }
    for (i, x) in dv.disks.iter().enumerate() {
        check(format!("devices.disks[{i}].address"), &x.address, None);
    }
    for (i, x) in dv.interfaces.iter().enumerate() {
        check(format!("devices.interfaces[{i}].address"), &x.address, None);
    }
    for (i, x) in dv.hostdevs.iter().enumerate() {
        check(format!("devices.hostdevs[{i}].address"), &x.address, None);
    }
    for (i, x) in dv.videos.iter().enumerate() {
        check(format!("devices.videos[{i}].address"), &x.address, None);
    }
    for (i, x) in dv.rngs.iter().enumerate() {
        check(format!("devices.rngs[{i}].address"), &x.address, None);
    }
    if let Some(x) = &dv.memballoon {
        check("devices.memballoon.address".into(), &x.address, None);
    }
    for (i, x) in dv.memory.iter().enumerate() {
        check(format!("devices.memory[{i}].address"), &x.address, None);
    }
    if let Some(x) = &dv.watchdog {
        check("devices.watchdog.address".into(), &x.address, None);
    }
}
