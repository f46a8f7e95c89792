//! XenAPI VM records to our model and back.
//!
//! Record values are untrusted: every field is read with a fallback or a named error, ints
//! are accepted as JSON numbers (JSON-RPC) or decimal strings (XAPI's XML-RPC convention).

use serde_json::{json, Map, Value};

use novacron_domain::model::{
    Devices, Features, Firmware, LifecycleAction, Memory, Os, Uuid, Vcpu, VirtType,
};
use novacron_domain::{DomainConfig, DomainState, DomainSummary};

/// `enum vm_power_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PowerState {
    Halted,
    Paused,
    Running,
    Suspended,
}

impl PowerState {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Halted" => Self::Halted,
            "Paused" => Self::Paused,
            "Running" => Self::Running,
            "Suspended" => Self::Suspended,
            _ => return None,
        })
    }

    pub(crate) const fn state(self) -> DomainState {
        match self {
            Self::Halted => DomainState::Shutoff,
            Self::Paused => DomainState::Paused,
            Self::Running => DomainState::Running,
            Self::Suspended => DomainState::Suspended,
        }
    }
}

/// The parts of a `VM record` the adapter uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VmRecord {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub power: PowerState,
    pub is_template: bool,
    pub is_control_domain: bool,
    pub is_snapshot: bool,
    pub memory_static_max: u64,
    pub memory_dynamic_max: u64,
    pub vcpus_max: u32,
    pub vcpus_at_startup: u32,
    pub after_shutdown: String,
    pub after_reboot: String,
    pub after_crash: String,
}

impl VmRecord {
    /// From one record; the error names the field and the VM.
    pub(crate) fn parse(r: &Value) -> Result<Self, String> {
        let obj = r.as_object().ok_or("a VM record is not a struct")?;
        let name = str_field(obj, "name_label").unwrap_or_default();
        let ctx = |e: String| format!("VM '{name}': {e}");
        let power_text =
            str_field(obj, "power_state").ok_or_else(|| ctx("no power_state".into()))?;
        let power = PowerState::parse(&power_text)
            .ok_or_else(|| ctx(format!("unknown power_state '{power_text}'")))?;
        Ok(Self {
            uuid: str_field(obj, "uuid").ok_or_else(|| ctx("no uuid".into()))?,
            description: str_field(obj, "name_description").unwrap_or_default(),
            power,
            is_template: bool_field(obj, "is_a_template"),
            is_control_domain: bool_field(obj, "is_control_domain"),
            is_snapshot: bool_field(obj, "is_a_snapshot"),
            memory_static_max: int_field(obj, "memory_static_max").map_err(ctx)?,
            memory_dynamic_max: int_field(obj, "memory_dynamic_max").map_err(ctx)?,
            vcpus_max: u32::try_from(int_field(obj, "VCPUs_max").map_err(ctx)?).unwrap_or(u32::MAX),
            vcpus_at_startup: u32::try_from(int_field(obj, "VCPUs_at_startup").map_err(ctx)?)
                .unwrap_or(u32::MAX),
            after_shutdown: str_field(obj, "actions_after_shutdown").unwrap_or_default(),
            after_reboot: str_field(obj, "actions_after_reboot").unwrap_or_default(),
            after_crash: str_field(obj, "actions_after_crash").unwrap_or_default(),
            name,
        })
    }

    /// A guest we manage: not a template, snapshot or control domain (dom0).
    pub(crate) fn is_guest(&self) -> bool {
        !(self.is_template || self.is_control_domain || self.is_snapshot)
    }

    pub(crate) fn summary(&self) -> DomainSummary {
        DomainSummary {
            name: self.name.clone(),
            uuid: Some(self.uuid.clone()),
            state: self.power.state(),
        }
    }

    /// The definition as far as the record tells it (see the module table in `mod.rs`).
    pub(crate) fn config(&self) -> DomainConfig {
        let kib = |bytes: u64| bytes / 1024;
        let memory_kib = kib(self.memory_static_max).max(1);
        let current = kib(self.memory_dynamic_max);
        DomainConfig {
            virt_type: VirtType::default(),
            name: self.name.clone(),
            uuid: self.uuid.parse::<Uuid>().ok(),
            title: None,
            description: Some(self.description.clone()).filter(|d| !d.is_empty()),
            metadata: None,
            memory: Memory {
                memory_kib,
                current_kib: Some(current).filter(|c| *c != memory_kib && *c > 0),
                max: None,
            },
            vcpu: Vcpu {
                count: self.vcpus_max.max(1),
                current: Some(self.vcpus_at_startup).filter(|c| *c != self.vcpus_max && *c > 0),
                placement: None,
                cpuset: None,
            },
            iothreads: None,
            cputune: None,
            numatune: None,
            memtune: None,
            memory_backing: None,
            os: Os {
                arch: None,
                machine: None,
                firmware: Firmware::Bios,
                boot: Vec::new(),
                kernel: None,
                bootmenu: None,
                bios_serial: false,
            },
            features: Features::default(),
            cpu: None,
            clock: None,
            on_poweroff: normal_exit(&self.after_shutdown),
            on_reboot: normal_exit(&self.after_reboot),
            on_crash: crash_action(&self.after_crash),
            pm: None,
            devices: Devices::default(),
        }
    }
}

fn normal_exit(s: &str) -> Option<LifecycleAction> {
    match s {
        "destroy" => Some(LifecycleAction::Destroy),
        "restart" => Some(LifecycleAction::Restart),
        _ => None,
    }
}

fn crash_action(s: &str) -> Option<LifecycleAction> {
    match s {
        "destroy" | "coredump_and_destroy" => Some(LifecycleAction::Destroy),
        "restart" | "coredump_and_restart" | "rename_restart" => Some(LifecycleAction::Restart),
        "preserve" => Some(LifecycleAction::Preserve),
        _ => None,
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> bool {
    match obj.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}

/// XAPI `int`: a JSON number, or a decimal string over XML-RPC. Absent is 0.
fn int_field(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|i| i.max(0) as u64))
            .ok_or_else(|| format!("{key} is not an integer: {n}")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|i| i.max(0) as u64)
            .map_err(|_| format!("{key} is not an integer: '{s}'")),
        Some(other) => Err(format!("{key} is not an integer: {other}")),
    }
}

/// What `define` asks XAPI for, from a validated definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub name: String,
    pub description: String,
    pub memory_bytes: u64,
    pub memory_current_bytes: u64,
    pub vcpus_max: u32,
    pub vcpus_at_startup: u32,
    pub after_shutdown: &'static str,
    pub after_reboot: &'static str,
    pub after_crash: &'static str,
}

impl Shape {
    /// Refuses what XAPI's VM record cannot hold (devices need SRs and networks: VBD/VDI/VIF
    /// objects this adapter does not create), naming it.
    pub(crate) fn from_config(c: &DomainConfig) -> Result<Self, String> {
        let d = &c.devices;
        let mut unmapped = Vec::new();
        if !d.disks.is_empty() {
            unmapped.push(format!("{} disk(s)", d.disks.len()));
        }
        if !d.interfaces.is_empty() {
            unmapped.push(format!("{} network interface(s)", d.interfaces.len()));
        }
        if !d.hostdevs.is_empty() {
            unmapped.push(format!("{} host device(s)", d.hostdevs.len()));
        }
        if c.os.kernel.is_some() {
            unmapped.push("direct kernel boot".into());
        }
        if matches!(c.os.firmware, Firmware::Uefi { .. }) {
            unmapped.push("UEFI firmware with a loader path".into());
        }
        if matches!(c.os.firmware, Firmware::UefiAuto { .. }) {
            unmapped.push("UEFI firmware autoselection".into());
        }
        if !unmapped.is_empty() {
            return Err(format!(
                "XAPI define cannot map {}: attach storage and networks with XAPI's own tools \
                 (VDI/VBD/VIF) after defining",
                unmapped.join(", ")
            ));
        }
        let memory_bytes = c.memory.memory_kib.saturating_mul(1024);
        let vcpus_max = c.vcpu.count;
        Ok(Self {
            name: c.name.clone(),
            description: c.description.clone().unwrap_or_default(),
            memory_bytes,
            memory_current_bytes: c
                .memory
                .current_kib
                .map(|k| k.saturating_mul(1024))
                .unwrap_or(memory_bytes),
            vcpus_max,
            vcpus_at_startup: c.vcpu.current.unwrap_or(vcpus_max),
            after_shutdown: match c.on_poweroff {
                Some(LifecycleAction::Restart) => "restart",
                _ => "destroy",
            },
            after_reboot: match c.on_reboot {
                Some(LifecycleAction::Destroy) => "destroy",
                _ => "restart",
            },
            after_crash: match c.on_crash {
                Some(LifecycleAction::Destroy) => "destroy",
                Some(LifecycleAction::Preserve) => "preserve",
                _ => "restart",
            },
        })
    }

    /// Memory limits for `set_memory_limits` / the constructor: static_min, static_max,
    /// dynamic_min, dynamic_max (no ballooning range: dynamic_min = dynamic_max = current).
    pub(crate) fn memory_limits(&self) -> [u64; 4] {
        let current = self.memory_current_bytes.min(self.memory_bytes);
        [current, self.memory_bytes, current, current]
    }

    /// The `VM record` for `VM.create`: every constructor field the model requires, for an
    /// HVM guest booting from its disks/CD in BIOS order. Ints as JSON numbers (the XML-RPC
    /// encoder turns them into XAPI's strings).
    pub(crate) fn create_record(&self) -> Value {
        let [smin, smax, dmin, dmax] = self.memory_limits();
        json!({
            "name_label": self.name,
            "name_description": self.description,
            "user_version": 1,
            "is_a_template": false,
            "affinity": "OpaqueRef:NULL",
            "memory_static_max": smax,
            "memory_dynamic_max": dmax,
            "memory_dynamic_min": dmin,
            "memory_static_min": smin,
            "VCPUs_params": {},
            "VCPUs_max": self.vcpus_max,
            "VCPUs_at_startup": self.vcpus_at_startup,
            "actions_after_shutdown": self.after_shutdown,
            "actions_after_reboot": self.after_reboot,
            "actions_after_crash": self.after_crash,
            "PV_bootloader": "",
            "PV_kernel": "",
            "PV_ramdisk": "",
            "PV_args": "",
            "PV_bootloader_args": "",
            "PV_legacy_args": "",
            "HVM_boot_policy": "BIOS order",
            "HVM_boot_params": {"order": "cd"},
            "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "false"},
            "PCI_bus": "",
            "other_config": {"novacron": "defined"},
            "recommendations": "",
            "domain_type": "hvm",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(power: &str) -> Value {
        json!({
            "uuid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "name_label": "web",
            "name_description": "front",
            "power_state": power,
            "is_a_template": false,
            "is_control_domain": false,
            "is_a_snapshot": false,
            "memory_static_max": "1073741824",
            "memory_dynamic_max": 536870912,
            "VCPUs_max": 4,
            "VCPUs_at_startup": "2",
            "actions_after_crash": "coredump_and_restart",
        })
    }

    #[test]
    fn power_states_map() {
        for (xapi, ours) in [
            ("Halted", DomainState::Shutoff),
            ("Running", DomainState::Running),
            ("Paused", DomainState::Paused),
            ("Suspended", DomainState::Suspended),
        ] {
            let r = VmRecord::parse(&record(xapi)).unwrap();
            assert_eq!(r.summary().state, ours);
        }
        let e = VmRecord::parse(&record("Crashed")).unwrap_err();
        assert!(e.contains("'web'") && e.contains("Crashed"), "{e}");
    }

    #[test]
    fn config_from_record_with_string_or_number_ints() {
        let r = VmRecord::parse(&record("Halted")).unwrap();
        let c = r.config();
        assert_eq!(c.memory.memory_kib, 1024 * 1024);
        assert_eq!(c.memory.current_kib, Some(512 * 1024));
        assert_eq!((c.vcpu.count, c.vcpu.current), (4, Some(2)));
        assert_eq!(c.on_crash, Some(LifecycleAction::Restart));
        assert_eq!(c.description.as_deref(), Some("front"));
        assert!(c.uuid.is_some());
        let mut bad = record("Halted");
        bad["VCPUs_max"] = json!("lots");
        assert!(VmRecord::parse(&bad).unwrap_err().contains("VCPUs_max"));
        match VmRecord::parse(&json!([1])) {
            Err(e) => assert_eq!(format!("{e:?}"), r#""a VM record is not a struct""#),
            Ok(_) => panic!("accepted"),
        }
    }
}
