//! virtiofs shares: one `virtiofsd` per share, started by the daemon before QEMU and stopped
//! after it. The daemon binds each vhost-user socket itself (in the guest's runtime
//! directory, owned by the QEMU user, mode 0600) and hands virtiofsd the listening socket as
//! fd 3 (`--fd=3`), so no other process ever chooses or creates the path QEMU connects to.
//!
//! Privileges: virtiofsd runs as root (the daemon's user), as libvirt runs it: serving a
//! passthrough share needs CAP_DAC_OVERRIDE/CHOWN/FOWNER/SETUID/SETGID/MKNOD. It keeps only
//! that set (its own capng setup), confines itself with its default sandbox (new mount, pid
//! and net namespaces, pivot_root into the share) and its seccomp filter; QEMU stays
//! unprivileged and can only reach it through the socket.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use novacron_domain::model::FsDriver;
use novacron_domain::{virtiofs_socket, DomainConfig};

use super::{Error, Inner};
use crate::host::guest_files::GuestFiles;
use crate::persist::records::HelperProcess;
use crate::qemu::{procinfo, spawn};

/// QEMU 7.2's virtiofsd (Debian package qemu-system-common).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// How long a virtiofsd gets to exit after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The descriptor numbers (in QEMU's numbering) of the shared directories virtiofsd serves:
/// QEMU must not inherit them.
pub(super) fn dir_fds(config: &DomainConfig, files: &GuestFiles) -> Vec<i32> {
    shares(config).filter_map(|i| proc_fd(files, i)).collect()
}

fn shares(config: &DomainConfig) -> impl Iterator<Item = usize> + '_ {
    config
        .devices
        .filesystems
        .iter()
        .enumerate()
        .filter(|(_, f)| f.driver == FsDriver::Virtiofs)
        .map(|(i, _)| i)
}

fn proc_fd(files: &GuestFiles, i: usize) -> Option<i32> {
    files
        .host_paths
        .get(&format!("devices.filesystems[{i}].source"))?
        .strip_prefix("/proc/self/fd/")?
        .parse()
        .ok()
}

/// Starts one virtiofsd per virtiofs share. On failure, those already started are stopped.
pub(super) async fn start(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
    files: &GuestFiles,
    guest_dir: &Path,
    log: &Path,
) -> Result<Vec<HelperProcess>, Error> {
    let mut wanted = Vec::new();
    for i in shares(config) {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}': devices.filesystems[{i}] is virtiofs, whose virtiofsd needs \
                 root; this daemon does not run as root (use 9p)"
            )));
        }
        let at = proc_fd(files, i);
        let dir = at
            .and_then(|at| files.fds.iter().find(|(n, _)| *n == at))
            .map(|(_, fd)| fd.try_clone())
            .transpose()
            .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))?
            .ok_or_else(|| {
                Error::Internal(format!(
                    "domain '{name}': devices.filesystems[{i}].source was not opened"
                ))
            })?;
        wanted.push((i, dir));
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (name2, dir, log) = (name.to_owned(), guest_dir.to_owned(), log.to_owned());
    let owner = inner.run_as.as_ref().map(|r| (r.uid, r.gid));
    let started = tokio::task::spawn_blocking(move || {
        let mut started = Vec::new();
        for (i, share) in wanted {
            match start_one(&name2, i, share, &dir, &log, owner) {
                Ok(p) => started.push(p),
                Err(e) => return Err((e, started)),
            }
        }
        Ok(started)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    match started {
        Ok(s) => Ok(s),
        Err((e, started)) => {
            stop(&started).await;
            Err(e)
        }
    }
}

fn start_one(
    name: &str,
    i: usize,
    share: OwnedFd,
    guest_dir: &Path,
    log: &Path,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<HelperProcess, Error> {
    let internal = |e: std::io::Error| Error::Internal(format!("domain '{name}': virtiofsd: {e}"));
    // virtiofsd takes its source by name and refuses a `/proc/self/fd/N` link (it lstat()s
    // the source). It gets the path the directory we opened beneath the storage root
    // resolves to now. Residual TOCTOU: someone who can write inside the storage root can
    // swap a component of that path for a symlink between this readlink and virtiofsd's
    // pivot_root. virtiofsd would then serve the symlink's target; the storage roots are
    // the daemon's to manage, and a non-admin guest owner has no shell on the host.
    let source: PathBuf =
        std::fs::read_link(format!("/proc/self/fd/{}", share.as_raw_fd())).map_err(internal)?;
    let source = source.to_str().map(str::to_owned).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "domain '{name}': devices.filesystems[{i}].source is not UTF-8"
        ))
    })?;
    // `-o` is a comma-separated option list: a comma would start another option.
    if source.contains([',', '\\']) {
        return Err(Error::InvalidConfig(format!(
            "domain '{name}': devices.filesystems[{i}].source '{source}' contains ',' or '\\', \
             which virtiofsd's -o source= cannot carry"
        )));
    }
    let sock = virtiofs_socket(guest_dir, i);
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(internal)?;
    // Never through a link: the guest directory belongs to QEMU's user, which could swap the
    // socket for a symlink to a host file between the bind and these calls.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &sock,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| internal(std::io::Error::from(e)))?;
    if let Some((uid, gid)) = owner {
        // The unprivileged QEMU connects; nobody else may.
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &sock,
            Some(uid),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| internal(std::io::Error::from(e)))?;
    }
    let argv = vec![
        VIRTIOFSD.to_owned(),
        "--fd=3".to_owned(),
        "-o".to_owned(),
        format!("source={source}"),
        "-o".to_owned(),
        "cache=auto".to_owned(),
        "-o".to_owned(),
        "sandbox=namespace".to_owned(),
    ];
    let inherit = [spawn::Inherited {
        fd: listener.as_fd(),
        at: 3,
    }];
    let spawned = spawn::spawn(&argv, log, &inherit, None, false)
        .map_err(|e| Error::Internal(format!("domain '{name}': virtiofsd: {e}")))?;
    let pid = spawned.pid;
    let start_time = match procinfo::start_time(pid) {
        Ok(t) => t,
        Err(e) => {
            let _ = spawn::signal(pid, Signal::SIGKILL);
            return Err(internal(e));
        }
    };
    // Dropped, not waited: tokio reaps it in the background once it exits.
    drop(spawned.child);
    Ok(HelperProcess {
        index: i,
        pid,
        start_time,
    })
}

/// Stops the recorded virtiofsd processes (those still the processes we started: a pid
/// taken by another process since is never signalled): SIGTERM, then SIGKILL after a while.
pub(super) async fn stop(procs: &[HelperProcess]) {
    for p in procs {
        if procinfo::is_same_alive(p.pid, p.start_time) {
            let _ = spawn::signal(p.pid, Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    for p in procs {
        while procinfo::is_same_alive(p.pid, p.start_time) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pid = p.pid, "virtiofsd ignored SIGTERM; killing it");
                let _ = spawn::signal(p.pid, Signal::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
