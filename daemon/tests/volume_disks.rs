//! Issue 17: a definition's disk may name a pool volume (`<disk type='volume'>`), disks carry
//! `<iotune>` from the definition into QEMU, and an existing file can be imported as a volume.
//! A real novacrond with real QEMU (OS-less guests), real qemu-img, curl, novactl and busctl;
//! an operator (non-admin) through a TCP token. Every refusal names what is wrong and changes
//! nothing on disk or in the definitions.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{curl, curl_tcp, novactl, tcp_api, Daemon, Reply};
use common::*;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const OP_TOKEN: &str = "operator-secret";
const XML: &str = "Content-Type: application/xml";
const JSON: &str = "Content-Type: application/json";

struct Setup {
    env: Env,
    daemon: Daemon,
    port: u16,
    images: PathBuf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let env = Env::new();
        let daemon = env.start_daemon(&format!(
            "{extra}\n{}",
            tcp_api(&[("op", OP_TOKEN, "operator")])
        ));
        let port = daemon.tcp_port();
        let images = env.config.state_dir.join("images");
        Setup {
            env,
            daemon,
            port,
            images,
        }
    }

    fn s(&self) -> &Path {
        &self.daemon.socket
    }

    /// As root on the Unix socket (admin), or as the operator over TCP.
    fn call(&self, admin: bool, method: &str, path: &str, args: &[&str]) -> Reply {
        if admin {
            curl(self.s(), method, path, args)
        } else {
            curl_tcp(self.port, OP_TOKEN, method, path, args)
        }
    }

    fn define(&self, admin: bool, xml: &str) -> Reply {
        self.call(
            admin,
            "POST",
            "/v1/domains",
            &["-H", XML, "--data-binary", xml],
        )
    }

    fn post(&self, admin: bool, path: &str, body: Value) -> Reply {
        let body = body.to_string();
        self.call(admin, "POST", path, &["-H", JSON, "--data-binary", &body])
    }

    fn qmp(&self, name: &str, command: &str) -> Value {
        let r = self.post(
            true,
            &format!("/v1/domains/{name}/qmp"),
            json!({ "execute": command }),
        );
        assert_eq!(r.status, 200, "{command}: {}", r.body);
        let v = r.json();
        v.get("return").cloned().unwrap_or(v)
    }

    /// `query-block`'s `inserted` for virtio disk `dev`.
    fn inserted(&self, name: &str, dev: &str) -> Value {
        self.qmp(name, "query-block")
            .as_array()
            .unwrap()
            .iter()
            .find(|b| {
                b["qdev"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("virtio-{dev}"))
            })
            .unwrap_or_else(|| panic!("no block device for {dev}"))["inserted"]
            .clone()
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = novactl(self.s(), args);
        assert_eq!(code, 0, "novactl {args:?}: {out}{err}");
        out
    }

    fn defined(&self, name: &str) -> bool {
        curl(self.s(), "GET", &format!("/v1/domains/{name}"), &[]).status == 200
    }

    fn definition_file(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.env
                .config
                .state_dir
                .join("domains")
                .join(format!("{name}.xml")),
        )
        .unwrap_or_default()
    }
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

fn img_info(path: &Path) -> Value {
    let (ok, out) = qemu_img(&["info", "-U", "--output=json", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// The OS-less guest as XML with `devices` inside `<devices>`.
fn guest(name: &str, devices: &str) -> String {
    let xml = osless(name).to_xml();
    match xml.contains("<devices>") {
        true => xml.replace("<devices>", &format!("<devices>{devices}")),
        false => xml.replace(
            "</domain>",
            &format!("<devices>{devices}</devices></domain>"),
        ),
    }
}

fn volume_disk(pool: &str, volume: &str, format: &str, extra: &str) -> String {
    format!(
        "<disk type='volume' device='disk'><driver name='qemu' type='{format}'/>\
         <source pool='{pool}' volume='{volume}'/><target dev='vda' bus='virtio'/>{extra}</disk>"
    )
}

const IOTUNE: &str = "<iotune><total_bytes_sec>1048576</total_bytes_sec>\
    <read_iops_sec>400</read_iops_sec><write_iops_sec>300</write_iops_sec>\
    <write_iops_sec_max>600</write_iops_sec_max></iotune>";

#[test]
fn a_volume_disk_resolves_at_define_and_start_and_keeps_its_volume_in_use() {
    let st = Setup::new("");
    st.ok(&[
        "vol-create-as",
        "default",
        "web1.qcow2",
        "16M",
        "--format",
        "qcow2",
    ]);
    let web1 = st.images.join("web1.qcow2");

    // Unknown volume, unknown pool, a format the volume is not: refused naming the disk and
    // what is missing; nothing defined.
    for (pool, vol, fmt, want) in [
        (
            "default",
            "nope.qcow2",
            "qcow2",
            "volume 'nope.qcow2' does not exist in pool 'default'",
        ),
        (
            "nopool",
            "web1.qcow2",
            "qcow2",
            "pool 'nopool' does not exist",
        ),
        (
            "default",
            "web1.qcow2",
            "raw",
            "volume default/web1.qcow2 is qcow2",
        ),
    ] {
        for admin in [true, false] {
            let r = st.define(admin, &guest("vd-bad", &volume_disk(pool, vol, fmt, "")));
            assert_eq!(r.status, 400, "{r:?}");
            assert_eq!(r.error_code(), "invalid_config", "{r:?}");
            assert!(
                r.body.contains("disk vda") && r.body.contains(want),
                "{r:?}"
            );
            assert!(r.body.contains("devices.disks[0]"), "{r:?}");
            assert!(!st.defined("vd-bad"));
        }
    }

    // The operator defines a guest on the volume, with I/O limits; the definition keeps the
    // pool and volume names.
    let r = st.define(
        false,
        &guest(
            "vd-guest",
            &volume_disk("default", "web1.qcow2", "qcow2", IOTUNE),
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let stored = st.definition_file("vd-guest");
    assert!(
        stored.contains("type='volume'") && stored.contains("volume='web1.qcow2'"),
        "{stored}"
    );
    assert!(
        stored.contains("<total_bytes_sec>1048576</total_bytes_sec>"),
        "{stored}"
    );
    // A file disk whose path is inside the pool keeps working for the operator.
    let plain = st.images.join("plain.raw");
    st.ok(&["vol-create-as", "default", "plain.raw", "8M"]);
    let r = st.define(
        false,
        &guest(
            "vd-file",
            &format!(
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                plain.display()
            ),
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");

    // Defined, not running: the volume is in use by the definition.
    let r = curl(
        st.s(),
        "DELETE",
        "/v1/pools/default/volumes/web1.qcow2",
        &[],
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.body.contains("vd-guest") && r.body.contains("vda"),
        "{r:?}"
    );
    assert!(web1.exists());

    // Started: QEMU runs on the pool's file, with the limits in force before the guest ran.
    let r = st.call(false, "POST", "/v1/domains/vd-guest/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let ins = st.inserted("vd-guest", "vda");
    assert_eq!(ins["bps"], 1 << 20, "{ins}");
    assert_eq!(ins["iops_rd"], 400, "{ins}");
    assert_eq!(ins["iops_wr"], 300, "{ins}");
    assert_eq!(ins["iops_wr_max"], 600, "{ins}");
    assert_eq!(ins["drv"], "qcow2", "{ins}");
    let disks = curl(st.s(), "GET", "/v1/domains/vd-guest/disks", &[]).json();
    assert_eq!(
        disks[0]["source"],
        web1.to_str().unwrap(),
        "the running guest's disk is the pool's file: {disks}"
    );
    // The live XML and JSON keep the volume as written (libvirt's live XML does too), so
    // the running view defines back to the same disk.
    let xml = curl(st.s(), "GET", "/v1/domains/vd-guest/xml", &[]).body;
    assert!(
        xml.contains("type='volume'")
            && xml.contains("pool='default'")
            && xml.contains("volume='web1.qcow2'")
            && !xml.contains(web1.to_str().unwrap()),
        "the live XML names the volume, not its file: {xml}"
    );
    let info = curl(st.s(), "GET", "/v1/domains/vd-guest", &[]).json();
    assert_eq!(
        info["config"]["devices"]["disks"][0]["source"],
        json!({"type": "volume", "pool": "default", "volume": "web1.qcow2"}),
        "{info}"
    );
    let r = st.define(false, &xml);
    assert_eq!(r.status, 200, "the live XML defines back: {r:?}");
    let stored = st.definition_file("vd-guest");
    assert!(
        stored.contains("type='volume'") && stored.contains("volume='web1.qcow2'"),
        "{stored}"
    );
    // The live limits read back through blkdeviotune.
    let t = curl(st.s(), "GET", "/v1/domains/vd-guest/disks/vda/iotune", &[]).json();
    assert_eq!(t["total_bytes_sec"], 1 << 20, "{t}");
    let r = curl(
        st.s(),
        "DELETE",
        "/v1/pools/default/volumes/web1.qcow2",
        &[],
    );
    assert_eq!(r.status, 409, "{r:?}");

    // Hot-plugged, a volume disk is its file too, with its limits before it is reported.
    st.ok(&["vol-create-as", "default", "data.raw", "8M"]);
    let hot = "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
        <source pool='default' volume='data.raw'/><target dev='vdb' bus='virtio'/>\
        <iotune><write_bytes_sec>524288</write_bytes_sec></iotune></disk>";
    let missing = hot.replace("data.raw", "none.raw");
    let r = st.post(
        false,
        "/v1/domains/vd-guest/disks",
        json!({"xml": missing, "live": true}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("volume 'none.raw' does not exist"), "{r:?}");
    let r = st.post(
        false,
        "/v1/domains/vd-guest/disks",
        json!({"xml": hot, "live": true}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.json()["source"],
        st.images.join("data.raw").to_str().unwrap(),
        "{r:?}"
    );
    assert_eq!(st.inserted("vd-guest", "vdb")["bps_wr"], 524288);
    let xml = curl(st.s(), "GET", "/v1/domains/vd-guest/xml", &[]).body;
    assert!(
        xml.contains("volume='data.raw'")
            && !xml.contains(st.images.join("data.raw").to_str().unwrap()),
        "a hot-plugged volume disk shows its volume live: {xml}"
    );
    let r = curl(st.s(), "POST", "/v1/domains/vd-guest/destroy", &[]);
    assert_eq!(r.status, 200, "{r:?}");

    // The next start resolves again: a volume gone since define is named, nothing started.
    let gone = st.images.join("gone.qcow2");
    st.ok(&[
        "vol-create-as",
        "default",
        "gone.qcow2",
        "8M",
        "--format",
        "qcow2",
    ]);
    let r = st.define(
        false,
        &guest(
            "vd-gone",
            &volume_disk("default", "gone.qcow2", "qcow2", ""),
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    std::fs::remove_file(&gone).unwrap();
    let r = st.call(false, "POST", "/v1/domains/vd-gone/start", &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body.contains("disk vda") && r.body.contains("volume 'gone.qcow2' does not exist"),
        "{r:?}"
    );
    let info = curl(st.s(), "GET", "/v1/domains/vd-gone", &[]).json();
    assert_eq!(info["state"], "shutoff", "{info}");

    // Undefined, the volume is free again.
    let r = curl(st.s(), "DELETE", "/v1/domains/vd-guest", &[]);
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    let r = curl(
        st.s(),
        "DELETE",
        "/v1/pools/default/volumes/web1.qcow2",
        &[],
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert!(!web1.exists());
}

#[test]
fn iotune_set_with_config_persists_and_applies_at_start() {
    let st = Setup::new("");
    st.ok(&["vol-create-as", "default", "t.raw", "8M"]);
    let path = st.images.join("t.raw");
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        path.display()
    );
    let r = st.define(false, &guest("tune", &disk));
    assert_eq!(r.status, 201, "{r:?}");
    let before = st.definition_file("tune");

    // What QEMU would refuse is refused here, naming the field; the definition is untouched.
    for (body, field) in [
        (
            json!({"config": true, "total_bytes_sec": 10, "read_bytes_sec": 5}),
            "total_bytes_sec",
        ),
        (
            json!({"config": true, "read_iops_sec": 1_000_000_000_000_001u64}),
            "read_iops_sec",
        ),
        (
            json!({"config": true, "write_bytes_sec": 100, "write_bytes_sec_max": 50}),
            "write_bytes_sec_max",
        ),
        (
            json!({"config": true, "total_iops_sec_max": 50}),
            "total_iops_sec_max",
        ),
        (
            json!({"config": true, "size_iops_sec": 512}),
            "size_iops_sec",
        ),
    ] {
        let r = st.call(
            false,
            "PUT",
            "/v1/domains/tune/disks/vda/iotune",
            &["-H", JSON, "--data-binary", &body.to_string()],
        );
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.body.contains(field), "{body}: {r:?}");
        assert_eq!(st.definition_file("tune"), before);
    }

    // --config on the stopped guest: into the definition, read back while stopped.
    let body = json!({"config": true, "write_bytes_sec": 2 * MIB, "total_iops_sec": 150});
    let r = st.call(
        false,
        "PUT",
        "/v1/domains/tune/disks/vda/iotune",
        &["-H", JSON, "--data-binary", &body.to_string()],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let stored = st.definition_file("tune");
    assert!(
        stored.contains("<write_bytes_sec>2097152</write_bytes_sec>")
            && stored.contains("<total_iops_sec>150</total_iops_sec>"),
        "{stored}"
    );
    let (code, out, err) = novactl(st.s(), &["--json", "blkdeviotune", "tune", "vda"]);
    assert_eq!(code, 0, "{out}{err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["write_bytes_sec"], 2 * MIB, "{t}");

    // Started: in force in QEMU.
    let r = curl(st.s(), "POST", "/v1/domains/tune/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let ins = st.inserted("tune", "vda");
    assert_eq!(ins["bps_wr"], 2 * MIB, "{ins}");
    assert_eq!(ins["iops"], 150, "{ins}");
    assert_eq!(ins["bps"], 0, "{ins}");

    // --live only: QEMU changes, the definition keeps its limits; the live XML shows them.
    let body = json!({"live": true, "total_bytes_sec": 3 * MIB});
    let r = curl(
        st.s(),
        "PUT",
        "/v1/domains/tune/disks/vda/iotune",
        &["-H", JSON, "--data-binary", &body.to_string()],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(st.inserted("tune", "vda")["bps"], 3 * MIB);
    assert!(st
        .definition_file("tune")
        .contains("<write_bytes_sec>2097152</write_bytes_sec>"));
    let live = curl(st.s(), "GET", "/v1/domains/tune/xml", &[]);
    assert!(
        live.body
            .contains("<total_bytes_sec>3145728</total_bytes_sec>"),
        "{}",
        live.body
    );
}

/// A 64 MiB raw file with data in three places and holes between.
fn sample(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(64 * MIB).unwrap();
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&block, 0).unwrap();
    f.write_all_at(&block, 10 * MIB).unwrap();
    f.write_all_at(b"the end", 64 * MIB - 7).unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn import(st: &Setup, admin: bool, name: &str, body: Value) -> Reply {
    st.post(
        admin,
        &format!("/v1/pools/default/volumes/{name}/import"),
        body,
    )
}

#[test]
fn import_copies_sparse_moves_and_refuses_hostile_paths() {
    let bus_dir = tempfile::tempdir().unwrap();
    let bus = common::bus::PrivateBus::start(bus_dir.path());
    let st = Setup::new(&format!("[dbus]\naddress = {:?}\n", bus.address));
    let img = st.images.clone();
    let outside = st.env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let src = outside.join("big.raw");
    sample(&src);
    let incoming = img.join("incoming");
    std::fs::create_dir(&incoming).unwrap();

    // Hostile paths and files, as the operator: refused with the field named, nothing made.
    let before = listing(&img);
    std::os::unix::fs::symlink(&src, incoming.join("link.raw")).unwrap();
    let data_file = incoming.join("data.qcow2");
    let (ok, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", outside.join("data.bin").display()),
        data_file.to_str().unwrap(),
        "8M",
    ]);
    assert!(ok, "{out}");
    let over_outside = incoming.join("over.qcow2");
    let (ok, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        src.to_str().unwrap(),
        over_outside.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    std::fs::create_dir(incoming.join("adir")).unwrap();
    nix::unistd::mkfifo(
        &incoming.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let raw_in = incoming.join("in.raw");
    std::fs::write(&raw_in, vec![7u8; 4096]).unwrap();
    for (path, status, want) in [
        (src.display().to_string(), 403, "outside the storage roots"),
        ("relative/x.raw".into(), 400, "not an absolute path"),
        (format!("{}/../outside/big.raw", img.display()), 400, "'..'"),
        (
            incoming.join("link.raw").display().to_string(),
            400,
            "symbolic link",
        ),
        (data_file.display().to_string(), 400, "external data file"),
        (
            over_outside.display().to_string(),
            403,
            "outside the storage roots",
        ),
        (
            incoming.join("adir").display().to_string(),
            400,
            "not a regular file",
        ),
        (
            incoming.join("fifo").display().to_string(),
            400,
            "not a regular file",
        ),
        (
            incoming.join("missing.raw").display().to_string(),
            400,
            "does not exist",
        ),
    ] {
        let r = import(&st, false, "new.img", json!({"path": path}));
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert!(r.body.contains(want), "{path}: {r:?}");
        assert_eq!(listing(&img), before, "{path} left something in the pool");
    }
    // Bad names and formats.
    let r = import(&st, false, ".hidden", json!({"path": raw_in}));
    assert_eq!(r.status, 400, "{r:?}");
    let r = import(
        &st,
        false,
        "x.qcow2",
        json!({"path": raw_in, "format": "qcow2"}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("is raw, not qcow2"), "{r:?}");
    assert_eq!(listing(&img), before);

    // The operator imports a file inside the roots: copied, the original stays.
    let r = import(
        &st,
        false,
        "in.raw",
        json!({"path": raw_in, "format": "raw"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(std::fs::read(img.join("in.raw")).unwrap(), vec![7u8; 4096]);
    assert!(raw_in.exists());
    // A name that exists is refused, the volume untouched.
    let r = import(&st, true, "in.raw", json!({"path": src}));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("already exists"), "{r:?}");
    assert_eq!(std::fs::metadata(img.join("in.raw")).unwrap().len(), 4096);

    // An admin imports from anywhere: a sparse copy, byte for byte.
    let out = st.ok(&[
        "--json",
        "vol-import",
        "default",
        "big.raw",
        src.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "raw", "{v}");
    assert_eq!(v["capacity"], 64 * MIB, "{v}");
    let big = img.join("big.raw");
    let (same, out) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        src.to_str().unwrap(),
        big.to_str().unwrap(),
    ]);
    assert!(same, "{out}");
    let allocated = std::fs::metadata(&big).unwrap().blocks() * 512;
    assert!(
        allocated < 4 * MIB,
        "the copy allocated {allocated} bytes: holes were filled"
    );
    assert!(src.exists());

    // In the background (?wait=false) the copy reports its bytes with the operation: never
    // more than the file, never going back, all of it once done; novactl shows them.
    let r = st.post(
        true,
        "/v1/pools/default/volumes/bg.raw/import?wait=false",
        json!({"path": src}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut last = 0;
    let op = loop {
        let op = curl(st.s(), "GET", &format!("/v1/operations/{id}"), &[]).json();
        if let Some(p) = op.get("progress") {
            let done = p["done_bytes"].as_u64().unwrap();
            assert_eq!(p["total_bytes"], 64 * MIB, "{op}");
            assert!(done >= last && done <= 64 * MIB, "{op}");
            last = done;
        }
        if op["status"] != "running" {
            break op;
        }
        assert!(std::time::Instant::now() < deadline, "{op}");
        std::thread::yield_now();
    };
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(
        op["progress"],
        json!({"done_bytes": 64 * MIB, "total_bytes": 64 * MIB}),
        "{op}"
    );
    let shown = st.ok(&["operation", &id]);
    assert!(shown.contains("(64.0 of 64.0 MiB, 100%)"), "{shown}");
    let r = curl(st.s(), "DELETE", "/v1/pools/default/volumes/bg.raw", &[]);
    assert_eq!(r.status, 204, "{r:?}");

    // A qcow2 overlay with a relative backing name inside the roots: the volume names its
    // base absolutely, and reads the same.
    let base = incoming.join("base.raw");
    sample(&base);
    let over = incoming.join("over-rel.qcow2");
    let (ok, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "base.raw",
        over.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let r = import(&st, false, "over.qcow2", json!({"path": over}));
    assert_eq!(r.status, 201, "{r:?}");
    let i = img_info(&img.join("over.qcow2"));
    assert_eq!(i["backing-filename"], base.to_str().unwrap(), "{i}");
    let (same, out) = qemu_img(&[
        "compare",
        "-F",
        "qcow2",
        "-f",
        "raw",
        base.to_str().unwrap(),
        img.join("over.qcow2").to_str().unwrap(),
    ]);
    assert!(same, "{out}");

    // --move on the same file system: a rename (same inode), the original gone.
    let mv = outside.join("move-me.qcow2");
    let (ok, out) = qemu_img(&["create", "-q", "-f", "qcow2", mv.to_str().unwrap(), "32M"]);
    assert!(ok, "{out}");
    let ino = std::fs::metadata(&mv).unwrap().ino();
    let r = import(&st, true, "moved.qcow2", json!({"path": mv, "move": true}));
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!mv.exists());
    assert_eq!(
        std::fs::metadata(img.join("moved.qcow2")).unwrap().ino(),
        ino
    );
    let (ok, out) = qemu_img(&["check", img.join("moved.qcow2").to_str().unwrap()]);
    assert!(ok, "{out}");

    // A file a domain uses is not moved away from it.
    let used = incoming.join("used.raw");
    std::fs::write(&used, vec![1u8; 4096]).unwrap();
    let r = st.define(
        true,
        &guest(
            "imp-user",
            &format!(
                "<disk type='file' device='disk'><source file='{}'/>\
                 <target dev='vda' bus='virtio'/></disk>",
                used.display()
            ),
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = import(&st, true, "used.raw", json!({"path": used, "move": true}));
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("imp-user"), "{r:?}");
    assert!(used.exists() && !img.join("used.raw").exists());

    // D-Bus: the same operation behind Manager.ImportVolume.
    common::bus::wait_for_bus_name(&bus.address);
    let out = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "call",
            "org.novacron1",
            "/org/novacron1",
            "org.novacron1.Manager",
            "ImportVolume",
            "sssb",
            "default",
            "bus.raw",
            raw_in.to_str().unwrap(),
            "false",
        ])
        .output()
        .expect("busctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(img.join("bus.raw")).unwrap(), vec![7u8; 4096]);

    // Audited, successes and refusals alike, under pool/volume.
    let trail = audited(&st.env, |o| o == "vol-import");
    for (target, result) in [
        ("default/big.raw", "ok"),
        ("default/in.raw", "ok"),
        ("default/moved.qcow2", "ok"),
        ("default/bus.raw", "ok"),
        ("default/new.img", "forbidden"),
        ("default/used.raw", "busy"),
    ] {
        assert!(
            trail.iter().any(|(_, t, r, _)| t == target && r == result),
            "{target} {result} not audited: {trail:?}"
        );
    }

    // An import a dead daemon left half-way is only a hidden temporary file, removed at the
    // next start; it was never a volume.
    let leftover = img.join(".novacron-import-123-0-0");
    std::fs::write(&leftover, b"partial").unwrap();
    let vols = curl(st.s(), "GET", "/v1/pools/default/volumes", &[]).json();
    assert!(!vols.to_string().contains(".novacron-import"), "{vols}");
    let Setup { env, daemon, .. } = st;
    drop(daemon);
    let _again = env.start_daemon("");
    assert!(
        !leftover.exists(),
        "the temporary file of an unfinished import stayed"
    );
    assert!(img.join("big.raw").exists());
}
