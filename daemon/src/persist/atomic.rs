//! Crash-safe file replacement and removal: after a crash a reader sees the old file or the
//! new one, never a torn mix. `write_atomic`/`remove_durable` also survive power loss (for
//! definitions and other state that outlives the host's uptime); `write_runtime`/
//! `remove_runtime` survive a crash of the daemon only, which is all a runtime file needs.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temp files of concurrent writers within this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Marker inside our temp file names (`.<name>.tmp.<pid>.<n>`); scanners skip such files.
pub const TEMP_MARKER: &str = ".tmp.";

/// Replace `path` with `bytes` (file mode `mode`, exactly, regardless of umask): write a temp
/// file in the same directory, fsync it, rename it over `path`, fsync the directory.
/// On failure the temp file is removed and `path` is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, true)
}

/// Replace `path` with `bytes` like `write_atomic`, without the fsyncs: for files in the run
/// directory that describe what a host crash takes with it (QEMU processes, taps, bridges,
/// rules). A crash of the daemon loses nothing (the page cache is the kernel's, and the rename
/// is atomic); after a power loss the file may be old, empty or missing, and so is what it
/// described. Two fsyncs cost 0.5–15 ms on this machine's disk, more than the QMP command a
/// hotplug records.
pub fn write_runtime(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, false)
}

/// Remove a runtime file (see `write_runtime`). `Ok(false)` if it did not exist.
pub fn remove_runtime(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        "{TEMP_MARKER}{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    // create_new: never write through a file or symlink someone planted under the temp name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = (|| {
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Remove `path` and make the removal durable. `Ok(false)` if it did not exist.
pub fn remove_durable(path: &Path) -> io::Result<bool> {
    let (dir, _) = split(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Async wrapper: `write_atomic` on the blocking pool.
pub async fn write_atomic_async(path: PathBuf, bytes: Vec<u8>, mode: u32) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, mode))
        .await
        .map_err(io::Error::other)?
}

/// Async wrapper: `write_runtime` on the blocking pool.
pub async fn write_runtime_async(path: PathBuf, bytes: Vec<u8>, mode: u32) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_runtime(&path, &bytes, mode))
        .await
        .map_err(io::Error::other)?
}

/// Async wrapper: `remove_runtime` on the blocking pool.
pub async fn remove_runtime_async(path: PathBuf) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || remove_runtime(&path))
        .await
        .map_err(io::Error::other)?
}

/// Async wrapper: `remove_durable` on the blocking pool.
pub async fn remove_durable_async(path: PathBuf) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || remove_durable(&path))
        .await
        .map_err(io::Error::other)?
}

fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// A rename or unlink is durable only once the directory entry is on disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_applies_mode_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.xml");
        write_atomic(&path, b"one", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        write_atomic(&path, b"two, longer", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two, longer");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(names(tmp.path()), ["a.xml"]);
    }

    #[test]
    fn failure_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let e = write_atomic(&tmp.path().join("missing/a.xml"), b"x", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // Rename onto a non-empty directory fails after the temp file was written.
        std::fs::create_dir_all(tmp.path().join("d/inner")).unwrap();
        write_atomic(&tmp.path().join("d"), b"x", 0o600).unwrap_err();
        assert_eq!(names(tmp.path()), ["d"]);
        let e = write_atomic(Path::new("/"), b"x", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "/: not a file path");
    }

    #[test]
    fn runtime_writes_replace_atomically_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.json");
        write_runtime(&path, b"one", 0o600).unwrap();
        write_runtime(&path, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(names(tmp.path()), ["r.json"]);
        assert!(remove_runtime(&path).unwrap());
        assert!(!remove_runtime(&path).unwrap());
        write_runtime(&tmp.path().join("missing/r.json"), b"x", 0o600).unwrap_err();
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn remove_reports_existence() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.json");
        assert!(!remove_durable(&path).unwrap());
        std::fs::write(&path, b"x").unwrap();
        assert!(remove_durable(&path).unwrap());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn async_wrappers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a");
        write_atomic_async(path.clone(), b"hi".to_vec(), 0o600)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hi");
        assert!(remove_durable_async(path.clone()).await.unwrap());
        assert!(!remove_durable_async(path).await.unwrap());
    }
}
