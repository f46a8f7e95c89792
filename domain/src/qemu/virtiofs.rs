//! virtiofs: where each share's vhost-user socket lives. The host layer creates and binds it
//! (and hands the listening socket to the virtiofsd it runs); the argv builder points QEMU's
//! chardev at it. One function, so the two cannot disagree.

use std::path::{Path, PathBuf};

/// The vhost-user socket of `devices.filesystems[index]` in the guest's runtime directory.
pub fn virtiofs_socket(runtime_dir: &Path, index: usize) -> PathBuf {
    runtime_dir.join(format!("fs{index}.sock"))
}

/// vhost-user-fs-pci's virtqueue size (libvirt's default is QEMU's, 128; 1024 is what
/// virtiofsd's documentation recommends and what `<driver queue=...>` is usually set to).
pub const QUEUE_SIZE: u32 = 1024;
