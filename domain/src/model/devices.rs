//! `<devices>`: storage, network, passthrough, character devices, display and helpers.

use serde::{Deserialize, Serialize};

use super::ids::MacAddr;

/// Input bounds: more than this is a mistake or an attack, not a guest.
pub const MAX_DISKS: usize = 256;
pub const MAX_INTERFACES: usize = 64;
pub const MAX_HOSTDEVS: usize = 64;
pub const MAX_CONTROLLERS: usize = 256;
pub const MAX_CHARDEVS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Devices {
    /// Emulator path as written in the definition; the host layer decides what runs.
    pub emulator: Option<String>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub controllers: Vec<Controller>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub serials: Vec<Serial>,
    #[serde(default)]
    pub consoles: Vec<Console>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub inputs: Vec<Input>,
    pub tpm: Option<Tpm>,
    pub graphics: Option<Graphics>,
    #[serde(default)]
    pub videos: Vec<Video>,
    #[serde(default)]
    pub hostdevs: Vec<Hostdev>,
    pub watchdog: Option<Watchdog>,
    pub memballoon: Option<Memballoon>,
    #[serde(default)]
    pub rngs: Vec<Rng>,
    /// `<filesystem>`: shared host directories.
    #[serde(default)]
    pub filesystems: Vec<super::filesystem::Filesystem>,
    #[serde(default)]
    pub redirdevs: Vec<super::spice::Redirdev>,
    #[serde(default)]
    pub sounds: Vec<super::spice::Sound>,
    #[serde(default)]
    pub audios: Vec<super::spice::Audio>,
    /// `<memory model='dimm'|'virtio-mem'>`: hot-pluggable RAM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<super::memory_device::MemoryDevice>,
}

/// Guest-visible device address. PCI addresses matter (guest NIC naming, Windows drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Address {
    Pci {
        domain: u16,
        bus: u8,
        slot: u8,
        function: u8,
        multifunction: Option<bool>,
    },
    Drive {
        controller: u16,
        bus: u16,
        target: u16,
        unit: u16,
    },
    VirtioSerial {
        controller: u16,
        bus: u16,
        port: u16,
    },
    Usb {
        bus: u16,
        port: u16,
    },
}

/// A host PCI function, `dddd:bb:ss.f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct PciAddr {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl std::fmt::Display for PciAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Disk {
    pub device: DiskDevice,
    /// `None` only for an empty CD-ROM tray.
    pub source: Option<DiskSource>,
    pub driver: DiskDriver,
    pub target: DiskTarget,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub shareable: bool,
    pub serial: Option<String>,
    pub boot_order: Option<u32>,
    pub address: Option<Address>,
    /// `<iotune>`: I/O limits QEMU applies from the start (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iotune: Option<super::iotune::IoTune>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum DiskSource {
    File {
        path: String,
    },
    Block {
        dev: String,
    },
    /// `<disk type='network'>`: QEMU connects to a server (admin-only by default).
    Network(super::netdisk::NetSource),
    /// `<disk type='volume'>`: a volume of a storage pool, by name. The host layer resolves
    /// it to the file in the pool (at define and at every start) and checks that file as any
    /// other disk file; the definition keeps the names.
    Volume {
        pool: String,
        volume: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DiskDriver {
    pub format: DiskFormat,
    pub cache: Option<DiskCache>,
    pub io: Option<DiskIo>,
    pub discard: Option<DiskDiscard>,
    /// IOThread id serving this (virtio) disk.
    pub iothread: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskCache {
    None,
    Writethrough,
    Writeback,
    Directsync,
    Unsafe,
}

impl DiskCache {
    pub const ALL: [DiskCache; 5] = [
        Self::None,
        Self::Writethrough,
        Self::Writeback,
        Self::Directsync,
        Self::Unsafe,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Writethrough => "writethrough",
            Self::Writeback => "writeback",
            Self::Directsync => "directsync",
            Self::Unsafe => "unsafe",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskIo {
    Native,
    Threads,
    IoUring,
}

impl DiskIo {
    pub const ALL: [DiskIo; 3] = [Self::Native, Self::Threads, Self::IoUring];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Threads => "threads",
            Self::IoUring => "io_uring",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskDiscard {
    Unmap,
    Ignore,
}

impl DiskDiscard {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unmap => "unmap",
            Self::Ignore => "ignore",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DiskTarget {
    /// Guest-facing name, e.g. `vda`, `sda`: unique per domain.
    pub dev: String,
    pub bus: DiskBus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
    /// PIIX3 IDE, built into i440fx (`pc`) machines: 2 buses x 2 units.
    Ide,
}

impl DiskBus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Virtio => "virtio",
            Self::Sata => "sata",
            Self::Scsi => "scsi",
            Self::Ide => "ide",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Controller {
    pub index: u32,
    pub kind: ControllerKind,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum ControllerKind {
    /// The q35 host bridge (`pcie.0`), implicit in QEMU.
    PcieRoot,
    /// A hot-pluggable PCIe slot, `pci.<index>` in QEMU.
    PcieRootPort {
        chassis: Option<u8>,
        port: Option<u8>,
        /// `<model name=...>`: the QEMU device; the guest sees a different one for each.
        #[serde(default)]
        model: RootPortModel,
    },
    /// The i440fx host bridge (`pci.0`), implicit in QEMU.
    PciRoot,
    /// The PIIX3 IDE controller built into i440fx (always at 00:01.1).
    Ide,
    /// Built-in ICH9 AHCI on q35.
    Sata,
    VirtioScsi,
    /// `ports` = number of USB2 and USB3 ports each (qemu-xhci `p2`/`p3`).
    Usb {
        model: UsbModel,
        ports: Option<u8>,
    },
    VirtioSerial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootPortModel {
    #[default]
    PcieRootPort,
    /// Intel's emulated root port (older virt-manager/libvirt choose it).
    Ioh3420,
}

impl RootPortModel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PcieRootPort => "pcie-root-port",
            Self::Ioh3420 => "ioh3420",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsbModel {
    QemuXhci,
    /// `model='none'`: no USB controller at all.
    None,
    /// PIIX3 UHCI (USB 1.1), libvirt's default on i440fx.
    Piix3Uhci,
    /// ICH9 EHCI (USB 2.0), the master of up to three UHCI companions.
    Ich9Ehci1,
    /// ICH9 UHCI companion `n` (1..=3); `startport` is `<master startport>`: the first
    /// port of the EHCI master (same controller index) it serves.
    Ich9Uhci {
        n: u8,
        startport: Option<u8>,
    },
}

impl UsbModel {
    /// libvirt's `model` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QemuXhci => "qemu-xhci",
            Self::None => "none",
            Self::Piix3Uhci => "piix3-uhci",
            Self::Ich9Ehci1 => "ich9-ehci1",
            Self::Ich9Uhci { n: 1, .. } => "ich9-uhci1",
            Self::Ich9Uhci { n: 2, .. } => "ich9-uhci2",
            Self::Ich9Uhci { .. } => "ich9-uhci3",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Interface {
    pub source: InterfaceSource,
    pub mac: Option<MacAddr>,
    pub model: NicModel,
    /// `<driver name=... queues=... rx_queue_size=... tx_queue_size=...>` (virtio only).
    #[serde(default)]
    pub driver: Option<NicDriver>,
    pub mtu: Option<u32>,
    pub boot_order: Option<u32>,
    pub address: Option<Address>,
    /// `<target dev='...'/>`: the name asked for the host link (tap or macvtap); absent, the
    /// daemon names it. Checked at start: a kernel interface name no other interface has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dev: Option<String>,
    /// `<vlan><tag id='N'/></vlan>`: the tap's bridge port is an untagged access port of VLAN
    /// N (the bridge needs `vlan_filtering` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// `<link state='down'/>`: the guest sees the link down from the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_down: bool,
    /// `<bandwidth>`: rate limits of the host-side tap (tc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<super::nic_qos::Bandwidth>,
    /// `<filterref filter='clean-traffic'>`: anti-spoofing rules on the host-side tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filterref: Option<super::nic_qos::FilterRef>,
    /// `<port isolated='yes'/>`: this NIC's bridge port reaches no other isolated port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_isolated: bool,
}

/// Prefixes of the host link names libvirt generates (`vnet0`, `macvtap1`, `macvlan2`):
/// runtime names, never asked for in a definition.
pub const GENERATED_LINK_PREFIXES: [&str; 3] = ["vnet", "macvtap", "macvlan"];

/// Whether `name` is one of those generated names.
pub fn generated_link_name(name: &str) -> bool {
    GENERATED_LINK_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// virtio-net backend tuning. Every field is optional, as in libvirt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NicDriver {
    /// `vhost`: in-kernel virtio-net (`/dev/vhost-net`) where the host has it, else QEMU's
    /// own; `qemu`: always QEMU's userspace backend. Absent: vhost where available.
    pub name: Option<NicBackend>,
    /// Queue pairs (multiqueue).
    pub queues: Option<u32>,
    pub rx_queue_size: Option<u32>,
    pub tx_queue_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicBackend {
    Vhost,
    Qemu,
}

impl NicBackend {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vhost => "vhost",
            Self::Qemu => "qemu",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum InterfaceSource {
    /// Tap attached to a host bridge (the host layer opens the tap).
    Bridge { bridge: String },
    /// Tap attached to a named virtual network.
    Network { network: String },
    /// Unprivileged user-mode networking (slirp).
    User,
    /// macvtap on a host NIC.
    Direct { dev: String, mode: MacvtapMode },
    /// vhost-user socket (DPDK/OVS); needs shared guest memory.
    VhostUser { path: String, mode: SocketMode },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MacvtapMode {
    Bridge,
    Vepa,
    Private,
    Passthrough,
}

impl MacvtapMode {
    pub const ALL: [MacvtapMode; 4] = [Self::Bridge, Self::Vepa, Self::Private, Self::Passthrough];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Vepa => "vepa",
            Self::Private => "private",
            Self::Passthrough => "passthrough",
        }
    }
}

/// Which side listens on a UNIX socket: `Server` = QEMU binds (libvirt `mode='bind'` /
/// vhost-user `mode='server'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketMode {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicModel {
    Virtio,
    E1000e,
    E1000,
    Rtl8139,
}

impl NicModel {
    pub const ALL: [NicModel; 4] = [Self::Virtio, Self::E1000e, Self::E1000, Self::Rtl8139];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Virtio => "virtio",
            Self::E1000e => "e1000e",
            Self::E1000 => "e1000",
            Self::Rtl8139 => "rtl8139",
        }
    }
}

/// PCI passthrough through VFIO (the only backend modern kernels offer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Hostdev {
    pub source: PciAddr,
    /// Host layer detaches from the host driver and binds to vfio-pci on start.
    pub managed: bool,
    pub boot_order: Option<u32>,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum CharSource {
    /// QEMU allocates a pty; the daemon learns its path over QMP.
    Pty,
    Unix {
        path: String,
        mode: SocketMode,
    },
    File {
        path: String,
    },
    /// `type='null'`: a port that discards output and never has input.
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Serial {
    pub source: CharSource,
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Console {
    pub source: CharSource,
    pub target: ConsoleTarget,
    pub port: u32,
}

/// A `Serial` console is libvirt's alias for the serial port with the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleTarget {
    Serial,
    Virtio,
}

/// virtio-serial channel over a UNIX socket (e.g. the QEMU guest agent), or SPICE's agent
/// channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Channel {
    #[serde(default)]
    pub kind: ChannelKind,
    /// Socket path (`Unix` only); `None` lets the host layer place it in the runtime directory.
    pub path: Option<String>,
    /// Guest-visible port name, e.g. `org.qemu.guest_agent.0`.
    pub name: String,
    pub address: Option<Address>,
}

/// `<channel type=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    #[default]
    Unix,
    /// `spicevmc`: the SPICE agent channel (`com.redhat.spice.0`), carried by the SPICE server.
    Spicevmc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Input {
    pub kind: InputKind,
    pub bus: InputBus,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Mouse,
    Keyboard,
    Tablet,
}

impl InputKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mouse => "mouse",
            Self::Keyboard => "keyboard",
            Self::Tablet => "tablet",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputBus {
    Ps2,
    Usb,
    Virtio,
}

impl InputBus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ps2 => "ps2",
            Self::Usb => "usb",
            Self::Virtio => "virtio",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Graphics {
    Vnc {
        port: VncPort,
        /// Listen address; absent means localhost.
        listen: Option<String>,
        /// `keymap='en-us'`: the keyboard layout QEMU translates for (`-k`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keymap: Option<String>,
    },
    Spice {
        /// `Auto`: the host layer picks a free port (libvirt's autoport).
        port: VncPort,
        #[serde(default)]
        listen: super::spice::SpiceListen,
        image_compression: Option<super::spice::SpiceImageCompression>,
        /// `<gl enable=...>`; only `false` can run here (validation says why).
        gl: Option<bool>,
        #[serde(default)]
        options: super::spice::SpiceOptions,
        /// `keymap='en-us'` (`-k`), as for VNC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keymap: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VncPort {
    /// The host layer picks a free display.
    Auto,
    Fixed(u16),
    /// Autoport, and the port the host gave the running guest: live configs only (libvirt's
    /// live XML, `port='5901' autoport='yes'`). Read back as `Auto`, as libvirt's inactive
    /// XML is; a start treats it as `Auto`.
    Assigned(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Video {
    pub model: VideoModel,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum VideoModel {
    None,
    Virtio,
    Vga {
        vram_kib: Option<u32>,
    },
    /// QXL (SPICE's paravirtual display); sizes in KiB as libvirt writes them.
    Qxl {
        ram_kib: Option<u32>,
        vram_kib: Option<u32>,
        vgamem_kib: Option<u32>,
        heads: Option<u32>,
    },
    /// Cirrus CLGD 5446, libvirt's old default on i440fx. `vram` is kept for the round
    /// trip; QEMU's cirrus-vga has a fixed 4 MiB (libvirt passes nothing either).
    Cirrus {
        vram_kib: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Memballoon {
    pub model: MemballoonModel,
    /// Guest statistics polling period in seconds.
    pub stats_period: Option<u32>,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemballoonModel {
    Virtio,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Rng {
    /// Host entropy source, e.g. `/dev/urandom`.
    pub backend: String,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Watchdog {
    pub model: WatchdogModel,
    pub action: WatchdogAction,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogModel {
    I6300esb,
    Itco,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogAction {
    Reset,
    Shutdown,
    Poweroff,
    Pause,
    None,
}

impl WatchdogAction {
    pub const ALL: [WatchdogAction; 5] = [
        Self::Reset,
        Self::Shutdown,
        Self::Poweroff,
        Self::Pause,
        Self::None,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Shutdown => "shutdown",
            Self::Poweroff => "poweroff",
            Self::Pause => "pause",
            Self::None => "none",
        }
    }
}

/// Software TPM 2.0 backed by swtpm (the host layer runs swtpm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Tpm {
    pub model: TpmModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TpmModel {
    TpmCrb,
    TpmTis,
}
