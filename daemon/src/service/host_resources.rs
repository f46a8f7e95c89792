//! Host resources taken for a guest just before QEMU starts and given back after it stops:
//! hugepages added to a short pool (when `[hugepages] reserve` allows it) and PCI devices
//! moved to vfio-pci. The fit check runs between the two, so the pool it sees already holds
//! the reserved pages and no device is detached for a guest that does not fit.
//!
//! Until the runtime record holds them, what is taken is written down in a journal
//! (`<records_dir>/<name>.held`): hugepages as soon as they are added, devices before they are
//! detached. A daemon that dies before the record is written gives them back on restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use novacron_domain::{DomainConfig, Error};

use super::Inner;
use crate::host::hugepages;
use crate::host::resources::HeldResources;
use crate::host::vfio::{self, VfioError};
use crate::host::{SysfsRoot, Topology};
use crate::persist::RuntimeRecord;

/// Hugepage-backed starts are serialised host-wide from their fit check (and pool growth)
/// until their QEMU has mapped its memory: otherwise two starts both count the same free
/// pages. Host-wide, not per daemon: the pools are.
static PAGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A hugepage-backed start's claim on the pools; drop it once QEMU has mapped its memory
/// (its QMP monitor answers: QEMU creates its memory backends before it serves QMP).
#[must_use = "dropping the claim lets another start count the same free pages"]
pub(super) struct PagesClaim(#[allow(dead_code)] Option<tokio::sync::MutexGuard<'static, ()>>);

/// Suffix of a journal file beside the runtime records (never a record's `.json`).
const JOURNAL_EXT: &str = "held";

/// Reserves hugepages (if allowed and short), checks the guest fits, then checks and detaches
/// its host devices. On failure everything taken is given back.
pub(super) async fn take(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
) -> Result<(HeldResources, PagesClaim), Error> {
    let mut held = HeldResources::default();
    let wants_pages = config
        .memory_backing
        .as_ref()
        .is_some_and(|b| b.hugepages.is_some());
    let claim = PagesClaim(match wants_pages {
        true => Some(PAGES.lock().await),
        false => None,
    });
    let journal = journal_path(inner, name);
    if wants_pages && inner.config.hugepages.reserve {
        let root = inner.host.sysfs().clone();
        let (cfg, path) = (config.clone(), journal.clone());
        held.hugepages = blocking(move || {
            let topo = Topology::read(&root).map_err(|e| Error::Internal(e.to_string()))?;
            let grants = hugepages::reserve(&root, &topo, &hugepages::demand(&cfg, &topo))
                .map_err(|e| Error::Internal(format!("reserving hugepages: {e}")))?;
            let held = HeldResources {
                hugepages: grants,
                ..HeldResources::default()
            };
            if let Err(e) = journal_write(&path, &held) {
                held.release(&root);
                return Err(e);
            }
            Ok(held.hugepages)
        })
        .await
        .map_err(|e| named(name, e))?;
    }
    if let Err(e) = inner.host.check_fit(name, config).await {
        give_back(inner, name, &held).await;
        return Err(e);
    }
    let hostdevs = config.devices.hostdevs.clone();
    if !hostdevs.is_empty() {
        let prepared = match in_use(inner, name, config) {
            Some(e) => Err(e),
            None => {
                let root = inner.host.sysfs().clone();
                let (so_far, path) = (held.clone(), journal.clone());
                blocking(move || {
                    // Written before the detach: what a crash midway may have moved.
                    let planned = HeldResources {
                        vfio: vfio::planned(&root, &hostdevs),
                        ..so_far.clone()
                    };
                    if !planned.vfio.is_empty() {
                        journal_write(&path, &planned)?;
                    }
                    let prepared = vfio::prepare(&root, &hostdevs).map_err(vfio_error)?;
                    let done = HeldResources {
                        vfio: prepared.detached.clone(),
                        ..so_far
                    };
                    if !planned.vfio.is_empty() {
                        if let Err(e) = journal_write(&path, &done) {
                            vfio::give_back(&root, &prepared.detached);
                            return Err(e);
                        }
                    }
                    Ok(prepared)
                })
                .await
            }
        };
        match prepared {
            Ok(p) => {
                if p.ioctl_checked.is_empty() {
                    tracing::info!(
                        domain = name,
                        "VFIO groups checked from sysfs only (no /dev/vfio/vfio here)"
                    );
                }
                held.vfio = p.detached;
            }
            Err(e) => {
                give_back(inner, name, &held).await;
                return Err(named(name, e));
            }
        }
        if let Err(e) = open_groups_to_qemu(inner, config, &journal, &mut held).await {
            give_back(inner, name, &held).await;
            return Err(named(name, e));
        }
    }
    Ok((held, claim))
}

/// An unprivileged QEMU opens `/dev/vfio/<group>` (root-only) for each host device: its user
/// gets an ACL entry on each, journalled before it is added, taken back with the rest.
async fn open_groups_to_qemu(
    inner: &Arc<Inner>,
    config: &DomainConfig,
    journal: &Path,
    held: &mut HeldResources,
) -> Result<(), Error> {
    let root = inner.host.sysfs().clone();
    let Some(who) = &inner.run_as else {
        return Ok(());
    };
    // Only where the group nodes are this host's (real sysfs, VFIO present).
    if !vfio::group::available(&root) {
        return Ok(());
    }
    let uid = who.uid.as_raw();
    let (so_far, path) = (held.clone(), journal.to_owned());
    let hostdevs = config.devices.hostdevs.clone();
    held.device_acls = blocking(move || {
        let nodes = vfio::access::group_nodes(&root, Path::new(vfio::access::DEV_DIR), &hostdevs);
        let planned = HeldResources {
            device_acls: nodes
                .iter()
                .map(|p| vfio::access::DeviceAcl {
                    path: p.clone(),
                    uid,
                })
                .collect(),
            ..so_far
        };
        journal_write(&path, &planned)?;
        vfio::access::grant(uid, &nodes)
            .map_err(|e| Error::Internal(format!("giving the QEMU user its VFIO groups: {e}")))
    })
    .await?;
    Ok(())
}

/// The runtime record now holds what was taken: the journal is no longer needed.
pub(super) async fn recorded(inner: &Arc<Inner>, name: &str) {
    let path = journal_path(inner, name);
    if let Err(e) = crate::persist::remove_durable_async(path.clone()).await {
        tracing::warn!(journal = %path.display(), error = %e, "cannot remove the held-resources journal");
    }
}

/// A failed start: gives back what [`take`] took, then drops its journal.
pub(super) async fn give_back(inner: &Arc<Inner>, name: &str, held: &HeldResources) {
    release(inner, held).await;
    recorded(inner, name).await;
}

/// On daemon start, before any guest starts: journals of starts a previous daemon did not
/// finish. A guest with a runtime record has what it holds there (the record is written after
/// the journal's last change), so its journal is just removed; otherwise what the journal
/// names is given back (devices only if they were really moved).
pub(super) async fn recover_journals(inner: &Arc<Inner>, records: &[RuntimeRecord]) {
    let dir = inner.paths.records_dir();
    let recorded: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    let root = inner.host.sysfs().clone();
    let _ = tokio::task::spawn_blocking(move || recover_in(&dir, &recorded, &root)).await;
}

fn recover_in(dir: &Path, recorded: &[String], root: &SysfsRoot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let file = entry.file_name();
        let Some(name) = file
            .to_str()
            .filter(|f| !f.starts_with('.'))
            .and_then(|f| f.strip_suffix(&format!(".{JOURNAL_EXT}")))
        else {
            continue;
        };
        if !recorded.iter().any(|r| r == name) {
            match journal_read(&path) {
                Ok(mut held) => {
                    held.vfio.retain(|d| vfio::was_moved(root, d));
                    tracing::warn!(domain = name, ?held, "a start did not finish before the daemon stopped; giving back what it took");
                    held.release(root);
                }
                Err(e) => {
                    tracing::error!(journal = %path.display(), error = %e, "unreadable held-resources journal; kept");
                    continue;
                }
            }
        }
        if let Err(e) = crate::persist::remove_durable(&path) {
            tracing::warn!(journal = %path.display(), error = %e, "cannot remove the held-resources journal");
        }
    }
}

fn journal_path(inner: &Inner, name: &str) -> PathBuf {
    inner
        .paths
        .records_dir()
        .join(format!("{name}.{JOURNAL_EXT}"))
}

fn journal_write(path: &Path, held: &HeldResources) -> Result<(), Error> {
    let bytes = serde_json::to_vec(held).map_err(|e| Error::Internal(e.to_string()))?;
    crate::persist::write_atomic(path, &bytes, 0o600).map_err(|e| Error::Io {
        action: "write the held-resources journal",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Journals are small (a few grants and devices); anything larger is not one of ours.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;

fn journal_read(path: &Path) -> Result<HeldResources, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(format!("over {MAX_JOURNAL_BYTES} bytes"));
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Gives back what [`take`] took (logged, never fails).
pub(super) async fn release(inner: &Arc<Inner>, held: &HeldResources) {
    if held.is_empty() {
        return;
    }
    let root = inner.host.sysfs().clone();
    let held = held.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || held.release(&root)).await {
        tracing::error!(error = %e, "giving back host resources failed");
    }
}

/// Another domain that holds (running) or is taking (starting) one of these devices. What a
/// running guest holds is what it was started with (its record), not its current definition.
fn in_use(inner: &Arc<Inner>, name: &str, config: &DomainConfig) -> Option<Error> {
    let domains = inner
        .domains
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (other, h) in domains.iter().filter(|(n, _)| n.as_str() != name) {
        let run = h.run();
        let theirs = match (run.live(), h.state()) {
            (Some(live), _) => live.record.config.devices.hostdevs.clone(),
            (None, novacron_domain::DomainState::Starting) => {
                h.definition().config.config().devices.hostdevs.clone()
            }
            (None, _) => continue,
        };
        if let Some(dev) = config
            .devices
            .hostdevs
            .iter()
            .find(|d| theirs.iter().any(|t| t.source == d.source))
        {
            return Some(vfio_error(VfioError::InUse {
                address: dev.source.to_string(),
                domain: other.clone(),
            }));
        }
    }
    None
}

fn vfio_error(e: VfioError) -> Error {
    match e {
        VfioError::InUse { .. } => Error::Busy {
            name: String::new(),
            detail: e.to_string(),
        },
        VfioError::Io { .. } | VfioError::Rebind { .. } => Error::Internal(e.to_string()),
        _ => Error::InvalidConfig(e.to_string()),
    }
}

/// Puts the domain's name in an error that lacks it.
fn named(name: &str, e: Error) -> Error {
    match e {
        Error::Busy { detail, .. } => Error::Busy {
            name: name.to_owned(),
            detail,
        },
        Error::InvalidConfig(m) => Error::InvalidConfig(format!("domain '{name}': {m}")),
        Error::Internal(m) => Error::Internal(format!("domain '{name}': {m}")),
        e => e,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}
