//! `NetworkConfig` -> libvirt network XML (what `net-dumpxml` prints). Everything the reader
//! accepts is written back: `parse_network(&network_xml(x)) == x`.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::model::*;

pub fn network_xml(n: &NetworkConfig) -> String {
    let mut o = String::from("<network>\n");
    let _ = writeln!(o, "  <name>{}</name>", escape(n.name.as_str()));
    if let Some(u) = &n.uuid {
        let _ = writeln!(o, "  <uuid>{u}</uuid>");
    }
    if n.forward.mode != ForwardMode::Isolated {
        let _ = write!(o, "  <forward mode='{}'", n.forward.mode.as_str());
        if let Some(dev) = &n.forward.dev {
            let _ = write!(o, " dev='{}'", escape(dev.as_str()));
        }
        if n.forward.interfaces.is_empty() {
            o.push_str("/>\n");
        } else {
            o.push_str(">\n");
            for i in &n.forward.interfaces {
                let _ = writeln!(o, "    <interface dev='{}'/>", escape(i.as_str()));
            }
            o.push_str("  </forward>\n");
        }
    }
    if let Some(b) = &n.bridge {
        let _ = writeln!(
            o,
            "  <bridge name='{}' stp='{}' delay='0'/>",
            escape(b.name.as_str()),
            if b.stp { "on" } else { "off" }
        );
    }
    if let Some(m) = &n.mac {
        let _ = writeln!(o, "  <mac address='{m}'/>");
    }
    if let Some(m) = n.mtu {
        let _ = writeln!(o, "  <mtu size='{m}'/>");
    }
    if n.isolated_ports {
        o.push_str("  <port isolated='yes'/>\n");
    }
    if let Some(d) = n.dns.as_ref().and_then(|d| d.domain.as_ref()) {
        let _ = writeln!(o, "  <domain name='{}'/>", escape(d.as_str()));
    }
    if let Some(d) = &n.dns {
        let _ = write!(o, "  <dns enable='{}'", if d.enable { "yes" } else { "no" });
        if d.forwarders.is_empty() && d.hosts.is_empty() {
            o.push_str("/>\n");
        } else {
            o.push_str(">\n");
            for f in &d.forwarders {
                let _ = writeln!(o, "    <forwarder addr='{f}'/>");
            }
            for h in &d.hosts {
                let _ = writeln!(o, "    <host ip='{}'>", h.ip);
                for name in &h.hostnames {
                    let _ = writeln!(o, "      <hostname>{}</hostname>", escape(name.as_str()));
                }
                o.push_str("    </host>\n");
            }
            o.push_str("  </dns>\n");
        }
    }
    if let Some(b) = &n.bandwidth {
        bandwidth(&mut o, b);
    }
    if let Some(ip) = &n.ip {
        let _ = write!(o, "  <ip address='{}' prefix='{}'", ip.address, ip.prefix);
        match &ip.dhcp {
            None => o.push_str("/>\n"),
            Some(d) => {
                o.push_str(">\n    <dhcp>\n");
                for r in &d.ranges {
                    let _ = writeln!(o, "      <range start='{}' end='{}'/>", r.start, r.end);
                }
                for h in &d.hosts {
                    let _ = write!(o, "      <host mac='{}' ip='{}'", h.mac, h.ip);
                    if let Some(name) = &h.name {
                        let _ = write!(o, " name='{}'", escape(name.as_str()));
                    }
                    o.push_str("/>\n");
                }
                o.push_str("    </dhcp>\n  </ip>\n");
            }
        }
    }
    o.push_str("</network>\n");
    o
}

/// `<bandwidth>` as libvirt writes it (before `<ip>`), the units as given.
fn bandwidth(o: &mut String, b: &crate::model::Bandwidth) {
    if b.inbound.is_none() && b.outbound.is_none() {
        o.push_str("  <bandwidth/>\n");
        return;
    }
    o.push_str("  <bandwidth>\n");
    for (name, r) in [("inbound", &b.inbound), ("outbound", &b.outbound)] {
        let Some(r) = r else { continue };
        let _ = write!(o, "    <{name} average='{}'", r.average);
        if let Some(p) = r.peak {
            let _ = write!(o, " peak='{p}'");
        }
        if let Some(k) = r.burst {
            let _ = write!(o, " burst='{k}'");
        }
        o.push_str("/>\n");
    }
    o.push_str("  </bandwidth>\n");
}
