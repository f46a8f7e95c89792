//! Reverting to a snapshot and what comes after it, on a real novacrond and real QEMU (an
//! OS-less q35 guest, KVM where the host runs it):
//!
//! - deleting the current snapshot after a revert is an active commit of the revert's fresh
//!   overlay into the snapshot's file (a raw disk: QEMU's write permission on it comes after
//!   the reopen, and met the lock of the read-only descriptor the start left in its fd set):
//!   it succeeds with a RAM snapshot reverted in a new QEMU and with a disk-only one reverted
//!   while stopped and then started; paused, QEMU 7.2 cannot drop that descriptor, so the
//!   deletion is refused with the reason and rolled back (no journal blocks the next try);
//! - a NIC hot-added before a RAM snapshot is in its device set: the revert's QEMU has it at
//!   the same root port on a fresh tap, one added after the snapshot is gone, a restarted
//!   daemon knows it, and a second generation (hotplug, snapshot, revert) keeps both; on an
//!   i440fx guest (no root ports) it comes back at its recorded slot on pci.0 and the load
//!   goes through;
//! - a revert whose load fails (the RAM file cut short) leaves the domain stopped on the disks
//!   it had (nothing written lost), restartable, with QEMU's reason; a restart removes the
//!   overlays of a revert cut short;
//! - a middle snapshot merges into a raw base a start opened read-only, which is read-only
//!   again afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::http::{call, define, ok, qmp, state};
use common::*;
use serde_json::{json, Value};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img info --backing-chain` of `top`: the file names, top first.
fn chain(top: &str) -> Vec<String> {
    let out = run(
        "qemu-img",
        &["info", "-U", "--backing-chain", "--output=json", top],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["filename"].as_str().unwrap().to_owned())
        .collect()
}

/// The persistent definition's first disk (as the next start uses it).
fn defined_disk(env: &Env, domain: &str) -> String {
    let dir = env.config.state_dir.join("domains");
    let x = std::fs::read_to_string(dir.join(format!("{domain}.xml"))).expect("definition");
    let i = x.find("<source file='").expect("source") + "<source file='".len();
    x[i..i + x[i..].find('\'').unwrap()].to_owned()
}

fn snap_dir(env: &Env, domain: &str) -> PathBuf {
    env.config.state_dir.join("snapshots").join(domain)
}

fn tree_json(env: &Env, domain: &str) -> Value {
    serde_json::from_slice(&std::fs::read(snap_dir(env, domain).join("tree.json")).unwrap())
        .unwrap()
}

fn images(env: &Env) -> PathBuf {
    let d = env.config.state_dir.join("images");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Defines `name`: a q35 OS-less guest (KVM where the host runs it), 64 MiB, one vCPU, a
/// virtio qcow2 disk made for it and `devices`; returns the disk's path.
fn define_osless(env: &Env, s: &Path, name: &str, format: &str, devices: &str) -> PathBuf {
    let image = images(env).join(format!("{name}.{format}"));
    run(
        "qemu-img",
        &["create", "-q", "-f", format, image.to_str().unwrap(), "16M"],
    );
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    define(
        s,
        &format!(
            "<domain type='{virt}'><name>{name}</name><memory unit='MiB'>64</memory>
               <vcpu>1</vcpu>
               <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
               <devices><disk type='file' device='disk'><driver name='qemu' type='{format}'/>
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>{devices}</devices>
             </domain>",
            image.display()
        ),
    );
    image
}

/// Deletes the current snapshot `snap` of the running `name` (an active commit of the disk's
/// top into `image`) and checks the disk ends on `image` alone, in QEMU and in the definition.
fn delete_current(env: &Env, s: &Path, name: &str, snap: &str, image: &Path) {
    let image = image.display().to_string();
    let top = defined_disk(env, name);
    assert_eq!(chain(&top), [top.clone(), image.clone()]);
    let r = call(
        s,
        "DELETE",
        &format!("/v1/domains/{name}/snapshots/{snap}"),
        None,
    );
    assert_eq!(
        r.status, 204,
        "deleting {snap} after the revert: {}",
        r.body
    );
    assert_eq!(defined_disk(env, name), image);
    assert!(!Path::new(&top).exists(), "the merged overlay {top} stays");
    let files: Vec<String> = qmp(s, name, "query-block")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["inserted"]["file"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(qmp(s, name, "query-status")["status"], "running");
    let tree = tree_json(env, name);
    assert!(tree["snapshots"].get(snap).is_none(), "{tree}");
    assert!(tree["journal"].is_null(), "{tree}");
}

/// A RAM snapshot reverted in a new QEMU, then deleted while it is the current one: the
/// revert's overlay is committed into the snapshot's file (QEMU's 'Failed to get "write"
/// lock' here once, in the RAM snapshot bench).
#[test]
fn the_current_ram_snapshot_deletes_after_a_revert() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-ram";
    let image = define_osless(&env, &s, name, "raw", "");
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let snaps = format!("/v1/domains/{name}/snapshots");
    ok(
        &s,
        "POST",
        &snaps,
        Some(&json!({ "name": "m1", "memory": "paused" })),
    );
    let pid = recorded_pid(&env, name);
    ok(&s, "POST", &format!("{snaps}/m1/revert"), None);
    assert_ne!(recorded_pid(&env, name), pid);
    assert_eq!(state(&s, name), "running");
    delete_current(&env, &s, name, "m1", &image);
    assert!(!snap_dir(&env, name).join("m1.ram").exists());
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
}

/// A disk-only snapshot, reverted while the guest is stopped, the guest started, then the
/// snapshot deleted while current (the start opened the snapshot's file as a backing image).
#[test]
fn the_current_disk_snapshot_deletes_after_a_stopped_revert_and_a_start() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-disk";
    let image = define_osless(&env, &s, name, "raw", "");
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let snaps = format!("/v1/domains/{name}/snapshots");
    ok(&s, "POST", &snaps, Some(&json!({ "name": "d1" })));
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
    ok(&s, "POST", &format!("{snaps}/d1/revert"), None);
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    // Paused, QEMU 7.2 keeps the image's read-only descriptor open: refused, explained, and
    // rolled back (no journal left to block the next try).
    ok(&s, "POST", &format!("/v1/domains/{name}/suspend"), None);
    let top = defined_disk(&env, name);
    let r = call(&s, "DELETE", &format!("{snaps}/d1"), None);
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("the guest is paused"), "{}", r.body);
    let tree = tree_json(&env, name);
    assert!(tree["journal"].is_null(), "{tree}");
    assert!(tree["snapshots"].get("d1").is_some(), "{tree}");
    assert_eq!(defined_disk(&env, name), top);
    assert_eq!(chain(&top), [top.clone(), image.display().to_string()]);
    ok(&s, "POST", &format!("/v1/domains/{name}/resume"), None);
    delete_current(&env, &s, name, "d1", &image);
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
}

/// A bridge this test made (`t<pid><tag>rv`: the tests of this binary run side by side),
/// removed whatever happens.
struct Bridge(String);

impl Bridge {
    fn new(tag: &str) -> Bridge {
        let name = format!("t{}{tag}rv", std::process::id());
        run("ip", &["link", "add", &name, "type", "bridge"]);
        let br = Bridge(name);
        run("ip", &["link", "set", &br.0, "up"]);
        br
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// `ip -j -d link` facts of one link, or None.
fn link(name: &str) -> Option<Value> {
    let out = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
        .expect("ip");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.get(0).cloned())
}

/// (id, type, parent bus) of every device QEMU has under `/machine/peripheral`.
fn peripherals(s: &Path, name: &str) -> Vec<(String, String, String)> {
    let qmp_with = |execute: &str, arguments: Value| {
        ok(
            s,
            "POST",
            &format!("/v1/domains/{name}/qmp"),
            Some(&json!({ "execute": execute, "arguments": arguments })),
        )["return"]
            .clone()
    };
    let mut out: Vec<_> = qmp_with("qom-list", json!({ "path": "/machine/peripheral" }))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let kind = p["type"]
                .as_str()?
                .strip_prefix("child<")?
                .strip_suffix('>')?;
            let id = p["name"].as_str()?.to_owned();
            let bus = qmp_with(
                "qom-get",
                json!({ "path": format!("/machine/peripheral/{id}"), "property": "parent_bus" }),
            );
            Some((
                id,
                kind.to_owned(),
                bus.as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    out.sort();
    out
}

fn nics(s: &Path, name: &str) -> Vec<Value> {
    ok(s, "GET", &format!("/v1/domains/{name}/interfaces"), None)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A NIC hot-added (`attach-interface --live`, a tap on a bridge) before a RAM snapshot is in
/// the snapshot's device set: the revert's new QEMU has it at the same root port (QEMU would
/// refuse the state otherwise), on a fresh tap on the same bridge, and the daemon lists it.
/// One hot-added after the snapshot is gone after the revert, its tap too.
#[test]
fn a_ram_snapshot_after_a_nic_hotplug_reverts_with_the_nic() {
    let env = Env::new();
    let bridge = Bridge::new("n");
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-nic";
    define_osless(&env, &s, name, "qcow2", "");
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let nic = ok(
        &s,
        "POST",
        &format!("/v1/domains/{name}/interfaces"),
        Some(
            &json!({ "type": "bridge", "source": bridge.0, "mac": "52:54:00:aa:01:01", "live": true }),
        ),
    );
    let first_tap = nic["ifname"].as_str().expect("ifname").to_owned();
    let before = peripherals(&s, name);
    assert!(
        before
            .iter()
            .any(|(id, kind, _)| id == "net0" && kind == "virtio-net-pci"),
        "{before:?}"
    );
    let snaps = format!("/v1/domains/{name}/snapshots");
    ok(
        &s,
        "POST",
        &snaps,
        Some(&json!({ "name": "n1", "memory": "paused" })),
    );
    // A second NIC after the snapshot: not in its device set.
    let second = ok(
        &s,
        "POST",
        &format!("/v1/domains/{name}/interfaces"),
        Some(
            &json!({ "type": "bridge", "source": bridge.0, "mac": "52:54:00:aa:01:02", "live": true }),
        ),
    );
    let second_tap = second["ifname"].as_str().expect("ifname").to_owned();
    assert_eq!(nics(&s, name).len(), 2);

    let pid = recorded_pid(&env, name);
    let r = call(&s, "POST", &format!("{snaps}/n1/revert"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_ne!(recorded_pid(&env, name), pid);
    assert_eq!(qmp(&s, name, "query-status")["status"], "running");
    // QEMU's devices are the snapshot's: the first NIC at its root port, not the second.
    assert_eq!(peripherals(&s, name), before);
    let listed = nics(&s, name);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["mac"], "52:54:00:aa:01:01", "{listed:?}");
    let tap = listed[0]["ifname"].as_str().expect("a tap").to_owned();
    let facts = link(&tap).expect("the reverted guest's tap");
    assert_eq!(facts["master"], bridge.0.as_str(), "{facts}");
    // The old QEMU's taps went with it (the second NIC's for good).
    if second_tap != tap {
        assert!(link(&second_tap).is_none(), "{second_tap} stayed");
    }
    if first_tap != tap {
        assert!(link(&first_tap).is_none(), "{first_tap} stayed");
    }
    // A restarted daemon knows the reverted guest's NIC.
    drop(d);
    let d = env.start_daemon("");
    let s = d.socket.clone();
    assert_eq!(nics(&s, name), listed);
    // The reverted guest takes another NIC (a free root port and slot beside the replayed
    // one), and a snapshot of it reverts with both.
    ok(
        &s,
        "POST",
        &format!("/v1/domains/{name}/interfaces"),
        Some(
            &json!({ "type": "bridge", "source": bridge.0, "mac": "52:54:00:aa:01:03", "live": true }),
        ),
    );
    let two = peripherals(&s, name);
    assert_eq!(two.len(), before.len() + 1, "{two:?}");
    ok(
        &s,
        "POST",
        &snaps,
        Some(&json!({ "name": "n2", "memory": "paused" })),
    );
    let r = call(&s, "POST", &format!("{snaps}/n2/revert"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(qmp(&s, name, "query-status")["status"], "running");
    assert_eq!(peripherals(&s, name), two);
    let listed = nics(&s, name);
    let macs: Vec<&str> = listed.iter().filter_map(|n| n["mac"].as_str()).collect();
    assert_eq!(
        macs,
        ["52:54:00:aa:01:01", "52:54:00:aa:01:03"],
        "{listed:?}"
    );
    let taps: Vec<String> = listed
        .iter()
        .map(|n| n["ifname"].as_str().expect("a tap").to_owned())
        .collect();
    for t in &taps {
        assert_eq!(link(t).expect("tap")["master"], bridge.0.as_str());
    }
    // The definition never had them (live only); the taps go with the guest.
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
    assert_eq!(nics(&s, name), Vec::<Value>::new());
    for t in &taps {
        assert!(link(t).is_none(), "{t} stayed after destroy");
    }
}

/// `qemu-io` on a running guest's disk device (its QOM path), through QEMU's monitor.
fn qemu_io(s: &Path, name: &str, device: &str, command: &str) {
    let r = ok(
        s,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        Some(&json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": format!("qemu-io -d {device} \"{command}\"") }
        })),
    );
    let out = r["return"].as_str().unwrap_or_default();
    // Its report goes to QEMU's stdout; the monitor gets errors only.
    assert!(out.trim().is_empty(), "{out}");
}

/// Reads `len` bytes at `offset` of `image` (through its chain) and checks they are all
/// `pattern`.
fn reads_pattern(image: &str, pattern: u8, offset: u64, len: &str) -> bool {
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

/// A revert whose load fails for real (the snapshot's RAM file cut short): the old guest is
/// gone (as with libvirt, a revert replaces it), but the domain is left consistent and
/// restartable: stopped, its definition and tree on the disks it had before the revert (what
/// the guest wrote after the snapshot is still there), no fresh overlay left behind, the
/// snapshot kept, an error naming the snapshot with QEMU's own words, and the domain's job
/// free for the next call (a start that runs).
#[test]
fn a_revert_whose_load_fails_leaves_a_stopped_restartable_domain() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-bad";
    let image = define_osless(&env, &s, name, "qcow2", "");
    // Written before the snapshot (it must survive everything).
    run(
        "qemu-io",
        &["-c", "write -P 0x11 0 64k", image.to_str().unwrap()],
    );
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let snaps = format!("/v1/domains/{name}/snapshots");
    let v = ok(
        &s,
        "POST",
        &snaps,
        Some(&json!({ "name": "c1", "memory": "paused" })),
    );
    let ram = v["memory_file"].as_str().unwrap().to_owned();
    // Written by the guest's disk after the snapshot (into its active overlay; not flushed:
    // QEMU's clean exit must write what it still caches).
    qemu_io(
        &s,
        name,
        "/machine/peripheral/virtio-vda/virtio-backend",
        "write -P 0x22 1M 64k",
    );
    let active = defined_disk(&env, name);
    let tree_before = tree_json(&env, name);
    let images_before: Vec<String> = std::fs::read_dir(images(&env))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();

    // The state file cut to half: QEMU fails the load part-way.
    let len = std::fs::metadata(&ram).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ram)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = call(&s, "POST", &format!("{snaps}/c1/revert"), None);
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("snapshot 'c1'"), "{message}");
    // QEMU's own words (from its log: QMP's error-desc is empty for a failed load).
    assert!(message.contains("load of migration failed"), "{message}");

    // Stopped, on the disks it had: the write after the snapshot is there.
    assert_eq!(state(&s, name), "shutoff");
    assert!(!env.record(name).exists());
    assert_eq!(defined_disk(&env, name), active);
    for f in chain(&active) {
        assert!(Path::new(&f).exists(), "{f}");
    }
    assert!(reads_pattern(&active, 0x11, 0, "64k"));
    assert!(reads_pattern(&active, 0x22, 1 << 20, "64k"));
    let tree = tree_json(&env, name);
    assert_eq!(tree["active"], tree_before["active"], "{tree}");
    assert_eq!(tree["current"], "c1", "{tree}");
    assert!(tree["snapshots"].get("c1").is_some(), "{tree}");
    assert!(
        tree.get("pending_revert").is_none_or(Value::is_null),
        "{tree}"
    );
    let mut images_after: Vec<String> = std::fs::read_dir(images(&env))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut images_before = images_before;
    images_before.sort();
    images_after.sort();
    assert_eq!(images_after, images_before, "no fresh overlay left behind");

    // The job is free and the domain starts (cold, from the disks it had).
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    assert_eq!(qmp(&s, name, "query-status")["status"], "running");
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);

    // A daemon that died during a revert's load left its fresh overlays pending: the next
    // one removes them (its incoming QEMU is discarded; the disks are the ones it had).
    // (An overlay made over c1's file, as the revert makes it: recovery removes only such.)
    drop(d);
    let stray = images(&env).join("rv-bad.vda.c1.r9.qcow2");
    let mut tree = tree_json(&env, name);
    let frozen = tree["snapshots"]["c1"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &frozen,
            "-F",
            "qcow2",
            stray.to_str().unwrap(),
        ],
    );
    tree["pending_revert"] = json!({
        "snapshot": "c1",
        "overlays": [stray.display().to_string()],
        "backing": { stray.display().to_string(): frozen },
    });
    std::fs::write(snap_dir(&env, name).join("tree.json"), tree.to_string()).unwrap();
    let d = env.start_daemon("");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stray.exists() || tree_json(&env, name).get("pending_revert").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the interrupted revert was not rolled back: {}",
            tree_json(&env, name)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(defined_disk(&env, name), active);
    assert!(Path::new(&active).exists());
    drop(d);
}

/// A commit into a raw base below another image, all opened by a start: the middle snapshot's
/// deletion merges its file into the base (refused before over the start's read-only
/// descriptor's lock, as the active commit was), and the base is read-only in QEMU again
/// afterwards, its read-write descriptor gone.
#[test]
fn a_middle_snapshot_merges_into_a_raw_base_opened_at_start() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-mid";
    let image = define_osless(&env, &s, name, "raw", "");
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let snaps = format!("/v1/domains/{name}/snapshots");
    ok(&s, "POST", &snaps, Some(&json!({ "name": "a" })));
    ok(&s, "POST", &snaps, Some(&json!({ "name": "b" })));
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let top = defined_disk(&env, name);
    assert_eq!(chain(&top).len(), 3);
    let r = call(&s, "DELETE", &format!("{snaps}/a"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(chain(&top), [top.clone(), image.display().to_string()]);
    let nodes = ok(
        &s,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        Some(&json!({"execute": "query-named-block-nodes", "arguments": {"flat": true}})),
    )["return"]
        .clone();
    let base = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["drv"] == "raw")
        .unwrap_or_else(|| panic!("no raw node: {nodes}"));
    assert_eq!(
        base["ro"], true,
        "the base stays read-write in QEMU: {base}"
    );
    let sets = qmp(&s, name, "query-fdsets").to_string();
    assert!(!sets.contains("snapshot-commit-base"), "{sets}");
    assert_eq!(qmp(&s, name, "query-status")["status"], "running");
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
}

/// `(slot, qdev id)` of every device on QEMU's bus 0 (`query-pci`), sorted.
fn root_bus(s: &Path, name: &str) -> Vec<(u64, String)> {
    let mut out: Vec<_> = qmp(s, name, "query-pci")[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["slot"].as_u64().unwrap_or_default(),
                d["qdev_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// An i440fx (`pc`) guest has no root ports: a NIC hot-added before a RAM snapshot sits on
/// pci.0 at the slot QEMU had free then, after the video card and the balloon placed at
/// start. The revert's new QEMU gets the NIC on its command line with the guest's NICs
/// (before those devices): only at its recorded slot does every device keep the address
/// that names its state in the stream, so the load goes through and bus 0 is as it was.
#[test]
fn an_i440fx_guests_ram_snapshot_after_a_nic_hotplug_reverts() {
    let env = Env::new();
    let bridge = Bridge::new("p");
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let name = "rv-pc";
    let image = images(&env).join(format!("{name}.qcow2"));
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
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    define(
        &s,
        &format!(
            "<domain type='{virt}'><name>{name}</name><memory unit='MiB'>64</memory>
               <vcpu>1</vcpu>
               <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>
               <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>
                 <video><model type='cirrus'/></video><memballoon model='virtio'/></devices>
             </domain>",
            image.display()
        ),
    );
    ok(&s, "POST", &format!("/v1/domains/{name}/start"), None);
    let started = root_bus(&s, name);
    ok(
        &s,
        "POST",
        &format!("/v1/domains/{name}/interfaces"),
        Some(
            &json!({ "type": "bridge", "source": bridge.0, "mac": "52:54:00:aa:02:01", "live": true }),
        ),
    );
    let before = root_bus(&s, name);
    let slot = before
        .iter()
        .find(|(_, id)| !started.iter().any(|(_, s)| s == id))
        .map(|(slot, _)| *slot)
        .expect("the hot-added NIC on pci.0");
    // Above every device placed at start: given first without its slot, it would take one
    // of theirs.
    assert!(
        started.iter().all(|(s, _)| *s < slot),
        "{started:?} {before:?}"
    );

    let snaps = format!("/v1/domains/{name}/snapshots");
    ok(
        &s,
        "POST",
        &snaps,
        Some(&json!({ "name": "p1", "memory": "paused" })),
    );
    let pid = recorded_pid(&env, name);
    let r = call(&s, "POST", &format!("{snaps}/p1/revert"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_ne!(recorded_pid(&env, name), pid);
    assert_eq!(qmp(&s, name, "query-status")["status"], "running");
    assert_eq!(root_bus(&s, name), before);
    let listed = nics(&s, name);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["mac"], "52:54:00:aa:02:01", "{listed:?}");
    let tap = listed[0]["ifname"].as_str().expect("a tap").to_owned();
    assert_eq!(link(&tap).expect("the tap")["master"], bridge.0.as_str());
    // The disk runs on the revert's overlay over the snapshot's file.
    let top = defined_disk(&env, name);
    let frozen = tree_json(&env, name)["snapshots"]["p1"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chain(&top), [top.clone(), frozen]);
    ok(&s, "POST", &format!("/v1/domains/{name}/destroy"), None);
}
