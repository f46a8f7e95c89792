//! Issue 16: `<filesystem>` over 9p with a real novacrond and QEMU. QEMU gets the shared
//! directory as a descriptor the daemon opened (beneath the storage root for an operator's
//! definition), never its path; an operator may share only directories inside the roots.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{curl, curl_tcp, tcp_api, Reply};
use common::{audit_entries, osless, recorded_pid, Env};

const TOKEN: &str = "op-s3cret";

fn as_operator(port: u16, method: &str, path: &str, xml: Option<&str>) -> Reply {
    match xml {
        Some(x) => curl_tcp(
            port,
            TOKEN,
            method,
            path,
            &["-H", "Content-Type: application/xml", "--data-binary", x],
        ),
        None => curl_tcp(port, TOKEN, method, path, &[]),
    }
}

fn wait_state(socket: &Path, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
        if r.status == 200 && r.json()["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {state}: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn share(dir: &Path, tag: &str, readonly: bool) -> String {
    format!(
        "<filesystem type='mount' accessmode='mapped'><source dir='{}'/><target dir='{tag}'/>{}</filesystem>",
        dir.display(),
        if readonly { "<readonly/>" } else { "" }
    )
}

fn guest_xml(name: &str, devices: &str) -> String {
    osless(name).to_xml().replace(
        "</domain>",
        &format!("<devices>{devices}</devices></domain>"),
    )
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn shares_reach_qemu_as_descriptors_and_operators_stay_inside_the_roots() {
    let env = Env::new();
    let daemon = env.start_daemon(&tcp_api(&[("ops", TOKEN, "operator")]));
    let port = daemon.tcp_port();
    let images = env.config.state_dir.join("images");
    let inside = images.join("share");
    mkdir(&inside);
    std::fs::write(inside.join("hello.txt"), b"hi").unwrap();
    let outside = env.dir.path().join("outside");
    mkdir(&outside);
    std::os::unix::fs::symlink("/etc", images.join("etc-link")).unwrap();
    std::fs::write(images.join("file.raw"), b"x").unwrap();

    // Refused for an operator: outside the roots, a link out of them, not a directory.
    let cases = [
        (
            "fs-out",
            share(&outside, "t", false),
            format!(
                "devices.filesystems[0].source: {} is outside the storage roots",
                outside.display()
            ),
        ),
        (
            "fs-link",
            share(&images.join("etc-link"), "t", true),
            format!(
                "{}/etc-link resolves outside the storage root images",
                images.display()
            ),
        ),
        (
            "fs-file",
            share(&images.join("file.raw"), "t", true),
            format!("{}/file.raw is not a directory", images.display()),
        ),
    ];
    for (name, dev, why) in &cases {
        let r = as_operator(port, "POST", "/v1/domains", Some(&guest_xml(name, dev)));
        assert_eq!(r.status, 403, "{name}: {r:?}");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(msg.contains(why.as_str()), "{name}: {msg}\nwanted: {why}");
        assert!(
            audit_entries(&env)
                .iter()
                .any(|e| e["op"] == "define" && e["domain"] == *name && e["result"] == "forbidden"),
            "{name}: refusal not audited"
        );
        assert_eq!(
            curl(&daemon.socket, "GET", &format!("/v1/domains/{name}"), &[]).status,
            404
        );
    }

    // Inside the roots: an operator's guest starts with both shares.
    let devices = format!(
        "{}{}",
        share(&inside, "rw", false),
        share(&images.join("share"), "ro", true)
    );
    let r = as_operator(
        port,
        "POST",
        "/v1/domains",
        Some(&guest_xml("fs-ok", &devices)),
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = as_operator(port, "POST", "/v1/domains/fs-ok/start", None);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(&daemon.socket, "fs-ok", "running");
    let pid = recorded_pid(&env, "fs-ok");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("-fsdev local,id=fsdev-fs0,path=/proc/self/fd/")
            && cmdline.contains("security_model=mapped-xattr,readonly=on"),
        "{cmdline}"
    );
    assert!(
        !cmdline.contains(&inside.display().to_string()),
        "QEMU was given the path: {cmdline}"
    );
    // QEMU's 9p servers hold the very directory.
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|l| l == &inside)
        .count();
    assert!(held >= 2, "QEMU holds the share {held} times");
    let r = curl(
        &daemon.socket,
        "POST",
        "/v1/domains/fs-ok/qmp",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"execute":"qom-list","arguments":{"path":"/machine/peripheral"}}"#,
        ],
    );
    let names: Vec<String> = r.json()["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "child<virtio-9p-pci>")
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{}", r.body);
    let r = curl(&daemon.socket, "POST", "/v1/domains/fs-ok/destroy", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(&daemon.socket, "fs-ok", "shutoff");
}
