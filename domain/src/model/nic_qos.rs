//! Per-NIC quality of service and traffic filtering, as libvirt's `<interface>` children
//! `<bandwidth>`, `<filterref>` and `<port isolated=...>`. The host side applies them to the
//! tap the daemon makes (tc for rates, our own nftables table for the filter).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// `<bandwidth>`: `inbound` is traffic TO the guest, `outbound` traffic FROM the guest (the
/// guest's point of view, as libvirt).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<BandwidthRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<BandwidthRate>,
}

/// One direction's limit, in libvirt's units, handed to tc as libvirt does: rates in
/// kilobytes per second (tc's `kbps`: 1000 bytes/s), bursts in kibibytes (tc's `kb`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct BandwidthRate {
    /// The long-term rate (kB/s). Required by libvirt, and here.
    pub average: u64,
    /// The most the rate may reach while a burst lasts (kB/s); inbound only here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    /// How much may pass at `peak` (KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// The one filter NovaCron implements: libvirt's `clean-traffic` (no MAC, IP or ARP spoofing,
/// no other layer-2 protocol than IPv4, ARP and RARP from the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficFilter {
    CleanTraffic,
}

impl TrafficFilter {
    pub const ALL: [TrafficFilter; 1] = [Self::CleanTraffic];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CleanTraffic => "clean-traffic",
        }
    }
}

/// `<filterref filter='clean-traffic'><parameter name='IP' value='...'/></filterref>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct FilterRef {
    pub filter: TrafficFilter,
    /// The guest's IPv4 source addresses (libvirt's `IP` parameter, repeatable). Empty: the
    /// address is learned from the DHCP server's answers to the guest (and a static
    /// `<host mac= ip=>` entry of its network is allowed from the start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Ipv4Addr>,
}
