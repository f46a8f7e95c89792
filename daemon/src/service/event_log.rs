//! Domain events as log lines: a message that says what happened ("domain web1: shutoff ->
//! running (booted)"), and the facts as fields (journald: `DOMAIN=`, `UUID=`, `EVENT=`,
//! `FROM=`, `TO=`, `REASON=`, ...), with the event stream's names for events and reasons.
//! Trouble (a QEMU that died, a guest that panicked, a guest that cannot be reconnected) is
//! a warning; migration progress, sent every second, is debug.

use super::events::{DomainEvent, EventKind};

/// Logs `event`; `uuid` is the domain's, when it is a local domain.
pub fn log(event: &DomainEvent, uuid: Option<&str>) {
    let line = Line::of(event);
    let domain = event.domain.as_str();
    let seq = event.seq;
    let (event, from, to, reason, detail, host, pid) = (
        line.event.as_str(),
        line.from.as_deref(),
        line.to.as_deref(),
        line.reason.as_deref(),
        line.detail.as_deref(),
        line.host,
        line.pid,
    );
    let message = line.message;
    match line.level {
        Level::Warn => {
            tracing::warn!(target: "novacrond::events", domain, uuid, event, seq, from, to, reason, detail, host, pid, "{message}")
        }
        Level::Info => {
            tracing::info!(target: "novacrond::events", domain, uuid, event, seq, from, to, reason, detail, host, pid, "{message}")
        }
        Level::Debug => {
            tracing::debug!(target: "novacrond::events", domain, uuid, event, seq, from, to, reason, detail, host, pid, "{message}")
        }
    }
}

enum Level {
    Warn,
    Info,
    Debug,
}

struct Line<'a> {
    level: Level,
    message: String,
    /// The event stream's name (`state_changed`, ...).
    event: String,
    from: Option<String>,
    to: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
    host: Option<&'a str>,
    pid: Option<u32>,
}

impl<'a> Line<'a> {
    fn of(e: &'a DomainEvent) -> Line<'a> {
        let name = &e.domain;
        // The names the HTTP event stream uses (serde's tags), so logs and events agree.
        let json = serde_json::to_value(e).unwrap_or_default();
        let text = |k: &str| json[k].as_str().map(str::to_owned);
        let mut line = Line {
            level: Level::Info,
            message: String::new(),
            event: text("event").unwrap_or_default(),
            from: None,
            to: None,
            reason: None,
            detail: None,
            host: None,
            pid: None,
        };
        line.message = match &e.kind {
            EventKind::Defined { persistent: true } => format!("domain {name}: defined"),
            EventKind::Defined { persistent: false } => {
                format!("domain {name}: created (transient)")
            }
            EventKind::Undefined => format!("domain {name}: undefined"),
            EventKind::StateChanged { from, to, .. } => {
                line.from = Some(from.to_string());
                line.to = Some(to.to_string());
                line.reason = text("reason");
                line.detail = text("detail");
                if matches!(line.reason.as_deref(), Some("qemu_died" | "start_failed")) {
                    line.level = Level::Warn;
                }
                let why = line.reason.as_deref().unwrap_or_default().replace('_', " ");
                match &line.detail {
                    Some(detail) => format!("domain {name}: {from} -> {to} ({why}: {detail})"),
                    None => format!("domain {name}: {from} -> {to} ({why})"),
                }
            }
            EventKind::Reset => format!("domain {name}: reset"),
            EventKind::GuestPanicked { action } => {
                line.level = Level::Warn;
                line.detail = Some(action.clone());
                format!("domain {name}: the guest panicked; {action}")
            }
            EventKind::Reconnected { pid } => {
                line.pid = Some(*pid);
                format!("domain {name}: reconnected to its QEMU (pid {pid})")
            }
            EventKind::ReconnectFailed { pid, error } => {
                line.level = Level::Warn;
                line.pid = Some(*pid);
                line.detail = Some(error.clone());
                format!("domain {name}: cannot reconnect to its QEMU (pid {pid}), left running: {error}")
            }
            EventKind::PinsRestored { drifted } => format!(
                "domain {name}: {} pinned thread(s) had drifted and were put back",
                drifted.len()
            ),
            EventKind::LiveDevicesDrifted { drifted } => format!(
                "domain {name}: the live device set had drifted ({}); record corrected",
                drifted.join("; ")
            ),
            EventKind::RemoteStateChanged { host, from, to } => {
                line.host = Some(host);
                line.from = from.map(|s| s.to_string());
                line.to = to.map(|s| s.to_string());
                match (from, to) {
                    (None, Some(to)) => format!("remote host {host}: VM {name} appeared ({to})"),
                    (Some(_), None) | (None, None) => {
                        format!("remote host {host}: VM {name} is gone")
                    }
                    (Some(from), Some(to)) => {
                        format!("remote host {host}: VM {name}: {from} -> {to}")
                    }
                }
            }
            EventKind::MigrationStarted { id, role, peer } => {
                format!("domain {name}: migration {id} started ({role}, peer {peer})")
            }
            EventKind::MigrationProgress { progress } => {
                line.level = Level::Debug;
                line.detail = serde_json::to_string(progress).ok();
                format!(
                    "domain {name}: migration {}: {} of {} bytes sent",
                    progress.id, progress.transferred_bytes, progress.total_bytes
                )
            }
            EventKind::MigrationFinished {
                id,
                outcome,
                detail,
            } => {
                if outcome != "completed" {
                    line.level = Level::Warn;
                }
                line.reason = Some(outcome.clone());
                line.detail = Some(detail.clone());
                format!("domain {name}: migration {id} {outcome}: {detail}")
            }
        };
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::events::StateReason;
    use novacron_domain::DomainState;

    fn event(kind: EventKind) -> DomainEvent {
        DomainEvent {
            seq: 1,
            time_unix_ms: 0,
            domain: "web1".into(),
            kind,
        }
    }

    #[test]
    fn state_changes_say_from_to_and_why_with_the_stream_names() {
        let e = event(EventKind::StateChanged {
            from: DomainState::Running,
            to: DomainState::Shutoff,
            reason: StateReason::QemuDied("killed by signal 9".into()),
        });
        let line = Line::of(&e);
        assert_eq!(
            line.message,
            "domain web1: running -> shutoff (qemu died: killed by signal 9)"
        );
        assert_eq!(line.event, "state_changed");
        assert_eq!(line.from.as_deref(), Some("running"));
        assert_eq!(line.to.as_deref(), Some("shutoff"));
        assert_eq!(line.reason.as_deref(), Some("qemu_died"));
        assert_eq!(line.detail.as_deref(), Some("killed by signal 9"));
        assert!(matches!(line.level, Level::Warn));

        let e = event(EventKind::StateChanged {
            from: DomainState::Starting,
            to: DomainState::Running,
            reason: StateReason::Booted,
        });
        let line = Line::of(&e);
        assert_eq!(line.message, "domain web1: starting -> running (booted)");
        assert_eq!(line.detail, None);
        assert!(matches!(line.level, Level::Info));
    }

    #[test]
    fn other_events_name_themselves() {
        let e = event(EventKind::Reconnected { pid: 42 });
        let line = Line::of(&e);
        assert_eq!(line.event, "reconnected");
        assert_eq!(line.pid, Some(42));
        assert_eq!(
            line.message,
            "domain web1: reconnected to its QEMU (pid 42)"
        );
        let e = event(EventKind::Defined { persistent: true });
        let line = Line::of(&e);
        assert_eq!(
            (line.event.as_str(), line.message.as_str()),
            ("defined", "domain web1: defined")
        );
        let e = event(EventKind::RemoteStateChanged {
            host: "esx1".into(),
            from: None,
            to: Some(DomainState::Running),
        });
        let line = Line::of(&e);
        assert_eq!(line.message, "remote host esx1: VM web1 appeared (running)");
        assert_eq!(line.host, Some("esx1"));
    }
}
