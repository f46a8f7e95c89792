//! vCPUs and memory of a running guest (virsh `setvcpus`, `vcpucount`, `setmem`,
//! `dommemstat`, `update-memory-device`, memory device attach/detach), with virsh's
//! `--live`/`--config` semantics. Every live change is written to the runtime record (the live
//! device set, `persist::live_devices`) before it is reported done; a restarted daemon checks
//! that record against QEMU (`verify`) and a migration destination starts with it.

mod balloon;
mod memory;
pub(super) mod vcpus;
pub(super) mod verify;

use std::sync::Arc;
use std::time::Duration;

use novacron_domain::{Error, FieldError};
use serde::{Deserialize, Serialize};

pub(super) use balloon::apply_at_start as apply_balloon_at_start;
pub use balloon::{MemStats, MIN_BALLOON_KIB};
pub use memory::{MemoryDeviceReport, MemoryReport};
pub use vcpus::VcpuCount;

use super::domain::{DomainHandle, Live};

/// How long an unplug (vCPU or memory device) waits for the guest by default.
pub const DEFAULT_UNPLUG_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a request may ask for.
pub const MAX_UNPLUG_TIMEOUT: Duration = Duration::from_secs(600);

/// virsh's `--live`, `--config` (both may be given); none: the running guest if it runs, else
/// the definition (`--current`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// `(live, config)` for `scope` on `h` now; refuses what cannot apply.
fn resolve(
    h: &DomainHandle,
    scope: Scope,
    what: &'static str,
) -> Result<(Option<Arc<Live>>, bool), Error> {
    let live = h.run().live().cloned();
    let running = live.is_some();
    let (want_live, want_config) = if !scope.live && !scope.config {
        (running, !running)
    } else {
        (scope.live, scope.config)
    };
    if want_live && !running {
        return Err(Error::WrongState {
            name: h.name.clone(),
            state: h.state(),
            operation: what,
        });
    }
    if want_config && !h.definition().persistent {
        return Err(Error::InvalidConfig(format!(
            "domain '{}' is transient: it has no persistent definition (--config)",
            h.name
        )));
    }
    Ok((if want_live { live } else { None }, want_config))
}

/// Runs the QMP `change` of a hotplug while the runtime record with the device set `after`
/// is written, instead of one after the other: the answer still waits for both (the record is
/// durable before the caller hears "done"), but the fsyncs no longer add to QEMU's time. A
/// crash between them is what `verify` settles at the next start (QEMU's word is taken); a
/// refused change writes the record back to `before`.
async fn change_recorded<T>(
    inner: &super::Inner,
    name: &str,
    live: &Live,
    before: crate::persist::live_devices::LiveDevices,
    after: crate::persist::live_devices::LiveDevices,
    change: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let (saved, done) = tokio::join!(inner.save_live(name, live, after), change);
    match done {
        Ok(v) => saved.map(|()| v),
        Err(e) => {
            if let Err(back) = inner.save_live(name, live, before).await {
                tracing::warn!(domain = name, error = %back, "hotplug refused: record not restored");
            }
            Err(e)
        }
    }
}

fn check_timeout(timeout: Option<Duration>) -> Result<Duration, Error> {
    let t = timeout.unwrap_or(DEFAULT_UNPLUG_TIMEOUT);
    if t.is_zero() || t > MAX_UNPLUG_TIMEOUT {
        return Err(Error::Invalid {
            message: format!("timeout: 1 to {} seconds", MAX_UNPLUG_TIMEOUT.as_secs()),
            details: vec![FieldError::new("timeout", "out of range")],
        });
    }
    Ok(t)
}

fn invalid(field: &str, message: String) -> Error {
    Error::Invalid {
        details: vec![FieldError::new(field, message.clone())],
        message,
    }
}

fn qmp_error(name: &str, what: &str, e: novacron_qmp::Error) -> Error {
    super::lifecycle::qmp_error(name, what, e)
}
