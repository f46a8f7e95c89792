//! What `GET /v1/host` and the D-Bus manager show about this host.

use serde::Serialize;

use super::Service;

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub daemon_version: String,
    pub emulator: String,
    pub kvm: KvmInfo,
    /// The emulator's version, machine types and CPU models.
    pub qemu: crate::host::Probed<crate::host::QemuCaps>,
    /// CPUs, NUMA nodes, hugepage pools, PCI devices (from `sysfs_root`).
    pub topology: crate::host::Probed<crate::host::Topology>,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub domains: DomainCounts,
}

/// `usable`, `reason` when not, and the capabilities probed through `/dev/kvm`.
pub type KvmInfo = crate::host::Probed<crate::host::KvmCaps>;

#[derive(Debug, Clone, Serialize)]
pub struct DomainCounts {
    pub total: usize,
    pub running: usize,
}

impl Service {
    pub async fn host_info(&self) -> HostInfo {
        let list = self.list();
        let host = self.inner.host.facts().await;
        let (hostname, memory_bytes) = tokio::task::spawn_blocking(|| {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let memory = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .map_or(0, |kib| kib * 1024);
            (hostname, memory)
        })
        .await
        .unwrap_or_default();
        let mut kvm = host.kvm;
        // The capabilities are the daemon's view; whether guests can use KVM is the QEMU
        // user's.
        if let (true, Err(why)) = (kvm.usable, &self.inner.kvm) {
            kvm.usable = false;
            kvm.reason = Some(why.clone());
        }
        HostInfo {
            hostname,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            emulator: self.config().emulator.display().to_string(),
            kvm,
            qemu: host.qemu,
            topology: host.topology,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            domains: DomainCounts {
                total: list.len(),
                running: list.iter().filter(|d| d.state.is_live()).count(),
            },
        }
    }
}
