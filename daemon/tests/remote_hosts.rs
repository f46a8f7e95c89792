//! Remote vendor hosts through a real novacrond: configured and API-registered hosts, their
//! domains over HTTP (curl), novactl --host and D-Bus (busctl) agreeing, events, the circuit
//! breaker with a stale inventory while the vendor hangs, and nothing secret in any answer.
//!
//! The vendor here is the XAPI test peer (`tests/peers/xapi`, built from the published XenAPI
//! model; not a real XenServer): the daemon-side behaviour is the same for every adapter, and
//! each adapter's own tests run against its vendor's peer in `remote-drivers/tests`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bus::PrivateBus;
use common::daemon::curl;
use common::{audited, Env};
use novacron_tests::peers::xapi;
use serde_json::Value;

fn host_toml(name: &str, peer: &xapi::Peer, cred: &std::path::Path, extra: &str) -> String {
    format!(
        "[[remote.hosts]]\nname = \"{name}\"\ndriver = \"xapi\"\nurl = \"{}\"\ncredentials_file = {:?}\nca_file = {:?}\n{extra}",
        peer.url, cred, peer.ca_file
    )
}

fn write_cred(env: &Env, file: &str, peer: &xapi::Peer) -> std::path::PathBuf {
    let path = env.dir.path().join(file);
    std::fs::write(
        &path,
        format!("user = {}\npassword = {}\n", peer.user, peer.password),
    )
    .unwrap();
    path
}

fn state_of(inventory: &Value, name: &str) -> String {
    inventory["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {inventory}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn novactl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("novactl")
}

/// Every file under `dir`, with its bytes, for "changes nothing" checks.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn remote_hosts_through_http_cli_and_dbus() {
    let peer = xapi::start(12).expect("XAPI test peer");
    let env = Env::new();
    let cred = write_cred(&env, "x1.cred", &peer);
    let bus = PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!(
        "[dbus]\naddress = {:?}\n[remote]\npoll_secs = 1\n{}",
        bus.address,
        host_toml("x1", &peer, &cred, "")
    ));
    let spec = common::openapi::Spec::load();

    // The host, and nothing secret about it.
    let hosts = curl(&d.socket, "GET", "/v1/hosts", &[]);
    assert_eq!(hosts.status, 200, "{}", hosts.body);
    spec.check_response("/v1/hosts", "get", 200, &hosts.body);
    assert!(!hosts.body.contains(&peer.password), "{}", hosts.body);
    let h = &hosts.json()["hosts"][0];
    assert_eq!(
        (h["name"].as_str(), h["driver"].as_str()),
        (Some("x1"), Some("xapi"))
    );
    assert_eq!(h["breaker"], "closed");
    assert_eq!(h["origin"], "config");

    // Its domains: templates and the control domain are not guests.
    let list = curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]);
    assert_eq!(
        list.status,
        200,
        "{}\n{}",
        list.body,
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    spec.check_response("/v1/hosts/{host}/domains", "get", 200, &list.body);
    let inventory = list.json();
    assert_eq!(
        inventory["domains"].as_array().unwrap().len(),
        12,
        "{inventory}"
    );
    assert!(inventory["stale"].is_null());
    let mut events = Command::new("curl")
        .args(["-sN", "--max-time", "60", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/v1/events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = {
        let out = events.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    // Subscribed before anything happens (the stream's first line says so).
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(20)).as_deref(),
        Ok(": subscribed")
    );

    // A lifecycle round trip through novactl --host, seen the same by HTTP and D-Bus.
    let off = inventory["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["state"] == "shutoff")
        .expect("a halted VM")["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = novactl(&d.socket, &["--host", "x1", "start", &off]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]).json();
    assert_eq!(state_of(&after, &off), "running");
    let dbus = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "--json=short",
            "call",
            "org.novacron1",
            "/org/novacron1/host/x1",
            "org.novacron1.RemoteHost",
            "DomainState",
            "s",
            &off,
        ])
        .output()
        .unwrap();
    assert!(
        dbus.status.success(),
        "{}",
        String::from_utf8_lossy(&dbus.stderr)
    );
    assert!(String::from_utf8_lossy(&dbus.stdout).contains("\"running\""));

    // Wrong state keeps the vendor's fault; unknown names and hosts are 404.
    let again = curl(
        &d.socket,
        "POST",
        &format!("/v1/hosts/x1/domains/{off}/start"),
        &[],
    );
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "wrong_state"),
        "{}",
        again.body
    );
    assert!(again.body.contains("VM_BAD_POWER_STATE"), "{}", again.body);
    let missing = curl(&d.socket, "GET", "/v1/hosts/x1/domains/no-such-vm", &[]);
    assert_eq!(missing.status, 404, "{}", missing.body);
    let nohost = curl(&d.socket, "GET", "/v1/hosts/nope/domains", &[]);
    assert_eq!(nohost.status, 404, "{}", nohost.body);

    let out = novactl(&d.socket, &["--host", "x1", "destroy", &off]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = novactl(&d.socket, &["--host", "x1", "list", "--all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&off) && l.contains("shutoff")),
        "{text}"
    );
    let out = novactl(&d.socket, &["--host", "x1", "dumpxml", &off]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available with --host"));

    // Each vendor call is audited with who asked and how it ended, the refusal included.
    let remote_ops = audited(&env, |op| op.starts_with("remote "));
    let expect = |op: &str, result: &str| {
        (
            op.to_owned(),
            off.clone(),
            result.to_owned(),
            "http-unix".to_owned(),
        )
    };
    assert_eq!(
        remote_ops,
        [
            expect("remote start on x1", "ok"),
            expect("remote start on x1", "wrong_state"),
            expect("remote destroy on x1", "ok"),
        ]
    );

    // The changes came as events, in order: read the stream until both are there (the
    // deadline only catches their absence).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = String::new();
    let mut remote: Vec<Value> = Vec::new();
    while remote.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("both remote events not streamed:\n{stream}"));
        stream.push_str(&line);
        stream.push('\n');
        if let Some(e) = line
            .strip_prefix("data: ")
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
        {
            if e["event"] == "remote_state_changed" && e["domain"] == off.as_str() {
                remote.push(e);
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(events.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = events.wait();
    let moves: Vec<(String, String)> = remote
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").into(),
                e["to"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("shutoff".into(), "running".into()),
            ("running".into(), "shutoff".into())
        ],
        "{stream}"
    );
    for e in &remote {
        spec.check_value("DomainEvent", e);
        assert_eq!(e["host"], "x1");
    }

    // Discovery finds the peer's API and registers nothing.
    let found = curl(
        &d.socket,
        "POST",
        "/v1/hosts/discover",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"addresses":["{}"],"tls_verify":false}}"#, peer.url),
        ],
    );
    assert_eq!(found.status, 200, "{}", found.body);
    spec.check_response("/v1/hosts/discover", "post", 200, &found.body);
    assert!(
        found.json()[0]["found"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["driver"] == "xapi"),
        "{}",
        found.body
    );
    assert_eq!(
        curl(&d.socket, "GET", "/v1/hosts", &[]).json()["hosts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn registration_is_checked_stored_0600_and_survives_a_restart() {
    let peer = xapi::start(3).expect("XAPI test peer");
    let env = Env::new();
    // A request-named CA is read only from <state_dir>/pki.
    let pki = env.config.state_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca_file = pki.join("xapi-ca.pem");
    std::fs::copy(&peer.ca_file, &ca_file).unwrap();
    let d = env.start_daemon("");
    let body_ca = |name: &str, driver: &str, password: &str, ca: &str| {
        format!(
            r#"{{"name":"{name}","driver":"{driver}","url":"{}","ca_file":{ca:?},"credentials":{{"user":"{}","password":"{password}"}}}}"#,
            peer.url, peer.user
        )
    };
    let body = |name: &str, driver: &str, password: &str| {
        body_ca(name, driver, password, &ca_file.display().to_string())
    };
    let post = |b: &str| {
        curl(
            &d.socket,
            "POST",
            "/v1/hosts",
            &["-H", "Content-Type: application/json", "-d", b],
        )
    };

    // Bad input: named, and nothing is written.
    let before = snapshot(&env.config.state_dir);
    for (bad, expect) in [
        (body("x2", "vmware", &peer.password), "driver"),
        (body("../x", "xapi", &peer.password), "name"),
        (body("discover", "xapi", &peer.password), "name"),
        (r#"{"name":"x2"}"#.to_owned(), "missing field"),
        (
            body_ca("x2", "xapi", &peer.password, "/dev/zero"),
            "ca_file: /dev/zero: is outside",
        ),
        (
            body_ca(
                "x2",
                "xapi",
                &peer.password,
                &peer.ca_file.display().to_string(),
            ),
            "is outside",
        ),
    ] {
        let r = post(&bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.contains(expect), "{bad}: {}", r.body);
        assert!(!r.body.contains(&peer.password), "{}", r.body);
    }
    assert_eq!(before, snapshot(&env.config.state_dir));

    // A good one: live at once, credentials 0600, no secret in the answer.
    let r = post(&body("x2", "xapi", &peer.password));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.contains(&peer.password));
    assert_eq!(post(&body("x2", "xapi", &peer.password)).status, 409);
    let cred = env.config.state_dir.join("hosts/x2.cred");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = curl(&d.socket, "GET", "/v1/hosts/x2/domains", &[]);
    assert_eq!(
        list.json()["domains"].as_array().unwrap().len(),
        3,
        "{}",
        list.body
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        !log.contains(&peer.password),
        "the daemon logged a password"
    );
    drop(d);

    // Restarted: still there; removed: gone with its credentials.
    let d = env.start_daemon("");
    let h = curl(&d.socket, "GET", "/v1/hosts/x2", &[]);
    assert_eq!(
        (h.status, h.json()["origin"].as_str()),
        (200, Some("api")),
        "{}",
        h.body
    );
    assert_eq!(curl(&d.socket, "DELETE", "/v1/hosts/x2", &[]).status, 204);
    assert!(!cred.exists());
    assert_eq!(curl(&d.socket, "GET", "/v1/hosts/x2", &[]).status, 404);
    // Registering and removing are audited under the host's name, with who asked.
    let host_ops = audited(&env, |op| op.ends_with(" host"));
    let entry = |op: &str| {
        (
            op.to_owned(),
            "x2".to_owned(),
            "ok".to_owned(),
            "http-unix".to_owned(),
        )
    };
    // Refused registrations are audited too (issue 13 §5), each with its error code.
    let refused = |name: &str, code: &str| {
        (
            "register host".to_owned(),
            name.to_owned(),
            code.to_owned(),
            "http-unix".to_owned(),
        )
    };
    assert_eq!(
        host_ops,
        [
            refused("../x", "invalid_config"),
            refused("discover", "invalid_config"),
            refused("x2", "invalid_config"),
            refused("x2", "invalid_config"),
            entry("register host"),
            refused("x2", "already_exists"),
            entry("unregister host"),
        ]
    );
}

#[test]
fn a_hanging_vendor_turns_read_only_with_a_stale_inventory_and_local_calls_stay_fast() {
    let peer = xapi::start(4).expect("XAPI test peer");
    let healthy = xapi::start(2).expect("a second XAPI test peer");
    let env = Env::new();
    let cred = write_cred(&env, "x1.cred", &peer);
    let cred2 = write_cred(&env, "x2.cred", &healthy);
    // Timeouts long enough that calls made while a vendor read hangs finish before it (an
    // ordering check), and an open period long enough to check the open breaker in.
    let d = env.start_daemon(&format!(
        "[remote]\npoll_secs = 0\n{}{}",
        host_toml(
            "x1",
            &peer,
            &cred,
            "request_timeout_secs = 3\nread_timeout_secs = 3\noperation_timeout_secs = 3\nbreaker_failures = 2\nbreaker_open_secs = 5\n"
        ),
        host_toml("x2", &healthy, &cred2, "")
    ));
    let fresh = curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]).json();
    assert!(fresh["stale"].is_null());
    let paused = novacron_tests::peers::pause(peer.pid).unwrap();

    // A read of the hung vendor is in flight; meanwhile local calls and the healthy host answer
    // (they finish while it still waits, so none queued behind it).
    let hanging = {
        let socket = d.socket.clone();
        std::thread::spawn(move || curl(&socket, "GET", "/v1/hosts/x1/domains", &[]))
    };
    let r = curl(&d.socket, "GET", "/v1/hosts/x2/domains", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["stale"].is_null(), "{}", r.body);
    assert_eq!(r.json()["domains"].as_array().unwrap().len(), 2);
    assert_eq!(curl(&d.socket, "GET", "/v1/domains", &[]).status, 200);
    assert_eq!(curl(&d.socket, "GET", "/v1/hosts", &[]).status, 200);
    assert!(
        !hanging.is_finished(),
        "the hung vendor's read ended before the other calls: they may have waited on it"
    );

    // Two timed-out reads open the breaker; both already answer from the last inventory.
    let mut reads = vec![hanging.join().unwrap()];
    reads.push(curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]));
    for r in reads {
        assert_eq!(r.status, 200, "{}", r.body);
        let stale = &r.json()["stale"];
        assert!(stale["age_secs"].as_f64().is_some(), "{}", r.body);
        assert_eq!(r.json()["domains"], fresh["domains"]);
    }
    let h = curl(&d.socket, "GET", "/v1/hosts/x1", &[]).json();
    assert_eq!(
        (h["breaker"].as_str(), h["read_only"].as_bool()),
        (Some("open"), Some(true)),
        "{h}"
    );
    // Open: the stale inventory comes without asking the vendor (the reason is the breaker's,
    // not a timeout), and a mutation is refused before reaching it.
    let r = curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]);
    let stale = &r.json()["stale"];
    assert!(stale["age_secs"].as_f64().is_some(), "{}", r.body);
    assert!(
        stale["reason"]
            .as_str()
            .is_some_and(|s| s.contains("circuit breaker open")),
        "{}",
        r.body
    );
    let r = curl(&d.socket, "POST", "/v1/hosts/x1/domains/vm-000/start", &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "unavailable"),
        "{}",
        r.body
    );
    assert!(r.body.contains("read-only"), "{}", r.body);

    // The vendor comes back: after the open period, a probe closes the breaker.
    paused.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(&d.socket, "GET", "/v1/hosts/x1/domains", &[]).json();
        if r["stale"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        curl(&d.socket, "GET", "/v1/hosts/x1", &[]).json()["breaker"],
        "closed"
    );
}
