//! Define (persistent), create (transient, started at once) and undefine.

use novacron_domain::{DomainConfig, Error};

use super::{table, OpInfo, Operation};
use crate::service::status::DomainStatus;
use crate::service::Service;

/// Defines (or redefines) a persistent domain.
#[derive(Debug, Clone)]
pub struct Define {
    pub config: DomainConfig,
}

/// The domain as defined; `created` is false when an existing definition was replaced.
#[derive(Debug, Clone)]
pub struct Defined {
    pub status: DomainStatus,
    pub created: bool,
}

impl Operation for Define {
    type Response = Defined;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DEFINE
    }

    fn target(&self) -> &str {
        &self.config.name
    }

    async fn local(self, svc: Service) -> Result<Defined, Error> {
        let existed = svc.status(&self.config.name).is_ok();
        let summary = svc.define(self.config).await?;
        Ok(Defined {
            status: svc.status(&summary.name)?,
            created: !existed,
        })
    }
}

/// Creates and starts a transient domain.
#[derive(Debug, Clone)]
pub struct Create {
    pub config: DomainConfig,
}

impl Operation for Create {
    type Response = DomainStatus;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::CREATE
    }

    fn target(&self) -> &str {
        &self.config.name
    }

    async fn local(self, svc: Service) -> Result<DomainStatus, Error> {
        let summary = svc.create(self.config).await?;
        svc.status(&summary.name)
    }
}

/// Removes a persistent definition (a running domain keeps running, as transient).
#[derive(Debug, Clone)]
pub struct Undefine {
    pub domain: String,
}

impl Operation for Undefine {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::UNDEFINE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.undefine(&self.domain).await
    }

    /// The vendor's own undefine, where its driver has one.
    async fn remote(self, svc: Service, host: String) -> Result<(), Error> {
        svc.remote_target(&host)?.undefine(&self.domain).await
    }
}
