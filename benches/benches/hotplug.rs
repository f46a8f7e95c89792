//! vCPU and memory hotplug of a running OS-less guest through the daemon (HTTP, one call each)
//! against raw QMP doing the same on a QEMU with the same argv, in the same run, paired
//! rounds: a vCPU (`query-hotpluggable-cpus` + `device_add`), a 128 MiB DIMM (`object-add` +
//! `device_add`) and a virtio-mem request (`qom-set requested-size`). The daemon's extra is
//! its checks and the runtime record written (fsync) before the answer. Goal: ≤ 2x raw.
//!
//! cargo bench -p novacron-benches --bench hotplug [-- ROUNDS]   (at most 12)

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    millis, novacrond_binary, raw_argv, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::http::{connect, request, Sender};
use novacron_benches::median;
use novacron_qmp::Client;
use serde_json::{json, Value};

const DIMM_MIB: u64 = 128;

async fn daemon_call(
    http: &mut Sender,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Duration> {
    let t = Instant::now();
    let (st, out) = request(http, method, path, Some(&body.to_string())).await?;
    if st != 200 && st != 201 {
        bail!("{method} {path}: {st} {}", String::from_utf8_lossy(&out));
    }
    Ok(t.elapsed())
}

async fn raw_vcpu(q: &Client, n: usize) -> Result<Duration> {
    let t = Instant::now();
    let slots = q.execute_raw("query-hotpluggable-cpus", None).await?;
    let free = slots
        .as_array()
        .context("slots")?
        .iter()
        .rev()
        .find(|s| s.get("qom-path").is_none())
        .context("no free CPU slot")?;
    let mut args = free["props"].clone();
    args["driver"] = free["type"].clone();
    args["id"] = json!(format!("raw-vcpu{n}"));
    q.execute_raw("device_add", Some(&args)).await?;
    Ok(t.elapsed())
}

async fn raw_dimm(q: &Client, n: usize) -> Result<Duration> {
    let t = Instant::now();
    let mem = format!("memraw{n}");
    q.execute_raw(
        "object-add",
        Some(&json!({"qom-type": "memory-backend-ram", "id": mem, "size": DIMM_MIB << 20})),
    )
    .await?;
    q.execute_raw(
        "device_add",
        Some(&json!({"driver": "pc-dimm", "id": format!("raw{n}"), "memdev": mem, "node": 0})),
    )
    .await?;
    Ok(t.elapsed())
}

async fn raw_virtio_mem(q: &Client, kib: u64) -> Result<Duration> {
    let t = Instant::now();
    q.execute_raw(
        "qom-set",
        Some(&json!({"path": "/machine/peripheral/virtiomem0", "property": "requested-size", "value": kib * 1024})),
    )
    .await?;
    Ok(t.elapsed())
}

fn report(what: &str, daemon: Vec<f64>, raw: Vec<f64>) -> bool {
    let ratios: Vec<f64> = daemon.iter().zip(&raw).map(|(d, r)| d / r).collect();
    let (d, r, ratio) = (median(daemon), median(raw), median(ratios));
    let met = ratio <= 2.0;
    println!(
        "  {what:<22} daemon {d:7.2} ms   raw {r:7.2} ms   ratio {ratio:5.2}x  goal <= 2x: {}",
        verdict(met)
    );
    met
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(8)
        .clamp(1, 12);
    let env = Env::new()?;
    let reaper = Reaper::default();
    let config = env.write_config_file()?;
    let log = env.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    reaper.daemon(daemon.id());
    reaper.records(env.records_dir());
    let socket = env.dir.path().join("run").join("novacrond.sock");
    wait_until("the daemon socket", Duration::from_secs(20), || {
        socket.exists()
    })?;
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    // Room for every round: a vCPU and a DIMM each, plus the virtio-mem device (<memory> is
    // the 64 MiB boot RAM plus its 512 MiB, as libvirt counts it).
    let maxcpus = rounds + 1;
    let max_mib = 64 + 512 + DIMM_MIB * rounds as u64;
    let xml = format!(
        "<domain type='{virt}'><name>bench</name>
           <maxMemory slots='{}' unit='MiB'>{max_mib}</maxMemory><memory unit='MiB'>576</memory>
           <vcpu current='1'>{maxcpus}</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><memory model='virtio-mem'><target><size unit='MiB'>512</size>
             <requested unit='MiB'>0</requested></target></memory></devices></domain>",
        rounds + 1
    );
    let curl = |method: &str, path: &str, args: &[&str]| -> Result<()> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-f",
                "--unix-socket",
                socket.to_str().unwrap_or_default(),
                "-X",
                method,
            ])
            .args(args)
            .arg(format!("http://localhost{path}"))
            .output()?;
        if !out.status.success() {
            bail!(
                "{method} {path}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    curl(
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    )?;
    curl("POST", "/v1/domains/bench/start", &[])?;
    let mut http = connect(&socket).await?;
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record("bench"))?)?;
    let raw_sock = env.dir.path().join("raw.qmp");
    let argv = raw_argv(&record, &raw_sock)?;
    let mut raw = Command::new(&argv[0])
        .args(&argv[1..])
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("raw QEMU")?;
    wait_until("the raw QEMU monitor", Duration::from_secs(10), || {
        raw_sock.exists()
    })?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q = Client::connect(&raw_sock).await?;
    q.execute_raw("cont", None).await?;
    let (mut dv, mut rv, mut dd, mut rd, mut dm, mut rm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let dimm = json!({
        "xml": format!("<memory model='dimm'><target><size unit='MiB'>{DIMM_MIB}</size></target></memory>"),
        "live": true
    });
    for n in 0..rounds {
        // Alternate who goes first, so neither always meets a warmer cache.
        let first_daemon = n % 2 == 0;
        let vcpus = json!({ "count": n + 2, "live": true });
        let kib = ((n as u64 % 4) + 1) * 32 * 1024;
        let request = json!({ "requested_kib": kib, "live": true });
        for daemon_turn in [first_daemon, !first_daemon] {
            if daemon_turn {
                dv.push(millis(
                    daemon_call(&mut http, "PUT", "/v1/domains/bench/vcpus", &vcpus).await?,
                ));
                dd.push(millis(
                    daemon_call(&mut http, "POST", "/v1/domains/bench/memory/devices", &dimm)
                        .await?,
                ));
                dm.push(millis(
                    daemon_call(
                        &mut http,
                        "PUT",
                        "/v1/domains/bench/memory/devices/virtiomem0",
                        &request,
                    )
                    .await?,
                ));
            } else {
                rv.push(millis(raw_vcpu(&q, n).await?));
                rd.push(millis(raw_dimm(&q, n).await?));
                rm.push(millis(raw_virtio_mem(&q, kib).await?));
            }
        }
    }
    println!("hotplug of a running guest, {rounds} paired rounds (median ms; ratio: median of per-round ratios)");
    report("vCPU", dv, rv);
    report("DIMM 128 MiB", dd, rd);
    report("virtio-mem request", dm, rm);
    let _ = raw.kill();
    let _ = raw.wait();
    Ok(())
}
