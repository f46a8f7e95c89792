//! At start, the daemon opens every file a guest uses itself, after the storage-root rule
//! (for non-admin definitions), and QEMU gets descriptors, never the names: it can run as an
//! unprivileged user with images in root-only directories, and a file swapped for a symlink
//! after the check is not what QEMU opens.
//!
//! - disks, CD-ROMs, pflash firmware and NVRAM, chardev `file` outputs and the rng backend go
//!   into fd sets (`-add-fd`, then `/dev/fdset/N` as the file name). Each set holds one
//!   descriptor with the access mode QEMU asks for (read-only media O_RDONLY, else O_RDWR).
//! - `-kernel`/`-initrd` are read by QEMU 7.2 with plain `open()` (no fd sets): QEMU opens
//!   `/proc/self/fd/N`. For an unprivileged QEMU the file is first copied into a sealed memfd
//!   (memfd inodes are mode 0777, so reopening it through /proc works for any user; the
//!   original may be a root-only file); a root QEMU reopens the daemon's descriptor directly.
//! - a qcow2 image's backing chain is opened here too and given to QEMU inline (the names in
//!   the headers are never opened by QEMU; relative ones would not even resolve against
//!   `/dev/fdset/N`). Formats come from the header's backing-format extension, else from the
//!   file's magic.
//! - UNIX sockets are still bound/connected by QEMU by name (checked here, not opened), and so
//!   is a qcow2 external data file (checked here for non-admins).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SealFlag};
use nix::sys::stat::Mode;
use novacron_domain::model::{DiskFormat, DomainConfig, HostRef, HostRefKind};
use novacron_domain::{BackingImage, FdSetEntry};

use super::storage_roots::{
    check_image, check_ref, relative_to, Refusal, StorageRoots, Violation, MAX_CHAIN,
};

/// What a start hands to QEMU.
#[derive(Debug, Default)]
pub struct GuestFiles {
    /// Descriptors QEMU inherits, at these numbers.
    pub fds: Vec<(i32, OwnedFd)>,
    pub fd_sets: Vec<FdSetEntry>,
    /// Field -> the path QEMU opens instead ([`novacron_domain::LaunchContext::host_paths`]).
    pub host_paths: BTreeMap<String, String>,
    /// Disk field -> its backing chain as opened here
    /// ([`novacron_domain::LaunchContext::backing_chains`]).
    pub backing_chains: BTreeMap<String, Vec<BackingImage>>,
}

impl GuestFiles {
    /// Adds a file the daemon chose itself (autoselected firmware, its NVRAM): the path comes
    /// from root-owned firmware descriptors or the daemon's state directory, not from the
    /// definition, so it is opened as named whatever the definition's trust. It takes the
    /// next descriptor and fd set after `first_fd` / `first_set` and those already used.
    /// Blocking: run off the async runtime.
    pub fn add_daemon_file(
        &mut self,
        field: &str,
        path: &std::path::Path,
        writable: bool,
        first_fd: i32,
        first_set: u32,
    ) -> Result<(), String> {
        let flags = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd = nix::fcntl::open(
            path,
            flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {}", path.display(), io::Error::from(e)))?;
        let next_fd = self
            .fds
            .iter()
            .map(|(n, _)| n + 1)
            .max()
            .unwrap_or(first_fd);
        let set = self
            .fd_sets
            .iter()
            .map(|s| s.set + 1)
            .max()
            .unwrap_or(first_set);
        self.fd_sets.push(FdSetEntry {
            fd: next_fd,
            set,
            opaque: field.to_owned(),
        });
        self.host_paths
            .insert(field.to_owned(), format!("/dev/fdset/{set}"));
        self.fds.push((next_fd, fd));
        Ok(())
    }
}

/// How to open: as the definition's trust allows, numbering from `first_fd` / `first_set`.
pub struct Opening<'a> {
    pub roots: &'a StorageRoots,
    /// The definition was accepted under admin rules: its paths are taken as written.
    pub admin: bool,
    /// QEMU runs as another user: boot images are copied into memfds.
    pub copy_boot_images: bool,
    pub first_fd: i32,
    pub first_set: u32,
    /// At most this many descriptors.
    pub max_fds: usize,
}

/// Opens every host file of `config`; all refusals at once, or the descriptors.
pub fn open(config: &DomainConfig, how: &Opening<'_>) -> Result<GuestFiles, Vec<Violation>> {
    let refs = config.host_refs();
    if !how.admin {
        // Every rule first, before anything is opened (or created): a refused start changes
        // nothing on disk. The opens below resolve beneath the roots again, so a swap in
        // between is caught there.
        let violations: Vec<Violation> = refs
            .iter()
            .filter_map(|r| {
                check_ref(how.roots, r).err().map(|refusal| Violation {
                    field: r.field.clone(),
                    refusal,
                })
            })
            .collect();
        if !violations.is_empty() {
            return Err(violations);
        }
    }
    let mut out = GuestFiles::default();
    let mut violations = Vec::new();
    let (mut fd, mut set) = (how.first_fd, how.first_set);
    for r in refs {
        match open_one(&r, how) {
            Ok(None) => {}
            Ok(Some((file, via, chain))) => {
                if out.fds.len() + 1 + chain.len() > how.max_fds {
                    violations.push(Violation {
                        field: r.field.clone(),
                        refusal: Refusal::Io(format!(
                            "more than {} host files in one guest",
                            how.max_fds
                        )),
                    });
                    continue;
                }
                let path = match via {
                    Via::FdSet => {
                        out.fd_sets.push(FdSetEntry {
                            fd,
                            set,
                            opaque: r.field.clone(),
                        });
                        set += 1;
                        format!("/dev/fdset/{}", set - 1)
                    }
                    Via::ProcFd => format!("/proc/self/fd/{fd}"),
                };
                out.host_paths.insert(r.field.clone(), path);
                out.fds.push((fd, file));
                fd += 1;
                let mut images = Vec::new();
                for (k, (file, format)) in chain.into_iter().enumerate() {
                    out.fd_sets.push(FdSetEntry {
                        fd,
                        set,
                        opaque: format!("{}.backing[{k}]", r.field),
                    });
                    images.push(BackingImage {
                        format,
                        path: format!("/dev/fdset/{set}"),
                    });
                    out.fds.push((fd, file));
                    fd += 1;
                    set += 1;
                }
                if !images.is_empty() {
                    out.backing_chains.insert(r.field.clone(), images);
                }
            }
            Err(refusal) => violations.push(Violation {
                field: r.field.clone(),
                refusal,
            }),
        }
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(violations)
    }
}

enum Via {
    FdSet,
    ProcFd,
}

/// A backing chain as opened: each image read-only, with its format.
type Chain = Vec<(OwnedFd, DiskFormat)>;

fn open_one(r: &HostRef<'_>, how: &Opening<'_>) -> Result<Option<(OwnedFd, Via, Chain)>, Refusal> {
    let path = r.value.as_ref();
    let rw = |readonly: bool| {
        if readonly {
            OFlag::O_RDONLY
        } else {
            OFlag::O_RDWR
        }
    };
    let (flags, via, regular) = match r.kind {
        HostRefKind::DiskImage { readonly, .. } => (rw(readonly), Via::FdSet, true),
        HostRefKind::BlockDevice { readonly } => (rw(readonly), Via::FdSet, false),
        HostRefKind::Firmware { readonly } => (rw(readonly), Via::FdSet, true),
        HostRefKind::Nvram => (OFlag::O_RDWR, Via::FdSet, true),
        // Appended to, never truncated: the file may be one another guest uses (libvirt's
        // `append='on'`).
        HostRefKind::CharFile => (
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND,
            Via::FdSet,
            true,
        ),
        HostRefKind::RngBackend => (OFlag::O_RDONLY, Via::FdSet, false),
        HostRefKind::BootImage => (OFlag::O_RDONLY, Via::ProcFd, true),
        // QEMU's 9p server opens `/proc/self/fd/N` as its root: the directory as checked.
        HostRefKind::SharedDir { .. } => (OFlag::O_RDONLY | OFlag::O_DIRECTORY, Via::ProcFd, false),
        // Checked above; not opened: QEMU binds/connects sockets by name, the template is
        // not used at start, VFIO and macvtap are opened by their own host code, QEMU
        // connects network disks itself (admin-only).
        HostRefKind::NvramTemplate
        | HostRefKind::UnixSocket { .. }
        | HostRefKind::HostPci { .. }
        | HostRefKind::HostNic
        | HostRefKind::HostVlan
        | HostRefKind::NetworkDisk { .. }
        | HostRefKind::ListenAddress => return Ok(None),
    };
    let mode = Mode::from_bits_truncate(0o600);
    // The open entropy sources are fixed device paths, outside any root.
    let as_named = how.admin || matches!(r.kind, HostRefKind::RngBackend);
    let fd = open_file(how, as_named, path, flags, mode, regular)?;
    if let (false, HostRefKind::DiskImage { format, .. }) = (as_named, r.kind) {
        // The chain as the opened file names it (not as it was at define).
        let dup = fd
            .try_clone()
            .map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
        check_image(how.roots, path, dup, format)?;
    }
    let chain = match r.kind {
        HostRefKind::DiskImage {
            format: DiskFormat::Qcow2,
            ..
        } => open_chain(how, path, &fd)?,
        _ => Vec::new(),
    };
    let fd = match (&via, how.copy_boot_images) {
        (Via::ProcFd, true) if r.kind == HostRefKind::BootImage => {
            sealed_copy(fd).map_err(|e| match e.kind() {
                io::ErrorKind::FileTooLarge => Refusal::Rule(format!("{path}: {e}")),
                _ => Refusal::Io(format!("{path}: {e}")),
            })?
        }
        _ => fd,
    };
    Ok(Some((fd, via, chain)))
}

/// Opens `path` as written (admin, or a fixed device) or beneath its storage root, without
/// blocking on a FIFO; checks it is a regular file when `regular`.
fn open_file(
    how: &Opening<'_>,
    as_named: bool,
    path: &str,
    flags: OFlag,
    mode: Mode,
    regular: bool,
) -> Result<OwnedFd, Refusal> {
    // Non-blocking open: a FIFO must not hang the start. Cleared again below.
    let flags = flags | OFlag::O_NONBLOCK;
    let fd = if as_named {
        nix::fcntl::open(path, flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, mode).map_err(|e| {
            match e {
                nix::errno::Errno::ENOENT => Refusal::Missing(format!("{path} does not exist")),
                e => Refusal::Io(format!("{path}: {}", io::Error::from(e))),
            }
        })?
    } else {
        how.roots.open_beneath(path, flags, mode)?
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
    if regular && (st.st_mode & nix::libc::S_IFMT) != nix::libc::S_IFREG {
        return Err(Refusal::Rule(format!("{path} is not a regular file")));
    }
    let fl = nix::fcntl::fcntl(&fd, FcntlArg::F_GETFL)
        .map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(fl))
        .map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
    Ok(fd)
}

/// Opens the backing chain of the qcow2 image `top` (read-only, beneath the roots for a
/// non-admin definition), top first; ends at an image without a backing file.
fn open_chain(how: &Opening<'_>, top_path: &str, top: &OwnedFd) -> Result<Chain, Refusal> {
    let io_err = |p: &str, e: &dyn std::fmt::Display| Refusal::Io(format!("{p}: {e}"));
    let mut chain = Vec::new();
    let mut file = std::fs::File::from(top.try_clone().map_err(|e| io_err(top_path, &e))?);
    let mut at = top_path.to_owned();
    for _ in 0..MAX_CHAIN {
        let refs = match super::qcow2::refs(&mut file) {
            Ok(r) => r,
            // Not qcow2 (yet): QEMU refuses it; nothing to follow.
            Err(super::qcow2::Qcow2Error::NotQcow2) => return Ok(chain),
            Err(e) => return Err(Refusal::Rule(format!("{at}: {e}"))),
        };
        let Some(backing) = refs.backing else {
            return Ok(chain);
        };
        let next = relative_to(&at, &backing)?;
        let fd = open_file(how, how.admin, &next, OFlag::O_RDONLY, Mode::empty(), true).map_err(
            |e| match e {
                Refusal::Rule(s) => Refusal::Rule(format!("{at}: backing file {s}")),
                Refusal::Missing(s) => Refusal::Missing(format!("{at}: backing file {s}")),
                Refusal::Io(s) => Refusal::Io(format!("{at}: backing file {s}")),
            },
        )?;
        let mut next_file = std::fs::File::from(fd.try_clone().map_err(|e| io_err(&next, &e))?);
        let format = match refs.backing_format.as_deref() {
            Some("qcow2") => DiskFormat::Qcow2,
            Some("raw") => DiskFormat::Raw,
            Some(other) => {
                return Err(Refusal::Rule(format!(
                    "{at}: backing format {other:?} is not supported (raw or qcow2)"
                )))
            }
            // No recorded format: the magic decides, as QEMU's probe would.
            None => match super::qcow2::refs(&mut next_file) {
                Err(super::qcow2::Qcow2Error::NotQcow2) => DiskFormat::Raw,
                _ => DiskFormat::Qcow2,
            },
        };
        chain.push((fd, format));
        if format == DiskFormat::Raw {
            return Ok(chain);
        }
        file = next_file;
        at = next;
    }
    Err(Refusal::Rule(format!(
        "{top_path}: backing chain deeper than {MAX_CHAIN}"
    )))
}

/// Largest kernel or initrd copied into memory for an unprivileged QEMU: the copy lives as
/// long as the guest, outside its memory accounting (a distribution's initrd is tens of MiB).
pub const MAX_BOOT_IMAGE: u64 = 512 << 20;

/// A read-only, sealed in-memory copy of `file` that any user can reopen via /proc; at most
/// [`MAX_BOOT_IMAGE`] bytes (`FileTooLarge` beyond).
fn sealed_copy(file: OwnedFd) -> io::Result<OwnedFd> {
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "is over the {} MiB limit for a kernel or initrd",
                MAX_BOOT_IMAGE >> 20
            ),
        )
    };
    let mut src = std::fs::File::from(file);
    if src.metadata()?.len() > MAX_BOOT_IMAGE {
        return Err(too_large());
    }
    let memfd = nix::sys::memfd::memfd_create(
        "novacron-boot",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut dst = std::fs::File::from(memfd);
    // Bounded again while copying: the file may grow after the fstat.
    if io::copy(&mut io::Read::take(&mut src, MAX_BOOT_IMAGE + 1), &mut dst)? > MAX_BOOT_IMAGE {
        return Err(too_large());
    }
    let memfd = OwnedFd::from(dst);
    nix::fcntl::fcntl(
        memfd.as_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_images_are_copied_into_sealed_memfds() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, b"kernel bytes").unwrap();
        let fd: OwnedFd = std::fs::File::open(&p).unwrap().into();
        let copy = sealed_copy(fd).unwrap();
        // Over the limit: refused before anything is copied.
        let big = d.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_BOOT_IMAGE + 1)
            .unwrap();
        let e = sealed_copy(std::fs::File::open(&big).unwrap().into()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{e}");
        let via_proc = std::fs::read(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&copy)
        ))
        .unwrap();
        assert_eq!(via_proc, b"kernel bytes");
        let seals = nix::fcntl::fcntl(copy.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & nix::libc::F_SEAL_WRITE, 0);
    }
}
