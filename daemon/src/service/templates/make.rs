//! A new version from a stopped domain: its definition without uuid and MACs, and a flattened
//! qcow2 copy of every disk as a read-only base in the pool. The domain's job slot is held
//! throughout (it cannot start mid-copy); the bases are journalled before the first is made
//! and removed again on any failure.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use novacron_domain::model::{DiskDevice, DiskFormat, DiskSource, Firmware};
use novacron_domain::{DomainConfig, DomainState, Error};

use super::store::{Base, Pending, PendingFile, PendingOp, Store, Template, Version};
use crate::host::storage_roots::{check_image, Refusal};
use crate::host::volumes::files::{self, OpenError};
use crate::host::volumes::qemu_img::{self, fd_path};
use crate::service::jobs::Job;
use crate::service::storage::errors::{forbidden, invalid, io, joined};
use crate::service::storage::pools::DEFAULT_POOL;
use crate::service::Service;

/// A full copy of a large disk.
const COPY: Duration = Duration::from_secs(6 * 3600);
const QUICK: Duration = Duration::from_secs(60);

fn qerr(e: qemu_img::QemuImgError) -> Error {
    Error::Internal(e.to_string())
}

/// The domain's disk files, opened as the caller may: a non-admin only inside the storage
/// roots with every file the image names there too (the one path and image check).
fn open_source(
    svc: &Service,
    field: &str,
    path: &str,
    format: DiskFormat,
) -> Result<std::fs::File, Error> {
    let roots = &svc.inner.storage_roots;
    if crate::service::audit::current().is_admin() {
        return std::fs::File::open(path).map_err(|e| io("open", path, e));
    }
    let fd = roots
        .open_beneath(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
        .map_err(|r| match r {
            Refusal::Rule(why) => forbidden(field, why),
            Refusal::Missing(why) | Refusal::Io(why) => invalid(field, why),
        })?;
    let file = std::fs::File::from(fd);
    let check = file.try_clone().map_err(|e| io("open", path, e))?;
    check_image(roots, path, check.into(), format)
        .map_err(|r| forbidden(field, r.text().to_owned()))?;
    Ok(file)
}

/// The definition as a template: what must differ per domain taken out.
fn as_template(mut c: DomainConfig, field_errors: &mut Vec<String>) -> DomainConfig {
    c.uuid = None;
    for nic in &mut c.devices.interfaces {
        nic.mac = None;
    }
    if let Firmware::Uefi { nvram: Some(n), .. } = &c.os.firmware {
        field_errors.push(format!(
            "os.nvram: {} is this domain's own variable store; domains deployed from a template \
             each need their own (use firmware='efi', whose store the daemon makes per domain)",
            n.path
        ));
    }
    c
}

impl Service {
    /// Adds version `max + 1` made from `domain` to `t` and saves it.
    pub(super) async fn add_version(
        &self,
        store: &Store,
        t: &mut Template,
        domain: &str,
        pool: Option<&str>,
        description: Option<String>,
    ) -> Result<(), Error> {
        let number = t.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let h = self.inner.handle(domain)?;
        let _job = h.begin(Job::Modify, self.inner.config.job_wait()).await?;
        match h.state() {
            DomainState::Shutoff | DomainState::Crashed => {}
            state => {
                return Err(Error::WrongState {
                    name: domain.to_owned(),
                    state,
                    operation: "make a template of (stop it first)",
                })
            }
        }
        let mut problems = Vec::new();
        let mut config = as_template(h.definition().config.config().clone(), &mut problems);
        if let Some(p) = problems.into_iter().next() {
            let (field, why) = p.split_once(": ").unwrap_or(("domain", &p));
            return Err(invalid(field, why.to_owned()));
        }
        // Which disks become bases: every disk (not CD-ROM) with a file; CD-ROMs keep their
        // media (shared, read-only). Block and network disks have no file to copy.
        let mut sources = Vec::new();
        for (i, d) in config.devices.disks.iter().enumerate() {
            if d.device != DiskDevice::Disk {
                continue;
            }
            match &d.source {
                Some(DiskSource::File { path }) => {
                    sources.push((i, d.target.dev.clone(), path.clone(), d.driver.format))
                }
                _ => {
                    return Err(invalid(
                        &format!("devices.disks[{i}]"),
                        format!(
                        "disk {} of {domain} is not a file: only file disks become template bases",
                        d.target.dev
                    ),
                    ))
                }
            }
        }
        let pool_name = pool.unwrap_or(DEFAULT_POOL).to_owned();
        let pools = self.pools();
        let pn = pool_name.clone();
        let (p, dir) = tokio::task::spawn_blocking(move || pools.open(&pn))
            .await
            .map_err(joined)??;
        // Open every source before making anything: a refusal changes nothing.
        let mut opened = Vec::new();
        for (i, dev, path, format) in &sources {
            let field = format!("devices.disks[{i}].source");
            let file = open_source(self, &field, path, *format)?;
            let probe = files::probe(&file).map_err(|e| io("read the header of", path, e))?;
            let volume = format!("{}-v{number}-{dev}.qcow2", t.name);
            novacron_domain::storage::check_name(&volume).map_err(|m| invalid("name", m))?;
            opened.push((*i, dev.clone(), file, *format, probe.capacity, volume));
        }
        // The pool must hold every flattened base before the first is made: a copy that
        // fills the filesystem fails late and starves every guest on it.
        let mut need = 0u64;
        let mut parts = Vec::new();
        for (_, dev, src, format, _, _) in &opened {
            let n = flattened_size(src, *format).await?;
            need = need.saturating_add(n);
            parts.push(format!("{dev} {n}"));
        }
        let probe_dir = dir.try_clone().map_err(|e| io("open", p.path.clone(), e))?;
        let (_, _, available) = off_thread(move || {
            files::space(&probe_dir).map_err(|e| io("stat", "the pool directory", e))
        })
        .await?;
        if need > available {
            return Err(invalid(
                "pool",
                format!(
                    "pool '{}' has {available} bytes available, the bases of template '{}' \
                     need {need} bytes ({})",
                    p.name,
                    t.name,
                    parts.join(", ")
                ),
            ));
        }
        let mut pending = Pending {
            op: PendingOp::Bases,
            owner: t.name.clone(),
            files: opened
                .iter()
                .map(|o| PendingFile {
                    dir: p.path.clone(),
                    name: o.5.clone(),
                    made: None,
                })
                .collect(),
        };
        let journal = store.begin_off(&pending).await?;
        let mut made: Vec<String> = Vec::new();
        let result: Result<Vec<Base>, Error> = async {
            let mut bases = Vec::new();
            for (k, (_, dev, src, format, capacity, volume)) in opened.iter().enumerate() {
                let dst = files::open(&dir, volume, OFlag::O_CREAT | OFlag::O_RDWR).map_err(
                    |e| match e {
                        OpenError::Exists => {
                            invalid("name", format!("volume {}/{volume} already exists", p.name))
                        }
                        OpenError::Missing | OpenError::NotAVolume(_) => {
                            invalid("pool", format!("cannot create {volume} in {}", p.name))
                        }
                        OpenError::Io(e) => io("create", format!("{}/{volume}", p.path), e),
                    },
                )?;
                made.push(volume.clone());
                pending.files[k].made =
                    Some(identity(&dst).map_err(|e| io("stat", volume.as_str(), e))?);
                {
                    let (store, journal, pending) =
                        (store.clone(), journal.clone(), pending.clone());
                    off_thread(move || store.update(&journal, &pending)).await?;
                }
                let size = capacity.to_string();
                let (d0, d1) = (fd_path(0), fd_path(1));
                qemu_img::run(
                    &["create", "-q", "-f", "qcow2", &d0, &size],
                    &[dst.as_fd()],
                    QUICK,
                )
                .await
                .map_err(qerr)?;
                let fmt = match format {
                    DiskFormat::Raw => "raw",
                    DiskFormat::Qcow2 => "qcow2",
                };
                // Flattened: the base holds the whole disk, whatever chain it had.
                qemu_img::run(
                    &["convert", "-n", "-f", fmt, "-O", "qcow2", &d0, &d1],
                    &[src.as_fd(), dst.as_fd()],
                    COPY,
                )
                .await
                .map_err(qerr)?;
                sync(&dst, volume).await?;
                // Read-only from now on: a write would corrupt every clone.
                dst.set_permissions(std::fs::Permissions::from_mode(0o444))
                    .map_err(|e| io("make read-only", volume.as_str(), e))?;
                bases.push(Base {
                    disk: dev.clone(),
                    volume: volume.clone(),
                    path: format!("{}/{volume}", p.path.trim_end_matches('/')),
                    capacity: *capacity,
                });
            }
            Ok(bases)
        }
        .await;
        let bases = match result {
            Ok(b) => b,
            Err(e) => {
                for v in &made {
                    let _ = files::unlink(&dir, v);
                }
                store.end_off(&journal).await;
                return Err(e);
            }
        };
        for b in &bases {
            for d in &mut config.devices.disks {
                if d.target.dev == b.disk {
                    d.source = Some(DiskSource::File {
                        path: b.path.clone(),
                    });
                    d.driver.format = DiskFormat::Qcow2;
                }
            }
        }
        t.versions.push(Version {
            version: number,
            created: crate::service::events::now_unix_ms(),
            description,
            source: domain.to_owned(),
            pool: p.name.clone(),
            config,
            bases,
        });
        if let Err(e) = store.save_off(t).await {
            for v in &made {
                let _ = files::unlink(&dir, v);
            }
            store.end_off(&journal).await;
            t.versions.pop();
            return Err(e);
        }
        store.end_off(&journal).await;
        Ok(())
    }
}

/// The bytes the flattened qcow2 copy of `src` takes (`qemu-img measure`'s `required`: the
/// allocated data of the whole chain plus qcow2 metadata; a raw file's holes are not copied,
/// as convert skips them), read through the same descriptor convert will use.
async fn flattened_size(src: &std::fs::File, format: DiskFormat) -> Result<u64, Error> {
    let fmt = match format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let out = qemu_img::run(
        &[
            "measure",
            "--output=json",
            "-f",
            fmt,
            "-O",
            "qcow2",
            &fd_path(0),
        ],
        &[src.as_fd()],
        QUICK,
    )
    .await
    .map_err(qerr)?;
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["required"].as_u64())
        .ok_or_else(|| Error::Internal(format!("qemu-img measure: unexpected answer {out}")))
}

/// Device and inode of a file the daemon just made (what a recovery may remove).
pub(super) fn identity(f: &std::fs::File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().map(|m| (m.dev(), m.ino()))
}

/// Runs blocking file work (a journal write, an fsync) off the async threads.
pub(super) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(crate::service::storage::errors::joined)?
}

/// `f.sync_all()` off the async threads (a base or clone can be gigabytes of dirty pages).
pub(super) async fn sync(f: &std::fs::File, name: &str) -> Result<(), Error> {
    let f = f.try_clone().map_err(|e| io("sync", name, e))?;
    let name = name.to_owned();
    off_thread(move || f.sync_all().map_err(|e| io("sync", name.as_str(), e))).await
}
