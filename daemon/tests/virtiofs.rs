//! Issue 16: `<filesystem>` over virtiofs with a real novacrond, virtiofsd and QEMU. The
//! daemon starts one virtiofsd per share before QEMU (its pid in the runtime record), a
//! restarted daemon adopts it with the guest, and it is gone once the guest is destroyed;
//! an operator may share only directories inside the storage roots.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{curl, curl_tcp, tcp_api, Reply};
use common::{audit_entries, osless, recorded_pid, Env};
use novacron_domain::model::{MemoryAccess, MemoryBacking, MemorySource};

const TOKEN: &str = "op-s3cret";
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// Root over the Unix socket: an admin.
fn as_admin(socket: &Path, method: &str, path: &str, xml: Option<&str>) -> Reply {
    match xml {
        Some(x) => curl(
            socket,
            method,
            path,
            &["-H", "Content-Type: application/xml", "--data-binary", x],
        ),
        None => curl(socket, method, path, &[]),
    }
}

fn as_operator(port: u16, method: &str, path: &str, xml: Option<&str>) -> Reply {
    match xml {
        Some(x) => curl_tcp(
            port,
            TOKEN,
            method,
            path,
            &["-H", "Content-Type: application/xml", "--data-binary", x],
        ),
        None => curl_tcp(port, TOKEN, method, path, &[]),
    }
}

fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_is(socket: &Path, name: &str, state: &str) -> bool {
    let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
    r.status == 200 && r.json()["state"] == state
}

/// An OS-less guest with shared memfd RAM and one virtiofs share.
fn guest_xml(name: &str, dir: &Path) -> String {
    let mut c = osless(name);
    c.memory_backing = Some(MemoryBacking {
        source: Some(MemorySource::Memfd),
        access: Some(MemoryAccess::Shared),
        ..Default::default()
    });
    c.to_xml().replace(
        "</domain>",
        &format!(
            "<devices><filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>\
             <source dir='{}'/><target dir='share'/></filesystem></devices></domain>",
            dir.display()
        ),
    )
}

/// virtiofsd processes serving `dir`, found in /proc (not in any record).
fn virtiofsd_serving(dir: &Path) -> Vec<u32> {
    let want = format!("source={}", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| virtiofsd_alive(*pid) && cmdline(*pid).is_some_and(|c| c.contains(&want)))
        .collect()
}

/// The virtiofsd pids in a guest's runtime record.
fn recorded_virtiofsd(env: &Env, name: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(env.record(name)).expect("runtime record");
    let v: serde_json::Value = serde_json::from_str(&text).expect("record json");
    v["virtiofsd"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["pid"].as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// A live (non-zombie) virtiofsd at `pid`.
fn virtiofsd_alive(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with(['Z', 'X'])))
        .unwrap_or(true);
    !zombie && cmdline(pid).is_some_and(|c| c.starts_with(VIRTIOFSD))
}

#[test]
fn a_virtiofs_share_is_served_by_a_supervised_virtiofsd() {
    let env = Env::new();
    let config = tcp_api(&[("ops", TOKEN, "operator")]);
    let daemon = env.start_daemon(&config);
    let port = daemon.tcp_port();
    let images = env.config.state_dir.join("images");
    let inside = images.join("share");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    // An operator's virtiofs share: refused, audited, nothing defined.
    let r = as_operator(
        port,
        "POST",
        "/v1/domains",
        Some(&guest_xml("vfs-out", &outside)),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains(&format!(
            "devices.filesystems[0].source: {}: virtiofs shares are for admins only",
            outside.display()
        )),
        "{}",
        r.body
    );
    assert!(
        audit_entries(&env)
            .iter()
            .any(|e| e["op"] == "define" && e["domain"] == "vfs-out" && e["result"] == "forbidden"),
        "refusal not audited"
    );

    // Inside the roots too: virtiofsd runs as root, so virtiofs is for admins only.
    let r = as_operator(
        port,
        "POST",
        "/v1/domains",
        Some(&guest_xml("vfs", &inside)),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("virtiofs shares are for admins only"),
        "{}",
        r.body
    );

    // An admin's: started with its virtiofsd.
    let r = as_admin(
        &daemon.socket,
        "POST",
        "/v1/domains",
        Some(&guest_xml("vfs", &inside)),
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = as_admin(&daemon.socket, "POST", "/v1/domains/vfs/start", None);
    assert_eq!(r.status, 200, "{r:?}");
    until("running", 30, || state_is(&daemon.socket, "vfs", "running"));
    let fsd = recorded_virtiofsd(&env, "vfs");
    assert_eq!(fsd.len(), 1, "virtiofsd not recorded");
    let fsd = fsd[0];
    let c = cmdline(fsd).expect("virtiofsd runs");
    assert!(
        c.starts_with(VIRTIOFSD) && c.contains(&format!("source={}", inside.display())),
        "{c}"
    );
    let qemu = recorded_pid(&env, "vfs");
    let q = cmdline(qemu).unwrap();
    assert!(
        q.contains("vhost-user-fs-pci,id=fs0,chardev=chr-fs0") && q.contains("share=on"),
        "{q}"
    );
    // The daemon bound the socket for the unprivileged QEMU alone.
    let sock = q
        .split_once("socket,id=chr-fs0,path=")
        .and_then(|(_, r)| r.split_whitespace().next())
        .expect("chardev path")
        .to_owned();
    let meta = std::fs::metadata(&sock).unwrap();
    let qemu_uid = std::fs::metadata(format!("/proc/{qemu}")).unwrap().uid();
    assert_ne!(qemu_uid, 0, "QEMU runs unprivileged here");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (qemu_uid, 0o600),
        "{sock}"
    );
    // QEMU never holds the shared directory itself: virtiofsd serves it.
    let held = std::fs::read_dir(format!("/proc/{qemu}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .any(|l| l == inside);
    assert!(!held, "QEMU holds the share");
    let r = curl(
        &daemon.socket,
        "POST",
        "/v1/domains/vfs/qmp",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"execute":"qom-list","arguments":{"path":"/machine/peripheral"}}"#,
        ],
    );
    assert!(
        r.json()["return"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fs0" && p["type"] == "child<vhost-user-fs-pci>"),
        "{}",
        r.body
    );

    // kill -9 of the daemon: the next one adopts the guest and its virtiofsd.
    drop(daemon);
    let daemon = env.start_daemon(&config);
    until("adopted", 30, || state_is(&daemon.socket, "vfs", "running"));
    assert_eq!(recorded_pid(&env, "vfs"), qemu);
    assert_eq!(recorded_virtiofsd(&env, "vfs"), vec![fsd]);
    assert!(
        virtiofsd_alive(fsd),
        "the adopted guest's virtiofsd was stopped"
    );

    // Destroyed: no virtiofsd left.
    let r = curl(&daemon.socket, "POST", "/v1/domains/vfs/destroy", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    until("shutoff", 30, || state_is(&daemon.socket, "vfs", "shutoff"));
    until("virtiofsd gone", 15, || !virtiofsd_alive(fsd));

    // The second share's virtiofsd cannot be started (virtiofsd's `-o` list cannot carry a
    // comma): the start fails before QEMU, and the first share's virtiofsd, which QEMU will
    // never connect to (it would wait forever), is stopped.
    let bad = images.join("bad");
    let comma = images.join("a,b");
    for d in [&bad, &comma] {
        std::fs::create_dir_all(d).unwrap();
    }
    let xml = guest_xml("vfs-bad", &bad).replace(
        "</devices>",
        &format!(
            "<filesystem type='mount'><driver type='virtiofs'/><source dir='{}'/>\
             <target dir='two'/></filesystem></devices>",
            comma.display()
        ),
    );
    let r = as_admin(&daemon.socket, "POST", "/v1/domains", Some(&xml));
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = as_admin(&daemon.socket, "POST", "/v1/domains/vfs-bad/start", None);
    assert_ne!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("devices.filesystems[1].source"),
        "{}",
        r.body
    );
    until("failed start's virtiofsd gone", 15, || {
        virtiofsd_serving(&bad).is_empty()
    });
}
