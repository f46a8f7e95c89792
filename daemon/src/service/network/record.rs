//! A running network's runtime record: the exact undo list of what we changed on the host,
//! written atomically BEFORE each change, so a stop or a restarted daemon undoes exactly
//! that and nothing else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::net::dnsmasq;

/// One host change, undone in reverse order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "undo")]
pub enum Undo {
    /// Our bridge (deleted only if it still carries our alias).
    Bridge { name: String },
    /// Our nft table `inet novacron-<network>`.
    NftTable,
    /// `net.ipv4.ip_forward` as it was before we set it.
    IpForward { previous: String },
    /// Our dnsmasq (`proc` unknown while it was starting) and its files.
    Dnsmasq { proc: Option<dnsmasq::Proc> },
    /// The htb root qdisc on our bridge: the network's inbound limit (cleared only while
    /// the bridge still carries our alias).
    Shaper { bridge: String },
    /// Our nft table `netdev novacron-<network>`: the network's outbound policer.
    Policer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    /// False from the moment a stop begins: a daemon that finds such a record cleans up.
    pub active: bool,
    pub bridge: Option<String>,
    pub undo: Vec<Undo>,
}

impl Record {
    pub fn new(network: &str, bridge: Option<String>) -> Record {
        Record {
            network: network.to_owned(),
            active: true,
            bridge,
            undo: Vec::new(),
        }
    }

    pub fn dnsmasq(&self) -> Option<dnsmasq::Proc> {
        self.undo.iter().find_map(|u| match u {
            Undo::Dnsmasq { proc } => *proc,
            _ => None,
        })
    }
}

pub fn path(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("{network}.record.json"))
}

/// Writes the record atomically (blocking).
pub fn save(dir: &Path, r: &Record) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    crate::persist::atomic::write_runtime(&path(dir, &r.network), &bytes, 0o600)
}

pub fn remove(dir: &Path, network: &str) -> std::io::Result<()> {
    crate::persist::atomic::remove_runtime(&path(dir, network)).map(|_| ())
}

/// Every record in `dir` (unreadable ones are skipped and named in the log).
pub fn load_all(dir: &Path) -> Vec<Record> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".record.json"))
        .filter_map(|e| {
            let p = e.path();
            match std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => Some(r),
                other => {
                    tracing::warn!(path = %p.display(), ?other, "unreadable network record skipped");
                    None
                }
            }
        })
        .collect()
}
