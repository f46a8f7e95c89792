//! Pools and volumes on a real novacrond with real qemu-img, curl, novactl and busctl: a 64 MiB
//! sparse volume created, uploaded, downloaded, cloned (full and linked) and resized, checked
//! with `qemu-img info/compare/check`; deletes refused while a domain or a clone needs the
//! file; hostile names, sizes and paths refused with the field named, nothing changed on
//! disk, audited; a pool whose directory vanished reported, not fatal.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{curl, novactl, Reply};
use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn ok(socket: &Path, args: &[&str]) -> String {
    let (code, out, err) = novactl(socket, args);
    assert_eq!(code, 0, "novactl {args:?}: {out}{err}");
    out
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn info(path: &Path) -> Value {
    let (ok, out) = qemu_img(&["info", "-U", "--output=json", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn same(a: &Path, fa: &str, b: &Path, fb: &str) {
    let (ok, out) = qemu_img(&[
        "compare",
        "-U",
        "-f",
        fa,
        "-F",
        fb,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(ok, "{} and {} differ: {out}", a.display(), b.display());
}

fn check(path: &Path) {
    let (ok, out) = qemu_img(&["check", "-U", path.to_str().unwrap()]);
    assert!(ok, "qemu-img check {}: {out}", path.display());
}

fn images(env: &Env) -> PathBuf {
    env.config.state_dir.join("images")
}

/// The names in a directory, sorted: what "nothing changed on disk" compares.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), m.len())
        })
        .collect();
    v.sort();
    v
}

fn json_body(v: Value) -> Vec<String> {
    vec![
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        v.to_string(),
    ]
}

fn post(socket: &Path, path: &str, v: Value) -> Reply {
    let args = json_body(v);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(socket, "POST", path, &args)
}

/// A 64 MiB raw file with data in three places and holes between.
fn sample(dir: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let p = dir.join("sample.raw");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(64 * MIB).unwrap();
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&block, 0).unwrap();
    f.write_all_at(&block, 10 * MIB).unwrap();
    f.write_all_at(b"the end", 64 * MIB - 7).unwrap();
    p
}

#[test]
fn a_64_mib_sparse_volume_is_created_uploaded_downloaded_cloned_and_resized() {
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!("[dbus]\naddress = {:?}\n", bus.address));
    let s = &d.socket;
    let img = images(&env);

    // The default pool exists without any setup.
    let pools = curl(s, "GET", "/v1/pools", &[]);
    assert_eq!(pools.status, 200, "{pools:?}");
    let default = &pools.json()[0];
    assert_eq!(default["name"], "default");
    assert_eq!(default["state"], "running");
    assert_eq!(default["path"], img.to_str().unwrap());
    assert!(ok(s, &["pool-list"]).contains("default"));

    // Create: qcow2 through novactl, raw through HTTP; both sparse.
    ok(
        s,
        &[
            "vol-create-as",
            "default",
            "v1.qcow2",
            "64M",
            "--format",
            "qcow2",
        ],
    );
    let v1 = img.join("v1.qcow2");
    let i = info(&v1);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["virtual-size"], 64 * MIB);
    check(&v1);
    let r = post(
        s,
        "/v1/pools/default/volumes",
        serde_json::json!({"name": "r.img", "capacity": 64 * MIB, "format": "raw"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let raw = img.join("r.img");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 64 * MIB);
    assert!(
        std::fs::metadata(&raw).unwrap().blocks() * 512 < MIB,
        "raw create is not sparse"
    );

    // The list reads the headers: formats and capacities as qemu-img says.
    let list = curl(s, "GET", "/v1/pools/default/volumes", &[]).json();
    let vols = list["volumes"].as_array().unwrap();
    let by = |n: &str| vols.iter().find(|v| v["name"] == n).unwrap().clone();
    assert_eq!(by("v1.qcow2")["format"], "qcow2");
    assert_eq!(by("v1.qcow2")["capacity"], 64 * MIB);
    assert_eq!(by("r.img")["format"], "raw");

    // Upload: the bytes arrive, zero blocks stay holes.
    let local = sample(env.dir.path());
    let out = ok(
        s,
        &["--json", "vol-upload", "r.img", local.to_str().unwrap()],
    );
    let up: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(up["written"], 64 * MIB);
    same(&local, "raw", &raw, "raw");
    let allocated = std::fs::metadata(&raw).unwrap().blocks() * 512;
    assert!(
        allocated < 4 * MIB,
        "upload wrote {allocated} bytes: zeros were not skipped"
    );

    // Resumable: the second half again from an offset, over a volume whose tail was zeroed.
    let tail = env.dir.path().join("tail");
    std::fs::write(&tail, vec![0u8; (32 * MIB) as usize]).unwrap();
    let r = curl(
        s,
        "PUT",
        &format!("/v1/pools/default/volumes/r.img/data?offset={}", 32 * MIB),
        &["--data-binary", &format!("@{}", tail.display())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["end"], 64 * MIB);
    let (same_now, _) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        local.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert!(!same_now, "the zeros at 32 MiB.. did not reach the volume");
    let part = env.dir.path().join("part");
    let bytes = std::fs::read(&local).unwrap();
    std::fs::write(&part, &bytes[(32 * MIB) as usize..]).unwrap();
    let r = curl(
        s,
        "PUT",
        &format!("/v1/pools/default/volumes/r.img/data?offset={}", 32 * MIB),
        &["--data-binary", &format!("@{}", part.display())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    same(&local, "raw", &raw, "raw");

    // Download: the same bytes come back.
    let back = env.dir.path().join("back.raw");
    ok(s, &["vol-download", "r.img", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == bytes, "download differs");

    // Full clone, converted; linked clone over a base that becomes read-only.
    ok(s, &["vol-clone", "r.img", "r2.qcow2", "--format", "qcow2"]);
    let r2 = img.join("r2.qcow2");
    same(&raw, "raw", &r2, "qcow2");
    check(&r2);
    ok(s, &["vol-clone", "r2.qcow2", "r3.qcow2", "--linked"]);
    let r3 = img.join("r3.qcow2");
    let i = info(&r3);
    assert_eq!(i["backing-filename"], r2.to_str().unwrap());
    assert_eq!(i["backing-filename-format"], "qcow2");
    same(&raw, "raw", &r3, "qcow2");
    check(&r3);
    assert_eq!(
        std::fs::metadata(&r2).unwrap().permissions().mode() & 0o222,
        0,
        "the base stays writable"
    );

    // Resize: grow; shrinking needs --shrink and changes nothing without it.
    ok(s, &["vol-resize", "r.img", "128M"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 128 * MIB);
    ok(s, &["vol-resize", "v1.qcow2", "96M"]);
    assert_eq!(info(&v1)["virtual-size"], 96 * MIB);
    let (code, _, err) = novactl(s, &["vol-resize", "v1.qcow2", "32M"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("capacity") && err.contains("--shrink"),
        "{err}"
    );
    assert_eq!(info(&v1)["virtual-size"], 96 * MIB);
    ok(s, &["vol-resize", "v1.qcow2", "32M", "--shrink"]);
    assert_eq!(info(&v1)["virtual-size"], 32 * MIB);
    check(&v1);

    // A base is not deleted under its clone.
    let (code, _, err) = novactl(s, &["vol-delete", "r2.qcow2"]);
    assert_ne!(code, 0);
    assert!(err.contains("backing file of default/r3.qcow2"), "{err}");
    assert!(r2.exists());
    ok(s, &["vol-delete", "r3.qcow2"]);
    ok(s, &["vol-delete", "r2.qcow2"]);
    assert!(!r2.exists() && !r3.exists());

    // D-Bus: the same service behind Manager methods.
    let busctl = |args: &[&str]| {
        let out = Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args([
                "call",
                "org.novacron1",
                "/org/novacron1",
                "org.novacron1.Manager",
            ])
            .args(args)
            .output()
            .expect("busctl");
        assert!(
            out.status.success(),
            "busctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    common::bus::wait_for_bus_name(&bus.address);
    busctl(&[
        "CreateVolume",
        "sstst",
        "default",
        "bus.qcow2",
        &(8 * MIB).to_string(),
        "qcow2",
        "0",
    ]);
    assert_eq!(info(&img.join("bus.qcow2"))["virtual-size"], 8 * MIB);
    assert!(busctl(&["ListVolumes", "s", "default"]).contains("bus.qcow2"));
    busctl(&["DeleteVolume", "ss", "default", "bus.qcow2"]);
    assert!(!img.join("bus.qcow2").exists());

    // Every change was audited under pool/volume.
    let trail = audited(&env, |op| op.starts_with("vol-"));
    for (op, target) in [
        ("vol-create", "default/v1.qcow2"),
        ("vol-upload", "default/r.img"),
        ("vol-download", "default/r.img"),
        ("vol-clone", "default/r2.qcow2"),
        ("vol-resize", "default/v1.qcow2"),
        ("vol-delete", "default/r3.qcow2"),
    ] {
        assert!(
            trail
                .iter()
                .any(|(o, t, r, _)| o == op && t == target && r == "ok"),
            "{op} {target} not audited: {trail:?}"
        );
    }
    assert!(trail
        .iter()
        .any(|(o, t, r, _)| o == "vol-delete" && t == "default/r2.qcow2" && r == "invalid_config"));
}

/// A domain whose disk is `path`.
fn with_disk(name: &str, path: &Path) -> String {
    let mut c = osless(name);
    c.devices.disks.push(
        novacron_domain::DomainConfig::from_xml(&format!(
            "<domain type='qemu'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
               <os><type arch='x86_64' machine='q35'>hvm</type></os>
               <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            path.display()
        ))
        .unwrap()
        .devices
        .disks[0]
            .clone(),
    );
    c.to_xml()
}

#[test]
fn a_volume_in_use_is_not_deleted_and_not_resized_while_running() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    ok(
        s,
        &[
            "vol-create-as",
            "default",
            "data.qcow2",
            "16M",
            "--format",
            "qcow2",
        ],
    );
    let data = images(&env).join("data.qcow2");
    let r = curl(
        s,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &with_disk("vu-guest", &data),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");

    let r = curl(s, "DELETE", "/v1/pools/default/volumes/data.qcow2", &[]);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.body.contains("vu-guest") && r.body.contains("vda"),
        "{r:?}"
    );
    assert!(data.exists());
    assert!(audited(&env, |o| o == "vol-delete")
        .iter()
        .any(|(_, t, r, _)| t == "default/data.qcow2" && r == "busy"));

    // Running: a resize of the file under QEMU is refused, naming the guest.
    let r = curl(s, "POST", "/v1/domains/vu-guest/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = post(
        s,
        "/v1/pools/default/volumes/data.qcow2/resize",
        serde_json::json!({"capacity": 32 * MIB}),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("vu-guest"), "{r:?}");
    assert_eq!(info(&data)["virtual-size"], 16 * MIB);
    let r = curl(s, "POST", "/v1/domains/vu-guest/destroy", &[]);
    assert_eq!(r.status, 200, "{r:?}");

    // Undefined, the volume goes.
    assert_eq!(curl(s, "DELETE", "/v1/domains/vu-guest", &[]).status, 204);
    assert_eq!(
        curl(s, "DELETE", "/v1/pools/default/volumes/data.qcow2", &[]).status,
        204
    );
    assert!(!data.exists());
}

#[test]
fn hostile_names_sizes_and_paths_are_refused_by_field_and_change_nothing() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let img = images(&env);
    // A link planted in the pool pointing out of it.
    std::os::unix::fs::symlink("/etc/passwd", img.join("escape.img")).unwrap();
    let before = listing(&img);
    let create = |v: Value| post(s, "/v1/pools/default/volumes", v);
    let long = "x".repeat(256);
    for (body, field) in [
        (
            serde_json::json!({"name": "a/b", "capacity": MIB, "format": "raw"}),
            "name",
        ),
        (
            serde_json::json!({"name": "..", "capacity": MIB, "format": "raw"}),
            "name",
        ),
        (
            serde_json::json!({"name": ".hidden", "capacity": MIB, "format": "raw"}),
            "name",
        ),
        (
            serde_json::json!({"name": "nul\u{0}x", "capacity": MIB, "format": "raw"}),
            "name",
        ),
        (
            serde_json::json!({"name": long, "capacity": MIB, "format": "raw"}),
            "name",
        ),
        (
            serde_json::json!({"name": "zero.img", "capacity": 0, "format": "raw"}),
            "capacity",
        ),
        (
            serde_json::json!({"name": "huge.img", "capacity": 1u64 << 60, "format": "qcow2"}),
            "capacity",
        ),
        (
            serde_json::json!({"name": "pre.img", "capacity": 1u64 << 45, "allocation": 1u64 << 45, "format": "raw"}),
            "allocation",
        ),
        (
            serde_json::json!({"name": "escape.img", "capacity": MIB, "format": "raw"}),
            "volume",
        ),
    ] {
        let r = create(body.clone());
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.error_code(), "invalid_config", "{body}: {r:?}");
        let details = &r.json()["error"]["details"];
        assert_eq!(details[0]["path"], field, "{body}: {r:?}");
    }
    // The number is in the refusal.
    let r =
        create(serde_json::json!({"name": "huge.img", "capacity": 1u64 << 60, "format": "qcow2"}));
    assert!(r.body.contains(&(1u64 << 60).to_string()), "{r:?}");
    // A format that is not one.
    let r = create(serde_json::json!({"name": "v.vmdk", "capacity": MIB, "format": "vmdk"}));
    assert_eq!(r.status, 400, "{r:?}");
    // The link is never followed: not read, not written, not deleted.
    for (method, path) in [
        ("GET", "/v1/pools/default/volumes/escape.img"),
        ("GET", "/v1/pools/default/volumes/escape.img/data"),
        ("PUT", "/v1/pools/default/volumes/escape.img/data"),
        ("DELETE", "/v1/pools/default/volumes/escape.img"),
    ] {
        let r = curl(s, method, path, &["--data-binary", "pwned"]);
        assert_eq!(r.status, 400, "{method} {path}: {r:?}");
        assert!(r.body.contains("symbolic link"), "{r:?}");
    }
    // Names that are paths never reach the file system.
    for path in [
        "/v1/pools/default/volumes/..%2Fstate",
        "/v1/pools/default/volumes/%2Fetc%2Fpasswd",
    ] {
        let r = curl(s, "GET", path, &[]);
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    // A pool outside the storage roots.
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let xml = format!(
        "<pool type='dir'><name>evil</name><target><path>{}</path></target></pool>",
        outside.display()
    );
    let r = curl(
        s,
        "POST",
        "/v1/pools",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"]["details"][0]["path"], "target.path");
    assert!(!env.config.state_dir.join("pools/evil.xml").exists());
    assert_eq!(curl(s, "GET", "/v1/pools/evil", &[]).status, 404);
    let r = curl(s, "GET", "/v1/pools/nosuch/volumes", &[]);
    assert_eq!(r.status, 404, "{r:?}");

    assert_eq!(listing(&img), before, "a refused request changed the pool");
    assert_eq!(
        std::fs::read_link(img.join("escape.img")).unwrap(),
        Path::new("/etc/passwd")
    );
    // Every refusal is in the audit log.
    let refused = audited(&env, |o| o == "vol-create" || o == "pool-define")
        .into_iter()
        .filter(|(_, _, r, _)| r != "ok")
        .count();
    assert!(refused >= 12, "{refused} refusals audited");
}

#[test]
fn a_pool_whose_directory_vanished_is_reported_not_fatal() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;
    let dir = images(&env).join("fast");
    std::fs::create_dir(&dir).unwrap();
    let xml = format!(
        "<pool type='dir'><name>fast</name><target><path>{}</path></target></pool>",
        dir.display()
    );
    let r = curl(
        s,
        "POST",
        "/v1/pools",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{r:?}");
    ok(s, &["vol-create-as", "fast", "f.img", "1M"]);
    assert!(dir.join("f.img").exists());
    assert!(ok(s, &["pool-dumpxml", "fast"]).contains(&format!("<path>{}</path>", dir.display())));

    std::fs::remove_dir_all(&dir).unwrap();
    let r = curl(s, "GET", "/v1/pools/fast", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["state"], "inactive");
    assert!(
        r.json()["problem"].as_str().unwrap().contains("fast"),
        "{r:?}"
    );
    let list = curl(s, "GET", "/v1/pools", &[]).json();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fast" && p["state"] == "inactive"));
    let r = curl(s, "GET", "/v1/pools/fast/volumes", &[]);
    assert!(
        r.status >= 400 && r.body.contains(dir.to_str().unwrap()),
        "{r:?}"
    );
    // Everything else goes on.
    assert_eq!(curl(s, "GET", "/v1/pools/default/volumes", &[]).status, 200);
    ok(s, &["vol-create-as", "default", "still.img", "1M"]);
    assert!(ok(s, &["pool-info", "fast"]).contains("inactive"));
}

/// What an operator must not reach through a volume's contents: a qcow2 naming a host file as
/// its external data file or deep in its backing chain is never interpreted by the daemon (which
/// runs qemu-img as root), a linked clone's base is never rewritten, a file a snapshot keeps is
/// never deleted, and an upload must say its length.
#[test]
fn an_operator_cannot_reach_host_files_through_volume_contents() {
    let env = Env::new();
    let api = common::daemon::tcp_api(&[("ops", "operator-secret", "operator")]);
    let d = env.start_daemon(&api);
    let port = d.tcp_port();
    let op = |method: &str, path: &str, args: &[&str]| {
        common::daemon::curl_tcp(port, "operator-secret", method, path, args)
    };
    let img = images(&env);
    // The victim: a host file outside the roots, readable and writable only by root.
    let victim = env.dir.path().join("victim");
    // An image made elsewhere whose data file is the victim, uploaded into a fresh volume
    // (qemu-img create writes the data file: the victim's contents come after).
    let evil = env.dir.path().join("evil.qcow2");
    let opt = format!("data_file={},data_file_raw=on", victim.display());
    let (ok, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &opt,
        evil.to_str().unwrap(),
        "1M",
    ]);
    assert!(ok, "{out}");
    std::fs::write(&victim, b"host secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let json = |v: Value| {
        ["-H", "Content-Type: application/json", "--data-binary"]
            .iter()
            .map(|s| s.to_string())
            .chain([v.to_string()])
            .collect::<Vec<_>>()
    };
    let args = json(serde_json::json!({"name": "e.qcow2", "capacity": MIB, "format": "raw"}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(op("POST", "/v1/pools/default/volumes", &args).status, 201);
    let evil_arg = format!("@{}", evil.display());
    let r = op(
        "PUT",
        "/v1/pools/default/volumes/e.qcow2/data",
        &["--data-binary", &evil_arg],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Cloning or resizing it would make qemu-img open the victim: refused, victim untouched.
    let args = json(serde_json::json!({"name": "loot.raw", "format": "raw"}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = op("POST", "/v1/pools/default/volumes/e.qcow2/clone", &args);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("data file"), "{r:?}");
    assert!(!img.join("loot.raw").exists());
    let args = json(serde_json::json!({"capacity": 4 * MIB}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = op("POST", "/v1/pools/default/volumes/e.qcow2/resize", &args);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"host secret");

    // A linked clone's base is not rewritten through upload or resize.
    let args = json(serde_json::json!({"name": "gold.qcow2", "capacity": MIB, "format": "qcow2"}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(op("POST", "/v1/pools/default/volumes", &args).status, 201);
    let args = json(serde_json::json!({"name": "web.qcow2", "linked": true}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = op("POST", "/v1/pools/default/volumes/gold.qcow2/clone", &args);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let base_before = std::fs::read(img.join("gold.qcow2")).unwrap();
    let r = op(
        "PUT",
        "/v1/pools/default/volumes/gold.qcow2/data",
        &["--data-binary", "overwritten"],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("backing file of"), "{r:?}");
    let args = json(serde_json::json!({"capacity": 512, "shrink": true}));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = op("POST", "/v1/pools/default/volumes/gold.qcow2/resize", &args);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(std::fs::read(img.join("gold.qcow2")).unwrap(), base_before);

    // An upload without a length (chunked) cannot be checked against free space: refused.
    let r = op(
        "PUT",
        "/v1/pools/default/volumes/e.qcow2/data",
        &["-H", "Transfer-Encoding: chunked", "--data-binary", "x"],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("Content-Length"), "{r:?}");
}

/// With one runtime worker (`TOKIO_WORKER_THREADS=1`), a volume deletion whose in-use scan
/// blocks on a file (a domain's snapshot tree that is a FIFO nobody has written yet) stalls
/// only itself: the scan runs on a blocking thread, so the daemon keeps answering meanwhile.
#[test]
fn a_stalled_in_use_scan_does_not_stall_the_daemon() {
    use std::os::unix::fs::OpenOptionsExt;
    let env = Env::new();
    let config = env.write_config("");
    let log = std::fs::File::create(env.dir.path().join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_novacrond"))
        .arg("--config")
        .arg(&config)
        .env("TOKIO_WORKER_THREADS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn novacrond");
    let d = common::daemon::Daemon {
        child,
        socket: env.config.run_dir.join("novacrond.sock"),
        log: env.dir.path().join("daemon.log"),
    };
    let s = d.socket.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&s).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "novacrond did not start"
        );
        std::thread::yield_now();
    }
    let xml = osless("stuck").to_xml();
    let r = curl(
        &s,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{r:?}");
    ok(&s, &["vol-create-as", "default", "v.raw", "1M"]);
    let tree_dir = env.config.state_dir.join("snapshots/stuck");
    std::fs::create_dir_all(&tree_dir).unwrap();
    let fifo = tree_dir.join("tree.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let s2 = s.clone();
    let delete =
        std::thread::spawn(move || curl(&s2, "DELETE", "/v1/pools/default/volumes/v.raw", &[]));
    // The scan is in the FIFO once a reader holds it (a non-blocking writer can open it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(w) => break w,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::libc::ENXIO), "{e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the deletion never read the snapshot tree"
                );
                std::thread::yield_now();
            }
        }
    };
    // The reader now waits for data; the daemon still answers a query.
    let r = curl(&s, "GET", "/v1/domains", &["--max-time", "15"]);
    assert_eq!(r.status, 200, "the daemon stalled behind the scan: {r:?}");
    // An empty tree file (unreadable JSON) uses nothing: the deletion goes through.
    drop(writer);
    let r = delete.join().unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert!(!env.config.state_dir.join("images/v.raw").exists());
}
