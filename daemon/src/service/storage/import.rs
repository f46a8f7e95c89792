//! `vol-import`: an existing file on the daemon's host becomes a volume. The path is hostile:
//! a non-admin may only name a file inside the storage roots (its directory resolved beneath a
//! root, the file opened by its last name without following a link); an admin any file. It
//! must be a regular file, raw or qcow2 as its header says (and as `format` demands, if
//! given), and pass the one image rule of the trust checks (`storage_roots::check_image`: no
//! external data file, the backing chain inside the roots) for non-admins; an external data
//! file is refused for everyone (a copy would lack the data). The file is copied sparse-aware
//! into a hidden temporary name in the pool, synced and renamed to its name (refused, with
//! nothing left, if the name exists) — or with `move` renamed into the pool when it is on the
//! pool's file system (else copied, then removed). A daemon that dies half-way leaves only a
//! temporary file, which the next start removes ([`sweep`]).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::Mode;
use novacron_domain::storage::{PoolConfig, VolumeFormat, VolumeInfo};
use novacron_domain::Error;
use serde::Deserialize;

use super::errors::{forbidden, invalid, io, joined};
use super::pools::Pools;
use super::usage::{users, Disks};
use super::volumes::{based_on, info, name_ok, probe, qerr, Busy, QUICK};
use crate::host::storage_roots::{check_image, Refusal, StorageRoots};
use crate::host::volumes::files::{self, OpenError};
use crate::host::volumes::{qemu_img, transfer};
use crate::service::Service;

/// The prefix of an import's temporary file in the pool (hidden: never listed as a volume,
/// and no volume name starts with a dot).
pub const TEMP_PREFIX: &str = ".novacron-import-";
/// Bytes read at once while copying.
const CHUNK: usize = 1 << 20;

/// `vol-import`'s request: the file, and how it gets into the pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The file on the daemon's host: absolute.
    pub path: String,
    /// Rename the file into the pool instead of copying it.
    #[serde(default, rename = "move")]
    pub move_file: bool,
    /// The format the file must have; refused if its header says otherwise.
    #[serde(default)]
    pub format: Option<VolumeFormat>,
}

/// The source, opened as the caller's role allows.
struct Source {
    file: File,
    /// Its directory (read-only, for renaming and removing it by name) and its name there.
    dir: OwnedFd,
    leaf: String,
    /// `(dev, ino)`.
    id: (u64, u64),
}

fn bad_path(why: impl Into<String>) -> Error {
    invalid("path", why)
}

/// The refusal of `path` by the storage-root rule, as the field `path`.
fn refusal(r: Refusal) -> Error {
    match r {
        Refusal::Rule(why) => forbidden("path", why),
        Refusal::Missing(why) | Refusal::Io(why) => bad_path(why),
    }
}

/// Opens `path`'s directory (beneath the roots for a non-admin) and the file in it by name,
/// never following a link at the last component.
fn open_source(roots: &StorageRoots, path: &str, admin: bool) -> Result<Source, Error> {
    let p = Path::new(path);
    if !p.is_absolute() || path.chars().any(char::is_control) || path.ends_with('/') {
        return Err(bad_path(format!(
            "{path:?} is not an absolute path of a file"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad_path(format!("{path} contains '..'")));
    }
    let (Some(parent), Some(leaf)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Err(bad_path(format!("{path} names no file")));
    };
    let parent_str = parent.to_str().unwrap_or_default();
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let dir = if admin || roots.roots().iter().any(|r| r.path == parent) {
        // An admin's path as written; a root's own directory is trusted configuration.
        nix::fcntl::open(parent, dir_flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
            if !admin {
                return bad_path(format!("{parent_str}: {e}"));
            }
            match e {
                Errno::ENOENT => bad_path(format!("{parent_str} does not exist")),
                e => bad_path(format!("{parent_str}: {}", std::io::Error::from(e))),
            }
        })?
    } else {
        roots
            .open_beneath(parent_str, dir_flags, Mode::empty())
            .map_err(refusal)?
    };
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        leaf,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => bad_path(format!("{path} does not exist")),
        Errno::ELOOP => bad_path(format!("{path} is a symbolic link (name the file itself)")),
        e => bad_path(format!("{path}: {}", std::io::Error::from(e))),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| io("stat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(bad_path(format!(
            "{path} is not a regular file (directories, devices and FIFOs are not imported)"
        )));
    }
    Ok(Source {
        file,
        dir,
        leaf: leaf.to_owned(),
        id: (meta.dev(), meta.ino()),
    })
}

/// Whether `name` in `dir` is still the file with identity `id` (not swapped since it was
/// checked).
fn still(dir: &OwnedFd, name: &str, id: (u64, u64)) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(
        |st| (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG && (st.st_dev, st.st_ino) == id,
    )
}

/// A fresh temporary name in the pool.
fn temp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{TEMP_PREFIX}{}-{nanos:08x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Copies `src` into `dst` (empty, fresh): data extents only (`SEEK_DATA`/`SEEK_HOLE`), and
/// within them zero blocks left as holes; the size as the source's. Synced.
fn sparse_copy(
    src: &File,
    dst: &File,
    progress: &crate::service::operations::Progress,
) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let len = src.metadata()?.len();
    progress.report(0, len);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < len {
        let data = match lseek(src.as_fd(), at as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = match lseek(src.as_fd(), data as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(len),
            Err(_) => len,
        };
        let mut pos = data;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            let got = read_full(src, &mut buf[..n], pos)?;
            if got == 0 {
                // The file shrank under us: the rest reads as zeros (a hole).
                break;
            }
            for (k, block) in buf[..got].chunks(transfer::BLOCK).enumerate() {
                if !transfer::is_zero(block) {
                    dst.write_all_at(block, pos + (k * transfer::BLOCK) as u64)?;
                }
            }
            pos += got as u64;
            progress.report(pos.min(len), len);
        }
        at = end.max(data + 1);
    }
    dst.set_len(len)?;
    dst.sync_all()?;
    progress.report(len, len);
    Ok(())
}

fn read_full(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The temporary copy, removed unless it was renamed into place.
struct Temp<'a> {
    dir: &'a OwnedFd,
    name: String,
    keep: bool,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = files::unlink(self.dir, &self.name);
        }
    }
}

/// What the checks found out about the source.
struct Checked {
    /// A relative backing file name, as QEMU resolves it from the source's directory (to be
    /// written into the volume as an absolute name), and its format.
    rebase: Option<(String, VolumeFormat)>,
}

/// The file's format and header names, checked: the format asked for, no external data
/// file, and for a non-admin the image rule of the trust checks.
fn check_source(
    roots: &StorageRoots,
    path: &str,
    src: &Source,
    want: Option<VolumeFormat>,
    admin: bool,
) -> Result<Checked, Error> {
    let pr = files::probe(&src.file).map_err(|e| io("read the header of", path, e))?;
    if let Some(w) = want {
        if w != pr.format {
            return Err(invalid(
                "format",
                format!("{path} is {}, not {}", pr.format.as_str(), w.as_str()),
            ));
        }
    }
    let mut rebase = None;
    if pr.format == VolumeFormat::Qcow2 {
        let mut f = src.file.try_clone().map_err(|e| io("open", path, e))?;
        let refs = crate::host::qcow2::refs(&mut f)
            .map_err(|e| invalid("path", format!("{path}: {e}")))?;
        if let Some(data) = refs.data_file {
            return Err(invalid(
                "path",
                format!(
                    "{path} keeps its data in an external data file ({data}), which a copy \
                     would not contain: convert it first (qemu-img convert -O qcow2)"
                ),
            ));
        }
        if !admin {
            let fd: OwnedFd = src
                .file
                .try_clone()
                .map_err(|e| io("open", path, e))?
                .into();
            check_image(roots, path, fd, novacron_domain::model::DiskFormat::Qcow2)
                .map_err(|r| forbidden("path", r.text().to_owned()))?;
        }
        if let Some(b) = refs.backing.filter(|b| !b.starts_with('/')) {
            let abs = crate::host::storage_roots::relative_to(path, &b)
                .map_err(|r| forbidden("path", r.text().to_owned()))?;
            let format = match refs.backing_format.as_deref() {
                Some("qcow2") => VolumeFormat::Qcow2,
                Some("raw") => VolumeFormat::Raw,
                Some(other) => {
                    return Err(invalid(
                        "path",
                        format!("{path}: backing format {other:?} (raw or qcow2 only)"),
                    ))
                }
                // Not recorded: the base's own header decides, as QEMU's probe would.
                None => {
                    let base = if admin {
                        File::open(&abs).map_err(|e| io("open the backing file", &abs, e))?
                    } else {
                        File::from(
                            roots
                                .open_beneath(&abs, OFlag::O_RDONLY, Mode::empty())
                                .map_err(refusal)?,
                        )
                    };
                    files::probe(&base)
                        .map_err(|e| io("read the header of", &abs, e))?
                        .format
                }
            };
            rebase = Some((abs, format));
        }
    }
    Ok(Checked { rebase })
}

fn exists(dir: &OwnedFd, name: &str) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

fn fsync_dir(dir: &OwnedFd, what: &str) -> Result<(), Error> {
    nix::unistd::fsync(dir.as_fd()).map_err(|e| io("sync", what, e))
}

impl Service {
    /// `vol-import`: the file at `req.path` becomes volume `name` of `pool` (see the module).
    pub async fn vol_import(
        &self,
        pool: &str,
        name: &str,
        req: ImportRequest,
    ) -> Result<VolumeInfo, Error> {
        name_ok("name", name)?;
        let admin = crate::service::audit::current().is_admin();
        let disks = self.domain_disks().await?;
        let pools = self.pools();
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let p2 = pools.clone();
        let (p, dir) = tokio::task::spawn_blocking(move || p2.open(&pool))
            .await
            .map_err(joined)??;
        let _busy = Busy::take(&p, &name)?;
        let (src, checked) = {
            let (roots, path, want) = (pools.roots.clone(), req.path.clone(), req.format);
            tokio::task::spawn_blocking(move || {
                let src = open_source(&roots, &path, admin)?;
                let checked = check_source(&roots, &path, &src, want, admin)?;
                Ok::<_, Error>((src, checked))
            })
            .await
            .map_err(joined)??
        };
        {
            // Reads every user's backing chain and the pools' volumes' headers.
            let (pools, req, id) = (pools.clone(), req.clone(), src.id);
            tokio::task::spawn_blocking(move || in_use(&pools, &disks, &req, id))
                .await
                .map_err(joined)??;
        }
        if exists(&dir, &name) {
            return Err(invalid("name", format!("{}/{name} already exists", p.name)));
        }
        let same_fs = nix::sys::stat::fstat(dir.as_fd())
            .map(|st| st.st_dev == src.id.0)
            .unwrap_or(false);
        if req.move_file && same_fs {
            return self
                .import_rename(&p, &dir, &name, &src, &checked, &req.path)
                .await;
        }
        // The copy needs the file's allocated bytes free in the pool.
        let need = src
            .file
            .metadata()
            .map(|m| m.blocks().saturating_mul(512))
            .map_err(|e| io("stat", &req.path, e))?;
        let (_, _, available) = files::space(&dir).map_err(|e| io("stat", p.path.clone(), e))?;
        if need > available {
            return Err(invalid(
                "path",
                format!(
                    "{} holds {need} bytes, pool {} has {available} bytes available",
                    req.path, p.name
                ),
            ));
        }
        let tmp = temp_name();
        let dst = files::open(&dir, &tmp, OFlag::O_CREAT | OFlag::O_RDWR).map_err(|e| match e {
            OpenError::Io(e) => io("create", format!("{}/{tmp}", p.path), e),
            _ => invalid(
                "name",
                format!("cannot create a temporary file in {}", p.path),
            ),
        })?;
        let mut temp = Temp {
            dir: &dir,
            name: tmp.clone(),
            keep: false,
        };
        let (s, d) = (
            src.file.try_clone().map_err(|e| io("open", &req.path, e))?,
            dst.try_clone().map_err(|e| io("open", &tmp, e))?,
        );
        // A long copy reports its bytes to a background operation (`?wait=false`).
        let progress = crate::service::operations::Progress::current();
        tokio::task::spawn_blocking(move || sparse_copy(&s, &d, &progress))
            .await
            .map_err(joined)?
            .map_err(|e| io("copy", &req.path, e))?;
        if let Some((base, format)) = &checked.rebase {
            rebase(&dst, base, *format).await?;
            dst.sync_all().map_err(|e| io("sync", &tmp, e))?;
        }
        nix::fcntl::renameat2(
            dir.as_fd(),
            tmp.as_str(),
            dir.as_fd(),
            name.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EEXIST => invalid("name", format!("{}/{name} already exists", p.name)),
            e => io("rename into", format!("{}/{name}", p.path), e),
        })?;
        temp.keep = true;
        fsync_dir(&dir, &p.path)?;
        if req.move_file {
            // On another file system: the copy is in place and durable; now the original goes
            // (if it is still the file that was copied).
            if still(&src.dir, &src.leaf, src.id) {
                nix::unistd::unlinkat(
                    src.dir.as_fd(),
                    src.leaf.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(|e| io("remove (after copying it)", &req.path, e))?;
                fsync_dir(&src.dir, &req.path)?;
            }
        }
        Ok(info(&p, &name, probe(&p, &name, &dst)?))
    }

    /// `--move` on the pool's file system: one rename, checked to have moved the file that was
    /// checked (else moved back).
    async fn import_rename(
        &self,
        p: &PoolConfig,
        dir: &OwnedFd,
        name: &str,
        src: &Source,
        checked: &Checked,
        path: &str,
    ) -> Result<VolumeInfo, Error> {
        let back = |e: Error| {
            let _ = nix::fcntl::renameat2(
                dir.as_fd(),
                name,
                src.dir.as_fd(),
                src.leaf.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            );
            e
        };
        nix::fcntl::renameat2(
            src.dir.as_fd(),
            src.leaf.as_str(),
            dir.as_fd(),
            name,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EEXIST => invalid("name", format!("{}/{name} already exists", p.name)),
            e => io("move into the pool", path, e),
        })?;
        if !still(dir, name, src.id) {
            return Err(back(invalid(
                "path",
                format!("{path} was replaced while it was imported: nothing was imported"),
            )));
        }
        let file = files::open(dir, name, OFlag::O_RDWR).map_err(|_| {
            back(invalid(
                "path",
                format!("{path} cannot be opened in the pool"),
            ))
        })?;
        if let Some((base, format)) = &checked.rebase {
            if let Err(e) = rebase(&file, base, *format).await {
                return Err(back(e));
            }
        }
        fsync_dir(dir, &p.path)?;
        fsync_dir(&src.dir, path)?;
        Ok(info(p, name, probe(p, name, &file)?))
    }
}

/// A moved file may not be one a domain or a snapshot refers to, nor another volume's base;
/// a copied one not the disk of a running guest (the copy would be torn).
fn in_use(pools: &Pools, disks: &Disks, req: &ImportRequest, id: (u64, u64)) -> Result<(), Error> {
    let found = users(disks, id);
    if req.move_file {
        if let Some(u) = found.first() {
            return Err(Error::Busy {
                name: u.domain.clone(),
                detail: format!(
                    "its {} is {}; moving it would take it away (import without --move)",
                    u.disk, req.path
                ),
            });
        }
        if let Some(child) = based_on(pools, id) {
            return Err(invalid(
                "path",
                format!(
                    "{} is the backing file of {child}; moving it would break it",
                    req.path
                ),
            ));
        }
    } else if let Some(u) = found.iter().find(|u| u.running) {
        return Err(Error::Busy {
            name: u.domain.clone(),
            detail: format!(
                "it runs with {} as disk {}; a copy of a disk in use would be torn",
                req.path, u.disk
            ),
        });
    }
    Ok(())
}

/// Writes `base` (absolute) as the backing file name of the qcow2 image `file`, metadata only.
async fn rebase(file: &File, base: &str, format: VolumeFormat) -> Result<(), Error> {
    let target = qemu_img::fd_path(0);
    qemu_img::run(
        &[
            "rebase",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-b",
            base,
            "-F",
            format.as_str(),
            &target,
        ],
        &[file.as_fd()],
        QUICK,
    )
    .await
    .map(drop)
    .map_err(qerr)
}

/// Removes the temporary files of imports a stopped daemon left in every pool.
pub fn sweep(pools: &Pools) {
    for (p, _) in pools.all() {
        let Ok(rd) = std::fs::read_dir(&p.path) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                let path = e.path();
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "removed an unfinished import")
                    }
                    Err(err) => {
                        tracing::warn!(file = %path.display(), error = %err, "cannot remove an unfinished import")
                    }
                }
            }
        }
    }
}
