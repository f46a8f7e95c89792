//! The local QEMU host behind the `Driver` trait that remote vendor adapters implement too.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use novacron_domain::{Capabilities, DomainInfo, DomainSummary, Driver, Error, ValidatedDomain};

use crate::{Service, ShutdownOptions};

#[async_trait]
impl Driver for Service {
    fn name(&self) -> &str {
        "qemu"
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let mut details = BTreeMap::new();
        details.insert(
            "emulator".to_owned(),
            self.config().emulator.display().to_string(),
        );
        details.insert(
            "kvm".to_owned(),
            match self.kvm_usable() {
                Ok(()) => "usable".to_owned(),
                Err(why) => why,
            },
        );
        Ok(Capabilities {
            driver: "qemu".to_owned(),
            define: true,
            suspend: true,
            reboot: true,
            migrate: false,
            details,
        })
    }

    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        Ok(Service::list(self))
    }

    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        Service::get(self, name)
    }

    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error> {
        Service::define(self, config.into_inner()).await
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        Service::undefine(self, name).await
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        Service::start(self, name).await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let options = ShutdownOptions {
            timeout: Some(timeout),
            force: false,
        };
        Service::shutdown(self, name, options).await
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        Service::destroy(self, name).await
    }

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        Service::suspend(self, name).await
    }

    async fn resume(&self, name: &str) -> Result<(), Error> {
        Service::resume(self, name).await
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        Service::reboot(self, name).await
    }
}
