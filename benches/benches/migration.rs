//! Live migration of an OS-less KVM guest (1 GiB and 4 GiB of RAM, 512 MiB of it random bytes:
//! a private memory-backend-file over a prefilled file in the daemon's `memory_backing_dir`)
//! and of the test guest dirtying 256 MiB (TCG here) between two real novacrond daemons on
//! loopback (`POST /v1/domains/{name}/migrate?wait=true`: prepare on the
//! destination, stream, hand-over, source QEMU quits) beside the same migration driven by raw
//! QMP from this benchmark: a source QEMU with the daemon's very argv, a destination with
//! `-incoming defer`, the same capabilities and parameters (downtime limit 300 ms, unlimited
//! bandwidth), `migrate`, polling, `cont` on the destination. Both totals include starting the
//! destination QEMU. Each round runs both paths, which one first alternating. Downtime is
//! QEMU's own figure; the guest's pause is measured as QEMU stamps it on both paths: the
//! source QEMU's STOP event to the destination QEMU's RESUME event (the daemons report both
//! stamps in the migration's progress, the raw path reads them from its own monitors), so a
//! daemon's bookkeeping after `cont` (its record's fsync, its answer to the source) is not
//! counted as pause, as nothing after the raw path's `cont` is.
//!
//! cargo build --release -p novacrond
//! cargo bench -p novacron-benches --bench migration [-- ROUNDS] [1g] [4g] [dirty]
//!
//! Goal (issue 8, item 6): total within 5% of raw; downtime within the 300 ms limit.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    millis, novacrond_binary, osless, raw_argv, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::median;
use novacron_qmp::commands::{
    Cont, Migrate, MigrateIncoming, MigrateSetCapabilities, QueryMigrate, Quit,
};
use novacron_qmp::qapi::MigrationStatus;
use novacron_qmp::Client as Qmp;
use novacrond::client::{Action, Client, DefinitionFormat, Target};
use novacrond::service::migration::{MigrateRequest, MigrationOptions, Phase};

const TOKEN: &str = "bench-peer-token";

struct Daemon {
    env: Env,
    port: u16,
    child: std::process::Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(reaper: &Reaper) -> Result<Daemon> {
        use sha2::Digest;
        let env = Env::new()?;
        let hash: String = sha2::Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = env.write_config_file_with(&format!(
            "memory_backing_dir = {:?}
[api]
listen = \"127.0.0.1:0\"
[[api.tokens]]
name = \"peer\"
sha256 = \"{hash}\"
role = \"migration_peer\"
[migration]
allow_plain_http = true
",
            env.dir.path().join("ram")
        ))?;
        let log = env.dir.path().join("daemon.log");
        let child = spawn_daemon(&novacrond_binary()?, &config, &log)?;
        reaper.daemon(child.id());
        reaper.records(env.records_dir());
        let socket = env.config.run_dir.join("novacrond.sock");
        wait_until("the daemon's socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })?;
        // Port 0: the daemon binds a free port itself and logs the address it got.
        let mut port = None;
        wait_until("the daemon's TCP address", Duration::from_secs(20), || {
            port = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("HTTP API on TCP"))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port());
            port.is_some()
        })?;
        let port = port.unwrap_or_default();
        Ok(Daemon { env, port, child })
    }

    /// Where this daemon maps the file-backed RAM of guest `name`.
    fn ram_file(&self, name: &str) -> std::path::PathBuf {
        self.env.dir.path().join("ram").join(name).join("pc.ram")
    }

    fn local(&self) -> Client {
        Client::new(Target::Unix(self.env.config.run_dir.join("novacrond.sock")))
    }

    fn request(&self) -> MigrateRequest {
        MigrateRequest {
            destination: format!("http://127.0.0.1:{}", self.port),
            token: Some(TOKEN.into()),
            destination_ca: None,
            options: MigrationOptions::default(),
            keep_source_definition: false,
        }
    }
}

struct Figures {
    total: Duration,
    qemu_total_ms: f64,
    downtime_ms: f64,
    /// From the source's "completed" to the guest running on the destination (the daemons:
    /// the destination's answer to the source, after its post-`cont` bookkeeping; raw: `cont`
    /// answered). Printed, not compared: the two ends differ.
    handover_ms: f64,
    /// The guest's pause by QEMU's stamps: the source's STOP to the destination's RESUME.
    pause_ms: f64,
    bytes: u64,
}

/// One migration through the daemons, `from` to `to`.
async fn through_daemons(from: &Daemon, to: &Daemon, name: &str) -> Result<Figures> {
    let t0 = Instant::now();
    let p = from.local().migrate(name, &to.request(), true).await?;
    let total = t0.elapsed();
    if p.phase != Phase::Completed {
        bail!("daemon migration ended {:?}: {:?}", p.phase, p.detail);
    }
    Ok(Figures {
        total,
        qemu_total_ms: p.elapsed_ms as f64,
        downtime_ms: p.downtime_ms.unwrap_or_default() as f64,
        handover_ms: p.handover_ms.unwrap_or_default() as f64,
        pause_ms: p
            .pause_ms
            .context("the daemons reported no pause (STOP or RESUME stamp missing)")?
            as f64,
        bytes: p.transferred_bytes,
    })
}

async fn spawn_raw(argv: &[String], socket: &Path) -> Result<(tokio::process::Child, Qmp)> {
    let _ = std::fs::remove_file(socket);
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawning raw QEMU")?;
    let t0 = Instant::now();
    loop {
        if let Ok(c) = Qmp::connect(socket).await {
            return Ok((child, c));
        }
        if child.try_wait()?.is_some() || t0.elapsed() > Duration::from_secs(30) {
            bail!("raw QEMU did not serve QMP");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn caps() -> MigrateSetCapabilities {
    MigrateSetCapabilities {
        capabilities: MigrationOptions::default().capabilities(),
    }
}

/// The same migration by raw QMP; the source is a raw QEMU already running.
async fn raw(
    argv: &[String],
    src: &Qmp,
    socket: &Path,
    dst_ram: &Path,
) -> Result<(Figures, tokio::process::Child, Qmp)> {
    let mut dst_argv = with_mem_path(&raw_argv_with(argv, socket)?, dst_ram)?;
    dst_argv.extend(["-incoming".into(), "defer".into()]);
    let t0 = Instant::now();
    let (dst_child, dst) = spawn_raw(&dst_argv, socket).await?;
    dst.execute(&caps()).await?;
    dst.execute(&MigrationOptions::default().shared_parameters())
        .await?;
    dst.execute(&MigrateIncoming {
        uri: "tcp:127.0.0.1:0".into(),
    })
    .await?;
    let port = dst
        .execute(&QueryMigrate)
        .await?
        .socket_address
        .unwrap_or_default()
        .into_iter()
        .find_map(|a| a.port)
        .context("no port")?;
    src.execute(&caps()).await?;
    src.execute(&MigrationOptions::default().source_parameters())
        .await?;
    // QEMU's stamps of the pause: the source's STOP, the destination's RESUME.
    let mut src_events = src.subscribe();
    let mut dst_events = dst.subscribe();
    src.execute(&Migrate {
        uri: format!("tcp:127.0.0.1:{port}"),
        resume: None,
    })
    .await?;
    let mut completed_at = None;
    let info = loop {
        let info = src.execute(&QueryMigrate).await?;
        if matches!(info.status, Some(MigrationStatus::Completed)) {
            completed_at.get_or_insert_with(Instant::now);
        }
        match info.status {
            // As the daemon does: QEMU says "completed" a moment before it has the totals.
            Some(MigrationStatus::Completed) if info.total_time.unwrap_or(0) > 0 => break info,
            Some(MigrationStatus::Completed) => tokio::time::sleep(Duration::from_millis(2)).await,
            Some(MigrationStatus::Failed | MigrationStatus::Cancelled) => {
                bail!("raw migration failed: {:?}", info.error_desc)
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    loop {
        match dst.execute(&QueryMigrate).await?.status {
            Some(MigrationStatus::Completed) => break,
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    dst.execute(&Cont).await?;
    let total = t0.elapsed();
    let handover = completed_at.map(|t| t.elapsed()).unwrap_or_default();
    let stamp = |e: &novacron_qmp::Event| {
        e.timestamp.seconds as f64 * 1e3 + e.timestamp.microseconds as f64 / 1e3
    };
    let stopped = src_events
        .wait_for(Duration::from_secs(5), |e| {
            matches!(e.kind, novacron_qmp::EventKind::Stop)
        })
        .await
        .context("the raw source's STOP")?;
    let resumed = dst_events
        .wait_for(Duration::from_secs(5), |e| {
            matches!(e.kind, novacron_qmp::EventKind::Resume)
        })
        .await
        .context("the raw destination's RESUME")?;
    let _ = src.execute(&Quit).await;
    Ok((
        Figures {
            total,
            qemu_total_ms: info.total_time.unwrap_or_default() as f64,
            downtime_ms: info.downtime.unwrap_or_default() as f64,
            handover_ms: millis(handover),
            pause_ms: stamp(&resumed) - stamp(&stopped),
            bytes: info.ram.map(|r| r.transferred).unwrap_or_default(),
        },
        dst_child,
        dst,
    ))
}

fn raw_argv_with(argv: &[String], socket: &Path) -> Result<Vec<String>> {
    raw_argv(&serde_json::json!({ "argv": argv }), socket)
}

/// A file-backed backend's `mem-path` pointed at `file` (argv without one is returned as is).
fn with_mem_path(argv: &[String], file: &Path) -> Result<Vec<String>> {
    let file = file.to_str().context("utf-8 RAM path")?;
    Ok(argv
        .iter()
        .map(|a| match a.find("mem-path=") {
            Some(i) if a.starts_with("memory-backend-file") => {
                let start = i + "mem-path=".len();
                let end = a[start..].find(',').map_or(a.len(), |e| start + e);
                format!("{}{file}{}", &a[..start], &a[end..])
            }
            _ => a.clone(),
        })
        .collect())
}

/// What migrates: a guest definition, the file its RAM starts from (OS-less guests), and (for
/// the test guest) the serial marker that says its workload is running.
struct Workload {
    label: String,
    config: novacron_domain::DomainConfig,
    ram: Option<std::path::PathBuf>,
    ready: Option<&'static str>,
}

/// Random bytes in the RAM the guest starts with: a file of the guest's size whose first
/// `RANDOM_MIB` are random and the rest a hole (zero pages, which migration skips).
const RANDOM_MIB: u64 = 512;

fn random_ram_file(path: &Path, size: u64) -> Result<()> {
    use std::io::{Read, Write};
    let mut random = std::fs::File::open("/dev/urandom")?.take(RANDOM_MIB << 20);
    let mut file = std::fs::File::create(path)?;
    std::io::copy(&mut random, &mut file)?;
    file.set_len(size)?;
    file.flush()?;
    // The daemon runs QEMU as its own unprivileged user, which opens the backing file
    // read-write (a private mapping never writes it back).
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(())
}

/// `only`: the workloads named on the command line (`1g`, `4g`, `dirty`); all when empty.
fn workloads(scratch: &Path, only: &[String]) -> Result<Vec<Workload>> {
    let wanted = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    let mut out = Vec::new();
    for gib in [1u64, 4] {
        if !wanted(&format!("{gib}g")) {
            continue;
        }
        let name = format!("mig-bench-{gib}g");
        let mut config = osless(&name)?;
        config.memory.memory_kib = gib << 20;
        config.memory.current_kib = None;
        config.memory_backing = Some(novacron_domain::model::MemoryBacking {
            source: Some(novacron_domain::model::MemorySource::File),
            access: Some(novacron_domain::model::MemoryAccess::Private),
            ..Default::default()
        });
        let ram = scratch.join(format!("{name}.ram"));
        random_ram_file(&ram, gib << 30)?;
        out.push(Workload {
            label: format!("{gib} GiB OS-less, {RANDOM_MIB} MiB random"),
            config,
            ram: Some(ram),
            ready: None,
        });
    }
    if !wanted("dirty") {
        return Ok(out);
    }
    // The test guest (TCG here) rewriting 256 MiB of its 512 MiB at 4 MiB/s throughout.
    let xml = novacron_tests::test_guest_domain_xml(
        "mig-bench-dirty",
        "novacron.dirty_mib=256 novacron.dirty_rate=4",
    )?;
    let mut config = novacron_domain::DomainConfig::from_xml(&xml)?;
    config.memory.memory_kib = 512 << 10;
    config.memory.current_kib = None;
    out.push(Workload {
        label: "512 MiB test guest dirtying 256 MiB".into(),
        config,
        ram: None,
        ready: Some(novacron_tests::DIRTY_READY_MARKER),
    });
    Ok(out)
}

/// The daemon's argv with the serial log written to `serial` instead of the descriptor the
/// daemon passes (the monitor is replaced per QEMU by `raw_argv_with`).
fn without_fd_sets(argv: &[String], serial: &Path) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(argv.len());
    let mut it = argv.iter();
    let serial = serial.to_str().context("utf-8 serial path")?;
    while let Some(a) = it.next() {
        if a == "-add-fd" {
            it.next();
            continue;
        }
        out.push(replace_fdset(a, serial));
    }
    Ok(out)
}

fn replace_fdset(arg: &str, file: &str) -> String {
    match arg.find("/dev/fdset/") {
        Some(i) => {
            let end = arg[i..].find(',').map_or(arg.len(), |e| i + e);
            format!("{}{file}{}", &arg[..i], &arg[end..])
        }
        None => arg.to_owned(),
    }
}

async fn wait_for_marker(path: &Path, marker: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(marker)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{marker} did not appear in {} within {within:?}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| matches!(a.as_str(), "1g" | "4g" | "dirty"))
        .collect();
    let scratch = tempfile::tempdir()?;
    let workloads = {
        let dir = scratch.path().to_owned();
        tokio::task::spawn_blocking(move || workloads(&dir, &only)).await??
    };
    let reaper = Reaper::default();
    let a = Daemon::start(&reaper)?;
    let b = Daemon::start(&reaper)?;
    println!(
        "migration: daemons vs raw QMP with the same argv and parameters, {rounds} paired rounds, medians\n\
         (ratio: the median of per-round daemon/raw totals; pause: the guest's, as QEMU stamps it on both\n\
         paths, from the source's STOP event to the destination's RESUME event)"
    );
    println!(
        "{:<36} {:>10} {:>12} {:>7} {:>13} {:>15} {:>8} {:>8}",
        "workload",
        "raw total",
        "daemon total",
        "ratio",
        "raw pause",
        "daemon pause",
        "limit",
        "GiB/s"
    );
    for w in workloads {
        let name = w.config.name.clone();
        // Private mappings never write back, so every QEMU can start from one file's links.
        if let Some(ram) = &w.ram {
            let at = a.ram_file(&name);
            std::fs::create_dir_all(at.parent().context("RAM dir")?)?;
            std::fs::hard_link(ram, &at)?;
        }
        a.local()
            .define(w.config.to_xml(), DefinitionFormat::Xml)
            .await?;
        a.local().action(&name, Action::Start, true, None).await?;
        let serial_a = a
            .env
            .config
            .log_dir
            .join("serial")
            .join(format!("{name}.log"));
        if let Some(marker) = w.ready {
            wait_for_marker(&serial_a, marker, Duration::from_secs(120)).await?;
        }
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(a.env.record(&name)).context("the source's record")?,
        )?;
        let argv: Vec<String> = serde_json::from_value(record["argv"].clone())?;
        let raw_serial = scratch.path().join(format!("{name}-raw-serial.log"));
        let mut argv = without_fd_sets(&argv, &raw_serial)?;
        if let Some(ram) = &w.ram {
            let raw_src = scratch.path().join(format!("{name}-raw-src.ram"));
            std::fs::hard_link(ram, &raw_src)?;
            argv = with_mem_path(&argv, &raw_src)?;
        }
        let (mut raw_t, mut dmn_t, mut raw_d, mut dmn_d, mut rates) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut raw_b, mut dmn_b) = (vec![], vec![]);
        let (mut ratios, mut raw_h, mut dmn_h) = (vec![], vec![], vec![]);
        let (mut raw_p, mut dmn_p) = (vec![], vec![]);
        // Per round, paired: QEMU's downtime daemon/raw, the guest's pause (QEMU's STOP to
        // RESUME) daemon/raw, and the pause's difference in ms (a ratio of two pauses of a
        // few ms each is noise; the difference is what the daemons add).
        let (mut down_ratios, mut pause_ratios, mut pause_diffs) = (vec![], vec![], vec![]);
        // Rounds where QEMU kept its limit on the daemon path but the guest's pause did not.
        let mut over_by_daemon = 0;
        // The raw guest lives in its own pair of QEMUs, alternating direction like the daemons.
        let src_socket = scratch.path().join(format!("{name}-src.qmp"));
        let (mut raw_child, mut raw_qmp) =
            spawn_raw(&raw_argv_with(&argv, &src_socket)?, &src_socket).await?;
        raw_qmp.execute(&Cont).await?;
        if let Some(marker) = w.ready {
            wait_for_marker(&raw_serial, marker, Duration::from_secs(120)).await?;
        } else {
            // An OS-less guest migrated in its first seconds (SeaBIOS still in POST) sends its
            // RAM twice, measured here: both sources (the daemon's started first) idle past it.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let (mut here, mut there) = (&a, &b);
        for round in 0..rounds {
            let socket = scratch.path().join(format!("{name}-{round}.qmp"));
            let dst_ram = scratch.path().join(format!("{name}-raw-{round}.ram"));
            // Which path goes first alternates, so neither always follows the other's
            // clean-up (a QEMU's memory freed, page cache dropped).
            let daemons_first = round % 2 == 1;
            let early = if daemons_first {
                Some(through_daemons(here, there, &name).await?)
            } else {
                None
            };
            let (r, child, qmp) = raw(&argv, &raw_qmp, &socket, &dst_ram).await?;
            let _ = raw_child.wait().await;
            (raw_child, raw_qmp) = (child, qmp);
            raw_t.push(millis(r.total));
            raw_d.push(r.downtime_ms);
            raw_b.push(r.bytes as f64 / (1u64 << 20) as f64);
            let f = match early {
                Some(f) => f,
                None => through_daemons(here, there, &name).await?,
            };
            println!(
                "  round {round} ({}): raw {:.0}ms (QEMU {:.0}ms, down {:.0}ms, pause {:.1}ms, hand-over {:.0}ms), daemons {:.0}ms (QEMU {:.0}ms, down {:.0}ms, pause {:.1}ms, hand-over {:.0}ms), ratio {:.3}",
                if daemons_first { "daemons first" } else { "raw first" },
                millis(r.total),
                r.qemu_total_ms,
                r.downtime_ms,
                r.pause_ms,
                r.handover_ms,
                millis(f.total),
                f.qemu_total_ms,
                f.downtime_ms,
                f.pause_ms,
                f.handover_ms,
                millis(f.total) / millis(r.total)
            );
            ratios.push(millis(f.total) / millis(r.total));
            down_ratios.push(f.downtime_ms.max(1.0) / r.downtime_ms.max(1.0));
            let (raw_pause, dmn_pause) = (r.pause_ms, f.pause_ms);
            pause_ratios.push(dmn_pause.max(1.0) / raw_pause.max(1.0));
            pause_diffs.push(dmn_pause - raw_pause);
            raw_p.push(raw_pause);
            dmn_p.push(dmn_pause);
            raw_h.push(r.handover_ms);
            dmn_h.push(f.handover_ms);
            if f.downtime_ms <= 300.0 && dmn_pause > 300.0 {
                over_by_daemon += 1;
            }
            dmn_t.push(millis(f.total));
            dmn_d.push(f.downtime_ms);
            dmn_b.push(f.bytes as f64 / (1u64 << 20) as f64);
            rates.push(f.bytes as f64 / (f.qemu_total_ms / 1e3).max(1e-3));
            (here, there) = (there, here);
        }
        let _ = raw_qmp.execute(&Quit).await;
        let _ = raw_child.wait().await;
        let _ = here
            .local()
            .action(&name, Action::Destroy, true, None)
            .await;
        let (rt, dt) = (median(raw_t), median(dmn_t));
        let (rd, dd) = (median(raw_d), median(dmn_d));
        let (rh, dh) = (median(raw_h), median(dmn_h));
        let (rp, dp) = (median(raw_p), median(dmn_p));
        let ratio = median(ratios.clone());
        let spread = ratios
            .iter()
            .copied()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let rate = median(rates);
        println!(
            "{:<36} {:>8.0}ms {:>10.0}ms {:>7.3} {:>11.0}ms {:>13.0}ms {:>8} {:>8.2}",
            w.label,
            rt,
            dt,
            ratio,
            rp,
            dp,
            verdict(dp <= 300.0),
            rate / (1u64 << 30) as f64
        );
        println!(
            "  per-round ratios {:.3}..{:.3}; QEMU downtime raw {rd:.0} ms, daemons {dd:.0} ms; hand-over (not compared: its ends differ) raw {rh:.1} ms, daemons {dh:.1} ms; rounds where QEMU kept the limit and the pause did not: {over_by_daemon}",
            spread.0, spread.1
        );
        println!(
            "  paired per round (median): downtime ratio {:.3}, pause ratio {:.3}, pause daemons - raw {:+.1} ms (rounds: downtime ratios {:?})",
            median(down_ratios.clone()),
            median(pause_ratios),
            median(pause_diffs),
            down_ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
        println!(
            "  RAM sent: raw {:.0} MiB, daemons {:.0} MiB",
            median(raw_b),
            median(dmn_b)
        );
        println!(
            "  goal total within 5% of raw: {} ; 10 GiB projection at the measured wire rate: {:.1}s",
            verdict(ratio <= 1.05),
            (10u64 << 30) as f64 / rate.max(1.0)
        );
    }
    Ok(())
}
