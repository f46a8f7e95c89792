//! Typed errors end to end on a real novacrond: a not-found says what was not found, invalid
//! definitions reach HTTP (curl), novactl and D-Bus (busctl) clients as one entry per field,
//! and a QEMU that stops answering its monitor is a `timeout`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, Reply};
use common::openapi::Spec;
use common::*;
use serde_json::{json, Value};

/// A JSON definition with two bad fields, and their paths in the model.
fn two_bad_fields() -> String {
    let mut v = serde_json::to_value(osless("bad")).unwrap();
    v["name"] = json!("bad/name");
    v["vcpu"]["count"] = json!(0);
    v.to_string()
}
const BAD_PATHS: [&str; 2] = ["name", "vcpu.count"];

/// XML with an element the reader refuses on line 4.
const BAD_XML: &str =
    "<domain type='qemu'>\n  <name>bad</name>\n  <memory unit='MiB'>64</memory>\n  <bogus/>\n</domain>";

fn paths(details: &Value) -> Vec<&str> {
    details
        .as_array()
        .unwrap_or_else(|| panic!("details is not a list: {details}"))
        .iter()
        .map(|d| d["path"].as_str().expect("path"))
        .collect()
}

fn post(socket: &Path, path: &str, media: &str, body: &str) -> Reply {
    let header = format!("Content-Type: {media}");
    curl(
        socket,
        "POST",
        path,
        &["-H", &header, "--data-binary", body],
    )
}

#[test]
fn http_and_novactl_list_every_invalid_field() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let spec = Spec::load();

    let r = post(s, "/v1/domains", "application/json", &two_bad_fields());
    assert_eq!(r.status, 400, "{}", r.body);
    spec.check_response("/v1/domains", "POST", 400, &r.body);
    let body = r.json();
    let e = &body["error"];
    assert_eq!(e["code"], "invalid_config", "{}", r.body);
    assert_eq!(paths(&e["details"]), BAD_PATHS, "{}", r.body);
    assert_eq!(e["details"][1]["message"], "value 0 is outside 1..=4096");
    // The message still reads on its own for clients that ignore details.
    let message = e["message"].as_str().unwrap();
    assert!(BAD_PATHS.iter().all(|p| message.contains(p)), "{message}");

    // The XML reader's refusal names the element and its line.
    let r = post(s, "/v1/domains", "application/xml", BAD_XML);
    assert_eq!(r.status, 400, "{}", r.body);
    spec.check_response("/v1/domains", "POST", 400, &r.body);
    let detail = &r.json()["error"]["details"][0];
    assert!(
        detail["path"].as_str().unwrap().ends_with("bogus"),
        "{detail}"
    );
    assert_eq!(detail["line"], 4, "{detail}");

    // novactl prints one line per field, and nothing was defined.
    let file = env.dir.path().join("bad.json");
    std::fs::write(&file, two_bad_fields()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(s)
        .args(["define", "-f"])
        .arg(&file)
        .env_remove("NOVACRON_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let name_problem = e["details"][0]["message"].as_str().unwrap();
    assert_eq!(
        stderr,
        format!(
            "novactl: invalid configuration:\n  name: {name_problem}\n  \
             vcpu.count: value 0 is outside 1..=4096\n"
        )
    );
    let r = curl(s, "GET", "/v1/domains", &[]);
    assert_eq!(r.json().as_array().map(Vec::len), Some(0), "{}", r.body);
}

#[test]
fn not_found_says_what_was_not_found() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let spec = Spec::load();
    for (path, template, message) in [
        (
            "/v1/domains/nope",
            "/v1/domains/{name}",
            "domain 'nope' not found",
        ),
        (
            "/v1/hosts/vc9",
            "/v1/hosts/{host}",
            "remote host 'vc9' not found",
        ),
        (
            "/v1/operations/op-nope",
            "/v1/operations/{id}",
            "operation 'op-nope' not found",
        ),
    ] {
        let r = curl(s, "GET", path, &[]);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        spec.check_response(template, "GET", 404, &r.body);
        assert_eq!(r.error_code(), "not_found");
        assert_eq!(r.json()["error"]["message"], message, "{path}");
    }
}

/// A real QEMU frozen with SIGSTOP: its monitor accepts the command and never answers, so
/// the daemon's QMP timeout (10 s for actions) fires; the client gets `timeout` (504)
/// naming the domain, not `internal`.
#[test]
fn a_qemu_that_does_not_answer_is_a_timeout() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let xml = osless("frozen").to_xml();
    let r = post(s, "/v1/domains", "application/xml", &xml);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(s, "POST", "/v1/domains/frozen/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let pid = recorded_pid(&env, "frozen");
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let r = curl(s, "POST", "/v1/domains/frozen/suspend", &[]);
    signal("-CONT");
    assert_eq!(r.status, 504, "{}", r.body);
    Spec::load().check_response("/v1/domains/{name}/suspend", "POST", 504, &r.body);
    assert_eq!(r.error_code(), "timeout", "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("suspend of domain 'frozen': QEMU did not answer within"),
        "{message}"
    );
    let r = curl(s, "POST", "/v1/domains/frozen/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `busctl monitor --json=short` in the background: error replies keep every argument.
struct Monitor {
    child: Child,
    file: PathBuf,
}

impl Monitor {
    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The D-Bus error's one string argument ends with the fields as a JSON line
/// `{"details": [...]}` (one argument, so GLib clients still show the message).
#[test]
fn dbus_errors_carry_the_fields() {
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let address = bus.address.clone();
    let _d = env.start_daemon(&format!("[dbus]\naddress = {address:?}\n"));
    let busctl = |args: &[&str]| {
        Command::new("busctl")
            .arg(format!("--address={address}"))
            .args(args)
            .output()
            .expect("busctl")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !busctl(&["status", "org.novacron1"]).status.success() {
        assert!(Instant::now() < deadline, "org.novacron1 never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let file = env.dir.path().join("monitor.jsonl");
    let monitor = Monitor {
        child: Command::new("busctl")
            .arg(format!("--address={address}"))
            .args(["monitor", "--json=short"])
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        file,
    };
    let call = |method: &str, arg: &str| {
        busctl(&[
            "call",
            "org.novacron1",
            "/org/novacron1",
            "org.novacron1.Manager",
            method,
            "s",
            arg,
        ])
    };
    // The monitor attaches asynchronously: ping until it has seen a call.
    while monitor.messages().is_empty() {
        assert!(Instant::now() < deadline, "busctl monitor saw nothing");
        call("ListDomains", "");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = call("DefineJSON", &two_bad_fields());
    assert!(!out.status.success());
    // What busctl shows: the message, every field in its text.
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(BAD_PATHS.iter().all(|p| shown.contains(p)), "{shown}");
    let out = call("DefineXML", BAD_XML);
    assert!(!out.status.success());

    let errors = |name: &str| loop {
        let found: Vec<Value> = monitor
            .messages()
            .into_iter()
            .filter(|m| m["type"] == "error" && m["error_name"] == name)
            .collect();
        if found.len() >= 2 {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {name} replies seen: {:?}",
            monitor.messages()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let replies = errors("org.novacron1.Error.InvalidConfig");
    let details = |reply: &Value| -> Value {
        assert_eq!(reply["payload"]["type"], "s", "{reply}");
        let text = reply["payload"]["data"][0].as_str().unwrap();
        let (message, tail) = text.rsplit_once('\n').unwrap_or_else(|| panic!("{text}"));
        assert!(message.starts_with("invalid configuration: "), "{text}");
        let tail: Value = serde_json::from_str(tail).unwrap_or_else(|e| panic!("{e}: {text}"));
        tail["details"].clone()
    };
    assert_eq!(paths(&details(&replies[0])), BAD_PATHS, "{}", replies[0]);
    let xml = details(&replies[1]);
    assert!(
        xml.as_array().map(Vec::len) == Some(1)
            && xml[0]["path"].as_str().unwrap().ends_with("bogus"),
        "{xml}"
    );
    assert_eq!(xml[0]["line"], 4, "{xml}");

    // Errors without fields stay one string, as before.
    let out = busctl(&[
        "call",
        "org.novacron1",
        "/org/novacron1",
        "org.novacron1.Manager",
        "LookupByName",
        "s",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("domain 'nope' not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
