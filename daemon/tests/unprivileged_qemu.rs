//! QEMU runs unprivileged by default: a root novacrond with no `qemu_user` in its config starts
//! every QEMU as `novacron-qemu` (created by quickstart.sh / the sysusers file), makes a
//! root-only /dev/kvm usable by it, and QEMU reaches what it opens by path (the guest-agent
//! socket in its runtime directory, file-backed RAM). Root takes an explicit key and is warned
//! about; a missing user stops the daemon at startup with the fix in the message.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{curl, Daemon, Reply};
use common::*;
use novacrond::host::acl;

/// Tests here change /dev/kvm's ACL for the QEMU user: one at a time.
static KVM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const QEMU_USER: &str = "novacron-qemu";

fn qemu_user() -> nix::unistd::User {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (the project's test command runs as root)"
    );
    nix::unistd::User::from_name(QEMU_USER)
        .unwrap()
        .unwrap_or_else(|| panic!("user {QEMU_USER} is missing: ./quickstart.sh creates it"))
}

/// Removes the QEMU user's entry from /dev/kvm's ACL for the test, and puts back what was
/// there before when dropped.
struct KvmAclReset {
    uid: u32,
    before: Option<u16>,
}

impl KvmAclReset {
    fn new(uid: u32) -> KvmAclReset {
        let kvm = Path::new("/dev/kvm");
        let before = acl::read(kvm).unwrap().user(uid);
        acl::revoke_user(kvm, uid).unwrap();
        KvmAclReset { uid, before }
    }
}

impl Drop for KvmAclReset {
    fn drop(&mut self) {
        let kvm = Path::new("/dev/kvm");
        let _ = match self.before {
            Some(perm) => {
                acl::revoke_user(kvm, self.uid).and_then(|_| acl::grant_user(kvm, self.uid, perm))
            }
            None => acl::revoke_user(kvm, self.uid),
        };
    }
}

/// A top-level key for the harness's config: it must come before the harness's `[dbus]`
/// section, which it then leaves out.
fn top_level(line: &str) -> String {
    format!("{line}\n[dbus]\nbus = \"none\"\n")
}

fn define_xml(socket: &Path, xml: &str) -> Reply {
    curl(
        socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    )
}

/// `Uid:`, `Gid:` or `Groups:` of a process.
fn ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

fn wait_state(socket: &Path, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
        if r.json()["state"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {want}: {}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The OS-less guest with a guest-agent channel, whose socket QEMU binds in its runtime
/// directory (below the daemon's root-owned run directory).
fn osless_with_agent(name: &str) -> String {
    let channel =
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";
    let xml = osless(name).to_xml();
    if xml.contains("</devices>") {
        xml.replace("</devices>", &format!("{channel}</devices>"))
    } else if xml.contains("<devices/>") {
        xml.replace("<devices/>", &format!("<devices>{channel}</devices>"))
    } else {
        xml.replace(
            "</domain>",
            &format!("<devices>{channel}</devices></domain>"),
        )
    }
}

#[test]
fn default_config_runs_qemu_as_novacron_qemu_with_kvm_made_usable() {
    let user = qemu_user();
    let _one = KVM.blocking_lock();
    let kvm_guest = matches!(novacron_tests::osless_accel(), novacron_tests::Accel::Kvm);
    // /dev/kvm as this host has it (root-only 0600, no udev): the daemon must fix it.
    let _reset = KvmAclReset::new(user.uid.as_raw());
    let env = Env::new();
    // No qemu_user in the config: the default.
    let text = std::fs::read_to_string(env.write_config("")).unwrap();
    assert!(!text.contains("qemu_user"), "{text}");
    let d: Daemon = env.start_daemon("");
    let s = &d.socket;
    if kvm_guest {
        let entry = acl::read(Path::new("/dev/kvm"))
            .unwrap()
            .user(user.uid.as_raw());
        assert_eq!(
            entry,
            Some(acl::READ | acl::WRITE),
            "no ACL entry on /dev/kvm"
        );
        let host = curl(s, "GET", "/v1/host", &[]).json();
        assert_eq!(host["kvm"]["usable"], true, "{host}");
    }

    let xml = osless_with_agent("unpriv");
    assert!(xml.contains("guest_agent"), "{xml}");
    let r = define_xml(s, &xml);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(s, "POST", "/v1/domains/unpriv/start", &[]);
    assert!(r.status / 100 == 2, "start: {} {}", r.status, r.body);
    wait_state(s, "unpriv", "running");
    let pid = recorded_pid(&env, "unpriv");
    let uid = user.uid.as_raw();
    assert_eq!(ids(pid, "Uid:"), vec![uid; 4], "QEMU's uids");
    assert_eq!(ids(pid, "Gid:"), vec![user.gid.as_raw(); 4], "QEMU's gids");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "QEMU has capabilities: {status}"
    );
    let groups = ids(pid, "Groups:");
    assert!(!groups.contains(&0), "QEMU kept root's group: {groups:?}");
    if let Some(kvm) = nix::unistd::Group::from_name("kvm").unwrap() {
        assert!(groups.contains(&kvm.gid.as_raw()), "{groups:?}");
    }
    // Under KVM, not TCG: QEMU holds /dev/kvm open as the unprivileged user.
    if kvm_guest {
        let holds_kvm = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/kvm")));
        assert!(holds_kvm, "QEMU has no /dev/kvm open");
    }
    // QEMU bound the agent socket in its runtime directory, as its own user.
    let agent = env
        .config
        .run_dir
        .join("domains/unpriv.d/org.qemu.guest_agent.0.sock");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&agent).unwrap());
    assert_eq!(owner, uid, "{}", agent.display());

    let r = curl(s, "POST", "/v1/domains/unpriv/destroy", &[]);
    assert!(r.status / 100 == 2, "destroy: {} {}", r.status, r.body);
    wait_state(s, "unpriv", "shutoff");
    assert!(!pid_alive(pid));
}

/// File-backed RAM in `memory_backing_dir` (created by the daemon, root-only): the QEMU user
/// creates its RAM file in the guest's directory, which goes when the guest stops.
#[tokio::test]
async fn file_backed_ram_is_created_by_the_qemu_user() {
    let user = qemu_user();
    let _one = KVM.lock().await;
    let mut env = Env::new();
    let ram = env.dir.path().join("ram");
    env.config.memory_backing_dir = Some(ram.clone());
    let svc = env.open().await;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&ram).unwrap().permissions());
    assert_eq!(
        mode & 0o007,
        0,
        "memory_backing_dir is open to others: {mode:o}"
    );
    let mut config = osless("filemem2");
    config.memory_backing = Some(novacron_domain::model::MemoryBacking {
        source: Some(novacron_domain::model::MemorySource::File),
        ..Default::default()
    });
    svc.define(config).await.unwrap();
    svc.start("filemem2").await.unwrap();
    let file = ram.join("filemem2/pc.ram");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        user.uid.as_raw()
    );
    let pid = recorded_pid(&env, "filemem2");
    assert_eq!(ids(pid, "Uid:")[0], user.uid.as_raw());
    svc.destroy("filemem2").await.unwrap();
    assert!(!ram.join("filemem2").exists());
}

#[test]
fn qemu_as_root_takes_an_explicit_key_and_is_warned_about() {
    let env = Env::new();
    let d = env.start_daemon(&top_level("qemu_user = \"root\""));
    let s = &d.socket;
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("QEMU runs as root"), "no warning:\n{log}");
    let r = define_xml(s, &osless("rooted").to_xml());
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(s, "POST", "/v1/domains/rooted/start", &[]);
    assert!(r.status / 100 == 2, "start: {} {}", r.status, r.body);
    wait_state(s, "rooted", "running");
    let pid = recorded_pid(&env, "rooted");
    assert_eq!(ids(pid, "Uid:"), vec![0; 4]);
    let r = curl(s, "POST", "/v1/domains/rooted/destroy", &[]);
    assert!(r.status / 100 == 2, "destroy: {} {}", r.status, r.body);
}

#[test]
fn a_missing_qemu_user_stops_the_daemon_at_startup_naming_the_fix() {
    let env = Env::new();
    let config = env.write_config(&top_level("qemu_user = \"novacron-no-such-user\""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_novacrond"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run novacrond");
    assert!(
        !out.status.success(),
        "novacrond started without its QEMU user"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "qemu_user 'novacron-no-such-user': no such user",
        "sysusers",
        "quickstart.sh",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(
        !env.config.run_dir.join("novacrond.sock").exists(),
        "it served before failing"
    );
}

/// `<memoryBacking><locked/>`: the unprivileged QEMU locks all its memory (`mem-lock=on`),
/// which RLIMIT_MEMLOCK (8 MiB in a login shell) would refuse it: it keeps CAP_IPC_LOCK, and
/// only that capability.
#[tokio::test]
async fn locked_guest_memory_works_for_the_qemu_user() {
    let user = qemu_user();
    let _one = KVM.lock().await;
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("locked");
    config.memory_backing = Some(novacron_domain::model::MemoryBacking {
        locked: true,
        ..Default::default()
    });
    svc.define(config).await.unwrap();
    svc.start("locked").await.unwrap();
    let pid = recorded_pid(&env, "locked");
    assert_eq!(ids(pid, "Uid:")[0], user.uid.as_raw());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(locked_kib >= 64 * 1024, "only {locked_kib} KiB locked");
    let caps = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    let ipc_lock = 1u64 << 14;
    assert_eq!(caps("CapEff:"), ipc_lock, "{status}");
    assert_eq!(caps("CapPrm:"), ipc_lock, "{status}");
    svc.destroy("locked").await.unwrap();
}
