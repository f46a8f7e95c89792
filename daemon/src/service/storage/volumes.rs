//! Volumes: files in a pool, named by one checked path component and opened beneath the
//! pool's directory without following links. Sizes are bounded, files in use are protected
//! (delete names the domain; a base of another volume is kept), and every failure leaves the
//! pool as it was (a half-made file is removed).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use nix::fcntl::OFlag;
use novacron_domain::storage::{
    check_name, Backing, PoolConfig, VolumeConfig, VolumeFormat, VolumeInfo, MAX_VOLUME_BYTES,
};
use novacron_domain::Error;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::errors::{forbidden, invalid, io, joined, no_volume};
use super::pools::Pools;
use super::usage::{users, Disks};
use crate::host::volumes::files::{self, OpenError, Probe};
use crate::host::volumes::qemu_img::{self, fd_path};
use crate::host::volumes::transfer;
use crate::service::Service;

/// qemu-img create/resize/linked clone: metadata only.
pub(super) const QUICK: Duration = Duration::from_secs(60);
/// A full copy of a large volume.
const COPY: Duration = Duration::from_secs(6 * 3600);
/// Chunks in flight between the HTTP body and the file, each way (bounded memory).
const IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct VolumeList {
    pub pool: String,
    pub volumes: Vec<VolumeInfo>,
    /// Files that could not be read (listed by name with the reason, never fatal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `vol-clone`: the new volume's name; linked (a qcow2 overlay over the source, which becomes
/// read-only) or a full copy, optionally converted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    pub name: String,
    #[serde(default)]
    pub linked: bool,
    #[serde(default)]
    pub format: Option<VolumeFormat>,
}

/// What an upload wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub volume: VolumeInfo,
    /// Bytes received.
    pub written: u64,
    /// Where the upload ended: the `offset` to resume from.
    pub end: u64,
}

/// Volumes with an upload, download of a copy, clone or resize running: a second change
/// waits for no one, it is refused.
static BUSY: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Default::default);

pub(super) struct Busy(String);

impl Busy {
    pub(super) fn take(pool: &PoolConfig, name: &str) -> Result<Busy, Error> {
        let key = format!("{}/{name}", pool.path);
        if !BUSY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return Err(invalid(
                "volume",
                format!(
                    "{}/{name} is busy (another change to it is running)",
                    pool.name
                ),
            ));
        }
        Ok(Busy(key))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

pub(super) fn info(pool: &PoolConfig, name: &str, p: Probe) -> VolumeInfo {
    VolumeInfo {
        pool: pool.name.clone(),
        name: name.to_owned(),
        path: format!("{}/{name}", pool.path.trim_end_matches('/')),
        format: p.format,
        capacity: p.capacity,
        allocation: p.allocation,
        backing: p.backing,
    }
}

pub(super) fn name_ok(field: &str, name: &str) -> Result<(), Error> {
    check_name(name).map_err(|m| invalid(field, m))
}

fn open_vol(
    pool: &PoolConfig,
    dir: &OwnedFd,
    name: &str,
    flags: OFlag,
) -> Result<std::fs::File, Error> {
    name_ok("volume", name)?;
    files::open(dir, name, flags).map_err(|e| match e {
        OpenError::Missing => no_volume(&pool.name, name),
        OpenError::NotAVolume(why) => invalid("volume", why),
        OpenError::Exists => invalid("volume", format!("{}/{name} already exists", pool.name)),
        OpenError::Io(e) => io("open", format!("{}/{name}", pool.path), e),
    })
}

pub(super) fn probe(pool: &PoolConfig, name: &str, f: &std::fs::File) -> Result<Probe, Error> {
    files::probe(f).map_err(|e| io("read the header of", format!("{}/{name}", pool.path), e))
}

fn size_ok(field: &str, bytes: u64) -> Result<(), Error> {
    if bytes == 0 {
        return Err(invalid(field, "must be at least 1 byte"));
    }
    if bytes > MAX_VOLUME_BYTES {
        return Err(invalid(
            field,
            format!("{bytes} bytes is over the {MAX_VOLUME_BYTES} byte (64 TiB) volume limit"),
        ));
    }
    Ok(())
}

/// Refuses when a running domain uses the file (`what` is the change refused).
fn not_running(disks: &Disks, p: &Probe, vol: &str, what: &str) -> Result<(), Error> {
    if let Some(u) = users(disks, (p.dev, p.ino)).into_iter().find(|u| u.running) {
        return Err(Error::Busy {
            name: u.domain,
            detail: format!(
                "it runs with volume {vol} as disk {}; {what} needs it stopped",
                u.disk
            ),
        });
    }
    Ok(())
}

/// A non-admin may not make the daemon (as root) interpret an image that names files outside
/// the storage roots: qemu-img follows a qcow2's backing chain and external data file by name.
/// The one image check of the trust rules (`storage_roots::check_image`), on the open file.
fn image_ok(pools: &Pools, p: &PoolConfig, name: &str, file: &std::fs::File) -> Result<(), Error> {
    if crate::service::audit::current().is_admin() {
        return Ok(());
    }
    let path = format!("{}/{name}", p.path.trim_end_matches('/'));
    let fd = file.try_clone().map_err(|e| io("open", &path, e))?;
    crate::host::storage_roots::check_image(
        &pools.roots,
        &path,
        fd.into(),
        novacron_domain::model::DiskFormat::Qcow2,
    )
    .map_err(|r| forbidden("volume", format!("{}/{name}: {}", p.name, r.text())))
}

/// Writing a volume in place (upload, resize): never a base other volumes are built on; for a
/// non-admin never a file a domain or a snapshot refers to (its definition was checked, and
/// the daemon interprets it as root later); for anyone never one a running guest uses.
fn writable(pools: &Pools, disks: &Disks, p: &Probe, vol: &str, what: &str) -> Result<(), Error> {
    if let Some(child) = based_on(pools, (p.dev, p.ino)) {
        return Err(invalid(
            "volume",
            format!("{vol} is the backing file of {child}; {what} would corrupt it"),
        ));
    }
    if !crate::service::audit::current().is_admin() {
        if let Some(u) = users(disks, (p.dev, p.ino)).into_iter().next() {
            return Err(Error::Busy {
                name: u.domain,
                detail: format!(
                    "its {} uses volume {vol}; {what} of a file in use is for administrators",
                    u.disk
                ),
            });
        }
    }
    not_running(disks, p, vol, what)
}

/// The created file is removed when the creation fails.
struct Made<'a> {
    dir: &'a OwnedFd,
    name: &'a str,
    keep: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = files::unlink(self.dir, self.name);
        }
    }
}

pub(super) fn qerr(e: qemu_img::QemuImgError) -> Error {
    Error::Internal(e.to_string())
}

/// Runs `f` on a blocking thread with the pools.
async fn blocking<T: Send + 'static>(
    pools: Pools,
    f: impl FnOnce(Pools) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || f(pools))
        .await
        .map_err(joined)?
}

impl Service {
    pub async fn vol_list(&self, pool: &str) -> Result<VolumeList, Error> {
        let pool = pool.to_owned();
        blocking(self.pools(), move |pools| {
            let (p, dir) = pools.open(&pool)?;
            let (found, problems) = files::list(&dir).map_err(|e| io("list", p.path.clone(), e))?;
            Ok(VolumeList {
                volumes: found.into_iter().map(|(n, pr)| info(&p, &n, pr)).collect(),
                pool: p.name,
                problems,
            })
        })
        .await
    }

    pub async fn vol_info(&self, pool: &str, name: &str) -> Result<VolumeInfo, Error> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        blocking(self.pools(), move |pools| {
            let (p, dir) = pools.open(&pool)?;
            let f = open_vol(&p, &dir, &name, OFlag::O_RDONLY)?;
            Ok(info(&p, &name, probe(&p, &name, &f)?))
        })
        .await
    }

    pub async fn vol_create(&self, pool: &str, cfg: VolumeConfig) -> Result<VolumeInfo, Error> {
        name_ok("name", &cfg.name)?;
        size_ok("capacity", cfg.capacity)?;
        let allocation = cfg.allocation.unwrap_or(0);
        if allocation > cfg.capacity {
            return Err(invalid(
                "allocation",
                format!(
                    "{allocation} bytes is more than the capacity ({} bytes)",
                    cfg.capacity
                ),
            ));
        }
        if cfg.backing.is_some() {
            return Err(invalid(
                "backing",
                "a volume over a backing file is a linked clone: use vol-clone --linked",
            ));
        }
        let pool = pool.to_owned();
        let (p, dir) = blocking(self.pools(), move |pools| pools.open(&pool)).await?;
        let (_, _, available) = files::space(&dir).map_err(|e| io("stat", p.path.clone(), e))?;
        if allocation > available {
            return Err(invalid(
                "allocation",
                format!(
                    "{allocation} bytes requested, {available} bytes available in pool {}",
                    p.name
                ),
            ));
        }
        let _busy = Busy::take(&p, &cfg.name)?;
        let file = open_vol(&p, &dir, &cfg.name, OFlag::O_CREAT | OFlag::O_RDWR)?;
        let mut made = Made {
            dir: &dir,
            name: &cfg.name,
            keep: false,
        };
        match cfg.format {
            VolumeFormat::Raw => {
                let f = file.try_clone().map_err(|e| io("create", &cfg.name, e))?;
                let cap = cfg.capacity;
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    f.set_len(cap)?;
                    if allocation > 0 {
                        nix::fcntl::fallocate(
                            f.as_fd(),
                            nix::fcntl::FallocateFlags::empty(),
                            0,
                            allocation as i64,
                        )?;
                    }
                    f.sync_all()
                })
                .await
                .map_err(joined)?
                .map_err(|e| io("create", format!("{}/{}", p.path, cfg.name), e))?;
            }
            VolumeFormat::Qcow2 => {
                let prealloc = if allocation == 0 {
                    "preallocation=off"
                } else if allocation >= cfg.capacity {
                    "preallocation=falloc"
                } else {
                    "preallocation=metadata"
                };
                let size = cfg.capacity.to_string();
                let target = fd_path(0);
                qemu_img::run(
                    &[
                        "create", "-q", "-f", "qcow2", "-o", prealloc, &target, &size,
                    ],
                    &[file.as_fd()],
                    QUICK,
                )
                .await
                .map_err(qerr)?;
            }
        }
        let probed = probe(&p, &cfg.name, &file)?;
        made.keep = true;
        Ok(info(&p, &cfg.name, probed))
    }

    pub async fn vol_resize(
        &self,
        pool: &str,
        name: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, Error> {
        size_ok("capacity", capacity)?;
        let disks = self.domain_disks().await?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let (p, dir) = blocking(self.pools(), move |pools| pools.open(&pool)).await?;
        let _busy = Busy::take(&p, &name)?;
        let file = open_vol(&p, &dir, &name, OFlag::O_RDWR)?;
        let before = probe(&p, &name, &file)?;
        let pools = self.pools();
        writable(
            &pools,
            &disks,
            &before,
            &format!("{}/{name}", p.name),
            "vol-resize",
        )?;
        image_ok(&pools, &p, &name, &file)?;
        if capacity < before.capacity && !shrink {
            return Err(invalid(
                "capacity",
                format!(
                    "{capacity} bytes is smaller than the current {} bytes; shrinking loses the data \
                     beyond it (pass shrink, --shrink, to do it anyway)",
                    before.capacity
                ),
            ));
        }
        match before.format {
            VolumeFormat::Raw => {
                let f = file.try_clone().map_err(|e| io("resize", &name, e))?;
                tokio::task::spawn_blocking(move || {
                    f.set_len(capacity).and_then(|()| f.sync_all())
                })
                .await
                .map_err(joined)?
                .map_err(|e| io("resize", format!("{}/{name}", p.path), e))?;
            }
            VolumeFormat::Qcow2 => {
                let size = capacity.to_string();
                let target = fd_path(0);
                let mut args = vec!["resize", "-q", "-f", "qcow2"];
                if shrink {
                    args.push("--shrink");
                }
                args.extend([target.as_str(), size.as_str()]);
                qemu_img::run(&args, &[file.as_fd()], QUICK)
                    .await
                    .map_err(qerr)?;
            }
        }
        Ok(info(&p, &name, probe(&p, &name, &file)?))
    }

    pub async fn vol_delete(&self, pool: &str, name: &str) -> Result<(), Error> {
        let disks = self.domain_disks().await?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        blocking(self.pools(), move |pools| {
            let (p, dir) = pools.open(&pool)?;
            let _busy = Busy::take(&p, &name)?;
            let f = open_vol(&p, &dir, &name, OFlag::O_RDONLY)?;
            let pr = probe(&p, &name, &f)?;
            let vol = format!("{}/{name}", p.name);
            if let Some(u) = users(&disks, (pr.dev, pr.ino)).into_iter().next() {
                if let Some(t) = u
                    .domain
                    .strip_prefix(crate::service::templates::USER_PREFIX)
                {
                    return Err(invalid(
                        "volume",
                        format!("{vol} is the {} of template {t}; template-delete removes it", u.disk),
                    ));
                }
                return Err(Error::Busy {
                    name: u.domain,
                    detail: format!(
                        "its disk {} uses volume {vol}; remove the disk or undefine the domain first",
                        u.disk
                    ),
                });
            }
            if let Some(child) = based_on(&pools, (pr.dev, pr.ino)) {
                return Err(invalid(
                    "volume",
                    format!("{vol} is the backing file of {child}; delete that volume first"),
                ));
            }
            files::unlink(&dir, &name).map_err(|e| io("delete", format!("{}/{name}", p.path), e))
        })
        .await
    }

    pub async fn vol_clone(
        &self,
        pool: &str,
        name: &str,
        req: CloneRequest,
    ) -> Result<VolumeInfo, Error> {
        name_ok("name", &req.name)?;
        let disks = self.domain_disks().await?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let pools = self.pools();
        let (p, dir) = blocking(pools.clone(), move |pools| pools.open(&pool)).await?;
        let _busy = Busy::take(&p, &name)?;
        let _busy_new = Busy::take(&p, &req.name)?;
        let src = open_vol(&p, &dir, &name, OFlag::O_RDONLY)?;
        let sp = probe(&p, &name, &src)?;
        let vol = format!("{}/{name}", p.name);
        not_running(&disks, &sp, &vol, "vol-clone")?;
        // qemu-img opens the source's backing chain and data file by name.
        image_ok(&pools, &p, &name, &src)?;
        let format = if req.linked {
            VolumeFormat::Qcow2
        } else {
            req.format.unwrap_or(sp.format)
        };
        if req.linked && req.format == Some(VolumeFormat::Raw) {
            return Err(invalid(
                "format",
                "a linked clone is a qcow2 overlay (format qcow2)",
            ));
        }
        let dst = open_vol(&p, &dir, &req.name, OFlag::O_CREAT | OFlag::O_RDWR)?;
        let mut made = Made {
            dir: &dir,
            name: &req.name,
            keep: false,
        };
        let size = sp.capacity.to_string();
        let (d0, d1) = (fd_path(0), fd_path(1));
        if req.linked {
            let base = format!("{}/{name}", p.path.trim_end_matches('/'));
            // The overlay's header written directly (what `qemu-img create -u -b` writes,
            // without a process), durable before the answer; the base is never opened by name.
            let capacity = sp.capacity;
            let fmt = sp.format.as_str();
            let dst_file = dst.try_clone().map_err(|e| io("create", &req.name, e))?;
            let dir_file =
                std::fs::File::from(dir.try_clone().map_err(|e| io("create", &req.name, e))?);
            let base_name = base.clone();
            tokio::task::spawn_blocking(move || {
                crate::host::qcow2_create::write_overlay(&dst_file, capacity, &base_name, fmt)?;
                dir_file.sync_all()
            })
            .await
            .map_err(joined)?
            .map_err(|e| io("create", &req.name, e))?;
            // The base is read-only from now on: writing it would corrupt every clone.
            let mode = src
                .metadata()
                .map_err(|e| io("stat", &base, e))?
                .permissions()
                .mode();
            src.set_permissions(std::fs::Permissions::from_mode(mode & !0o222))
                .map_err(|e| io("make read-only", &base, e))?;
        } else {
            match format {
                VolumeFormat::Raw => dst
                    .set_len(sp.capacity)
                    .map_err(|e| io("create", &req.name, e))?,
                VolumeFormat::Qcow2 => {
                    qemu_img::run(
                        &["create", "-q", "-f", "qcow2", &d0, &size],
                        &[dst.as_fd()],
                        QUICK,
                    )
                    .await
                    .map_err(qerr)?
                    .truncate(0);
                }
            }
            qemu_img::run(
                &[
                    "convert",
                    "-n",
                    "-f",
                    sp.format.as_str(),
                    "-O",
                    format.as_str(),
                    &d0,
                    &d1,
                ],
                &[src.as_fd(), dst.as_fd()],
                COPY,
            )
            .await
            .map_err(qerr)?;
            dst.sync_all().map_err(|e| io("sync", &req.name, e))?;
        }
        let probed = probe(&p, &req.name, &dst)?;
        made.keep = true;
        Ok(info(&p, &req.name, probed))
    }

    /// Writes the stream into the volume from `offset` (resumable: the answer's `end` is the
    /// next offset). Zero blocks become holes. Refused while a running domain uses it.
    pub async fn vol_upload(
        &self,
        pool: &str,
        name: &str,
        offset: u64,
        length: Option<u64>,
        mut body: mpsc::Receiver<Result<Bytes, String>>,
    ) -> Result<Uploaded, Error> {
        let disks = self.domain_disks().await?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let (p, dir) = blocking(self.pools(), move |pools| pools.open(&pool)).await?;
        let _busy = Busy::take(&p, &name)?;
        let file = open_vol(&p, &dir, &name, OFlag::O_RDWR)?;
        let before = probe(&p, &name, &file)?;
        let vol = format!("{}/{name}", p.name);
        writable(&self.pools(), &disks, &before, &vol, "vol-upload")?;
        // Without a length the free space cannot be checked before writing.
        let Some(length) = length else {
            return Err(invalid(
                "length",
                "an upload needs a Content-Length (chunked bodies are refused)",
            ));
        };
        let size = file.metadata().map_err(|e| io("stat", &vol, e))?.len();
        if offset > size {
            return Err(invalid(
                "offset",
                format!(
                    "{offset} is beyond the end of {vol} ({size} bytes): resume from at most there"
                ),
            ));
        }
        let (_, _, available) = files::space(&dir).map_err(|e| io("stat", p.path.clone(), e))?;
        {
            let len = length;
            let end = offset.saturating_add(len);
            if end > MAX_VOLUME_BYTES {
                return Err(invalid(
                    "length",
                    format!("{end} bytes is over the {MAX_VOLUME_BYTES} byte volume limit"),
                ));
            }
            if end.saturating_sub(size) > available {
                return Err(invalid(
                    "length",
                    format!(
                        "{len} bytes would grow {vol} by {} bytes, {available} available",
                        end - size
                    ),
                ));
            }
        }
        let w = file.try_clone().map_err(|e| io("open", &vol, e))?;
        let written = tokio::task::spawn_blocking(move || -> Result<(u64, u64), Error> {
            let mut w = transfer::Writer::new(w, offset);
            while let Some(chunk) = body.blocking_recv() {
                let chunk = chunk.map_err(|e| invalid("body", e))?;
                if w.position().saturating_add(chunk.len() as u64) > MAX_VOLUME_BYTES {
                    return Err(invalid(
                        "body",
                        format!("over the {MAX_VOLUME_BYTES} byte volume limit"),
                    ));
                }
                w.write(&chunk).map_err(|e| io("write", "the volume", e))?;
            }
            let end = w.finish().map_err(|e| io("write", "the volume", e))?;
            Ok((end - offset, end))
        })
        .await
        .map_err(joined)??;
        Ok(Uploaded {
            volume: info(&p, &name, probe(&p, &name, &file)?),
            written: written.0,
            end: written.1,
        })
    }

    /// The volume's bytes from `offset` (`length` of them, or to the end), streamed: the
    /// total and the chunks (holes as zeros, never read from disk).
    pub async fn vol_download(
        &self,
        pool: &str,
        name: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(u64, mpsc::Receiver<Bytes>), Error> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let (p, dir) = blocking(self.pools(), move |pools| pools.open(&pool)).await?;
        let file = open_vol(&p, &dir, &name, OFlag::O_RDONLY)?;
        let size = file.metadata().map_err(|e| io("stat", &name, e))?.len();
        if offset > size {
            return Err(invalid(
                "offset",
                format!("{offset} is beyond the end ({size} bytes)"),
            ));
        }
        let total = length.unwrap_or(size - offset).min(size - offset);
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let mut r = transfer::Reader::new(file, offset, offset + total);
            loop {
                match r.next_chunk() {
                    Ok(Some(c)) => {
                        // The client went away: stop reading.
                        if tx.blocking_send(c).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        // Ends the body short of its Content-Length: the client sees the cut.
                        tracing::warn!(error = %e, "volume download failed");
                        return;
                    }
                }
            }
        });
        Ok((total, rx))
    }
}

/// `backing` as QEMU resolves it: relative names against the overlay's directory.
fn resolve_backing(pool_path: &str, backing: &str) -> String {
    if backing.starts_with('/') {
        backing.to_owned()
    } else {
        format!("{}/{backing}", pool_path.trim_end_matches('/'))
    }
}

/// A volume in any pool whose backing file is the file `id`, as `pool/name`.
pub(crate) fn based_on(pools: &Pools, id: (u64, u64)) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    for (p, _) in pools.all() {
        let Ok(dir) = files::open_dir(std::path::Path::new(&p.path)) else {
            continue;
        };
        let Ok((found, _)) = files::list(&dir) else {
            continue;
        };
        for (name, pr) in found {
            let Some(Backing { path, .. }) = pr.backing else {
                continue;
            };
            let at = resolve_backing(&p.path, &path);
            if std::fs::metadata(&at).is_ok_and(|m| (m.dev(), m.ino()) == id) {
                return Some(format!("{}/{name}", p.name));
            }
        }
    }
    None
}
