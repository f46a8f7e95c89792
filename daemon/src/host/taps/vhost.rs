//! vhost-net: the in-kernel virtio-net data path, where the host has `/dev/vhost-net`.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;

pub const VHOST_NET: &str = "/dev/vhost-net";

/// One vhost-net descriptor per queue, or `None` when the host has no (usable) vhost-net:
/// QEMU then runs the NIC in userspace, slower but the same to the guest. Blocking.
pub fn open(queues: u32) -> Option<Vec<OwnedFd>> {
    (0..queues.max(1))
        .map(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(VHOST_NET)
                .map(OwnedFd::from)
                .ok()
        })
        .collect()
}
