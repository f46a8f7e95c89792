//! The live device set of a running guest, kept in its runtime record: every disk QEMU has
//! now with the node and device names the daemon gave it, as changed by attach, detach,
//! media changes and snapshots (a disk's active layer: an overlay, or the base a commit went
//! back to) since the start; and the vCPUs, memory devices (DIMMs, virtio-mem requested
//! sizes) and balloon target as changed by hotplug since the start. A restarted daemon and a
//! migration read the guest's devices from here, not from the config it was started with.

use novacron_domain::model::Disk;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveDevices {
    pub disks: Vec<LiveDisk>,
    /// vCPUs QEMU has now (always the lowest slots); absent in records from before vCPU
    /// hotplug: the started config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// vCPUs (index) a `device_del` was sent for and the guest has not released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcpus_unplugging: Vec<u32>,
    /// The memory devices QEMU has now, with their ids (`alias`) and virtio-mem requested
    /// sizes; absent: the started config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Vec<novacron_domain::model::MemoryDevice>>,
    /// DIMMs (alias) a `device_del` was sent for and the guest has not released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_unplugging: Vec<String>,
    /// The balloon target last set (KiB); absent: never set since the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon_kib: Option<u64>,
    /// Format nodes that are no disk's top any more but stay in QEMU below an overlay (a
    /// snapshot's frozen layer): never given to a new disk, whose `blockdev-add` QEMU would
    /// refuse as a duplicate node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen_nodes: Vec<String>,
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
    /// The pool volume the definition or attach named (`<disk type='volume'>`) and the file
    /// it resolved to: the live view shows the volume, as written, while QEMU still runs on
    /// that file (libvirt keeps the volume source in the live XML too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOrigin {
    pub pool: String,
    pub volume: String,
    /// The file the volume resolved to.
    pub path: String,
}

impl VolumeOrigin {
    /// The origin of `resolved` when `named` (the same disk before resolving) is a volume.
    pub fn of(named: &Disk, resolved: &Disk) -> Option<VolumeOrigin> {
        use novacron_domain::model::DiskSource;
        match (&named.source, &resolved.source) {
            (Some(DiskSource::Volume { pool, volume }), Some(DiskSource::File { path })) => {
                Some(VolumeOrigin {
                    pool: pool.clone(),
                    volume: volume.clone(),
                    path: path.clone(),
                })
            }
            _ => None,
        }
    }
}

impl LiveDisk {
    /// The disk as the user wrote it: its volume while it still runs on the volume's file
    /// (a snapshot's overlay or a media change made it another file).
    pub fn as_named(&self) -> Disk {
        use novacron_domain::model::DiskSource;
        let mut d = self.disk.clone();
        if let (Some(o), Some(DiskSource::File { path })) = (&self.volume, &d.source) {
            if *path == o.path {
                d.source = Some(DiskSource::Volume {
                    pool: o.pool.clone(),
                    volume: o.volume.clone(),
                });
            }
        }
        d
    }
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
                    volume: None,
                })
                .collect(),
            vcpus: Some(config.vcpu.current.unwrap_or(config.vcpu.count)),
            vcpus_unplugging: Vec::new(),
            memory: Some(with_ids(&config.devices.memory)),
            memory_unplugging: Vec::new(),
            balloon_kib: None,
            frozen_nodes: Vec::new(),
        }
    }

    /// The vCPUs QEMU has now (`config`: the started one, for records without the count).
    pub fn vcpus(&self, config: &novacron_domain::DomainConfig) -> u32 {
        self.vcpus
            .unwrap_or(config.vcpu.current.unwrap_or(config.vcpu.count))
    }

    /// The memory devices QEMU has now, each with its id as `alias`.
    pub fn memory(
        &self,
        config: &novacron_domain::DomainConfig,
    ) -> Vec<novacron_domain::model::MemoryDevice> {
        match &self.memory {
            Some(m) => m.clone(),
            None => with_ids(&config.devices.memory),
        }
    }

    /// The set at start (`config`, volumes resolved) with each volume disk's origin from
    /// `named` (the same config before resolving), matched by target.
    pub fn at_start_named(
        config: &novacron_domain::DomainConfig,
        named: &novacron_domain::DomainConfig,
    ) -> LiveDevices {
        let mut set = LiveDevices::at_start(config);
        for d in &mut set.disks {
            d.volume = named
                .devices
                .disks
                .iter()
                .find(|n| n.target.dev == d.disk.target.dev)
                .and_then(|n| VolumeOrigin::of(n, &d.disk));
        }
        set
    }

    pub fn find(&self, target: &str) -> Option<&LiveDisk> {
        self.disks.iter().find(|d| d.disk.target.dev == target)
    }

    pub fn find_mut(&mut self, target: &str) -> Option<&mut LiveDisk> {
        self.disks.iter_mut().find(|d| d.disk.target.dev == target)
    }

    /// Disk `target`'s active layer is another image now (a snapshot's overlay, or the base
    /// an active commit merged it into): QEMU's device reads format node `node` over `file`.
    /// Its fd sets stay: the layers below (which they hold) are still in the chain, and the
    /// daemon released an overlay's own set as soon as QEMU held the file. Returns whether
    /// anything changed.
    pub fn switch_top(
        &mut self,
        target: &str,
        file: &str,
        format: novacron_domain::model::DiskFormat,
        node: &str,
    ) -> bool {
        use novacron_domain::model::DiskSource;
        let Some(d) = self.find_mut(target) else {
            return false;
        };
        let source = Some(DiskSource::File {
            path: file.to_owned(),
        });
        if d.disk.source == source
            && d.disk.driver.format == format
            && d.node.as_deref() == Some(node)
        {
            return false;
        }
        d.disk.source = source;
        d.disk.driver.format = format;
        let old = d.node.replace(node.to_owned());
        if let Some(old) = old.filter(|o| o != node && !self.frozen_nodes.contains(o)) {
            self.frozen_nodes.push(old);
        }
        true
    }

    /// A format node name no disk uses and no snapshot froze (`diskN`, past the started
    /// config's numbering).
    pub fn free_node(&self) -> String {
        (0..)
            .map(novacron_domain::qemu::hotplug::node_name)
            .find(|n| {
                !self.disks.iter().any(|d| d.node.as_deref() == Some(n))
                    && !self.frozen_nodes.contains(n)
            })
            .unwrap_or_else(|| "disk-hp".into())
    }
}

/// `devs` with the ids the command line gives them filled in as aliases.
fn with_ids(
    devs: &[novacron_domain::model::MemoryDevice],
) -> Vec<novacron_domain::model::MemoryDevice> {
    let ids = novacron_domain::model::memory_device_ids(devs);
    devs.iter()
        .zip(ids)
        .map(|(d, id)| {
            let mut d = d.clone();
            d.alias = Some(id);
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use novacron_domain::model::DiskFormat;

    #[test]
    fn a_volume_disk_on_its_overlay_shows_the_overlay_file() {
        let named = novacron_domain::xml::parse_disk(
            "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
             <source pool='default' volume='web1.raw'/><target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        let resolved = novacron_domain::xml::parse_disk(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='/pool/web1.raw'/><target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        let mut set = LiveDevices {
            disks: vec![LiveDisk {
                disk: resolved.clone(),
                node: Some("disk0".into()),
                qdev: "virtio-vda".into(),
                fd_sets: vec![3],
                detaching: false,
                volume: VolumeOrigin::of(&named, &resolved),
            }],
            vcpus: None,
            vcpus_unplugging: Vec::new(),
            memory: None,
            memory_unplugging: Vec::new(),
            balloon_kib: None,
            frozen_nodes: Vec::new(),
        };
        assert_eq!(set.disks[0].as_named(), named);
        assert!(set.switch_top("vda", "/pool/d.vda.s1.qcow2", DiskFormat::Qcow2, "nc1"));
        assert!(!set.switch_top("vda", "/pool/d.vda.s1.qcow2", DiskFormat::Qcow2, "nc1"));
        assert!(!set.switch_top("vdz", "/x", DiskFormat::Qcow2, "nc2"));
        // disk0 stays in QEMU under the overlay: a disk attached now gets another name.
        assert_eq!(set.frozen_nodes, ["disk0"]);
        assert_eq!(set.free_node(), "disk1");
        let d = &set.disks[0];
        assert_eq!((d.node.as_deref(), &d.fd_sets[..]), (Some("nc1"), &[3][..]));
        // libvirt shows the overlay file after an external snapshot of a volume disk.
        let shown = d.as_named();
        assert_eq!(
            shown.source,
            Some(novacron_domain::model::DiskSource::File {
                path: "/pool/d.vda.s1.qcow2".into()
            })
        );
        assert_eq!(shown.driver.format, DiskFormat::Qcow2);
        // An active commit back into the volume's file: the volume again.
        assert!(set.switch_top("vda", "/pool/web1.raw", DiskFormat::Raw, "disk0"));
        assert_eq!(set.disks[0].as_named(), named);
    }
}
