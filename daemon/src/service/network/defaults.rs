//! What the daemon picks for a network definition: uuid, our bridge's name and MAC, and the
//! `default` NAT network's subnet (libvirt's 192.168.122.0/24 unless the host uses it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use novacron_domain::model::ids::{MacAddr, Uuid};
use novacron_domain::network::{
    self as net, Bridge, Dhcp, DhcpRange, Forward, ForwardMode, HostSubnet, IpConfig, NetworkConfig,
};
use novacron_domain::Error;

use super::Entry;
use crate::host::net::netlink::Netlink;

fn random<const N: usize>() -> [u8; N] {
    use std::io::Read as _;
    let mut b = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Not a secret: a unique-enough fallback from the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % t.len()];
        }
    }
    b
}

/// Uuid, bridge name (`ncbr<N>`, first free) and bridge MAC (52:54:00:..) where absent.
pub(super) async fn fill(n: &mut NetworkConfig, defined: &BTreeMap<String, Entry>, nl: &Netlink) {
    if n.uuid.is_none() {
        let mut u = random::<16>();
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        n.uuid = Some(Uuid(u));
    }
    if !n.is_managed() {
        return;
    }
    if n.bridge.is_none() {
        let taken = |name: &str| {
            defined.values().any(|e| {
                e.config.name != n.name && e.config.bridge.as_ref().is_some_and(|b| b.name == name)
            })
        };
        for i in 0..1000 {
            let name = format!("ncbr{i}");
            if !taken(&name) && matches!(nl.link(&name).await, Ok(None)) {
                n.bridge = Some(Bridge { name, stp: false });
                break;
            }
        }
    }
    if n.mac.is_none() {
        let r = random::<3>();
        n.mac = Some(MacAddr([0x52, 0x54, 0x00, r[0], r[1], r[2]]));
    }
}

/// Candidate subnets for `default`, in order.
const CANDIDATES: &[[u8; 3]] = &[
    [192, 168, 122],
    [192, 168, 124],
    [10, 122, 0],
    [172, 30, 122],
];

/// The `default` NAT network on the first candidate /24 that neither the host nor another
/// definition uses.
pub(super) fn default_network(
    defined: &BTreeMap<String, Entry>,
    host: &[HostSubnet],
) -> Result<NetworkConfig, Error> {
    for c in CANDIDATES {
        let a = |last: u8| Ipv4Addr::new(c[0], c[1], c[2], last);
        let n = NetworkConfig {
            name: "default".into(),
            uuid: None,
            forward: Forward {
                mode: ForwardMode::Nat,
                dev: None,
                interfaces: Vec::new(),
            },
            bridge: None,
            mac: None,
            mtu: None,
            ip: Some(IpConfig {
                address: a(1),
                prefix: 24,
                dhcp: Some(Dhcp {
                    ranges: vec![DhcpRange {
                        start: a(2),
                        end: a(254),
                    }],
                    hosts: Vec::new(),
                }),
            }),
            dns: None,
            isolated_ports: false,
            bandwidth: None,
        };
        if net::check_conflicts(&n, defined.values().map(|e| &e.config), host).is_ok() {
            return Ok(n);
        }
    }
    Err(Error::Internal(
        "no free subnet for the default network (tried 192.168.122.0/24, 192.168.124.0/24, 10.122.0.0/24, 172.30.122.0/24)".into(),
    ))
}
