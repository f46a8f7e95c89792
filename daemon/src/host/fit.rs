//! Whether a guest fits this host: checked before QEMU starts, so a guest asking for more than
//! the host has is refused with the reason rather than failing inside QEMU.
//!
//! Only what is known is checked: when KVM or QEMU could not be probed, their checks are
//! skipped (the start itself then reports the real failure).

use novacron_domain::model::{CpuMode, IdSet, VirtType};
use novacron_domain::DomainConfig;

use super::hugepages;
use super::{HostFacts, SysfsRoot};

/// The machine type used when the domain names none (see `Os::machine`).
const DEFAULT_MACHINE: &str = "q35";

/// Every way `config` asks for more than the host has, one sentence each.
pub fn check_fit(config: &DomainConfig, caps: &HostFacts) -> Result<(), Vec<String>> {
    check_fit_in(config, caps, &SysfsRoot::default())
}

/// [`check_fit`] for a topology read below `sysfs`, whose paths the reasons name.
pub fn check_fit_in(
    config: &DomainConfig,
    caps: &HostFacts,
    sysfs: &SysfsRoot,
) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    let vcpus = config.vcpu.count;

    if let (VirtType::Kvm, Some(kvm)) = (config.virt_type, caps.kvm.value.as_ref()) {
        if vcpus > kvm.max_vcpus {
            why.push(format!(
                "the domain asks for {vcpus} vCPUs but KVM on this host allows at most {} \
                 (KVM_CAP_MAX_VCPUS)",
                kvm.max_vcpus
            ));
        }
    }

    if let Some(qemu) = caps.qemu.value.as_ref() {
        let machine = config.os.machine.as_deref().unwrap_or(DEFAULT_MACHINE);
        match qemu.machine(machine) {
            None => why.push(format!(
                "machine type '{machine}' is not one this QEMU ({}) offers",
                qemu.version
            )),
            Some(m) if vcpus > m.cpu_max => why.push(format!(
                "the domain asks for {vcpus} vCPUs but machine type '{}' allows at most {}",
                m.name, m.cpu_max
            )),
            Some(_) => {}
        }
        if let Some(CpuMode::Custom { model }) = config.cpu.as_ref().map(|c| &c.mode) {
            if qemu.cpu_model(model).is_none() {
                why.push(format!(
                    "CPU model '{model}' is not one this QEMU ({}) offers",
                    qemu.version
                ));
            }
        }
    }

    if let Some(topo) = caps.topology.value.as_ref() {
        let guest_bytes = config.memory.memory_kib.saturating_mul(1024);
        if let Some(host_bytes) = topo.memory_total_bytes() {
            if guest_bytes > host_bytes {
                why.push(format!(
                    "the domain asks for {} MiB of memory but the host has {} MiB",
                    guest_bytes >> 20,
                    host_bytes >> 20
                ));
            }
        }

        let node_ids: Vec<u32> = topo.nodes.iter().map(|n| n.id).collect();
        let node_dir = sysfs.path().join("devices/system/node");
        let mut check_nodes = |what: String, set: &IdSet| {
            let missing: Vec<u32> = set.iter().filter(|n| !node_ids.contains(n)).collect();
            if let Some(first) = missing.first() {
                why.push(format!(
                    "{what} names host NUMA node(s) {} but the host has node(s) {} (no {})",
                    list(&missing),
                    list(&node_ids),
                    node_dir.join(format!("node{first}")).display()
                ));
            }
        };
        if let Some(nt) = &config.numatune {
            if let Some(p) = &nt.memory {
                check_nodes("numatune memory nodeset".to_owned(), &p.nodeset);
            }
            for m in &nt.memnodes {
                check_nodes(format!("numatune memnode cell {}", m.cellid), &m.nodeset);
            }
        }

        if let Some(pages) = config
            .memory_backing
            .as_ref()
            .and_then(|b| b.hugepages.as_ref())
        {
            let sizes = topo.hugepage_sizes_kib();
            if pages.is_empty() && sizes.is_empty() {
                why.push("the domain asks for hugepages but the host has no hugepage pool".into());
            }
            for p in pages {
                if !sizes.contains(&p.size_kib) {
                    why.push(format!(
                        "the domain asks for {} hugepages but the host has pools of {}",
                        kib(p.size_kib),
                        if sizes.is_empty() {
                            "no size".to_owned()
                        } else {
                            sizes.iter().map(|s| kib(*s)).collect::<Vec<_>>().join(", ")
                        }
                    ));
                }
            }
        }

        why.extend(hugepages::shortfalls(
            &hugepages::demand(config, topo),
            topo,
            sysfs,
        ));

        let online: Vec<u32> = topo.online_cpus().collect();
        let mut check_cpus = |what: String, set: &IdSet| {
            let bad: Vec<u32> = set.iter().filter(|c| !online.contains(c)).collect();
            if !bad.is_empty() {
                why.push(format!(
                    "{what} names host CPU(s) {} that are not online (online: {})",
                    list(&bad),
                    list(&online)
                ));
            }
        };
        if let Some(set) = &config.vcpu.cpuset {
            check_cpus("vcpu cpuset".to_owned(), set);
        }
        if let Some(tune) = &config.cputune {
            for pin in &tune.vcpupins {
                check_cpus(format!("vcpupin for vCPU {}", pin.vcpu), &pin.cpuset);
            }
            if let Some(set) = &tune.emulatorpin {
                check_cpus("emulatorpin".to_owned(), set);
            }
            for pin in &tune.iothreadpins {
                check_cpus(
                    format!("iothreadpin for iothread {}", pin.iothread),
                    &pin.cpuset,
                );
            }
        }
    }

    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

/// `0-3,8` style, as the kernel and libvirt write id sets.
fn list(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return "none".to_owned();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

pub(crate) fn kib(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} GiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} MiB", s >> 10),
        s => format!("{s} KiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(list(&[]), "none");
        assert_eq!(list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn sizes() {
        assert_eq!(kib(2048), "2 MiB");
        assert_eq!(kib(1 << 20), "1 GiB");
        assert_eq!(kib(64), "64 KiB");
    }
}
