//! Autostart: mark a domain to start with the host, and the daemon's own start of the marked
//! ones after a host boot (audited as the daemon's, through the executor like any start).

use std::borrow::Cow;

use novacron_domain::Error;

use super::lifecycle::{Kind, Lifecycle};
use super::{table, Executor, OpInfo, Operation, Target};
use crate::service::audit::Actor;
use crate::service::status::DomainStatus;
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct SetAutostart {
    pub domain: String,
    pub enabled: bool,
}

impl Operation for SetAutostart {
    type Response = DomainStatus;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::AUTOSTART
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(if self.enabled {
            "autostart-on"
        } else {
            "autostart-off"
        })
    }

    async fn local(self, svc: Service) -> Result<DomainStatus, Error> {
        svc.set_autostart(&self.domain, self.enabled).await?;
        svc.status(&self.domain)
    }
}

/// Starts every autostart domain that is off, the first time the daemon runs after a host
/// boot. Returns the domains it started; failures are logged (and audited) and skipped.
pub async fn run(executor: &Executor) -> Vec<String> {
    let Some(due) = executor.service().autostart_due() else {
        return Vec::new();
    };
    let mut started = Vec::new();
    for name in due {
        let start = Lifecycle::new(Kind::Start, name.clone());
        match executor.run(Actor::daemon(), Target::Local, start).await {
            Ok(_) => started.push(name),
            Err(e) => tracing::error!(domain = %name, error = %e, "autostart failed"),
        }
    }
    executor.service().autostart_done().await;
    started
}
