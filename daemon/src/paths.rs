//! Where everything lives, derived from the three configured directories.
//!
//! The path builders only join; `check_name` is the gate the caller runs once per name
//! before using any of them.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Longest usable Unix socket path in bytes: `sun_path` is 108 bytes including the NUL.
pub const SUN_PATH_MAX: usize = 107;
/// Longest suffix `Paths` appends to a name (`.json`, `.qmp`, `.log`); a name plus it must fit
/// the 255-byte file name limit.
const LONGEST_SUFFIX: usize = ".json".len();
const NAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("domain name {name:?} cannot be used as a file name: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("socket path {path} is {len} bytes, over the {max} byte Unix socket limit; use a shorter run_dir or domain name", max = SUN_PATH_MAX)]
    SocketPathTooLong { path: PathBuf, len: usize },
}

#[derive(Debug, Clone)]
pub struct Paths {
    state: PathBuf,
    run: PathBuf,
    log: PathBuf,
    memory: Option<PathBuf>,
    /// `api.socket_group` when the API socket lives directly in the run directory: its
    /// members must be able to reach the socket.
    socket_group: Option<String>,
}

impl Paths {
    pub fn new(config: &Config) -> Paths {
        Paths {
            state: config.state_dir.clone(),
            run: config.run_dir.clone(),
            log: config.log_dir.clone(),
            memory: config.memory_backing_dir.clone(),
            socket_group: config
                .api
                .socket_group
                .clone()
                .filter(|_| config.api_socket().parent() == Some(config.run_dir.as_path())),
        }
    }

    /// Refuse a name that would not stay a single plain file in our directories, or whose
    /// QMP socket path would not fit `sun_path`. The domain crate's rules are stricter;
    /// this is the last line before the filesystem.
    pub fn check_name(&self, name: &str) -> Result<(), PathError> {
        let bad = |reason| {
            Err(PathError::BadName {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("empty");
        }
        if name.starts_with('.') {
            return bad("starts with '.'");
        }
        if name.contains('/') {
            return bad("contains '/'");
        }
        if name.contains('\0') {
            return bad("contains NUL");
        }
        if name.len() + LONGEST_SUFFIX > NAME_MAX {
            return bad("too long for a file name");
        }
        check_socket_path(&self.qmp_socket(name))
    }

    /// Held by the running daemon: one per run directory.
    pub fn run_dir_lock(&self) -> PathBuf {
        self.run.join("novacrond.lock")
    }

    pub fn definitions_dir(&self) -> PathBuf {
        self.state.join("domains")
    }

    pub fn definition(&self, name: &str) -> PathBuf {
        self.definitions_dir().join(format!("{name}.xml"))
    }

    /// The NVRAM of a guest whose UEFI firmware the daemon autoselected (`nvram/<name>.fd`):
    /// the daemon's, removed with the definition.
    pub fn nvram(&self, name: &str) -> PathBuf {
        self.state.join("nvram").join(format!("{name}.fd"))
    }

    pub fn records_dir(&self) -> PathBuf {
        self.run.join("domains")
    }

    pub fn record(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.json"))
    }

    pub fn qmp_socket(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.qmp"))
    }

    /// Per-guest runtime directory (mode 0700; created by whoever starts the guest).
    pub fn guest_dir(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.d"))
    }

    /// The migration TLS credentials staged for the guest's QEMU: among the records (only the
    /// daemon writes there), not in the guest's runtime dir (QEMU's user writes there).
    pub fn migration_tls_dir(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.tls"))
    }

    /// The guest's directory below `memory_backing_dir`, when one is configured.
    pub fn memory_dir(&self, name: &str) -> Option<PathBuf> {
        self.memory.as_ref().map(|m| m.join(name))
    }

    /// In its own directory, like the serial logs: a guest's log must never share a name with
    /// a file of the daemon's (a domain named `audit` once wrote into, and had capped, the
    /// audit log). The log of a running guest is the one its runtime record names.
    pub fn qemu_log(&self, name: &str) -> PathBuf {
        self.log.join("qemu").join(format!("{name}.log"))
    }

    /// Where daemons before the `qemu/` directory put a guest's QEMU log: still written by
    /// guests they started, whose records name no log.
    pub fn legacy_qemu_log(&self, name: &str) -> PathBuf {
        self.log.join(format!("{name}.log"))
    }

    /// The daemon's own: no guest log lives beside it (see `qemu_log`).
    pub fn audit_log(&self) -> PathBuf {
        self.log.join("audit.log")
    }

    /// In its own directory: names may contain dots, so no suffix scheme could keep domain
    /// `a.serial`'s QEMU log apart from domain `a`'s console log.
    pub fn serial_log(&self, name: &str) -> PathBuf {
        self.log.join("serial").join(format!("{name}.log"))
    }

    /// Create state, definitions, run, records and log directories; idempotent.
    ///
    /// Modes apply to directories this call creates (run and records 0700, others 0750; run
    /// 0750 owned by `api.socket_group` when the API socket is in it, so the group's members
    /// can reach the socket, while records stay 0700).
    /// Existing directories keep their mode (run_dir may be a configured shared path we must
    /// not chmod), but the run and records directories must be owned by us: a predictable
    /// fallback such as /tmp/novacron-<uid> could have been created by another user.
    pub fn create_dirs(&self) -> io::Result<()> {
        create_dir(&self.state, 0o750)?;
        create_dir(&self.definitions_dir(), 0o750)?;
        self.create_run_dir()?;
        check_owned(&self.run)?;
        create_dir(&self.records_dir(), 0o700)?;
        check_owned(&self.records_dir())?;
        create_dir(&self.log, 0o750)?;
        create_dir(&self.log.join("qemu"), 0o750)?;
        create_dir(&self.log.join("serial"), 0o750)
    }

    fn create_run_dir(&self) -> io::Result<()> {
        let Some(gid) = self.socket_gid() else {
            return create_dir(&self.run, 0o700);
        };
        // The group must be able to walk down to the socket: ancestors we create are 0755.
        if let Some(parent) = self.run.parent() {
            create_dir(parent, 0o755)?;
        }
        // Created 0700 and opened to the group only once it has the group: never readable
        // by anyone else in between.
        match std::fs::DirBuilder::new().mode(0o700).create(&self.run) {
            Ok(()) => {
                let shared = nix::unistd::chown(&self.run, None, Some(gid))
                    .map_err(io::Error::from)
                    .and_then(|()| {
                        std::fs::set_permissions(&self.run, std::fs::Permissions::from_mode(0o750))
                    });
                if let Err(e) = shared {
                    tracing::warn!(dir = %self.run.display(), error = %e,
                        "cannot give the run directory to api.socket_group; left 0700");
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.warn_if_unreachable(gid);
                Ok(())
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", self.run.display()),
            )),
        }
    }

    /// The socket group's id, when there is a group and it exists (else `bind_unix` warns
    /// and leaves the socket root-only).
    fn socket_gid(&self) -> Option<nix::unistd::Gid> {
        let group = self.socket_group.as_deref()?;
        nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid)
    }

    /// An existing run directory keeps its mode; say so when the group cannot pass it.
    fn warn_if_unreachable(&self, gid: nix::unistd::Gid) {
        let Ok(meta) = std::fs::metadata(&self.run) else {
            return;
        };
        let mode = meta.mode() & 0o777;
        let searchable = mode & 0o001 != 0 || (meta.gid() == gid.as_raw() && mode & 0o010 != 0);
        if !searchable {
            tracing::warn!(
                dir = %self.run.display(),
                mode = format!("{mode:04o}"),
                group = self.socket_group.as_deref().unwrap_or_default(),
                "api.socket_group cannot reach the API socket through the existing run \
                 directory (its mode is kept); chgrp it to the group and chmod 0750"
            );
        }
    }

    /// Async wrapper: `create_dirs` on the blocking pool.
    pub async fn create_dirs_async(&self) -> io::Result<()> {
        let paths = self.clone();
        tokio::task::spawn_blocking(move || paths.create_dirs())
            .await
            .map_err(io::Error::other)?
    }
}

/// Error if `path` is too long to bind or connect a Unix socket to.
pub fn check_socket_path(path: &Path) -> Result<(), PathError> {
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(PathError::SocketPathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

pub(crate) fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

fn check_owned(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by us (uid {euid})",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn paths(root: &Path) -> Paths {
        let mut c = Config::default_for(true, |_| None);
        c.state_dir = root.join("state");
        c.run_dir = root.join("run");
        c.log_dir = root.join("log");
        Paths::new(&c)
    }

    #[test]
    fn layout() {
        let p = Paths::new(&Config::default_for(true, |_| None));
        assert_eq!(
            p.definition("vm1"),
            Path::new("/var/lib/novacron/domains/vm1.xml")
        );
        assert_eq!(p.record("vm1"), Path::new("/run/novacron/domains/vm1.json"));
        assert_eq!(
            p.qmp_socket("vm1"),
            Path::new("/run/novacron/domains/vm1.qmp")
        );
        assert_eq!(p.guest_dir("vm1"), Path::new("/run/novacron/domains/vm1.d"));
        assert_eq!(
            p.qemu_log("vm1"),
            Path::new("/var/log/novacron/qemu/vm1.log")
        );
        assert_eq!(p.audit_log(), Path::new("/var/log/novacron/audit.log"));
        // No name puts a guest's log on the audit log any more.
        assert_ne!(p.qemu_log("audit"), p.audit_log());
        assert_eq!(p.legacy_qemu_log("audit"), p.audit_log());
        assert_eq!(
            p.serial_log("vm1"),
            Path::new("/var/log/novacron/serial/vm1.log")
        );
    }

    #[test]
    fn check_name_refuses_escapes_and_long_sockets() {
        let p = Paths::new(&Config::default_for(true, |_| None));
        p.check_name("vm-1_a.b").unwrap();
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a\0b"] {
            assert!(
                matches!(p.check_name(bad), Err(PathError::BadName { .. })),
                "{bad:?}"
            );
        }
        // "/run/novacron/domains/" is 22 bytes, ".qmp" 4: 81 name bytes is the most.
        p.check_name(&"a".repeat(81)).unwrap();
        let e = p.check_name(&"a".repeat(82)).unwrap_err();
        assert!(matches!(e, PathError::SocketPathTooLong { len: 108, .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("/run/novacron/domains/aaa") && msg.contains("107"),
            "{msg}"
        );
    }

    #[test]
    fn create_dirs_modes_and_idempotence() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        p.create_dirs().unwrap();
        p.create_dirs().unwrap();
        let mode = |d: PathBuf| std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        // Under a restrictive umask the group bits may be missing; never more than asked.
        assert_eq!(mode(p.records_dir()), 0o700);
        assert_eq!(mode(tmp.path().join("run")), 0o700);
        assert_eq!(mode(p.definitions_dir()) & !0o750, 0);
        assert_eq!(mode(tmp.path().join("log")) & !0o750, 0);
        assert!(p.definitions_dir().is_dir());
    }

    #[test]
    fn run_dir_is_shared_with_the_socket_group_records_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Config::default_for(true, |_| None);
        c.state_dir = tmp.path().join("state");
        c.run_dir = tmp.path().join("a/run");
        c.log_dir = tmp.path().join("log");
        // The daemon's own group always exists and is ours to give.
        let gid = nix::unistd::getegid();
        let group = nix::unistd::Group::from_gid(gid).unwrap().unwrap();
        c.api.socket_group = Some(group.name.clone());
        let p = Paths::new(&c);
        p.create_dirs().unwrap();
        let meta = |d: &Path| std::fs::metadata(d).unwrap();
        assert_eq!(meta(&c.run_dir).permissions().mode() & 0o777, 0o750);
        assert_eq!(meta(&c.run_dir).gid(), gid.as_raw());
        assert_eq!(meta(&p.records_dir()).permissions().mode() & 0o777, 0o700);
        // An existing directory keeps its mode.
        std::fs::set_permissions(&c.run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        p.create_dirs().unwrap();
        assert_eq!(meta(&c.run_dir).permissions().mode() & 0o777, 0o700);
        // A socket elsewhere: the run directory is not shared.
        c.run_dir = tmp.path().join("b/run");
        c.api.socket = Some(tmp.path().join("api.sock"));
        let p = Paths::new(&c);
        p.create_dirs().unwrap();
        assert_eq!(meta(&c.run_dir).permissions().mode() & 0o777, 0o700);
    }

    #[tokio::test]
    async fn create_dirs_async_works_and_keeps_existing_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        std::fs::create_dir(tmp.path().join("run")).unwrap();
        std::fs::set_permissions(
            tmp.path().join("run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        p.create_dirs_async().await.unwrap();
        let m = std::fs::metadata(tmp.path().join("run")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
    }
}
