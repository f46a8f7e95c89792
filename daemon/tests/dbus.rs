//! The D-Bus face of a real novacrond process on a private dbus-daemon, driven with real
//! clients (busctl, gdbus) and watched with `busctl monitor`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::*;
use serde_json::Value;

const MANAGER: &str = "org.novacron1.Manager";
const DOMAIN: &str = "org.novacron1.Domain";

/// The private bus with the calls these tests make on it.
struct Bus {
    _bus: common::bus::PrivateBus,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let bus = common::bus::PrivateBus::start(dir);
        let address = bus.address.clone();
        Bus { _bus: bus, address }
    }

    fn config(&self) -> String {
        format!("[dbus]\naddress = {:?}\n", self.address)
    }

    fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("busctl must be installed (Debian package systemd)")
    }

    /// `busctl call`, which must succeed; its `--json=short` answer.
    fn call(&self, path: &str, iface: &str, method: &str, sig_args: &[&str]) -> Value {
        let mut args = vec!["--json=short", "call", "org.novacron1", path, iface, method];
        args.extend_from_slice(sig_args);
        let out = self.busctl(&args);
        assert!(
            out.status.success(),
            "{method} {sig_args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    fn property(&self, path: &str, name: &str) -> Value {
        let out = self.busctl(&[
            "--json=short",
            "get-property",
            "org.novacron1",
            path,
            DOMAIN,
            name,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"].clone()
    }

    /// `gdbus call`, which must fail; the error text (`GDBus.Error:<name>: <message>`).
    fn gdbus_error(&self, path: &str, method: &str, args: &[&str]) -> String {
        let out = Command::new("gdbus")
            .args([
                "call",
                "--address",
                &self.address,
                "--dest",
                "org.novacron1",
            ])
            .args(["--object-path", path, "--method", method])
            .args(args)
            .output()
            .expect("gdbus must be installed (Debian package libglib2.0-bin)");
        assert!(!out.status.success(), "{method} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn wait_for_name(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.busctl(&[
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.novacron1",
            ]);
            if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
                return;
            }
            assert!(Instant::now() < deadline, "org.novacron1 never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `busctl monitor --json=short` in the background, one JSON message per line in a file.
struct Monitor {
    child: Child,
    file: PathBuf,
}

impl Monitor {
    fn start(bus: &Bus, dir: &Path) -> Monitor {
        let file = dir.join("monitor.jsonl");
        let out = std::fs::File::create(&file).unwrap();
        let child = Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args(["monitor", "--json=short"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Monitor { child, file };
        // Attached once it sees something: ping the daemon until it does.
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.messages().is_empty() {
            assert!(Instant::now() < deadline, "busctl monitor saw nothing");
            bus.call("/org/novacron1", "org.freedesktop.DBus.Peer", "Ping", &[]);
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn signals(&self, path: &str, member: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == "signal" && m["path"] == path && m["member"] == member)
            .map(|m| m["payload"]["data"].clone())
            .collect()
    }

    /// Waits until a `member` signal on `path` satisfies `pred`.
    fn wait_signal(&self, path: &str, member: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.signals(path, member).into_iter().find(|s| pred(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no matching {member} on {path}; saw {:#?}",
                self.signals(path, member)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `PropertiesChanged` on a domain object with `State` = `state`.
    fn wait_state(&self, path: &str, state: &str) {
        self.wait_signal(path, "PropertiesChanged", |d| {
            d[0] == DOMAIN && d[1]["State"]["data"] == state
        });
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `<arg>` of the org.novacron1 interfaces at `path` has a name; returns the XML.
/// Every property of the domain object (one `GetAll`, so from one moment) must equal what
/// HTTP says about the same domain; a property this table does not know fails the test, so a
/// new one cannot be added without being compared.
fn assert_dbus_and_http_agree(bus: &Bus, socket: &Path, path: &str, name: &str) {
    let all = bus.call(
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        &["s", DOMAIN],
    );
    let props = all["data"][0].as_object().expect("a{sv}").clone();
    let http = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
    assert_eq!(http.status, 200, "{}", http.body);
    let h = http.json();
    let expected = |prop: &str| -> Value {
        match prop {
            "Name" => h["name"].clone(),
            // D-Bus says "" where HTTP leaves the UUID out.
            "UUID" => h.get("uuid").cloned().unwrap_or(Value::from("")),
            "State" => h["state"].clone(),
            "VCPUs" => h["config"]["vcpu"]["count"].clone(),
            "MemoryBytes" => {
                Value::from(h["config"]["memory"]["memory_kib"].as_u64().unwrap() * 1024)
            }
            "Persistent" => h["persistent"].clone(),
            "Autostart" => h["autostart"].clone(),
            other => panic!("D-Bus property {other} has no HTTP counterpart in this test"),
        }
    };
    assert_eq!(props.len(), 7, "{props:?}");
    for (prop, value) in &props {
        let want = expected(prop);
        assert!(!want.is_null(), "HTTP lacks {prop}: {}", http.body);
        assert_eq!(
            value["data"], want,
            "{prop}: D-Bus {value} vs HTTP {}",
            http.body
        );
    }
}

fn introspect_xml(bus: &Bus, path: &str) -> String {
    let out = bus.busctl(&[
        "call",
        "org.novacron1",
        path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
    ]);
    assert!(out.status.success());
    let reply: String = String::from_utf8_lossy(&out.stdout).into_owned();
    let xml = reply.replace("\\\"", "\"").replace("\\n", "\n");
    // Ours: the org.novacron1 interfaces (zbus's standard ones are not ours to name).
    let ours = xml
        .split("<interface name=\"")
        .filter(|i| i.starts_with("org.novacron1."));
    for arg in ours.flat_map(|i| i.split("<arg").skip(1)) {
        let arg = &arg[..arg.find('>').unwrap()];
        assert!(
            arg.contains("name=\""),
            "unnamed argument in {path}: <arg{arg}>"
        );
    }
    xml
}

#[test]
fn lifecycle_over_busctl_with_signals_errors_and_introspection() {
    let env = Env::new();
    let bus = Bus::start(env.dir.path());
    let mut d = env.start_daemon(&bus.config());
    bus.wait_for_name();
    let monitor = Monitor::start(&bus, env.dir.path());

    // Define: the object appears (InterfacesAdded), its path comes back.
    let xml = osless("web-1").to_xml();
    let r = bus.call("/org/novacron1", MANAGER, "DefineXML", &["s", &xml]);
    let path = "/org/novacron1/domain/web_2d1";
    assert_eq!(r["data"][0], path);
    let added = monitor.wait_signal("/org/novacron1", "InterfacesAdded", |d| d[0] == path);
    assert_eq!(added[1][DOMAIN]["Name"]["data"], "web-1");
    assert_eq!(added[1][DOMAIN]["State"]["data"], "shutoff");
    let r = bus.call("/org/novacron1", MANAGER, "LookupByName", &["s", "web-1"]);
    assert_eq!(r["data"][0], path);
    let uuid = bus.property(path, "UUID");
    let r = bus.call(
        "/org/novacron1",
        MANAGER,
        "LookupByUUID",
        &["s", uuid.as_str().unwrap()],
    );
    assert_eq!(r["data"][0], path);
    let r = bus.call("/org/novacron1", MANAGER, "ListDomains", &["s", ""]);
    assert_eq!(r["data"][0], serde_json::json!([path]));
    let r = bus.call("/org/novacron1", MANAGER, "ListDomains", &["s", "running"]);
    assert_eq!(r["data"][0], serde_json::json!([]));
    assert_eq!(bus.property(path, "VCPUs"), 1);
    assert_eq!(bus.property(path, "MemoryBytes"), 64 << 20);
    assert_eq!(bus.property(path, "Persistent"), true);
    assert_eq!(bus.property(path, "Autostart"), false);

    // Start: State is running on D-Bus and on HTTP alike.
    assert_dbus_and_http_agree(&bus, &d.socket, path, "web-1");
    let r = curl(
        &d.socket,
        "PUT",
        "/v1/domains/web-1/autostart",
        &["--data", r#"{"enabled": true}"#],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bus.property(path, "Autostart"), true);
    bus.call(path, DOMAIN, "Start", &[]);
    assert_eq!(bus.property(path, "State"), "running");
    let http = curl(&d.socket, "GET", "/v1/domains/web-1", &[]);
    assert_eq!(http.json()["state"], "running");
    assert_eq!(http.json()["uuid"], uuid);
    assert_dbus_and_http_agree(&bus, &d.socket, path, "web-1");
    monitor.wait_state(path, "running");
    monitor.wait_signal(path, "StateChanged", |d| {
        d[0] == "starting" && d[1] == "running" && d[2] == "booted"
    });

    bus.call(path, DOMAIN, "Suspend", &[]);
    assert_eq!(bus.property(path, "State"), "paused");
    assert_dbus_and_http_agree(&bus, &d.socket, path, "web-1");
    assert_eq!(
        curl(&d.socket, "GET", "/v1/domains/web-1", &[]).json()["state"],
        "paused"
    );
    monitor.wait_state(path, "paused");
    bus.call(path, DOMAIN, "Resume", &[]);
    monitor.wait_signal(path, "StateChanged", |d| {
        d[1] == "running" && d[2] == "resumed"
    });

    // Stop: the OS-less guest ignores the power button, so force after a second.
    bus.call(path, DOMAIN, "Shutdown", &["tb", "1", "true"]);
    assert_eq!(bus.property(path, "State"), "shutoff");
    assert_eq!(
        curl(&d.socket, "GET", "/v1/domains/web-1", &[]).json()["state"],
        "shutoff"
    );
    monitor.wait_state(path, "shutoff");
    assert_dbus_and_http_agree(&bus, &d.socket, path, "web-1");
    let got = bus.call(path, DOMAIN, "GetXML", &[]);
    assert!(got["data"][0]
        .as_str()
        .unwrap()
        .contains("<name>web-1</name>"));

    // Errors: the service's code as org.novacron1.Error.<Code>, with its message.
    let e = bus.gdbus_error(
        "/org/novacron1",
        &format!("{MANAGER}.LookupByName"),
        &["nope"],
    );
    assert!(
        e.contains("org.novacron1.Error.NotFound: domain 'nope' not found"),
        "{e}"
    );
    let bad = "<domain type='qemu'>\n  <name>bad</name>\n  <memory unit='MiB'>64</memory>\n  <bogus/>\n</domain>";
    let e = bus.gdbus_error("/org/novacron1", &format!("{MANAGER}.DefineXML"), &[bad]);
    assert!(e.contains("org.novacron1.Error.InvalidConfig"), "{e}");
    assert!(e.contains("bogus") && e.contains("line 4"), "{e}");
    let e = bus.gdbus_error(path, &format!("{DOMAIN}.Resume"), &[]);
    assert!(e.contains("org.novacron1.Error.WrongState"), "{e}");
    let e = bus.gdbus_error(
        "/org/novacron1",
        &format!("{MANAGER}.ListDomains"),
        &["sleeping"],
    );
    assert!(e.contains("org.freedesktop.DBus.Error.InvalidArgs"), "{e}");

    // Introspection: every member, every argument named.
    let xml = introspect_xml(&bus, "/org/novacron1");
    for member in [
        "ListDomains",
        "LookupByName",
        "LookupByUUID",
        "DefineXML",
        "DefineJSON",
        "CreateXML",
        "CreateJSON",
        "GetHostInfo",
        "Version",
        "org.freedesktop.DBus.ObjectManager",
    ] {
        assert!(
            xml.contains(&format!("name=\"{member}\"")),
            "manager lacks {member}"
        );
    }
    let xml = introspect_xml(&bus, path);
    for member in [
        "Start",
        "Shutdown",
        "Destroy",
        "Suspend",
        "Resume",
        "Reboot",
        "Reset",
        "Undefine",
        "SetAutostart",
        "GetXML",
        "Name",
        "UUID",
        "State",
        "VCPUs",
        "MemoryBytes",
        "Persistent",
        "Autostart",
        "StateChanged",
        "GuestReset",
        "GuestPanicked",
        "Reconnected",
        "ReconnectFailed",
        "timeout_secs",
        "force",
    ] {
        assert!(
            xml.contains(&format!("name=\"{member}\"")),
            "domain lacks {member}"
        );
    }
    let host = bus.call("/org/novacron1", MANAGER, "GetHostInfo", &[]);
    assert_eq!(host["data"][0]["domains_total"]["data"], 1);

    // A restarted daemon has the object before it takes the name.
    let _ = d.child.kill();
    let _ = d.child.wait();
    d = env.start_daemon(&bus.config());
    bus.wait_for_name();
    assert_eq!(bus.property(path, "Name"), "web-1");

    // Undefine: the object goes (InterfacesRemoved).
    bus.call(path, DOMAIN, "Undefine", &[]);
    monitor.wait_signal("/org/novacron1", "InterfacesRemoved", |d| d[0] == path);
    let e = bus.gdbus_error(
        "/org/novacron1",
        &format!("{MANAGER}.LookupByName"),
        &["web-1"],
    );
    assert!(e.contains("org.novacron1.Error.NotFound"), "{e}");
    drop(d);

    // Every mutation over D-Bus is in the audit log, with the caller's bus name and uid.
    let audit = std::fs::read_to_string(env.config.log_dir.join("audit.log")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let via_dbus: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["actor"]["via"] == "dbus")
        .collect();
    for op in [
        "define", "start", "suspend", "resume", "shutdown", "undefine",
    ] {
        let e = via_dbus
            .iter()
            .find(|e| e["op"] == op)
            .unwrap_or_else(|| panic!("no D-Bus {op} in the audit log:\n{audit}"));
        assert!(
            e["actor"]["bus_name"].as_str().unwrap().starts_with(":1."),
            "{e}"
        );
        assert_eq!(e["actor"]["uid"], 0, "{e}");
    }
}

/// A stand-in polkit authority on the private bus: refuses everything, remembers subjects.
struct FakeAuthority {
    subjects: Arc<Mutex<Vec<(String, String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.PolicyKit1.Authority")]
impl FakeAuthority {
    #[allow(clippy::type_complexity)]
    fn check_authorization(
        &self,
        subject: (String, HashMap<String, zbus::zvariant::OwnedValue>),
        action_id: String,
        _details: HashMap<String, String>,
        _flags: u32,
        _cancellation_id: String,
    ) -> ((bool, bool, HashMap<String, String>),) {
        let name = subject
            .1
            .get("name")
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default();
        self.subjects
            .lock()
            .unwrap()
            .push((subject.0, name, action_id));
        ((false, false, HashMap::new()),)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_refuses_mutations_by_bus_name_when_it_runs() {
    let env = Env::new();
    let bus = Bus::start(env.dir.path());
    let subjects = Arc::new(Mutex::new(Vec::new()));
    let _polkit = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(
            "/org/freedesktop/PolicyKit1/Authority",
            FakeAuthority {
                subjects: subjects.clone(),
            },
        )
        .unwrap()
        .name("org.freedesktop.PolicyKit1")
        .unwrap()
        .build()
        .await
        .unwrap();
    let _d = env.start_daemon(&bus.config());
    let bus = tokio::task::spawn_blocking(move || {
        bus.wait_for_name();
        let e = bus.gdbus_error(
            "/org/novacron1",
            &format!("{MANAGER}.DefineXML"),
            &[&osless("vm1").to_xml()],
        );
        assert!(e.contains("org.freedesktop.DBus.Error.AccessDenied"), "{e}");
        // Queries need no authorisation.
        let r = bus.call("/org/novacron1", MANAGER, "ListDomains", &["s", ""]);
        assert_eq!(r["data"][0], serde_json::json!([]));
        bus
    })
    .await
    .unwrap();
    let seen = subjects.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "system-bus-name");
    assert!(seen[0].1.starts_with(':'), "a unique bus name: {seen:?}");
    assert_eq!(seen[0].2, "org.novacron1.manage");
    // The denial is in the audit log: who (bus name, uid), what (member, object), how.
    let audit = std::fs::read_to_string(env.config.log_dir.join("audit.log")).unwrap_or_default();
    let denied: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["op"] == "refused")
        .collect();
    assert_eq!(denied.len(), 1, "{audit}");
    let e = &denied[0];
    assert_eq!(e["result"], "access_denied", "{e}");
    assert_eq!(e["actor"]["via"], "dbus", "{e}");
    assert_eq!(
        e["actor"]["bus_name"].as_str(),
        Some(seen[0].1.as_str()),
        "{e}"
    );
    assert_eq!(e["actor"]["uid"], 0, "{e}");
    assert_eq!(e["asked"]["interface"], MANAGER, "{e}");
    assert_eq!(e["asked"]["member"], "DefineXML", "{e}");
    assert_eq!(e["asked"]["object"], "/org/novacron1", "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("not authorised"),
        "{e}"
    );
    drop(bus);
}
