//! Define (persistent), create (transient, started at once) and undefine.

use std::borrow::Cow;

use novacron_domain::{DomainConfig, Error};

use super::{table, OpInfo, Operation};
use crate::service::dry_run::Checked;
use crate::service::status::DomainStatus;
use crate::service::Service;

/// Defines (or redefines) a persistent domain; with `dry_run`, only checks it (parse,
/// validation, storage-root admission for the caller, the QEMU command line) and defines
/// nothing.
#[derive(Debug, Clone)]
pub struct Define {
    pub config: DomainConfig,
    pub dry_run: bool,
}

impl Define {
    pub fn new(config: DomainConfig) -> Define {
        Define {
            config,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Defined {
    /// The domain as defined; `created` is false when an existing definition was replaced.
    Done { status: DomainStatus, created: bool },
    /// A dry run: what a define would do.
    Checked(Box<Checked>),
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

    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(if self.dry_run {
            "define-validate"
        } else {
            "define"
        })
    }

    async fn local(self, svc: Service) -> Result<Defined, Error> {
        if self.dry_run {
            let checked = svc.check_definition(self.config).await?;
            return Ok(Defined::Checked(Box::new(checked)));
        }
        let existed = svc.status(&self.config.name).is_ok();
        let summary = svc.define(self.config).await?;
        Ok(Defined::Done {
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
