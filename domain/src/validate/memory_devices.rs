//! Memory devices: they need `<maxMemory>` (QEMU's `slots`/`maxmem`), fit inside it, and have
//! sizes QEMU and the guest can use.

use super::{Problem, V};
use crate::model::*;

pub(super) fn memory_devices(v: &mut V, d: &DomainConfig) {
    let devs = &d.devices.memory;
    if devs.is_empty() {
        return;
    }
    let Some(max) = &d.memory.max else {
        v.err(
            "devices.memory",
            Problem::Inconsistent(
                "memory devices need <maxMemory slots='N'> (the hotplug ceiling)".into(),
            ),
        );
        return;
    };
    if devs.len() > MAX_MEMORY_DEVICES || devs.len() > max.slots as usize {
        v.err(
            "devices.memory",
            Problem::Inconsistent(format!(
                "{} memory devices but <maxMemory slots='{}'>",
                devs.len(),
                max.slots
            )),
        );
    }
    // libvirt's meaning: `<memory>` includes the devices, and the boot RAM (what is left) must
    // be at least what a guest is allowed to have (1 MiB). `<maxMemory>` >= `<memory>` is
    // checked with the memory itself.
    let devs_kib = memory_devices_kib(devs);
    let boot = d.memory.memory_kib.saturating_sub(devs_kib);
    if boot < 1024 {
        v.err(
            "devices.memory",
            Problem::Inconsistent(format!(
                "the memory devices add up to {devs_kib} KiB, leaving {boot} KiB of <memory> {} \
                 KiB as boot RAM: <memory> includes the memory devices (as in libvirt), so it \
                 must be their sizes plus at least 1 MiB",
                d.memory.memory_kib
            )),
        );
    }
    if d.memory_backing
        .as_ref()
        .is_some_and(|b| b.hugepages.is_some())
    {
        v.err(
            "devices.memory",
            Problem::Unsupported("memory devices with huge page backing".into()),
        );
    }
    let cells = d.cpu.as_ref().map_or(0, |c| c.numa.len());
    let mut aliases = Vec::new();
    for (i, m) in devs.iter().enumerate() {
        let p = format!("devices.memory[{i}]");
        check_one(v, &p, m, cells);
        if let Some(a) = &m.alias {
            let ok = !a.is_empty()
                && a.len() <= 32
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                v.err(
                    format!("{p}.alias"),
                    Problem::Inconsistent("1 to 32 of [A-Za-z0-9_-]".into()),
                );
            }
            if aliases.contains(a) {
                v.err(format!("{p}.alias"), Problem::Duplicate(a.clone()));
            }
            aliases.push(a.clone());
        }
    }
}

fn check_one(v: &mut V, p: &str, m: &MemoryDevice, cells: usize) {
    // QEMU maps device memory in 2 MiB pages at least (x86 THP alignment).
    const ALIGN: u64 = 2048;
    if m.size_kib == 0 || m.size_kib % ALIGN != 0 {
        v.err(
            format!("{p}.size_kib"),
            Problem::Inconsistent("must be a positive multiple of 2 MiB".into()),
        );
    }
    if let Some(n) = m.node {
        let limit = cells.max(1);
        if n as usize >= limit {
            v.err(
                format!("{p}.node"),
                Problem::DanglingReference(format!("guest NUMA cell {n}")),
            );
        }
    }
    match m.model {
        MemoryModel::Dimm => {
            if m.requested_kib.is_some() || m.block_kib.is_some() || m.address.is_some() {
                v.err(
                    p.to_owned(),
                    Problem::Inconsistent(
                        "requested, block and address are virtio-mem's, not a DIMM's".into(),
                    ),
                );
            }
        }
        MemoryModel::VirtioMem => {
            let b = m.block();
            if b < ALIGN || !b.is_power_of_two() {
                v.err(
                    format!("{p}.block_kib"),
                    Problem::Inconsistent("a power of two of at least 2 MiB".into()),
                );
                return;
            }
            if m.size_kib % b != 0 {
                v.err(
                    format!("{p}.size_kib"),
                    Problem::Inconsistent(format!("must be a multiple of the block ({b} KiB)")),
                );
            }
            if let Some(r) = m.requested_kib {
                if r > m.size_kib || r % b != 0 {
                    v.err(
                        format!("{p}.requested_kib"),
                        Problem::Inconsistent(format!(
                            "{r} KiB: a multiple of the block ({b} KiB) no larger than the size \
                             ({} KiB)",
                            m.size_kib
                        )),
                    );
                }
            }
        }
    }
}
