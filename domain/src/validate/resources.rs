//! Memory, vCPUs, guest CPU/NUMA, host pinning and memory backing.

use std::collections::BTreeSet;

use super::{ident_char, Problem, MAX_IOTHREADS, MAX_MEMORY_KIB, MAX_NUMA_CELLS, V};
use crate::model::*;

pub(super) fn memory(v: &mut V, d: &DomainConfig) {
    let m = &d.memory;
    v.range("memory.memory_kib", m.memory_kib, 1024, MAX_MEMORY_KIB);
    if let Some(c) = m.current_kib {
        if c > m.memory_kib {
            v.err(
                "memory.current_kib",
                Problem::Inconsistent(format!(
                    "<currentMemory> {c} KiB is above <memory> {} KiB (the balloon only takes \
                     memory back)",
                    m.memory_kib
                )),
            );
        } else {
            v.range("memory.current_kib", c, 1024, m.memory_kib);
        }
    }
    if let Some(x) = &m.max {
        if x.size_kib < m.memory_kib {
            v.err(
                "memory.max.size_kib",
                Problem::Inconsistent(format!(
                    "<maxMemory> {} KiB is below <memory> {} KiB (which includes the memory \
                     devices)",
                    x.size_kib, m.memory_kib
                )),
            );
        } else {
            v.range("memory.max.size_kib", x.size_kib, 1024, MAX_MEMORY_KIB);
        }
        v.range("memory.max.slots", x.slots, 1, 255);
    }
}

pub(super) fn vcpu(v: &mut V, d: &DomainConfig) {
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

pub(super) fn cpu(v: &mut V, d: &DomainConfig) {
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
    // The cells hold the boot RAM; the memory devices sit in them beside it (libvirt:
    // `<memory>` = the cells plus the devices).
    let boot = d.boot_memory_kib();
    if mem_total != boot {
        let devs = memory_devices_kib(&d.devices.memory);
        let why = if devs == 0 {
            format!("cell memory adds up to {mem_total} KiB but <memory> is {boot} KiB")
        } else {
            format!(
                "cell memory adds up to {mem_total} KiB but <memory> ({} KiB) minus the memory \
                 devices ({devs} KiB) is {boot} KiB: the cells hold the boot RAM, <memory> the \
                 cells plus the devices (set <memory> to {} KiB)",
                d.memory.memory_kib,
                mem_total.saturating_add(devs)
            )
        };
        v.err("cpu.numa", Problem::Inconsistent(why));
    }
}

pub(super) fn cputune(v: &mut V, d: &DomainConfig) {
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

/// A hard limit below the guest's own RAM would have the kernel kill QEMU as the guest uses
/// it; a soft limit above the hard one means nothing.
pub(super) fn memtune(v: &mut V, d: &DomainConfig) {
    let Some(t) = &d.memtune else { return };
    if t.hard_limit_kib.is_none() && t.soft_limit_kib.is_none() {
        v.err("memtune", Problem::Empty);
    }
    let ram = d
        .memory
        .max
        .as_ref()
        .map_or(d.memory.memory_kib, |m| m.size_kib);
    if let Some(hard) = t.hard_limit_kib {
        if hard < ram {
            v.err(
                "memtune.hard_limit_kib",
                Problem::Inconsistent(format!(
                    "{hard} KiB is below the guest's {ram} KiB of RAM: QEMU would be killed as the guest uses it"
                )),
            );
        }
    }
    if let (Some(hard), Some(soft)) = (t.hard_limit_kib, t.soft_limit_kib) {
        if soft > hard {
            v.err(
                "memtune.soft_limit_kib",
                Problem::Inconsistent(format!("{soft} KiB is above the hard limit of {hard} KiB")),
            );
        }
    }
    if t.soft_limit_kib == Some(0) {
        v.err(
            "memtune.soft_limit_kib",
            Problem::OutOfRange {
                value: 0,
                min: 1,
                max: i128::from(u64::MAX),
            },
        );
    }
}

pub(super) fn numa_cells(d: &DomainConfig) -> usize {
    d.cpu.as_ref().map_or(0, |c| c.numa.len())
}

pub(super) fn numatune(v: &mut V, d: &DomainConfig) {
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

pub(super) fn memory_backing(v: &mut V, d: &DomainConfig) {
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
