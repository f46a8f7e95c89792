//! Issue 19: a guest changed while it runs migrates with its live device set. An OS-less q35
//! guest (KVM where it works: no guest OS is needed, QEMU's own `query-*` answers are
//! compared) gets a vCPU, a DIMM, a disk and a NIC (a tap on a bridge this test makes)
//! hot-added, then moves between two real novacrond processes on loopback. The destination
//! must run with the very same devices, as QEMU reports them (`query-hotpluggable-cpus`,
//! `query-memory-devices`, `query-pci`, `query-block`) and as its daemon shows them; a
//! destination started from the definition alone refuses the stream ("Unknown ramblock").

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, tcp_api, Daemon, Reply};
use common::Env;
use novacrond::client::{Client, Target};
use novacrond::service::migration::{MigrateRequest, MigrationOptions, Phase};
use serde_json::{json, Value};

const TOKEN: &str = "peer-secret-token";
const NAME: &str = "mig-hot";
const MAC: &str = "52:54:00:dd:00:01";
const JSON: &str = "Content-Type: application/json";

/// A bridge this test made (`t<pid><tag>`), removed whatever happens.
struct Bridge(String);

impl Bridge {
    fn new(tag: &str) -> Bridge {
        let name = format!("t{}{tag}", std::process::id());
        ip(&["link", "add", &name, "type", "bridge"]);
        let br = Bridge(name);
        ip(&["link", "set", &br.0, "up"]);
        br
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
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

struct Host {
    env: Env,
    daemon: Daemon,
    port: u16,
}

impl Host {
    /// A daemon with a peer token on a loopback TCP API; `shared` is a storage root on both.
    fn start(shared: &Path) -> Host {
        let env = Env::new();
        let api = tcp_api(&[("peer", TOKEN, "migration_peer")]);
        let toml = format!(
            "[storage_roots]\nshared = {shared:?}\n{api}[migration]\nallow_plain_http = true\n"
        );
        let daemon = env.start_daemon(&toml);
        let port = daemon.tcp_port();
        Host { env, daemon, port }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        match body {
            Some(b) => curl(
                &self.daemon.socket,
                method,
                path,
                &["-H", JSON, "--data-binary", &b.to_string()],
            ),
            None => curl(&self.daemon.socket, method, path, &[]),
        }
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        r.json()
    }

    fn qmp(&self, command: &str) -> Value {
        self.qmp_with(command, None)
    }

    fn qmp_with(&self, command: &str, arguments: Option<Value>) -> Value {
        let mut req = json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let v = self.ok("POST", &format!("/v1/domains/{NAME}/qmp"), Some(&req));
        v.get("return").cloned().unwrap_or(v)
    }

    fn local(&self) -> Client {
        Client::new(Target::Unix(self.daemon.socket.clone()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }

    fn qemu_log(&self) -> String {
        let log = self
            .env
            .config
            .log_dir
            .join("qemu")
            .join(format!("{NAME}.log"));
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

/// The guest's devices as QEMU reports them, in a form two QEMUs can be compared by (no file
/// names: each QEMU has its own descriptors).
#[derive(Debug, PartialEq)]
struct Devices {
    /// Plugged vCPU slots (`props`).
    cpus: Vec<String>,
    /// (type, id, size, slot) of each memory device.
    memory: Vec<(String, String, u64, u64)>,
    /// (id, type, parent bus) of every device given an id (`/machine/peripheral`): where
    /// each PCI device sits (root port), which is what the stream's sections are named by.
    peripherals: Vec<(String, String, String)>,
    /// (qdev, driver, read-only) of every block backend with a medium.
    block: Vec<(String, String, bool)>,
}

fn devices(host: &Host) -> Devices {
    let mut cpus: Vec<String> = host
        .qmp("query-hotpluggable-cpus")
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("qom-path").is_some())
        .map(|c| c["props"].to_string())
        .collect();
    cpus.sort();
    let mut memory: Vec<_> = host
        .qmp("query-memory-devices")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let d = &m["data"];
            (
                m["type"].as_str().unwrap_or_default().to_owned(),
                d["id"].as_str().unwrap_or_default().to_owned(),
                d["size"].as_u64().unwrap_or_default(),
                d["slot"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    memory.sort();
    let mut peripherals: Vec<_> = host
        .qmp_with(
            "qom-list",
            Some(json!({ "path": "/machine/peripheral" })),
        )
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let kind = p["type"].as_str()?.strip_prefix("child<")?.strip_suffix('>')?;
            let id = p["name"].as_str()?.to_owned();
            let bus = host.qmp_with(
                "qom-get",
                Some(json!({ "path": format!("/machine/peripheral/{id}"), "property": "parent_bus" })),
            );
            Some((id, kind.to_owned(), bus.as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    peripherals.sort();
    let mut block: Vec<_> = host
        .qmp("query-block")
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b.get("inserted").is_some())
        .map(|b| {
            (
                b["qdev"].as_str().unwrap_or_default().to_owned(),
                b["inserted"]["drv"].as_str().unwrap_or_default().to_owned(),
                b["inserted"]["ro"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    block.sort();
    Devices {
        cpus,
        memory,
        peripherals,
        block,
    }
}

fn guest_xml() -> String {
    let kind = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{kind}'><name>{NAME}</name>
           <maxMemory slots='2' unit='MiB'>512</maxMemory><memory unit='MiB'>64</memory>
           <vcpu current='1'>3</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
         </domain>"
    )
}

#[tokio::test]
async fn hot_added_vcpu_dimm_disk_and_nic_migrate_with_the_guest() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = shared.path().join("data.raw");
    std::fs::File::create(&data)
        .and_then(|f| f.set_len(8 << 20))
        .unwrap();
    let bridge = Bridge::new("mh");
    let a = Host::start(shared.path());
    let b = Host::start(shared.path());

    let r = curl(
        &a.daemon.socket,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &guest_xml(),
        ],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    a.ok("POST", &format!("/v1/domains/{NAME}/start"), None);
    let started = devices(&a);

    // A vCPU, a DIMM, a disk and a NIC, each live only (the definition stays as it was).
    let c = a.ok(
        "PUT",
        &format!("/v1/domains/{NAME}/vcpus"),
        Some(&json!({ "count": 2, "live": true })),
    );
    assert_eq!(c["live_plugged"], 2, "{c}");
    let m = a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/memory/devices"),
        Some(&json!({
            "xml": "<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>",
            "live": true
        })),
    );
    assert_eq!(m["devices"][0]["alias"], "dimm0", "{m}");
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        data.display()
    );
    a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/disks"),
        Some(&json!({ "xml": disk, "live": true })),
    );
    let nic = a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/interfaces"),
        Some(&json!({ "type": "bridge", "source": bridge.0, "mac": MAC, "live": true })),
    );
    let source_tap = nic["ifname"].as_str().expect("ifname").to_owned();
    assert_eq!(link(&source_tap).unwrap()["master"], bridge.0.as_str());

    let before = devices(&a);
    // Each hot-add shows in QEMU's own answers (so the comparison below can fail).
    assert_eq!(before.cpus.len(), started.cpus.len() + 1, "{before:?}");
    assert_eq!(before.memory.len(), started.memory.len() + 1, "{before:?}");
    assert_eq!(before.block.len(), started.block.len() + 1, "{before:?}");
    // The disk and the NIC, each on a root port of its own.
    let on_ports: Vec<_> = before
        .peripherals
        .iter()
        .filter(|(_, kind, bus)| kind.starts_with("virtio-") && bus.contains("/pci."))
        .collect();
    assert_eq!(on_ports.len(), 2, "{before:?}");
    assert_ne!(on_ports[0].2, on_ports[1].2, "{before:?}");

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
        "{p:?}\ndestination QEMU:\n{}\nsource log:\n{}\ndestination log:\n{}",
        b.qemu_log(),
        a.log(),
        b.log()
    );

    // The destination's QEMU has exactly the devices the source's had.
    let status = b.qmp("query-status");
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(devices(&b), before);
    // Its vCPUs run (two threads QEMU reports, both on KVM/TCG).
    assert_eq!(b.qmp("query-cpus-fast").as_array().unwrap().len(), 2);

    // The destination daemon knows them as the guest's live set.
    let c = b.ok("GET", &format!("/v1/domains/{NAME}/vcpus"), None);
    assert_eq!(c["live_current"], 2, "{c}");
    let m = b.ok("GET", &format!("/v1/domains/{NAME}/memory"), None);
    assert_eq!(m["devices"][0]["alias"], "dimm0", "{m}");
    assert_eq!(m["devices"][0]["plugged_kib"], 128 * 1024, "{m}");
    let disks = b.ok("GET", &format!("/v1/domains/{NAME}/disks"), None);
    assert!(disks.to_string().contains("vdb"), "{disks}");
    let nics = b.ok("GET", &format!("/v1/domains/{NAME}/interfaces"), None);
    let nics = nics.as_array().cloned().unwrap_or_default();
    assert_eq!(nics.len(), 1, "{nics:?}");
    assert_eq!(nics[0]["mac"], MAC);
    let dest_tap = nics[0]["ifname"].as_str().expect("a tap there").to_owned();
    let tap = link(&dest_tap).expect("the destination's tap");
    assert_eq!(tap["master"], bridge.0.as_str(), "{tap}");

    // The source let go of everything: its QEMU quit, its tap went.
    let deadline = Instant::now() + Duration::from_secs(20);
    while link(&source_tap).is_some() && source_tap != dest_tap {
        assert!(Instant::now() < deadline, "the source's tap stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.call("GET", &format!("/v1/domains/{NAME}"), None).status,
        404
    );

    b.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}

/// `query-pci`'s (slot, qdev id) of each device on bus 0.
fn root_bus(host: &Host) -> Vec<(u64, String)> {
    let pci = host.qmp("query-pci");
    let mut out: Vec<_> = pci[0]["devices"]
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

/// Gap of i440fx NIC hotplug: there is no root port, so a hot-added NIC goes on `pci.0`, and
/// its slot must be recorded with it. Left to QEMU on the destination, the NIC (given on the
/// command line with the guest's NICs, before the video card and the balloon QEMU placed
/// first on the source) would take another device's slot, and QEMU would refuse the stream,
/// whose sections are named by PCI address.
#[tokio::test]
async fn an_i440fx_guests_hot_added_nic_migrates_at_its_slot() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bridge = Bridge::new("px");
    let a = Host::start(shared.path());
    let b = Host::start(shared.path());
    let kind = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{kind}'><name>{NAME}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>
           <devices><video><model type='cirrus'/></video><memballoon model='virtio'/></devices>
         </domain>"
    );
    let r = curl(
        &a.daemon.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    a.ok("POST", &format!("/v1/domains/{NAME}/start"), None);
    let started = root_bus(&a);

    let nic = a.ok(
        "POST",
        &format!("/v1/domains/{NAME}/interfaces"),
        Some(&json!({ "type": "bridge", "source": bridge.0, "mac": MAC, "live": true })),
    );
    assert!(nic["ifname"].is_string(), "{nic}");
    let before = root_bus(&a);
    let slot = before
        .iter()
        .find(|(_, id)| !started.iter().any(|(_, s)| s == id))
        .map(|(slot, _)| *slot)
        .expect("the hot-added NIC on pci.0");
    // QEMU's own choice, the lowest free slot: after the devices placed at start (so a
    // command line giving the NIC first, without its slot, would put it elsewhere).
    assert!(
        started.iter().all(|(s, _)| *s < slot),
        "{started:?} {before:?}"
    );
    // Recorded with the NIC (what a destination or a revert is started with).
    let ledger: Value = serde_json::from_str(
        &std::fs::read_to_string(a.env.config.run_dir.join(format!("nics/{NAME}.json")))
            .expect("the NIC ledger"),
    )
    .unwrap();
    let recorded = ledger["links"][0]["hotplugged"]["address"].to_string();
    assert!(recorded.contains(&format!("\"slot\":{slot}")), "{ledger}");

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
        "{p:?}\ndestination QEMU:\n{}\nsource log:\n{}\ndestination log:\n{}",
        b.qemu_log(),
        a.log(),
        b.log()
    );
    assert_eq!(b.qmp("query-status")["status"], "running");
    // The guest's pause as QEMU stamped it (source STOP to destination RESUME): reported,
    // and within the migration. (Not compared with QEMU's downtime: the source counts that
    // until its own completion, which may come after the destination resumed: 25 ms of
    // pause beside 30 ms of downtime was seen.)
    let pause = p.pause_ms.expect("the pause is reported");
    assert!(p.downtime_ms.is_some(), "QEMU's downtime: {p:?}");
    assert!(pause <= p.elapsed_ms, "{p:?}");
    // Every device at the slot it had, the NIC included.
    assert_eq!(root_bus(&b), before);
    let nics = b.ok("GET", &format!("/v1/domains/{NAME}/interfaces"), None);
    assert_eq!(nics[0]["mac"], MAC, "{nics}");
    b.ok("POST", &format!("/v1/domains/{NAME}/destroy"), None);
}
