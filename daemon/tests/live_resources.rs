//! Issue 19: a running guest that changes, on a real novacrond and real QEMU.
//!
//! - The Linux test guest (TCG, `-smp 1,maxcpus=4`, a virtio-mem device, a balloon): vCPUs to
//!   3 (the guest's /proc/cpuinfo shows 3), one unplugged (the guest acknowledges); virtio-mem
//!   +256 MiB (MemTotal grows) and back; the balloon to 192 MiB (dommemstat shows it); bad
//!   input refused with nothing changed; the daemon `kill -9`ed: the next one knows the live set.
//! - An OS-less guest (KVM): a vCPU plug works without an OS; a vCPU unplug is refused with
//!   the reason (QEMU's ACPI CPU hotplug stays in legacy mode without an OS); a DIMM is plugged
//!   and its unplug never acknowledged (a timed-out job, the DIMM recorded as unplugging, the
//!   definition unchanged); a vCPU added behind the daemon's back is drift the next daemon
//!   reports.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{curl, Reply};
use common::Env;
use serde_json::{json, Value};

const JSON: &str = "Content-Type: application/json";

fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Reply {
    match body {
        Some(b) => curl(
            socket,
            method,
            path,
            &["-H", JSON, "--data-binary", &b.to_string()],
        ),
        None => curl(socket, method, path, &[]),
    }
}

fn ok(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = call(socket, method, path, body);
    assert!(
        r.status == 200 || r.status == 201,
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

fn define_and_start(socket: &Path, name: &str, xml: &str) {
    let r = curl(
        socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    ok(socket, "POST", &format!("/v1/domains/{name}/start"), None);
}

fn record(env: &Env, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(env.record(name)).unwrap()).unwrap()
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

fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MemTotal in {meminfo:?}"))
}

const MIB: u64 = 1024;

#[tokio::test]
async fn vcpus_memory_and_balloon_of_a_linux_guest() {
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let d = env.start_daemon("");
    let sock = d.socket.clone();
    let name = "lr-linux";
    let devices = format!(
        "{}<memballoon model='virtio'/>\
         <memory model='virtio-mem'><target><size unit='MiB'>512</size><node>0</node>\
         <block unit='KiB'>2048</block><requested unit='KiB'>0</requested></target></memory>",
        novacron_tests::COMMAND_CHANNEL_XML
    );
    // Hot-added memory comes up movable, so virtio-mem can take it back.
    let xml = tokio::task::spawn_blocking(move || {
        test_guest_domain_xml_with(name, "memhp_default_state=online_movable", &devices)
    })
    .await
    .unwrap()
    .expect("test guest")
    .replace("<vcpu>1</vcpu>", "<vcpu current='1'>4</vcpu>")
    .replace(
        "<memory unit='MiB'>256</memory>",
        // <memory> includes the virtio-mem device's 512 MiB (libvirt): 256 MiB boot RAM. The
        // balloon starts at <currentMemory>, 224 MiB.
        "<maxMemory slots='4' unit='MiB'>1024</maxMemory><memory unit='MiB'>768</memory>\
         <currentMemory unit='MiB'>224</currentMemory>",
    );
    define_and_start(&sock, name, &xml);
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
    // <currentMemory> was the balloon target from the start: the guest's driver gives back
    // the difference, and dominfo and dommemstat show it.
    let stats = format!("/v1/domains/{name}/memory/stats");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = ok(&sock, "GET", &stats, None);
        if s["actual"] == 224 * MIB {
            assert_eq!(s["target"], 224 * MIB, "{s}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "start balloon: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dominfo = ok(&sock, "GET", &format!("/v1/domains/{name}"), None);
    assert_eq!(
        dominfo["config"]["memory"]["current_kib"],
        224 * MIB,
        "{dominfo}"
    );
    assert_eq!(
        dominfo["config"]["memory"]["memory_kib"],
        768 * MIB,
        "{dominfo}"
    );
    // The boot RAM is <memory> minus the device, as under libvirt: the guest has 256 MiB
    // before anything is plugged, not 768.
    let m = ok(&sock, "GET", &format!("/v1/domains/{name}/memory"), None);
    assert_eq!(m["boot_kib"], 256 * MIB, "{m}");
    assert_eq!(m["memory_kib"], 768 * MIB, "{m}");
    assert_eq!(m["requested_kib"], 256 * MIB, "{m}");
    let total = mem_total_kib(
        &shell
            .run_ok("grep MemTotal /proc/meminfo", Duration::from_secs(30))
            .await
            .unwrap(),
    );
    assert!(
        total <= 256 * MIB,
        "MemTotal {total} KiB above the boot RAM"
    );
    let vcpus = format!("/v1/domains/{name}/vcpus");
    let count = ok(&sock, "GET", &vcpus, None);
    assert_eq!(count["live_maximum"], 4, "{count}");
    assert_eq!(count["live_current"], 1, "{count}");
    let online = "cat /sys/devices/system/cpu/online";
    until(&mut shell, online, Duration::from_secs(10), |o| {
        o.trim() == "0"
    })
    .await;

    // vCPUs to 3: the guest sees 3 (its watcher onlines them).
    let c = ok(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 3, "live": true })),
    );
    assert_eq!(c["live_current"], 3, "{c}");
    assert_eq!(c["live_plugged"], 3, "{c}");
    assert_eq!(record(&env, name)["live_devices"]["vcpus"], 3);
    until(&mut shell, online, Duration::from_secs(60), |o| {
        o.trim() == "0-2"
    })
    .await;
    let n = shell
        .run_ok("grep -c ^processor /proc/cpuinfo", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(n.trim(), "3", "{n}");
    // --live left the definition alone.
    assert_eq!(c["config_current"], 1, "{c}");

    // One unplugged: Linux acknowledges, so the job ends with the vCPU gone.
    let c = ok(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 2, "live": true, "timeout": 120 })),
    );
    assert_eq!(c["live_current"], 2, "{c}");
    assert_eq!(c["live_plugged"], 2, "{c}");
    assert!(c.get("unplugging").is_none(), "{c}");
    until(&mut shell, online, Duration::from_secs(60), |o| {
        o.trim() == "0-1"
    })
    .await;

    // Memory: virtio-mem +256 MiB, MemTotal grows; back to 0, it shrinks again.
    let meminfo = "grep MemTotal /proc/meminfo";
    let before = mem_total_kib(
        &shell
            .run_ok(meminfo, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let dev = format!("/v1/domains/{name}/memory/devices/virtiomem0");
    let m = ok(
        &sock,
        "PUT",
        &dev,
        Some(&json!({ "requested_kib": 256 * MIB, "live": true })),
    );
    assert_eq!(m["requested_kib"], (256 + 256) * MIB, "{m}");
    until(&mut shell, meminfo, Duration::from_secs(120), |o| {
        mem_total_kib(o) >= before + 250 * MIB
    })
    .await;
    // QEMU says what the guest plugged: requested against guest-visible.
    let info = format!("/v1/domains/{name}/memory");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = ok(&sock, "GET", &info, None);
        if m["devices"][0]["plugged_kib"] == 256 * MIB {
            assert_eq!(m["plugged_kib"], (256 + 256) * MIB, "{m}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never plugged: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(
        &sock,
        "PUT",
        &dev,
        Some(&json!({ "requested_kib": 0, "live": true })),
    );
    until(&mut shell, meminfo, Duration::from_secs(120), |o| {
        mem_total_kib(o) < before + 10 * MIB
    })
    .await;

    // The balloon to 192 MiB: QEMU's actual follows, and the guest's statistics show.
    ok(&sock, "PUT", &stats, Some(&json!({ "period": 1 })));
    ok(
        &sock,
        "PUT",
        &format!("/v1/domains/{name}/memory/balloon"),
        Some(&json!({ "size_kib": 192 * MIB, "live": true })),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = ok(&sock, "GET", &stats, None);
        if s["actual"] == 192 * MIB && s["stats"].get("available").is_some() {
            assert_eq!(s["target"], 192 * MIB, "{s}");
            assert_eq!(s["period"], 1, "{s}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "balloon: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bad input: refused with the reason, nothing changed.
    let before_count = ok(&sock, "GET", &vcpus, None);
    let before_mem = ok(&sock, "GET", &info, None);
    for (method, path, body, needle) in [
        (
            "PUT",
            vcpus.clone(),
            json!({ "count": 5, "live": true }),
            "maximum",
        ),
        (
            "PUT",
            vcpus.clone(),
            json!({ "count": 0, "live": true }),
            "at least 1",
        ),
        (
            "PUT",
            dev.clone(),
            json!({ "requested_kib": 1024 * MIB, "live": true }),
            "size",
        ),
        (
            "PUT",
            dev.clone(),
            json!({ "requested_kib": 1025, "live": true }),
            "block",
        ),
        (
            "PUT",
            format!("/v1/domains/{name}/memory/balloon"),
            json!({ "size_kib": 32 * MIB, "live": true }),
            "minimum",
        ),
        (
            "PUT",
            format!("/v1/domains/{name}/memory/balloon"),
            json!({ "size_kib": 300 * MIB, "live": true }),
            "above the guest's memory",
        ),
        (
            "POST",
            format!("/v1/domains/{name}/memory/devices"),
            json!({ "xml": "<memory model='dimm'><target><size unit='MiB'>512</size></target></memory>", "live": true }),
            "maxMemory",
        ),
    ] {
        let r = call(&sock, method, &path, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body.contains(needle),
            "{body}: {needle:?} not in {}",
            r.body
        );
    }
    assert_eq!(
        ok(&sock, "GET", &vcpus, None)["live_current"],
        before_count["live_current"]
    );
    let after_mem = ok(&sock, "GET", &info, None);
    assert_eq!(after_mem["requested_kib"], before_mem["requested_kib"]);
    assert_eq!(after_mem["devices"], before_mem["devices"]);

    // kill -9 the daemon: the next one knows the live set from the record, checked against
    // QEMU (no drift: nothing changed behind its back).
    drop(d);
    let d = env.start_daemon("");
    let c = ok(&d.socket, "GET", &vcpus, None);
    assert_eq!(c["live_current"], 2, "{c}");
    let m = ok(&d.socket, "GET", &info, None);
    assert_eq!(m["devices"][0]["alias"], "virtiomem0", "{m}");
    assert_eq!(m["devices"][0]["requested_kib"], 0, "{m}");
    assert_eq!(m["balloon_target_kib"], 192 * MIB, "{m}");
    // The domain's info shows the running guest's vCPUs and devices.
    let info = ok(&d.socket, "GET", &format!("/v1/domains/{name}"), None);
    assert_eq!(info["config"]["vcpu"]["current"], 2, "{info}");
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(!log.contains("live device set had drifted"), "{log}");
    ok(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        None,
    );
}

#[test]
fn an_osless_guest_never_acknowledges_an_unplug() {
    let env = Env::new();
    let d = env.start_daemon("");
    let sock = d.socket.clone();
    let name = "lr-osless";
    let xml = format!(
        "<domain type='{}'><name>{name}</name>
           <maxMemory slots='2' unit='MiB'>512</maxMemory><memory unit='MiB'>64</memory>
           <vcpu current='1'>3</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
         </domain>",
        match novacron_tests::osless_accel() {
            novacron_tests::Accel::Kvm => "kvm",
            novacron_tests::Accel::Tcg => "qemu",
        }
    );
    define_and_start(&sock, name, &xml);
    // setmaxmem: a running guest's <memory> is fixed (refused, as virsh for QEMU guests);
    // --config changes the definition's, within <maxMemory>.
    let maximum = format!("/v1/domains/{name}/memory/maximum");
    for (body, needle) in [
        (json!({ "size_kib": 128 * 1024 }), "is running"),
        (
            json!({ "size_kib": 128 * 1024, "live": true }),
            "is running",
        ),
        (
            json!({ "size_kib": 1024 * 1024, "config": true }),
            "above <maxMemory>",
        ),
    ] {
        let r = call(&sock, "PUT", &maximum, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body.contains(needle),
            "{body}: {needle:?} not in {}",
            r.body
        );
    }
    let def = ok(
        &sock,
        "GET",
        &format!("/v1/domains/{name}/memory?config=true"),
        None,
    );
    assert_eq!(def["memory_kib"], 64 * 1024, "{def}");
    let m = ok(
        &sock,
        "PUT",
        &maximum,
        Some(&json!({ "size_kib": 96 * 1024, "config": true })),
    );
    assert_eq!(m["memory_kib"], 96 * 1024, "{m}");
    assert_eq!(m["scope"], "config", "{m}");
    let def = ok(
        &sock,
        "GET",
        &format!("/v1/domains/{name}/memory?config=true"),
        None,
    );
    assert_eq!(def["memory_kib"], 96 * 1024, "{def}");
    // The running guest kept its 64 MiB.
    let m = ok(&sock, "GET", &format!("/v1/domains/{name}/memory"), None);
    assert_eq!(m["memory_kib"], 64 * 1024, "{m}");
    // Each refusal and the change are audited.
    let audited = common::audited(&env, |op| op == "setmaxmem");
    assert_eq!(audited.len(), 4, "{audited:?}");
    let vcpus = format!("/v1/domains/{name}/vcpus");
    // A plug needs no guest.
    let c = ok(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 2, "live": true })),
    );
    assert_eq!(c["live_plugged"], 2, "{c}");
    // Without an OS, QEMU's ACPI CPU hotplug stays in legacy mode: a vCPU unplug is refused
    // at once, with the reason, and nothing changes.
    let r = call(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 1, "live": true, "config": true, "timeout": 2 })),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("ACPI CPU hot-unplug"), "{}", r.body);
    let c = ok(&sock, "GET", &vcpus, None);
    assert_eq!(c["live_plugged"], 2, "{c}");
    assert_eq!(c["live_current"], 2, "{c}");
    assert!(c.get("unplugging").is_none(), "{c}");
    assert_eq!(c["config_current"], 1, "{c}");
    // A DIMM plugs without a guest ...
    let devices = format!("/v1/domains/{name}/memory/devices");
    let m = ok(
        &sock,
        "POST",
        &devices,
        Some(&json!({
            "xml": "<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>",
            "live": true
        })),
    );
    assert_eq!(m["devices"][0]["alias"], "dimm0", "{m}");
    assert_eq!(m["devices"][0]["plugged_kib"], 128 * 1024, "{m}");
    // libvirt's accounting: <memory> grows by the DIMM, the boot RAM stays.
    assert_eq!(m["memory_kib"], (64 + 128) * 1024, "{m}");
    assert_eq!(m["boot_kib"], 64 * 1024, "{m}");
    let info = ok(&sock, "GET", &format!("/v1/domains/{name}"), None);
    assert_eq!(
        info["config"]["memory"]["memory_kib"],
        (64 + 128) * 1024,
        "{info}"
    );
    assert_eq!(
        record(&env, name)["live_devices"]["memory"][0]["alias"],
        "dimm0"
    );
    // ... but its unplug waits for the guest, which never answers: a typed timeout, the DIMM
    // still there and marked unplugging, the definition untouched.
    let r = call(
        &sock,
        "DELETE",
        &format!("{devices}/dimm0?live=true&timeout=2"),
        None,
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.error_code(), "timeout", "{}", r.body);
    let m = ok(&sock, "GET", &format!("/v1/domains/{name}/memory"), None);
    assert_eq!(m["devices"][0]["alias"], "dimm0", "{m}");
    assert_eq!(m["devices"][0]["unplugging"], true, "{m}");
    assert_eq!(m["devices"][0]["plugged_kib"], 128 * 1024, "{m}");
    assert_eq!(
        record(&env, name)["live_devices"]["memory_unplugging"],
        json!(["dimm0"])
    );
    let def = ok(
        &sock,
        "GET",
        &format!("/v1/domains/{name}/memory?config=true"),
        None,
    );
    assert_eq!(def["devices"], json!([]), "{def}");
    // The job ended: the domain takes other changes.
    let c = ok(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 2, "live": true })),
    );
    assert_eq!(c["live_plugged"], 2, "{c}");
    // The record is written while QEMU plugs: a plug QEMU refuses (its backend id taken
    // behind the daemon's back) leaves the record and the answer as they were.
    let qmp = format!("/v1/domains/{name}/qmp");
    ok(
        &sock,
        "POST",
        &qmp,
        Some(&json!({ "execute": "object-add", "arguments":
            { "qom-type": "memory-backend-ram", "id": "memdimm1", "size": 2 << 20 } })),
    );
    let r = call(
        &sock,
        "POST",
        &devices,
        Some(&json!({
            "xml": "<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>",
            "live": true
        })),
    );
    assert!(r.status >= 400, "{}", r.body);
    assert!(r.body.contains("object-add"), "{}", r.body);
    let live_mem = &record(&env, name)["live_devices"]["memory"];
    assert_eq!(live_mem.as_array().map(Vec::len), Some(1), "{live_mem}");
    let m = ok(&sock, "GET", &format!("/v1/domains/{name}/memory"), None);
    assert_eq!(m["devices"].as_array().map(Vec::len), Some(1), "{m}");
    ok(
        &sock,
        "POST",
        &qmp,
        Some(&json!({ "execute": "object-del", "arguments": { "id": "memdimm1" } })),
    );
    // The slots and the ceiling hold: 64 + 128 + 512 > 512.
    let r = call(
        &sock,
        "POST",
        &devices,
        Some(&json!({
            "xml": "<memory model='dimm'><target><size unit='MiB'>512</size></target></memory>",
            "live": true
        })),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Above the maximum: refused, nothing changed.
    let r = call(
        &sock,
        "PUT",
        &vcpus,
        Some(&json!({ "count": 4, "live": true })),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("maximum (3"), "{}", r.body);
    assert_eq!(ok(&sock, "GET", &vcpus, None)["live_plugged"], 2);

    // A vCPU added behind the daemon's back (raw QMP), then the daemon killed: the next one
    // finds QEMU's 3 against the recorded 2, reports the drift and takes QEMU's word.
    let slots = ok(
        &sock,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        Some(&json!({ "execute": "query-hotpluggable-cpus" })),
    );
    let free = slots["return"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("qom-path").is_none())
        .cloned()
        .expect("a free slot");
    let mut args = free["props"].clone();
    args["driver"] = free["type"].clone();
    args["id"] = json!("sneaky");
    ok(
        &sock,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        Some(&json!({ "execute": "device_add", "arguments": args })),
    );
    drop(d);
    let d = env.start_daemon("");
    let c = ok(&d.socket, "GET", &vcpus, None);
    assert_eq!(c["live_current"], 3, "{c}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .contains("live device set had drifted")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no drift event in the log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(record(&env, name)["live_devices"]["vcpus"], 3);
    ok(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        None,
    );
}

/// A Unix socket standing between QEMU and `qemu-nbd`: it accepts QEMU's connection and
/// forwards nothing until released, so QEMU waits in its initialisation (the NBD handshake of
/// a disk it opens before its monitor greets) for as long as the test wants.
struct NbdGate {
    arrived: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

fn nbd_gate(gate: &Path, server: &Path) -> NbdGate {
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(gate).unwrap();
    // QEMU runs as novacron-qemu: connecting needs write permission on the socket.
    std::fs::set_permissions(gate, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let server = server.to_owned();
    std::thread::spawn(move || {
        let (qemu, _) = listener.accept().unwrap();
        let _ = arrived_tx.send(());
        if release_rx.recv().is_err() {
            return;
        }
        let nbd = std::os::unix::net::UnixStream::connect(&server).unwrap();
        let (mut q2, mut n2) = (qemu.try_clone().unwrap(), nbd.try_clone().unwrap());
        let (mut q, mut n) = (qemu, nbd);
        std::thread::spawn(move || std::io::copy(&mut n2, &mut q2));
        let _ = std::io::copy(&mut q, &mut n);
    });
    NbdGate { arrived, release }
}

/// QEMU's own answer to `query-status` on its monitor socket (a QMP session of the test's).
fn qmp_status(socket: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    for cmd in ["qmp_capabilities", "query-status"] {
        writeln!(w, "{}", json!({ "execute": cmd })).unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if let Some(r) = v.get("return") {
                if cmd == "query-status" {
                    return r["status"].as_str().unwrap_or_default().to_owned();
                }
                break;
            }
            assert!(v.get("error").is_none(), "{cmd}: {v}");
        }
    }
    unreachable!()
}

/// Gap of the interrupted start: a daemon `kill -9`ed after QEMU is launched and recorded but
/// before the guest left prelaunch leaves the start balloon (`<currentMemory>`) unsent; the
/// next daemon, which finishes that start, must send it. The window is held open by something
/// real rather than by timing: the guest has an NBD disk whose server (behind a gate the test
/// holds) has not answered QEMU's handshake yet, so QEMU is still initialising (its monitor
/// silent) while the daemon has written the record and waits for the greeting. The daemon is
/// killed there, then the gate opens: QEMU reaches prelaunch with nobody having sent anything.
#[test]
fn an_interrupted_start_gets_its_start_balloon_from_the_next_daemon() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let env = Env::new();
    let srv = env.dir.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = srv.join("held.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let nbd_sock = srv.join("nbd.sock");
    /// Killed however the test ends.
    struct Nbd(std::process::Child);
    impl Drop for Nbd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _nbd = Nbd(Command::new("qemu-nbd")
        .args(["--persistent", "--shared=4", "-f", "raw", "-x", "exp", "-k"])
        .arg(&nbd_sock)
        .arg(&image)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("qemu-nbd (qemu-utils) must be installed"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&nbd_sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu-nbd never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gate_sock = srv.join("gate.sock");
    let gate = nbd_gate(&gate_sock, &nbd_sock);

    let name = "lr-held";
    let devices = format!(
        "<memballoon model='virtio'/>\
         <disk type='network' device='disk'><driver name='qemu' type='raw'/>\
           <source protocol='nbd' name='exp'><host transport='unix' socket='{}'/></source>\
           <target dev='vdb' bus='virtio'/></disk>",
        gate_sock.display()
    );
    let xml = novacron_tests::test_guest_domain_xml_with(name, "", &devices)
        .expect("test guest")
        .replace(
            "<memory unit='MiB'>256</memory>",
            "<memory unit='MiB'>256</memory><currentMemory unit='MiB'>224</currentMemory>",
        );
    assert!(xml.contains("<currentMemory"), "{xml}");
    let mut d = env.start_daemon("");
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    // The start never answers: its daemon dies in it.
    let socket = d.socket.clone();
    let start = std::thread::spawn(move || {
        curl(&socket, "POST", &format!("/v1/domains/{name}/start"), &[])
    });
    gate.arrived
        .recv_timeout(Duration::from_secs(60))
        .expect("QEMU never opened its NBD disk");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !env.record(name).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime record was never written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);
    let _ = start.join();
    let pid = common::recorded_pid(&env, name);
    assert!(common::pid_alive(pid), "QEMU died with its daemon");

    // The disk answers: QEMU finishes initialising and waits in prelaunch, nothing sent.
    gate.release.send(()).unwrap();
    assert_eq!(qmp_status(&env.socket(name)), "prelaunch");

    // The next daemon finishes the start, with the balloon target <currentMemory> asks for:
    // the guest's driver gives back the difference.
    let d = env.start_daemon("");
    let stats = format!("/v1/domains/{name}/memory/stats");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = ok(&d.socket, "GET", &stats, None);
        if s["actual"] == 224 * MIB {
            assert_eq!(s["target"], 224 * MIB, "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the start balloon never reached the guest: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ok(&d.socket, "GET", &format!("/v1/domains/{name}"), None)["state"],
        "running"
    );
    ok(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        None,
    );
}

/// A pc-dimm unplugged from the Linux test guest: with hot-added memory onlined movable
/// (`memhp_default_state=online_movable`), the guest offlines the DIMM's blocks when QEMU asks
/// (ACPI memory hot-remove), ejects it, and QEMU's DEVICE_DELETED ends the daemon's job: the
/// DELETE answers only then (no sleep here), MemTotal is back to what it was, and the DIMM
/// is gone from QEMU, from the live set and from the record.
#[tokio::test]
async fn a_linux_guest_releases_an_unplugged_dimm() {
    use novacron_tests::{test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL};
    let env = Env::new();
    let d = env.start_daemon("");
    let sock = d.socket.clone();
    let name = "lr-dimm";
    let xml = tokio::task::spawn_blocking(move || {
        test_guest_domain_xml_with(
            name,
            "memhp_default_state=online_movable",
            novacron_tests::COMMAND_CHANNEL_XML,
        )
    })
    .await
    .unwrap()
    .expect("test guest")
    .replace(
        "<memory unit='MiB'>256</memory>",
        "<maxMemory slots='2' unit='MiB'>1024</maxMemory><memory unit='MiB'>256</memory>",
    );
    define_and_start(&sock, name, &xml);
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
    let meminfo = "grep MemTotal /proc/meminfo";
    let before = mem_total_kib(
        &shell
            .run_ok(meminfo, Duration::from_secs(30))
            .await
            .unwrap(),
    );

    let devices = format!("/v1/domains/{name}/memory/devices");
    let m = ok(
        &sock,
        "POST",
        &devices,
        Some(&json!({
            "xml": "<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>",
            "live": true
        })),
    );
    assert_eq!(m["devices"][0]["alias"], "dimm0", "{m}");
    until(&mut shell, meminfo, Duration::from_secs(120), |o| {
        mem_total_kib(o) >= before + 120 * MIB
    })
    .await;
    // Onlined movable, so the guest can give it back.
    let zones = shell
        .run_ok(
            "grep -l Movable /sys/devices/system/memory/memory*/valid_zones | wc -l",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_ne!(zones.trim(), "0", "no movable memory block: {zones}");

    // The unplug is a job that ends on QEMU's DEVICE_DELETED (the guest ejected it).
    let m = ok(
        &sock,
        "DELETE",
        &format!("{devices}/dimm0?live=true&timeout=120"),
        None,
    );
    assert_eq!(m["devices"], json!([]), "{m}");
    let qemu = ok(
        &sock,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        Some(&json!({ "execute": "query-memory-devices" })),
    );
    assert_eq!(qemu["return"], json!([]), "{qemu}");
    let mem_total = mem_total_kib(
        &shell
            .run_ok(meminfo, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    assert!(
        mem_total < before + 10 * MIB,
        "MemTotal {mem_total} KiB after the unplug (before the plug: {before} KiB)"
    );
    let m = ok(&sock, "GET", &format!("/v1/domains/{name}/memory"), None);
    assert_eq!(m["devices"], json!([]), "{m}");
    assert_eq!(m["memory_kib"], 256 * MIB, "{m}");
    let live = &record(&env, name)["live_devices"];
    assert!(
        live["memory"].as_array().is_none_or(|a| a.is_empty()),
        "{live}"
    );
    assert!(
        live["memory_unplugging"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{live}"
    );
    ok(&sock, "POST", &format!("/v1/domains/{name}/destroy"), None);
}
