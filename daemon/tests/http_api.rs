//! The HTTP API of a real novacrond process, driven with real curl; every JSON body checked
//! against daemon/openapi.json.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, Reply};
use common::openapi::Spec;
use common::*;
use serde_json::json;

const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];

fn define_xml(socket: &std::path::Path, xml: &str) -> Reply {
    let mut args = XML.to_vec();
    args.push(xml);
    curl(socket, "POST", "/v1/domains", &args)
}

/// Files under the state directory, for "nothing changed on disk" checks.
fn state_files(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = walk(&env.config.state_dir);
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            let content = std::fs::read(&path).unwrap_or_default();
            out.push(format!("{} {}", path.display(), content.len()));
        }
    }
    out
}

#[test]
fn lifecycle_over_curl_matches_the_spec() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let spec = Spec::load();
    let xml = osless("web1").to_xml();

    let r = define_xml(s, &xml);
    assert_eq!(r.status, 201, "{}", r.body);
    spec.check_response("/v1/domains", "POST", 201, &r.body);
    let r = define_xml(s, &xml);
    assert_eq!(r.status, 200, "redefine: {}", r.body);

    let r = curl(s, "GET", "/v1/domains/web1", &[]);
    spec.check_response("/v1/domains/{name}", "GET", 200, &r.body);
    assert_eq!(r.json()["state"], "shutoff");
    let r = curl(
        s,
        "GET",
        "/v1/domains/web1",
        &["-H", "Accept: application/xml"],
    );
    assert!(
        r.content_type.starts_with("application/xml") && r.body.starts_with("<domain"),
        "{r:?}"
    );
    let r = curl(s, "GET", "/v1/domains/web1/xml", &[]);
    assert!(r.body.contains("<name>web1</name>"));

    let r = curl(s, "POST", "/v1/domains/web1/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    spec.check_response("/v1/domains/{name}/start", "POST", 200, &r.body);
    assert_eq!(r.json()["state"], "running");
    assert!(r.json()["pid"].as_u64().is_some());

    for (action, state) in [
        ("suspend", "paused"),
        ("resume", "running"),
        ("reset", "running"),
    ] {
        let r = curl(s, "POST", &format!("/v1/domains/web1/{action}"), &[]);
        assert_eq!(r.status, 200, "{action}: {}", r.body);
        assert_eq!(r.json()["state"], state, "{action}");
    }

    let r = curl(s, "GET", "/v1/domains?state=running&name=web*", &[]);
    spec.check_response("/v1/domains", "GET", 200, &r.body);
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = curl(s, "GET", "/v1/domains?state=paused", &[]);
    assert_eq!(r.json(), json!([]));

    // QMP passthrough (the test runs as root: an admin on the socket).
    let body = json!({"execute": "query-status"});
    spec.check_request("/v1/domains/{name}/qmp", "POST", &body);
    let r = curl(
        s,
        "POST",
        "/v1/domains/web1/qmp",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    spec.check_response("/v1/domains/{name}/qmp", "POST", 200, &r.body);
    assert_eq!(r.json()["return"]["status"], "running");
    let r = curl(
        s,
        "POST",
        "/v1/domains/web1/qmp",
        &["-d", r#"{"execute":"no-such-command"}"#],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "qmp_error"),
        "{}",
        r.body
    );
    spec.check_response("/v1/domains/{name}/qmp", "POST", 422, &r.body);

    let body = json!({"enabled": true});
    spec.check_request("/v1/domains/{name}/autostart", "PUT", &body);
    let r = curl(
        s,
        "PUT",
        "/v1/domains/web1/autostart",
        &["-d", &body.to_string()],
    );
    assert_eq!(r.json()["autostart"], true, "{}", r.body);

    let r = curl(s, "GET", "/v1/host", &[]);
    spec.check_response("/v1/host", "GET", 200, &r.body);
    assert_eq!(r.json()["domains"]["running"], 1);

    // A graceful shutdown the OS-less guest ignores, forced after one second.
    let body = json!({"timeout_secs": 1, "force": true});
    spec.check_request("/v1/domains/{name}/shutdown", "POST", &body);
    let r = curl(
        s,
        "POST",
        "/v1/domains/web1/shutdown",
        &["-d", &body.to_string()],
    );
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (200, json!("shutoff")),
        "{}",
        r.body
    );

    // Not waiting: an operation resource to poll.
    let r = curl(s, "POST", "/v1/domains/web1/start?wait=false", &["-i"]);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("location: /v1/operations/op-"),
        "{}",
        r.body
    );
    let op_body = r
        .body
        .split("\r\n\r\n")
        .last()
        .unwrap_or_default()
        .to_owned();
    spec.check_response("/v1/domains/{name}/start", "POST", 202, &op_body);
    let id = serde_json::from_str::<serde_json::Value>(&op_body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl(s, "GET", &format!("/v1/operations/{id}"), &[]);
        spec.check_response("/v1/operations/{id}", "GET", 200, &r.body);
        if r.json()["status"] == "succeeded" {
            break;
        }
        assert_ne!(r.json()["status"], "failed", "{}", r.body);
        assert!(Instant::now() < deadline, "operation never finished");
        std::thread::sleep(Duration::from_millis(20));
    }

    let r = curl(s, "POST", "/v1/domains/web1/destroy", &[]);
    assert_eq!(r.json()["state"], "shutoff");
    let r = curl(s, "DELETE", "/v1/domains/web1", &[]);
    assert_eq!(r.status, 204);
    let r = curl(s, "GET", "/v1/domains/web1", &[]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    spec.check_response("/v1/domains/{name}", "GET", 404, &r.body);
}

#[test]
fn bad_input_gets_the_right_code_and_changes_nothing() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let spec = Spec::load();
    assert_eq!(define_xml(s, &osless("base").to_xml()).status, 201);
    let before = state_files(&env);

    let json_ct = ["-H", "Content-Type: application/json", "-d"];
    let cases: Vec<(&str, Reply, u16, &str, &str)> = vec![
        ("malformed JSON", curl(s, "POST", "/v1/domains", &[&json_ct[..], &["{\"name\":"]].concat()), 400, "bad_request", "line 1"),
        ("unknown JSON field", curl(s, "POST", "/v1/domains", &[&json_ct[..], &[r#"{"name":"x","warp":1}"#]].concat()), 400, "bad_request", "warp"),
        ("malformed XML", define_xml(s, "<domain type='kvm'>\n<name>x</name>\n<memory>"), 400, "invalid_config", "line"),
        ("unsupported element", define_xml(s, "<domain type='kvm'>\n<name>x</name>\n<memory>65536</memory><vcpu>1</vcpu>\n<os><type>hvm</type></os>\n<devices>\n<smartcard mode='host'/>\n</devices></domain>"), 400, "invalid_config", "smartcard"),
        ("bad name", define_xml(s, &osless("base").to_xml().replace("<name>base</name>", "<name>../etc</name>")), 400, "invalid_config", "name"),
        ("wrong content type", curl(s, "POST", "/v1/domains", &["-H", "Content-Type: text/plain", "-d", "hello"]), 415, "unsupported_media_type", "text/plain"),
        ("unknown domain", curl(s, "POST", "/v1/domains/ghost/start", &[]), 404, "not_found", "ghost"),
        ("wrong state", curl(s, "POST", "/v1/domains/base/resume", &[]), 409, "wrong_state", "shutoff"),
        ("bad filter", curl(s, "GET", "/v1/domains?state=flying", &[]), 400, "bad_request", "flying"),
        ("bad shutdown body", curl(s, "POST", "/v1/domains/base/shutdown", &["-d", r#"{"timeout":5}"#]), 400, "bad_request", "timeout"),
        ("unknown route", curl(s, "GET", "/v2/domains", &[]), 404, "not_found", "/v2/domains"),
        ("wrong method", curl(s, "PATCH", "/v1/domains/base", &[]), 405, "method_not_allowed", "PATCH"),
    ];
    for (what, r, status, code, needle) in cases {
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{what}: {}",
            r.body
        );
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains(needle),
            "{what}: message should name {needle:?}: {message}"
        );
        spec.check_value("Error", &r.json());
    }
    // An oversized body: refused before it is read in full.
    let big = env.dir.path().join("big.xml");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let r = curl(
        s,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &format!("@{}", big.display()),
        ],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "too_large"),
        "{}",
        r.body
    );
    spec.check_response("/v1/domains", "POST", 413, &r.body);

    assert_eq!(
        state_files(&env),
        before,
        "a refused request changed the state directory"
    );
}

#[test]
fn tcp_requires_a_valid_token_and_roles_apply() {
    let env = Env::new();
    let extra = common::daemon::tcp_api(&[
        ("ops", "op-secret", "operator"),
        ("root", "admin-secret", "admin"),
    ]);
    let d = env.start_daemon(&extra);
    let port = d.tcp_port();
    define_xml(&d.socket, &osless("tok").to_xml());
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let status = |args: &[&str], path: &str| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url(path))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    };
    let (code, body) = status(&[], "/v1/domains");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("unauthorized"));
    assert_eq!(
        status(&["-H", "Authorization: Bearer wrong"], "/v1/domains").0,
        401
    );
    assert_eq!(
        status(&["-H", "Authorization: Basic b3A6c2VjcmV0"], "/v1/domains").0,
        401
    );
    let (code, body) = status(&["-H", "Authorization: Bearer op-secret"], "/v1/domains");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"tok\""));
    // Operators may not use raw QMP; admins may (the domain is off: 409, past the role check).
    let qmp = ["-X", "POST", "-d", r#"{"execute":"query-status"}"#];
    let (code, body) = status(
        &[&qmp[..], &["-H", "Authorization: Bearer op-secret"]].concat(),
        "/v1/domains/tok/qmp",
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = status(
        &[&qmp[..], &["-H", "Authorization: Bearer admin-secret"]].concat(),
        "/v1/domains/tok/qmp",
    );
    assert_eq!(code, 409, "{body}");
}

#[test]
fn a_client_sending_one_byte_a_second_is_cut_off() {
    let env = Env::new();
    let d = env.start_daemon("");
    let mut slow = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"GET /v1/host HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(n) => {
                // hyper answers 408 before closing; either way the connection ends.
                assert!(
                    String::from_utf8_lossy(&buf[..n]).contains("408"),
                    "{:?}",
                    &buf[..n]
                );
                closed_after = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "slow client never cut off"
        );
    }
    let after = closed_after.unwrap();
    println!("slow client cut off after {after:?}");
    assert!(
        after >= Duration::from_secs(9) && after < Duration::from_secs(15),
        "{after:?}"
    );
    // Meanwhile everyone else was served.
    assert_eq!(curl(&d.socket, "GET", "/v1/host", &[]).status, 200);
}

#[test]
fn the_event_stream_shows_another_clients_operations_and_resumes() {
    let env = Env::new();
    let d = env.start_daemon("");
    let spec = Spec::load();
    // The stream's first line says the daemon has subscribed it to the bus, so what follows
    // cannot be missed.
    let mut stream = Command::new("curl")
        .args(["-sSN", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(stream.stdout.take().unwrap());
    wait_subscribed(&rx);
    define_xml(&d.socket, &osless("ev").to_xml());
    assert_eq!(
        curl(&d.socket, "POST", "/v1/domains/ev/start", &[]).status,
        200
    );
    assert_eq!(
        curl(&d.socket, "POST", "/v1/domains/ev/destroy", &[]).status,
        200
    );

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            spec.check_value("DomainEvent", &v);
            events.push(v);
            if events.iter().any(|e| e["to"] == "shutoff") {
                break;
            }
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let transitions: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "state_changed")
        .map(|e| {
            format!(
                "{}->{}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        transitions,
        ["shutoff->starting", "starting->running", "running->shutoff"],
        "{events:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Resuming after the second event replays exactly what followed it (read until the
    // last one, however slowly it comes: nothing else happens meanwhile).
    let mut resumed = Command::new("curl")
        .args(["-sSN", "-H"])
        .arg(format!("Last-Event-ID: {}", seqs[1]))
        .arg("--unix-socket")
        .arg(&d.socket)
        .arg("http://localhost/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(resumed.stdout.take().unwrap());
    let last = *seqs.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replay: Vec<u64> = Vec::new();
    while replay.last().is_none_or(|&id| id < last) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the replay stopped at {replay:?}, wanted {seqs:?}"));
        if let Some(id) = line.strip_prefix("id: ") {
            replay.push(id.parse().unwrap());
        }
    }
    let _ = resumed.kill();
    let _ = resumed.wait();
    assert_eq!(replay, seqs[2..].to_vec());
}

#[test]
fn sigterm_drains_the_api_and_ends_event_streams() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let mut stream = Command::new("curl")
        .args(["-sSN", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(stream.stdout.take().unwrap());
    // The stream is open and subscribed before the signal (a curl that connected late would
    // be refused and end too, proving nothing).
    wait_subscribed(&rx);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The stream ended by itself: the drain did not have to give up on it.
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(!log.contains("still open after"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        if let Some(status) = stream.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the event stream did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    // 0: the daemon closed the stream cleanly (not refused, not cut mid-chunk).
    assert!(ended.success(), "curl: {ended}");
}

/// The lines a child writes, as they come.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the event stream's first comment: the subscription is then in place.
fn wait_subscribed(rx: &std::sync::mpsc::Receiver<String>) {
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the event stream never answered");
    assert_eq!(line, ": subscribed");
}

#[test]
fn every_mutating_call_is_audited_with_who_asked() {
    let env = Env::new();
    let extra = common::daemon::tcp_api(&[("ci-bot", "ci-secret", "operator")]);
    let d = env.start_daemon(&extra);
    let port = d.tcp_port();
    let s = &d.socket;
    assert_eq!(define_xml(s, &osless("aud").to_xml()).status, 201);
    assert_eq!(curl(s, "POST", "/v1/domains/aud/start", &[]).status, 200);
    assert_eq!(curl(s, "POST", "/v1/domains/aud/start", &[]).status, 409);
    assert_eq!(curl(s, "GET", "/v1/domains/aud", &[]).status, 200);
    let r = curl(
        s,
        "POST",
        "/v1/domains/aud/qmp",
        &["-d", r#"{"execute":"query-status"}"#],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        curl(s, "POST", "/v1/domains/aud/destroy?wait=false", &[]).status,
        202
    );
    let tcp = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer ci-secret",
        ])
        .arg(format!("http://127.0.0.1:{port}/v1/domains/aud/suspend"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tcp.stdout), "409");

    let log = env.config.log_dir.join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let entries = loop {
        let entries: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if entries.len() >= 6 || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let summary: Vec<String> = entries
        .iter()
        .map(|e| {
            let who = match e["actor"]["via"].as_str().unwrap() {
                "http-unix" => format!("uid {}", e["actor"]["uid"]),
                "http-tcp" => format!("token {}", e["actor"]["token"].as_str().unwrap()),
                other => other.to_owned(),
            };
            format!(
                "{} {} {} by {who}",
                e["op"].as_str().unwrap(),
                e["domain"].as_str().unwrap(),
                e["result"].as_str().unwrap()
            )
        })
        .collect();
    // Queries are not audited; the background destroy keeps who asked for it.
    assert_eq!(
        summary,
        [
            "define aud ok by uid 0",
            "start aud ok by uid 0",
            "start aud wrong_state by uid 0",
            "qmp:query-status aud ok by uid 0",
            "destroy aud ok by uid 0",
            "suspend aud wrong_state by token ci-bot",
        ],
        "{entries:#?}"
    );
    assert!(entries[2]["error"].as_str().unwrap().contains("running"));
}
