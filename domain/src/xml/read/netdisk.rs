//! `<disk type='network'><source protocol=... name=...><host .../></source>`.

use super::devices::refused;
use super::R;
use crate::model::*;
use crate::xml::error::XmlError;
use crate::xml::tree::Element;

/// Most monitors an rbd source may list (libvirt has no limit; Ceph clusters have a handful).
const MAX_HOSTS: usize = crate::validate::netdisk::MAX_NET_HOSTS;

pub(super) fn source(s: &Element) -> R<NetSource> {
    // `index` numbers the backing chain at runtime; `auth` is refused with its reason.
    s.allow(&["protocol", "name", "index"], &["host", "auth"])?;
    if let Some(a) = s.child("auth")? {
        return Err(refused(
            a,
            "network disk credentials need a secret store, which NovaCron does not have yet; \
             use a server that needs no authentication (or a local image)",
        ));
    }
    let protos: Vec<(&str, NetProtocol)> =
        NetProtocol::ALL.iter().map(|p| (p.as_str(), *p)).collect();
    let protocol = s.req_attr_enum("protocol", &protos)?;
    let mut hosts = Vec::new();
    for h in s.children_named("host") {
        hosts.push(host(h, protocol)?);
    }
    let many = protocol == NetProtocol::Rbd;
    if hosts.is_empty() || (!many && hosts.len() > 1) || hosts.len() > MAX_HOSTS {
        return Err(s.invalid_attr(
            "protocol",
            if many {
                format!("an rbd source lists 1 to {MAX_HOSTS} <host> monitors")
            } else {
                format!("a {} source names exactly one <host>", protocol.as_str())
            },
        ));
    }
    let name = s.attr("name").map(str::to_owned);
    if name.is_none() && protocol != NetProtocol::Nbd {
        return Err(XmlError::Missing {
            what: format!("attribute name (the {} path)", protocol.as_str()),
            path: format!("{}@name", s.path),
            line: s.line,
        });
    }
    Ok(NetSource {
        protocol,
        name,
        hosts,
    })
}

fn host(h: &Element, protocol: NetProtocol) -> R<NetHost> {
    h.allow(&["name", "port", "transport", "socket"], &[])?;
    let unix = h
        .attr_enum("transport", &[("tcp", false), ("unix", true)])?
        .unwrap_or(false);
    if unix {
        if protocol != NetProtocol::Nbd {
            return Err(h.unsupported_value(Some("transport"), "unix", &["tcp"]));
        }
        for a in ["name", "port"] {
            if h.attr(a).is_some() {
                return Err(XmlError::UnsupportedAttribute {
                    path: format!("{}@{a}", h.path),
                    line: h.line,
                });
            }
        }
        return Ok(NetHost::Unix {
            socket: h.req_attr("socket")?.to_owned(),
        });
    }
    if h.attr("socket").is_some() {
        return Err(XmlError::UnsupportedAttribute {
            path: format!("{}@socket", h.path),
            line: h.line,
        });
    }
    Ok(NetHost::Tcp {
        name: h.req_attr("name")?.to_owned(),
        port: h.attr_int("port")?,
    })
}
