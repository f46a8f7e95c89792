//! Storage roots: the directories a non-admin definition may name files in, and the one place
//! that decides whether a definition's host references are allowed ([`check_ref`]), at define
//! and again, with the files opened, at start ([`super::guest_files`]).
//!
//! Paths are resolved beneath the root's directory descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: a `..`, an absolute symlink or a relative one climbing out fails
//! in the kernel, with no window between the check and the open.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use novacron_domain::model::{DiskFormat, HostRef, HostRefKind};

/// Entropy sources any caller may give a virtio-rng device.
pub const OPEN_RNG_BACKENDS: [&str; 3] = ["/dev/urandom", "/dev/random", "/dev/hwrng"];
/// The default root's name, `<state_dir>/images`.
pub const DEFAULT_ROOT: &str = "images";
/// How deep a non-admin qcow2 backing chain is followed before it is refused.
pub(crate) const MAX_CHAIN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRoots {
    roots: Vec<Root>,
}

impl StorageRoots {
    /// `images` = `<state_dir>/images` unless configured otherwise, plus every configured root.
    pub fn new(state_dir: &Path, configured: &BTreeMap<String, PathBuf>) -> StorageRoots {
        let mut map = configured.clone();
        map.entry(DEFAULT_ROOT.to_owned())
            .or_insert_with(|| state_dir.join(DEFAULT_ROOT));
        StorageRoots {
            roots: map
                .into_iter()
                .map(|(name, path)| Root { name, path })
                .collect(),
        }
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Creates the roots that do not exist yet (mode 0750); existing ones are left as they are.
    pub fn create_dirs(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for r in &self.roots {
            if !r.path.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(&r.path)?;
            }
        }
        Ok(())
    }

    /// `images: /var/lib/novacron/images, iso: /srv/iso`, for refusals.
    pub fn describe(&self) -> String {
        self.roots
            .iter()
            .map(|r| format!("{}: {}", r.name, r.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn outside(&self, path: &str) -> String {
        format!("{path} is outside the storage roots ({})", self.describe())
    }

    /// The root `path` lies in (lexically: absolute, no `.`/`..` components) and the path
    /// relative to it; the deepest root wins.
    fn locate(&self, path: &str) -> Result<(&Root, PathBuf), String> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(format!("{path} is not an absolute path"));
        }
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!(
                "{path} contains '..' (name files inside the storage roots directly)"
            ));
        }
        self.roots
            .iter()
            .filter_map(|r| Some((r, p.strip_prefix(&r.path).ok()?.to_path_buf())))
            .filter(|(_, rel)| !rel.as_os_str().is_empty())
            .max_by_key(|(r, _)| r.path.components().count())
            .ok_or_else(|| self.outside(path))
    }

    /// Opens `path` with `flags` (plus `O_CLOEXEC | O_NOCTTY`), resolved beneath the storage
    /// root it lies in. The error is the refusal's text.
    pub fn open_beneath(&self, path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Refusal> {
        let (root, rel) = self.locate(path).map_err(Refusal::Rule)?;
        let dir = nix::fcntl::open(
            &root.path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Refusal::Io(format!("storage root {}: {e}", root.path.display())))?;
        // openat2 refuses O_PATH with most other flags.
        let extra = if flags.contains(OFlag::O_PATH) {
            OFlag::O_CLOEXEC
        } else {
            OFlag::O_CLOEXEC | OFlag::O_NOCTTY
        };
        // ... and a mode without O_CREAT.
        let mode = if flags.contains(OFlag::O_CREAT) {
            mode
        } else {
            Mode::empty()
        };
        let how = OpenHow::new()
            .flags(flags | extra)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        nix::fcntl::openat2(dir.as_fd(), rel.as_path(), how).map_err(|e| match e {
            nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP => Refusal::Rule(format!(
                "{path} resolves outside the storage root {} ({}: a symbolic link points out)",
                root.name,
                root.path.display()
            )),
            nix::errno::Errno::ENOENT => Refusal::Missing(format!("{path} does not exist")),
            e => Refusal::Io(format!("{path}: {}", io::Error::from(e))),
        })
    }
}

/// Why a reference is refused: a rule of the caller's role, or a plain fact (missing, I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The role's rule: outside the roots, escapes by a link, admin-only.
    Rule(String),
    Missing(String),
    Io(String),
}

impl Refusal {
    pub fn text(&self) -> &str {
        match self {
            Refusal::Rule(s) | Refusal::Missing(s) | Refusal::Io(s) => s,
        }
    }
}

/// One refused field, printed as `field: why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub refusal: Refusal,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.refusal.text())
    }
}

/// Whether `kind` is for admins only, whatever the value (host devices and NICs).
fn admin_only(r: &HostRef<'_>) -> Option<String> {
    let v = &r.value;
    match r.kind {
        HostRefKind::BlockDevice { .. } => Some(format!(
            "{v}: host block devices are for admins only (use an image file inside the storage roots)"
        )),
        HostRefKind::HostPci { .. } => {
            Some(format!("{v}: host PCI devices are for admins only"))
        }
        HostRefKind::HostNic => Some(format!(
            "{v}: macvtap on a host NIC is for admins only (use a bridge or network)"
        )),
        HostRefKind::HostVlan => Some(format!(
            "{v}: a VLAN tag on a host bridge's port is for admins only (it reaches that VLAN \
             of the host's network; use a network)"
        )),
        // QEMU opens the connection itself, from the host's network position: a non-admin
        // could make it reach services only the host can (metadata endpoints, loopback
        // daemons, the management network: SSRF) and read or write what answers there as a
        // disk; an NBD socket is connected by name like any socket outside the roots.
        HostRefKind::NetworkDisk { protocol } => Some(format!(
            "{v}: {} network disks are for admins only (QEMU would connect from this host's \
             network position; use an image file inside the storage roots)",
            protocol.as_str()
        )),
        // virtiofsd runs as root with its capabilities (chown, mknod, setuid...) in
        // passthrough mode, and is given the share by path: a guest could plant setuid-root
        // files or device nodes in the roots, and a path swapped between the check and
        // virtiofsd's start would be served. Until it runs unprivileged on a descriptor,
        // admins only; 9p (QEMU's own server, on the checked descriptor, as QEMU's user)
        // stays open to operators.
        HostRefKind::SharedDir { virtiofs: true, .. } => Some(format!(
            "{v}: virtiofs shares are for admins only (virtiofsd runs as root); use \
             <driver type='path'/> (9p)"
        )),
        HostRefKind::ListenAddress if !is_loopback(v) => Some(format!(
            "{v}: listening beyond loopback opens the guest's console to the network and is for \
             admins only (leave listen out for localhost)"
        )),
        HostRefKind::RngBackend if !OPEN_RNG_BACKENDS.contains(&v.as_ref()) => Some(format!(
            "{v}: entropy sources other than {} are for admins only",
            OPEN_RNG_BACKENDS.join(", ")
        )),
        _ => None,
    }
}

/// A loopback address (127.0.0.0/8, ::1); anything unparsable is not.
fn is_loopback(v: &str) -> bool {
    v.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The rule for one host reference of a non-admin definition, checked against the files as
/// they are now. Admin definitions may name anything and are not checked here. Missing files
/// are allowed (a disk may be created later; start opens them and fails then).
pub fn check_ref(roots: &StorageRoots, r: &HostRef<'_>) -> Result<(), Refusal> {
    if let Some(why) = admin_only(r) {
        return Err(Refusal::Rule(why));
    }
    let path = r.value.as_ref();
    match r.kind {
        HostRefKind::BlockDevice { .. }
        | HostRefKind::HostPci { .. }
        | HostRefKind::HostNic
        | HostRefKind::HostVlan
        | HostRefKind::NetworkDisk { .. }
        | HostRefKind::ListenAddress
        | HostRefKind::RngBackend => Ok(()),
        HostRefKind::UnixSocket { .. } => check_socket(roots, path),
        // A directory inside a root. QEMU gets it as a descriptor opened beneath the root
        // (`guest_files`), and its 9p server resolves every guest path beneath that with
        // no-follow semantics, so a link inside the share cannot lead out of it.
        HostRefKind::SharedDir { .. } => {
            match roots.open_beneath(path, OFlag::O_PATH, Mode::empty()) {
                Ok(fd) => {
                    let st = nix::sys::stat::fstat(&fd)
                        .map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
                    if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFDIR {
                        Ok(())
                    } else {
                        Err(Refusal::Rule(format!("{path} is not a directory")))
                    }
                }
                Err(Refusal::Missing(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        HostRefKind::DiskImage { format, .. } => {
            match roots.open_beneath(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()) {
                Ok(fd) => check_image(roots, path, fd, format),
                Err(Refusal::Missing(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        HostRefKind::BootImage
        | HostRefKind::Firmware { .. }
        | HostRefKind::Nvram
        | HostRefKind::NvramTemplate
        | HostRefKind::CharFile => match roots.open_beneath(path, OFlag::O_PATH, Mode::empty()) {
            Ok(fd) => regular(path, &fd),
            Err(Refusal::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        },
    }
}

/// A socket path: its directory must resolve beneath a root, and an existing entry must not
/// be a symbolic link (QEMU binds and connects by name).
fn check_socket(roots: &StorageRoots, path: &str) -> Result<(), Refusal> {
    let p = Path::new(path);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(Refusal::Rule(roots.outside(path)));
    };
    // The socket itself must lie inside a root, not be one.
    roots.locate(path).map_err(Refusal::Rule)?;
    let parent = parent.to_str().unwrap_or_default();
    let dir = match roots.locate(parent) {
        // The socket sits directly in a root directory.
        Err(_) if roots.roots.iter().any(|r| r.path == Path::new(parent)) => nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Refusal::Io(format!("{parent}: {e}")))?,
        _ => roots.open_beneath(parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?,
    };
    match nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFLNK => Err(Refusal::Rule(
            format!("{path} is a symbolic link (a socket must be named directly)"),
        )),
        // QEMU unlinks what is there before it binds: it must not be an image or any file.
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) != nix::libc::S_IFSOCK => {
            Err(Refusal::Rule(format!("{path} exists and is not a socket")))
        }
        _ => Ok(()),
    }
}

fn regular(path: &str, fd: &OwnedFd) -> Result<(), Refusal> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| Refusal::Io(format!("{path}: {e}")))?;
    if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG {
        Ok(())
    } else {
        Err(Refusal::Rule(format!("{path} is not a regular file")))
    }
}

/// A disk image inside the roots: a regular file, and for qcow2 every file its header makes
/// QEMU open (backing chain, external data file) inside the roots too.
pub fn check_image(
    roots: &StorageRoots,
    path: &str,
    fd: OwnedFd,
    format: DiskFormat,
) -> Result<(), Refusal> {
    regular(path, &fd)?;
    if format != DiskFormat::Qcow2 {
        return Ok(());
    }
    let mut file = std::fs::File::from(fd);
    let mut at = path.to_owned();
    for _ in 0..MAX_CHAIN {
        let refs = match super::qcow2::refs(&mut file) {
            Ok(r) => r,
            // Not (yet) qcow2: QEMU will refuse it; nothing is named by it.
            Err(super::qcow2::Qcow2Error::NotQcow2) => return Ok(()),
            Err(e) => return Err(Refusal::Rule(format!("{at}: {e}"))),
        };
        // QEMU opens an external data file by name, relative to its own working directory,
        // not the image's: no check here could follow it, so non-admins may not use one.
        if let Some(data) = refs.data_file {
            return Err(Refusal::Rule(format!(
                "{at}: names an external data file ({data}), which only an administrator's \
                 definition may use"
            )));
        }
        let Some(backing) = refs.backing else {
            return Ok(());
        };
        let next = relative_to(&at, &backing)?;
        let fd = roots
            .open_beneath(&next, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
            .map_err(|e| Refusal::Rule(format!("{at}: backing file {}", e.text())))?;
        regular(&next, &fd)?;
        file = std::fs::File::from(fd);
        at = next;
    }
    Err(Refusal::Rule(format!(
        "{path}: backing chain deeper than {MAX_CHAIN}"
    )))
}

/// A name from a qcow2 header as QEMU resolves it: relative to the image's directory. Protocol
/// prefixes (`nbd:`, `json:`...) are refused: QEMU would not open a file at all.
pub(crate) fn relative_to(image: &str, name: &str) -> Result<String, Refusal> {
    if name.contains(':') {
        return Err(Refusal::Rule(format!(
            "{image}: names {name:?}, which QEMU may read as a protocol (not a file)"
        )));
    }
    if name.starts_with('/') {
        return Ok(name.to_owned());
    }
    let dir = Path::new(image).parent().unwrap_or(Path::new("/"));
    Ok(dir.join(name).to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn setup() -> (tempfile::TempDir, StorageRoots, String) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("images");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("disk.raw"), b"x").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("../disk.raw", root.join("sub/inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs-out")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("rel-out")).unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("dir-out")).unwrap();
        let roots = StorageRoots::new(d.path(), &BTreeMap::new());
        let r = root.to_str().unwrap().to_owned();
        (d, roots, r)
    }

    fn disk(path: &str) -> HostRef<'_> {
        HostRef {
            field: "devices.disks[0].source.file".into(),
            value: Cow::Borrowed(path),
            kind: HostRefKind::DiskImage {
                readonly: false,
                format: DiskFormat::Raw,
            },
        }
    }

    fn rule(r: Result<(), Refusal>) -> String {
        match r {
            Err(Refusal::Rule(s)) => s,
            other => panic!("expected a rule refusal, got {other:?}"),
        }
    }

    #[test]
    fn resolver_rules() {
        let (_d, roots, r) = setup();
        check_ref(&roots, &disk(&format!("{r}/disk.raw"))).unwrap();
        // A symlink that stays inside the root is fine.
        check_ref(&roots, &disk(&format!("{r}/sub/inside"))).unwrap();
        // A missing file is allowed at define (start opens it).
        check_ref(&roots, &disk(&format!("{r}/later.raw"))).unwrap();
        assert!(rule(check_ref(&roots, &disk("/etc/shadow")))
            .starts_with("/etc/shadow is outside the storage roots (images: "));
        assert!(rule(check_ref(&roots, &disk(&format!("{r}/../outside")))).contains("'..'"));
        for link in ["abs-out", "rel-out", "dir-out/passwd"] {
            let msg = rule(check_ref(&roots, &disk(&format!("{r}/{link}"))));
            assert!(
                msg.contains("resolves outside the storage root images"),
                "{msg}"
            );
        }
        // Missing, but below a link that leads out: refused, not "missing".
        rule(check_ref(&roots, &disk(&format!("{r}/dir-out/nothing"))));
        assert!(rule(check_ref(&roots, &disk(&format!("{r}/sub")))).contains("not a regular file"));
        // The root itself is not a file in it.
        rule(check_ref(&roots, &disk(&r)));
    }

    #[test]
    fn start_time_open_refuses_what_define_would() {
        let (_d, roots, r) = setup();
        let open = |p: &str| roots.open_beneath(p, OFlag::O_RDONLY, Mode::empty());
        assert!(open(&format!("{r}/disk.raw")).is_ok());
        assert!(matches!(
            open(&format!("{r}/nope")),
            Err(Refusal::Missing(_))
        ));
        assert!(matches!(
            open(&format!("{r}/abs-out")),
            Err(Refusal::Rule(_))
        ));
        assert!(matches!(open("/etc/passwd"), Err(Refusal::Rule(_))));
    }

    #[test]
    fn admin_only_kinds_and_rng() {
        let (_d, roots, _r) = setup();
        let mk = |value: &'static str, kind| HostRef {
            field: "f".into(),
            value: Cow::Borrowed(value),
            kind,
        };
        rule(check_ref(
            &roots,
            &mk("/dev/sda", HostRefKind::BlockDevice { readonly: false }),
        ));
        rule(check_ref(
            &roots,
            &mk("0000:01:00.0", HostRefKind::HostPci { managed: true }),
        ));
        rule(check_ref(&roots, &mk("eth0", HostRefKind::HostNic)));
        rule(check_ref(&roots, &mk("br0", HostRefKind::HostVlan)));
        for open in ["127.0.0.1", "127.0.0.2", "::1"] {
            check_ref(&roots, &mk(open, HostRefKind::ListenAddress)).unwrap();
        }
        for public in ["0.0.0.0", "::", "192.0.2.1", "not-an-ip"] {
            rule(check_ref(&roots, &mk(public, HostRefKind::ListenAddress)));
        }
        check_ref(&roots, &mk("/dev/urandom", HostRefKind::RngBackend)).unwrap();
        rule(check_ref(&roots, &mk("/dev/sda", HostRefKind::RngBackend)));
    }

    #[test]
    fn sockets_inside_only_and_never_links() {
        let (_d, roots, r) = setup();
        let sock = |p: String| HostRef {
            field: "f".into(),
            value: Cow::Owned(p),
            kind: HostRefKind::UnixSocket { server: true },
        };
        check_ref(&roots, &sock(format!("{r}/s.sock"))).unwrap();
        check_ref(&roots, &sock(format!("{r}/sub/s.sock"))).unwrap();
        rule(check_ref(&roots, &sock("/run/x.sock".into())));
        rule(check_ref(&roots, &sock(format!("{r}/dir-out/x.sock"))));
        rule(check_ref(&roots, &sock(format!("{r}/abs-out"))));
    }

    #[test]
    fn qcow2_backing_outside_the_roots_is_refused() {
        let (d, roots, r) = setup();
        let img = |args: &[&str]| {
            let out = std::process::Command::new("qemu-img")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        let base = format!("{r}/base.qcow2");
        img(&["create", "-q", "-f", "qcow2", &base, "1M"]);
        let good = format!("{r}/good.qcow2");
        img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "base.qcow2",
            &good,
        ]);
        let outside = d.path().join("out.qcow2");
        img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            outside.to_str().unwrap(),
            "1M",
        ]);
        let bad = format!("{r}/bad.qcow2");
        img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            outside.to_str().unwrap(),
            &bad,
        ]);
        let q = |p: &str| HostRef {
            field: "f".into(),
            value: Cow::Owned(p.to_owned()),
            kind: HostRefKind::DiskImage {
                readonly: false,
                format: DiskFormat::Qcow2,
            },
        };
        check_ref(&roots, &q(&good)).unwrap();
        let msg = rule(check_ref(&roots, &q(&bad)));
        assert!(
            msg.contains("backing file") && msg.contains("outside"),
            "{msg}"
        );
    }
}
