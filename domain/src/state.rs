//! Domain lifecycle state and its legal transitions (see ARCHITECTURE.md).

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Shutoff,
    Starting,
    Running,
    Paused,
    ShuttingDown,
    Migrating,
    /// Memory saved to disk, no process (a remote hypervisor's "suspended"/"saved" state;
    /// the local QEMU driver pauses instead and never reports it).
    Suspended,
    Crashed,
}

impl DomainState {
    pub const ALL: [DomainState; 8] = [
        Self::Shutoff,
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::ShuttingDown,
        Self::Migrating,
        Self::Suspended,
        Self::Crashed,
    ];

    /// Stable string form (API, D-Bus properties, runtime records).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Shutoff => "shutoff",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::ShuttingDown => "shutting_down",
            Self::Migrating => "migrating",
            Self::Suspended => "suspended",
            Self::Crashed => "crashed",
        }
    }

    /// A QEMU process exists for the domain.
    pub const fn is_live(self) -> bool {
        !matches!(self, Self::Shutoff | Self::Crashed | Self::Suspended)
    }

    /// Whether `self -> next` is an edge of the lifecycle graph.
    pub const fn can_transition_to(self, next: DomainState) -> bool {
        use DomainState::*;
        match (self, next) {
            (Shutoff, Starting) | (Crashed, Starting) => true,
            (Starting, Running) | (Starting, Paused) | (Starting, Shutoff) => true,
            (Running, Paused) | (Paused, Running) => true,
            (Running, ShuttingDown) | (Paused, ShuttingDown) | (ShuttingDown, Shutoff) => true,
            // destroy: any live state may be forced off.
            (Running, Shutoff) | (Paused, Shutoff) | (ShuttingDown, Running) => true,
            (Running, Migrating) | (Paused, Migrating) => true,
            // Migration ends with the guest gone here, or aborted and still running here.
            (Migrating, Shutoff) | (Migrating, Running) | (Migrating, Paused) => true,
            // Suspend to disk and back; a saved state may also be discarded.
            (Running, Suspended) | (Paused, Suspended) => true,
            (Suspended, Running) | (Suspended, Shutoff) => true,
            (s, Crashed) => s.is_live(),
            (Crashed, Shutoff) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for DomainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown domain state '{0}'")]
pub struct UnknownState(pub String);

impl FromStr for DomainState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}
