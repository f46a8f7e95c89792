//! VFIO PCI passthrough: whether a device can be given to a guest (an IOMMU, a viable group),
//! moving a `managed='yes'` device from its host driver to vfio-pci before the guest starts,
//! and giving it back to that driver when the guest stops.
//!
//! The sysfs side runs below the configurable sysfs root (tested against a recorded tree);
//! the group-status ioctl runs through vfio-ioctls only on the real `/sys` where `/dev/vfio`
//! exists (see [`group`]).

pub mod access;
pub mod group;
pub mod sysfs;

use std::path::PathBuf;

use novacron_domain::model::Hostdev;
use serde::{Deserialize, Serialize};

use crate::host::topology::SysfsRoot;
use sysfs::PciPaths;

/// The driver QEMU needs a passed-through device bound to.
pub const VFIO_DRIVER: &str = "vfio-pci";
/// Drivers that hold a device without using it; the kernel's VFIO allows them in a group.
const INERT_DRIVERS: [&str; 2] = [VFIO_DRIVER, "pci-stub"];

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error(
        "this host has no IOMMU ({} is missing or empty): PCI passthrough needs VT-d or AMD-Vi \
         enabled in firmware and on the kernel command line (intel_iommu=on / amd_iommu=on)",
        path.display()
    )]
    NoIommu { path: PathBuf },
    #[error("PCI device {address} does not exist ({} is missing)", path.display())]
    NoDevice { address: String, path: PathBuf },
    #[error("PCI device {address} is in no IOMMU group ({} is missing): no IOMMU covers it", path.display())]
    NoGroup { address: String, path: PathBuf },
    #[error(
        "IOMMU group {group} of {address} is not viable: device {offender} in the same group is \
         bound to {driver}; pass it through as well, or bind it to vfio-pci or pci-stub"
    )]
    NotViable {
        group: u32,
        address: String,
        offender: String,
        driver: String,
    },
    #[error(
        "PCI device {address} has managed='no' but is bound to {driver}, not vfio-pci; bind it \
         to vfio-pci first or use managed='yes'"
    )]
    NotBoundUnmanaged { address: String, driver: String },
    #[error("the vfio-pci driver is not loaded ({} is missing; modprobe vfio-pci)", path.display())]
    NoVfioDriver { path: PathBuf },
    #[error("PCI device {address} is in use by domain '{domain}'")]
    InUse { address: String, domain: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "PCI device {address}: after writing {} it is bound to {found}, expected {expected}",
        written.display()
    )]
    Rebind {
        address: String,
        written: PathBuf,
        expected: String,
        found: String,
    },
    #[error("VFIO group {group} ({address}): {reason}")]
    Ioctl {
        group: u32,
        address: String,
        reason: String,
    },
}

/// A device this daemon moved to vfio-pci for a guest, and the driver it came from. Kept in
/// the guest's runtime record so that a restarted daemon still gives it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detached {
    pub address: String,
    /// The host driver before; `None` when the device had none.
    pub original_driver: Option<String>,
}

/// What was checked (and, for managed devices, done) before a guest with host devices starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Devices moved to vfio-pci, to give back on stop.
    pub detached: Vec<Detached>,
    /// IOMMU groups whose status was read through the VFIO ioctls (empty where `/dev/vfio`
    /// does not exist or the sysfs root is a recorded tree).
    pub ioctl_checked: Vec<u32>,
}

/// Checks every host device, detaches the managed ones to vfio-pci and verifies each group
/// through the VFIO ioctls where possible. On failure, what was detached is given back.
pub fn prepare(root: &SysfsRoot, hostdevs: &[Hostdev]) -> Result<Prepared, VfioError> {
    if hostdevs.is_empty() {
        return Ok(Prepared::default());
    }
    if !sysfs::has_iommu_groups(root) {
        return Err(VfioError::NoIommu {
            path: root.path().join("kernel/iommu_groups"),
        });
    }
    let managed: Vec<String> = hostdevs
        .iter()
        .filter(|h| h.managed)
        .map(|h| h.source.to_string())
        .collect();
    let mut groups = Vec::new();
    for h in hostdevs {
        let address = h.source.to_string();
        let dev = PciPaths::new(root, &address);
        if !dev.dir().exists() {
            return Err(VfioError::NoDevice {
                path: dev.dir(),
                address,
            });
        }
        let group = dev.iommu_group().ok_or_else(|| VfioError::NoGroup {
            path: dev.dir().join("iommu_group"),
            address: address.clone(),
        })?;
        if !h.managed {
            let driver = dev.driver();
            if driver.as_deref() != Some(VFIO_DRIVER) {
                return Err(VfioError::NotBoundUnmanaged {
                    address,
                    driver: driver.unwrap_or_else(|| "no driver".to_owned()),
                });
            }
        }
        check_group(root, group, &address, &managed)?;
        if !groups.iter().any(|(g, _)| *g == group) {
            groups.push((group, address));
        }
    }
    let mut prepared = Prepared::default();
    if !managed.is_empty() {
        let vfio = PciPaths::drivers(root).join(VFIO_DRIVER);
        if !vfio.exists() {
            return Err(VfioError::NoVfioDriver { path: vfio });
        }
    }
    for address in &managed {
        match detach(root, address) {
            Ok(Some(d)) => prepared.detached.push(d),
            Ok(None) => {}
            Err(e) => {
                give_back(root, &prepared.detached);
                return Err(e);
            }
        }
    }
    if group::available(root) {
        for (g, address) in &groups {
            if let Err(e) = group::check_viable(root, *g, address) {
                give_back(root, &prepared.detached);
                return Err(e);
            }
            prepared.ioctl_checked.push(*g);
        }
    }
    Ok(prepared)
}

/// What [`prepare`] will detach: each managed device not yet on vfio-pci, with its driver
/// now. Written down before the detach, so a daemon that dies midway can still give back.
pub fn planned(root: &SysfsRoot, hostdevs: &[Hostdev]) -> Vec<Detached> {
    hostdevs
        .iter()
        .filter(|h| h.managed)
        .filter_map(|h| {
            let address = h.source.to_string();
            let original_driver = PciPaths::new(root, &address).driver();
            (original_driver.as_deref() != Some(VFIO_DRIVER)).then_some(Detached {
                address,
                original_driver,
            })
        })
        .collect()
}

/// Whether a planned detach happened (at least in part): the device is on vfio-pci or has
/// the vfio-pci override. One still on its original driver, untouched, is not given back.
pub fn was_moved(root: &SysfsRoot, d: &Detached) -> bool {
    let dev = PciPaths::new(root, &d.address);
    let over = std::fs::read_to_string(dev.dir().join("driver_override")).unwrap_or_default();
    dev.driver().as_deref() == Some(VFIO_DRIVER) || over.trim() == VFIO_DRIVER
}

/// Every other device in `group` must be harmless to the host while the guest owns the group:
/// bound to vfio-pci or pci-stub, unbound, a bridge (the kernel allows non-endpoint devices
/// with any driver), or one of the devices being detached for this guest (`managed`).
pub fn check_group(
    root: &SysfsRoot,
    group: u32,
    address: &str,
    managed: &[String],
) -> Result<(), VfioError> {
    for member in sysfs::group_members(root, group)? {
        if managed.contains(&member) {
            continue;
        }
        let dev = PciPaths::new(root, &member);
        let Some(driver) = dev.driver() else { continue };
        if INERT_DRIVERS.contains(&driver.as_str()) || is_bridge(&dev) {
            continue;
        }
        return Err(VfioError::NotViable {
            group,
            address: address.to_owned(),
            offender: member,
            driver,
        });
    }
    Ok(())
}

/// PCI-to-PCI bridges (class 0x0604xx) have a bridge header, which the kernel's VFIO viability
/// check accepts whatever their driver (pcieport).
fn is_bridge(dev: &PciPaths) -> bool {
    dev.class().is_some_and(|c| c.starts_with("0x0604"))
}

/// Moves one device to vfio-pci: driver_override, unbind from its driver, probe. `None` when
/// it already was on vfio-pci (then it is not ours to give back).
pub fn detach(root: &SysfsRoot, address: &str) -> Result<Option<Detached>, VfioError> {
    let dev = PciPaths::new(root, address);
    let original = dev.driver();
    if original.as_deref() == Some(VFIO_DRIVER) {
        return Ok(None);
    }
    dev.set_override(VFIO_DRIVER)?;
    let detached = Detached {
        address: address.to_owned(),
        original_driver: original.clone(),
    };
    let moved = (|| {
        if let Some(driver) = &original {
            dev.unbind(driver)?;
        }
        dev.probe(Some(VFIO_DRIVER)).map(drop)
    })();
    match moved {
        Ok(()) => {
            tracing::info!(device = address, from = ?original, "detached to vfio-pci");
            Ok(Some(detached))
        }
        Err(e) => {
            give_back(root, std::slice::from_ref(&detached));
            Err(e)
        }
    }
}

/// Gives each device back to its original driver: unbind from vfio-pci, clear the override,
/// probe, and bind the original driver explicitly if the probe chose another. Failures are
/// logged and the rest still handled: a stop must not fail over one device.
pub fn give_back(root: &SysfsRoot, detached: &[Detached]) -> Vec<VfioError> {
    let mut errors = Vec::new();
    for d in detached {
        if let Err(e) = reattach(root, d) {
            tracing::error!(device = %d.address, error = %e, "cannot give the device back to its driver");
            errors.push(e);
        } else {
            tracing::info!(device = %d.address, to = ?d.original_driver, "gave device back");
        }
    }
    errors
}

fn reattach(root: &SysfsRoot, d: &Detached) -> Result<(), VfioError> {
    let dev = PciPaths::new(root, &d.address);
    if let Some(now) = dev.driver() {
        dev.unbind(&now)?;
    }
    dev.set_override("")?;
    let Some(original) = &d.original_driver else {
        return Ok(());
    };
    // drivers_probe lets the kernel pick (normally the original); bind it explicitly if not.
    let now = dev.probe(None).ok();
    if now.as_ref() != Some(original) {
        if let Some(other) = now {
            dev.unbind(&other)?;
        }
        dev.bind(original)?;
    }
    Ok(())
}
