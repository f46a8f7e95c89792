//! The argv builder. Deterministic: the same inputs always give the same vector, in the
//! order libvirt uses (machine, cpu, memory, smp, numa, firmware, devices).

use std::path::Path;

use super::devices::devices;
use super::memory::{needs_backend, ram_blocks, RamBlock};
use super::MonitorSocket;
use super::{Accel, ArgvError, CpuChoice, LaunchContext};
use crate::model::*;
use crate::validate::ValidatedDomain;

/// QEMU option values use ',' as separator; a literal comma is written twice.
pub(super) fn esc(s: &str) -> String {
    s.replace(',', ",,")
}

pub(super) fn path_str(p: &Path) -> Result<String, ArgvError> {
    p.to_str()
        .map(esc)
        .ok_or_else(|| ArgvError::NonUtf8Path(p.to_path_buf()))
}

pub(super) struct Args(pub(super) Vec<String>);

impl Args {
    pub(super) fn push(&mut self, opt: &str, val: impl Into<String>) {
        self.0.push(opt.to_owned());
        self.0.push(val.into());
    }
    pub(super) fn flag(&mut self, opt: &str) {
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
    // A volume names no file: the host layer puts the pool's file in its place first.
    if let Some(i) = d
        .devices
        .disks
        .iter()
        .position(|x| matches!(x.source, Some(crate::model::DiskSource::Volume { .. })))
    {
        return Err(ArgvError::UnresolvedVolume(i));
    }
    a.push("-uuid", uuid.to_string());
    a.flag("-no-user-config");
    a.flag("-nodefaults");
    if ctx.sandbox {
        a.push(
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        );
    }
    for set in &ctx.fd_sets {
        a.push(
            "-add-fd",
            format!("fd={},set={},opaque={}", set.fd, set.set, set.opaque),
        );
    }
    let monitor = match &ctx.monitor {
        MonitorSocket::Path(p) => format!("path={}", path_str(p)?),
        MonitorSocket::Fd(fd) => format!("fd={fd}"),
    };
    a.push(
        "-chardev",
        format!("socket,id=qmp,{monitor},server=on,wait=off"),
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
    firmware(&mut a, d, ctx)?;
    devices(&mut a, d, ctx)?;
    if d.os.is_i440fx() {
        // Device addresses are written for q35's root bus; i440fx calls its root `pci.0`.
        for arg in &mut a.0 {
            if arg.contains(",bus=pcie.0,") {
                *arg = arg.replace(",bus=pcie.0,", ",bus=pci.0,");
            }
        }
    }
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
    match f.ioapic {
        Some(IoapicDriver::Kvm) => m.push("kernel_irqchip=on".into()),
        Some(IoapicDriver::Qemu) => m.push("kernel_irqchip=split".into()),
        None => {}
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
    // SeaBIOS writes to the serial port only when QEMU says there are no graphics.
    if d.os.bios_serial {
        m.push("graphics=off".into());
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

pub(super) fn on_off(b: bool) -> &'static str {
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
        (CpuChoice::Model(m) | CpuChoice::HostModel { model: m, .. }, _) => {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ArgvError::BadCpuModel(m.clone()));
            }
            m.clone()
        }
        // A 32-bit guest gets a 32-bit CPU whichever emulator runs it (libvirt forces
        // qemu32 when qemu-system-x86_64 runs an i686 guest).
        (CpuChoice::AsConfigured, None | Some(CpuMode::Default))
            if d.os.arch == Some(Arch::I686) =>
        {
            "qemu32".into()
        }
        (CpuChoice::AsConfigured, None | Some(CpuMode::Default)) => "qemu64".into(),
        (CpuChoice::AsConfigured, Some(CpuMode::HostPassthrough)) => "host".into(),
        (CpuChoice::AsConfigured, Some(CpuMode::HostModel)) => {
            return Err(ArgvError::UnresolvedHostModel)
        }
        (CpuChoice::AsConfigured, Some(CpuMode::Custom { model })) => model.clone(),
    };
    let mut parts = vec![model];
    if let CpuChoice::HostModel { features, .. } = &ctx.cpu {
        // The host's features beyond the named model, as libvirt's host-model adds them.
        for f in features {
            if f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(ArgvError::BadCpuModel(f.clone()));
            }
            parts.push(format!("+{f}"));
        }
    }
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
            if t.name == TimerName::Hypervclock && t.present != Some(false) {
                parts.push("hv-time=on".into());
            }
        }
    }
    if let Some(h) = &d.features.hyperv {
        hyperv(&mut parts, h);
    }
    if d.features.kvm_hidden == Some(true) {
        parts.push("kvm=off".into());
    }
    if d.cpu.as_ref().and_then(|c| c.check) == Some(CpuCheck::Full) {
        // check='full': every asked feature or no start (libvirt's `enforce`).
        parts.push("enforce".into());
    }
    a.push("-cpu", parts.join(","));
    Ok(())
}

/// Hyper-V enlightenments as `-cpu` properties, in libvirt's order. Enlightenments are off by
/// default, so `state='off'` is written only where it overrides `hv-passthrough`.
fn hyperv(parts: &mut Vec<String>, h: &HyperV) {
    let pass = h.mode == HypervMode::Passthrough;
    if pass {
        parts.push("hv-passthrough=on".into());
    }
    let flag = |parts: &mut Vec<String>, name: &str, on: bool| {
        if on || pass {
            parts.push(format!("{name}={}", on_off(on)));
        }
    };
    let flags = |parts: &mut Vec<String>, fs: &[HypervFlag]| {
        for f in fs {
            if let Some(on) = h.flags.get(f) {
                flag(parts, f.qemu(), *on);
            }
        }
    };
    flags(parts, &[HypervFlag::Relaxed, HypervFlag::Vapic]);
    if let Some(sl) = h.spinlocks {
        // Validation requires retries with state='on'; off is QEMU's default.
        if let (true, Some(r)) = (sl.state, sl.retries) {
            parts.push(format!("hv-spinlocks=0x{r:x}"));
        }
    }
    flags(
        parts,
        &[HypervFlag::Vpindex, HypervFlag::Runtime, HypervFlag::Synic],
    );
    if let Some(st) = h.stimer {
        flag(parts, "hv-stimer", st.state);
        if let Some(direct) = st.direct {
            flag(parts, "hv-stimer-direct", direct);
        }
    }
    flags(parts, &[HypervFlag::Reset]);
    if let Some(VendorId {
        state: true,
        value: Some(v),
    }) = &h.vendor_id
    {
        parts.push(format!("hv-vendor-id={}", esc(v)));
    }
    flags(
        parts,
        &[
            HypervFlag::Frequencies,
            HypervFlag::Reenlightenment,
            HypervFlag::Tlbflush,
            HypervFlag::Ipi,
            HypervFlag::Evmcs,
            HypervFlag::Avic,
        ],
    );
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
        match &ctx.memory_dir {
            Some(dir) => o.push(format!("mem-path={}", path_str(&dir.join(id))?)),
            // A directory: QEMU creates and unlinks a file in it.
            None => o.push(format!("mem-path={}", path_str(&ctx.runtime_dir)?)),
        }
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
    // `<memory>` includes the memory devices (libvirt): they are plugged beside the boot RAM.
    let mut s = format!("size={}k", d.boot_memory_kib());
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
        // The ACPI power management device: PIIX4's on i440fx, the LPC bridge's on q35.
        let pmdev = if d.os.is_i440fx() {
            "PIIX4_PM"
        } else {
            "ICH9-LPC"
        };
        if let Some(v) = pm.suspend_to_mem {
            a.push("-global", format!("{pmdev}.disable_s3={}", u8::from(!v)));
        }
        if let Some(v) = pm.suspend_to_disk {
            a.push("-global", format!("{pmdev}.disable_s4={}", u8::from(!v)));
        }
    }
}

/// `menu=on|off[,splash-time=ms]` as libvirt writes for `<bootmenu>`.
fn boot_menu(b: &mut String, d: &DomainConfig) {
    if let Some(m) = &d.os.bootmenu {
        if !b.is_empty() {
            b.push(',');
        }
        b.push_str(if m.enable { "menu=on" } else { "menu=off" });
        if let Some(t) = m.timeout_ms {
            b.push_str(&format!(",splash-time={t}"));
        }
    }
}

fn firmware(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    if let Firmware::Uefi { loader, nvram } = &d.os.firmware {
        let ro = on_off(loader.readonly);
        a.push(
            "-blockdev",
            format!(
                "driver=file,filename={},node-name=pflash0-file,read-only={ro}",
                esc(ctx.host_path("os.firmware.loader.path", &loader.path))
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
                    esc(ctx.host_path("os.firmware.nvram.path", &n.path))
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
        a.push("-kernel", ctx.host_path("os.kernel.kernel", &k.kernel));
        if let Some(i) = &k.initrd {
            a.push("-initrd", ctx.host_path("os.kernel.initrd", i));
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
        let mut b = format!("order={order}");
        boot_menu(&mut b, d);
        a.push("-boot", b);
    } else {
        let mut b = String::new();
        boot_menu(&mut b, d);
        b.push_str(if b.is_empty() {
            "strict=on"
        } else {
            ",strict=on"
        });
        a.push("-boot", b);
    }
    Ok(())
}
