//! Opening, probing and listing volume files. A volume name is one checked path component
//! (`novacron_domain::storage::check_name`) opened with `openat(pool_fd, name, O_NOFOLLOW)`:
//! a symbolic link planted in a pool is never followed out of it. Formats and sizes come from
//! the file's own header (no qemu-img per file: listing a thousand volumes stays fast).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use novacron_domain::storage::{Backing, VolumeFormat};

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Why a volume file could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Missing,
    /// A symbolic link, a directory, a device: not a volume.
    NotAVolume(String),
    Exists,
    Io(io::Error),
}

/// What a volume file is, from its header and `fstat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: VolumeFormat,
    pub capacity: u64,
    pub allocation: u64,
    pub backing: Option<Backing>,
    /// Identity, for "is this file used by a domain / the base of another volume".
    pub dev: u64,
    pub ino: u64,
}

/// The pool's directory (a trusted path: a storage root or a pool checked inside one).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens volume `name` in `dir` with `flags` (`O_NOFOLLOW | O_CLOEXEC` added); with
/// `O_CREAT` it is created exclusively (mode 0640). Only regular files are volumes.
pub fn open(dir: &OwnedFd, name: &str, flags: OFlag) -> Result<File, OpenError> {
    let creating = flags.contains(OFlag::O_CREAT);
    let flags = flags
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | if creating {
            OFlag::O_EXCL
        } else {
            OFlag::O_NONBLOCK
        };
    let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(0o640))
        .map_err(|e| match e {
            Errno::ENOENT => OpenError::Missing,
            Errno::EEXIST => OpenError::Exists,
            Errno::ELOOP => OpenError::NotAVolume(format!(
                "{name} is a symbolic link (volumes are regular files in the pool)"
            )),
            Errno::EISDIR => OpenError::NotAVolume(format!("{name} is a directory")),
            e => OpenError::Io(e.into()),
        })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotAVolume(format!(
            "{name} is not a regular file"
        )));
    }
    // O_NONBLOCK is there so a FIFO planted under the name cannot hang the open; on a regular
    // file it changes nothing, so it stays (a syscall less per file in a listing).
    Ok(file)
}

/// The format the file's header says: qcow2 by its magic, raw otherwise.
pub fn probe(file: &File) -> io::Result<Probe> {
    probe_with(file, &file.metadata()?)
}

/// [`probe`] with the file's `fstat` already taken.
fn probe_with(file: &File, meta: &std::fs::Metadata) -> io::Result<Probe> {
    let mut head = [0u8; 32];
    let n = read_at_most(file, &mut head, 0)?;
    let allocation = meta.blocks().saturating_mul(512);
    if n >= 32 && &head[..4] == QCOW2_MAGIC {
        let capacity = u64::from_be_bytes(head[24..32].try_into().unwrap_or_default());
        let backing_offset = u64::from_be_bytes(head[8..16].try_into().unwrap_or_default());
        // Only an image with a backing file needs the header walk (its name and format).
        let backing = if backing_offset == 0 {
            None
        } else {
            let mut f = file;
            let refs = super::super::qcow2::refs(&mut f)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            refs.backing.map(|path| Backing {
                path,
                format: refs.backing_format.and_then(|f| f.parse().ok()),
            })
        };
        return Ok(Probe {
            format: VolumeFormat::Qcow2,
            capacity,
            allocation,
            backing,
            dev: meta.dev(),
            ino: meta.ino(),
        });
    }
    Ok(Probe {
        format: VolumeFormat::Raw,
        capacity: meta.len(),
        allocation,
        backing: None,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The volumes found (by name) and the files that could not be read (`name: why`).
pub type Listing = (Vec<(String, Probe)>, Vec<String>);

/// Every volume in `dir`: regular files whose names are valid volume names, probed. A file
/// that cannot be probed is listed by the caller's `skip` (reported, not fatal).
pub fn list(dir: &OwnedFd) -> io::Result<Listing> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if novacron_domain::storage::check_name(&name).is_err() {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // One stat; the header only when the file changed since it was last read.
        if let Some(p) = nix::sys::stat::fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .and_then(|st| HEADERS.known(&st, now()))
        {
            out.push((name, p));
            continue;
        }
        match open(dir, &name, OFlag::O_RDONLY).map(|f| probe_cached(&f)) {
            Ok(Ok(p)) => out.push((name, p)),
            Ok(Err(e)) => problems.push(format!("{name}: {e}")),
            Err(OpenError::Missing) => {}
            Err(OpenError::NotAVolume(_)) => {}
            Err(OpenError::Exists) => {}
            Err(OpenError::Io(e)) => problems.push(format!("{name}: {e}")),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, problems))
}

/// What a file's header said, by identity and change stamp: a listing of a pool whose files
/// did not change since the last one reads no header (one `fstatat` per volume instead of
/// open, fstat, read, close). Valid while the file's (dev, ino, size, mtime, ctime) are the
/// same; a file changed within the last [`SETTLE`] is never taken from here (a write in the
/// same timestamp tick as the read would not change the stamp: git's "racily clean" rule).
/// Only the header's facts come from here; the allocation is always the stat's.
struct Headers(std::sync::Mutex<std::collections::HashMap<(u64, u64), (Stamp, Probe)>>);

type Stamp = (i64, i64, i64, i64, i64);

/// How long after its last change a file's header is read again on every listing.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);
/// At most this many files remembered (then forgotten all at once, and re-read).
const MAX_HEADERS: usize = 65_536;

static HEADERS: std::sync::LazyLock<Headers> =
    std::sync::LazyLock::new(|| Headers(std::sync::Mutex::default()));

fn stamp(size: i64, mtime: (i64, i64), ctime: (i64, i64)) -> Stamp {
    (size, mtime.0, mtime.1, ctime.0, ctime.1)
}

/// Now, as a time since the epoch (what `ctime` counts).
fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whether a file changed at `ctime` (seconds, nanoseconds) is settled at `now`.
fn settled(ctime: (i64, i64), now: std::time::Duration) -> bool {
    let changed = std::time::Duration::new(
        u64::try_from(ctime.0).unwrap_or(u64::MAX),
        u32::try_from(ctime.1).unwrap_or(0),
    );
    now.checked_sub(changed).is_some_and(|age| age >= SETTLE)
}

impl Headers {
    fn known(&self, st: &nix::sys::stat::FileStat, now: std::time::Duration) -> Option<Probe> {
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return None;
        }
        let ctime = (st.st_ctime, st.st_ctime_nsec);
        let s = stamp(st.st_size, (st.st_mtime, st.st_mtime_nsec), ctime);
        if !settled(ctime, now) {
            return None;
        }
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (was, p) = map.get(&(st.st_dev, st.st_ino))?;
        (*was == s).then(|| Probe {
            allocation: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
            ..p.clone()
        })
    }

    fn remember(&self, meta: &std::fs::Metadata, p: &Probe, now: std::time::Duration) {
        let ctime = (meta.ctime(), meta.ctime_nsec());
        if !settled(ctime, now) {
            return;
        }
        let s = stamp(
            i64::try_from(meta.size()).unwrap_or(i64::MAX),
            (meta.mtime(), meta.mtime_nsec()),
            ctime,
        );
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_HEADERS {
            map.clear();
        }
        map.insert((meta.dev(), meta.ino()), (s, p.clone()));
    }
}

/// [`probe`], remembered for the next listing. The stamp is taken before the header is read,
/// so a change during the read makes the stamp stale, never the facts.
fn probe_cached(file: &File) -> io::Result<Probe> {
    let meta = file.metadata()?;
    let p = probe_with(file, &meta)?;
    HEADERS.remember(&meta, &p, now());
    Ok(p)
}

/// Bytes free for unprivileged writers on the file system of `dir`, and its size.
pub fn space(dir: &OwnedFd) -> io::Result<(u64, u64, u64)> {
    let st = nix::sys::statvfs::fstatvfs(dir.as_fd()).map_err(io::Error::from)?;
    let frag = st.fragment_size();
    let total = st.blocks().saturating_mul(frag);
    let free = st.blocks_free().saturating_mul(frag);
    let avail = st.blocks_available().saturating_mul(frag);
    Ok((total, total.saturating_sub(free), avail))
}

/// Removes volume `name` from `dir` (the name only: a link, if one were there, not its target).
pub fn unlink(dir: &OwnedFd, name: &str) -> io::Result<()> {
    nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A remembered header is used only for the same file, unchanged, changed long enough
    /// ago; anything else reads the header again.
    #[test]
    fn a_header_is_reused_only_while_the_file_is_unchanged_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.qcow2");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        crate::host::qcow2_create::write_overlay(&f, 1 << 20, "/b", "raw").unwrap();
        let headers = Headers(Mutex::new(HashMap::new()));
        let meta = f.metadata().unwrap();
        let p = probe(&f).unwrap();
        assert_eq!(p.capacity, 1 << 20);
        let changed = Duration::new(
            u64::try_from(meta.ctime()).unwrap(),
            u32::try_from(meta.ctime_nsec()).unwrap(),
        );
        let st = || nix::sys::stat::stat(&path).unwrap();
        // Read while still settling: not remembered.
        headers.remember(&meta, &p, changed + SETTLE / 2);
        assert_eq!(headers.known(&st(), changed + SETTLE * 2), None);
        headers.remember(&meta, &p, changed + SETTLE);
        assert_eq!(headers.known(&st(), changed + SETTLE), Some(p.clone()));
        // Looked up before it settled: read again.
        assert_eq!(headers.known(&st(), changed + SETTLE / 2), None);
        // Changed since (here its size): read again.
        f.set_len(meta.len() + 512).unwrap();
        let later = changed + SETTLE * 10;
        assert_eq!(headers.known(&st(), later), None);
        // A symbolic link under a volume's name is never a volume, remembered or not.
        std::os::unix::fs::symlink(&path, dir.path().join("l")).unwrap();
        let link = nix::sys::stat::lstat(&dir.path().join("l")).unwrap();
        assert_eq!(headers.known(&link, later), None);
    }
}
