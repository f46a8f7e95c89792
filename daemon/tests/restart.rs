//! Surviving the daemon's own death: guests keep running, a restarted daemon takes them back.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use novacron_domain::{DomainState, ErrorCode};
use novacron_qmp::commands::QueryStatus;
use novacron_qmp::qapi::RunState;
use novacrond::service::events::EventKind;

fn write_config(env: &Env) -> std::path::PathBuf {
    env.write_config("")
}

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_novacrond"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn novacrond")
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until QEMU answers `query-status` on its monitor (then lets the connection go).
async fn qmp_answers(socket: &Path, within: Duration) -> RunState {
    let deadline = Instant::now() + within;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let qmp = novacron_qmp::Client::connect(socket).await.ok()?;
            qmp.execute(&QueryStatus).await.ok()
        })
        .await;
        if let Ok(Some(status)) = answer {
            return status.status;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU never answered on {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn qemu_status(socket: &Path) -> RunState {
    let qmp = novacron_qmp::Client::connect(socket).await.expect("QMP");
    qmp.execute(&QueryStatus)
        .await
        .expect("query-status")
        .status
}

#[tokio::test]
async fn kill_9_of_the_daemon_with_five_guests_then_restart() {
    let env = Env::new();
    let names: Vec<String> = (1..=5).map(|i| format!("surv{i}")).collect();
    {
        let svc = env.open().await;
        for n in &names {
            svc.define(osless(n)).await.unwrap();
            svc.set_autostart(n, true).await.unwrap();
        }
    }
    let config = write_config(&env);
    let log = env.dir.path().join("daemon.log");

    // First life: the daemon autostarts the five guests, then dies by SIGKILL.
    let mut daemon = spawn_daemon(&config, &log);
    wait_for(
        "the autostart of five guests",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("autostarted")
        },
    )
    .await;
    let pids: Vec<u32> = names.iter().map(|n| recorded_pid(&env, n)).collect();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    for (n, pid) in names.iter().zip(&pids) {
        assert!(pid_alive(*pid), "{n} died with the daemon");
        assert_eq!(qemu_status(&env.socket(n)).await, RunState::Running, "{n}");
    }

    // Second life: reconnects (no autostart again this boot), then leaves on SIGTERM; the
    // guests stay up.
    let mut daemon = spawn_daemon(&config, &log);
    wait_for(
        "the second daemon to be ready",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("novacrond ready")
                .count()
                == 2
        },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("running=5"),
        "second daemon must find 5 running guests:\n{text}"
    );
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().success());
    let after: Vec<u32> = names.iter().map(|n| recorded_pid(&env, n)).collect();
    assert_eq!(pids, after, "no guest was restarted or replaced");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    // Third life, in-process: every guest is found, verified and fully manageable.
    let started = Instant::now();
    let svc = env.open().await;
    println!("reopen with 5 running guests took {:?}", started.elapsed());
    for n in &names {
        assert_eq!(
            svc.get(n).unwrap().summary.state,
            DomainState::Running,
            "{n}"
        );
    }
    for n in &names {
        svc.suspend(n).await.unwrap();
        svc.resume(n).await.unwrap();
    }
    for n in &names {
        svc.destroy(n).await.unwrap();
    }
    assert!(pids.iter().all(|p| !pid_alive(*p)));
    assert!(names.iter().all(|n| !env.record(n).exists()));
}

#[tokio::test]
async fn a_guest_that_cannot_be_reconnected_is_reported_and_left_alone() {
    let env = Env::new();
    let config = write_config(&env);
    let log = env.dir.path().join("daemon.log");
    {
        let svc = env.open().await;
        svc.define(osless("mute")).await.unwrap();
        svc.set_autostart("mute", true).await.unwrap();
    }
    let mut daemon = spawn_daemon(&config, &log);
    wait_for("the runtime record", Duration::from_secs(30), || {
        env.record("mute").exists()
    })
    .await;
    let pid = recorded_pid(&env, "mute");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // A stopped QEMU never greets: the reconnect fails, and the guest must be left running.
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let svc = env.open().await;
    let (backlog, _) = svc.events().subscribe_after(Some(0));
    assert!(
        backlog.iter().any(|e| e.domain == "mute"
            && matches!(&e.kind, EventKind::ReconnectFailed { pid: p, .. } if *p == pid)),
        "{backlog:?}"
    );
    assert_eq!(svc.get("mute").unwrap().summary.state, DomainState::Running);
    let err = svc.suspend("mute").await.unwrap_err();
    assert!(err.to_string().contains("no QMP connection"), "{err}");
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    // Resumed, QEMU answers its monitor again (the daemon gave up its connection; the old
    // daemon was killed as soon as the record existed, so it may still be in prelaunch): it
    // was left alone, not killed.
    qmp_answers(&env.socket("mute"), Duration::from_secs(30)).await;
    assert!(pid_alive(pid), "an unreachable guest must never be killed");
    assert_eq!(svc.get("mute").unwrap().summary.state, DomainState::Running);
    assert!(env.record("mute").exists());
    // The operator can still pull the plug.
    svc.destroy("mute").await.unwrap();
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn corrupt_and_foreign_files_are_reported_skipped_and_kept() {
    let env = Env::new();
    {
        let svc = env.open().await;
        svc.define(osless("good")).await.unwrap();
    }
    let defs = env.config.state_dir.join("domains");
    let runs = env.config.run_dir.join("domains");
    std::fs::write(
        defs.join("broken.xml"),
        "<domain type='kvm'><name>broken</nam",
    )
    .unwrap();
    std::fs::write(defs.join("README.txt"), "not a definition").unwrap();
    std::fs::write(defs.join("other.xml"), osless("different-name").to_xml()).unwrap();
    std::fs::write(runs.join("ghost.json"), "{ not json").unwrap();
    // A record that points at a live process that is not QEMU: stale, and the process is not
    // ours to touch.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let mut record: serde_json::Value = serde_json::json!({
        "version": 1, "name": "good", "pid": sleeper.id(), "start_time": 1, "boot_id": "x",
        "qmp_socket": runs.join("good.qmp"), "argv": ["qemu-system-x86_64"],
        "config": serde_json::from_str::<serde_json::Value>(&osless("good").to_json()).unwrap(),
        "started_at_unix_ms": 0
    });
    record["config"]["uuid"] = serde_json::Value::Null;
    std::fs::write(runs.join("good.json"), record.to_string()).unwrap();

    let svc = env.open().await;
    let problems: Vec<String> = svc.problems().iter().map(|p| p.to_string()).collect();
    println!("{problems:#?}");
    for f in ["broken.xml", "README.txt", "other.xml", "ghost.json"] {
        assert!(
            problems.iter().any(|p| p.contains(f)),
            "{f} not reported: {problems:?}"
        );
    }
    for f in [
        defs.join("broken.xml"),
        defs.join("README.txt"),
        defs.join("other.xml"),
        runs.join("ghost.json"),
    ] {
        assert!(f.exists(), "{} was deleted", f.display());
    }
    assert_eq!(svc.list().len(), 1);
    assert_eq!(svc.get("good").unwrap().summary.state, DomainState::Shutoff);
    assert_eq!(svc.get("broken").unwrap_err().code(), ErrorCode::NotFound);
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "a foreign process was touched"
    );
    sleeper.kill().unwrap();
    let _ = sleeper.wait();
    // The daemon is fully usable.
    svc.start("good").await.unwrap();
    svc.destroy("good").await.unwrap();
}

/// A daemon that dies after writing a guest's record but before letting it run leaves QEMU in
/// prelaunch (-S); the next daemon finishes that start.
#[tokio::test]
async fn an_interrupted_start_is_finished_by_the_next_daemon() {
    use novacrond::qemu::procinfo;
    let env = Env::new();
    let record: serde_json::Value = {
        let svc = env.open().await;
        svc.define(osless("half")).await.unwrap();
        svc.start("half").await.unwrap();
        let record = std::fs::read_to_string(env.record("half")).unwrap();
        svc.destroy("half").await.unwrap();
        serde_json::from_str(&record).unwrap()
    };
    // What the dead daemon left: QEMU started with its argv (so with -S), and its record.
    let argv: Vec<String> = serde_json::from_value(record["argv"].clone()).unwrap();
    assert!(argv.iter().any(|a| a == "-S"));
    // The monitor socket, bound and handed over as fd 3, as the daemon does.
    let monitor = std::os::unix::net::UnixListener::bind(env.socket("half")).unwrap();
    let inherit = [novacrond::qemu::spawn::Inherited {
        fd: std::os::fd::AsFd::as_fd(&monitor),
        at: 3,
    }];
    let log = env.dir.path().join("half.log");
    let mut qemu = novacrond::qemu::spawn::spawn(&argv, &log, &inherit, None, false).unwrap();
    drop(monitor);
    let pid = qemu.pid;
    let mut left = record.clone();
    left["pid"] = pid.into();
    left["start_time"] = procinfo::start_time(pid).unwrap().into();
    left["boot_id"] = procinfo::boot_id().unwrap().into();
    std::fs::write(env.record("half"), left.to_string()).unwrap();
    // QEMU serves its monitor (still in prelaunch) before the next daemon comes.
    assert_eq!(
        qmp_answers(&env.socket("half"), Duration::from_secs(30)).await,
        RunState::Prelaunch
    );

    let svc = env.open().await;
    assert_eq!(svc.get("half").unwrap().summary.state, DomainState::Running);
    let status = svc
        .qmp_passthrough("half", "query-status", None)
        .await
        .unwrap();
    assert_eq!(status["status"], "running", "{status}");
    svc.destroy("half").await.unwrap();
    let _ = qemu.child.wait().await;
}
