//! Domain templates (Proxmox's templates and linked clones, Incus's image versions): a
//! template is a name with numbered versions; a version is a stopped domain's definition
//! (without uuid and MACs) and a read-only base volume per disk. `template-deploy` makes a new
//! domain from a version in one call: a qcow2 linked clone of every base and the definition,
//! rolled back whole when a step fails (and by the journal after a crash).
//!
//! The bases are copies (flattened with `qemu-img convert`), not the domain's own files as
//! Proxmox's convert-to-template does: the source domain stays a domain, to be changed and
//! published again as the next version (Incus's `publish`), and a base never depends on the
//! source's backing chain or snapshots.

mod deploy;
mod make;
mod recover;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use novacron_domain::Error;
use serde::{Deserialize, Serialize};

use super::storage::errors::invalid;
use crate::service::Service;
pub use deploy::{DeployRequest, Deployed};
pub(crate) use recover::recover;
use store::{Store, Template, Version};

/// How template bases appear among the users of a file (`storage::usage`).
pub const USER_PREFIX: &str = "template:";

/// Template names: they name a metadata file and prefix base volume names.
pub const MAX_NAME_LEN: usize = 64;

/// `ASCII letters, digits, '_', '-', '.'`, not starting with '.' or '-'.
pub fn check_name(field: &str, name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "is {} bytes, over the {MAX_NAME_LEN} byte limit",
            name.len()
        ))
    } else if name.starts_with('.') || name.starts_with('-') {
        Some(format!("{name:?} starts with '{}'", &name[..1]))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| {
                format!("{name:?} contains {c:?} (allowed: ASCII letters, digits, '_', '-', '.')")
            })
    };
    match why {
        Some(why) => Err(invalid(field, why)),
        None => Ok(()),
    }
}

/// `template-create`: version 1 from a stopped domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    /// The stopped domain whose definition and disks the version holds.
    pub domain: String,
    /// Where the bases go (default: `default`).
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `template-update`: with `domain` a new version from it (its description is `description`);
/// without, the template's description changes (no new version).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A template as list and info show it: the versions with the domains deployed from each
/// (those whose disks are linked clones of its bases).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created: u64,
    pub latest: u32,
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub version: Version,
    pub deployed: Vec<String>,
}

/// One lock per template name: changes and deploys of one template run one at a time.
static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

async fn lock(name: &str) -> tokio::sync::OwnedMutexGuard<()> {
    let m = LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_owned())
        .or_default()
        .clone();
    m.lock_owned().await
}

fn max_description(d: &Option<String>) -> Result<(), Error> {
    match d {
        Some(d) if d.len() > 4096 => Err(invalid(
            "description",
            format!("is {} bytes, over the 4096 byte limit", d.len()),
        )),
        Some(d) if d.chars().any(|c| c.is_control() && c != '\n') => Err(invalid(
            "description",
            "contains control characters other than newline",
        )),
        _ => Ok(()),
    }
}

impl Service {
    pub(crate) fn template_store(&self) -> Store {
        Store::new(&self.inner.config.state_dir)
    }

    async fn view(&self, t: Template) -> Result<TemplateView, Error> {
        let disks = self.domain_disks().await?;
        tokio::task::spawn_blocking(move || {
            let versions = t
                .versions
                .iter()
                .map(|v| VersionView {
                    deployed: deploy::clones_of(&disks, v)
                        .into_iter()
                        .map(|(d, _)| d)
                        .collect(),
                    version: v.clone(),
                })
                .collect();
            TemplateView {
                latest: t.latest().map_or(0, |v| v.version),
                name: t.name,
                description: t.description,
                created: t.created,
                versions,
            }
        })
        .await
        .map_err(super::storage::errors::joined)
    }

    pub async fn template_list(&self) -> Result<Vec<TemplateView>, Error> {
        let store = self.template_store();
        let all = tokio::task::spawn_blocking(move || store.all())
            .await
            .map_err(super::storage::errors::joined)?;
        let mut out = Vec::with_capacity(all.len());
        for t in all {
            out.push(self.view(t).await?);
        }
        Ok(out)
    }

    pub async fn template_info(&self, name: &str) -> Result<TemplateView, Error> {
        check_name("template", name)?;
        let t = self.template_store().load(name)?;
        self.view(t).await
    }

    pub async fn template_create(&self, req: CreateRequest) -> Result<TemplateView, Error> {
        check_name("name", &req.name)?;
        max_description(&req.description)?;
        let _lock = lock(&req.name).await;
        let store = self.template_store();
        if store.exists(&req.name) {
            return Err(invalid(
                "name",
                format!(
                    "template {} already exists (template-update adds a version)",
                    req.name
                ),
            ));
        }
        let created = crate::service::events::now_unix_ms();
        let mut t = Template {
            format: store::VERSION,
            name: req.name.clone(),
            description: req.description.clone(),
            created,
            versions: Vec::new(),
        };
        self.add_version(&store, &mut t, &req.domain, req.pool.as_deref(), None)
            .await?;
        self.view(t).await
    }

    pub async fn template_update(
        &self,
        name: &str,
        req: UpdateRequest,
    ) -> Result<TemplateView, Error> {
        check_name("template", name)?;
        max_description(&req.description)?;
        let _lock = lock(name).await;
        let store = self.template_store();
        let mut t = store.load_off(name).await?;
        match req.domain {
            Some(domain) => {
                let pool = req.pool.or_else(|| t.latest().map(|v| v.pool.clone()));
                self.add_version(&store, &mut t, &domain, pool.as_deref(), req.description)
                    .await?;
            }
            None if req.description.is_some() => {
                if req.pool.is_some() {
                    return Err(invalid("pool", "a pool is for a new version (give domain)"));
                }
                t.description = req.description;
                store.save_off(&t).await?;
            }
            None => {
                return Err(invalid(
                    "domain",
                    "nothing to update: give a domain (a new version) or a description",
                ))
            }
        }
        self.view(t).await
    }

    /// Deletes one version (`Some`) or the whole template; refused while a domain's disk is a
    /// linked clone of a base (naming the domain) or a volume is built on one.
    pub async fn template_delete(&self, name: &str, version: Option<u32>) -> Result<(), Error> {
        check_name("template", name)?;
        let _lock = lock(name).await;
        let store = self.template_store();
        let mut t = store.load_off(name).await?;
        let doomed: Vec<Version> = match version {
            Some(v) => vec![t.get(v)?.clone()],
            None => t.versions.clone(),
        };
        let disks = self.domain_disks().await?;
        let pools = self.pools();
        let check = doomed.clone();
        let tname = name.to_owned();
        tokio::task::spawn_blocking(move || deploy::deletable(&pools, &disks, &tname, &check))
            .await
            .map_err(super::storage::errors::joined)??;
        let files: Vec<store::PendingFile> = doomed
            .iter()
            .flat_map(|v| v.bases.iter())
            .map(|b| store::PendingFile {
                dir: dir_of(&b.path),
                name: b.volume.clone(),
                // The bases as they are now: only these files are ever removed.
                made: {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::symlink_metadata(&b.path)
                        .ok()
                        .map(|m| (m.dev(), m.ino()))
                },
            })
            .collect();
        let journal = store
            .begin_off(&store::Pending {
                op: store::PendingOp::Delete,
                owner: name.to_owned(),
                files: files.clone(),
            })
            .await?;
        // The metadata first: a crash after it leaves files the journal removes; before it,
        // the template as it was.
        t.versions
            .retain(|v| !doomed.iter().any(|d| d.version == v.version));
        let saved = if t.versions.is_empty() {
            store.remove_off(name).await
        } else {
            store.save_off(&t).await
        };
        if let Err(e) = saved {
            store.end_off(&journal).await;
            return Err(e);
        }
        tokio::task::spawn_blocking(move || {
            for f in &files {
                recover::unlink(f);
            }
        })
        .await
        .map_err(super::storage::errors::joined)?;
        store.end_off(&journal).await;
        Ok(())
    }
}

/// The directory part of a base's path.
fn dir_of(path: &str) -> String {
    std::path::Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into())
}
