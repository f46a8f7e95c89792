//! Which domains use a file: a disk of its definition (or of the config it runs with) is the
//! file, or has it in its qcow2 backing chain. Files are compared by device and inode, so a
//! second path to the same file (a link, a bind mount, `//`) is still found.

use std::path::{Path, PathBuf};

use novacron_domain::model::DiskSource;
use novacron_domain::DomainConfig;

use super::disk_volumes::used_path;
use super::pools::Pools;
use crate::service::Service;

/// One disk (or snapshot image) that uses the file.
#[derive(Debug, Clone)]
pub struct User {
    pub domain: String,
    pub disk: String,
    pub running: bool,
}

/// The disks of every domain, by domain, with whether it runs: taken under the map lock,
/// examined on the file system later (blocking, without the lock).
pub type Disks = Vec<(String, bool, Vec<(String, String)>)>;

/// The files `c`'s disks use: file disks' paths, and the files volume disks name in their
/// pools (`<disk type='volume'>` counts as a user of its volume).
pub(crate) fn file_disks(c: &DomainConfig, pools: &Pools) -> Vec<(String, String)> {
    c.devices
        .disks
        .iter()
        .filter_map(|d| match &d.source {
            Some(DiskSource::File { path }) => Some((d.target.dev.clone(), path.clone())),
            Some(DiskSource::Volume { pool, volume }) => {
                used_path(pools, pool, volume).map(|p| (d.target.dev.clone(), p))
            }
            _ => None,
        })
        .collect()
}

impl Service {
    /// [`Service::domain_disks_blocking`] on a blocking thread (it reads every domain's
    /// snapshot tree, the template files and the pools' definitions).
    pub(crate) async fn domain_disks(&self) -> Result<Disks, novacron_domain::Error> {
        let svc = self.clone();
        tokio::task::spawn_blocking(move || svc.domain_disks_blocking())
            .await
            .map_err(super::errors::joined)
    }

    pub(crate) fn domain_disks_blocking(&self) -> Disks {
        let handles: Vec<_> = self
            .inner
            .domains
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let pools = self.pools();
        handles
            .iter()
            .map(|h| {
                let mut disks = file_disks(h.definition().config.config(), &pools);
                let run = h.run();
                let running = run.live().is_some();
                if let Some(live) = run.live() {
                    disks.extend(file_disks(&live.config(), &pools));
                }
                // Files a snapshot of the domain keeps (frozen images, branches' overlays) are
                // used too, even when no disk points at them now. A small JSON read.
                let state = &self.inner.config.state_dir;
                if let Ok(tree) = crate::service::snapshots::meta::load(state, &h.name) {
                    // A snapshot being taken (or interrupted) holds its overlays too.
                    let pending = tree
                        .journal
                        .iter()
                        .flat_map(|j| j.overlays.iter().map(|o| o.overlay.clone()))
                        // So does a revert's, until the recovery adopts or removes them.
                        .chain(tree.pending_revert.iter().flat_map(|p| p.overlays.clone()))
                        .collect::<Vec<_>>();
                    disks.extend(
                        tree.files
                            .into_keys()
                            .chain(pending)
                            .map(|f| ("snapshot image".to_owned(), f)),
                    );
                }
                (h.name.clone(), running, disks)
            })
            .chain(self.template_bases())
            .collect()
    }

    /// The bases every template version holds, as users named `template:<name>`: a volume
    /// change refuses them like a domain's disk.
    fn template_bases(&self) -> Disks {
        self.template_store()
            .all()
            .into_iter()
            .map(|t| {
                let files = t
                    .versions
                    .iter()
                    .flat_map(|v| {
                        v.bases.iter().map(move |b| {
                            (
                                format!("version {} base of {}", v.version, b.disk),
                                b.path.clone(),
                            )
                        })
                    })
                    .collect();
                (
                    format!("{}{}", crate::service::templates::USER_PREFIX, t.name),
                    false,
                    files,
                )
            })
            .collect()
    }
}

/// `path` and the files of its qcow2 backing chain (at most 16 deep), as identities.
/// A raw disk's first sector is the guest's to write, so a backing name read here may be any
/// path: only regular files are opened, never blocking (a FIFO or a device such as a
/// watchdog is never opened at all).
fn chain(path: &str) -> Vec<(u64, u64)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut out = Vec::new();
    let mut at = PathBuf::from(path);
    for _ in 0..16 {
        let Ok(meta) = std::fs::metadata(&at) else {
            break;
        };
        out.push((meta.dev(), meta.ino()));
        if !meta.is_file() {
            break;
        }
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&at)
        else {
            break;
        };
        // The same regular file as looked at (not swapped for another kind meanwhile).
        match f.metadata() {
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == (meta.dev(), meta.ino()) => {}
            _ => break,
        }
        let Ok(refs) = crate::host::qcow2::refs(&mut f) else {
            break;
        };
        let Some(backing) = refs.backing else { break };
        let next = PathBuf::from(&backing);
        at = if next.is_absolute() {
            next
        } else {
            at.parent().unwrap_or(Path::new("/")).join(next)
        };
    }
    out
}

/// The disks among `disks` that are, or are based on, the file with identity `id`.
pub fn users(disks: &Disks, id: (u64, u64)) -> Vec<User> {
    let mut out = Vec::new();
    for (domain, running, list) in disks {
        for (dev, path) in list {
            if chain(path).contains(&id)
                && !out
                    .iter()
                    .any(|u: &User| &u.domain == domain && &u.disk == dev)
            {
                out.push(User {
                    domain: domain.clone(),
                    disk: dev.clone(),
                    running: *running,
                });
            }
        }
    }
    out
}
