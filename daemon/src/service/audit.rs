//! The audit log: every mutating operation, who asked for it, and how it ended. The faces say
//! who is calling once per request ([`as_actor`]); the service records, so no face can forget.
//! One JSON object per line in `<log_dir>/audit.log`, and a `tracing` event (target `audit`).

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use novacron_domain::Error;
use serde::Serialize;

use super::events::now_unix_ms;

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
    /// What the caller may do, as its face established it. `None` (a face that did not say)
    /// is treated like any non-admin role: restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::config::Role>,
}

impl Actor {
    /// The daemon acting on its own (autostart, restarts): admin, but what it starts is held
    /// to the rules the definition was accepted under, not to this role.
    pub fn daemon() -> Actor {
        Actor {
            via: "daemon",
            role: Some(crate::config::Role::Admin),
            ..Actor::default()
        }
    }

    /// Only `Admin` is admin: every other role (operator, migration peer, unknown) is held
    /// to the storage roots.
    pub fn is_admin(&self) -> bool {
        self.role == Some(crate::config::Role::Admin)
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
}

impl AuditLog {
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            file: Mutex::new(()),
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
        tracing::info!(
            target: "audit",
            via = actor.via,
            uid = actor.uid,
            token = actor.token.as_deref(),
            bus_name = actor.bus_name.as_deref(),
            op,
            domain,
            result = outcome,
            "audit"
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
