//! PVE's guests as we see them: the `/cluster/resources` rows, power state mapping, name
//! resolution and the domain config we can derive from a guest's PVE config.

use novacron_domain::{DomainConfig, DomainState, DomainSummary, Error};
use serde_json::Value;

/// The two guest kinds `/cluster/resources?type=vm` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Qemu,
    /// Listed, never driven: lifecycle calls on containers are Unsupported.
    Lxc,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Lxc => "lxc",
        }
    }
}

/// One guest row of `/cluster/resources?type=vm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub vmid: u32,
    pub kind: Kind,
    pub node: String,
    /// PVE's name; guests without one are shown (and addressed) as `id:<vmid>`.
    pub name: Option<String>,
    /// `running`, `stopped`, or `unknown` when the node is unreachable.
    pub status: String,
    /// The config lock (`migrate`, `suspended`, `backup`...).
    pub lock: Option<String>,
    pub template: bool,
}

impl Guest {
    /// Parses one row; `None` for rows that are not guests (or lack what a guest must have).
    pub fn from_resource(row: &Value) -> Option<Self> {
        let kind = match row.get("type")?.as_str()? {
            "qemu" => Kind::Qemu,
            "lxc" => Kind::Lxc,
            _ => return None,
        };
        Some(Self {
            vmid: as_u32(row.get("vmid")?)?,
            kind,
            node: row.get("node")?.as_str()?.to_owned(),
            name: row
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            status: row
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            lock: row
                .get("lock")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
            template: row.get("template").is_some_and(flag),
        })
    }

    /// The name our API shows and takes.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{ID_PREFIX}{}", self.vmid))
    }

    /// The state from the listing alone (no qmpstatus: a paused qemu guest lists as running).
    pub fn state(&self) -> DomainState {
        state(&self.status, None, self.lock.as_deref())
    }

    pub fn summary(&self) -> DomainSummary {
        DomainSummary {
            name: self.display_name(),
            // /cluster/resources carries no UUID; `get` reads it from the config's smbios1.
            uuid: None,
            state: self.state(),
        }
    }
}

/// The prefix that addresses a guest by its VMID.
pub const ID_PREFIX: &str = "id:";

/// The one guest `name` means: `id:<vmid>` exactly, else the only guest with that name.
pub fn resolve<'a>(guests: &'a [Guest], name: &str) -> Result<&'a Guest, Error> {
    if let Some(id) = name.strip_prefix(ID_PREFIX) {
        let vmid: u32 = id.parse().map_err(|_| {
            Error::InvalidConfig(format!(
                "'{name}': expected {ID_PREFIX}<vmid> with a numeric VMID"
            ))
        })?;
        return guests
            .iter()
            .find(|g| g.vmid == vmid)
            .ok_or_else(|| Error::not_found(novacron_domain::Kind::Domain, name));
    }
    let mut matches = guests.iter().filter(|g| g.name.as_deref() == Some(name));
    let first = matches
        .next()
        .ok_or_else(|| Error::not_found(novacron_domain::Kind::Domain, name))?;
    let rest: Vec<&Guest> = matches.collect();
    if rest.is_empty() {
        return Ok(first);
    }
    let ids: Vec<String> = std::iter::once(first)
        .chain(rest)
        .map(|g| g.vmid.to_string())
        .collect();
    Err(Error::InvalidConfig(format!(
        "name '{name}' matches {} guests (VMIDs {}); address one as {ID_PREFIX}<vmid>",
        ids.len(),
        ids.join(", ")
    )))
}

/// PVE power state → ours. See the table in the module docs.
pub fn state(status: &str, qmpstatus: Option<&str>, lock: Option<&str>) -> DomainState {
    match (status, lock) {
        ("running", Some("migrate")) => return DomainState::Migrating,
        ("stopped", Some("suspended")) => return DomainState::Suspended,
        ("stopped", _) => return DomainState::Shutoff,
        ("running", _) => {}
        // `unknown`: the node is unreachable; nothing vouches for the guest.
        _ => return DomainState::Crashed,
    }
    match qmpstatus.unwrap_or("running") {
        "running" => DomainState::Running,
        // A guest-initiated S3 sleep is a pause to us: the process and its memory stay.
        "paused" | "suspended" | "debug" | "watchdog" => DomainState::Paused,
        "prelaunch" | "restore-vm" => DomainState::Starting,
        "inmigrate" | "postmigrate" | "finish-migrate" | "save-vm" | "colo" => {
            DomainState::Migrating
        }
        "shutdown" => DomainState::ShuttingDown,
        "io-error" | "internal-error" | "guest-panicked" => DomainState::Crashed,
        _ => DomainState::Running,
    }
}

/// A PVE boolean: 1/0, "1"/"0", true/false.
pub fn flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes" | "on"),
        _ => false,
    }
}

/// A number PVE may send as a JSON number or a string.
pub fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The domain config a PVE guest config maps to: name, UUID (smbios1), memory, vCPUs,
/// description. Disks, NICs and other devices are not translated (PVE storage and bridges have
/// no counterpart in our model).
pub fn domain_config(guest: &Guest, config: &Value) -> Result<DomainConfig, Error> {
    let memory_mib = config.get("memory").and_then(as_u64).unwrap_or(512);
    let cores = config.get("cores").and_then(as_u32).unwrap_or(1).max(1);
    let sockets = config.get("sockets").and_then(as_u32).unwrap_or(1).max(1);
    let vcpus = config
        .get("vcpus")
        .and_then(as_u32)
        .unwrap_or(cores.saturating_mul(sockets))
        .max(1);
    let uuid = config
        .get("smbios1")
        .and_then(Value::as_str)
        .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("uuid=")))
        .and_then(|u| u.parse::<novacron_domain::model::Uuid>().ok());
    let kind_note = match guest.kind {
        Kind::Qemu => "Proxmox VE qemu guest",
        Kind::Lxc => "Proxmox VE container (lxc); listed only, not driven",
    };
    let description = config
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{kind_note} {} on node {}", guest.vmid, guest.node));
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let uuid_xml = uuid
        .map(|u| format!("<uuid>{u}</uuid>"))
        .unwrap_or_default();
    let xml = format!(
        "<domain type='kvm'><name>{}</name>{uuid_xml}<description>{}</description>\
         <memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>",
        esc(&guest.display_name()),
        esc(&description),
    );
    DomainConfig::from_xml(&xml).map_err(|e| {
        Error::Internal(format!(
            "PVE guest {} does not map to a domain config: {e}",
            guest.vmid
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guest(vmid: u32, name: &str) -> Guest {
        Guest {
            vmid,
            kind: Kind::Qemu,
            node: "pve1".into(),
            name: Some(name.into()),
            status: "stopped".into(),
            lock: None,
            template: false,
        }
    }

    #[test]
    fn states_map_as_documented() {
        use DomainState::*;
        assert_eq!(state("running", Some("running"), None), Running);
        assert_eq!(state("running", Some("paused"), None), Paused);
        assert_eq!(state("running", None, Some("migrate")), Migrating);
        assert_eq!(state("stopped", None, Some("suspended")), Suspended);
        assert_eq!(state("stopped", None, None), Shutoff);
        assert_eq!(state("unknown", None, None), Crashed);
        assert_eq!(state("running", Some("prelaunch"), None), Starting);
        assert_eq!(state("running", Some("guest-panicked"), None), Crashed);
    }

    #[test]
    fn names_resolve_uniquely_or_by_id() {
        let gs = vec![guest(90, "dup"), guest(91, "dup"), guest(100, "web")];
        assert_eq!(resolve(&gs, "web").unwrap().vmid, 100);
        assert_eq!(resolve(&gs, "id:91").unwrap().vmid, 91);
        let e = resolve(&gs, "dup").unwrap_err().to_string();
        assert!(e.contains("90, 91") && e.contains("id:<vmid>"), "{e}");
        assert!(matches!(resolve(&gs, "nope"), Err(Error::NotFound { .. })));
        assert!(matches!(resolve(&gs, "id:x"), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn rows_parse_and_skip_non_guests() {
        let row = json!({"id":"qemu/100","type":"qemu","node":"pve1","vmid":100,"name":"a<b",
                         "status":"stopped","lock":"suspended","template":0});
        let g = Guest::from_resource(&row).unwrap();
        assert_eq!(g.state(), DomainState::Suspended);
        assert!(Guest::from_resource(&json!({"type":"node","node":"pve1"})).is_none());
        assert!(Guest::from_resource(&json!({"type":"qemu","vmid":"x","node":"n"})).is_none());
        let cfg = domain_config(
            &g,
            &json!({"memory":"2048","cores":2,"sockets":2,
                    "smbios1":"uuid=00000000-0000-4000-8000-000000000100"}),
        )
        .unwrap();
        assert_eq!(cfg.name, "a<b");
        assert_eq!(cfg.memory.memory_kib, 2048 * 1024);
        assert_eq!(cfg.vcpu.count, 4);
        assert_eq!(
            cfg.uuid.unwrap().to_string(),
            "00000000-0000-4000-8000-000000000100"
        );
    }
}
