//! `domifaddr`: a running guest's IP addresses per NIC, from the virtual networks' DHCP
//! leases (default, never waits on the guest) or from its agent (`source=agent`, bounded by
//! `timeout_secs`, as the agent operations).

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::agent::timeout_from_secs;
use crate::service::nics::addresses::{AddressSource, InterfaceAddresses};
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct DomIfAddr {
    pub domain: String,
    pub source: AddressSource,
    /// For the agent source; absent or 0: the agent's default deadline.
    pub timeout_secs: Option<u64>,
}

impl Operation for DomIfAddr {
    type Response = InterfaceAddresses;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DOMIFADDR
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        timeout_from_secs(self.timeout_secs).map(drop)
    }

    async fn local(self, svc: Service) -> Result<InterfaceAddresses, Error> {
        let t = timeout_from_secs(self.timeout_secs)?;
        svc.interface_addresses(&self.domain, self.source, t).await
    }
}
