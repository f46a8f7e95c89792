//! Making one NIC's host link: a tap on a bridge, or a macvtap on a host NIC.

use std::os::fd::OwnedFd;

use novacron_domain::model::{Interface, NicBackend, NicModel};
use novacron_domain::{Error, FieldError};

use super::ledger::{LinkKind, MadeLink};
use super::Attachment;
use crate::host::taps::{self, link::Netlink};

const SYS_CLASS_NET: &str = "/sys/class/net";
const DEV: &str = "/dev";

fn invalid(path: String, message: String) -> Error {
    Error::Invalid {
        message: format!("{path}: {message}"),
        details: vec![FieldError::new(path, message)],
    }
}

fn host_err(what: &str, name: &str, e: std::io::Error) -> Error {
    Error::Internal(format!("cannot {what} '{name}': {e}"))
}

/// What the tap's host side is called on the bridge: the guest MAC with the first byte 0xFE
/// (as libvirt): a bridge takes the lowest port MAC as its own, and 0xFE keeps a guest's
/// address from becoming the bridge's.
pub fn host_side_mac(guest: [u8; 6]) -> [u8; 6] {
    let mut m = guest;
    m[0] = 0xfe;
    m
}

/// A macvtap's name: the one `<target dev>` asks for when no interface has it yet (a taken
/// name is refused, never reused: it may be someone else's), else a generated one. (A tap
/// needs no lookup first: its exclusive create refuses a taken name, see [`tap_names`].)
async fn macvtap_name(
    nl: &Netlink,
    field: &str,
    nic: &Interface,
    uuid: &[u8; 16],
    slot: u32,
) -> Result<String, Error> {
    let Some(dev) = &nic.target_dev else {
        // The generated name may be taken on this host by a link of the same guest that
        // another daemon made: the source's during a migration between two daemons of one
        // host. Then a variant (the create still refuses a name taken meanwhile).
        for variant in 0..16 {
            let name = taps::names::generated_variant(uuid, true, slot, variant);
            let taken = nl
                .by_name(&name)
                .await
                .map_err(|e| host_err("look up interface", &name, e))?
                .is_some();
            if !taken {
                return Ok(name);
            }
        }
        return Ok(taps::names::generated(uuid, true, slot));
    };
    let path = format!("{field}.target_dev");
    taps::names::check(dev).map_err(|e| invalid(path.clone(), e.to_string()))?;
    if nl
        .by_name(dev)
        .await
        .map_err(|e| host_err("look up interface", dev, e))?
        .is_some()
    {
        return Err(invalid(
            path,
            format!("interface '{dev}' already exists on this host"),
        ));
    }
    Ok(dev.clone())
}

/// For `<vlan>`: the bridge's default PVID, once it is known the bridge filters VLANs. A
/// bridge that does not would forward the guest's frames to every port whatever the tag,
/// so the NIC is refused instead (the daemon never reconfigures a host bridge).
async fn vlan_default(
    nl: &Netlink,
    field: &str,
    bridge: &taps::link::LinkFacts,
) -> Result<u16, Error> {
    let (filtering, default) = nl
        .bridge_vlan_facts(bridge.index)
        .await
        .map_err(|e| host_err("read the VLAN settings of bridge", &bridge.name, e))?;
    if !filtering {
        return Err(invalid(
            format!("{field}.vlan"),
            format!(
                "bridge '{0}' does not filter VLANs, so a VLAN tag cannot be applied; turn \
                 filtering on with 'ip link set {0} type bridge vlan_filtering 1'",
                bridge.name
            ),
        ));
    }
    Ok(default)
}

/// Makes the link for NIC `index` (`devices.interfaces[index]`, QEMU ids `hostnet<slot>` /
/// `net<slot>`) of `domain` and opens its descriptors: the tap/macvtap queues, and vhost-net
/// for a virtio NIC where the host has it. The link carries the domain's marker.
pub async fn make_link(
    nl: &Netlink,
    domain: &str,
    uuid: &[u8; 16],
    slot: u32,
    index: usize,
    nic: &Interface,
    attachment: &Attachment,
) -> Result<(MadeLink, Vec<OwnedFd>, Option<Vec<OwnedFd>>), Error> {
    let field = format!("devices.interfaces[{index}]");
    let mac = nic
        .mac
        .ok_or_else(|| invalid(format!("{field}.mac"), "no MAC address assigned".into()))?;
    let queues = nic.driver.as_ref().and_then(|d| d.queues).unwrap_or(1);
    let alias = taps::marker_for(domain);
    let (link, fds, vhost) = match attachment {
        Attachment::Bridge { bridge, isolated } => {
            taps::names::check(bridge)
                .map_err(|e| invalid(format!("{field}.source.bridge"), e.to_string()))?;
            let br = nl
                .by_name(bridge)
                .await
                .map_err(|e| host_err("look up bridge", bridge, e))?
                .filter(|l| l.kind.as_deref() == Some("bridge"))
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.source.bridge"),
                        format!("no bridge '{bridge}' on this host"),
                    )
                })?;
            let vlan = match nic.vlan {
                Some(vid) => Some((vid, vlan_default(nl, &field, &br).await?)),
                None => None,
            };
            let names = tap_names(&field, nic, uuid, slot)?;
            let first = names[0].clone();
            let want_vhost = wants_vhost(nic);
            let opened = tokio::task::spawn_blocking(move || open_tap(&names, queues, want_vhost))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            let OpenedTap {
                ifname,
                ifindex,
                fds,
                vhost,
            } = match opened {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(match nic.target_dev {
                        Some(_) => invalid(
                            format!("{field}.target_dev"),
                            format!("interface '{first}' already exists on this host"),
                        ),
                        None => host_err("create tap", &first, e),
                    });
                }
                Err(e) => return Err(host_err("create tap", &first, e)),
            };
            let made = async {
                // Without an explicit <mtu>, the tap takes the bridge's, as libvirt does.
                let mtu = nic.mtu.or(br.mtu);
                nl.configure(ifindex, host_side_mac(mac.0), mtu, Some(br.index), &alias)
                    .await?;
                if let Some((vid, default)) = vlan {
                    nl.set_access_vlan(ifindex, vid, default).await?;
                }
                if *isolated || nic.port_isolated {
                    // Guests on an isolated-ports network reach the gateway, not each other.
                    crate::host::net::netlink::Netlink::connect()
                        .map_err(std::io::Error::other)?
                        .set_port_isolated(ifindex, true)
                        .await
                        .map_err(std::io::Error::other)?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            if let Err(e) = made {
                // Dropping `fds` removes the non-persistent tap.
                return Err(host_err("set up tap", &ifname, e));
            }
            // Filter and limits before QEMU has the tap (dropping `fds` on error removes
            // the tap and its qdiscs; `apply` removes its own table).
            super::qos::apply(&ifname, mac.0, nic).await?;
            (
                MadeLink {
                    ifname,
                    ifindex,
                    kind: LinkKind::Tap,
                    mac: mac.to_string(),
                    netdev: format!("hostnet{slot}"),
                    device: format!("net{slot}"),
                    bridge: Some(bridge.clone()),
                    hotplugged: None,
                    link_down: nic.link_down,
                    tuned: None,
                },
                fds,
                vhost,
            )
        }
        Attachment::Direct { dev, mode } => {
            // A network of macvtaps: no bridge port, and a macvtap's directions differ.
            if nic.bandwidth.is_some() || nic.filterref.is_some() || nic.port_isolated {
                return Err(invalid(
                    field.clone(),
                    format!(
                        "bandwidth, filterref and port isolation need a tap on a bridge; \
                         '{dev}' gives this NIC a macvtap"
                    ),
                ));
            }
            taps::names::check(dev)
                .map_err(|e| invalid(format!("{field}.source.dev"), e.to_string()))?;
            let lower = nl
                .by_name(dev)
                .await
                .map_err(|e| host_err("look up device", dev, e))?
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.source.dev"),
                        format!("no network device '{dev}' on this host"),
                    )
                })?;
            let ifname = macvtap_name(nl, &field, nic, uuid, slot).await?;
            let link = nl
                .add_macvtap(&ifname, lower.index, taps::link::macvtap_mode(*mode), mac.0)
                .await
                .map_err(|e| host_err("create macvtap", &ifname, e))?;
            let opened = async {
                // The kernel ignores IFLA_IFALIAS on a new link: the marker is set here.
                nl.configure(link.index, mac.0, nic.mtu, None, &alias)
                    .await?;
                let (name, index) = (ifname.clone(), link.index);
                let want_vhost = wants_vhost(nic);
                tokio::task::spawn_blocking(move || {
                    let fds = taps::macvtap::open(
                        SYS_CLASS_NET.as_ref(),
                        DEV.as_ref(),
                        &name,
                        index,
                        queues,
                    )?;
                    Ok::<_, std::io::Error>((fds, open_vhost(want_vhost, queues)))
                })
                .await
                .map_err(std::io::Error::other)?
            }
            .await;
            let (fds, vhost) = match opened {
                Ok(f) => f,
                Err(e) => {
                    let _ = nl.delete_just_made(&ifname, link.index).await;
                    return Err(host_err("open macvtap", &ifname, e));
                }
            };
            (
                MadeLink {
                    ifname,
                    ifindex: link.index,
                    kind: LinkKind::Macvtap,
                    mac: mac.to_string(),
                    netdev: format!("hostnet{slot}"),
                    device: format!("net{slot}"),
                    bridge: None,
                    hotplugged: None,
                    link_down: nic.link_down,
                    tuned: None,
                },
                fds,
                vhost,
            )
        }
    };
    Ok((link, fds, vhost))
}

/// Whether `nic` gets vhost-net where the host has it: a virtio NIC not asked to run in QEMU.
fn wants_vhost(nic: &Interface) -> bool {
    let userspace = nic
        .driver
        .as_ref()
        .is_some_and(|d| d.name == Some(NicBackend::Qemu));
    nic.model == NicModel::Virtio && !userspace
}

/// vhost-net descriptors when wanted and the host has it. Blocking.
fn open_vhost(want: bool, queues: u32) -> Option<Vec<OwnedFd>> {
    if want {
        taps::vhost::open(queues)
    } else {
        None
    }
}

/// The names a NIC's tap may take, in order: the one `<target dev>` asks for, else the
/// generated one and its variants. The generated name may be taken on this host by a link
/// of the same guest that another daemon made (the source's, during a migration between two
/// daemons of one host); the exclusive create refuses a taken name, so no lookup goes first.
fn tap_names(
    field: &str,
    nic: &Interface,
    uuid: &[u8; 16],
    slot: u32,
) -> Result<Vec<String>, Error> {
    match &nic.target_dev {
        Some(dev) => {
            taps::names::check(dev)
                .map_err(|e| invalid(format!("{field}.target_dev"), e.to_string()))?;
            Ok(vec![dev.clone()])
        }
        None => Ok((0..16)
            .map(|v| taps::names::generated_variant(uuid, false, slot, v))
            .collect()),
    }
}

/// A tap made by the daemon: its name and index, a descriptor per queue, and vhost-net's.
struct OpenedTap {
    ifname: String,
    ifindex: u32,
    fds: Vec<OwnedFd>,
    vhost: Option<Vec<OwnedFd>>,
}

/// Creates the tap under the first of `names` no interface has, reads its index and opens
/// vhost-net: one trip to the blocking pool. `AlreadyExists` when every name is taken.
/// Blocking.
fn open_tap(names: &[String], queues: u32, want_vhost: bool) -> std::io::Result<OpenedTap> {
    let mut taken = None;
    for name in names {
        match taps::tun::create(name, queues) {
            Ok(fds) => {
                // The tap lives as long as `fds`, so the name still is this tap.
                let ifindex = nix::net::if_::if_nametoindex(name.as_str())?;
                return Ok(OpenedTap {
                    ifname: name.clone(),
                    ifindex,
                    fds,
                    vhost: open_vhost(want_vhost, queues),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => taken = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(taken.unwrap_or_else(|| std::io::Error::other("no name to create the tap under")))
}
