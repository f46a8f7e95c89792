//! A daemon killed (`kill -9`) while taking a disk snapshot of a running guest, at exactly
//! the two points that matter (the daemon's test hold points, debug builds): after QEMU's
//! `transaction` switched the disk to its overlay but before the tree and the definition say
//! so, and after the overlay node was added but before the transaction. Between the kill and
//! the restart the test writes into the guest's disk through QEMU's own monitor (the guest
//! keeps running without the daemon); the restarted daemon must finish the first (the write
//! survives a cold boot) and roll back the second (no overlay left, the definition unchanged,
//! the write in the base the guest boots from).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, Daemon};
use common::http::{call, qmp_args};
use common::*;
use serde_json::{json, Value};

const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] for the daemon logging to `log` (shown on a timeout).
fn wait_daemon(log: &Path, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the daemon logged:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn guest_xml(name: &str, image: &Path) -> String {
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{virt}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices>
         </domain>",
        image.display()
    )
}

fn tree_json(env: &Env, domain: &str) -> Value {
    let p = env
        .config
        .state_dir
        .join("snapshots")
        .join(domain)
        .join("tree.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The persistent definition's disk (as the next start uses it).
fn defined_disk(env: &Env, domain: &str) -> String {
    let dir = env.config.state_dir.join("domains");
    let x = std::fs::read_to_string(dir.join(format!("{domain}.xml"))).expect("definition");
    let i = x.find("<source file='").expect("source") + "<source file='".len();
    x[i..i + x[i..].find('\'').unwrap()].to_owned()
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

/// Whether `len` bytes at 0 of `image` (through its chain) are all `pattern`.
fn reads_pattern(image: &str, pattern: u8, len: &str) -> bool {
    Command::new("qemu-io")
        .args([
            "-r",
            "-U",
            "-c",
            &format!("read -P {pattern:#x} 0 {len}"),
            image,
        ])
        .output()
        .map(|o| {
            o.status.success()
                && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed")
        })
        .unwrap_or(false)
}

/// The files the guest's QEMU holds open (its images among them: QEMU names them
/// `/dev/fdset/N`, the kernel by their paths).
fn qemu_files(env: &Env, domain: &str) -> Vec<String> {
    let pid = recorded_pid(env, domain);
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Arms hold point `name` of the daemon (debug builds): it stops there until killed.
fn arm(env: &Env, name: &str) -> PathBuf {
    let dir = env.config.run_dir.join("hold");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), b"").unwrap();
    dir.join(format!("{name}.reached"))
}

fn disarm(env: &Env, name: &str) {
    let dir = env.config.run_dir.join("hold");
    let _ = std::fs::remove_file(dir.join(name));
    let _ = std::fs::remove_file(dir.join(format!("{name}.reached")));
}

/// Defines and starts an OS-less guest on a fresh qcow2 `base`; returns the base.
fn running_guest(env: &Env, s: &Path, name: &str) -> PathBuf {
    let base = defined_guest(env, s, name);
    let r = curl(s, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    base
}

/// Defines an OS-less guest on a fresh qcow2 `base`; returns the base.
fn defined_guest(env: &Env, s: &Path, name: &str) -> PathBuf {
    let images = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let base = images.join(format!("{name}.qcow2"));
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"],
    );
    let xml = guest_xml(name, &base);
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(s, "POST", "/v1/domains", &args).status, 201);
    base
}

/// Asks for snapshot `snap` of `domain` (the answer never comes: the daemon is killed at a
/// hold point) and waits until the daemon is held at `reached`.
fn snapshot_until_held(s: &Path, domain: &str, request: Value, reached: &Path) {
    let (s, path, body) = (
        s.to_owned(),
        format!("/v1/domains/{domain}/snapshots"),
        request.to_string(),
    );
    std::thread::spawn(move || {
        curl(
            &s,
            "POST",
            &path,
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body,
            ],
        )
    });
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
}

fn kill_9(d: &mut Daemon) {
    d.child.kill().unwrap();
    d.child.wait().unwrap();
}

/// With the daemon gone, QEMU's monitor is free: the test writes `pattern` into the guest's
/// disk through its device (whatever layer is active) and flushes, as the guest would. Returns
/// the device's active node (`pattern` none: only that).
fn write_through_qemu(env: &Env, domain: &str, pattern: Option<u8>) -> String {
    // Its own runtime, dropped before returning: the monitor connection is closed by then
    // (QEMU's monitor takes one client; the daemon's comes next).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let q = novacron_qmp::Client::connect(env.socket(domain))
            .await
            .expect("QEMU's monitor after the daemon's death");
        let block = q
            .execute_raw("query-block", None)
            .await
            .expect("query-block");
        let dev = &block[0];
        let qdev = dev["qdev"].as_str().expect("qdev").to_owned();
        let cmds = match pattern {
            Some(p) => vec![format!("write -P {p:#x} 0 1M"), "flush".into()],
            None => Vec::new(),
        };
        for cmd in cmds {
            q.execute_raw(
                "human-monitor-command",
                Some(&json!({"command-line": format!("qemu-io -d {qdev} \"{cmd}\"")})),
            )
            .await
            .expect("qemu-io");
        }
        q.close();
        dev["inserted"]["node-name"].as_str().unwrap().to_owned()
    })
}

/// Destroys and starts the guest again (a cold boot from its definition).
fn cold_restart(s: &Path, domain: &str) {
    let r = curl(s, "POST", &format!("/v1/domains/{domain}/destroy"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(s, "POST", &format!("/v1/domains/{domain}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_kill_after_the_switch_finishes_the_snapshot_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scf");
    let base = base.display().to_string();
    let reached = arm(&env, "snapshot-switched");
    snapshot_until_held(&s, "scf", json!({"name": "s1"}), &reached);
    // Held after the transaction: the journal on disk names the overlay, nothing else does.
    let t = tree_json(&env, "scf");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = t["journal"]["overlays"][0]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(t["snapshots"].get("s1").is_none(), "{t}");
    assert_eq!(defined_disk(&env, "scf"), base);
    kill_9(&mut d);

    // The guest writes on: into the overlay, its active layer since the transaction.
    let active_node = write_through_qemu(&env, "scf", Some(0x5a));
    assert_eq!(active_node, node);

    disarm(&env, "snapshot-switched");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the snapshot to be finished",
        Duration::from_secs(60),
        || {
            let t = tree_json(&env, "scf");
            t["journal"].is_null() && t["snapshots"].get("s1").is_some()
        },
    );
    let t = tree_json(&env, "scf");
    assert_eq!(t["current"], "s1", "{t}");
    assert_eq!(t["snapshots"]["s1"]["disks"]["vda"]["file"], base, "{t}");
    assert_eq!(t["active"]["vda"], overlay, "{t}");
    assert_eq!(defined_disk(&env, "scf"), overlay);
    assert_eq!(chain(&overlay), [overlay.clone(), base.clone()]);
    let log = std::fs::read_to_string(&d2.log).unwrap();
    assert!(
        log.contains("interrupted snapshot creation finished"),
        "{log}"
    );
    // The snapshot is a real one: the write is in the overlay, not in the frozen base.
    assert!(reads_pattern(&overlay, 0x5a, "1M"));
    assert!(!reads_pattern(&base, 0x5a, "1M"));

    // A cold boot starts on the overlay: the write made after the snapshot is there.
    cold_restart(&s, "scf");
    let open = qemu_files(&env, "scf");
    assert!(open.contains(&overlay), "QEMU has {open:?}");
    let r = curl(&s, "POST", "/v1/domains/scf/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(reads_pattern(&overlay, 0x5a, "1M"));
    let r = curl(&s, "GET", "/v1/domains/scf/snapshots", &[]);
    assert_eq!(r.json()["current"], "s1", "{}", r.body);
}

#[test]
fn a_kill_before_the_switch_rolls_the_snapshot_back_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scb");
    let base = base.display().to_string();
    let reached = arm(&env, "snapshot-before-switch");
    snapshot_until_held(&s, "scb", json!({"name": "s1"}), &reached);
    let t = tree_json(&env, "scb");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = t["journal"]["overlays"][0]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    // The overlay is made and added to QEMU, not switched to.
    assert!(Path::new(&overlay).exists());
    kill_9(&mut d);

    let active_node = write_through_qemu(&env, "scb", Some(0x3c));
    assert_ne!(
        active_node, node,
        "the disk switched before the transaction"
    );

    disarm(&env, "snapshot-before-switch");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the snapshot to be rolled back",
        Duration::from_secs(60),
        || tree_json(&env, "scb")["journal"].is_null(),
    );
    let t = tree_json(&env, "scb");
    assert!(t["snapshots"].get("s1").is_none(), "{t}");
    assert!(t["current"].is_null(), "{t}");
    assert!(!Path::new(&overlay).exists(), "overlay {overlay} left");
    assert_eq!(defined_disk(&env, "scb"), base);
    let nodes = qmp_args(&s, "scb", "query-named-block-nodes", json!({"flat": true}));
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node-name"].as_str())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(node.as_str())),
        "{node} still in QEMU: {names:?}"
    );
    let log = std::fs::read_to_string(&d2.log).unwrap();
    assert!(
        log.contains("interrupted snapshot creation rolled back"),
        "{log}"
    );
    // The name is free again, and the guest's write is in the base it boots from.
    cold_restart(&s, "scb");
    let open = qemu_files(&env, "scb");
    assert!(open.contains(&base), "QEMU has {open:?}");
    let r = curl(&s, "POST", "/v1/domains/scb/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(reads_pattern(&base, 0x3c, "1M"));
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scb/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s1"}"#,
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn a_kill_before_a_stopped_guests_snapshot_is_recorded_finishes_it_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = defined_guest(&env, &s, "scs").display().to_string();
    let reached = arm(&env, "snapshot-switched");
    snapshot_until_held(&s, "scs", json!({"name": "s1"}), &reached);
    let t = tree_json(&env, "scs");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    assert!(t["journal"]["qemu"].is_null(), "{t}");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(Path::new(&overlay).exists());
    assert_eq!(defined_disk(&env, "scs"), base);
    kill_9(&mut d);

    disarm(&env, "snapshot-switched");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the snapshot to be finished",
        Duration::from_secs(60),
        || {
            let t = tree_json(&env, "scs");
            t["journal"].is_null() && t["snapshots"].get("s1").is_some()
        },
    );
    assert_eq!(defined_disk(&env, "scs"), overlay);
    assert_eq!(chain(&overlay), [overlay.clone(), base.clone()]);
    let r = curl(&s, "POST", "/v1/domains/scs/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let open = qemu_files(&env, "scs");
    assert!(open.contains(&overlay), "QEMU has {open:?}");
}

/// A snapshot with memory killed after its disks switched, while QEMU writes the RAM: the
/// disks' recovery keeps the overlays (recorded in the tree and the definition, as a refused
/// RAM save leaves them), the RAM's recovery removes the partial state file and resumes the
/// guest; no snapshot is left half made.
#[test]
fn a_kill_during_a_snapshot_with_memory_keeps_the_overlays_and_drops_the_snapshot() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scm").display().to_string();
    let reached = arm(&env, "snapshot-switched");
    snapshot_until_held(
        &s,
        "scm",
        json!({"name": "m1", "memory": "paused"}),
        &reached,
    );
    let t = tree_json(&env, "scm");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    assert!(t["journal"]["snap"].is_null(), "{t}");
    assert_eq!(t["pending_memory"]["snapshot"], "m1", "{t}");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = t["journal"]["overlays"][0]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    kill_9(&mut d);
    // The guest is paused for its RAM save (and QEMU inactivates its images once the save is
    // done): only the active node is looked at.
    assert_eq!(write_through_qemu(&env, "scm", None), node);

    disarm(&env, "snapshot-switched");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(&d2.log, "both recoveries", Duration::from_secs(60), || {
        let t = tree_json(&env, "scm");
        t["journal"].is_null() && t["pending_memory"].is_null()
    });
    let t = tree_json(&env, "scm");
    assert!(t["snapshots"].get("m1").is_none(), "{t}");
    assert_eq!(t["active"]["vda"], overlay, "{t}");
    assert_eq!(defined_disk(&env, "scm"), overlay);
    let dir = env.config.state_dir.join("snapshots").join("scm");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ram"))
        .collect();
    assert!(left.is_empty(), "state files left: {left:?}");
    let status = qmp_args(&s, "scm", "query-status", json!({}));
    assert_eq!(status["running"], true, "{status}");
    cold_restart(&s, "scm");
    let open = qemu_files(&env, "scm");
    assert!(open.contains(&overlay), "QEMU has {open:?}");
    assert_eq!(chain(&overlay), [overlay.clone(), base]);
}

/// Killed after the definition names the overlay but before the tree drops its journal: the
/// journal is still on disk (the tree never lands without it while the definition names the
/// frozen file), and the restart finishes the snapshot; a cold boot keeps the guest's write.
#[test]
fn a_kill_after_the_repoint_finishes_the_snapshot_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scr").display().to_string();
    let reached = arm(&env, "snapshot-repointed");
    snapshot_until_held(&s, "scr", json!({"name": "s1"}), &reached);
    let t = tree_json(&env, "scr");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(defined_disk(&env, "scr"), overlay);
    kill_9(&mut d);
    write_through_qemu(&env, "scr", Some(0x6b));

    disarm(&env, "snapshot-repointed");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the snapshot to be finished",
        Duration::from_secs(60),
        || {
            let t = tree_json(&env, "scr");
            t["journal"].is_null() && t["snapshots"].get("s1").is_some()
        },
    );
    let t = tree_json(&env, "scr");
    assert_eq!(t["active"]["vda"], overlay, "{t}");
    assert_eq!(defined_disk(&env, "scr"), overlay);
    cold_restart(&s, "scr");
    let open = qemu_files(&env, "scr");
    assert!(open.contains(&overlay), "QEMU has {open:?}");
    let r = curl(&s, "POST", "/v1/domains/scr/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(reads_pattern(&overlay, 0x6b, "1M"));
    assert_eq!(chain(&overlay), [overlay.clone(), base]);
}

/// QEMU gone while the daemon sends the switching `transaction` (killed at the hold point
/// before it): no answer says whether the disks switched, so the failed snapshot keeps its
/// journal and overlay (nothing QEMU may write to is unlinked), and the next snapshot
/// operation settles it (no guest, a whole overlay: finished).
#[test]
fn a_switch_without_an_answer_keeps_the_journal_and_the_overlay() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scu").display().to_string();
    let reached = arm(&env, "snapshot-before-switch");
    let answer = {
        let s = s.clone();
        std::thread::spawn(move || {
            curl(
                &s,
                "POST",
                "/v1/domains/scu/snapshots",
                &[
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    r#"{"name": "s1"}"#,
                ],
            )
        })
    };
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    let t = tree_json(&env, "scu");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = recorded_pid(&env, "scu").to_string();
    run("kill", &["-9", &pid]);
    wait_until("QEMU's death", Duration::from_secs(30), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|st| st.contains(") Z "))
    });
    disarm(&env, "snapshot-before-switch");
    let r = answer.join().unwrap();
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    let t = tree_json(&env, "scu");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    assert!(Path::new(&overlay).exists(), "overlay {overlay} removed");

    wait_daemon(
        &d.log,
        "the guest to be seen dead",
        Duration::from_secs(30),
        || curl(&s, "GET", "/v1/domains/scu", &[]).json()["state"] == "crashed",
    );
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scu/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s2"}"#,
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = tree_json(&env, "scu");
    assert!(t["journal"].is_null(), "{t}");
    assert_eq!(t["snapshots"]["s2"]["parent"], "s1", "{t}");
    assert_eq!(t["snapshots"]["s1"]["disks"]["vda"]["file"], base, "{t}");
    assert_eq!(t["snapshots"]["s2"]["disks"]["vda"]["file"], overlay, "{t}");
}

/// QEMU gone while the daemon starts a deletion's `block-commit` (killed at the hold point
/// before it): no answer says whether the job started, so the deletion is not rolled back as
/// a refused one: its journal stays for the recovery to finish.
#[test]
fn a_commit_without_an_answer_keeps_the_deletion_journal() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    running_guest(&env, &s, "scd");
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scd/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s1"}"#,
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let reached = arm(&env, "snapshot-before-commit");
    let answer = {
        let s = s.clone();
        std::thread::spawn(move || curl(&s, "DELETE", "/v1/domains/scd/snapshots/s1", &[]))
    };
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    assert_eq!(tree_json(&env, "scd")["journal"]["op"], "delete");
    let pid = recorded_pid(&env, "scd").to_string();
    run("kill", &["-9", &pid]);
    wait_daemon(
        &d.log,
        "the guest to be seen dead",
        Duration::from_secs(30),
        || curl(&s, "GET", "/v1/domains/scd", &[]).json()["state"] == "crashed",
    );
    disarm(&env, "snapshot-before-commit");
    let r = answer.join().unwrap();
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    let t = tree_json(&env, "scd");
    assert_eq!(t["journal"]["op"], "delete", "{t}");
    // The next snapshot operation finishes the deletion (offline: the guest is gone), not
    // only a restart.
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scd/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s2"}"#,
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = tree_json(&env, "scd");
    assert!(t["journal"].is_null(), "{t}");
    assert!(t["snapshots"].get("s1").is_none(), "{t}");
}

/// A running guest's snapshot interrupted, then its QEMU gone too, with one overlay whole and
/// the other missing: the whole one may hold flushed writes, so the restart neither finishes
/// nor rolls back: the journal and the whole overlay stay.
#[test]
fn a_mix_of_whole_and_missing_overlays_without_a_guest_is_left_alone() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let images = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (a, b) = (images.join("scx-a.qcow2"), images.join("scx-b.qcow2"));
    for f in [&a, &b] {
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", f.to_str().unwrap(), "16M"],
        );
    }
    let xml = guest_xml("scx", &a).replace(
        "</devices>",
        &format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
               <source file='{}'/><target dev='vdb' bus='virtio'/></disk></devices>",
            b.display()
        ),
    );
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    let r = curl(&s, "POST", "/v1/domains/scx/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let reached = arm(&env, "snapshot-before-switch");
    snapshot_until_held(&s, "scx", json!({"name": "s1"}), &reached);
    let t = tree_json(&env, "scx");
    let overlays: Vec<String> = t["journal"]["overlays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["overlay"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(overlays.len(), 2, "{t}");
    kill_9(&mut d);
    let pid = recorded_pid(&env, "scx").to_string();
    run("kill", &["-9", &pid]);
    wait_until("QEMU's death", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    std::fs::remove_file(&overlays[1]).unwrap();

    disarm(&env, "snapshot-before-switch");
    let d2 = env.start_daemon("");
    wait_daemon(
        &d2.log,
        "the recovery's verdict",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&d2.log)
                .unwrap_or_default()
                .contains("interrupted snapshot creation")
        },
    );
    let t = tree_json(&env, "scx");
    assert_eq!(t["journal"]["op"], "create", "{t}");
    assert!(t["snapshots"].get("s1").is_none(), "{t}");
    assert!(Path::new(&overlays[0]).exists(), "whole overlay removed");
}

/// The journal's overlay name taken by a file this snapshot did not make (dots in domain and
/// snapshot names let two domains' overlay names meet): the restart neither adopts nor
/// unlinks it; a new snapshot over an existing name is refused before anything is written.
#[test]
fn a_foreign_file_under_an_overlay_name_is_never_adopted_or_removed() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = defined_guest(&env, &s, "scn").display().to_string();
    let reached = arm(&env, "snapshot-switched");
    snapshot_until_held(&s, "scn", json!({"name": "s1"}), &reached);
    let t = tree_json(&env, "scn");
    let overlay = t["journal"]["overlays"][0]["overlay"]
        .as_str()
        .unwrap()
        .to_owned();
    kill_9(&mut d);
    // Another domain's image under that name (no backing: not this snapshot's overlay).
    std::fs::remove_file(&overlay).unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &overlay, "8M"]);

    disarm(&env, "snapshot-switched");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the snapshot to be settled",
        Duration::from_secs(60),
        || tree_json(&env, "scn")["journal"].is_null(),
    );
    let t = tree_json(&env, "scn");
    assert!(t["snapshots"].get("s1").is_none(), "{t}");
    assert_eq!(defined_disk(&env, "scn"), base);
    assert!(
        Path::new(&overlay).exists(),
        "the foreign {overlay} was removed"
    );
    // Its name stays taken: a new s1 is refused, the file untouched, no journal left.
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scn/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s1"}"#,
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("already exists"), "{}", r.body);
    assert!(tree_json(&env, "scn")["journal"].is_null());
    assert_eq!(chain(&overlay), std::slice::from_ref(&overlay));
}

/// The disk state `GET /v1/domains/{domain}/disks` shows for `target` (`attached`,
/// `detaching`, ...).
fn disk_state(s: &Path, domain: &str, target: &str) -> String {
    let r = curl(s, "GET", &format!("/v1/domains/{domain}/disks"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let d = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == target)
        .unwrap_or_else(|| panic!("{target} gone: {v}"));
    d["state"].as_str().unwrap().to_owned()
}

/// A snapshot journal left unsettled under a running guest (QEMU killed at the switch, the
/// guest started again: it runs on the frozen file, the journal still names the old QEMU):
/// detach-disk and migration are refused as busy, audited, the disk and the guest as they
/// were; once the next snapshot operation settles the journal (the guest stopped), neither
/// is refused for it.
#[test]
fn detach_and_migration_wait_for_an_unfinished_snapshot() {
    let env = Env::new();
    let d = env.start_daemon("[migration]\nallow_plain_http = true\n");
    let s = d.socket.clone();
    let base = running_guest(&env, &s, "scj").display().to_string();
    let reached = arm(&env, "snapshot-before-switch");
    let answer = {
        let s = s.clone();
        std::thread::spawn(move || {
            curl(
                &s,
                "POST",
                "/v1/domains/scj/snapshots",
                &[
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    r#"{"name": "s1"}"#,
                ],
            )
        })
    };
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    let pid = recorded_pid(&env, "scj").to_string();
    run("kill", &["-9", &pid]);
    wait_until("QEMU's death", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    disarm(&env, "snapshot-before-switch");
    let r = answer.join().unwrap();
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    wait_daemon(
        &d.log,
        "the guest to be seen dead",
        Duration::from_secs(30),
        || curl(&s, "GET", "/v1/domains/scj", &[]).json()["state"] == "crashed",
    );
    // Started again (a start does not settle snapshots): on the frozen file, journal pending.
    let r = curl(&s, "POST", "/v1/domains/scj/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let pending = tree_json(&env, "scj");
    assert_eq!(pending["journal"]["op"], "create", "{pending}");
    assert!(qemu_files(&env, "scj").contains(&base));
    // A hot-plugged disk (one a detach would really take away).
    let data = env.config.state_dir.join("images").join("scj-data.raw");
    run("truncate", &["-s", "4M", data.to_str().unwrap()]);
    let attach = || {
        let xml = format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
            data.display()
        );
        let r = curl(
            &s,
            "POST",
            "/v1/domains/scj/disks",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &json!({ "xml": xml, "live": true }).to_string(),
            ],
        );
        assert_eq!(r.status, 201, "attach: {}", r.body);
    };
    attach();

    let busy = |r: &common::daemon::Reply| {
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.error_code(), "busy", "{}", r.body);
        assert!(
            r.body.contains("unfinished snapshot operation"),
            "{}",
            r.body
        );
    };
    let migrate = |wait: bool| {
        curl(
            &s,
            "POST",
            &format!("/v1/domains/scj/migrate?wait={wait}"),
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                r#"{"destination": "http://127.0.0.1:9"}"#,
            ],
        )
    };
    busy(&migrate(false));
    assert_eq!(
        curl(&s, "GET", "/v1/domains/scj/migration", &[]).status,
        404,
        "a migration was started"
    );
    assert_eq!(
        curl(&s, "GET", "/v1/domains/scj", &[]).json()["state"],
        "running"
    );
    let detach = "/v1/domains/scj/disks/vdb?live=true&timeout=1";
    busy(&curl(&s, "DELETE", detach, &[]));
    assert_eq!(disk_state(&s, "scj", "vdb"), "attached");
    let block = qmp_args(&s, "scj", "query-block", json!({}));
    assert!(
        block
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["qdev"].as_str().is_some_and(|q| q.contains("vdb"))),
        "vdb unplugged: {block}"
    );
    assert_eq!(defined_disk(&env, "scj"), base);
    assert_eq!(tree_json(&env, "scj"), pending, "the tree changed");
    let refusals: Vec<(String, String)> =
        audited(&env, |op| op == "detach-disk" || op == "migrate")
            .into_iter()
            .map(|(op, _, result, _)| (op, result))
            .collect();
    assert_eq!(
        refusals,
        [
            ("migrate".to_owned(), "busy".to_owned()),
            ("detach-disk".to_owned(), "busy".to_owned())
        ]
    );

    // Settled by the next snapshot operation once the guest is stopped (a whole overlay, no
    // QEMU on it: s1 finished); started again, detach and migration go ahead.
    let r = curl(&s, "POST", "/v1/domains/scj/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(
        &s,
        "POST",
        "/v1/domains/scj/snapshots",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"name": "s2"}"#,
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(tree_json(&env, "scj")["journal"].is_null());
    let r = curl(&s, "POST", "/v1/domains/scj/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    attach();
    // The destination is unreachable: the migration starts and fails at its prepare.
    let r = migrate(true);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["phase"], "failed", "{}", r.body);
    // An OS-less guest never releases the device: the detach waits, then times out.
    let r = curl(&s, "DELETE", detach, &[]);
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(disk_state(&s, "scj", "vdb"), "detaching");
}

/// A digest of `path`'s bytes (none: no such file).
fn digest(path: &str) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Files already under the names a revert's fresh overlay would get (`<dom>.<target>.<snap>
/// .r<N>.qcow2`; dots in names let two names meet): the daemon makes up that name, not the
/// user, so the revert takes the next free one (each time: a retry never lands on a taken
/// name either) and never touches the files, which stay as they were; the tree and the
/// definition name the new overlay, made over the snapshot's file.
#[test]
fn a_revert_onto_an_existing_overlay_name_takes_the_next_free_one_and_leaves_the_file() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let base = defined_guest(&env, &s, "scv");
    let r = call(
        &s,
        "POST",
        "/v1/domains/scv/snapshots",
        Some(&json!({"name": "s1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let next = tree_json(&env, "scv")["next"].as_u64().unwrap();
    let name = |n: u64| {
        base.parent()
            .unwrap()
            .join(format!("scv.vda.s1.r{n}.qcow2"))
            .display()
            .to_string()
    };
    // The name this revert would take and the one after it (where the counter lands once
    // the first revert is done) are both foreign files.
    let taken = [name(next + 1), name(next + 3)];
    for t in &taken {
        run("qemu-img", &["create", "-q", "-f", "qcow2", t, "8M"]);
    }
    let before: Vec<_> = taken.iter().map(|t| digest(t)).collect();

    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = curl(&s, "POST", "/v1/domains/scv/snapshots/s1/revert", &[]);
        assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
        let t = tree_json(&env, "scv");
        let active = t["active"]["vda"].as_str().unwrap().to_owned();
        assert!(!taken.contains(&active), "the revert took {active}");
        assert_eq!(defined_disk(&env, "scv"), active);
        assert_eq!(chain(&active), [active.clone(), base.display().to_string()]);
        assert!(t["pending_revert"].is_null(), "{t}");
        seen.push(active);
    }
    assert_eq!(seen, [name(next + 2), name(next + 4)]);
    let after: Vec<_> = taken.iter().map(|t| digest(t)).collect();
    assert_eq!(after, before, "a foreign file changed");
    assert!(before.iter().all(Option::is_some));
}

/// A daemon killed while a disk-only revert's fresh overlays exist but before the disks use
/// them (hold point revert-overlays-made), one of them then replaced by a foreign file (no
/// backing: not made over the snapshot's file): the restart's recovery removes the revert's
/// own overlay and leaves the foreign file; the pending record goes, the disks are as they
/// were.
#[test]
fn a_foreign_file_under_a_pending_revert_name_is_not_removed() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let images = env.config.state_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (a, b) = (images.join("scw-a.qcow2"), images.join("scw-b.qcow2"));
    for f in [&a, &b] {
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", f.to_str().unwrap(), "16M"],
        );
    }
    let xml = guest_xml("scw", &a).replace(
        "</devices>",
        &format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
               <source file='{}'/><target dev='vdb' bus='virtio'/></disk></devices>",
            b.display()
        ),
    );
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    let r = call(
        &s,
        "POST",
        "/v1/domains/scw/snapshots",
        Some(&json!({"name": "s1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let defined = defined_disk(&env, "scw");

    let reached = arm(&env, "revert-overlays-made");
    {
        let s = s.clone();
        std::thread::spawn(move || curl(&s, "POST", "/v1/domains/scw/snapshots/s1/revert", &[]));
    }
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    let t = tree_json(&env, "scw");
    let overlays: Vec<String> = t["pending_revert"]["overlays"]
        .as_array()
        .unwrap_or_else(|| panic!("no pending revert: {t}"))
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    let of = |target: &str| {
        overlays
            .iter()
            .find(|o| o.contains(&format!("scw.{target}.s1.r")))
            .unwrap_or_else(|| panic!("no {target} overlay in {overlays:?}"))
            .clone()
    };
    let (foreign, own) = (of("vda"), of("vdb"));
    assert!(Path::new(&own).exists());
    kill_9(&mut d);
    std::fs::remove_file(&foreign).unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &foreign, "8M"]);
    let before = digest(&foreign);

    disarm(&env, "revert-overlays-made");
    let d2 = env.start_daemon("");
    // The log line comes last (after the tree is written).
    wait_daemon(
        &d2.log,
        "the revert to be rolled back",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&d2.log)
                .unwrap_or_default()
                .contains("interrupted revert rolled back")
        },
    );
    assert!(tree_json(&env, "scw")["pending_revert"].is_null());
    assert!(before.is_some());
    assert_eq!(
        digest(&foreign),
        before,
        "the foreign {foreign} was removed or changed"
    );
    assert!(!Path::new(&own).exists(), "the revert's {own} left");
    assert_eq!(defined_disk(&env, "scw"), defined);
}

/// A daemon killed during a disk-only revert after the definition names the fresh overlay
/// but before the tree drops its pending record (hold point revert-repointed): the restart
/// finishes the revert from that record, so the definition and the tree name the same
/// existing file (the overlay over s1's file) and what only the old state used is gone;
/// later snapshots, reverts and deletions work and the guest starts on the defined file.
#[test]
fn a_kill_after_a_reverts_repoint_finishes_the_revert_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = defined_guest(&env, &s, "scx").display().to_string();
    let snaps = "/v1/domains/scx/snapshots";
    let r = call(&s, "POST", snaps, Some(&json!({"name": "s1"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let old = defined_disk(&env, "scx");
    assert_ne!(old, base);

    let reached = arm(&env, "revert-repointed");
    {
        let s = s.clone();
        std::thread::spawn(move || curl(&s, "POST", "/v1/domains/scx/snapshots/s1/revert", &[]));
    }
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    // Held between the two writes: the definition is on the overlay the pending record
    // names, the tree not yet.
    let t = tree_json(&env, "scx");
    let pending = t["pending_revert"]["overlays"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no pending revert: {t}"))
        .to_owned();
    assert_eq!(defined_disk(&env, "scx"), pending);
    assert_eq!(t["active"]["vda"], old, "{t}");
    kill_9(&mut d);

    disarm(&env, "revert-repointed");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    // The log line comes last (after the tree and the unlink).
    wait_daemon(
        &d2.log,
        "the revert to be finished",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&d2.log)
                .unwrap_or_default()
                .contains("interrupted revert finished")
        },
    );
    let agree = |what: &str| {
        let t = tree_json(&env, "scx");
        let active = t["active"]["vda"].as_str().unwrap_or_default().to_owned();
        assert_eq!(defined_disk(&env, "scx"), active, "{what}: {t}");
        assert!(Path::new(&active).exists(), "{what}: {active} missing");
        active
    };
    let active = agree("after the restart");
    assert_eq!(active, pending, "the revert was not finished");
    assert_eq!(chain(&active), [active.clone(), base.clone()]);
    assert_eq!(tree_json(&env, "scx")["current"], "s1");
    assert!(tree_json(&env, "scx")["pending_revert"].is_null());
    assert!(!Path::new(&old).exists(), "the old state's {old} left");

    // Later operations find the tree and the definition in step.
    let r = call(&s, "POST", snaps, Some(&json!({"name": "s2"})));
    assert_eq!(r.status, 201, "{}", r.body);
    agree("after s2");
    let r = call(&s, "POST", &format!("{snaps}/s1/revert"), None);
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    agree("after the second revert");
    let r = call(&s, "DELETE", &format!("{snaps}/s2"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let active = agree("after the deletion");
    let r = curl(&s, "POST", "/v1/domains/scx/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let open = qemu_files(&env, "scx");
    assert!(open.contains(&active), "QEMU has {open:?}");
    let r = curl(&s, "POST", "/v1/domains/scx/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The same kill during a revert to a snapshot with memory (a running guest): held after the
/// definition names the fresh overlay, the new QEMU has loaded the state but is still marked
/// incoming. The restart discards that QEMU (nothing of it left) and finishes the revert:
/// the guest is off on the overlay over the snapshot's file, the definition and the tree
/// agree, and it starts from there.
#[test]
fn a_kill_after_a_ram_reverts_repoint_finishes_the_revert_at_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    running_guest(&env, &s, "scy");
    let snaps = "/v1/domains/scy/snapshots";
    let r = call(
        &s,
        "POST",
        snaps,
        Some(&json!({"name": "m1", "memory": "paused"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let old = defined_disk(&env, "scy");
    let frozen = tree_json(&env, "scy")["snapshots"]["m1"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();

    let reached = arm(&env, "revert-repointed");
    {
        let s = s.clone();
        std::thread::spawn(move || curl(&s, "POST", "/v1/domains/scy/snapshots/m1/revert", &[]));
    }
    wait_until("the hold point", Duration::from_secs(60), || {
        reached.exists()
    });
    let t = tree_json(&env, "scy");
    let pending = t["pending_revert"]["overlays"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no pending revert: {t}"))
        .to_owned();
    assert_eq!(defined_disk(&env, "scy"), pending);
    let incoming = recorded_pid(&env, "scy");
    kill_9(&mut d);

    disarm(&env, "revert-repointed");
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_daemon(
        &d2.log,
        "the revert to be finished",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&d2.log)
                .unwrap_or_default()
                .contains("interrupted revert finished")
        },
    );
    wait_daemon(
        &d2.log,
        "the incoming QEMU to go",
        Duration::from_secs(30),
        || !Path::new(&format!("/proc/{incoming}")).exists(),
    );
    assert_eq!(common::http::state(&s, "scy"), "shutoff");
    let t = tree_json(&env, "scy");
    assert!(t["pending_revert"].is_null(), "{t}");
    assert_eq!(t["active"]["vda"], pending, "{t}");
    assert_eq!(t["current"], "m1", "{t}");
    assert_eq!(defined_disk(&env, "scy"), pending);
    assert_eq!(chain(&pending), [pending.clone(), frozen]);
    assert!(!Path::new(&old).exists(), "the old state's {old} left");
    let r = curl(&s, "POST", "/v1/domains/scy/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let open = qemu_files(&env, "scy");
    assert!(open.contains(&pending), "QEMU has {open:?}");
    let r = curl(&s, "POST", "/v1/domains/scy/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}
