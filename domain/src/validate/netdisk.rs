//! Network disks (`<disk type='network'>`) and virtio-net driver tuning.

use super::{Problem, V};
use crate::model::*;

/// Most hosts (rbd monitors) one network disk may list.
pub const MAX_NET_HOSTS: usize = 16;

/// Characters of a name that ends up in a URL or a QEMU option: printable ASCII, no spaces.
fn url_char(c: char) -> bool {
    c.is_ascii_graphic()
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')
}

/// `iqn.../LUN` as libvirt writes an iSCSI source name: the target and the LUN (default 0).
pub fn iscsi_target(name: &str) -> Option<(&str, u32)> {
    match name.rsplit_once('/') {
        Some((t, lun)) if !t.is_empty() => lun.parse().ok().map(|l| (t, l)),
        Some(_) => None,
        None if !name.is_empty() => Some((name, 0)),
        None => None,
    }
}

/// `pool/image` or `pool/namespace/image`.
pub fn rbd_parts(name: &str) -> Option<(&str, Option<&str>, &str)> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || name.contains('@') {
        return None;
    }
    match parts.as_slice() {
        [pool, image] => Some((pool, None, image)),
        [pool, ns, image] => Some((pool, Some(ns), image)),
        _ => None,
    }
}

pub(super) fn network_disk(v: &mut V, p: &str, disk: &Disk, n: &NetSource) {
    let readonly = disk.readonly || disk.device == DiskDevice::Cdrom;
    // The XML reader enforces these shapes; the JSON front-end reaches here unchecked.
    let rbd = n.protocol == NetProtocol::Rbd;
    let max_hosts = if rbd { MAX_NET_HOSTS } else { 1 };
    if n.hosts.is_empty() || n.hosts.len() > max_hosts {
        v.err(
            format!("{p}.source.hosts"),
            Problem::Inconsistent(format!(
                "a {} source names {} host{}",
                n.protocol.as_str(),
                if rbd { "1 to 16" } else { "exactly one" },
                if rbd { "s" } else { "" }
            )),
        );
    }
    if n.protocol != NetProtocol::Nbd {
        if n.name.is_none() {
            v.err(format!("{p}.source.name"), Problem::Empty);
        }
        if n.hosts.iter().any(|h| matches!(h, NetHost::Unix { .. })) {
            v.err(
                format!("{p}.source.hosts"),
                Problem::Unsupported(format!(
                    "a unix socket for {} (nbd only)",
                    n.protocol.as_str()
                )),
            );
        }
    }
    if let Some(name) = &n.name {
        v.token(
            format!("{p}.source.name"),
            name,
            1024,
            "printable ASCII without spaces",
            url_char,
        );
        match n.protocol {
            NetProtocol::Iscsi if iscsi_target(name).is_none() => v.err(
                format!("{p}.source.name"),
                Problem::Inconsistent(format!("'{name}' is not an iSCSI 'target/lun' name")),
            ),
            NetProtocol::Rbd if rbd_parts(name).is_none() => v.err(
                format!("{p}.source.name"),
                Problem::Inconsistent(format!(
                    "'{name}' is not an rbd 'pool/image' or 'pool/namespace/image' name"
                )),
            ),
            _ => {}
        }
    }
    for (j, h) in n.hosts.iter().enumerate() {
        let hp = format!("{p}.source.hosts[{j}]");
        match h {
            NetHost::Tcp { name, port } => {
                v.token(
                    format!("{hp}.name"),
                    name,
                    253,
                    "ASCII letters, digits, '.', '-', '_', ':'",
                    host_char,
                );
                if let Some(port) = port {
                    v.range(format!("{hp}.port"), *port, 1, 65535);
                }
            }
            NetHost::Unix { socket } => v.path(format!("{hp}.socket"), socket),
        }
    }
    // QEMU's curl driver cannot write.
    if matches!(n.protocol, NetProtocol::Http | NetProtocol::Https) && !readonly {
        v.err(
            format!("{p}.readonly"),
            Problem::Unsupported(format!(
                "a writable {} disk (QEMU reads HTTP images only; add <readonly/>)",
                n.protocol.as_str()
            )),
        );
    }
    // aio= is a property of QEMU's file driver.
    if disk.driver.io.is_some() {
        v.err(
            format!("{p}.driver.io"),
            Problem::Unsupported("io mode on a network disk".into()),
        );
    }
}

/// Valid virtio ring sizes (QEMU: a power of two in 256..=1024).
fn ring_size(v: &mut V, path: String, size: u32) {
    if !(256..=1024).contains(&size) || !size.is_power_of_two() {
        v.err(
            path,
            Problem::Inconsistent(format!("{size} is not 256, 512 or 1024")),
        );
    }
}

pub(super) fn nic_driver(v: &mut V, p: &str, nic: &Interface) {
    let Some(dr) = &nic.driver else { return };
    if nic.model != NicModel::Virtio {
        v.err(
            format!("{p}.driver"),
            Problem::Unsupported(format!(
                "driver settings on a {} NIC (virtio only)",
                nic.model.as_str()
            )),
        );
    }
    if let Some(q) = dr.queues {
        // Which sources may have several is checked with the host side (nic_host).
        v.range(format!("{p}.driver.queues"), q, 1, 256);
    }
    if let Some(s) = dr.rx_queue_size {
        ring_size(v, format!("{p}.driver.rx_queue_size"), s);
    }
    if let Some(s) = dr.tx_queue_size {
        ring_size(v, format!("{p}.driver.tx_queue_size"), s);
    }
}
