//! What the (unprivileged) QEMU user can reach, asked of the kernel by a short-lived shell
//! running as that user, and the ACL entries the daemon adds where it may: read-write on a
//! device node (`/dev/kvm`, a VFIO group), search on the daemon's own directories. Asking the
//! kernel rather than evaluating modes ourselves covers ACLs, supplementary groups and
//! whatever else decides access (an LSM, a read-only mount).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::acl;
use crate::qemu::spawn::RunAs;

const SHELL: &str = "/bin/sh";

/// Runs `sh -c script sh args...` as `who`; `Ok(Err(stdout, stderr))` when it exits non-zero.
fn sh_as(who: &RunAs, script: &str, args: &[&OsStr]) -> io::Result<Result<(), (String, String)>> {
    let (uid, gid, groups) = (who.uid, who.gid, who.groups.clone());
    let mut cmd = Command::new(SHELL);
    cmd.args(["-c", script, "sh"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null());
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec; only async-signal-safe syscalls on values
    // prepared before the fork (as in `qemu::spawn`).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
            nix::unistd::setgid(gid).map_err(io::Error::from)?;
            nix::unistd::setuid(uid).map_err(io::Error::from)?;
            Ok(())
        });
    }
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )))
}

/// Whether `who` can open `path` for reading and writing (as QEMU opens `/dev/kvm`); the
/// error is the kernel's answer.
pub fn can_open_rw(who: &RunAs, path: &Path) -> Result<(), String> {
    // `<>` would create a missing file: test for it first.
    let script = "[ -e \"$1\" ] || { echo \"$1: No such file or directory\" >&2; exit 1; }
                  exec 3<>\"$1\"";
    match sh_as(who, script, &[path.as_os_str()]) {
        Ok(Ok(())) => Ok(()),
        Ok(Err((_, stderr))) => Err(stderr
            .rsplit_once(": ")
            .map_or(stderr.clone(), |(_, why)| why.to_owned())),
        Err(e) => Err(format!("cannot run {SHELL} as {}: {e}", who.user)),
    }
}

/// The first directory on the way to `dir` (itself included) that `who` cannot search, if any.
pub fn first_unsearchable(who: &RunAs, dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    let args: Vec<&OsStr> = chain.iter().map(|p| p.as_os_str()).collect();
    let script = "for d; do cd -- \"$d\" 2>/dev/null || { printf %s \"$d\"; exit 1; }; done";
    match sh_as(who, script, &args)? {
        Ok(()) => Ok(None),
        Err((stdout, stderr)) if stdout.is_empty() => Err(io::Error::other(stderr)),
        Err((stdout, _)) => Ok(Some(PathBuf::from(OsStr::from_bytes(stdout.as_bytes())))),
    }
}

/// How a device was made usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// `who` could open it already (mode, group, an ACL from udev or tmpfiles).
    Already,
    /// The daemon added `u:<who>:rw` to its ACL.
    Granted,
}

/// Makes `device` openable read-write by `who`: when it is not already, adds a named ACL
/// entry (keeping the others) and asks again.
pub fn ensure_device_rw(who: &RunAs, device: &Path) -> Result<DeviceAccess, String> {
    let first = match can_open_rw(who, device) {
        Ok(()) => return Ok(DeviceAccess::Already),
        Err(why) => why,
    };
    if !device.exists() {
        return Err(first);
    }
    acl::grant_user(device, who.uid.as_raw(), acl::READ | acl::WRITE)
        .map_err(|e| format!("{first}; {e}"))?;
    can_open_rw(who, device)
        .map(|()| DeviceAccess::Granted)
        .map_err(|why| format!("{why} (even after adding an ACL entry for {})", who.user))
}

/// Takes back what [`ensure_device_rw`] granted.
pub fn revoke_device(who: &RunAs, device: &Path) -> Result<bool, acl::AclError> {
    acl::revoke_user(device, who.uid.as_raw())
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(
        "{} is out of reach of the QEMU user {user}: {blocked} does not let it through (no \
         search permission); give {user} search permission on {blocked} (chmod o+x, or \
         setfacl -m u:{user}:x) or choose a directory below a reachable one",
        dir.display(), blocked = blocked.display()
    )]
    Blocked {
        dir: PathBuf,
        blocked: PathBuf,
        user: String,
    },
    #[error("checking what the QEMU user {user} can reach: {source}")]
    Probe {
        user: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Acl(#[from] acl::AclError),
}

/// Makes each of `owned` (the daemon's own directories, parents before children) searchable
/// by `who`, adding `u:<who>:x` only to those, never to a parent the daemon does not own.
/// Returns the directories that got an entry.
pub fn ensure_search(who: &RunAs, owned: &[&Path]) -> Result<Vec<PathBuf>, SearchError> {
    let mut granted = Vec::new();
    for dir in owned {
        // Each pass grants one directory of `owned` or ends.
        for _ in 0..=owned.len() {
            let blocked = first_unsearchable(who, dir).map_err(|source| SearchError::Probe {
                user: who.user.clone(),
                source,
            })?;
            let Some(blocked) = blocked else { break };
            if !owned.iter().any(|o| *o == blocked) || granted.contains(&blocked) {
                return Err(SearchError::Blocked {
                    dir: dir.to_path_buf(),
                    blocked,
                    user: who.user.clone(),
                });
            }
            acl::grant_user(&blocked, who.uid.as_raw(), acl::EXECUTE)?;
            granted.push(blocked);
        }
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nobody() -> Option<RunAs> {
        // Only root can switch users; the daemon's tests run as root (as CI does).
        nix::unistd::geteuid()
            .is_root()
            .then(|| RunAs::lookup("nobody").expect("user nobody"))
    }

    #[test]
    fn device_rw_is_granted_by_acl_and_revoked() {
        let Some(who) = nobody() else { return };
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let dev = dir.path().join("dev");
        std::fs::write(&dev, b"").unwrap();
        std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o600)).unwrap();
        let why = can_open_rw(&who, &dev).unwrap_err();
        assert!(why.contains("Permission denied"), "{why}");
        assert_eq!(ensure_device_rw(&who, &dev), Ok(DeviceAccess::Granted));
        assert_eq!(ensure_device_rw(&who, &dev), Ok(DeviceAccess::Already));
        assert!(revoke_device(&who, &dev).unwrap());
        assert!(can_open_rw(&who, &dev).is_err());
        let missing = dir.path().join("missing");
        let why = ensure_device_rw(&who, &missing).unwrap_err();
        assert!(why.contains("No such file"), "{why}");
    }

    #[test]
    fn search_is_granted_on_owned_dirs_only() {
        let Some(who) = nobody() else { return };
        let top = tempfile::tempdir().unwrap();
        let run = top.path().join("run");
        let records = run.join("domains");
        std::fs::create_dir_all(&records).unwrap();
        for d in [top.path(), &run, &records] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        // The temporary directory (0700) is not ours to open up: refused, naming it.
        let e = ensure_search(&who, &[&run, &records]).unwrap_err();
        match &e {
            SearchError::Blocked { blocked, .. } => assert_eq!(blocked, top.path()),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("nobody"), "{e}");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let granted = ensure_search(&who, &[&run, &records]).unwrap();
        assert_eq!(granted, vec![run.clone(), records.clone()]);
        assert_eq!(first_unsearchable(&who, &records).unwrap(), None);
        // Search only: the user still cannot list them.
        assert_eq!(
            std::fs::metadata(&run).unwrap().permissions().mode() & 0o7,
            0
        );
        assert!(ensure_search(&who, &[&run, &records]).unwrap().is_empty());
    }
}
