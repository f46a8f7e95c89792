//! What `GET /v1/host` and the D-Bus manager show about this host.

use serde::Serialize;

use super::Service;

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub daemon_version: String,
    pub emulator: String,
    pub kvm: KvmInfo,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub domains: DomainCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct KvmInfo {
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainCounts {
    pub total: usize,
    pub running: usize,
}

impl Service {
    pub async fn host_info(&self) -> HostInfo {
        let list = self.list();
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
        HostInfo {
            hostname,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            emulator: self.config().emulator.display().to_string(),
            kvm: KvmInfo {
                usable: self.inner.kvm.is_ok(),
                reason: self.inner.kvm.clone().err(),
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            domains: DomainCounts {
                total: list.len(),
                running: list.iter().filter(|d| d.state.is_live()).count(),
            },
        }
    }
}
