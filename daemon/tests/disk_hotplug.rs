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
    // Define gave the q35 guest its hot-plug slots (`hotplug_slots`, default 4).
    let xml = curl(&sock, "GET", &format!("/v1/domains/{NAME}/xml"), &[]).body;
    assert_eq!(xml.matches("pcie-root-port").count(), 4, "{xml}");

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
    // Shrinking stays refused after a resize of the daemon's own (checked against the size it
    // set, without asking QEMU) and after one it did not make (QMP passthrough: it asks QEMU).
    let r = op(
        "POST",
        &format!("{disks}/vdb/resize"),
        &json!({ "size": 12 << 20 }),
    );
    assert_eq!(r.status, 400, "shrink after a resize: {}", r.body);
    let node = block(&sock, "virtio-vdb")["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_owned();
    qmp(
        &sock,
        "block_resize",
        Some(json!({ "node-name": node, "size": 20 << 20 })),
    );
    let r = op(
        "POST",
        &format!("{disks}/vdb/resize"),
        &json!({ "size": 18 << 20 }),
    );
    assert_eq!(
        r.status, 400,
        "shrink after a passthrough resize: {}",
        r.body
    );
    assert_eq!(
        block(&sock, "virtio-vdb")["inserted"]["image"]["virtual-size"],
        20 << 20
    );

    // Throttling, read back from QEMU.
    let r = op(
        "PUT",
        &format!("{disks}/vdb/iotune"),
        &json!({ "total_bytes_sec": 1 << 20, "total_iops_sec": 200, "group_name": "g1",
                 "total_bytes_sec_max": 2 << 20 }),
    );
    assert_eq!(r.status, 200, "iotune: {}", r.body);
    let set = r.json();
    let r = curl(&sock, "GET", &format!("{disks}/vdb/iotune"), &[]);
    let tune = r.json();
    // The answer (known without asking QEMU) is what QEMU reads back: its default burst
    // length filled in.
    assert_eq!(set, tune, "set vs read back");
    assert_eq!(tune["total_bytes_sec_max_length"], 1, "{tune}");
    assert_eq!(tune["total_bytes_sec"], 1 << 20, "{tune}");
    assert_eq!(tune["total_iops_sec"], 200, "{tune}");
    assert_eq!(tune["group_name"], "g1", "{tune}");
    assert_eq!(block(&sock, "virtio-vdb")["inserted"]["bps"], 1 << 20);
    // New limits naming no group: the disk stays in its group, as QEMU keeps it.
    let r = op(
        "PUT",
        &format!("{disks}/vdb/iotune"),
        &json!({ "total_bytes_sec": 3 << 20 }),
    );
    assert_eq!(r.status, 200, "iotune: {}", r.body);
    let set = r.json();
    let tune = curl(&sock, "GET", &format!("{disks}/vdb/iotune"), &[]).json();
    assert_eq!(set, tune, "set vs read back");
    assert_eq!(tune["group_name"], "g1", "{tune}");

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

/// Polls the guest with `command` until `done` holds for its output (deadline `within`).
async fn until(
    shell: &mut novacron_tests::GuestShell,
    command: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let out = shell
            .run_ok(command, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        if done(&out) {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{command}: still {out:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 17's running-guest test on the Linux test guest (TCG): hot-plug vdb and see it in
/// the guest, write through it, grow it (the guest sees the new size), throttle it to 1 MiB/s
/// (4 MiB take at least 3 s), detach it (the guest releases it; the nodes are gone).
#[tokio::test]
async fn hotplug_resize_throttle_detach_in_a_linux_guest() {
    use novacron_domain::DomainConfig;
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let svc = env.open().await;
    let name = "hp-linux";
    // No root ports: define reserves the hot-plug slots.
    let devices = novacron_tests::COMMAND_CHANNEL_XML;
    let xml = tokio::task::spawn_blocking(move || test_guest_domain_xml_with(name, "", devices))
        .await
        .unwrap()
        .expect("test guest");
    svc.define(DomainConfig::from_xml(&xml).unwrap())
        .await
        .unwrap();
    let images = env.config.state_dir.join("images");
    let image = images.join("vdb.raw");
    sparse(&image, 8 << 20);
    svc.start(name).await.unwrap();
    common::wait_file(
        &env.serial_log(name),
        novacron_tests::READY_MARKER,
        1,
        Duration::from_secs(120),
    )
    .await;
    let socket = env
        .config
        .run_dir
        .join(format!("domains/{name}.d"))
        .join(format!("{COMMAND_CHANNEL}.sock"));
    let mut shell = GuestShell::connect(&socket, Duration::from_secs(10))
        .await
        .unwrap();
    let disk = novacron_domain::xml::parse_disk(&format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        image.display()
    ))
    .unwrap();
    let live = novacrond::service::disks::DiskScope {
        live: true,
        ..Default::default()
    };
    let before = shell
        .run_ok("cat /proc/partitions", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!before.contains(" vd"), "{before}");
    let entry = svc.attach_disk(name, disk, live).await.expect("attach");
    let node = entry.node.clone().expect("node");
    // The guest names virtio disks in the order they appear (the target is the host's name
    // for it): this guest has no other, so it is the first.
    let parts = until(
        &mut shell,
        "cat /proc/partitions",
        Duration::from_secs(60),
        |o| o.split_whitespace().any(|w| w.starts_with("vd")),
    )
    .await;
    let dev = parts
        .split_whitespace()
        .find(|w| w.starts_with("vd"))
        .unwrap()
        .to_owned();

    // A write in the guest reaches the image on the host.
    shell
        .run_ok(
            &format!("echo novacron-vdb-marker | dd of=/dev/{dev} conv=fsync 2>/dev/null"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let head = std::fs::read(&image).unwrap();
    assert!(
        head.starts_with(b"novacron-vdb-marker"),
        "{:?}",
        String::from_utf8_lossy(&head[..32])
    );

    // Grow to 16 MiB: the guest sees 32768 sectors.
    svc.resize_disk(name, "vdb", 16 << 20)
        .await
        .expect("resize");
    until(
        &mut shell,
        &format!("cat /sys/block/{dev}/size"),
        Duration::from_secs(30),
        |o| o.trim() == "32768",
    )
    .await;

    // Throttle to 1 MiB/s: a 4 MiB write takes at least 3 s. O_DIRECT keeps each request at
    // 64 KiB: QEMU's leaky bucket admits a request whole while the bucket is under a tenth of the
    // rate, so page-cache writeback's merged megabyte requests would slip ~1 MiB through free.
    let tune = novacrond::service::disks::IoTune {
        total_bytes_sec: 1 << 20,
        ..Default::default()
    };
    svc.set_disk_iotune(name, "vdb", tune, live)
        .await
        .expect("iotune");
    let started = Instant::now();
    shell
        .run_ok(
            &format!("dd if=/dev/zero of=/dev/{dev} bs=65536 count=64 oflag=direct conv=fsync 2>/dev/null"),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "4 MiB at 1 MiB/s took {took:?}"
    );

    // Detach: the guest releases the device, the nodes go.
    svc.detach_disk(name, "vdb", live, Some(Duration::from_secs(60)))
        .await
        .expect("detach");
    let nodes = svc
        .qmp_passthrough(name, "query-named-block-nodes", None)
        .await
        .expect("query-named-block-nodes");
    assert!(
        !nodes.to_string().contains(&format!("\"{node}\"")),
        "{node} still in {nodes}"
    );
    until(
        &mut shell,
        "cat /proc/partitions",
        Duration::from_secs(30),
        |o| !o.split_whitespace().any(|w| w == dev),
    )
    .await;
    assert!(svc.list_disks(name, false).unwrap().is_empty());
    svc.destroy(name).await.unwrap();
}

/// The descriptors the daemon passed for `path` that QEMU still has open (its own duplicates
/// and any left in fd sets).
fn qemu_fds_on(pid: u64, path: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == path)
        .count()
}

/// A CD-ROM empty at start gets its `<iotune>` with its first medium (QEMU refuses limits on
/// an empty drive and has none for a medium inserted later), and the daemon's descriptors
/// leave QEMU's fd sets once QEMU holds the files (attach, media change): nothing piles up.
#[test]
fn an_empty_cdrom_gets_its_limits_and_passed_descriptors_are_released() {
    let env = Env::new();
    let d = env.start_daemon("");
    let sock = d.socket.clone();
    let images: PathBuf = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    sparse(&images.join("data.raw"), 8 << 20);
    sparse(&images.join("cd1.iso"), 1 << 20);
    sparse(&images.join("cd2.iso"), 2 << 20);
    let xml = domain_xml(&images).replace(
        "</devices>",
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
           <target dev='sdb' bus='sata'/><readonly/>\
           <iotune><total_bytes_sec>3145728</total_bytes_sec></iotune></disk></devices>",
    );
    let r = curl(
        &sock,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let r = curl(&sock, "POST", &format!("/v1/domains/{NAME}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let pid = curl(&sock, "GET", &format!("/v1/domains/{NAME}"), &[]).json()["pid"]
        .as_u64()
        .expect("pid");
    let disks = format!("/v1/domains/{NAME}/disks");
    assert!(block(&sock, "sata0-0-1").get("inserted").is_none());

    let r = post_json(
        &sock,
        "POST",
        &format!("{disks}/sdb/media"),
        &json!({ "action": "insert", "source": images.join("cd2.iso") }),
    );
    assert_eq!(r.status, 200, "insert into sdb: {}", r.body);
    let cd = block(&sock, "sata0-0-1");
    assert_eq!(
        cd["inserted"]["bps"],
        3 << 20,
        "sdb's limits on its medium: {cd}"
    );

    let r = post_json(
        &sock,
        "POST",
        &disks,
        &json!({ "xml": format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
            images.join("data.raw").display()), "live": true }),
    );
    assert_eq!(r.status, 201, "attach: {}", r.body);
    let r = post_json(
        &sock,
        "POST",
        &format!("{disks}/sda/media"),
        &json!({ "action": "update", "source": images.join("cd2.iso") }),
    );
    assert_eq!(r.status, 200, "update sda: {}", r.body);
    // QEMU's fd sets hold none of the descriptors passed while it ran, and QEMU has one
    // descriptor per file it uses (its own), not two.
    let sets = qmp(&sock, "query-fdsets", None);
    let kept: Vec<&Value> = sets
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["fds"].as_array().into_iter().flatten())
        .filter(|fd| fd["opaque"] == "attach-disk" || fd["opaque"] == "change-media")
        .collect();
    assert!(kept.is_empty(), "descriptors left in fd sets: {sets}");
    assert_eq!(qemu_fds_on(pid, &images.join("data.raw")), 1, "{sets}");
    assert_eq!(
        qemu_fds_on(pid, &images.join("cd2.iso")),
        2,
        "sda and sdb: {sets}"
    );
    assert_eq!(
        qemu_fds_on(pid, &images.join("cd1.iso")),
        0,
        "old medium: {sets}"
    );
    let _ = curl(&sock, "POST", &format!("/v1/domains/{NAME}/destroy"), &[]);
}
