//! Boot (`<os>`), platform features, clock, lifecycle actions and power management.

use serde::{Deserialize, Serialize};

/// Only full virtualization on x86_64 is supported; the enums leave room for more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Os {
    pub arch: Option<Arch>,
    /// Machine type, e.g. `q35` or `pc-q35-7.2`; absent means `q35`.
    pub machine: Option<String>,
    pub firmware: Firmware,
    /// Legacy `<boot dev=...>` order; mutually exclusive with per-device boot order.
    #[serde(default)]
    pub boot: Vec<BootDevice>,
    pub kernel: Option<DirectKernel>,
    /// `<bootmenu>`: the firmware's interactive boot menu.
    #[serde(default)]
    pub bootmenu: Option<BootMenu>,
    /// `<bios useserial='yes'/>`: the firmware writes to the serial port (QEMU's
    /// `graphics=off`, as libvirt emits it), so its output reaches the serial console.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bios_serial: bool,
}

impl Os {
    /// An i440fx machine (`pc`, `pc-i440fx-X.Y`, the old `pc-0.X`/`pc-1.X`), as libvirt's
    /// `qemuDomainIsI440FX`; anything else (including absent) is q35.
    pub fn is_i440fx(&self) -> bool {
        self.machine.as_deref().is_some_and(|m| {
            m == "pc"
                || m.starts_with("pc-i440fx-")
                || m.starts_with("pc-0.")
                || m.starts_with("pc-1.")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct BootMenu {
    pub enable: bool,
    /// Milliseconds the menu waits (`splash-time`); absent: the firmware default.
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    /// 32-bit x86 guest: runs on the x86_64 emulator with a 32-bit CPU model.
    I686,
}

impl Arch {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::I686 => "i686",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    Uefi {
        loader: Loader,
        nvram: Option<Nvram>,
    },
    /// `<os firmware='efi'>` without a loader: the host picks the firmware from QEMU's
    /// firmware descriptors at start (and keeps the guest's NVRAM in its state directory).
    /// `None` = no preference; from `<firmware><feature name= enabled=>`.
    UefiAuto {
        secure_boot: Option<bool>,
        enrolled_keys: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Loader {
    pub path: String,
    pub readonly: bool,
    /// Secure Boot firmware: needs SMM.
    pub secure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Nvram {
    /// Per-guest variable store.
    pub path: String,
    /// Pristine store copied to `path` on first start.
    pub template: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Hd,
    Cdrom,
    Network,
    Fd,
}

impl BootDevice {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hd => "hd",
            Self::Cdrom => "cdrom",
            Self::Network => "network",
            Self::Fd => "fd",
        }
    }
}

/// Direct kernel boot; an initrd or cmdline without a kernel cannot be expressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DirectKernel {
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

/// `<features>`. `None` = element absent; `Some(false)` = explicitly `state='off'`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Features {
    #[serde(default)]
    pub acpi: bool,
    #[serde(default)]
    pub apic: bool,
    #[serde(default)]
    pub pae: bool,
    pub vmport: Option<bool>,
    pub smm: Option<bool>,
    pub hyperv: Option<super::HyperV>,
    /// `<kvm><hidden state=>`: hide the KVM signature from the guest (`kvm=off`).
    pub kvm_hidden: Option<bool>,
    pub ioapic: Option<super::IoapicDriver>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Clock {
    pub offset: ClockOffset,
    #[serde(default)]
    pub timers: Vec<Timer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockOffset {
    Utc,
    /// Windows guests expect the RTC in local time.
    Localtime,
}

impl ClockOffset {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Utc => "utc",
            Self::Localtime => "localtime",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Timer {
    pub name: TimerName,
    pub present: Option<bool>,
    pub tickpolicy: Option<TickPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerName {
    Rtc,
    Pit,
    Hpet,
    Kvmclock,
    Hypervclock,
}

impl TimerName {
    pub const ALL: [TimerName; 5] = [
        Self::Rtc,
        Self::Pit,
        Self::Hpet,
        Self::Kvmclock,
        Self::Hypervclock,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rtc => "rtc",
            Self::Pit => "pit",
            Self::Hpet => "hpet",
            Self::Kvmclock => "kvmclock",
            Self::Hypervclock => "hypervclock",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickPolicy {
    Delay,
    Catchup,
    Merge,
    Discard,
}

impl TickPolicy {
    pub const ALL: [TickPolicy; 4] = [Self::Delay, Self::Catchup, Self::Merge, Self::Discard];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delay => "delay",
            Self::Catchup => "catchup",
            Self::Merge => "merge",
            Self::Discard => "discard",
        }
    }
}

/// What the daemon does when the guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    Destroy,
    Restart,
    Preserve,
}

impl LifecycleAction {
    pub const ALL: [LifecycleAction; 3] = [Self::Destroy, Self::Restart, Self::Preserve];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "destroy",
            Self::Restart => "restart",
            Self::Preserve => "preserve",
        }
    }
}

/// `<pm>`: ACPI sleep states offered to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct PowerManagement {
    pub suspend_to_mem: Option<bool>,
    pub suspend_to_disk: Option<bool>,
}

/// `kvm` (hardware virtualization) or `qemu` (TCG emulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtType {
    #[default]
    Kvm,
    Qemu,
}

impl VirtType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}
