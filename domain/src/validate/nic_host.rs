//! The host side of a NIC: the link name asked for (`<target dev>`), its access VLAN
//! (`<vlan><tag>`), and queues on a tap.

use std::collections::BTreeMap;

use super::devices::dev_name;
use super::{Problem, V};
use crate::model::{Interface, InterfaceSource};

/// Names the kernel reserves or that only a running guest shows (libvirt's live XML).
const RESERVED: [&str; 3] = [".", "..", "lo"];

/// Queues of one tap-backed NIC. Each queue is a tap descriptor (plus a vhost-net one) the
/// daemon opens before QEMU starts, so a definition must not ask for thousands.
pub const MAX_TAP_QUEUES: u32 = 16;

/// Queues of all tap-backed NICs of a domain together (two descriptors each at most: well
/// under what a QEMU may inherit).
pub const MAX_DOMAIN_TAP_QUEUES: u32 = 64;

/// The sum of the tap-backed NICs' queues, checked against [`MAX_DOMAIN_TAP_QUEUES`].
pub(super) fn total_queues(v: &mut V, nics: &[Interface]) {
    let total: u32 = nics
        .iter()
        .filter(|n| tap_backed(n))
        .map(|n| n.driver.as_ref().and_then(|d| d.queues).unwrap_or(1).max(1))
        .fold(0u32, u32::saturating_add);
    if total > MAX_DOMAIN_TAP_QUEUES {
        v.err(
            "devices.interfaces".to_owned(),
            Problem::Inconsistent(format!(
                "{total} tap queues in all (each is a host descriptor); at most \
                 {MAX_DOMAIN_TAP_QUEUES} per domain"
            )),
        );
    }
}

fn tap_backed(nic: &Interface) -> bool {
    matches!(
        nic.source,
        InterfaceSource::Bridge { .. }
            | InterfaceSource::Network { .. }
            | InterfaceSource::Direct { .. }
    )
}

pub(super) fn check<'a>(
    v: &mut V,
    p: &str,
    i: usize,
    nic: &'a Interface,
    names: &mut BTreeMap<&'a str, usize>,
) {
    let tap_like = matches!(
        nic.source,
        InterfaceSource::Bridge { .. }
            | InterfaceSource::Network { .. }
            | InterfaceSource::Direct { .. }
    );
    if let Some(dev) = &nic.target_dev {
        let path = format!("{p}.target_dev");
        dev_name(v, path.clone(), dev);
        if RESERVED.contains(&dev.as_str()) {
            v.err(
                path.clone(),
                Problem::Inconsistent(format!("'{dev}' is a reserved interface name")),
            );
        }
        if crate::model::generated_link_name(dev) {
            v.err(
                path.clone(),
                Problem::Inconsistent(format!(
                    "'{dev}' starts with a prefix reserved for generated names (vnet, macvtap, \
                     macvlan, as libvirt); choose another name or leave it out"
                )),
            );
        }
        if !tap_like {
            v.err(
                path.clone(),
                Problem::Unsupported(
                    "a host link name on a NIC without a host link (bridge, network and direct \
                     NICs have one)"
                        .into(),
                ),
            );
        }
        if let Some(prev) = names.insert(dev.as_str(), i) {
            v.err(
                path,
                Problem::Duplicate(format!(
                    "host link name '{dev}' (also devices.interfaces[{prev}])"
                )),
            );
        }
    }
    if let Some(id) = nic.vlan {
        let path = format!("{p}.vlan");
        // 0 means "no VLAN" on the wire and 4095 is reserved.
        v.range(path.clone(), id, 1, 4094);
        if !matches!(
            nic.source,
            InterfaceSource::Bridge { .. } | InterfaceSource::Network { .. }
        ) {
            v.err(
                path,
                Problem::Unsupported(
                    "a VLAN tag on a NIC that is not a bridge port (bridge and network NICs)"
                        .into(),
                ),
            );
        }
    }
    if let Some(q) = nic.driver.as_ref().and_then(|d| d.queues) {
        if tap_backed(nic) {
            v.range(format!("{p}.driver.queues"), q, 1, MAX_TAP_QUEUES);
        }
    }
    // Multi-queue needs taps (one per queue) or vhost-user; slirp has one queue.
    if let (Some(q), InterfaceSource::User) =
        (nic.driver.as_ref().and_then(|d| d.queues), &nic.source)
    {
        if q > 1 {
            v.err(
                format!("{p}.driver.queues"),
                Problem::Unsupported(
                    "more than one queue on a user-mode NIC (bridge, network, direct and \
                     vhost-user NICs may have queues)"
                        .into(),
                ),
            );
        }
    }
}
