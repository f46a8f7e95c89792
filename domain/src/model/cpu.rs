//! Virtual CPUs: count, guest CPU model and topology, guest NUMA, and host pinning.

use serde::{Deserialize, Serialize};

use super::ids::IdSet;
use super::memory::MemoryAccess;

/// Hard ceiling on vCPUs (QEMU q35 with x2apic handles up to 288/1024; 4096 bounds input).
pub const MAX_VCPUS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Vcpu {
    /// Maximum vCPUs (`<vcpu>` text).
    pub count: u32,
    /// vCPUs online at boot; absent means all.
    pub current: Option<u32>,
    pub placement: Option<VcpuPlacement>,
    /// Default host CPUs for all vCPUs (overridden per vCPU by `vcpupin`).
    pub cpuset: Option<IdSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuPlacement {
    Static,
    Auto,
}

impl VcpuPlacement {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Cpu {
    pub mode: CpuMode,
    /// `<cpu check=...>`; absent means libvirt's default for the mode.
    pub check: Option<CpuCheck>,
    /// `<model fallback=...>`; kept for the round trip (a host-model or named model is used
    /// as resolved, never silently replaced).
    pub fallback: Option<CpuFallback>,
    #[serde(default)]
    pub features: Vec<CpuFeature>,
    pub topology: Option<CpuTopology>,
    /// Guest NUMA cells.
    #[serde(default)]
    pub numa: Vec<NumaCell>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
pub enum CpuMode {
    /// Expose the host CPU as-is (`-cpu host`).
    HostPassthrough,
    /// Closest named model plus host features; the host layer resolves it.
    HostModel,
    /// A named QEMU/libvirt model such as `Skylake-Server-IBRS`.
    Custom { model: String },
    /// `<cpu>` without a model (only topology, NUMA or `fallback`): QEMU's default model.
    Default,
}

/// How strictly the guest CPU must match what was asked (`<cpu check=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuCheck {
    None,
    Partial,
    /// Every asked feature must be there: QEMU refuses to start otherwise (`enforce`).
    Full,
}

impl CpuCheck {
    pub const ALL: [CpuCheck; 3] = [Self::None, Self::Partial, Self::Full];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Partial => "partial",
            Self::Full => "full",
        }
    }
}

/// `<model fallback=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuFallback {
    Allow,
    Forbid,
}

impl CpuFallback {
    pub const ALL: [CpuFallback; 2] = [Self::Allow, Self::Forbid];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Forbid => "forbid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct CpuFeature {
    pub policy: FeaturePolicy,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeaturePolicy {
    Force,
    Require,
    Optional,
    Disable,
    Forbid,
}

impl FeaturePolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Force => "force",
            Self::Require => "require",
            Self::Optional => "optional",
            Self::Disable => "disable",
            Self::Forbid => "forbid",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Force,
            Self::Require,
            Self::Optional,
            Self::Disable,
            Self::Forbid,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
    /// Whether the feature ends up enabled in the guest.
    pub const fn enables(self) -> bool {
        matches!(self, Self::Force | Self::Require | Self::Optional)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct CpuTopology {
    pub sockets: u32,
    /// Absent means 1 (libvirt omits it on older versions).
    pub dies: Option<u32>,
    pub cores: u32,
    pub threads: u32,
}

impl CpuTopology {
    /// Total vCPU slots, `None` on overflow.
    pub fn total(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.dies.unwrap_or(1))?
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NumaCell {
    pub id: u32,
    pub cpus: IdSet,
    pub memory_kib: u64,
    pub mem_access: Option<MemoryAccess>,
    #[serde(default)]
    pub distances: Vec<NumaDistance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NumaDistance {
    pub id: u32,
    pub value: u32,
}

/// `<cputune>`: host scheduling and pinning. Applied by the host layer, not on the argv.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct CpuTune {
    pub shares: Option<u64>,
    pub period: Option<u64>,
    pub quota: Option<i64>,
    #[serde(default)]
    pub vcpupins: Vec<VcpuPin>,
    pub emulatorpin: Option<IdSet>,
    #[serde(default)]
    pub iothreadpins: Vec<IothreadPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct VcpuPin {
    pub vcpu: u32,
    pub cpuset: IdSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct IothreadPin {
    pub iothread: u32,
    pub cpuset: IdSet,
}
