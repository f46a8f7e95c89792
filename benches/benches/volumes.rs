//! Volumes through the daemon against the same work done directly, in this run:
//! - listing 1000 volumes (`GET /v1/pools/default/volumes`, headers read by the daemon) against
//!   `qemu-img info` per file (what a daemon that shells out pays; measured on 100, scaled);
//! - a linked clone (`POST .../clone {"linked": true}`) against `qemu-img create -b` run here;
//! - upload throughput (`PUT .../data`, 256 MiB of non-zero bytes) against a plain local write
//!   plus fsync of the same bytes into the same file system.
//!
//! cargo build --release -p novacrond && cargo bench -p novacron-benches --bench volumes

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use novacron_benches::daemon::{
    millis, novacrond_binary, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::http::{connect, request};
use novacron_benches::{median, print_table};

const VOLUMES: usize = 1000;
const ROUNDS: usize = 15;
const UPLOAD: usize = 256 << 20;

fn qemu_img(args: &[&str]) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .context("qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn upload(socket: &Path, path: &str, data: Bytes) -> Result<Duration> {
    let mut s = connect(socket).await?;
    s.ready().await?;
    let req = hyper::Request::builder()
        .method("PUT")
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/octet-stream")
        .body(Full::new(data))?;
    let t = Instant::now();
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let took = t.elapsed();
    if status != 200 {
        bail!("upload: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let reaper = Reaper::default();
    let env = Env::new()?;
    let config = env.write_config_file()?;
    let log = env.dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    reaper.daemon(daemon.id());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the daemon's socket", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    let images = env.config.state_dir.join("images");

    // 1000 volumes: copies of one small qcow2 (and every tenth raw).
    let seed = images.join("seed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        seed.to_str().unwrap_or_default(),
        "1G",
    ])?;
    for i in 1..VOLUMES {
        if i % 10 == 0 {
            std::fs::File::create(images.join(format!("v{i:04}.raw")))?.set_len(1 << 30)?;
        } else {
            std::fs::copy(&seed, images.join(format!("v{i:04}.qcow2")))?;
        }
    }
    let mut s = connect(&socket).await?;
    let (status, body) = request(&mut s, "GET", "/v1/pools/default/volumes", None).await?;
    let listed = serde_json::from_slice::<serde_json::Value>(&body)?["volumes"]
        .as_array()
        .map_or(0, Vec::len);
    if status != 200 || listed != VOLUMES {
        bail!("listing: HTTP {status}, {listed} volumes");
    }
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let names: Vec<_> = std::fs::read_dir(&images)?
        .flatten()
        .map(|e| e.path())
        .take(100)
        .collect();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        request(&mut s, "GET", "/v1/pools/default/volumes", None).await?;
        ours.push(millis(t.elapsed()));
        let t = Instant::now();
        for p in &names {
            qemu_img(&[
                "info",
                "-U",
                "--output=json",
                p.to_str().unwrap_or_default(),
            ])?;
        }
        base.push(millis(t.elapsed()) * (VOLUMES as f64 / names.len() as f64));
    }
    let (list_ms, list_base) = (median(ours), median(base));

    // Linked clones of one base, against qemu-img create -b here.
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let seed_path = seed.to_str().unwrap_or_default().to_owned();
    for i in 0..ROUNDS {
        let body = format!("{{\"name\": \"l{i:03}.qcow2\", \"linked\": true}}");
        let t = Instant::now();
        let (status, answer) = request(
            &mut s,
            "POST",
            "/v1/pools/default/volumes/seed.qcow2/clone",
            Some(Box::leak(body.into_boxed_str())),
        )
        .await?;
        ours.push(millis(t.elapsed()));
        if status != 201 {
            bail!("clone: HTTP {status}: {}", String::from_utf8_lossy(&answer));
        }
        let overlay = env.dir.path().join(format!("b{i:03}.qcow2"));
        let t = Instant::now();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &seed_path,
            "-F",
            "qcow2",
            overlay.to_str().unwrap_or_default(),
        ])?;
        base.push(millis(t.elapsed()));
    }
    let (clone_ms, clone_base) = (median(ours), median(base));

    // Upload vs a local write (+fsync) of the same bytes.
    let data: Bytes = (0..UPLOAD)
        .map(|i| (i % 253) as u8 + 1)
        .collect::<Vec<u8>>()
        .into();
    let (status, _) = request(
        &mut s,
        "POST",
        "/v1/pools/default/volumes",
        Some(r#"{"name": "up.img", "capacity": 1048576, "format": "raw"}"#),
    )
    .await?;
    if status != 201 {
        bail!("create up.img: HTTP {status}");
    }
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..5 {
        let took = upload(
            &socket,
            "/v1/pools/default/volumes/up.img/data",
            data.clone(),
        )
        .await?;
        ours.push(UPLOAD as f64 / took.as_secs_f64() / 1e6);
        let local = images.join(".local-write");
        let d = data.clone();
        let took = tokio::task::spawn_blocking(move || -> Result<Duration> {
            use std::io::Write;
            let t = Instant::now();
            let mut f = std::fs::File::create(&local)?;
            f.write_all(&d)?;
            f.sync_all()?;
            let took = t.elapsed();
            std::fs::remove_file(&local)?;
            Ok(took)
        })
        .await??;
        base.push(UPLOAD as f64 / took.as_secs_f64() / 1e6);
    }
    let (up_mbs, up_base) = (median(ours), median(base));

    print_table(
        "volumes (ms; upload in MB/s)",
        &[
            ("list 1000 volumes", list_ms, list_base, list_ms / list_base),
            ("linked clone", clone_ms, clone_base, clone_ms / clone_base),
            ("upload 256 MiB MB/s", up_mbs, up_base, up_mbs / up_base),
        ],
    );
    println!(
        "\ntargets: list 1000 <= 20 ms: {} ({list_ms:.1} ms); linked clone <= 50 ms: {} ({clone_ms:.1} ms); upload >= 80% of a local write: {} ({:.0}%)",
        verdict(list_ms <= 20.0),
        verdict(clone_ms <= 50.0),
        verdict(up_mbs >= 0.8 * up_base),
        100.0 * up_mbs / up_base
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    Ok(())
}
