//! Host mechanics of virtual networks: bridges (netlink), our nftables tables, dnsmasq,
//! the IPv4 forwarding switch and the foreign-firewall probe. Behaviour (what to do when)
//! lives in `service/network`.

pub mod dnsmasq;
pub mod firewall_probe;
pub mod net_qos;
pub mod netlink;
pub mod nft;
pub mod nic_rules;
pub mod qos;
pub mod sysctl;

#[cfg(test)]
mod golden_tests;
