//! A vSphere VM as the adapter sees it, its power state in our terms, and the
//! `VirtualMachineConfigSpec` written for `define`.

use novacron_domain::model::{Arch, Devices, Features, Firmware, Memory, Os, Uuid, Vcpu};
use novacron_domain::{DomainConfig, DomainState, DomainSummary};

use super::client::ObjectContent;
use super::soap::MoRef;
use super::xml::escape;

/// The properties every listing asks for.
pub const VM_PATHS: &[&str] = &[
    "name",
    "config.uuid",
    "config.instanceUuid",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.annotation",
    "runtime.powerState",
    "runtime.host",
];

/// `VirtualMachinePowerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Suspended,
}

impl PowerState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "poweredOn" => Some(Self::PoweredOn),
            "poweredOff" => Some(Self::PoweredOff),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }

    pub const fn domain_state(self) -> DomainState {
        match self {
            Self::PoweredOn => DomainState::Running,
            Self::PoweredOff => DomainState::Shutoff,
            Self::Suspended => DomainState::Suspended,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub moref: MoRef,
    pub name: String,
    pub bios_uuid: Option<String>,
    pub instance_uuid: Option<String>,
    pub template: bool,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub annotation: Option<String>,
    /// None when the server sent a power state the API does not define (see the module
    /// docs: reported as `crashed`).
    pub power: Option<PowerState>,
    pub host: Option<MoRef>,
}

impl Vm {
    /// Reads one PropertyCollector object. Properties a VM lacks (config of an inaccessible
    /// VM) stay `None`; a VM without a name is skipped by the caller.
    pub fn from_object(o: &ObjectContent) -> Option<Self> {
        let name = o.text("name")?.to_owned();
        let power_text = o.text("runtime.powerState").unwrap_or("");
        let power = PowerState::parse(power_text);
        if power.is_none() {
            tracing::warn!(vm = %o.obj.value, state = power_text, "unknown vSphere power state");
        }
        let nonempty = |p: &str| o.text(p).filter(|s| !s.is_empty()).map(str::to_owned);
        Some(Self {
            moref: o.obj.clone(),
            name,
            bios_uuid: nonempty("config.uuid"),
            instance_uuid: nonempty("config.instanceUuid"),
            template: o.text("config.template") == Some("true"),
            cpus: o
                .text("config.hardware.numCPU")
                .and_then(|s| s.parse().ok()),
            memory_mb: o
                .text("config.hardware.memoryMB")
                .and_then(|s| s.parse().ok()),
            annotation: nonempty("config.annotation"),
            power,
            host: o.props.get("runtime.host").and_then(MoRef::from_node),
        })
    }

    pub fn state(&self) -> DomainState {
        self.power
            .map(PowerState::domain_state)
            .unwrap_or(DomainState::Crashed)
    }

    pub fn summary(&self) -> DomainSummary {
        DomainSummary {
            name: self.name.clone(),
            uuid: self
                .instance_uuid
                .clone()
                .or_else(|| self.bios_uuid.clone()),
            state: self.state(),
        }
    }

    /// What `get` can say in our model: name, SMBIOS UUID, vCPUs, memory, the annotation as
    /// description. Devices, firmware and placement are not mapped.
    pub fn config(&self) -> DomainConfig {
        DomainConfig {
            virt_type: Default::default(),
            name: self.name.clone(),
            uuid: self
                .bios_uuid
                .as_deref()
                .and_then(|u| u.parse::<Uuid>().ok()),
            title: None,
            description: self.annotation.clone(),
            metadata: None,
            memory: Memory {
                memory_kib: self.memory_mb.unwrap_or(0).saturating_mul(1024),
                current_kib: None,
                max: None,
            },
            vcpu: Vcpu {
                count: self.cpus.unwrap_or(0),
                current: None,
                placement: None,
                cpuset: None,
            },
            iothreads: None,
            cputune: None,
            numatune: None,
            memtune: None,
            memory_backing: None,
            os: Os {
                arch: Some(Arch::X86_64),
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
            on_poweroff: None,
            on_reboot: None,
            on_crash: None,
            pm: None,
            devices: Devices::default(),
        }
    }
}

/// The guest OS identifier given to VMs we create; our model carries no guest OS.
pub const GUEST_ID: &str = "otherGuest64";

/// A minimal `VirtualMachineConfigSpec` (elements in the schema's order, which vCenter
/// enforces): name, SMBIOS UUID, guest id, annotation, files on `datastore`, vCPUs, memory.
pub fn config_spec(config: &DomainConfig, datastore: &str) -> String {
    let mut spec = format!("<name>{}</name>", escape(&config.name));
    if let Some(uuid) = &config.uuid {
        spec.push_str(&format!("<uuid>{uuid}</uuid>"));
    }
    spec.push_str(&format!("<guestId>{GUEST_ID}</guestId>"));
    if let Some(d) = &config.description {
        spec.push_str(&format!("<annotation>{}</annotation>", escape(d)));
    }
    // "[datastore]" alone: the server makes the VM's directory from its name.
    spec.push_str(&format!(
        "<files><vmPathName>[{}]</vmPathName></files>",
        escape(datastore)
    ));
    spec.push_str(&format!("<numCPUs>{}</numCPUs>", config.vcpu.count));
    spec.push_str(&format!(
        "<memoryMB>{}</memoryMB>",
        config.memory.memory_kib.div_ceil(1024)
    ));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_map() {
        assert_eq!(
            PowerState::parse("poweredOn").map(PowerState::domain_state),
            Some(DomainState::Running)
        );
        assert_eq!(
            PowerState::parse("suspended").map(PowerState::domain_state),
            Some(DomainState::Suspended)
        );
        assert_eq!(PowerState::parse("paused"), None);
    }

    #[test]
    fn spec_is_escaped_and_rounds_memory_up() {
        let vm = Vm {
            moref: MoRef::new("VirtualMachine", "vm-1"),
            name: "a&b".into(),
            bios_uuid: None,
            instance_uuid: None,
            template: false,
            cpus: Some(2),
            memory_mb: Some(1),
            annotation: None,
            power: Some(PowerState::PoweredOff),
            host: None,
        };
        let mut config = vm.config();
        config.memory.memory_kib = 1025;
        let spec = config_spec(&config, "ds<1>");
        assert!(spec.starts_with("<name>a&amp;b</name><guestId>"), "{spec}");
        assert!(spec.contains("[ds&lt;1&gt;]"), "{spec}");
        assert!(
            spec.contains("<numCPUs>2</numCPUs><memoryMB>2</memoryMB>"),
            "{spec}"
        );
    }
}
