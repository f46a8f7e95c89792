//! The domain model: one `DomainConfig` produced by both the XML and the JSON front-ends.
//!
//! Enums rather than flag combinations wherever libvirt has alternatives, so invalid shapes
//! (a disk with both a file and a block source, a kernel-less initrd) cannot be expressed.
//! Semantic checks that need several fields live in `validate`.

pub mod cpu;
pub mod devices;
pub mod filesystem;
pub mod host_refs;
pub mod hyperv;
pub mod ids;
pub mod iotune;
pub mod memory;
pub mod memory_device;
pub mod netdisk;
pub mod nic_qos;
pub mod os;
pub mod spice;

pub use cpu::*;
pub use devices::*;
pub use filesystem::*;
pub use host_refs::{HostRef, HostRefKind};
pub use hyperv::*;
pub use ids::{IdSet, MacAddr, ParseValueError, Uuid};
pub use iotune::IoTune;
pub use memory::*;
pub use memory_device::*;
pub use netdisk::*;
pub use nic_qos::*;
pub use os::*;
pub use spice::*;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DomainConfig {
    /// `<domain type=...>`: the accelerator the definition asks for.
    #[serde(default)]
    pub virt_type: VirtType,
    pub name: String,
    pub uuid: Option<Uuid>,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Inner XML of `<metadata>`, kept verbatim: it belongs to other applications.
    pub metadata: Option<String>,
    pub memory: Memory,
    pub vcpu: Vcpu,
    /// Number of IOThreads (`<iothreads>`), ids 1..=n.
    pub iothreads: Option<u32>,
    pub cputune: Option<CpuTune>,
    pub numatune: Option<NumaTune>,
    pub memtune: Option<MemTune>,
    pub memory_backing: Option<MemoryBacking>,
    pub os: Os,
    #[serde(default)]
    pub features: Features,
    pub cpu: Option<Cpu>,
    pub clock: Option<Clock>,
    pub on_poweroff: Option<LifecycleAction>,
    pub on_reboot: Option<LifecycleAction>,
    pub on_crash: Option<LifecycleAction>,
    pub pm: Option<PowerManagement>,
    #[serde(default)]
    pub devices: Devices,
}

impl DomainConfig {
    /// Parse libvirt domain XML. Unsupported guest-affecting content is an error.
    pub fn from_xml(xml: &str) -> Result<Self, crate::xml::XmlError> {
        crate::xml::read::parse_domain(xml)
    }

    /// Write libvirt domain XML (the `virsh dumpxml` layout, `unit='KiB'`).
    pub fn to_xml(&self) -> String {
        crate::xml::write::write_domain(self)
    }

    /// Parse the JSON form (same model, `snake_case` keys, unknown keys rejected).
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        if json.len() > crate::MAX_DOCUMENT_BYTES {
            return Err(JsonError::TooLarge(json.len()));
        }
        serde_json::from_str(json).map_err(|e| JsonError::Syntax(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        // Serializing this model cannot fail: all map keys are strings, no custom failures.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Check all semantic rules; the `ValidatedDomain` is what the argv builder requires.
    pub fn validate(self) -> Result<crate::ValidatedDomain, crate::ValidationErrors> {
        crate::validate::validate(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("JSON document is {0} bytes, over the {max} byte limit", max = crate::MAX_DOCUMENT_BYTES)]
    TooLarge(usize),
    #[error("invalid domain JSON: {0}")]
    Syntax(String),
}
