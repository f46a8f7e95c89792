//! What the faces show about a domain, and how listings are filtered.

use novacron_domain::{DomainConfig, DomainState, Error};
use serde::Serialize;

use super::domain::DomainHandle;
use super::Service;

/// One domain as the APIs present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainStatus {
    pub name: String,
    pub uuid: Option<String>,
    pub state: DomainState,
    pub persistent: bool,
    pub autostart: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// A status with the definition (the running config while the guest runs).
#[derive(Debug, Clone, Serialize)]
pub struct DomainDetails {
    #[serde(flatten)]
    pub status: DomainStatus,
    pub config: DomainConfig,
    /// While the guest runs: each NIC's MAC and the addresses the virtual networks' DHCP
    /// servers leased to it (`domifaddr --source agent` asks the guest instead; info never
    /// waits on a guest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<super::nics::addresses::NicAddresses>>,
}

/// Listing filters: by state, and by name with a `*`/`?` glob.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<DomainState>,
    pub name: Option<String>,
    /// Only domains whose definition carries this tag (see `metadata`).
    pub tag: Option<String>,
}

impl ListFilter {
    fn matches(&self, status: &DomainStatus) -> bool {
        self.state.is_none_or(|s| s == status.state)
            && self
                .name
                .as_deref()
                .is_none_or(|g| glob_match(g, &status.name))
    }
}

impl Service {
    /// Runs `work` on `name` and reports the domain as it left it; for a transient domain that
    /// stopped (and is gone from the list) that is its final, shut-off status.
    pub async fn and_report<F>(&self, name: &str, work: F) -> Result<DomainStatus, Error>
    where
        F: std::future::Future<Output = Result<(), Error>>,
    {
        // Looked up first (a transient domain is gone from the map once it stops), checked
        // after: an unknown domain is still counted and audited by the caller.
        let h = self.inner.handle(name);
        work.await?;
        let h = h?;
        Ok(self.status_of(&h))
    }

    pub fn status(&self, name: &str) -> Result<DomainStatus, Error> {
        let h = self.inner.handle(name)?;
        Ok(self.status_of(&h))
    }

    pub fn details(&self, name: &str) -> Result<DomainDetails, Error> {
        let info = self.get(name)?;
        Ok(DomainDetails {
            status: self.status(name)?,
            config: info.config,
            interfaces: None,
        })
    }

    /// [`Service::details`] with the running guest's leased addresses per NIC.
    pub async fn details_with_addresses(&self, name: &str) -> Result<DomainDetails, Error> {
        let mut d = self.details(name)?;
        // A guest that is not running (or stopped in between) shows none.
        d.interfaces = self
            .interface_addresses(
                name,
                super::nics::addresses::AddressSource::Lease,
                std::time::Duration::ZERO,
            )
            .await
            .ok()
            .map(|a| a.interfaces);
        Ok(d)
    }

    /// Every domain matching `filter`, sorted by name; snapshots only, never waits.
    pub fn list_status(&self, filter: &ListFilter) -> Vec<DomainStatus> {
        let handles: Vec<_> = self.inner.read_domains().values().cloned().collect();
        handles
            .iter()
            .filter(|h| {
                filter.tag.as_deref().is_none_or(|tag| {
                    super::metadata::has_tag(h.definition().config.metadata.as_deref(), tag)
                })
            })
            .map(|h| self.status_of(h))
            .filter(|s| filter.matches(s))
            .collect()
    }

    fn status_of(&self, h: &DomainHandle) -> DomainStatus {
        let definition = h.definition();
        let run = h.run();
        DomainStatus {
            name: h.name.clone(),
            uuid: definition.config.uuid.map(|u| u.to_string()),
            state: run.state(),
            persistent: definition.persistent,
            autostart: definition.persistent && self.autostart(&h.name),
            pid: run.live().map(|l| l.pid),
        }
    }
}

pub use crate::glob::glob_match;

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("web*", "web-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("w?b", "web"));
        assert!(glob_match("*-db-*", "prod-db-3"));
        assert!(!glob_match("web*", "db-web"));
        assert!(!glob_match("w?b", "wb"));
        assert!(glob_match("a*b*c", "aXbYc"));
    }
}
