//! The local QEMU host behind the `Driver` trait that remote vendor adapters implement too.
//! Every change goes through the operation executor, audited as whoever is calling (the
//! daemon itself outside a request), like any face.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use novacron_domain::{
    Capabilities, DomainInfo, DomainSummary, Driver, Error, MigrationTarget, ValidatedDomain,
};

use crate::ops::define::{Define, Undefine};
use crate::ops::lifecycle::{Kind, Lifecycle, ShutdownRequest};
use crate::ops::{Executor, Operation, Target};
use crate::service::audit;
use crate::Service;

impl Service {
    async fn through_ops<O: Operation<Failure = Error>>(
        &self,
        op: O,
    ) -> Result<O::Response, Error> {
        Executor::new(self.clone())
            .run(audit::current(), Target::Local, op)
            .await
    }

    async fn lifecycle(&self, op: Lifecycle) -> Result<(), Error> {
        self.through_ops(op).await.map(drop)
    }
}

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
            // Live migration to another novacrond (`POST /v1/domains/{name}/migrate`).
            migrate: true,
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
        match self.through_ops(Define::new(config.into_inner())).await? {
            crate::ops::define::Defined::Done { status, .. } => Ok(DomainSummary {
                name: status.name,
                uuid: status.uuid,
                state: status.state,
            }),
            crate::ops::define::Defined::Checked(_) => {
                Err(Error::Internal("a define answered as a dry run".into()))
            }
        }
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        self.through_ops(Undefine {
            domain: name.to_owned(),
        })
        .await
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(Lifecycle::new(Kind::Start, name)).await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let request = ShutdownRequest {
            // At least a second: 0 would mean "the configured default".
            timeout_secs: Some(timeout.as_secs().max(1)),
            force: false,
            ..Default::default()
        };
        self.lifecycle(Lifecycle::shutdown(name, request)).await
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(Lifecycle::new(Kind::Destroy, name)).await
    }

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(Lifecycle::new(Kind::Suspend, name)).await
    }

    async fn resume(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(Lifecycle::new(Kind::Resume, name)).await
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(Lifecycle::new(Kind::Reboot, name)).await
    }

    /// Live migration to the novacrond at `target.uri` (`http(s)://host:port`), waiting for
    /// the outcome (the service audits the migration).
    async fn migrate(&self, name: &str, target: &MigrationTarget) -> Result<(), Error> {
        let request = crate::service::migration::MigrateRequest {
            destination: target.uri.clone(),
            token: None,
            destination_ca: None,
            options: Default::default(),
            keep_source_definition: false,
        };
        let progress = Service::migrate(self, name, request, true).await?;
        match progress.phase {
            crate::service::migration::Phase::Completed => Ok(()),
            phase => Err(Error::Internal(format!(
                "migration of '{name}' ended {}",
                phase.as_str()
            ))),
        }
    }
}
