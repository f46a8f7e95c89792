//! The serial console through the daemon's websocket against a direct Unix-socket client of a
//! QEMU serial chardev, in the same run, on the same Linux test guest (TCG, a shell on
//! ttyS0): the round trip of one typed byte that the guest's tty echoes back. Goal: the
//! websocket ≤ direct + 1 ms. (The daemon's CPU with 16 viewers is not measured here yet.)
//!
//! cargo bench -p novacron-benches --bench console [-- ROUNDS]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use novacron_benches::daemon::{
    millis, novacrond_binary, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::median;
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<UnixStream>;
const READY: &str = novacron_tests::READY_MARKER;
/// Round `n` types a lower-case letter (the guest's own lines are upper case), a different
/// one each round, so an echo that lags can never answer a later round.
fn probe(n: usize) -> u8 {
    b'a' + (n % 26) as u8
}

fn curl(socket: &Path, method: &str, path: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "-f", "--unix-socket"])
        .arg(socket)
        .args(["-X", method])
        .args(args)
        .arg(format!("http://localhost{path}"))
        .output()?;
    if !out.status.success() {
        bail!("{method} {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn websocket(socket: &Path, mode: &str) -> Result<Ws> {
    let t: serde_json::Value = serde_json::from_str(&curl(
        socket,
        "POST",
        "/v1/domains/bench/console/ticket",
        &[],
    )?)?;
    let ticket = t["ticket"].as_str().context("ticket")?;
    let url = format!("ws://localhost/v1/domains/bench/console?ticket={ticket}&mode={mode}");
    let stream = UnixStream::connect(socket).await?;
    let (ws, _) = tokio_tungstenite::client_async(url.into_client_request()?, stream).await?;
    Ok(ws)
}

/// Reads frames until `needle` is in them.
async fn ws_until(ws: &mut Ws, needle: &[u8]) -> Result<()> {
    let mut got = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                got.extend_from_slice(&b);
                if got.windows(needle.len()).any(|w| w == needle) {
                    return Ok(());
                }
                if got.len() > 8192 {
                    got.drain(..got.len() - 128);
                }
            }
            Some(Ok(_)) => {}
            other => bail!("console ended: {other:?}"),
        }
    }
}

fn direct_until(s: &mut StdUnixStream, needle: &[u8]) -> Result<()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("the chardev closed");
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(needle.len()).any(|w| w == needle) {
            return Ok(());
        }
        if got.len() > 8192 {
            got.drain(..got.len() - 128);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let guest = tokio::task::spawn_blocking(novacron_tests::test_guest).await??;
    let env = Env::new()?;
    let reaper = Reaper::default();
    let config = env.write_config_file()?;
    let log = env.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    reaper.daemon(daemon.id());
    reaper.records(env.records_dir());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the daemon socket", Duration::from_secs(20), || {
        socket.exists()
    })?;
    let xml = tokio::task::spawn_blocking(|| {
        novacron_tests::test_guest_domain_xml_with("bench", "novacron.serial_shell=1", "")
    })
    .await??;
    curl(
        &socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    )?;
    curl(&socket, "POST", "/v1/domains/bench/start", &[])?;
    let mut writer = websocket(&socket, "writer").await?;
    ws_until(&mut writer, READY.as_bytes()).await?;

    // The same guest under a QEMU whose serial is a socket this process reads directly.
    let chardev = env.dir.path().join("raw-serial.sock");
    let mut raw = Command::new(novacron_tests::qemu_binary())
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-monitor", "none", "-machine", "q35"])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet novacron.serial_shell=1",
        ])
        .arg("-chardev")
        .arg(format!(
            "socket,id=ser0,path={},server=on,wait=off",
            novacron_tests::escape_opt(&chardev)
        ))
        .args(["-serial", "chardev:ser0"])
        .stderr(Stdio::null())
        .spawn()
        .context("raw QEMU")?;
    wait_until("the raw serial socket", Duration::from_secs(10), || {
        chardev.exists()
    })?;
    let mut direct = StdUnixStream::connect(&chardev)?;
    direct_until(&mut direct, READY.as_bytes())?;

    // Paired rounds of one echoed byte each.
    let (mut via_ws, mut via_direct) = (Vec::new(), Vec::new());
    for n in 0..rounds {
        let t = Instant::now();
        writer.send(Message::Binary(vec![probe(n)].into())).await?;
        ws_until(&mut writer, &[probe(n)]).await?;
        via_ws.push(millis(t.elapsed()));
        let t = Instant::now();
        direct.write_all(&[probe(n)])?;
        direct_until(&mut direct, &[probe(n)])?;
        via_direct.push(millis(t.elapsed()));
        if n % 26 == 25 {
            // Clear the typed line (Ctrl-U) before the tty's line buffer fills.
            writer.send(Message::Binary(vec![0x15].into())).await?;
            direct.write_all(&[0x15])?;
        }
    }
    writer.send(Message::Binary(vec![0x15].into())).await?;
    let (w, d) = (median(via_ws), median(via_direct));
    println!("serial console echo of one byte, {rounds} paired rounds (median ms)");
    println!("  daemon websocket          {w:8.3}");
    println!("  direct Unix socket        {d:8.3}");
    println!(
        "  difference                {:8.3}  goal <= 1 ms: {}",
        w - d,
        verdict(w - d <= 1.0)
    );

    let _ = raw.kill();
    let _ = raw.wait();
    Ok(())
}
