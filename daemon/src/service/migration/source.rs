//! The source's side: the driver of a migration, from asking the destination to prepare to
//! quitting the local QEMU (or to getting the guest back running here).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use novacron_domain::Error;
use novacron_qmp::commands::{
    Cont, Migrate, MigrateCancel, MigrateSetCapabilities, MigrateStartPostcopy, MigrationInfo,
    QueryMigrate, QueryStatus, Quit, Stop,
};
use novacron_qmp::qapi::MigrationStatus;
use novacron_qmp::{EventKind as QmpEvent, Notification};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::super::domain::{DomainHandle, Intent, Live, Run, UpState};
use super::super::events::{EventKind, StateReason};
use super::super::jobs::{AsyncJob, Job};
use super::super::lifecycle::{gone, qmp_error, wrong_state};
use super::super::{audit, Inner, Service};
use super::options::TimeoutAction;
use super::peer_uri::stream_uri;
use super::progress::{Phase, Progress};
use super::record::{self, MigrationRecord, RecordPhase};
use super::{IncomingRequest, IncomingState, MigrateRequest};
use crate::http_client::{Client, ClientError, Target, Tls};
use crate::service::request_file;

/// The id of the `tls-creds-x509` object on both ends.
pub(super) const TLS_OBJECT: &str = "novacron-migration-tls";
const POLL: Duration = Duration::from_millis(200);
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often the destination hears from us (its lease is several times longer).
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How long the hand-over is retried over a flaky link before the outcome is called unknown.
const HANDOVER_TRIES: u32 = 10;

pub(super) struct Outgoing {
    pub id: String,
    progress: Mutex<Progress>,
    cancel: CancellationToken,
    postcopy: Notify,
    finished: watch::Sender<bool>,
}

impl Outgoing {
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> R {
        f(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The destination's client and the host its stream goes to.
pub(super) struct Peer {
    pub client: Client,
    pub host: String,
    /// Reached over `https://`.
    pub https: bool,
}

/// The destination's client. `http://` only if the admin allowed plain transport; the CA
/// (a request-named path) read only through `request_file`, bounded and off the workers.
pub(super) async fn peer(
    inner: &Inner,
    destination: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> Result<Peer, Error> {
    let bad = |e: ClientError| Error::InvalidConfig(format!("destination: {e}"));
    let mut target = Target::from_url(destination).map_err(bad)?;
    let (host, https) = match &target {
        Target::Tcp { host, tls, .. } => (host.clone(), tls.is_some()),
        Target::Unix(_) => {
            return Err(Error::InvalidConfig(
                "destination must be an https:// (or allowed http://) URL".into(),
            ))
        }
    };
    if !https && !inner.config.migration.allow_plain_http {
        return Err(Error::InvalidConfig(format!(
            "destination {destination}: plain http:// would send the token and the guest's \
             definition in clear text; use https:// (or set allow_plain_http = true in \
             [migration] of the configuration)"
        )));
    }
    if let Some(ca) = ca {
        let pem =
            request_file::read("destination_ca", ca, &inner.config.request_files_dir()).await?;
        let tls = Tls::from_ca_pem(&pem, ca)
            .map_err(|e| Error::InvalidConfig(format!("destination_ca {}: {e}", ca.display())))?;
        target = target.with_tls(tls).map_err(bad)?;
    }
    let mut client = Client::new(target).with_max_body(1 << 20);
    if let Some(token) = token {
        client = client.with_token(token);
    }
    Ok(Peer {
        client,
        host,
        https,
    })
}

impl Service {
    /// Migrates `name` live to the destination daemon. Returns once it started (or, with
    /// `wait`, once it ended) with its progress; a second migration, or any other mutating
    /// call but destroy, is refused as busy meanwhile.
    pub async fn migrate(
        &self,
        name: &str,
        request: MigrateRequest,
        wait: bool,
    ) -> Result<Progress, Error> {
        let mut request = request;
        let checked = async {
            request.options.check()?;
            peer(
                &self.inner,
                &request.destination,
                request.token.as_deref(),
                request.destination_ca.as_deref(),
            )
            .await
        }
        .await;
        let peer = match checked {
            Ok(peer) => peer,
            Err(e) => {
                let refused = Err(e);
                self.inner.audit.record("migrate", name, &refused);
                return refused;
            }
        };
        // The stream is encrypted by default when the API is (the caller may still say).
        request.options.tls.get_or_insert(peer.https);
        let h = self.inner.handle(name)?;
        // An unfinished snapshot operation may have switched disks the live device set does
        // not name yet: the destination would open the frozen files. It is finished first
        // (by the next snapshot operation or a restart).
        if let Err(e) = self.refuse_while_snapshot_unfinished(name).await {
            let refused = Err(e);
            self.inner.audit.record("migrate", name, &refused);
            return refused;
        }
        let (started_tx, started_rx) = oneshot::channel();
        let svc = self.clone();
        let actor = audit::current();
        tokio::spawn(audit::as_actor(actor, async move {
            svc.drive(h, request, peer, started_tx).await;
        }));
        let outgoing = started_rx
            .await
            .map_err(|_| Error::Internal("the migration task ended early".into()))??;
        if wait {
            let mut done = outgoing.finished.subscribe();
            let _ = done.wait_for(|d| *d).await;
        }
        Ok(outgoing.progress())
    }

    /// The running or last migration of `name` away from here.
    pub fn migration(&self, name: &str) -> Result<Progress, Error> {
        self.inner
            .migrations
            .outgoing()
            .get(name)
            .map(|o| o.progress())
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::Migration, name))
    }

    /// Cancels the running migration of `name`; returns once the guest is back (or the
    /// migration ended otherwise).
    pub async fn cancel_migration(&self, name: &str) -> Result<Progress, Error> {
        let out = self.running_outgoing(name)?;
        out.cancel.cancel();
        let mut done = out.finished.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(120), done.wait_for(|d| *d)).await;
        Ok(out.progress())
    }

    /// Switches the running migration of `name` to post-copy.
    pub fn start_postcopy(&self, name: &str) -> Result<Progress, Error> {
        let out = self.running_outgoing(name)?;
        out.postcopy.notify_one();
        Ok(out.progress())
    }

    fn running_outgoing(&self, name: &str) -> Result<Arc<Outgoing>, Error> {
        let out = self.inner.migrations.outgoing().get(name).cloned();
        match out {
            Some(o) if !*o.finished.borrow() => Ok(o),
            _ => Err(Error::not_found(novacron_domain::Kind::Migration, name)),
        }
    }

    async fn drive(
        &self,
        h: Arc<DomainHandle>,
        request: MigrateRequest,
        peer: Peer,
        started: oneshot::Sender<Result<Arc<Outgoing>, Error>>,
    ) {
        let inner = &self.inner;
        let name = h.name.clone();
        let begun = async {
            // The synchronous slot first: the long one, once taken, refuses `Modify`.
            let _job = h.begin(Job::Modify, inner.job_wait()).await?;
            let long = h.jobs.begin_async(&name, AsyncJob::Migration)?;
            let (live, was_running) = match h.run() {
                Run::Up {
                    live,
                    state: UpState::Running,
                } => (live, true),
                Run::Up {
                    live,
                    state: UpState::Paused,
                } => (live, false),
                _ => return Err(wrong_state(&h, "migrate")),
            };
            live.qmp(&name)?;
            h.set_up_state(
                &inner.events,
                UpState::Migrating,
                StateReason::MigrationStarted,
            );
            Ok((long, live, was_running))
        }
        .await;
        let (long, live, was_running) = match begun {
            Ok(b) => b,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let id = super::new_id("mig");
        let out = Arc::new(Outgoing {
            id: id.clone(),
            progress: Mutex::new(Progress::new(&id, &request.destination)),
            cancel: CancellationToken::new(),
            postcopy: Notify::new(),
            finished: watch::Sender::new(false),
        });
        inner
            .migrations
            .outgoing()
            .insert(name.clone(), out.clone());
        inner.events.publish(
            &name,
            EventKind::MigrationStarted {
                id: id.clone(),
                role: "source".into(),
                peer: request.destination.clone(),
            },
        );
        tracing::info!(domain = %name, %id, destination = %request.destination, "migration started");
        let _ = started.send(Ok(out.clone()));

        let run = Run_ {
            svc: self,
            h: &h,
            live: &live,
            out: &out,
            peer: &peer,
            request: &request,
            was_running,
        };
        let (phase, detail) = run.run().await;
        // The source is settled (the guest resumed or gone, the destination told): only now
        // may a client see the final phase, so the record goes and the job is released first.
        if phase != Phase::Unknown {
            record::remove(inner, &name).await;
        }
        drop(long);
        let outcome = match phase {
            Phase::Completed => "completed",
            Phase::Cancelled => "cancelled",
            Phase::Unknown => "unknown",
            _ => "failed",
        };
        let shown = detail.clone();
        let detail = detail.unwrap_or_default();
        tracing::info!(domain = %name, %id, outcome, %detail, "migration ended");
        inner.audit.record_outcome(
            "migrate",
            &name,
            outcome,
            (outcome != "completed").then(|| detail.clone()),
        );
        out.with(|p| {
            p.phase = phase;
            p.detail = shown;
        });
        inner.events.publish(
            &name,
            EventKind::MigrationFinished {
                id,
                outcome: outcome.into(),
                detail,
            },
        );
        out.finished.send_replace(true);
    }
}

/// One migration's driver state.
struct Run_<'a> {
    svc: &'a Service,
    h: &'a Arc<DomainHandle>,
    live: &'a Arc<Live>,
    out: &'a Arc<Outgoing>,
    peer: &'a Peer,
    request: &'a MigrateRequest,
    was_running: bool,
}

/// How a hand-over ended.
enum HandOver {
    /// The guest runs there; when it resumed, by the destination QEMU's stamp.
    Done(Option<i64>),
    Refused(String),
    Unknown(String),
}

impl Run_<'_> {
    fn inner(&self) -> &Arc<Inner> {
        &self.svc.inner
    }

    fn name(&self) -> &str {
        &self.h.name
    }

    /// Runs the migration to its end; returns the final phase and what it means.
    async fn run(&self) -> (Phase, Option<String>) {
        let name = self.name().to_owned();
        let options = &self.request.options;
        let definition = self.h.definition();
        let persistent = definition.persistent;
        // The config the guest runs with (its CPU as resolved here), but firmware the
        // definition leaves to the host is chosen again there: the paths resolved here (the
        // loader, this host's NVRAM file) need not exist on the destination; QEMU carries the
        // flash contents in the stream.
        let DeviceSet {
            config: sent,
            live_vcpus,
        } = match device_set(self.inner(), &name, self.live, definition.config.config()).await {
            Ok(set) => set,
            Err(e) => {
                let why = format!("cannot read the guest's live device set: {e}");
                return self.stay_here(Phase::Failed, why, None).await;
            }
        };
        // 1. The destination prepares.
        let prepare = IncomingRequest {
            xml: sent.to_xml(),
            options: options.clone(),
            listen_host: self.peer.host.clone(),
            persistent,
            lease_secs: None,
            live_vcpus,
        };
        let answer = tokio::select! {
            a = self.peer.client.prepare_incoming(&prepare) => a,
            _ = self.out.cancel.cancelled() => {
                return self.stay_here(Phase::Cancelled, "cancelled while the destination prepared".into(), None).await;
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let why = format!("the destination could not prepare: {e}");
                return self.stay_here(Phase::Failed, why, None).await;
            }
        };
        let incoming = answer.id.clone();
        // The peer chose the URI; QEMU gets only one we built from what we allow.
        let uri =
            match stream_uri(&answer.uri, &self.peer.host, &self.inner().config.migration).await {
                Ok(uri) => uri,
                Err(why) => {
                    self.inner().audit.record_outcome(
                        "migrate-stream-uri",
                        &name,
                        "refused",
                        Some(why.clone()),
                    );
                    tracing::warn!(domain = %name, %why, "destination's migration URI refused");
                    return self.stay_here(Phase::Failed, why, Some(&incoming)).await;
                }
            };
        let mut rec = MigrationRecord::new(
            &self.out.id,
            &name,
            self.request,
            &incoming,
            self.was_running,
            persistent,
        );
        if let Err(e) = record::save(self.inner(), &rec).await {
            let why = format!("cannot record the migration: {e}");
            return self.stay_here(Phase::Failed, why, Some(&incoming)).await;
        }
        // 2. The stream starts.
        let qmp = match self.live.qmp(&name) {
            Ok(q) => q.clone(),
            Err(e) => {
                return self
                    .stay_here(Phase::Failed, e.to_string(), Some(&incoming))
                    .await
            }
        };
        let mut events = qmp.subscribe();
        if let Err(e) = self.start_stream(&qmp, &uri).await {
            return self
                .stay_here(Phase::Failed, e.to_string(), Some(&incoming))
                .await;
        }
        self.out.with(|p| p.phase = Phase::Setup);
        // 3. Follow it.
        let started = Instant::now();
        let deadline = options
            .timeout_secs
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published = Instant::now() - PUBLISH_EVERY;
        // The destination's lease is renewed beside the loop, never in it: a completion that
        // came while the loop waited for the destination's answer would wait with it (the
        // guest paused on both hosts).
        let (gave_up_tx, mut gave_up) = tokio::sync::mpsc::channel::<String>(1);
        let renewer = AbortOnDrop(tokio::spawn(renew_lease(
            self.peer.client.clone(),
            incoming.clone(),
            gave_up_tx,
        )));
        let mut cancel_sent = false;
        let mut timed_out = false;
        let mut handed_over = false;
        let mut why: Option<String> = None;
        let completed_at;
        // QEMU's MIGRATION event said the stream completed: no query needed to act on it.
        let mut completed_event = false;
        // QEMU's stamp of the guest's pause here (its STOP at the switchover).
        let mut stopped_at: Option<i64> = None;
        let ended: MigrationInfo = loop {
            tokio::select! {
                _ = self.out.cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    why.get_or_insert_with(|| "cancelled".into());
                    self.out.with(|p| p.phase = Phase::Cancelling);
                    if let Err(e) = qmp.execute(&MigrateCancel).await {
                        tracing::warn!(domain = %name, error = %e, "migrate_cancel");
                    }
                }
                _ = self.out.postcopy.notified() => self.to_postcopy(&qmp).await,
                Some(reason) = gave_up.recv(), if !handed_over => {
                    why = Some(reason);
                    let _ = qmp.execute(&MigrateCancel).await;
                }
                _ = sleep_until(deadline), if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    self.on_timeout(&qmp, &mut why).await;
                }
                n = events.recv() => match n {
                    Some(Notification::Event(e)) => {
                        if matches!(e.kind, QmpEvent::Stop) {
                            stopped_at = Some(super::incoming::micros(e.timestamp));
                        }
                        completed_event = matches!(
                            e.kind,
                            QmpEvent::Migration { status: MigrationStatus::Completed }
                        );
                    }
                    Some(Notification::Lagged(_)) => {}
                    Some(Notification::Disconnected(_)) | None => {
                        // QEMU went away: the next query says so.
                        tokio::time::sleep(POLL).await;
                    }
                },
                _ = poll.tick() => {}
            }
            // The guest is paused on both hosts from QEMU's completion to the destination's
            // `cont`: a completion QEMU announced is acted on at once, without a query-migrate
            // (whose answer waits for the lock QEMU's migration thread takes to finish up).
            let queried = if std::mem::take(&mut completed_event) {
                Ok(MigrationInfo {
                    status: Some(MigrationStatus::Completed),
                    ..MigrationInfo::default()
                })
            } else {
                qmp.execute(&QueryMigrate).await
            };
            let info = match queried {
                Ok(info) => info,
                // A slow answer under load says nothing about the migration: ask again.
                Err(e) if !matches!(e, novacron_qmp::Error::Closed(_)) => {
                    tracing::warn!(domain = %name, error = %e, "query-migrate; retrying");
                    continue;
                }
                Err(e) => {
                    let detail = format!("the source QEMU went away mid-migration: {e}");
                    if handed_over {
                        return (
                            Phase::Unknown,
                            Some(format!("post-copy after the hand-over: {detail}")),
                        );
                    }
                    // Nothing runs here any more; the destination discards its copy and
                    // the domain leaves the migrating state (the supervisor saw the exit).
                    return self.stay_here(Phase::Failed, detail, Some(&incoming)).await;
                }
            };
            let elapsed = started.elapsed().as_millis() as u64;
            let progress = self.out.with(|p| {
                p.update(&info, elapsed);
                if cancel_sent {
                    p.phase = Phase::Cancelling;
                }
                p.clone()
            });
            if published.elapsed() >= PUBLISH_EVERY {
                published = Instant::now();
                self.inner()
                    .events
                    .publish(&name, EventKind::MigrationProgress { progress });
            }
            match info.status {
                Some(MigrationStatus::PostcopyActive) if !handed_over => {
                    // The guest must run there now: the pages it lacks are pulled on demand.
                    rec.phase = RecordPhase::HandingOver;
                    let _ = record::save(self.inner(), &rec).await;
                    match self.hand_over(&incoming).await {
                        HandOver::Done(_) => handed_over = true,
                        HandOver::Refused(e) | HandOver::Unknown(e) => {
                            let _ = qmp.execute(&Stop).await;
                            return (
                                Phase::Unknown,
                                Some(format!(
                                    "post-copy started but the destination did not take over ({e}); \
                                     the guest is paused here"
                                )),
                            );
                        }
                    }
                }
                Some(MigrationStatus::Completed)
                | Some(MigrationStatus::Failed)
                | Some(MigrationStatus::Cancelled) => {
                    completed_at = Instant::now();
                    break info;
                }
                _ => {}
            }
        };
        drop(renewer);
        let elapsed = started.elapsed().as_millis() as u64;
        match ended.status.clone() {
            Some(MigrationStatus::Completed) => {
                if !handed_over {
                    self.out.with(|p| p.phase = Phase::Finishing);
                    rec.phase = RecordPhase::HandingOver;
                    // The hand-over is asked for at once; the record is written meanwhile, not
                    // before: a restarted daemon asks the destination whenever QEMU says
                    // "completed", whatever the record's phase, so its fsync need not hold
                    // the guest's pause.
                    let (saved, handed) =
                        tokio::join!(record::save(self.inner(), &rec), self.hand_over(&incoming));
                    if let Err(e) = saved {
                        tracing::warn!(domain = %name, error = %e, "cannot update the migration record");
                    }
                    match handed {
                        HandOver::Done(resumed) => {
                            let handover = completed_at.elapsed().as_millis() as u64;
                            // A STOP a poll overtook is still queued.
                            while stopped_at.is_none() {
                                match tokio::time::timeout(Duration::ZERO, events.recv()).await {
                                    Ok(Some(Notification::Event(e))) => {
                                        if matches!(e.kind, QmpEvent::Stop) {
                                            stopped_at = Some(super::incoming::micros(e.timestamp));
                                        }
                                    }
                                    Ok(Some(Notification::Lagged(_))) => {}
                                    _ => break,
                                }
                            }
                            let pause = stopped_at
                                .zip(resumed)
                                .and_then(|(s, r)| r.checked_sub(s))
                                .and_then(|us| u64::try_from(us).ok())
                                .map(|us| us / 1000);
                            self.out.with(|p| {
                                p.handover_ms = Some(handover);
                                p.pause_ms = pause;
                            });
                        }
                        HandOver::Refused(e) => {
                            self.figures(&qmp, ended, elapsed).await;
                            let why = format!("the destination could not take over: {e}");
                            return self.stay_here(Phase::Failed, why, Some(&incoming)).await;
                        }
                        HandOver::Unknown(e) => {
                            self.figures(&qmp, ended, elapsed).await;
                            return self.undecided(e).await;
                        }
                    }
                }
                // QEMU's totals (for the progress and the log), once the guest runs there.
                self.figures(&qmp, ended, elapsed).await;
                self.gone_from_here().await;
                (Phase::Completed, None)
            }
            status => {
                let ended = self.figures(&qmp, ended, elapsed).await;
                let detail = why
                    .or(ended.error_desc.clone())
                    .unwrap_or_else(|| format!("QEMU reported {status:?}"));
                if handed_over {
                    return (
                        Phase::Unknown,
                        Some(format!("post-copy failed after the hand-over: {detail}")),
                    );
                }
                let phase = if matches!(status, Some(MigrationStatus::Cancelled)) {
                    Phase::Cancelled
                } else {
                    Phase::Failed
                };
                self.stay_here(phase, detail, Some(&incoming)).await
            }
        }
    }

    /// QEMU's totals of an ended stream folded into the progress (the phase is the driver's)
    /// and logged.
    async fn figures(
        &self,
        qmp: &novacron_qmp::Client,
        info: MigrationInfo,
        elapsed: u64,
    ) -> MigrationInfo {
        let info = completed_figures(qmp, info).await;
        self.out.with(|p| {
            let keep = p.phase;
            p.update(&info, elapsed);
            p.phase = keep;
        });
        tracing::info!(
            domain = %self.name(),
            status = ?info.status,
            total_ms = ?info.total_time,
            downtime_ms = ?info.downtime,
            transferred = ?info.ram.as_ref().map(|r| r.transferred),
            "migration stream ended"
        );
        info
    }

    async fn start_stream(&self, qmp: &novacron_qmp::Client, uri: &str) -> Result<(), Error> {
        let name = self.name();
        let options = &self.request.options;
        let fail = |what: &str, e: novacron_qmp::Error| qmp_error(name, what, e);
        qmp.execute(&MigrateSetCapabilities {
            capabilities: options.capabilities(),
        })
        .await
        .map_err(|e| fail("set migration capabilities", e))?;
        let mut params = options.source_parameters();
        if options.stream_tls() {
            add_tls_creds(self.inner(), qmp, name, "client").await?;
            params.tls_creds = Some(TLS_OBJECT.into());
            params.tls_hostname = Some(self.peer.host.clone());
        } else {
            params.tls_creds = Some(String::new());
        }
        qmp.execute(&params)
            .await
            .map_err(|e| fail("set migration parameters", e))?;
        qmp.execute(&Migrate {
            uri: uri.to_owned(),
            resume: None,
        })
        .await
        .map_err(|e| fail("migrate", e))?;
        Ok(())
    }

    async fn to_postcopy(&self, qmp: &novacron_qmp::Client) {
        if !self.request.options.postcopy_allowed() {
            tracing::warn!(domain = %self.name(), "post-copy asked for, but the migration was not started with postcopy");
            return;
        }
        if let Err(e) = qmp.execute(&MigrateStartPostcopy).await {
            tracing::warn!(domain = %self.name(), error = %e, "migrate-start-postcopy");
        }
    }

    async fn on_timeout(&self, qmp: &novacron_qmp::Client, why: &mut Option<String>) {
        let action = self.request.options.timeout_action;
        tracing::warn!(domain = %self.name(), ?action, "migration timed out");
        match action {
            TimeoutAction::Abort => {
                *why = Some("timed out".into());
                self.out.cancel.cancel();
            }
            TimeoutAction::Postcopy => self.to_postcopy(qmp).await,
            TimeoutAction::Pause => {
                if let Err(e) = qmp.execute(&Stop).await {
                    tracing::warn!(domain = %self.name(), error = %e, "pause on timeout");
                }
            }
        }
    }

    /// Asks the destination to take over, retrying across a flaky link; never guesses.
    async fn hand_over(&self, incoming: &str) -> HandOver {
        let client = &self.peer.client;
        let mut last = String::new();
        for _ in 0..HANDOVER_TRIES {
            match client.finish_incoming(incoming).await {
                Ok(v) if v.state == IncomingState::Finished => {
                    return HandOver::Done(v.resumed_at_us)
                }
                Ok(v) if v.state == IncomingState::Aborted => {
                    return HandOver::Refused(v.detail.unwrap_or_else(|| "aborted".into()))
                }
                // An error answer (even a 404: a restarted destination, or one that forgot)
                // is not "refused": only its own view of the migration says so.
                Ok(_) => {}
                Err(e) => last = e.to_string(),
            }
            match client.incoming(incoming).await {
                Ok(v) if v.state == IncomingState::Finished => {
                    return HandOver::Done(v.resumed_at_us)
                }
                Ok(v) if v.state == IncomingState::Aborted => {
                    return HandOver::Refused(v.detail.unwrap_or_else(|| "aborted".into()))
                }
                Ok(_) => {}
                Err(e) => last = format!("{last}; then asking: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        HandOver::Unknown(last)
    }

    /// The guest runs there: the definition moves (unless kept) and the local QEMU quits.
    async fn gone_from_here(&self) {
        gone_from_here(
            self.inner(),
            self.h,
            self.live,
            self.request.keep_source_definition,
        )
        .await;
    }

    /// The guest stays here: the destination discards what it prepared, the guest runs again
    /// if it ran before.
    async fn stay_here(
        &self,
        phase: Phase,
        why: String,
        incoming: Option<&str>,
    ) -> (Phase, Option<String>) {
        // Until the guest is back, the phase says it is on its way (the final one is set by
        // the driver once everything is settled).
        let settling = if phase == Phase::Cancelled {
            Phase::Cancelling
        } else {
            Phase::Failing
        };
        self.out.with(|p| p.phase = settling);
        if let Some(id) = incoming {
            self.abort_destination(id).await;
        }
        stay_here(self.inner(), self.h, self.live, self.was_running, &why).await;
        (phase, Some(why))
    }

    /// Neither side can be told apart as the one that runs: keep the guest paused here.
    async fn undecided(&self, e: String) -> (Phase, Option<String>) {
        let why = format!(
            "the destination did not confirm the hand-over ({e}); the guest is paused here \
             and may be resumed on one host only once the destination's state is known"
        );
        self.h.set_up_state(
            &self.inner().events,
            UpState::Paused,
            StateReason::MigrationAborted(why.clone()),
        );
        (Phase::Unknown, Some(why))
    }

    async fn abort_destination(&self, incoming: &str) {
        match self.peer.client.abort_incoming(incoming).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                domain = %self.name(), error = %e,
                "cannot reach the destination to discard the migration; its lease will"
            ),
        }
    }
}

/// Renews the destination's lease every few seconds until aborted; says why once the
/// destination gave the migration up (or forgot it).
async fn renew_lease(client: Client, incoming: String, gave_up: tokio::sync::mpsc::Sender<String>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let reason = match client.incoming(&incoming).await {
            Ok(v) if v.state == IncomingState::Aborted => {
                format!("the destination gave up: {}", v.detail.unwrap_or_default())
            }
            Err(ClientError::Api { status: 404, .. }) => {
                "the destination forgot the migration".into()
            }
            // Unreachable for now: the stream itself fails if the host is gone.
            _ => continue,
        };
        let _ = gave_up.send(reason).await;
        return;
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resumes a guest that ran before the migration (QEMU restarts it itself after most
/// failures; this makes sure) and leaves the migrating state.
pub(super) async fn stay_here(
    inner: &Arc<Inner>,
    h: &Arc<DomainHandle>,
    live: &Arc<Live>,
    was_running: bool,
    why: &str,
) {
    let name = &h.name;
    let mut running = false;
    if let Ok(qmp) = live.qmp(name) {
        if let Ok(status) = qmp.execute(&QueryStatus).await {
            running = status.running;
            if was_running && !running {
                match qmp.execute(&Cont).await {
                    Ok(_) => running = true,
                    Err(e) => {
                        tracing::error!(domain = %name, error = %e, "cannot resume the guest after a failed migration")
                    }
                }
            }
        }
    }
    let state = if running {
        UpState::Running
    } else {
        UpState::Paused
    };
    h.set_up_state(
        &inner.events,
        state,
        StateReason::MigrationAborted(why.to_owned()),
    );
}

/// After the destination took over: the definition leaves (unless kept), QEMU quits.
pub(super) async fn gone_from_here(
    inner: &Arc<Inner>,
    h: &Arc<DomainHandle>,
    live: &Arc<Live>,
    keep_definition: bool,
) {
    let name = &h.name;
    let mut definition = h.definition();
    if definition.persistent && !keep_definition {
        let svc = Service {
            inner: inner.clone(),
        };
        let _ = crate::persist::atomic::remove_durable_async(svc.autostart_marker(name)).await;
        match inner.definitions.remove(name).await {
            Ok(_) => {
                definition.persistent = false;
                h.set_definition(definition);
            }
            Err(e) => {
                tracing::error!(domain = %name, error = %e, "cannot remove the migrated definition")
            }
        }
    }
    live.set_intent(Intent::Migrated);
    let mut watch = h.watch();
    if let Ok(qmp) = live.qmp(name) {
        let _ = qmp.execute(&Quit).await;
    }
    if tokio::time::timeout(Duration::from_secs(10), gone(&mut watch, live))
        .await
        .is_err()
    {
        tracing::warn!(domain = %name, "the migrated-away QEMU did not quit; killing it");
        let _ = live.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), gone(&mut watch, live)).await;
    }
}

/// Adds the `tls-creds-x509` object for one end, from `<state_dir>/pki/migration`
/// (`ca-cert.pem`, `server-cert.pem`/`server-key.pem`, `client-cert.pem`/`client-key.pem`).
pub(super) async fn add_tls_creds(
    inner: &Arc<Inner>,
    qmp: &novacron_qmp::Client,
    name: &str,
    endpoint: &str,
) -> Result<(), Error> {
    let source = inner.config.state_dir.join("pki").join("migration");
    let needed = [
        "ca-cert.pem".to_owned(),
        format!("{endpoint}-cert.pem"),
        format!("{endpoint}-key.pem"),
    ];
    let staged = inner.paths.migration_tls_dir(name);
    let group = inner.run_as.as_ref().map(|r| r.gid);
    let dir =
        tokio::task::spawn_blocking(move || stage_tls_files(&source, &needed, &staged, group))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    // A previous attempt in this QEMU may have left the object.
    let _ = qmp
        .execute_raw("object-del", Some(&serde_json::json!({ "id": TLS_OBJECT })))
        .await;
    let args = serde_json::json!({
        "qom-type": "tls-creds-x509",
        "id": TLS_OBJECT,
        "dir": dir,
        "endpoint": endpoint,
        "verify-peer": true,
    });
    qmp.execute_raw("object-add", Some(&args))
        .await
        .map(drop)
        .map_err(|e| qmp_error(name, "add the migration TLS credentials", e))
}

/// Largest certificate or key file staged for QEMU.
const MAX_TLS_FILE: u64 = 1 << 20;

/// QEMU reads its certificates by path, as its own (unprivileged) user, which cannot pass the
/// root-only state directory: it gets a copy in a directory of the daemon's records (gone with
/// the guest), readable by QEMU's group. Never staged in the guest's runtime directory: QEMU's
/// user can write there, and a root daemon must not create or chown anything in a directory
/// another user can swap names in.
fn stage_tls_files(
    source: &std::path::Path,
    needed: &[String],
    staged: &std::path::Path,
    group: Option<nix::unistd::Gid>,
) -> Result<std::path::PathBuf, Error> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io_err = |what: &std::path::Path, e: std::io::Error| Error::Io {
        action: "stage (for QEMU)",
        path: what.display().to_string(),
        message: e.to_string(),
    };
    let mut contents = Vec::with_capacity(needed.len());
    for file in needed {
        let path = source.join(file);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidConfig(format!(
                    "TLS migration needs {} (no certificates are configured on this host)",
                    path.display()
                )))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        let meta = f.metadata().map_err(|e| io_err(&path, e))?;
        if !meta.is_file() || meta.len() > MAX_TLS_FILE {
            return Err(Error::InvalidConfig(format!(
                "{} must be a regular file of at most {MAX_TLS_FILE} bytes",
                path.display()
            )));
        }
        let mut buf = Vec::new();
        (&mut f)
            .take(MAX_TLS_FILE)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(&path, e))?;
        contents.push((file, buf));
    }
    match std::fs::remove_dir_all(staged) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(staged, e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staged)
        .map_err(|e| io_err(staged, e))?;
    let dir = std::fs::File::open(staged).map_err(|e| io_err(staged, e))?;
    if let Some(gid) = group {
        nix::unistd::fchown(&dir, None, Some(gid)).map_err(|e| io_err(staged, e.into()))?;
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| io_err(staged, e))?;
    }
    for (file, buf) in contents {
        let path = staged.join(file);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        if let Some(gid) = group {
            nix::unistd::fchown(&out, None, Some(gid)).map_err(|e| io_err(&path, e.into()))?;
            out.set_permissions(std::fs::Permissions::from_mode(0o440))
                .map_err(|e| io_err(&path, e))?;
        }
        out.write_all(&buf).map_err(|e| io_err(&path, e))?;
    }
    Ok(staged.to_owned())
}

/// QEMU shows "completed" a moment before its migration thread has computed the total time
/// and downtime (the state is set first): ask again, briefly, until they are in.
async fn completed_figures(qmp: &novacron_qmp::Client, info: MigrationInfo) -> MigrationInfo {
    let pending = |i: &MigrationInfo| {
        matches!(i.status, Some(MigrationStatus::Completed)) && i.total_time.unwrap_or(0) == 0
    };
    let mut info = info;
    for _ in 0..100 {
        if !pending(&info) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        match qmp.execute(&QueryMigrate).await {
            Ok(next) => info = next,
            Err(_) => break,
        }
    }
    info
}

/// What a new QEMU that is to load this guest's state starts with (a migration's destination,
/// a full snapshot's revert): QEMU refuses a stream from a different device set.
pub(crate) struct DeviceSet {
    /// The config the guest runs with, with the disks, memory devices, NICs and balloon target
    /// it has now. Firmware the definition leaves to the host is chosen again by the new
    /// QEMU's host (the stream carries the flash contents).
    pub config: novacron_domain::DomainConfig,
    /// vCPUs hot-added since the start: the new QEMU starts with the started count (`-smp
    /// cpus`, which QEMU sizes virtio-blk's queues and MSI-X table by) and plugs up to this
    /// many before the stream (`vcpus::plug_before_incoming`).
    pub live_vcpus: Option<u32>,
}

pub(crate) async fn device_set(
    inner: &Arc<Inner>,
    name: &str,
    live: &Live,
    definition: &novacron_domain::DomainConfig,
) -> Result<DeviceSet, Error> {
    let mut sent = live.record.config.clone();
    // The disks QEMU has now (hot-plugged ones included), at the addresses they have here.
    let now = live.config();
    sent.devices.disks = now.devices.disks;
    let started = &live.record.config.vcpu;
    let started_count = started.current.unwrap_or(started.count);
    let live_count = now.vcpu.current.unwrap_or(now.vcpu.count);
    let live_vcpus = if live_count > started_count {
        sent.vcpu.current = started.current;
        Some(live_count)
    } else {
        sent.vcpu.current = now.vcpu.current;
        None
    };
    sent.devices.memory = now.devices.memory;
    // <memory> counts the memory devices (libvirt's meaning): hot-added ones included.
    sent.memory.memory_kib = now.memory.memory_kib;
    sent.memory.current_kib = now.memory.current_kib;
    // The NICs it has now (hot-added ones at their root ports, detached ones gone).
    sent.devices.interfaces =
        crate::service::nics::hotplug::live_interfaces(inner, name, live).await?;
    if matches!(
        definition.os.firmware,
        novacron_domain::model::Firmware::UefiAuto { .. }
    ) {
        sent.os.firmware = definition.os.firmware.clone();
    }
    Ok(DeviceSet {
        config: sent,
        live_vcpus,
    })
}
