//! Start, shutdown, destroy, suspend, resume, reboot, reset: on a local domain or on a remote
//! vendor host's VM. One type for the family: the kind picks the row of the table.

use std::time::Duration;

use novacron_domain::{DomainInfo, Error};
use serde::{Deserialize, Serialize};

use super::table;
use super::{OpInfo, Operation};
use crate::service::status::DomainStatus;
use crate::service::{Service, ShutdownMode, ShutdownOptions};

/// Which lifecycle operation (the path segment, the D-Bus member, the novactl subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Start,
    Shutdown,
    Destroy,
    Suspend,
    Resume,
    Reboot,
    Reset,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Start,
        Kind::Shutdown,
        Kind::Destroy,
        Kind::Suspend,
        Kind::Resume,
        Kind::Reboot,
        Kind::Reset,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Shutdown => "shutdown",
            Kind::Destroy => "destroy",
            Kind::Suspend => "suspend",
            Kind::Resume => "resume",
            Kind::Reboot => "reboot",
            Kind::Reset => "reset",
        }
    }

    pub fn info(self) -> &'static OpInfo {
        match self {
            Kind::Start => &table::START,
            Kind::Shutdown => &table::SHUTDOWN,
            Kind::Destroy => &table::DESTROY,
            Kind::Suspend => &table::SUSPEND,
            Kind::Resume => &table::RESUME,
            Kind::Reboot => &table::REBOOT,
            Kind::Reset => &table::RESET,
        }
    }
}

/// Longest graceful shutdown wait a caller may ask for (a day), local or remote.
pub const MAX_SHUTDOWN: Duration = Duration::from_secs(24 * 3600);

/// The shutdown request body (`{"timeout_secs", "force"}`); empty for the other kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// Absent or 0: the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Destroy the guest if it has not powered off in time (local domains only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Who is asked: `acpi` (the power button; absent) or `agent` (local domains only).
    #[serde(default, skip_serializing_if = "ShutdownMode::is_acpi")]
    pub mode: ShutdownMode,
}

/// One lifecycle call.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub kind: Kind,
    pub domain: String,
    pub shutdown: ShutdownRequest,
}

impl Lifecycle {
    pub fn new(kind: Kind, domain: impl Into<String>) -> Lifecycle {
        Lifecycle {
            kind,
            domain: domain.into(),
            shutdown: ShutdownRequest::default(),
        }
    }

    pub fn shutdown(domain: impl Into<String>, request: ShutdownRequest) -> Lifecycle {
        Lifecycle {
            kind: Kind::Shutdown,
            domain: domain.into(),
            shutdown: request,
        }
    }
}

/// What a lifecycle call answers: a local domain's status as the operation left it, or a
/// remote VM as the vendor reports it afterwards.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Local(DomainStatus),
    Remote(Box<DomainInfo>),
}

impl Operation for Lifecycle {
    type Response = Outcome;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        self.kind.info()
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        if self.kind == Kind::Shutdown
            && self
                .shutdown
                .timeout_secs
                .is_some_and(|s| s > MAX_SHUTDOWN.as_secs())
        {
            return Err(Error::InvalidConfig(format!(
                "timeout_secs: at most {}",
                MAX_SHUTDOWN.as_secs()
            )));
        }
        Ok(())
    }

    async fn local(self, svc: Service) -> Result<Outcome, Error> {
        let name = self.domain.as_str();
        let work = async {
            match self.kind {
                Kind::Start => svc.start(name).await,
                Kind::Shutdown => {
                    let options =
                        ShutdownOptions::from_secs(self.shutdown.timeout_secs, self.shutdown.force);
                    svc.shutdown_by(name, options, self.shutdown.mode).await
                }
                Kind::Destroy => svc.destroy(name).await,
                Kind::Suspend => svc.suspend(name).await,
                Kind::Resume => svc.resume(name).await,
                Kind::Reboot => svc.reboot(name).await,
                Kind::Reset => svc.reset(name).await,
            }
        };
        svc.and_report(name, work).await.map(Outcome::Local)
    }

    async fn remote(self, svc: Service, host_name: String) -> Result<Outcome, Error> {
        let host = svc.remote_target(&host_name)?;
        let name = self.domain.as_str();
        match self.kind {
            Kind::Start => host.start(name).await?,
            Kind::Shutdown => {
                if self.shutdown.force {
                    return Err(Error::InvalidConfig(
                        "force: not available for remote hosts; use destroy".into(),
                    ));
                }
                if self.shutdown.mode != ShutdownMode::Acpi {
                    return Err(Error::InvalidConfig(
                        "mode: 'agent' is not available for remote hosts".into(),
                    ));
                }
                let timeout = self
                    .shutdown
                    .timeout_secs
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs)
                    .unwrap_or_else(|| svc.default_shutdown_timeout());
                host.shutdown(name, timeout).await?
            }
            Kind::Destroy => host.destroy(name).await?,
            Kind::Suspend => host.suspend(name).await?,
            Kind::Resume => host.resume(name).await?,
            Kind::Reboot => host.reboot(name).await?,
            Kind::Reset => {
                return Err(super::unsupported(&svc, &host_name, "reset"));
            }
        }
        svc.remote_after(&host, name)
            .await
            .map(|info| Outcome::Remote(Box::new(info)))
    }
}
