//! What this host can run. (The placement issue replaces this with full capability probing.)

use std::fs::OpenOptions;

/// Whether `/dev/kvm` can be opened for reading and writing; the error says why not.
pub fn kvm_usable() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
}
