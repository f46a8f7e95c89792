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
    wait_until("four scheduled snapshots", Duration::from_secs(60), || {
        let now = auto(&s);
        assert!(now.len() <= 3, "retention lags: {now:?}");
        seen.extend(now.iter().cloned());
        seen.len() >= 4 && now.len() == 2
    });
    let now = auto(&s);
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
