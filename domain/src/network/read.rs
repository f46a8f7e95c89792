//! libvirt network XML -> `NetworkConfig`. Unknown nodes are refused by path and line, as in
//! the domain reader. Ignored on purpose: `network@connections` (libvirt's runtime count of
//! attached guests) and `nat/port start='1024' end='65535'` (the only source port range we
//! masquerade to, spelled out by `virsh net-dumpxml`).

use std::net::Ipv4Addr;

use super::model::*;
use crate::xml::tree::{self, Element};
use crate::xml::XmlError;

type R<T> = Result<T, XmlError>;

const YES_NO: &[(&str, bool)] = &[("yes", true), ("no", false)];
const ON_OFF: &[(&str, bool)] = &[("on", true), ("off", false)];

pub fn parse_network(xml: &str) -> R<NetworkConfig> {
    let root = tree::parse(xml, &[])?;
    if root.name != "network" {
        return Err(XmlError::Invalid {
            path: root.name.clone(),
            line: root.line,
            message: "root element must be <network>".into(),
        });
    }
    network(&root)
}

fn network(n: &Element) -> R<NetworkConfig> {
    n.allow(
        &["connections", "ipv6"],
        &[
            "name",
            "uuid",
            "forward",
            "bridge",
            "mac",
            "mtu",
            "ip",
            "dns",
            "port",
            "domain",
            "bandwidth",
        ],
    )?;
    if n.attr("ipv6").is_some() {
        return Err(not_supported(
            n,
            "ipv6",
            "IPv6 networks are not supported yet",
        ));
    }
    let name = n.req_child("name")?.req_text()?.to_owned();
    let uuid = match n.text_child("uuid")? {
        Some(u) => Some(
            u.req_text()?
                .parse()
                .map_err(|e| u.invalid_text(format!("{e}")))?,
        ),
        None => None,
    };
    let forward = match n.child("forward")? {
        Some(f) => forward(f)?,
        None => Forward {
            mode: ForwardMode::Isolated,
            dev: None,
            interfaces: Vec::new(),
        },
    };
    let bridge = match n.child("bridge")? {
        Some(b) => {
            b.allow(&["name", "stp", "delay"], &[])?;
            b.attr_only("delay", &["0"])?;
            Some(Bridge {
                name: b.req_attr("name")?.to_owned(),
                stp: b.attr_enum("stp", ON_OFF)?.unwrap_or(true),
            })
        }
        None => None,
    };
    let mac = match n.child("mac")? {
        Some(m) => {
            m.allow(&["address"], &[])?;
            Some(
                m.req_attr("address")?
                    .parse()
                    .map_err(|e| m.invalid_attr("address", format!("{e}")))?,
            )
        }
        None => None,
    };
    let mtu = match n.child("mtu")? {
        Some(m) => {
            m.allow(&["size"], &[])?;
            Some(m.req_attr_int("size")?)
        }
        None => None,
    };
    let mut ips = n.children_named("ip");
    let ip = match ips.next() {
        Some(i) => Some(ip(i)?),
        None => None,
    };
    if let Some(extra) = ips.next() {
        return Err(XmlError::NotSupported {
            path: extra.path.clone(),
            line: extra.line,
            reason: "one IPv4 <ip> per network".into(),
        });
    }
    // libvirt puts the DHCP/DNS domain in <domain name=>; we keep it with the DNS settings.
    let domain = match n.child("domain")? {
        Some(d) => {
            d.allow(&["name", "localOnly"], &[])?;
            d.attr_only("localOnly", &["yes"])?;
            Some(d.req_attr("name")?.to_owned())
        }
        None => None,
    };
    let mut dns = match n.child("dns")? {
        Some(d) => Some(dns(d)?),
        None => None,
    };
    if let Some(domain) = domain {
        dns.get_or_insert_with(|| Dns {
            enable: true,
            domain: None,
            forwarders: Vec::new(),
            hosts: Vec::new(),
        })
        .domain = Some(domain);
    }
    let isolated_ports = match n.child("port")? {
        Some(p) => {
            p.allow(&["isolated"], &[])?;
            p.attr_enum("isolated", YES_NO)?.unwrap_or(false)
        }
        None => false,
    };
    // The per-NIC reader: the same attributes, `floor` refused by name (it needs the
    // guaranteed-rate tree libvirt hangs off a network's class; not built).
    let bandwidth = match n.child("bandwidth")? {
        Some(b) => Some(crate::xml::read::nic_qos::bandwidth(b)?),
        None => None,
    };
    Ok(NetworkConfig {
        name,
        uuid,
        forward,
        bridge,
        mac,
        mtu,
        ip,
        dns,
        isolated_ports,
        bandwidth,
    })
}

fn not_supported(e: &Element, attr: &str, reason: &str) -> XmlError {
    XmlError::NotSupported {
        path: format!("{}@{attr}", e.path),
        line: e.line,
        reason: reason.into(),
    }
}

fn forward(f: &Element) -> R<Forward> {
    f.allow(&["mode", "dev"], &["nat", "interface"])?;
    let mode = f
        .attr_enum("mode", ForwardMode::ALL)?
        .unwrap_or(ForwardMode::Nat);
    if let Some(nat) = f.child("nat")? {
        nat.allow(&[], &["port"])?;
        if let Some(p) = nat.child("port")? {
            p.allow(&["start", "end"], &[])?;
            p.attr_only("start", &["1024"])?;
            p.attr_only("end", &["65535"])?;
        }
        if mode != ForwardMode::Nat {
            return Err(nat.invalid_text("<nat> is only meaningful with mode='nat'"));
        }
    }
    let mut interfaces = Vec::new();
    for i in f.children_named("interface") {
        i.allow(&["dev"], &[])?;
        interfaces.push(i.req_attr("dev")?.to_owned());
    }
    Ok(Forward {
        mode,
        dev: f.attr("dev").map(str::to_owned),
        interfaces,
    })
}

fn addr(e: &Element, name: &str) -> R<Ipv4Addr> {
    e.req_attr(name)?;
    e.attr_parse::<Ipv4Addr>(name)?
        .ok_or_else(|| e.invalid_attr(name, "missing"))
}

fn ip(i: &Element) -> R<IpConfig> {
    i.allow(&["address", "netmask", "prefix", "family"], &["dhcp"])?;
    if let Some(f) = i.attr("family") {
        if f != "ipv4" {
            return Err(not_supported(
                i,
                "family",
                "only IPv4 subnets are supported yet",
            ));
        }
    }
    let address = addr(i, "address")?;
    let prefix = match (i.attr("netmask"), i.attr_int::<u8>("prefix")?) {
        (Some(_), Some(_)) => {
            return Err(i.invalid_attr("prefix", "give either netmask or prefix, not both"))
        }
        (Some(_), None) => {
            let m = u32::from(addr(i, "netmask")?);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(i.invalid_attr("netmask", "not a contiguous netmask"));
            }
            u8::try_from(m.leading_ones()).unwrap_or(32)
        }
        (None, Some(p)) => p,
        (None, None) => {
            return Err(XmlError::Missing {
                what: "attribute 'prefix' or 'netmask'".into(),
                path: format!("{}@prefix", i.path),
                line: i.line,
            })
        }
    };
    let dhcp = match i.child("dhcp")? {
        Some(d) => {
            d.allow(&[], &["range", "host"])?;
            let mut out = Dhcp::default();
            for r in d.children_named("range") {
                r.allow(&["start", "end"], &[])?;
                out.ranges.push(DhcpRange {
                    start: addr(r, "start")?,
                    end: addr(r, "end")?,
                });
            }
            for h in d.children_named("host") {
                h.allow(&["mac", "ip", "name"], &[])?;
                out.hosts.push(DhcpHost {
                    mac: h
                        .req_attr("mac")?
                        .parse()
                        .map_err(|e| h.invalid_attr("mac", format!("{e}")))?,
                    ip: addr(h, "ip")?,
                    name: h.attr("name").map(str::to_owned),
                });
            }
            Some(out)
        }
        None => None,
    };
    Ok(IpConfig {
        address,
        prefix,
        dhcp,
    })
}

fn dns(d: &Element) -> R<Dns> {
    d.allow(&["enable"], &["forwarder", "host"])?;
    let mut out = Dns {
        enable: d.attr_enum("enable", YES_NO)?.unwrap_or(true),
        domain: None,
        forwarders: Vec::new(),
        hosts: Vec::new(),
    };
    for f in d.children_named("forwarder") {
        f.allow(&["addr"], &[])?;
        out.forwarders.push(addr(f, "addr")?);
    }
    for h in d.children_named("host") {
        h.allow(&["ip"], &["hostname"])?;
        let mut names = Vec::new();
        for n in h.children_named("hostname") {
            n.allow(&[], &[])?;
            names.push(n.req_text()?.to_owned());
        }
        out.hosts.push(DnsHost {
            ip: addr(h, "ip")?,
            hostnames: names,
        });
    }
    Ok(out)
}
