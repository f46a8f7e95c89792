//! Remote inventories of 200 VMs per vendor peer, in one run:
//! - listed through novacrond (`GET /v1/hosts/{host}/domains` over its Unix socket, the whole
//!   HTTP round trip: daemon, guard, adapter, vendor peer);
//! - listed by the adapter in this process (`Driver::list`), the same work without the daemon;
//! - listed by the vendor's own Python client where there is one (pyvmomi for vSphere,
//!   proxmoxer for Proxmox), its median reported by the script itself (interpreter start and
//!   login excluded);
//! - one lifecycle call end to end (start or power-off of a VM through the daemon, the vendor
//!   task included).
//!
//! Peers: vcsim (the real vSphere simulator), fakepve (a third-party PVE fake), and this tree's
//! XAPI and WinRM test peers (built from the published APIs; not real hosts). A peer that
//! cannot start here is reported and skipped.
//!
//! cargo build --release -p novacrond
//! cargo bench -p novacron-benches --bench remote_inventory [-- ROUNDS]
//!
//! Bounds (the product's): a 200-VM listing through the daemon under 1 s, a lifecycle call
//! under 5 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{millis, novacrond_binary, spawn_daemon, verdict, Env};
use novacron_benches::http;
use novacron_benches::median;
use novacron_remote_drivers::{Credentials, DriverKind, HostConfig, Secret, TlsOptions};
use novacron_tests::peers::{fakepve, vcsim, winrm, xapi};

const VMS: usize = 200;

/// A started peer and how to reach it.
struct Vendor {
    host: &'static str,
    driver: DriverKind,
    url: String,
    credentials: Credentials,
    ca_file: Option<PathBuf>,
    /// Python reference client: script and its arguments after the URL.
    reference: Option<(&'static str, Vec<String>)>,
    _peer: Box<dyn std::any::Any + Send>,
}

fn start_vendors() -> Vec<Vendor> {
    let mut out = Vec::new();
    let password = |user: &str, password: &str| Credentials::Password {
        user: user.to_owned(),
        password: Secret::new(password),
    };
    match vcsim::start(VMS) {
        Ok(p) => out.push(Vendor {
            host: "vsphere",
            driver: DriverKind::Vsphere,
            url: p.url.clone(),
            credentials: password(&p.user, &p.password),
            ca_file: None,
            reference: Some(("vsphere_list.py", vec![p.user.clone(), p.password.clone()])),
            _peer: Box::new(p),
        }),
        Err(e) => eprintln!("vcsim not started, vSphere skipped: {e:#}"),
    }
    match fakepve::start(VMS) {
        Ok(p) => out.push(Vendor {
            host: "proxmox",
            driver: DriverKind::Proxmox,
            url: p.url.clone(),
            credentials: Credentials::Token {
                id: p.token_id.clone(),
                secret: Secret::new(p.token_secret.clone()),
            },
            ca_file: Some(p.ca_file.clone()),
            reference: Some((
                "proxmox_list.py",
                vec![p.token_id.clone(), p.token_secret.clone()],
            )),
            _peer: Box::new(p),
        }),
        Err(e) => eprintln!("fakepve not started, Proxmox skipped: {e:#}"),
    }
    match xapi::start(VMS) {
        Ok(p) => out.push(Vendor {
            host: "xapi",
            driver: DriverKind::Xapi,
            url: p.url.clone(),
            credentials: password(&p.user, &p.password),
            ca_file: Some(p.ca_file.clone()),
            reference: None,
            _peer: Box::new(p),
        }),
        Err(e) => eprintln!("XAPI test peer not started, skipped: {e:#}"),
    }
    match winrm::start_with(&winrm::Options::new(VMS, winrm::Mode::BasicHttps)) {
        Ok(p) => out.push(Vendor {
            host: "hyperv",
            driver: DriverKind::Hyperv,
            url: p.url.clone(),
            credentials: password(&p.user, &p.password),
            ca_file: p.ca_file.clone(),
            reference: None,
            _peer: Box::new(p),
        }),
        Err(e) => eprintln!("WinRM test peer not started, Hyper-V skipped: {e:#}"),
    }
    out
}

fn host_config(v: &Vendor) -> Result<HostConfig> {
    let mut c = HostConfig::new(v.host, v.driver, v.url.parse()?, v.credentials.clone());
    c.tls = TlsOptions {
        verify: v.ca_file.is_some(),
        ca_file: v.ca_file.clone(),
    };
    Ok(c)
}

fn daemon_toml(env: &Env, vendors: &[Vendor]) -> Result<String> {
    let mut toml = String::from("[remote]\npoll_secs = 0\n");
    for v in vendors {
        let cred = env.dir.path().join(format!("{}.cred", v.host));
        let text = match &v.credentials {
            Credentials::Password { user, password } => {
                format!("user = {user}\npassword = {}\n", password.expose())
            }
            Credentials::Token { id, secret } => {
                format!("token_id = {id}\ntoken_secret = {}\n", secret.expose())
            }
        };
        std::fs::write(&cred, text)?;
        toml.push_str(&format!(
            "[[remote.hosts]]\nname = \"{}\"\ndriver = \"{}\"\nurl = \"{}\"\ncredentials_file = {:?}\n",
            v.host, v.driver, v.url, cred
        ));
        match &v.ca_file {
            Some(ca) => toml.push_str(&format!("ca_file = {ca:?}\n")),
            None => toml.push_str("tls_verify = false\n"),
        }
    }
    Ok(toml)
}

/// The reference client's own median listing time and count.
fn reference(script: &str, url: &str, args: &[String], rounds: usize) -> Result<(f64, usize)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .arg(url)
        .args(args)
        .arg(rounds.to_string())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{script} printed {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok((
        v["seconds"].as_f64().context("seconds")? * 1000.0,
        v["count"].as_u64().context("count")? as usize,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let vendors = tokio::task::spawn_blocking(start_vendors).await?;
    if vendors.is_empty() {
        bail!("no vendor peer could be started");
    }
    let env = Env::new()?;
    let config = env.write_config_file_with(&daemon_toml(&env, &vendors)?)?;
    let log = env.dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    let socket = env.config.run_dir.join("novacrond.sock");
    novacron_benches::daemon::wait_until("the daemon's socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    let result = run(&vendors, &socket, rounds).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    if result.is_err() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    result
}

async fn run(vendors: &[Vendor], socket: &Path, rounds: usize) -> Result<()> {
    let mut sender = http::connect(socket).await?;
    println!("remote inventory, {VMS} VMs per peer, median of {rounds} interleaved rounds (ms)\n");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>9} {:>12} {:>14}",
        "vendor", "daemon", "adapter", "reference", "ad/ref", "lifecycle", "bounds"
    );
    for v in vendors {
        let driver = novacron_remote_drivers::connect(&host_config(v)?)?;
        // Warm both paths (login, TLS, connection pool) outside the timing.
        let warm = driver.list().await?;
        let path = format!("/v1/hosts/{}/domains", v.host);
        let (status, body) = http::request(&mut sender, "GET", &path, None).await?;
        if status != 200 {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        let listed: serde_json::Value = serde_json::from_slice(&body)?;
        let count = listed["domains"].as_array().map_or(0, Vec::len);
        if count != warm.len() || count < VMS {
            bail!(
                "{}: the daemon listed {count}, the adapter {}",
                v.host,
                warm.len()
            );
        }
        let (mut via_daemon, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, _) = http::request(&mut sender, "GET", &path, None).await?;
            via_daemon.push(millis(t.elapsed()));
            if status != 200 {
                bail!("{path}: {status}");
            }
            let t = Instant::now();
            driver.list().await?;
            direct.push(millis(t.elapsed()));
        }
        let reference = match &v.reference {
            Some((script, args)) => {
                let (url, args, rounds) = (v.url.clone(), args.clone(), rounds);
                let script = *script;
                match tokio::task::spawn_blocking(move || reference(script, &url, &args, rounds))
                    .await?
                {
                    Ok((ms, n)) if n == count => Some(ms),
                    Ok((_, n)) => bail!("{}: the reference client listed {n}, we {count}", v.host),
                    Err(e) => {
                        eprintln!("{}: reference client failed: {e:#}", v.host);
                        None
                    }
                }
            }
            None => None,
        };
        // One lifecycle call: power a VM on (or off, if all are on), vendor task included.
        let vm = warm
            .iter()
            .find(|d| d.state == novacron_domain::DomainState::Shutoff)
            .map(|d| (d.name.clone(), "start"))
            .or_else(|| warm.first().map(|d| (d.name.clone(), "destroy")))
            .context("no VM")?;
        let action = format!("/v1/hosts/{}/domains/{}/{}", v.host, vm.0, vm.1);
        let t = Instant::now();
        let (status, body) = http::request(&mut sender, "POST", &action, None).await?;
        let lifecycle = millis(t.elapsed());
        if status != 200 {
            bail!("{action}: {status} {}", String::from_utf8_lossy(&body));
        }
        let (d, a) = (median(via_daemon), median(direct));
        let met = d < 1000.0 && lifecycle < 5000.0;
        println!(
            "{:<8} {:>10.1} {:>10.1} {:>10} {:>9} {:>12.1} {:>14}",
            v.host,
            d,
            a,
            reference.map_or("-".into(), |r| format!("{r:.1}")),
            reference.map_or("-".into(), |r| format!("{:.2}x", a / r)),
            lifecycle,
            verdict(met)
        );
    }
    println!(
        "\ndaemon: GET /v1/hosts/{{host}}/domains through novacrond; adapter: Driver::list in this\n\
         process; reference: the vendor's Python client (pyvmomi, proxmoxer), same listing;\n\
         lifecycle: one start (or destroy) through the daemon. Bounds: list < 1000 ms,\n\
         lifecycle < 5000 ms."
    );
    Ok(())
}
