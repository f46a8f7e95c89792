//! Remote vendor hosts: registering and forgetting them (administrators only).

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::remote::{HostView, Registration};
use crate::service::Service;

pub struct RegisterHost {
    pub registration: Registration,
}

impl Operation for RegisterHost {
    type Response = HostView;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::REGISTER_HOST
    }

    fn target(&self) -> &str {
        &self.registration.entry.name
    }

    async fn local(self, svc: Service) -> Result<HostView, Error> {
        svc.register_host(self.registration).await
    }
}

pub struct UnregisterHost {
    pub host: String,
}

impl Operation for UnregisterHost {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::UNREGISTER_HOST
    }

    fn target(&self) -> &str {
        &self.host
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.unregister_host(&self.host).await
    }
}
