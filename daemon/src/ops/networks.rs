//! Virtual network operations (libvirt's net-*): define, undefine, start, destroy (stop),
//! autostart. Queries (list, info, dumpxml, leases) read the service directly, like the
//! domain queries. Defining and undefining change the host's address plan and may name host
//! bridges and NICs: administrators only; start/stop/autostart are an operator's.

use novacron_domain::network::NetworkConfig;
use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct NetDefine {
    pub config: NetworkConfig,
}

impl Operation for NetDefine {
    type Response = NetworkConfig;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::NET_DEFINE
    }
    fn target(&self) -> &str {
        &self.config.name
    }
    async fn local(self, svc: Service) -> Result<NetworkConfig, Error> {
        svc.networks().define(self.config).await
    }
}

#[derive(Debug, Clone)]
pub struct NetUndefine {
    pub network: String,
}

impl Operation for NetUndefine {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::NET_UNDEFINE
    }
    fn target(&self) -> &str {
        &self.network
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        let users = svc.network_users(&self.network);
        svc.networks().undefine(&self.network, &users).await
    }
}

#[derive(Debug, Clone)]
pub struct NetStart {
    pub network: String,
}

impl Operation for NetStart {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::NET_START
    }
    fn target(&self) -> &str {
        &self.network
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.networks().start(&self.network).await
    }
}

#[derive(Debug, Clone)]
pub struct NetDestroy {
    pub network: String,
}

impl Operation for NetDestroy {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::NET_DESTROY
    }
    fn target(&self) -> &str {
        &self.network
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.networks().stop(&self.network).await
    }
}

#[derive(Debug, Clone)]
pub struct NetAutostart {
    pub network: String,
    pub enabled: bool,
}

impl Operation for NetAutostart {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::NET_AUTOSTART
    }
    fn target(&self) -> &str {
        &self.network
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.networks()
            .set_autostart(&self.network, self.enabled)
            .await
    }
}
