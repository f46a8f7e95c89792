//! Host resources a running guest holds that must be given back when it stops: hugepages the
//! daemon added to a pool for it, PCI devices it moved to vfio-pci, and the QEMU user's ACL
//! entries on their VFIO group nodes. Stored in the guest's
//! runtime record, so a daemon restarted in between still gives them back.

use serde::{Deserialize, Serialize};

use super::hugepages::Grant;
use super::vfio::Detached;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldResources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hugepages: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vfio: Vec<Detached>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_acls: Vec<super::vfio::access::DeviceAcl>,
}

impl HeldResources {
    pub fn is_empty(&self) -> bool {
        self.hugepages.is_empty() && self.vfio.is_empty() && self.device_acls.is_empty()
    }

    /// Gives everything back (blocking sysfs writes); failures are logged, never fatal.
    pub fn release(&self, root: &super::SysfsRoot) {
        super::vfio::access::revoke(&self.device_acls);
        super::vfio::give_back(root, &self.vfio);
        super::hugepages::release(root, &self.hugepages);
    }
}
