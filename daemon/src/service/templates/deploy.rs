//! `template-deploy`: a new domain from a version in one call — a qcow2 linked clone of every
//! base in the target pool, then the definition (new uuid and MACs, disks on the clones),
//! optionally started. A failing step undoes the earlier ones; a crash is undone by the
//! journal at the next start (clones not in a defined domain are removed).

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use nix::fcntl::OFlag;
use novacron_domain::model::{DiskFormat, DiskSource};
use novacron_domain::{Error, Kind};
use serde::{Deserialize, Serialize};

use super::store::{Pending, PendingFile, PendingOp, Version};
use super::{check_name, lock};
use crate::host::volumes::files::{self, OpenError};
use crate::host::volumes::qemu_img::{self, fd_path};
use crate::service::status::DomainStatus;
use crate::service::storage::errors::{forbidden, invalid, io, joined};
use crate::service::storage::pools::Pools;
use crate::service::storage::usage::{users, Disks};
use crate::service::Service;

const QUICK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The new domain's name.
    pub name: String,
    /// Default: the latest version.
    #[serde(default)]
    pub version: Option<u32>,
    /// Where the clones go (default: the version's pool).
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub start: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub template: String,
    pub version: u32,
    pub domain: DomainStatus,
    /// The clones made, as `pool/volume`.
    pub volumes: Vec<String>,
}

/// The domains (with the disk) whose disks are built on a base of `v`.
pub(crate) fn clones_of(disks: &Disks, v: &Version) -> Vec<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<(String, String)> = Vec::new();
    for b in &v.bases {
        let Ok(m) = std::fs::metadata(&b.path) else {
            continue;
        };
        for u in users(disks, (m.dev(), m.ino())) {
            // The template's own entry (see `usage`) is not a deployment.
            if u.domain.starts_with(super::USER_PREFIX) {
                continue;
            }
            if !out.iter().any(|(d, _)| d == &u.domain) {
                out.push((u.domain, u.disk));
            }
        }
    }
    out
}

/// Refuses when a base of `versions` is still used: a domain's disk (naming it) or a volume
/// built on it.
pub(crate) fn deletable(
    pools: &Pools,
    disks: &Disks,
    template: &str,
    versions: &[Version],
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    for v in versions {
        if let Some((domain, disk)) = clones_of(disks, v).into_iter().next() {
            return Err(Error::Busy {
                name: domain,
                detail: format!(
                    "its disk {disk} is a linked clone of template {template} version {}; \
                     undefine the domain and delete its volumes first",
                    v.version
                ),
            });
        }
        for b in &v.bases {
            let Ok(m) = std::fs::metadata(&b.path) else {
                continue;
            };
            if let Some(child) =
                crate::service::storage::volumes::based_on(pools, (m.dev(), m.ino()))
            {
                return Err(invalid(
                    "template",
                    format!(
                        "base {} of template {template} version {} is the backing file of \
                         volume {child}; delete that volume first",
                        b.volume, v.version
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Domain names a deploy is making now.
static DEPLOYING: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Default::default);

struct Claim(String);

impl Claim {
    fn take(name: &str) -> Result<Claim, Error> {
        if !DEPLOYING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned())
        {
            return Err(Error::Busy {
                name: name.to_owned(),
                detail: "another template-deploy is making it".into(),
            });
        }
        Ok(Claim(name.to_owned()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        DEPLOYING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

impl Service {
    pub async fn template_deploy(
        &self,
        template: &str,
        req: DeployRequest,
    ) -> Result<Deployed, Error> {
        check_name("template", template)?;
        let _lock = lock(template).await;
        let t = self.template_store().load(template)?;
        let v = match req.version {
            Some(n) => t.get(n)?.clone(),
            None => t
                .latest()
                .cloned()
                .ok_or_else(|| Error::not_found(Kind::Template, template))?,
        };
        if self.status(&req.name).is_ok() {
            return Err(Error::AlreadyExists(req.name.clone()));
        }
        // Two deploys of one name (from different templates) never both define it.
        let _claim = Claim::take(&req.name)?;
        // The definition, checked before anything is made (the name above all: it names the
        // clones too).
        let mut config = v.config.clone();
        config.name = req.name.clone();
        config.uuid = None;
        for nic in &mut config.devices.interfaces {
            nic.mac = None;
        }
        super::super::defaults::complete(config.clone(), None)
            .validate()
            .map_err(Error::from)?;
        let pool_name = req.pool.clone().unwrap_or_else(|| v.pool.clone());
        let pools = self.pools();
        let (base_pool, target) = {
            let (bp, tp) = (v.pool.clone(), pool_name.clone());
            tokio::task::spawn_blocking(move || {
                Ok::<_, Error>((pools.open(&bp)?, pools.open(&tp)?))
            })
            .await
            .map_err(joined)??
        };
        let ((bp, bdir), (p, dir)) = (base_pool, target);
        let admin = crate::service::audit::current().is_admin();
        let mut plan = Vec::new();
        for b in &v.bases {
            let base = files::open(&bdir, &b.volume, OFlag::O_RDONLY).map_err(|e| match e {
                OpenError::Missing => invalid(
                    "version",
                    format!(
                        "base {}/{} of {template} version {} is missing",
                        bp.name, b.volume, v.version
                    ),
                ),
                OpenError::NotAVolume(why) => invalid("version", why),
                OpenError::Exists => invalid("version", "unexpected"),
                OpenError::Io(e) => io("open", b.path.clone(), e),
            })?;
            if !admin {
                crate::host::storage_roots::check_image(
                    &self.inner.storage_roots,
                    &b.path,
                    base.try_clone()
                        .map_err(|e| io("open", b.path.clone(), e))?
                        .into(),
                    DiskFormat::Qcow2,
                )
                .map_err(|r| forbidden("version", r.text().to_owned()))?;
            }
            let clone = format!("{}-{}.qcow2", req.name, b.disk);
            novacron_domain::storage::check_name(&clone).map_err(|m| invalid("name", m))?;
            plan.push((b.clone(), clone));
        }
        let store = self.template_store();
        let mut pending = Pending {
            op: PendingOp::Deploy,
            owner: req.name.clone(),
            files: plan
                .iter()
                .map(|(_, c)| PendingFile {
                    dir: p.path.clone(),
                    name: c.clone(),
                    made: None,
                })
                .collect(),
        };
        let journal = store.begin_off(&pending).await?;
        let mut made: Vec<String> = Vec::new();
        let undo = |made: &[String]| {
            for c in made {
                let _ = files::unlink(&dir, c);
            }
        };
        let cloned: Result<(), Error> = async {
            for (k, (b, clone)) in plan.iter().enumerate() {
                let dst = files::open(&dir, clone, OFlag::O_CREAT | OFlag::O_RDWR).map_err(
                    |e| match e {
                        OpenError::Exists => invalid(
                            "name",
                            format!(
                                "volume {}/{clone} already exists (choose another domain name)",
                                p.name
                            ),
                        ),
                        OpenError::Missing | OpenError::NotAVolume(_) => {
                            invalid("pool", format!("cannot create {clone} in {}", p.name))
                        }
                        OpenError::Io(e) => io("create", format!("{}/{clone}", p.path), e),
                    },
                )?;
                made.push(clone.clone());
                pending.files[k].made =
                    Some(super::make::identity(&dst).map_err(|e| io("stat", clone.as_str(), e))?);
                {
                    let (store, journal, pending) =
                        (store.clone(), journal.clone(), pending.clone());
                    super::make::off_thread(move || store.update(&journal, &pending)).await?;
                }
                let size = b.capacity.to_string();
                // -u: qemu-img never opens the base by name; the size is the base's.
                qemu_img::run(
                    &[
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-u",
                        "-b",
                        &b.path,
                        "-F",
                        "qcow2",
                        &fd_path(0),
                        &size,
                    ],
                    &[dst.as_fd()],
                    QUICK,
                )
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
                super::make::sync(&dst, clone).await?;
                let path = format!("{}/{clone}", p.path.trim_end_matches('/'));
                for d in &mut config.devices.disks {
                    if d.target.dev == b.disk {
                        d.source = Some(DiskSource::File { path: path.clone() });
                        d.driver.format = DiskFormat::Qcow2;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = cloned {
            undo(&made);
            store.end_off(&journal).await;
            return Err(e);
        }
        // Defined as the caller: the storage-root admission checks the clones and their
        // bases like any definition's files.
        if let Err(e) = self.define(config).await {
            undo(&made);
            store.end_off(&journal).await;
            return Err(e);
        }
        store.end_off(&journal).await;
        if req.start {
            if let Err(e) = self.start(&req.name).await {
                // One call: a deploy that cannot start leaves nothing behind.
                if let Err(u) = self.undefine(&req.name).await {
                    tracing::warn!(domain = req.name, error = %u, "deploy rollback: undefine");
                } else {
                    undo(&made);
                }
                return Err(e);
            }
        }
        Ok(Deployed {
            template: template.to_owned(),
            version: v.version,
            domain: self.status(&req.name)?,
            volumes: made.iter().map(|c| format!("{}/{c}", p.name)).collect(),
        })
    }
}
