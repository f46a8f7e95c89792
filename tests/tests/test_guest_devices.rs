//! Boots the test guest with what storage, network and agent tests need — a
//! virtio disk, a virtio NIC on QEMU's user network, the command shell and the
//! qemu-ga port — and checks each through the guest itself: the shell sees
//! `vda`, formats and mounts it; udhcpc gets slirp's lease; qemu-ga answers
//! and freezes/thaws the mounted file system, then powers the guest off. One
//! guest for all checks (TCG).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use novacron_tests::{
    GuestShell, QemuBuilder, QemuProcess, AGENT_SHUTDOWN_MARKER, DHCP_MARKER, READY_MARKER,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// One qemu-ga command over a fresh connection: `guest-sync` first (so a
/// stale reply can't be taken for ours), then `execute`; returns `return`.
async fn agent(socket: &Path, execute: &str, arguments: Value) -> Result<Value> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connect {}", socket.display()))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let id = std::process::id() as u64 * 1000 + 7;
    let sync = json!({"execute": "guest-sync", "arguments": {"id": id}});
    w.write_all(format!("{sync}\n").as_bytes()).await?;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("qemu-ga closed the channel during guest-sync");
        }
        let msg: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
        if msg["return"] == json!(id) {
            break;
        }
    }
    let cmd = json!({"execute": execute, "arguments": arguments});
    w.write_all(format!("{cmd}\n").as_bytes()).await?;
    line.clear();
    if r.read_line(&mut line).await? == 0 {
        bail!("qemu-ga closed the channel before answering {execute}");
    }
    let msg: Value = serde_json::from_str(line.trim()).with_context(|| format!("{line:?}"))?;
    match msg.get("return") {
        Some(v) => Ok(v.clone()),
        None => bail!("qemu-ga {execute}: {msg}"),
    }
}

async fn agent_within(socket: &Path, execute: &str, arguments: Value) -> Result<Value> {
    tokio::time::timeout(CMD_TIMEOUT, agent(socket, execute, arguments))
        .await
        .with_context(|| format!("qemu-ga {execute} unanswered within {CMD_TIMEOUT:?}"))?
}

#[tokio::test]
async fn test_guest_disk_dhcp_shell_and_agent() -> Result<()> {
    let disk = tempfile::NamedTempFile::new()?;
    disk.as_file().set_len(32 << 20)?;
    let drive = format!(
        "file={},if=none,id=d0,format=raw",
        novacron_tests::escape_opt(disk.path())
    );
    let builder = QemuBuilder::test_guest()
        .kernel_cmdline_extra("novacron.dhcp=1")
        .command_channel()
        .agent_channel()
        .args(["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ]);
    let mut qemu: QemuProcess = tokio::task::spawn_blocking(move || builder.spawn()).await??;
    qemu.wait_serial_async(READY_MARKER, BOOT_TIMEOUT).await?;

    let mut shell = GuestShell::connect(qemu.command_socket(), CMD_TIMEOUT).await?;
    let partitions = shell.run_ok("cat /proc/partitions", CMD_TIMEOUT).await?;
    assert!(
        partitions.split_whitespace().any(|w| w == "vda"),
        "no vda in the guest's /proc/partitions:\n{partitions}"
    );
    let (rc, out) = shell
        .run("echo out; echo err >&2; exit 3", CMD_TIMEOUT)
        .await?;
    assert_eq!((rc, out.as_str()), (3, "out\nerr\n"));

    qemu.wait_serial_async(&format!("{DHCP_MARKER} eth0 10.0.2.15"), BOOT_TIMEOUT)
        .await?;
    let addr = shell.run_ok("ip -4 addr show eth0", CMD_TIMEOUT).await?;
    assert!(
        addr.contains("10.0.2.15/24"),
        "eth0 after the lease:\n{addr}"
    );

    let ping = match agent_within(&qemu.agent_socket(), "guest-ping", json!({})).await {
        Ok(v) => v,
        Err(e) => {
            let state = shell
                .run("ps; ls -l /dev/vport*; cat /tmp/qemu-ga.log", CMD_TIMEOUT)
                .await;
            bail!("{e:#}\nguest state: {state:?}\n{}", qemu.diagnostics());
        }
    };
    assert_eq!(ping, json!({}), "guest-ping");

    shell
        .run_ok(
            "mke2fs /dev/vda >/dev/null && mount -t ext4 /dev/vda /mnt",
            CMD_TIMEOUT,
        )
        .await?;
    let frozen = agent_within(&qemu.agent_socket(), "guest-fsfreeze-freeze", json!({})).await?;
    assert_eq!(frozen, json!(1), "file systems frozen");
    let status = agent_within(&qemu.agent_socket(), "guest-fsfreeze-status", json!({})).await?;
    assert_eq!(status, json!("frozen"));
    let thawed = agent_within(&qemu.agent_socket(), "guest-fsfreeze-thaw", json!({})).await?;
    assert_eq!(thawed, json!(1), "file systems thawed");
    shell
        .run_ok("echo hello >/mnt/f && sync && cat /mnt/f", CMD_TIMEOUT)
        .await?;

    // guest-shutdown has no reply: the guest powers off and QEMU exits.
    let stream = UnixStream::connect(qemu.agent_socket()).await?;
    let (_r, mut w) = stream.into_split();
    w.write_all(b"{\"execute\": \"guest-shutdown\"}\n").await?;
    qemu.wait_serial_async(AGENT_SHUTDOWN_MARKER, CMD_TIMEOUT)
        .await?;
    let status = qemu.wait_exit_async(CMD_TIMEOUT).await?;
    assert!(status.success(), "QEMU after guest-shutdown: {status}");
    Ok(())
}
