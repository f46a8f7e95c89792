//! The Debian root file system the systemd container test boots: built once per machine by
//! `tests/nspawn/build-rootfs.sh` (debootstrap; the script owns the cache entry, its lock and
//! its atomic rename, so quickstart.sh can start it early) and only ever read: containers run
//! on a throw-away overlay of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::cache::cache_dir;

/// Path of the build script (in the source tree); its hash keys the cache.
pub fn rootfs_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nspawn/build-rootfs.sh")
}

/// The cached root file system, built first if missing (minutes on a fresh machine:
/// debootstrap downloads and unpacks about 330 MB). Blocks; memoised per process.
pub fn nspawn_rootfs() -> Result<PathBuf> {
    static ROOTFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOTFS
        .get_or_init(|| build_if_needed().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("container root file system unavailable: {e}"))
}

fn build_if_needed() -> Result<PathBuf> {
    let script = rootfs_script();
    let start = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg(cache_dir())
        .output()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} failed ({}); its stderr:\n{}",
            script.display(),
            output.status,
            crate::tail(&stderr, 40)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let root = PathBuf::from(stdout.lines().last().unwrap_or_default());
    if !root.join("usr/lib/os-release").is_file() {
        bail!(
            "{} printed {stdout:?}, which is no root file system",
            script.display()
        );
    }
    if !stderr.trim().is_empty() || start.elapsed().as_secs() > 0 {
        // A build (or a wait for one) happened: say how long it took.
        eprintln!(
            "novacron-tests: container root file system {} ready after {:.1}s:\n{}",
            root.display(),
            start.elapsed().as_secs_f64(),
            crate::tail(&stderr, 3)
        );
    }
    Ok(root)
}
