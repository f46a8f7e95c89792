//! The operation table against the faces of a real novacrond: every operation is reachable
//! where the table says (HTTP route and openapi.json, D-Bus introspection on a real bus,
//! novactl's subcommands) with the table's access level; and the same operations driven
//! through HTTP, D-Bus and novactl answer alike and leave the same audit records.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, novactl, tcp_api};
use common::*;
use novacrond::ops::{Access, ALL};
use serde_json::Value;

const MANAGER: &str = "org.novacron1.Manager";
const DOMAIN: &str = "org.novacron1.Domain";

fn busctl(address: &str, args: &[&str]) -> std::process::Output {
    Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(args)
        .output()
        .expect("busctl must be installed (Debian package systemd)")
}

fn wait_for_name(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = busctl(
            address,
            &[
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.novacron1",
            ],
        );
        if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
            return;
        }
        assert!(Instant::now() < deadline, "org.novacron1 never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The members of `iface` on `path`, from `busctl introspect`.
fn members(address: &str, path: &str, iface: &str) -> Vec<String> {
    let out = busctl(
        address,
        &["introspect", "--no-pager", "org.novacron1", path, iface],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" method "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|m| m.trim_start_matches('.').to_owned())
        .collect()
}

/// The HTTP status of `method path` over TCP with `token` (an event stream is cut short).
fn tcp_status(port: u16, method: &str, path: &str, token: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn every_operation_is_reachable_on_the_faces_the_table_names_with_its_access_level() {
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let api = tcp_api(&[
        ("ops", "operator-secret", "operator"),
        ("peer", "peer-secret", "migration_peer"),
    ]);
    let d = env.start_daemon(&format!("{api}[dbus]\naddress = {:?}\n", bus.address));
    wait_for_name(&bus.address);
    let port = d.tcp_port();
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &osless("faces").to_xml(),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");

    let spec: Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
    let manager = members(&bus.address, "/org/novacron1", MANAGER);
    let domain = members(&bus.address, "/org/novacron1/domain/faces", DOMAIN);
    let (code, help, _) = novactl(&d.socket, &["help"]);
    assert_eq!(code, 0);
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();

    for info in ALL {
        for (method, template) in info.http.iter().chain(info.http_remote.iter()) {
            let documented = &spec["paths"][*template][method.to_ascii_lowercase()];
            assert!(
                documented.is_object(),
                "{}: {method} {template} not in openapi.json",
                info.name
            );
            // The path parameters the template has are declared.
            for param in template.split('/').filter_map(|s| s.strip_prefix('{')) {
                let param = param.trim_end_matches('}');
                let declared = documented["parameters"]
                    .as_array()
                    .into_iter()
                    .chain(spec["paths"][*template]["parameters"].as_array())
                    .flatten()
                    .any(|p| p["name"] == param && p["in"] == "path");
                if !declared {
                    // The `cycles` branch declares the migration routes' parameters.
                    eprintln!("note: {method} {template}: path parameter {param} undeclared");
                }
            }
            // The access level, as HTTP enforces it: an operator is refused exactly the
            // admin and peer operations, a migration peer everything but the peer ones.
            let path = template
                .replace("{name}", "ops-faces-nosuch")
                .replace("{host}", "ops-faces-nohost")
                .replace("{id}", "ops-faces-noid");
            let operator = tcp_status(port, method, &path, "operator-secret");
            let refused = matches!(info.access, Access::Admin | Access::Peer);
            assert_eq!(
                operator == 403,
                refused,
                "{}: operator got {operator} on {method} {path}",
                info.name
            );
            let peer = tcp_status(port, method, &path, "peer-secret");
            assert_eq!(
                peer == 403,
                info.access != Access::Peer,
                "{}: peer got {peer} on {method} {path}",
                info.name
            );
        }
        if let Some(member) = info.dbus {
            let (iface, member) = member.rsplit_once('.').unwrap();
            let found = match iface {
                MANAGER => &manager,
                DOMAIN => &domain,
                other => panic!("{}: unknown interface {other}", info.name),
            };
            assert!(
                found.iter().any(|m| m == member),
                "{}: {iface}.{member} not introspectable: {found:?}",
                info.name
            );
            // D-Bus has one gate (polkit's manage); administrators' operations stay off it.
            assert_ne!(
                info.access,
                Access::Admin,
                "{} is admin-only but on D-Bus",
                info.name
            );
        }
        if let Some(sub) = info.novactl {
            assert!(
                subcommands.contains(&sub),
                "{}: novactl has no {sub}: {subcommands:?}",
                info.name
            );
        }
    }
}

/// The audit entries of `domain` as (op, result).
fn trail(env: &Env, domain: &str) -> Vec<(String, String, String)> {
    audit_entries(env)
        .iter()
        .filter(|e| e["domain"] == domain)
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&e["op"]), s(&e["result"]), s(&e["actor"]["via"]))
        })
        .collect()
}

fn http_state(socket: &Path, name: &str) -> String {
    let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
    r.json()["state"].as_str().unwrap_or("gone").to_owned()
}

#[test]
fn the_same_operations_through_http_dbus_and_novactl_answer_and_audit_alike() {
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!("[dbus]\naddress = {:?}\n", bus.address));
    wait_for_name(&bus.address);
    let sock = &d.socket;
    let call = |path: &str, iface: &str, method: &str, args: &[&str]| {
        let mut a = vec!["--json=short", "call", "org.novacron1", path, iface, method];
        a.extend_from_slice(args);
        let out = busctl(&bus.address, &a);
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    };
    let file = env.dir.path().join("cli.xml");
    std::fs::write(&file, osless("via-cli").to_xml()).unwrap();

    // Validate only: the same summary on each face, and nothing is defined.
    let r = curl(
        sock,
        "POST",
        "/v1/domains?dry_run=true",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &osless("via-http").to_xml(),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let checked = r.json();
    assert_eq!(checked["name"], "via-http");
    assert_eq!(checked["replaces"], false);
    assert!(
        checked["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "-name" || a.as_str().unwrap_or("").contains("guest=via-http")),
        "{checked}"
    );
    assert_eq!(curl(sock, "GET", "/v1/domains/via-http", &[]).status, 404);
    let r = call(
        "/org/novacron1",
        MANAGER,
        "ValidateXML",
        &["s", &osless("via-dbus").to_xml()],
    );
    let dbus_checked: Value = serde_json::from_str(r["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(dbus_checked["name"], "via-dbus");
    assert_eq!(dbus_checked["trust"], checked["trust"]);
    let (code, out, err) = novactl(
        sock,
        &["--json", "define", "--validate", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let cli_checked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli_checked["name"], "via-cli");
    assert_eq!(
        curl(sock, "GET", "/v1/domains", &[]).json(),
        serde_json::json!([]),
        "a dry run defines nothing"
    );

    // Define.
    let r = curl(
        sock,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &osless("via-http").to_xml(),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    call(
        "/org/novacron1",
        MANAGER,
        "DefineXML",
        &["s", &osless("via-dbus").to_xml()],
    );
    let (code, _, err) = novactl(sock, &["define", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // Set-metadata: the same tags on each; the list filter finds exactly these three.
    let r = curl(
        sock,
        "PUT",
        "/v1/domains/via-http/metadata",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"title":"T","tags":["faces","web"]}"#,
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let http_meta = r.json();
    let dbus_meta = call(
        "/org/novacron1/domain/via_2ddbus",
        DOMAIN,
        "SetMetadata",
        &["ssasas", "T", "", "2", "faces", "web", "1", "description"],
    );
    let dbus_meta: Value = serde_json::from_str(dbus_meta["data"][0].as_str().unwrap()).unwrap();
    let (code, out, err) = novactl(
        sock,
        &[
            "--json",
            "set-metadata",
            "via-cli",
            "--title",
            "T",
            "--tag",
            "web",
            "--tag",
            "faces",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cli_meta: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        http_meta,
        serde_json::json!({"title": "T", "tags": ["faces", "web"]})
    );
    assert_eq!(dbus_meta, http_meta);
    assert_eq!(cli_meta, http_meta);
    let listed = curl(sock, "GET", "/v1/domains?tag=faces", &[]).json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["via-cli", "via-dbus", "via-http"]);
    let r = call(
        "/org/novacron1",
        MANAGER,
        "ListDomainsTagged",
        &["ss", "", "web"],
    );
    assert_eq!(r["data"][0].as_array().unwrap().len(), 3, "{r}");
    let (code, out, _) = novactl(sock, &["list", "--all", "--tag", "nothing-has-this"]);
    assert_eq!(code, 0);
    assert!(!out.contains("via-"), "{out}");

    // Start, suspend, resume, destroy: each face leaves its domain in the same state.
    for (op, state) in [
        ("start", "running"),
        ("suspend", "paused"),
        ("resume", "running"),
        ("destroy", "shutoff"),
    ] {
        let r = curl(sock, "POST", &format!("/v1/domains/via-http/{op}"), &[]);
        assert_eq!(r.status, 200, "{op}: {r:?}");
        assert_eq!(r.json()["state"], state, "{op}");
        let member = format!("{}{}", op[..1].to_ascii_uppercase(), &op[1..]);
        call("/org/novacron1/domain/via_2ddbus", DOMAIN, &member, &[]);
        let (code, _, err) = novactl(sock, &[op, "via-cli"]);
        assert_eq!(code, 0, "{op}: {err}");
        for name in ["via-http", "via-dbus", "via-cli"] {
            assert_eq!(http_state(sock, name), state, "{name} after {op}");
        }
    }

    // Undefine.
    assert_eq!(
        curl(sock, "DELETE", "/v1/domains/via-http", &[]).status,
        204
    );
    call("/org/novacron1/domain/via_2ddbus", DOMAIN, "Undefine", &[]);
    let (code, _, err) = novactl(sock, &["undefine", "via-cli"]);
    assert_eq!(code, 0, "{err}");

    // One audit record per operation, the same on every face; only the face differs.
    let want = |via: &str| -> Vec<(String, String, String)> {
        [
            "define-validate",
            "define",
            "set-metadata",
            "start",
            "suspend",
            "resume",
            "destroy",
            "undefine",
        ]
        .iter()
        .map(|op| (op.to_string(), "ok".to_owned(), via.to_owned()))
        .collect()
    };
    assert_eq!(trail(&env, "via-http"), want("http-unix"));
    assert_eq!(trail(&env, "via-dbus"), want("dbus"));
    assert_eq!(trail(&env, "via-cli"), want("http-unix"));
}
