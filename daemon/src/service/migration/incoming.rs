//! The destination's side: a QEMU waiting for the stream (`-incoming defer`), held under a
//! lease the source keeps renewing. It becomes the guest only when the source says `finish`;
//! if the source says `abort`, goes silent, or the stream fails, it is killed and forgotten.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use novacron_domain::{DomainConfig, DomainState, Error};
use novacron_qmp::commands::{
    Cont, MigrateIncoming, MigrateSetCapabilities, QueryMigrate, QueryStatus,
};
use novacron_qmp::qapi::MigrationStatus;
use novacron_qmp::{EventKind as QmpEvent, Notification};
use tokio_util::sync::CancellationToken;

use super::super::domain::{Definition, DomainHandle, Intent, Live, Monitor, Run, UpState};
use super::super::events::{EventKind, StateReason};
use super::super::jobs::Job;
use super::super::lifecycle::{launch_as, qmp_error, Launched};
use super::super::{supervise, Inner, Service};
use super::{IncomingAnswer, IncomingRequest, IncomingState, IncomingView};
use crate::config::migration::MigrationConfig;
use crate::persist::records::{IncomingMark, IncomingPhase};
use std::net::IpAddr;

/// How long a prepared migration waits for a word from its source by default.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const MAX_LEASE: Duration = Duration::from_secs(3600);
/// How long ended migrations stay answerable (the source may ask after a lost answer).
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// How long `finish` waits for the last of the stream to load.
const LOAD_WAIT: Duration = Duration::from_secs(30);

pub(super) struct Incoming {
    pub id: String,
    pub domain: String,
    handle: Arc<DomainHandle>,
    /// The handle was made for this migration: it goes again on abort.
    created: bool,
    persistent: bool,
    slot: tokio::sync::Mutex<Slot>,
    lease: Mutex<(Instant, Duration)>,
    ended: Mutex<Option<(IncomingState, Option<String>, Instant)>>,
    /// QEMU's RESUME stamp of the guest here (microseconds since the epoch).
    resumed_at_us: Mutex<Option<i64>>,
    /// Fired once the migration ended either way (stops the watchdog).
    done: CancellationToken,
}

enum Slot {
    Prepared(Box<Launched>),
    Ended,
}

impl Incoming {
    fn renew(&self) {
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        lease.0 = Instant::now() + lease.1;
    }

    fn expired(&self) -> bool {
        Instant::now() > self.lease.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn view(&self) -> IncomingView {
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (state, detail) = match ended {
            Some((state, detail, _)) => (state, detail),
            None => (IncomingState::Prepared, None),
        };
        IncomingView {
            id: self.id.clone(),
            domain: self.domain.clone(),
            state,
            detail,
            resumed_at_us: *self
                .resumed_at_us
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn end(&self, state: IncomingState, detail: Option<String>) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((state, detail, Instant::now()));
        self.done.cancel();
    }
}

impl Service {
    /// Prepares to receive a guest: checks the definition and that this host can run it,
    /// starts QEMU waiting for the stream, and answers where to send it.
    pub async fn prepare_incoming(
        &self,
        request: IncomingRequest,
    ) -> Result<IncomingAnswer, Error> {
        let svc = self.clone();
        self.detached(async move {
            let name = DomainConfig::from_xml(&request.xml)
                .map(|c| c.name)
                .unwrap_or_default();
            let result = svc.prepare_incoming_inner(request).await;
            svc.inner.audit.record("migrate-incoming", &name, &result);
            result
        })
        .await
    }

    async fn prepare_incoming_inner(
        &self,
        request: IncomingRequest,
    ) -> Result<IncomingAnswer, Error> {
        let inner = &self.inner;
        request.options.check()?;
        if request.options.postcopy {
            postcopy_possible(inner).await?;
        }
        let listen_ip = listen_address(&request.listen_host, &inner.config.migration).await?;
        let config = DomainConfig::from_xml(&request.xml)
            .map_err(|e| Error::InvalidConfig(format!("the migrated definition: {e}")))?;
        let existing = inner.read_domains().get(&config.name).cloned();
        if let Some(h) = &existing {
            let theirs = config.uuid;
            if h.definition().config.uuid.is_some() && h.definition().config.uuid != theirs {
                return Err(Error::AlreadyExists(format!(
                    "{} (a different domain of that name is defined here)",
                    config.name
                )));
            }
        }
        // The same define-time checks as `POST /v1/domains`: a peer may not name what an
        // operator may not.
        // TRUST: check here (storage roots: the incoming definition is checked as a
        // non-admin define, unless `inner.prepare` already does so for every caller).
        let validated = inner.prepare(config, existing.as_ref().map(|h| h.definition()))?;
        let trust = inner.admit(&validated).await?;
        // Known before QEMU starts: its runtime record names the migration it is for.
        let id = super::new_id("in");
        let name = validated.name.clone();
        let definition = Definition {
            config: validated.clone(),
            persistent: existing.as_ref().is_some_and(|h| h.definition().persistent),
            trust,
        };
        let (h, created) = inner.insert_or_get(&name, validated.uuid, || {
            DomainHandle::new(definition.clone(), Run::Off)
        })?;
        let result = async {
            let _job = h.begin(Job::Start, inner.job_wait()).await?;
            match h.state() {
                novacron_domain::DomainState::Shutoff | novacron_domain::DomainState::Crashed => {}
                state => {
                    return Err(Error::WrongState {
                        name: name.clone(),
                        state,
                        operation: "receive a migration into",
                    })
                }
            }
            h.transition(&inner.events, Run::Starting, StateReason::Starting)?;
            let launched = match launch_as(inner, &name, validated.config(), Some(&id), trust).await
            {
                Ok(l) => l,
                Err(e) => {
                    let _ = h.transition(
                        &inner.events,
                        Run::Off,
                        StateReason::StartFailed(e.to_string()),
                    );
                    return Err(e);
                }
            };
            let ready = async {
                if let Some(count) = request.live_vcpus {
                    super::super::live_resources::vcpus::plug_before_incoming(
                        inner,
                        &name,
                        &launched.live,
                        count,
                    )
                    .await?;
                }
                listen(inner, &name, &launched, &request, listen_ip).await
            };
            match ready.await {
                Ok(uri) => Ok((launched, uri)),
                Err(e) => {
                    kill(inner, &name, launched).await;
                    let _ = h.transition(
                        &inner.events,
                        Run::Off,
                        StateReason::MigrationAborted(e.to_string()),
                    );
                    Err(e)
                }
            }
        }
        .await;
        let (launched, uri) = match result {
            Ok(ok) => ok,
            Err(e) => {
                if created {
                    inner.remove_if_same(&name, &h);
                }
                return Err(e);
            }
        };
        let lease = request
            .lease_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LEASE)
            .clamp(Duration::from_secs(1), MAX_LEASE);
        let incoming = Arc::new(Incoming {
            id: id.clone(),
            domain: name.clone(),
            handle: h,
            created,
            persistent: request.persistent,
            slot: tokio::sync::Mutex::new(Slot::Prepared(Box::new(launched))),
            lease: Mutex::new((Instant::now() + lease, lease)),
            ended: Mutex::new(None),
            resumed_at_us: Mutex::new(None),
            done: CancellationToken::new(),
        });
        {
            let mut table = inner.migrations.incoming();
            table.retain(|_, m| {
                m.ended
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_none_or(|(_, _, at)| at.elapsed() < KEEP_ENDED)
            });
            table.insert(id.clone(), incoming.clone());
        }
        inner.events.publish(
            &name,
            EventKind::MigrationStarted {
                id: public_id(&id),
                role: "destination".into(),
                peer: request.listen_host.clone(),
            },
        );
        watchdog(self.clone(), incoming);
        Ok(IncomingAnswer { id, uri })
    }

    /// The state of an incoming migration; also renews its lease.
    pub fn incoming_migration(&self, id: &str) -> Result<IncomingView, Error> {
        match self.find_incoming(id) {
            Ok(m) => {
                m.renew();
                Ok(m.view())
            }
            Err(e) => self.inner.migrations.remembered(id).ok_or(e),
        }
    }

    /// The source has sent everything (or entered post-copy): resume the guest here and take
    /// over its definition.
    pub async fn finish_incoming(&self, id: &str) -> Result<IncomingView, Error> {
        let m = match self.find_incoming(id) {
            Ok(m) => m,
            Err(e) => {
                return match self.inner.migrations.remembered(id) {
                    Some(v) if v.state == IncomingState::Finished => Ok(v),
                    Some(v) => Err(self.ended_wrong_state(&v.domain, "finish the migration of")),
                    None => Err(e),
                }
            }
        };
        let svc = self.clone();
        self.detached(async move {
            let result = svc.finish_incoming_inner(&m).await;
            svc.inner.audit.record("migrate-finish", &m.domain, &result);
            result
        })
        .await
    }

    async fn finish_incoming_inner(&self, m: &Arc<Incoming>) -> Result<IncomingView, Error> {
        let inner = &self.inner;
        // Held throughout: an abort (or the watchdog) waits and then sees the final state.
        let mut slot = m.slot.lock().await;
        let mut launched = match std::mem::replace(&mut *slot, Slot::Ended) {
            Slot::Prepared(l) => *l,
            Slot::Ended => {
                // Finishing twice (an answer lost on the way back) is answered, not refused.
                let view = m.view();
                return match view.state {
                    IncomingState::Finished => Ok(view),
                    _ => Err(Error::WrongState {
                        name: m.domain.clone(),
                        state: m.handle.state(),
                        operation: "finish the migration of",
                    }),
                };
            }
        };
        let name = &m.domain;
        let qmp = match launched.live.qmp(name) {
            Ok(q) => q.clone(),
            Err(e) => {
                self.discard(m, launched, e.to_string(), false).await;
                return Err(e);
            }
        };
        // The source's "completed" means sent, not loaded: wait until this end has it all.
        // The definition (taken over with the guest) is written meanwhile: its fsync need not
        // follow the load, and the guest is paused on both hosts until `cont`. It is written
        // before the taking-over mark, so a daemon restarted with the mark has it too.
        // Everything that can fail comes before `cont`, so a failure discards a guest that
        // never ran here and the source keeps (and resumes) its own.
        let h = &m.handle;
        let defined_here = m.persistent && !h.definition().persistent;
        let save_definition = async {
            if !m.persistent {
                return Ok(());
            }
            let d = h.definition();
            inner
                .definitions
                .save(d.config.config(), d.trust)
                .await
                .map_err(|e| {
                    Error::Internal(format!(
                        "cannot save the migrated definition of '{name}': {e}"
                    ))
                })
        };
        let (loaded, saved) = tokio::join!(wait_loaded(&qmp, name), save_definition);
        let undefine = defined_here && saved.is_ok();
        if let Err(e) = loaded.and(saved) {
            self.discard(m, launched, e.to_string(), undefine).await;
            return Err(e);
        }
        let live = match mark_taking_over(inner, name, &launched, &qmp).await {
            Ok(live) => live,
            Err(e) => {
                self.discard(m, launched, e.to_string(), defined_here).await;
                return Err(e);
            }
        };
        if let Err(e) = h.transition(
            &inner.events,
            Run::Up {
                live: live.clone(),
                state: UpState::Running,
            },
            StateReason::MigratedIn,
        ) {
            self.discard(m, launched, e.to_string(), defined_here).await;
            return Err(e);
        }
        // QEMU's own stamp of the resume, for the source's measure of the pause: the event
        // comes before `cont`'s answer, so it is queued by the time that returns.
        let mut resume = qmp.subscribe();
        let resumed = qmp.execute(&Cont).await;
        if resumed.is_ok() {
            if let Ok(e) = resume
                .wait_for(Duration::from_millis(100), |e| {
                    matches!(e.kind, QmpEvent::Resume)
                })
                .await
            {
                *m.resumed_at_us
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(micros(e.timestamp));
            }
        }
        drop(resume);
        if let Err(e) = resumed {
            // Discarded only when provably not running here; otherwise it is ours now.
            let never_ran = match qmp.execute(&QueryStatus).await {
                Ok(status) => !status.running,
                Err(_) => matches!(launched.child.try_wait(), Ok(Some(_))),
            };
            let e = qmp_error(name, "resume the migrated guest", e);
            if never_ran {
                self.discard(m, launched, e.to_string(), defined_here).await;
                return Err(e);
            }
            tracing::error!(domain = %name, error = %e, "cont failed, but the guest may run: it stays here as taken over");
        }
        if let Some(known) = launched.pinned_threads {
            // As after a start: threads the vCPUs' first run brings follow the emulator pin.
            super::super::placement::pin_late_threads(h.clone(), live.clone(), known);
        }
        supervise::spawn(
            inner.clone(),
            h.clone(),
            live.clone(),
            Some(launched.child),
            Some(launched.events),
        );
        // Resumed: from now on an ordinary guest to a restarted daemon (a pause it is given
        // later is kept, not undone as an interrupted take-over).
        if let Err(e) = inner.records.save(&live.record).await {
            tracing::warn!(domain = %name, error = %e, "cannot note the finished migration in the runtime record");
        }
        if m.persistent {
            let mut definition = h.definition();
            definition.persistent = true;
            h.set_definition(definition);
            inner
                .events
                .publish(name, EventKind::Defined { persistent: true });
        }
        m.end(IncomingState::Finished, None);
        inner.events.publish(
            name,
            EventKind::MigrationFinished {
                id: public_id(&m.id),
                outcome: "completed".into(),
                detail: "the guest runs here".into(),
            },
        );
        Ok(m.view())
    }

    /// Discards a prepared migration: QEMU killed, the runtime files and a handle made for
    /// it removed. Aborting one that already ended is a no-op, but finishing is final.
    /// Audited however it ends, under the domain's name when the id is known.
    pub async fn abort_incoming(&self, id: &str) -> Result<(), Error> {
        let domain = match self.find_incoming(id) {
            Ok(m) => Some(m.domain.clone()),
            Err(_) => self.inner.migrations.remembered(id).map(|v| v.domain),
        };
        let result = self.abort_incoming_inner(id).await;
        // An unknown id has no domain; the error names the id.
        self.inner.audit.record(
            "migrate-abort",
            domain.as_deref().unwrap_or_default(),
            &result,
        );
        result
    }

    async fn abort_incoming_inner(&self, id: &str) -> Result<(), Error> {
        let m = match self.find_incoming(id) {
            Ok(m) => m,
            Err(e) => {
                return match self.inner.migrations.remembered(id) {
                    Some(v) if v.state == IncomingState::Aborted => Ok(()),
                    Some(v) => {
                        Err(self.ended_wrong_state(&v.domain, "abort the finished migration of"))
                    }
                    None => Err(e),
                }
            }
        };
        let svc = self.clone();
        self.detached(async move {
            svc.abort_now(&m, "cancelled by the source".into()).await;
            match m.view().state {
                IncomingState::Aborted => Ok(()),
                IncomingState::Finished => Err(Error::WrongState {
                    name: m.domain.clone(),
                    state: m.handle.state(),
                    operation: "abort the finished migration of",
                }),
                IncomingState::Prepared => Err(Error::Internal(format!(
                    "the incoming migration of '{}' could not be discarded",
                    m.domain
                ))),
            }
        })
        .await
    }

    fn ended_wrong_state(&self, domain: &str, operation: &'static str) -> Error {
        Error::WrongState {
            name: domain.to_owned(),
            state: self
                .inner
                .handle(domain)
                .map(|h| h.state())
                .unwrap_or(DomainState::Shutoff),
            operation,
        }
    }

    async fn abort_now(&self, m: &Arc<Incoming>, why: String) {
        let mut slot = m.slot.lock().await;
        let Slot::Prepared(launched) = std::mem::replace(&mut *slot, Slot::Ended) else {
            return;
        };
        self.discard(m, *launched, why, false).await;
    }

    /// Kills a QEMU that never ran the guest here and ends the migration as aborted. The
    /// caller holds the slot (now `Ended`). `undefine` removes a definition saved for it.
    async fn discard(&self, m: &Incoming, launched: Launched, why: String, undefine: bool) {
        let inner = &self.inner;
        tracing::warn!(domain = %m.domain, id = %m.id, reason = %why, "discarding an incoming migration");
        kill(inner, &m.domain, launched).await;
        if undefine {
            if let Err(e) = inner.definitions.remove(&m.domain).await {
                tracing::error!(domain = %m.domain, error = %e, "cannot remove the definition saved for a discarded migration");
            }
        }
        let _ = m.handle.transition(
            &inner.events,
            Run::Off,
            StateReason::MigrationAborted(why.clone()),
        );
        if m.created {
            inner.remove_if_same(&m.domain, &m.handle);
            inner.events.publish(&m.domain, EventKind::Undefined);
        }
        m.end(IncomingState::Aborted, Some(why.clone()));
        inner.events.publish(
            &m.domain,
            EventKind::MigrationFinished {
                id: public_id(&m.id),
                outcome: "cancelled".into(),
                detail: why,
            },
        );
    }

    fn find_incoming(&self, id: &str) -> Result<Arc<Incoming>, Error> {
        self.inner
            .migrations
            .incoming()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::Migration, id))
    }
}

/// Sets the capabilities and parameters the stream needs, opens the listener on the address
/// the source reached us at (port chosen by the kernel) and reads the real port back.
async fn listen(
    inner: &Arc<Inner>,
    name: &str,
    launched: &Launched,
    request: &IncomingRequest,
    host: std::net::IpAddr,
) -> Result<String, Error> {
    let qmp = launched.live.qmp(name)?;
    let fail = |what: &str, e: novacron_qmp::Error| qmp_error(name, what, e);
    qmp.execute(&MigrateSetCapabilities {
        capabilities: request.options.capabilities(),
    })
    .await
    .map_err(|e| fail("set migration capabilities", e))?;
    let mut params = request.options.shared_parameters();
    if request.options.stream_tls() {
        super::source::add_tls_creds(inner, qmp, name, "server").await?;
        params.tls_creds = Some(super::source::TLS_OBJECT.into());
    }
    qmp.execute(&params)
        .await
        .map_err(|e| fail("set migration parameters", e))?;
    let host = &host.to_string();
    qmp.execute(&MigrateIncoming {
        uri: format!("tcp:{}:0", bracket(host)),
    })
    .await
    .map_err(|e| fail("listen for the migration", e))?;
    let info = qmp
        .execute(&QueryMigrate)
        .await
        .map_err(|e| fail("read the migration port", e))?;
    let port = info
        .socket_address
        .unwrap_or_default()
        .into_iter()
        .find_map(|a| a.port)
        .ok_or_else(|| Error::Qemu {
            name: name.to_owned(),
            operation: "incoming migration".to_owned(),
            message: "QEMU reported no listening port".to_owned(),
        })?;
    Ok(format!("tcp:{}:{port}", bracket(host)))
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The listen host comes from the network: only an address of this host (or one the admin
/// listed in `migration.listen_hosts`) is listened on, never the wildcard unless listed. A
/// name is resolved here, once, and QEMU gets the address.
async fn listen_address(host: &str, config: &MigrationConfig) -> Result<IpAddr, Error> {
    let refuse = |why: &str| {
        Error::InvalidConfig(format!(
            "listen_host {:?}: {why}",
            host.chars().take(253).collect::<String>()
        ))
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !ok {
        return Err(refuse("not an address or host name"));
    }
    let candidates: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| refuse(&format!("cannot resolve it: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    let mut found = None;
    for ip in candidates {
        if config.listen_hosts.contains(&ip) || (!ip.is_unspecified() && is_local(ip).await) {
            found = Some(ip);
            break;
        }
    }
    found.ok_or_else(|| {
        refuse(
            "not an address of this host (the unspecified address only if listed in \
             migration.listen_hosts)",
        )
    })
}

/// An address a socket can be bound to here is one of this host's (binding a foreign
/// address fails with EADDRNOTAVAIL).
async fn is_local(ip: IpAddr) -> bool {
    tokio::task::spawn_blocking(move || std::net::UdpSocket::bind((ip, 0)).is_ok())
        .await
        .unwrap_or(false)
}

/// What event subscribers see of an incoming migration's id: the id itself is what lets a
/// caller finish or abort it, so only a digest of it goes out.
fn public_id(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("novacron-incoming-event:{id}").as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("in-event-{hex}")
}

/// Kills a QEMU that never became the guest and removes its runtime files (also a full
/// snapshot's revert that failed to load).
pub(in crate::service) async fn kill(inner: &Arc<Inner>, name: &str, mut launched: Launched) {
    launched.live.set_intent(Intent::Destroy);
    let _ = launched.live.signal(Signal::SIGKILL);
    let _ = launched.child.wait().await;
    launched.live.mark_exited();
    supervise::remove_runtime_files(inner, name).await;
    // Hugepages and host devices taken for it go back.
    super::super::host_resources::release(inner, &launched.live.record.held).await;
    super::super::displays::release(inner, name, &launched.live.record.display_ports);
    // The record goes with the runtime files: nothing else would stop its virtiofsd.
    super::super::virtiofsd::stop(&launched.live.record.virtiofsd).await;
}

/// Waits until the whole stream is loaded here (`completed`, or `postcopy-active`).
/// A QMP event stamp in microseconds since the epoch.
pub(super) fn micros(t: novacron_qmp::Timestamp) -> i64 {
    t.seconds * 1_000_000 + t.microseconds
}

async fn wait_loaded(qmp: &novacron_qmp::Client, name: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + LOAD_WAIT;
    // The source asks once it has sent the last byte, so this end is usually a few ms
    // behind, and the guest is paused meanwhile: QEMU's MIGRATION event wakes the next
    // question at once (subscribed before the first, so none is missed); a short pause
    // between questions covers a lagged event stream.
    let mut events = qmp.subscribe();
    loop {
        let info = qmp
            .execute(&QueryMigrate)
            .await
            .map_err(|e| qmp_error(name, "finish migration", e))?;
        match info.status {
            Some(MigrationStatus::Completed | MigrationStatus::PostcopyActive) => return Ok(()),
            Some(MigrationStatus::Failed | MigrationStatus::Cancelled) => {
                return Err(Error::Internal(format!(
                    "the incoming stream of '{name}' failed{}",
                    info.error_desc
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )))
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(Error::Timeout {
                    operation: "loading the migrated guest",
                    after: LOAD_WAIT,
                })
            }
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    n = events.recv() => {
                        if n.is_none() {
                            // Closed: the next question says how.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }
    }
}

/// Makes the take-over durable before `cont`: a daemon restarted from here on keeps the
/// guest and tells the source "finished"; one restarted before it discards the QEMU and
/// says "aborted". Returns the `Live` the guest runs under, its record already `Finished`
/// (written once `cont` is through).
async fn mark_taking_over(
    inner: &Arc<Inner>,
    name: &str,
    launched: &Launched,
    qmp: &novacron_qmp::Client,
) -> Result<Arc<Live>, Error> {
    // With the live set as replayed before the stream (hot-plugged vCPUs).
    let mut record = launched.live.record_now();
    let id = record
        .incoming
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    record.incoming = Some(IncomingMark {
        id: id.clone(),
        phase: IncomingPhase::TakingOver,
    });
    inner.records.save(&record).await.map_err(|e| {
        Error::Internal(format!(
            "cannot write the runtime record of '{name}' before taking over: {e}"
        ))
    })?;
    record.incoming = Some(IncomingMark {
        id,
        phase: IncomingPhase::Finished,
    });
    Ok(Arc::new(Live::new(
        launched.live.pid,
        record,
        Monitor::Connected(qmp.clone()),
    )))
}

/// Ends a prepared migration nobody finishes: the source fell silent past the lease, the
/// stream failed, or QEMU died.
fn watchdog(svc: Service, m: Arc<Incoming>) {
    tokio::spawn(async move {
        let (qmp, mut events) = {
            let slot = m.slot.lock().await;
            match &*slot {
                Slot::Prepared(l) => match l.live.qmp(&m.domain) {
                    Ok(q) => (q.clone(), q.subscribe()),
                    Err(_) => return,
                },
                Slot::Ended => return,
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let why = loop {
            tokio::select! {
                _ = m.done.cancelled() => return,
                reason = qmp.closed() => break format!("QEMU went away ({reason:?})"),
                _ = tick.tick() => {
                    if m.expired() {
                        break "the source fell silent (lease expired)".to_owned();
                    }
                }
                n = events.recv() => match n {
                    Some(Notification::Event(e)) => {
                        if let QmpEvent::Migration { status: MigrationStatus::Failed } = e.kind {
                            break "the incoming stream failed".to_owned();
                        }
                    }
                    Some(Notification::Lagged(_)) => {}
                    Some(Notification::Disconnected(_)) | None => {
                        break "QEMU closed its monitor".to_owned();
                    }
                },
            }
        };
        // A post-copy migration already handed over cannot be undone: leave it be.
        if let Ok(status) = qmp.execute(&QueryStatus).await {
            if status.running {
                return;
            }
        }
        svc.abort_now(&m, why).await;
    });
}

/// Post-copy makes the destination QEMU fault pages in through userfaultfd, which the kernel
/// gives an unprivileged process only with `vm.unprivileged_userfaultfd = 1` (QEMU 7.2 knows no
/// `/dev/userfaultfd`). Refused here with the reason, rather than by QEMU's bare "Postcopy is
/// not supported" midway through the prepare.
async fn postcopy_possible(inner: &Inner) -> Result<(), Error> {
    let Some(user) = inner.run_as.as_ref().filter(|r| !r.uid.is_root()) else {
        return Ok(());
    };
    const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";
    let allowed = tokio::fs::read_to_string(SYSCTL)
        .await
        .map(|v| v.trim() != "0")
        // Kernels before 5.2 have no such switch and let everyone use userfaultfd.
        .unwrap_or(true);
    if allowed {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "post-copy needs userfaultfd in the destination QEMU, which runs as '{}' here, and this \
         host gives userfaultfd to unprivileged processes only with vm.unprivileged_userfaultfd \
         = 1 (it is 0): set that sysctl on this host, or migrate without post-copy",
        user.user
    )))
}
