//! A daemon restarted while it was migrating a guest away finds the record and settles it:
//! the QEMU's own migration status and the destination's answer decide, never a guess. What
//! happened is published as a `migration_finished` event and logged.

use std::sync::Arc;
use std::time::Duration;

use novacron_qmp::commands::{MigrateCancel, QueryMigrate};
use novacron_qmp::qapi::MigrationStatus;

use super::super::domain::UpState;
use super::super::events::{EventKind, StateReason};
use super::super::jobs::AsyncJob;
use super::super::Inner;
use super::record::{self, MigrationRecord, RecordPhase};
use super::source::{gone_from_here, peer, stay_here};
use super::IncomingState;
use crate::client::ClientError;

/// Settles every migration record in the background (the destination may be slow to reach).
pub(in crate::service) async fn recover(inner: &Arc<Inner>) {
    let records = record::load_all(inner).await;
    for rec in records {
        let inner = inner.clone();
        tokio::spawn(async move {
            let (outcome, detail) = settle(&inner, &rec).await;
            tracing::warn!(domain = %rec.domain, id = %rec.id, outcome, %detail, "migration interrupted by a daemon restart settled");
            inner.events.publish(
                &rec.domain,
                EventKind::MigrationFinished {
                    id: rec.id.clone(),
                    outcome: outcome.into(),
                    detail: format!("recovered after a daemon restart: {detail}"),
                },
            );
            record::remove(&inner, &rec.domain).await;
        });
    }
}

async fn settle(inner: &Arc<Inner>, rec: &MigrationRecord) -> (&'static str, String) {
    let peer = match peer(
        &rec.destination,
        rec.token.as_deref(),
        rec.destination_ca.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => return ("unknown", format!("cannot reach the destination: {e}")),
    };
    let dest = &peer.client;
    let Ok(h) = inner.handle(&rec.domain) else {
        let _ = dest.abort_incoming(&rec.incoming_id).await;
        return ("failed", "the guest was gone here".into());
    };
    let _long = h.jobs.begin_async(&rec.domain, AsyncJob::Migration).ok();
    let Some(live) = h.run().live().cloned() else {
        // QEMU died with (or after) the daemon. If the destination finished, the guest is there.
        return match dest.incoming(&rec.incoming_id).await {
            Ok(v) if v.state == IncomingState::Finished => {
                ("completed", "the guest runs on the destination".into())
            }
            _ => {
                let _ = dest.abort_incoming(&rec.incoming_id).await;
                (
                    "failed",
                    "the source QEMU was gone; the destination discarded its copy".into(),
                )
            }
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
    let (hr, lr) = (&h, &live);
    let stay = |why: &'static str| async move {
        let _ = dest.abort_incoming(&rec.incoming_id).await;
        hr.set_up_state(
            &inner.events,
            UpState::Migrating,
            StateReason::MigrationStarted,
        );
        stay_here(inner, hr, lr, rec.was_running, why).await;
        ("cancelled", why.to_owned())
    };
    match status {
        Some(MigrationStatus::Completed) => {
            let view = match dest.incoming(&rec.incoming_id).await {
                Ok(v) if v.state == IncomingState::Prepared => {
                    dest.finish_incoming(&rec.incoming_id).await
                }
                other => other,
            };
            match view {
                Ok(v) if v.state == IncomingState::Finished => {
                    h.set_up_state(
                        &inner.events,
                        UpState::Migrating,
                        StateReason::MigrationStarted,
                    );
                    gone_from_here(inner, &h, &live, rec.keep_source_definition).await;
                    (
                        "completed",
                        "the destination took over; the source QEMU quit".into(),
                    )
                }
                Ok(_) | Err(ClientError::Api { .. }) => {
                    stay("the destination had discarded its copy; the guest runs here").await
                }
                Err(e) => (
                    "unknown",
                    format!(
                        "the stream completed but the destination cannot be asked ({e}); \
                         the guest is left paused here"
                    ),
                ),
            }
        }
        Some(MigrationStatus::PostcopyActive) => (
            "unknown",
            "post-copy was running; the guest is split between the hosts and was left alone".into(),
        ),
        _ if rec.phase == RecordPhase::HandingOver => {
            stay("the stream had not completed; the guest runs here").await
        }
        _ => stay("the migration was undone; the guest runs here").await,
    }
}
