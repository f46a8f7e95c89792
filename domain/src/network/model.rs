//! The virtual network model (libvirt's `<network>`), shared by the XML and JSON front-ends.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::ids::{MacAddr, Uuid};
use crate::model::Bandwidth;

/// One virtual network definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    #[serde(default)]
    pub uuid: Option<Uuid>,
    pub forward: Forward,
    /// Our bridge (nat/route/isolated; named by the daemon when absent) or an existing host
    /// bridge (`forward mode='bridge'`).
    #[serde(default)]
    pub bridge: Option<Bridge>,
    /// The bridge's own MAC.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The IPv4 subnet, the gateway address on the bridge and DHCP.
    #[serde(default)]
    pub ip: Option<IpConfig>,
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Guests on this network cannot reach each other (libvirt `<port isolated='yes'/>`).
    #[serde(default)]
    pub isolated_ports: bool,
    /// The network's own limits (libvirt's network-wide `<bandwidth>`), on our bridge: the
    /// total of all its guests together, `inbound` towards them and `outbound` from them (the
    /// guests' point of view, as a NIC's). Managed kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMode {
    /// Our bridge, masquerade to the host's uplinks.
    Nat,
    /// Our bridge, routed without NAT.
    Route,
    /// Our bridge, no forwarding at all (libvirt: no `<forward>` element).
    Isolated,
    /// An existing host bridge (with `<bridge name>`), or macvtap bridge mode on `interfaces`.
    Bridge,
    /// macvtap modes on `interfaces`.
    Private,
    Vepa,
    Passthrough,
}

impl ForwardMode {
    pub const ALL: &'static [(&'static str, ForwardMode)] = &[
        ("nat", Self::Nat),
        ("route", Self::Route),
        ("bridge", Self::Bridge),
        ("private", Self::Private),
        ("vepa", Self::Vepa),
        ("passthrough", Self::Passthrough),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::Route => "route",
            Self::Isolated => "isolated",
            Self::Bridge => "bridge",
            Self::Private => "private",
            Self::Vepa => "vepa",
            Self::Passthrough => "passthrough",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Forward {
    pub mode: ForwardMode,
    /// `forward@dev`: the uplink that nat/route traffic must leave by.
    #[serde(default)]
    pub dev: Option<String>,
    /// `forward/interface@dev`: the host NICs macvtap modes sit on.
    #[serde(default)]
    pub interfaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    #[serde(default = "default_true")]
    pub stp: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct IpConfig {
    /// The gateway address, put on the bridge.
    pub address: Ipv4Addr,
    pub prefix: u8,
    #[serde(default)]
    pub dhcp: Option<Dhcp>,
}

impl IpConfig {
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix))
    }
    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & prefix_mask(self.prefix))
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let m = prefix_mask(self.prefix);
        u32::from(a) & m == u32::from(self.address) & m
    }
}

/// Mask of a prefix length (0..=32; larger reads as 32).
pub fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Dhcp {
    #[serde(default)]
    pub ranges: Vec<DhcpRange>,
    /// Static leases by MAC.
    #[serde(default)]
    pub hosts: Vec<DhcpHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DhcpHost {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Dns {
    /// `false`: dnsmasq serves DHCP only (port=0).
    #[serde(default = "default_true")]
    pub enable: bool,
    /// Local domain handed out by DHCP and answered locally.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub forwarders: Vec<Ipv4Addr>,
    #[serde(default)]
    pub hosts: Vec<DnsHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DnsHost {
    pub ip: Ipv4Addr,
    pub hostnames: Vec<String>,
}

/// What the host layer does for a network, derived from the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind<'a> {
    /// Our own bridge; `forward` nat/route/isolated.
    Managed(ForwardMode),
    /// An existing host bridge: nothing is created.
    HostBridge(&'a str),
    /// macvtap on a host NIC (the taps code makes the macvtap).
    Direct { dev: &'a str, mode: ForwardMode },
}

impl NetworkConfig {
    pub fn kind(&self) -> NetworkKind<'_> {
        match self.forward.mode {
            m @ (ForwardMode::Nat | ForwardMode::Route | ForwardMode::Isolated) => {
                NetworkKind::Managed(m)
            }
            ForwardMode::Bridge if self.bridge.is_some() => {
                NetworkKind::HostBridge(self.bridge.as_ref().map_or("", |b| b.name.as_str()))
            }
            mode => NetworkKind::Direct {
                dev: self.forward.interfaces.first().map_or("", String::as_str),
                mode,
            },
        }
    }

    /// Whether the daemon makes the bridge (and so its rules and dnsmasq).
    pub fn is_managed(&self) -> bool {
        matches!(self.kind(), NetworkKind::Managed(_))
    }
}
