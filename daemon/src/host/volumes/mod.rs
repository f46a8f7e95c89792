//! Volumes as files in a pool directory: opened by name beneath the pool's directory
//! descriptor, never following a link (`files`), qemu-img run on descriptors the daemon opened
//! (`qemu_img`), and the sparse-aware byte streams of upload and download (`transfer`).

pub mod files;
pub mod qemu_img;
pub mod transfer;
