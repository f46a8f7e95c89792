//! Semantic validation. `validate` consumes a `DomainConfig` and returns a `ValidatedDomain`,
//! the only input the argv builder and `Driver::define` accept, so nothing unchecked can
//! reach QEMU. All problems are collected, each with the field path it concerns.
//!
//! Host-dependent checks (does host node 1 exist, are 1G pages reserved) are the host
//! layer's job; the model exposes the ids and sizes it needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::*;

/// Guest RAM ceiling: 16 TiB (QEMU x86 limits are near; bounds arithmetic on input).
pub const MAX_MEMORY_KIB: u64 = 1 << 34;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_NUMA_CELLS: usize = 64;
pub const MAX_IOTHREADS: u32 = 64;
const MAX_TEXT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("contains '{found}'; allowed: {allowed}")]
    BadChar { found: char, allowed: &'static str },
    #[error("must not start with '.' (names become file names)")]
    LeadingDot,
    #[error("value {value} is outside {min}..={max}")]
    OutOfRange { value: i128, min: i128, max: i128 },
    #[error("duplicate {0}")]
    Duplicate(String),
    #[error("refers to {0}, which does not exist")]
    DanglingReference(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("must be an absolute path without control characters or surrounding whitespace")]
    BadPath,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ValidationError {
    /// Field path in the JSON model, e.g. `devices.disks[1].target.dev`.
    pub path: String,
    pub problem: Problem,
}

/// At least one `ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

/// A `DomainConfig` that passed `validate`. Read-only by construction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidatedDomain(DomainConfig);

impl ValidatedDomain {
    pub fn config(&self) -> &DomainConfig {
        &self.0
    }
    pub fn into_inner(self) -> DomainConfig {
        self.0
    }
}

impl std::ops::Deref for ValidatedDomain {
    type Target = DomainConfig;
    fn deref(&self) -> &DomainConfig {
        &self.0
    }
}

struct V {
    errs: Vec<ValidationError>,
}

impl V {
    fn err(&mut self, path: impl Into<String>, problem: Problem) {
        self.errs.push(ValidationError {
            path: path.into(),
            problem,
        });
    }
    fn range(
        &mut self,
        path: impl Into<String>,
        value: impl Into<i128>,
        min: impl Into<i128>,
        max: impl Into<i128>,
    ) {
        let (value, min, max) = (value.into(), min.into(), max.into());
        if value < min || value > max {
            self.err(path, Problem::OutOfRange { value, min, max });
        }
    }
    fn path(&mut self, path: impl Into<String>, p: &str) {
        let ok = p.starts_with('/')
            && p.len() <= 4096
            && !p.chars().any(char::is_control)
            && p.trim_end() == p;
        if !ok {
            self.err(path, Problem::BadPath);
        }
    }
    /// A token that ends up inside a QEMU option or a host interface name.
    fn token(
        &mut self,
        path: impl Into<String>,
        s: &str,
        max: usize,
        allowed: &'static str,
        ok: fn(char) -> bool,
    ) {
        let path = path.into();
        if s.is_empty() {
            self.err(path, Problem::Empty);
        } else if s.len() > max {
            self.err(path, Problem::TooLong { max });
        } else if let Some(c) = s.chars().find(|c| !ok(*c)) {
            self.err(path, Problem::BadChar { found: c, allowed });
        }
    }
    fn text(&mut self, path: impl Into<String>, s: &str, multiline: bool) {
        let path = path.into();
        if s.len() > MAX_TEXT {
            self.err(path, Problem::TooLong { max: MAX_TEXT });
        } else if let Some(c) = s
            .chars()
            .find(|c| c.is_control() && !(multiline && (*c == '\n' || *c == '\t')))
        {
            self.err(
                path,
                Problem::BadChar {
                    found: c,
                    allowed: "printable text",
                },
            );
        }
    }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

pub fn validate(d: DomainConfig) -> Result<ValidatedDomain, ValidationErrors> {
    let mut v = V { errs: Vec::new() };
    check(&mut v, &d);
    if v.errs.is_empty() {
        Ok(ValidatedDomain(d))
    } else {
        Err(ValidationErrors(v.errs))
    }
}

fn check(v: &mut V, d: &DomainConfig) {
    name(v, &d.name);
    if d.uuid.is_some_and(|u| u.is_nil()) {
        v.err(
            "uuid",
            Problem::Inconsistent("the nil UUID is not allowed".into()),
        );
    }
    if let Some(t) = &d.title {
        v.text("title", t, false);
    }
    if let Some(t) = &d.description {
        v.text("description", t, true);
    }
    if let Some(m) = &d.metadata {
        if m.len() > MAX_TEXT {
            v.err("metadata", Problem::TooLong { max: MAX_TEXT });
        } else if let Err(e) = crate::xml::tree::check_fragment(m, 1) {
            v.err(
                "metadata",
                Problem::Inconsistent(format!("not well-formed XML: {e}")),
            );
        }
    }
    memory(v, d);
    vcpu(v, d);
    cpu(v, d);
    cputune(v, d);
    numatune(v, d);
    memory_backing(v, d);
    os(v, d);
    clock(v, d);
    if d.on_poweroff == Some(LifecycleAction::Preserve) {
        v.err(
            "on_poweroff",
            Problem::Unsupported("'preserve' on poweroff".into()),
        );
    }
    devices(v, d);
}

fn name(v: &mut V, n: &str) {
    v.token(
        "name",
        n,
        MAX_NAME_LEN,
        "ASCII letters, digits, '_', '-', '.', '+'",
        |c| ident_char(c) || c == '+',
    );
    if n.starts_with('.') {
        v.err("name", Problem::LeadingDot);
    }
}

fn memory(v: &mut V, d: &DomainConfig) {
    let m = &d.memory;
    v.range("memory.memory_kib", m.memory_kib, 1024, MAX_MEMORY_KIB);
    if let Some(c) = m.current_kib {
        v.range("memory.current_kib", c, 1024, m.memory_kib);
    }
    if let Some(x) = &m.max {
        v.range(
            "memory.max.size_kib",
            x.size_kib,
            m.memory_kib,
            MAX_MEMORY_KIB,
        );
        v.range("memory.max.slots", x.slots, 1, 255);
    }
}

fn vcpu(v: &mut V, d: &DomainConfig) {
    let c = &d.vcpu;
    v.range("vcpu.count", c.count, 1, crate::model::cpu::MAX_VCPUS);
    if let Some(cur) = c.current {
        v.range("vcpu.current", cur, 1, c.count);
    }
    if c.placement == Some(VcpuPlacement::Auto) {
        v.err(
            "vcpu.placement",
            Problem::Unsupported("placement 'auto' (needs numad)".into()),
        );
    }
    if let Some(n) = d.iothreads {
        v.range("iothreads", n, 1, MAX_IOTHREADS);
    }
}

fn cpu(v: &mut V, d: &DomainConfig) {
    let Some(c) = &d.cpu else { return };
    if let CpuMode::Custom { model } = &c.mode {
        v.token(
            "cpu.mode.model",
            model,
            64,
            "ASCII letters, digits, '_', '-', '.'",
            ident_char,
        );
    }
    let mut seen = BTreeSet::new();
    for (i, f) in c.features.iter().enumerate() {
        v.token(
            format!("cpu.features[{i}].name"),
            &f.name,
            64,
            "ASCII letters, digits, '_', '-', '.'",
            ident_char,
        );
        if !seen.insert(f.name.as_str()) {
            v.err(
                format!("cpu.features[{i}].name"),
                Problem::Duplicate(format!("feature '{}'", f.name)),
            );
        }
    }
    if let Some(t) = &c.topology {
        for (n, x) in [
            ("sockets", t.sockets),
            ("dies", t.dies.unwrap_or(1)),
            ("cores", t.cores),
            ("threads", t.threads),
        ] {
            v.range(
                format!("cpu.topology.{n}"),
                x,
                1,
                crate::model::cpu::MAX_VCPUS,
            );
        }
        match t.total() {
            Some(total) if total == d.vcpu.count => {}
            total => v.err(
                "cpu.topology",
                Problem::Inconsistent(format!(
                    "sockets*dies*cores*threads = {} but vcpu count is {}",
                    total.map_or("overflow".into(), |t| t.to_string()),
                    d.vcpu.count
                )),
            ),
        }
    }
    if c.numa.is_empty() {
        return;
    }
    if c.numa.len() > MAX_NUMA_CELLS {
        v.err(
            "cpu.numa",
            Problem::TooLong {
                max: MAX_NUMA_CELLS,
            },
        );
        return;
    }
    let n = c.numa.len();
    let mut all_cpus = BTreeSet::new();
    let mut mem_total: u64 = 0;
    for (i, cell) in c.numa.iter().enumerate() {
        let p = format!("cpu.numa[{i}]");
        if usize::try_from(cell.id).ok() != Some(i) {
            v.err(
                format!("{p}.id"),
                Problem::Inconsistent(format!(
                    "cell ids must be 0..{n} in order; found {}",
                    cell.id
                )),
            );
        }
        for cpu in cell.cpus.iter() {
            if cpu >= d.vcpu.count {
                v.err(
                    format!("{p}.cpus"),
                    Problem::DanglingReference(format!("vcpu {cpu} (domain has {})", d.vcpu.count)),
                );
                break;
            }
            if !all_cpus.insert(cpu) {
                v.err(
                    format!("{p}.cpus"),
                    Problem::Duplicate(format!("vcpu {cpu} in two cells")),
                );
                break;
            }
        }
        if cell.memory_kib == 0 {
            v.err(format!("{p}.memory_kib"), Problem::Empty);
        }
        mem_total = mem_total.saturating_add(cell.memory_kib);
        let mut sib = BTreeSet::new();
        for (j, dist) in cell.distances.iter().enumerate() {
            let dp = format!("{p}.distances[{j}]");
            if usize::try_from(dist.id).map_or(true, |id| id >= n) {
                v.err(
                    format!("{dp}.id"),
                    Problem::DanglingReference(format!("cell {}", dist.id)),
                );
            }
            if !sib.insert(dist.id) {
                v.err(
                    format!("{dp}.id"),
                    Problem::Duplicate(format!("distance to cell {}", dist.id)),
                );
            }
            if dist.id == cell.id {
                v.range(format!("{dp}.value"), dist.value, 10, 10);
            } else {
                v.range(format!("{dp}.value"), dist.value, 11, 255);
            }
        }
    }
    // Bounded: an out-of-range count was reported above and must not drive a huge loop.
    let missing =
        (0..d.vcpu.count.min(crate::model::cpu::MAX_VCPUS)).find(|c| !all_cpus.contains(c));
    if let Some(m) = missing {
        v.err(
            "cpu.numa",
            Problem::Inconsistent(format!("vcpu {m} is in no NUMA cell")),
        );
    }
    if mem_total != d.memory.memory_kib {
        v.err(
            "cpu.numa",
            Problem::Inconsistent(format!(
                "cell memory adds up to {mem_total} KiB but domain memory is {} KiB",
                d.memory.memory_kib
            )),
        );
    }
}

fn cputune(v: &mut V, d: &DomainConfig) {
    let Some(t) = &d.cputune else { return };
    if let Some(s) = t.shares {
        v.range("cputune.shares", s, 2, 262_144);
    }
    if let Some(p) = t.period {
        v.range("cputune.period", p, 1000, 1_000_000);
    }
    if let Some(q) = t.quota {
        if q != -1 {
            v.range("cputune.quota", q, 1000, 17_592_186_044_415i64);
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in t.vcpupins.iter().enumerate() {
        if p.vcpu >= d.vcpu.count {
            v.err(
                format!("cputune.vcpupins[{i}].vcpu"),
                Problem::DanglingReference(format!(
                    "vcpu {} but the domain has {} vcpus",
                    p.vcpu, d.vcpu.count
                )),
            );
        }
        if !seen.insert(p.vcpu) {
            v.err(
                format!("cputune.vcpupins[{i}].vcpu"),
                Problem::Duplicate(format!("pin for vcpu {}", p.vcpu)),
            );
        }
    }
    let mut seen = BTreeSet::new();
    let iothreads = d.iothreads.unwrap_or(0);
    for (i, p) in t.iothreadpins.iter().enumerate() {
        if p.iothread == 0 || p.iothread > iothreads {
            v.err(
                format!("cputune.iothreadpins[{i}].iothread"),
                Problem::DanglingReference(format!(
                    "iothread {} but the domain has {iothreads}",
                    p.iothread
                )),
            );
        }
        if !seen.insert(p.iothread) {
            v.err(
                format!("cputune.iothreadpins[{i}].iothread"),
                Problem::Duplicate(format!("pin for iothread {}", p.iothread)),
            );
        }
    }
}

fn numa_cells(d: &DomainConfig) -> usize {
    d.cpu.as_ref().map_or(0, |c| c.numa.len())
}

fn numatune(v: &mut V, d: &DomainConfig) {
    let Some(t) = &d.numatune else { return };
    let cells = numa_cells(d);
    let mut seen = BTreeSet::new();
    for (i, m) in t.memnodes.iter().enumerate() {
        let p = format!("numatune.memnodes[{i}].cellid");
        if usize::try_from(m.cellid).map_or(true, |c| c >= cells) {
            v.err(
                p.clone(),
                Problem::DanglingReference(format!(
                    "guest NUMA cell {} ({cells} defined)",
                    m.cellid
                )),
            );
        }
        if !seen.insert(m.cellid) {
            v.err(
                p,
                Problem::Duplicate(format!("memnode for cell {}", m.cellid)),
            );
        }
    }
}

/// Whether all guest RAM is shareable with another process (vhost-user needs this).
pub(crate) fn memory_is_shared(d: &DomainConfig) -> bool {
    let backing_shared = d
        .memory_backing
        .as_ref()
        .is_some_and(|b| b.access == Some(MemoryAccess::Shared));
    let cells = d
        .cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or_default();
    if cells.is_empty() {
        backing_shared
    } else {
        cells.iter().all(|c| match c.mem_access {
            Some(a) => a == MemoryAccess::Shared,
            None => backing_shared,
        })
    }
}

fn memory_backing(v: &mut V, d: &DomainConfig) {
    let Some(b) = &d.memory_backing else { return };
    let cells = d
        .cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or_default();
    if let Some(pages) = &b.hugepages {
        match b.source {
            Some(MemorySource::File) | Some(MemorySource::Anonymous) => v.err(
                "memory_backing.source",
                Problem::Unsupported(format!(
                    "hugepages with source '{}': huge pages are backed by hugetlb memfd",
                    b.source.map_or("", |s| s.as_str())
                )),
            ),
            _ => {}
        }
        let mut default_seen = false;
        let mut covered = BTreeSet::new();
        for (i, p) in pages.iter().enumerate() {
            let pp = format!("memory_backing.hugepages[{i}]");
            if p.size_kib <= 4 || !p.size_kib.is_power_of_two() {
                v.err(
                    format!("{pp}.size_kib"),
                    Problem::Inconsistent(format!("{} KiB is not a huge page size", p.size_kib)),
                );
                continue;
            }
            match &p.nodeset {
                None if default_seen => v.err(
                    pp.clone(),
                    Problem::Duplicate("page size without nodeset".into()),
                ),
                None => default_seen = true,
                Some(ns) => {
                    for id in ns.iter() {
                        if usize::try_from(id).map_or(true, |x| x >= cells.len().max(1)) {
                            v.err(
                                format!("{pp}.nodeset"),
                                Problem::DanglingReference(format!("guest NUMA cell {id}")),
                            );
                            break;
                        }
                        if !covered.insert(id) {
                            v.err(
                                format!("{pp}.nodeset"),
                                Problem::Duplicate(format!("page size for cell {id}")),
                            );
                            break;
                        }
                    }
                }
            }
        }
        // QEMU refuses a RAM block that is not a whole number of pages.
        for blk in crate::qemu::memory::ram_blocks(d) {
            if let Some(Some(page)) = blk.hugepages {
                let kib = blk.kib;
                if page != 0 && kib % page != 0 {
                    let p = blk.cell.map_or("memory.memory_kib".to_owned(), |c| {
                        format!("cpu.numa[{c}].memory_kib")
                    });
                    v.err(
                        p,
                        Problem::Inconsistent(format!(
                            "{kib} KiB is not a multiple of the {page} KiB huge page size"
                        )),
                    );
                }
            }
        }
    }
    if b.access == Some(MemoryAccess::Shared) && b.source == Some(MemorySource::Anonymous) {
        v.err(
            "memory_backing.access",
            Problem::Unsupported("shared access with anonymous memory (use memfd or file)".into()),
        );
    }
}

fn os(v: &mut V, d: &DomainConfig) {
    let o = &d.os;
    if let Some(m) = &o.machine {
        let q35 = m == "q35"
            || m.strip_prefix("pc-q35-")
                .is_some_and(|r| r.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !q35 {
            v.err(
                "os.machine",
                Problem::Unsupported(format!("machine '{m}' (only q35 and pc-q35-X.Y)")),
            );
        }
    }
    if let Firmware::Uefi { loader, nvram } = &o.firmware {
        v.path("os.firmware.loader.path", &loader.path);
        if loader.secure && d.features.smm != Some(true) {
            v.err(
                "os.firmware.loader.secure",
                Problem::Inconsistent("secure boot needs features.smm on".into()),
            );
        }
        if let Some(n) = nvram {
            v.path("os.firmware.nvram.path", &n.path);
            if let Some(t) = &n.template {
                v.path("os.firmware.nvram.template", t);
            }
        }
    }
    if let Some(k) = &o.kernel {
        v.path("os.kernel.kernel", &k.kernel);
        if let Some(i) = &k.initrd {
            v.path("os.kernel.initrd", i);
        }
        if let Some(c) = &k.cmdline {
            v.text("os.kernel.cmdline", c, false);
            if c.trim() != c {
                v.err(
                    "os.kernel.cmdline",
                    Problem::Inconsistent("surrounding whitespace".into()),
                );
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, b) in o.boot.iter().enumerate() {
        if !seen.insert(b.as_str()) {
            v.err(
                format!("os.boot[{i}]"),
                Problem::Duplicate(format!("boot device '{}'", b.as_str())),
            );
        }
        if *b == BootDevice::Fd {
            v.err(
                format!("os.boot[{i}]"),
                Problem::Unsupported("floppy boot".into()),
            );
        }
    }
    // Per-device boot order.
    let dv = &d.devices;
    let orders = dv
        .disks
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("devices.disks[{i}].boot_order"), x.boot_order))
        .chain(
            dv.interfaces
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("devices.interfaces[{i}].boot_order"), x.boot_order)),
        )
        .chain(
            dv.hostdevs
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("devices.hostdevs[{i}].boot_order"), x.boot_order)),
        );
    let mut seen = BTreeSet::new();
    for (p, order) in orders {
        let Some(order) = order else { continue };
        if !o.boot.is_empty() {
            v.err(
                p.clone(),
                Problem::Inconsistent(
                    "per-device boot order cannot be combined with os.boot".into(),
                ),
            );
        }
        if order == 0 {
            v.range(p.clone(), order, 1, u32::MAX);
        }
        if !seen.insert(order) {
            v.err(p, Problem::Duplicate(format!("boot order {order}")));
        }
    }
}

fn clock(v: &mut V, d: &DomainConfig) {
    let Some(c) = &d.clock else { return };
    let mut seen = BTreeSet::new();
    for (i, t) in c.timers.iter().enumerate() {
        let p = format!("clock.timers[{i}]");
        if !seen.insert(t.name) {
            v.err(
                format!("{p}.name"),
                Problem::Duplicate(format!("timer '{}'", t.name.as_str())),
            );
        }
        let ok_policy = matches!(
            (t.name, t.tickpolicy),
            (_, None)
                | (
                    TimerName::Rtc,
                    Some(TickPolicy::Catchup | TickPolicy::Delay)
                )
                | (
                    TimerName::Pit,
                    Some(TickPolicy::Delay | TickPolicy::Discard)
                )
        );
        if !ok_policy {
            v.err(
                format!("{p}.tickpolicy"),
                Problem::Unsupported(format!("this tickpolicy for timer '{}'", t.name.as_str())),
            );
        }
        let ok_present = matches!(
            (t.name, t.present),
            (TimerName::Hpet | TimerName::Pit | TimerName::Kvmclock, _) | (_, None | Some(true))
        );
        if !ok_present {
            v.err(
                format!("{p}.present"),
                Problem::Unsupported(format!("removing timer '{}'", t.name.as_str())),
            );
        }
    }
}

fn dev_name(v: &mut V, path: String, s: &str) {
    v.token(
        path,
        s,
        15,
        "ASCII letters, digits, '_', '-', '.'",
        ident_char,
    );
}

fn devices(v: &mut V, d: &DomainConfig) {
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
    if let Some(Graphics::Vnc { port, listen }) = &dv.graphics {
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
    let has_xhci = dv.controllers.iter().any(|c| {
        matches!(
            c.kind,
            ControllerKind::Usb {
                model: UsbModel::QemuXhci,
                ..
            }
        )
    });
    for (i, inp) in dv.inputs.iter().enumerate() {
        if inp.bus == InputBus::Usb && !has_xhci {
            v.err(
                format!("devices.inputs[{i}].bus"),
                Problem::DanglingReference("a USB controller (qemu-xhci)".into()),
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
}

fn controllers(v: &mut V, dv: &Devices) {
    let mut seen = BTreeSet::new();
    for (i, c) in dv.controllers.iter().enumerate() {
        let p = format!("devices.controllers[{i}]");
        let class = match c.kind {
            ControllerKind::PcieRoot | ControllerKind::PcieRootPort { .. } => "pci",
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
            ControllerKind::PcieRoot if c.index != 0 => {
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

fn disks(v: &mut V, d: &DomainConfig) {
    let dv = &d.devices;
    let mut targets = BTreeMap::new();
    for (i, disk) in dv.disks.iter().enumerate() {
        let p = format!("devices.disks[{i}]");
        let dev = &disk.target.dev;
        let prefix = match disk.target.bus {
            DiskBus::Virtio => "vd",
            DiskBus::Sata | DiskBus::Scsi => "sd",
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
            (None, DiskDevice::Cdrom) => {}
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

fn interfaces(v: &mut V, d: &DomainConfig) {
    let mut macs = BTreeMap::new();
    for (i, nic) in d.devices.interfaces.iter().enumerate() {
        let p = format!("devices.interfaces[{i}]");
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

fn char_source(v: &mut V, p: String, s: &CharSource) {
    match s {
        CharSource::Pty => {}
        CharSource::Unix { path, .. } | CharSource::File { path } => {
            v.path(format!("{p}.path"), path)
        }
    }
}

fn chardevs(v: &mut V, dv: &Devices) {
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
fn pci_addresses(v: &mut V, dv: &Devices) {
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
    for (i, x) in dv.inputs.iter().enumerate() {
        push(format!("devices.inputs[{i}].address"), &x.address);
    }
    if let Some(x) = &dv.memballoon {
        push("devices.memballoon.address".into(), &x.address);
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
