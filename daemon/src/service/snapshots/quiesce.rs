//! The one place a snapshot freezes and thaws the guest's filesystems. The guest agent is
//! built separately; until it is wired in here, both calls answer "guest agent not
//! connected": `quiesce=required` then refuses with that error, `best-effort` goes on and
//! records the snapshot as not quiesced.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::service::Service;

/// How long a thaw may take before we give up on it (the guest stays frozen until its agent
/// times out by itself: ours must never hang the daemon).
pub const THAW_DEADLINE: Duration = Duration::from_secs(10);
pub const FREEZE_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quiesce {
    /// Refuse unless the guest's filesystems were frozen.
    Required,
    /// Freeze if the agent answers; otherwise take a crash-consistent snapshot.
    BestEffort,
    /// Crash-consistent (the default, as virsh without `--quiesce`).
    #[default]
    Off,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QuiesceError {
    #[error("the guest agent of domain '{0}' is not connected")]
    AgentNotConnected(String),
    #[error("the guest agent of domain '{domain}' did not answer {what} within {after:?}")]
    Timeout {
        domain: String,
        what: &'static str,
        after: Duration,
    },
}

/// Freezes the guest's filesystems; the number frozen.
pub async fn freeze(_svc: &Service, domain: &str) -> Result<u32, QuiesceError> {
    Err(QuiesceError::AgentNotConnected(domain.to_owned()))
}

/// Thaws them; called whenever a freeze was attempted, whatever happened since.
pub async fn thaw(_svc: &Service, domain: &str) -> Result<u32, QuiesceError> {
    Err(QuiesceError::AgentNotConnected(domain.to_owned()))
}

/// `thaw` with its deadline; failures are logged (the snapshot itself stands).
pub async fn thaw_within(svc: &Service, domain: &str) {
    match tokio::time::timeout(THAW_DEADLINE, thaw(svc, domain)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(domain, error = %e, "thaw after snapshot"),
        Err(_) => tracing::warn!(domain, "thaw after snapshot timed out"),
    }
}

/// `freeze` with its deadline.
pub async fn freeze_within(svc: &Service, domain: &str) -> Result<u32, QuiesceError> {
    tokio::time::timeout(FREEZE_DEADLINE, freeze(svc, domain))
        .await
        .unwrap_or_else(|_| {
            Err(QuiesceError::Timeout {
                domain: domain.to_owned(),
                what: "guest-fsfreeze-freeze",
                after: FREEZE_DEADLINE,
            })
        })
}
