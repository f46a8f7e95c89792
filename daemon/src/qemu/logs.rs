//! Per-guest log files (QEMU stderr, serial console) with a size cap.
//!
//! QEMU holds these files open with O_APPEND for its whole life, across daemon restarts, so
//! they cannot be renamed away (QEMU would keep writing to the renamed file). Rotation is
//! copy-then-truncate instead: an O_APPEND writer simply continues at the new end, offset 0.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::persist::atomic::write_atomic;

/// Logs may hold guest console output: not world-readable.
const MODE: u32 = 0o640;
/// Longest partial first line `cap_log` drops from the kept tail.
const MAX_PARTIAL_LINE: u64 = 4096;

/// Open (creating) a log file for appending; the handle is what QEMU's stdio gets.
pub fn open_append(path: &Path) -> io::Result<File> {
    // O_NOFOLLOW: a symlink planted in the log dir must not redirect a root-owned write.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Whether both paths name one existing file (same device and inode): how the log capper
/// makes sure it never touches the audit log, however a guest's log got to share it.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `<path>.1`, where `cap_log` keeps the newest part of the old content.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// If `path` is over `max_bytes`, copy its last `max_bytes / 2` bytes (from the first line
/// start within them, when there is one) to `<path>.1`, replacing it, then truncate `path`
/// to 0. Returns whether it rotated; a missing file is `Ok(false)`.
///
/// Output written between the copy and the truncate is lost (inherent to copy-truncate);
/// the window is one small read and one write.
pub fn cap_log(path: &Path, max_bytes: u64) -> io::Result<bool> {
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    let len = meta.len();
    if len <= max_bytes {
        return Ok(false);
    }
    let keep = max_bytes / 2;
    // One byte before the kept part says whether it starts at a line boundary.
    let from = len - keep;
    file.seek(SeekFrom::Start(from - 1))?;
    let mut tail = Vec::with_capacity(keep as usize + 1);
    (&mut file).take(keep + 1).read_to_end(&mut tail)?;
    let start = match tail.split_first() {
        Some((b'\n', _)) | None => 1,
        // Drop the partial first line, if it is short; a long one (a console without
        // newlines) is kept whole rather than lost.
        Some((_, rest)) => match rest.iter().position(|&b| b == b'\n') {
            Some(nl) if (nl as u64) < (keep / 2).min(MAX_PARTIAL_LINE) => nl + 2,
            _ => 1,
        },
    };
    write_atomic(&rotated_path(path), &tail[start.min(tail.len())..], MODE)?;
    file.set_len(0)?;
    Ok(true)
}

/// Async wrapper: `cap_log` on the blocking pool.
pub async fn cap_log_async(path: PathBuf, max_bytes: u64) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || cap_log(&path, max_bytes))
        .await
        .map_err(io::Error::other)?
}

/// Async wrapper: `open_append` on the blocking pool.
pub async fn open_append_async(path: PathBuf) -> io::Result<File> {
    tokio::task::spawn_blocking(move || open_append(&path))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn missing_or_small_file_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.log");
        assert!(!cap_log(&path, 100).unwrap());
        assert!(!path.exists());
        std::fs::write(&path, b"short\n").unwrap();
        assert!(!cap_log(&path, 100).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"short\n");
        assert!(!rotated_path(&path).exists());
    }

    #[test]
    fn append_writer_continues_without_hole_after_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.log");
        let mut writer = open_append(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, MODE);
        let mut old = Vec::new();
        for i in 0..100 {
            let line = format!("line {i:03}\n");
            writer.write_all(line.as_bytes()).unwrap();
            old.extend_from_slice(line.as_bytes());
        }
        assert_eq!(old.len(), 900);
        assert!(cap_log(&path, 500).unwrap());
        // 250 bytes kept, trimmed to whole lines: the last 27 lines (243 bytes).
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated.len(), 243);
        assert!(old.ends_with(&rotated));
        assert!(rotated.starts_with(b"line 073\n"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

        writer.write_all(b"after cap\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after cap\n");

        // A second rotation replaces .1.
        writer.write_all(&[b'x'; 600]).unwrap();
        assert!(cap_log(&path, 500).unwrap());
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated, vec![b'x'; 250], "no newline: the raw tail");
        writer.write_all(b"z").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"z");
    }

    #[test]
    fn cut_on_a_line_boundary_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.serial.log");
        // 10 lines of 10 bytes; keep 50: the cut falls right after a newline.
        let content: Vec<u8> = (0..10)
            .flat_map(|i| format!("serial {i:02}\n").into_bytes())
            .collect();
        std::fs::write(&path, &content).unwrap();
        assert!(cap_log(&path, 100 - 1).unwrap());
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated, &content[content.len() - 49..][9..]);
        std::fs::write(&path, &content).unwrap();
        assert!(cap_log(&path, 100).is_ok_and(|r| !r));
        // 200 bytes, keep 100: the cut falls right after a newline, nothing is dropped.
        std::fs::write(&path, [&content[..], &content[..]].concat()).unwrap();
        assert!(cap_log(&path, 200 - 1).unwrap());
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated.len(), 100 - 1 - 9);
        std::fs::write(&path, [&content[..], &content[..]].concat()).unwrap();
        assert!(cap_log(&path, 100).unwrap());
        let rotated = std::fs::read(rotated_path(&path)).unwrap();
        assert_eq!(rotated, &content[50..]);
        // A newline only at the very end: the long partial line is kept.
        std::fs::write(&path, [vec![b'y'; 300], b"\n".to_vec()].concat()).unwrap();
        assert!(cap_log(&path, 200).unwrap());
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap().len(), 100);
    }

    #[test]
    fn same_file_sees_through_names_not_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        assert!(!same_file(&a, &a), "missing files are never the same");
        std::fs::write(&a, b"x").unwrap();
        assert!(same_file(&a, &tmp.path().join("./a")));
        std::fs::hard_link(&a, &b).unwrap();
        assert!(same_file(&a, &b), "a hard link is the same file");
        std::fs::write(tmp.path().join("c"), b"x").unwrap();
        assert!(!same_file(&a, &tmp.path().join("c")));
    }

    #[tokio::test]
    async fn async_wrappers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.log");
        let mut f = open_append_async(path.clone()).await.unwrap();
        f.write_all(&[b'a'; 200]).unwrap();
        assert!(cap_log_async(path.clone(), 100).await.unwrap());
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap().len(), 50);
    }
}
