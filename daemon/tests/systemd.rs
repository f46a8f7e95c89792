//! novacrond under systemd, without systemd running: the unit files checked by
//! `systemd-analyze verify`, the sd_notify protocol on a NOTIFY_SOCKET this test listens on,
//! socket activation through `systemd-socket-activate`, and journald detection.
//! Needs Debian's `systemd` package (systemd-analyze, systemd-socket-activate, sysusers,
//! tmpfiles) and curl.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_novacrond");

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is missing: apt-get install systemd (the tools work without systemd running)"
    );
    Command::new(name)
}

/// Kills the process on drop, so a failing test leaves no daemon behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(env: &Env, log: &Path, vars: &[(&str, String)]) -> Killed {
    let config = env.write_config("");
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Killed(cmd.spawn().expect("spawn novacrond"))
}

/// The next datagram within `timeout`, as text.
fn recv(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn unit_files_verify() {
    let dir = tempfile::tempdir().unwrap();
    // verify insists that ExecStart= exists: point a copy at the binary under test.
    let service = std::fs::read_to_string(units_dir().join("novacrond.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/novacrond "));
    let service = service.replace("/usr/local/bin/novacrond", BIN);
    std::fs::write(dir.path().join("novacrond.service"), service).unwrap();
    std::fs::copy(
        units_dir().join("novacrond.socket"),
        dir.path().join("novacrond.socket"),
    )
    .unwrap();
    let out = tool("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(dir.path().join("novacrond.service"))
        .arg(dir.path().join("novacrond.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");

    // sysusers.d and tmpfiles.d entries apply cleanly to an empty root (with the distro's
    // basic users, which provide the kvm group).
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let mut sysusers = tool("systemd-sysusers");
    sysusers.arg(format!("--root={}", root.path().display()));
    if Path::new("/usr/lib/sysusers.d/basic.conf").exists() {
        sysusers.arg("/usr/lib/sysusers.d/basic.conf");
    }
    let out = sysusers
        .arg(units_dir().join("novacron.sysusers.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("novacron:")), "{group}");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("kvm:") && l.ends_with("novacron-qemu")),
        "{group}"
    );
    let out = tool("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(units_dir().join("novacron.tmpfiles.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in [
        "var/lib/novacron/domains",
        "var/log/novacron",
        "run/novacron/domains",
    ] {
        assert!(root.path().join(dir).is_dir(), "{dir}");
    }
}

#[test]
fn ready_only_once_reconnected_and_serving_then_watchdog_and_stopping() {
    let env = Env::new();
    // A guest left running by a previous daemon, which the next one must reconnect to
    // before it reports ready.
    {
        let d = env.start_daemon("");
        let r = curl(
            &d.socket,
            "POST",
            "/v1/domains",
            &[
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                &osless("left").to_xml(),
            ],
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = curl(&d.socket, "POST", "/v1/domains/left/start", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    } // SIGKILL: the guest keeps running.

    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = env.dir.path().join("notify-daemon.log");
    let socket = env.config.run_dir.join("novacrond.sock");
    let _ = std::fs::remove_file(&socket);
    let spawned = Instant::now();
    let mut daemon = spawn_daemon(
        &env,
        &log,
        &[
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    let pid = daemon.0.id();

    let mut before_ready = Vec::new();
    let ready = loop {
        let msg = recv(&notify, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no READY=1 within 30 s:\n{}", log_of(&log)));
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
        before_ready.push(msg);
    };
    // At READY=1 the API answers at once and the old guest is already reconnected.
    let r = curl(&socket, "GET", "/v1/domains/left", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "running", "{}", r.body);
    assert!(
        before_ready
            .iter()
            .any(|m| m.starts_with("STATUS=reconnecting")),
        "{before_ready:?}"
    );
    assert!(
        ready.contains("STATUS=serving 1 domains (1 running)"),
        "{ready}"
    );
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");

    // Watchdog pings at half of WATCHDOG_USEC: the daemon says which cadence it derived, and
    // the pings keep to it. Its timer starts after we spawned the daemon and never fires
    // early, so ping number n (from 0) cannot arrive before n half-intervals have passed since
    // the spawn: a lower bound that holds however loaded the machine is. (The 3 s per ping is
    // only a deadline for "pings stopped".)
    let text = log_of(&log);
    let enabled = text
        .lines()
        .find(|l| l.contains("systemd watchdog enabled"))
        .unwrap_or_else(|| panic!("no watchdog line:\n{text}"));
    assert!(
        enabled.contains("interval=1s") && enabled.contains("ping_every=500ms"),
        "{enabled}"
    );
    let half = Duration::from_millis(500);
    let mut pings = before_ready.iter().filter(|m| *m == "WATCHDOG=1").count() as u32;
    assert!(spawned.elapsed() >= half * pings.saturating_sub(1));
    while pings < 6 {
        let msg = recv(&notify, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("watchdog pings stopped after {pings}:\n{}", log_of(&log)));
        if msg != "WATCHDOG=1" {
            continue;
        }
        let since = spawned.elapsed();
        assert!(
            since >= half * pings,
            "ping {pings} only {since:?} after the spawn"
        );
        pings += 1;
    }

    // SIGTERM: STOPPING=1, and the daemon exits cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = loop {
        let msg = recv(&notify, Duration::from_secs(10)).expect("no STOPPING=1");
        if msg.starts_with("STOPPING=1") {
            break msg;
        }
    };
    assert!(stopping.contains("guests keep running"));
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log_of(&log));
    assert!(
        pid_alive(recorded_pid(&env, "left")),
        "the guest outlives the daemon"
    );
}

#[test]
fn watchdog_for_another_pid_is_ignored_and_abstract_notify_sockets_work() {
    let env = Env::new();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("novacron-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    let log = env.dir.path().join("daemon.log");
    let _daemon = spawn_daemon(
        &env,
        &log,
        &[
            ("NOTIFY_SOCKET", format!("@{name}")),
            ("WATCHDOG_USEC", "400000".into()),
            // The watchdog is meant for some other process (e.g. a wrapper script).
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    let mut got_ready = false;
    while let Some(msg) = recv(&notify, Duration::from_secs(if got_ready { 2 } else { 30 })) {
        assert_ne!(msg, "WATCHDOG=1", "pinged a watchdog meant for pid 1");
        got_ready |= msg.starts_with("READY=1");
    }
    assert!(
        got_ready,
        "no READY=1 on the abstract socket:\n{}",
        log_of(&log)
    );
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let env = Env::new();
    let config = env.write_config("");
    let passed = env.dir.path().join("activated.sock");
    let log = env.dir.path().join("activate.log");
    let out = std::fs::File::create(&log).unwrap();
    // systemd-socket-activate binds, waits for the first connection, then execs the daemon
    // with LISTEN_FDS=1 (fd 3) and LISTEN_PID set to the daemon's pid.
    let mut activate = tool("systemd-socket-activate");
    let _activator = Killed(
        activate
            .arg("-l")
            .arg(&passed)
            .arg("--fdname=api")
            .arg(BIN)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !passed.exists() {
        assert!(Instant::now() < deadline, "no socket:\n{}", log_of(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first request starts the daemon and is answered by it.
    let r = curl(&passed, "GET", "/v1/domains", &["--max-time", "30"]);
    assert_eq!(r.status, 200, "{r:?}\n{}", log_of(&log));
    assert_eq!(r.json(), serde_json::json!([]));
    let r = curl(&passed, "GET", "/v1/host", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let text = log_of(&log);
    assert!(text.contains("socket passed by systemd"), "{text}");
    // ... and it did not bind a socket of its own.
    assert!(
        !env.config.run_dir.join("novacrond.sock").exists(),
        "the daemon bound its own socket:\n{text}"
    );
}

#[test]
fn logs_go_to_journald_only_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let log = env.dir.path().join("journal-stream.log");
    // Not the journal: JOURNAL_STREAM names another file. Human lines on stderr.
    let _d = spawn_daemon(&env, &log, &[("JOURNAL_STREAM", "1:2".into())]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_of(&log).contains("novacrond ready") {
        assert!(Instant::now() < deadline, "{}", log_of(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!log_of(&log).contains("journald"));
    drop(_d);

    // JOURNAL_STREAM matches stderr: the daemon logs natively to journald, or, with no
    // journald listening (this container), says so and falls back to stderr.
    let env = Env::new();
    let log = env.dir.path().join("journal-stream.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let journald = Path::new("/run/systemd/journal/socket").exists();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(env.write_config(""))
        .env("JOURNAL_STREAM", stream)
        .stdin(Stdio::null())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let _d = Killed(cmd.spawn().unwrap());
    let socket = env.config.run_dir.join("novacrond.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "{}", log_of(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log_of(&log);
    if journald {
        assert!(
            !text.contains("novacrond ready"),
            "logged to stderr: {text}"
        );
    } else {
        assert!(text.contains("cannot log to journald"), "{text}");
        assert!(text.contains("novacrond ready"), "{text}");
    }
}
