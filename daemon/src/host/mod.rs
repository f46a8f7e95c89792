//! What this host can run: KVM capabilities, the QEMU binary's machine types and CPU models,
//! and the CPU/NUMA/hugepage/PCI topology from sysfs. The foundation of placement (CPU
//! pinning, NUMA binding, hugepage backing, VFIO) and of the fit check before a start.

pub mod access;
pub mod acl;
pub mod block_drivers;
pub mod cgroup;
pub mod display_ports;
pub mod firmware;
pub mod fit;
pub mod guest_files;
pub mod host_model;
pub mod hugepages;
pub mod kvm;
pub mod net;
pub mod pinning;
pub mod qcow2;
pub mod qcow2_create;
pub mod qemu_caps;
pub mod qemu_img;
pub mod resources;
pub mod storage_roots;
pub mod taps;
pub mod topology;
pub mod vfio;
pub mod volumes;

use std::fs::OpenOptions;
use std::path::PathBuf;

use serde::Serialize;

pub use fit::{check_fit, check_fit_in};
pub use kvm::KvmCaps;
pub use qemu_caps::{QemuCaps, QemuCapsCache};
pub use topology::{SysfsRoot, Topology};

/// The KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Whether `/dev/kvm` can be opened for reading and writing; the error says why not.
pub fn kvm_usable() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(drop)
        .map_err(|e| format!("{KVM_DEVICE}: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{}: {source}", path.display())]
    KvmOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: KVM API version {found}, expected {}", path.display(), kvm_bindings::KVM_API_VERSION)]
    KvmApi { path: PathBuf, found: i32 },
    #[error("{}: {ioctl}: {source}", path.display())]
    KvmIoctl {
        path: PathBuf,
        ioctl: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Sysfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU {}: {reason}", path.display())]
    Qemu { path: PathBuf, reason: String },
    #[error("host probe task failed: {0}")]
    Join(String),
}

/// One probed fact: `usable` says whether the probe worked, `reason` why not; the value's
/// fields are flattened next to them in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probed<T> {
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub value: Option<T>,
}

impl<T> Probed<T> {
    pub fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(value) => Probed {
                usable: true,
                reason: None,
                value: Some(value),
            },
            Err(e) => Probed {
                usable: false,
                reason: Some(e.to_string()),
                value: None,
            },
        }
    }
}

/// Everything the host probe found; what `GET /v1/host` shows and what [`check_fit`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub kvm: Probed<KvmCaps>,
    pub qemu: Probed<QemuCaps>,
    pub topology: Probed<Topology>,
}

/// Where to probe. Static facts (KVM, QEMU per binary build) are cached after the first probe;
/// the topology is re-read each time (online CPUs and free hugepages change; the walk is a few
/// hundred small reads).
#[derive(Debug)]
pub struct HostProbe {
    kvm_device: PathBuf,
    emulator: PathBuf,
    sysfs: SysfsRoot,
    /// Where the QEMU probe's private socket directory goes.
    work_dir: PathBuf,
    kvm: tokio::sync::OnceCell<Probed<KvmCaps>>,
    qemu: QemuCapsCache,
}

impl HostProbe {
    pub fn new(
        kvm_device: impl Into<PathBuf>,
        emulator: impl Into<PathBuf>,
        sysfs: SysfsRoot,
        work_dir: impl Into<PathBuf>,
    ) -> Self {
        HostProbe {
            kvm_device: kvm_device.into(),
            emulator: emulator.into(),
            sysfs,
            work_dir: work_dir.into(),
            kvm: tokio::sync::OnceCell::new(),
            qemu: QemuCapsCache::default(),
        }
    }

    /// The probe for the daemon's configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        HostProbe::new(
            KVM_DEVICE,
            &config.emulator,
            SysfsRoot::new(&config.sysfs_root),
            &config.run_dir,
        )
    }

    /// Where sysfs is read and written.
    pub fn sysfs(&self) -> &SysfsRoot {
        &self.sysfs
    }

    /// Probes (or recalls) everything. Blocking parts run off the async runtime.
    pub async fn facts(&self) -> HostFacts {
        let kvm = self
            .kvm
            .get_or_init(|| async {
                Probed::from_result(kvm::probe_async(self.kvm_device.clone()).await)
            })
            .await
            .clone();
        let qemu = self
            .qemu
            .get(&self.emulator, &self.work_dir)
            .await
            .map(|caps| (*caps).clone());
        let sysfs = self.sysfs.clone();
        let topology = tokio::task::spawn_blocking(move || Topology::read(&sysfs))
            .await
            .map_err(|e| HostError::Join(e.to_string()))
            .and_then(|r| r);
        HostFacts {
            kvm,
            qemu: Probed::from_result(qemu),
            topology: Probed::from_result(topology),
        }
    }

    /// The KVM capabilities, probed once.
    pub async fn kvm(&self) -> Probed<KvmCaps> {
        self.kvm
            .get_or_init(|| async {
                Probed::from_result(kvm::probe_async(self.kvm_device.clone()).await)
            })
            .await
            .clone()
    }

    /// The QEMU binary's caps (machine types, CPU models, the host-model resolution), probed
    /// once per binary build.
    pub async fn qemu_caps(&self) -> Result<std::sync::Arc<QemuCaps>, String> {
        self.qemu.get(&self.emulator, &self.work_dir).await
    }

    /// [`check_fit`] against fresh facts, as the error a start returns: refused before QEMU
    /// starts, every reason listed.
    pub async fn check_fit(
        &self,
        name: &str,
        config: &novacron_domain::DomainConfig,
    ) -> Result<(), novacron_domain::Error> {
        let facts = self.facts().await;
        check_fit_in(config, &facts, &self.sysfs).map_err(|why| {
            novacron_domain::Error::InvalidConfig(format!(
                "domain '{name}' does not fit this host: {}",
                why.join("; ")
            ))
        })
    }
}
