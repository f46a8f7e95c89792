//! Connection exhaustion (issue 13, §7–9), attacked on a real daemon: an unprivileged socket
//! user holding event streams and connections, one TCP address holding idle unauthenticated
//! connections. The over-cap ones are refused with a JSON error, root and token holders from
//! elsewhere keep getting answers, warnings stay few, and the daemon serves after the flood.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, tcp_api};
use common::Env;

const GROUP: &str = "novacron-test-api";
const USER: &str = "novacron-test-op";
/// The system interpreter: the user we run it as cannot read a per-user install (pyenv).
const PYTHON: &str = "/usr/bin/python3";

/// Opens `count` connections to the socket in argv[1], each sending `GET argv[3]`, and prints
/// one line per connection: the status and, for errors, the error code (or "closed"). Then
/// "READY", and holds every connection until stdin closes.
const FLOOD: &str = r#"
import json, socket, sys
path, count, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        s.connect(path)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        if b"\r\n\r\n" not in buf:
            print("closed", flush=True)
            held.append(s)
            continue
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = lines[0].split()[1]
        length = [int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length:")]
        if status == "200":
            print("200", flush=True)
        else:
            while length and len(body) < length[0]:
                body += s.recv(4096)
            code = json.loads(body)["error"]["code"] if body else ""
            print(status, code, flush=True)
    except OSError as e:
        print("closed", e, flush=True)
    held.append(s)
print("READY", flush=True)
sys.stdin.read()
"#;

/// Runs a command, returning its exit code.
fn run(cmd: &str, args: &[&str]) -> i32 {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    out.status.code().unwrap_or(-1)
}

/// The unprivileged test user, a member of `GROUP` (both created if missing; idempotent, and
/// tolerant of another test binary doing the same at the same time).
fn test_user() -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        run("groupadd", &["-f", GROUP]);
        if run("id", &["-u", USER]) != 0 {
            run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ],
            );
        }
        run("usermod", &["-a", "-G", GROUP, USER]);
        let user = nix::unistd::User::from_name(USER).ok().flatten();
        let group = nix::unistd::Group::from_name(GROUP).ok().flatten();
        if let (Some(u), Some(g)) = (user, group) {
            if g.mem.iter().any(|m| m == USER) || u.gid == g.gid {
                return (u.uid.as_raw(), g.gid.as_raw());
            }
        }
        // /etc/passwd was locked by someone else: try again.
        assert!(Instant::now() < deadline, "cannot set up {USER} in {GROUP}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A python3 child running as the test user; killed (with its connections) on drop.
struct AsUser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl AsUser {
    fn flood(socket: &Path, count: usize, target: &str) -> AsUser {
        let count = count.to_string();
        let mut child = Command::new("runuser")
            .args(["-u", USER, "--", PYTHON, "-c", FLOOD])
            .arg(socket)
            .args([count.as_str(), target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("runuser");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        AsUser {
            child,
            stdin,
            stdout,
        }
    }

    /// One line per connection, until READY (the script's own timeouts bound this).
    fn outcomes(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read flood output");
            assert!(n > 0, "flood script ended early after {lines:?}");
            let line = line.trim().to_owned();
            if line == "READY" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Closes stdin: the script exits and its connections close.
    fn release(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // EOF first: runuser forks, so killing it would not reach python3, but python3 exits
        // (closing its connections) once its stdin closes.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

fn warnings(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("refusing HTTP API connections"))
        .count()
}

/// Waits until `f` holds, or fails naming `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_socket_user_is_capped_and_root_keeps_working() {
    let (_, gid) = test_user();
    let env = Env::new();
    // The test's private directory is 0700; the user must be able to walk to run_dir.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = env.start_daemon(&format!(
        "[api]\nsocket_group = \"{GROUP}\"\nmax_connections = 8\n\
         max_connections_per_uid = 8\nmax_event_streams_per_caller = 5\n"
    ));

    // §9: the run directory the daemon created is the group's, the records stay private.
    let run = std::fs::metadata(&env.config.run_dir).unwrap();
    assert_eq!(run.mode() & 0o777, 0o750);
    assert_eq!(run.gid(), gid);
    // Only the daemon (and, through an ACL entry, QEMU's user: the group bits then show the
    // ACL mask) may pass into the records; the socket group may not.
    let records = env.config.run_dir.join("domains");
    let mode = std::fs::metadata(&records).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o707, 0o700, "records dir mode {mode:o}");
    let listed = std::process::Command::new("runuser")
        .args(["-u", USER, "--", "ls"])
        .arg(&records)
        .output()
        .unwrap();
    assert!(
        !listed.status.success(),
        "a socket group member could list the records: {}",
        String::from_utf8_lossy(&listed.stdout)
    );

    // §7: 20 event streams from one user: 5 streams, 3 more connections told the stream cap,
    // the remaining 12 refused at the connection cap.
    let mut flood = AsUser::flood(&daemon.socket, 20, "/v1/events");
    let got = flood.outcomes();
    assert_eq!(count(&got, "200"), 5, "{got:?}");
    assert_eq!(count(&got, "429 too_many_streams"), 3, "{got:?}");
    assert_eq!(count(&got, "429 too_many_connections"), 12, "{got:?}");

    // Root is not counted (the reserve): it gets its answers while the user holds every
    // non-root connection there is.
    for _ in 0..3 {
        let r = curl(&daemon.socket, "GET", "/v1/domains", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Root's event stream opens: its first line says it is subscribed (read however slowly
    // it comes, instead of whatever arrived within a fixed second).
    let mut stream = Command::new("curl")
        .args(["-sSN", "--unix-socket"])
        .arg(&daemon.socket)
        .arg("http://localhost/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(stream.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    let _ = stream.kill();
    let _ = stream.wait();
    assert_eq!(
        first.as_deref().map(str::trim_end),
        Ok(": subscribed"),
        "root's event stream"
    );

    // One warning for 12 refusals (the rest are summarised per interval).
    let w = warnings(&daemon.log);
    assert!((1..=2).contains(&w), "{w} warning lines");

    // Every one of the 15 refusals is in the audit log, folded per caller: a line or two
    // whose counts add up (the folded count is written when its window ends).
    let audit = env.config.log_dir.join("audit.log");
    let too_many = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["op"] == "refused" && e["result"] == "too_many")
            .collect()
    };
    wait_until(
        "the 15 refusals are audited",
        Duration::from_secs(30),
        || {
            too_many()
                .iter()
                .filter_map(|e| e["count"].as_u64())
                .sum::<u64>()
                == 15
        },
    );
    let lines = too_many();
    assert!(lines.len() <= 4, "{lines:?}");
    assert!(
        lines.iter().all(|e| e["actor"]["uid"].as_u64().is_some()),
        "{lines:?}"
    );

    // The flood ends: its connections and streams are released.
    flood.release();
    wait_until(
        "the user gets streams again",
        Duration::from_secs(30),
        || {
            let mut again = AsUser::flood(&daemon.socket, 5, "/v1/events");
            let got = again.outcomes();
            count(&got, "200") == 5
        },
    );
    let mut calls = AsUser::flood(&daemon.socket, 1, "/v1/domains");
    assert_eq!(calls.outcomes(), ["200"]);
}

/// A minimal HTTP/1.1 exchange on a kept-alive connection: (status, body).
fn exchange(stream: &mut std::net::TcpStream, path: &str, token: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    response(stream)
}

/// Reads one response: (status, body).
fn response(stream: &mut std::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read head");
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A TCP connection from `source` (any 127/8 address works on Linux loopback).
fn connect_from(source: &str, port: u16) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// The daemon closed the connection (EOF or reset) before the read timeout.
fn assert_closed(stream: &mut std::net::TcpStream, what: &str) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what} is still open: {other:?}"),
    }
}

#[test]
fn one_address_flooding_tcp_does_not_lock_token_holders_out() {
    let env = Env::new();
    let toml = tcp_api(&[("ops", "s3cret", "operator")]);
    // The caps go into [api], before its [[api.tokens]] tables.
    let toml = toml.replacen(
        "[api]\n",
        "[api]\nmax_unauthenticated_per_address = 4\nmax_unauthenticated = 16\n",
        1,
    );
    let daemon = env.start_daemon(&toml);
    let port = daemon.tcp_port();

    // A token holder's kept-alive connection, idle from here on.
    let mut keeper = connect_from("127.0.0.2", port);
    let (status, body) = exchange(&mut keeper, "/v1/domains", "s3cret");
    assert_eq!(status, 200, "{body}");

    // 200 idle connections from 127.0.0.1 that never send a request.
    let flood: Vec<_> = (0..200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();

    // A token holder from another address gets in at once, and keeps its connection alive.
    let mut holder = connect_from("127.0.0.2", port);
    let (status, body) = exchange(&mut holder, "/v1/domains", "s3cret");
    assert_eq!(status, 200, "{body}");

    // Authenticated connections leave the per-address cap: this address holds more of them
    // than an unauthenticated peer may.
    let mut pool: Vec<_> = (0..4)
        .map(|_| {
            let mut conn = connect_from("127.0.0.2", port);
            let (status, body) = exchange(&mut conn, "/v1/domains", "s3cret");
            assert_eq!(status, 200, "{body}");
            conn
        })
        .collect();

    // A new connection from the flooding address is told the per-address cap (at once,
    // before it sends anything).
    let mut flooded = connect_from("127.0.0.1", port);
    let (status, body) = response(&mut flooded);
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("too_many_connections") && body.contains("127.0.0.1"),
        "{body}"
    );

    // The admitted flood connections are closed when their first-request deadline passes;
    // the authenticated ones, idle as long or longer, stay (keep-alive outlives the deadline).
    let mut admitted = flood.into_iter().next().unwrap();
    admitted
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_closed(
        &mut admitted,
        "an unauthenticated connection past its deadline",
    );
    for conn in [&mut keeper, &mut holder]
        .into_iter()
        .chain(pool.iter_mut())
    {
        let (status, body) = exchange(conn, "/v1/domains", "s3cret");
        assert_eq!(
            status, 200,
            "kept-alive connection after the deadline: {body}"
        );
    }

    // A wrong token closes a never-authenticated connection after its 401.
    let mut guesser = connect_from("127.0.0.3", port);
    let (status, _) = exchange(&mut guesser, "/v1/domains", "wrong");
    assert_eq!(status, 401);
    guesser
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_closed(&mut guesser, "a connection after its 401");

    // ~196 refusals, a handful of warning lines.
    let w = warnings(&daemon.log);
    assert!((1..=3).contains(&w), "{w} warning lines");
}
