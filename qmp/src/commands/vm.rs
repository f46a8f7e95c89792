//! Run-state control, capabilities negotiation and the HMP escape hatch.

use serde::{Deserialize, Serialize};

use super::{no_arg_command, Command, Empty};
use crate::qapi::{QmpCapability, RunState};

/// `qmp_capabilities`: leaves capabilities-negotiation mode. The client sends it itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QmpCapabilities {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enable: Vec<QmpCapability>,
}

impl Command for QmpCapabilities {
    const NAME: &'static str = "qmp_capabilities";
    type Output = Empty;
}

no_arg_command!(
    /// `query-status`
    QueryStatus = "query-status" -> StatusInfo
);
no_arg_command!(
    /// `cont`: start or resume the vCPUs.
    Cont = "cont" -> Empty
);
no_arg_command!(
    /// `stop`: pause the vCPUs.
    Stop = "stop" -> Empty
);
no_arg_command!(
    /// `system_powerdown`: press the ACPI power button.
    SystemPowerdown = "system_powerdown" -> Empty
);
no_arg_command!(
    /// `system_reset`: hard reset.
    SystemReset = "system_reset" -> Empty
);
no_arg_command!(
    /// `quit`: QEMU exits at once.
    Quit = "quit" -> Empty
);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    pub running: bool,
    pub status: RunState,
}

/// `human-monitor-command`: one HMP command line; its text output is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HumanMonitorCommand {
    #[serde(rename = "command-line")]
    pub command_line: String,
    #[serde(rename = "cpu-index", skip_serializing_if = "Option::is_none")]
    pub cpu_index: Option<u32>,
}

impl Command for HumanMonitorCommand {
    const NAME: &'static str = "human-monitor-command";
    type Output = String;
}
