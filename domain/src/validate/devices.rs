//! Devices: counts, names, paths, references and guest PCI addresses.

use std::collections::{BTreeMap, BTreeSet};

use super::resources::memory_is_shared;
use super::{ident_char, Problem, V};
use crate::model::*;

pub(super) fn dev_name(v: &mut V, path: String, s: &str) {
    v.token(
        path,
        s,
        15,
        "ASCII letters, digits, '_', '-', '.'",
        ident_char,
    );
}

pub(super) fn devices(v: &mut V, d: &DomainConfig) {
    let dv = &d.devices;
    for (p, n, max) in [
        ("devices.disks", dv.disks.len(), MAX_DISKS),
        ("devices.interfaces", dv.interfaces.len(), MAX_INTERFACES),
        ("devices.hostdevs", dv.hostdevs.len(), MAX_HOSTDEVS),
        ("devices.controllers", dv.controllers.len(), MAX_CONTROLLERS),
        ("devices.serials", dv.serials.len(), 4),
        ("devices.consoles", dv.consoles.len(), MAX_CHARDEVS),
        ("devices.channels", dv.channels.len(), MAX_CHARDEVS),
        ("devices.inputs", dv.inputs.len(), MAX_CHARDEVS),
        ("devices.rngs", dv.rngs.len(), 4),
        ("devices.videos", dv.videos.len(), 1),
    ] {
        if n > max {
            v.err(p, Problem::TooLong { max });
        }
    }
    if let Some(e) = &dv.emulator {
        v.path("devices.emulator", e);
    }
    controllers(v, dv);
    disks(v, d);
    super::filesystem::filesystems(v, d);
    interfaces(v, d);
    let mut seen = BTreeSet::new();
    for (i, h) in dv.hostdevs.iter().enumerate() {
        let a = h.source;
        if a.slot > 31 || a.function > 7 {
            v.err(
                format!("devices.hostdevs[{i}].source"),
                Problem::Inconsistent(format!("{a} is not a PCI address")),
            );
        }
        if !seen.insert(a) {
            v.err(
                format!("devices.hostdevs[{i}].source"),
                Problem::Duplicate(format!("host device {a}")),
            );
        }
    }
    chardevs(v, dv);
    if let Some(
        Graphics::Vnc {
            keymap: Some(k), ..
        }
        | Graphics::Spice {
            keymap: Some(k), ..
        },
    ) = &dv.graphics
    {
        if !QEMU_KEYMAPS.contains(&k.as_str()) {
            v.err(
                "devices.graphics.keymap",
                Problem::Inconsistent(format!(
                    "'{k}' is not a keymap QEMU has ({})",
                    QEMU_KEYMAPS.join(", ")
                )),
            );
        }
    }
    if let Some(Graphics::Vnc { port, listen, .. }) = &dv.graphics {
        if let VncPort::Fixed(p) = port {
            v.range("devices.graphics.port", *p, 5900, 65535);
        }
        if let Some(l) = listen {
            if l.parse::<std::net::IpAddr>().is_err() {
                v.err(
                    "devices.graphics.listen",
                    Problem::Inconsistent(format!("'{l}' is not an IP address")),
                );
            }
        }
    }
    for (i, r) in dv.rngs.iter().enumerate() {
        v.path(format!("devices.rngs[{i}].backend"), &r.backend);
    }
    if let Some(b) = &dv.memballoon {
        if let Some(p) = b.stats_period {
            v.range("devices.memballoon.stats_period", p, 0, 86_400);
        }
    }
    // USB devices sit on controller 0's bus (`usb.0`).
    let has_usb = dv.controllers.iter().any(|c| {
        c.index == 0
            && matches!(
                c.kind,
                ControllerKind::Usb { model, .. } if model != UsbModel::None
                    && !matches!(model, UsbModel::Ich9Uhci { .. })
            )
    });
    for (i, inp) in dv.inputs.iter().enumerate() {
        if inp.bus == InputBus::Usb && !has_usb {
            v.err(
                format!("devices.inputs[{i}].bus"),
                Problem::DanglingReference("USB controller 0".into()),
            );
        }
        if inp.bus == InputBus::Ps2 && inp.kind == InputKind::Tablet {
            v.err(
                format!("devices.inputs[{i}]"),
                Problem::Unsupported("PS/2 tablet".into()),
            );
        }
    }
    pci_addresses(v, dv);
    super::machine::devices(v, d);
}

pub(super) fn controllers(v: &mut V, dv: &Devices) {
    let mut seen = BTreeSet::new();
    for (i, c) in dv.controllers.iter().enumerate() {
        let p = format!("devices.controllers[{i}]");
        let class = match c.kind {
            ControllerKind::PcieRoot
            | ControllerKind::PcieRootPort { .. }
            | ControllerKind::PciRoot => "pci",
            ControllerKind::Ide => "ide",
            // Companions share their EHCI master's index (checked in `machine`).
            ControllerKind::Usb {
                model: UsbModel::Ich9Uhci { .. },
                ..
            } => continue,
            ControllerKind::Sata => "sata",
            ControllerKind::VirtioScsi => "scsi",
            ControllerKind::Usb { .. } => "usb",
            ControllerKind::VirtioSerial => "virtio-serial",
        };
        if !seen.insert((class, c.index)) {
            v.err(
                format!("{p}.index"),
                Problem::Duplicate(format!("{class} controller index {}", c.index)),
            );
        }
        match c.kind {
            ControllerKind::PcieRoot | ControllerKind::PciRoot if c.index != 0 => {
                v.range(format!("{p}.index"), c.index, 0, 0)
            }
            ControllerKind::PcieRootPort { .. } => v.range(format!("{p}.index"), c.index, 1, 255),
            ControllerKind::Sata if c.index != 0 => v.err(
                format!("{p}.index"),
                Problem::Unsupported("only the built-in SATA controller 0".into()),
            ),
            ControllerKind::Usb { ports: Some(n), .. } => v.range(format!("{p}.ports"), n, 1, 15),
            _ => {}
        }
        if c.index > 255 {
            v.range(format!("{p}.index"), c.index, 0, 255);
        }
    }
}

pub(super) fn disks(v: &mut V, d: &DomainConfig) {
    let dv = &d.devices;
    let mut targets = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for (i, disk) in dv.disks.iter().enumerate() {
        let p = format!("devices.disks[{i}]");
        let dev = &disk.target.dev;
        let prefix = match disk.target.bus {
            DiskBus::Virtio => "vd",
            DiskBus::Sata | DiskBus::Scsi => "sd",
            DiskBus::Ide => "hd",
        };
        let ok = dev.strip_prefix(prefix).is_some_and(|r| {
            !r.is_empty() && r.len() <= 3 && r.bytes().all(|b| b.is_ascii_lowercase())
        });
        if !ok {
            v.err(
                format!("{p}.target.dev"),
                Problem::Inconsistent(format!(
                    "'{dev}' is not a {prefix}X name for bus {}",
                    disk.target.bus.as_str()
                )),
            );
        }
        if let Some(prev) = targets.insert(dev.clone(), i) {
            v.err(
                format!("{p}.target.dev"),
                Problem::Duplicate(format!("target '{dev}' (also devices.disks[{prev}])")),
            );
        }
        match (&disk.source, disk.device) {
            (None, DiskDevice::Disk) => v.err(format!("{p}.source"), Problem::Empty),
            (Some(DiskSource::File { path }), _) => v.path(format!("{p}.source.path"), path),
            (Some(DiskSource::Block { dev }), _) => v.path(format!("{p}.source.dev"), dev),
            (Some(DiskSource::Network(n)), _) => super::netdisk::network_disk(v, &p, disk, n),
            (Some(DiskSource::Volume { pool, volume }), _) => {
                // One file name each: the host joins them beneath the pool's directory.
                for (f, name) in [("pool", pool), ("volume", volume)] {
                    if let Err(why) = crate::storage::check_name(name) {
                        v.err(format!("{p}.source.{f}"), Problem::Inconsistent(why));
                    }
                }
            }
            (None, DiskDevice::Cdrom) => {}
        }
        if let Some(t) = &disk.iotune {
            for (f, why) in t.problems() {
                v.err(format!("{p}.iotune.{f}"), Problem::Inconsistent(why));
            }
            if let Some(g) = &t.group_name {
                // QEMU keeps one set of limits per group: members that disagree would get
                // whichever was set last.
                match groups.get(g) {
                    Some((first, limits)) if limits != &t.fields() => v.err(
                        format!("{p}.iotune"),
                        Problem::Inconsistent(format!(
                            "group '{g}' has other limits on devices.disks[{first}] (the disks \
                             of a group share one set of limits)"
                        )),
                    ),
                    Some(_) => {}
                    None => {
                        groups.insert(g.clone(), (i, t.fields()));
                    }
                }
            }
        }
        if disk.device == DiskDevice::Cdrom && disk.target.bus == DiskBus::Virtio {
            v.err(
                format!("{p}.target.bus"),
                Problem::Unsupported("CD-ROM on the virtio bus".into()),
            );
        }
        if let Some(t) = disk.driver.iothread {
            if disk.target.bus != DiskBus::Virtio {
                v.err(
                    format!("{p}.driver.iothread"),
                    Problem::Unsupported("iothread on a non-virtio disk".into()),
                );
            } else if t == 0 || t > d.iothreads.unwrap_or(0) {
                v.err(
                    format!("{p}.driver.iothread"),
                    Problem::DanglingReference(format!("iothread {t}")),
                );
            }
        }
        // QEMU refuses aio=native on the page cache.
        if disk.driver.io == Some(DiskIo::Native)
            && !matches!(
                disk.driver.cache,
                Some(DiskCache::None | DiskCache::Directsync)
            )
        {
            v.err(
                format!("{p}.driver.io"),
                Problem::Inconsistent("io 'native' needs cache 'none' or 'directsync'".into()),
            );
        }
        if disk.target.bus == DiskBus::Sata && disk.address.is_none() {
            let unit = dev
                .strip_prefix("sd")
                .map(|r| r.len() == 1 && r.as_bytes().first().is_some_and(|b| *b < b'g'));
            if unit != Some(true) {
                v.err(
                    format!("{p}.target.dev"),
                    Problem::Inconsistent(
                        "SATA disks without an address must be sda..sdf (6 ports)".into(),
                    ),
                );
            }
        }
        if let Some(s) = &disk.serial {
            v.token(
                format!("{p}.serial"),
                s,
                20,
                "ASCII letters, digits, '_', '-', '.'",
                ident_char,
            );
        }
        match (disk.target.bus, disk.address) {
            (_, None) => {}
            (DiskBus::Virtio, Some(Address::Pci { .. })) => {}
            (
                DiskBus::Sata,
                Some(Address::Drive {
                    controller,
                    bus,
                    target,
                    unit,
                }),
            ) => {
                if controller != 0 || bus != 0 || target != 0 || unit > 5 {
                    v.err(
                        format!("{p}.address"),
                        Problem::Inconsistent(
                            "SATA address must be controller 0, bus 0, target 0, unit 0-5".into(),
                        ),
                    );
                }
            }
            (
                DiskBus::Scsi,
                Some(Address::Drive {
                    controller,
                    bus,
                    target,
                    unit,
                }),
            ) => {
                let has = dv.controllers.iter().any(|c| {
                    c.kind == ControllerKind::VirtioScsi && c.index == u32::from(controller)
                });
                if !has {
                    v.err(
                        format!("{p}.address.controller"),
                        Problem::DanglingReference(format!("virtio-scsi controller {controller}")),
                    );
                }
                if bus != 0 || target > 255 || unit > 16383 {
                    v.err(
                        format!("{p}.address"),
                        Problem::Inconsistent("SCSI address out of range".into()),
                    );
                }
            }
            // Range and uniqueness: `machine::ide`.
            (DiskBus::Ide, Some(Address::Drive { .. })) => {}
            _ => v.err(
                format!("{p}.address"),
                Problem::Inconsistent("address type does not match the disk bus".into()),
            ),
        }
    }
    let sata_units: Vec<u16> = dv
        .disks
        .iter()
        .filter_map(|x| match (x.target.bus, x.address) {
            (DiskBus::Sata, Some(Address::Drive { unit, .. })) => Some(unit),
            _ => None,
        })
        .collect();
    let uniq: BTreeSet<u16> = sata_units.iter().copied().collect();
    if uniq.len() != sata_units.len() {
        v.err("devices.disks", Problem::Duplicate("SATA unit".into()));
    }
    if dv
        .disks
        .iter()
        .filter(|x| x.target.bus == DiskBus::Sata)
        .count()
        > 6
    {
        v.err(
            "devices.disks",
            Problem::Inconsistent("more than 6 SATA disks (ICH9 has 6 ports)".into()),
        );
    }
}

pub(super) fn interfaces(v: &mut V, d: &DomainConfig) {
    let mut macs = BTreeMap::new();
    let mut link_names = BTreeMap::new();
    super::nic_host::total_queues(v, &d.devices.interfaces);
    for (i, nic) in d.devices.interfaces.iter().enumerate() {
        let p = format!("devices.interfaces[{i}]");
        super::nic_host::check(v, &p, i, nic, &mut link_names);
        if let Some(m) = nic.mac {
            if m.is_multicast() {
                v.err(
                    format!("{p}.mac"),
                    Problem::Inconsistent(format!("{m} is a multicast address")),
                );
            }
            if m.0 == [0; 6] {
                v.err(
                    format!("{p}.mac"),
                    Problem::Inconsistent("all-zero MAC".into()),
                );
            }
            if let Some(prev) = macs.insert(m, i) {
                v.err(
                    format!("{p}.mac"),
                    Problem::Duplicate(format!("MAC {m} (also devices.interfaces[{prev}])")),
                );
            }
        }
        if let Some(mtu) = nic.mtu {
            v.range(format!("{p}.mtu"), mtu, 68, 65535);
        }
        super::netdisk::nic_driver(v, &p, nic);
        super::nic_qos::nic(v, &p, nic);
        match &nic.source {
            InterfaceSource::Bridge { bridge } => dev_name(v, format!("{p}.source.bridge"), bridge),
            InterfaceSource::Network { network } => v.token(
                format!("{p}.source.network"),
                network,
                64,
                "ASCII letters, digits, '_', '-', '.'",
                ident_char,
            ),
            InterfaceSource::Direct { dev, .. } => dev_name(v, format!("{p}.source.dev"), dev),
            InterfaceSource::User => {}
            InterfaceSource::VhostUser { path, .. } => {
                v.path(format!("{p}.source.path"), path);
                if nic.model != NicModel::Virtio {
                    v.err(
                        format!("{p}.model"),
                        Problem::Unsupported("vhost-user needs model virtio".into()),
                    );
                }
                if !memory_is_shared(d) {
                    v.err(
                        format!("{p}.source"),
                        Problem::Unsupported(
                            "vhost-user without shared guest memory (set memory_backing.access shared or memAccess='shared' on every NUMA cell)".into(),
                        ),
                    );
                }
            }
        }
    }
}

pub(super) fn char_source(v: &mut V, p: String, s: &CharSource) {
    match s {
        CharSource::Pty | CharSource::Null => {}
        CharSource::Unix { path, .. } | CharSource::File { path } => {
            v.path(format!("{p}.path"), path)
        }
    }
}

pub(super) fn chardevs(v: &mut V, dv: &Devices) {
    let mut ports = BTreeSet::new();
    for (i, s) in dv.serials.iter().enumerate() {
        v.range(format!("devices.serials[{i}].port"), s.port, 0, 3);
        if !ports.insert(s.port) {
            v.err(
                format!("devices.serials[{i}].port"),
                Problem::Duplicate(format!("serial port {}", s.port)),
            );
        }
        char_source(v, format!("devices.serials[{i}].source"), &s.source);
    }
    let mut seen = BTreeSet::new();
    for (i, c) in dv.consoles.iter().enumerate() {
        let p = format!("devices.consoles[{i}]");
        char_source(v, format!("{p}.source"), &c.source);
        if !seen.insert((c.target == ConsoleTarget::Serial, c.port)) {
            v.err(
                format!("{p}.port"),
                Problem::Duplicate(format!("console port {}", c.port)),
            );
        }
        if c.target == ConsoleTarget::Serial {
            v.range(format!("{p}.port"), c.port, 0, 3);
            // libvirt's serial console is an alias of the serial port: sources must agree.
            if let Some(s) = dv.serials.iter().find(|s| s.port == c.port) {
                if s.source != c.source {
                    v.err(
                        format!("{p}.source"),
                        Problem::Inconsistent(format!("differs from serial port {}", c.port)),
                    );
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, c) in dv.channels.iter().enumerate() {
        let p = format!("devices.channels[{i}]");
        v.token(
            format!("{p}.name"),
            &c.name,
            128,
            "ASCII letters, digits, '_', '-', '.'",
            ident_char,
        );
        if !names.insert(c.name.as_str()) {
            v.err(
                format!("{p}.name"),
                Problem::Duplicate(format!("channel '{}'", c.name)),
            );
        }
        if let Some(path) = &c.path {
            v.path(format!("{p}.path"), path);
        }
        if matches!(c.address, Some(a) if !matches!(a, Address::VirtioSerial { .. })) {
            v.err(
                format!("{p}.address"),
                Problem::Inconsistent("channel address must be virtio-serial".into()),
            );
        }
    }
}

/// Every guest PCI address is used once, names an existing bus, and fits that bus.
pub(super) fn pci_addresses(v: &mut V, dv: &Devices) {
    let mut all: Vec<(String, Address)> = Vec::new();
    let mut push = |p: String, a: &Option<Address>| {
        if let Some(a) = a {
            all.push((p, *a));
        }
    };
    for (i, x) in dv.controllers.iter().enumerate() {
        push(format!("devices.controllers[{i}].address"), &x.address);
    }
    for (i, x) in dv.disks.iter().enumerate() {
        push(format!("devices.disks[{i}].address"), &x.address);
    }
    for (i, x) in dv.interfaces.iter().enumerate() {
        push(format!("devices.interfaces[{i}].address"), &x.address);
    }
    for (i, x) in dv.hostdevs.iter().enumerate() {
        push(format!("devices.hostdevs[{i}].address"), &x.address);
    }
    for (i, x) in dv.videos.iter().enumerate() {
        push(format!("devices.videos[{i}].address"), &x.address);
    }
    for (i, x) in dv.rngs.iter().enumerate() {
        push(format!("devices.rngs[{i}].address"), &x.address);
    }
    for (i, x) in dv.filesystems.iter().enumerate() {
        push(format!("devices.filesystems[{i}].address"), &x.address);
    }
    for (i, x) in dv.sounds.iter().enumerate() {
        push(format!("devices.sounds[{i}].address"), &x.address);
    }
    for (i, x) in dv.inputs.iter().enumerate() {
        push(format!("devices.inputs[{i}].address"), &x.address);
    }
    if let Some(x) = &dv.memballoon {
        push("devices.memballoon.address".into(), &x.address);
    }
    for (i, x) in dv.memory.iter().enumerate() {
        push(format!("devices.memory[{i}].address"), &x.address);
    }
    if let Some(x) = &dv.watchdog {
        push("devices.watchdog.address".into(), &x.address);
    }
    let root_ports: BTreeSet<u32> = dv
        .controllers
        .iter()
        .filter(|c| matches!(c.kind, ControllerKind::PcieRootPort { .. }))
        .map(|c| c.index)
        .collect();
    let mut seen: BTreeMap<(u8, u8, u8), String> = BTreeMap::new();
    for (p, a) in all {
        let Address::Pci {
            domain,
            bus,
            slot,
            function,
            ..
        } = a
        else {
            continue;
        };
        if domain != 0 {
            v.err(
                p.clone(),
                Problem::Unsupported("PCI domain other than 0".into()),
            );
        }
        if slot > 31 || function > 7 {
            v.err(
                p.clone(),
                Problem::Inconsistent(format!(
                    "slot {slot:#x} function {function:#x} out of range"
                )),
            );
        }
        if bus != 0 {
            if !root_ports.contains(&u32::from(bus)) {
                v.err(
                    p.clone(),
                    Problem::DanglingReference(format!(
                        "PCI bus {bus:#04x} (no pcie-root-port with index {bus})"
                    )),
                );
            } else if slot != 0 {
                v.err(
                    p.clone(),
                    Problem::Inconsistent("a pcie-root-port has only slot 0".into()),
                );
            }
        }
        if let Some(prev) = seen.insert((bus, slot, function), p.clone()) {
            v.err(
                p,
                Problem::Duplicate(format!(
                    "PCI address 0000:{bus:02x}:{slot:02x}.{function:x} (also {prev})"
                )),
            );
        }
    }
}

/// The keymaps QEMU ships (`pc-bios/keymaps`): `-k` takes one of these.
const QEMU_KEYMAPS: &[&str] = &[
    "ar", "bepo", "cz", "da", "de", "de-ch", "en-gb", "en-us", "es", "et", "fi", "fo", "fr",
    "fr-be", "fr-ca", "fr-ch", "hr", "hu", "is", "it", "ja", "lt", "lv", "mk", "nl", "no", "pl",
    "pt", "pt-br", "ru", "sl", "sv", "th", "tr",
];
