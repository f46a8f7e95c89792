//! Starting a QEMU process the daemon does not take down with it.

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::{getgrouplist, Gid, Uid, User};
use novacron_qmp::{Client, ClientOptions};
use tokio::process::{Child, Command};

use super::logs::open_append;

/// A started QEMU: our child until it exits or the daemon restarts.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// Where this start's output begins in the QEMU log (for error messages).
    pub log_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {emulator}: {source}")]
    Exec {
        emulator: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the QEMU log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("QEMU exited during start ({status}): {output}")]
    Exited { status: String, output: String },
    #[error("QEMU's QMP socket did not answer within {0:?}")]
    NoMonitor(Duration),
    #[error("QMP handshake with the new QEMU failed: {0}")]
    Qmp(#[from] novacron_qmp::Error),
}

/// A descriptor QEMU inherits at a fixed number (e.g. its listening QMP socket as fd 3).
pub struct Inherited<'a> {
    pub fd: BorrowedFd<'a>,
    pub at: i32,
}

/// At most this many inherited descriptors: the monitor, the serial log and a guest's files
/// (up to 256 disks, firmware, boot images, chardev outputs, entropy sources).
pub const MAX_INHERITED: usize = 400;
/// Inherited descriptors are numbered below this and first moved at or above it, so no
/// mapping clobbers another. 512 + 400 stays under the usual 1024 soft descriptor limit.
const SCRATCH_FD: i32 = 512;

/// The unprivileged identity QEMU runs as when `qemu_user` is configured.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

impl RunAs {
    /// Resolves `user` (and its supplementary groups, e.g. `kvm`) from the user database.
    pub fn lookup(user: &str) -> io::Result<RunAs> {
        let entry = User::from_name(user)
            .map_err(io::Error::from)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user '{user}'")))?;
        let name = CString::new(user).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let groups = getgrouplist(&name, entry.gid).map_err(io::Error::from)?;
        Ok(RunAs {
            user: user.to_owned(),
            uid: entry.uid,
            gid: entry.gid,
            groups,
        })
    }
}

/// Spawns `argv` (emulator first) in its own session, stdin from /dev/null, stdout and stderr
/// appended to `log`, with a minimal environment, the `inherit`ed descriptors at their numbers,
/// and as `run_as` when given. Rust opens every other descriptor close-on-exec, so QEMU
/// inherits none of the daemon's. `lock_memory`: QEMU locks guest RAM (`mem-lock`, VFIO),
/// which an unprivileged user may only do up to RLIMIT_MEMLOCK (8 MiB by default, and
/// raising it needs CAP_SYS_RESOURCE, which a containerised daemon may lack), so the
/// unprivileged QEMU keeps one capability, CAP_IPC_LOCK, as an ambient capability.
pub fn spawn(
    argv: &[String],
    log: &Path,
    inherit: &[Inherited<'_>],
    run_as: Option<&RunAs>,
    lock_memory: bool,
) -> Result<Spawned, SpawnError> {
    let mut targets: Vec<i32> = inherit.iter().map(|i| i.at).collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.len() != inherit.len() || inherit.iter().any(|i| i.at < 3 || i.at >= SCRATCH_FD) {
        return Err(SpawnError::Exec {
            emulator: argv.first().cloned().unwrap_or_default(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "inherited descriptors need distinct numbers from 3 to 511",
            ),
        });
    }
    if inherit.len() > MAX_INHERITED {
        return Err(SpawnError::Exec {
            emulator: argv.first().cloned().unwrap_or_default(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many inherited descriptors",
            ),
        });
    }
    let log_err = |source| SpawnError::Log {
        path: log.display().to_string(),
        source,
    };
    let (emulator, args) = argv.split_first().ok_or_else(|| SpawnError::Exec {
        emulator: String::new(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    let mut out = open_append(log).map_err(log_err)?;
    let _ = writeln!(
        out,
        "{} novacrond: starting {}",
        // Milliseconds since the epoch, like the event log's stamps (not imported from the
        // service: qemu sits below it).
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        argv.join(" ")
    );
    let log_offset = out.metadata().map_err(log_err)?.len();
    let err = out.try_clone().map_err(log_err)?;

    let mut cmd = Command::new(emulator);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        // Not the daemon's directory: a relative name QEMU opens on its own (an admin image's
        // external data file) must not depend on where the daemon was started.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    // Allocated before the fork: the child only reads and writes these.
    let map: Vec<(i32, i32)> = inherit.iter().map(|i| (i.fd.as_raw_fd(), i.at)).collect();
    let mut scratch: Vec<i32> = vec![-1; map.len()];
    let identity = run_as.map(|r| (r.uid, r.gid, r.groups.clone()));
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It only makes syscalls that are
    // async-signal-safe (setsid, fcntl, dup2, close, setrlimit, setgroups, setgid, setuid) on values
    // prepared before the fork; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            // A new session: QEMU leaves the daemon's process group and terminal, so a signal
            // to the daemon's group (Ctrl-C, a service stop) never reaches a guest.
            nix::unistd::setsid().map_err(io::Error::from)?;
            for (tmp, (src, _)) in scratch.iter_mut().zip(&map) {
                *tmp = nix::libc::fcntl(*src, nix::libc::F_DUPFD, SCRATCH_FD);
                if *tmp < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (tmp, (_, at)) in scratch.iter().zip(&map) {
                // dup2 leaves the new descriptor without close-on-exec: QEMU inherits it.
                if nix::libc::dup2(*tmp, *at) < 0 {
                    return Err(io::Error::last_os_error());
                }
                nix::libc::close(*tmp);
            }
            let keep_ipc_lock = lock_memory && identity.is_some();
            if keep_ipc_lock && nix::libc::prctl(nix::libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid, groups)) = &identity {
                nix::unistd::setgroups(groups).map_err(io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(io::Error::from)?;
            }
            if keep_ipc_lock {
                keep_only_ipc_lock()?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        emulator: emulator.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    Ok(Spawned {
        child,
        pid,
        log_offset,
    })
}

/// Linux's capability number of CAP_IPC_LOCK (lock memory beyond RLIMIT_MEMLOCK).
const CAP_IPC_LOCK: u32 = 14;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// After setuid with PR_SET_KEEPCAPS: drops every capability but CAP_IPC_LOCK and makes that
/// one ambient, so it survives the exec of QEMU. Only raw syscalls (runs in the forked child).
fn keep_only_ipc_lock() -> io::Result<()> {
    const VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let bit = 1u32 << CAP_IPC_LOCK;
    let data = [
        CapData {
            effective: bit,
            permitted: bit,
            inheritable: bit,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    #[allow(unsafe_code)]
    // SAFETY: capset reads the header and two data structs, laid out as the kernel's
    // `__user_cap_header_struct` and `__user_cap_data_struct` (version 3), which outlive it.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_capset,
            &header as *const CapHeader,
            data.as_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_RAISE,
            CAP_IPC_LOCK as nix::libc::c_ulong,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long a QEMU that broke the QMP handshake gets to exit before we report the handshake.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Connects to the new QEMU's QMP socket as soon as it listens. Fails with QEMU's own output
/// if QEMU exits first.
pub async fn connect_monitor(
    spawned: &mut Spawned,
    socket: &Path,
    log: &Path,
    within: Duration,
) -> Result<Client, SpawnError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = spawned.child.try_wait() {
            return Err(exited(status, log, spawned.log_offset));
        }
        {
            let options = ClientOptions {
                handshake_timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            };
            match Client::connect_with(socket, options).await {
                Ok(client) => return Ok(client),
                Err(novacron_qmp::Error::Connect { .. }) => {}
                Err(e) => {
                    // The handshake broke: QEMU is most likely dying (it opens the monitor
                    // before it checks the rest of its configuration). Give it a moment to
                    // exit, so the error is QEMU's own message rather than a reset socket.
                    let died = tokio::time::timeout(EXIT_GRACE, spawned.child.wait()).await;
                    if let Ok(Ok(status)) = died {
                        return Err(exited(status, log, spawned.log_offset));
                    }
                    return Err(e.into());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SpawnError::NoMonitor(within));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn exited(status: std::process::ExitStatus, log: &Path, offset: u64) -> SpawnError {
    SpawnError::Exited {
        status: status.to_string(),
        output: log_since(log, offset, 4096),
    }
}

/// The last `max` bytes QEMU wrote to `log` after `offset`, trimmed.
pub fn log_since(log: &Path, offset: u64, max: u64) -> String {
    let read = || -> io::Result<String> {
        let mut f = std::fs::File::open(log)?;
        let len = f.metadata()?.len();
        let start = offset.max(len.saturating_sub(max)).min(len);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim().to_owned())
    };
    match read() {
        Ok(s) if s.is_empty() => "(no output)".to_owned(),
        Ok(s) => s,
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
