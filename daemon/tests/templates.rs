//! Domain templates through a real daemon, real QEMU and real qemu-img: a template made from
//! a stopped Linux test guest whose disk holds a marker, three domains deployed from it as
//! linked clones of the one shared base (checked with `qemu-img info`), each booted and
//! reading the marker and writing its own; delete refused while deployed; bad input refused
//! with nothing changed; the journal of a deploy a crash interrupted undone at restart; an
//! operator held to the storage roots, and a deploy whose definition is refused rolled back.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::{curl, novactl, Reply};
use common::*;
use serde_json::{json, Value};

const JSON: &[&str] = &["-H", "Content-Type: application/json", "--data-binary"];
const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];
const MARKER: &str = "NOVACRON-TEMPLATE-MARKER-7f3a";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn send(s: &Path, method: &str, path: &str, body: &Value) -> Reply {
    let body = body.to_string();
    let mut args = JSON.to_vec();
    args.push(&body);
    curl(s, method, path, &args)
}

fn images(env: &Env) -> PathBuf {
    let d = env.config.state_dir.join("images");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The names in a directory, sorted: what "nothing changed on disk" compares.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn img_info(path: &str) -> Value {
    serde_json::from_str(&run("qemu-img", &["info", "-U", "--output=json", path])).unwrap()
}

/// A 16 MiB qcow2 whose first bytes are `marker`.
fn disk_with_marker(dir: &Path, name: &str, marker: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    let mut bytes = vec![0u8; 16 << 20];
    bytes[..marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(&raw, bytes).unwrap();
    let out = dir.join(name);
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(raw).unwrap();
    out
}

#[tokio::test]
async fn three_domains_deployed_from_one_template_share_its_base_and_each_boots() {
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let mut d = env.start_daemon("");
    let s = d.socket.clone();
    let pool = images(&env);
    let disk = disk_with_marker(&pool, "gold.qcow2", MARKER);
    let devices = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>{}",
        disk.display(),
        novacron_tests::COMMAND_CHANNEL_XML
    );
    let xml = tokio::task::spawn_blocking(move || test_guest_domain_xml_with("gold", "", &devices))
        .await
        .unwrap()
        .expect("test guest");
    let mut args = XML.to_vec();
    args.push(&xml);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);

    // Bad names first: refused, nothing made.
    let before = listing(&pool);
    for bad in ["../x", "a/b", ".hidden", "-x", "a b", ""] {
        let r = send(
            &s,
            "POST",
            "/v1/templates",
            &json!({"name": bad, "domain": "gold"}),
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert_eq!(
            r.json()["error"]["details"][0]["path"],
            "name",
            "{}",
            r.body
        );
    }
    let r = send(
        &s,
        "POST",
        "/v1/templates",
        &json!({"name": "t", "domain": "nosuch"}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (404, "not_found".into()),
        "{}",
        r.body
    );
    assert_eq!(listing(&pool), before);
    assert!(!env.config.state_dir.join("templates/t.json").exists());

    // The template, through novactl.
    let (code, out, err) = novactl(
        &s,
        &[
            "template-create",
            "golden",
            "gold",
            "--description",
            "web tier",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let info = curl(&s, "GET", "/v1/templates/golden", &[]).json();
    assert_eq!(info["latest"], 1, "{info}");
    let base = info["versions"][0]["bases"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(info["versions"][0]["bases"][0]["disk"], "vda");
    assert!(info["versions"][0]["config"]["uuid"].is_null(), "{info}");
    // A read-only, flattened copy of the disk: same contents, no backing file.
    let meta = std::fs::metadata(&base).unwrap();
    assert_eq!(meta.permissions().mode() & 0o222, 0, "base is writable");
    assert!(img_info(&base)["backing-filename"].is_null());
    run(
        "qemu-img",
        &["compare", "-U", disk.to_str().unwrap(), &base],
    );
    // The source domain is still a domain (the bases are copies).
    assert_eq!(curl(&s, "GET", "/v1/domains/gold", &[]).status, 200);

    // Three domains: web1 over HTTP, web2 and web3 through novactl.
    let r = send(
        &s,
        "POST",
        "/v1/templates/golden/deploy",
        &json!({"name": "web1"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["volumes"], json!(["default/web1-vda.qcow2"]));
    let spec = common::openapi::Spec::load();
    spec.check_response("/v1/templates/{template}/deploy", "POST", 201, &r.body);
    for name in ["web2", "web3"] {
        let (code, out, err) = novactl(&s, &["template-deploy", "golden", name]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let mut uuids = Vec::new();
    let mut clones = Vec::new();
    for name in ["web1", "web2", "web3"] {
        let v = curl(&s, "GET", &format!("/v1/domains/{name}"), &[]).json();
        let clone = v["config"]["devices"]["disks"][0]["source"]["path"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            clone,
            pool.join(format!("{name}-vda.qcow2")).to_str().unwrap()
        );
        // The clone is a qcow2 overlay whose backing file is the one shared base.
        let i = img_info(&clone);
        assert_eq!(i["format"], "qcow2");
        assert_eq!(i["backing-filename"], base.as_str(), "{name}: {i}");
        assert_eq!(i["full-backing-filename"], base.as_str(), "{name}: {i}");
        assert!(
            std::fs::metadata(&clone).unwrap().len() < 1 << 20,
            "{name}: not thin"
        );
        uuids.push(v["config"]["uuid"].as_str().unwrap().to_owned());
        clones.push(clone);
    }
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 3, "uuids not distinct: {uuids:?}");
    let r = curl(&s, "GET", "/v1/templates/golden", &[]);
    spec.check_response("/v1/templates/{template}", "GET", 200, &r.body);
    let r = curl(&s, "GET", "/v1/templates", &[]);
    spec.check_response("/v1/templates", "GET", 200, &r.body);
    let info = curl(&s, "GET", "/v1/templates/golden", &[]).json();
    assert_eq!(
        info["versions"][0]["deployed"],
        json!(["web1", "web2", "web3"]),
        "{info}"
    );

    // Each boots the Linux test guest, reads the template's marker and writes its own name.
    // Generous: TCG guests on a loaded CI machine (deadlines, not sleeps).
    let t = Duration::from_secs(180);
    for name in ["web1", "web2", "web3"] {
        let r = curl(&s, "POST", &format!("/v1/domains/{name}/start"), &[]);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        wait_file(
            &env.serial_log(name),
            novacron_tests::READY_MARKER,
            1,
            Duration::from_secs(300),
        )
        .await;
        let socket = env
            .config
            .run_dir
            .join(format!("domains/{name}.d"))
            .join(format!("{COMMAND_CHANNEL}.sock"));
        let mut sh = GuestShell::connect(&socket, Duration::from_secs(60))
            .await
            .unwrap();
        let head = format!("dd if=/dev/vda bs={} count=1 2>/dev/null", MARKER.len());
        assert_eq!(sh.run_ok(&head, t).await.unwrap().trim(), MARKER, "{name}");
        sh.run_ok(
            &format!("printf '{name}' | dd of=/dev/vda bs=4096 seek=1 2>/dev/null && sync"),
            t,
        )
        .await
        .unwrap();
        drop(sh);
        let r = curl(&s, "POST", &format!("/v1/domains/{name}/destroy"), &[]);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    // Each clone holds its own write; the base holds none of them.
    for (name, clone) in ["web1", "web2", "web3"].iter().zip(&clones) {
        let out = run("qemu-io", &["-r", "-U", "-c", "read -v 4096 4", clone]);
        assert!(out.contains(name), "{name}: {out}");
    }
    run(
        "qemu-img",
        &["compare", "-U", disk.to_str().unwrap(), &base],
    );
    let out = run("qemu-io", &["-r", "-U", "-c", "read -v 0 16", &base]);
    // qemu-io prints non-letters as `.`.
    assert!(out.contains(&MARKER[..8]), "{out}");

    // Delete refused while deployed, naming a domain; the base's volume is not deletable.
    let (code, _, err) = novactl(&s, &["template-delete", "golden"]);
    assert_ne!(code, 0);
    assert!(err.contains("web1"), "{err}");
    let r = curl(&s, "DELETE", "/v1/templates/golden", &[]);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "busy".into()),
        "{}",
        r.body
    );
    let base_name = Path::new(&base).file_name().unwrap().to_str().unwrap();
    let r = curl(
        &s,
        "DELETE",
        &format!("/v1/pools/default/volumes/{base_name}"),
        &[],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (409, "busy".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("web1"), "{}", r.body);
    assert!(Path::new(&base).exists());

    // More bad input, nothing changed: an existing name, an unknown version, hostile names.
    let before = listing(&pool);
    let defs = listing(&env.config.state_dir.join("domains"));
    let tpl = std::fs::read(env.config.state_dir.join("templates/golden.json")).unwrap();
    let web1 = std::fs::read(&clones[0]).unwrap();
    let r = send(
        &s,
        "POST",
        "/v1/templates/golden/deploy",
        &json!({"name": "web1"}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (409, "already_exists".into()),
        "{}",
        r.body
    );
    let r = send(
        &s,
        "POST",
        "/v1/templates/golden/deploy",
        &json!({"name": "gold"}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = send(
        &s,
        "POST",
        "/v1/templates/golden/deploy",
        &json!({"name": "web4", "version": 7}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (404, "not_found".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("version 7"), "{}", r.body);
    for bad in ["../evil", "a/b", "x y", ".web", ""] {
        let r = send(
            &s,
            "POST",
            "/v1/templates/golden/deploy",
            &json!({"name": bad}),
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }
    let r = send(
        &s,
        "POST",
        "/v1/templates/..%2Fx/deploy",
        &json!({"name": "w"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = send(
        &s,
        "POST",
        "/v1/templates/nosuch/deploy",
        &json!({"name": "w"}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = send(
        &s,
        "POST",
        "/v1/templates/golden/deploy",
        &json!({"name": "w", "pool": "nosuch"}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(listing(&pool), before);
    assert_eq!(listing(&env.config.state_dir.join("domains")), defs);
    assert_eq!(
        std::fs::read(env.config.state_dir.join("templates/golden.json")).unwrap(),
        tpl
    );
    assert_eq!(std::fs::read(&clones[0]).unwrap(), web1);
    assert!(listing(&env.config.state_dir.join("templates/pending")).is_empty());
    // Every refusal was audited.
    let refused = audited(&env, |o| o.starts_with("template-"))
        .into_iter()
        .filter(|e| e.2 != "ok")
        .count();
    assert!(refused >= 20, "{refused} refusals audited");

    // Versions: a second one from the same domain, deployable by number; deleting it alone
    // (nothing deployed from it) removes its base and keeps version 1.
    let (code, out, err) = novactl(
        &s,
        &[
            "template-update",
            "golden",
            "--from",
            "gold",
            "--description",
            "v2",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let info = curl(&s, "GET", "/v1/templates/golden", &[]).json();
    assert_eq!(info["latest"], 2, "{info}");
    let base2 = info["versions"][1]["bases"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(base2, base);
    let r = send(
        &s,
        "PATCH",
        "/v1/templates/golden",
        &json!({"description": "the web tier"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["description"], "the web tier");
    assert_eq!(r.json()["latest"], 2);
    let (code, out, err) = novactl(&s, &["template-delete", "golden", "--version", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!Path::new(&base2).exists());
    assert!(Path::new(&base).exists());
    let (code, out, _) = novactl(&s, &["template-list"]);
    assert_eq!(code, 0);
    assert!(out.contains("golden"), "{out}");

    // A deploy a crash interrupted: its journal names a clone no defined domain uses (removed
    // at restart) and web1's clone (kept: web1 is defined with it).
    // A third journal names a file it never made (no identity recorded: the crash came
    // before its create) that somebody else has made since: it stays.
    let orphan = pool.join("web9-vda.qcow2");
    std::fs::write(&orphan, b"half made").unwrap();
    let bystander = pool.join("web8-vda.qcow2");
    std::fs::write(&bystander, b"somebody else's").unwrap();
    let pending = env.config.state_dir.join("templates/pending");
    std::fs::create_dir_all(&pending).unwrap();
    let identity = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        json!([m.dev(), m.ino()])
    };
    let journal = |owner: &str, name: &str, made: Option<Value>| {
        let mut f = json!({"dir": pool.to_str().unwrap(), "name": name});
        if let Some(m) = made {
            f["made"] = m;
        }
        json!({"op": "deploy", "owner": owner, "files": [f]}).to_string()
    };
    std::fs::write(
        pending.join("1-1-1.json"),
        journal("web9", "web9-vda.qcow2", Some(identity(&orphan))),
    )
    .unwrap();
    std::fs::write(
        pending.join("1-1-2.json"),
        journal(
            "web1",
            "web1-vda.qcow2",
            Some(identity(Path::new(&clones[0]))),
        ),
    )
    .unwrap();
    std::fs::write(
        pending.join("1-1-3.json"),
        journal("web8", "web8-vda.qcow2", None),
    )
    .unwrap();
    drop(d);
    d = env.start_daemon("");
    let s = d.socket.clone();
    assert!(
        !orphan.exists(),
        "the interrupted deploy's clone survived the restart"
    );
    assert!(Path::new(&clones[0]).exists());
    assert!(
        bystander.exists(),
        "a file the interrupted deploy never made was removed"
    );
    std::fs::remove_file(&bystander).unwrap();
    assert!(listing(&pending).is_empty());
    assert_eq!(curl(&s, "GET", "/v1/domains/web9", &[]).status, 404);

    // Once the domains and their clones are gone, the template goes with its base.
    for (name, clone) in ["web1", "web2", "web3"].iter().zip(&clones) {
        assert_eq!(
            curl(&s, "DELETE", &format!("/v1/domains/{name}"), &[]).status,
            204
        );
        let vol = Path::new(clone).file_name().unwrap().to_str().unwrap();
        let r = curl(
            &s,
            "DELETE",
            &format!("/v1/pools/default/volumes/{vol}"),
            &[],
        );
        assert_eq!(r.status, 204, "{}", r.body);
    }
    // Still the template's: not deletable as a volume.
    let r = curl(
        &s,
        "DELETE",
        &format!("/v1/pools/default/volumes/{base_name}"),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("template golden"), "{}", r.body);
    let r = curl(&s, "DELETE", "/v1/templates/golden", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(!Path::new(&base).exists());
    assert!(!env.config.state_dir.join("templates/golden.json").exists());
    assert_eq!(curl(&s, "GET", "/v1/templates/golden", &[]).status, 404);
}

/// An OS-less guest (KVM where it works) with one qcow2 disk at `disk`, plus `os_extra`.
fn osless_with_disk(name: &str, disk: &Path, os_extra: &str) -> String {
    let xml = osless(name).to_xml();
    let dev = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        disk.display()
    );
    let xml = xml.replace("</os>", &format!("{os_extra}</os>"));
    if xml.contains("<devices>") {
        xml.replace("<devices>", &format!("<devices>{dev}"))
    } else {
        xml.replace("</domain>", &format!("<devices>{dev}</devices></domain>"))
    }
}

#[test]
fn an_operator_is_held_to_the_storage_roots_and_a_refused_deploy_leaves_nothing() {
    let env = Env::new();
    let api = common::daemon::tcp_api(&[("ops", "operator-secret", "operator")]);
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let d = env.start_daemon(&format!("{api}[dbus]\naddress = {:?}\n", bus.address));
    let s = d.socket.clone();
    let port = d.tcp_port();
    let op = |method: &str, path: &str, body: &Value| {
        let body = body.to_string();
        let mut args = JSON.to_vec();
        args.push(&body);
        common::daemon::curl_tcp(port, "operator-secret", method, path, &args)
    };
    let admin_define = |xml: &str| {
        let mut args = XML.to_vec();
        args.push(xml);
        let r = curl(&s, "POST", "/v1/domains", &args);
        assert_eq!(r.status, 201, "{}", r.body);
    };
    let pool = images(&env);
    // An administrator's domain whose disk is outside the storage roots: an operator may not
    // make the daemon copy it.
    let outside = disk_with_marker(env.dir.path(), "outside.qcow2", "host secret");
    admin_define(&osless_with_disk("outside", &outside, ""));
    let before = listing(&pool);
    let r = op(
        "POST",
        "/v1/templates",
        &json!({"name": "leak", "domain": "outside"}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "forbidden".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("outside the storage roots"), "{}", r.body);
    assert_eq!(listing(&pool), before);
    assert!(!env.config.state_dir.join("templates/leak.json").exists());

    // Refused while the source runs, naming it.
    let disk = disk_with_marker(&pool, "plain.qcow2", MARKER);
    admin_define(&osless_with_disk("plain", &disk, ""));
    assert_eq!(curl(&s, "POST", "/v1/domains/plain/start", &[]).status, 200);
    let r = op(
        "POST",
        "/v1/templates",
        &json!({"name": "plain", "domain": "plain"}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (409, "wrong_state".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("plain"), "{}", r.body);
    assert_eq!(
        curl(&s, "POST", "/v1/domains/plain/destroy", &[]).status,
        200
    );
    let before = listing(&pool);
    let r = op(
        "POST",
        "/v1/templates",
        &json!({"name": "plain", "domain": "plain"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(listing(&pool).len(), before.len() + 1);
    // Deployed and started in one call each: OS-less guests reach running.
    for name in ["o1", "o2"] {
        let r = op(
            "POST",
            "/v1/templates/plain/deploy",
            &json!({"name": name, "start": true}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["domain"]["state"], "running", "{}", r.body);
    }
    let r = op("DELETE", "/v1/templates/plain", &json!({}));
    assert_eq!(
        (r.status, r.error_code()),
        (409, "busy".into()),
        "{}",
        r.body
    );

    // The same operations on D-Bus (Manager methods; "" and 0 mean not given).
    let busctl = |args: &[&str]| {
        Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args(["--json=short", "call", "org.novacron1", "/org/novacron1"])
            .arg("org.novacron1.Manager")
            .args(args)
            .output()
            .expect("busctl")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !busctl(&["ListTemplates"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "org.novacron1 never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = busctl(&["DeployTemplate", "ssusb", "plain", "o3", "0", "", "false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deployed: Value = serde_json::from_str(v["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        deployed["volumes"],
        json!(["default/o3-vda.qcow2"]),
        "{deployed}"
    );
    let out = busctl(&["GetTemplateInfo", "s", "plain"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let info: Value = serde_json::from_str(v["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        info["versions"][0]["deployed"],
        json!(["o1", "o2", "o3"]),
        "{info}"
    );
    let out = busctl(&["DeleteTemplate", "su", "plain", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("o1"), "{err}");
    let out = busctl(&["DeployTemplate", "ssusb", "plain", "../x", "0", "", "false"]);
    assert!(!out.status.success());

    // A template whose definition names a kernel outside the roots (an administrator's):
    // the operator's deploy is refused by the define's admission, and the clones it had made
    // are removed again.
    let kernel = env.dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let disk = disk_with_marker(&pool, "kern.qcow2", MARKER);
    admin_define(&osless_with_disk(
        "kern",
        &disk,
        &format!("<kernel>{}</kernel>", kernel.display()),
    ));
    let r = send(
        &s,
        "POST",
        "/v1/templates",
        &json!({"name": "kern", "domain": "kern"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let before = listing(&pool);
    let r = op("POST", "/v1/templates/kern/deploy", &json!({"name": "k1"}));
    assert_eq!(
        (r.status, r.error_code()),
        (403, "forbidden".into()),
        "{}",
        r.body
    );
    assert_eq!(listing(&pool), before, "a refused deploy left files");
    assert_eq!(curl(&s, "GET", "/v1/domains/k1", &[]).status, 404);
    let trail = audited(&env, |o| o.starts_with("template-"));
    for (what, target, result) in [
        ("template-create", "leak", "forbidden"),
        ("template-create", "plain", "wrong_state"),
        ("template-deploy", "o1", "ok"),
        ("template-delete", "plain", "busy"),
        ("template-deploy", "k1", "forbidden"),
    ] {
        assert!(
            trail
                .iter()
                .any(|e| e.0 == what && e.1 == target && e.2 == result),
            "{what} {target} {result} not audited: {trail:?}"
        );
    }
    // The clones are thin overlays on the one base.
    let base = std::fs::metadata(pool.join("plain-v1-vda.qcow2")).unwrap();
    for name in ["o1", "o2"] {
        let clone = pool.join(format!("{name}-vda.qcow2"));
        let i = img_info(clone.to_str().unwrap());
        let b = std::fs::metadata(i["full-backing-filename"].as_str().unwrap()).unwrap();
        assert_eq!((b.dev(), b.ino()), (base.dev(), base.ino()));
    }
}

/// A tmpfs of `size` mounted at `dir` for the test's life (a pool that is nearly full).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let opts = format!("size={size}");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str().unwrap()],
        );
        SmallFs(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A template whose flattened bases do not fit the pool is refused before anything is made,
/// naming the pool, the bytes needed and the bytes available; the same template fits the
/// default pool.
#[test]
fn a_template_that_does_not_fit_its_pool_is_refused_and_changes_nothing() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = d.socket.clone();
    let pool = images(&env);
    let small = pool.join("small");
    let _fs = SmallFs::mount(&small, "8m");
    let xml = format!(
        "<pool type='dir'><name>small</name><target><path>{}</path></target></pool>",
        small.display()
    );
    let mut args = XML.to_vec();
    args.push(&xml);
    let r = curl(&s, "POST", "/v1/pools", &args);
    assert_eq!(r.status, 201, "{}", r.body);
    // 12 MiB of data in a 32 MiB disk: sparse beyond that, too big for the 8 MiB pool.
    let disk = pool.join("full.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "32M"],
    );
    run(
        "qemu-io",
        &["-c", "write -P 0x5a 0 12M", disk.to_str().unwrap()],
    );
    let dom = osless_with_disk("full", &disk, "");
    let mut args = XML.to_vec();
    args.push(&dom);
    assert_eq!(curl(&s, "POST", "/v1/domains", &args).status, 201);

    let before = listing(&small);
    let r = send(
        &s,
        "POST",
        "/v1/templates",
        &json!({"name": "big", "domain": "full", "pool": "small"}),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (400, "invalid_config".into()),
        "{}",
        r.body
    );
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .filter(|n| *n > 1 << 20)
        .collect();
    assert!(
        message.contains("pool 'small'") && message.contains("vda"),
        "{message}"
    );
    // Available (at most 8 MiB), then needed (at least the 12 MiB of data).
    assert!(
        numbers.len() >= 2 && numbers[0] <= 8 << 20 && numbers[1] >= 12 << 20,
        "{message}"
    );
    assert_eq!(
        r.json()["error"]["details"][0]["path"],
        "pool",
        "{}",
        r.body
    );
    assert_eq!(listing(&small), before, "a refused template left files");
    assert!(!env.config.state_dir.join("templates/big.json").exists());
    assert_eq!(curl(&s, "GET", "/v1/templates/big", &[]).status, 404);

    // The default pool has the room.
    let r = send(
        &s,
        "POST",
        "/v1/templates",
        &json!({"name": "big", "domain": "full"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let base = pool.join("big-v1-vda.qcow2");
    assert!(base.exists());

    // A second version a crash interrupted mid-copy: its journal names the half-made base
    // (removed at restart) and, as a journal written over a kept file would, version 1's
    // base (kept: the template holds it).
    let half = small.join("big-v2-vda.qcow2");
    std::fs::write(&half, b"half made").unwrap();
    let identity = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        json!([m.dev(), m.ino()])
    };
    let pending = env.config.state_dir.join("templates/pending");
    std::fs::create_dir_all(&pending).unwrap();
    let journal = json!({"op": "bases", "owner": "big", "files": [
        {"dir": small.to_str().unwrap(), "name": "big-v2-vda.qcow2", "made": identity(&half)},
        {"dir": pool.to_str().unwrap(), "name": "big-v1-vda.qcow2", "made": identity(&base)},
    ]});
    std::fs::write(pending.join("1-1-1.json"), journal.to_string()).unwrap();
    drop(d);
    let d = env.start_daemon("");
    assert!(
        !half.exists(),
        "the interrupted version's base survived the restart"
    );
    assert!(base.exists(), "a base the template holds was removed");
    assert!(listing(&pending).is_empty(), "{:?}", listing(&pending));
    let r = curl(&d.socket, "GET", "/v1/templates/big", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    drop(d);
}
