//! The `Driver` trait: implemented by the local QEMU host and by each remote vendor adapter.
//!
//! What a driver cannot do it answers with `Error::Unsupported`, never silently; the default
//! method bodies below do exactly that so a new adapter is honest from its first line.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::model::DomainConfig;
use crate::state::DomainState;
use crate::validate::ValidatedDomain;

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DomainSummary {
    pub name: String,
    pub uuid: Option<String>,
    pub state: DomainState,
}

/// `get`: the definition plus its current state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct DomainInfo {
    pub summary: DomainSummary,
    pub config: DomainConfig,
}

/// What a driver can do; API layers use it to explain refusals up front.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Capabilities {
    pub driver: String,
    pub define: bool,
    pub suspend: bool,
    pub reboot: bool,
    pub migrate: bool,
    /// Free-form facts for display (hypervisor version, host CPU model...).
    pub details: std::collections::BTreeMap<String, String>,
}

/// Where to migrate a domain to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MigrationTarget {
    /// Peer address as the driver understands it (e.g. `tcp:host:port` or a peer URL).
    pub uri: String,
    pub live: bool,
    pub timeout: Option<Duration>,
}

#[async_trait]
pub trait Driver: Send + Sync {
    /// Short driver name (`qemu`, `vsphere`...), used in `Unsupported` errors.
    fn name(&self) -> &str;

    async fn capabilities(&self) -> Result<Capabilities, Error>;
    async fn list(&self) -> Result<Vec<DomainSummary>, Error>;
    async fn get(&self, name: &str) -> Result<DomainInfo, Error>;
    /// Define (or redefine a shut-off) domain. Only validated configs are accepted.
    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error>;
    async fn undefine(&self, name: &str) -> Result<(), Error>;
    async fn start(&self, name: &str) -> Result<(), Error>;
    /// Ask the guest to power off; `Error::Timeout` if it has not after `timeout`.
    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error>;
    /// Stop the guest immediately.
    async fn destroy(&self, name: &str) -> Result<(), Error>;

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        let _ = name;
        Err(self.unsupported("suspend"))
    }
    async fn resume(&self, name: &str) -> Result<(), Error> {
        let _ = name;
        Err(self.unsupported("resume"))
    }
    async fn reboot(&self, name: &str) -> Result<(), Error> {
        let _ = name;
        Err(self.unsupported("reboot"))
    }
    async fn migrate(&self, name: &str, target: &MigrationTarget) -> Result<(), Error> {
        let _ = (name, target);
        Err(self.unsupported("migrate"))
    }

    /// The typed refusal for an operation this driver does not implement.
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            driver: self.name().to_owned(),
            operation,
        }
    }
}
