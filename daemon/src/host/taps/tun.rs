//! Tap devices through `/dev/net/tun`.
//!
//! Taps are NOT persistent (no `TUNSETPERSIST`): the daemon holds the descriptors until QEMU
//! has inherited them (or `getfd` took one), so the kernel removes the tap the moment the last
//! holder, QEMU, exits — whether the daemon is there to see it or not. A daemon killed with
//! its guests still running leaves nothing behind once they stop, and no crash window exists
//! in which a tap outlives everything that knew about it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const TUN_DEVICE: &str = "/dev/net/tun";
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// Fail instead of attaching to an existing tap of the same name (someone else's).
const IFF_TUN_EXCL: libc::c_short = -0x8000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// The flags a queue of the tap is opened with.
pub const fn flags(queues: u32) -> libc::c_short {
    let base = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if queues > 1 {
        base | IFF_MULTI_QUEUE
    } else {
        base
    }
}

/// Creates tap `name` and returns one descriptor per queue (`queues` ≥ 1; more than one
/// opens it multi-queue). Refuses when a link of that name already exists, so the daemon never
/// takes over an interface it did not make. Blocking (opens a device node).
pub fn create(name: &str, queues: u32) -> io::Result<Vec<OwnedFd>> {
    super::names::check(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let queues = queues.max(1);
    let mut fds = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let file = OpenOptions::new().read(true).write(true).open(TUN_DEVICE)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            // Only the first queue creates: the others attach to it.
            flags: flags(queues) | if q == 0 { IFF_TUN_EXCL } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq, which IfReq lays out (40 bytes), on a
        // descriptor we own for the whole call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("an interface named '{name}' already exists"),
                ),
                _ => e,
            });
        }
        fds.push(OwnedFd::from(file));
    }
    Ok(fds)
}
