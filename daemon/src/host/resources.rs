//! Host resources a running guest holds that must be given back when it stops: hugepages the
//! daemon added to a pool for it, and PCI devices it moved to vfio-pci. Stored in the guest's
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
}

impl HeldResources {
    pub fn is_empty(&self) -> bool {
        self.hugepages.is_empty() && self.vfio.is_empty()
    }

    /// Gives everything back (blocking sysfs writes); failures are logged, never fatal.
    pub fn release(&self, root: &super::SysfsRoot) {
        super::vfio::give_back(root, &self.vfio);
        super::hugepages::release(root, &self.hugepages);
    }
}
