//! Pools: every storage root is a pool (the `images` root is `default`, the others keep their
//! root's name), and administrators or operators may define more with libvirt pool XML, as
//! directories inside a root (the one path check: `StorageRoots::open_beneath`), persisted
//! atomically under `<state>/pools/<name>.xml`. A pool whose directory vanished is listed as
//! inactive with the reason, never fatal.

use std::path::PathBuf;

use novacron_domain::storage::{check_name, PoolConfig, PoolState, PoolStats};
use novacron_domain::{Error, Kind};
use serde::Serialize;

use super::errors::{invalid, io, joined};
use crate::host::storage_roots::{Refusal, StorageRoots, DEFAULT_ROOT};
use crate::host::volumes::files;
use crate::service::Service;

/// The pool of the `images` root.
pub const DEFAULT_POOL: &str = "default";

/// A pool as `pool-list`/`pool-info` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub name: String,
    pub path: String,
    pub state: PoolState,
    /// `root` (a storage root, from the configuration) or `defined` (pool XML).
    pub kind: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PoolStats>,
    /// Why the pool is inactive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What the blocking pool work needs, cloned out of the service.
#[derive(Clone)]
pub struct Pools {
    pub roots: StorageRoots,
    pub dir: PathBuf,
}

impl Pools {
    fn root_pools(&self) -> Vec<PoolConfig> {
        self.roots
            .roots()
            .iter()
            .map(|r| PoolConfig {
                name: if r.name == DEFAULT_ROOT {
                    DEFAULT_POOL.to_owned()
                } else {
                    r.name.clone()
                },
                uuid: None,
                path: r.path.display().to_string(),
            })
            .collect()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.xml"))
    }

    /// Every pool: the roots' first, then the defined ones by name. Unreadable pool files are
    /// skipped (and logged): one bad file never hides the others.
    pub fn all(&self) -> Vec<(PoolConfig, &'static str)> {
        let mut out: Vec<_> = self.root_pools().into_iter().map(|p| (p, "root")).collect();
        let mut defined = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".xml") else {
                    continue;
                };
                if check_name(stem).is_err() {
                    continue;
                }
                match self.load(stem) {
                    Ok(p) => defined.push((p, "defined")),
                    Err(e) => tracing::warn!(pool = stem, error = %e, "skipping a pool file"),
                }
            }
        }
        defined.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out.extend(defined);
        out
    }

    fn load(&self, name: &str) -> Result<PoolConfig, Error> {
        let path = self.file(name);
        let xml = std::fs::read_to_string(&path)
            .map_err(|e| io("read", path.display().to_string(), e))?;
        PoolConfig::from_xml(&xml).map_err(Error::from)
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Result<PoolConfig, Error> {
        if let Some(p) = self.root_pools().into_iter().find(|p| p.name == name) {
            return Ok(p);
        }
        if check_name(name).is_err() || !self.file(name).exists() {
            return Err(Error::not_found(Kind::Pool, name));
        }
        self.load(name)
    }

    /// The pool's directory, open; `NotFound`-like errors name the pool.
    pub fn open(&self, name: &str) -> Result<(PoolConfig, std::os::fd::OwnedFd), Error> {
        let p = self.get(name)?;
        let fd = files::open_dir(std::path::Path::new(&p.path)).map_err(|e| Error::Io {
            action: "open the pool directory",
            path: format!("{} (pool {name})", p.path),
            message: e.to_string(),
        })?;
        Ok((p, fd))
    }

    pub fn view(&self, p: PoolConfig, kind: &'static str) -> PoolView {
        let (state, stats, problem) =
            match files::open_dir(std::path::Path::new(&p.path)).and_then(|fd| files::space(&fd)) {
                Ok((capacity, allocation, available)) => (
                    PoolState::Running,
                    Some(PoolStats {
                        capacity,
                        allocation,
                        available,
                    }),
                    None,
                ),
                Err(e) => (PoolState::Inactive, None, Some(format!("{}: {e}", p.path))),
            };
        PoolView {
            name: p.name,
            path: p.path,
            state,
            kind,
            stats,
            problem,
        }
    }

    /// Defines (or redefines) a pool: its directory must lie inside a storage root, for
    /// administrators too (they add roots in the configuration), and exist.
    pub fn define(&self, p: &PoolConfig) -> Result<(), Error> {
        check_name(&p.name).map_err(|m| invalid("name", m))?;
        if self.root_pools().iter().any(|r| r.name == p.name) {
            return Err(invalid(
                "name",
                format!(
                    "{} is the pool of a storage root (set in the configuration)",
                    p.name
                ),
            ));
        }
        match self.roots.open_beneath(
            &p.path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(_) => {}
            Err(Refusal::Rule(why)) => return Err(super::errors::forbidden("target.path", why)),
            Err(Refusal::Missing(why)) => {
                return Err(invalid(
                    "target.path",
                    format!("{why} (create the directory first)"),
                ))
            }
            Err(Refusal::Io(why)) => return Err(invalid("target.path", why)),
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| io("create", self.dir.display().to_string(), e))?;
        let path = self.file(&p.name);
        crate::persist::atomic::write_atomic(&path, p.to_xml(None).as_bytes(), 0o600)
            .map_err(|e| io("write", path.display().to_string(), e))
    }

    pub fn undefine(&self, name: &str) -> Result<(), Error> {
        if self.root_pools().iter().any(|r| r.name == name) {
            return Err(invalid(
                "pool",
                format!("{name} is the pool of a storage root (remove it from the configuration)"),
            ));
        }
        self.get(name)?;
        let path = self.file(name);
        std::fs::remove_file(&path).map_err(|e| io("remove", path.display().to_string(), e))
    }
}

impl Service {
    pub(crate) fn pools(&self) -> Pools {
        Pools {
            roots: self.inner.storage_roots.clone(),
            dir: self.inner.config.state_dir.join("pools"),
        }
    }

    pub async fn pool_list(&self) -> Result<Vec<PoolView>, Error> {
        let pools = self.pools();
        tokio::task::spawn_blocking(move || {
            pools
                .all()
                .into_iter()
                .map(|(p, kind)| pools.view(p, kind))
                .collect()
        })
        .await
        .map_err(joined)
    }

    pub async fn pool_info(&self, name: &str) -> Result<PoolView, Error> {
        let pools = self.pools();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let kind = if pools.root_pools().iter().any(|r| r.name == name) {
                "root"
            } else {
                "defined"
            };
            let p = pools.get(&name)?;
            Ok(pools.view(p, kind))
        })
        .await
        .map_err(joined)?
    }

    pub async fn pool_xml(&self, name: &str) -> Result<String, Error> {
        let view = self.pool_info(name).await?;
        let config = PoolConfig {
            name: view.name,
            uuid: None,
            path: view.path,
        };
        Ok(config.to_xml(view.stats.as_ref()))
    }

    pub async fn pool_define(&self, config: PoolConfig) -> Result<PoolView, Error> {
        let pools = self.pools();
        tokio::task::spawn_blocking(move || {
            pools.define(&config)?;
            Ok(pools.view(config, "defined"))
        })
        .await
        .map_err(joined)?
    }

    pub async fn pool_undefine(&self, name: &str) -> Result<(), Error> {
        let pools = self.pools();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || pools.undefine(&name))
            .await
            .map_err(joined)?
    }
}
