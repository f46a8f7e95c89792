//! A running guest's IP addresses per NIC (virsh `domifaddr`), from the DHCP leases of the
//! daemon's virtual networks (`lease`: a file read, never waits on the guest) or from the
//! guest agent (`agent`: bounded by the caller's deadline). Domain info shows the leases.

use std::time::Duration;

use novacron_domain::{Error, FieldError};
use serde::{Deserialize, Serialize};

use super::super::domain::Run;
use super::super::Service;

/// Where the addresses come from (virsh `domifaddr --source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSource {
    #[default]
    Lease,
    Agent,
}

impl AddressSource {
    pub fn parse(s: &str) -> Result<AddressSource, Error> {
        match s {
            "lease" => Ok(AddressSource::Lease),
            "agent" => Ok(AddressSource::Agent),
            other => Err(Error::Invalid {
                message: format!("source: '{}' is not lease or agent", other.escape_debug()),
                details: vec![FieldError::new("source", "lease or agent")],
            }),
        }
    }
}

/// One address of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub address: String,
    pub prefix: u8,
}

/// One NIC (lease) or guest interface (agent) with its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddresses {
    /// The host link the daemon made (lease) or the guest's own name (agent), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The virtual network whose DHCP server leased the addresses (lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub addresses: Vec<IpAddress>,
}

/// What `domifaddr` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddresses {
    pub source: AddressSource,
    pub interfaces: Vec<NicAddresses>,
}

impl Service {
    /// The addresses of running guest `name`'s NICs from `source`; `timeout` bounds an agent
    /// call (leases are files and never wait).
    pub async fn interface_addresses(
        &self,
        name: &str,
        source: AddressSource,
        timeout: Duration,
    ) -> Result<InterfaceAddresses, Error> {
        let h = self.inner.handle(name)?;
        if !matches!(h.run(), Run::Up { .. }) {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "domifaddr",
            });
        }
        let interfaces = match source {
            AddressSource::Lease => self.leased_addresses(name).await?,
            AddressSource::Agent => self
                .agent_interfaces(name, timeout)
                .await?
                .into_iter()
                .map(|i| NicAddresses {
                    name: Some(i.name),
                    mac: i.hardware_address,
                    network: None,
                    addresses: i
                        .addresses
                        .into_iter()
                        .map(|a| IpAddress {
                            family: a.family,
                            address: a.address,
                            prefix: a.prefix,
                        })
                        .collect(),
                })
                .collect(),
        };
        Ok(InterfaceAddresses { source, interfaces })
    }

    /// Every NIC of the running guest (the started ones still plugged and the hot-added
    /// ones), each with the addresses the virtual networks' DHCP servers leased to its MAC
    /// (none for a NIC on a host bridge, or before the guest asked).
    pub async fn leased_addresses(&self, name: &str) -> Result<Vec<NicAddresses>, Error> {
        let nics = self.interfaces(name).await?;
        let macs = nics
            .iter()
            .filter_map(|n| super::hotplug::parse_mac(&n.mac).ok())
            .collect();
        let leases = self.inner.networks.addresses_of(macs).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(nics
            .into_iter()
            .map(|n| {
                let mine: Vec<_> = leases
                    .iter()
                    .filter(|(_, l)| {
                        l.mac.to_string() == n.mac && (l.expiry == 0 || l.expiry > now)
                    })
                    .collect();
                let network = mine.first().map(|(net, _)| net.clone());
                let addresses = mine
                    .iter()
                    .map(|(net, l)| IpAddress {
                        family: "ipv4".into(),
                        address: l.ip.to_string(),
                        prefix: self
                            .inner
                            .networks
                            .config(net)
                            .ok()
                            .and_then(|c| c.ip.map(|ip| ip.prefix))
                            .unwrap_or(32),
                    })
                    .collect();
                NicAddresses {
                    name: n.ifname,
                    mac: Some(n.mac),
                    network,
                    addresses,
                }
            })
            .collect())
    }
}
