//! The service driving real QEMU, in-process: the whole lifecycle.

mod common;

use std::time::Duration;

use common::*;
use novacron_domain::{DomainState, ErrorCode};
use novacrond::service::events::{EventKind, StateReason};
use novacrond::ShutdownOptions;

fn state_is(to: DomainState) -> impl Fn(&novacrond::service::events::DomainEvent) -> bool {
    move |e| matches!(&e.kind, EventKind::StateChanged { to: t, .. } if *t == to)
}

#[tokio::test]
async fn osless_guest_full_lifecycle() {
    let env = Env::new();
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    let summary = svc.define(osless("bios1")).await.unwrap();
    assert_eq!(summary.state, DomainState::Shutoff);
    assert!(summary.uuid.is_some(), "define assigns a uuid");
    assert!(env.config.state_dir.join("domains/bios1.xml").exists());

    svc.start("bios1").await.unwrap();
    wait_event(
        &mut events,
        "bios1",
        Duration::from_secs(5),
        state_is(DomainState::Running),
    )
    .await;
    let pid = recorded_pid(&env, "bios1");
    assert!(pid_alive(pid));
    // QEMU is detached: its own session, stdin from /dev/null, output to the log.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "QEMU must lead its own session");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0"))
            .unwrap()
            .to_str(),
        Some("/dev/null")
    );
    let out = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    assert!(out.ends_with("qemu/bios1.log"), "{out:?}");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("guest=bios1,debug-threads=on"));
    assert!(cmdline.contains("-sandbox"));

    svc.suspend("bios1").await.unwrap();
    assert_eq!(svc.get("bios1").unwrap().summary.state, DomainState::Paused);
    // Wrong-state calls are refused with the state named.
    let err = svc.suspend("bios1").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::WrongState);
    assert!(err.to_string().contains("paused"), "{err}");
    svc.resume("bios1").await.unwrap();
    assert_eq!(
        svc.get("bios1").unwrap().summary.state,
        DomainState::Running
    );
    svc.reset("bios1").await.unwrap();
    wait_event(&mut events, "bios1", Duration::from_secs(5), |e| {
        e.kind == EventKind::Reset
    })
    .await;

    // SeaBIOS without an OS ignores the power button: a graceful shutdown times out and the
    // guest keeps running; with force it is destroyed.
    let err = svc
        .shutdown(
            "bios1",
            ShutdownOptions {
                timeout: Some(Duration::from_millis(500)),
                force: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(
        svc.get("bios1").unwrap().summary.state,
        DomainState::Running
    );
    svc.shutdown(
        "bios1",
        ShutdownOptions {
            timeout: Some(Duration::from_millis(500)),
            force: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        svc.get("bios1").unwrap().summary.state,
        DomainState::Shutoff
    );
    assert!(!pid_alive(pid));
    assert!(!env.record("bios1").exists(), "runtime record removed");
    assert!(!env.socket("bios1").exists(), "QMP socket removed");

    // Start again, then destroy.
    svc.start("bios1").await.unwrap();
    let pid2 = recorded_pid(&env, "bios1");
    assert_ne!(pid, pid2);
    svc.destroy("bios1").await.unwrap();
    assert_eq!(
        svc.get("bios1").unwrap().summary.state,
        DomainState::Shutoff
    );
    assert!(!pid_alive(pid2));
    assert_eq!(
        svc.destroy("bios1").await.unwrap_err().code(),
        ErrorCode::WrongState
    );

    svc.undefine("bios1").await.unwrap();
    assert!(!env.config.state_dir.join("domains/bios1.xml").exists());
    assert_eq!(svc.get("bios1").unwrap_err().code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn linux_guest_boots_reboots_and_shuts_down_gracefully() {
    let env = Env::new();
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    svc.define(linux("lin1", "")).await.unwrap();
    svc.start("lin1").await.unwrap();
    let serial = env.serial_log("lin1");
    wait_file(
        &serial,
        "NOVACRON-TEST-GUEST-READY",
        1,
        Duration::from_secs(90),
    )
    .await;

    // Reboot: power button, then the daemon resets the same QEMU and the guest boots again.
    let pid = recorded_pid(&env, "lin1");
    svc.reboot("lin1").await.unwrap();
    wait_event(&mut events, "lin1", Duration::from_secs(60), |e| {
        e.kind == EventKind::Reset
    })
    .await;
    wait_file(
        &serial,
        "NOVACRON-TEST-GUEST-READY",
        2,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        recorded_pid(&env, "lin1"),
        pid,
        "reboot keeps the QEMU process"
    );
    assert_eq!(svc.get("lin1").unwrap().summary.state, DomainState::Running);

    // Graceful shutdown: the guest's acpid powers it off; the daemon sees it and cleans up.
    svc.shutdown(
        "lin1",
        ShutdownOptions {
            timeout: Some(Duration::from_secs(60)),
            force: false,
        },
    )
    .await
    .unwrap();
    let e = wait_event(
        &mut events,
        "lin1",
        Duration::from_secs(5),
        state_is(DomainState::Shutoff),
    )
    .await;
    assert!(
        matches!(
            &e.kind,
            EventKind::StateChanged {
                reason: StateReason::GuestShutdown,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!pid_alive(pid));
    assert!(!env.record("lin1").exists());
}

#[tokio::test]
async fn a_qemu_that_fails_to_start_reports_its_own_message_and_leaves_nothing() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("broken");
    // A disk image that does not exist: every QEMU refuses this.
    let disk = novacron_domain::DomainConfig::from_xml(
        "<domain type='qemu'><name>x</name><memory>65536</memory><vcpu>1</vcpu>
           <os><type>hvm</type></os>
           <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
             <source file='/nonexistent/novacron-missing.img'/><target dev='vda' bus='virtio'/></disk></devices>
         </domain>",
    )
    .unwrap();
    config.devices.disks = disk.devices.disks;
    svc.define(config).await.unwrap();
    let err = svc.start("broken").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("novacron-missing.img"),
        "QEMU's own message expected: {msg}"
    );
    assert_eq!(
        svc.get("broken").unwrap().summary.state,
        DomainState::Shutoff
    );
    assert!(!env.record("broken").exists());
    assert!(!env.socket("broken").exists());
    assert!(!env.config.run_dir.join("domains/broken.d").exists());
}

#[tokio::test]
async fn a_killed_qemu_is_seen_at_once_and_marked_crashed() {
    let env = Env::new();
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    svc.define(osless("victim")).await.unwrap();
    svc.start("victim").await.unwrap();
    let pid = recorded_pid(&env, "victim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // "At once" is an ordering, not a stopwatch: the daemon learns of the death from the
    // child's own exit (its wait status, below), not from a later poll of /proc, which could
    // only say "status unknown". The deadline is only there to end a hung test.
    let e = wait_event(
        &mut events,
        "victim",
        Duration::from_secs(60),
        state_is(DomainState::Crashed),
    )
    .await;
    // The detail is the child's wait status as the daemon saw it: killed by SIGKILL, from
    // running (not some other death, and not an exit code that happens to contain a 9).
    match &e.kind {
        EventKind::StateChanged {
            from,
            reason: StateReason::QemuDied(detail),
            ..
        } => {
            assert_eq!(detail, "signal: 9 (SIGKILL)", "{e:?}");
            assert_eq!(*from, DomainState::Running, "{e:?}");
        }
        other => panic!("not a QEMU death: {other:?}"),
    }
    assert!(!env.record("victim").exists());
    assert!(!env.socket("victim").exists());
    // A crashed domain can be started again.
    svc.start("victim").await.unwrap();
    svc.destroy("victim").await.unwrap();
}

#[tokio::test]
async fn transient_guests_vanish_when_they_stop_and_undefine_keeps_a_running_guest() {
    let env = Env::new();
    let svc = env.open().await;
    svc.create(osless("temp")).await.unwrap();
    assert_eq!(svc.get("temp").unwrap().summary.state, DomainState::Running);
    assert!(!env.config.state_dir.join("domains/temp.xml").exists());
    assert_eq!(
        svc.create(osless("temp")).await.unwrap_err().code(),
        ErrorCode::AlreadyExists
    );
    svc.destroy("temp").await.unwrap();
    assert_eq!(svc.get("temp").unwrap_err().code(), ErrorCode::NotFound);

    svc.define(osless("keep")).await.unwrap();
    svc.start("keep").await.unwrap();
    svc.undefine("keep").await.unwrap();
    assert_eq!(svc.get("keep").unwrap().summary.state, DomainState::Running);
    svc.destroy("keep").await.unwrap();
    assert_eq!(svc.get("keep").unwrap_err().code(), ErrorCode::NotFound);
}

/// The local service through the `Driver` trait, as the API layers and remote hosts see it.
#[tokio::test]
async fn the_service_is_a_driver() {
    use novacron_domain::Driver;
    let env = Env::new();
    let svc = env.open().await;
    let driver: &dyn Driver = &svc;
    assert_eq!(driver.name(), "qemu");
    let caps = driver.capabilities().await.unwrap();
    // Live migration to another novacrond works, so the driver says so.
    assert!(caps.define && caps.suspend && caps.reboot && caps.migrate);
    driver
        .define(osless("drv").validate().unwrap())
        .await
        .unwrap();
    driver.start("drv").await.unwrap();
    assert_eq!(driver.list().await.unwrap()[0].state, DomainState::Running);
    // A destination that is no novacrond URL is refused with a typed error; the guest stays.
    let target = novacron_domain::MigrationTarget {
        uri: "tcp:127.0.0.1:1".into(),
        live: true,
        timeout: None,
    };
    assert_eq!(
        driver.migrate("drv", &target).await.unwrap_err().code(),
        ErrorCode::InvalidConfig
    );
    assert_eq!(driver.list().await.unwrap()[0].state, DomainState::Running);
    driver.destroy("drv").await.unwrap();
    // Through the audited executor, as the daemon (no face asked).
    let ops = audited(&env, |op| ["define", "start", "destroy"].contains(&op));
    let daemon = |op: &str| {
        (
            op.to_owned(),
            "drv".to_owned(),
            "ok".to_owned(),
            "daemon".to_owned(),
        )
    };
    assert_eq!(ops, [daemon("define"), daemon("start"), daemon("destroy")]);
}

/// With `qemu_user`, QEMU runs as that user and still works: its monitor socket and serial log
/// are descriptors the daemon handed over, so it needs no access to the daemon's directories.
#[tokio::test]
async fn qemu_runs_as_the_configured_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (the project's test command runs as root)"
    );
    let mut env = Env::new();
    env.config.qemu_user = Some("nobody".into());
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    // The kernel and initrd must be readable by nobody: copy them out of root's cache.
    let public = env.dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    for d in [env.dir.path(), public.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let guest = novacron_tests::test_guest().unwrap();
    let mut config = linux("unpriv", "");
    // TCG: /dev/kvm is root-only on this host (real hosts give the QEMU user the kvm group).
    config.virt_type = novacron_domain::model::VirtType::Qemu;
    config.cpu = None;
    for (src, dst) in [(&guest.kernel, "vmlinuz"), (&guest.initrd, "initrd.img")] {
        let to = public.join(dst);
        std::fs::copy(src, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let kernel = config.os.kernel.as_mut().expect("direct kernel boot");
    kernel.kernel = public.join("vmlinuz").display().to_string();
    kernel.initrd = Some(public.join("initrd.img").display().to_string());

    let kvm = std::path::Path::new("/dev/kvm");
    let kvm_before = novacrond::host::acl::read(kvm)
        .ok()
        .and_then(|a| a.user(nobody.uid.as_raw()));
    let svc = env.open().await;
    svc.define(config).await.unwrap();
    svc.start("unpriv").await.unwrap();
    let pid = recorded_pid(&env, "unpriv");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |field: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert!(
        ids("Uid:").iter().all(|&u| u == nobody.uid.as_raw()),
        "{status}"
    );
    assert!(
        ids("Gid:").iter().all(|&g| g == nobody.gid.as_raw()),
        "{status}"
    );
    // The serial log (opened by the daemon) receives the guest's console.
    wait_file(
        &env.serial_log("unpriv"),
        "NOVACRON-TEST-GUEST-READY",
        1,
        Duration::from_secs(90),
    )
    .await;
    // The monitor (bound by the daemon) works.
    svc.suspend("unpriv").await.unwrap();
    svc.resume("unpriv").await.unwrap();
    svc.destroy("unpriv").await.unwrap();
    assert!(!pid_alive(pid));
    drop(svc);
    // The daemon gave nobody an ACL entry on /dev/kvm: not one to leave on the host.
    if kvm_before.is_none() {
        let _ = novacrond::host::acl::revoke_user(kvm, nobody.uid.as_raw());
    }
}

/// A caller that stops waiting (a client that disconnects) does not cut a start in half:
/// the start completes, and the guest is fully managed.
#[tokio::test]
async fn a_start_whose_caller_gives_up_still_completes() {
    use novacrond::ops::lifecycle::{Kind, Lifecycle};
    use novacrond::ops::{Executor, Target};
    use novacrond::service::audit::Actor;
    let env = Env::new();
    let svc = env.open().await;
    svc.define(osless("dropped")).await.unwrap();
    // Give up once the start is under way (the domain is Starting: QEMU is being spawned),
    // not after a fixed time: under load the caller's future may not even have reached the
    // start within one.
    let exec = Executor::new(svc.clone());
    let mut run = Box::pin(exec.run(
        Actor::daemon(),
        Target::Local,
        Lifecycle::new(Kind::Start, "dropped"),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            biased;
            r = &mut run => panic!("the start ended before its caller gave up: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        if svc.get("dropped").unwrap().summary.state == DomainState::Starting {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the start never began"
        );
    }
    drop(run);
    let mut state = DomainState::Starting;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        state = svc.get("dropped").unwrap().summary.state;
        if state != DomainState::Starting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, DomainState::Running);
    let pid = recorded_pid(&env, "dropped");
    svc.destroy("dropped").await.unwrap();
    assert!(!pid_alive(pid));
}

/// Two daemons on one run directory would adopt the same guests: the second refuses.
#[tokio::test]
async fn a_second_daemon_on_the_same_directories_refuses_to_start() {
    let env = Env::new();
    let first = env.open().await;
    let err = match novacrond::Service::open(env.config.clone()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a second service opened the same run directory"),
    };
    assert!(err.contains("another novacrond already manages"), "{err}");
    drop(first);
    // Released with the first.
    let _again = env.open().await;
}

/// A guest asking for more than the host (or this QEMU) can give is refused before QEMU
/// starts, with the reasons.
#[tokio::test]
async fn an_impossible_guest_is_refused_before_qemu_starts() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("huge");
    config.vcpu.count = 1000;
    config.memory.memory_kib = 8 << 30; // 8 TiB
    if let Some(current) = config.memory.current_kib.as_mut() {
        *current = 8 << 30;
    }
    svc.define(config).await.unwrap();
    let err = svc.start("huge").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("does not fit this host"), "{msg}");
    assert!(msg.contains("1000"), "the vCPU count must be named: {msg}");
    assert!(
        msg.to_lowercase().contains("memory"),
        "the memory must be named: {msg}"
    );
    assert_eq!(svc.get("huge").unwrap().summary.state, DomainState::Shutoff);
    assert!(!env.record("huge").exists());
    let left = std::process::Command::new("pgrep")
        .args(["-f", "guest=huge,"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "QEMU was started");
}

/// File-backed RAM in a configured `memory_backing_dir`: QEMU maps the guest's named file
/// there (one prepared beforehand is what the guest's RAM holds), and stopping the guest
/// removes its memory directory.
#[tokio::test]
async fn file_backed_ram_lives_in_the_memory_backing_dir() {
    let mut env = Env::new();
    let ram = env.dir.path().join("ram");
    env.config.memory_backing_dir = Some(ram.clone());
    let svc = env.open().await;
    let mut config = osless("filemem");
    config.memory_backing = Some(novacron_domain::model::MemoryBacking {
        source: Some(novacron_domain::model::MemorySource::File),
        ..Default::default()
    });
    svc.define(config).await.unwrap();
    // 64 MiB, as the guest has, with a marker 2 MiB in (RAM SeaBIOS leaves alone).
    let file = ram.join("filemem").join("pc.ram");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut image = vec![0u8; 64 << 20];
    image[2 << 20..(2 << 20) + 8].copy_from_slice(b"NOVACRON");
    std::fs::write(&file, &image).unwrap();
    // Prepared here by root, the file must belong to the user QEMU runs as (the default,
    // novacron-qemu), as a file QEMU creates itself does.
    if let Some(user) = &env.config.qemu_user {
        let user = nix::unistd::User::from_name(user)
            .unwrap()
            .expect("QEMU user");
        nix::unistd::chown(&file, Some(user.uid), Some(user.gid)).unwrap();
    }

    svc.start("filemem").await.unwrap();
    let pid = recorded_pid(&env, "filemem");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.lines()
            .any(|l| l.ends_with(file.to_str().unwrap()) && l.contains(" rw-p ")),
        "the RAM file is not mapped privately:\n{maps}"
    );
    let seen = svc
        .qmp_passthrough(
            "filemem",
            "human-monitor-command",
            Some(&serde_json::json!({"command-line": "xp /1xg 0x200000"})),
        )
        .await
        .unwrap();
    let want = format!("{:#018x}", u64::from_le_bytes(*b"NOVACRON"));
    assert!(
        seen.as_str().unwrap_or_default().contains(&want),
        "guest RAM at 2 MiB is {seen}, not the file's {want}"
    );

    svc.destroy("filemem").await.unwrap();
    assert!(
        !ram.join("filemem").exists(),
        "the guest's memory directory outlived it"
    );
}

/// `<memtune>` limits live in a per-guest cgroup: with `[cgroups]` off (the default) a start
/// is refused, saying so, rather than run the guest without its limits.
#[tokio::test]
async fn memtune_without_cgroups_is_refused_before_qemu_starts() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("limited");
    config.memtune = Some(novacron_domain::model::MemTune {
        hard_limit_kib: Some(1 << 20),
        soft_limit_kib: None,
    });
    svc.define(config).await.unwrap();
    let err = svc.start("limited").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(err.to_string().contains("[cgroups]"), "{err}");
    assert_eq!(
        svc.get("limited").unwrap().summary.state,
        DomainState::Shutoff
    );
    assert!(!env.record("limited").exists());
}
