//! Host resources taken for a guest just before QEMU starts and given back after it stops:
//! hugepages added to a short pool (when `[hugepages] reserve` allows it) and PCI devices
//! moved to vfio-pci. The fit check runs between the two, so the pool it sees already holds
//! the reserved pages and no device is detached for a guest that does not fit.

use std::sync::Arc;

use novacron_domain::{DomainConfig, Error};

use super::Inner;
use crate::host::hugepages;
use crate::host::resources::HeldResources;
use crate::host::vfio::{self, VfioError};
use crate::host::Topology;

/// Reserves hugepages (if allowed and short), checks the guest fits, then checks and detaches
/// its host devices. On failure everything taken is given back.
pub(super) async fn take(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
) -> Result<HeldResources, Error> {
    let mut held = HeldResources::default();
    let wants_pages = config
        .memory_backing
        .as_ref()
        .is_some_and(|b| b.hugepages.is_some());
    if wants_pages && inner.config.hugepages.reserve {
        let root = inner.host.sysfs().clone();
        let cfg = config.clone();
        held.hugepages = blocking(move || {
            let topo = Topology::read(&root).map_err(|e| Error::Internal(e.to_string()))?;
            hugepages::reserve(&root, &topo, &hugepages::demand(&cfg, &topo))
                .map_err(|e| Error::Internal(format!("reserving hugepages: {e}")))
        })
        .await
        .map_err(|e| named(name, e))?;
    }
    if let Err(e) = inner.host.check_fit(name, config).await {
        release(inner, &held).await;
        return Err(e);
    }
    let hostdevs = config.devices.hostdevs.clone();
    if !hostdevs.is_empty() {
        let prepared = match in_use(inner, name, config) {
            Some(e) => Err(e),
            None => {
                let root = inner.host.sysfs().clone();
                blocking(move || vfio::prepare(&root, &hostdevs).map_err(vfio_error)).await
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
                release(inner, &held).await;
                return Err(named(name, e));
            }
        }
    }
    Ok(held)
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
