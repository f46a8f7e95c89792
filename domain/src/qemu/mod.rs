//! QEMU command line from a validated domain plus the facts only the host layer knows.

mod argv;
mod devices;
pub mod hotplug;
pub(crate) mod memory;
pub mod memory_devices;
mod netdisk;
mod spice;
mod virtiofs;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use argv::build_argv;
pub use memory::{ram_blocks, HugeSize, RamBlock};
pub use virtiofs::virtiofs_socket;

/// Accelerator the host layer chose (KVM when /dev/kvm is usable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// What `-cpu` gets. The host layer decides whether the configured CPU works here; the
/// builder obeys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuChoice {
    /// Translate the config: host-passthrough -> `host`, custom -> its model, no model ->
    /// `qemu64`. host-model cannot be translated without host knowledge and is an error with
    /// this choice.
    AsConfigured,
    /// Use this QEMU model name instead (features from the config are still applied).
    Model(String),
    /// host-model as the host layer resolved it: the named model plus the host's features
    /// beyond it (each `+name`), then the config's own features.
    HostModel {
        model: String,
        features: Vec<String>,
    },
}

/// The tap (or macvtap) descriptors the host layer opened for one NIC and passes to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFd {
    /// One per queue: `fd=` for one, `fds=a:b:...` for a multi-queue NIC.
    pub taps: Vec<i32>,
    /// `/dev/vhost-net` descriptors for virtio NICs, one per queue, if the host layer opened
    /// them (none, or as many as `taps`).
    pub vhosts: Vec<i32>,
}

impl NetFd {
    /// A single-queue NIC.
    pub fn single(tap: i32, vhost: Option<i32>) -> NetFd {
        NetFd {
            taps: vec![tap],
            vhosts: vhost.into_iter().collect(),
        }
    }
}

/// Where QEMU serves QMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorSocket {
    /// QEMU creates and listens on this path.
    Path(PathBuf),
    /// QEMU inherits an already listening socket as this descriptor (the daemon bound it, so
    /// QEMU needs no access to the run directory).
    Fd(i32),
}

/// One `-add-fd fd=N,set=S,opaque=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSetEntry {
    pub fd: i32,
    pub set: u32,
    pub opaque: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchContext {
    pub emulator: PathBuf,
    pub accel: Accel,
    pub cpu: CpuChoice,
    /// The daemon's QMP monitor socket.
    pub monitor: MonitorSocket,
    /// Descriptors QEMU inherits into fd sets (`-add-fd`), so it can open `/dev/fdset/N`
    /// without access to the files' directories (e.g. a log as an unprivileged user).
    pub fd_sets: Vec<FdSetEntry>,
    /// Per-guest runtime directory: default channel sockets, file-backed RAM.
    pub runtime_dir: PathBuf,
    /// Where file-backed RAM (`<source type='file'/>`) lives. `None`: an unlinked temporary
    /// file in `runtime_dir`, gone with QEMU. `Some(dir)`: the named file `dir/<backend id>`,
    /// as libvirt's `memory_backing_dir` gives; one that exists with the guest's size is
    /// mapped as it is (privately unless the access mode is shared).
    pub memory_dir: Option<PathBuf>,
    /// Appended to every serial/console chardev as `logfile=`.
    pub serial_log: Option<PathBuf>,
    /// Tap fds by index into `devices.interfaces` (bridge, network and direct NICs).
    pub net_fds: BTreeMap<usize, NetFd>,
    /// VNC display number when the config says autoport.
    pub vnc_display: Option<u16>,
    /// SPICE TCP port when the config says autoport.
    pub spice_port: Option<u16>,
    /// swtpm control socket when the config has a TPM.
    pub swtpm_socket: Option<PathBuf>,
    /// Add `-sandbox on,...` (seccomp); off only for debugging.
    pub sandbox: bool,
    /// What QEMU opens instead of a host path of the definition, by the field that names it
    /// (as [`crate::model::HostRef::field`]), e.g. `devices.disks[0].source.file` ->
    /// `/dev/fdset/2`: the host layer opened and checked the file and passes a descriptor.
    /// A field without an entry is written as the definition says.
    pub host_paths: BTreeMap<String, String>,
    /// A qcow2 disk's backing chain, by the disk's field, top first, as the host layer opened
    /// it: each image is given to QEMU inline (`backing.driver=...,backing.file.filename=`),
    /// so QEMU opens no backing file by the name in the image header (which would not even
    /// resolve when relative, the image itself being `/dev/fdset/N`). Absent: QEMU follows
    /// the header.
    pub backing_chains: BTreeMap<String, Vec<BackingImage>>,
}

/// One image of a backing chain: its format and the path QEMU opens (e.g. `/dev/fdset/3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImage {
    pub format: crate::model::DiskFormat,
    pub path: String,
}

impl LaunchContext {
    /// The path QEMU gets for `field`, whose definition value is `value`.
    pub fn host_path<'a>(&'a self, field: &str, value: &'a str) -> &'a str {
        self.host_paths.get(field).map_or(value, String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    #[error("domain has no uuid; assign one at define time")]
    MissingUuid,
    #[error("devices.interfaces[{0}] has no MAC address; assign one at define time")]
    MissingMac(usize),
    #[error("devices.interfaces[{0}] needs a tap fd from the host layer")]
    MissingTapFd(usize),
    #[error("VNC autoport needs a display number from the host layer")]
    MissingVncDisplay,
    #[error("SPICE autoport needs a port from the host layer")]
    MissingSpicePort,
    #[error("TPM needs a swtpm socket from the host layer")]
    MissingSwtpmSocket,
    #[error("cpu mode host-model must be resolved by the host layer (CpuChoice::Model)")]
    UnresolvedHostModel,
    #[error(
        "devices.disks[{0}] names a pool volume, which the host layer must resolve to its file"
    )]
    UnresolvedVolume(usize),
    #[error("CPU model '{0}' contains characters not allowed on the command line")]
    BadCpuModel(String),
    #[error("path {0:?} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
}
