//! QMP round-trip latency and throughput against a real QEMU, beside a minimal Python client
//! (benches/python/qmp_baseline.py) measured against the same QEMU in the same run.
//!
//! cargo bench -p novacron-benches --bench qmp_roundtrip [-- CALLS]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::{micros, print_table, Stats};
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

#[tokio::main]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let qemu = tokio::task::spawn_blocking(|| QemuBuilder::osless().paused().spawn()).await??;
    println!(
        "QEMU pid {} accel {:?}; {calls} query-status calls per run",
        qemu.pid(),
        qemu.accel()
    );

    // Warm both clients' paths once, then measure; QEMU serves one QMP connection at a time,
    // so the runs take turns on the same socket.
    let qmp = Client::connect(qemu.qmp_socket()).await?;
    rust_run(&qmp, 1000, 1).await?;
    let rust_1 = rust_run(&qmp, calls, 1).await?;
    let rust_8 = rust_run(&qmp, calls, 8).await?;
    qmp.close();
    drop(qmp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sock = qemu.qmp_socket().to_owned();
    let (py_1, py_8) = tokio::task::spawn_blocking(move || -> Result<_> {
        python_run(&sock, 1000, 1)?;
        Ok((python_run(&sock, calls, 1)?, python_run(&sock, calls, 8)?))
    })
    .await??;

    print_table(
        "QMP query-status round trip (lower is better for latency)",
        &[
            (
                "1 task: median latency",
                micros(rust_1.median),
                micros(py_1.median),
                "us",
            ),
            (
                "1 task: p99 latency",
                micros(rust_1.p99),
                micros(py_1.p99),
                "us",
            ),
            (
                "8 tasks: median latency",
                micros(rust_8.median),
                micros(py_8.median),
                "us",
            ),
            (
                "8 tasks: p99 latency",
                micros(rust_8.p99),
                micros(py_8.p99),
                "us",
            ),
        ],
    );
    print_table(
        "QMP throughput (higher is better)",
        &[
            ("1 task: calls/s", rust_1.per_second, py_1.per_second, "/s"),
            ("8 tasks: calls/s", rust_8.per_second, py_8.per_second, "/s"),
        ],
    );
    println!(
        "\ngoals: median (1 task) <= python: {}; 8-task throughput >= 3x python: {} ({:.2}x)",
        if rust_1.median <= py_1.median {
            "met"
        } else {
            "MISSED"
        },
        if rust_8.per_second >= 3.0 * py_8.per_second {
            "met"
        } else {
            "MISSED"
        },
        rust_8.per_second / py_8.per_second
    );
    Ok(())
}
