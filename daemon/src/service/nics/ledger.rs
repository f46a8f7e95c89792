//! The NIC ledger: `<run>/nics/<domain>.json`, every link the daemon made for a running
//! guest (name, ifindex, kind), written atomically BEFORE QEMU is given the link. It is what
//! the daemon deletes when the guest stops and what a restarted daemon adopts or cleans.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// A tun/tap device: it goes with its last descriptor (QEMU's), deleted here if not.
    Tap,
    /// A macvtap link: persistent until deleted.
    Macvtap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadeLink {
    pub ifname: String,
    pub ifindex: u32,
    pub kind: LinkKind,
    /// The guest MAC of the NIC it serves.
    pub mac: String,
    /// QEMU's netdev id (`hostnet<N>`), for hotplug and link state.
    pub netdev: String,
    /// QEMU's device id (`net<N>`).
    pub device: String,
    /// The bridge it was attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The NIC as hot-added (absent for NICs of the started config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplugged: Option<novacron_domain::model::Interface>,
    /// Set by a live link-state change to down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_down: bool,
    /// The bandwidth a live `domiftune` set on a NIC of the started config (a hot-added
    /// NIC's is in `hotplugged`); absent: the started config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<Tuned>,
}

/// A live bandwidth change of a started NIC (`bandwidth` absent: every limit cleared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuned {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<novacron_domain::model::Bandwidth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub links: Vec<MadeLink>,
    /// Devices of the started config (`net<i>`) detached live since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplugged: Vec<String>,
}

/// The ledger files' directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("nics")
}

fn file(run_dir: &Path, domain: &str) -> PathBuf {
    dir(run_dir).join(format!("{domain}.json"))
}

/// Blocking.
pub fn load(run_dir: &Path, domain: &str) -> io::Result<Option<Ledger>> {
    match std::fs::read(file(run_dir, domain)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Atomic (temp file, rename); a runtime file, so not forced to disk (see
/// `persist::atomic::write_runtime`). Blocking.
pub fn save(run_dir: &Path, domain: &str, ledger: &Ledger) -> io::Result<()> {
    std::fs::create_dir_all(dir(run_dir))?;
    let bytes = serde_json::to_vec_pretty(ledger).map_err(io::Error::other)?;
    crate::persist::atomic::write_runtime(&file(run_dir, domain), &bytes, 0o600)
}

/// Blocking.
pub fn remove(run_dir: &Path, domain: &str) -> io::Result<()> {
    crate::persist::atomic::remove_runtime(&file(run_dir, domain)).map(drop)
}

/// The domains that have a ledger. Blocking.
pub fn domains(run_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(run_dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect()
}
