//! Device hot-plug.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Command, Empty};

/// `device_add`: `driver`, `id`, `bus` and any device properties.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAdd {
    pub driver: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Device-specific properties (`device_add` accepts any the device has).
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl Command for DeviceAdd {
    const NAME: &'static str = "device_add";
    type Output = Empty;
}

/// `device_del`: asks for removal; completion is the DEVICE_DELETED event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceDel {
    pub id: String,
}

impl Command for DeviceDel {
    const NAME: &'static str = "device_del";
    type Output = Empty;
}
