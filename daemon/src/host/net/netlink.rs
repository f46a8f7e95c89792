//! Bridges, addresses and routes over rtnetlink (the crate the taps code uses too): no `ip`
//! subprocesses. Every bridge we make carries the alias `novacron:<network>`, so undo and
//! adoption can tell our links from the host's.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoKind, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, RouteMessageBuilder};

use novacron_domain::network::HostSubnet;

/// A netlink failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("netlink: cannot {action}: {message}")]
pub struct NetlinkError {
    pub action: String,
    pub message: String,
    /// The kernel's errno, when it gave one.
    pub errno: Option<i32>,
}

fn err(action: impl Into<String>, e: rtnetlink::Error) -> NetlinkError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    };
    NetlinkError {
        action: action.into(),
        message: e.to_string(),
        errno,
    }
}

/// What we need to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub alias: Option<String>,
    /// Index of the bridge this link is a port of.
    pub controller: Option<u32>,
}

/// The alias that marks a bridge as ours.
pub fn owner_alias(network: &str) -> String {
    format!("novacron:{network}")
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        alias: None,
        controller: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::IfAlias(n) => l.alias = Some(n.clone()),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// One rtnetlink connection (its driver task runs on the current runtime).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetlinkError {
            action: "open a netlink socket".into(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_of)),
            Err(e) => {
                let e = err(format!("look up link {name}"), e);
                if e.errno == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let mut s = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(|e| err("list links", e))? {
            out.push(link_of(&m));
        }
        Ok(out)
    }

    /// Makes a bridge (down), marks it ours by its alias, and returns its index.
    pub async fn create_bridge(
        &self,
        name: &str,
        network: &str,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        stp: bool,
    ) -> Result<u32, NetlinkError> {
        let mut b = LinkBridge::new(name)
            .down()
            .stp_state(if stp {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            })
            // libvirt's delay='0': a port forwards at once (the kernel's minimum with STP).
            .forward_delay(if stp { 200 } else { 0 });
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| err(format!("create bridge {name}"), e))?;
        let link = self.link(name).await?.ok_or_else(|| NetlinkError {
            action: format!("find the new bridge {name}"),
            message: "gone right after it was made".into(),
            errno: None,
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .alias(owner_alias(network))
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| err(format!("set the alias of {name}"), e))?;
        Ok(link.index)
    }

    pub async fn add_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = err(format!("add {addr}/{prefix}"), e);
                // Adoption re-applies: an address already there is what we wanted.
                if e.errno == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let m = LinkUnspec::new_with_index(index);
        let m = if up { m.up() } else { m.down() };
        self.handle
            .link()
            .set(m.build())
            .execute()
            .await
            .map_err(|e| err(format!("set link {index} up={up}"), e))
    }

    pub async fn delete(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| err(format!("delete link {index}"), e))
    }

    /// Makes `port` a port of `bridge`, isolated or not (bridge port `isolated on`: isolated
    /// ports reach the bridge and non-isolated ports, never each other).
    pub async fn attach_port(
        &self,
        port: u32,
        bridge: u32,
        isolated: bool,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(port).controller(bridge).build())
            .execute()
            .await
            .map_err(|e| err(format!("attach link {port} to bridge {bridge}"), e))?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(port).isolated(isolated).build())
            .execute()
            .await
            .map_err(|e| err(format!("set isolated={isolated} on port {port}"), e))
    }

    /// Sets or clears a bridge port's `isolated` flag.
    pub async fn set_port_isolated(&self, port: u32, isolated: bool) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(port).isolated(isolated).build())
            .execute()
            .await
            .map_err(|e| err(format!("set isolated={isolated} on port {port}"), e))
    }

    /// The host's IPv4 subnets: interface addresses and routes, except on `skip` links (our
    /// own bridges).
    pub async fn host_subnets(&self, skip: &[u32]) -> Result<Vec<HostSubnet>, NetlinkError> {
        let names: std::collections::HashMap<u32, String> = self
            .links()
            .await?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let name = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("#{i}"));
        let mut out = Vec::new();
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(|e| err("list addresses", e))? {
            if m.header.family != AddressFamily::Inet || skip.contains(&m.header.index) {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    let p = m.header.prefix_len;
                    out.push(HostSubnet {
                        what: format!("address {ip}/{p} on {}", name(m.header.index)),
                        network: Ipv4Addr::from(
                            u32::from(*ip) & novacron_domain::network::prefix_mask(p),
                        ),
                        prefix: p,
                    });
                }
            }
        }
        let mut s = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = s.try_next().await.map_err(|e| err("list routes", e))? {
            let p = m.header.destination_prefix_length;
            let mut dst = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let (Some(dst), true) = (dst, p > 0) else {
                continue;
            };
            if oif.is_some_and(|i| skip.contains(&i)) || dst.is_loopback() || dst.is_broadcast() {
                continue;
            }
            out.push(HostSubnet {
                what: format!(
                    "route {dst}/{p}{}",
                    oif.map(|i| format!(" via {}", name(i))).unwrap_or_default()
                ),
                network: dst,
                prefix: p,
            });
        }
        Ok(out)
    }
}

/// Used by bridge kind checks.
pub fn is_bridge(l: &Link) -> bool {
    l.kind.as_deref() == Some(&InfoKind::Bridge.to_string())
}
