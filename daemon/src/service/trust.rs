//! Which host files a definition may name, by who defined it: admins anything, every other
//! role only files inside the storage roots (`host::storage_roots`). Applied where a
//! definition enters (define, create, incoming migration) with the caller's role, and again
//! at every start with the rules the definition was accepted under (persisted with it), so an
//! autostart by the daemon does not lend the daemon's rights to an operator's definition.

use std::sync::Arc;

use novacron_domain::{DomainConfig, Error, FieldError, ValidatedDomain};

use super::Inner;
use crate::host::guest_files::{GuestFiles, Opening};
use crate::host::storage_roots::{check_ref, Refusal, Violation};
pub use crate::persist::definitions::Trust;

/// The rules a definition entering now is held to: the current caller's role.
pub(crate) fn caller_trust() -> Trust {
    if super::audit::current().is_admin() {
        Trust::Admin
    } else {
        Trust::Restricted
    }
}

/// How many descriptors a guest's files may take (QEMU also inherits the monitor and the
/// serial log; see `qemu::spawn::MAX_INHERITED`).
const MAX_GUEST_FDS: usize = crate::qemu::spawn::MAX_INHERITED - 2;

impl Inner {
    /// Checks a definition entering now against the caller's role; the trust it is stored
    /// with. Refusals name every field and rule at once and change nothing.
    pub(crate) async fn admit(&self, config: &Arc<ValidatedDomain>) -> Result<Trust, Error> {
        let trust = caller_trust();
        drivers_present(config.config()).await?;
        // Volume disks become the files they name (for every role: an unknown pool or volume
        // is refused); the rule below then judges those files.
        let volumes = self
            .volume_disks(
                config.config(),
                crate::service::storage::disk_volumes::Formats::Exact,
            )
            .await?;
        if trust == Trust::Admin {
            return Ok(trust);
        }
        let roots = self.storage_roots.clone();
        let config = config.clone();
        let violations = tokio::task::spawn_blocking(move || {
            volumes
                .as_ref()
                .unwrap_or(config.config())
                .host_refs()
                .iter()
                .filter_map(|r| {
                    check_ref(&roots, r).err().map(|refusal| Violation {
                        field: r.field.clone(),
                        refusal,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("storage root check failed: {e}")))?;
        if violations.is_empty() {
            Ok(trust)
        } else {
            Err(refused(&violations, None))
        }
    }

    /// Opens the guest's host files for a start, under the rules the definition was accepted
    /// under. Numbering starts at descriptor `first_fd` and fd set `first_set`.
    pub(crate) async fn open_guest_files(
        self: &Arc<Self>,
        name: &str,
        config: &DomainConfig,
        trust: Trust,
        first_fd: i32,
        first_set: u32,
    ) -> Result<GuestFiles, Error> {
        drivers_present(config).await?;
        // A start has resolved its volume disks already; a hot-plug's disk is resolved here.
        let volumes = self
            .volume_disks(
                config,
                crate::service::storage::disk_volumes::Formats::Start,
            )
            .await?;
        let inner = self.clone();
        let config = volumes.unwrap_or_else(|| config.clone());
        let result = tokio::task::spawn_blocking(move || {
            crate::host::guest_files::open(
                &config,
                &Opening {
                    roots: &inner.storage_roots,
                    admin: trust == Trust::Admin,
                    copy_boot_images: inner.run_as.is_some(),
                    first_fd,
                    first_set,
                    max_fds: MAX_GUEST_FDS,
                },
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("opening the files of '{name}' failed: {e}")))?;
        result.map_err(|v| {
            let hint = (trust == Trust::Restricted).then(|| {
                format!(
                    "domain '{name}' was accepted under the non-admin rules (or defined before \
                     they existed); an admin may redefine it to accept it under admin rules"
                )
            });
            refused(&v, hint)
        })
    }
}

/// Every network disk's QEMU block driver is installed (`host::block_drivers`).
async fn drivers_present(config: &DomainConfig) -> Result<(), Error> {
    let network = |d: &novacron_domain::model::Disk| {
        matches!(
            d.source,
            Some(novacron_domain::model::DiskSource::Network(_))
        )
    };
    if !config.devices.disks.iter().any(network) {
        return Ok(());
    }
    let config = config.clone();
    let missing = tokio::task::spawn_blocking(move || {
        crate::host::block_drivers::missing(&config, &crate::host::block_drivers::module_dir())
    })
    .await
    .map_err(|e| Error::Internal(format!("block driver check failed: {e}")))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(refused(&missing, None))
    }
}

/// One error for all refusals: `forbidden` when any is a rule of the role, else (missing or
/// unreadable files only) `invalid_config`.
fn refused(violations: &[Violation], hint: Option<String>) -> Error {
    let mut text = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let rule = violations
        .iter()
        .any(|v| matches!(v.refusal, Refusal::Rule(_)));
    if let (true, Some(h)) = (rule, hint) {
        text.push_str(&format!(" ({h})"));
    }
    let details = violations
        .iter()
        .map(|v| FieldError::new(&v.field, v.refusal.text()))
        .collect();
    if rule {
        Error::Forbidden {
            message: text,
            details,
        }
    } else {
        Error::Invalid {
            message: text,
            details,
        }
    }
}
