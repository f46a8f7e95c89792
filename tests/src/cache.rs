//! The per-machine cache directory and the file locks that serialise work in
//! it across concurrently running test binaries.

use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The per-machine cache: `$NOVACRON_CACHE_DIR`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/novacron`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NOVACRON_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("novacron")
}

/// Takes the exclusive lock `<cache_dir>/<name>.lock`, blocking until it is
/// free. The lock is released when the returned guard is dropped (or the
/// process dies).
pub(crate) fn lock(name: &str) -> Result<Flock<File>> {
    let dir = cache_dir();
    fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("cannot lock {}", path.display()))
}
