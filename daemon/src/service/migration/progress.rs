//! Where a migration is, as the APIs show it (`GET .../migration`, progress events).

use novacron_qmp::commands::MigrationInfo;
use novacron_qmp::qapi::MigrationStatus;
use serde::{Deserialize, Serialize};

/// The daemon's view of a migration's phases (QEMU's status plus the daemon's own steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asking the destination to prepare.
    Preparing,
    /// Setting up the stream.
    Setup,
    /// Copying memory while the guest runs.
    Precopy,
    /// The guest runs on the destination, which pulls the pages it lacks.
    Postcopy,
    /// The guest is paused for the last pages and device state.
    Switchover,
    /// The destination is taking over; the source QEMU quits.
    Finishing,
    Completed,
    /// Cancelled (by a caller, a timeout or the destination): the guest is being resumed here
    /// and the destination told to discard its copy.
    Cancelling,
    /// Ended: the guest runs (or stays paused, as it was) here.
    Cancelled,
    /// The stream failed: the guest is being resumed here and the destination told to discard
    /// its copy. QEMU's own `failed` shows as this until the source is settled.
    Failing,
    /// Ended: the guest runs (or stays paused, as it was) here; `detail` says why.
    Failed,
    /// The outcome could not be established (e.g. the destination vanished while it was
    /// taking over): the guest is left paused, never run twice.
    Unknown,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Cancelled | Phase::Failed | Phase::Unknown
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Setup => "setup",
            Phase::Precopy => "precopy",
            Phase::Postcopy => "postcopy",
            Phase::Switchover => "switchover",
            Phase::Finishing => "finishing",
            Phase::Completed => "completed",
            Phase::Cancelling => "cancelling",
            Phase::Cancelled => "cancelled",
            Phase::Failing => "failing",
            Phase::Failed => "failed",
            Phase::Unknown => "unknown",
        }
    }

    /// QEMU's status as a phase. Never a final one: QEMU's `failed`/`cancelled` only end the
    /// stream, and a client told "failed" must be able to rely on the guest running here, so
    /// the final phase is the driver's, set once the source is settled.
    pub fn from_qemu(status: &MigrationStatus) -> Phase {
        match status {
            MigrationStatus::None | MigrationStatus::Setup => Phase::Setup,
            MigrationStatus::Active | MigrationStatus::WaitUnplug => Phase::Precopy,
            MigrationStatus::PostcopyActive
            | MigrationStatus::PostcopyPaused
            | MigrationStatus::PostcopyRecover => Phase::Postcopy,
            MigrationStatus::PreSwitchover | MigrationStatus::Device => Phase::Switchover,
            MigrationStatus::Completed => Phase::Finishing,
            MigrationStatus::Cancelling | MigrationStatus::Cancelled => Phase::Cancelling,
            MigrationStatus::Failed => Phase::Failing,
            _ => Phase::Precopy,
        }
    }
}

/// A migration as `GET /v1/domains/{name}/migration` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub id: String,
    pub phase: Phase,
    /// The destination daemon's URL.
    pub destination: String,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    /// Bytes per second the guest dirties (QEMU's last estimate).
    pub dirty_rate_bytes: u64,
    /// Passes over memory (QEMU's dirty-sync-count).
    pub iterations: u64,
    /// Bytes per second on the wire.
    pub throughput_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_downtime_ms: Option<u64>,
    /// The real pause, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// From the source QEMU's "completed" to the destination's answer that the guest runs
    /// there (its `cont` done): the daemons' share of the pause the guest sees, which QEMU's
    /// `downtime_ms` does not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_ms: Option<u64>,
    /// The guest's pause as QEMU stamps it: the source QEMU's STOP event to the destination
    /// QEMU's RESUME event (each host's wall clock: exact on one host, off by the clocks'
    /// difference between two). What a raw-QMP migration is measured by too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
    /// Milliseconds since the migration started.
    pub elapsed_ms: u64,
    /// vCPU throttle applied by auto-converge, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_percent: Option<u64>,
    /// Why it failed, or what the outcome means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Progress {
    pub fn new(id: &str, destination: &str) -> Progress {
        Progress {
            id: id.to_owned(),
            phase: Phase::Preparing,
            destination: destination.to_owned(),
            transferred_bytes: 0,
            remaining_bytes: 0,
            total_bytes: 0,
            dirty_rate_bytes: 0,
            iterations: 0,
            throughput_bytes: 0,
            expected_downtime_ms: None,
            downtime_ms: None,
            handover_ms: None,
            pause_ms: None,
            elapsed_ms: 0,
            cpu_throttle_percent: None,
            detail: None,
        }
    }

    /// Folds in a `query-migrate` answer. The phase follows QEMU except where the daemon
    /// knows more (a completed stream is only "finishing" until the destination took over).
    pub fn update(&mut self, info: &MigrationInfo, elapsed_ms: u64) {
        if let Some(status) = &info.status {
            if !self.phase.is_final() && self.phase != Phase::Finishing {
                self.phase = Phase::from_qemu(status);
            }
        }
        if let Some(ram) = &info.ram {
            self.transferred_bytes = ram.transferred;
            self.remaining_bytes = ram.remaining;
            self.total_bytes = ram.total;
            let page = if ram.page_size == 0 {
                4096
            } else {
                ram.page_size
            };
            self.dirty_rate_bytes = ram.dirty_pages_rate.saturating_mul(page);
            self.iterations = ram.dirty_sync_count;
            // mbps is megabits per second.
            self.throughput_bytes = (ram.mbps.max(0.0) * 1_000_000.0 / 8.0) as u64;
        }
        self.expected_downtime_ms = info.expected_downtime.or(self.expected_downtime_ms);
        self.downtime_ms = info.downtime.or(self.downtime_ms);
        self.cpu_throttle_percent = info.cpu_throttle_percentage;
        self.elapsed_ms = info.total_time.unwrap_or(elapsed_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_query_migrate() {
        let info: MigrationInfo = serde_json::from_value(serde_json::json!({
            "status": "active", "expected-downtime": 120, "total-time": 900,
            "ram": {"transferred": 100, "remaining": 50, "total": 150, "dirty-pages-rate": 10,
                    "page-size": 4096, "dirty-sync-count": 3, "mbps": 80.0}
        }))
        .unwrap();
        let mut p = Progress::new("m1", "http://h:1");
        p.update(&info, 5);
        assert_eq!(p.phase, Phase::Precopy);
        assert_eq!(p.dirty_rate_bytes, 40960);
        assert_eq!(p.iterations, 3);
        assert_eq!(p.throughput_bytes, 10_000_000);
        assert_eq!(p.elapsed_ms, 900);
        p.phase = Phase::Finishing;
        p.update(&info, 5);
        assert_eq!(p.phase, Phase::Finishing, "the daemon's own phase wins");
    }

    #[test]
    fn qemus_end_of_stream_is_never_final() {
        for (status, phase) in [
            ("failed", Phase::Failing),
            ("cancelled", Phase::Cancelling),
            ("cancelling", Phase::Cancelling),
            ("completed", Phase::Finishing),
        ] {
            let info: MigrationInfo =
                serde_json::from_value(serde_json::json!({ "status": status })).unwrap();
            let mut p = Progress::new("m1", "http://h:1");
            p.update(&info, 5);
            assert_eq!(p.phase, phase, "QEMU {status}");
            assert!(
                !p.phase.is_final(),
                "QEMU {status} must not end the migration"
            );
        }
    }
}
