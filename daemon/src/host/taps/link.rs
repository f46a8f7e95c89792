//! Link configuration over rtnetlink: MTU, MAC, bridge port, ifalias, up; macvtap links;
//! deletion that checks the link is ours first.

use std::io;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage, MacVtapMode};
use rtnetlink::{Handle, LinkMacVtap, LinkUnspec};

/// What the daemon reads back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    /// The bridge (or bond) it is a port of.
    pub controller: Option<u32>,
    pub address: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND`, e.g. `bridge`, `tun`, `macvtap`, `veth`.
    pub kind: Option<String>,
}

/// One rtnetlink socket; its connection task lives as long as the value.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn io_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }

    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link named `name`, if there is one.
    pub async fn by_name(&self, name: &str) -> io::Result<Option<LinkFacts>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await;
        not_found_is_none(found)
    }

    pub async fn by_index(&self, index: u32) -> io::Result<Option<LinkFacts>> {
        let found = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        not_found_is_none(found)
    }

    /// Sets a tap's MAC, MTU, bridge, ifalias (our marker) and brings it up: one request.
    pub async fn configure(
        &self,
        index: u32,
        mac: [u8; 6],
        mtu: Option<u32>,
        controller: Option<u32>,
        alias: &str,
    ) -> io::Result<()> {
        let mut b = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .alias(alias)
            .up();
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(c) = controller {
            b = b.controller(c);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(io_err)
    }

    /// Creates macvtap `name` on `lower` with the guest's MAC, up. Fails when the name is
    /// taken. The kernel drops an ifalias given at creation: [`Netlink::configure`] sets it.
    pub async fn add_macvtap(
        &self,
        name: &str,
        lower: u32,
        mode: MacVtapMode,
        mac: [u8; 6],
    ) -> io::Result<LinkFacts> {
        let message = LinkMacVtap::new(name, lower, mode)
            .address(mac.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(io_err)?;
        self.by_name(name)
            .await?
            .ok_or_else(|| io::Error::other(format!("macvtap '{name}' vanished once made")))
    }

    /// Sets a link administratively up or down.
    pub async fn set_up(&self, index: u32, up: bool) -> io::Result<()> {
        let b = LinkUnspec::new_with_index(index);
        let b = if up { b.up() } else { b.down() };
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(io_err)
    }

    /// Deletes a link this daemon made a moment ago (before its marker was set), if it is
    /// still `name` at `index`.
    pub async fn delete_just_made(&self, name: &str, index: u32) -> io::Result<()> {
        match self.by_index(index).await? {
            Some(l) if l.name == name => self
                .handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(io_err),
            _ => Ok(()),
        }
    }

    /// Deletes the link `index` only if it is still `name` with ifalias `alias`: an index
    /// reused by someone else's interface, or a renamed link, is left alone. `Ok(false)`:
    /// nothing of ours was there.
    pub async fn delete_if_ours(&self, name: &str, index: u32, alias: &str) -> io::Result<bool> {
        let Some(link) = self.by_index(index).await? else {
            return Ok(false);
        };
        if link.name != name || link.alias.as_deref() != Some(alias) {
            return Ok(false);
        }
        match self
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(io_err)
        {
            Ok(()) => Ok(true),
            // Gone in between (a tap whose last holder just closed it).
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn not_found_is_none(
    found: Result<Option<LinkMessage>, rtnetlink::Error>,
) -> io::Result<Option<LinkFacts>> {
    match found.map_err(io_err) {
        Ok(m) => Ok(m.map(|m| facts(&m))),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn facts(m: &LinkMessage) -> LinkFacts {
    let mut f = LinkFacts {
        index: m.header.index,
        name: String::new(),
        mtu: None,
        alias: None,
        controller: None,
        address: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name = n.clone(),
            LinkAttribute::Mtu(v) => f.mtu = Some(*v),
            LinkAttribute::IfAlias(s) => f.alias = Some(s.clone()),
            LinkAttribute::Controller(c) => f.controller = Some(*c),
            LinkAttribute::Address(a) => f.address = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        f.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    f
}

/// libvirt's mode names to the kernel's.
pub fn macvtap_mode(mode: novacron_domain::model::MacvtapMode) -> MacVtapMode {
    use novacron_domain::model::MacvtapMode as M;
    match mode {
        M::Bridge => MacVtapMode::Bridge,
        M::Vepa => MacVtapMode::Vepa,
        M::Private => MacVtapMode::Private,
        M::Passthrough => MacVtapMode::Passthrough,
    }
}
