//! `[hugepages]` and `[cgroups]` in the configuration: what the host layer may do for guests.
//! Owned here so the configuration imports nothing above it; `host` uses them.

use std::path::PathBuf;

/// `[hugepages]` in the daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HugepageConfig {
    /// Grow a short pool (per node, of the guest's page size) by what a guest needs before it
    /// starts, and shrink it by as much when the guest stops. Off: a short pool is refused.
    pub reserve: bool,
}

/// `[cgroups]`: per-guest cgroups (cpuset from the pins and numatune, memory limit). With
/// systemd scopes the same limits become scope properties instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    pub mode: CgroupMode,
    /// Parent of the guests' cgroups: relative to the daemon's own cgroup, or absolute from
    /// the hierarchy's root.
    pub parent: PathBuf,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mode: CgroupMode::Off,
            parent: PathBuf::from("novacron"),
        }
    }
}

impl CgroupConfig {
    /// The parent must name a directory below the hierarchy, never above it.
    pub fn check(&self) -> Result<(), String> {
        use std::path::Component;
        let ok = self
            .parent
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::RootDir))
            && self
                .parent
                .components()
                .any(|c| matches!(c, Component::Normal(_)));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{:?} must name a cgroup directory (no '..', '.', or empty path)",
                self.parent
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// No per-guest cgroups (QEMU stays in the daemon's cgroup or its systemd scope).
    #[default]
    Off,
    /// Where the host has the controllers; otherwise none, logged once per start.
    Auto,
    /// Always; a start fails if the controllers are missing.
    On,
}
