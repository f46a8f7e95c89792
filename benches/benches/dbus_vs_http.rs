//! The same status read over both faces of one daemon: `GetAll` of a domain object over D-Bus
//! (a zbus client in this process, a private dbus-daemon) against `GET /v1/domains/{name}` over
//! the Unix socket (a keep-alive hyper client). Interleaved rounds, medians over rounds.
//!
//! cargo build --release -p novacrond && cargo bench -p novacron-benches --bench dbus_vs_http

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{novacrond_binary, osless, spawn_daemon, wait_until, Env, Reaper};
use novacron_benches::{micros, print_table, Rounds, Stats};
use zbus::names::InterfaceName;

use novacron_benches::http::{connect, request, Sender};

async fn http_run(sender: &mut Sender, calls: usize) -> Result<Stats> {
    let start = Instant::now();
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let (status, _) = request(sender, "GET", "/v1/domains/bench", None).await?;
        if status != 200 {
            bail!("GET /v1/domains/bench: HTTP {status}");
        }
        lat.push(t.elapsed());
    }
    Ok(Stats::from_latencies(lat, start.elapsed()))
}

async fn dbus_run(props: &zbus::fdo::PropertiesProxy<'_>, calls: usize) -> Result<Stats> {
    let iface = InterfaceName::from_static_str("org.novacron1.Domain")?;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let all = props.get_all(iface.clone()).await?;
        if all.len() != 7 {
            bail!("GetAll gave {} properties", all.len());
        }
        lat.push(t.elapsed());
    }
    Ok(Stats::from_latencies(lat, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4000);
    const ROUNDS: usize = 5;
    let reaper = Reaper::default();
    let env = Env::new()?;
    reaper.records(env.records_dir());

    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .arg(format!(
            "--address=unix:path={}",
            env.dir.path().join("bus").display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .context("dbus-daemon (Debian package dbus)")?;
    let mut address = String::new();
    BufReader::new(bus.stdout.take().context("stdout")?).read_line(&mut address)?;
    let address = address.trim().to_owned();

    let binary = novacrond_binary()?;
    let config = env.write_config_file_with(&format!("[dbus]\naddress = {address:?}\n"))?;
    let mut daemon = spawn_daemon(&binary, &config, &env.dir.path().join("daemon.log"))?;
    reaper.daemon(daemon.id());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the API socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;

    // One running guest behind both faces.
    let mut s = connect(&socket).await?;
    let (st, body) = request(
        &mut s,
        "POST",
        "/v1/domains",
        Some(&osless("bench")?.to_json()),
    )
    .await?;
    if st != 201 {
        bail!("define: {st} {}", String::from_utf8_lossy(&body));
    }
    let (st, body) = request(&mut s, "POST", "/v1/domains/bench/start", None).await?;
    if st != 200 {
        bail!("start: {st} {}", String::from_utf8_lossy(&body));
    }
    let conn = zbus::connection::Builder::address(address.as_str())?
        .build()
        .await?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dbus.name_has_owner("org.novacron1".try_into()?).await? {
        if Instant::now() > deadline {
            bail!("org.novacron1 never appeared on {address}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let props = zbus::fdo::PropertiesProxy::builder(&conn)
        .destination("org.novacron1")?
        .path("/org/novacron1/domain/bench")?
        .build()
        .await?;

    // Warm both paths, then interleave.
    dbus_run(&props, 200).await?;
    http_run(&mut s, 200).await?;
    println!(
        "novacrond pid {}; {ROUNDS} interleaved rounds; {calls} reads per face per round",
        daemon.id()
    );
    let mut rounds = Rounds(Vec::new());
    for _ in 0..ROUNDS {
        let d = dbus_run(&props, calls).await?;
        let h = http_run(&mut s, calls).await?;
        rounds.0.push([d, h]);
    }
    let med = |s: &Stats| micros(s.median);
    let p99 = |s: &Stats| micros(s.p99);
    let tput = |s: &Stats| s.per_second;
    print_table(
        "Domain status: D-Bus GetAll (novacron) vs HTTP GET /v1/domains/{name} (baseline), 1 client",
        &[
            ("median us", rounds.figure(0, med), rounds.figure(1, med), rounds.ratio(0, 1, med)),
            ("p99 us", rounds.figure(0, p99), rounds.figure(1, p99), rounds.ratio(0, 1, p99)),
            ("calls/s", rounds.figure(0, tput), rounds.figure(1, tput), rounds.ratio(0, 1, tput)),
        ],
    );

    let _ = request(&mut s, "POST", "/v1/domains/bench/destroy", None).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = bus.kill();
    let _ = bus.wait();
    Ok(())
}
