//! How many connections and event streams each caller may hold, so that no socket user and no
//! TCP peer can take the descriptors the daemon (QMP, logs, records) and root need.
//!
//! - Root on the Unix socket is never counted: that is the reserve that keeps the admin in.
//! - Every other connection (Unix non-root, all TCP) counts against `max_connections`, derived
//!   from RLIMIT_NOFILE so the rest stays for the daemon and root; Unix ones also per uid.
//! - A TCP connection counts as unauthenticated (per peer address and in total) until a
//!   request on it presents a valid token, so one address cannot lock token holders out.
//! - Over a cap, the connection gets a JSON 429/503 and is closed at once, never queued.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::auth::Caller;
use super::error::ApiError;
use super::ratelog::RateLog;
use crate::config::{ApiConfig, Role};

/// Descriptors kept free below RLIMIT_NOFILE for the daemon itself and root, whatever is
/// configured.
const FD_RESERVE: u64 = 256;
/// The soft RLIMIT_NOFILE asked for: far above what the caps need, but not the huge hard
/// limits of some containers (2^30), which children (QEMU, dnsmasq) inherit and programs that
/// close every possible descriptor at startup would then loop through.
const NOFILE_TARGET: u64 = 1 << 16;
/// `max_connections` when unset: half of RLIMIT_NOFILE, within these bounds.
const DERIVED_MIN: u64 = 16;
const DERIVED_MAX: u64 = 4096;
const PER_UID: usize = 128;
const UNAUTHENTICATED: usize = 256;
const UNAUTHENTICATED_PER_ADDRESS: usize = 8;
const STREAMS: usize = 1024;
const STREAMS_PER_CALLER: usize = 32;
/// Keep-alive: how long an idle connection (and a request head after the first) may take.
const IDLE: Duration = Duration::from_secs(75);
/// Refused connections read from before closing (the rest are closed right after the
/// answer), and how long each may take.
const RESPONDERS: usize = 32;
const RESPOND_DEADLINE: Duration = Duration::from_secs(2);

/// The effective caps; see `ApiConfig` for what each means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caps {
    pub total: usize,
    pub per_uid: usize,
    pub unauthenticated: usize,
    pub unauthenticated_per_address: usize,
    pub streams: usize,
    pub streams_per_caller: usize,
    pub idle: Duration,
}

impl Caps {
    /// The configured caps, defaults filled in; `nofile` is the soft RLIMIT_NOFILE.
    pub fn resolve(api: &ApiConfig, nofile: u64) -> Caps {
        let ceiling = nofile.saturating_sub(FD_RESERVE).max(1);
        let total = match api.max_connections {
            Some(n) if n as u64 > ceiling => {
                tracing::warn!(
                    configured = n,
                    nofile,
                    "api.max_connections leaves too few descriptors under RLIMIT_NOFILE; \
                     using {ceiling}"
                );
                ceiling as usize
            }
            Some(n) => n,
            None => (nofile / 2).clamp(DERIVED_MIN, DERIVED_MAX).min(ceiling) as usize,
        };
        Caps {
            total,
            per_uid: api.max_connections_per_uid.unwrap_or(PER_UID).min(total),
            unauthenticated: api
                .max_unauthenticated
                .unwrap_or(UNAUTHENTICATED)
                .min(total),
            unauthenticated_per_address: api
                .max_unauthenticated_per_address
                .unwrap_or(UNAUTHENTICATED_PER_ADDRESS),
            streams: api.max_event_streams.unwrap_or(STREAMS).min(total),
            streams_per_caller: api
                .max_event_streams_per_caller
                .unwrap_or(STREAMS_PER_CALLER),
            idle: api.idle_timeout_secs.map_or(IDLE, Duration::from_secs),
        }
    }
}

/// Raise RLIMIT_NOFILE's soft limit towards the hard limit (systemd and most shells start at
/// 1024 soft), up to `NOFILE_TARGET`; returns the soft limit in force.
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard.min(NOFILE_TARGET) => {
            let target = hard.min(NOFILE_TARGET);
            match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                Ok(()) => target,
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise RLIMIT_NOFILE");
                    soft
                }
            }
        }
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    }
}

/// A TCP peer as counted: IPv4 addresses one by one, IPv6 by /64 (one host's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey(IpAddr);

impl PeerKey {
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Root,
    /// A non-root Unix socket user (`None`: credentials unavailable).
    Uid(Option<u32>),
    Tcp(PeerKey),
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<Option<u32>, usize>,
    unauthenticated: usize,
    per_address: HashMap<PeerKey, usize>,
    streams: usize,
    per_caller: HashMap<String, usize>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Why a connection was refused; the message names the cap's config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    PerUid { uid: Option<u32>, cap: usize },
    PerAddress { peer: PeerKey, cap: usize },
    Unauthenticated { cap: usize },
    Total { cap: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerUid { uid, cap } => {
                let who = uid.map_or("this user".to_owned(), |u| format!("uid {u}"));
                write!(
                    f,
                    "{who} already holds {cap} connections to the API socket \
                     (api.max_connections_per_uid)"
                )
            }
            Refusal::PerAddress { peer, cap } => write!(
                f,
                "{peer} already holds {cap} connections that have not authenticated \
                 (api.max_unauthenticated_per_address)"
            ),
            Refusal::Unauthenticated { cap } => write!(
                f,
                "{cap} connections are waiting to authenticate (api.max_unauthenticated); \
                 try again shortly"
            ),
            Refusal::Total { cap } => write!(
                f,
                "the API holds its maximum of {cap} connections (api.max_connections); \
                 try again shortly"
            ),
        }
    }
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::PerUid { .. } | Refusal::PerAddress { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unauthenticated { .. } | Refusal::Total { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The whole HTTP/1.1 response, written without parsing anything the client sent.
    fn response(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": {"code": "too_many_connections", "message": self.to_string()}
        })
        .to_string();
        let status = self.status();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\nretry-after: 1\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

pub(crate) struct Limits {
    pub caps: Caps,
    counts: Mutex<Counts>,
    refusals: Arc<RateLog>,
    responders: Arc<Semaphore>,
}

impl Limits {
    pub fn new(caps: Caps) -> Arc<Limits> {
        Arc::new(Limits {
            caps,
            counts: Mutex::new(Counts::default()),
            refusals: RateLog::new("refusing HTTP API connections"),
            responders: Arc::new(Semaphore::new(RESPONDERS)),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection on the Unix socket from `uid` (root is not counted).
    pub fn admit_unix(self: &Arc<Self>, uid: Option<u32>) -> Result<ConnSlot, Refusal> {
        if uid == Some(0) {
            return Ok(self.slot(Peer::Root, false));
        }
        let mut c = self.counts();
        // Per uid first: a flooding user is told so, not that the daemon is full.
        if c.per_uid.get(&uid).copied().unwrap_or(0) >= self.caps.per_uid {
            return Err(Refusal::PerUid {
                uid,
                cap: self.caps.per_uid,
            });
        }
        if c.total >= self.caps.total {
            return Err(Refusal::Total {
                cap: self.caps.total,
            });
        }
        *c.per_uid.entry(uid).or_default() += 1;
        c.total += 1;
        drop(c);
        Ok(self.slot(Peer::Uid(uid), false))
    }

    /// A TCP connection from `ip`, unauthenticated until `ConnSlot::authenticated`.
    pub fn admit_tcp(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let peer = PeerKey::of(ip);
        let mut c = self.counts();
        // Per address first: a flooding address is told so, not that the daemon is full.
        let held = c.per_address.get(&peer).copied().unwrap_or(0);
        if held >= self.caps.unauthenticated_per_address {
            return Err(Refusal::PerAddress {
                peer,
                cap: self.caps.unauthenticated_per_address,
            });
        }
        if c.unauthenticated >= self.caps.unauthenticated {
            return Err(Refusal::Unauthenticated {
                cap: self.caps.unauthenticated,
            });
        }
        if c.total >= self.caps.total {
            return Err(Refusal::Total {
                cap: self.caps.total,
            });
        }
        *c.per_address.entry(peer).or_default() += 1;
        c.unauthenticated += 1;
        c.total += 1;
        drop(c);
        Ok(self.slot(Peer::Tcp(peer), true))
    }

    fn slot(self: &Arc<Self>, peer: Peer, unauthenticated: bool) -> ConnSlot {
        ConnSlot {
            limits: self.clone(),
            peer,
            unauthenticated: AtomicBool::new(unauthenticated),
        }
    }

    /// Log (rate-limited) and close a refused connection. With `answer` (plain HTTP; a TLS
    /// client could not read it), the JSON error is written first, at once; then, for up to
    /// `RESPONDERS` connections at a time, the request head is read before closing, so the
    /// kernel does not reset the connection under the answer while the client is still
    /// sending.
    pub fn refuse<S>(&self, mut stream: S, refusal: Refusal, answer: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.refusals.warn(&refusal);
        if !answer {
            return;
        }
        let linger = self.responders.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            let answer = async {
                stream.write_all(&refusal.response()).await?;
                stream.shutdown().await?;
                if linger.is_some() {
                    read_head(&mut stream).await;
                }
                Ok::<_, std::io::Error>(())
            };
            let _ = tokio::time::timeout(RESPOND_DEADLINE, answer).await;
            drop(linger);
        });
    }

    /// `accept` itself failed (out of descriptors and the like): rate-limited warning.
    pub fn accept_failed(&self, e: &std::io::Error) {
        self.refusals.warn(format_args!("accept failed: {e}"));
    }

    /// An event stream for `caller`, held until the returned slot drops. Admins are not
    /// counted, like root's connections.
    pub fn admit_stream(self: &Arc<Self>, caller: &Caller) -> Result<StreamSlot, ApiError> {
        if caller.role == Role::Admin {
            return Ok(StreamSlot {
                limits: self.clone(),
                key: None,
            });
        }
        let key = match (&caller.actor.token, caller.actor.uid) {
            (Some(token), _) => format!("token {token}"),
            (None, Some(uid)) => format!("uid {uid}"),
            (None, None) => "an unidentified caller".to_owned(),
        };
        let too_many = |message: String| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", message)
        };
        let mut c = self.counts();
        if c.streams >= self.caps.streams {
            return Err(too_many(format!(
                "{} event streams are open (api.max_event_streams); try again later",
                self.caps.streams
            )));
        }
        let held = c.per_caller.entry(key.clone()).or_default();
        if *held >= self.caps.streams_per_caller {
            let cap = self.caps.streams_per_caller;
            return Err(too_many(format!(
                "{key} already holds {cap} event streams (api.max_event_streams_per_caller)"
            )));
        }
        *held += 1;
        c.streams += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            key: Some(key),
        })
    }
}

/// Reads until the end of a request head, EOF, or 8 KiB, whichever first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
    }
}

/// One admitted connection; its counts are released when it drops.
pub(crate) struct ConnSlot {
    limits: Arc<Limits>,
    peer: Peer,
    unauthenticated: AtomicBool,
}

impl ConnSlot {
    /// A request on this connection presented a valid token: it no longer counts against the
    /// unauthenticated caps.
    pub fn authenticated(&self) {
        if !self.unauthenticated.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Peer::Tcp(peer) = self.peer {
            let mut c = self.limits.counts();
            c.unauthenticated -= 1;
            decrement(&mut c.per_address, &peer);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        !self.unauthenticated.load(Ordering::Acquire)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.authenticated();
        let mut c = self.limits.counts();
        match self.peer {
            Peer::Root => return,
            Peer::Uid(uid) => decrement(&mut c.per_uid, &uid),
            Peer::Tcp(_) => {}
        }
        c.total -= 1;
    }
}

/// One admitted event stream; released when the stream's body drops (the client went away).
pub(crate) struct StreamSlot {
    limits: Arc<Limits>,
    key: Option<String>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut c = self.limits.counts();
            c.streams -= 1;
            decrement(&mut c.per_caller, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::audit::Actor;

    fn caps() -> Caps {
        Caps {
            total: 6,
            per_uid: 2,
            unauthenticated: 4,
            unauthenticated_per_address: 2,
            streams: 3,
            streams_per_caller: 2,
            idle: IDLE,
        }
    }

    #[test]
    fn defaults_derive_from_the_descriptor_limit() {
        let api = ApiConfig::default();
        let c = Caps::resolve(&api, 1024);
        assert_eq!(c.total, 512);
        assert_eq!(c.per_uid, 128);
        assert_eq!(Caps::resolve(&api, 1 << 20).total, 4096);
        // A tiny limit still leaves the reserve.
        assert_eq!(Caps::resolve(&api, 300).total, 44);
        let api = ApiConfig {
            max_connections: Some(5000),
            ..ApiConfig::default()
        };
        assert_eq!(Caps::resolve(&api, 1024).total, 768);
    }

    #[test]
    fn unix_callers_are_capped_per_uid_and_root_never() {
        let l = Limits::new(caps());
        let a: Vec<_> = (0..2).map(|_| l.admit_unix(Some(1000)).unwrap()).collect();
        assert_eq!(
            l.admit_unix(Some(1000)).err(),
            Some(Refusal::PerUid {
                uid: Some(1000),
                cap: 2
            })
        );
        let b: Vec<_> = (0..2).map(|_| l.admit_unix(Some(1001)).unwrap()).collect();
        let _c = l.admit_unix(Some(1002)).unwrap();
        let _d = l.admit_unix(Some(1003)).unwrap();
        assert_eq!(
            l.admit_unix(Some(1004)).err(),
            Some(Refusal::Total { cap: 6 })
        );
        let roots: Vec<_> = (0..20).map(|_| l.admit_unix(Some(0)).unwrap()).collect();
        drop((a, b, roots));
        let _e = l.admit_unix(Some(1000)).unwrap();
        assert_eq!(l.counts().total, 3);
    }

    #[test]
    fn tcp_peers_are_capped_until_they_authenticate() {
        let l = Limits::new(caps());
        let flood: IpAddr = "127.0.0.1".parse().unwrap();
        let a = l.admit_tcp(flood).unwrap();
        let _b = l.admit_tcp(flood).unwrap();
        assert!(matches!(
            l.admit_tcp(flood),
            Err(Refusal::PerAddress { cap: 2, .. })
        ));
        // Another address still gets in; an authenticated connection frees its share.
        let other = l.admit_tcp("127.0.0.2".parse().unwrap()).unwrap();
        a.authenticated();
        a.authenticated();
        assert!(a.is_authenticated() && !other.is_authenticated());
        let _c = l.admit_tcp(flood).unwrap();
        // IPv6 neighbours in one /64 share a count.
        let v6 = |s: &str| l.admit_tcp(s.parse().unwrap());
        let _x = v6("2001:db8::1").unwrap();
        assert!(matches!(
            v6("2001:db8::2"),
            Err(Refusal::Unauthenticated { cap: 4 })
        ));
        drop((a, other));
        let c = l.counts();
        assert_eq!((c.total, c.unauthenticated), (3, 3));
    }

    #[test]
    fn streams_per_caller_and_in_total_admins_exempt() {
        let l = Limits::new(caps());
        let caller = |role, uid| Caller {
            role,
            actor: Actor {
                via: "http-unix",
                uid: Some(uid),
                ..Actor::default()
            },
        };
        let op = caller(Role::Operator, 1000);
        let s: Vec<_> = (0..2).map(|_| l.admit_stream(&op).unwrap()).collect();
        let e = l.admit_stream(&op).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.contains("uid 1000"), "{}", e.message);
        let _t = l.admit_stream(&caller(Role::Operator, 1001)).unwrap();
        let e = l.admit_stream(&caller(Role::Operator, 1002)).err().unwrap();
        assert!(e.message.contains("api.max_event_streams"), "{}", e.message);
        let _admin = l.admit_stream(&caller(Role::Admin, 0)).unwrap();
        drop(s);
        l.admit_stream(&op).unwrap();
    }

    #[test]
    fn refusal_response_is_http_with_a_json_error() {
        let r = Refusal::PerUid {
            uid: Some(7),
            cap: 3,
        }
        .response();
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uid 7 already holds 3"));
    }
}
