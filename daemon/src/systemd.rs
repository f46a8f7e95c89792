//! Living under systemd without linking libsystemd: the `sd_notify` protocol (readiness,
//! status, watchdog, stopping), socket activation (`sd_listen_fds`), and telling whether stderr
//! is connected to the journal. Every function is a harmless no-op when the daemon was not
//! started by systemd.
//!
//! Protocols: sd_notify(3), sd_listen_fds(3), systemd.exec(5) `$JOURNAL_STREAM`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::Service;

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `$NOTIFY_SOCKET`.
/// `Ok(false)` when there is no notification socket (not under systemd, or `Type=simple`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    let addr = match bytes.first() {
        // Linux abstract namespace: `@name`.
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&target))?,
        // vsock (`vsock:`) and relative paths are not used by a host daemon's manager.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract (@) address",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to NOTIFY_SOCKET",
        ));
    }
    Ok(true)
}

/// `notify`, with failures logged rather than returned: the manager not hearing a status line
/// is worth a warning, never worth stopping the daemon.
fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// `READY=1`: the APIs are served and the guests of a previous daemon are reconnected.
pub fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={}\nMAINPID={}",
        one_line(status),
        std::process::id()
    ));
}

/// `STATUS=…`, shown by `systemctl status`.
pub fn status(msg: &str) {
    send(&format!("STATUS={}", one_line(msg)));
}

/// `STOPPING=1`: shutdown has begun (guests keep running).
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping; guests keep running");
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog interval the manager expects pings within (`WatchdogSec=`), if any and if it
/// is meant for this process (`$WATCHDOG_PID`, when set, must be our pid).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings `WATCHDOG=1` at half the watchdog interval, but only while the service answers: each
/// ping first lists the domains on the blocking pool within the half-interval. A deadlocked
/// domain table, a wedged runtime or an exhausted blocking pool therefore stops the pings,
/// and systemd restarts the daemon (guests survive: `KillMode=process`).
pub fn spawn_watchdog(service: Service) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    let half = interval / 2;
    tracing::info!(interval = ?interval, ping_every = ?half, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(half);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let svc = service.clone();
            let probe = tokio::task::spawn_blocking(move || svc.list().len());
            match tokio::time::timeout(half, probe).await {
                Ok(Ok(_)) => send("WATCHDOG=1"),
                Ok(Err(e)) => tracing::error!(error = %e, "watchdog probe failed; not pinging"),
                Err(_) => {
                    tracing::error!(after = ?half, "watchdog probe did not finish; not pinging")
                }
            }
        }
    }))
}

/// One descriptor passed by socket activation, with its `FileDescriptorName=`.
#[derive(Debug)]
pub struct ListenFd {
    pub fd: OwnedFd,
    pub name: Option<String>,
}

/// Descriptors passed to this process and not yet taken. `None` until first read.
static PASSED: Mutex<Option<Vec<ListenFd>>> = Mutex::new(None);

/// Reads the socket activation environment once (sd_listen_fds with `unset_environment`):
/// `$LISTEN_PID` must be our pid, `$LISTEN_FDS` descriptors start at 3, `$LISTEN_FDNAMES`
/// names them. The descriptors are marked close-on-exec (so QEMU never inherits them) and the
/// variables are removed from the environment.
fn passed_fds() -> std::sync::MutexGuard<'static, Option<Vec<ListenFd>>> {
    let mut passed = PASSED.lock().unwrap_or_else(PoisonError::into_inner);
    if passed.is_none() {
        let count = listen_count(
            std::env::var("LISTEN_PID").ok().as_deref(),
            std::env::var("LISTEN_FDS").ok().as_deref(),
            std::process::id(),
        );
        // The variables stay: removing them while other threads run is undefined behaviour
        // in libc, and they cannot leak (QEMU gets a cleared environment, and LISTEN_PID
        // names only this process).
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let mut names = names
            .as_deref()
            .map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter();
        let mut fds = Vec::with_capacity(count);
        for raw in LISTEN_FDS_START..LISTEN_FDS_START + count as RawFd {
            #[allow(unsafe_code)]
            // SAFETY: the service manager passed descriptors 3..3+$LISTEN_FDS to this very
            // process ($LISTEN_PID checked); nothing else in the daemon uses them, and they are
            // wrapped exactly once (the environment is cleared and the result kept in PASSED).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if let Err(e) = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            ) {
                tracing::warn!(fd = raw, error = %e, "cannot set close-on-exec on a passed socket");
            }
            fds.push(ListenFd {
                fd,
                name: names.next().filter(|n| !n.is_empty()),
            });
        }
        if count > 0 {
            tracing::info!(count, "socket activation: descriptors passed by systemd");
        }
        *passed = Some(fds);
    }
    passed
}

fn listen_count(pid: Option<&str>, fds: Option<&str>, own: u32) -> usize {
    if pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(own) {
        return 0;
    }
    // A count that would run past any sane descriptor table is a broken environment.
    fds.and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n <= 1024)
        .unwrap_or(0)
}

/// Takes every passed descriptor not yet taken (for faces with their own sockets).
pub fn listen_fds() -> Vec<ListenFd> {
    passed_fds()
        .get_or_insert_with(Vec::new)
        .drain(..)
        .collect()
}

/// The socket-activated listening Unix stream socket for the HTTP API, if systemd passed one
/// (`novacrond.socket`). Other passed descriptors are left for [`listen_fds`].
pub fn take_unix_listener() -> io::Result<Option<UnixListener>> {
    let mut guard = passed_fds();
    let fds = guard.get_or_insert_with(Vec::new);
    let Some(i) = fds.iter().position(|f| is_unix_stream_listener(&f.fd)) else {
        return Ok(None);
    };
    let fd = fds.remove(i).fd;
    Ok(Some(UnixListener::from(fd)))
}

fn is_unix_stream_listener(fd: &OwnedFd) -> bool {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    getsockname::<UnixAddr>(fd.as_raw_fd()).is_ok()
        && getsockopt(fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream)
        && getsockopt(fd, sockopt::AcceptConn).unwrap_or(false)
}

/// Whether stderr is the journal (`$JOURNAL_STREAM` is `<dev>:<inode>` of stderr), the
/// documented way to decide on logging natively to journald.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Logging: natively to journald when stderr is the journal (fields such as `domain`, `uuid`
/// and `op` become `DOMAIN=`, `UUID=`, `OP=`, so `journalctl DOMAIN=web1` works; levels map
/// to syslog priorities, info being 6), else human lines on stderr. `RUST_LOG` filters either
/// way (default `info`).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // syslog's meanings: info is 6 (tracing-journald would make it 5, "notice",
                // which `journalctl -p notice` would show as notable), debug and trace 7.
                let priorities = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                let layer = layer
                    .with_field_prefix(None)
                    .with_priority_mappings(priorities)
                    .with_syslog_identifier("novacrond".to_owned());
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => eprintln!("novacrond: cannot log to journald ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_environment() {
        assert_eq!(
            watchdog_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn listen_environment() {
        assert_eq!(listen_count(Some("7"), Some("2"), 7), 2);
        assert_eq!(listen_count(Some("8"), Some("2"), 7), 0);
        assert_eq!(listen_count(None, Some("2"), 7), 0);
        assert_eq!(listen_count(Some("7"), None, 7), 0);
        assert_eq!(listen_count(Some("7"), Some("99999"), 7), 0);
    }

    #[test]
    fn notify_datagrams_reach_path_and_abstract_sockets() {
        // One test touches NOTIFY_SOCKET, so there is no race on the variable.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("STATUS=hello").unwrap());
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=hello");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("novacron-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
        ready("serving 0 domains");
        let n = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=serving 0 domains\nMAINPID="),
            "{text}"
        );

        std::env::set_var("NOTIFY_SOCKET", "relative");
        match notify("X=1") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: Unsupported, error: "NOTIFY_SOCKET is neither an absolute path nor an abstract (@) address" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("X=1").unwrap());
    }
}
