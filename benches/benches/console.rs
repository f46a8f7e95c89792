//! The serial console through the daemon's websocket against a direct Unix-socket client of a
//! QEMU serial chardev, in the same run, on the same Linux test guest (TCG, a shell on
//! ttyS0): the round trip of one typed byte that the guest's tty echoes back. Goal: the
//! websocket ≤ direct + 1 ms.
//!
//! Then the cost of viewers: the guest prints a steady stream of lines (a shell loop, one
//! line every 10 ms, the rate actually reached is printed), and the daemon's CPU
//! (utime+stime from /proc/<pid>/stat) is measured over paired windows, one with no client
//! on the console (the daemon still pumps the output into its ring and log), one with one
//! websocket viewer and one with 16 reading it; the guest's rate in each window is the growth
//! of its serial log. Goal: with 16 viewers ≤ 5% of a core. Last, the CPU of a
//! flood (the guest printing as fast as its UART goes) relayed to one viewer.
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

    let serial_log = env.config.log_dir.join("serial").join("bench.log");
    viewers_cpu(&socket, daemon.id(), &serial_log, writer).await
}

/// Viewers on one console while the guest prints.
const VIEWERS: usize = 16;
/// CPU windows: paired rounds of this length each.
const CPU_ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(5);
/// The guest's line (with its counter, ~80 bytes) and its pause between lines.
const LINE: &str = "NOVALINE $i the quick brown fox jumps over the lazy dog 0123456789";
const PAUSE_US: u32 = 10_000;

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks as f64 / hz)
}

/// A viewer that reads everything and counts it; it reports how it ended.
fn spawn_reader(
    mut ws: Ws,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    bytes.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Some(Ok(Message::Close(f))) => return format!("closed by the daemon: {f:?}"),
                Some(Ok(_)) => {}
                other => return format!("ended: {other:?}"),
            }
        }
    })
}

/// % of a core the daemon used over `WINDOW`, and the guest's output rate meanwhile (B/s,
/// from the growth of its serial log, which the daemon writes whoever watches).
async fn window(pid: u32, serial_log: &Path) -> Result<(f64, f64)> {
    let size = || std::fs::metadata(serial_log).map(|m| m.len()).unwrap_or(0);
    let (c0, b0) = (cpu_seconds(pid)?, size());
    let t = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let (c1, b1) = (cpu_seconds(pid)?, size());
    let secs = t.elapsed().as_secs_f64();
    Ok(((c1 - c0) / secs * 100.0, (b1 - b0) as f64 / secs))
}

/// `n` viewers reading everything; their byte counters.
async fn viewers(
    socket: &Path,
    n: usize,
) -> Result<(
    Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    Vec<tokio::task::JoinHandle<String>>,
)> {
    use std::sync::atomic::AtomicU64;
    let counters: Vec<_> = (0..n)
        .map(|_| std::sync::Arc::new(AtomicU64::new(0)))
        .collect();
    let mut readers = Vec::new();
    for c in &counters {
        readers.push(spawn_reader(websocket(socket, "viewer").await?, c.clone()));
    }
    // Past the history (up to the 1 MiB ring): each viewer is on live output.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((counters, readers))
}

async fn viewers_cpu(socket: &Path, pid: u32, serial_log: &Path, mut writer: Ws) -> Result<()> {
    use std::sync::atomic::Ordering;
    // The print loop, typed into the guest's shell; the writer then leaves (the loop runs
    // on), so the quiet windows have no client at all.
    // In the background: the shell has no controlling tty, so Ctrl-C would not stop it.
    let cmd = format!(
        "rm -f /tmp/stop; i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo \"{LINE}\"; usleep {PAUSE_US}; done &\r"
    );
    writer
        .send(Message::Binary(cmd.into_bytes().into()))
        .await?;
    ws_until(&mut writer, b"NOVALINE 20 ").await?;
    writer.close(None).await.ok();
    drop(writer);

    let (mut quiet, mut one, mut watched) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rates, mut ratios1, mut ratios16) = (Vec::new(), Vec::new(), Vec::new());
    let mut incidents = Vec::new();
    for _ in 0..CPU_ROUNDS {
        let (cpu0, rate0) = window(pid, serial_log).await?;
        let mut row = Vec::new();
        for n in [1, VIEWERS] {
            let (counters, readers) = viewers(socket, n).await?;
            let before: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            let (cpu, rate) = window(pid, serial_log).await?;
            let after: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            for r in readers {
                if r.is_finished() {
                    incidents.push(r.await?);
                } else {
                    r.abort();
                }
            }
            let each = (after - before) as f64 / n as f64 / WINDOW.as_secs_f64();
            row.push((cpu, rate, each));
        }
        let [(cpu1, rate1, each1), (cpu16, rate16, each16)] = row[..] else {
            unreachable!()
        };
        quiet.push(cpu0);
        one.push(cpu1);
        watched.push(cpu16);
        rates.extend([rate0, rate1, rate16]);
        ratios1.push(cpu1 / cpu0);
        ratios16.push(cpu16 / cpu0);
        println!(
            "  round: none {cpu0:5.2}% ({rate0:.0} B/s)  1 viewer {cpu1:5.2}% ({rate1:.0} B/s, {each1:.0} B/s read)  \
             {VIEWERS} viewers {cpu16:5.2}% ({rate16:.0} B/s, {each16:.0} B/s read each)"
        );
    }
    let (q, o, w, rate) = (median(quiet), median(one), median(watched), median(rates));
    println!(
        "daemon CPU while the guest prints ~{rate:.0} B/s ({:.0} lines/s of {} B), {CPU_ROUNDS} paired {}s windows (median % of a core)",
        rate / (LINE.len() as f64 + 1.0),
        LINE.len() + 1,
        WINDOW.as_secs()
    );
    println!("  no viewer (pump, ring, log)  {q:6.2}");
    println!(
        "  1 websocket viewer           {o:6.2}  ratio {:5.2}x",
        median(ratios1)
    );
    println!(
        "  {VIEWERS} websocket viewers        {w:6.2}  ratio {:5.2}x  goal <= 5%: {}",
        median(ratios16),
        verdict(w <= 5.0)
    );
    if !incidents.is_empty() {
        println!("  viewers that ended early: {incidents:?}");
    }
    flood_cpu(socket, pid).await
}

/// The guest printing as fast as its UART goes, relayed to one viewer (the writer who
/// started it): the daemon's CPU per second of flood and the throughput.
async fn flood_cpu(socket: &Path, pid: u32) -> Result<()> {
    let mut writer = websocket(socket, "writer").await?;
    // The print loop stops; the flood is 2 MB of 'NOVAFLOOD' lines.
    writer
        .send(Message::Binary(
            b"touch /tmp/stop; yes NOVAFLOOD | head -c 2000000; echo FLOOD$((1+1))DONE\r"
                .to_vec()
                .into(),
        ))
        .await?;
    let (c0, t) = (cpu_seconds(pid)?, Instant::now());
    ws_until(&mut writer, b"FLOOD2DONE").await?;
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds(pid)? - c0);
    println!(
        "flood to one viewer: 2 MB in {secs:.1} s ({:.0} kB/s), daemon CPU {:.1}% of a core",
        2000.0 / secs,
        cpu / secs * 100.0
    );
    Ok(())
}
