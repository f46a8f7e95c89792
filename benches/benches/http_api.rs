//! The HTTP API's status query over the Unix socket (1 and 8 keep-alive clients) against a raw
//! Unix-socket HTTP round trip with a canned reply (the floor any HTTP API on this socket pays),
//! and QMP passthrough over HTTP against raw QMP to a QEMU running the same argv. All measured
//! in this run, interleaved, medians over rounds.
//!
//! cargo build --release -p novacrond && cargo bench -p novacron-benches --bench http_api

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    novacrond_binary, osless, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::{micros, print_table, Rounds, Stats};
use novacron_qmp::commands::{Cont, QueryStatus, Quit};

use novacron_benches::http::{connect, request};

/// `clients` keep-alive connections, `calls` requests in all; per-call latencies.
async fn http_run(
    socket: &Path,
    clients: usize,
    calls: usize,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
) -> Result<Stats> {
    let mut senders = Vec::new();
    for _ in 0..clients {
        senders.push(connect(socket).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(calls / clients);
                for _ in 0..calls / clients {
                    let t = Instant::now();
                    let (status, _) = request(&mut s, method, path, body).await?;
                    if status != 200 {
                        bail!("{method} {path}: HTTP {status}");
                    }
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Stats::from_latencies(all, start.elapsed()))
}

/// The floor: a server thread per connection that answers every request with a canned
/// 200 JSON reply, reading just the request head (what any HTTP service must at least do).
fn start_floor_server(path: &Path) -> Result<()> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                let body = r#"{"name":"bench","uuid":null,"state":"running","persistent":true,"autostart":false}"#;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            if writer.write_all(reply.as_bytes()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    Ok(())
}

async fn raw_qmp_run(socket: &Path, calls: usize) -> Result<Stats> {
    let qmp = novacron_qmp::Client::connect(socket).await?;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        qmp.execute(&QueryStatus).await?;
        lat.push(t.elapsed());
    }
    Ok(Stats::from_latencies(lat, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(8000);
    const ROUNDS: usize = 3;
    let reaper = Reaper::default();
    let env = Env::new()?;
    reaper.records(env.records_dir());
    let binary = novacrond_binary()?;
    let config = env.write_config_file()?;
    let mut daemon = spawn_daemon(&binary, &config, &env.dir.path().join("daemon.log"))?;
    reaper.daemon(daemon.id());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the API socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;

    // One running guest behind the API.
    let mut s = connect(&socket).await?;
    let xml = osless("bench")?.to_json();
    let (st, body) = request(&mut s, "POST", "/v1/domains", Some(&xml)).await?;
    if st != 201 {
        bail!("define: {st} {}", String::from_utf8_lossy(&body));
    }
    let (st, body) = request(&mut s, "POST", "/v1/domains/bench/start", None).await?;
    if st != 200 {
        bail!("start: {st} {}", String::from_utf8_lossy(&body));
    }
    // The raw QEMU for the QMP baseline: the same argv, its own monitor socket.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.record("bench"))?)?;
    let raw_sock = env.dir.path().join("raw.qmp");
    let raw_argv = novacron_benches::daemon::raw_argv(&record, &raw_sock)?;
    let mut raw = std::process::Command::new(&raw_argv[0])
        .args(&raw_argv[1..])
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("raw QEMU")?;
    wait_until("the raw QEMU monitor", Duration::from_secs(10), || {
        raw_sock.exists()
    })?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let q = novacron_qmp::Client::connect(&raw_sock).await?;
        q.execute(&Cont).await?;
    }
    let floor_sock = env.dir.path().join("floor.sock");
    start_floor_server(&floor_sock)?;

    println!("novacrond pid {}; {ROUNDS} interleaved rounds; {calls} status queries per run; {} passthrough calls", daemon.id(), calls / 4);
    let mut rounds = Rounds(Vec::new());
    for _ in 0..ROUNDS {
        let api_1 = http_run(&socket, 1, calls, "GET", "/v1/domains/bench", None).await?;
        let floor_1 = http_run(&floor_sock, 1, calls, "GET", "/v1/domains/bench", None).await?;
        let api_8 = http_run(&socket, 8, calls, "GET", "/v1/domains/bench", None).await?;
        let floor_8 = http_run(&floor_sock, 8, calls, "GET", "/v1/domains/bench", None).await?;
        let pass = http_run(
            &socket,
            1,
            calls / 4,
            "POST",
            "/v1/domains/bench/qmp",
            Some(r#"{"execute":"query-status"}"#),
        )
        .await?;
        let rawq = raw_qmp_run(&raw_sock, calls / 4).await?;
        rounds.0.push([api_1, floor_1, api_8, floor_8, pass, rawq]);
    }
    let med = |s: &Stats| micros(s.median);
    let p99 = |s: &Stats| micros(s.p99);
    let tput = |s: &Stats| s.per_second;
    print_table(
        "GET /v1/domains/{name} over the Unix socket vs a canned-reply HTTP floor (us; calls/s)",
        &[
            (
                "1 client: median us",
                rounds.figure(0, med),
                rounds.figure(1, med),
                rounds.ratio(0, 1, med),
            ),
            (
                "1 client: p99 us",
                rounds.figure(0, p99),
                rounds.figure(1, p99),
                rounds.ratio(0, 1, p99),
            ),
            (
                "8 clients: median us",
                rounds.figure(2, med),
                rounds.figure(3, med),
                rounds.ratio(2, 3, med),
            ),
            (
                "8 clients: calls/s",
                rounds.figure(2, tput),
                rounds.figure(3, tput),
                rounds.ratio(2, 3, tput),
            ),
        ],
    );
    print_table(
        "QMP query-status: passthrough over HTTP vs raw QMP (us)",
        &[
            (
                "median us",
                rounds.figure(4, med),
                rounds.figure(5, med),
                rounds.ratio(4, 5, med),
            ),
            (
                "p99 us",
                rounds.figure(4, p99),
                rounds.figure(5, p99),
                rounds.ratio(4, 5, p99),
            ),
        ],
    );
    let (m, t, pr) = (
        rounds.figure(0, med),
        rounds.figure(2, tput),
        rounds.ratio(4, 5, med),
    );
    println!("\ngoals: status median < 150 us: {} ({m:.0} us); > 15000/s with 8 clients: {} ({t:.0}/s); passthrough < 2x raw QMP: {} ({pr:.2}x)",
        verdict(m < 150.0), verdict(t > 15000.0), verdict(pr < 2.0));

    // Clean up: the guest through the API, the raw QEMU through QMP, then the daemon.
    let _ = request(&mut s, "POST", "/v1/domains/bench/destroy", None).await;
    if let Ok(q) = novacron_qmp::Client::connect(&raw_sock).await {
        let _ = q.execute(&Quit).await;
    }
    let _ = raw.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
    Ok(())
}
