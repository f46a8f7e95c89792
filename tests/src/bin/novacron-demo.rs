//! The quick start's main job until `novacrond` exists: boots the test guest, shows it over QMP
//! (version, status, vCPU threads, heartbeats from its serial console), then presses the ACPI
//! power button and reports the guest's clean shutdown.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use novacron_qmp::commands::{QueryCpusFast, QueryStatus, SystemPowerdown};
use novacron_qmp::{Client, EventKind};
use novacron_tests::{QemuBuilder, HEARTBEAT_MARKER, READY_MARKER};

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "novacron demo: building the test guest (once per machine) and probing the accelerator…"
    );
    let started = Instant::now();
    let mut qemu = tokio::task::spawn_blocking(|| QemuBuilder::test_guest().spawn())
        .await?
        .context("starting QEMU")?;
    println!(
        "QEMU pid {} started with {:?}; serial console: {}",
        qemu.pid(),
        qemu.accel(),
        qemu.serial_log().display()
    );
    qemu.wait_serial_async(READY_MARKER, Duration::from_secs(120))
        .await?;
    println!("guest ready after {:.1?}", started.elapsed());

    let qmp = Client::connect(qemu.qmp_socket()).await?;
    let greeting = qmp.greeting();
    println!(
        "QMP: QEMU {} ({}), oob {}",
        greeting.version.qemu,
        greeting.version.package,
        if qmp.oob_enabled() { "on" } else { "off" }
    );
    let status = qmp.execute(&QueryStatus).await?;
    println!("status: {} (running: {})", status.status, status.running);
    for cpu in qmp.execute(&QueryCpusFast).await? {
        println!(
            "vCPU {} runs on host thread {}",
            cpu.cpu_index, cpu.thread_id
        );
    }

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let beats = qemu.serial_text().matches(HEARTBEAT_MARKER).count();
    println!("guest heartbeats so far: {beats}");

    println!("pressing the ACPI power button (system_powerdown)…");
    let mut events = qmp.subscribe();
    qmp.execute(&SystemPowerdown).await?;
    let shutdown = events
        .wait_for(Duration::from_secs(60), |e| {
            matches!(e.kind, EventKind::Shutdown { .. })
        })
        .await?;
    println!("event {}: {}", shutdown.name(), shutdown.data);
    let exit = qemu.wait_exit_async(Duration::from_secs(30)).await?;
    println!("QEMU exited: {exit}");
    println!("\nnext: ./quickstart.sh test   (runs the whole test suite)");
    Ok(())
}
