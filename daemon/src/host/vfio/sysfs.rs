//! The PCI driver-binding ABI in sysfs (Documentation/ABI/testing/sysfs-bus-pci): which driver
//! a device is bound to, its IOMMU group's members, and the `driver_override`, `unbind`,
//! `bind` and `drivers_probe` files that move a device between drivers.
//!
//! Every path is below a [`SysfsRoot`], so the same code runs against a recorded tree.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::VfioError;
use crate::host::topology::SysfsRoot;

/// Bound on entries read from an IOMMU group's `devices/` directory.
const MAX_GROUP_DEVICES: usize = 256;
/// How long a bind or unbind may take to show in sysfs. The kernel completes them within the
/// write; the wait only matters for slow device resets (and for the recorded-tree tests, whose
/// fake kernel is a thread that a loaded CI machine may not schedule for seconds: 5 s was seen
/// to expire there). Only a stuck bind waits this long.
const SETTLE: Duration = Duration::from_secs(20);

/// One PCI device's place in sysfs.
#[derive(Debug, Clone)]
pub struct PciPaths {
    pub address: String,
    pub root: SysfsRoot,
}

impl PciPaths {
    pub fn new(root: &SysfsRoot, address: &str) -> Self {
        PciPaths {
            address: address.to_owned(),
            root: root.clone(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("bus/pci/devices").join(&self.address)
    }

    pub fn drivers(root: &SysfsRoot) -> PathBuf {
        root.path().join("bus/pci/drivers")
    }

    /// The driver the device is bound to now, `None` when unbound.
    pub fn driver(&self) -> Option<String> {
        link_name(&self.dir().join("driver"))
    }

    /// The IOMMU group number, `None` when the device has none (no IOMMU for it).
    pub fn iommu_group(&self) -> Option<u32> {
        link_name(&self.dir().join("iommu_group")).and_then(|g| g.parse().ok())
    }

    /// `0x060400` style class code.
    pub fn class(&self) -> Option<String> {
        read_small(&self.dir().join("class"))
    }

    /// Writes `value` to `driver_override` (an empty line clears it).
    pub fn set_override(&self, value: &str) -> Result<(), VfioError> {
        write_attr(&self.dir().join("driver_override"), &format!("{value}\n"))
    }

    /// Unbinds the device from `driver` and waits until sysfs shows it unbound.
    pub fn unbind(&self, driver: &str) -> Result<(), VfioError> {
        let file = Self::drivers(&self.root).join(driver).join("unbind");
        write_attr(&file, &self.address)?;
        self.settle(Want::Unbound, &file).map(drop)
    }

    /// Asks the kernel to bind the device to the driver that matches it (`driver_override`
    /// first), then waits until it is bound to `expect` (`None`: to any driver) and returns
    /// the driver it is bound to.
    pub fn probe(&self, expect: Option<&str>) -> Result<String, VfioError> {
        let file = self.root.path().join("bus/pci/drivers_probe");
        write_attr(&file, &self.address)?;
        self.settle(Want::Bound(expect), &file)
    }

    /// Binds the device to `driver` explicitly and waits for it.
    pub fn bind(&self, driver: &str) -> Result<(), VfioError> {
        let file = Self::drivers(&self.root).join(driver).join("bind");
        write_attr(&file, &self.address)?;
        self.settle(Want::Bound(Some(driver)), &file).map(drop)
    }

    /// Waits until the device's driver is what `want` says; returns the driver (empty when
    /// unbound).
    fn settle(&self, want: Want<'_>, written: &Path) -> Result<String, VfioError> {
        let deadline = Instant::now() + SETTLE;
        let mut pause = Duration::from_millis(1);
        loop {
            let now = self.driver();
            let done = match (want, now.as_deref()) {
                (Want::Unbound, None) => true,
                (Want::Bound(None), Some(_)) => true,
                (Want::Bound(Some(w)), Some(d)) => w == d,
                _ => false,
            };
            if done {
                return Ok(now.unwrap_or_default());
            }
            if Instant::now() >= deadline {
                return Err(VfioError::Rebind {
                    address: self.address.clone(),
                    written: written.to_owned(),
                    expected: match want {
                        Want::Unbound => "no driver".to_owned(),
                        Want::Bound(None) => "a driver".to_owned(),
                        Want::Bound(Some(w)) => w.to_owned(),
                    },
                    found: now.unwrap_or_else(|| "no driver".to_owned()),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    Unbound,
    /// To this driver, or to any when `None`.
    Bound(Option<&'a str>),
}

/// The addresses in IOMMU group `group` (`kernel/iommu_groups/<group>/devices/`), sorted.
pub fn group_members(root: &SysfsRoot, group: u32) -> Result<Vec<String>, VfioError> {
    let dir = root
        .path()
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("devices");
    let entries = fs::read_dir(&dir).map_err(|source| VfioError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out: Vec<String> = entries
        .take(MAX_GROUP_DEVICES)
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether the host has any IOMMU group (the kernel creates none without an IOMMU).
pub fn has_iommu_groups(root: &SysfsRoot) -> bool {
    let dir = root.path().join("kernel/iommu_groups");
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name()?.to_str().map(str::to_owned)
}

fn read_small(path: &Path) -> Option<String> {
    let file = fs::File::open(path).ok()?;
    let mut buf = String::new();
    file.take(4096).read_to_string(&mut buf).ok()?;
    Some(buf.trim().to_owned())
}

/// One write to an existing attribute: sysfs takes each `write(2)` as one command, so it is a
/// single write without create or truncate.
fn write_attr(path: &Path, value: &str) -> Result<(), VfioError> {
    let err = |source| VfioError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}
