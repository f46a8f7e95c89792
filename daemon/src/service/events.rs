//! Domain events: every state change and notable happening, on one bus. The HTTP event stream,
//! D-Bus signals and metrics all read from here; a bounded replay buffer lets a client that
//! reconnects resume from the last sequence number it saw.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use novacron_domain::DomainState;
use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainEvent {
    /// Strictly increasing over the daemon's lifetime; resumption key.
    pub seq: u64,
    pub time_unix_ms: u64,
    pub domain: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    Defined {
        persistent: bool,
    },
    Undefined,
    StateChanged {
        from: DomainState,
        to: DomainState,
        #[serde(flatten)]
        reason: StateReason,
    },
    /// The guest was reset (by itself, by `reset`, or as part of a reboot).
    Reset,
    /// The guest reported a panic (pvpanic); `action` is what the daemon did about it.
    GuestPanicked {
        action: String,
    },
    /// A restarted daemon found this guest running and took it back.
    Reconnected {
        pid: u32,
    },
    /// A restarted daemon found this guest's QEMU alive but could not talk to it; the guest is
    /// left alone, never killed.
    ReconnectFailed {
        pid: u32,
        error: String,
    },
    /// A restarted daemon found pinned threads running elsewhere than planned, and put them
    /// back.
    PinsRestored {
        drifted: Vec<super::placement::Drift>,
    },
    /// A restarted daemon found the guest's vCPUs or memory devices differing from its record
    /// (QEMU is the truth: the record was corrected).
    LiveDevicesDrifted {
        drifted: Vec<String>,
    },
    /// A domain on a remote vendor host changed power state (`from` absent: it appeared;
    /// `to` absent: it is gone). `domain` is the vendor's VM name.
    RemoteStateChanged {
        host: String,
        from: Option<DomainState>,
        to: Option<DomainState>,
    },
    /// A live migration began (`role`: source or destination).
    MigrationStarted {
        id: String,
        role: String,
        peer: String,
    },
    /// Where a migration is (sent about once a second while it runs).
    MigrationProgress {
        #[serde(flatten)]
        progress: super::migration::Progress,
    },
    /// A migration ended: `outcome` completed, failed, cancelled or unknown; what happened.
    MigrationFinished {
        id: String,
        outcome: String,
        detail: String,
    },
}

/// Why a state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum StateReason {
    Starting,
    Booted,
    StartFailed(String),
    Paused,
    Resumed,
    ShutdownRequested,
    /// The guest ignored the power button for the whole timeout.
    ShutdownTimedOut,
    /// The guest powered off.
    GuestShutdown,
    Destroyed,
    /// QEMU died without being asked to: signal or exit status.
    QemuDied(String),
    /// Found stopped when the daemon (re)started.
    ExitedWhileDaemonDown,
    Reconnected,
    GuestPanicked,
    /// A migration away began.
    MigrationStarted,
    /// The guest now runs on another host.
    MigratedAway,
    /// The guest arrived from another host.
    MigratedIn,
    /// A migration failed or was cancelled; the guest stayed here.
    MigrationAborted(String),
    /// A new QEMU continues the guest from a full snapshot's RAM (`snapshot-revert`).
    Restored,
}

const REPLAY: usize = 1024;

/// The bus. Publishing never blocks; a slow subscriber lags (and is told) instead.
pub struct EventBus {
    tx: broadcast::Sender<Arc<DomainEvent>>,
    /// Sequence numbers are assigned under this lock so replay order equals broadcast order.
    recent: Mutex<Recent>,
    /// Each domain's uuid, for the log lines (shared with the audit log).
    pub uuids: Arc<super::uuids::DomainUuids>,
}

struct Recent {
    next_seq: u64,
    events: VecDeque<Arc<DomainEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(REPLAY).0,
            recent: Mutex::new(Recent {
                next_seq: 1,
                events: VecDeque::with_capacity(REPLAY),
            }),
            uuids: Arc::default(),
        }
    }
}

impl EventBus {
    pub fn publish(&self, domain: &str, kind: EventKind) -> Arc<DomainEvent> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let event = Arc::new(DomainEvent {
            seq: recent.next_seq,
            time_unix_ms: now_unix_ms(),
            domain: domain.to_owned(),
            kind,
        });
        recent.next_seq += 1;
        if recent.events.len() == REPLAY {
            recent.events.pop_front();
        }
        recent.events.push_back(event.clone());
        let uuid = match event.kind {
            EventKind::RemoteStateChanged { .. } => None,
            _ => self.uuids.get(domain),
        };
        super::event_log::log(&event, uuid.as_deref());
        // No subscriber is fine.
        let _ = self.tx.send(event.clone());
        event
    }

    /// Subscribes, and returns what is still buffered after `after_seq` (for resumption). The
    /// subscription is taken under the same lock as publishing, so nothing falls in between.
    pub fn subscribe_after(
        &self,
        after_seq: Option<u64>,
    ) -> (Vec<Arc<DomainEvent>>, broadcast::Receiver<Arc<DomainEvent>>) {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.tx.subscribe();
        let backlog = match after_seq {
            Some(seq) => recent
                .events
                .iter()
                .filter(|e| e.seq > seq)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (backlog, rx)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DomainEvent>> {
        self.tx.subscribe()
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_resumption() {
        let bus = EventBus::default();
        bus.publish("a", EventKind::Reset);
        bus.publish("b", EventKind::Undefined);
        let (backlog, mut rx) = bus.subscribe_after(Some(1));
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].domain, "b");
        assert_eq!(backlog[0].seq, 2);
        bus.publish("c", EventKind::Reset);
        assert_eq!(rx.try_recv().unwrap().seq, 3);
    }

    #[test]
    fn serializes_flat() {
        let bus = EventBus::default();
        let e = bus.publish(
            "vm1",
            EventKind::StateChanged {
                from: DomainState::Running,
                to: DomainState::Crashed,
                reason: StateReason::QemuDied("killed by signal 9".into()),
            },
        );
        let v = serde_json::to_value(&*e).unwrap();
        assert_eq!(v["event"], "state_changed");
        assert_eq!(v["to"], "crashed");
        assert_eq!(v["reason"], "qemu_died");
        assert_eq!(v["detail"], "killed by signal 9");
    }
}
