//! On-disk state: persistent definitions (`definitions`) and runtime records of running
//! guests (`records`), both written with `atomic`.
//!
//! Files on disk are untrusted: loading reports a bad or foreign file as a `Problem` and
//! goes on; nothing here deletes or renames a file it did not just write.

pub mod atomic;
pub mod definitions;
pub mod live_devices;
pub mod records;

pub use atomic::{remove_durable, remove_durable_async, write_atomic, write_atomic_async};
pub use definitions::DefinitionStore;
pub use records::{RecordStore, RuntimeRecord, RECORD_VERSION};

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file that was skipped while loading, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl Problem {
    fn new(path: PathBuf, reason: impl Into<String>) -> Problem {
        Problem {
            path,
            reason: reason.into(),
        }
    }
}

/// How `scan` treats a file whose name lacks the store's extension.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Others {
    /// Report it: the directory should hold nothing else.
    Report,
    /// Skip it silently: the directory is shared with sockets and per-guest dirs.
    Skip,
}

/// Read every `<stem><ext>` regular file in `dir` (sorted by name) and hand its stem and
/// bytes to `parse`. Our temp files are skipped silently; symlinks are not followed and,
/// like directories, special files and files over `limit` bytes, become Problems.
/// A missing `dir` is empty, not a problem: nothing was ever saved.
fn scan<T>(
    dir: &Path,
    ext: &str,
    others: Others,
    limit: usize,
    mut parse: impl FnMut(&str, Vec<u8>) -> Result<T, String>,
) -> (Vec<T>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let read_dir = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (found, problems),
        Err(e) => {
            problems.push(Problem::new(dir.to_owned(), format!("cannot list: {e}")));
            return (found, problems);
        }
    };
    let mut entries: Vec<(OsString, io::Result<std::fs::FileType>)> = Vec::new();
    for entry in read_dir {
        match entry {
            // file_type() comes from readdir's d_type: no extra stat per file.
            Ok(entry) => entries.push((entry.file_name(), entry.file_type())),
            Err(e) => problems.push(Problem::new(dir.to_owned(), format!("cannot list: {e}"))),
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    for (file_name, file_type) in entries {
        let bytes = file_name.as_bytes();
        if bytes.starts_with(b".") && contains(bytes, atomic::TEMP_MARKER.as_bytes()) {
            continue;
        }
        let has_ext = bytes.ends_with(ext.as_bytes());
        if !has_ext && others == Others::Skip {
            continue;
        }
        let path = dir.join(&file_name);
        let reason = match file_type {
            Err(e) => Some(format!("cannot stat: {e}")),
            Ok(t) if t.is_symlink() => Some("symbolic link; not followed".to_owned()),
            Ok(t) if t.is_dir() => Some("directory; ignored".to_owned()),
            Ok(t) if !t.is_file() => Some("not a regular file; ignored".to_owned()),
            Ok(_) if !has_ext => Some(format!("not a {ext} file; ignored")),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            problems.push(Problem::new(path, reason));
            continue;
        }
        let Some(stem) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(ext))
            .filter(|s| !s.is_empty() && !s.starts_with('.'))
        else {
            problems.push(Problem::new(path, "file name is not a domain name"));
            continue;
        };
        let result = read_bounded(&path, limit).and_then(|bytes| parse(stem, bytes));
        match result {
            Ok(t) => found.push(t),
            Err(reason) => problems.push(Problem::new(path, reason)),
        }
    }
    (found, problems)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Read a whole regular file of at most `limit` bytes, in one allocation of its size.
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    // O_NOFOLLOW closes the race with a symlink swapped in after readdir; O_NONBLOCK keeps
    // a FIFO swapped in from blocking the scan.
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file; ignored".to_owned());
    }
    let too_large = |len: u64| format!("is {len} bytes, over the {limit} byte limit");
    if meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    // One byte past the limit detects a file that grew since fstat.
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `<dir>/<name><ext>`, refusing a name that would not be a plain file in `dir`. Names are
/// validated long before this; the check keeps a bug elsewhere from writing outside `dir`.
fn file_for(dir: &Path, name: &str, ext: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not usable as a file name"),
        ));
    }
    Ok(dir.join(format!("{name}{ext}")))
}

/// A panicked scan task becomes a Problem for the directory rather than a panic here.
fn join_problem<T>(dir: &Path, e: tokio::task::JoinError) -> (Vec<T>, Vec<Problem>) {
    (
        Vec::new(),
        vec![Problem::new(dir.to_owned(), format!("scan failed: {e}"))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_display() {
        let p = Problem::new("/a/b.xml".into(), "bad");
        assert_eq!(p.to_string(), "/a/b.xml: bad");
    }

    #[test]
    fn file_for_refuses_escapes() {
        let d = Path::new("/d");
        assert_eq!(file_for(d, "vm", ".xml").unwrap(), Path::new("/d/vm.xml"));
        for bad in ["", ".x", "..", "a/b", "a\0"] {
            let e = file_for(d, bad, ".xml").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not usable as a file name")
            );
        }
    }

    #[test]
    fn read_bounded_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert!(read_bounded(&p, 4)
            .unwrap_err()
            .contains("over the 4 byte limit"));
        std::os::unix::fs::symlink(&p, tmp.path().join("l")).unwrap();
        match read_bounded(&tmp.path().join("l"), 5) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""cannot open: Too many levels of symbolic links (os error 40)""#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
