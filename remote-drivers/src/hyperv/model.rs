//! Hyper-V VM records (the scripts' `ConvertTo-Json` output) and their mapping onto ours.

use novacron_domain::{DomainConfig, DomainState, DomainSummary, Error};

use super::error::HypervError;
use super::powershell::VmSpec;

/// One VM as the scripts print it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VmRecord {
    pub name: String,
    pub id: String,
    pub state: StateValue,
    #[serde(default)]
    pub processor_count: Option<u32>,
    #[serde(default)]
    pub memory_startup: Option<u64>,
    #[serde(default)]
    pub generation: Option<u8>,
}

/// `VMState`: a number on Windows PowerShell 5.1 (`ConvertTo-Json` writes enums as their
/// value), a name where enums are written as strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum StateValue {
    Number(i64),
    Name(String),
}

/// Hyper-V `Microsoft.HyperV.PowerShell.VMState` → ours. Numbers up to ForceReboot (32782) are
/// the same on every Windows version; later values moved between versions (Hibernated and
/// ComponentServicing were inserted before the *Critical states), so above 32782 only names are
/// trusted. "Critical" states (the VM's storage is unreachable) map to `Crashed`: the VM needs
/// attention whatever it was doing. `Other` and anything unknown also map to `Crashed`, with a
/// warning, as `DomainState` has no "unknown".
pub fn map_state(state: &StateValue) -> (DomainState, Option<String>) {
    use DomainState::*;
    let by_name = |n: &str| -> Option<DomainState> {
        Some(match n {
            "Running" => Running,
            "Off" => Shutoff,
            "Stopping" | "ForceShutdown" => ShuttingDown,
            "Saved" | "FastSaved" | "Hibernated" => Suspended,
            "Paused" => Paused,
            "Starting" | "Resuming" => Starting,
            // A reset guest is a running guest rebooting.
            "Reset" | "ForceReboot" => Running,
            // Guest CPUs are stopped while memory is written out.
            "Saving" | "FastSaving" => Paused,
            // Still running until the pause completes.
            "Pausing" => Running,
            n if n.ends_with("Critical") => Crashed,
            _ => return None,
        })
    };
    let name = match state {
        StateValue::Name(n) => Some(n.as_str()),
        StateValue::Number(v) => match v {
            2 => Some("Running"),
            3 => Some("Off"),
            4 => Some("Stopping"),
            6 => Some("Saved"),
            9 => Some("Paused"),
            10 => Some("Starting"),
            11 => Some("Reset"),
            32773 => Some("Saving"),
            32776 => Some("Pausing"),
            32777 => Some("Resuming"),
            32779 => Some("FastSaved"),
            32780 => Some("FastSaving"),
            32781 => Some("ForceShutdown"),
            32782 => Some("ForceReboot"),
            _ => None,
        },
    };
    match name.and_then(by_name) {
        Some(s) => (s, None),
        None => (
            Crashed,
            Some(format!(
                "unknown Hyper-V VM state {state:?}; reported as crashed"
            )),
        ),
    }
}

impl VmRecord {
    pub fn summary(&self) -> DomainSummary {
        let (state, note) = map_state(&self.state);
        if let Some(note) = note {
            tracing::warn!(vm = %self.name, id = %self.id, "{note}");
        }
        DomainSummary {
            name: self.name.clone(),
            uuid: Some(self.id.to_ascii_lowercase()),
            state,
        }
    }

    /// What `get` shows: name, id, memory, vCPUs and the firmware generation (generation 2 is
    /// UEFI). Disks, NICs and the rest of a Hyper-V VM are not read.
    pub fn config(&self) -> Result<DomainConfig, Error> {
        let memory_kib = self.memory_startup.unwrap_or(0) / 1024;
        let vcpus = self.processor_count.unwrap_or(1).max(1);
        let generation = self.generation.unwrap_or(1);
        let loader = if generation >= 2 {
            "<loader readonly='yes' type='pflash'>hyperv-generation-2-uefi</loader>"
        } else {
            ""
        };
        let xml = format!(
            "<domain type='kvm'><name>{}</name><uuid>{}</uuid><description>Hyper-V generation {generation} virtual machine</description><memory unit='KiB'>{memory_kib}</memory><vcpu>{vcpus}</vcpu><os><type arch='x86_64' machine='q35'>hvm</type>{loader}</os></domain>",
            super::xml::escape(&self.name),
            super::xml::escape(&self.id),
        );
        DomainConfig::from_xml(&xml).map_err(|e| {
            Error::Internal(format!(
                "Hyper-V VM '{}' does not map onto a domain definition: {e}",
                self.name
            ))
        })
    }
}

/// Parses `ConvertTo-Json -InputObject @(...)` output: an array (`[]` when empty); a lone
/// object is accepted too.
pub fn parse_records(stdout: &[u8]) -> Result<Vec<VmRecord>, HypervError> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if text.starts_with('{') {
        return serde_json::from_str::<VmRecord>(text)
            .map(|r| vec![r])
            .map_err(|e| HypervError::Output(format!("VM record: {e}")));
    }
    serde_json::from_str(text).map_err(|e| HypervError::Output(format!("VM list: {e}")))
}

/// Hyper-V wants startup memory in whole 2 MiB units.
const MEMORY_UNIT: u64 = 2 * 1024 * 1024;

/// What `define` maps: name, memory, vCPU count, firmware (BIOS → generation 1, UEFI →
/// generation 2). Devices are not created (the VM gets no disk or NIC).
pub fn spec(config: &DomainConfig) -> Result<VmSpec, Error> {
    let memory_bytes = config.memory.memory_kib.saturating_mul(1024);
    if memory_bytes == 0 || memory_bytes % MEMORY_UNIT != 0 {
        return Err(Error::InvalidConfig(format!(
            "domain '{}': Hyper-V needs memory in whole 2 MiB units, got {} KiB",
            config.name, config.memory.memory_kib
        )));
    }
    let generation = match config.os.firmware {
        novacron_domain::model::Firmware::Bios => 1,
        novacron_domain::model::Firmware::Uefi { .. }
        | novacron_domain::model::Firmware::UefiAuto { .. } => 2,
    };
    Ok(VmSpec {
        name: config.name.clone(),
        memory_bytes,
        generation,
        processors: config.vcpu.count.max(1),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_stable_number_and_name_maps() {
        let cases = [
            (2, DomainState::Running),
            (3, DomainState::Shutoff),
            (4, DomainState::ShuttingDown),
            (6, DomainState::Suspended),
            (9, DomainState::Paused),
            (10, DomainState::Starting),
            (11, DomainState::Running),
            (32773, DomainState::Paused),
            (32776, DomainState::Running),
            (32777, DomainState::Starting),
            (32779, DomainState::Suspended),
            (32780, DomainState::Paused),
            (32781, DomainState::ShuttingDown),
            (32782, DomainState::Running),
        ];
        for (n, want) in cases {
            assert_eq!(map_state(&StateValue::Number(n)), (want, None), "{n}");
        }
        assert_eq!(
            map_state(&StateValue::Name("Saved".into())).0,
            DomainState::Suspended
        );
        assert_eq!(
            map_state(&StateValue::Name("RunningCritical".into())).0,
            DomainState::Crashed
        );
        let (s, note) = map_state(&StateValue::Number(32785));
        assert_eq!(s, DomainState::Crashed);
        assert!(note.unwrap().contains("unknown"));
        assert!(map_state(&StateValue::Number(1)).1.is_some());
    }

    #[test]
    fn records_parse_from_ps51_json() {
        assert!(parse_records(b"[]").unwrap().is_empty());
        let r = parse_records(br#"[{"Name":"web","Id":"0f2e6a70-1b9c-4a3d-9e8f-0123456789ab","State":2,"ProcessorCount":2,"MemoryStartup":1073741824,"Generation":2}]"#).unwrap();
        assert_eq!(r[0].summary().state, DomainState::Running);
        let c = r[0].config().unwrap();
        assert_eq!(c.memory.memory_kib, 1024 * 1024);
        assert_eq!(c.vcpu.count, 2);
        assert!(matches!(
            c.os.firmware,
            novacron_domain::model::Firmware::Uefi { .. }
        ));
        match parse_records(b"{\"Name\":1}") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Output("VM record: invalid type: integer `1`, expected a string at line 1 column 9")"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_records(b"not json") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Output("VM list: expected ident at line 1 column 2")"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
