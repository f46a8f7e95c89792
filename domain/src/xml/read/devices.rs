//! `<devices>`: one reader per device kind.

use super::{flag, ON_OFF, R, YES_NO};
use crate::model::*;
use crate::xml::error::XmlError;
use crate::xml::tree::Element;

pub(super) fn devices(e: &Element, i440fx: bool) -> R<Devices> {
    e.allow(
        &[],
        &[
            "emulator",
            "disk",
            "controller",
            "interface",
            "serial",
            "console",
            "channel",
            "input",
            "tpm",
            "graphics",
            "video",
            "hostdev",
            "watchdog",
            "memballoon",
            "rng",
            "audio",
            "filesystem",
            "memory",
            // Refused below with the reason.
            "sound",
            "redirdev",
        ],
    )?;
    let mut d = Devices::default();
    let mut index_given = Vec::new();
    if let Some(em) = e.text_child("emulator")? {
        em.allow(&[], &[])?;
        d.emulator = Some(em.req_text()?.to_owned());
    }
    for c in &e.children {
        match c.name.as_str() {
            "disk" => d.disks.push(disk(c)?),
            "controller" => {
                let (ctl, given) = controller(c, i440fx)?;
                d.controllers.push(ctl);
                index_given.push(given);
            }
            "interface" => d.interfaces.push(interface(c)?),
            "serial" => d.serials.push(serial(c)?),
            "console" => d.consoles.push(console(c)?),
            "channel" => d.channels.push(channel(c)?),
            "input" => d.inputs.push(input(c)?),
            "video" => d.videos.push(video(c)?),
            "hostdev" => d.hostdevs.push(hostdev(c)?),
            "rng" => d.rngs.push(rng(c)?),
            "filesystem" => d.filesystems.push(super::filesystem::filesystem(c)?),
            "memory" => d.memory.push(super::memory_device::memory_device(c)?),
            "audio" => d.audios.push(super::spice::audio(c)?),
            "sound" => d.sounds.push(super::spice::sound(c)?),
            "redirdev" => d.redirdevs.push(super::spice::redirdev(c)?),
            _ => {}
        }
    }
    assign_indexes(&mut d.controllers, &index_given);
    d.tpm = e.child("tpm")?.map(tpm).transpose()?;
    d.graphics = e.child("graphics")?.map(graphics).transpose()?;
    d.watchdog = e.child("watchdog")?.map(watchdog).transpose()?;
    d.memballoon = e.child("memballoon")?.map(memballoon).transpose()?;
    Ok(d)
}

pub(super) fn address(parent: &Element) -> R<Option<Address>> {
    let Some(a) = parent.child("address")? else {
        return Ok(None);
    };
    let ty = a.req_attr("type")?;
    let addr = match ty {
        "pci" => {
            a.allow(
                &["type", "domain", "bus", "slot", "function", "multifunction"],
                &[],
            )?;
            Address::Pci {
                domain: a.attr_int("domain")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                slot: a.attr_int("slot")?.unwrap_or(0),
                function: a.attr_int("function")?.unwrap_or(0),
                multifunction: a.attr_enum("multifunction", ON_OFF)?,
            }
        }
        "drive" => {
            a.allow(&["type", "controller", "bus", "target", "unit"], &[])?;
            Address::Drive {
                controller: a.attr_int("controller")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                target: a.attr_int("target")?.unwrap_or(0),
                unit: a.attr_int("unit")?.unwrap_or(0),
            }
        }
        "virtio-serial" => {
            a.allow(&["type", "controller", "bus", "port"], &[])?;
            Address::VirtioSerial {
                controller: a.attr_int("controller")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                port: a.attr_int("port")?.unwrap_or(0),
            }
        }
        "usb" => {
            a.allow(&["type", "bus", "port"], &[])?;
            Address::Usb {
                bus: a.attr_int("bus")?.unwrap_or(0),
                port: a.attr_int("port")?.unwrap_or(0),
            }
        }
        other => {
            return Err(a.unsupported_value(
                Some("type"),
                other,
                &["pci", "drive", "virtio-serial", "usb"],
            ))
        }
    };
    Ok(Some(addr))
}

/// A deliberate refusal of `e`, with the reason.
pub(super) fn refused(e: &Element, reason: &str) -> XmlError {
    XmlError::NotSupported {
        path: e.path.clone(),
        line: e.line,
        reason: reason.to_owned(),
    }
}

pub(super) fn boot_order(parent: &Element) -> R<Option<u32>> {
    match parent.child("boot")? {
        Some(b) => {
            b.allow(&["order"], &[])?;
            Ok(Some(b.req_attr_int("order")?))
        }
        None => Ok(None),
    }
}

pub(super) fn disk(e: &Element) -> R<Disk> {
    // <backingStore> in dumpxml reports the image's backing chain as discovered from the image
    // header; it is informational for file/block disks.
    e.allow(
        &["type", "device"],
        &[
            "driver",
            "source",
            "target",
            "readonly",
            "shareable",
            "serial",
            "boot",
            "address",
            "backingStore",
            "iotune",
            // Refused below with the reason.
            "auth",
        ],
    )?;
    #[derive(Clone, Copy, PartialEq)]
    enum Ty {
        File,
        Block,
        Network,
        Volume,
    }
    let ty = e.req_attr_enum(
        "type",
        &[
            ("file", Ty::File),
            ("block", Ty::Block),
            ("network", Ty::Network),
            ("volume", Ty::Volume),
        ],
    )?;
    let device = e
        .attr_enum(
            "device",
            &[("disk", DiskDevice::Disk), ("cdrom", DiskDevice::Cdrom)],
        )?
        .unwrap_or(DiskDevice::Disk);
    if let Some(a) = e.child("auth")? {
        return Err(refused(
            a,
            "network disk credentials need a secret store, which NovaCron does not have yet; \
             use a server that needs no authentication (or a local image)",
        ));
    }
    let source = match (ty, e.child("source")?) {
        (Ty::Network, s) => {
            let s = s.ok_or_else(|| XmlError::Missing {
                what: "element <source>".into(),
                path: format!("{}/source", e.path),
                line: e.line,
            })?;
            Some(DiskSource::Network(super::netdisk::source(s)?))
        }
        // A pool's volume by name (libvirt's `mode` is for iSCSI pools, which do not exist
        // here); `<source/>` alone is an empty tray.
        (Ty::Volume, Some(s)) => {
            s.allow(&["pool", "volume", "index"], &[])?;
            match (s.attr("pool"), s.attr("volume")) {
                (None, None) => None,
                _ => Some(DiskSource::Volume {
                    pool: s.req_attr("pool")?.to_owned(),
                    volume: s.req_attr("volume")?.to_owned(),
                }),
            }
        }
        (_, Some(s)) => {
            // `index` numbers the backing chain at runtime.
            let key = if ty == Ty::Block { "dev" } else { "file" };
            s.allow(&[key, "index"], &[])?;
            match s.attr(key) {
                Some(p) if ty == Ty::Block => Some(DiskSource::Block { dev: p.to_owned() }),
                Some(p) => Some(DiskSource::File { path: p.to_owned() }),
                // `<source/>` without a path: empty CD-ROM, as libvirt writes for ejected media.
                None => None,
            }
        }
        (_, None) => None,
    };
    let driver = match e.child("driver")? {
        Some(dr) => {
            dr.allow(&["name", "type", "cache", "io", "discard", "iothread"], &[])?;
            dr.attr_only("name", &["qemu"])?;
            let caches: Vec<(&str, DiskCache)> =
                DiskCache::ALL.iter().map(|c| (c.as_str(), *c)).collect();
            // cache='default' is libvirt's spelled-out "not set" (it never writes it back).
            let cache = match dr.attr("cache") {
                Some("default") => None,
                _ => dr.attr_enum("cache", &caches)?,
            };
            let ios: Vec<(&str, DiskIo)> = DiskIo::ALL.iter().map(|c| (c.as_str(), *c)).collect();
            DiskDriver {
                format: dr
                    .attr_enum(
                        "type",
                        &[("raw", DiskFormat::Raw), ("qcow2", DiskFormat::Qcow2)],
                    )?
                    .unwrap_or(DiskFormat::Raw),
                cache,
                io: dr.attr_enum("io", &ios)?,
                discard: dr.attr_enum(
                    "discard",
                    &[
                        ("unmap", DiskDiscard::Unmap),
                        ("ignore", DiskDiscard::Ignore),
                    ],
                )?,
                iothread: dr.attr_int("iothread")?,
            }
        }
        // libvirt's default: raw, no format probing.
        None => DiskDriver {
            format: DiskFormat::Raw,
            cache: None,
            io: None,
            discard: None,
            iothread: None,
        },
    };
    let t = e.req_child("target")?;
    t.allow(&["dev", "bus", "tray"], &[])?;
    // An open tray changes what the guest sees; 'closed' is libvirt's default.
    t.attr_only("tray", &["closed"])?;
    let serial = match e.text_child("serial")? {
        Some(s) => {
            s.allow(&[], &[])?;
            Some(s.req_text()?.to_owned())
        }
        None => None,
    };
    Ok(Disk {
        device,
        source,
        driver,
        target: DiskTarget {
            dev: t.req_attr("dev")?.to_owned(),
            bus: t.req_attr_enum(
                "bus",
                &[
                    ("virtio", DiskBus::Virtio),
                    ("sata", DiskBus::Sata),
                    ("scsi", DiskBus::Scsi),
                    ("ide", DiskBus::Ide),
                ],
            )?,
        },
        readonly: flag(e, "readonly")?,
        shareable: flag(e, "shareable")?,
        serial,
        boot_order: boot_order(e)?,
        address: address(e)?,
        iotune: super::iotune::iotune(e)?,
    })
}

/// A `<controller>` and whether it named its `index` (see `assign_indexes`).
pub(super) fn controller(e: &Element, i440fx: bool) -> R<(Controller, bool)> {
    e.allow(
        &["type", "index", "model", "ports"],
        &["address", "target", "model", "master"],
    )?;
    let ty = e.req_attr("type")?;
    let model = e.attr("model");
    let no_ports = |kind: ControllerKind| -> R<ControllerKind> {
        if e.attr("ports").is_some() {
            return Err(XmlError::UnsupportedAttribute {
                path: format!("{}@ports", e.path),
                line: e.line,
            });
        }
        Ok(kind)
    };
    let usb = |model: UsbModel| ControllerKind::Usb { model, ports: None };
    let kind = match (ty, model) {
        ("pci", Some("pcie-root")) => no_ports(ControllerKind::PcieRoot)?,
        ("pci", Some("pci-root")) => no_ports(ControllerKind::PciRoot)?,
        // libvirt's default PCI controller is the machine's root bus.
        ("pci", None) if i440fx => no_ports(ControllerKind::PciRoot)?,
        ("pci", None) => no_ports(ControllerKind::PcieRoot)?,
        ("pci", Some("pcie-root-port")) => {
            let (chassis, port) = match e.child("target")? {
                Some(t) => {
                    t.allow(&["chassis", "port"], &[])?;
                    (t.attr_int("chassis")?, t.attr_int("port")?)
                }
                None => (None, None),
            };
            // <model name> picks the QEMU device: a different device in the guest.
            let model = match e.child("model")? {
                Some(m) => {
                    m.allow(&["name"], &[])?;
                    m.req_attr_enum(
                        "name",
                        &[
                            ("pcie-root-port", RootPortModel::PcieRootPort),
                            ("ioh3420", RootPortModel::Ioh3420),
                        ],
                    )?
                }
                None => RootPortModel::PcieRootPort,
            };
            no_ports(ControllerKind::PcieRootPort {
                chassis,
                port,
                model,
            })?
        }
        ("pci", Some(m)) => {
            return Err(e.unsupported_value(
                Some("model"),
                m,
                &["pci-root", "pcie-root", "pcie-root-port"],
            ))
        }
        ("ide", None) => no_ports(ControllerKind::Ide)?,
        ("sata", None) => no_ports(ControllerKind::Sata)?,
        ("scsi", Some("virtio-scsi")) => no_ports(ControllerKind::VirtioScsi)?,
        ("scsi", m) => {
            return Err(e.unsupported_value(
                Some("model"),
                m.unwrap_or("(default lsilogic)"),
                &["virtio-scsi"],
            ))
        }
        ("usb", Some("qemu-xhci")) => ControllerKind::Usb {
            model: UsbModel::QemuXhci,
            ports: e.attr_int("ports")?,
        },
        // libvirt's default USB controller: piix3-uhci on i440fx, qemu-xhci on q35.
        ("usb", None) if i440fx => no_ports(usb(UsbModel::Piix3Uhci))?,
        ("usb", None) => ControllerKind::Usb {
            model: UsbModel::QemuXhci,
            ports: e.attr_int("ports")?,
        },
        ("usb", Some("none")) => no_ports(usb(UsbModel::None))?,
        ("usb", Some("piix3-uhci")) => no_ports(usb(UsbModel::Piix3Uhci))?,
        ("usb", Some("ich9-ehci1")) => no_ports(usb(UsbModel::Ich9Ehci1))?,
        ("usb", Some(m @ ("ich9-uhci1" | "ich9-uhci2" | "ich9-uhci3"))) => {
            let n = if m.ends_with('1') {
                1
            } else if m.ends_with('2') {
                2
            } else {
                3
            };
            let startport = match e.child("master")? {
                Some(ms) => {
                    ms.allow(&["startport"], &[])?;
                    Some(ms.req_attr_int("startport")?)
                }
                None => None,
            };
            no_ports(usb(UsbModel::Ich9Uhci { n, startport }))?
        }
        ("usb", Some(m)) => {
            return Err(e.unsupported_value(
                Some("model"),
                m,
                &[
                    "qemu-xhci",
                    "piix3-uhci",
                    "ich9-ehci1",
                    "ich9-uhci1",
                    "ich9-uhci2",
                    "ich9-uhci3",
                    "none",
                ],
            ))
        }
        ("virtio-serial", None) => no_ports(ControllerKind::VirtioSerial)?,
        ("sata" | "virtio-serial" | "ide", Some(m)) => {
            return Err(e.unsupported_value(Some("model"), m, &[]))
        }
        (other, _) => {
            return Err(e.unsupported_value(
                Some("type"),
                other,
                &["pci", "ide", "sata", "scsi", "usb", "virtio-serial"],
            ))
        }
    };
    if !matches!(kind, ControllerKind::PcieRootPort { .. }) {
        if let Some(t) = e.child("target")? {
            return Err(t.unsupported());
        }
        // Only a root port has a choice of device; elsewhere <model name> would be a
        // device we do not emulate.
        if let Some(m) = e.child("model")? {
            return Err(m.unsupported());
        }
    }
    if !matches!(
        kind,
        ControllerKind::Usb {
            model: UsbModel::Ich9Uhci { .. },
            ..
        }
    ) {
        if let Some(m) = e.child("master")? {
            return Err(m.unsupported());
        }
    }
    let index = e.attr_int("index")?;
    Ok((
        Controller {
            index: index.unwrap_or(0),
            kind,
            address: address(e)?,
        },
        index.is_some(),
    ))
}

/// Controllers without `index` get the first index their type leaves free, in document
/// order, after every explicit index is known (libvirt's
/// `virDomainControllerFindUnusedIndex` in the device post-parse). A root bus, which can
/// only be index 0, is numbered before the others.
fn assign_indexes(ctls: &mut [Controller], given: &[bool]) {
    let class = |k: &ControllerKind| match k {
        ControllerKind::PcieRoot
        | ControllerKind::PcieRootPort { .. }
        | ControllerKind::PciRoot => 0,
        ControllerKind::Ide => 1,
        ControllerKind::Sata => 2,
        ControllerKind::VirtioScsi => 3,
        ControllerKind::Usb { .. } => 4,
        ControllerKind::VirtioSerial => 5,
    };
    let is_root =
        |k: &ControllerKind| matches!(k, ControllerKind::PcieRoot | ControllerKind::PciRoot);
    let mut used: Vec<(u8, u32)> = ctls
        .iter()
        .zip(given)
        .filter(|(_, g)| **g)
        .map(|(c, _)| (class(&c.kind), c.index))
        .collect();
    for roots in [true, false] {
        // virt-install writes ich9-ehci1 and its companions without index: a companion
        // joins the EHCI before it.
        let mut last_ehci = None;
        for (c, g) in ctls.iter_mut().zip(given) {
            let companion = matches!(
                c.kind,
                ControllerKind::Usb {
                    model: UsbModel::Ich9Uhci {
                        startport: Some(_),
                        ..
                    },
                    ..
                }
            );
            if !*g && !roots && companion {
                if let Some(i) = last_ehci {
                    c.index = i;
                    continue;
                }
            }
            if !*g && is_root(&c.kind) == roots {
                let k = class(&c.kind);
                let mut idx = 0;
                while used.contains(&(k, idx)) {
                    idx += 1;
                }
                c.index = idx;
                used.push((k, idx));
            }
            if matches!(
                c.kind,
                ControllerKind::Usb {
                    model: UsbModel::Ich9Ehci1,
                    ..
                }
            ) {
                last_ehci = Some(c.index);
            }
        }
    }
}

pub(super) fn interface(e: &Element) -> R<Interface> {
    e.allow(
        &["type"],
        &[
            "mac",
            "source",
            "model",
            "driver",
            "mtu",
            "boot",
            "address",
            "target",
            "vlan",
            "link",
            "bandwidth",
            "filterref",
            "port",
        ],
    )?;
    let ty = e.req_attr("type")?;
    let src = e.child("source")?;
    let need_src = || {
        src.ok_or_else(|| XmlError::Missing {
            what: "element <source>".into(),
            path: format!("{}/source", e.path),
            line: e.line,
        })
    };
    let source = match ty {
        "bridge" => {
            let s = need_src()?;
            s.allow(&["bridge"], &[])?;
            InterfaceSource::Bridge {
                bridge: s.req_attr("bridge")?.to_owned(),
            }
        }
        "network" => {
            let s = need_src()?;
            // portid/bridge: runtime port allocation libvirt records in the live XML.
            s.allow(&["network", "portid", "bridge"], &[])?;
            InterfaceSource::Network {
                network: s.req_attr("network")?.to_owned(),
            }
        }
        "user" => {
            if let Some(s) = src {
                return Err(s.unsupported());
            }
            InterfaceSource::User
        }
        "direct" => {
            let s = need_src()?;
            s.allow(&["dev", "mode"], &[])?;
            let modes: Vec<(&str, MacvtapMode)> =
                MacvtapMode::ALL.iter().map(|m| (m.as_str(), *m)).collect();
            InterfaceSource::Direct {
                dev: s.req_attr("dev")?.to_owned(),
                mode: s.attr_enum("mode", &modes)?.unwrap_or(MacvtapMode::Vepa),
            }
        }
        "vhostuser" => {
            let s = need_src()?;
            s.allow(&["type", "path", "mode"], &[])?;
            s.attr_only("type", &["unix"])?;
            InterfaceSource::VhostUser {
                path: s.req_attr("path")?.to_owned(),
                mode: s.req_attr_enum(
                    "mode",
                    &[
                        ("server", SocketMode::Server),
                        ("client", SocketMode::Client),
                    ],
                )?,
            }
        }
        other => {
            return Err(e.unsupported_value(
                Some("type"),
                other,
                &["bridge", "network", "user", "direct", "vhostuser"],
            ))
        }
    };
    let (target_dev, vlan, link_down) = nic_host_side(e)?;
    let mac = match e.child("mac")? {
        Some(m) => {
            m.allow(&["address"], &[])?;
            m.req_attr("address")?;
            m.attr_parse("address")?
        }
        None => None,
    };
    let model = match e.child("model")? {
        Some(m) => {
            m.allow(&["type"], &[])?;
            let models: Vec<(&str, NicModel)> =
                NicModel::ALL.iter().map(|m| (m.as_str(), *m)).collect();
            m.req_attr_enum("type", &models)?
        }
        // libvirt's QEMU default NIC model on x86; written back explicitly.
        None => NicModel::Rtl8139,
    };
    let mtu = match e.child("mtu")? {
        Some(m) => {
            m.allow(&["size"], &[])?;
            Some(m.req_attr_int("size")?)
        }
        None => None,
    };
    let driver = match e.child("driver")? {
        // <host>/<guest> offload switches and txmode/ioeventfd/event_idx/iommu/packed are
        // refused by name (not in the list): each changes what the guest sees or gets.
        Some(dr) => {
            dr.allow(&["name", "queues", "rx_queue_size", "tx_queue_size"], &[])?;
            Some(NicDriver {
                name: dr.attr_enum(
                    "name",
                    &[("vhost", NicBackend::Vhost), ("qemu", NicBackend::Qemu)],
                )?,
                queues: dr.attr_int("queues")?,
                rx_queue_size: dr.attr_int("rx_queue_size")?,
                tx_queue_size: dr.attr_int("tx_queue_size")?,
            })
        }
        None => None,
    };
    Ok(Interface {
        source,
        mac,
        model,
        driver,
        mtu,
        boot_order: boot_order(e)?,
        address: address(e)?,
        target_dev,
        vlan,
        link_down,
        bandwidth: e
            .child("bandwidth")?
            .map(super::nic_qos::bandwidth)
            .transpose()?,
        filterref: e
            .child("filterref")?
            .map(super::nic_qos::filterref)
            .transpose()?,
        port_isolated: match e.child("port")? {
            Some(p) => super::nic_qos::port_isolated(p)?,
            None => false,
        },
    })
}

/// `<target dev=.../>` (the host link's name asked for), `<vlan><tag id=.../></vlan>` (one
/// access VLAN: trunks and native modes are refused by name) and `<link state=.../>`.
fn nic_host_side(e: &Element) -> R<(Option<String>, Option<u16>, bool)> {
    let target_dev = match e.child("target")? {
        Some(t) => {
            t.allow(&["dev"], &[])?;
            // vnetN/macvtapN/macvlanN are the names a host generated for a running guest (a
            // live XML): libvirt drops them on define, so a copied document gets a fresh name
            // instead of colliding with the original's.
            t.attr("dev")
                .filter(|d| !crate::model::generated_link_name(d))
                .map(str::to_owned)
        }
        None => None,
    };
    let vlan = match e.child("vlan")? {
        Some(v) => {
            v.allow(&[], &["tag"])?;
            let mut tags = v.children_named("tag");
            let tag = tags.next().ok_or_else(|| XmlError::Missing {
                what: "element <tag>".into(),
                path: format!("{}/tag", v.path),
                line: v.line,
            })?;
            if let Some(second) = tags.next() {
                // Several tags make a trunk port: not offered.
                return Err(second.unsupported());
            }
            tag.allow(&["id"], &[])?;
            Some(tag.req_attr_int::<u16>("id")?)
        }
        None => None,
    };
    let link_down = match e.child("link")? {
        Some(l) => {
            l.allow(&["state"], &[])?;
            l.req_attr_enum("state", &[("up", false), ("down", true)])?
        }
        None => false,
    };
    Ok((target_dev, vlan, link_down))
}

pub(super) fn hostdev(e: &Element) -> R<Hostdev> {
    e.allow(
        &["mode", "type", "managed"],
        &["driver", "source", "boot", "address"],
    )?;
    e.attr_only("mode", &["subsystem"])?;
    let ty = e.req_attr("type")?;
    if ty != "pci" {
        return Err(e.unsupported_value(Some("type"), ty, &["pci"]));
    }
    if let Some(dr) = e.child("driver")? {
        dr.allow(&["name"], &[])?;
        dr.attr_only("name", &["vfio"])?;
    }
    let s = e.req_child("source")?;
    s.allow(&[], &["address"])?;
    let a = s.req_child("address")?;
    a.allow(&["domain", "bus", "slot", "function"], &[])?;
    Ok(Hostdev {
        source: PciAddr {
            domain: a.attr_int("domain")?.unwrap_or(0),
            bus: a.req_attr_int("bus")?,
            slot: a.req_attr_int("slot")?,
            function: a.attr_int("function")?.unwrap_or(0),
        },
        managed: e.attr_enum("managed", YES_NO)?.unwrap_or(false),
        boot_order: boot_order(e)?,
        address: address(e)?,
    })
}

pub(super) fn char_source(e: &Element) -> R<CharSource> {
    let ty = e.req_attr("type")?;
    let src = e.child("source")?;
    match ty {
        "pty" => {
            // <source path='/dev/pts/N'/> is the pty QEMU allocated at runtime.
            if let Some(s) = src {
                s.allow(&["path"], &[])?;
            }
            Ok(CharSource::Pty)
        }
        "unix" => {
            let s = e.req_child("source")?;
            s.allow(&["mode", "path"], &[])?;
            Ok(CharSource::Unix {
                path: s.req_attr("path")?.to_owned(),
                mode: s
                    .attr_enum(
                        "mode",
                        &[
                            ("bind", SocketMode::Server),
                            ("connect", SocketMode::Client),
                        ],
                    )?
                    .unwrap_or(SocketMode::Server),
            })
        }
        "file" => {
            let s = e.req_child("source")?;
            s.allow(&["path"], &[])?;
            Ok(CharSource::File {
                path: s.req_attr("path")?.to_owned(),
            })
        }
        "null" => {
            if let Some(s) = src {
                return Err(s.unsupported());
            }
            Ok(CharSource::Null)
        }
        other => Err(e.unsupported_value(Some("type"), other, &["pty", "unix", "file", "null"])),
    }
}

pub(super) fn serial(e: &Element) -> R<Serial> {
    e.allow(&["type"], &["source", "target"])?;
    let mut port = 0;
    if let Some(t) = e.child("target")? {
        // <model name='isa-serial'/> is libvirt spelling out the default device.
        t.allow(&["type", "port"], &["model"])?;
        t.attr_only("type", &["isa-serial"])?;
        if let Some(m) = t.child("model")? {
            m.allow(&["name"], &[])?;
            m.attr_only("name", &["isa-serial"])?;
        }
        port = t.attr_int("port")?.unwrap_or(0);
    }
    Ok(Serial {
        source: char_source(e)?,
        port,
    })
}

pub(super) fn console(e: &Element) -> R<Console> {
    // tty='/dev/pts/N' is the runtime pty path.
    e.allow(&["type", "tty"], &["source", "target"])?;
    let (target, port) = match e.child("target")? {
        Some(t) => {
            t.allow(&["type", "port"], &[])?;
            (
                t.attr_enum(
                    "type",
                    &[
                        ("serial", ConsoleTarget::Serial),
                        ("virtio", ConsoleTarget::Virtio),
                    ],
                )?
                .unwrap_or(ConsoleTarget::Serial),
                t.attr_int("port")?.unwrap_or(0),
            )
        }
        None => (ConsoleTarget::Serial, 0),
    };
    Ok(Console {
        source: char_source(e)?,
        target,
        port,
    })
}

pub(super) fn channel(e: &Element) -> R<Channel> {
    e.allow(&["type"], &["source", "target", "address"])?;
    e.attr_only("type", &["unix", "spicevmc"])?;
    if e.req_attr("type")? == "spicevmc" {
        return spicevmc_channel(e);
    }
    let path = match e.child("source")? {
        Some(s) => {
            s.allow(&["mode", "path"], &[])?;
            s.attr_only("mode", &["bind"])?;
            s.attr("path").map(str::to_owned)
        }
        None => None,
    };
    let t = e.req_child("target")?;
    // state='connected' is the live guest-agent connection state.
    t.allow(&["type", "name", "state"], &[])?;
    t.attr_only("type", &["virtio"])?;
    t.req_attr("type")?;
    Ok(Channel {
        kind: ChannelKind::Unix,
        path,
        name: t.req_attr("name")?.to_owned(),
        address: address(e)?,
    })
}

/// The SPICE agent channel: no host socket; the target name defaults to the only one QEMU's
/// spicevmc agent serves, as libvirt fills it in.
fn spicevmc_channel(e: &Element) -> R<Channel> {
    if let Some(s) = e.child("source")? {
        return Err(s.unsupported());
    }
    let name = match e.child("target")? {
        Some(t) => {
            t.allow(&["type", "name", "state"], &[])?;
            t.attr_only("type", &["virtio"])?;
            t.req_attr("type")?;
            t.attr("name").unwrap_or(SPICE_AGENT_CHANNEL).to_owned()
        }
        None => SPICE_AGENT_CHANNEL.to_owned(),
    };
    Ok(Channel {
        kind: ChannelKind::Spicevmc,
        path: None,
        name,
        address: address(e)?,
    })
}

pub(crate) const SPICE_AGENT_CHANNEL: &str = "com.redhat.spice.0";

pub(super) fn input(e: &Element) -> R<Input> {
    e.allow(&["type", "bus"], &["address"])?;
    let kind = e.req_attr_enum(
        "type",
        &[
            ("mouse", InputKind::Mouse),
            ("keyboard", InputKind::Keyboard),
            ("tablet", InputKind::Tablet),
        ],
    )?;
    let bus = e
        .attr_enum(
            "bus",
            &[
                ("ps2", InputBus::Ps2),
                ("usb", InputBus::Usb),
                ("virtio", InputBus::Virtio),
            ],
        )?
        .unwrap_or(if kind == InputKind::Tablet {
            InputBus::Usb
        } else {
            InputBus::Ps2
        });
    Ok(Input {
        kind,
        bus,
        address: address(e)?,
    })
}

pub(super) fn tpm(e: &Element) -> R<Tpm> {
    e.allow(&["model"], &["backend"])?;
    let b = e.req_child("backend")?;
    b.allow(&["type", "version"], &[])?;
    b.attr_only("type", &["emulator"])?;
    b.req_attr("type")?;
    b.attr_only("version", &["2.0"])?;
    Ok(Tpm {
        model: e
            .attr_enum(
                "model",
                &[("tpm-crb", TpmModel::TpmCrb), ("tpm-tis", TpmModel::TpmTis)],
            )?
            .unwrap_or(TpmModel::TpmTis),
    })
}

pub(super) fn graphics(e: &Element) -> R<Graphics> {
    let ty = e.req_attr("type")?;
    if ty == "spice" {
        return super::spice::graphics(e);
    }
    e.allow(
        &["type", "port", "autoport", "listen", "keymap"],
        &["listen"],
    )?;
    if ty != "vnc" {
        return Err(e.unsupported_value(Some("type"), ty, &["vnc", "spice"]));
    }
    let mut listen = e.attr("listen").map(str::to_owned);
    for l in e.children_named("listen") {
        // libvirt mirrors the listen attribute into <listen type='address'>.
        l.allow(&["type", "address"], &[])?;
        l.attr_only("type", &["address"])?;
        match (l.attr("address"), &listen) {
            (Some(a), Some(cur)) if a != cur => {
                return Err(l.invalid_attr("address", "differs from graphics@listen"))
            }
            (Some(a), None) => listen = Some(a.to_owned()),
            _ => {}
        }
    }
    let autoport = e.attr_enum("autoport", YES_NO)?.unwrap_or(false);
    let port = match e.attr("port") {
        None | Some("-1") => VncPort::Auto,
        Some(_) if autoport => VncPort::Auto,
        Some(_) => VncPort::Fixed(e.attr_int("port")?.unwrap_or(5900)),
    };
    Ok(Graphics::Vnc {
        port,
        listen,
        keymap: e.attr("keymap").map(str::to_owned),
    })
}

pub(super) fn video(e: &Element) -> R<Video> {
    e.allow(&[], &["model", "address"])?;
    let m = e.req_child("model")?;
    // heads='1' and primary='yes' are what libvirt writes for the single supported head.
    m.allow(&["type", "vram", "heads", "primary", "ram", "vgamem"], &[])?;
    m.attr_only("primary", &["yes"])?;
    let ty = m.req_attr("type")?;
    if ty != "qxl" {
        m.attr_only("heads", &["1"])?;
        for a in ["ram", "vgamem"] {
            if m.attr(a).is_some() {
                return Err(XmlError::UnsupportedAttribute {
                    path: format!("{}@{a}", m.path),
                    line: m.line,
                });
            }
        }
    }
    let model = match ty {
        "qxl" => VideoModel::Qxl {
            ram_kib: m.attr_int("ram")?,
            vram_kib: m.attr_int("vram")?,
            vgamem_kib: m.attr_int("vgamem")?,
            heads: m.attr_int("heads")?,
        },
        "none" => VideoModel::None,
        "virtio" => VideoModel::Virtio,
        "vga" => VideoModel::Vga {
            vram_kib: m.attr_int("vram")?,
        },
        "cirrus" => VideoModel::Cirrus {
            vram_kib: m.attr_int("vram")?,
        },
        other => {
            return Err(m.unsupported_value(
                Some("type"),
                other,
                &["none", "virtio", "vga", "cirrus", "qxl"],
            ))
        }
    };
    if !matches!(
        model,
        VideoModel::Vga { .. } | VideoModel::Cirrus { .. } | VideoModel::Qxl { .. }
    ) && m.attr("vram").is_some()
    {
        return Err(XmlError::UnsupportedAttribute {
            path: format!("{}@vram", m.path),
            line: m.line,
        });
    }
    Ok(Video {
        model,
        address: address(e)?,
    })
}

pub(super) fn memballoon(e: &Element) -> R<Memballoon> {
    e.allow(&["model"], &["stats", "address"])?;
    let stats_period = match e.child("stats")? {
        Some(s) => {
            s.allow(&["period"], &[])?;
            Some(s.req_attr_int("period")?)
        }
        None => None,
    };
    Ok(Memballoon {
        model: e.req_attr_enum(
            "model",
            &[
                ("virtio", MemballoonModel::Virtio),
                ("none", MemballoonModel::None),
            ],
        )?,
        stats_period,
        address: address(e)?,
    })
}

pub(super) fn rng(e: &Element) -> R<Rng> {
    e.allow(&["model"], &["backend", "address"])?;
    e.attr_only("model", &["virtio"])?;
    e.req_attr("model")?;
    let b = e.req_child("backend")?;
    b.allow(&["model"], &[])?;
    b.attr_only("model", &["random"])?;
    Ok(Rng {
        backend: b.req_text()?.to_owned(),
        address: address(e)?,
    })
}

pub(super) fn watchdog(e: &Element) -> R<Watchdog> {
    e.allow(&["model", "action"], &["address"])?;
    let actions: Vec<(&str, WatchdogAction)> = WatchdogAction::ALL
        .iter()
        .map(|a| (a.as_str(), *a))
        .collect();
    Ok(Watchdog {
        model: e.req_attr_enum(
            "model",
            &[
                ("i6300esb", WatchdogModel::I6300esb),
                ("itco", WatchdogModel::Itco),
            ],
        )?,
        action: e
            .attr_enum("action", &actions)?
            .unwrap_or(WatchdogAction::Reset),
        address: address(e)?,
    })
}
