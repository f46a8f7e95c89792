//! TCP ports for guests' remote displays (VNC, SPICE and its TLS port), as libvirt's
//! `remote_display_port_min/max` and `virPortAllocator`: a port is reserved in memory for the
//! guest it was given to until that guest stops, and a port someone else listens on (a bind
//! probe fails) is skipped. A restarted daemon re-reserves what its running guests hold
//! (their runtime records) before it hands out anything.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// The lowest port a VNC display can have (display 0); libvirt refuses lower minimums too.
pub const VNC_BASE: u16 = 5900;

/// `[graphics]` in the daemon's configuration: the range autoport displays get ports from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphicsConfig {
    pub port_min: u16,
    pub port_max: u16,
}

impl Default for GraphicsConfig {
    /// libvirt's qemu.conf defaults.
    fn default() -> Self {
        GraphicsConfig {
            port_min: VNC_BASE,
            port_max: 65535,
        }
    }
}

impl GraphicsConfig {
    /// Why the range is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.port_min < VNC_BASE {
            return Some(format!(
                "port_min {} is below {VNC_BASE} (VNC display 0)",
                self.port_min
            ));
        }
        if self.port_min > self.port_max {
            return Some(format!(
                "port_min {} is above port_max {}",
                self.port_min, self.port_max
            ));
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error(
        "no free display port in {min}-{max} ({wanted} wanted; {reserved} reserved by guests, \
         the rest in use on the host): widen [graphics] port_min/port_max"
    )]
    Exhausted {
        min: u16,
        max: u16,
        wanted: usize,
        reserved: usize,
    },
    #[error("display port {port} is reserved by guest '{holder}'")]
    Taken { port: u16, holder: String },
}

/// The ports reserved by running guests, port -> guest.
#[derive(Debug)]
pub struct DisplayPorts {
    min: u16,
    max: u16,
    held: Mutex<BTreeMap<u16, String>>,
    /// Whether a port is free on the host; a bind probe except in unit tests.
    probe: fn(u16) -> bool,
}

impl DisplayPorts {
    pub fn new(config: &GraphicsConfig) -> Self {
        Self::with_probe(config, bindable)
    }

    fn with_probe(config: &GraphicsConfig, probe: fn(u16) -> bool) -> Self {
        DisplayPorts {
            min: config.port_min,
            max: config.port_max.max(config.port_min),
            held: Mutex::new(BTreeMap::new()),
            probe,
        }
    }

    /// Reserves `count` ports for `domain`, lowest free first (libvirt's order): none reserved
    /// by a guest, none that fails the bind probe. All or nothing.
    pub fn allocate(&self, domain: &str, count: usize) -> Result<Vec<u16>, PortError> {
        let mut held = self.lock();
        let mut got = Vec::with_capacity(count);
        for port in self.min..=self.max {
            if got.len() == count {
                break;
            }
            if !held.contains_key(&port) && (self.probe)(port) {
                got.push(port);
            }
        }
        if got.len() < count {
            return Err(PortError::Exhausted {
                min: self.min,
                max: self.max,
                wanted: count,
                reserved: held.len(),
            });
        }
        for p in &got {
            held.insert(*p, domain.to_owned());
        }
        Ok(got)
    }

    /// Reserves a port the definition names (`autoport='no'`), as libvirt does, so no autoport
    /// display is given it meanwhile; refused if another guest holds it. Not probed: QEMU's own
    /// bind says whether it is free on the host.
    pub fn reserve(&self, domain: &str, port: u16) -> Result<(), PortError> {
        let mut held = self.lock();
        match held.get(&port) {
            Some(holder) if holder != domain => Err(PortError::Taken {
                port,
                holder: holder.clone(),
            }),
            _ => {
                held.insert(port, domain.to_owned());
                Ok(())
            }
        }
    }

    /// Marks `ports` as `domain`'s without probing: a running guest's (its QEMU listens on
    /// them), re-adopted by a restarted daemon. Ports outside the range are kept too: the
    /// range may have changed, the guest still holds them.
    pub fn adopt(&self, domain: &str, ports: &[u16]) {
        let mut held = self.lock();
        for p in ports {
            if let Some(other) = held.insert(*p, domain.to_owned()) {
                if other != domain {
                    tracing::warn!(
                        port = p,
                        domain,
                        other,
                        "display port recorded for two guests"
                    );
                }
            }
        }
    }

    /// Gives back `ports` if `domain` holds them (never another guest's).
    pub fn release(&self, domain: &str, ports: &[u16]) {
        let mut held = self.lock();
        for p in ports {
            if held.get(p).is_some_and(|d| d == domain) {
                held.remove(p);
            }
        }
    }

    /// The ports `domain` holds, ascending.
    pub fn held_by(&self, domain: &str) -> Vec<u16> {
        self.lock()
            .iter()
            .filter(|(_, d)| d.as_str() == domain)
            .map(|(p, _)| *p)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether nothing listens on `port` on any address: binding the IPv4 and IPv6 wildcards
/// succeeds (a listener on one address makes the wildcard bind fail). No IPv6 on the host
/// counts as free there. A socket syscall, not file I/O: fine on the async threads.
pub fn bindable(port: u16) -> bool {
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok();
    v4 && match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: u16, max: u16) -> GraphicsConfig {
        GraphicsConfig {
            port_min: min,
            port_max: max,
        }
    }

    fn always(_: u16) -> bool {
        true
    }

    #[test]
    fn lowest_free_first_and_distinct() {
        let ports = DisplayPorts::with_probe(&range(5900, 5909), always);
        assert_eq!(ports.allocate("a", 1).unwrap(), vec![5900]);
        assert_eq!(ports.allocate("b", 2).unwrap(), vec![5901, 5902]);
        assert_eq!(ports.held_by("b"), vec![5901, 5902]);
        ports.release("a", &[5900]);
        assert_eq!(ports.allocate("c", 1).unwrap(), vec![5900]);
    }

    #[test]
    fn probe_failures_are_skipped() {
        fn odd_taken(p: u16) -> bool {
            p % 2 == 0
        }
        let ports = DisplayPorts::with_probe(&range(5900, 5909), odd_taken);
        assert_eq!(ports.allocate("a", 3).unwrap(), vec![5900, 5902, 5904]);
    }

    #[test]
    fn exhaustion_is_all_or_nothing() {
        let ports = DisplayPorts::with_probe(&range(5900, 5902), always);
        ports.allocate("a", 2).unwrap();
        let err = ports.allocate("b", 2).unwrap_err();
        assert!(err.to_string().contains("5900-5902"), "{err}");
        assert!(ports.held_by("b").is_empty());
        assert_eq!(ports.allocate("b", 1).unwrap(), vec![5902]);
    }

    #[test]
    fn release_gives_back_only_the_owners_ports() {
        let ports = DisplayPorts::with_probe(&range(5900, 5909), always);
        ports.allocate("a", 1).unwrap();
        ports.release("b", &[5900]);
        assert_eq!(ports.held_by("a"), vec![5900]);
    }

    #[test]
    fn fixed_ports_are_reserved_once() {
        let ports = DisplayPorts::with_probe(&range(5900, 5909), always);
        ports.reserve("fixed", 5900).unwrap();
        assert_eq!(ports.allocate("auto", 1).unwrap(), vec![5901]);
        let err = ports.reserve("other", 5901).unwrap_err();
        assert!(err.to_string().contains("'auto'"), "{err}");
    }

    #[test]
    fn adopted_ports_are_not_handed_out() {
        let ports = DisplayPorts::with_probe(&range(5900, 5909), always);
        ports.adopt("old", &[5900, 5902]);
        assert_eq!(ports.allocate("new", 2).unwrap(), vec![5901, 5903]);
    }

    #[test]
    fn the_bind_probe_sees_a_listener() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!bindable(port));
        drop(l);
        assert!(bindable(port));
    }

    #[test]
    fn config_checks() {
        assert_eq!(GraphicsConfig::default().problem(), None);
        assert!(range(5899, 6000).problem().unwrap().contains("5899"));
        assert!(range(6000, 5999).problem().unwrap().contains("above"));
        let mut config = crate::Config::default_for(true, |_| None);
        config.graphics = range(100, 200);
        let err = config.check("test", true).unwrap_err().to_string();
        assert!(err.contains("graphics") && err.contains("100"), "{err}");
    }
}
