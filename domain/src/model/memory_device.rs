//! `<memory model='dimm'|'virtio-mem'>`: hot-pluggable guest RAM beyond `<memory>`, inside
//! `<maxMemory>`. A DIMM is plugged or unplugged whole; a virtio-mem device is a region of
//! `size` of which the guest is asked to use `requested` (grown and shrunk while it runs).
//! Sizes are KiB. As in libvirt, `<memory>` is the total at boot including these devices (a
//! virtio-mem device counts with its whole `<size>`): QEMU's boot RAM (`-m size=`, the NUMA
//! cells) is `<memory>` minus the devices' sizes (`DomainConfig::boot_memory_kib`).

use serde::{Deserialize, Serialize};

use super::devices::Address;

/// The most memory devices a guest may have (QEMU's slot limit is 256).
pub const MAX_MEMORY_DEVICES: usize = 256;
/// virtio-mem's default block size on x86 (the THP size).
pub const VIRTIO_MEM_DEFAULT_BLOCK_KIB: u64 = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MemoryDevice {
    pub model: MemoryModel,
    /// The device's size: all of a DIMM, the most a virtio-mem device can provide.
    pub size_kib: u64,
    /// Guest NUMA cell it belongs to (`<node>`); 0 without guest NUMA.
    #[serde(default)]
    pub node: Option<u32>,
    /// virtio-mem: what the guest is asked to have plugged (`<requested>`).
    #[serde(default)]
    pub requested_kib: Option<u64>,
    /// virtio-mem: the granularity of plugging (`<block>`); default 2 MiB.
    #[serde(default)]
    pub block_kib: Option<u64>,
    /// virtio-mem: the device's PCI address.
    #[serde(default)]
    pub address: Option<Address>,
    /// QEMU's device id (`dimmN`, `virtiomemN`); chosen by the daemon when absent.
    #[serde(default)]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryModel {
    Dimm,
    VirtioMem,
}

impl MemoryModel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dimm => "dimm",
            Self::VirtioMem => "virtio-mem",
        }
    }
    /// The prefix of QEMU's device ids for this model.
    pub const fn id_prefix(self) -> &'static str {
        match self {
            Self::Dimm => "dimm",
            Self::VirtioMem => "virtiomem",
        }
    }
}

impl MemoryDevice {
    /// The block size in force (virtio-mem).
    pub fn block(&self) -> u64 {
        self.block_kib.unwrap_or(VIRTIO_MEM_DEFAULT_BLOCK_KIB)
    }
    /// What the guest is asked to have of this device now.
    pub fn plugged_target_kib(&self) -> u64 {
        match self.model {
            MemoryModel::Dimm => self.size_kib,
            MemoryModel::VirtioMem => self.requested_kib.unwrap_or(0),
        }
    }
}

/// What the memory devices `devs` occupy of `<memory>`: the sum of their sizes (a virtio-mem
/// device its whole region, whatever it is asked to plug), as libvirt counts them.
pub fn memory_devices_kib(devs: &[MemoryDevice]) -> u64 {
    devs.iter().fold(0u64, |a, m| a.saturating_add(m.size_kib))
}

impl super::DomainConfig {
    /// The boot RAM QEMU gets (`-m size=`; what the NUMA cells add up to): `<memory>` minus the
    /// memory devices' sizes (0 if they exceed it, which validation refuses).
    pub fn boot_memory_kib(&self) -> u64 {
        self.memory
            .memory_kib
            .saturating_sub(memory_devices_kib(&self.devices.memory))
    }
}

/// QEMU ids for the memory devices of a config: the alias where given, else `<prefix><i>`
/// with `i` the device's index among those of its model.
pub fn memory_device_ids(devs: &[MemoryDevice]) -> Vec<String> {
    let mut taken: Vec<String> = devs.iter().filter_map(|d| d.alias.clone()).collect();
    devs.iter()
        .map(|d| match &d.alias {
            Some(a) => a.clone(),
            None => {
                let id = (0..)
                    .map(|i| format!("{}{i}", d.model.id_prefix()))
                    .find(|c| !taken.contains(c))
                    .unwrap_or_default();
                taken.push(id.clone());
                id
            }
        })
        .collect()
}
