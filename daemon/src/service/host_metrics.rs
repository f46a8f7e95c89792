//! Host-level figures for `/metrics` that alerting needs and the per-guest scrape does not
//! carry: the host's memory (for memory-pressure alerts) and each remote host's breaker.

use novacron_remote_drivers::breaker::BreakerState;

use super::Service;

#[derive(Debug, Clone, Default)]
pub struct HostMetrics {
    /// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
    pub memory_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// (host, driver, breaker) for every remote host.
    pub remote: Vec<(String, String, BreakerState)>,
}

impl Service {
    pub async fn host_metrics(&self) -> HostMetrics {
        let meminfo = tokio::task::spawn_blocking(|| std::fs::read_to_string("/proc/meminfo"))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        HostMetrics {
            memory_bytes: meminfo_bytes(&meminfo, "MemTotal:"),
            memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable:"),
            remote: self
                .remote_hosts()
                .into_iter()
                .map(|v| (v.status.name, v.status.driver.to_string(), v.status.breaker))
                .collect(),
        }
    }
}

/// A `Key:   123 kB` line of /proc/meminfo, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_lines_are_read_in_bytes() {
        let text = "MemTotal:       16384 kB\nMemFree:  1 kB\nMemAvailable:    8192 kB\n";
        assert_eq!(super::meminfo_bytes(text, "MemTotal:"), Some(16384 * 1024));
        assert_eq!(
            super::meminfo_bytes(text, "MemAvailable:"),
            Some(8192 * 1024)
        );
        assert_eq!(super::meminfo_bytes(text, "SwapTotal:"), None);
    }
}
