//! Disk snapshot of a running OS-less guest through the daemon (HTTP, one call) against raw
//! QMP doing the same work on a QEMU with the same argv, in the same run: `qemu-img create`
//! of the overlay, `add-fd`, two `blockdev-add`s and one `transaction` of `blockdev-snapshot`.
//! Goal: the daemon ≤ 1.2x raw.
//!
//! cargo bench -p novacron-benches --bench snapshot [-- ROUNDS]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{
    millis, novacrond_binary, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::http::{connect, request};
use novacron_benches::median;
use novacron_qmp::Client;
use serde_json::{json, Value};

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

/// The recorded argv with the disk's fd set replaced by the raw copy's path.
fn raw_argv(record: &Value, raw_socket: &Path, disk: &Path) -> Result<Vec<String>> {
    let raw = raw_socket.to_str().context("utf-8")?;
    let mut out = Vec::new();
    let mut args = record["argv"].as_array().context("argv")?.iter();
    while let Some(a) = args.next() {
        let a = a.as_str().unwrap_or_default();
        if a == "-add-fd" {
            args.next();
            continue;
        }
        let a = match a.strip_prefix("socket,id=qmp,") {
            Some(rest) if rest.starts_with("fd=") => {
                let tail = rest.split_once(',').map_or("", |(_, t)| t);
                format!("socket,id=qmp,path={raw},{tail}")
            }
            _ => a.to_owned(),
        };
        let a = match a.find("/dev/fdset/") {
            Some(i) => {
                let end = a[i..].find(',').map_or(a.len(), |e| i + e);
                format!("{}{}{}", &a[..i], disk.display(), &a[end..])
            }
            None => a,
        };
        out.push(a);
    }
    Ok(out)
}

async fn raw_snapshot(
    q: &Client,
    dir: &Path,
    n: usize,
    active: &mut String,
    size: u64,
) -> Result<Duration> {
    let t = Instant::now();
    let overlay = dir.join(format!("raw-ov{n}.qcow2"));
    let backing = active.clone();
    let fmt = if n == 0 { "raw" } else { "qcow2" };
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        &backing,
        "-F",
        fmt,
        overlay.to_str().context("utf-8")?,
        &size.to_string(),
    ])?;
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&overlay)?
        .into();
    let set = q.add_fd(fd.as_fd(), None, None).await?.fdset_id;
    let node = format!("raw{n}");
    q.execute_raw(
        "blockdev-add",
        Some(&json!({"driver": "file", "node-name": format!("{node}-storage"), "filename": format!("/dev/fdset/{set}")})),
    )
    .await?;
    q.execute_raw(
        "blockdev-add",
        Some(&json!({"driver": "qcow2", "node-name": node, "file": format!("{node}-storage"), "backing": null})),
    )
    .await?;
    let top = if n == 0 {
        "disk0".to_owned()
    } else {
        format!("raw{}", n - 1)
    };
    q.execute_raw(
        "transaction",
        Some(&json!({"actions": [{"type": "blockdev-snapshot", "data": {"node": top, "overlay": node}}]})),
    )
    .await?;
    *active = overlay.display().to_string();
    Ok(t.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let env = Env::new()?;
    let reaper = Reaper::default();
    let images = env.dir.path().join("state").join("images");
    std::fs::create_dir_all(&images)?;
    let size: u64 = 64 << 20;
    let base = images.join("base.raw");
    let raw_base = images.join("raw-base.raw");
    qemu_img(&["create", "-q", "-f", "raw", base.to_str().unwrap(), "64M"])?;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        raw_base.to_str().unwrap(),
        "64M",
    ])?;
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
    let xml = format!(
        "<domain type='{virt}'><name>bench</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
           <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        base.display()
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
    let argv = raw_argv(&record, &raw_sock, &raw_base)?;
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
    let mut active = raw_base.display().to_string();
    let (mut daemon_ms, mut raw_ms) = (Vec::new(), Vec::new());
    for n in 0..rounds {
        let t = Instant::now();
        let body = format!("{{\"name\":\"b{n}\"}}");
        let (st, out) = request(
            &mut http,
            "POST",
            "/v1/domains/bench/snapshots",
            Some(&body),
        )
        .await?;
        if st != 201 {
            bail!("snapshot: {st} {}", String::from_utf8_lossy(&out));
        }
        daemon_ms.push(millis(t.elapsed()));
        raw_ms.push(millis(
            raw_snapshot(&q, &images, n, &mut active, size).await?,
        ));
    }
    let ratios: Vec<f64> = daemon_ms.iter().zip(&raw_ms).map(|(d, r)| d / r).collect();
    let (d, r, ratio) = (median(daemon_ms), median(raw_ms), median(ratios));
    println!("disk snapshot of a running guest, {rounds} paired rounds (median ms)");
    println!("  daemon (HTTP, one call)   {d:8.2}");
    println!("  raw QMP + qemu-img        {r:8.2}");
    println!(
        "  ratio (median of paired)  {ratio:8.2}x  goal <= 1.2x: {}",
        verdict(ratio <= 1.2)
    );
    let _ = raw.kill();
    let _ = raw.wait();
    Ok(())
}
