//! Disk snapshots through a real daemon, real QEMU and real qemu-img: live create (one
//! transaction; the overlays are nodes), a tree with a branch, deletion of a middle snapshot
//! (the chain checked with qemu-img, the dropped nodes gone, a resize afterwards), revert of
//! a stopped guest, `kill -9` of the daemon during a commit and the restart that finishes it,
//! and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, novactl, Reply};
use common::*;
use serde_json::{json, Value};

const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];
const JSON: &[&str] = &["-H", "Content-Type: application/json", "--data-binary"];

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn post_json(s: &Path, path: &str, body: &Value) -> Reply {
    let body = body.to_string();
    let mut args = JSON.to_vec();
    args.push(&body);
    curl(s, "POST", path, &args)
}

fn qmp(s: &Path, domain: &str, execute: &str, arguments: Value) -> Value {
    let r = post_json(
        s,
        &format!("/v1/domains/{domain}/qmp"),
        &json!({"execute": execute, "arguments": arguments}),
    );
    assert_eq!(r.status, 200, "{execute}: {}", r.body);
    r.json()["return"].clone()
}

fn node_names(s: &Path, domain: &str) -> Vec<String> {
    qmp(s, domain, "query-named-block-nodes", json!({"flat": true}))
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node-name"].as_str().unwrap().to_owned())
        .collect()
}

/// The `opaque` of every descriptor in QEMU's fd sets (`query-fdsets`).
fn fd_opaques(s: &Path, domain: &str) -> Vec<String> {
    qmp(s, domain, "query-fdsets", json!({}))
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|set| set["fds"].as_array().cloned().unwrap_or_default())
        .map(|fd| fd["opaque"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn domain_disk(s: &Path, domain: &str) -> String {
    let r = curl(s, "GET", &format!("/v1/domains/{domain}"), &[]);
    let v = r.json();
    let disks = &v["config"]["devices"]["disks"];
    disks[0]["source"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no disk path: {v}"))
        .to_owned()
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

fn check_images(files: &[String]) {
    for f in files {
        let out = Command::new("qemu-img")
            .args(["check", "-U", f])
            .output()
            .unwrap();
        // 0: clean; raw images have nothing to check (63) — ours are all qcow2.
        assert!(
            out.status.success(),
            "qemu-img check {f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Reads `len` bytes at 0 of `image` (through its chain) and checks they are all `pattern`.
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

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

fn images_dir(env: &Env) -> PathBuf {
    let d = env.config.state_dir.join("images");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(list: &Value) -> Vec<String> {
    list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn disk_snapshots_live_and_offline_tree_delete_revert_and_a_crash_during_commit() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = images_dir(&env).join("base.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"],
    );
    let mut args = XML.to_vec();
    let xml = guest_xml("sn1", &base);
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);

    // Bad input first: nothing changes.
    let r = post_json(&s, "/v1/domains/sn1/snapshots", &json!({"name": "a/b"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]["details"][0]["path"],
        "name",
        "{}",
        r.body
    );
    let r = curl(&s, "GET", "/v1/domains/sn1/snapshots/nope", &[]);
    assert_eq!(
        (r.status, r.error_code()),
        (404, "not_found".into()),
        "{}",
        r.body
    );
    let r = curl(&s, "DELETE", "/v1/domains/sn1/snapshots/nope", &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post_json(
        &s,
        "/v1/domains/sn1/snapshots",
        &json!({"name": "q", "quiesce": "required"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("guest agent"), "{}", r.body);
    assert!(names(&curl(&s, "GET", "/v1/domains/sn1/snapshots", &[]).json()).is_empty());
    assert_eq!(defined_disk(&env, "sn1"), base.to_str().unwrap());

    // s1 on the stopped guest (qemu-img), then data written into its overlay o1.
    let r = post_json(
        &s,
        "/v1/domains/sn1/snapshots",
        &json!({"name": "s1", "description": "first", "quiesce": "best-effort"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["quiesced"], false);
    let o1 = defined_disk(&env, "sn1");
    assert_ne!(o1, base.to_str().unwrap());
    assert_eq!(chain(&o1), [o1.clone(), base.display().to_string()]);
    run("qemu-io", &["-c", "write -P 0x5a 0 8M", &o1]);
    let r = post_json(&s, "/v1/domains/sn1/snapshots", &json!({"name": "s1"}));
    assert_eq!(r.status, 400, "existing name: {}", r.body);
    assert!(r.body.contains("already exists"), "{}", r.body);

    // s2 on the running guest: one transaction; the overlay is a node, the disk's top now.
    assert_eq!(curl(&s, "POST", "/v1/domains/sn1/start", &[]).status, 200);
    let r = post_json(&s, "/v1/domains/sn1/snapshots", &json!({"name": "s2"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let nodes = node_names(&s, "sn1");
    assert!(nodes.contains(&"nc2".to_owned()), "{nodes:?}");
    // QEMU holds the overlay: the daemon's descriptor is out of its fd set.
    let fds = fd_opaques(&s, "sn1");
    assert!(!fds.iter().any(|o| o == "nc2"), "overlay fd kept: {fds:?}");
    let o2 = defined_disk(&env, "sn1");
    assert_eq!(
        chain(&o2),
        [o2.clone(), o1.clone(), base.display().to_string()]
    );
    let x = curl(&s, "GET", "/v1/domains/sn1/snapshots/s2/xml", &[]);
    assert!(
        x.body.contains("<parent>") && x.body.contains("s1"),
        "{}",
        x.body
    );
    assert!(x.body.contains(&o2), "{}", x.body);

    // Delete the middle one, slowly; kill -9 the daemon once its journal is on disk.
    let r = curl(
        &s,
        "DELETE",
        "/v1/domains/sn1/snapshots/s1?wait=false",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"speed": 1048576}"#,
        ],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("the journal", Duration::from_secs(30), || {
        !tree_json(&env, "sn1")["journal"].is_null()
    });
    // The job is under way once the base grows (8 MiB at 1 MiB/s: far from done).
    let empty = std::fs::metadata(&base).unwrap().len();
    wait_until(
        "the commit to make progress",
        Duration::from_secs(30),
        || std::fs::metadata(&base).unwrap().len() > empty + (1 << 20),
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    // Nothing referenced is gone meanwhile.
    assert!(Path::new(&o1).exists() && base.exists());
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_until("the deletion to finish", Duration::from_secs(90), || {
        let t = tree_json(&env, "sn1");
        t["journal"].is_null() && t["snapshots"].get("s1").is_none()
    });
    let list = curl(&s, "GET", "/v1/domains/sn1/snapshots", &[]).json();
    assert_eq!(names(&list), ["s2"]);
    let log = std::fs::read_to_string(&d2.log).unwrap();
    assert!(
        log.contains("interrupted snapshot deletion finished"),
        "{log}"
    );
    // The chain lost o1, its data is in the base, the file is gone, the images are sound.
    assert_eq!(chain(&o2), [o2.clone(), base.display().to_string()]);
    assert!(!Path::new(&o1).exists(), "o1 merged and unreferenced");
    check_images(&[o2.clone(), base.display().to_string()]);
    assert!(
        reads_pattern(&o2, 0x5a, "8M"),
        "data lost through the commit"
    );
    // The dropped nodes are gone, so the disk can grow.
    let nodes = node_names(&s, "sn1");
    // o1 was the start's top (node disk0): deleted with its storage node.
    assert!(!nodes.iter().any(|n| n.starts_with("disk0")), "{nodes:?}");
    qmp(
        &s,
        "sn1",
        "block_resize",
        json!({"node-name": "nc2", "size": 128u64 << 20}),
    );

    // Stopped: s3 offline, revert to s2 (a fresh overlay), s4: s2 has two children.
    assert_eq!(curl(&s, "POST", "/v1/domains/sn1/destroy", &[]).status, 200);
    let r = post_json(&s, "/v1/domains/sn1/snapshots", &json!({"name": "s3"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let o3 = defined_disk(&env, "sn1");
    run("qemu-io", &["-c", "write -P 0x33 0 1M", &o3]);
    assert!(reads_pattern(&o3, 0x33, "1M"));
    let r = curl(&s, "POST", "/v1/domains/sn1/snapshots/s2/revert", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let r2 = defined_disk(&env, "sn1");
    assert_eq!(chain(&r2), [r2.clone(), base.display().to_string()]);
    assert!(
        reads_pattern(&r2, 0x5a, "1M"),
        "revert did not restore s2's data"
    );
    assert!(!Path::new(&o3).exists(), "o3 held only unsaved state");
    assert!(Path::new(&o2).exists(), "o2 is s3's image");
    let r = post_json(&s, "/v1/domains/sn1/snapshots", &json!({"name": "s4"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let list = curl(&s, "GET", "/v1/domains/sn1/snapshots", &[]).json();
    assert_eq!(
        list["tree"].as_str().unwrap(),
        "s2\n├─ s3\n└─ s4 (current)\n",
        "{list}"
    );
    // novactl, with virsh's names.
    let (code, out, err) = novactl(&s, &["snapshot-list", "sn1", "--tree"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "s2\n├─ s3\n└─ s4 (current)\n"),
        "{err}"
    );
    let (code, out, err) = novactl(&s, &["snapshot-dumpxml", "sn1", "s4"]);
    assert!(code == 0 && out.contains("<name>s4</name>"), "{out}{err}");
    let (code, out, err) = novactl(&s, &["snapshot-info", "sn1", "s3"]);
    assert!(code == 0 && out.contains("s2"), "{out}{err}");
    let (code, _, err) = novactl(
        &s,
        &[
            "snapshot-create-as",
            "sn1",
            "s5",
            "--disk-only",
            "--quiesce",
        ],
    );
    assert!(code != 0 && err.contains("guest agent"), "{err}");
    // A branch point cannot be merged away.
    let r = curl(&s, "DELETE", "/v1/domains/sn1/snapshots/s2", &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("branch"), "{}", r.body);
    // The leaf s3: its image is unlinked, the rest stays and starts.
    let r = curl(&s, "DELETE", "/v1/domains/sn1/snapshots/s3", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(!Path::new(&o2).exists());
    let active = defined_disk(&env, "sn1");
    check_images(&chain(&active));
    assert_eq!(curl(&s, "POST", "/v1/domains/sn1/start", &[]).status, 200);
    assert_eq!(domain_disk(&s, "sn1"), active);
    // s2 live now: r2 sits between the top and the base, opened read-only at this start;
    // it is committed into the base (made writable through its fd set).
    let r = curl(&s, "DELETE", "/v1/domains/sn1/snapshots/s2", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(chain(&active), [active.clone(), base.display().to_string()]);
    assert!(!Path::new(&r2).exists());
    assert!(reads_pattern(&active, 0x5a, "1M"));
    // The read-write descriptor added for the commit's base is gone with the commit.
    let fds = fd_opaques(&s, "sn1");
    assert!(
        !fds.iter().any(|o| o == "snapshot-commit-base"),
        "commit fd kept: {fds:?}"
    );
    let list = curl(&s, "GET", "/v1/domains/sn1/snapshots", &[]).json();
    assert_eq!(list["tree"].as_str().unwrap(), "s4 (current)\n", "{list}");
    // Every change and every refusal is audited.
    let audit = audited(&env, |op| op.starts_with("snapshot-"));
    let count = |op: &str, result: &str| {
        audit
            .iter()
            .filter(|(o, d, r, _)| o == op && d == "sn1" && r == result)
            .count()
    };
    assert_eq!(count("snapshot-create", "ok"), 4, "{audit:?}");
    // (The deletion the kill interrupted has no record of its own: the daemon died first.)
    assert_eq!(count("snapshot-delete", "ok"), 2, "{audit:?}");
    assert_eq!(count("snapshot-delete", "not_found"), 1, "{audit:?}");
    assert_eq!(count("snapshot-revert", "ok"), 1, "{audit:?}");
    assert!(count("snapshot-create", "invalid_config") >= 3, "{audit:?}");
}

#[test]
fn scheduled_snapshots_keep_the_newest_n_and_survive_a_restart() {
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let base = images_dir(&env).join("sched.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"],
    );
    let mut args = XML.to_vec();
    let xml = guest_xml("sn2", &base);
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    assert_eq!(curl(&s, "POST", "/v1/domains/sn2/start", &[]).status, 200);
    let put = |s: &Path, body: &str| {
        curl(
            s,
            "PUT",
            "/v1/domains/sn2/snapshot-schedule",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    };
    // Bad specs are refused, naming the field.
    let r = put(&s, r#"{"every": "5w", "keep": 2}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]["details"][0]["path"],
        "every",
        "{}",
        r.body
    );
    let r = put(&s, r#"{"every": "1s", "keep": 0}"#);
    assert_eq!(
        r.json()["error"]["details"][0]["path"],
        "keep",
        "{}",
        r.body
    );
    assert_eq!(
        curl(&s, "GET", "/v1/domains/sn2/snapshot-schedule", &[]).status,
        404
    );
    let r = put(&s, r#"{"every": "1s", "keep": 2}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let auto = |s: &Path| -> Vec<String> {
        names(&curl(s, "GET", "/v1/domains/sn2/snapshots", &[]).json())
            .into_iter()
            .filter(|n| n.starts_with("auto-"))
            .collect()
    };
    // Four runs seen while never more than keep (+ the one being taken) at once, and the
    // list settles at two: retention deleted the oldest through the normal path.
    let mut seen = std::collections::BTreeSet::new();
    // The list the condition held on (the schedule runs on meanwhile: a second read may
    // already show the next run).
    let mut now = Vec::new();
    wait_until("four scheduled snapshots", Duration::from_secs(60), || {
        now = auto(&s);
        assert!(now.len() <= 3, "retention lags: {now:?}");
        seen.extend(now.iter().cloned());
        seen.len() >= 4 && now.len() == 2
    });
    assert_eq!(
        &now[..],
        &seen.iter().rev().take(2).rev().cloned().collect::<Vec<_>>()[..]
    );
    // The oldest went and every overlay still in use is sound.
    let t = tree_json(&env, "sn2");
    let active = t["active"]["vda"].as_str().unwrap().to_owned();
    check_images(&chain(&active));
    // A restarted daemon runs the schedule on.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let before: std::collections::BTreeSet<String> = seen.clone();
    let d2 = env.start_daemon("");
    let s = d2.socket.clone();
    wait_until(
        "a snapshot after the restart",
        Duration::from_secs(60),
        || auto(&s).iter().any(|n| !before.contains(n)),
    );
    let r = curl(&s, "DELETE", "/v1/domains/sn2/snapshot-schedule", &[]);
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    assert_eq!(
        curl(&s, "GET", "/v1/domains/sn2/snapshot-schedule", &[]).status,
        404
    );
}

/// The Linux test guest (TCG) writes a counter to its data disk; the snapshots hold the
/// values they were taken at, and a revert brings a snapshot's value back into the guest.
#[tokio::test]
async fn a_guest_counter_follows_the_snapshot_tree() {
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let data = images_dir(&env).join("data.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", data.to_str().unwrap(), "16M"],
    );
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>{}",
        data.display(),
        novacron_tests::COMMAND_CHANNEL_XML
    ) + novacron_tests::AGENT_CHANNEL_XML;
    let xml = tokio::task::spawn_blocking(move || test_guest_domain_xml_with("snl", "", &disk))
        .await
        .unwrap()
        .expect("test guest");
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    let socket = env
        .config
        .run_dir
        .join("domains/snl.d")
        .join(format!("{COMMAND_CHANNEL}.sock"));
    let t = Duration::from_secs(60);
    let boot = |n: usize| {
        let r = curl(&s, "POST", "/v1/domains/snl/start", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let log = env.serial_log("snl");
        async move {
            wait_file(
                &log,
                novacron_tests::READY_MARKER,
                n,
                Duration::from_secs(120),
            )
            .await;
        }
    };
    boot(1).await;
    let mut sh = GuestShell::connect(&socket, Duration::from_secs(20))
        .await
        .unwrap();
    let set =
        |v: u32| format!("printf '%08d' {v} | dd of=/dev/vda bs=8 count=1 2>/dev/null && sync");
    let get = "dd if=/dev/vda bs=8 count=1 2>/dev/null";
    sh.run_ok(&set(1), t).await.unwrap();
    let r = post_json(&s, "/v1/domains/snl/snapshots", &json!({"name": "a"}));
    assert_eq!(r.status, 201, "{}", r.body);
    sh.run_ok(&set(2), t).await.unwrap();
    // b is quiesced through the guest agent (freeze, snapshot, thaw).
    wait_until("the guest agent answers", Duration::from_secs(60), || {
        curl(&s, "POST", "/v1/domains/snl/agent/ping", &[]).status == 200
    });
    let r = post_json(
        &s,
        "/v1/domains/snl/snapshots",
        &json!({"name": "b", "quiesce": "required"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["quiesced"], true, "{}", r.body);
    // Thawed afterwards: the guest still writes.
    sh.run_ok(&set(3), t).await.unwrap();
    assert_eq!(sh.run_ok(get, t).await.unwrap().trim(), "00000003");
    drop(sh);
    assert_eq!(curl(&s, "POST", "/v1/domains/snl/destroy", &[]).status, 200);
    // The snapshots' images hold their values.
    let tree = tree_json(&env, "snl");
    for (snap, value) in [("a", "00000001"), ("b", "00000002")] {
        let overlay = tree["snapshots"][snap]["overlays"]["vda"].as_str().unwrap();
        // The overlay made at a snapshot sits on the image frozen at it: its backing.
        let frozen = tree["snapshots"][snap]["disks"]["vda"]["file"]
            .as_str()
            .unwrap();
        assert_eq!(chain(overlay)[1], frozen);
        let out = run("qemu-io", &["-r", "-U", "-c", "read -v 0 8", frozen]);
        assert!(out.contains(value), "{snap}: {out}");
    }
    // Revert to a: the guest reads 1; then c makes a branch beside b.
    let r = curl(&s, "POST", "/v1/domains/snl/snapshots/a/revert", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    // b's image is in no disk's chain now, but the snapshot keeps it: not deletable as a volume.
    let b_file = tree_json(&env, "snl")["snapshots"]["b"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_name = Path::new(&b_file).file_name().unwrap().to_str().unwrap();
    let r = curl(
        &s,
        "DELETE",
        &format!("/v1/pools/default/volumes/{b_name}"),
        &[],
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(Path::new(&b_file).exists());
    boot(2).await;
    let mut sh = GuestShell::connect(&socket, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(sh.run_ok(get, t).await.unwrap().trim(), "00000001");
    sh.run_ok(&set(4), t).await.unwrap();
    let r = post_json(&s, "/v1/domains/snl/snapshots", &json!({"name": "c"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let list = curl(&s, "GET", "/v1/domains/snl/snapshots", &[]).json();
    assert_eq!(
        list["tree"].as_str().unwrap(),
        "a\n├─ b\n└─ c (current)\n",
        "{list}"
    );
    drop(sh);
    assert_eq!(curl(&s, "POST", "/v1/domains/snl/destroy", &[]).status, 200);
}

/// `busctl` on the private bus at `address`: `call`s must succeed; the `--json=short` answer's
/// first datum (the JSON string most methods return), or Null.
fn bus_call(address: &str, path: &str, method: &str, sig_args: &[&str]) -> Value {
    let out = Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(["--json=short", "call", "org.novacron1", path])
        .arg(if path == "/org/novacron1" {
            "org.novacron1.Manager"
        } else {
            "org.novacron1.Domain"
        })
        .arg(method)
        .args(sig_args)
        .output()
        .expect("busctl must be installed (Debian package systemd)");
    assert!(
        out.status.success(),
        "{method} {sig_args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Null;
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let first = v["data"][0].clone();
    match first.as_str() {
        Some(s) if s.starts_with('{') || s.starts_with('[') => serde_json::from_str(s).unwrap(),
        _ => first,
    }
}

/// A call that must fail: `gdbus`'s error text (`GDBus.Error:<name>: <message>`).
fn bus_error(address: &str, path: &str, method: &str, args: &[&str]) -> String {
    let out = Command::new("gdbus")
        .args(["call", "--address", address, "--dest", "org.novacron1"])
        .args(["--object-path", path, "--method"])
        .arg(format!("org.novacron1.Domain.{method}"))
        .args(args)
        .output()
        .expect("gdbus must be installed (Debian package libglib2.0-bin)");
    assert!(!out.status.success(), "{method} {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The snapshot and agent methods of `org.novacron1.Domain`, driven with busctl/gdbus on a
/// private bus: the same service as HTTP (the same JSON, the same tree on disk), audited as
/// D-Bus calls, with typed errors that change nothing.
#[test]
fn snapshots_and_the_agent_on_dbus_answer_as_http_does() {
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!("[dbus]\naddress = {:?}\n", bus.address));
    let s = d.socket.clone();
    let a = bus.address.as_str();
    common::bus::wait_for_bus_name(a);
    let base = images_dir(&env).join("dbus.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"],
    );
    let mut args = XML.to_vec();
    let xml = guest_xml("snb", &base);
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    assert_eq!(curl(&s, "POST", "/v1/domains/snb/start", &[]).status, 200);
    let path = bus_call(a, "/org/novacron1", "LookupByName", &["s", "snb"]);
    let path = path.as_str().unwrap().to_owned();

    // Bad input: typed errors, nothing taken.
    let e = bus_error(a, &path, "CreateSnapshot", &[r#"{"name": "a/b"}"#]);
    assert!(e.contains("org.novacron1.Error.InvalidConfig"), "{e}");
    assert!(e.contains("name"), "{e}");
    let e = bus_error(a, &path, "CreateSnapshot", &["not json"]);
    assert!(e.contains("org.freedesktop.DBus.Error.InvalidArgs"), "{e}");
    let e = bus_error(
        a,
        &path,
        "CreateSnapshot",
        &[r#"{"name": "q", "quiesce": "required"}"#],
    );
    assert!(e.contains("guest agent"), "{e}");
    let e = bus_error(a, &path, "GetSnapshotInfo", &["nope"]);
    assert!(e.contains("org.novacron1.Error.NotFound"), "{e}");
    assert!(names(&bus_call(a, &path, "ListSnapshots", &[])).is_empty());
    assert_eq!(defined_disk(&env, "snb"), base.to_str().unwrap());

    // d1, d2 on the running guest: the tree HTTP shows and the overlays on disk.
    let d1 = bus_call(a, &path, "CreateSnapshot", &["s", r#"{"name": "d1"}"#]);
    assert_eq!(
        (d1["name"].as_str(), d1["current"].as_bool()),
        (Some("d1"), Some(true))
    );
    let o1 = defined_disk(&env, "snb");
    assert_eq!(chain(&o1), [o1.clone(), base.display().to_string()]);
    bus_call(
        a,
        &path,
        "CreateSnapshot",
        &["s", r#"{"name": "d2", "description": "second"}"#],
    );
    let list = bus_call(a, &path, "ListSnapshots", &[]);
    assert_eq!(list["tree"], "d1\n└─ d2 (current)\n", "{list}");
    assert_eq!(
        list,
        curl(&s, "GET", "/v1/domains/snb/snapshots", &[]).json()
    );
    let info = bus_call(a, &path, "GetSnapshotInfo", &["s", "d1"]);
    assert_eq!(info["children"], json!(["d2"]), "{info}");
    let x = bus_call(a, &path, "GetSnapshotXML", &["s", "d2"]);
    let x = x.as_str().unwrap();
    assert!(
        x.contains("<domainsnapshot") && x.contains("<name>d2</name>"),
        "{x}"
    );

    // The schedule: set, read, removed (then NotFound).
    let sch = bus_call(
        a,
        &path,
        "SetSnapshotSchedule",
        &["s", r#"{"every": "1d", "keep": 2}"#],
    );
    assert_eq!(
        (sch["every"].as_str(), sch["keep"].as_u64()),
        (Some("1d"), Some(2))
    );
    assert_eq!(
        bus_call(a, &path, "GetSnapshotSchedule", &[])["keep"],
        2,
        "the schedule read back"
    );
    bus_call(a, &path, "DeleteSnapshotSchedule", &[]);
    let e = bus_error(a, &path, "GetSnapshotSchedule", &[]);
    assert!(e.contains("org.novacron1.Error.NotFound"), "{e}");

    // The agent: no channel on this (running) guest. Info answers the state; a call is Unavailable.
    let agent = bus_call(a, &path, "AgentInfo", &["t", "0"]);
    assert_eq!(agent["connected"], false, "{agent}");
    let e = bus_error(a, &path, "AgentPing", &["1"]);
    assert!(e.contains("org.novacron1.Error.Unavailable"), "{e}");
    let e = bus_error(a, &path, "AgentFsFreeze", &["100000"]);
    assert!(e.contains("timeout_secs"), "{e}");

    // Delete d2 (a live merge), then revert the stopped guest to d1.
    bus_call(a, &path, "DeleteSnapshot", &["ss", "d2", ""]);
    assert_eq!(names(&bus_call(a, &path, "ListSnapshots", &[])), ["d1"]);
    let e = bus_error(a, &path, "RevertSnapshot", &["d1"]);
    assert!(e.contains("org.novacron1.Error.WrongState"), "{e}");
    assert_eq!(curl(&s, "POST", "/v1/domains/snb/destroy", &[]).status, 200);
    bus_call(a, &path, "RevertSnapshot", &["s", "d1"]);
    let reverted = defined_disk(&env, "snb");
    let frozen = tree_json(&env, "snb")["snapshots"]["d1"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chain(&reverted)[1], frozen);

    // Every change was audited as a D-Bus call.
    let trail: Vec<(String, String, String)> = audit_entries(&env)
        .iter()
        .filter(|e| e["domain"] == "snb" && e["actor"]["via"] == "dbus")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&e["op"]), s(&e["result"]), s(&e["actor"]["via"]))
        })
        .collect();
    for op in [
        "snapshot-create",
        "snapshot-delete",
        "snapshot-revert",
        "snapshot-schedule-set",
        "snapshot-schedule-delete",
    ] {
        assert!(
            trail.iter().any(|(o, r, _)| o == op && r == "ok"),
            "{op} not audited: {trail:?}"
        );
    }
    assert!(
        trail
            .iter()
            .any(|(o, r, _)| o == "snapshot-create" && r != "ok"),
        "the refused create not audited: {trail:?}"
    );
}

/// `e2fsck -fn` of a raw image: (clean, its report).
fn e2fsck(image: &Path) -> (bool, String) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("e2fsck must be installed (Debian package e2fsprogs)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// With the guest agent (the Linux test guest, TCG): a freeze through D-Bus stalls a write in
/// the guest (the agent reports frozen, command round trips later the write has not finished)
/// until the thaw; then a snapshot with `quiesce=required` freezes the image in a state
/// `e2fsck -fn` finds clean. The guest's periodic writeback is off and its last write was
/// fsync'd alone (data, inode and directory entry on disk, the bitmaps still in its memory),
/// so an unquiesced snapshot taken just before is not clean: the control that shows what the
/// freeze buys.
#[tokio::test]
async fn with_the_agent_a_freeze_stalls_guest_writes_and_the_quiesced_image_is_clean() {
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!("[dbus]\naddress = {:?}\n", bus.address));
    let s = d.socket.clone();
    let a = bus.address.clone();
    let data = images_dir(&env).join("fs.raw");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>{}{}",
        data.display(),
        novacron_tests::COMMAND_CHANNEL_XML,
        novacron_tests::AGENT_CHANNEL_XML
    );
    let xml = tokio::task::spawn_blocking(move || test_guest_domain_xml_with("snf", "", &disk))
        .await
        .unwrap()
        .expect("test guest");
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    let r = curl(&s, "POST", "/v1/domains/snf/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_file(
        &env.serial_log("snf"),
        novacron_tests::READY_MARKER,
        1,
        Duration::from_secs(120),
    )
    .await;
    let socket = env
        .config
        .run_dir
        .join("domains/snf.d")
        .join(format!("{COMMAND_CHANNEL}.sock"));
    let t = Duration::from_secs(60);
    let mut sh = GuestShell::connect(&socket, Duration::from_secs(20))
        .await
        .unwrap();
    sh.run_ok(
        "mke2fs /dev/vda >/dev/null && mount -t ext4 /dev/vda /mnt && \
         echo 0 >/proc/sys/vm/dirty_writeback_centisecs && sync",
        t,
    )
    .await
    .unwrap();
    common::bus::wait_for_bus_name(&a);
    let path = bus_call(&a, "/org/novacron1", "LookupByName", &["s", "snf"]);
    let path = path.as_str().unwrap().to_owned();
    wait_until("the guest agent answers", Duration::from_secs(60), || {
        curl(&s, "POST", "/v1/domains/snf/agent/ping", &[]).status == 200
    });
    let status = || {
        let r = post_json(
            &s,
            "/v1/domains/snf/agent/command",
            &json!({"execute": "guest-fsfreeze-status"}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["return"].as_str().unwrap_or_default().to_owned()
    };

    // Frozen through D-Bus: a write in the guest does not finish...
    let frozen = bus_call(&a, &path, "AgentFsFreeze", &["t", "0"]);
    assert_eq!(frozen["filesystems"], 1, "{frozen}");
    sh.run_ok(
        "(echo data | dd of=/mnt/f conv=fsync 2>/dev/null; echo done >/tmp/written) \
         >/dev/null 2>&1 &",
        t,
    )
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(status(), "frozen");
        let (rc, _) = sh.run("test -e /tmp/written", t).await.unwrap();
        assert_ne!(rc, 0, "the write finished on a frozen file system");
    }
    // ...until the thaw.
    let thawed = bus_call(&a, &path, "AgentFsThaw", &["t", "0"]);
    assert_eq!(thawed["filesystems"], 1, "{thawed}");
    assert_eq!(status(), "thawed");
    let deadline = Instant::now() + t;
    while sh.run("test -e /tmp/written", t).await.unwrap().0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the write never finished after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sh.run_ok("cat /mnt/f", t).await.unwrap(), "data\n");

    // The control: crash-consistent only, the image misses what the guest still holds.
    let r = post_json(&s, "/v1/domains/snf/snapshots", &json!({"name": "crash"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["quiesced"], false);
    let (clean, report) = e2fsck(&data);
    assert!(
        !clean,
        "the unquiesced image is clean: the control shows nothing\n{report}"
    );

    // Quiesced: the guest's file system is flushed and frozen for the snapshot.
    let r = post_json(
        &s,
        "/v1/domains/snf/snapshots",
        &json!({"name": "quiet", "quiesce": "required"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["quiesced"], true, "{}", r.body);
    assert_eq!(status(), "thawed");
    let frozen_file = tree_json(&env, "snf")["snapshots"]["quiet"]["disks"]["vda"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let flat = env.dir.path().join("quiet.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-U",
            "-O",
            "raw",
            &frozen_file,
            flat.to_str().unwrap(),
        ],
    );
    let (clean, report) = e2fsck(&flat);
    assert!(clean, "the quiesced image is not clean\n{report}");
    // The guest goes on writing after the thaw.
    sh.run_ok("echo more >/mnt/g && sync", t).await.unwrap();
    drop(sh);
    assert_eq!(curl(&s, "POST", "/v1/domains/snf/destroy", &[]).status, 200);
}

/// A raw disk's first sector is the guest's: a qcow2 header written there (naming another
/// file as its backing) must not make a snapshot read the disk as qcow2, or the overlay would
/// record qcow2 as its backing's format and the next start would hand QEMU that other file.
#[test]
fn a_raw_disk_holding_a_qcow2_header_is_snapshotted_as_raw() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let dir = images_dir(&env);
    let secret = dir.join("secret.raw");
    std::fs::write(&secret, b"another tenant's data").unwrap();
    // The "guest's" disk: a qcow2 image (backing: the secret) copied byte for byte into a
    // file the definition says is raw.
    let disguised = dir.join("disguised.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            secret.to_str().unwrap(),
            "-F",
            "raw",
            disguised.to_str().unwrap(),
            "16M",
        ],
    );
    let disk = dir.join("guest.raw");
    std::fs::copy(&disguised, &disk).unwrap();
    let xml = guest_xml("sn9", &disk).replace("type='qcow2'", "type='raw'");
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);
    let r = post_json(&s, "/v1/domains/sn9/snapshots", &json!({"name": "s"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let tree = tree_json(&env, "sn9");
    let rec = &tree["files"][disk.to_str().unwrap()];
    assert_eq!(rec["format"], "raw", "{tree}");
    assert!(rec["backing"].is_null(), "{tree}");
    let overlay = defined_disk(&env, "sn9");
    let info: Value =
        serde_json::from_str(&run("qemu-img", &["info", "-U", "--output=json", &overlay])).unwrap();
    assert_eq!(info["backing-filename-format"], "raw", "{info}");
    assert_eq!(
        chain(&overlay),
        [overlay.clone(), disk.display().to_string()]
    );
}
