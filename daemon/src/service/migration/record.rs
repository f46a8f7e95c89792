//! The source's durable note of a migration in flight (`<run>/migrations/<name>.json`, mode
//! 0600 as it holds the destination's token), so a restarted daemon can finish or undo it.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::Inner;
use super::MigrateRequest;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordPhase {
    /// Streaming: undo on restart (the destination has not been asked to take over).
    Migrating,
    /// The destination was (or was about to be) asked to take over: ask it before deciding.
    HandingOver,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub version: u32,
    pub id: String,
    pub domain: String,
    pub destination: String,
    pub token: Option<String>,
    pub destination_ca: Option<PathBuf>,
    pub incoming_id: String,
    pub was_running: bool,
    pub persistent: bool,
    pub keep_source_definition: bool,
    pub phase: RecordPhase,
}

impl MigrationRecord {
    pub fn new(
        id: &str,
        domain: &str,
        request: &MigrateRequest,
        incoming_id: &str,
        was_running: bool,
        persistent: bool,
    ) -> MigrationRecord {
        MigrationRecord {
            version: VERSION,
            id: id.to_owned(),
            domain: domain.to_owned(),
            destination: request.destination.clone(),
            token: request.token.clone(),
            destination_ca: request.destination_ca.clone(),
            incoming_id: incoming_id.to_owned(),
            was_running,
            persistent,
            keep_source_definition: request.keep_source_definition,
            phase: RecordPhase::Migrating,
        }
    }
}

pub fn dir(inner: &Inner) -> PathBuf {
    inner.config.run_dir.join("migrations")
}

fn path(inner: &Inner, domain: &str) -> PathBuf {
    dir(inner).join(format!("{domain}.json"))
}

pub async fn save(inner: &Arc<Inner>, record: &MigrationRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let dir = dir(inner);
    tokio::fs::create_dir_all(&dir).await?;
    crate::persist::atomic::write_atomic_async(path(inner, &record.domain), bytes, 0o600).await
}

pub async fn remove(inner: &Arc<Inner>, domain: &str) {
    if let Err(e) = crate::persist::atomic::remove_durable_async(path(inner, domain)).await {
        tracing::warn!(domain, error = %e, "cannot remove the migration record");
    }
}

/// Every record left behind; unreadable ones are reported and skipped.
pub async fn load_all(inner: &Arc<Inner>) -> Vec<MigrationRecord> {
    let dir = dir(inner);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // Bounded: a record is a few hundred bytes.
            let parsed = std::fs::metadata(&p)
                .ok()
                .filter(|m| m.len() < 64 * 1024)
                .and_then(|_| std::fs::read(&p).ok())
                .and_then(|b| serde_json::from_slice::<MigrationRecord>(&b).ok())
                .filter(|r| r.version == VERSION);
            match parsed {
                Some(r) => out.push(r),
                None => tracing::warn!(file = %p.display(), "unreadable migration record skipped"),
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}
