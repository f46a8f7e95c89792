//! The live device set follows snapshots. After a disk-only snapshot of a running OS-less guest
//! (KVM where it works) QEMU's device reads the overlay's node; after deleting that snapshot
//! (an active commit) it reads the base's again. Whatever reads the live set must see that:
//! a migration's destination (it opens the disks the live set names: on the base it would lose
//! every write made since the snapshot), `blockresize` (it resizes the live set's node: the
//! base under an overlay would grow unseen), and a daemon restarted by `kill -9` (it reads the
//! set from the runtime record).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, tcp_api, Daemon, Reply};
use common::{http, Env};
use novacrond::client::{Client, Target};
use novacrond::service::migration::{MigrateRequest, MigrationOptions, Phase};
use serde_json::{json, Value};

const TOKEN: &str = "peer-secret-token";
const JSON: &str = "Content-Type: application/json";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `len` bytes at `offset` of `image` (through its chain) are all `pattern`.
fn reads_pattern(image: &str, pattern: u8, offset: &str, len: &str) -> bool {
    Command::new("qemu-io")
        .args([
            "-r",
            "-U",
            "-c",
            &format!("read -P {pattern:#x} {offset} {len}"),
            image,
        ])
        .output()
        .map(|o| {
            o.status.success()
                && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed")
        })
        .unwrap_or(false)
}

struct Host {
    env: Env,
    daemon: Daemon,
    port: u16,
}

impl Host {
    /// A daemon with a peer token on a loopback TCP API; `shared` is a storage root.
    fn start(shared: &Path) -> Host {
        let env = Env::new();
        let daemon = env.start_daemon(&config(shared));
        let port = daemon.tcp_port();
        Host { env, daemon, port }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        http::call(&self.daemon.socket, method, path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        http::ok_or(&self.daemon.socket, method, path, body, || self.log())
    }

    fn qmp(&self, domain: &str, command: &str, arguments: Value) -> Value {
        http::qmp_args(&self.daemon.socket, domain, command, arguments)
    }

    /// HMP `qemu-io` on the guest's first disk, through its device (whatever layer is active):
    /// what the guest would write.
    fn qemu_io(&self, domain: &str, cmd: &str) {
        let qdev = self.block(domain)["qdev"].as_str().unwrap().to_owned();
        let line = format!("qemu-io -d {qdev} \"{cmd}\"");
        self.qmp(
            domain,
            "human-monitor-command",
            json!({ "command-line": line }),
        );
    }

    /// `query-block` of the guest's first disk.
    fn block(&self, domain: &str) -> Value {
        self.qmp(domain, "query-block", json!({}))[0].clone()
    }

    /// The daemon's live view of disk `vda`.
    fn vda(&self, domain: &str) -> Value {
        let disks = self.ok("GET", &format!("/v1/domains/{domain}/disks"), None);
        disks
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == "vda")
            .cloned()
            .unwrap_or_else(|| panic!("no vda: {disks}"))
    }

    fn resize(&self, domain: &str, size: u64) {
        self.ok(
            "POST",
            &format!("/v1/domains/{domain}/disks/vda/resize"),
            Some(&json!({ "size": size })),
        );
    }

    fn local(&self) -> Client {
        Client::new(Target::Unix(self.daemon.socket.clone()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }
}

fn config(shared: &Path) -> String {
    let api = tcp_api(&[("peer", TOKEN, "migration_peer")]);
    format!("[storage_roots]\nshared = {shared:?}\n{api}[migration]\nallow_plain_http = true\n")
}

/// A shared directory (a storage root on every daemon) with a fresh 64 MiB qcow2 base.
fn shared_base(name: &str) -> (tempfile::TempDir, PathBuf) {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let base = shared.path().join(format!("{name}.qcow2"));
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"],
    );
    (shared, base)
}

/// Defines and starts an OS-less guest on `image`.
fn start_guest(host: &Host, name: &str, image: &Path) {
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{virt}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices>
         </domain>",
        image.display()
    );
    let r = curl(
        &host.daemon.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    host.ok("POST", &format!("/v1/domains/{name}/start"), None);
}

/// Takes disk-only snapshot `snap`; returns (overlay file, overlay node) from the tree.
fn snapshot(host: &Host, domain: &str, snap: &str) -> (String, String) {
    host.ok(
        "POST",
        &format!("/v1/domains/{domain}/snapshots"),
        Some(&json!({ "name": snap })),
    );
    let tree: Value = serde_json::from_slice(
        &std::fs::read(
            host.env
                .config
                .state_dir
                .join("snapshots")
                .join(domain)
                .join("tree.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let overlay = tree["snapshots"][snap]["overlays"]["vda"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = tree["live"]["nodes"][&overlay]
        .as_str()
        .unwrap_or_else(|| panic!("no node for {overlay}: {tree}"))
        .to_owned();
    (overlay, node)
}

/// The device's active node, its virtual size and the daemon's view agree after a resize.
fn assert_resized(host: &Host, domain: &str, node: &str, size: u64) {
    let b = host.block(domain);
    assert_eq!(b["inserted"]["node-name"], node, "{b}");
    assert_eq!(b["inserted"]["image"]["virtual-size"], size, "{b}");
}

#[tokio::test]
async fn a_guest_migrated_after_a_live_snapshot_runs_on_its_overlay() {
    const NAME: &str = "lsmig";
    let (shared, base) = shared_base(NAME);
    let a = Host::start(shared.path());
    let b = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let base = base.display().to_string();

    let (overlay, node) = snapshot(&a, NAME, "s1");
    // The guest writes after the snapshot: into the overlay, its active layer.
    assert_eq!(a.block(NAME)["inserted"]["node-name"], node.as_str());
    a.qemu_io(NAME, "write -P 0x5a 0 1M");
    a.qemu_io(NAME, "flush");
    // The live view (checked after the migration, which is what it feeds).
    let vda = a.vda(NAME);

    let request = MigrateRequest {
        destination: format!("http://127.0.0.1:{}", b.port),
        token: Some(TOKEN.into()),
        destination_ca: None,
        options: MigrationOptions::default(),
        keep_source_definition: false,
    };
    let p = a.local().migrate(NAME, &request, true).await.unwrap();
    assert_eq!(
        p.phase,
        Phase::Completed,
        "{p:?}\nsource log:\n{}\ndestination log:\n{}",
        a.log(),
        b.log()
    );
    // The destination's device reads the overlay (over the base), not the base alone.
    let inserted = b.block(NAME)["inserted"].clone();
    assert_eq!(inserted["backing_file_depth"], 1, "{inserted}");
    assert!(inserted["image"]["backing-image"].is_object(), "{inserted}");
    // The guest writes on, there: into the overlay, after what it wrote on the source.
    b.qemu_io(NAME, "write -P 0x77 1M 1M");
    b.qemu_io(NAME, "flush");
    // The source's live view named the overlay, on its node.
    assert_eq!(vda["source"], overlay.as_str(), "{vda}");
    assert_eq!(vda["node"], node.as_str(), "{vda}");
    assert_eq!(vda["disk"]["driver"]["format"], "qcow2", "{vda}");
    let vda = b.vda(NAME);
    assert_eq!(vda["source"], overlay.as_str(), "{vda}");
    b.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
    // Both writes are in the overlay, neither in the frozen base.
    assert!(reads_pattern(&overlay, 0x5a, "0", "1M"));
    assert!(reads_pattern(&overlay, 0x77, "1M", "1M"));
    assert!(!reads_pattern(&base, 0x5a, "0", "1M"));
    assert!(!reads_pattern(&base, 0x77, "1M", "1M"));
}

#[test]
fn blockresize_after_a_snapshot_and_after_its_deletion_resizes_the_active_layer() {
    const NAME: &str = "lsrsz";
    let (shared, base) = shared_base(NAME);
    let a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let base = base.display().to_string();
    let before = a.block(NAME)["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_owned();

    let (overlay, node) = snapshot(&a, NAME, "s1");
    a.resize(NAME, 96 << 20);
    assert_resized(&a, NAME, &node, 96 << 20);
    assert_eq!(a.vda(NAME)["node"], node.as_str());

    // Deleting the only snapshot commits the active overlay into the base: the device reads
    // the base's node again, and the live set says so.
    a.ok("DELETE", &format!("/v1/domains/{NAME}/snapshots/s1"), None);
    let vda = a.vda(NAME);
    assert_eq!(vda["node"], before.as_str(), "{vda}");
    assert_eq!(vda["source"], base.as_str(), "{vda}");
    a.resize(NAME, 128 << 20);
    assert_resized(&a, NAME, &before, 128 << 20);
    // The overlay is gone from QEMU and from the disk.
    let nodes = a.qmp(NAME, "query-named-block-nodes", json!({"flat": true}));
    assert!(
        !nodes.to_string().contains(&format!("\"{node}\"")),
        "{nodes}"
    );
    assert!(!Path::new(&overlay).exists());
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
    let info: Value =
        serde_json::from_str(&run("qemu-img", &["info", "--output=json", &base])).unwrap();
    assert_eq!(info["virtual-size"], 128 << 20, "{info}");
}

#[test]
fn a_daemon_killed_after_a_snapshot_resizes_the_overlay_after_its_restart() {
    const NAME: &str = "lskill";
    let (shared, base) = shared_base(NAME);
    let mut a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let (overlay, node) = snapshot(&a, NAME, "s1");
    a.daemon.child.kill().unwrap();
    a.daemon.child.wait().unwrap();

    a.daemon = a.env.start_daemon(&config(shared.path()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = a.call("GET", &format!("/v1/domains/{NAME}"), None);
        if r.status == 200 && r.json()["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "not adopted: {}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    a.resize(NAME, 96 << 20);
    assert_resized(&a, NAME, &node, 96 << 20);
    let vda = a.vda(NAME);
    assert_eq!(vda["source"], overlay.as_str(), "{vda}");
    assert_eq!(vda["node"], node.as_str(), "{vda}");
    // Adopted as it was: no drift reported for a set that followed the snapshot.
    assert!(!a.log().contains("drift"), "{}", a.log());
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}

/// A daemon killed right after QEMU's `transaction` (hold point `snapshot-switched`, debug
/// builds), before anything but the journal says so: the restarted daemon finishes the
/// snapshot and its live set follows the switch (the QEMU it adopted reads the overlay).
#[test]
fn a_snapshot_finished_by_a_restarted_daemon_moves_the_live_set_too() {
    const NAME: &str = "lsrec";
    let (shared, base) = shared_base(NAME);
    let mut a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let hold = a.env.config.run_dir.join("hold");
    std::fs::create_dir_all(&hold).unwrap();
    std::fs::write(hold.join("snapshot-switched"), b"").unwrap();
    let (s, path) = (
        a.daemon.socket.clone(),
        format!("/v1/domains/{NAME}/snapshots"),
    );
    std::thread::spawn(move || {
        curl(
            &s,
            "POST",
            &path,
            &["-H", JSON, "--data-binary", r#"{"name":"s1"}"#],
        );
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hold.join("snapshot-switched.reached").exists() {
        assert!(Instant::now() < deadline, "hold point not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.daemon.child.kill().unwrap();
    a.daemon.child.wait().unwrap();
    std::fs::remove_file(hold.join("snapshot-switched")).unwrap();
    let _ = std::fs::remove_file(hold.join("snapshot-switched.reached"));

    a.daemon = a.env.start_daemon(&config(shared.path()));
    let tree_file = a
        .env
        .config
        .state_dir
        .join("snapshots")
        .join(NAME)
        .join("tree.json");
    let tree = || -> Value {
        serde_json::from_slice(&std::fs::read(&tree_file).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(tree()["journal"].is_null() && tree()["snapshots"].get("s1").is_some()) {
        assert!(Instant::now() < deadline, "not finished: {}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = tree();
    let overlay = t["snapshots"]["s1"]["overlays"]["vda"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = t["live"]["nodes"][&overlay].as_str().unwrap().to_owned();
    let vda = a.vda(NAME);
    assert_eq!(vda["source"], overlay.as_str(), "{vda}");
    assert_eq!(vda["node"], node.as_str(), "{vda}");
    a.resize(NAME, 96 << 20);
    assert_resized(&a, NAME, &node, 96 << 20);
    // The adopted QEMU's device read the overlay while the record still named the base's
    // node: reported as drift (and corrected) before the journal's recovery moved the file.
    assert!(
        a.log().contains(&format!(
            "disk vda: node disk0 recorded, its device reads {node}"
        )),
        "{}",
        a.log()
    );
    // The runtime record says so too (what the next restart or a migration reads).
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(a.env.record(NAME)).unwrap()).unwrap();
    let disk = &record["live_devices"]["disks"][0];
    assert_eq!(disk["node"], node.as_str(), "{record}");
    assert_eq!(disk["disk"]["source"]["path"], overlay.as_str(), "{record}");
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
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

/// The Linux test guest (TCG) with a hot-plugged disk: a live snapshot covers it (the disks
/// the guest has now, not the ones it started with), a resize after it reaches the guest, and
/// a detach after it leaves no node behind (neither the overlay's nor the one it froze).
#[tokio::test]
async fn a_hot_plugged_disk_is_snapshotted_resized_and_detached_on_its_overlay() {
    use novacron_domain::DomainConfig;
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let svc = env.open().await;
    let name = "ls-linux";
    let devices = novacron_tests::COMMAND_CHANNEL_XML;
    let xml = tokio::task::spawn_blocking(move || test_guest_domain_xml_with(name, "", devices))
        .await
        .unwrap()
        .expect("test guest");
    svc.define(DomainConfig::from_xml(&xml).unwrap())
        .await
        .unwrap();
    let images = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let image = images.join("vdb.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            image.to_str().unwrap(),
            "16M",
        ],
    );
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
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        image.display()
    ))
    .unwrap();
    let live = novacrond::service::disks::DiskScope {
        live: true,
        ..Default::default()
    };
    let entry = svc.attach_disk(name, disk, live).await.expect("attach");
    let frozen_node = entry.node.clone().expect("node");
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

    let info = svc
        .snapshot_create(
            name,
            novacrond::service::snapshots::CreateRequest {
                name: "s1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("snapshot of the hot-plugged disk");
    assert_eq!(
        info.disks.get("vdb").map(String::as_str),
        Some(image.to_str().unwrap()),
        "{info:?}"
    );
    let listed = svc.list_disks(name, false).unwrap();
    let top = listed[0].node.clone().expect("node");
    assert_ne!(top, frozen_node, "{listed:?}");
    assert!(
        listed[0]
            .source
            .as_deref()
            .unwrap()
            .ends_with(".vdb.s1.qcow2"),
        "{listed:?}"
    );

    // Grow to 32 MiB: the guest sees 65536 sectors (the overlay grew, not the frozen file).
    svc.resize_disk(name, "vdb", 32 << 20)
        .await
        .expect("resize");
    until(
        &mut shell,
        &format!("cat /sys/block/{dev}/size"),
        Duration::from_secs(30),
        |o| o.trim() == "65536",
    )
    .await;

    // Detach: the guest releases the device; the overlay's nodes and the frozen ones go.
    svc.detach_disk(name, "vdb", live, Some(Duration::from_secs(60)))
        .await
        .expect("detach");
    let nodes = svc
        .qmp_passthrough(name, "query-named-block-nodes", None)
        .await
        .expect("query-named-block-nodes")
        .to_string();
    for n in [&top, &frozen_node] {
        assert!(!nodes.contains(&format!("\"{n}\"")), "{n} still in {nodes}");
    }
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

/// A snapshot with memory switches the disks as a disk-only one does: the live set follows
/// (a resize grows the overlay); a revert to it starts a QEMU on a fresh overlay, whose live
/// set names that one.
#[test]
fn a_snapshot_with_memory_and_its_revert_leave_the_live_set_on_the_active_layer() {
    const NAME: &str = "lsram";
    let (shared, base) = shared_base(NAME);
    let a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/snapshots"),
        Some(&json!({ "name": "m1", "memory": "paused" })),
    );
    let overlay = a.ok("GET", &format!("/v1/domains/{NAME}/snapshots/m1"), None);
    let vda = a.vda(NAME);
    let node = a.block(NAME)["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(vda["node"], node.as_str(), "{vda}");
    assert!(
        vda["source"].as_str().unwrap().ends_with(".vda.m1.qcow2"),
        "{vda} {overlay}"
    );
    a.resize(NAME, 96 << 20);
    assert_resized(&a, NAME, &node, 96 << 20);

    a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/snapshots/m1/revert"),
        None,
    );
    let vda = a.vda(NAME);
    let node = a.block(NAME)["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(vda["node"], node.as_str(), "{vda}");
    assert!(
        vda["source"].as_str().unwrap().contains(".vda.m1.r"),
        "{vda}"
    );
    // The guest continues from the snapshot: the disk as it was then (64 MiB), grown anew.
    a.resize(NAME, 80 << 20);
    assert_resized(&a, NAME, &node, 80 << 20);
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
    let _ = base;
}

/// The node a live snapshot froze under its overlay stays in QEMU: a disk attached afterwards
/// gets another name (QEMU refuses a duplicate node name), and is snapshotted with the rest.
#[test]
fn a_disk_attached_after_a_live_snapshot_gets_a_node_of_its_own() {
    const NAME: &str = "lsatt";
    let (shared, base) = shared_base(NAME);
    let a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let frozen = a.block(NAME)["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_owned();
    snapshot(&a, NAME, "s1");
    let data = shared.path().join(format!("{NAME}-data.qcow2"));
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", data.to_str().unwrap(), "16M"],
    );
    let xml = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        data.display()
    );
    a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/disks"),
        Some(&json!({ "xml": xml, "live": true })),
    );
    let disks = a.ok("GET", &format!("/v1/domains/{NAME}/disks"), None);
    let vdb = disks
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "vdb")
        .cloned()
        .unwrap_or_else(|| panic!("no vdb: {disks}"));
    assert_ne!(vdb["node"], frozen.as_str(), "{vdb}");
    // Both disks get an overlay in the next snapshot.
    a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/snapshots"),
        Some(&json!({ "name": "s2" })),
    );
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}

/// A snapshot repoints the persistent definition's disk only where it names the file the
/// snapshot froze (libvirt updates the definition only where the source matches), and its
/// deletion only where it names the merged overlay: a `--config` vdb beside a live-only
/// hot-plugged vdb on another file keeps its file throughout; vda, on the frozen file, moves
/// to its overlay and back to the base.
#[test]
fn a_config_disk_under_a_hot_plugged_disks_target_keeps_its_file() {
    const NAME: &str = "lscfg";
    let (shared, base) = shared_base(NAME);
    let a = Host::start(shared.path());
    start_guest(&a, NAME, &base);
    let file = |which: &str| {
        let f = shared.path().join(format!("{NAME}-{which}.qcow2"));
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", f.to_str().unwrap(), "16M"],
        );
        f.display().to_string()
    };
    let (conf, hot) = (file("conf"), file("hot"));
    let attach = |path: &str, scope: &str| {
        let xml = format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{path}'/><target dev='vdb' bus='virtio'/></disk>"
        );
        a.ok(
            "POST",
            &format!("/v1/domains/{NAME}/disks"),
            Some(&json!({ "xml": xml, scope: true })),
        );
    };
    attach(&conf, "config");
    attach(&hot, "live");
    // The persistent definition's file of `target`.
    let defined = |target: &str| {
        let disks = a.ok(
            "GET",
            &format!("/v1/domains/{NAME}/disks?config=true"),
            None,
        );
        disks
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == target)
            .unwrap_or_else(|| panic!("no {target} defined: {disks}"))["disk"]["source"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{target} is no file disk: {disks}"))
            .to_owned()
    };
    assert_eq!(defined("vdb"), conf);

    let (overlay, _) = snapshot(&a, NAME, "s1");
    let tree: Value = serde_json::from_slice(
        &std::fs::read(
            a.env
                .config
                .state_dir
                .join("snapshots")
                .join(NAME)
                .join("tree.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        tree["snapshots"]["s1"]["disks"]["vdb"]["file"], hot,
        "{tree}"
    );
    assert_eq!(defined("vda"), overlay);
    assert_eq!(defined("vdb"), conf, "the --config disk was repointed");

    let r = a.call("DELETE", &format!("/v1/domains/{NAME}/snapshots/s1"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(defined("vda"), base.display().to_string());
    assert_eq!(defined("vdb"), conf, "the --config disk was repointed");
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}

/// A volume disk (`<disk type='volume'>`) runs on its file in the pool: the snapshot that
/// freezes that file repoints the definition's disk to the overlay (libvirt's external
/// snapshot of a volume disk names the overlay file), matched through the pool.
#[test]
fn a_volume_disks_definition_moves_to_its_overlay() {
    const NAME: &str = "lsvol";
    let (shared, _) = shared_base(NAME);
    let a = Host::start(shared.path());
    let images = a.env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let vol = images.join(format!("{NAME}.qcow2"));
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", vol.to_str().unwrap(), "16M"],
    );
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{virt}'><name>{NAME}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
             <source pool='default' volume='{NAME}.qcow2'/><target dev='vda' bus='virtio'/>
           </disk></devices>
         </domain>"
    );
    let r = curl(
        &a.daemon.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    a.ok("POST", &format!("/v1/domains/{NAME}/start"), None);
    let (overlay, _) = snapshot(&a, NAME, "s1");
    let disks = a.ok(
        "GET",
        &format!("/v1/domains/{NAME}/disks?config=true"),
        None,
    );
    assert_eq!(disks[0]["disk"]["source"]["path"], overlay, "{disks}");
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}

/// A volume disk whose pool was undefined while the guest ran cannot be matched through
/// its pool: the snapshot still moves the definition to the overlay (by its target), so the
/// next start does not write to the file the snapshot froze.
#[test]
fn a_volume_disk_whose_pool_is_gone_still_moves_to_its_overlay() {
    const NAME: &str = "lsvolgone";
    let (shared, _) = shared_base(NAME);
    let a = Host::start(shared.path());
    let dir = a.env.config.state_dir.join("images").join("gone");
    std::fs::create_dir_all(&dir).unwrap();
    let pool = serde_json::json!({ "name": "gone", "path": dir });
    a.ok("POST", "/v1/pools", Some(&pool));
    let vol = serde_json::json!({ "name": "v.qcow2", "capacity": 16 << 20, "format": "qcow2" });
    a.ok("POST", "/v1/pools/gone/volumes", Some(&vol));
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{virt}'><name>{NAME}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
             <source pool='gone' volume='v.qcow2'/><target dev='vda' bus='virtio'/>
           </disk></devices>
         </domain>"
    );
    let r = curl(
        &a.daemon.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    a.ok("POST", &format!("/v1/domains/{NAME}/start"), None);
    let r = curl(&a.daemon.socket, "DELETE", "/v1/pools/gone", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let (overlay, _) = snapshot(&a, NAME, "s1");
    let disks = a.ok(
        "GET",
        &format!("/v1/domains/{NAME}/disks?config=true"),
        None,
    );
    assert_eq!(disks[0]["disk"]["source"]["path"], overlay, "{disks}");
    a.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}
