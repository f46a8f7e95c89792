//! Each QEMU in its own transient systemd scope, through systemd's D-Bus API
//! (`org.freedesktop.systemd1.Manager.StartTransientUnit` with the QEMU's pid): a daemon restart
//! or crash, or `systemctl stop novacrond`, then never takes a guest down with the daemon's
//! cgroup, and each guest is accounted for on its own (`systemctl status novacron-web.scope`).

use zbus::zvariant::{OwnedObjectPath, Value};

use crate::config::{ScopeConfig, ScopeMode};
use crate::host::cgroup::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cannot reach systemd's manager on D-Bus: {0}")]
    Bus(#[source] zbus::Error),
    #[error("systemd refused the scope {unit}: {source}")]
    Refused {
        unit: String,
        #[source]
        source: zbus::Error,
    },
}

/// A connection to systemd's manager, present only where guests get scopes.
pub struct Scopes {
    conn: zbus::Connection,
}

impl Scopes {
    /// `None` when scopes are off, or `auto` and systemd is not the init system.
    pub async fn connect(config: &ScopeConfig) -> Result<Option<Scopes>, ScopeError> {
        let systemd_is_init = std::path::Path::new("/run/systemd/system").exists();
        if !wanted(config.mode, systemd_is_init) {
            return Ok(None);
        }
        let conn = match &config.bus_address {
            Some(address) => {
                zbus::connection::Builder::address(address.as_str())
                    .map_err(ScopeError::Bus)?
                    .build()
                    .await
            }
            None => zbus::Connection::system().await,
        }
        .map_err(ScopeError::Bus)?;
        Ok(Some(Scopes { conn }))
    }

    /// Moves `pid` (the guest's QEMU) into a new scope for `domain`; returns the unit name.
    /// The name carries the pid: systemd notices a QEMU's exit on its own schedule, so the
    /// previous start's scope may still exist when the guest is started again.
    pub async fn place(&self, domain: &str, pid: u32) -> Result<String, ScopeError> {
        self.place_limited(domain, pid, &Limits::default()).await
    }

    /// As [`Scopes::place`], with the guest's cgroup limits as scope properties
    /// (`AllowedCPUs`, `AllowedMemoryNodes`, `MemoryMax`, `MemoryHigh`).
    pub async fn place_limited(
        &self,
        domain: &str,
        pid: u32,
        limits: &Limits,
    ) -> Result<String, ScopeError> {
        let unit = unit_name(domain, pid);
        let mut properties: Vec<(&str, Value<'_>)> = vec![
            (
                "Description",
                Value::from(format!("NovaCron guest {domain}")),
            ),
            ("Slice", Value::from("machine.slice")),
            ("PIDs", Value::from(vec![pid])),
            // A guest that crashed leaves no failed unit behind to block the next start.
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        if let Some(cpus) = &limits.cpus {
            properties.push(("AllowedCPUs", Value::from(bitmask(cpus))));
        }
        if let Some(mems) = &limits.mems {
            properties.push(("AllowedMemoryNodes", Value::from(bitmask(mems))));
        }
        if let Some(max) = limits.memory_max_bytes {
            properties.push(("MemoryMax", Value::from(max)));
        }
        if let Some(high) = limits.memory_high_bytes {
            properties.push(("MemoryHigh", Value::from(high)));
        }
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "StartTransientUnit",
                &(unit.as_str(), "fail", properties, aux),
            )
            .await
            .map_err(|source| ScopeError::Refused {
                unit: unit.clone(),
                source,
            })?;
        let job: Result<OwnedObjectPath, _> = reply.body().deserialize();
        tracing::debug!(domain, pid, %unit, job = ?job.ok(), "QEMU placed in its scope");
        Ok(unit)
    }
}

impl Scopes {
    /// Changes the CPUs a running guest's scope allows (`None`: all), e.g. for a live pin
    /// outside the old set.
    pub async fn set_cpus(
        &self,
        domain: &str,
        pid: u32,
        cpus: Option<&[u32]>,
    ) -> Result<(), ScopeError> {
        let unit = unit_name(domain, pid);
        let properties: Vec<(&str, Value<'_>)> = vec![(
            "AllowedCPUs",
            Value::from(cpus.map(bitmask).unwrap_or_default()),
        )];
        self.conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "SetUnitProperties",
                &(unit.as_str(), true, properties),
            )
            .await
            .map(drop)
            .map_err(|source| ScopeError::Refused { unit, source })
    }
}

/// systemd's CPU/node set encoding (`ay`): bit `i % 8` of byte `i / 8` for id `i`.
pub fn bitmask(ids: &[u32]) -> Vec<u8> {
    let mut mask = vec![0u8; ids.iter().max().map_or(0, |m| *m as usize / 8 + 1)];
    for &id in ids {
        mask[id as usize / 8] |= 1 << (id % 8);
    }
    mask
}

/// Whether guests get scopes: `auto` follows whether systemd is the init system.
fn wanted(mode: ScopeMode, systemd_is_init: bool) -> bool {
    match mode {
        ScopeMode::Off => false,
        ScopeMode::On => true,
        ScopeMode::Auto => systemd_is_init,
    }
}

/// `novacron-<name>-<pid>.scope`, with what a unit name cannot hold escaped as systemd-escape
/// does (`\xNN`).
pub fn unit_name(domain: &str, pid: u32) -> String {
    let mut unit = String::from("novacron-");
    for b in domain.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') || (b == b'-') {
            unit.push(b as char);
        } else {
            unit.push_str(&format!("\\x{b:02x}"));
        }
    }
    unit.push_str(&format!("-{pid}.scope"));
    unit
}

#[cfg(test)]
mod tests {
    use super::{bitmask, unit_name, wanted};
    use crate::config::ScopeMode;

    #[test]
    fn auto_follows_systemd() {
        assert!(wanted(ScopeMode::Auto, true));
        assert!(!wanted(ScopeMode::Auto, false));
        assert!(wanted(ScopeMode::On, false));
        assert!(!wanted(ScopeMode::Off, true));
    }

    #[test]
    fn cpu_sets_as_systemd_bitmasks() {
        assert_eq!(bitmask(&[1]), [0b10]);
        assert_eq!(bitmask(&[0, 3, 9]), [0b1001, 0b10]);
        assert!(bitmask(&[]).is_empty());
    }

    #[test]
    fn unit_names_are_escaped() {
        assert_eq!(unit_name("web-1", 42), "novacron-web-1-42.scope");
        assert_eq!(unit_name("a+b c", 7), "novacron-a\\x2bb\\x20c-7.scope");
    }
}
