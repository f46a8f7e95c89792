//! Boots the real test guest (and an OS-less VM) in QEMU and exercises the
//! test bed: ready line, heartbeats, ACPI powerdown, dirty-memory mode.
//!
//! At most two guests run at once (the two test-guest tests); under TCG each
//! reaches its ready line in 4-7 s.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_tests::{
    QemuBuilder, QemuProcess, DIRTY_READY_MARKER, HEARTBEAT_MARKER, READY_MARKER,
};
use serde_json::{json, Value};

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Minimal blocking QMP exchange: greeting, `qmp_capabilities`, `command`;
/// returns the command's `return` value (events are skipped).
fn qmp_execute(socket: &Path, command: &str) -> Result<Value> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to QMP at {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).context("no QMP greeting")?;
    for cmd in ["qmp_capabilities", command] {
        writeln!(writer, "{}", json!({ "execute": cmd }))?;
        loop {
            line.clear();
            if reader.read_line(&mut line).context("reading QMP reply")? == 0 {
                bail!("QMP connection closed while waiting for the reply to {cmd}");
            }
            let msg: Value =
                serde_json::from_str(&line).with_context(|| format!("bad QMP message {line:?}"))?;
            if let Some(err) = msg.get("error") {
                bail!("QMP {cmd} failed: {err}");
            }
            if let Some(ret) = msg.get("return") {
                if cmd == command {
                    return Ok(ret.clone());
                }
                break;
            }
        }
    }
    unreachable!("the loop returns after the last command")
}

async fn qmp(socket: PathBuf, command: &'static str) -> Result<Value> {
    tokio::task::spawn_blocking(move || qmp_execute(&socket, command)).await?
}

async fn spawn(builder: QemuBuilder) -> Result<QemuProcess> {
    let qemu = tokio::task::spawn_blocking(move || builder.spawn()).await??;
    eprintln!("accelerator: {} (pid {})", qemu.accel(), qemu.pid());
    Ok(qemu)
}

#[tokio::test]
async fn test_guest_boots_heartbeats_and_powers_down() -> Result<()> {
    let start = Instant::now();
    let mut qemu = spawn(QemuBuilder::test_guest()).await?;
    qemu.wait_serial_async(READY_MARKER, BOOT_TIMEOUT).await?;
    eprintln!("ready after {:.1}s", start.elapsed().as_secs_f64());
    qemu.wait_serial_async(&format!("{HEARTBEAT_MARKER} 2"), Duration::from_secs(15))
        .await?;

    qmp(qemu.qmp_socket().to_owned(), "system_powerdown").await?;
    let status = qemu.wait_exit_async(Duration::from_secs(30)).await?;
    assert!(
        status.success(),
        "QEMU exited with {status} after system_powerdown\n{}",
        qemu.diagnostics()
    );
    eprintln!("powered off after {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::test]
async fn test_guest_dirty_memory_mode() -> Result<()> {
    let start = Instant::now();
    let mut qemu = spawn(
        QemuBuilder::test_guest()
            .kernel_cmdline_extra("novacron.dirty_mib=32 novacron.dirty_rate=4"),
    )
    .await?;
    qemu.wait_serial_async(&format!("{DIRTY_READY_MARKER} 32"), BOOT_TIMEOUT)
        .await?;
    eprintln!(
        "dirty fill done after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let status = qmp(qemu.qmp_socket().to_owned(), "query-status").await?;
    assert_eq!(status["status"], "running", "query-status: {status}");
    Ok(())
}

#[tokio::test]
async fn osless_guest_runs() -> Result<()> {
    let qemu = spawn(QemuBuilder::osless()).await?;
    let status = qmp(qemu.qmp_socket().to_owned(), "query-status").await?;
    assert_eq!(status["status"], "running", "query-status: {status}");
    Ok(())
}
