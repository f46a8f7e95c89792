//! Start-to-running of an OS-less SeaBIOS guest through the service (`Service::start`) beside
//! raw QEMU started by this benchmark with the very same argv (taken from the runtime record
//! of a service start), its own QMP socket, then QMP `cont`. Both are timed from just before
//! the spawn to the `cont` reply (the service: `start` returning, which it does once running).
//! Runs alternate raw, service, raw, service, ...; each guest is stopped outside the timing.
//!
//! cargo build --release -p novacrond   # not needed here, but keeps target/release current
//! cargo bench -p novacron-benches --bench daemon_start [-- ITERATIONS]
//!
//! Goal (issue 4, item 8): the service within 10% of raw QEMU.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{median, millis, osless, verdict, Env, Reaper};
use novacron_benches::print_table;
use novacron_qmp::commands::{Cont, Quit};
use novacron_qmp::Client;
use novacrond::persist::{RecordStore, RuntimeRecord};
use novacrond::Service;

const NAME: &str = "bench-start";

/// One raw start: spawn, poll the QMP socket every millisecond, handshake, `cont`.
/// Returns (total, spawn-to-QMP-connected) and stops the guest (untimed).
async fn raw_start(argv: &[String], socket: &Path) -> Result<(Duration, Duration)> {
    let _ = std::fs::remove_file(socket);
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawning raw QEMU")?;
    let qmp = loop {
        match Client::connect(socket).await {
            Ok(c) => break c,
            Err(e) => {
                if let Some(status) = child.try_wait()? {
                    bail!("raw QEMU exited during start ({status})");
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("raw QEMU's QMP socket did not answer: {e}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let connected = t0.elapsed();
    qmp.execute(&Cont).await.context("raw cont")?;
    let total = t0.elapsed();
    // Stop, untimed.
    let _ = qmp.execute(&Quit).await;
    drop(qmp);
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .context("raw QEMU did not quit")??;
    Ok((total, connected))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Where a service start spent its time, from the QEMU log's "novacrond: starting" line and
/// the record's `started_at_unix_ms` (written after the QMP handshake, before `cont`); in ms,
/// with millisecond resolution: (before spawn, spawn to record, record to return).
fn service_breakdown(env: &Env, t0_ms: u64, end_ms: u64) -> Option<(f64, f64, f64)> {
    let log = std::fs::read_to_string(env.config.log_dir.join(format!("qemu/{NAME}.log"))).ok()?;
    let spawn_ms: u64 = log
        .lines()
        .rev()
        .find(|l| l.contains("novacrond: starting"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.record(NAME)).ok()?).ok()?;
    let record_ms = record["started_at_unix_ms"].as_u64()?;
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    Some((
        d(t0_ms, spawn_ms),
        d(spawn_ms, record_ms),
        d(record_ms, end_ms),
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(25);
    let env = Env::new()?;
    let reaper = Reaper::default();
    reaper.records(env.records_dir());
    let svc = Service::open(env.config.clone())
        .await
        .context("Service::open")?;
    svc.define(osless(NAME)?).await?;

    // One service start gives the exact argv (and warms the service's paths).
    svc.start(NAME).await?;
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.record(NAME))?)?;
    let raw_socket = env.dir.path().join("raw.qmp");
    let argv = novacron_benches::daemon::raw_argv(&record, &raw_socket)?;
    svc.destroy(NAME).await?;
    println!(
        "accel {:?}; {iterations} interleaved iterations (raw, service) after one warm-up each\nargv: {}",
        novacron_tests::osless_accel(),
        argv.join(" ")
    );
    raw_start(&argv, &raw_socket).await?;

    // The durable record write the service does between the QMP handshake and `cont`,
    // measured on its own (same file system) to attribute the difference.
    let scratch = RecordStore::new(env.dir.path().join("scratch"));
    std::fs::create_dir_all(scratch.dir())?;
    let sample: RuntimeRecord = serde_json::from_value(record.clone())?;
    let mut record_writes = vec![];

    let (mut raw, mut raw_connect, mut ours, mut ratios, mut parts) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        let (r, rc) = raw_start(&argv, &raw_socket).await?;
        let t0_ms = unix_ms();
        let t0 = Instant::now();
        svc.start(NAME).await?;
        let s = t0.elapsed();
        let end_ms = unix_ms();
        if let Some(p) = service_breakdown(&env, t0_ms, end_ms) {
            parts.push(p);
        }
        svc.destroy(NAME).await?;
        let t = Instant::now();
        scratch.save(&sample).await?;
        record_writes.push(millis(t.elapsed()));
        raw.push(millis(r));
        raw_connect.push(millis(rc));
        ours.push(millis(s));
        ratios.push(s.as_secs_f64() / r.as_secs_f64());
    }
    drop(svc);

    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let quartiles = (sorted[sorted.len() / 4], sorted[sorted.len() * 3 / 4]);
    let (raw_med, ours_med, ratio) = (median(raw), median(ours), median(ratios));
    print_table(
        "Start to running, OS-less SeaBIOS guest, milliseconds (ratio = median of per-pair ratios)",
        &[("service start vs raw", ours_med, raw_med, ratio)],
    );
    println!(
        "\nwhere time goes (medians, ms): raw: spawn->QMP connected {:.1}, then cont {:.1}",
        median(raw_connect.clone()),
        raw_med - median(raw_connect)
    );
    if !parts.is_empty() {
        println!(
            "  service (1 ms resolution): call->spawn {:.0}, spawn->record written {:.0}, record->running {:.0}",
            median(parts.iter().map(|p| p.0).collect()),
            median(parts.iter().map(|p| p.1).collect()),
            median(parts.iter().map(|p| p.2).collect()),
        );
    }
    println!(
        "  a durable runtime-record write alone (RecordStore::save): {:.1} ms",
        median(record_writes)
    );
    println!(
        "  per-pair ratio quartiles: {:.2}x .. {:.2}x; load average {}",
        quartiles.0,
        quartiles.1,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "\ngoal: service start within 10% of raw QEMU: {} ({ratio:.2}x, {ours_med:.1} ms vs {raw_med:.1} ms)",
        verdict(ratio <= 1.10)
    );
    drop(reaper);
    Ok(())
}
