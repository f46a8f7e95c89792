//! The character device of a macvtap link: `/dev/tap<ifindex>`, made from the link's sysfs
//! `dev` numbers when no udev is there to make it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens `queues` descriptors on macvtap `name` (ifindex `index`). Blocking.
pub fn open(
    sys_class_net: &Path,
    dev_dir: &Path,
    name: &str,
    index: u32,
    queues: u32,
) -> io::Result<Vec<OwnedFd>> {
    let node = ensure_node(sys_class_net, dev_dir, name, index)?;
    (0..queues.max(1))
        .map(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&node)
                .map(OwnedFd::from)
        })
        .collect()
}

/// `/dev/tap<index>`; created (mode 0600) from `/sys/class/net/<name>/macvtap/tap<index>/dev`
/// when missing. An existing node must be a character device with those numbers.
fn ensure_node(
    sys_class_net: &Path,
    dev_dir: &Path,
    name: &str,
    index: u32,
) -> io::Result<PathBuf> {
    let numbers = std::fs::read_to_string(
        sys_class_net
            .join(name)
            .join("macvtap")
            .join(format!("tap{index}"))
            .join("dev"),
    )?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| io::Error::other(format!("unreadable dev numbers '{}'", numbers.trim())))?;
    let want = nix::sys::stat::makedev(major.into(), minor.into());
    let node = dev_dir.join(format!("tap{index}"));
    match nix::sys::stat::lstat(&node) {
        Ok(st) => {
            let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
            if !is_char || st.st_rdev != want {
                return Err(io::Error::other(format!(
                    "{} is not the character device {major}:{minor} of macvtap '{name}'",
                    node.display()
                )));
            }
        }
        Err(nix::errno::Errno::ENOENT) => {
            match nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                want,
            ) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(node)
}
