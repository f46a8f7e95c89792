//! The argv builder. Deterministic: the same inputs always give the same vector, in the
//! order libvirt uses (machine, cpu, memory, smp, numa, firmware, devices).

use std::path::Path;

use super::memory::{needs_backend, ram_blocks, RamBlock};
use super::{Accel, ArgvError, CpuChoice, LaunchContext};
use crate::model::*;
use crate::validate::ValidatedDomain;

/// QEMU option values use ',' as separator; a literal comma is written twice.
fn esc(s: &str) -> String {
    s.replace(',', ",,")
}

fn path_str(p: &Path) -> Result<String, ArgvError> {
    p.to_str()
        .map(esc)
        .ok_or_else(|| ArgvError::NonUtf8Path(p.to_path_buf()))
}

struct Args(Vec<String>);

impl Args {
    fn push(&mut self, opt: &str, val: impl Into<String>) {
        self.0.push(opt.to_owned());
        self.0.push(val.into());
    }
    fn flag(&mut self, opt: &str) {
        self.0.push(opt.to_owned());
    }
}

/// Build the QEMU argv (element 0 is the emulator) for a validated domain.
pub fn build_argv(vd: &ValidatedDomain, ctx: &LaunchContext) -> Result<Vec<String>, ArgvError> {
    let d = vd.config();
    let mut a = Args(Vec::with_capacity(128));
    a.0.push(path_str(&ctx.emulator)?);
    a.push("-name", format!("guest={},debug-threads=on", d.name));
    a.flag("-S");
    // The daemon decides what a guest power-off means (quit, or reset for a reboot), so QEMU
    // stops and waits instead of exiting; as libvirt runs it.
    a.flag("-no-shutdown");
    let uuid = d.uuid.ok_or(ArgvError::MissingUuid)?;
    a.push("-uuid", uuid.to_string());
    a.flag("-no-user-config");
    a.flag("-nodefaults");
    if ctx.sandbox {
        a.push(
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        );
    }
    a.push(
        "-chardev",
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            path_str(&ctx.qmp_socket)?
        ),
    );
    a.push("-mon", "chardev=qmp,mode=control");
    machine(&mut a, d);
    a.push(
        "-accel",
        match ctx.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
    );
    cpu(&mut a, d, ctx)?;
    memory(&mut a, d, ctx)?;
    smp(&mut a, d);
    for i in 1..=d.iothreads.unwrap_or(0) {
        a.push("-object", format!("iothread,id=iothread{i}"));
    }
    numa(&mut a, d);
    clock_and_power(&mut a, d);
    firmware(&mut a, d)?;
    devices(&mut a, d, ctx)?;
    Ok(a.0)
}

fn machine(a: &mut Args, d: &DomainConfig) {
    let f = &d.features;
    let mut m = vec![
        d.os.machine.clone().unwrap_or_else(|| "q35".into()),
        "usb=off".into(),
    ];
    m.push(format!("acpi={}", if f.acpi { "on" } else { "off" }));
    if let Some(s) = f.smm {
        m.push(format!("smm={}", on_off(s)));
    }
    if let Some(v) = f.vmport {
        m.push(format!("vmport={}", on_off(v)));
    }
    let timer = |n| {
        d.clock
            .as_ref()
            .and_then(|c| c.timers.iter().find(|t| t.name == n))
    };
    if let Some(p) = timer(TimerName::Hpet).and_then(|t| t.present) {
        m.push(format!("hpet={}", on_off(p)));
    }
    if timer(TimerName::Pit).and_then(|t| t.present) == Some(false) {
        m.push("pit=off".into());
    }
    if d.memory_backing.as_ref().is_some_and(|b| b.nosharepages) {
        m.push("mem-merge=off".into());
    }
    if let Firmware::Uefi { nvram, .. } = &d.os.firmware {
        m.push("pflash0=pflash0-fmt".into());
        if nvram.is_some() {
            m.push("pflash1=pflash1-fmt".into());
        }
    }
    if numa_cells(d).is_empty() && needs_backend(d) {
        m.push("memory-backend=pc.ram".into());
    }
    a.push("-machine", m.join(","));
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn numa_cells(d: &DomainConfig) -> &[NumaCell] {
    d.cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or_default()
}

fn cpu(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let model = match (&ctx.cpu, d.cpu.as_ref().map(|c| &c.mode)) {
        (CpuChoice::Model(m), _) => {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ArgvError::BadCpuModel(m.clone()));
            }
            m.clone()
        }
        (CpuChoice::AsConfigured, None) => "qemu64".into(),
        (CpuChoice::AsConfigured, Some(CpuMode::HostPassthrough)) => "host".into(),
        (CpuChoice::AsConfigured, Some(CpuMode::HostModel)) => {
            return Err(ArgvError::UnresolvedHostModel)
        }
        (CpuChoice::AsConfigured, Some(CpuMode::Custom { model })) => model.clone(),
    };
    let mut parts = vec![model];
    if let Some(c) = &d.cpu {
        for f in &c.features {
            parts.push(format!(
                "{}{}",
                if f.policy.enables() { '+' } else { '-' },
                f.name
            ));
        }
    }
    if let Some(c) = &d.clock {
        for t in &c.timers {
            if t.name == TimerName::Kvmclock && t.present == Some(false) {
                parts.push("-kvmclock".into());
            }
        }
    }
    a.push("-cpu", parts.join(","));
    Ok(())
}

fn policy(d: &DomainConfig, cell: Option<usize>) -> Option<String> {
    let nt = d.numatune.as_ref()?;
    let node = cell.and_then(|c| {
        nt.memnodes
            .iter()
            .find(|m| usize::try_from(m.cellid).ok() == Some(c))
    });
    let (mode, nodeset) = match (node, &nt.memory) {
        (Some(m), _) => (m.mode, &m.nodeset),
        (None, Some(m)) => (m.mode, &m.nodeset),
        (None, None) => return None,
    };
    let pol = match mode {
        NumaMode::Strict => "bind",
        NumaMode::Preferred => "preferred",
        NumaMode::Interleave => "interleave",
        // Restrictive is enforced through the cpuset cgroup by the host layer, not mbind.
        NumaMode::Restrictive => return None,
    };
    let mut s: Vec<String> = nodeset
        .ranges()
        .into_iter()
        .map(|(lo, hi)| {
            if lo == hi {
                format!("host-nodes={lo}")
            } else {
                format!("host-nodes={lo}-{hi}")
            }
        })
        .collect();
    s.push(format!("policy={pol}"));
    Some(s.join(","))
}

fn backend(
    d: &DomainConfig,
    blk: &RamBlock,
    id: &str,
    ctx: &LaunchContext,
) -> Result<String, ArgvError> {
    let mb = d.memory_backing.as_ref();
    let source = mb.and_then(|b| b.source);
    let mut o = Vec::new();
    let kind = if blk.hugepages.is_some() || source == Some(MemorySource::Memfd) {
        "memory-backend-memfd"
    } else if source == Some(MemorySource::File) {
        "memory-backend-file"
    } else if blk.access == Some(MemoryAccess::Shared) {
        // Shared RAM must be fd-backed for another process (vhost-user) to map it.
        "memory-backend-memfd"
    } else {
        "memory-backend-ram"
    };
    o.push(format!("{kind},id={id}"));
    if kind == "memory-backend-file" {
        // A directory: QEMU creates and unlinks a file in it.
        o.push(format!("mem-path={}", path_str(&ctx.runtime_dir)?));
    }
    if let Some(h) = blk.hugepages {
        o.push("hugetlb=on".into());
        if let Some(size) = h {
            o.push(format!("hugetlbsize={}", size.saturating_mul(1024)));
        }
    }
    if let Some(acc) = blk.access {
        o.push(format!("share={}", on_off(acc == MemoryAccess::Shared)));
    }
    if mb.is_some_and(|b| b.allocation == Some(MemoryAllocation::Immediate)) {
        o.push("prealloc=on".into());
    }
    o.push(format!("size={}", blk.kib.saturating_mul(1024)));
    if let Some(p) = policy(d, blk.cell) {
        o.push(p);
    }
    Ok(o.join(","))
}

fn memory(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let m = &d.memory;
    let mut s = format!("size={}k", m.memory_kib);
    if let Some(x) = &m.max {
        s.push_str(&format!(",slots={},maxmem={}k", x.slots, x.size_kib));
    }
    a.push("-m", s);
    if d.memory_backing.as_ref().is_some_and(|b| b.locked) {
        a.push("-overcommit", "mem-lock=on");
    }
    let blocks = ram_blocks(d);
    if numa_cells(d).is_empty() {
        if needs_backend(d) {
            if let Some(blk) = blocks.first() {
                a.push("-object", backend(d, blk, "pc.ram", ctx)?);
            }
        }
    } else {
        for blk in &blocks {
            let id = format!("ram-node{}", blk.cell.unwrap_or(0));
            a.push("-object", backend(d, blk, &id, ctx)?);
        }
    }
    Ok(())
}

fn smp(a: &mut Args, d: &DomainConfig) {
    let max = d.vcpu.count;
    let cur = d.vcpu.current.unwrap_or(max);
    let (s, di, c, t) = match d.cpu.as_ref().and_then(|c| c.topology) {
        Some(t) => (t.sockets, t.dies.unwrap_or(1), t.cores, t.threads),
        None => (max, 1, 1, 1),
    };
    a.push(
        "-smp",
        format!("cpus={cur},maxcpus={max},sockets={s},dies={di},cores={c},threads={t}"),
    );
}

fn numa(a: &mut Args, d: &DomainConfig) {
    for (i, cell) in numa_cells(d).iter().enumerate() {
        let mut s = format!("node,nodeid={}", cell.id);
        for (lo, hi) in cell.cpus.ranges() {
            if lo == hi {
                s.push_str(&format!(",cpus={lo}"));
            } else {
                s.push_str(&format!(",cpus={lo}-{hi}"));
            }
        }
        s.push_str(&format!(",memdev=ram-node{i}"));
        a.push("-numa", s);
    }
    for cell in numa_cells(d) {
        for dist in &cell.distances {
            a.push(
                "-numa",
                format!("dist,src={},dst={},val={}", cell.id, dist.id, dist.value),
            );
        }
    }
}

fn clock_and_power(a: &mut Args, d: &DomainConfig) {
    if let Some(c) = &d.clock {
        let mut rtc = format!("base={}", c.offset.as_str());
        for t in &c.timers {
            match (t.name, t.tickpolicy) {
                (TimerName::Rtc, Some(TickPolicy::Catchup)) => rtc.push_str(",driftfix=slew"),
                (TimerName::Pit, Some(p)) => a.push(
                    "-global",
                    format!("kvm-pit.lost_tick_policy={}", p.as_str()),
                ),
                _ => {}
            }
        }
        a.push("-rtc", rtc);
    }
    if d.on_reboot == Some(LifecycleAction::Destroy) {
        a.flag("-no-reboot");
    }
    if let Some(pm) = &d.pm {
        if let Some(v) = pm.suspend_to_mem {
            a.push("-global", format!("ICH9-LPC.disable_s3={}", u8::from(!v)));
        }
        if let Some(v) = pm.suspend_to_disk {
            a.push("-global", format!("ICH9-LPC.disable_s4={}", u8::from(!v)));
        }
    }
}

fn firmware(a: &mut Args, d: &DomainConfig) -> Result<(), ArgvError> {
    if let Firmware::Uefi { loader, nvram } = &d.os.firmware {
        let ro = on_off(loader.readonly);
        a.push(
            "-blockdev",
            format!(
                "driver=file,filename={},node-name=pflash0-file,read-only={ro}",
                esc(&loader.path)
            ),
        );
        a.push(
            "-blockdev",
            format!("driver=raw,file=pflash0-file,node-name=pflash0-fmt,read-only={ro}"),
        );
        if let Some(n) = nvram {
            a.push(
                "-blockdev",
                format!(
                    "driver=file,filename={},node-name=pflash1-file",
                    esc(&n.path)
                ),
            );
            a.push(
                "-blockdev",
                "driver=raw,file=pflash1-file,node-name=pflash1-fmt",
            );
        }
        if loader.secure {
            a.push("-global", "driver=cfi.pflash01,property=secure,value=on");
        }
    }
    if let Some(k) = &d.os.kernel {
        a.push("-kernel", k.kernel.clone());
        if let Some(i) = &k.initrd {
            a.push("-initrd", i.clone());
        }
        if let Some(c) = &k.cmdline {
            a.push("-append", c.clone());
        }
    }
    if !d.os.boot.is_empty() {
        let order: String =
            d.os.boot
                .iter()
                .map(|b| match b {
                    BootDevice::Hd => 'c',
                    BootDevice::Cdrom => 'd',
                    BootDevice::Network => 'n',
                    BootDevice::Fd => 'a',
                })
                .collect();
        a.push("-boot", format!("order={order}"));
    } else {
        a.push("-boot", "strict=on");
    }
    Ok(())
}

/// `bus=...,addr=...` for a guest PCI address; empty lets QEMU pick a slot on pcie.0.
fn pci(addr: &Option<Address>) -> String {
    match addr {
        Some(Address::Pci {
            bus,
            slot,
            function,
            multifunction,
            ..
        }) => {
            let bus = if *bus == 0 {
                "pcie.0".to_owned()
            } else {
                format!("pci.{bus}")
            };
            let mut s = format!(",bus={bus},addr={slot:#x}");
            if *function != 0 {
                s.push_str(&format!(".{function:#x}"));
            }
            if *multifunction == Some(true) {
                s.push_str(",multifunction=on");
            }
            s
        }
        _ => String::new(),
    }
}

/// Unit number libvirt derives from the target name: sda -> 0, sdz -> 25, sdaa -> 26.
fn disk_index(dev: &str) -> u32 {
    dev.get(2..)
        .unwrap_or("")
        .bytes()
        .fold(0u32, |acc, b| {
            acc.saturating_mul(26)
                .saturating_add(u32::from(b.saturating_sub(b'a')) + 1)
        })
        .saturating_sub(1)
        .min(u32::from(u16::MAX))
}

fn devices(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let dv = &d.devices;
    controllers(a, dv);
    disks(a, d);
    for h in dv.hostdevs.iter().enumerate() {
        let (i, h) = h;
        let mut s = format!("vfio-pci,host={},id=hostdev{i}", h.source);
        if let Some(b) = h.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        s.push_str(&pci(&h.address));
        a.push("-device", s);
    }
    interfaces(a, d, ctx)?;
    chardevs(a, dv, ctx)?;
    for (i, inp) in dv.inputs.iter().enumerate() {
        let dev = match (inp.bus, inp.kind) {
            // PS/2 keyboard and mouse are part of the q35 board (i8042).
            (InputBus::Ps2, _) => continue,
            (InputBus::Usb, InputKind::Tablet) => "usb-tablet",
            (InputBus::Usb, InputKind::Mouse) => "usb-mouse",
            (InputBus::Usb, InputKind::Keyboard) => "usb-kbd",
            (InputBus::Virtio, InputKind::Tablet) => "virtio-tablet-pci",
            (InputBus::Virtio, InputKind::Mouse) => "virtio-mouse-pci",
            (InputBus::Virtio, InputKind::Keyboard) => "virtio-keyboard-pci",
        };
        let mut s = format!("{dev},id=input{i}");
        match inp.address {
            Some(Address::Usb { port, .. }) => s.push_str(&format!(",bus=usb.0,port={port}")),
            _ if inp.bus == InputBus::Usb => s.push_str(",bus=usb.0"),
            _ => s.push_str(&pci(&inp.address)),
        }
        a.push("-device", s);
    }
    if let Some(t) = &dv.tpm {
        let sock = ctx
            .swtpm_socket
            .as_deref()
            .ok_or(ArgvError::MissingSwtpmSocket)?;
        a.push(
            "-chardev",
            format!("socket,id=chrtpm,path={}", path_str(sock)?),
        );
        a.push("-tpmdev", "emulator,id=tpm-tpm0,chardev=chrtpm");
        let m = match t.model {
            TpmModel::TpmCrb => "tpm-crb",
            TpmModel::TpmTis => "tpm-tis",
        };
        a.push("-device", format!("{m},tpmdev=tpm-tpm0,id=tpm0"));
    }
    a.push("-display", "none");
    if let Some(Graphics::Vnc { port, listen }) = &dv.graphics {
        let display = match port {
            VncPort::Fixed(p) => p.saturating_sub(5900),
            VncPort::Auto => ctx.vnc_display.ok_or(ArgvError::MissingVncDisplay)?,
        };
        let host = match listen.as_deref() {
            None => "127.0.0.1".to_owned(),
            Some(l) if l.contains(':') => format!("[{l}]"),
            Some(l) => l.to_owned(),
        };
        a.push("-vnc", format!("{host}:{display}"));
    }
    for (i, v) in dv.videos.iter().enumerate() {
        let dev = match v.model {
            VideoModel::None => continue,
            VideoModel::Virtio => format!("virtio-vga,id=video{i}"),
            VideoModel::Vga { vram_kib: Some(k) } => {
                format!("VGA,id=video{i},vgamem_mb={}", (k / 1024).max(1))
            }
            VideoModel::Vga { vram_kib: None } => format!("VGA,id=video{i}"),
        };
        a.push("-device", format!("{dev}{}", pci(&v.address)));
    }
    if let Some(w) = &dv.watchdog {
        match w.model {
            WatchdogModel::I6300esb => a.push(
                "-device",
                format!("i6300esb,id=watchdog0{}", pci(&w.address)),
            ),
            // iTCO is built into ICH9; it only needs to be allowed to reset the machine.
            WatchdogModel::Itco => a.push("-global", "ICH9-LPC.noreboot=off"),
        }
        a.push("-action", format!("watchdog={}", w.action.as_str()));
    }
    if let Some(b) = &dv.memballoon {
        if b.model == MemballoonModel::Virtio {
            a.push(
                "-device",
                format!("virtio-balloon-pci,id=balloon0{}", pci(&b.address)),
            );
        }
    }
    for (i, r) in dv.rngs.iter().enumerate() {
        a.push(
            "-object",
            format!("rng-random,id=objrng{i},filename={}", esc(&r.backend)),
        );
        a.push(
            "-device",
            format!("virtio-rng-pci,rng=objrng{i},id=rng{i}{}", pci(&r.address)),
        );
    }
    Ok(())
}

fn controllers(a: &mut Args, dv: &Devices) {
    // Root ports first, by index: other devices (even controllers) may sit behind them.
    let mut ordered: Vec<&Controller> = dv.controllers.iter().collect();
    ordered.sort_by_key(|c| {
        (
            !matches!(c.kind, ControllerKind::PcieRootPort { .. }),
            c.index,
        )
    });
    for c in ordered {
        let s = match c.kind {
            ControllerKind::PcieRoot
            | ControllerKind::Sata
            | ControllerKind::Usb {
                model: UsbModel::None,
                ..
            } => continue,
            ControllerKind::PcieRootPort { chassis, port } => {
                let mut s = "pcie-root-port".to_owned();
                if let Some(p) = port {
                    s.push_str(&format!(",port={p:#x}"));
                }
                s.push_str(&format!(
                    ",chassis={},id=pci.{}",
                    chassis.map_or(c.index, u32::from),
                    c.index
                ));
                s
            }
            ControllerKind::VirtioScsi => format!("virtio-scsi-pci,id=scsi{}", c.index),
            ControllerKind::Usb { ports, .. } => match ports {
                Some(p) => format!("qemu-xhci,p2={p},p3={p},id=usb"),
                None => "qemu-xhci,id=usb".to_owned(),
            },
            ControllerKind::VirtioSerial => {
                format!("virtio-serial-pci,id=virtio-serial{}", c.index)
            }
        };
        a.push("-device", format!("{s}{}", pci(&c.address)));
    }
    // libvirt adds these implicitly when a device needs them; so do we.
    let has = |k: &ControllerKind| dv.controllers.iter().any(|c| &c.kind == k && c.index == 0);
    if dv.disks.iter().any(|x| x.target.bus == DiskBus::Scsi) && !has(&ControllerKind::VirtioScsi) {
        a.push("-device", "virtio-scsi-pci,id=scsi0");
    }
    let wants_serial = !dv.channels.is_empty()
        || dv
            .consoles
            .iter()
            .any(|c| c.target == ConsoleTarget::Virtio);
    if wants_serial && !has(&ControllerKind::VirtioSerial) {
        a.push("-device", "virtio-serial-pci,id=virtio-serial0");
    }
}

fn disks(a: &mut Args, d: &DomainConfig) {
    for (i, disk) in d.devices.disks.iter().enumerate() {
        let node = format!("disk{i}");
        let dr = &disk.driver;
        let ro = disk.readonly || disk.device == DiskDevice::Cdrom;
        let (direct, no_flush, write_cache) = match dr.cache {
            None | Some(DiskCache::Writeback) => (false, false, true),
            Some(DiskCache::None) => (true, false, true),
            Some(DiskCache::Writethrough) => (false, false, false),
            Some(DiskCache::Directsync) => (true, false, false),
            Some(DiskCache::Unsafe) => (false, true, true),
        };
        let common = |s: &mut String| {
            s.push_str(&format!(
                ",cache.direct={},cache.no-flush={}",
                on_off(direct),
                on_off(no_flush)
            ));
            if ro {
                s.push_str(",read-only=on");
            }
            if dr.discard == Some(DiskDiscard::Unmap) {
                s.push_str(",discard=unmap");
            }
        };
        let has_media = if let Some(src) = &disk.source {
            let (drv, path) = match src {
                DiskSource::File { path } => ("file", path),
                DiskSource::Block { dev } => ("host_device", dev),
            };
            let mut s = format!(
                "driver={drv},filename={},node-name={node}-storage",
                esc(path)
            );
            if let Some(io) = dr.io {
                s.push_str(&format!(",aio={}", io.as_str()));
            }
            common(&mut s);
            a.push("-blockdev", s);
            let fmt = match dr.format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            };
            let mut s = format!("driver={fmt},file={node}-storage,node-name={node}");
            common(&mut s);
            a.push("-blockdev", s);
            true
        } else {
            false
        };
        let cd = disk.device == DiskDevice::Cdrom;
        let mut s = match disk.target.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,id=virtio-{}", disk.target.dev),
            DiskBus::Sata => {
                let unit = match disk.address {
                    Some(Address::Drive { unit, .. }) => u32::from(unit),
                    _ => disk_index(&disk.target.dev),
                };
                format!(
                    "{},bus=ide.{unit},id=sata0-0-{unit}",
                    if cd { "ide-cd" } else { "ide-hd" }
                )
            }
            DiskBus::Scsi => {
                let (ctl, target, unit) = match disk.address {
                    Some(Address::Drive {
                        controller,
                        target,
                        unit,
                        ..
                    }) => (controller, target, u32::from(unit)),
                    _ => (0, 0, disk_index(&disk.target.dev)),
                };
                format!(
                    "{},bus=scsi{ctl}.0,channel=0,scsi-id={target},lun={unit},id=scsi{ctl}-0-{target}-{unit}",
                    if cd { "scsi-cd" } else { "scsi-hd" }
                )
            }
        };
        if has_media {
            s.push_str(&format!(",drive={node}"));
        }
        if !cd {
            s.push_str(&format!(",write-cache={}", on_off(write_cache)));
        }
        if disk.shareable {
            s.push_str(",share-rw=on");
        }
        if let Some(ser) = &disk.serial {
            s.push_str(&format!(",serial={ser}"));
        }
        if let Some(t) = dr.iothread {
            s.push_str(&format!(",iothread=iothread{t}"));
        }
        if let Some(b) = disk.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        if disk.target.bus == DiskBus::Virtio {
            s.push_str(&pci(&disk.address));
        }
        a.push("-device", s);
    }
}

fn interfaces(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    for (i, nic) in d.devices.interfaces.iter().enumerate() {
        let mac = nic.mac.ok_or(ArgvError::MissingMac(i))?;
        let virtio = nic.model == NicModel::Virtio;
        match &nic.source {
            InterfaceSource::User => a.push("-netdev", format!("user,id=hostnet{i}")),
            InterfaceSource::VhostUser { path, mode } => {
                let server = if *mode == SocketMode::Server {
                    ",server=on,wait=off"
                } else {
                    ""
                };
                a.push(
                    "-chardev",
                    format!("socket,id=charnet{i},path={}{server}", esc(path)),
                );
                a.push(
                    "-netdev",
                    format!("vhost-user,chardev=charnet{i},id=hostnet{i}"),
                );
            }
            InterfaceSource::Bridge { .. }
            | InterfaceSource::Network { .. }
            | InterfaceSource::Direct { .. } => {
                let fd = ctx.net_fds.get(&i).ok_or(ArgvError::MissingTapFd(i))?;
                let mut s = format!("tap,fd={},id=hostnet{i}", fd.tap);
                if let (true, Some(v)) = (virtio, fd.vhost) {
                    s.push_str(&format!(",vhost=on,vhostfd={v}"));
                }
                a.push("-netdev", s);
            }
        }
        let model = match nic.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
        };
        let mut s = format!("{model},netdev=hostnet{i},id=net{i},mac={mac}");
        if let (true, Some(m)) = (virtio, nic.mtu) {
            s.push_str(&format!(",host_mtu={m}"));
        }
        if let Some(b) = nic.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        s.push_str(&pci(&nic.address));
        a.push("-device", s);
    }
    Ok(())
}

fn chardev(id: &str, src: &CharSource, log: Option<&str>) -> Result<String, ArgvError> {
    let mut s = match src {
        CharSource::Pty => format!("pty,id={id}"),
        CharSource::Unix { path, mode } => {
            let server = if *mode == SocketMode::Server {
                ",server=on,wait=off"
            } else {
                ""
            };
            format!("socket,id={id},path={}{server}", esc(path))
        }
        CharSource::File { path } => format!("file,id={id},path={}", esc(path)),
    };
    if let Some(l) = log {
        s.push_str(&format!(",logfile={l},logappend=on"));
    }
    Ok(s)
}

fn chardevs(a: &mut Args, dv: &Devices, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let log = ctx.serial_log.as_deref().map(path_str).transpose()?;
    let mut serials: Vec<(u32, &CharSource)> =
        dv.serials.iter().map(|s| (s.port, &s.source)).collect();
    // A serial-target console without a matching <serial> creates that serial port.
    for c in &dv.consoles {
        if c.target == ConsoleTarget::Serial && !serials.iter().any(|(p, _)| *p == c.port) {
            serials.push((c.port, &c.source));
        }
    }
    for (port, src) in serials {
        a.push(
            "-chardev",
            chardev(&format!("charserial{port}"), src, log.as_deref())?,
        );
        a.push(
            "-device",
            format!("isa-serial,chardev=charserial{port},id=serial{port},index={port}"),
        );
    }
    for (i, c) in dv.consoles.iter().enumerate() {
        if c.target == ConsoleTarget::Virtio {
            a.push(
                "-chardev",
                chardev(&format!("charconsole{i}"), &c.source, log.as_deref())?,
            );
            a.push(
                "-device",
                format!("virtconsole,bus=virtio-serial0.0,chardev=charconsole{i},id=console{i}"),
            );
        }
    }
    for (i, ch) in dv.channels.iter().enumerate() {
        let path = match &ch.path {
            Some(p) => esc(p),
            None => format!("{}/{}.sock", path_str(&ctx.runtime_dir)?, ch.name),
        };
        a.push(
            "-chardev",
            format!("socket,id=charchannel{i},path={path},server=on,wait=off"),
        );
        let (ctl, port) = match ch.address {
            Some(Address::VirtioSerial {
                controller, port, ..
            }) => (controller, format!(",nr={port}")),
            _ => (0, String::new()),
        };
        a.push(
            "-device",
            format!(
                "virtserialport,bus=virtio-serial{ctl}.0{port},chardev=charchannel{i},id=channel{i},name={}",
                ch.name
            ),
        );
    }
    Ok(())
}
