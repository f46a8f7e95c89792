//! Issue 13 §1: an operator is not root. A real novacrond, an unprivileged user made with
//! `useradd` in the socket group calling it with curl (`runuser`): every definition naming a
//! host file outside the storage roots, a host device or a path escaping a root is refused
//! with the field named, audited, and nothing is defined; root may define the same. A guest
//! inside the roots starts with QEMU given descriptors only; a file swapped for a symlink
//! after define is refused at start, autostart included.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use common::daemon::{curl, curl_as, Daemon, Reply};
use common::{osless, recorded_pid, Env};

const OP: &str = "novacron-test-op";
const GROUP: &str = "novacron-test-sock";
const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run a system command")
}

/// The operator account and the socket group, made once (idempotent across test runs; a
/// concurrent `useradd` elsewhere may hold the passwd lock, hence the retries).
fn ensure_operator() {
    static MADE: Mutex<bool> = Mutex::new(false);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if *made {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (useradd, runuser)"
    );
    let retry = |what: &str, ok: &dyn Fn() -> bool, make: &mut dyn FnMut() -> Output| {
        for _ in 0..50 {
            if ok() {
                return;
            }
            let out = make();
            if out.status.success() || ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot create {what}");
    };
    retry(
        GROUP,
        &|| {
            run(Command::new("getent").args(["group", GROUP]))
                .status
                .success()
        },
        &mut || run(Command::new("groupadd").args(["--system", GROUP])),
    );
    retry(
        OP,
        &|| run(Command::new("id").args(["-u", OP])).status.success(),
        &mut || {
            run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OP,
            ]))
        },
    );
    retry(
        "group membership",
        &|| {
            String::from_utf8_lossy(&run(Command::new("id").args(["-nG", OP])).stdout)
                .split_whitespace()
                .any(|g| g == GROUP)
        },
        &mut || run(Command::new("usermod").args(["-aG", GROUP, OP])),
    );
    *made = true;
}

/// curl against the daemon's socket as the unprivileged operator.
fn curl_op(socket: &Path, method: &str, path: &str, args: &[&str]) -> Reply {
    curl_as(Some(OP), socket, method, path, args)
}

struct Setup {
    env: Env,
    daemon: Daemon,
    images: PathBuf,
    /// A root-only directory outside the roots holding `secret.key`.
    secret: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        ensure_operator();
        let env = Env::new();
        let daemon = env.start_daemon(&format!("[api]\nsocket_group = \"{GROUP}\"\n"));
        // The operator must reach the socket (0660, group GROUP) through the test's private
        // directories.
        for d in [env.dir.path(), env.config.run_dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let images = env.config.state_dir.join("images");
        let mode = std::fs::metadata(&images)
            .expect("the default storage root is created at startup")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        let secret = env.dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(secret.join("secret.key"), b"TOP SECRET").unwrap();
        Setup {
            env,
            daemon,
            images,
            secret,
        }
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.env.config.log_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn audited(&self, op: &str, domain: &str, result: &str) -> Option<serde_json::Value> {
        self.audit()
            .into_iter()
            .find(|e| e["op"] == op && e["domain"] == domain && e["result"] == result)
    }
}

/// The OS-less guest as XML, with `devices` added and `os` extra.
fn guest_xml(name: &str, os_extra: &str, devices: &str) -> String {
    let xml = osless(name).to_xml();
    let xml = xml.replace("</os>", &format!("{os_extra}</os>"));
    match xml.contains("<devices>") {
        true => xml.replace("<devices>", &format!("<devices>{devices}")),
        false => xml.replace(
            "</domain>",
            &format!("<devices>{devices}</devices></domain>"),
        ),
    }
}

fn disk(path: &str, dev: &str, format: &str) -> String {
    format!(
        "<disk type='file' device='disk'><driver name='qemu' type='{format}'/>\
         <source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>"
    )
}

fn define(socket: &Path, xml: &str, as_op: bool) -> Reply {
    let mut args = XML.to_vec();
    args.push(xml);
    if as_op {
        curl_op(socket, "POST", "/v1/domains", &args)
    } else {
        curl(socket, "POST", "/v1/domains", &args)
    }
}

#[test]
fn an_operator_cannot_name_host_files_or_devices_and_root_can() {
    let s = Setup::new();
    let sock = &s.daemon.socket;
    let images = s.images.display().to_string();
    let secret = s.secret.join("secret.key").display().to_string();
    std::fs::write(s.images.join("ok.raw"), vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink(&secret, s.images.join("evil.raw")).unwrap();
    let roots = format!("(images: {images})");
    // A qcow2 whose external data file lies inside the root: QEMU would open that name
    // relative to its own working directory, so no check can follow it.
    let data_img = format!("{images}/data.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={images}/data.raw"),
        &data_img,
        "1M",
    ]);
    // name, definition, the refused field, and what the refusal says.
    let cases: Vec<(&str, String, &str, String)> = vec![
        (
            "data-file",
            guest_xml("data-file", "", &disk(&data_img, "vda", "qcow2")),
            "devices.disks[0].source.file",
            format!("names an external data file ({images}/data.raw)"),
        ),
        (
            "disk-secret",
            guest_xml(
                "disk-secret",
                "",
                &format!("{}{}", disk(&format!("{images}/ok.raw"), "vda", "raw"), disk(&secret, "vdb", "raw")),
            ),
            "devices.disks[1].source.file",
            format!("{secret} is outside the storage roots {roots}"),
        ),
        (
            "serial-cron",
            guest_xml(
                "serial-cron",
                "",
                "<serial type='file'><source path='/etc/cron.d/novacron-test-x'/><target port='0'/></serial>",
            ),
            "devices.serials[0].source.path",
            format!("/etc/cron.d/novacron-test-x is outside the storage roots {roots}"),
        ),
        (
            "unix-sock",
            guest_xml(
                "unix-sock",
                "",
                "<serial type='unix'><source mode='bind' path='/run/novacron-test-x.sock'/><target port='0'/></serial>",
            ),
            "devices.serials[0].source.path",
            format!("/run/novacron-test-x.sock is outside the storage roots {roots}"),
        ),
        (
            "block-dev",
            guest_xml(
                "block-dev",
                "",
                "<disk type='block' device='disk'><driver name='qemu' type='raw'/>\
                 <source dev='/dev/sda'/><target dev='vda' bus='virtio'/></disk>",
            ),
            "devices.disks[0].source.dev",
            "/dev/sda: host block devices are for admins only".to_owned(),
        ),
        (
            "hostdev",
            guest_xml(
                "hostdev",
                "",
                "<hostdev mode='subsystem' type='pci' managed='yes'><source>\
                 <address domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/></source></hostdev>",
            ),
            "devices.hostdevs[0].source",
            "0000:00:1f.0: host PCI devices are for admins only".to_owned(),
        ),
        (
            "kernel-out",
            guest_xml("kernel-out", "<kernel>/boot/novacron-test-vmlinuz</kernel>", ""),
            "os.kernel.kernel",
            format!("/boot/novacron-test-vmlinuz is outside the storage roots {roots}"),
        ),
        (
            "dotdot",
            guest_xml(
                "dotdot",
                "",
                &disk(&format!("{images}/../../secret/secret.key"), "vda", "raw"),
            ),
            "devices.disks[0].source.file",
            "contains '..'".to_owned(),
        ),
        (
            "symlink-out",
            guest_xml("symlink-out", "", &disk(&format!("{images}/evil.raw"), "vda", "raw")),
            "devices.disks[0].source.file",
            format!("{images}/evil.raw resolves outside the storage root images"),
        ),
        (
            "rng-disk",
            guest_xml(
                "rng-disk",
                "",
                "<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>",
            ),
            "devices.rngs[0].backend",
            "/dev/sda: entropy sources other than".to_owned(),
        ),
        (
            "spice-public",
            guest_xml(
                "spice-public",
                "",
                "<graphics type='spice' autoport='yes' listen='0.0.0.0'/>",
            ),
            "devices.graphics.listen",
            "0.0.0.0: listening beyond loopback opens the guest's console".to_owned(),
        ),
        (
            "vnc-public",
            guest_xml(
                "vnc-public",
                "",
                "<graphics type='vnc' port='5977' autoport='no' listen='::'/>",
            ),
            "devices.graphics.listen",
            ":: listening beyond loopback".to_owned(),
        ),
    ];
    for (name, xml, field, why) in &cases {
        let r = define(sock, xml, true);
        assert_eq!(r.status, 403, "{name}: {r:?}");
        assert_eq!(r.error_code(), "forbidden", "{name}: {r:?}");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            msg.contains(&format!("{field}: ")),
            "{name}: field not named: {msg}"
        );
        assert!(msg.contains(why.as_str()), "{name}: {msg}\nwanted: {why}");
        // The same field as an entry of `details`, for a UI to mark.
        let details = r.json()["error"]["details"].clone();
        assert!(
            details
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["path"] == *field
                    && d["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(why.as_str())))),
            "{name}: {details}"
        );
        let audited = s
            .audited("define", name, "forbidden")
            .unwrap_or_else(|| panic!("{name}: no audit line for the refusal: {:#?}", s.audit()));
        assert!(audited["error"]
            .as_str()
            .unwrap_or_default()
            .contains(field));
        assert_eq!(audited["actor"]["role"], "operator", "{audited}");
        assert_eq!(
            curl(sock, "GET", &format!("/v1/domains/{name}"), &[]).status,
            404
        );
        assert!(!s
            .env
            .config
            .state_dir
            .join(format!("domains/{name}.xml"))
            .exists());
    }
    // All violations are listed at once.
    let both = guest_xml(
        "both",
        "<kernel>/boot/x</kernel>",
        &disk(&secret, "vda", "raw"),
    );
    let msg = define(sock, &both, true).body;
    assert!(
        msg.contains("os.kernel.kernel: /boot/x") && msg.contains("devices.disks[0].source.file"),
        "{msg}"
    );
    // The file named was never touched.
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOP SECRET");
    assert!(!Path::new("/etc/cron.d/novacron-test-x").exists());
    // Root (admin) may define every one of them.
    for (name, xml, _, _) in &cases {
        let r = define(sock, xml, false);
        assert!(r.status == 200 || r.status == 201, "{name}: {r:?}");
    }
    // An operator may still define what stays inside the roots, and a console on loopback.
    let r = define(
        sock,
        &guest_xml(
            "fine",
            "",
            &format!(
                "{}<graphics type='spice' autoport='yes' listen='127.0.0.1'/>",
                disk(&format!("{images}/ok.raw"), "vda", "raw")
            ),
        ),
        true,
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    assert!(s.audited("define", "fine", "ok").is_some());
}

fn qemu_img(args: &[&str]) {
    let out = run(Command::new("qemu-img").args(args));
    assert!(out.status.success(), "{out:?}");
}

fn wait_state(socket: &Path, name: &str, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
        if r.status == 200 && r.json()["state"] == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never {state}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_operators_guest_inside_the_roots_starts_and_qemu_gets_only_descriptors() {
    let s = Setup::new();
    let sock = &s.daemon.socket;
    let images = s.images.display().to_string();
    std::fs::write(s.images.join("a.raw"), vec![0u8; 1 << 20]).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        &format!("{images}/base.qcow2"),
        "1M",
    ]);
    // A relative backing name: it resolves against the image's directory, which QEMU cannot
    // know for /dev/fdset/N, so the daemon passes the chain itself.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "base.qcow2",
        &format!("{images}/b.qcow2"),
    ]);
    std::fs::write(s.images.join("cd.iso"), vec![0u8; 1 << 20]).unwrap();
    let devices = format!(
        "{}{}<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
         <source file='{images}/cd.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
         <serial type='file'><source path='{images}/serial.out'/><target port='0'/></serial>",
        disk(&format!("{images}/a.raw"), "vda", "raw"),
        disk(&format!("{images}/b.qcow2"), "vdb", "qcow2"),
    );
    let r = define(sock, &guest_xml("inroot", "", &devices), true);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = curl_op(sock, "POST", "/v1/domains/inroot/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(sock, "inroot", "running");
    let pid = recorded_pid(&s.env, "inroot");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("filename=/dev/fdset/"), "{cmdline}");
    assert!(cmdline.contains("-add-fd"), "{cmdline}");
    assert!(
        !cmdline.contains(&images),
        "QEMU was given a path, not a descriptor: {cmdline}"
    );
    // QEMU holds the very files: its descriptors point at the images.
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect();
    for f in ["a.raw", "b.qcow2", "base.qcow2", "cd.iso", "serial.out"] {
        assert!(
            held.contains(&s.images.join(f)),
            "{f} not held by QEMU: {held:?}"
        );
    }
    assert_eq!(
        curl(sock, "POST", "/v1/domains/inroot/destroy", &[]).status,
        200
    );
}

#[test]
fn a_symlink_swapped_in_after_define_is_refused_at_start_and_autostart() {
    let s = Setup::new();
    let sock = &s.daemon.socket;
    let images = s.images.display().to_string();
    let secret = s.secret.join("secret.key");
    let swap = s.images.join("swap.raw");
    std::fs::write(&swap, vec![0u8; 1 << 20]).unwrap();
    let r = define(
        sock,
        &guest_xml(
            "swap",
            "",
            &disk(&format!("{images}/swap.raw"), "vda", "raw"),
        ),
        true,
    );
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = curl_op(
        sock,
        "PUT",
        "/v1/domains/swap/autostart",
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"enabled\":true}",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    std::fs::remove_file(&swap).unwrap();
    std::os::unix::fs::symlink(&secret, &swap).unwrap();

    let r = curl_op(sock, "POST", "/v1/domains/swap/start", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("devices.disks[0].source.file")
            && msg.contains("resolves outside the storage root images"),
        "{msg}"
    );
    // Root starting it does not lend its rights to the operator's definition.
    let r = curl(sock, "POST", "/v1/domains/swap/start", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("redefine"), "{r:?}");
    wait_state(sock, "swap", "shutoff");
    assert!(
        s.audited("start", "swap", "forbidden").is_some(),
        "{:#?}",
        s.audit()
    );
    assert!(!s.env.record("swap").exists());

    // Autostart (the daemon itself, after a host boot) is held to the same rule.
    let Setup { env, daemon, .. } = s;
    drop(daemon);
    let _ = std::fs::remove_file(env.config.run_dir.join("autostarted"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let svc = env.open().await;
        assert!(svc.autostart("swap"));
        let exec = novacrond::ops::Executor::new(svc.clone());
        assert!(novacrond::ops::autostart::run(&exec).await.is_empty());
        assert_eq!(
            svc.get("swap").unwrap().summary.state,
            novacron_domain::DomainState::Shutoff
        );
    });
    let lines = std::fs::read_to_string(env.config.log_dir.join("audit.log")).unwrap();
    assert!(
        lines.lines().any(|l| l.contains("\"via\":\"daemon\"")
            && l.contains("\"op\":\"start\"")
            && l.contains("\"domain\":\"swap\"")
            && l.contains("\"result\":\"forbidden\"")),
        "{lines}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOP SECRET");
}

/// A definition written before the trust mark existed is held to the roots; root redefining
/// it accepts it under admin rules.
#[test]
fn definitions_without_the_admin_mark_are_restricted_until_an_admin_redefines_them() {
    ensure_operator();
    let env = Env::new();
    let outside = env.dir.path().join("outside.raw");
    std::fs::write(&outside, vec![0u8; 1 << 20]).unwrap();
    let xml = guest_xml(
        "legacy",
        "",
        &disk(&outside.display().to_string(), "vda", "raw"),
    );
    let domains = env.config.state_dir.join("domains");
    std::fs::create_dir_all(&domains).unwrap();
    std::fs::write(domains.join("legacy.xml"), &xml).unwrap();
    let daemon = env.start_daemon("");
    let sock = &daemon.socket;
    let r = curl(sock, "POST", "/v1/domains/legacy/start", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("an admin may redefine it"), "{r:?}");
    let r = define(sock, &xml, false);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let saved = std::fs::read_to_string(domains.join("legacy.xml")).unwrap();
    assert!(
        saved.starts_with("<!-- novacron: accepted under admin rules -->"),
        "{saved}"
    );
    let r = curl(sock, "POST", "/v1/domains/legacy/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(sock, "legacy", "running");
    assert_eq!(
        curl(sock, "POST", "/v1/domains/legacy/destroy", &[]).status,
        200
    );
}

/// QEMU as an unprivileged user boots a kernel and initrd that only root can read (the test
/// guest's, in root's 0700 cache) and uses a qcow2 disk in a 0700 directory: the daemon opens
/// them and passes descriptors (the boot images as memfd copies).
#[tokio::test]
async fn unprivileged_qemu_uses_root_only_files_through_descriptors() {
    ensure_operator();
    let mut env = Env::new();
    env.config.qemu_user = Some("nobody".into());
    let private = env.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let img = private.join("data.qcow2");
    let base = private.join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "base.raw",
        img.to_str().unwrap(),
    ]);
    let guest = novacron_tests::test_guest().unwrap();
    let mut config = common::linux("unpriv-fd", "");
    config.virt_type = novacron_domain::model::VirtType::Qemu;
    config.cpu = None;
    // Root-only copies (0600 in a 0700 directory): QEMU's user cannot open them by name.
    let (kernel, initrd) = (private.join("vmlinuz"), private.join("initrd.img"));
    for (src, dst) in [(&guest.kernel, &kernel), (&guest.initrd, &initrd)] {
        std::fs::copy(src, dst).unwrap();
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let k = config.os.kernel.as_mut().expect("direct kernel boot");
    k.kernel = kernel.display().to_string();
    k.initrd = Some(initrd.display().to_string());
    let readable = run(Command::new("runuser")
        .args(["-u", "nobody", "--", "test", "-r"])
        .arg(&kernel));
    assert!(
        !readable.status.success(),
        "nobody can read {}",
        kernel.display()
    );
    config.devices.disks.push(
        novacron_domain::DomainConfig::from_xml(&guest_xml(
            "x",
            "",
            &disk(img.to_str().unwrap(), "vda", "qcow2"),
        ))
        .unwrap()
        .devices
        .disks
        .remove(0),
    );
    let svc = env.open().await;
    svc.define(config).await.unwrap();
    svc.start("unpriv-fd").await.unwrap();
    let pid = recorded_pid(&env, "unpriv-fd");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace()
                .skip(1)
                .all(|u| u == nobody.uid.to_string())),
        "{status}"
    );
    common::wait_file(
        &env.serial_log("unpriv-fd"),
        "NOVACRON-TEST-GUEST-READY",
        1,
        Duration::from_secs(120),
    )
    .await;
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(cmdline.contains("-kernel /proc/self/fd/"), "{cmdline}");
    assert!(
        !cmdline.contains(&private.display().to_string()),
        "{cmdline}"
    );
    svc.destroy("unpriv-fd").await.unwrap();
}

/// UEFI-style pflash (read-only code, writable variable store) inside the roots: QEMU takes
/// both from fd sets. The "firmware" is 2 MiB of `hlt`, so the vCPU simply halts.
#[test]
fn an_operators_pflash_firmware_and_nvram_go_through_fd_sets() {
    let s = Setup::new();
    let sock = &s.daemon.socket;
    let images = s.images.display().to_string();
    std::fs::write(s.images.join("code.fd"), vec![0xf4u8; 2 << 20]).unwrap();
    std::fs::write(s.images.join("vars.fd"), vec![0u8; 128 << 10]).unwrap();
    let os = format!(
        "<loader readonly='yes' type='pflash'>{images}/code.fd</loader>\
         <nvram>{images}/vars.fd</nvram>"
    );
    let r = define(sock, &guest_xml("fw", &os, ""), true);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = curl_op(sock, "POST", "/v1/domains/fw/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let pid = recorded_pid(&s.env, "fw");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(!cmdline.contains(&images), "{cmdline}");
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect();
    for f in ["code.fd", "vars.fd"] {
        assert!(held.contains(&s.images.join(f)), "{f} not held: {held:?}");
    }
    assert_eq!(
        curl(sock, "POST", "/v1/domains/fw/destroy", &[]).status,
        200
    );
}
