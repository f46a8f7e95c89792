//! The audit log: every mutating operation, who asked for it, and how it ended. The faces say
//! who is calling once per request ([`as_actor`]); the service records, so no face can forget.
//! One JSON object per line in `<log_dir>/audit.log`, and a `tracing` event (target `audit`).
//!
//! Refused calls (HTTP 401/403, D-Bus access denials) are recorded by the face that refused
//! them with [`Service::audit_refused`]; repeats from one caller are folded (see [`Refusals`]).
//!
//! The file is the daemon's alone: opened per line append-only (`O_APPEND`, never truncated),
//! not through a symlink, created 0640; no guest log shares its directory entry or its cap.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    /// The TCP peer (address and port): who presented a token, or failed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
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

/// Runs `f` (synchronous) on behalf of `actor`.
pub fn with_actor<R>(actor: Actor, f: impl FnOnce() -> R) -> R {
    ACTOR.sync_scope(actor, f)
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
    refusals: Mutex<Refusals>,
    /// Woken when a refusal was folded: its count is written once its window ends.
    folded: Arc<tokio::sync::Notify>,
    /// The domains' uuids, for the log line's `uuid` field.
    uuids: Arc<DomainUuids>,
}

impl AuditLog {
    pub fn new(path: PathBuf, uuids: Arc<DomainUuids>) -> AuditLog {
        AuditLog {
            path,
            file: Mutex::new(()),
            refusals: Mutex::new(Refusals::default()),
            folded: Arc::default(),
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
        self.append(&entry);
    }

    /// Records a refused call. The first refusal of a caller (see [`Refusal::caller`]) in a
    /// window of [`FOLD_WINDOW`] is written at once; later ones in the window are counted and
    /// written as one line (`count`, the last one asked) when it ends. So a flood of bad
    /// tokens costs at most about two lines a second per caller, and [`MAX_CALLERS`] callers
    /// are told apart (the rest share one count).
    pub fn refused(&self, refusal: Refusal) {
        tracing::info!(
            target: "audit",
            via = refusal.actor.via,
            uid = refusal.actor.uid,
            token = refusal.actor.token.as_deref(),
            bus_name = refusal.actor.bus_name.as_deref(),
            peer = refusal.actor.peer.map(|p| p.to_string()),
            asked = %refusal.asked,
            result = refusal.outcome.as_str(),
            reason = %refusal.reason,
            "refused"
        );
        let now = Instant::now();
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        match refusals.note(&refusal, now) {
            Noted::Write(earlier) => {
                if let Some(earlier) = earlier {
                    self.append(&earlier.entry());
                }
                self.append(&Folded::single(refusal).entry());
            }
            Noted::Folded => self.folded.notify_one(),
        }
    }

    /// Writes the counts of windows that have ended; true while some are still open.
    pub fn flush_refusals(&self) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        let (due, pending) = refusals.take_due(Instant::now(), false);
        for folded in due {
            self.append(&folded.entry());
        }
        pending
    }

    /// What a flusher waits on (see `Service::open`).
    pub fn folded_signal(&self) -> Arc<tokio::sync::Notify> {
        self.folded.clone()
    }

    fn append<E: Serialize>(&self, entry: &E) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        // A small append to a local file: done inline (one write(2)), so the entry is there
        // when the operation's answer reaches the caller. Opened per line, so an
        // administrator's rotation (rename, then a new file) takes effect at once.
        let _guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let written = open_audit(&self.path).and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }
}

impl Drop for AuditLog {
    /// Counts still open are written as the daemon stops.
    fn drop(&mut self) {
        let due = self
            .refusals
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take_due(Instant::now(), true)
            .0;
        for folded in due {
            self.append(&folded.entry());
        }
    }
}

/// The audit log's mode when this daemon creates it; a file found with more is narrowed.
pub const AUDIT_MODE: u32 = 0o640;

/// Opens the audit log for appending: `O_APPEND` (every write lands at the end; nothing here
/// truncates), `O_NOFOLLOW` (no symlink planted in the log directory redirects a root-owned
/// write), `O_NONBLOCK` (a FIFO there cannot hang the daemon). It must be a regular file owned
/// by us.
fn open_audit(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(AUDIT_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let refuse = |why: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    if !meta.is_file() {
        return refuse(format!("{} is not a regular file", path.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return refuse(format!(
            "{} is owned by uid {}, not by us (uid {euid})",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !AUDIT_MODE != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & AUDIT_MODE))?;
    }
    Ok(file)
}

/// What a refused caller asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Asked {
    Http {
        method: String,
        path: String,
    },
    Dbus {
        interface: String,
        member: String,
        object: String,
    },
    /// A connection to the HTTP API, refused before any request was read.
    Connection {
        connection: &'static str,
    },
}

/// Longest request path kept in an audit line (paths are the caller's to choose).
const MAX_ASKED_PATH: usize = 512;

impl Asked {
    pub fn http(method: &str, path: &str) -> Asked {
        let mut path = path.to_owned();
        if path.len() > MAX_ASKED_PATH {
            let mut end = MAX_ASKED_PATH;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path.truncate(end);
            path.push('…');
        }
        Asked::Http {
            method: method.to_owned(),
            path,
        }
    }
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Http { method, path } => write!(f, "{method} {path}"),
            Asked::Dbus {
                interface,
                member,
                object,
            } => write!(f, "{interface}.{member} on {object}"),
            Asked::Connection { connection } => write!(f, "a {connection} connection"),
        }
    }
}

/// How a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// No credentials, or ones not known here (HTTP 401).
    Unauthorized,
    /// A known caller not allowed this (HTTP 403).
    Forbidden,
    /// The D-Bus authorisation (polkit) said no, or could not be asked.
    AccessDenied,
    /// Over a connection or stream cap (HTTP 429/503).
    TooMany,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unauthorized => "unauthorized",
            Refused::Forbidden => "forbidden",
            Refused::AccessDenied => "access_denied",
            Refused::TooMany => "too_many",
        }
    }
}

/// One refused call: who, what they asked, how it was refused and why. Never a secret: an
/// unknown token is recorded by the peer that presented it, not by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub actor: Actor,
    pub asked: Asked,
    pub outcome: Refused,
    pub reason: String,
}

impl Refusal {
    /// Who repeats are counted for: the token, else the uid, else the peer's address
    /// (without the port, which changes per connection), else the bus name.
    fn caller(&self) -> Caller {
        let a = &self.actor;
        let who = if let Some(t) = &a.token {
            Who::Token(t.clone())
        } else if let Some(uid) = a.uid {
            Who::Uid(uid)
        } else if let Some(peer) = a.peer {
            Who::Ip(fold_key(peer.ip()))
        } else if let Some(bus) = &a.bus_name {
            Who::Bus(bus.clone())
        } else {
            Who::Untracked
        };
        Caller {
            via: a.via,
            who,
            outcome: self.outcome,
        }
    }
}

/// One IPv6 client holds a whole /64 (as the connection limits count it): its addresses are
/// one caller here too, or rotating them would write a line per address.
fn fold_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Caller {
    via: &'static str,
    who: Who,
    outcome: Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Token(String),
    Uid(u32),
    Ip(std::net::IpAddr),
    Bus(String),
    /// Past `MAX_CALLERS`, or nothing to tell callers apart by.
    Untracked,
}

/// Repeats of one caller's refusals are written at most once per window.
pub const FOLD_WINDOW: Duration = Duration::from_secs(1);
/// Callers whose refusals are counted apart; more share one count, so a flood from many
/// addresses cannot grow this map (or the log) without bound.
pub const MAX_CALLERS: usize = 1024;

/// The refusal windows, per caller.
#[derive(Default)]
pub struct Refusals {
    windows: HashMap<Caller, Window>,
}

struct Window {
    opened: Instant,
    since_unix_ms: u64,
    /// Refusals in this window not written yet, and the last of them.
    folded: u64,
    last: Option<Refusal>,
}

enum Noted {
    /// Write it now, after the previous window's count if it had one.
    Write(Option<Box<Folded>>),
    Folded,
}

/// A line for one refusal, or for `count` of them.
struct Folded {
    refusal: Refusal,
    count: u64,
    since_unix_ms: Option<u64>,
}

impl Folded {
    fn single(refusal: Refusal) -> Folded {
        Folded {
            refusal,
            count: 1,
            since_unix_ms: None,
        }
    }

    fn entry(&self) -> RefusalEntry<'_> {
        RefusalEntry {
            time_unix_ms: now_unix_ms(),
            actor: &self.refusal.actor,
            op: "refused",
            asked: &self.refusal.asked,
            result: self.refusal.outcome,
            error: &self.refusal.reason,
            count: self.count,
            since_unix_ms: self.since_unix_ms,
        }
    }
}

#[derive(Serialize)]
struct RefusalEntry<'a> {
    time_unix_ms: u64,
    actor: &'a Actor,
    op: &'static str,
    asked: &'a Asked,
    result: Refused,
    error: &'a str,
    /// How many refusals this line stands for (the last one's details are shown).
    count: u64,
    /// For a folded count: when its window opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    since_unix_ms: Option<u64>,
}

impl Refusals {
    fn note(&mut self, refusal: &Refusal, now: Instant) -> Noted {
        let mut caller = refusal.caller();
        if self.windows.len() >= MAX_CALLERS && !self.windows.contains_key(&caller) {
            caller.who = Who::Untracked;
        }
        let fresh = Window {
            opened: now,
            since_unix_ms: now_unix_ms(),
            folded: 0,
            last: None,
        };
        match self.windows.get_mut(&caller) {
            Some(w) if now.duration_since(w.opened) < FOLD_WINDOW => {
                w.folded += 1;
                w.last = Some(refusal.clone());
                Noted::Folded
            }
            Some(w) => {
                let earlier = w.take().map(Box::new);
                *w = fresh;
                Noted::Write(earlier)
            }
            None => {
                self.windows.insert(caller, fresh);
                Noted::Write(None)
            }
        }
    }

    /// The counts of windows that ended (all, with `all`); idle windows are forgotten.
    /// Also says whether any count is still waiting for its window to end.
    fn take_due(&mut self, now: Instant, all: bool) -> (Vec<Folded>, bool) {
        let mut due = Vec::new();
        let mut pending = false;
        self.windows.retain(|_, w| {
            let ended = all || now.duration_since(w.opened) >= FOLD_WINDOW;
            if !ended {
                pending |= w.folded > 0;
                return true;
            }
            match w.take() {
                Some(folded) => {
                    due.push(folded);
                    // A new window: a caller still at it gets one line a second.
                    w.opened = now;
                    w.since_unix_ms = now_unix_ms();
                    true
                }
                None => false,
            }
        });
        (due, pending)
    }
}

impl Window {
    fn take(&mut self) -> Option<Folded> {
        let last = self.last.take()?;
        let count = std::mem::take(&mut self.folded);
        Some(Folded {
            refusal: last,
            count,
            since_unix_ms: Some(self.since_unix_ms),
        })
    }
}

impl super::Service {
    /// Records a call a face refused (see [`AuditLog::refused`]).
    pub fn audit_refused(&self, refusal: Refusal) {
        self.inner.audit.refused(refusal);
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

    fn refusal(peer: &str, path: &str) -> Refusal {
        Refusal {
            actor: Actor {
                via: "http-tcp",
                peer: Some(peer.parse().unwrap()),
                ..Actor::default()
            },
            asked: Asked::http("GET", path),
            outcome: Refused::Unauthorized,
            reason: "unknown token".into(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn an_ipv6_client_rotating_addresses_in_its_64_is_one_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::new(tmp.path().join("audit.log"), Arc::default());
        for i in 0..500u32 {
            log.refused(refusal(
                &format!("[2001:db8:0:7::{i:x}]:4000"),
                "/v1/domains",
            ));
        }
        log.refused(refusal("[2001:db8:0:8::1]:4000", "/v1/domains"));
        let first = lines(log.path());
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[1]["actor"]["peer"], "[2001:db8:0:8::1]:4000");
    }

    #[test]
    fn a_flood_from_one_peer_is_one_line_a_window_with_its_count() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::new(tmp.path().join("audit.log"), Arc::default());
        for i in 0..1000 {
            // Another port each time: the peer is its address.
            log.refused(refusal(&format!("192.0.2.7:{}", 1000 + i), "/v1/domains"));
        }
        log.refused(refusal("192.0.2.8:5000", "/v1/host"));
        let first = lines(log.path());
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(first[0]["result"], "unauthorized");
        assert_eq!(first[0]["count"], 1);
        assert_eq!(first[0]["actor"]["peer"], "192.0.2.7:1000");
        assert_eq!(first[1]["actor"]["peer"], "192.0.2.8:5000");
        assert!(log.flush_refusals(), "the folded 999 wait for their window");
        // The window ends: the count is written once, with the last request.
        let mut refusals = log.refusals.lock().unwrap();
        for w in refusals.windows.values_mut() {
            w.opened -= FOLD_WINDOW;
        }
        drop(refusals);
        assert!(!log.flush_refusals());
        let all = lines(log.path());
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[2]["count"], 999);
        assert_eq!(all[2]["actor"]["peer"], "192.0.2.7:1999");
        assert_eq!(all[2]["asked"]["path"], "/v1/domains");
        assert!(all[2]["since_unix_ms"].as_u64().is_some());
        // Nothing more to say: the next flush writes nothing, and the idle peers are gone.
        assert!(!log.flush_refusals());
        assert_eq!(lines(log.path()).len(), 3);
    }

    #[test]
    fn callers_past_the_cap_share_one_count_and_the_rest_is_written_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audit.log");
        let log = AuditLog::new(path.clone(), Arc::default());
        for i in 0..(MAX_CALLERS + 50) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            log.refused(refusal(&format!("{ip}:80"), "/"));
        }
        assert_eq!(log.refusals.lock().unwrap().windows.len(), MAX_CALLERS + 1);
        // MAX_CALLERS first lines, one for the first untracked caller, 49 folded.
        assert_eq!(lines(&path).len(), MAX_CALLERS + 1);
        drop(log);
        let all = lines(&path);
        assert_eq!(all.len(), MAX_CALLERS + 2);
        assert_eq!(all.last().unwrap()["count"], 49);
    }

    #[test]
    fn forbidden_callers_are_told_apart_by_uid_and_paths_are_bounded() {
        let r = Refusal {
            actor: Actor {
                via: "http-unix",
                uid: Some(1000),
                ..Actor::default()
            },
            asked: Asked::http("POST", &format!("/v1/{}", "é".repeat(400))),
            outcome: Refused::Forbidden,
            reason: "QMP passthrough is for administrators".into(),
        };
        assert_eq!(r.caller().who, Who::Uid(1000));
        let Asked::Http { path, .. } = &r.asked else {
            unreachable!()
        };
        assert!(
            path.len() <= MAX_ASKED_PATH + '…'.len_utf8(),
            "{}",
            path.len()
        );
    }

    #[test]
    fn the_file_is_appended_to_never_followed_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audit.log");
        std::fs::write(&path, b"{\"earlier\":1}\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let log = AuditLog::new(path.clone(), Arc::default());
        log.record_outcome("define", "vm1", "ok", None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"earlier\":1}\n"), "{text}");
        assert_eq!(text.lines().count(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o640,
            "group/other write and other read are taken away"
        );

        // A symlink in its place is not followed.
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        let link = tmp.path().join("linked.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let log = AuditLog::new(link, Arc::default());
        log.record_outcome("define", "vm1", "ok", None);
        assert_eq!(std::fs::read(&target).unwrap(), b"");

        // Created fresh: 0640 at most (the umask may take more).
        let fresh = tmp.path().join("fresh.log");
        AuditLog::new(fresh.clone(), Arc::default()).record_outcome("define", "vm1", "ok", None);
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !AUDIT_MODE, 0, "{mode:o}");
    }

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
