//! Disks of a running OS-less guest through the daemon (HTTP, one call each) against raw QMP
//! doing the same work on a QEMU with the same argv, in the same run, paired rounds (the
//! order inside a round alternates):
//! - attach: `blockdev-add` (file), `blockdev-add` (qcow2), `device_add` (virtio-blk-pci on a
//!   free PCIe root port) against `POST /v1/domains/{name}/disks` (`--live`);
//! - resize: `block_resize` against `POST .../disks/{target}/resize`;
//! - throttle: `block_set_io_throttle` against `PUT .../disks/{target}/iotune`.
//!
//! Goal: the daemon ≤ 2x raw for each (median of the per-round ratios). An OS-less guest never
//! acknowledges an unplug, so every attach round takes a root port of its own
//! (`hotplug_slots = 24`).
//!
//! cargo bench -p novacron-benches --bench disk_hotplug [-- ROUNDS]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    millis, novacrond_binary, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::http::{connect, request, Sender};
use novacron_benches::median;
use novacron_qmp::Client;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// Root ports a bench guest gets (the daemon's maximum); one per attach round.
const SLOTS: usize = 24;

fn qemu_img(args: &[&str]) -> Result<()> {
    let out = Command::new("qemu-img").args(args).output()?;
    if !out.status.success() {
        bail!(
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The recorded argv for a raw QEMU: its own monitor socket, no inherited descriptors.
fn raw_argv(record: &Value, raw_socket: &Path) -> Result<Vec<String>> {
    let raw = raw_socket.to_str().context("utf-8")?;
    let mut out = Vec::new();
    let mut args = record["argv"].as_array().context("argv")?.iter();
    while let Some(a) = args.next() {
        let a = a.as_str().unwrap_or_default();
        if a == "-add-fd" {
            args.next();
            continue;
        }
        out.push(match a.strip_prefix("socket,id=qmp,") {
            Some(rest) if rest.starts_with("fd=") => {
                let tail = rest.split_once(',').map_or("", |(_, t)| t);
                format!("socket,id=qmp,path={raw},{tail}")
            }
            _ => a.to_owned(),
        });
    }
    Ok(out)
}

/// The ids of the argv's PCIe root ports (`pci.N`), in order.
fn root_ports(argv: &[String]) -> Vec<String> {
    argv.iter()
        .filter(|a| a.starts_with("pcie-root-port"))
        .filter_map(|a| {
            a.split(',')
                .find_map(|kv| kv.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

async fn daemon_call(
    http: &mut Sender,
    method: &str,
    path: &str,
    body: &Value,
    want: u16,
) -> Result<Duration> {
    let body = body.to_string();
    let t = Instant::now();
    let (st, out) = request(http, method, path, Some(&body)).await?;
    let took = t.elapsed();
    if st != want {
        bail!("{method} {path}: {st} {}", String::from_utf8_lossy(&out));
    }
    Ok(took)
}

async fn raw_attach(q: &Client, image: &Path, n: usize, port: &str) -> Result<Duration> {
    let node = format!("raw{n}");
    let t = Instant::now();
    q.execute_raw(
        "blockdev-add",
        Some(
            &json!({"driver": "file", "node-name": format!("{node}-storage"),
                     "filename": image.to_str().context("utf-8")?}),
        ),
    )
    .await?;
    q.execute_raw(
        "blockdev-add",
        Some(&json!({"driver": "qcow2", "node-name": node, "file": format!("{node}-storage")})),
    )
    .await?;
    q.execute_raw(
        "device_add",
        Some(
            &json!({"driver": "virtio-blk-pci", "id": format!("virtio-raw{n}"), "bus": port,
                     "addr": "0x0", "drive": node, "write-cache": "on"}),
        ),
    )
    .await?;
    Ok(t.elapsed())
}

async fn timed(q: &Client, cmd: &str, args: Value) -> Result<Duration> {
    let t = Instant::now();
    q.execute_raw(cmd, Some(&args)).await?;
    Ok(t.elapsed())
}

/// One figure: paired rounds, daemon and raw alternating who goes first.
struct Pairs {
    daemon: Vec<f64>,
    raw: Vec<f64>,
}

impl Pairs {
    fn new() -> Pairs {
        Pairs {
            daemon: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn push(&mut self, d: Duration, r: Duration) {
        self.daemon.push(millis(d));
        self.raw.push(millis(r));
    }

    fn print(&self, what: &str, goal: f64) -> bool {
        let ratios: Vec<f64> = self
            .daemon
            .iter()
            .zip(&self.raw)
            .map(|(d, r)| d / r)
            .collect();
        let (d, r, ratio) = (
            median(self.daemon.clone()),
            median(self.raw.clone()),
            median(ratios),
        );
        let met = ratio <= goal;
        println!(
            "  {what:<9} daemon {d:7.2} ms   raw QMP {r:7.2} ms   ratio {ratio:5.2}x  \
             goal <= {goal}x: {}",
            verdict(met)
        );
        met
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let env = Env::new()?;
    let reaper = Reaper::default();
    let images = env.dir.path().join("state").join("images");
    std::fs::create_dir_all(&images)?;
    let attach_rounds = rounds.min(SLOTS - 1);
    let image = |who: &str, n: usize| images.join(format!("{who}{n}.qcow2"));
    for n in 0..attach_rounds {
        for who in ["d", "r"] {
            let p = image(who, n);
            qemu_img(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "16M"])?;
        }
    }
    let config = env.write_config_file_with(&format!("hotplug_slots = {SLOTS}\n"))?;
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
    let xml = format!(
        "<domain type='{virt}'><name>bench</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
         </domain>"
    );
    let out = Command::new("curl")
        .args(["-sS", "-f", "--unix-socket"])
        .arg(&socket)
        .args(["-H", "Content-Type: application/xml", "--data-binary", &xml])
        .arg("http://localhost/v1/domains")
        .output()?;
    if !out.status.success() {
        bail!("define: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut http = connect(&socket).await?;
    let (st, out) = request(&mut http, "POST", "/v1/domains/bench/start", None).await?;
    if st != 200 {
        bail!("start: {st} {}", String::from_utf8_lossy(&out));
    }
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record("bench"))?)?;
    let raw_sock = env.dir.path().join("raw.qmp");
    let argv = raw_argv(&record, &raw_sock)?;
    let ports = root_ports(&argv);
    if ports.len() < attach_rounds {
        bail!(
            "{} root ports in the argv, {attach_rounds} needed",
            ports.len()
        );
    }
    let mut raw = Command::new(&argv[0])
        .args(&argv[1..])
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("raw QEMU")?;
    wait_until("the raw QEMU monitor", Duration::from_secs(10), || {
        raw_sock.exists()
    })?;
    let q = loop {
        match Client::connect(&raw_sock).await {
            Ok(q) => break q,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    q.execute_raw("cont", None).await?;

    let mut attach = Pairs::new();
    for (n, port) in ports.iter().enumerate().take(attach_rounds) {
        // vdb, vdc, ...: the daemon's targets.
        let dev = format!("vd{}", char::from(b'b' + u8::try_from(n)?));
        let body = json!({
            "xml": format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='{dev}' bus='virtio'/></disk>",
                image("d", n).display()
            ),
            "live": true,
        });
        let path = "/v1/domains/bench/disks";
        let (d, r) = if n % 2 == 0 {
            let d = daemon_call(&mut http, "POST", path, &body, 201).await?;
            (d, raw_attach(&q, &image("r", n), n, port).await?)
        } else {
            let r = raw_attach(&q, &image("r", n), n, port).await?;
            (daemon_call(&mut http, "POST", path, &body, 201).await?, r)
        };
        attach.push(d, r);
    }

    // Resize and throttle: vdb (daemon) and raw0 (raw), the first disks attached above.
    let mut resize = Pairs::new();
    for n in 0..rounds {
        let size = 16 * MIB + (n as u64 + 1) * MIB;
        let body = json!({ "size": size });
        let path = "/v1/domains/bench/disks/vdb/resize";
        let args = json!({"node-name": "raw0", "size": size});
        let (d, r) = if n % 2 == 0 {
            let d = daemon_call(&mut http, "POST", path, &body, 200).await?;
            (d, timed(&q, "block_resize", args).await?)
        } else {
            let r = timed(&q, "block_resize", args).await?;
            (daemon_call(&mut http, "POST", path, &body, 200).await?, r)
        };
        resize.push(d, r);
    }

    let mut throttle = Pairs::new();
    for n in 0..rounds {
        let bps = (n as u64 + 1) * MIB;
        let body = json!({ "total_bytes_sec": bps, "live": true });
        let path = "/v1/domains/bench/disks/vdb/iotune";
        let args = json!({
            "id": "/machine/peripheral/virtio-raw0/virtio-backend",
            "bps": bps, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0,
        });
        let (d, r) = if n % 2 == 0 {
            let d = daemon_call(&mut http, "PUT", path, &body, 200).await?;
            (d, timed(&q, "block_set_io_throttle", args).await?)
        } else {
            let r = timed(&q, "block_set_io_throttle", args).await?;
            (daemon_call(&mut http, "PUT", path, &body, 200).await?, r)
        };
        throttle.push(d, r);
    }

    println!(
        "disks of a running OS-less guest ({virt}), paired rounds: attach {attach_rounds}, \
         resize/throttle {rounds} (medians)"
    );
    attach.print("attach", 2.0);
    resize.print("resize", 2.0);
    throttle.print("throttle", 2.0);
    let _ = raw.kill();
    let _ = raw.wait();
    Ok(())
}
