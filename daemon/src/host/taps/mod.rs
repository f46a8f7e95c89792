//! Taps and macvtaps the daemon makes for guests' NICs: the tun/tap character device
//! (`TUNSETIFF`), macvtap character devices (`/dev/tap<ifindex>`), vhost-net, and the netlink
//! calls (rtnetlink) that configure the links. No `ip` subprocesses.
//!
//! Every link made here carries [`MARKER`] as its ifalias: with the ifname and ifindex kept in
//! the guest's NIC ledger, it is what lets the daemon delete a link and be sure it made it.

pub mod link;
pub mod macvtap;
pub mod names;
pub mod tun;
pub mod vhost;
pub mod vlan;

/// The ifalias prefix of every link the daemon makes (`novacron:<domain>`).
pub const MARKER: &str = "novacron:";

/// The ifalias a guest's links carry.
pub fn marker_for(domain: &str) -> String {
    format!("{MARKER}{domain}")
}
