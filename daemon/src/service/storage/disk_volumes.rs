//! `<disk type='volume'>`: a disk that names a pool and a volume is resolved to the file in
//! that pool at define (before the storage-root rule, which then judges the file as any other
//! disk file: a non-admin may use a pool only inside the roots) and again at every start and
//! hot-plug (the volume may be gone, the pool redefined). The definition keeps the names; the
//! config a guest runs with, its argv and its live disks name the file, as libvirt resolves a
//! dir pool's volume to a file disk. An unknown pool or volume is refused naming the disk.

use std::path::Path;

use nix::fcntl::OFlag;
use novacron_domain::model::{Disk, DiskFormat, DiskSource, DomainConfig};
use novacron_domain::storage::{check_name, VolumeFormat};
use novacron_domain::{Error, FieldError};

use super::pools::Pools;
use crate::host::volumes::files::{self, OpenError};
use crate::service::Inner;

/// How strictly the volume's format must match the disk's driver type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Formats {
    /// At define and attach: any mismatch is refused (the caller can fix the definition).
    Exact,
    /// At start: only a disk read as qcow2 from a file that is not one (QEMU would refuse
    /// it); raw over a qcow2-looking volume is what the definition says (a guest may have
    /// written that header into its own raw disk).
    Start,
}

/// `<pool path>/<volume>` for a volume checked to be one: a regular file in the pool's
/// directory, opened by its name without following a link.
pub(crate) fn volume_path(
    pools: &Pools,
    pool: &str,
    volume: &str,
) -> Result<(String, VolumeFormat), String> {
    check_name(volume).map_err(|why| format!("volume name {why}"))?;
    let p = match pools.get(pool) {
        Ok(p) => p,
        Err(Error::NotFound { .. }) => return Err(format!("pool '{pool}' does not exist")),
        Err(e) => return Err(format!("pool '{pool}': {e}")),
    };
    let dir = files::open_dir(Path::new(&p.path))
        .map_err(|e| format!("pool '{pool}' is inactive ({}: {e})", p.path))?;
    let file = files::open(&dir, volume, OFlag::O_RDONLY).map_err(|e| match e {
        OpenError::Missing => format!("volume '{volume}' does not exist in pool '{pool}'"),
        OpenError::NotAVolume(why) => format!("pool '{pool}': {why}"),
        OpenError::Exists => format!("volume '{volume}' in pool '{pool}' cannot be opened"),
        OpenError::Io(e) => format!("volume '{volume}' in pool '{pool}': {e}"),
    })?;
    let probe = files::probe(&file)
        .map_err(|e| format!("volume '{volume}' in pool '{pool}': reading its header: {e}"))?;
    Ok((
        format!("{}/{volume}", p.path.trim_end_matches('/')),
        probe.format,
    ))
}

fn disk_format(f: VolumeFormat) -> DiskFormat {
    match f {
        VolumeFormat::Raw => DiskFormat::Raw,
        VolumeFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

/// `disks` with every volume source replaced by its file; refusals as (field, why).
fn resolve_disks(pools: &Pools, disks: &mut [Disk], formats: Formats) -> Vec<FieldError> {
    let mut refused = Vec::new();
    for (i, d) in disks.iter_mut().enumerate() {
        let Some(DiskSource::Volume { pool, volume }) = &d.source else {
            continue;
        };
        let dev = d.target.dev.clone();
        match volume_path(pools, pool, volume) {
            Ok((path, format)) => {
                let found = disk_format(format);
                let wrong = match formats {
                    Formats::Exact => found != d.driver.format,
                    Formats::Start => {
                        d.driver.format == DiskFormat::Qcow2 && found != DiskFormat::Qcow2
                    }
                };
                if wrong {
                    refused.push(FieldError::new(
                        format!("devices.disks[{i}].driver.format"),
                        format!(
                            "disk {dev}: volume {pool}/{volume} is {}, the disk's driver type \
                             is {} (<driver name='qemu' type='{}'/>)",
                            format.as_str(),
                            if d.driver.format == DiskFormat::Qcow2 {
                                "qcow2"
                            } else {
                                "raw"
                            },
                            format.as_str()
                        ),
                    ));
                    continue;
                }
                d.source = Some(DiskSource::File { path });
            }
            Err(why) => refused.push(FieldError::new(
                format!("devices.disks[{i}].source"),
                format!("disk {dev}: {why}"),
            )),
        }
    }
    refused
}

/// `config` with its volume disks pointing at their files; `None` when it has none.
pub(crate) fn resolve(
    pools: &Pools,
    config: &DomainConfig,
    formats: Formats,
) -> Result<Option<DomainConfig>, Error> {
    let has_volume = |d: &Disk| matches!(d.source, Some(DiskSource::Volume { .. }));
    if !config.devices.disks.iter().any(has_volume) {
        return Ok(None);
    }
    let mut out = config.clone();
    let refused = resolve_disks(pools, &mut out.devices.disks, formats);
    if refused.is_empty() {
        return Ok(Some(out));
    }
    Err(Error::Invalid {
        message: format!(
            "domain '{}': {}",
            config.name,
            refused
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        details: refused,
    })
}

impl Inner {
    fn pool_set(&self) -> Pools {
        Pools {
            roots: self.storage_roots.clone(),
            dir: self.config.state_dir.join("pools"),
        }
    }

    /// [`resolve`] on a blocking thread (it opens the pools' directories and volumes).
    pub(crate) async fn volume_disks(
        &self,
        config: &DomainConfig,
        formats: Formats,
    ) -> Result<Option<DomainConfig>, Error> {
        if !config
            .devices
            .disks
            .iter()
            .any(|d| matches!(d.source, Some(DiskSource::Volume { .. })))
        {
            return Ok(None);
        }
        let pools = self.pool_set();
        let config = config.clone();
        tokio::task::spawn_blocking(move || resolve(&pools, &config, formats))
            .await
            .map_err(super::errors::joined)?
    }

    /// One disk as [`Inner::volume_disks`] resolves it (hot-plug).
    pub(crate) async fn volume_disk(&self, disk: &Disk, formats: Formats) -> Result<Disk, Error> {
        if !matches!(disk.source, Some(DiskSource::Volume { .. })) {
            return Ok(disk.clone());
        }
        let pools = self.pool_set();
        let mut one = [disk.clone()];
        let refused = tokio::task::spawn_blocking(move || {
            let r = resolve_disks(&pools, &mut one, formats);
            (one, r)
        })
        .await
        .map_err(super::errors::joined)?;
        let ([disk], refused) = refused;
        if refused.is_empty() {
            return Ok(disk);
        }
        Err(Error::Invalid {
            message: refused
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
            details: refused
                .into_iter()
                .map(|f| FieldError::new(f.path.replace("devices.disks[0]", "disk"), f.message))
                .collect(),
        })
    }
}

/// The file path a volume disk names, for "which domains use this file" (no checks: a
/// missing pool or volume uses nothing).
pub(crate) fn used_path(pools: &Pools, pool: &str, volume: &str) -> Option<String> {
    check_name(volume).ok()?;
    let p = pools.get(pool).ok()?;
    Some(format!("{}/{volume}", p.path.trim_end_matches('/')))
}
