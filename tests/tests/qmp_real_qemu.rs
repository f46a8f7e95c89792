//! The QMP client against a real qemu-system-x86_64 started by each test.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Result;
use novacron_qmp::commands::{
    Cont, DeviceAdd, DeviceDel, HumanMonitorCommand, MigrateSetCapabilities, MigrateSetParameters,
    MigrationCapabilityStatus, QueryBlock, QueryCpusFast, QueryIothreads, QueryMigrate,
    QueryStatus, Quit, Stop, SystemPowerdown,
};
use novacron_qmp::qapi::{MigrationCapability, RunState, ShutdownCause};
use novacron_qmp::{Client, ClientOptions, CloseReason, Error, EventKind, Timeouts};
use novacron_tests::{QemuBuilder, QemuProcess};
use serde_json::json;

async fn spawn(builder: QemuBuilder) -> Result<QemuProcess> {
    let qemu = tokio::task::spawn_blocking(move || builder.spawn()).await??;
    eprintln!("qemu: accel={:?} pid={}", qemu.accel(), qemu.pid());
    Ok(qemu)
}

async fn connect(qemu: &QemuProcess) -> Client {
    Client::connect(qemu.qmp_socket())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", qemu.diagnostics()))
}

#[tokio::test]
async fn greeting_capabilities_and_query_status() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().paused()).await?;
    let qmp = connect(&qemu).await;
    let version = qmp.greeting().version.qemu;
    assert!(version.major >= 7, "unexpected QEMU version {version}");
    assert!(qmp.oob_enabled(), "QEMU offers oob; it must be negotiated");
    let status = qmp.execute(&QueryStatus).await?;
    assert_eq!(status.status, RunState::Prelaunch);
    assert!(!status.running);
    Ok(())
}

#[tokio::test]
async fn stop_and_cont_emit_stop_and_resume() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless()).await?;
    let qmp = connect(&qemu).await;
    let mut events = qmp.subscribe();
    qmp.execute(&Stop).await?;
    events
        .wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Stop)
        .await?;
    assert_eq!(qmp.execute(&QueryStatus).await?.status, RunState::Paused);
    qmp.execute(&Cont).await?;
    events
        .wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Resume)
        .await?;
    assert_eq!(qmp.execute(&QueryStatus).await?.status, RunState::Running);
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_commands_from_ten_tasks() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().paused().args(["-smp", "2"])).await?;
    let qmp = connect(&qemu).await;
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let qmp = qmp.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    match (t + i) % 3 {
                        0 => {
                            assert_eq!(qmp.execute(&QueryStatus).await?.status, RunState::Prelaunch)
                        }
                        1 => assert_eq!(qmp.execute(&QueryCpusFast).await?.len(), 2),
                        _ => {
                            let name = qmp.execute_raw("query-name", None).await?;
                            assert_eq!(name, json!({}));
                        }
                    }
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[tokio::test]
async fn a_stopped_qemu_does_not_block_another_connection() -> Result<()> {
    let hung = spawn(QemuBuilder::osless().paused()).await?;
    let healthy = spawn(QemuBuilder::osless().paused()).await?;
    // The stopped QEMU's query times out only after the healthy one has answered 50 times on
    // any machine: the check below is an ordering, not a stopwatch.
    let options = ClientOptions {
        timeouts: Timeouts::default().with_query(Duration::from_secs(5)),
        ..ClientOptions::default()
    };
    let hung_qmp = Client::connect_with(hung.qmp_socket(), options.clone()).await?;
    let healthy_qmp = Client::connect_with(healthy.qmp_socket(), options).await?;
    let pid = nix::unistd::Pid::from_raw(hung.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;

    let stuck = {
        let q = hung_qmp.clone();
        tokio::spawn(async move { q.execute(&QueryStatus).await })
    };
    // While that command hangs, the other QEMU answers, many times over.
    for _ in 0..50 {
        healthy_qmp.execute(&QueryStatus).await?;
    }
    assert!(
        !stuck.is_finished(),
        "the stopped QEMU's command ended before the healthy one answered 50 times"
    );
    assert!(matches!(stuck.await?, Err(Error::Timeout { .. })));

    // After SIGCONT the stale reply is discarded and the connection is usable again.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    let status = hung_qmp
        .execute_with_timeout(&QueryStatus, Duration::from_secs(5))
        .await?;
    assert_eq!(status.status, RunState::Prelaunch);
    Ok(())
}

#[tokio::test]
async fn quit_emits_shutdown_then_the_connection_closes() -> Result<()> {
    let mut qemu = spawn(QemuBuilder::osless()).await?;
    let qmp = connect(&qemu).await;
    let mut events = qmp.subscribe();
    qmp.execute(&Quit).await?;
    let event = events
        .wait_for(Duration::from_secs(5), |e| {
            matches!(e.kind, EventKind::Shutdown { .. })
        })
        .await?;
    assert_eq!(
        event.kind,
        EventKind::Shutdown {
            guest: false,
            reason: ShutdownCause::HostQmpQuit
        }
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), qmp.closed()).await?,
        CloseReason::PeerClosed
    );
    assert!(matches!(
        qmp.execute(&QueryStatus).await,
        Err(Error::Closed(CloseReason::PeerClosed))
    ));
    assert!(qemu
        .wait_exit_async(Duration::from_secs(5))
        .await?
        .success());
    Ok(())
}

#[tokio::test]
async fn thread_and_block_queries_describe_the_real_process() -> Result<()> {
    let qemu =
        spawn(
            QemuBuilder::osless()
                .paused()
                .args(["-smp", "2", "-object", "iothread,id=io1"]),
        )
        .await?;
    let qmp = connect(&qemu).await;
    let cpus = qmp.execute(&QueryCpusFast).await?;
    assert_eq!(cpus.len(), 2);
    for cpu in &cpus {
        let task = format!("/proc/{}/task/{}", qemu.pid(), cpu.thread_id);
        assert!(
            std::path::Path::new(&task).exists(),
            "{task} is not a QEMU thread"
        );
    }
    let iothreads = qmp.execute(&QueryIothreads).await?;
    assert_eq!(iothreads.len(), 1);
    assert_eq!(iothreads[0].id, "io1");
    assert!(qmp.execute(&QueryBlock).await?.is_empty());
    let migration = qmp.execute(&QueryMigrate).await?;
    assert!(migration.status.is_none() && migration.ram.is_none());
    let text = qmp
        .execute(&HumanMonitorCommand {
            command_line: "info version".into(),
            cpu_index: None,
        })
        .await?;
    assert!(
        text.contains(&qmp.greeting().version.qemu.to_string()),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn migration_settings_are_accepted() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().paused()).await?;
    let qmp = connect(&qemu).await;
    qmp.execute(&MigrateSetCapabilities {
        capabilities: vec![
            MigrationCapabilityStatus {
                capability: MigrationCapability::AutoConverge,
                state: true,
            },
            MigrationCapabilityStatus {
                capability: MigrationCapability::Events,
                state: true,
            },
        ],
    })
    .await?;
    qmp.execute(&MigrateSetParameters {
        max_bandwidth: Some(64 << 20),
        downtime_limit: Some(500),
        ..MigrateSetParameters::default()
    })
    .await?;
    let params = qmp.execute_raw("query-migrate-parameters", None).await?;
    assert_eq!(params["max-bandwidth"], json!(64 << 20));
    assert_eq!(params["downtime-limit"], json!(500));
    let caps = qmp.execute_raw("query-migrate-capabilities", None).await?;
    let on: Vec<_> = caps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == json!(true))
        .map(|c| c["capability"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(on.contains(&"auto-converge".to_owned()), "{caps}");
    Ok(())
}

#[tokio::test]
async fn hot_unplug_waits_for_device_deleted() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().args(["-device", "qemu-xhci,id=xhci"])).await?;
    let qmp = connect(&qemu).await;
    let mut props = serde_json::Map::new();
    props.insert("bus".into(), json!("xhci.0"));
    qmp.execute(&DeviceAdd {
        driver: "usb-kbd".into(),
        id: Some("kbd0".into()),
        bus: None,
        properties: props,
    })
    .await?;
    let (_, event) = qmp
        .execute_and_wait(
            &DeviceDel { id: "kbd0".into() },
            Duration::from_secs(5),
            |e| matches!(&e.kind, EventKind::DeviceDeleted { device: Some(d), .. } if d == "kbd0"),
        )
        .await?;
    assert_eq!(event.name(), "DEVICE_DELETED");
    // The id is free again: QEMU really removed the device.
    match qmp.execute(&DeviceDel { id: "kbd0".into() }).await {
        Err(Error::Qmp { error, .. }) => assert!(error.desc.contains("kbd0"), "{}", error.desc),
        other => panic!("second device_del must fail, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn file_descriptors_pass_over_scm_rights() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().paused()).await?;
    let qmp = connect(&qemu).await;
    let file = tempfile::tempfile()?;
    let info = qmp
        .add_fd(file.as_fd(), None, Some("novacron-test"))
        .await?;
    let fdsets = qmp.execute_raw("query-fdsets", None).await?;
    let set = fdsets
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["fdset-id"] == json!(info.fdset_id))
        .unwrap_or_else(|| panic!("fd set {} not listed: {fdsets}", info.fdset_id));
    assert_eq!(set["fds"][0]["fd"], json!(info.fd));
    assert_eq!(set["fds"][0]["opaque"], json!("novacron-test"));
    // The descriptor QEMU got is a real open file in QEMU's process.
    let link = std::fs::read_link(format!("/proc/{}/fd/{}", qemu.pid(), info.fd))?;
    assert!(link.to_string_lossy().contains("tmp"), "{link:?}");

    qmp.send_fd("novacron-fd", file.as_fd()).await?;
    // closefd succeeds only for a name QEMU holds.
    qmp.execute_raw("closefd", Some(&json!({"fdname": "novacron-fd"})))
        .await?;
    assert!(qmp
        .execute_raw("closefd", Some(&json!({"fdname": "novacron-fd"})))
        .await
        .is_err());
    Ok(())
}

/// A command QEMU 7.2 allows out of band; outside post-copy it fails, which still proves the
/// `exec-oob` path works end to end (an in-band-only command is refused with a different error).
#[derive(serde::Serialize)]
struct MigratePause;
impl novacron_qmp::commands::Command for MigratePause {
    const NAME: &'static str = "migrate-pause";
    type Output = novacron_qmp::commands::Empty;
}

#[derive(serde::Serialize)]
struct QueryName;
impl novacron_qmp::commands::Command for QueryName {
    const NAME: &'static str = "query-name";
    type Output = serde_json::Value;
}

#[tokio::test]
async fn out_of_band_execution() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless().paused()).await?;
    let qmp = connect(&qemu).await;
    let Err(Error::Qmp { error, .. }) = qmp.execute_oob(&MigratePause).await else {
        panic!("migrate-pause outside post-copy must fail");
    };
    assert!(error.desc.contains("postcopy"), "{}", error.desc);
    let Err(Error::Qmp { error, .. }) = qmp.execute_oob(&QueryName).await else {
        panic!("query-name is not allowed out of band");
    };
    assert!(error.desc.to_lowercase().contains("oob"), "{}", error.desc);
    Ok(())
}

#[tokio::test]
async fn test_guest_boots_and_powers_off_on_the_acpi_button() -> Result<()> {
    let mut qemu = spawn(QemuBuilder::test_guest()).await?;
    qemu.wait_serial_async("NOVACRON-TEST-GUEST-READY", Duration::from_secs(90))
        .await?;
    let qmp = connect(&qemu).await;
    let mut events = qmp.subscribe();
    qmp.execute(&SystemPowerdown).await?;
    events
        .wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Powerdown)
        .await?;
    let event = events
        .wait_for(Duration::from_secs(60), |e| {
            matches!(e.kind, EventKind::Shutdown { .. })
        })
        .await?;
    assert_eq!(
        event.kind,
        EventKind::Shutdown {
            guest: true,
            reason: ShutdownCause::GuestShutdown
        }
    );
    let status = qemu.wait_exit_async(Duration::from_secs(30)).await?;
    assert!(status.success(), "QEMU exited with {status}");
    Ok(())
}
