//! Snapshots with memory of a 1 GiB OS-less guest whose RAM holds 512 MiB of random bytes (a
//! private memory-backend-file over a prefilled file, as the migration bench does: an OS-less
//! guest's own RAM is mostly zero pages, which QEMU writes as a flag each), through the daemon
//! (HTTP) against raw QMP on a QEMU with the same argv in the same process, paired rounds, the
//! order alternating, medians of the per-round ratios:
//!
//! - paused snapshot: `POST .../snapshots {"memory": "paused"}` (stop, the disk's overlay and
//!   transaction, `migrate` to a daemon-opened fd, fsync, rename, cont) against raw `stop`,
//!   `getfd`, `migrate fd:`, MIGRATION completed, fsync, `cont`. Goal <= 1.1x.
//! - revert: `POST .../snapshots/{snap}/revert` (SIGKILL of the old QEMU, a fresh overlay, a
//!   new QEMU with `-incoming defer`, `migrate-incoming fd:`, cont) against raw SIGKILL, spawn
//!   with `-incoming defer`, `migrate-incoming fd:`, `cont`. Goal <= 1.2x.
//! - live snapshot: the guest's pause, the daemon's `downtime_ms` (QEMU's STOP to RESUME
//!   events, the daemon's stop and disk transaction included) against QEMU's own `downtime`
//!   of a raw background snapshot. Goal <= 50 ms. Needs QEMU as root (userfaultfd).
//!
//! cargo bench -p novacron-benches --bench ram_snapshot [-- ROUNDS]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    millis, novacrond_binary, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::http::{connect, request};
use novacron_benches::median;
use novacron_qmp::commands::{
    Cont, Migrate, MigrateIncoming, MigrateSetCapabilities, MigrationCapabilityStatus,
    QueryMigrate, Stop,
};
use novacron_qmp::qapi::{MigrationCapability, MigrationStatus};
use novacron_qmp::{Client as Qmp, EventKind};
use serde_json::{json, Value};

const RANDOM_MIB: u64 = 512;
const GUEST_GIB: u64 = 1;

fn random_ram_file(path: &Path, size: u64) -> Result<()> {
    use std::io::{Read, Write};
    let mut random = std::fs::File::open("/dev/urandom")?.take(RANDOM_MIB << 20);
    let mut file = std::fs::File::create(path)?;
    std::io::copy(&mut random, &mut file)?;
    file.set_len(size)?;
    file.flush()?;
    Ok(())
}

/// The daemon's argv for a raw QEMU: its own monitor at `socket`, every fd set replaced by
/// `disk` (the guest has one disk and no console), its RAM file `ram`.
fn raw_argv(record: &Value, socket: &Path, disk: &Path, ram: &Path) -> Result<Vec<String>> {
    let (sock, disk, ram) = (
        socket.to_str().context("utf-8")?,
        disk.to_str().context("utf-8")?,
        ram.to_str().context("utf-8")?,
    );
    let mut out = Vec::new();
    let mut args = record["argv"].as_array().context("argv")?.iter();
    while let Some(a) = args.next() {
        let a = a.as_str().unwrap_or_default();
        if a == "-add-fd" {
            args.next();
            continue;
        }
        let mut a = match a.strip_prefix("socket,id=qmp,") {
            Some(rest) if rest.starts_with("fd=") => {
                let tail = rest.split_once(',').map_or("", |(_, t)| t);
                format!("socket,id=qmp,path={sock},{tail}")
            }
            _ => a.to_owned(),
        };
        if let Some(i) = a.find("/dev/fdset/") {
            let end = a[i..].find(',').map_or(a.len(), |e| i + e);
            a = format!("{}{disk}{}", &a[..i], &a[end..]);
        }
        if a.starts_with("memory-backend-file") {
            if let Some(i) = a.find("mem-path=") {
                let start = i + "mem-path=".len();
                let end = a[start..].find(',').map_or(a.len(), |e| start + e);
                a = format!("{}{ram}{}", &a[..start], &a[end..]);
            }
        }
        out.push(a);
    }
    Ok(out)
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

async fn caps(q: &Qmp, background: bool) -> Result<()> {
    q.execute(&MigrateSetCapabilities {
        capabilities: vec![
            MigrationCapabilityStatus {
                capability: MigrationCapability::Events,
                state: true,
            },
            MigrationCapabilityStatus {
                capability: MigrationCapability::BackgroundSnapshot,
                state: background,
            },
        ],
    })
    .await?;
    Ok(())
}

/// `migrate` (or `migrate-incoming`) to/from `file` by fd, waited for by MIGRATION events.
async fn migrate_fd(q: &Qmp, file: &std::fs::File, incoming: bool) -> Result<()> {
    let mut events = q.subscribe();
    q.send_fd("bench-ram", file.as_fd()).await?;
    if incoming {
        q.execute(&MigrateIncoming {
            uri: "fd:bench-ram".into(),
        })
        .await?;
    } else {
        q.execute(&Migrate {
            uri: "fd:bench-ram".into(),
            resume: None,
        })
        .await?;
    }
    loop {
        let e = events
            .wait_for(Duration::from_secs(600), |e| {
                matches!(e.kind, EventKind::Migration { .. })
            })
            .await?;
        match &e.kind {
            EventKind::Migration {
                status: MigrationStatus::Completed,
            } => return Ok(()),
            EventKind::Migration {
                status: MigrationStatus::Failed | MigrationStatus::Cancelled,
            } => bail!("raw migration failed"),
            _ => {}
        }
    }
}

async fn raw_save(q: &Qmp, file: &Path) -> Result<Duration> {
    let t = Instant::now();
    let f = std::fs::File::create(file)?;
    q.execute(&Stop).await?;
    migrate_fd(q, &f, false).await?;
    let f = tokio::task::spawn_blocking(move || f.sync_all().map(|()| f)).await??;
    drop(f);
    q.execute(&Cont).await?;
    Ok(t.elapsed())
}

async fn raw_revert(
    old: &mut tokio::process::Child,
    argv: &[String],
    socket: &Path,
    file: &Path,
) -> Result<(Duration, tokio::process::Child, Qmp)> {
    let t = Instant::now();
    old.kill().await?;
    let mut argv = argv.to_vec();
    argv.extend(["-incoming".into(), "defer".into()]);
    let (child, q) = spawn_raw(&argv, socket).await?;
    caps(&q, false).await?;
    let f = std::fs::File::open(file)?;
    migrate_fd(&q, &f, true).await?;
    q.execute(&Cont).await?;
    Ok((t.elapsed(), child, q))
}

/// A raw background snapshot: QEMU's own downtime figure (ms).
async fn raw_live(q: &Qmp, file: &Path) -> Result<f64> {
    caps(q, true).await?;
    let f = std::fs::File::create(file)?;
    migrate_fd(q, &f, false).await?;
    let info = q.execute(&QueryMigrate).await?;
    caps(q, false).await?;
    Ok(info.downtime.unwrap_or_default() as f64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let env = Env::new()?;
    let reaper = Reaper::default();
    let scratch = env.dir.path().join("scratch");
    let images = env.dir.path().join("state").join("images");
    std::fs::create_dir_all(&images)?;
    std::fs::create_dir_all(&scratch)?;
    let name = "ramsnap-bench";
    let ram = scratch.join("random.ram");
    {
        let ram = ram.clone();
        tokio::task::spawn_blocking(move || random_ram_file(&ram, GUEST_GIB << 30)).await??;
    }
    let daemon_ram: PathBuf = env.dir.path().join("ram").join(name).join("pc.ram");
    std::fs::create_dir_all(daemon_ram.parent().context("ram dir")?)?;
    std::fs::hard_link(&ram, &daemon_ram)?;
    let raw_ram = scratch.join("raw.ram");
    std::fs::hard_link(&ram, &raw_ram)?;
    let disk = images.join("disk.raw");
    let raw_disk = scratch.join("raw-disk.raw");
    for d in [&disk, &raw_disk] {
        std::fs::File::create(d)?.set_len(64 << 20)?;
    }
    let config = env.write_config_file_with(&format!(
        "memory_backing_dir = {:?}\nqemu_user = \"root\"\n",
        env.dir.path().join("ram")
    ))?;
    let log = env.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    reaper.daemon(daemon.id());
    reaper.records(env.records_dir());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the daemon socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{virt}'><name>{name}</name><memory unit='GiB'>{GUEST_GIB}</memory>
           <vcpu>1</vcpu>
           <memoryBacking><source type='file'/><access mode='private'/></memoryBacking>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        disk.display()
    );
    let mut http = connect(&socket).await?;
    macro_rules! http {
        ($method:expr, $path:expr, $body:expr, $want:expr) => {{
            let body: Option<String> = $body;
            let (st, out) = request(&mut http, $method, &$path, body.as_deref()).await?;
            if !$want.contains(&st) {
                bail!(
                    "{} {}: {st} {}",
                    $method,
                    $path,
                    String::from_utf8_lossy(&out)
                );
            }
            serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null)
        }};
    }
    let define = |xml: &str| -> Result<()> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-f",
                "--unix-socket",
                socket.to_str().unwrap_or_default(),
                "-X",
                "POST",
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                xml,
                "http://localhost/v1/domains",
            ])
            .output()?;
        if !out.status.success() {
            bail!("define: {}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(())
    };
    define(&xml)?;
    http!(
        "POST",
        format!("/v1/domains/{name}/start"),
        None,
        [200, 204]
    );
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record(name))?)?;
    let raw_sock = scratch.join("raw.qmp");
    let argv = raw_argv(&record, &raw_sock, &raw_disk, &raw_ram)?;
    let (mut raw_child, mut q) = spawn_raw(&argv, &raw_sock).await?;
    q.execute(&Cont).await?;
    caps(&q, false).await?;
    q.execute_raw(
        "migrate-set-parameters",
        Some(&json!({"max-bandwidth": i64::MAX})),
    )
    .await?;
    // Both guests past SeaBIOS's POST before the first round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snaps = format!("/v1/domains/{name}/snapshots");
    let (mut save_d, mut save_r, mut save_x) = (vec![], vec![], vec![]);
    let (mut rev_d, mut rev_r, mut rev_x) = (vec![], vec![], vec![]);
    let mut state_bytes = 0;
    for n in 0..rounds {
        let daemon_first = n % 2 == 0;
        let raw_file = scratch.join(format!("raw-{n}.ram"));
        // Paused snapshot.
        let (mut d, mut r) = (0.0, 0.0);
        for side in [daemon_first, !daemon_first] {
            if side {
                let t = Instant::now();
                let v = http!(
                    "POST",
                    snaps.clone(),
                    Some(json!({"name": format!("p{n}"), "memory": "paused"}).to_string()),
                    [201]
                );
                d = millis(t.elapsed());
                if let Some(f) = v["memory_file"].as_str() {
                    state_bytes = std::fs::metadata(f).map_or(0, |m| m.len());
                }
            } else {
                r = millis(raw_save(&q, &raw_file).await?);
            }
        }
        save_d.push(d);
        save_r.push(r);
        save_x.push(d / r);
        // Revert to it.
        for side in [daemon_first, !daemon_first] {
            if side {
                let t = Instant::now();
                http!("POST", format!("{snaps}/p{n}/revert"), None, [204]);
                d = millis(t.elapsed());
            } else {
                let (t, child, nq) =
                    raw_revert(&mut raw_child, &argv, &raw_sock, &raw_file).await?;
                (raw_child, q) = (child, nq);
                q.execute_raw(
                    "migrate-set-parameters",
                    Some(&json!({"max-bandwidth": i64::MAX})),
                )
                .await?;
                r = millis(t);
            }
        }
        rev_d.push(d);
        rev_r.push(r);
        rev_x.push(d / r);
        // Clean-up, not measured: p{n} goes again (an active commit of the revert's overlay
        // into the raw base, which QEMU once refused with 'Failed to get "write" lock').
        let _ = std::fs::remove_file(&raw_file);
        http!("DELETE", format!("{snaps}/p{n}"), None, [204]);
        println!(
            "  round {n}: paused {:.0}/{:.0} ms, revert {:.0}/{:.0} ms (daemon/raw)",
            save_d[n], save_r[n], rev_d[n], rev_r[n]
        );
    }
    let _ = raw_child.kill().await;
    // Live snapshots: QEMU 7.2 write-protects only anonymous RAM, so a second guest of the
    // same size without the memory file (its RAM mostly zero pages; the pause is the devices'
    // save, which does not depend on the RAM's contents).
    let live_name = "ramsnap-live";
    let live_disk = images.join("live.raw");
    std::fs::File::create(&live_disk)?.set_len(64 << 20)?;
    let xml = format!(
        "<domain type='{virt}'><name>{live_name}</name><memory unit='GiB'>{GUEST_GIB}</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        live_disk.display()
    );
    define(&xml)?;
    http!(
        "POST",
        format!("/v1/domains/{live_name}/start"),
        None,
        [200, 204]
    );
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record(live_name))?)?;
    let argv = raw_argv(&record, &raw_sock, &raw_disk, &raw_ram)?;
    let (mut raw_child, q) = spawn_raw(&argv, &raw_sock).await?;
    q.execute(&Cont).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snaps = format!("/v1/domains/{live_name}/snapshots");
    let (mut live_d, mut live_r) = (vec![], vec![]);
    for n in 0..rounds {
        let raw_file = scratch.join(format!("raw-live-{n}.ram"));
        for side in [n % 2 == 0, n % 2 == 1] {
            if side {
                let v = http!(
                    "POST",
                    snaps.clone(),
                    Some(json!({"name": format!("l{n}"), "memory": "live"}).to_string()),
                    [201]
                );
                live_d.push(v["downtime_ms"].as_u64().unwrap_or_default() as f64);
            } else {
                live_r.push(raw_live(&q, &raw_file).await?);
            }
        }
        let _ = std::fs::remove_file(&raw_file);
        http!("DELETE", format!("{snaps}/l{n}"), None, [204]);
        println!(
            "  round {n}: live pause {:.1}/{:.1} ms (daemon/raw)",
            live_d[n], live_r[n]
        );
    }
    let (sx, rx) = (median(save_x), median(rev_x));
    let live = median(live_d.clone());
    println!(
        "snapshots with memory of a {GUEST_GIB} GiB OS-less guest ({RANDOM_MIB} MiB random; state file {} MiB), {rounds} paired rounds, medians",
        state_bytes >> 20
    );
    println!(
        "  paused snapshot   daemon {:8.1} ms  raw {:8.1} ms  ratio {sx:5.2}x  goal <= 1.1x: {}",
        median(save_d),
        median(save_r),
        verdict(sx <= 1.1)
    );
    println!(
        "  revert            daemon {:8.1} ms  raw {:8.1} ms  ratio {rx:5.2}x  goal <= 1.2x: {}",
        median(rev_d),
        median(rev_r),
        verdict(rx <= 1.2)
    );
    println!(
        "  live pause (anon) daemon {live:8.1} ms  raw {:8.1} ms (QEMU's downtime)  goal <= 50 ms: {}",
        median(live_r),
        verdict(live <= 50.0)
    );
    let _ = raw_child.kill().await;
    for l in std::fs::read_to_string(&log)?.lines() {
        if l.contains("reverted to a snapshot with memory") {
            println!("  daemon log: {l}");
        }
    }
    Ok(())
}
