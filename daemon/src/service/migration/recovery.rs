//! A daemon restarted while it was migrating a guest away finds the record and settles it:
//! the QEMU's own migration status and the destination's answer decide, never a guess. The
//! domain is marked migrating (and holds the migration job) before the API serves, so nobody
//! resumes it meanwhile. What happened is published as a `migration_finished` event and
//! logged; an outcome that stays unknown keeps the record (a later restart tries again).

use std::sync::Arc;
use std::time::Duration;

use novacron_qmp::commands::{MigrateCancel, QueryMigrate, QueryStatus};
use novacron_qmp::qapi::MigrationStatus;
use tokio::sync::oneshot;

use super::super::domain::{DomainHandle, Live, UpState};
use super::super::events::{EventKind, StateReason};
use super::super::jobs::AsyncJob;
use super::super::Inner;
use super::record::{self, MigrationRecord, RecordPhase};
use super::source::{gone_from_here, peer, stay_here};
use super::IncomingState;
use crate::http_client::Client;

/// How often an unknown outcome is asked again before it is left to the operator.
const RETRIES: u32 = 20;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Settles every migration record in the background (the destination may be slow to reach);
/// returns once each domain concerned is marked migrating.
pub(in crate::service) async fn recover(inner: &Arc<Inner>) {
    let records = record::load_all(inner).await;
    for rec in records {
        let inner = inner.clone();
        let (marked_tx, marked_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (outcome, detail) = settle_with_retries(&inner, &rec, marked_tx).await;
            tracing::warn!(domain = %rec.domain, id = %rec.id, outcome, %detail, "migration interrupted by a daemon restart settled");
            inner.events.publish(
                &rec.domain,
                EventKind::MigrationFinished {
                    id: rec.id.clone(),
                    outcome: outcome.into(),
                    detail: format!("recovered after a daemon restart: {detail}"),
                },
            );
            if outcome != "unknown" {
                record::remove(&inner, &rec.domain).await;
            }
        });
        // Dropped unsent only if the task died: nothing to wait for then.
        let _ = marked_rx.await;
    }
}

async fn settle_with_retries(
    inner: &Arc<Inner>,
    rec: &MigrationRecord,
    marked: oneshot::Sender<()>,
) -> (&'static str, String) {
    let Ok(h) = inner.handle(&rec.domain) else {
        let _ = marked.send(());
        // Nothing runs here: the destination's copy (if finished) is the guest.
        return match peer(
            inner,
            &rec.destination,
            rec.token.as_deref(),
            rec.destination_ca.as_deref(),
        )
        .await
        {
            Ok(p) => {
                let _ = p.client.abort_incoming(&rec.incoming_id).await;
                ("failed", "the guest was gone here".into())
            }
            Err(e) => ("failed", format!("the guest was gone here ({e})")),
        };
    };
    let _long = match h.jobs.begin_async(&rec.domain, AsyncJob::Migration) {
        Ok(g) => g,
        Err(e) => {
            let _ = marked.send(());
            return (
                "unknown",
                format!("cannot take the migration job to settle it: {e}"),
            );
        }
    };
    h.set_up_state(
        &inner.events,
        UpState::Migrating,
        StateReason::MigrationStarted,
    );
    let _ = marked.send(());
    let mut wait = FIRST_RETRY;
    let mut tries = 0;
    loop {
        let (outcome, detail) = settle(inner, rec, &h).await;
        if outcome != "unknown" || tries >= RETRIES {
            if outcome == "unknown" {
                leave_undecided(inner, &h, &detail).await;
            }
            return (outcome, detail);
        }
        tracing::warn!(domain = %rec.domain, id = %rec.id, %detail, "outcome of an interrupted migration unknown; asking again in {wait:?}");
        tokio::time::sleep(wait).await;
        tries += 1;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Given up asking: the domain shows what its QEMU does (never resumed here by us).
async fn leave_undecided(inner: &Arc<Inner>, h: &Arc<DomainHandle>, why: &str) {
    let Some(live) = h.run().live().cloned() else {
        return;
    };
    let Ok(qmp) = live.qmp(&h.name) else { return };
    let state = match qmp.execute(&QueryStatus).await {
        Ok(s) if s.running => UpState::Running,
        Ok(_) => UpState::Paused,
        Err(_) => return,
    };
    h.set_up_state(
        &inner.events,
        state,
        StateReason::MigrationAborted(format!(
            "{why}; resume it on one host only once the destination's state is known"
        )),
    );
}

async fn settle(
    inner: &Arc<Inner>,
    rec: &MigrationRecord,
    h: &Arc<DomainHandle>,
) -> (&'static str, String) {
    let peer = match peer(
        inner,
        &rec.destination,
        rec.token.as_deref(),
        rec.destination_ca.as_deref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return ("unknown", format!("cannot reach the destination: {e}")),
    };
    let dest = &peer.client;
    let id = &rec.incoming_id;
    let Some(live) = h.run().live().cloned() else {
        // QEMU died with (or after) the daemon. If the destination finished, the guest is there.
        return match dest.incoming(id).await {
            Ok(v) if v.state == IncomingState::Finished => {
                ("completed", "the guest runs on the destination".into())
            }
            Ok(_) => match discard_there(dest, id).await {
                Ok(()) => (
                    "failed",
                    "the source QEMU was gone; the destination discarded its copy".into(),
                ),
                Err(e) => ("unknown", format!("the source QEMU was gone; {e}")),
            },
            Err(e) => (
                "unknown",
                format!("the source QEMU was gone and the destination cannot say ({e})"),
            ),
        };
    };
    let Ok(qmp) = live.qmp(&rec.domain).cloned() else {
        return (
            "unknown",
            "the source QEMU runs but its monitor cannot be reached; nothing was changed".into(),
        );
    };
    let mut status = qmp.execute(&QueryMigrate).await.ok().and_then(|i| i.status);
    if matches!(
        status,
        Some(MigrationStatus::Setup | MigrationStatus::Active | MigrationStatus::PreSwitchover)
    ) {
        // A pre-copy stream outlived the daemon that was following it: undo it.
        let _ = qmp.execute(&MigrateCancel).await;
        for _ in 0..100 {
            status = qmp.execute(&QueryMigrate).await.ok().and_then(|i| i.status);
            if status.as_ref().is_some_and(|s| s.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    match status {
        Some(MigrationStatus::Completed) => {
            let view = match dest.incoming(id).await {
                Ok(v) if v.state == IncomingState::Prepared => match dest.finish_incoming(id).await
                {
                    Ok(v) => Ok(v),
                    // Refused or lost: its own view says which.
                    Err(_) => dest.incoming(id).await,
                },
                other => other,
            };
            match view {
                Ok(v) if v.state == IncomingState::Finished => {
                    gone_from_here(inner, h, &live, rec.keep_source_definition).await;
                    (
                        "completed",
                        "the destination took over; the source QEMU quit".into(),
                    )
                }
                Ok(v) if v.state == IncomingState::Aborted => {
                    stay(
                        inner,
                        rec,
                        h,
                        &live,
                        dest,
                        "the destination had discarded its copy",
                    )
                    .await
                }
                Ok(_) => (
                    "unknown",
                    "the stream completed but the destination neither took over nor discarded \
                     it; the guest is left paused here"
                        .into(),
                ),
                // A 404 included: a destination that forgot may still run the guest.
                Err(e) => (
                    "unknown",
                    format!(
                        "the stream completed but the destination cannot say whether it took \
                         over ({e}); the guest is left paused here"
                    ),
                ),
            }
        }
        Some(MigrationStatus::PostcopyActive) => (
            "unknown",
            "post-copy was running; the guest is split between the hosts and was left alone".into(),
        ),
        _ if rec.phase == RecordPhase::HandingOver => {
            stay(inner, rec, h, &live, dest, "the stream had not completed").await
        }
        _ => stay(inner, rec, h, &live, dest, "the migration was undone").await,
    }
}

/// Resumes the guest here, but only once the destination confirmed it holds no copy.
async fn stay(
    inner: &Arc<Inner>,
    rec: &MigrationRecord,
    h: &Arc<DomainHandle>,
    live: &Arc<Live>,
    dest: &Client,
    why: &str,
) -> (&'static str, String) {
    if let Err(e) = discard_there(dest, &rec.incoming_id).await {
        return (
            "unknown",
            format!("{why}, but {e}; the guest is not resumed here"),
        );
    }
    let why = format!("{why}; the guest runs here");
    stay_here(inner, h, live, rec.was_running, &why).await;
    ("cancelled", why)
}

/// Aborts the incoming migration; Ok only when the destination says it holds no copy.
async fn discard_there(dest: &Client, id: &str) -> Result<(), String> {
    let aborted = match dest.abort_incoming(id).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    match dest.incoming(id).await {
        Ok(v) if v.state == IncomingState::Aborted => Ok(()),
        Ok(v) => Err(format!(
            "the destination answers {:?} to the abort ({aborted})",
            v.state
        )),
        Err(e) => Err(format!(
            "the destination did not confirm the abort ({aborted}; asking: {e})"
        )),
    }
}
