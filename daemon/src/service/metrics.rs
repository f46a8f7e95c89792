//! Metrics: what the daemon knows about its guests and about itself, collected for one scrape.
//! The faces only render a [`Metrics`] (the HTTP API as Prometheus text).
//!
//! Sources: the domain table (state), QMP (`query-cpus-fast` for vCPU thread ids,
//! `query-balloon`, `query-blockstats`), `/proc` (vCPU thread CPU time, QEMU RSS, the daemon's
//! own RSS and descriptors), and counters kept here (operations, scrape errors).
//!
//! Guests are queried concurrently, each QMP query under [`QMP_TIMEOUT`] and each guest under
//! [`GUEST_DEADLINE`]: a hung QEMU costs one scrape at most that long and never hides the
//! others. What timed out is left out and counted in the scrape errors.
//!
//! Network counters are not collected: QEMU does not report per-NIC byte counters over QMP, and
//! `/proc/<pid>/net` describes the network namespace, not the guest's NICs. The tap devices
//! are the honest source, once the host layer records their names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use novacron_domain::{DomainState, Error};
use novacron_qmp::commands::{QueryBlockstats, QueryCpusFast};

use super::domain::{DomainHandle, Live};
use super::Service;

/// Upper bounds (seconds) of the operation duration histogram: from a QMP round trip to a
/// slow guest's graceful shutdown.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Per QMP query during a scrape.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(1);
/// Per guest during a scrape, /proc reads included.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(2);
/// `/proc` reports CPU times in USER_HZ ticks, which the kernel ABI fixes at 100 on every
/// architecture Debian ships (it is not the kernel's internal HZ).
const USER_HZ: f64 = 100.0;

/// One scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub version: &'static str,
    pub domains: Vec<DomainMetrics>,
    /// Files in the state or run directories that could not be used.
    pub problems: usize,
    pub operations: Vec<OperationStats>,
    /// Per domain: queries that failed or timed out in scrapes so far.
    pub scrape_errors: Vec<(String, u64)>,
    pub process: ProcessStats,
    /// Delivery of each webhook endpoint.
    pub webhooks: Vec<super::webhooks::WebhookStatus>,
}

#[derive(Debug, Clone)]
pub struct DomainMetrics {
    pub name: String,
    pub uuid: Option<String>,
    pub state: DomainState,
    /// (vCPU index, user + system seconds of its thread).
    pub vcpu_seconds: Vec<(u32, f64)>,
    /// QEMU's resident set.
    pub rss_bytes: Option<u64>,
    /// The balloon's current size, when the guest has a balloon device.
    pub balloon_bytes: Option<u64>,
    pub block: Vec<BlockCounters>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockCounters {
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    pub flush_ops: u64,
    pub read_seconds: f64,
    pub write_seconds: f64,
    pub flush_seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

/// Counts and durations of one (operation, result) pair since the daemon started.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    pub op: &'static str,
    /// `ok`, or the error code (`not_found`, `wrong_state`, `busy`...).
    pub result: &'static str,
    pub count: u64,
    pub sum_seconds: f64,
    /// Cumulative counts for each of [`DURATION_BUCKETS`] (`le`); `count` is `+Inf`.
    pub buckets: [u64; DURATION_BUCKETS.len()],
}

/// The daemon's counters. Process-wide, like the daemon's own health: one daemon runs one
/// service.
struct Counters {
    operations: BTreeMap<(&'static str, &'static str), OperationStats>,
    scrape_errors: BTreeMap<String, u64>,
}

static COUNTERS: Mutex<Counters> = Mutex::new(Counters {
    operations: BTreeMap::new(),
    scrape_errors: BTreeMap::new(),
});

fn counters() -> std::sync::MutexGuard<'static, Counters> {
    COUNTERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records one finished operation.
pub fn record_operation(op: &'static str, result: Result<(), &Error>, took: Duration) {
    let result = match result {
        Ok(()) => "ok",
        Err(e) => e.code().as_str(),
    };
    record_outcome(op, result, took);
}

/// Records one finished operation by its result code (`ok` or an error code); called by the
/// operation executor for every operation.
pub fn record_outcome(op: &'static str, result: &'static str, took: Duration) {
    let secs = took.as_secs_f64();
    let mut c = counters();
    let stats = c
        .operations
        .entry((op, result))
        .or_insert_with(|| OperationStats {
            op,
            result,
            count: 0,
            sum_seconds: 0.0,
            buckets: [0; DURATION_BUCKETS.len()],
        });
    stats.count += 1;
    stats.sum_seconds += secs;
    for (bound, n) in DURATION_BUCKETS.iter().zip(stats.buckets.iter_mut()) {
        if secs <= *bound {
            *n += 1;
        }
    }
}

fn count_scrape_errors(domain: &str, n: u64) {
    if n > 0 {
        *counters()
            .scrape_errors
            .entry(domain.to_owned())
            .or_default() += n;
    }
}

impl Service {
    /// Collects one scrape. Never waits behind a job; bounded by [`GUEST_DEADLINE`] (guests are
    /// queried concurrently).
    pub async fn metrics(&self) -> Metrics {
        let handles: Vec<Arc<DomainHandle>> = self.inner.read_domains().values().cloned().collect();
        let domains =
            futures_util::future::join_all(handles.into_iter().map(collect_bounded)).await;
        let process = tokio::task::spawn_blocking(process_stats)
            .await
            .unwrap_or_default();
        let mut c = counters();
        // Domains that are gone (transient guests with unique names) take their series along.
        c.scrape_errors
            .retain(|name, _| domains.iter().any(|d| &d.name == name));
        Metrics {
            version: env!("CARGO_PKG_VERSION"),
            domains,
            problems: self.problems().len(),
            operations: c.operations.values().cloned().collect(),
            scrape_errors: c
                .scrape_errors
                .iter()
                .map(|(d, n)| (d.clone(), *n))
                .collect(),
            process,
            webhooks: self.webhooks(),
        }
    }
}

async fn collect_bounded(h: Arc<DomainHandle>) -> DomainMetrics {
    let run = h.run();
    let base = DomainMetrics {
        name: h.name.clone(),
        uuid: h.definition().config.uuid.map(|u| u.to_string()),
        state: run.state(),
        vcpu_seconds: Vec::new(),
        rss_bytes: None,
        balloon_bytes: None,
        block: Vec::new(),
    };
    let Some(live) = run.live().cloned() else {
        return base;
    };
    match tokio::time::timeout(GUEST_DEADLINE, collect_live(base.clone(), live)).await {
        Ok((metrics, errors)) => {
            count_scrape_errors(&metrics.name, errors);
            metrics
        }
        Err(_) => {
            tracing::warn!(domain = %base.name, after = ?GUEST_DEADLINE, "metrics: guest did not answer in time");
            count_scrape_errors(&base.name, 1);
            base
        }
    }
}

/// The live guest's figures, and how many of its queries failed.
async fn collect_live(mut m: DomainMetrics, live: Arc<Live>) -> (DomainMetrics, u64) {
    let mut errors = 0;
    let mut thread_ids = Vec::new();
    if let Ok(qmp) = live.qmp(&m.name) {
        let (cpus, balloon, blocks) = tokio::join!(
            qmp.execute_with_timeout(&QueryCpusFast, QMP_TIMEOUT),
            qmp.execute_raw_with_timeout("query-balloon", None, QMP_TIMEOUT),
            qmp.execute_with_timeout(&QueryBlockstats, QMP_TIMEOUT),
        );
        match cpus {
            Ok(cpus) => {
                thread_ids = cpus
                    .iter()
                    .filter_map(|c| u32::try_from(c.thread_id).ok().map(|t| (c.cpu_index, t)))
                    .collect();
            }
            Err(e) => errors += query_failed(&m.name, "query-cpus-fast", &e),
        }
        match balloon {
            Ok(v) => m.balloon_bytes = v["actual"].as_u64(),
            // No balloon device: QEMU answers DeviceNotActive. Not an error.
            Err(novacron_qmp::Error::Qmp { .. }) => {}
            Err(e) => errors += query_failed(&m.name, "query-balloon", &e),
        }
        match blocks {
            Ok(stats) => m.block = stats.into_iter().filter_map(block_counters).collect(),
            Err(e) => errors += query_failed(&m.name, "query-blockstats", &e),
        }
    }
    let pid = live.pid;
    let read = tokio::task::spawn_blocking(move || {
        let rss = proc_status_bytes(&format!("/proc/{pid}/status"), "VmRSS:");
        let vcpus: Vec<(u32, f64)> = thread_ids
            .into_iter()
            .filter_map(|(index, tid)| thread_cpu_seconds(pid, tid).map(|s| (index, s)))
            .collect();
        (rss, vcpus)
    })
    .await;
    match read {
        Ok((rss, vcpus)) => {
            m.rss_bytes = rss;
            m.vcpu_seconds = vcpus;
        }
        Err(_) => errors += 1,
    }
    (m, errors)
}

fn query_failed(domain: &str, query: &str, e: &novacron_qmp::Error) -> u64 {
    tracing::debug!(domain, query, error = %e, "metrics: query failed");
    1
}

fn block_counters(b: novacron_qmp::commands::BlockStats) -> Option<BlockCounters> {
    let device = [b.device, b.qdev, b.node_name]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())?;
    let s = b.stats;
    let secs = |ns: u64| ns as f64 / 1e9;
    Some(BlockCounters {
        device,
        read_bytes: s.rd_bytes,
        write_bytes: s.wr_bytes,
        read_ops: s.rd_operations,
        write_ops: s.wr_operations,
        flush_ops: s.flush_operations,
        read_seconds: secs(s.rd_total_time_ns),
        write_seconds: secs(s.wr_total_time_ns),
        flush_seconds: secs(s.flush_total_time_ns),
    })
}

/// A `kB` line of a `/proc/<pid>/status` file, in bytes.
fn proc_status_bytes(path: &str, key: &str) -> Option<u64> {
    parse_status_kb(&std::fs::read_to_string(path).ok()?, key).map(|kb| kb * 1024)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

/// utime + stime of one thread of `pid`, in seconds. For a KVM vCPU thread guest time is part
/// of utime.
fn thread_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / USER_HZ)
}

/// Fields 14 and 15 (utime, stime) of a stat line; fields are counted after the last ')'
/// because the command name may contain anything.
fn parse_cpu_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn process_stats() -> ProcessStats {
    ProcessStats {
        resident_memory_bytes: proc_status_bytes("/proc/self/status", "VmRSS:"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parsing() {
        let line = b"1234 (qemu ) (x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 42 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(300));
        assert_eq!(parse_cpu_ticks(b"1 (x) S 1 2"), None);
        let status = "Name:\tqemu\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(12345));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
        assert!(thread_cpu_seconds(std::process::id(), std::process::id()).is_some());
        assert!(proc_status_bytes("/proc/self/status", "VmRSS:").unwrap() > 0);
    }

    #[test]
    fn operations_fill_cumulative_buckets() {
        record_operation("test-op", Ok(()), Duration::from_millis(30));
        record_operation("test-op", Ok(()), Duration::from_secs(1000));
        let err = Error::not_found(novacron_domain::Kind::Domain, "x");
        record_operation("test-op", Err(&err), Duration::ZERO);
        let c = counters();
        let ok = &c.operations[&("test-op", "ok")];
        assert_eq!(ok.count, 2);
        // 0.03 s falls in le=0.05 and above; 1000 s only in +Inf.
        assert_eq!(ok.buckets[..3], [0, 0, 0]);
        assert!(ok.buckets[3..].iter().all(|&n| n == 1));
        assert_eq!(c.operations[&("test-op", "not_found")].buckets[0], 1);
    }
}
