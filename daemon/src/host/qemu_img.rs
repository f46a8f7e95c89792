//! `qemu-img` for the snapshot code: image facts, overlay creation, offline commit and
//! rebase. All blocking (run them under spawn_blocking). Images a running QEMU holds are read
//! with `-U` (no lock); creating an overlay over one never opens it (`-u` with the size given).

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use novacron_domain::model::DiskFormat;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub format: DiskFormat,
    pub virtual_size: u64,
    /// Absolute path of the backing file, if any.
    pub backing: Option<String>,
    /// The backing file's format as the image's header records it (absent: not recorded).
    pub backing_format: Option<String>,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "qemu-img {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// Facts of one image (not its chain); `-U`: the image may be in use.
pub fn info(path: &str) -> Result<ImageInfo, String> {
    info_with(path, None)
}

/// As [`info`], read as `format` (never probed from the contents: a guest can write any
/// header into a raw disk).
pub fn info_as(path: &str, format: DiskFormat) -> Result<ImageInfo, String> {
    info_with(path, Some(format))
}

fn info_with(path: &str, format: Option<DiskFormat>) -> Result<ImageInfo, String> {
    #[derive(Deserialize)]
    struct Raw {
        format: String,
        #[serde(rename = "virtual-size")]
        virtual_size: u64,
        #[serde(rename = "full-backing-filename")]
        full_backing: Option<String>,
        #[serde(rename = "backing-filename")]
        backing: Option<String>,
        #[serde(rename = "backing-filename-format")]
        backing_format: Option<String>,
    }
    let out = match format {
        Some(f) => run(&[
            "info",
            "-U",
            "-f",
            format_name(f),
            "--output=json",
            "--",
            path,
        ])?,
        None => run(&["info", "-U", "--output=json", "--", path])?,
    };
    let raw: Raw = serde_json::from_str(&out).map_err(|e| format!("qemu-img info {path}: {e}"))?;
    let format = match raw.format.as_str() {
        "qcow2" => DiskFormat::Qcow2,
        "raw" => DiskFormat::Raw,
        other => return Err(format!("{path}: format {other} (raw or qcow2 only)")),
    };
    Ok(ImageInfo {
        format,
        virtual_size: raw.virtual_size,
        backing: raw.full_backing.or(raw.backing),
        backing_format: raw.backing_format,
    })
}

/// The virtual size of an image whose format is already known (recorded when the daemon first
/// read or made it), from its own header: a raw file's length, a qcow2 header's size field.
/// A snapshot of an image it knows needs no `qemu-img info` process (tens of ms); the format
/// is never probed from the contents (a guest could write a qcow2 header into a raw disk).
pub fn virtual_size(path: &str, format: DiskFormat) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot stat {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    match format {
        DiskFormat::Raw => Ok(meta.len()),
        DiskFormat::Qcow2 => {
            let mut head = [0u8; 32];
            f.read_exact_at(&mut head, 0)
                .map_err(|e| format!("cannot read the qcow2 header of {path}: {e}"))?;
            if &head[..4] != b"QFI\xfb" {
                return Err(format!("{path} is not a qcow2 image (no QFI\\xfb magic)"));
            }
            let mut size = [0u8; 8];
            size.copy_from_slice(&head[24..32]);
            Ok(u64::from_be_bytes(size))
        }
    }
}

/// Creates `overlay` (which must not exist: a name already taken is refused, a symlink is
/// never followed), a qcow2 image over `backing`, written directly (no qemu-img process) and
/// durable (file and directory entry) on return.
pub fn create_overlay(
    overlay: &str,
    backing: &str,
    backing_format: DiskFormat,
    size: u64,
) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(overlay)
        .map_err(|e| format!("cannot create {overlay}: {e}"))?;
    let dir = std::path::Path::new(overlay)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let r = super::qcow2_create::write_overlay(&file, size, backing, format_name(backing_format))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot write the overlay {overlay}: {e}"));
    if r.is_err() {
        let _ = std::fs::remove_file(overlay);
    }
    r
}

/// [`create_overlay`] neither fsync'd nor its directory entry: the caller makes both durable
/// ([`sync_overlays`]) before anything durable names the file. Opened read-write (the
/// descriptor QEMU gets).
pub fn create_overlay_unsynced(
    overlay: &str,
    backing: &str,
    backing_format: DiskFormat,
    size: u64,
) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(overlay)
        .map_err(|e| format!("cannot create {overlay}: {e}"))?;
    let r = super::qcow2_create::write_overlay_unsynced(
        &file,
        size,
        backing,
        format_name(backing_format),
    )
    .map_err(|e| format!("cannot write the overlay {overlay}: {e}"));
    match r {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = std::fs::remove_file(overlay);
            Err(e)
        }
    }
}

/// Makes overlays made by [`create_overlay_unsynced`] durable: their contents, then each
/// directory entry (one fsync per directory).
pub fn sync_overlays<'a>(overlays: impl IntoIterator<Item = &'a str>) -> std::io::Result<()> {
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    for o in overlays {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(o)?
            .sync_data()?;
        let dir = std::path::Path::new(o)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for d in dirs {
        std::fs::File::open(&d)?.sync_all()?;
    }
    Ok(())
}

/// Writes `top`'s data into its backing file `base` (offline).
pub fn commit(top: &str, base: &str) -> Result<(), String> {
    run(&["commit", "-q", "-f", "qcow2", "-b", base, "--", top]).map(drop)
}

/// Points `file`'s header at `backing` without copying anything (the data is the same).
pub fn rebase_unsafe(file: &str, backing: &str, format: DiskFormat) -> Result<(), String> {
    run(&[
        "rebase",
        "-q",
        "-u",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        format_name(format),
        "--",
        file,
    ])
    .map(drop)
}
