//! Checks on a network definition: each error names the field (JSON path) and what is wrong.
//! `check_network` needs nothing but the definition; `check_conflicts` compares the subnet with
//! the other definitions and the host's addresses and routes, which the daemon gathers.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::model::*;
use crate::error::{Error, FieldError};
use crate::model::Bandwidth;

/// Longest network name (it appears in file names, nft table and dnsmasq file names).
pub const MAX_NAME: usize = 64;
/// Linux `IFNAMSIZ - 1`.
pub const MAX_IFNAME: usize = 15;

/// The kernel's `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace
/// (the rule definitions stored before the stricter one below were accepted under).
fn kernel_ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_IFNAME {
        return Some(format!(
            "'{name}' is {} bytes; an interface name has at most {MAX_IFNAME}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "'{}' is not a valid interface name",
            name.escape_debug()
        ));
    }
    None
}

/// [`kernel_ifname_problem`] and the daemon's tap rule: what a definition entering now may
/// name.
pub fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return kernel_ifname_problem(name);
    }
    // The daemon's tap rule (daemon/src/host/taps/names.rs `check`): these names go into
    // nft rulesets (`iifname "br"`, `device "br"`), tc batches and dnsmasq's config, where a
    // '"', ';', '#', '{' or newline would end the name and write rules of its own.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some(format!(
            "'{}' is not a valid interface name: ASCII letters, digits, '-', '_' and '.' only",
            name.escape_debug()
        ));
    }
    kernel_ifname_problem(name)
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Some(format!("must be 1 to {MAX_NAME} bytes"));
    }
    if name.starts_with(['.', '-'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "'{name}': letters, digits, '-', '_' and '.' only, not starting with '.' or '-'"
        ));
    }
    None
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn invalid(details: Vec<FieldError>) -> Result<(), Error> {
    if details.is_empty() {
        return Ok(());
    }
    let message = details
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Invalid { message, details })
}

/// Everything that can be checked on the definition alone.
pub fn check_network(n: &NetworkConfig) -> Result<(), Error> {
    check(n, ifname_problem)
}

/// [`check_network`] for a definition stored by an earlier daemon: its interface names are
/// held to the kernel's rule only, so a network defined before the stricter rule is still
/// there (and its running instance adopted, not torn down) after an upgrade.
pub fn check_stored_network(n: &NetworkConfig) -> Result<(), Error> {
    check(n, kernel_ifname_problem)
}

fn check(n: &NetworkConfig, ifname_problem: fn(&str) -> Option<String>) -> Result<(), Error> {
    let mut e = Vec::new();
    let mut err = |p: &str, m: String| e.push(FieldError::new(p, m));
    if let Some(m) = name_problem(&n.name) {
        err("name", m);
    }
    if let Some(b) = &n.bridge {
        if let Some(m) = ifname_problem(&b.name) {
            err("bridge.name", m);
        }
    }
    if let Some(d) = &n.forward.dev {
        if let Some(m) = ifname_problem(d) {
            err("forward.dev", m);
        }
    }
    for (i, d) in n.forward.interfaces.iter().enumerate() {
        if let Some(m) = ifname_problem(d) {
            err(&format!("forward.interfaces[{i}]"), m);
        }
    }
    if let Some(m) = n.mtu {
        if !(68..=65535).contains(&m) {
            err("mtu", format!("{m} is outside 68..=65535"));
        }
    }
    if let Some(m) = &n.mac {
        if m.0[0] & 1 == 1 {
            err("mac", format!("{m} is a multicast address"));
        }
    }
    match n.kind() {
        NetworkKind::Managed(mode) => {
            if n.ip.is_none() && mode != ForwardMode::Isolated {
                err(
                    "ip",
                    format!("a '{}' network needs an IPv4 subnet", mode.as_str()),
                );
            }
            if mode == ForwardMode::Isolated && n.forward.dev.is_some() {
                err("forward.dev", "an isolated network forwards nothing".into());
            }
            if !n.forward.interfaces.is_empty() {
                err(
                    "forward.interfaces",
                    format!(
                        "only macvtap modes use forward interfaces, not '{}'",
                        mode.as_str()
                    ),
                );
            }
        }
        NetworkKind::HostBridge(_) | NetworkKind::Direct { .. } => {
            let what = if matches!(n.kind(), NetworkKind::HostBridge(_)) {
                "a host bridge network"
            } else {
                "a macvtap network"
            };
            if n.ip.is_some() {
                err(
                    "ip",
                    format!("{what} has no subnet of ours (the LAN's DHCP serves it)"),
                );
            }
            if n.dns.is_some() {
                err("dns", format!("{what} has no DNS of ours"));
            }
            if n.isolated_ports {
                err(
                    "isolated_ports",
                    format!("{what}'s ports are not ours to isolate"),
                );
            }
            if n.forward.dev.is_some() {
                err("forward.dev", format!("{what} has no uplink of ours"));
            }
            if n.mac.is_some() {
                err("mac", format!("{what} has no bridge of ours"));
            }
            if let NetworkKind::Direct { .. } = n.kind() {
                if n.forward.interfaces.len() != 1 {
                    err(
                        "forward.interfaces",
                        "a macvtap network names exactly one host interface".into(),
                    );
                }
            } else if !n.forward.interfaces.is_empty() {
                err(
                    "forward.interfaces",
                    "a host bridge network has no forward interfaces".into(),
                );
            }
        }
    }
    if let Some(b) = &n.bandwidth {
        check_bandwidth(n, b, &mut err);
    }
    if let Some(ip) = &n.ip {
        check_ip(ip, &mut err);
    }
    if let Some(d) = &n.dns {
        if let Some(dom) = &d.domain {
            if !hostname_ok(dom) {
                err("dns.domain", format!("'{dom}' is not a valid domain name"));
            }
        }
        for (i, h) in d.hosts.iter().enumerate() {
            if h.hostnames.is_empty() {
                err(&format!("dns.hosts[{i}].hostnames"), "is empty".into());
            }
            for (j, name) in h.hostnames.iter().enumerate() {
                if !hostname_ok(name) {
                    err(
                        &format!("dns.hosts[{i}].hostnames[{j}]"),
                        format!("'{name}' is not a valid host name"),
                    );
                }
            }
        }
    }
    invalid(e)
}

/// libvirt's rule: a network-wide limit only on a bridge the network makes (nat, route,
/// isolated); the values as a NIC's.
fn check_bandwidth(n: &NetworkConfig, b: &Bandwidth, err: &mut impl FnMut(&str, String)) {
    match n.kind() {
        NetworkKind::Managed(_) => {}
        NetworkKind::HostBridge(br) => err(
            "bandwidth",
            format!(
                "a host bridge network's bridge '{br}' is not ours to shape (libvirt would \
                 replace its root qdisc); put <bandwidth> on the guests' interfaces instead"
            ),
        ),
        NetworkKind::Direct { mode, .. } => err(
            "bandwidth",
            format!(
                "a macvtap network (forward mode '{}') has no bridge to shape (libvirt refuses \
                 it too); put <bandwidth> on the guests' interfaces instead",
                mode.as_str()
            ),
        ),
    }
    crate::validate::nic_qos::bandwidth(b, "bandwidth", |path, problem| {
        err(&path, problem.to_string());
    });
}

fn check_ip(ip: &IpConfig, err: &mut impl FnMut(&str, String)) {
    if !(8..=30).contains(&ip.prefix) {
        err("ip.prefix", format!("/{} is outside /8../30", ip.prefix));
        return;
    }
    let mask = prefix_mask(ip.prefix);
    let host = u32::from(ip.address) & !mask;
    if host == 0 || host == !mask {
        err(
            "ip.address",
            format!(
                "{} is the {} address of {}/{}; the gateway needs a host address",
                ip.address,
                if host == 0 { "network" } else { "broadcast" },
                ip.network(),
                ip.prefix
            ),
        );
    }
    let Some(d) = &ip.dhcp else { return };
    let usable = |a: Ipv4Addr| {
        let h = u32::from(a) & !mask;
        ip.contains(a) && h != 0 && h != !mask
    };
    let subnet = format!("{}/{}", ip.network(), ip.prefix);
    for (i, r) in d.ranges.iter().enumerate() {
        for (f, a) in [("start", r.start), ("end", r.end)] {
            if !usable(a) {
                err(
                    &format!("ip.dhcp.ranges[{i}].{f}"),
                    format!("{a} is not a host address inside {subnet}"),
                );
            }
        }
        if u32::from(r.start) > u32::from(r.end) {
            err(
                &format!("ip.dhcp.ranges[{i}]"),
                format!("start {} is after end {}", r.start, r.end),
            );
        } else if (u32::from(r.start)..=u32::from(r.end)).contains(&u32::from(ip.address)) {
            err(
                &format!("ip.dhcp.ranges[{i}]"),
                format!("contains the gateway address {}", ip.address),
            );
        }
    }
    let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
    for (i, h) in d.hosts.iter().enumerate() {
        if !usable(h.ip) || h.ip == ip.address {
            err(
                &format!("ip.dhcp.hosts[{i}].ip"),
                format!("{} is not a free host address inside {subnet}", h.ip),
            );
        }
        if !macs.insert(h.mac) {
            err(
                &format!("ip.dhcp.hosts[{i}].mac"),
                format!("{} is given to another host entry", h.mac),
            );
        }
        if !ips.insert(h.ip) {
            err(
                &format!("ip.dhcp.hosts[{i}].ip"),
                format!("{} is given to another host entry", h.ip),
            );
        }
        if let Some(name) = &h.name {
            if !hostname_ok(name) {
                err(
                    &format!("ip.dhcp.hosts[{i}].name"),
                    format!("'{name}' is not a valid host name"),
                );
            }
        }
    }
}

/// An IPv4 subnet the host already uses: an interface address or a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSubnet {
    /// `address 10.0.0.5/24 on eth0` or `route 10.1.0.0/16 via eth1`: how the error names it.
    pub what: String,
    pub network: Ipv4Addr,
    pub prefix: u8,
}

fn overlaps(a: Ipv4Addr, ap: u8, b: Ipv4Addr, bp: u8) -> bool {
    let m = prefix_mask(ap.min(bp));
    u32::from(a) & m == u32::from(b) & m
}

/// The subnet and bridge name must be free: not another definition's, not on the host (a
/// default route, prefix 0, is not counted: everything overlaps it).
pub fn check_conflicts<'a>(
    n: &NetworkConfig,
    others: impl IntoIterator<Item = &'a NetworkConfig>,
    host: &[HostSubnet],
) -> Result<(), Error> {
    let mut e = Vec::new();
    for o in others {
        if o.name == n.name {
            continue;
        }
        if let (Some(a), Some(b)) = (&n.ip, &o.ip) {
            if overlaps(a.address, a.prefix, b.address, b.prefix) {
                e.push(FieldError::new(
                    "ip",
                    format!(
                        "{}/{} overlaps {}/{} of network '{}'",
                        a.network(),
                        a.prefix,
                        b.network(),
                        b.prefix,
                        o.name
                    ),
                ));
            }
        }
        if n.is_managed() && o.is_managed() {
            if let (Some(a), Some(b)) = (&n.bridge, &o.bridge) {
                if a.name == b.name {
                    e.push(FieldError::new(
                        "bridge.name",
                        format!("'{}' is the bridge of network '{}'", a.name, o.name),
                    ));
                }
            }
        }
    }
    if let Some(a) = &n.ip {
        for h in host.iter().filter(|h| h.prefix > 0) {
            if overlaps(a.address, a.prefix, h.network, h.prefix) {
                e.push(FieldError::new(
                    "ip",
                    format!(
                        "{}/{} overlaps the host's {}",
                        a.network(),
                        a.prefix,
                        h.what
                    ),
                ));
            }
        }
    }
    invalid(e)
}
