//! The real `novactl` against the real `novacrond`: every command an operator uses in a
//! domain's life, the table and JSON outputs, and the exit codes scripts rely on.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn novactl_with_stdin(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("NOVACRON_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn novactl");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).expect("feed stdin");
    }
    let out: Output = child.wait_with_output().expect("novactl output");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "novactl {} -> {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

fn novactl(socket: &Path, args: &[&str]) -> Run {
    novactl_with_stdin(socket, args, None)
}

/// Runs and requires success.
fn ok(socket: &Path, args: &[&str]) -> Run {
    let run = novactl(socket, args);
    assert_eq!(run.code, 0, "novactl {args:?} failed: {}", run.stderr);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    run
}

fn fails_with(socket: &Path, args: &[&str], code: i32) -> Run {
    let run = novactl(socket, args);
    assert_eq!(run.code, code, "novactl {args:?}: {}", run.stderr);
    assert!(run.stderr.starts_with("novactl: "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    run
}

struct DestroyOnDrop<'a>(&'a Path, &'a str);

impl Drop for DestroyOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = novactl(self.0, &["destroy", self.1]);
        }
    }
}

#[test]
fn a_domain_life_through_novactl() {
    let env = Env::new();
    let daemon = env.start_daemon("");
    let sock = daemon.socket.as_path();
    // Guests outlive the daemon by design: a failed assertion must not leave one running.
    let _cleanup = DestroyOnDrop(sock, "cli1");
    let file = env.dir.path().join("cli1.xml");
    std::fs::write(&file, osless("cli1").to_xml()).unwrap();
    let file = file.to_str().unwrap();

    let run = ok(sock, &["define", "-f", file]);
    assert_eq!(run.stdout, "domain cli1 defined\n");

    // Like virsh: inactive domains only with --all.
    assert_eq!(
        ok(sock, &["list"]).stdout,
        "NAME  STATE  AUTOSTART  PERSISTENT  PID\n"
    );
    assert_eq!(
        ok(sock, &["list", "--all"]).stdout,
        "NAME  STATE    AUTOSTART  PERSISTENT  PID\n\
         cli1  shutoff  no         yes         -\n"
    );
    let list = ok(sock, &["list", "--all", "--json"]).json();
    assert_eq!(list[0]["name"], "cli1");
    assert_eq!(list[0]["state"], "shutoff");
    assert_eq!(list.as_array().unwrap().len(), 1);

    assert_eq!(
        ok(sock, &["start", "cli1"]).stdout,
        "domain cli1 is running\n"
    );
    let run = fails_with(sock, &["start", "cli1"], 4);
    assert!(run.stderr.contains("running"), "{}", run.stderr);

    let info = ok(sock, &["info", "cli1", "--json"]).json();
    assert_eq!(info["state"], "running");
    assert!(info["pid"].as_u64().is_some_and(|p| p > 0), "{info}");
    assert_eq!(info["config"]["name"], "cli1");
    let text = ok(sock, &["info", "cli1"]).stdout;
    assert!(text.contains("State:       running"), "{text}");
    let table = ok(sock, &["list", "--state", "running"]).stdout;
    assert!(
        table.lines().nth(1).unwrap().starts_with("cli1  running"),
        "{table}"
    );

    assert_eq!(
        ok(sock, &["suspend", "cli1"]).stdout,
        "domain cli1 is paused\n"
    );
    assert_eq!(
        ok(sock, &["--json", "list", "--state", "paused"]).json()[0]["name"],
        "cli1"
    );
    assert_eq!(
        ok(sock, &["resume", "cli1"]).stdout,
        "domain cli1 is running\n"
    );

    // dumpxml round-trips through define: redefining with its own XML changes nothing.
    let xml = ok(sock, &["dumpxml", "cli1"]).stdout;
    assert!(xml.trim_start().starts_with("<domain"), "{xml}");
    let dumped = env.dir.path().join("dumped.xml");
    std::fs::write(&dumped, &xml).unwrap();
    ok(sock, &["define", "-f", dumped.to_str().unwrap()]);
    assert_eq!(ok(sock, &["dumpxml", "cli1"]).stdout, xml);
    // The model JSON from `info` defines too, from standard input (content sniffing).
    let model = info["config"].to_string();
    let run = novactl_with_stdin(sock, &["define", "-f", "-"], Some(model.as_bytes()));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ok(sock, &["dumpxml", "cli1"]).stdout, xml);

    let autostart = ok(sock, &["--json", "autostart", "cli1"]).json();
    assert_eq!(autostart["autostart"], true);
    ok(sock, &["autostart", "cli1", "--disable"]);

    // --no-wait answers with the operation; `operation` shows how it went.
    let op = ok(sock, &["--json", "destroy", "cli1", "--no-wait"]).json();
    let id = op["id"].as_str().expect("operation id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let op = ok(sock, &["--json", "operation", &id]).json();
        if op["status"] != "running" {
            assert_eq!(op["status"], "succeeded", "{op}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{op}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = ok(sock, &["operation", &id]).stdout;
    assert_eq!(
        text,
        format!("operation {id}: destroy of domain cli1 succeeded\n")
    );
    fails_with(sock, &["operation", "op-999999"], 3);
    assert_eq!(
        ok(sock, &["start", "cli1"]).stdout,
        "domain cli1 is running\n"
    );
    assert_eq!(
        ok(sock, &["destroy", "cli1"]).stdout,
        "domain cli1 is shutoff\n"
    );
    fails_with(sock, &["suspend", "cli1"], 4);

    // The events so far, replayed from the start, one JSON document per line.
    let mut events = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(sock)
        .args(["events", "--after", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read until the last event this test caused (the pause) has come, not for a fixed time.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let paused =
        |e: &Value| e["event"] == "state_changed" && e["to"] == "paused" && e["reason"] == "paused";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lines: Vec<Value> = Vec::new();
    while !lines.iter().any(paused) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no pause event replayed: {lines:?}"));
        lines.push(serde_json::from_str(&line).expect("event JSON"));
    }
    events.kill().unwrap();
    events.wait().unwrap();
    assert_eq!(lines[0]["event"], "defined", "{lines:?}");
    assert!(
        lines.iter().any(|e| e["event"] == "state_changed"
            && e["to"] == "paused"
            && e["reason"] == "paused"),
        "{lines:?}"
    );
    assert!(lines
        .windows(2)
        .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));

    let host = ok(sock, &["host", "--json"]).json();
    assert_eq!(host["domains"]["total"], 1);

    assert_eq!(
        ok(sock, &["undefine", "cli1"]).stdout,
        "domain cli1 undefined\n"
    );
    let run = fails_with(sock, &["info", "cli1"], 3);
    assert!(run.stderr.contains("cli1"), "{}", run.stderr);
}

#[test]
fn exit_codes_for_scripts() {
    let env = Env::new();
    let daemon = env.start_daemon("");
    let sock = daemon.socket.as_path();

    fails_with(sock, &["info", "nosuch"], 3);
    fails_with(sock, &["start", "nosuch"], 3);

    let bad = env.dir.path().join("bad.xml");
    std::fs::write(&bad, "<domain><name>broken</name>").unwrap();
    fails_with(sock, &["define", "-f", bad.to_str().unwrap()], 5);
    std::fs::write(&bad, "{\"name\": 1}").unwrap();
    fails_with(sock, &["define", "-f", bad.to_str().unwrap()], 5);
    fails_with(sock, &["qmp", "x", "query-status", "[1]"], 5);

    let absent = env.dir.path().join("absent.sock");
    let run = fails_with(&absent, &["list"], 8);
    assert!(
        run.stderr.contains(absent.to_str().unwrap()),
        "{}",
        run.stderr
    );

    // Usage errors are clap's: exit 2.
    assert_eq!(novactl(sock, &["start"]).code, 2);
    assert_eq!(novactl(sock, &["list", "--state", "sleepy"]).code, 2);
}

/// `--url` with `--token` over TCP: the token's role decides, and refusals are exit 7.
#[test]
fn tcp_with_a_token() {
    use sha2::{Digest, Sha256};

    let env = Env::new();
    let digest: String = Sha256::digest(b"op-secret")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let daemon = env.start_daemon(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n\
         [[api.tokens]]\nname = \"ops\"\nsha256 = \"{digest}\"\nrole = \"operator\"\n"
    ));
    let port = daemon.tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    // The socket given is absent: --url must take precedence.
    let nowhere = env.dir.path().join("absent.sock");
    let host = ok(
        &nowhere,
        &["--url", &url, "--token", "op-secret", "--json", "host"],
    )
    .json();
    assert_eq!(host["domains"]["total"], 0);
    fails_with(&nowhere, &["--url", &url, "--token", "wrong", "list"], 7);
    fails_with(&nowhere, &["--url", &url, "list"], 7);
    // Operators may not use QMP passthrough.
    fails_with(
        &nowhere,
        &[
            "--url",
            &url,
            "--token",
            "op-secret",
            "qmp",
            "x",
            "query-status",
        ],
        7,
    );
    // https is spoken (see tests/http_tls.rs); nothing listens here: cannot connect, 8.
    let run = fails_with(&nowhere, &["--url", "https://127.0.0.1:1", "list"], 8);
    assert!(run.stderr.contains("https://127.0.0.1:1"), "{}", run.stderr);
}
