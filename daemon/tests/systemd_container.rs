//! The systemd units under a real systemd: a minimal Debian bookworm booted with
//! systemd-nspawn (see `novacron_tests::Container`), the README's "Installing as a systemd
//! service" steps run in it as written (the binaries under test are bound in; nothing is built
//! inside), and then what the README promises: the socket starts the service, group members
//! reach the HTTP and D-Bus APIs, the device allow list lets guests' devices through and
//! nothing else, a guest runs in its own scope in machine.slice, a restart keeps it running
//! and re-adopts it, the watchdog holds, and the journal lines carry what happened.
//!
//! Needs root, systemd-nspawn (Debian's systemd-container), debootstrap (the root file system
//! is built once per machine into `<cache>/nspawn-rootfs-<hash>`, a few minutes) and /dev/kvm.
//! Anything missing fails the test with the reason; it is never skipped.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use novacron_tests::{Bind, Container};
use serde_json::Value;

const BIN_DIR: &str = "/opt/novacron/bin";
const TEST_DIR: &str = "/opt/novacron/test";
const STEP: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// What the test cannot run without, checked first so a missing piece is named, not skipped.
fn preflight() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the systemd container test needs root (systemd-nspawn, debootstrap)"
    );
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: apt-get install {package} (./quickstart.sh installs it)"
        );
    }
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: the container test runs a guest under the unit's device policy"
    );
}

/// The README's install block, made runnable here: `sudo` dropped (we are root), the binaries
/// taken from where the test bound them instead of `target/release/`, and the build step left
/// out (the binaries under test are the ones this test was built with).
fn readme_install_script() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme
        .split_once("## Installing as a systemd service")
        .expect("README has an \"Installing as a systemd service\" section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the install section has a ```sh block")
        .0;
    let mut script = String::from("set -ex\ncd /src\nexport USER=tester\n");
    for line in block.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("cargo build") {
            continue;
        }
        let line = line
            .replace("sudo ", "")
            .replace("target/release/", &format!("{BIN_DIR}/"));
        script.push_str(&line);
        script.push('\n');
    }
    assert!(
        script.contains("systemctl enable"),
        "the README's install block enables nothing:\n{block}"
    );
    script
}

/// The container plus the checks every step uses.
struct Host {
    c: Container,
}

impl Host {
    /// Runs `script`, which must succeed; its stdout.
    fn sh(&self, script: &str) -> String {
        let ran = self.c.run(script, STEP).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            ran.ok(),
            "in the container: {script}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
            ran.status,
            ran.stdout,
            ran.stderr
        );
        ran.stdout
    }

    /// Runs `script`, failing or not: (success, stdout + stderr).
    fn try_sh(&self, script: &str) -> (bool, String) {
        let ran = self.c.run(script, STEP).unwrap_or_else(|e| panic!("{e:#}"));
        (ran.ok(), format!("{}{}", ran.stdout, ran.stderr))
    }

    /// One property of a unit (`systemctl show -P`).
    fn prop(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show -P {name} {unit}"))
            .trim()
            .to_owned()
    }

    /// Polls `check` until it returns a value; fails after `within` with `what` and the last
    /// thing seen.
    fn wait<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&Host) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(last) => assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}; last: {last}\njournal:\n{}",
                    self.try_sh("journalctl -b --no-pager -n 60").1
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_active(&self, unit: &str) {
        self.wait(&format!("{unit} active"), STEP, |h| {
            match h.prop(unit, "ActiveState").as_str() {
                "active" => Ok(()),
                other => Err(other.to_owned()),
            }
        })
    }

    /// novacrond's journal as JSON objects.
    fn journal(&self) -> Vec<Value> {
        self.sh("journalctl -u novacrond.service -o json --no-pager")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The domain's info as novactl prints it (`--json`).
    fn info(&self, name: &str) -> Value {
        let out = self.sh(&format!("novactl --json info {name}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Runs `cmd` as `user` through systemd (a real login-less service process, with the
    /// user's groups from the user database).
    fn as_user(&self, user: &str, cmd: &str) -> (bool, String) {
        self.try_sh(&format!(
            "systemd-run --uid={user} --pipe --wait --quiet --collect -- {cmd}"
        ))
    }
}

/// A journal field as text (journald gives an array when a field repeats).
fn field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    match &entry[name] {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

#[test]
fn units_under_a_real_systemd_in_a_container() {
    preflight();
    let started = Instant::now();
    let rootfs = novacron_tests::nspawn_rootfs().unwrap_or_else(|e| panic!("{e:#}"));
    let rootfs_ready = started.elapsed();

    let staging = tempfile::tempdir().unwrap();
    let kvm = novacron_tests::osless_accel() == novacron_tests::Accel::Kvm;
    std::fs::write(staging.path().join("g1.xml"), common::osless("g1").to_xml()).unwrap();
    let binds = [
        Bind {
            host: repo_root(),
            inside: "/src".into(),
            read_only: true,
        },
        Bind {
            host: env!("CARGO_BIN_EXE_novacrond").into(),
            inside: format!("{BIN_DIR}/novacrond"),
            read_only: true,
        },
        Bind {
            host: env!("CARGO_BIN_EXE_novactl").into(),
            inside: format!("{BIN_DIR}/novactl"),
            read_only: true,
        },
        Bind {
            host: staging.path().to_owned(),
            inside: TEST_DIR.into(),
            read_only: true,
        },
    ];
    let booting = Instant::now();
    let c = Container::boot(
        &rootfs,
        &format!("novacron-test-{}", std::process::id()),
        &binds,
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let booted = booting.elapsed();
    let h = Host { c };

    install_as_the_readme_says(&h);
    socket_starts_the_service(&h);
    api_group_members_reach_dbus(&h);
    device_allow_list_is_enforced(&h);
    let (pid, uuid) = guest_runs_in_its_own_scope(&h, kvm);
    restart_keeps_and_readopts_the_guest(&h, pid);
    watchdog_holds(&h, pid);
    journal_lines_say_what_happened(&h, &uuid);
    no_complaints(&h);

    eprintln!(
        "systemd container test: root file system {:.1}s, boot {:.1}s, whole test {:.1}s",
        rootfs_ready.as_secs_f64(),
        booted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn install_as_the_readme_says(h: &Host) {
    h.sh("useradd --create-home tester && useradd --create-home outsider");
    h.sh(&readme_install_script());
    h.wait_active("novacrond.socket");
    h.wait_active("novacrond.service");
    no_complaints(h);
}

/// Nothing in this boot made systemd or dbus complain about the units or the bus policy.
fn no_complaints(h: &Host) {
    let boot_log = h.sh("journalctl -b --no-pager -o short");
    for complaint in [
        // dbus-daemon on the bus policy
        "Unknown group",
        "Unknown user",
        "Encountered error",
        // systemd on DeviceAllow=
        "Couldn't stat device",
        "Couldn't resolve device",
        // novacrond without its bus name
        "D-Bus API not started",
    ] {
        let hits: Vec<&str> = boot_log.lines().filter(|l| l.contains(complaint)).collect();
        assert!(hits.is_empty(), "the journal says:\n{}", hits.join("\n"));
    }
}

/// Stopped, the service is started again by the first client on the socket, which is answered
/// by it; a member of the novacron group may use the socket.
fn socket_starts_the_service(h: &Host) {
    h.sh("systemctl stop novacrond.service");
    assert_eq!(h.prop("novacrond.service", "ActiveState"), "inactive");
    assert_eq!(h.prop("novacrond.socket", "ActiveState"), "active");
    let (ok, out) = h.as_user("tester", "novactl list --all");
    assert!(ok, "novactl as a novacron group member: {out}");
    assert!(out.contains("NAME"), "{out}");
    h.wait_active("novacrond.service");
    let main_pid = h.prop("novacrond.service", "MainPID");
    let log = h.sh(&format!(
        "journalctl -u novacrond.service _PID={main_pid} -o cat --no-pager"
    ));
    assert!(log.contains("socket passed by systemd"), "{log}");
    // Someone outside the group gets nothing (the socket is 0660 root:novacron).
    let (ok, out) = h.as_user("outsider", "novactl list --all");
    assert!(!ok, "novactl as a non-member succeeded: {out}");
}

/// The D-Bus policy's group rule works from the start (no dbus reload needed): members call,
/// others are refused by the bus.
fn api_group_members_reach_dbus(h: &Host) {
    let call =
        "busctl --system call org.novacron1 /org/novacron1 org.novacron1.Manager GetHostInfo";
    let (ok, out) = h.as_user("tester", call);
    assert!(
        ok,
        "a novacron group member calling over D-Bus: {out}\n{}",
        h.try_sh("journalctl -b --no-pager -n 80").1
    );
    let (ok, out) = h.as_user("outsider", call);
    assert!(!ok && out.contains("Access denied"), "a non-member: {out}");
}

/// The unit's DevicePolicy=/DeviceAllow= applied to a probe process: it may open /dev/kvm,
/// tun, and the vhost and VFIO container nodes even though those nodes did not exist when the
/// service started (major:minor, not paths), and nothing else. A control run without the
/// allow list shows the container really enforces device policies.
fn device_allow_list_is_enforced(h: &Host) {
    let unit = std::fs::read_to_string(repo_root().join("systemd/novacrond.service")).unwrap();
    let props: Vec<String> = unit
        .lines()
        .filter(|l| l.starts_with("DevicePolicy=") || l.starts_with("DeviceAllow="))
        .map(|l| format!("-p '{l}'"))
        .collect();
    assert!(
        props.iter().any(|p| p.contains("DevicePolicy=closed")),
        "{props:?}"
    );
    // Fixed misc minors (include/linux/miscdevice.h), so the nodes can be made anywhere.
    let nodes = [
        ("/dev/kvm", None, true),
        ("/dev/net/tun", None, true),
        ("/dev/nct-vhost-net", Some("10 238"), true),
        ("/dev/nct-vhost-vsock", Some("10 241"), true),
        ("/dev/nct-vfio", Some("10 196"), true),
        ("/dev/nct-loop-control", Some("10 237"), false),
    ];
    for (path, numbers, _) in &nodes {
        if let Some(numbers) = numbers {
            h.sh(&format!("rm -f {path}; mknod {path} c {numbers}"));
        }
    }
    let probe: String = nodes
        .iter()
        .map(|(path, _, _)| format!("echo \"{path}: $( (exec 3<>{path}) 2>&1 || true)\";"))
        .collect();
    let run = |props: &str| {
        h.sh(&format!(
            "systemd-run --wait --pipe --quiet --collect {props} -- sh -c '{probe}'"
        ))
    };
    let denied = "Operation not permitted";
    let with_list = run(&props.join(" "));
    for (path, _, allowed) in &nodes {
        let line = with_list
            .lines()
            .find(|l| l.starts_with(&format!("{path}:")))
            .unwrap_or_else(|| panic!("no probe line for {path}:\n{with_list}"));
        assert_eq!(
            !line.contains(denied),
            *allowed,
            "{path} under the unit's device list: {line}"
        );
    }
    let control = run("-p DevicePolicy=closed");
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("/dev/kvm:") && l.contains(denied)),
        "the container does not enforce DevicePolicy= (the probe opened /dev/kvm):\n{control}"
    );
    h.sh("rm -f /dev/nct-*");
}

/// A guest started through the service runs under KVM in its own scope in machine.slice.
fn guest_runs_in_its_own_scope(h: &Host, kvm: bool) -> (u64, String) {
    h.sh(&format!(
        "novactl define -f {TEST_DIR}/g1.xml && novactl start g1"
    ));
    let info = h.info("g1");
    assert_eq!(info["state"], "running", "{info}");
    let pid = info["pid"].as_u64().expect("pid");
    let uuid = info["uuid"].as_str().expect("uuid").to_owned();
    let scope = format!("novacron-g1-{pid}.scope");
    assert_eq!(h.prop(&scope, "ActiveState"), "active");
    assert_eq!(h.prop(&scope, "Slice"), "machine.slice");
    let cgroup = h.sh(&format!("cat /proc/{pid}/cgroup"));
    assert!(
        cgroup.contains(&format!("/machine.slice/{scope}")),
        "{cgroup}"
    );
    if kvm {
        // QEMU opened /dev/kvm under the unit's device policy.
        let out = h.sh("novactl qmp g1 query-kvm");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["enabled"], true, "{out}");
    }
    (pid, uuid)
}

/// `systemctl restart novacrond`: a new daemon, the same QEMU, reconnected (it answers QMP
/// commands), its scope untouched.
fn restart_keeps_and_readopts_the_guest(h: &Host, pid: u64) {
    let old = h.prop("novacrond.service", "MainPID");
    h.sh("systemctl restart novacrond.service");
    h.wait_active("novacrond.service");
    let new = h.prop("novacrond.service", "MainPID");
    assert_ne!(old, new, "no new daemon");
    let info = h.info("g1");
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["pid"].as_u64(), Some(pid), "{info}");
    h.sh("novactl suspend g1");
    assert_eq!(h.info("g1")["state"], "paused");
    h.sh("novactl resume g1");
    assert_eq!(h.info("g1")["state"], "running");
    assert_eq!(
        h.prop(&format!("novacron-g1-{pid}.scope"), "ActiveState"),
        "active"
    );
}

/// With the daemon healthy, the service outlives its watchdog interval many times over: the
/// watchdog is shortened with a drop-in (as an admin would with `systemctl edit`) so this
/// takes seconds; systemd would kill and restart a daemon that stopped pinging.
fn watchdog_holds(h: &Host, pid: u64) {
    assert_eq!(h.prop("novacrond.service", "WatchdogUSec"), "30s");
    h.sh(
        "mkdir -p /etc/systemd/system/novacrond.service.d && \
         printf '[Service]\\nWatchdogSec=2\\n' > /etc/systemd/system/novacrond.service.d/watchdog.conf && \
         systemctl daemon-reload && systemctl restart novacrond.service",
    );
    h.wait_active("novacrond.service");
    assert_eq!(h.prop("novacrond.service", "WatchdogUSec"), "2s");
    let main_pid = h.prop("novacrond.service", "MainPID");
    let since: u64 = h
        .prop("novacrond.service", "ActiveEnterTimestampMonotonic")
        .parse()
        .unwrap();
    // Pinged (WATCHDOG=1 seen by systemd) more than three intervals after it became active,
    // by the same daemon (one killed by the watchdog is restarted: Restart=on-failure).
    h.wait(
        "a watchdog ping 6 s after start",
        Duration::from_secs(30),
        |h| {
            let now = h.prop("novacrond.service", "MainPID");
            assert_eq!(
                now,
                main_pid,
                "the daemon was replaced:\n{}",
                h.try_sh("journalctl -b --no-pager -n 30 -u novacrond.service")
                    .1
            );
            let last: u64 = h
                .prop("novacrond.service", "WatchdogTimestampMonotonic")
                .parse()
                .unwrap_or(0);
            if last > since + 6_000_000 {
                Ok(())
            } else {
                Err(format!("last ping at {last}, active since {since}"))
            }
        },
    );
    assert_eq!(h.prop("novacrond.service", "MainPID"), main_pid);
    assert_eq!(h.prop("novacrond.service", "ActiveState"), "active");
    assert_eq!(h.prop("novacrond.service", "NRestarts"), "0");
    let log = h.sh("journalctl -b --no-pager -o cat -u novacrond.service");
    assert!(!log.contains("Watchdog timeout"), "{log}");
    assert_eq!(h.info("g1")["pid"].as_u64(), Some(pid));
    h.sh("rm -r /etc/systemd/system/novacrond.service.d && systemctl daemon-reload");
}

/// journald gets a message that says what happened and DOMAIN=, UUID=, OP= fields, at the
/// syslog priority of the level (info is 6).
fn journal_lines_say_what_happened(h: &Host, uuid: &str) {
    let entries: Vec<Value> = h
        .journal()
        .into_iter()
        .filter(|e| field(e, "SYSLOG_IDENTIFIER") == Some("novacrond"))
        .collect();
    let show = |e: &Value| {
        let mut e = e.clone();
        if let Some(map) = e.as_object_mut() {
            map.retain(|k, _| !k.starts_with('_'));
        }
        e.to_string()
    };
    assert!(!entries.is_empty(), "no novacrond lines in the journal");
    for e in &entries {
        let message = field(e, "MESSAGE").unwrap_or_default();
        assert!(
            message != "domain event" && message != "audit",
            "a line that does not say what happened: {}",
            show(e)
        );
        assert_ne!(field(e, "PRIORITY"), Some("5"), "{}", show(e));
    }
    let find = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        entries
            .iter()
            .find(|e| pred(e))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no journal line for {what}; the lines:\n{}",
                    entries.iter().map(show).collect::<Vec<_>>().join("\n")
                )
            })
    };
    let ready = find("novacrond ready", &|e| {
        field(e, "MESSAGE") == Some("novacrond ready")
    });
    assert_eq!(field(&ready, "PRIORITY"), Some("6"), "{}", show(&ready));

    let is = |e: &Value, k: &str, v: &str| field(e, k) == Some(v);
    for (what, event) in [
        ("the definition", "defined"),
        ("the start", "state_changed"),
        ("the reconnection", "reconnected"),
    ] {
        let e = find(what, &|e| {
            is(e, "EVENT", event)
                && is(e, "DOMAIN", "g1")
                && (event != "state_changed" || is(e, "TO", "running"))
        });
        assert_eq!(field(&e, "UUID"), Some(uuid), "{what}: {}", show(&e));
        assert_eq!(field(&e, "PRIORITY"), Some("6"), "{what}: {}", show(&e));
        let message = field(&e, "MESSAGE").unwrap_or_default();
        assert!(message.contains("g1"), "{what}: {}", show(&e));
    }
    let running = find("the start", &|e| {
        is(e, "EVENT", "state_changed") && is(e, "TO", "running")
    });
    assert!(
        field(&running, "MESSAGE")
            .unwrap_or_default()
            .contains("running"),
        "{}",
        show(&running)
    );
    let audit = find("the start's audit", &|e| {
        is(e, "OP", "start")
            && is(e, "DOMAIN", "g1")
            && is(e, "RESULT", "ok")
            && e.get("EVENT").is_none()
    });
    assert_eq!(field(&audit, "UUID"), Some(uuid), "{}", show(&audit));
    assert_eq!(field(&audit, "PRIORITY"), Some("6"), "{}", show(&audit));
    let message = field(&audit, "MESSAGE").unwrap_or_default();
    assert!(
        message.contains("start") && message.contains("g1") && message.contains("ok"),
        "{}",
        show(&audit)
    );
}
