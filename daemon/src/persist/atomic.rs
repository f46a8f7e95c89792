//! Crash-safe file replacement and removal: after a crash a reader sees the old file or the
//! new one, never a torn mix, and a completed call survives power loss.

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
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
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
