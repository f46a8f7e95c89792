//! The one place a snapshot freezes and thaws the guest's filesystems, through the guest
//! agent (`service::agent`). Without a connected agent `quiesce=required` refuses and
//! `best-effort` goes on and records the snapshot as not quiesced.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::service::Service;
use novacron_domain::Error;

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
    #[error("the guest agent of domain '{0}' failed: {1}")]
    Agent(String, String),
    #[error("the guest agent of domain '{domain}' did not answer {what} within {after:?}")]
    Timeout {
        domain: String,
        what: &'static str,
        after: Duration,
    },
}

/// Freezes the guest's filesystems; the number frozen.
pub async fn freeze(svc: &Service, domain: &str) -> Result<u32, QuiesceError> {
    let n = svc
        .agent_fsfreeze(domain, FREEZE_DEADLINE)
        .await
        .map_err(|e| agent_error(domain, "guest-fsfreeze-freeze", FREEZE_DEADLINE, e))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Thaws them; called whenever a freeze was attempted, whatever happened since.
pub async fn thaw(svc: &Service, domain: &str) -> Result<u32, QuiesceError> {
    let n = svc
        .agent_fsthaw(domain, THAW_DEADLINE)
        .await
        .map_err(|e| agent_error(domain, "guest-fsfreeze-thaw", THAW_DEADLINE, e))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn agent_error(domain: &str, what: &'static str, after: Duration, e: Error) -> QuiesceError {
    match e {
        Error::AgentUnavailable { .. } => QuiesceError::AgentNotConnected(domain.to_owned()),
        Error::AgentTimeout { .. } => QuiesceError::Timeout {
            domain: domain.to_owned(),
            what,
            after,
        },
        other => QuiesceError::Agent(domain.to_owned(), other.to_string()),
    }
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
