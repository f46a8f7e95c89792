//! Reading a small file whose path came from a request (a CA certificate, say). The daemon
//! runs as root, so such a path is hostile: it may name a secret, `/dev/zero`, or a FIFO that
//! never delivers. Read only inside one allowed directory, only a regular file, only up to a
//! cap, and on the blocking pool, so no tokio worker can be held by it.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use novacron_domain::Error;

/// No certificate bundle comes near this.
pub const MAX_REQUEST_FILE_BYTES: u64 = 1 << 20;

/// Reads `path` (named by the request's `field`) if it is a regular file of at most
/// [`MAX_REQUEST_FILE_BYTES`] inside `allowed_dir`. Refusals name the field, the path and
/// the rule.
pub async fn read(field: &str, path: &Path, allowed_dir: &Path) -> Result<Vec<u8>, Error> {
    let (field, path, dir) = (field.to_owned(), path.to_owned(), allowed_dir.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&field, &path, &dir))
        .await
        .map_err(|e| Error::Internal(format!("reading a request file: {e}")))?
}

/// The blocking part of [`read`]; call it on a blocking thread only.
pub fn read_blocking(field: &str, path: &Path, allowed_dir: &Path) -> Result<Vec<u8>, Error> {
    let refuse = |why: String| Error::InvalidConfig(format!("{field}: {}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(refuse("must be an absolute path".into()));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse("must not contain '.' or '..'".into()));
    }
    let outside = || {
        refuse(format!(
            "is outside the directory files named in requests are read from ({})",
            allowed_dir.display()
        ))
    };
    if !path.starts_with(allowed_dir) {
        return Err(outside());
    }
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer;
    // O_NOFOLLOW: the last component may not be a symlink (ones earlier on are caught below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    // Where the open really landed, after any symlink in the directories on the way.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| refuse(format!("cannot tell where it leads: {e}")))?;
    let real_dir = canonical(allowed_dir);
    if !real.starts_with(&real_dir) {
        return Err(outside());
    }
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(refuse(format!("is {what}; only a regular file is read")));
    }
    if meta.len() > MAX_REQUEST_FILE_BYTES {
        return Err(refuse(format!(
            "is over the {MAX_REQUEST_FILE_BYTES} byte limit"
        )));
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may grow after the fstat.
    file.take(MAX_REQUEST_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > MAX_REQUEST_FILE_BYTES {
        return Err(refuse(format!(
            "is over the {MAX_REQUEST_FILE_BYTES} byte limit"
        )));
    }
    Ok(bytes)
}

fn libc_flags() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
        | nix::fcntl::OFlag::O_NOFOLLOW.bits()
        | nix::fcntl::OFlag::O_CLOEXEC.bits()
        | nix::fcntl::OFlag::O_NOCTTY.bits()
}

/// The directory as the kernel names it (a missing one stays as given: nothing is in it).
fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_inside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        std::fs::create_dir(&dir).unwrap();
        let ok = dir.join("ca.pem");
        std::fs::write(&ok, b"pem").unwrap();
        assert_eq!(read_blocking("f", &ok, &dir).unwrap(), b"pem");

        let err = |p: &Path| {
            read_blocking("destination_ca", p, &dir)
                .unwrap_err()
                .to_string()
        };
        let outside = tmp.path().join("secret");
        std::fs::write(&outside, b"s").unwrap();
        assert!(err(&outside).contains("outside"), "{}", err(&outside));
        assert!(err(Path::new("/dev/zero")).contains("outside"));
        let dotdot = dir.join("../secret");
        assert!(err(&dotdot).contains(".."), "{}", err(&dotdot));
        assert!(err(Path::new("ca.pem")).contains("absolute"));

        // A symlink inside that leads out, as the last component or on the way.
        let link = dir.join("link.pem");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(read_blocking("f", &link, &dir).is_err());
        let sub = dir.join("sub");
        std::os::unix::fs::symlink(tmp.path(), &sub).unwrap();
        assert!(err(&sub.join("secret")).contains("outside"));

        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(err(&fifo).contains("FIFO"), "{}", err(&fifo));
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'x'; (MAX_REQUEST_FILE_BYTES + 1) as usize]).unwrap();
        assert!(err(&big).contains("limit"), "{}", err(&big));
    }
}
