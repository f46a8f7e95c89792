//! The guest agent through a real novacrond: HTTP (curl) and novactl with virsh's names, on
//! the test guest under TCG; `shutdown --mode agent` powers it off through the agent.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::Env;
use novacron_tests::{test_guest_domain_xml_with, AGENT_CHANNEL_XML};

fn novactl(socket: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("NOVACRON_TOKEN")
        .output()
        .expect("novactl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(socket: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = novactl(socket, args);
    assert_eq!(code, 0, "novactl {args:?}: {err}");
    out
}

#[test]
fn agent_routes_and_novactl_commands() {
    let env = Env::new();
    let daemon = env.start_daemon("");
    let sock = daemon.socket.as_path();
    let xml = test_guest_domain_xml_with("gaf1", "", AGENT_CHANNEL_XML).expect("guest");
    let file = env.dir.path().join("gaf1.xml");
    std::fs::write(&file, xml).unwrap();
    ok(sock, &["define", "-f", file.to_str().unwrap()]);

    // Not running: refused by state, naming the domain.
    let r = curl(sock, "POST", "/v1/domains/gaf1/agent/ping", &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    ok(sock, &["start", "gaf1"]);

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = curl(sock, "GET", "/v1/domains/gaf1/agent", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["channel"], true, "{v}");
        if v["connected"] == true && v["info"]["version"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "agent never connected: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let r = curl(sock, "POST", "/v1/domains/gaf1/agent/ping", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["round_trip_ms"].as_f64().is_some());
    let r = curl(sock, "GET", "/v1/domains/gaf1/agent/interfaces", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "lo"));
    // Bad input is refused by name and changes nothing.
    let r = curl(
        sock,
        "POST",
        "/v1/domains/gaf1/agent/ping?timeout_secs=999",
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("timeout_secs"), "{}", r.body);
    let r = curl(
        sock,
        "POST",
        "/v1/domains/gaf1/agent/command",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"execute":"bad name"}"#,
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);

    let info = ok(sock, &["guestinfo", "gaf1"]);
    assert!(info.contains("Agent connected: yes"), "{info}");
    assert!(ok(sock, &["guest-agent-ping", "gaf1"]).contains("answered in"));
    // The initramfs has no block-device file system: nothing to freeze, and nothing stays frozen.
    assert_eq!(
        ok(sock, &["domfsfreeze", "gaf1"]),
        "Froze 0 filesystem(s)\n"
    );
    assert_eq!(ok(sock, &["domfsthaw", "gaf1"]), "Thawed 0 filesystem(s)\n");
    let ifaddr = ok(sock, &["domifaddr", "gaf1", "--source", "agent"]);
    assert!(ifaddr.starts_with("NAME"), "{ifaddr}");
    assert!(ifaddr.contains("lo"), "{ifaddr}");
    let raw = ok(
        sock,
        &[
            "qemu-agent-command",
            "gaf1",
            r#"{"execute":"guest-fsfreeze-status"}"#,
        ],
    );
    assert!(raw.contains("thawed"), "{raw}");

    ok(
        sock,
        &["shutdown", "gaf1", "--mode", "agent", "--timeout", "60"],
    );
    let r = curl(sock, "GET", "/v1/domains/gaf1", &[]);
    assert_eq!(r.json()["state"], "shutoff", "{}", r.body);
    let serial = std::fs::read_to_string(env.serial_log("gaf1")).unwrap_or_default();
    assert!(
        serial.contains(novacron_tests::AGENT_SHUTDOWN_MARKER),
        "the guest was not shut down by its agent:\n{serial}"
    );
}
