//! Live migration between novacrond peers, driven by the source daemon.
//!
//! The source asks the destination's HTTP API to prepare (`incoming`), streams the guest with
//! QEMU's own migration, follows its progress, and on completion asks the destination to take
//! over (`finish`) before its own QEMU quits. Every failure before that hand-over leaves the
//! guest running here and the destination cleaned; the guest is never run on both hosts (an
//! outcome that cannot be established leaves it paused and says so).

mod incoming;
pub mod options;
mod peer_client;
mod peer_uri;
pub mod progress;
mod record;
mod recovery;
mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub use crate::config::migration::MigrationConfig;
pub use options::{Compression, MigrationOptions, TimeoutAction};
pub use progress::{Phase, Progress};

pub(in crate::service) use incoming::kill as kill_unstarted;
pub(super) use recovery::recover;
pub(crate) use source::device_set;

/// `POST /v1/domains/{name}/migrate`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination daemon's API: `http://host:port` or `https://...`.
    pub destination: String,
    /// Its bearer token (never logged, never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A CA certificate (PEM, on the source host) to verify an `https://` destination: a
    /// regular file of at most 1 MiB inside `api.request_files_dir` (`<state_dir>/pki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ca: Option<PathBuf>,
    #[serde(default)]
    pub options: MigrationOptions,
    /// Leave the persistent definition here as well (shut off) instead of moving it.
    #[serde(default)]
    pub keep_source_definition: bool,
}

impl std::fmt::Debug for MigrateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateRequest")
            .field("destination", &self.destination)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .field("keep_source_definition", &self.keep_source_definition)
            .finish()
    }
}

/// `POST /v1/migrations/incoming`: what a source sends its destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    /// The guest's running definition, as libvirt XML.
    pub xml: String,
    #[serde(default)]
    pub options: MigrationOptions,
    /// The address the source reached this daemon at: the stream listens there.
    pub listen_host: String,
    /// Take over the persistent definition on finish.
    #[serde(default)]
    pub persistent: bool,
    /// Seconds without a word from the source after which the destination gives up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// vCPUs the guest has now when it has more than it was started with (the XML's current
    /// count): the destination starts with the started count and hot-plugs the rest before
    /// the stream, as the source did. QEMU sizes some devices by the started count (`-smp
    /// cpus`: virtio-blk's queues, so its MSI-X table), which must match on both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_vcpus: Option<u32>,
}

/// The destination's answer to a prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingAnswer {
    pub id: String,
    /// Where the source's QEMU sends the stream (`tcp:host:port`).
    pub uri: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncomingState {
    /// QEMU waits for (or is receiving) the stream.
    Prepared,
    /// The guest runs here.
    Finished,
    /// Discarded: QEMU killed, nothing left.
    Aborted,
}

/// `GET /v1/migrations/incoming/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingView {
    pub id: String,
    pub domain: String,
    pub state: IncomingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the guest resumed here, as this QEMU stamped its RESUME event (microseconds
    /// since the epoch): the end of the guest's pause, for the source to measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at_us: Option<i64>,
}

/// The migrations this daemon is part of.
#[derive(Default)]
pub(crate) struct Registry {
    /// By domain: the running or the last migration away from here.
    outgoing: Mutex<HashMap<String, Arc<source::Outgoing>>>,
    /// By id: migrations into this host (kept a while after they end, for the source to ask).
    incoming: Mutex<HashMap<String, Arc<incoming::Incoming>>>,
    /// By id: how incoming migrations a previous daemon left behind ended (found in the
    /// runtime records at restart), so the source still gets a truthful answer.
    remembered: Mutex<HashMap<String, IncomingView>>,
}

impl Registry {
    fn outgoing(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<source::Outgoing>>> {
        self.outgoing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn incoming(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<incoming::Incoming>>> {
        self.incoming.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remembered(&self, id: &str) -> Option<IncomingView> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Notes how an incoming migration found in a runtime record at restart ended.
    pub(in crate::service) fn remember_incoming(&self, view: IncomingView) {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(view.id.clone(), view);
    }
}

/// A fresh identifier, unguessable enough that one source cannot finish another's migration.
fn new_id(prefix: &str) -> String {
    use sha2::Digest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = Vec::new();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    if let Ok(random) = std::fs::read("/proc/sys/kernel/random/uuid") {
        seed.extend_from_slice(&random);
    }
    let digest = sha2::Sha256::digest(&seed);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}
