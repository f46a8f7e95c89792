//! `<features><hyperv>`: the Hyper-V enlightenments Windows guests use (virt-manager writes
//! them for every Windows guest), emitted as `hv-*` properties of `-cpu` as libvirt does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct HyperV {
    pub mode: HypervMode,
    /// The on/off enlightenments by name (`{"relaxed": true, ...}`).
    #[serde(default)]
    pub flags: BTreeMap<HypervFlag, bool>,
    /// `<spinlocks state= retries=>`: retries before a spinlock notification (>= 4095).
    pub spinlocks: Option<Spinlocks>,
    /// `<stimer state=>` with `<direct state=>`.
    pub stimer: Option<Stimer>,
    /// `<vendor_id state= value=>`: the Hyper-V vendor signature (up to 12 characters).
    pub vendor_id: Option<VendorId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HypervMode {
    /// The listed enlightenments only.
    #[default]
    Custom,
    /// Everything the host's KVM offers (`hv-passthrough`), plus the listed ones.
    Passthrough,
}

impl HypervMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Passthrough => "passthrough",
        }
    }
}

/// An enlightenment that is only on or off; `as_str` is the libvirt element, `qemu` the
/// `-cpu` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HypervFlag {
    Relaxed,
    Vapic,
    Vpindex,
    Runtime,
    Synic,
    Reset,
    Frequencies,
    Reenlightenment,
    Tlbflush,
    Ipi,
    Evmcs,
    Avic,
}

impl HypervFlag {
    pub const ALL: [HypervFlag; 12] = [
        Self::Relaxed,
        Self::Vapic,
        Self::Vpindex,
        Self::Runtime,
        Self::Synic,
        Self::Reset,
        Self::Frequencies,
        Self::Reenlightenment,
        Self::Tlbflush,
        Self::Ipi,
        Self::Evmcs,
        Self::Avic,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Relaxed => "relaxed",
            Self::Vapic => "vapic",
            Self::Vpindex => "vpindex",
            Self::Runtime => "runtime",
            Self::Synic => "synic",
            Self::Reset => "reset",
            Self::Frequencies => "frequencies",
            Self::Reenlightenment => "reenlightenment",
            Self::Tlbflush => "tlbflush",
            Self::Ipi => "ipi",
            Self::Evmcs => "evmcs",
            Self::Avic => "avic",
        }
    }
    /// The QEMU 7.2 `-cpu` property.
    pub const fn qemu(self) -> &'static str {
        match self {
            Self::Relaxed => "hv-relaxed",
            Self::Vapic => "hv-vapic",
            Self::Vpindex => "hv-vpindex",
            Self::Runtime => "hv-runtime",
            Self::Synic => "hv-synic",
            Self::Reset => "hv-reset",
            Self::Frequencies => "hv-frequencies",
            Self::Reenlightenment => "hv-reenlightenment",
            Self::Tlbflush => "hv-tlbflush",
            Self::Ipi => "hv-ipi",
            Self::Evmcs => "hv-evmcs",
            Self::Avic => "hv-avic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Spinlocks {
    pub state: bool,
    pub retries: Option<u32>,
}

/// Smallest retry count Hyper-V accepts (libvirt's and QEMU's lower bound).
pub const MIN_SPINLOCK_RETRIES: u32 = 4095;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Stimer {
    pub state: bool,
    /// `<direct state=>`: direct-mode synthetic timers.
    pub direct: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct VendorId {
    pub state: bool,
    pub value: Option<String>,
}

/// `<ioapic driver=>`: where the I/O APIC is emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoapicDriver {
    /// In the kernel (`kernel_irqchip=on`).
    Kvm,
    /// In QEMU (`kernel_irqchip=split`).
    Qemu,
}

impl IoapicDriver {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}
