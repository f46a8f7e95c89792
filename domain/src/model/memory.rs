//! Guest memory size, host NUMA policy and memory backing. Sizes are KiB (libvirt's unit).

use serde::{Deserialize, Serialize};

use super::ids::IdSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Memory {
    /// `<memory>`: the guest's RAM at boot including its memory devices (libvirt's meaning);
    /// the boot RAM proper is `DomainConfig::boot_memory_kib`.
    pub memory_kib: u64,
    /// `<currentMemory>`: balloon target; absent means equal to `memory_kib`.
    pub current_kib: Option<u64>,
    /// `<maxMemory slots=..>`: hotplug ceiling.
    pub max: Option<MaxMemory>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MaxMemory {
    pub size_kib: u64,
    pub slots: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumaMode {
    Strict,
    Preferred,
    Interleave,
    Restrictive,
}

impl NumaMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Preferred => "preferred",
            Self::Interleave => "interleave",
            Self::Restrictive => "restrictive",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Strict,
            Self::Preferred,
            Self::Interleave,
            Self::Restrictive,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// `<memtune>`: the host's limits on the guest's memory, QEMU's own overhead included (KiB).
/// Applied through the guest's cgroup, as libvirt does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MemTune {
    /// `<hard_limit>`: the most the QEMU process may use; past it the kernel reclaims, then
    /// kills (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub hard_limit_kib: Option<u64>,
    /// `<soft_limit>`: what it is pushed back to under host memory pressure (v2
    /// `memory.high`, v1 `memory.soft_limit_in_bytes`).
    pub soft_limit_kib: Option<u64>,
}

/// `<numatune>`: where on the host guest memory lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NumaTune {
    pub memory: Option<NumaPolicy>,
    #[serde(default)]
    pub memnodes: Vec<MemNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NumaPolicy {
    pub mode: NumaMode,
    pub nodeset: IdSet,
}

/// Per-guest-cell host policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MemNode {
    pub cellid: u32,
    pub mode: NumaMode,
    pub nodeset: IdSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MemoryBacking {
    /// `Some(vec![])` is `<hugepages/>`: the host's default huge page size.
    pub hugepages: Option<Vec<HugePage>>,
    #[serde(default)]
    pub nosharepages: bool,
    #[serde(default)]
    pub locked: bool,
    pub source: Option<MemorySource>,
    pub access: Option<MemoryAccess>,
    pub allocation: Option<MemoryAllocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct HugePage {
    pub size_kib: u64,
    /// Guest NUMA cells this size applies to; `None` = all cells.
    pub nodeset: Option<IdSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    Anonymous,
    File,
    Memfd,
}

impl MemorySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::File => "file",
            Self::Memfd => "memfd",
        }
    }
}

/// Shared access is what vhost-user and virtiofs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAccess {
    Shared,
    Private,
}

impl MemoryAccess {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Private => "private",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAllocation {
    /// Preallocate all guest memory at start (`prealloc=on`).
    Immediate,
    Ondemand,
}

impl MemoryAllocation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Ondemand => "ondemand",
        }
    }
}
