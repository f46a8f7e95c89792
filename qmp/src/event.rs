//! QMP events: a typed view of the ones the daemon acts on, with the raw data always kept.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::qapi::{
    BlockErrorAction, GuestPanicAction, IoOperationType, JobType, MigrationStatus, ShutdownCause,
};

/// When QEMU emitted the event (host wall clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

/// One event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub timestamp: Timestamp,
    /// The event's `data` member exactly as received (`null` when absent).
    pub data: Value,
    name: String,
}

/// Typed events. An event whose name is unknown, or whose data does not have the documented
/// shape, is `Other`: the name and raw data stay available on [`Event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    Shutdown {
        guest: bool,
        reason: ShutdownCause,
    },
    Powerdown,
    Reset {
        guest: bool,
        reason: ShutdownCause,
    },
    Stop,
    Resume,
    Suspend,
    SuspendDisk,
    Wakeup,
    GuestPanicked {
        action: GuestPanicAction,
    },
    GuestCrashloaded {
        action: GuestPanicAction,
    },
    Migration {
        status: MigrationStatus,
    },
    MigrationPass {
        pass: u64,
    },
    BlockJobCompleted(BlockJobInfo),
    BlockJobCancelled(BlockJobInfo),
    BlockJobReady(BlockJobInfo),
    BlockJobError {
        device: String,
        operation: IoOperationType,
        action: BlockErrorAction,
    },
    DeviceDeleted {
        device: Option<String>,
        path: String,
    },
    RtcChange {
        offset: i64,
    },
    BalloonChange {
        actual: u64,
    },
    Watchdog {
        action: String,
    },
    Other,
}

/// The data of BLOCK_JOB_COMPLETED / _CANCELLED / _READY.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockJobInfo {
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub device: String,
    pub len: u64,
    pub offset: u64,
    pub speed: u64,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct GuestReason {
    guest: bool,
    reason: ShutdownCause,
}

#[derive(Deserialize)]
struct PanicData {
    action: GuestPanicAction,
}

#[derive(Deserialize)]
struct BlockJobErrorData {
    device: String,
    operation: IoOperationType,
    action: BlockErrorAction,
}

#[derive(Deserialize)]
struct DeviceDeletedData {
    #[serde(default)]
    device: Option<String>,
    path: String,
}

/// The event names [`EventKind`] types (the drift test checks QEMU still emits each).
pub const TYPED_EVENTS: &[&str] = &[
    "SHUTDOWN",
    "POWERDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "SUSPEND",
    "SUSPEND_DISK",
    "WAKEUP",
    "GUEST_PANICKED",
    "GUEST_CRASHLOADED",
    "MIGRATION",
    "MIGRATION_PASS",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_READY",
    "BLOCK_JOB_ERROR",
    "DEVICE_DELETED",
    "RTC_CHANGE",
    "BALLOON_CHANGE",
    "WATCHDOG",
];

impl Event {
    pub fn new(name: String, data: Value, timestamp: Timestamp) -> Event {
        let kind = EventKind::parse(&name, &data).unwrap_or(EventKind::Other);
        Event {
            kind,
            timestamp,
            data,
            name,
        }
    }

    /// The event name as QEMU sent it, e.g. `SHUTDOWN`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl EventKind {
    fn parse(name: &str, data: &Value) -> Option<EventKind> {
        fn de<T: serde::de::DeserializeOwned>(data: &Value) -> Option<T> {
            T::deserialize(data).ok()
        }
        Some(match name {
            "SHUTDOWN" => {
                let d: GuestReason = de(data)?;
                EventKind::Shutdown {
                    guest: d.guest,
                    reason: d.reason,
                }
            }
            "POWERDOWN" => EventKind::Powerdown,
            "RESET" => {
                let d: GuestReason = de(data)?;
                EventKind::Reset {
                    guest: d.guest,
                    reason: d.reason,
                }
            }
            "STOP" => EventKind::Stop,
            "RESUME" => EventKind::Resume,
            "SUSPEND" => EventKind::Suspend,
            "SUSPEND_DISK" => EventKind::SuspendDisk,
            "WAKEUP" => EventKind::Wakeup,
            "GUEST_PANICKED" => EventKind::GuestPanicked {
                action: de::<PanicData>(data)?.action,
            },
            "GUEST_CRASHLOADED" => EventKind::GuestCrashloaded {
                action: de::<PanicData>(data)?.action,
            },
            "MIGRATION" => EventKind::Migration {
                status: data.get("status").and_then(de)?,
            },
            "MIGRATION_PASS" => EventKind::MigrationPass {
                pass: data.get("pass")?.as_u64()?,
            },
            "BLOCK_JOB_COMPLETED" => EventKind::BlockJobCompleted(de(data)?),
            "BLOCK_JOB_CANCELLED" => EventKind::BlockJobCancelled(de(data)?),
            "BLOCK_JOB_READY" => EventKind::BlockJobReady(de(data)?),
            "BLOCK_JOB_ERROR" => {
                let d: BlockJobErrorData = de(data)?;
                EventKind::BlockJobError {
                    device: d.device,
                    operation: d.operation,
                    action: d.action,
                }
            }
            "DEVICE_DELETED" => {
                let d: DeviceDeletedData = de(data)?;
                EventKind::DeviceDeleted {
                    device: d.device,
                    path: d.path,
                }
            }
            "RTC_CHANGE" => EventKind::RtcChange {
                offset: data.get("offset")?.as_i64()?,
            },
            "BALLOON_CHANGE" => EventKind::BalloonChange {
                actual: data.get("actual")?.as_u64()?,
            },
            "WATCHDOG" => EventKind::Watchdog {
                action: data.get("action")?.as_str()?.to_owned(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: Value) -> EventKind {
        Event::new(name.into(), data, Timestamp::default()).kind
    }

    #[test]
    fn typed_events() {
        assert_eq!(
            ev("RESET", json!({"guest": true, "reason": "guest-reset"})),
            EventKind::Reset {
                guest: true,
                reason: ShutdownCause::GuestReset
            }
        );
        assert_eq!(
            ev("MIGRATION", json!({"status": "completed"})),
            EventKind::Migration {
                status: MigrationStatus::Completed
            }
        );
        assert_eq!(
            ev(
                "DEVICE_DELETED",
                json!({"path": "/machine/peripheral/nic1"})
            ),
            EventKind::DeviceDeleted {
                device: None,
                path: "/machine/peripheral/nic1".into()
            }
        );
        assert_eq!(ev("STOP", Value::Null), EventKind::Stop);
    }

    #[test]
    fn unknown_or_malformed_events_keep_name_and_data() {
        let e = Event::new("NEW_THING".into(), json!({"x": 1}), Timestamp::default());
        assert_eq!(e.kind, EventKind::Other);
        assert_eq!(e.name(), "NEW_THING");
        assert_eq!(e.data, json!({"x": 1}));
        // A SHUTDOWN whose data lacks the documented members is not trusted as typed.
        assert_eq!(ev("SHUTDOWN", json!({"guest": "yes"})), EventKind::Other);
        // New enum values do not demote the event.
        assert_eq!(
            ev(
                "SHUTDOWN",
                json!({"guest": true, "reason": "future-reason"})
            ),
            EventKind::Shutdown {
                guest: true,
                reason: ShutdownCause::Other("future-reason".into())
            }
        );
    }
}
