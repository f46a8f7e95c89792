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

    /// The autostart domains that are off, the first time the daemon runs after a host boot
    /// (`None` when autostart already ran this boot). `ops::autostart` starts them, audited.
    pub fn autostart_due(&self) -> Option<Vec<String>> {
        if self.inner.config.run_dir.join("autostarted").exists() {
            return None;
        }
        Some(
            self.list()
                .into_iter()
                .filter(|s| s.state == DomainState::Shutoff && self.autostart(&s.name))
                .map(|s| s.name)
                .collect(),
        )
    }

    /// Records that autostart ran this boot.
    pub async fn autostart_done(&self) {
        let done = self.inner.config.run_dir.join("autostarted");
        if let Err(e) = crate::persist::atomic::write_atomic_async(done, Vec::new(), 0o600).await {
            tracing::warn!(error = %e, "cannot record that autostart ran");
        }
    }
}
