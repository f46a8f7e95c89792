//! Placement of running guests (issue 7, item 3): pins changed live through the service, HTTP,
//! D-Bus and novactl, proven from /proc; drifted pins restored by a restarted daemon (and
//! undrifted ones left alone); per-guest cgroups proven from /proc/<pid>/cgroup.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::*;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use novacron_domain::{DomainConfig, ErrorCode};
use novacrond::host::pinning::ThreadKind;
use novacrond::service::placement::{PinScope, Pinning};

/// Pins through the operation executor, as the daemon itself (audited like the faces' pins).
async fn pin_op(
    svc: &novacrond::Service,
    name: &str,
    thread: ThreadKind,
    cpuset: &str,
    scope: PinScope,
) -> Result<Pinning, novacron_domain::Error> {
    let op = novacrond::ops::pinning::Pin {
        domain: name.to_owned(),
        thread,
        cpuset: cpuset.to_owned(),
        scope,
    };
    novacrond::ops::Executor::new(svc.clone())
        .run(
            novacrond::service::audit::Actor::daemon(),
            novacrond::ops::Target::Local,
            op,
        )
        .await
}
use serde_json::{json, Value};

fn allowed(pid: u32, tid: u64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// What an unpinned thread may use: the CPUs this test process may (QEMU, started by the
/// service in this process, inherits them), e.g. "0-1" on 2 CPUs, "0-7" on 8.
fn unpinned() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn set_affinity(tid: u64, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(tid as i32), &set).unwrap();
}

/// A 2-vCPU OS-less guest with one iothread and `cputune` (may be empty).
fn guest(name: &str, cputune: &str) -> DomainConfig {
    let mut config = osless(name);
    let tuned = DomainConfig::from_xml(&format!(
        "<domain type='kvm'><name>{name}</name><memory>65536</memory><vcpu>2</vcpu>
           <iothreads>1</iothreads><cputune>{cputune}</cputune><os><type>hvm</type></os></domain>"
    ))
    .unwrap();
    config.vcpu = tuned.vcpu;
    config.iothreads = tuned.iothreads;
    config.cputune = tuned.cputune.filter(|t| *t != Default::default());
    config
}

fn two_cpus() {
    assert!(
        std::thread::available_parallelism().unwrap().get() >= 2,
        "these tests need 2 host CPUs"
    );
}

/// vCPU index -> thread id, from QMP `query-cpus-fast` as returned by a passthrough.
fn vcpu_tid(cpus: &Value, index: u64) -> u64 {
    cpus.as_array()
        .unwrap()
        .iter()
        .find(|c| c["cpu-index"] == index)
        .and_then(|c| c["thread-id"].as_u64())
        .unwrap()
}

#[tokio::test]
async fn live_and_config_pins_through_the_service_and_bad_input_changes_nothing() {
    two_cpus();
    let env = Env::new();
    let svc = env.open().await;
    svc.define(guest("livepin", "")).await.unwrap();
    // A shut-off domain has no live pins to change.
    let err = pin_op(
        &svc,
        "livepin",
        ThreadKind::Vcpu(0),
        "1",
        PinScope {
            live: true,
            config: false,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WrongState, "{err}");

    svc.start("livepin").await.unwrap();
    let pid = recorded_pid(&env, "livepin");
    let cpus = svc
        .qmp_passthrough("livepin", "query-cpus-fast", None)
        .await
        .unwrap();
    let (vcpu0, vcpu1) = (vcpu_tid(&cpus, 0), vcpu_tid(&cpus, 1));
    let io = svc
        .qmp_passthrough("livepin", "query-iothreads", None)
        .await
        .unwrap();
    let io_tid = io[0]["thread-id"].as_u64().unwrap();
    assert_eq!(allowed(pid, vcpu0), unpinned(), "unpinned at start");

    let view = svc.pinning("livepin", false).await.unwrap();
    assert_eq!(view.source, "live");
    assert_eq!(view.vcpus.len(), 2);
    assert_eq!(view.vcpus[0].thread_ids, [vcpu0 as u32]);
    assert_eq!(view.vcpus[0].pinned, None);

    // Current scope on a running guest = live: only vCPU 0 moves, the definition stays.
    let view = pin_op(
        &svc,
        "livepin",
        ThreadKind::Vcpu(0),
        "1",
        PinScope::default(),
    )
    .await
    .unwrap();
    assert_eq!(allowed(pid, vcpu0), "1");
    assert_eq!(allowed(pid, vcpu1), unpinned(), "vCPU 1 untouched");
    assert_eq!(view.vcpus[0].affinity, "1");
    assert_eq!(view.vcpus[0].pinned.as_deref(), Some("1"));
    let record = std::fs::read_to_string(env.record("livepin")).unwrap();
    assert!(
        record.contains("vcpupins"),
        "live pin not recorded: {record}"
    );
    let on_disk =
        std::fs::read_to_string(env.config.state_dir.join("domains/livepin.xml")).unwrap();
    assert!(
        !on_disk.contains("vcpupin"),
        "a live pin went into the definition"
    );
    let live_xml = svc.get("livepin").unwrap().config.to_xml();
    assert!(
        live_xml.contains("<vcpupin vcpu='0' cpuset='1'/>")
            || live_xml.contains("<vcpupin vcpu=\"0\" cpuset=\"1\"/>"),
        "{live_xml}"
    );

    // Live and config at once: the emulator threads move and the definition keeps it.
    pin_op(
        &svc,
        "livepin",
        ThreadKind::Emulator,
        "0",
        PinScope {
            live: true,
            config: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(allowed(pid, u64::from(pid)), "0", "main thread");
    assert_eq!(allowed(pid, vcpu0), "1", "vCPUs are not emulator threads");
    let on_disk =
        std::fs::read_to_string(env.config.state_dir.join("domains/livepin.xml")).unwrap();
    assert!(on_disk.contains("emulatorpin"), "{on_disk}");
    let config_view = svc.pinning("livepin", true).await.unwrap();
    assert_eq!(config_view.source, "config");
    assert_eq!(config_view.emulator.pinned.as_deref(), Some("0"));
    assert_eq!(
        config_view.vcpus[0].pinned, None,
        "vCPU 0 was pinned live only"
    );

    pin_op(
        &svc,
        "livepin",
        ThreadKind::Iothread(1),
        "1",
        PinScope::default(),
    )
    .await
    .unwrap();
    assert_eq!(allowed(pid, io_tid), "1", "iothread 1");

    // Bad input: refused with the reason, and nothing moved.
    for (kind, cpuset, needle) in [
        (ThreadKind::Vcpu(0), "4095", "4095"),
        (ThreadKind::Vcpu(0), "0,3000", "3000"),
        (ThreadKind::Vcpu(2), "0", "no vCPU 2"),
        (ThreadKind::Iothread(2), "0", "no iothread 2"),
        (ThreadKind::Vcpu(0), "zero", "zero"),
        (ThreadKind::Emulator, "1-0", "reversed"),
    ] {
        let err = pin_op(&svc, "livepin", kind, cpuset, PinScope::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
        assert!(err.to_string().contains(needle), "{needle} not in: {err}");
    }
    assert_eq!(allowed(pid, vcpu0), "1");
    assert_eq!(allowed(pid, vcpu1), unpinned());
    assert_eq!(allowed(pid, u64::from(pid)), "0");
    assert_eq!(allowed(pid, io_tid), "1");
    svc.destroy("livepin").await.unwrap();

    // Transient domains have no definition to pin in.
    let svc2 = svc.clone();
    svc2.create(guest("transpin", "")).await.unwrap();
    let err = pin_op(
        &svc2,
        "transpin",
        ThreadKind::Vcpu(0),
        "0",
        PinScope {
            live: false,
            config: true,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    svc2.destroy("transpin").await.unwrap();

    // Every pin, done or refused, is in the audit log under its own op with its outcome.
    let pins = audited(&env, |op| op.ends_with("pin"));
    let t = |op: &str, domain: &str, result: &str| {
        (
            op.to_owned(),
            domain.to_owned(),
            result.to_owned(),
            "daemon".to_owned(),
        )
    };
    let bad = "invalid_config";
    assert_eq!(
        pins,
        [
            t("vcpupin", "livepin", "wrong_state"),
            t("vcpupin", "livepin", "ok"),
            t("emulatorpin", "livepin", "ok"),
            t("iothreadpin", "livepin", "ok"),
            t("vcpupin", "livepin", bad),
            t("vcpupin", "livepin", bad),
            t("vcpupin", "livepin", bad),
            t("iothreadpin", "livepin", bad),
            t("vcpupin", "livepin", bad),
            t("emulatorpin", "livepin", bad),
            t("vcpupin", "transpin", bad),
        ]
    );
}

fn novactl(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("novactl")
}

fn busctl(address: &str, args: &[&str]) -> std::process::Output {
    Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(args)
        .output()
        .expect("busctl must be installed (Debian package systemd)")
}

fn wait_log(log: &Path, what: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(what).count() >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} x{count} not in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn pins_change_over_http_dbus_and_novactl_and_survive_a_kill_9_of_the_daemon() {
    two_cpus();
    let env = Env::new();
    let bus = common::bus::PrivateBus::start(env.dir.path());
    let dbus = format!("[dbus]\naddress = {:?}\n", bus.address);
    let pins =
        "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='0'/><emulatorpin cpuset='0'/>";
    // Both vCPUs away from the emulator: a thread the kernel starts from a vCPU thread once
    // the guest runs (KVM's NX recovery thread, Linux >= 6.14) lands on CPU 1 and must be
    // brought under emulatorpin by the daemon, or the restart below reports it as drift.
    let steady_pins =
        "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='1'/><emulatorpin cpuset='0'/>";
    {
        let svc = env.open().await;
        svc.define(guest("drifty", pins)).await.unwrap();
        svc.define(guest("steady", steady_pins)).await.unwrap();
    }
    let mut d = env.start_daemon(&dbus);
    for name in ["drifty", "steady"] {
        let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let qmp = |name: &str, cmd: &str| {
        let r = curl(
            &d.socket,
            "POST",
            &format!("/v1/domains/{name}/qmp"),
            &[
                "-H",
                "Content-Type: application/json",
                "-d",
                &json!({"execute": cmd}).to_string(),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["return"].clone()
    };
    let (pid, steady_pid) = (recorded_pid(&env, "drifty"), recorded_pid(&env, "steady"));
    let cpus = qmp("drifty", "query-cpus-fast");
    let (vcpu0, vcpu1) = (vcpu_tid(&cpus, 0), vcpu_tid(&cpus, 1));
    let steady_cpus = qmp("steady", "query-cpus-fast");
    let steady0 = vcpu_tid(&steady_cpus, 0);
    assert_eq!(
        (allowed(pid, vcpu0), allowed(pid, vcpu1)),
        ("1".into(), "0".into())
    );

    // HTTP: vCPU 0 moves to CPU 0, live.
    let put = |body: Value| {
        curl(
            &d.socket,
            "PUT",
            "/v1/domains/drifty/pinning",
            &[
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ],
        )
    };
    let r = put(json!({"vcpu": 0, "cpuset": "0", "live": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["vcpus"][0]["affinity"], "0");
    assert_eq!(allowed(pid, vcpu0), "0");
    let r = put(json!({"vcpu": 0, "cpuset": "99"}));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_config"),
        "{}",
        r.body
    );
    assert!(r.body.contains("99"), "{}", r.body);
    let r = put(json!({"cpuset": "0"}));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "bad_request"),
        "{}",
        r.body
    );
    assert_eq!(allowed(pid, vcpu0), "0", "refused changes moved nothing");
    let r = curl(&d.socket, "GET", "/v1/domains/drifty/pinning", &[]);
    assert_eq!(r.json()["emulator"]["affinity"], "0");

    // D-Bus: vCPU 1 moves to CPU 1.
    let out = busctl(
        &bus.address,
        &[
            "--json=short",
            "call",
            "org.novacron1",
            "/org/novacron1/domain/drifty",
            "org.novacron1.Domain",
            "PinVCPU",
            "usbb",
            "1",
            "1",
            "true",
            "false",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pinning: Value = serde_json::from_str(answer["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(pinning["vcpus"][1]["affinity"], "1");
    assert_eq!(allowed(pid, vcpu1), "1");
    let out = busctl(
        &bus.address,
        &[
            "call",
            "org.novacron1",
            "/org/novacron1/domain/drifty",
            "org.novacron1.Domain",
            "PinVCPU",
            "usbb",
            "7",
            "0",
            "true",
            "false",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no vCPU 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // novactl: the emulator threads move to CPU 1; the table shows what /proc says.
    let out = novactl(&d.socket, &["emulatorpin", "drifty", "1", "--live"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(allowed(pid, u64::from(pid)), "1");
    let out = novactl(&d.socket, &["vcpupin", "drifty"]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..3],
        ["0", vcpu0.to_string().as_str(), "0"],
        "{table}"
    );
    assert_eq!(
        rows[1][..3],
        ["1", vcpu1.to_string().as_str(), "1"],
        "{table}"
    );
    let out = novactl(&d.socket, &["vcpupin", "drifty", "0", "5000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("5000"));
    // Each pin through each face is audited with who asked; queries are not.
    let t = |op: &str, result: &str, via: &str| {
        (
            op.to_owned(),
            "drifty".to_owned(),
            result.to_owned(),
            via.to_owned(),
        )
    };
    assert_eq!(
        audited(&env, |op| op.ends_with("pin")),
        [
            t("vcpupin", "ok", "http-unix"),
            t("vcpupin", "invalid_config", "http-unix"),
            t("vcpupin", "ok", "dbus"),
            t("vcpupin", "invalid_config", "dbus"),
            t("emulatorpin", "ok", "http-unix"),
            t("vcpupin", "invalid_config", "http-unix"),
        ]
    );
    let dbus_pins: Vec<_> = audit_entries(&env)
        .into_iter()
        .filter(|e| e["actor"]["via"] == "dbus")
        .collect();
    assert!(
        dbus_pins.iter().all(|e| e["actor"]["bus_name"]
            .as_str()
            .is_some_and(|b| b.starts_with(':'))
            && e["actor"]["uid"] == 0),
        "{dbus_pins:?}"
    );

    // kill -9 of the daemon; then vCPU 0 and the main thread are moved behind its back.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    set_affinity(vcpu0, 1);
    set_affinity(u64::from(pid), 0);
    let steady_before = allowed(steady_pid, steady0);

    let log = d.log.clone();
    drop(d);
    let d = env.start_daemon(&dbus);
    let text = wait_log(&log, "novacrond ready", 2);
    // The live pins (kept in the runtime record) are the plan: both drifted threads are back.
    assert_eq!(allowed(pid, vcpu0), "0", "vCPU 0 restored to its live pin");
    assert_eq!(allowed(pid, vcpu1), "1", "vCPU 1 was not drifted");
    assert_eq!(allowed(pid, u64::from(pid)), "1", "main thread restored");
    assert_eq!(allowed(steady_pid, steady0), steady_before);
    let restored: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("drifted; restored"))
        .collect();
    assert_eq!(restored.len(), 1, "exactly one guest had drifted:\n{text}");
    assert!(
        restored[0].contains("drifty") && restored[0].contains("vCPU 0"),
        "{}",
        restored[0]
    );
    // The event is on the bus for clients that reconnect: the stream replays it, and
    // everything replayed comes before what happens after the subscription (the destroys).
    let mut stream = Command::new("curl")
        .args(["-sSN", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/v1/events?after=0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(stream.stdout.take().unwrap());
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the event stream never answered");
    assert_eq!(first, ": subscribed");
    for name in ["drifty", "steady"] {
        let r = curl(
            &d.socket,
            "POST",
            &format!("/v1/domains/{name}/destroy"),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = |e: &Value, name: &str| {
        e["domain"] == name && e["event"] == "state_changed" && e["to"] == "shutoff"
    };
    while !(seen.iter().any(|e| ended(e, "drifty")) && seen.iter().any(|e| ended(e, "steady"))) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the destroys never showed in the stream: {seen:?}"));
        if let Some(data) = line.strip_prefix("data: ") {
            seen.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let restored: Vec<&Value> = seen
        .iter()
        .filter(|e| e["event"] == "pins_restored")
        .collect();
    assert_eq!(restored.len(), 1, "{seen:?}");
    assert_eq!(restored[0]["domain"], "drifty", "{:?}", restored[0]);
}

/// The lines a child writes, as they come.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Removes the test's cgroup parents when dropped.
struct CgroupParents(Vec<PathBuf>);

impl Drop for CgroupParents {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn cgroup_of(pid: u32, controller: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if controller.is_empty() {
                c.is_empty()
            } else {
                c.split(',').any(|x| x == controller)
            };
            hit.then(|| path.to_owned())
        })
        .unwrap_or_default()
}

/// (controllers, path) of every hierarchy in /proc/<pid>/cgroup; "" is the unified (v2) one.
fn cgroup_lines(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, path) = (f.next()?, f.next()?, f.next()?);
            Some((c.to_owned(), path.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_guest_in_its_own_cgroup_with_the_cpuset_of_its_pins() {
    two_cpus();
    let mut env = Env::new();
    let parent = format!("novacron-test-{}", std::process::id());
    let cgroups = novacrond::host::cgroup::Cgroups::detect(Path::new(&parent))
        .expect("this host has cgroup controllers");
    // cgroup v2 gives no controllers below a cgroup with processes (ours): start at the root.
    let parent = match cgroups.layout() {
        novacrond::host::cgroup::Layout::V2 { .. } => format!("/{parent}"),
        novacrond::host::cgroup::Layout::V1 { .. } => parent,
    };
    let cgroups = novacrond::host::cgroup::Cgroups::detect(Path::new(&parent)).unwrap();
    env.config.cgroups = novacrond::host::cgroup::CgroupConfig {
        mode: novacrond::host::cgroup::CgroupMode::On,
        parent: parent.clone().into(),
    };
    println!("layout: {:?}", cgroups.layout());
    let dirs = cgroups.guest("caged").dirs;
    let _cleanup = CgroupParents(
        dirs.iter()
            .filter_map(|d| d.parent().map(Path::to_owned))
            .collect(),
    );
    let svc = env.open().await;
    let mut caged = guest(
        "caged",
        "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='1'/><emulatorpin cpuset='1'/>
         <iothreadpin iothread='1' cpuset='1'/>",
    );
    caged.memtune = Some(novacron_domain::model::MemTune {
        hard_limit_kib: Some(1 << 20),
        soft_limit_kib: Some(768 << 10),
    });
    svc.define(caged).await.unwrap();
    svc.start("caged").await.unwrap();
    let pid = recorded_pid(&env, "caged");

    let cpuset_dir = dirs
        .iter()
        .find(|d| d.join("cpuset.cpus").exists())
        .expect("a cpuset cgroup");
    let read = |f: &str| {
        std::fs::read_to_string(cpuset_dir.join(f))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(read("cpuset.cpus"), "1", "the union of the pins");
    let procs = std::fs::read_to_string(cpuset_dir.join("cgroup.procs")).unwrap();
    assert_eq!(
        procs.trim(),
        pid.to_string(),
        "QEMU (and only it) is in the cgroup"
    );
    let controller = match cgroups.layout() {
        novacrond::host::cgroup::Layout::V2 { .. } => "",
        novacrond::host::cgroup::Layout::V1 { .. } => "cpuset",
    };
    assert!(
        cgroup_of(pid, controller).ends_with(&format!("{}/caged", parent.trim_start_matches('/'))),
        "{}",
        cgroup_of(pid, controller)
    );
    if let novacrond::host::cgroup::Layout::V1 {
        memory: Some(_), ..
    } = cgroups.layout()
    {
        assert!(
            cgroup_of(pid, "memory")
                .ends_with(&format!("{}/caged", parent.trim_start_matches('/'))),
            "memory: {}",
            cgroup_of(pid, "memory")
        );
    }
    // <memtune> in the memory cgroup.
    let (max, high) = match cgroups.layout() {
        novacrond::host::cgroup::Layout::V2 { .. } => ("memory.max", "memory.high"),
        novacrond::host::cgroup::Layout::V1 { .. } => {
            ("memory.limit_in_bytes", "memory.soft_limit_in_bytes")
        }
    };
    let memory_dir = dirs
        .iter()
        .find(|d| d.join(max).exists())
        .expect("a memory cgroup");
    let limit = |f: &str| std::fs::read_to_string(memory_dir.join(f)).unwrap();
    assert_eq!(limit(max).trim(), (1u64 << 30).to_string());
    assert_eq!(limit(high).trim(), (768u64 << 20).to_string());
    // Every QEMU thread is confined, the pins hold inside.
    for tid in novacrond::host::pinning::threads(pid).unwrap() {
        assert_eq!(allowed(pid, u64::from(tid)), "1", "thread {tid}");
    }

    // A live pin outside the cpuset widens it first; the other pins survive the kernel's reset.
    pin_op(&svc, "caged", ThreadKind::Vcpu(0), "0", PinScope::default())
        .await
        .unwrap();
    assert_eq!(read("cpuset.cpus"), "0-1");
    let cpus = svc
        .qmp_passthrough("caged", "query-cpus-fast", None)
        .await
        .unwrap();
    assert_eq!(allowed(pid, vcpu_tid(&cpus, 0)), "0");
    assert_eq!(allowed(pid, vcpu_tid(&cpus, 1)), "1");
    assert_eq!(allowed(pid, u64::from(pid)), "1");

    svc.destroy("caged").await.unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// systemd cannot run in this container: a stand-in `org.freedesktop.systemd1.Manager` on a
/// private bus records the scope properties (systemd's published signatures:
/// StartTransientUnit(s, s, a(sv), a(sa(sv))) -> o, SetUnitProperties(s, b, a(sv))).
struct FakeSystemd {
    calls: Calls,
}

/// (method, unit, AllowedCPUs) per call.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: String,
        _mode: String,
        properties: Vec<(String, zbus::zvariant::OwnedValue)>,
        _aux: Vec<(String, Vec<(String, zbus::zvariant::OwnedValue)>)>,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedObjectPath> {
        self.record("StartTransientUnit", name, properties);
        Ok(zbus::zvariant::OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap())
    }

    fn set_unit_properties(
        &self,
        name: String,
        _runtime: bool,
        properties: Vec<(String, zbus::zvariant::OwnedValue)>,
    ) -> zbus::fdo::Result<()> {
        self.record("SetUnitProperties", name, properties);
        Ok(())
    }
}

impl FakeSystemd {
    fn record(
        &self,
        method: &str,
        unit: String,
        properties: Vec<(String, zbus::zvariant::OwnedValue)>,
    ) {
        let cpus = properties
            .into_iter()
            .find(|(k, _)| k == "AllowedCPUs")
            .and_then(|(_, v)| Vec::<u8>::try_from(v).ok())
            .unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push((method.to_owned(), unit, cpus));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_scope_carries_the_cpuset_and_follows_live_pins() {
    two_cpus();
    let dir = tempfile::tempdir().unwrap();
    let bus = common::bus::PrivateBus::start(dir.path());
    let calls = Calls::default();
    let _systemd = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(
            "/org/freedesktop/systemd1",
            FakeSystemd {
                calls: calls.clone(),
            },
        )
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut env = Env::new();
    env.config.scopes = novacrond::config::ScopeConfig {
        mode: novacrond::config::ScopeMode::On,
        bus_address: Some(bus.address.clone()),
    };
    env.config.cgroups.mode = novacrond::host::cgroup::CgroupMode::Auto;
    let svc = env.open().await;
    svc.define(guest(
        "scoped",
        "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='1'/><emulatorpin cpuset='1'/>
         <iothreadpin iothread='1' cpuset='1'/>",
    ))
    .await
    .unwrap();
    svc.start("scoped").await.unwrap();
    let pid = recorded_pid(&env, "scoped");
    let unit = format!("novacron-scoped-{pid}.scope");
    assert_eq!(
        calls.lock().unwrap().clone(),
        [("StartTransientUnit".to_owned(), unit.clone(), vec![0b10])],
        "AllowedCPUs = CPU 1"
    );
    // No cgroup of the daemon's own next to systemd's, in any hierarchy: each v1 controller's
    // line and the unified (v2) line of /proc/<pid>/cgroup. The lines of the hierarchies the
    // daemon would use must be there, so the check is never vacuous (on v2 the cpuset line
    // is empty: the unified line is the one that counts).
    let hierarchies = cgroup_lines(pid);
    let wanted: Vec<&str> = match novacrond::host::cgroup::Cgroups::detect(Path::new("novacron"))
        .expect("this host has cgroup controllers")
        .layout()
    {
        novacrond::host::cgroup::Layout::V2 { .. } => vec![""],
        novacrond::host::cgroup::Layout::V1 { cpuset, memory } => [
            cpuset.as_ref().map(|_| "cpuset"),
            memory.as_ref().map(|_| "memory"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    for controller in wanted {
        assert!(
            hierarchies.iter().any(|(c, _)| if controller.is_empty() {
                c.is_empty()
            } else {
                c.split(',').any(|x| x == controller)
            }),
            "no {controller:?} hierarchy in {hierarchies:?}"
        );
    }
    for (controllers, path) in &hierarchies {
        assert!(
            !path.contains("novacron/scoped"),
            "the daemon made a cgroup of its own besides the scope ({controllers:?}: {path})"
        );
    }

    pin_op(
        &svc,
        "scoped",
        ThreadKind::Vcpu(0),
        "0",
        PinScope::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        calls.lock().unwrap().last().cloned().unwrap(),
        ("SetUnitProperties".to_owned(), unit, vec![0b11]),
        "the scope widened to CPUs 0-1"
    );
    let cpus = svc
        .qmp_passthrough("scoped", "query-cpus-fast", None)
        .await
        .unwrap();
    assert_eq!(allowed(pid, vcpu_tid(&cpus, 0)), "0");
    assert_eq!(allowed(pid, vcpu_tid(&cpus, 1)), "1");
    svc.destroy("scoped").await.unwrap();
}
