//! The audit trail under attack, against a real novacrond: a guest named `audit` (whose QEMU
//! log once was the audit log, and was capped with it), refused calls of every kind (bad
//! tokens, an operator at an admin route, a failed registration, an incoming-migration abort)
//! each leaving a line without any secret, and a flood of bad tokens folded into a few lines.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, Daemon};
use common::*;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn audit_lines(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.config.log_dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls the audit log until `pred` holds for its lines.
fn wait_audit(env: &Env, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lines = audit_lines(env);
        if pred(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not in the audit log within {DEADLINE:?}:\n{lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refusals<'a>(lines: &'a [Value], result: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["op"] == "refused" && l["result"] == result)
        .collect()
}

fn wait_file(path: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {DEADLINE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn define_and_start(d: &Daemon, name: &str) {
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &osless(name).to_xml(),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `count` lines of earlier history, about 100 KiB: more than the smallest guest log cap.
fn seed(path: &Path, count: usize) -> String {
    let text: String = (0..count)
        .map(|i| format!("{{\"seeded\":{i},\"pad\":\"{}\"}}\n", "x".repeat(48)))
        .collect();
    std::fs::write(path, &text).unwrap();
    text
}

/// Appends past the cap to a guest's log (QEMU has it open O_APPEND too), then waits for the
/// capper to rotate it: proof it has gone over every running guest's logs since.
fn wait_for_a_cap_round(log: &Path) {
    let rotated = log.with_extension("log.1");
    let _ = std::fs::remove_file(&rotated);
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    std::io::Write::write_all(&mut f, &vec![b'n'; 100 << 10]).unwrap();
    wait_file(&rotated);
}

/// The smallest cap (a top-level key: before the `[dbus]` section the harness would add).
const CAPPED: &str = "log_max_bytes = 65536\n[dbus]\nbus = \"none\"\n";

#[test]
fn a_guest_named_audit_never_writes_into_or_caps_the_audit_log() {
    let env = Env::new();
    std::fs::create_dir_all(&env.config.log_dir).unwrap();
    let audit = env.config.log_dir.join("audit.log");
    let history = seed(&audit, 1800);
    assert!(history.len() > 65536 + 30_000);
    // Left too open by someone: the daemon narrows it.
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o666)).unwrap();
    let d = env.start_daemon(CAPPED);
    define_and_start(&d, "audit");
    define_and_start(&d, "noisy");
    let pid = recorded_pid(&env, "audit");
    let qemu_log = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    // Wherever the daemon put it: its QEMU's stderr.
    let noisy = std::fs::read_link(format!("/proc/{}/fd/2", recorded_pid(&env, "noisy"))).unwrap();
    wait_for_a_cap_round(&noisy);

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.starts_with(&history),
        "the audit log lost its history (it is {} bytes)",
        text.len()
    );
    assert!(!env.config.log_dir.join("audit.log.1").exists());
    assert_eq!(qemu_log, env.config.log_dir.join("qemu/audit.log"));
    let ours: Vec<String> = audit_lines(&env)
        .iter()
        .filter(|l| l["domain"] == "audit")
        .map(|l| format!("{} {}", l["op"].as_str().unwrap(), l["result"]))
        .collect();
    assert_eq!(ours, ["define \"ok\"", "start \"ok\""]);
    // Only JSON lines of ours: no QEMU output in between.
    assert!(text[history.len()..]
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");

    // An older daemon started the guest: its record names no log, and the old place of its
    // log is the audit log. The restarted daemon reconnects, warns, and never caps it.
    drop(d);
    let record_path = env.record("audit");
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    assert!(record["qemu_log"].is_string(), "{record}");
    record.as_object_mut().unwrap().remove("qemu_log");
    std::fs::write(&record_path, record.to_string()).unwrap();
    let before = std::fs::read_to_string(&audit).unwrap();
    let d = env.start_daemon(CAPPED);
    wait_for_a_cap_round(&noisy);
    let after = std::fs::read_to_string(&audit).unwrap();
    assert!(after.starts_with(&before), "capped after the restart");
    assert!(!env.config.log_dir.join("audit.log.1").exists());
    let r = curl(&d.socket, "GET", "/v1/domains/audit", &[]);
    assert_eq!(r.json()["state"], "running", "reconnected: {}", r.body);
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("writes its QEMU output into the audit log"),
        "{log}"
    );
}

/// A user made for this test (an operator on the Unix socket), removed on drop.
struct TestUser {
    name: String,
}

impl TestUser {
    fn create(name: &str) -> TestUser {
        let _ = Command::new("userdel").arg(name).output();
        let out = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/bin/sh",
                name,
            ])
            .output()
            .expect("useradd (Debian package passwd)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestUser {
            name: name.to_owned(),
        }
    }

    fn uid(&self) -> u64 {
        let out = Command::new("id")
            .args(["-u", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// curl over TCP with a bearer token (or none); the status.
fn tcp(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> u16 {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = c
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn refused_calls_are_audited_with_who_and_what_and_never_a_secret() {
    let env = Env::new();
    let user = TestUser::create("novacron-audit-t");
    // The socket is the group's; the test's directories must let the user reach it.
    let api = common::daemon::tcp_api(&[
        ("admin-tok", "admin-secret-0", "admin"),
        ("op-tok", "operator-secret-1", "operator"),
    ]);
    let api = api.replace(
        "[api]\n",
        &format!("[api]\nsocket_group = \"{}\"\n", user.name),
    );
    let d = env.start_daemon(&api);
    let port = d.tcp_port();
    for dir in [env.dir.path(), &env.config.run_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    define_and_start(&d, "vm1");

    // 401: a wrong token, then none at all (same peer: folded into one window).
    const WRONG: &str = "wrong-secret-XYZZY";
    assert_eq!(tcp(port, "GET", "/v1/domains", Some(WRONG), None), 401);
    let lines = wait_audit(&env, "a 401", |l| !refusals(l, "unauthorized").is_empty());
    let e = refusals(&lines, "unauthorized")[0];
    assert_eq!(e["actor"]["via"], "http-tcp", "{e}");
    assert!(
        e["actor"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{e}"
    );
    assert_eq!(e["asked"]["method"], "GET");
    assert_eq!(e["asked"]["path"], "/v1/domains");
    assert_eq!(e["count"], 1);
    assert_eq!(e["error"], "unknown token");
    assert!(e["actor"].get("token").is_none(), "{e}");

    // 403 over TCP: an operator token at raw QMP, and at registering a host.
    let qmp = r#"{"execute":"query-status"}"#;
    assert_eq!(
        tcp(
            port,
            "POST",
            "/v1/domains/vm1/qmp",
            Some("operator-secret-1"),
            Some(qmp)
        ),
        403
    );
    let lines = wait_audit(&env, "a 403", |l| !refusals(l, "forbidden").is_empty());
    let e = refusals(&lines, "forbidden")[0];
    assert_eq!(e["actor"]["token"], "op-tok", "{e}");
    assert_eq!(e["asked"]["path"], "/v1/domains/vm1/qmp");
    assert_eq!(e["error"], "QMP passthrough is for administrators");

    // 403 on the Unix socket: a user who is only in the socket's group.
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--", "curl", "-sS", "-o", "/dev/null"])
        .args([
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-d",
            qmp,
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg("http://localhost/v1/domains/vm1/qmp")
        .output()
        .expect("runuser (Debian package util-linux)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = user.uid();
    let lines = wait_audit(&env, "the operator's 403", |l| {
        refusals(l, "forbidden")
            .iter()
            .any(|e| e["actor"]["uid"] == uid)
    });
    let e = refusals(&lines, "forbidden")
        .into_iter()
        .find(|e| e["actor"]["uid"] == uid)
        .unwrap();
    assert_eq!(e["actor"]["via"], "http-unix", "{e}");
    assert_eq!(e["asked"]["method"], "POST");

    // A failed registration (by an admin) and an abort of an unknown incoming migration.
    let reg = r#"{"name":"pve9","driver":"proxmox","url":"https://127.0.0.1:1","credentials":{"user":"root@pam","password":"reg-secret-7"},"tls_verify":false,"ca_file":"/nonexistent/ca.pem"}"#;
    // Nothing answers at port 1: refused by the vendor's side (502), nothing registered.
    let status = tcp(port, "POST", "/v1/hosts", Some("admin-secret-0"), Some(reg));
    assert!(status >= 400, "{status}");
    assert_eq!(curl(&d.socket, "GET", "/v1/hosts/pve9", &[]).status, 404);
    assert_eq!(
        tcp(
            port,
            "DELETE",
            "/v1/migrations/incoming/no-such-id",
            Some("admin-secret-0"),
            None
        ),
        404
    );
    let lines = wait_audit(&env, "registration and abort", |l| {
        l.iter().any(|e| e["op"] == "register host") && l.iter().any(|e| e["op"] == "migrate-abort")
    });
    let reg_line = lines.iter().find(|e| e["op"] == "register host").unwrap();
    assert_eq!(reg_line["domain"], "pve9", "{reg_line}");
    assert_ne!(reg_line["result"], "ok", "{reg_line}");
    assert_eq!(reg_line["actor"]["token"], "admin-tok", "{reg_line}");
    let abort = lines.iter().find(|e| e["op"] == "migrate-abort").unwrap();
    assert_eq!(abort["result"], "not_found", "{abort}");
    assert!(
        abort["error"].as_str().unwrap().contains("no-such-id"),
        "{abort}"
    );

    // A flood of bad tokens from one address: every refusal counted, in a few lines.
    const FLOOD: u64 = 60;
    let base: u64 = refusals(&audit_lines(&env), "unauthorized")
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    let mut flood = Command::new("curl");
    flood.args([
        "-sS",
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {WRONG}"),
    ]);
    for _ in 0..FLOOD {
        flood.arg(format!("http://127.0.0.1:{port}/v1/host"));
    }
    assert!(flood.output().unwrap().status.success());
    let lines = wait_audit(&env, "the flood's count", |l| {
        refusals(l, "unauthorized")
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>()
            == base + FLOOD
    });
    let flood_lines = refusals(&lines, "unauthorized").len();
    assert!(
        flood_lines <= 6,
        "{FLOOD} bad tokens took {flood_lines} lines"
    );

    // No secret anywhere in the trail.
    let text = std::fs::read_to_string(env.config.log_dir.join("audit.log")).unwrap();
    for secret in [WRONG, "admin-secret-0", "operator-secret-1", "reg-secret-7"] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    // The daemon and the guest are unaffected.
    let r = curl_get(&d, "/v1/domains/vm1");
    assert_eq!(r["state"], "running");
}

fn curl_get(d: &Daemon, path: &str) -> Value {
    let r = curl(&d.socket, "GET", path, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}
