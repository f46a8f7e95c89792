//! Issue 17 §2: the disks of a running guest, on a real novacrond and a real QEMU (an OS-less
//! q35 guest): attach (the node QEMU has, the runtime record, the definition untouched),
//! resize, I/O throttling read back from QEMU, CD-ROM media change, a detach the guest never
//! acknowledges (a typed timeout; the disk stays, marked detaching; the definition intact;
//! a restarted daemon still knows it), and bad input refused with the field named, audited.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{curl, curl_tcp, tcp_api, Reply};
use common::{audited, Env};
use serde_json::{json, Value};

const NAME: &str = "hp-osless";
const JSON: &str = "Content-Type: application/json";

fn post_json(socket: &Path, method: &str, path: &str, body: &Value) -> Reply {
    curl(
        socket,
        method,
        path,
        &["-H", JSON, "--data-binary", &body.to_string()],
    )
}

fn qmp(socket: &Path, command: &str, args: Option<Value>) -> Value {
    let mut req = json!({ "execute": command });
    if let Some(a) = args {
        req["arguments"] = a;
    }
    let r = post_json(socket, "POST", &format!("/v1/domains/{NAME}/qmp"), &req);
    assert_eq!(r.status, 200, "{command}: {}", r.body);
    let v = r.json();
    v.get("return").cloned().unwrap_or(v)
}

/// `query-block`'s entry for qdev id `qdev`.
fn block(socket: &Path, qdev: &str) -> Value {
    qmp(socket, "query-block", None)
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["qdev"].as_str().unwrap_or_default().contains(qdev))
        .cloned()
        .unwrap_or_else(|| panic!("no block device {qdev}"))
}

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn definition_xml(socket: &Path) -> String {
    // The persistent definition as stored (not the running config).
    let r = curl(
        socket,
        "GET",
        &format!("/v1/domains/{NAME}/disks?config=true"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn domain_xml(images: &Path) -> String {
    format!(
        "<domain type='{}'><name>{NAME}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <devices>
             <controller type='pci' index='1' model='pcie-root-port'/>
             <controller type='pci' index='2' model='pcie-root-port'/>
             <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
               <source file='{}'/><target dev='sda' bus='sata'/><readonly/></disk>
           </devices></domain>",
        match novacron_tests::osless_accel() {
            novacron_tests::Accel::Kvm => "kvm",
            novacron_tests::Accel::Tcg => "qemu",
        },
        images.join("cd1.iso").display()
    )
}

#[test]
fn disks_of_a_running_osless_guest() {
    let env = Env::new();
    let api = tcp_api(&[("ops", "operator-secret", "operator")]);
    let d = env.start_daemon(&api);
    let port = d.tcp_port();
    let sock = d.socket.clone();
    let images: PathBuf = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    sparse(&images.join("data.raw"), 8 << 20);
    sparse(&images.join("cd1.iso"), 1 << 20);
    sparse(&images.join("cd2.iso"), 2 << 20);
    let outside = env.dir.path().join("outside.raw");
    sparse(&outside, 1 << 20);

    let r = curl(
        &sock,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &domain_xml(&images),
        ],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let r = curl(&sock, "POST", &format!("/v1/domains/{NAME}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let defined_before = definition_xml(&sock);

    // Attach vdb live as an operator (a file inside the storage roots).
    let disk = |path: &Path, dev: &str| {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='{dev}' bus='virtio'/></disk>",
            path.display()
        )
    };
    let op = |method: &str, path: &str, body: &Value| {
        curl_tcp(
            port,
            "operator-secret",
            method,
            path,
            &["-H", JSON, "--data-binary", &body.to_string()],
        )
    };
    let disks = format!("/v1/domains/{NAME}/disks");
    let r = op(
        "POST",
        &disks,
        &json!({ "xml": disk(&images.join("data.raw"), "vdb"), "live": true }),
    );
    assert_eq!(r.status, 201, "attach: {}", r.body);
    let attached = r.json();
    let node = attached["node"].as_str().expect("node name").to_owned();
    assert_eq!(attached["state"], "attached");
    // QEMU has the format node over a descriptor (never the file's name).
    let nodes = qmp(&sock, "query-named-block-nodes", None);
    let ours = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == node.as_str())
        .unwrap_or_else(|| panic!("node {node} not in {nodes}"));
    assert!(
        ours["file"].as_str().unwrap().starts_with("/dev/fdset/")
            || ours["image"]["filename"]
                .as_str()
                .unwrap()
                .contains("/dev/fdset/"),
        "{ours}"
    );
    assert_eq!(block(&sock, "virtio-vdb")["inserted"]["node-name"], node);
    // Durable before the answer: the runtime record holds the live set.
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(env.record(NAME)).unwrap()).unwrap();
    let live: Vec<&str> = record["live_devices"]["disks"]
        .as_array()
        .expect("live_devices in the record")
        .iter()
        .map(|d| d["disk"]["target"]["dev"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["sda", "vdb"]);
    assert_eq!(
        definition_xml(&sock),
        defined_before,
        "--live changed the definition"
    );

    // Bad input changes nothing and is audited.
    let r = op(
        "POST",
        &disks,
        &json!({ "xml": disk(&outside, "vdc"), "live": true }),
    );
    assert_eq!(r.status, 403, "outside the roots: {}", r.body);
    assert!(r.body.contains("outside.raw"), "{}", r.body);
    let r = op(
        "POST",
        &disks,
        &json!({ "xml": disk(&images.join("cd2.iso"), "vdb"), "live": true }),
    );
    assert_eq!(r.status, 400, "duplicate target: {}", r.body);
    assert!(r.body.contains("vdb"), "{}", r.body);
    let r = op(
        "POST",
        &format!("{disks}/vdb/resize"),
        &json!({ "size": 4 << 20 }),
    );
    assert_eq!(r.status, 400, "shrink: {}", r.body);
    assert!(r.body.contains("shrink"), "{}", r.body);
    let r = op(
        "POST",
        &format!("{disks}/vdz/resize"),
        &json!({ "size": 16 << 20 }),
    );
    assert_eq!(r.status, 400, "unknown target: {}", r.body);
    assert!(r.body.contains("vdz"), "{}", r.body);
    let refusals = audited(&env, |o| o == "attach-disk" || o == "blockresize");
    assert!(
        refusals
            .iter()
            .any(|(o, _, res, _)| o == "attach-disk" && res == "forbidden"),
        "{refusals:?}"
    );
    let live_now = curl(&sock, "GET", &disks, &[]).json();
    assert_eq!(live_now.as_array().unwrap().len(), 2, "{live_now}");

    // Resize: QEMU reports the new size.
    let r = op(
        "POST",
        &format!("{disks}/vdb/resize"),
        &json!({ "size": 16 << 20 }),
    );
    assert_eq!(r.status, 200, "resize: {}", r.body);
    assert_eq!(
        block(&sock, "virtio-vdb")["inserted"]["image"]["virtual-size"],
        16 << 20
    );

    // Throttling, read back from QEMU.
    let r = op(
        "PUT",
        &format!("{disks}/vdb/iotune"),
        &json!({ "total_bytes_sec": 1 << 20, "total_iops_sec": 200, "group_name": "g1" }),
    );
    assert_eq!(r.status, 200, "iotune: {}", r.body);
    let r = curl(&sock, "GET", &format!("{disks}/vdb/iotune"), &[]);
    let tune = r.json();
    assert_eq!(tune["total_bytes_sec"], 1 << 20, "{tune}");
    assert_eq!(tune["total_iops_sec"], 200, "{tune}");
    assert_eq!(tune["group_name"], "g1", "{tune}");
    assert_eq!(block(&sock, "virtio-vdb")["inserted"]["bps"], 1 << 20);

    // CD-ROM media: update to cd2 (2 MiB), then eject.
    let media = format!("{disks}/sda/media");
    let r = op(
        "POST",
        &media,
        &json!({ "action": "update", "source": images.join("cd2.iso") }),
    );
    assert_eq!(r.status, 200, "update media: {}", r.body);
    let cd = block(&sock, "sata0-0-0");
    assert_eq!(cd["inserted"]["image"]["virtual-size"], 2 << 20, "{cd}");
    let r = op("POST", &media, &json!({ "action": "eject" }));
    assert_eq!(r.status, 200, "eject: {}", r.body);
    assert!(block(&sock, "sata0-0-0").get("inserted").is_none());

    // Detach: an OS-less guest never releases the device.
    let started = Instant::now();
    let r = curl_tcp(
        port,
        "operator-secret",
        "DELETE",
        &format!("{disks}/vdb?live=true&timeout=2"),
        &[],
    );
    assert_eq!(r.status, 504, "detach: {}", r.body);
    assert_eq!(r.error_code(), "timeout", "{}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(2));
    let listed = curl(&sock, "GET", &disks, &[]).json();
    let vdb = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "vdb")
        .unwrap_or_else(|| panic!("vdb gone: {listed}"));
    assert_eq!(vdb["state"], "detaching", "{listed}");
    assert_eq!(definition_xml(&sock), defined_before, "definition changed");
    // The domain stays usable: its job slots are free again.
    let r = op(
        "POST",
        &media,
        &json!({ "action": "insert", "source": images.join("cd1.iso") }),
    );
    assert_eq!(r.status, 200, "after the timeout: {}", r.body);
    assert_eq!(
        curl(&sock, "GET", &format!("/v1/domains/{NAME}"), &[]).json()["state"],
        "running"
    );

    // A restarted daemon knows the live set from the record.
    drop(d);
    let d = env.start_daemon(&api);
    let listed = curl(&d.socket, "GET", &disks, &[]).json();
    let states: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["target"].as_str().unwrap().to_owned(),
                x["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("sda".to_owned(), "attached".to_owned()),
            ("vdb".to_owned(), "detaching".to_owned())
        ]
    );
    let _ = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{NAME}/destroy"),
        &[],
    );
}
