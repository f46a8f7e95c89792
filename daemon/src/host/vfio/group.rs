//! The VFIO group-status check through vfio-ioctls: open the container (`/dev/vfio/vfio`,
//! API version and type-1 IOMMU checked), open the group (`VFIO_GROUP_GET_STATUS` must say
//! viable), attach it and open the device, then close everything again so QEMU can open the
//! group itself (a group file is exclusive).
//!
//! vfio-ioctls hard-codes `/dev/vfio`, so this runs only against the real `/sys`: a recorded
//! sysfs tree names groups that are not this host's.

use std::path::Path;
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice};

use super::VfioError;
use crate::host::topology::SysfsRoot;

/// The VFIO container device.
pub const CONTAINER: &str = "/dev/vfio/vfio";

/// Whether the ioctl check can run: real sysfs, and the VFIO container device exists.
pub fn available(root: &SysfsRoot) -> bool {
    root.path() == Path::new("/sys") && Path::new(CONTAINER).exists()
}

/// Opens `address` (in `group`) through VFIO and closes it again; fails unless the kernel
/// says the group is viable and the device can be opened.
pub fn check_viable(root: &SysfsRoot, group: u32, address: &str) -> Result<(), VfioError> {
    let err = |reason: String| VfioError::Ioctl {
        group,
        address: address.to_owned(),
        reason,
    };
    let container = VfioContainer::new(None).map_err(|e| err(e.to_string()))?;
    let path = root.path().join("bus/pci/devices").join(address);
    let device = VfioDevice::new(&path, Arc::new(container), false).map_err(|e| {
        err(format!(
            "{e} (the group's status must be viable: every device in it bound to vfio-pci)"
        ))
    })?;
    drop(device);
    Ok(())
}
