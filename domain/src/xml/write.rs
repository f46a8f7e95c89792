//! `DomainConfig` -> libvirt domain XML, in `virsh dumpxml` layout (2-space indent, single
//! quotes, `unit='KiB'`). Output is valid against libvirt's schema for the supported subset.

use quick_xml::escape::escape;

use crate::model::*;

#[path = "write_spice.rs"]
mod spice;

struct W {
    out: String,
    depth: usize,
}

type Attrs<'a> = &'a [(&'a str, Option<String>)];

impl W {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }
    fn tag(&mut self, name: &str, attrs: Attrs<'_>) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            if let Some(v) = v {
                self.out.push(' ');
                self.out.push_str(k);
                self.out.push_str("='");
                self.out.push_str(&escape(v.as_str()));
                self.out.push('\'');
            }
        }
    }
    fn open(&mut self, name: &str, attrs: Attrs<'_>) {
        self.tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }
    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }
    fn empty(&mut self, name: &str, attrs: Attrs<'_>) {
        self.tag(name, attrs);
        self.out.push_str("/>\n");
    }
    fn text(&mut self, name: &str, attrs: Attrs<'_>, text: &str) {
        self.tag(name, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn yes_no(b: bool) -> Option<String> {
    s(if b { "yes" } else { "no" })
}

fn on_off(b: bool) -> Option<String> {
    s(if b { "on" } else { "off" })
}

fn hex(v: u64, width: usize) -> Option<String> {
    s(format!("0x{v:0width$x}"))
}

pub fn write_domain(d: &DomainConfig) -> String {
    let mut w = W {
        out: String::with_capacity(4096),
        depth: 0,
    };
    w.open("domain", &[("type", s(d.virt_type.as_str()))]);
    w.text("name", &[], &d.name);
    if let Some(u) = &d.uuid {
        w.text("uuid", &[], &u.to_string());
    }
    if let Some(t) = &d.title {
        w.text("title", &[], t);
    }
    if let Some(t) = &d.description {
        w.text("description", &[], t);
    }
    if let Some(m) = &d.metadata {
        // Verbatim: it is someone else's XML.
        w.indent();
        w.out.push_str("<metadata>");
        w.out.push_str(m);
        w.out.push_str("</metadata>\n");
    }
    let kib = || s("KiB");
    if let Some(m) = &d.memory.max {
        w.text(
            "maxMemory",
            &[("slots", s(m.slots)), ("unit", kib())],
            &m.size_kib.to_string(),
        );
    }
    w.text(
        "memory",
        &[("unit", kib())],
        &d.memory.memory_kib.to_string(),
    );
    if let Some(c) = d.memory.current_kib {
        w.text("currentMemory", &[("unit", kib())], &c.to_string());
    }
    if let Some(t) = &d.memtune {
        w.open("memtune", &[]);
        for (name, limit) in [
            ("hard_limit", t.hard_limit_kib),
            ("soft_limit", t.soft_limit_kib),
        ] {
            if let Some(value) = limit {
                w.text(name, &[("unit", kib())], &value.to_string());
            }
        }
        w.close("memtune");
    }
    if let Some(mb) = &d.memory_backing {
        memory_backing(&mut w, mb);
    }
    let v = &d.vcpu;
    w.text(
        "vcpu",
        &[
            ("placement", v.placement.map(|p| p.as_str().to_owned())),
            ("cpuset", v.cpuset.as_ref().map(IdSet::to_string)),
            ("current", v.current.map(|c| c.to_string())),
        ],
        &v.count.to_string(),
    );
    if let Some(n) = d.iothreads {
        w.text("iothreads", &[], &n.to_string());
    }
    if let Some(t) = &d.cputune {
        cputune(&mut w, t);
    }
    if let Some(n) = &d.numatune {
        w.open("numatune", &[]);
        if let Some(m) = &n.memory {
            w.empty(
                "memory",
                &[("mode", s(m.mode.as_str())), ("nodeset", s(&m.nodeset))],
            );
        }
        for m in &n.memnodes {
            w.empty(
                "memnode",
                &[
                    ("cellid", s(m.cellid)),
                    ("mode", s(m.mode.as_str())),
                    ("nodeset", s(&m.nodeset)),
                ],
            );
        }
        w.close("numatune");
    }
    os(&mut w, &d.os);
    features(&mut w, &d.features);
    if let Some(c) = &d.cpu {
        cpu(&mut w, c);
    }
    if let Some(c) = &d.clock {
        if c.timers.is_empty() {
            w.empty("clock", &[("offset", s(c.offset.as_str()))]);
        } else {
            w.open("clock", &[("offset", s(c.offset.as_str()))]);
            for t in &c.timers {
                w.empty(
                    "timer",
                    &[
                        ("name", s(t.name.as_str())),
                        ("tickpolicy", t.tickpolicy.map(|p| p.as_str().to_owned())),
                        ("present", t.present.and_then(yes_no)),
                    ],
                );
            }
            w.close("clock");
        }
    }
    for (n, a) in [
        ("on_poweroff", d.on_poweroff),
        ("on_reboot", d.on_reboot),
        ("on_crash", d.on_crash),
    ] {
        if let Some(a) = a {
            w.text(n, &[], a.as_str());
        }
    }
    if let Some(pm) = &d.pm {
        w.open("pm", &[]);
        for (n, v) in [
            ("suspend-to-mem", pm.suspend_to_mem),
            ("suspend-to-disk", pm.suspend_to_disk),
        ] {
            if let Some(v) = v {
                w.empty(n, &[("enabled", yes_no(v))]);
            }
        }
        w.close("pm");
    }
    devices(&mut w, &d.devices);
    w.close("domain");
    w.out
}

fn memory_backing(w: &mut W, mb: &MemoryBacking) {
    w.open("memoryBacking", &[]);
    if let Some(pages) = &mb.hugepages {
        if pages.is_empty() {
            w.empty("hugepages", &[]);
        } else {
            w.open("hugepages", &[]);
            for p in pages {
                w.empty(
                    "page",
                    &[
                        ("size", s(p.size_kib)),
                        ("unit", s("KiB")),
                        ("nodeset", p.nodeset.as_ref().map(IdSet::to_string)),
                    ],
                );
            }
            w.close("hugepages");
        }
    }
    if mb.nosharepages {
        w.empty("nosharepages", &[]);
    }
    if mb.locked {
        w.empty("locked", &[]);
    }
    if let Some(src) = mb.source {
        w.empty("source", &[("type", s(src.as_str()))]);
    }
    if let Some(a) = mb.access {
        w.empty("access", &[("mode", s(a.as_str()))]);
    }
    if let Some(a) = mb.allocation {
        w.empty("allocation", &[("mode", s(a.as_str()))]);
    }
    w.close("memoryBacking");
}

fn cputune(w: &mut W, t: &CpuTune) {
    w.open("cputune", &[]);
    for p in &t.vcpupins {
        w.empty("vcpupin", &[("vcpu", s(p.vcpu)), ("cpuset", s(&p.cpuset))]);
    }
    if let Some(e) = &t.emulatorpin {
        w.empty("emulatorpin", &[("cpuset", s(e))]);
    }
    for p in &t.iothreadpins {
        w.empty(
            "iothreadpin",
            &[("iothread", s(p.iothread)), ("cpuset", s(&p.cpuset))],
        );
    }
    if let Some(v) = t.shares {
        w.text("shares", &[], &v.to_string());
    }
    if let Some(v) = t.period {
        w.text("period", &[], &v.to_string());
    }
    if let Some(v) = t.quota {
        w.text("quota", &[], &v.to_string());
    }
    w.close("cputune");
}

fn os(w: &mut W, o: &Os) {
    let auto = matches!(o.firmware, Firmware::UefiAuto { .. });
    w.open("os", &[("firmware", auto.then(|| "efi".to_owned()))]);
    w.text(
        "type",
        &[
            ("arch", o.arch.map(|a| a.as_str().to_owned())),
            ("machine", o.machine.clone()),
        ],
        "hvm",
    );
    if let Firmware::Uefi { loader, nvram } = &o.firmware {
        w.text(
            "loader",
            &[
                ("readonly", yes_no(loader.readonly)),
                ("secure", yes_no(loader.secure)),
                ("type", s("pflash")),
            ],
            &loader.path,
        );
        if let Some(n) = nvram {
            w.text("nvram", &[("template", n.template.clone())], &n.path);
        }
    }
    if let Firmware::UefiAuto {
        secure_boot,
        enrolled_keys,
    } = &o.firmware
    {
        let features = [
            ("enrolled-keys", enrolled_keys),
            ("secure-boot", secure_boot),
        ];
        if features.iter().any(|(_, v)| v.is_some()) {
            w.open("firmware", &[]);
            for (name, v) in features {
                if let Some(v) = v {
                    w.empty("feature", &[("enabled", yes_no(*v)), ("name", s(name))]);
                }
            }
            w.close("firmware");
        }
    }
    if let Some(k) = &o.kernel {
        w.text("kernel", &[], &k.kernel);
        if let Some(i) = &k.initrd {
            w.text("initrd", &[], i);
        }
        if let Some(c) = &k.cmdline {
            w.text("cmdline", &[], c);
        }
    }
    for b in &o.boot {
        w.empty("boot", &[("dev", s(b.as_str()))]);
    }
    if let Some(m) = &o.bootmenu {
        w.empty(
            "bootmenu",
            &[
                ("enable", yes_no(m.enable)),
                ("timeout", m.timeout_ms.map(|t| t.to_string())),
            ],
        );
    }
    if o.bios_serial {
        w.empty("bios", &[("useserial", yes_no(true))]);
    }
    w.close("os");
}

fn features(w: &mut W, f: &Features) {
    if *f == Features::default() {
        return;
    }
    w.open("features", &[]);
    for (n, on) in [("acpi", f.acpi), ("apic", f.apic), ("pae", f.pae)] {
        if on {
            w.empty(n, &[]);
        }
    }
    if let Some(v) = f.vmport {
        w.empty("vmport", &[("state", on_off(v))]);
    }
    if let Some(h) = &f.hyperv {
        hyperv(w, h);
    }
    if let Some(v) = f.kvm_hidden {
        w.open("kvm", &[]);
        w.empty("hidden", &[("state", on_off(v))]);
        w.close("kvm");
    }
    if let Some(v) = f.smm {
        w.empty("smm", &[("state", on_off(v))]);
    }
    if let Some(d) = f.ioapic {
        w.empty("ioapic", &[("driver", s(d.as_str()))]);
    }
    w.close("features");
}

fn hyperv(w: &mut W, h: &HyperV) {
    let attrs = [("mode", s(h.mode.as_str()))];
    if h.flags.is_empty() && h.spinlocks.is_none() && h.stimer.is_none() && h.vendor_id.is_none() {
        w.empty("hyperv", &attrs);
        return;
    }
    w.open("hyperv", &attrs);
    // libvirt's order: relaxed, vapic, spinlocks, vpindex, runtime, synic, stimer, reset,
    // vendor_id, frequencies, reenlightenment, tlbflush, ipi, evmcs, avic.
    let flag = |w: &mut W, f: HypervFlag| {
        if let Some(v) = h.flags.get(&f) {
            w.empty(f.as_str(), &[("state", on_off(*v))]);
        }
    };
    flag(w, HypervFlag::Relaxed);
    flag(w, HypervFlag::Vapic);
    if let Some(sl) = &h.spinlocks {
        w.empty(
            "spinlocks",
            &[
                ("state", on_off(sl.state)),
                ("retries", sl.retries.map(|r| r.to_string())),
            ],
        );
    }
    flag(w, HypervFlag::Vpindex);
    flag(w, HypervFlag::Runtime);
    flag(w, HypervFlag::Synic);
    if let Some(st) = &h.stimer {
        match st.direct {
            Some(d) => {
                w.open("stimer", &[("state", on_off(st.state))]);
                w.empty("direct", &[("state", on_off(d))]);
                w.close("stimer");
            }
            None => w.empty("stimer", &[("state", on_off(st.state))]),
        }
    }
    flag(w, HypervFlag::Reset);
    if let Some(v) = &h.vendor_id {
        w.empty(
            "vendor_id",
            &[("state", on_off(v.state)), ("value", v.value.clone())],
        );
    }
    for f in [
        HypervFlag::Frequencies,
        HypervFlag::Reenlightenment,
        HypervFlag::Tlbflush,
        HypervFlag::Ipi,
        HypervFlag::Evmcs,
        HypervFlag::Avic,
    ] {
        flag(w, f);
    }
    w.close("hyperv");
}

fn cpu(w: &mut W, c: &Cpu) {
    let (mode, model) = match &c.mode {
        CpuMode::HostPassthrough => (Some("host-passthrough"), None),
        CpuMode::HostModel => (Some("host-model"), None),
        CpuMode::Custom { model } => (Some("custom"), Some(model)),
        // As libvirt writes a model-less <cpu>: no mode, no match.
        CpuMode::Default => (None, None),
    };
    let attrs = [
        ("mode", mode.map(str::to_owned)),
        ("match", model.map(|_| "exact".to_owned())),
        ("check", c.check.map(|k| k.as_str().to_owned())),
    ];
    let fallback = [("fallback", c.fallback.map(|f| f.as_str().to_owned()))];
    if model.is_none()
        && c.fallback.is_none()
        && c.features.is_empty()
        && c.topology.is_none()
        && c.numa.is_empty()
    {
        w.empty("cpu", &attrs);
        return;
    }
    w.open("cpu", &attrs);
    match model {
        Some(m) => w.text("model", &fallback, m),
        None if c.fallback.is_some() => w.empty("model", &fallback),
        None => {}
    }
    if let Some(t) = &c.topology {
        w.empty(
            "topology",
            &[
                ("sockets", s(t.sockets)),
                ("dies", t.dies.map(|d| d.to_string())),
                ("cores", s(t.cores)),
                ("threads", s(t.threads)),
            ],
        );
    }
    for f in &c.features {
        w.empty(
            "feature",
            &[("policy", s(f.policy.as_str())), ("name", s(&f.name))],
        );
    }
    if !c.numa.is_empty() {
        w.open("numa", &[]);
        for cell in &c.numa {
            let attrs = [
                ("id", s(cell.id)),
                ("cpus", s(&cell.cpus)),
                ("memory", s(cell.memory_kib)),
                ("unit", s("KiB")),
                ("memAccess", cell.mem_access.map(|a| a.as_str().to_owned())),
            ];
            if cell.distances.is_empty() {
                w.empty("cell", &attrs);
            } else {
                w.open("cell", &attrs);
                w.open("distances", &[]);
                for d in &cell.distances {
                    w.empty("sibling", &[("id", s(d.id)), ("value", s(d.value))]);
                }
                w.close("distances");
                w.close("cell");
            }
        }
        w.close("numa");
    }
    w.close("cpu");
}

fn address(w: &mut W, a: &Option<Address>) {
    let Some(a) = a else { return };
    match *a {
        Address::Pci {
            domain,
            bus,
            slot,
            function,
            multifunction,
        } => w.empty(
            "address",
            &[
                ("type", s("pci")),
                ("domain", hex(domain.into(), 4)),
                ("bus", hex(bus.into(), 2)),
                ("slot", hex(slot.into(), 2)),
                ("function", hex(function.into(), 1)),
                ("multifunction", multifunction.and_then(on_off)),
            ],
        ),
        Address::Drive {
            controller,
            bus,
            target,
            unit,
        } => w.empty(
            "address",
            &[
                ("type", s("drive")),
                ("controller", s(controller)),
                ("bus", s(bus)),
                ("target", s(target)),
                ("unit", s(unit)),
            ],
        ),
        Address::VirtioSerial {
            controller,
            bus,
            port,
        } => w.empty(
            "address",
            &[
                ("type", s("virtio-serial")),
                ("controller", s(controller)),
                ("bus", s(bus)),
                ("port", s(port)),
            ],
        ),
        Address::Usb { bus, port } => w.empty(
            "address",
            &[("type", s("usb")), ("bus", s(bus)), ("port", s(port))],
        ),
    }
}

fn boot(w: &mut W, order: Option<u32>) {
    if let Some(o) = order {
        w.empty("boot", &[("order", s(o))]);
    }
}

fn devices(w: &mut W, d: &Devices) {
    if *d == Devices::default() {
        return;
    }
    w.open("devices", &[]);
    if let Some(e) = &d.emulator {
        w.text("emulator", &[], e);
    }
    for disk in &d.disks {
        let ty = match disk.source {
            Some(DiskSource::Block { .. }) => "block",
            Some(DiskSource::Network(_)) => "network",
            Some(DiskSource::Volume { .. }) => "volume",
            _ => "file",
        };
        let dev = match disk.device {
            DiskDevice::Disk => "disk",
            DiskDevice::Cdrom => "cdrom",
        };
        w.open("disk", &[("type", s(ty)), ("device", s(dev))]);
        let dr = &disk.driver;
        w.empty(
            "driver",
            &[
                ("name", s("qemu")),
                (
                    "type",
                    s(if dr.format == DiskFormat::Qcow2 {
                        "qcow2"
                    } else {
                        "raw"
                    }),
                ),
                ("cache", dr.cache.map(|c| c.as_str().to_owned())),
                ("io", dr.io.map(|c| c.as_str().to_owned())),
                ("discard", dr.discard.map(|c| c.as_str().to_owned())),
                ("iothread", dr.iothread.map(|c| c.to_string())),
            ],
        );
        match &disk.source {
            Some(DiskSource::File { path }) => w.empty("source", &[("file", s(path))]),
            Some(DiskSource::Block { dev }) => w.empty("source", &[("dev", s(dev))]),
            Some(DiskSource::Network(n)) => net_source(w, n),
            Some(DiskSource::Volume { pool, volume }) => {
                w.empty("source", &[("pool", s(pool)), ("volume", s(volume))])
            }
            None => {}
        }
        w.empty(
            "target",
            &[
                ("dev", s(&disk.target.dev)),
                ("bus", s(disk.target.bus.as_str())),
            ],
        );
        if disk.readonly {
            w.empty("readonly", &[]);
        }
        if disk.shareable {
            w.empty("shareable", &[]);
        }
        if let Some(ser) = &disk.serial {
            w.text("serial", &[], ser);
        }
        if let Some(t) = disk.iotune.as_ref().filter(|t| !t.is_unlimited()) {
            // libvirt's order: the rates, group_name, then the burst lengths.
            w.open("iotune", &[]);
            for (name, v) in t.fields() {
                if v != 0 {
                    w.text(name, &[], &v.to_string());
                }
                if name == "size_iops_sec" {
                    if let Some(g) = &t.group_name {
                        w.text("group_name", &[], g);
                    }
                }
            }
            w.close("iotune");
        }
        boot(w, disk.boot_order);
        address(w, &disk.address);
        w.close("disk");
    }
    for c in &d.controllers {
        let (ty, model) = match &c.kind {
            ControllerKind::PcieRoot => ("pci", Some("pcie-root")),
            ControllerKind::PcieRootPort { .. } => ("pci", Some("pcie-root-port")),
            ControllerKind::PciRoot => ("pci", Some("pci-root")),
            ControllerKind::Ide => ("ide", None),
            ControllerKind::Sata => ("sata", None),
            ControllerKind::VirtioScsi => ("scsi", Some("virtio-scsi")),
            ControllerKind::Usb { model, .. } => ("usb", Some(model.as_str())),
            ControllerKind::VirtioSerial => ("virtio-serial", None),
        };
        let ports = match c.kind {
            ControllerKind::Usb { ports, .. } => ports.map(|p| p.to_string()),
            _ => None,
        };
        let attrs = [
            ("type", s(ty)),
            ("index", s(c.index)),
            ("model", model.map(str::to_owned)),
            ("ports", ports),
        ];
        let target = match c.kind {
            ControllerKind::PcieRootPort { chassis, port, .. }
                if chassis.is_some() || port.is_some() =>
            {
                Some((chassis, port))
            }
            _ => None,
        };
        // Written only when it is not the default device, as libvirt's input would have it.
        let model_name = match c.kind {
            ControllerKind::PcieRootPort {
                model: m @ RootPortModel::Ioh3420,
                ..
            } => Some(m.as_str()),
            _ => None,
        };
        let master = match c.kind {
            ControllerKind::Usb {
                model: UsbModel::Ich9Uhci { startport, .. },
                ..
            } => startport,
            _ => None,
        };
        if target.is_none() && c.address.is_none() && model_name.is_none() && master.is_none() {
            w.empty("controller", &attrs);
            continue;
        }
        w.open("controller", &attrs);
        if let Some(m) = model_name {
            w.empty("model", &[("name", s(m))]);
        }
        if let Some(p) = master {
            w.empty("master", &[("startport", s(p))]);
        }
        if let Some((chassis, port)) = target {
            w.empty(
                "target",
                &[
                    ("chassis", chassis.map(|c| c.to_string())),
                    ("port", port.and_then(|p| hex(p.into(), 1))),
                ],
            );
        }
        address(w, &c.address);
        w.close("controller");
    }
    for f in &d.filesystems {
        filesystem(w, f);
    }
    for i in &d.interfaces {
        let (ty, src): (&str, Vec<(&str, Option<String>)>) = match &i.source {
            InterfaceSource::Bridge { bridge } => ("bridge", vec![("bridge", s(bridge))]),
            InterfaceSource::Network { network } => ("network", vec![("network", s(network))]),
            InterfaceSource::User => ("user", vec![]),
            InterfaceSource::Direct { dev, mode } => {
                ("direct", vec![("dev", s(dev)), ("mode", s(mode.as_str()))])
            }
            InterfaceSource::VhostUser { path, mode } => (
                "vhostuser",
                vec![
                    ("type", s("unix")),
                    ("path", s(path)),
                    (
                        "mode",
                        s(if *mode == SocketMode::Server {
                            "server"
                        } else {
                            "client"
                        }),
                    ),
                ],
            ),
        };
        w.open("interface", &[("type", s(ty))]);
        if let Some(m) = &i.mac {
            w.empty("mac", &[("address", s(m))]);
        }
        if !src.is_empty() {
            w.empty("source", &src);
        }
        w.empty("model", &[("type", s(i.model.as_str()))]);
        if let Some(dr) = &i.driver {
            w.empty(
                "driver",
                &[
                    ("name", dr.name.map(|n| n.as_str().to_owned())),
                    ("queues", dr.queues.map(|q| q.to_string())),
                    ("rx_queue_size", dr.rx_queue_size.map(|q| q.to_string())),
                    ("tx_queue_size", dr.tx_queue_size.map(|q| q.to_string())),
                ],
            );
        }
        if let Some(m) = i.mtu {
            w.empty("mtu", &[("size", s(m))]);
        }
        if let Some(dev) = &i.target_dev {
            w.empty("target", &[("dev", s(dev))]);
        }
        if let Some(id) = i.vlan {
            w.open("vlan", &[]);
            w.empty("tag", &[("id", s(id))]);
            w.close("vlan");
        }
        if i.link_down {
            w.empty("link", &[("state", s("down"))]);
        }
        boot(w, i.boot_order);
        address(w, &i.address);
        nic_qos(w, i);
        w.close("interface");
    }
    for ser in &d.serials {
        chardev_open(w, "serial", &ser.source);
        w.open(
            "target",
            &[("type", s("isa-serial")), ("port", s(ser.port))],
        );
        w.empty("model", &[("name", s("isa-serial"))]);
        w.close("target");
        w.close("serial");
    }
    for c in &d.consoles {
        chardev_open(w, "console", &c.source);
        let t = match c.target {
            ConsoleTarget::Serial => "serial",
            ConsoleTarget::Virtio => "virtio",
        };
        w.empty("target", &[("type", s(t)), ("port", s(c.port))]);
        w.close("console");
    }
    for c in &d.channels {
        if c.kind == ChannelKind::Spicevmc {
            w.open("channel", &[("type", s("spicevmc"))]);
            w.empty("target", &[("type", s("virtio")), ("name", s(&c.name))]);
            address(w, &c.address);
            w.close("channel");
            continue;
        }
        w.open("channel", &[("type", s("unix"))]);
        w.empty("source", &[("mode", s("bind")), ("path", c.path.clone())]);
        w.empty("target", &[("type", s("virtio")), ("name", s(&c.name))]);
        address(w, &c.address);
        w.close("channel");
    }
    for i in &d.inputs {
        let attrs = [("type", s(i.kind.as_str())), ("bus", s(i.bus.as_str()))];
        if i.address.is_none() {
            w.empty("input", &attrs);
        } else {
            w.open("input", &attrs);
            address(w, &i.address);
            w.close("input");
        }
    }
    if let Some(t) = &d.tpm {
        let m = match t.model {
            TpmModel::TpmCrb => "tpm-crb",
            TpmModel::TpmTis => "tpm-tis",
        };
        w.open("tpm", &[("model", s(m))]);
        w.empty("backend", &[("type", s("emulator")), ("version", s("2.0"))]);
        w.close("tpm");
    }
    if let Some(Graphics::Vnc {
        port,
        listen,
        keymap,
    }) = &d.graphics
    {
        let (p, auto) = match port {
            VncPort::Auto => ("-1".to_owned(), "yes"),
            VncPort::Fixed(p) => (p.to_string(), "no"),
            VncPort::Assigned(p) => (p.to_string(), "yes"),
        };
        let attrs = [
            ("type", s("vnc")),
            ("port", s(p)),
            ("autoport", s(auto)),
            ("listen", listen.clone()),
            ("keymap", keymap.clone()),
        ];
        match listen {
            Some(l) => {
                w.open("graphics", &attrs);
                w.empty("listen", &[("type", s("address")), ("address", s(l))]);
                w.close("graphics");
            }
            None => w.empty("graphics", &attrs),
        }
    }
    if let Some(Graphics::Spice {
        port,
        listen,
        image_compression,
        gl,
        options,
        keymap,
    }) = &d.graphics
    {
        spice::graphics(w, port, listen, *image_compression, *gl, options, keymap);
    }
    spice::sounds(w, d);
    for v in &d.videos {
        w.open("video", &[]);
        let opt = |v: Option<u32>| v.map(|v| v.to_string());
        let (ty, vram, ram, vgamem, heads) = match v.model {
            VideoModel::None => ("none", None, None, None, None),
            VideoModel::Virtio => ("virtio", None, None, None, None),
            VideoModel::Vga { vram_kib } => ("vga", vram_kib, None, None, None),
            VideoModel::Qxl {
                ram_kib,
                vram_kib,
                vgamem_kib,
                heads,
            } => ("qxl", vram_kib, ram_kib, vgamem_kib, heads),
            VideoModel::Cirrus { vram_kib } => ("cirrus", vram_kib, None, None, None),
        };
        w.empty(
            "model",
            &[
                ("type", s(ty)),
                ("ram", opt(ram)),
                ("vram", opt(vram)),
                ("vgamem", opt(vgamem)),
                ("heads", opt(heads)),
            ],
        );
        address(w, &v.address);
        w.close("video");
    }
    for h in &d.hostdevs {
        w.open(
            "hostdev",
            &[
                ("mode", s("subsystem")),
                ("type", s("pci")),
                ("managed", yes_no(h.managed)),
            ],
        );
        w.empty("driver", &[("name", s("vfio"))]);
        w.open("source", &[]);
        let a = h.source;
        w.empty(
            "address",
            &[
                ("domain", hex(a.domain.into(), 4)),
                ("bus", hex(a.bus.into(), 2)),
                ("slot", hex(a.slot.into(), 2)),
                ("function", hex(a.function.into(), 1)),
            ],
        );
        w.close("source");
        boot(w, h.boot_order);
        address(w, &h.address);
        w.close("hostdev");
    }
    spice::redirdevs(w, d);
    if let Some(wd) = &d.watchdog {
        let m = match wd.model {
            WatchdogModel::I6300esb => "i6300esb",
            WatchdogModel::Itco => "itco",
        };
        let attrs = [("model", s(m)), ("action", s(wd.action.as_str()))];
        if wd.address.is_none() {
            w.empty("watchdog", &attrs);
        } else {
            w.open("watchdog", &attrs);
            address(w, &wd.address);
            w.close("watchdog");
        }
    }
    if let Some(b) = &d.memballoon {
        let m = match b.model {
            MemballoonModel::Virtio => "virtio",
            MemballoonModel::None => "none",
        };
        if b.stats_period.is_none() && b.address.is_none() {
            w.empty("memballoon", &[("model", s(m))]);
        } else {
            w.open("memballoon", &[("model", s(m))]);
            if let Some(p) = b.stats_period {
                w.empty("stats", &[("period", s(p))]);
            }
            address(w, &b.address);
            w.close("memballoon");
        }
    }
    for r in &d.rngs {
        w.open("rng", &[("model", s("virtio"))]);
        w.text("backend", &[("model", s("random"))], &r.backend);
        address(w, &r.address);
        w.close("rng");
    }
    for m in &d.memory {
        w.open("memory", &[("model", s(m.model.as_str()))]);
        w.open("target", &[]);
        w.text("size", &[("unit", s("KiB"))], &m.size_kib.to_string());
        if let Some(n) = m.node {
            w.text("node", &[], &n.to_string());
        }
        if let Some(b) = m.block_kib {
            w.text("block", &[("unit", s("KiB"))], &b.to_string());
        }
        if let Some(r) = m.requested_kib {
            w.text("requested", &[("unit", s("KiB"))], &r.to_string());
        }
        w.close("target");
        if let Some(a) = &m.alias {
            w.empty("alias", &[("name", s(a))]);
        }
        address(w, &m.address);
        w.close("memory");
    }
    w.close("devices");
}

fn chardev_open(w: &mut W, name: &str, src: &CharSource) {
    match src {
        CharSource::Pty => w.open(name, &[("type", s("pty"))]),
        CharSource::Unix { path, mode } => {
            w.open(name, &[("type", s("unix"))]);
            let m = if *mode == SocketMode::Server {
                "bind"
            } else {
                "connect"
            };
            w.empty("source", &[("mode", s(m)), ("path", s(path))]);
        }
        CharSource::File { path } => {
            w.open(name, &[("type", s("file"))]);
            w.empty("source", &[("path", s(path))]);
        }
        CharSource::Null => w.open(name, &[("type", s("null"))]),
    }
}

fn net_source(w: &mut W, n: &NetSource) {
    w.open(
        "source",
        &[
            ("protocol", s(n.protocol.as_str())),
            ("name", n.name.clone()),
        ],
    );
    for h in &n.hosts {
        match h {
            NetHost::Tcp { name, port } => w.empty(
                "host",
                &[("name", s(name)), ("port", port.map(|p| p.to_string()))],
            ),
            NetHost::Unix { socket } => {
                w.empty("host", &[("transport", s("unix")), ("socket", s(socket))])
            }
        }
    }
    w.close("source");
}

fn filesystem(w: &mut W, f: &Filesystem) {
    w.open(
        "filesystem",
        &[
            ("type", s("mount")),
            ("accessmode", s(f.access_mode.as_str())),
        ],
    );
    w.empty("driver", &[("type", s(f.driver.as_str()))]);
    w.empty("source", &[("dir", s(&f.source))]);
    w.empty("target", &[("dir", s(&f.target))]);
    if f.readonly {
        w.empty("readonly", &[]);
    }
    address(w, &f.address);
    w.close("filesystem");
}

/// `<bandwidth>`, `<filterref>`, `<port>` of an interface (libvirt's order puts them after
/// the address; the reader takes any order).
fn nic_qos(w: &mut W, i: &Interface) {
    let s = |v: u64| Some(v.to_string());
    if let Some(b) = &i.bandwidth {
        w.open("bandwidth", &[]);
        for (name, r) in [("inbound", &b.inbound), ("outbound", &b.outbound)] {
            if let Some(r) = r {
                w.empty(
                    name,
                    &[
                        ("average", s(r.average)),
                        ("peak", r.peak.and_then(s)),
                        ("burst", r.burst.and_then(s)),
                    ],
                );
            }
        }
        w.close("bandwidth");
    }
    if let Some(f) = &i.filterref {
        let attrs = [("filter", Some(f.filter.as_str().to_owned()))];
        if f.ips.is_empty() {
            w.empty("filterref", &attrs);
        } else {
            w.open("filterref", &attrs);
            for ip in &f.ips {
                w.empty(
                    "parameter",
                    &[("name", Some("IP".into())), ("value", Some(ip.to_string()))],
                );
            }
            w.close("filterref");
        }
    }
    if i.port_isolated {
        w.empty("port", &[("isolated", Some("yes".into()))]);
    }
}
