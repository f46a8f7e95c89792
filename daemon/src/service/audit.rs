//! The audit log: every mutating operation, who asked for it, and how it ended. The faces say
//! who is calling once per request ([`as_actor`]); the service records, so no face can forget.
//! One JSON object per line in `<log_dir>/audit.log`, and a `tracing` event (target `audit`).

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use novacron_domain::Error;
use serde::Serialize;

use super::events::now_unix_ms;
use super::uuids::DomainUuids;

/// Who asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `http-unix`, `http-tcp`, `dbus`, or `daemon` (autostart, restarts after a crash).
    pub via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The name of the API token (never the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The D-Bus unique name of the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_name: Option<String>,
}

impl Actor {
    pub fn daemon() -> Actor {
        Actor {
            via: "daemon",
            ..Actor::default()
        }
    }
}

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `work` on behalf of `actor`: what it does is audited under that name.
pub async fn as_actor<F: Future>(actor: Actor, work: F) -> F::Output {
    ACTOR.scope(actor, work).await
}

/// The caller of the operation running now (the daemon itself outside any request).
pub fn current() -> Actor {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Actor::daemon())
}

#[derive(Serialize)]
struct Entry<'a> {
    time_unix_ms: u64,
    actor: &'a Actor,
    op: &'a str,
    domain: &'a str,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub struct AuditLog {
    path: PathBuf,
    /// Serialises appends so lines never interleave.
    file: Mutex<()>,
    /// The domains' uuids, for the log line's `uuid` field.
    uuids: Arc<DomainUuids>,
}

impl AuditLog {
    pub fn new(path: PathBuf, uuids: Arc<DomainUuids>) -> AuditLog {
        AuditLog {
            path,
            file: Mutex::new(()),
            uuids,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Records `op` on `domain` with its outcome, for the current actor.
    pub fn record<T>(&self, op: &str, domain: &str, result: &Result<T, Error>) {
        match result {
            Ok(_) => self.record_outcome(op, domain, "ok", None),
            Err(e) => self.record_outcome(op, domain, e.code().as_str(), Some(e.to_string())),
        }
    }

    /// Records an outcome given as a result code (`ok` or an error code) and message.
    pub fn record_outcome(&self, op: &str, domain: &str, outcome: &str, error: Option<String>) {
        let actor = current();
        // Remote operations name a vendor host's VM, not one of ours.
        let uuid = (!op.starts_with("remote "))
            .then(|| self.uuids.get(domain))
            .flatten();
        let message = describe(op, domain, &actor, outcome, error.as_deref());
        tracing::info!(
            target: "audit",
            via = actor.via,
            uid = actor.uid,
            token = actor.token.as_deref(),
            bus_name = actor.bus_name.as_deref(),
            op,
            domain,
            uuid,
            result = outcome,
            error = error.as_deref(),
            "{message}"
        );
        let entry = Entry {
            time_unix_ms: now_unix_ms(),
            actor: &actor,
            op,
            domain,
            result: outcome,
            error,
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        // A small append to a local file: done inline (one write(2)), so the entry is there
        // when the operation's answer reaches the caller.
        let _guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written =
            crate::qemu::logs::open_append(&self.path).and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }
}

/// The log line's message: "audit: start web1 by http-unix (uid 1000): ok".
fn describe(op: &str, domain: &str, actor: &Actor, outcome: &str, error: Option<&str>) -> String {
    let mut who = actor.via.to_owned();
    let mut details = Vec::new();
    if let Some(uid) = actor.uid {
        details.push(format!("uid {uid}"));
    }
    if let Some(token) = &actor.token {
        details.push(format!("token {token}"));
    }
    if let Some(bus_name) = &actor.bus_name {
        details.push(format!("bus name {bus_name}"));
    }
    if !details.is_empty() {
        who = format!("{who} ({})", details.join(", "));
    }
    let target = if domain.is_empty() {
        String::new()
    } else {
        format!(" {domain}")
    };
    match error {
        Some(error) => format!("audit: {op}{target} by {who}: {outcome}: {error}"),
        None => format!("audit: {op}{target} by {who}: {outcome}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_who_did_what_to_which_and_how_it_ended() {
        let actor = Actor {
            via: "http-unix",
            uid: Some(1000),
            ..Actor::default()
        };
        assert_eq!(
            describe("start", "web1", &actor, "ok", None),
            "audit: start web1 by http-unix (uid 1000): ok"
        );
        let actor = Actor {
            via: "dbus",
            uid: Some(0),
            bus_name: Some(":1.42".into()),
            ..Actor::default()
        };
        assert_eq!(
            describe("define", "web1", &actor, "invalid_config", Some("bad vcpu")),
            "audit: define web1 by dbus (uid 0, bus name :1.42): invalid_config: bad vcpu"
        );
        assert_eq!(
            describe("reload", "", &Actor::daemon(), "ok", None),
            "audit: reload by daemon: ok"
        );
    }
}
