//! Storage pools and volumes: libvirt's `dir` pool and its file volumes (qcow2, raw). The
//! models (also the JSON forms), the names and sizes a request may carry, and the pool and
//! volume XML (https://libvirt.org/formatstorage.html) with reader and writer.

mod names;
mod pool;
mod size;
mod volume;

pub use names::{check_name, MAX_NAME_BYTES};
pub use pool::{PoolConfig, PoolState, PoolStats};
pub use size::{parse_size, parse_unit, MAX_VOLUME_BYTES};
pub use volume::{Backing, VolumeConfig, VolumeFormat, VolumeInfo};

/// A small writer shared by the pool and volume XML (2-space indent, single quotes, as
/// `virsh pool-dumpxml`).
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}
