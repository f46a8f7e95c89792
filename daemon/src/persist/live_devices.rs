//! The live device set of a running guest, kept in its runtime record: every disk QEMU has
//! now with the node and device names the daemon gave it, as changed by attach, detach and
//! media changes since the start. A restarted daemon and a migration read the guest's disks
//! from here, not from the config it was started with.

use novacron_domain::model::Disk;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveDevices {
    pub disks: Vec<LiveDisk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveDisk {
    pub disk: Disk,
    /// The format node (the storage node is `<node>-storage`); none for an empty tray.
    pub node: Option<String>,
    /// The qdev id (`device_del`, throttling and media commands name it).
    pub qdev: String,
    /// Fd sets the daemon added for this disk's files while the guest ran (removed with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fd_sets: Vec<u64>,
    /// `device_del` was sent and QEMU has not reported the device gone: the guest still has
    /// it (an OS that never acknowledges keeps it until the guest stops).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detaching: bool,
}

impl LiveDevices {
    /// The set at start: the started config's disks under the command line's names.
    pub fn at_start(config: &novacron_domain::DomainConfig) -> LiveDevices {
        use novacron_domain::qemu::hotplug::{node_name, qdev_id};
        LiveDevices {
            disks: config
                .devices
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| LiveDisk {
                    node: d.source.as_ref().map(|_| node_name(i)),
                    qdev: qdev_id(d),
                    disk: d.clone(),
                    fd_sets: Vec::new(),
                    detaching: false,
                })
                .collect(),
        }
    }

    pub fn find(&self, target: &str) -> Option<&LiveDisk> {
        self.disks.iter().find(|d| d.disk.target.dev == target)
    }

    pub fn find_mut(&mut self, target: &str) -> Option<&mut LiveDisk> {
        self.disks.iter_mut().find(|d| d.disk.target.dev == target)
    }

    /// A format node name no disk uses (`diskN`, past the started config's numbering).
    pub fn free_node(&self) -> String {
        (0..)
            .map(novacron_domain::qemu::hotplug::node_name)
            .find(|n| !self.disks.iter().any(|d| d.node.as_deref() == Some(n)))
            .unwrap_or_else(|| "disk-hp".into())
    }
}
