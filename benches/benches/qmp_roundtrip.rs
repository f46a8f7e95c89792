//! QMP round-trip latency and throughput against a real QEMU, beside a minimal Python client
//! (benches/python/qmp_baseline.py) measured against the same QEMU in the same run.
//!
//! cargo bench -p novacron-benches --bench qmp_roundtrip [-- CALLS]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::{micros, print_table, Rounds, Stats};
use novacron_qmp::commands::QueryStatus;
use novacron_qmp::Client;
use novacron_tests::QemuBuilder;

async fn rust_run(qmp: &Client, calls: usize, tasks: usize) -> Result<Stats> {
    let per_task = calls / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let qmp = qmp.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    qmp.execute(&QueryStatus).await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, novacron_qmp::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok(Stats::from_latencies(latencies, start.elapsed()))
}

fn python_run(socket: &std::path::Path, calls: usize, threads: usize) -> Result<Stats> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/qmp_baseline.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(socket)
        .arg(calls.to_string())
        .arg(threads.to_string())
        .output()
        .context("running python3 (the baseline client)")?;
    if !out.status.success() {
        bail!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let latencies = v["latencies_ns"]
        .as_array()
        .context("latencies_ns")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .map(Duration::from_nanos)
        .collect();
    let elapsed = Duration::from_nanos(v["elapsed_ns"].as_u64().context("elapsed_ns")?);
    Ok(Stats::from_latencies(latencies, elapsed))
}

/// One round: our client then the Python client, each with 1 and 8 tasks, on the same QEMU.
/// QEMU serves one QMP connection at a time, so the clients take turns on the socket.
async fn round(socket: &std::path::Path, calls: usize) -> Result<[Stats; 4]> {
    let qmp = Client::connect(socket).await?;
    let rust_1 = rust_run(&qmp, calls, 1).await?;
    let rust_8 = rust_run(&qmp, calls, 8).await?;
    qmp.close();
    drop(qmp);
    let sock = socket.to_owned();
    let (py_1, py_8) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((python_run(&sock, calls, 1)?, python_run(&sock, calls, 8)?))
    })
    .await??;
    Ok([rust_1, py_1, rust_8, py_8])
}

#[tokio::main]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    const ROUNDS: usize = 3;
    let qemu = tokio::task::spawn_blocking(|| QemuBuilder::osless().paused().spawn()).await??;
    println!(
        "QEMU pid {} accel {:?}; {ROUNDS} interleaved rounds of {calls} query-status calls per client",
        qemu.pid(),
        qemu.accel()
    );
    // Warm-up (connection setup, page faults, CPU frequency).
    round(qemu.qmp_socket(), 1000).await?;
    let mut rounds = Rounds(Vec::new());
    for _ in 0..ROUNDS {
        rounds.0.push(round(qemu.qmp_socket(), calls).await?);
    }
    let med = |s: &Stats| micros(s.median);
    let p99 = |s: &Stats| micros(s.p99);
    let tput = |s: &Stats| s.per_second;
    print_table(
        "QMP query-status round trip, microseconds (lower is better)",
        &[
            (
                "1 task: median",
                rounds.figure(0, med),
                rounds.figure(1, med),
                rounds.ratio(0, 1, med),
            ),
            (
                "1 task: p99",
                rounds.figure(0, p99),
                rounds.figure(1, p99),
                rounds.ratio(0, 1, p99),
            ),
            (
                "8 tasks: median",
                rounds.figure(2, med),
                rounds.figure(3, med),
                rounds.ratio(2, 3, med),
            ),
            (
                "8 tasks: p99",
                rounds.figure(2, p99),
                rounds.figure(3, p99),
                rounds.ratio(2, 3, p99),
            ),
        ],
    );
    print_table(
        "QMP throughput, calls per second (higher is better)",
        &[
            (
                "1 task",
                rounds.figure(0, tput),
                rounds.figure(1, tput),
                rounds.ratio(0, 1, tput),
            ),
            (
                "8 tasks",
                rounds.figure(2, tput),
                rounds.figure(3, tput),
                rounds.ratio(2, 3, tput),
            ),
        ],
    );
    let latency_ratio = rounds.ratio(0, 1, med);
    let throughput_ratio = rounds.ratio(2, 3, tput);
    println!(
        "\ngoals: 1-task median <= python: {} ({latency_ratio:.2}x); 8-task throughput >= 3x python: {} ({throughput_ratio:.2}x)",
        if latency_ratio <= 1.0 { "met" } else { "MISSED" },
        if throughput_ratio >= 3.0 { "met" } else { "MISSED" },
    );
    Ok(())
}
