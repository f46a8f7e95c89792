//! Autostart, as libvirt does it: a marker per domain under `<state>/autostart`, honoured once
//! per host boot (a marker under the run directory, which is on tmpfs), so a daemon restart
//! never starts a guest an operator has since stopped.

use std::path::PathBuf;

use novacron_domain::{DomainState, Error};

use super::Service;

impl Service {
    pub(super) fn autostart_marker(&self, name: &str) -> PathBuf {
        self.inner.config.state_dir.join("autostart").join(name)
    }

    /// Marks (or unmarks) a persistent domain to start when the host boots.
    pub async fn set_autostart(&self, name: &str, enabled: bool) -> Result<(), Error> {
        let svc = self.clone();
        let name = name.to_owned();
        self.detached(async move {
            let result = svc.set_autostart_inner(&name, enabled).await;
            let op = if enabled {
                "autostart-on"
            } else {
                "autostart-off"
            };
            svc.inner.audit.record(op, &name, &result);
            result
        })
        .await
    }

    async fn set_autostart_inner(&self, name: &str, enabled: bool) -> Result<(), Error> {
        let h = self.inner.handle(name)?;
        if !h.definition().persistent {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}' is transient: only defined domains can autostart"
            )));
        }
        let marker = self.autostart_marker(name);
        let result = if enabled {
            let dir = self.inner.config.state_dir.join("autostart");
            if let Err(e) = tokio::fs::create_dir_all(&dir).await {
                return Err(Error::Io {
                    action: "create",
                    path: dir.display().to_string(),
                    message: e.to_string(),
                });
            }
            crate::persist::atomic::write_atomic_async(marker, Vec::new(), 0o600).await
        } else {
            crate::persist::atomic::remove_durable_async(marker)
                .await
                .map(drop)
        };
        result.map_err(|e| Error::Internal(format!("autostart of '{name}': {e}")))
    }

    pub fn autostart(&self, name: &str) -> bool {
        self.autostart_marker(name).exists()
    }

    /// Starts every autostart domain that is off, the first time the daemon runs after a host
    /// boot. Returns the domains it started; failures are logged and skipped.
    pub async fn run_autostart(&self) -> Vec<String> {
        let done = self.inner.config.run_dir.join("autostarted");
        if done.exists() {
            return Vec::new();
        }
        let mut started = Vec::new();
        for summary in self.list() {
            if summary.state != DomainState::Shutoff || !self.autostart(&summary.name) {
                continue;
            }
            match self.perform(&summary.name, super::Action::Start).await {
                Ok(()) => started.push(summary.name),
                Err(e) => tracing::error!(domain = %summary.name, error = %e, "autostart failed"),
            }
        }
        if let Err(e) = crate::persist::atomic::write_atomic_async(done, Vec::new(), 0o600).await {
            tracing::warn!(error = %e, "cannot record that autostart ran");
        }
        started
    }
}
