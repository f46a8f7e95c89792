//! Issue 18's network figures, each against a baseline measured in the same run, paired
//! rounds (the order inside a round alternates), median of the per-round ratios:
//!
//! - `nic`: per-NIC setup — a tap made (`TUNSETIFF`), attached to a bridge, MTU/MAC/alias set,
//!   up. Daemon: `service::nics::make_link` (bridge looked up, tap made, looked up, configured,
//!   vhost-net tried). Baseline: the minimal sequence in this process: `TUNSETIFF`,
//!   `if_nametoindex`, one `RTM_SETLINK` (the bridge's index known beforehand). The same done
//!   by one `ip link set` subprocess is printed beside it. Goal ≤ 5 ms.
//! - `start`: start of an OS-less guest with 4 virtio NICs on a bridge, spawn to running.
//!   Daemon: `Service::start`, which makes its own 4 taps inside the timing (it has no way to
//!   adopt taps made by someone else). Raw: QEMU spawned with the very argv of the daemon's
//!   start, handed 4 taps this benchmark made on the bridge BEFORE the clock starts, then QMP
//!   `cont`. Goal ≤ 1.10x.
//! - `dhcp`: network create to DHCP-ready. Daemon: from the `Networks::define` call of a NAT
//!   network (then `start`), a veth end attached to its bridge, until a DHCPDISCOVER sent from
//!   the other end, in a network namespace of its own (`networks_support/dhcp_probe.rs`,
//!   resent every 5 ms), gets an OFFER from the network's dnsmasq. Baseline: the same bridge
//!   made by one netlink sequence, the daemon's own nftables ruleset applied with `nft -f`,
//!   ip_forward set, dnsmasq started by hand on the daemon's generated config, the same veth
//!   and probe. Goal ≤ 200 ms (absolute) and the ratio printed. The runtime directory is on
//!   tmpfs, as /run is in production; definitions on disk.
//! - `hotplug`: NIC hotplug on a running OS-less guest. Daemon: `Service::attach_interface`
//!   (live, bridge). Raw: against a QEMU with the same argv: the tap made as in `nic`, then
//!   QMP `getfd` + `netdev_add` + `device_add` on a free root port (the QMP part alone is
//!   printed too). Goal ≤ 2x. Run twice: the runtime directory (the NIC ledger, written
//!   durably before the answer) on tmpfs as /run is in production, then on this disk; the
//!   cost of one durable write in each is printed beside.
//!
//! The whole benchmark runs in a network namespace of its own (unshared before any thread
//! exists; QEMU, dnsmasq and nft inherit it): the host's links and rules are never
//! touched, and everything goes with the process.
//!
//! cargo bench -p novacron-benches --bench networks [-- nic|start|dhcp|hotplug] [-- ROUNDS]

#[path = "networks_support/dhcp_probe.rs"]
mod dhcp_probe;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use novacron_benches::daemon::{median, millis, osless, verdict, Env, Reaper};
use novacron_domain::model::Interface;
use novacron_domain::network::parse_network;
use novacron_domain::DomainConfig;
use novacron_qmp::commands::{Cont, Quit};
use novacron_qmp::Client;
use novacrond::host::net::{dnsmasq, netlink, nft, sysctl};
use novacrond::host::taps::{self, link::Netlink};
use novacrond::service::nics::{hotplug::Scope, make_link, Attachment};
use novacrond::Service;
use serde_json::{json, Value};

const BRIDGE: &str = "ncbench0";
const MTU: u32 = 1400;

fn main() -> Result<()> {
    // A network namespace of our own, before the runtime starts threads (unshare changes
    // only the calling thread; the runtime's threads are made from it afterwards).
    #[allow(unsafe_code)]
    // SAFETY: a plain syscall with a constant flag; no memory is shared with the kernel.
    let rc = unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
    }
    ip(&["link", "set", "lo", "up"])?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: Option<usize> = args.iter().find_map(|a| a.parse().ok());
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["nic", "start", "dhcp", "hotplug"].contains(a))
        .collect();
    let want = |s: &str| only.is_empty() || only.contains(&s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        ip(&[
            "link",
            "add",
            BRIDGE,
            "mtu",
            &MTU.to_string(),
            "type",
            "bridge",
        ])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        println!(
            "accel {:?}; load average {}",
            novacron_tests::osless_accel(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        let mut goals = Vec::new();
        if want("nic") {
            goals.push(nic_setup(rounds.unwrap_or(50)).await?);
        }
        if want("start") {
            goals.push(start_with_nics(rounds.unwrap_or(15)).await?);
        }
        if want("dhcp") {
            goals.push(network_to_dhcp(rounds.unwrap_or(10)).await?);
        }
        if want("hotplug") {
            goals.push(hotplug(rounds.unwrap_or(10), true).await?);
            goals.push(hotplug(rounds.unwrap_or(10), false).await?);
        }
        println!("\nsummary");
        for g in goals {
            println!("  {g}");
        }
        Ok(())
    })
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated string that lives across the call.
    let i = unsafe { nix::libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no link {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x52, 0x54, 0x00, b[1], b[2], b[3]]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The baseline tap: `TUNSETIFF`, its index, one `RTM_SETLINK` (MAC, MTU, bridge, alias, up).
async fn raw_tap(nl: &Netlink, name: &str, guest_mac: [u8; 6], br: u32) -> Result<OwnedFd> {
    let n = name.to_owned();
    let mut fds = tokio::task::spawn_blocking(move || taps::tun::create(&n, 1)).await??;
    let index = ifindex(name)?;
    let mut host = guest_mac;
    host[0] = 0xfe;
    nl.configure(index, host, Some(MTU), Some(br), "novacron:bench")
        .await?;
    Ok(fds.remove(0))
}

/// The same through one `ip link set` (the tap made by `TUNSETIFF` all the same: `ip tuntap`
/// would make it persistent, which the daemon's taps are not).
async fn ip_tap(name: &str, guest_mac: [u8; 6]) -> Result<OwnedFd> {
    let n = name.to_owned();
    let mut fds = tokio::task::spawn_blocking(move || taps::tun::create(&n, 1)).await??;
    let mut host = guest_mac;
    host[0] = 0xfe;
    let out = tokio::process::Command::new("ip")
        .args(["link", "set", "dev", name, "address", &mac_str(host)])
        .args(["mtu", &MTU.to_string(), "master", BRIDGE])
        .args(["alias", "novacron:bench", "up"])
        .output()
        .await?;
    if !out.status.success() {
        bail!("ip link set: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(fds.remove(0))
}

fn domain_with_nics(name: &str, nics: usize, first_mac: u32) -> Result<DomainConfig> {
    let base = osless(name)?.to_xml();
    let mut devs = String::new();
    for i in 0..nics {
        devs.push_str(&format!(
            "<interface type='bridge'><mac address='{}'/><source bridge='{BRIDGE}'/>\
             <model type='virtio'/></interface>",
            mac_str(mac(first_mac + i as u32))
        ));
    }
    let xml = if base.contains("</devices>") {
        base.replace("</devices>", &format!("{devs}</devices>"))
    } else {
        base.replace("</domain>", &format!("<devices>{devs}</devices></domain>"))
    };
    DomainConfig::from_xml(&xml).context("domain xml")
}

fn nic_of(guest_mac: [u8; 6]) -> Result<Interface> {
    let mut nic = domain_with_nics("x", 1, 0)?.devices.interfaces.remove(0);
    nic.mac = Some(mac_str(guest_mac).parse()?);
    Ok(nic)
}

fn spread(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 4], s[s.len() * 3 / 4])
}

async fn nic_setup(rounds: usize) -> Result<String> {
    let nl = Netlink::open()?;
    let br = ifindex(BRIDGE)?;
    let uuid = [7u8; 16];
    let attach = Attachment::Bridge {
        bridge: BRIDGE.into(),
        isolated: false,
    };
    let (mut ours, mut raw, mut via_ip, mut ratios) = (vec![], vec![], vec![], vec![]);
    // One warm-up of each path.
    for r in 0..=rounds {
        let m = mac(0x10_0000 + r as u32);
        let nic = nic_of(m)?;
        let mut pair = [0.0f64; 3];
        for step in 0..3 {
            // Alternate which side goes first.
            let which = (step + r) % 3;
            let t = Instant::now();
            let held = match which {
                0 => {
                    let (_made, fds, _vhost) =
                        make_link(&nl, "bench", &uuid, r as u32, 0, &nic, &attach).await?;
                    fds
                }
                1 => vec![raw_tap(&nl, &format!("ncr{r}"), m, br).await?],
                _ => vec![ip_tap(&format!("nci{r}"), m).await?],
            };
            pair[which] = millis(t.elapsed());
            // Closing the last descriptor removes the (non-persistent) tap.
            drop(held);
        }
        if r == 0 {
            continue;
        }
        ours.push(pair[0]);
        raw.push(pair[1]);
        via_ip.push(pair[2]);
        ratios.push(pair[0] / pair[1]);
    }
    let (o, b, i, ratio) = (
        median(ours),
        median(raw),
        median(via_ip),
        median(ratios.clone()),
    );
    let q = spread(&ratios);
    println!("\nper-NIC setup (tap + bridge port + MTU/MAC/alias + up), {rounds} paired rounds, median ms");
    println!("  daemon (make_link)                  {o:8.3}");
    println!("  baseline: TUNSETIFF + 1 RTM_SETLINK {b:8.3}");
    println!("  TUNSETIFF + one `ip link set`       {i:8.3}");
    println!(
        "  ratio daemon/baseline (median of per-round) {ratio:.2}x (quartiles {:.2}..{:.2})",
        q.0, q.1
    );
    Ok(format!(
        "per-NIC setup: {o:.2} ms (baseline {b:.2} ms, {ratio:.2}x); goal <= 5 ms: {}",
        verdict(o <= 5.0)
    ))
}

/// Spawns QEMU with `argv`, `taps[i]` at descriptor number `fds[i]`, waits for its QMP socket
/// (polled every millisecond), `cont`. Returns (spawn to running, the child and its client).
async fn raw_spawn(
    argv: &[String],
    socket: &Path,
    taps: &[(i32, OwnedFd)],
) -> Result<(Duration, tokio::process::Child, Client)> {
    let _ = std::fs::remove_file(socket);
    let pairs: Vec<(i32, i32)> = taps.iter().map(|(n, fd)| (*n, fd.as_raw_fd())).collect();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    #[allow(unsafe_code)]
    // SAFETY: only dup2 (async-signal-safe) between fork and exec, on descriptors that stay
    // open in the parent for the whole spawn. Our tap descriptors are opened O_CLOEXEC;
    // dup2's copy is not, so QEMU inherits exactly the numbers its argv names.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the targets, so no dup2 overwrites a source.
            let mut moved = Vec::with_capacity(pairs.len());
            for (at, fd) in &pairs {
                let tmp = nix::libc::fcntl(*fd, nix::libc::F_DUPFD_CLOEXEC, 1000);
                if tmp < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved.push((*at, tmp));
            }
            for (at, tmp) in moved {
                if nix::libc::dup2(tmp, at) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("spawning raw QEMU")?;
    let qmp = loop {
        match Client::connect(socket).await {
            Ok(c) => break c,
            Err(e) => {
                if let Some(status) = child.try_wait()? {
                    bail!("raw QEMU exited during start ({status})");
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("raw QEMU's QMP socket did not answer: {e}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    qmp.execute(&Cont).await.context("raw cont")?;
    Ok((t0.elapsed(), child, qmp))
}

async fn raw_quit(mut child: tokio::process::Child, qmp: Client) -> Result<()> {
    let _ = qmp.execute(&Quit).await;
    drop(qmp);
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .context("raw QEMU did not quit")??;
    Ok(())
}

/// The tap descriptor numbers (`-netdev tap,fd=N`) of a recorded argv.
fn tap_fd_numbers(argv: &[String]) -> Result<Vec<i32>> {
    let mut out = vec![];
    for a in argv {
        if let Some(rest) = a.strip_prefix("tap,fd=") {
            if a.contains("vhostfd=") {
                bail!("the argv has vhost-net descriptors; this benchmark hands taps only: {a}");
            }
            out.push(rest.split(',').next().unwrap_or_default().parse()?);
        }
    }
    Ok(out)
}

async fn start_with_nics(rounds: usize) -> Result<String> {
    const NAME: &str = "bench-nics";
    let env = Env::new()?;
    let reaper = Reaper::default();
    reaper.records(env.records_dir());
    let svc = Service::open(env.config.clone())
        .await
        .context("Service::open")?;
    svc.define(domain_with_nics(NAME, 4, 0x20_0000)?).await?;
    svc.start(NAME).await?;
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record(NAME))?)?;
    let raw_socket = env.dir.path().join("raw.qmp");
    let argv = novacron_benches::daemon::raw_argv(&record, &raw_socket)?;
    svc.destroy(NAME).await?;
    let numbers = tap_fd_numbers(&argv)?;
    if numbers.len() != 4 {
        bail!("expected 4 tap descriptors in the argv: {argv:?}");
    }
    println!("\nstart with 4 NICs: argv: {}", argv.join(" "));
    let nl = Netlink::open()?;
    let br = ifindex(BRIDGE)?;
    let (mut ours, mut raw, mut ratios) = (vec![], vec![], vec![]);
    for r in 0..=rounds {
        // The raw side's taps, made before its clock starts.
        let mut held = vec![];
        for (i, n) in numbers.iter().enumerate() {
            let m = mac(0x30_0000 + (r * 8 + i) as u32);
            held.push((*n, raw_tap(&nl, &format!("ncs{r}x{i}"), m, br).await?));
        }
        let raw_first = r % 2 == 0;
        let mut pair = (0.0, 0.0);
        for side in 0..2 {
            if (side == 0) == raw_first {
                let (d, child, qmp) = raw_spawn(&argv, &raw_socket, &held).await?;
                pair.1 = millis(d);
                raw_quit(child, qmp).await?;
            } else {
                let t = Instant::now();
                svc.start(NAME).await?;
                pair.0 = millis(t.elapsed());
                svc.destroy(NAME).await?;
            }
        }
        drop(held);
        if r == 0 {
            continue;
        }
        ours.push(pair.0);
        raw.push(pair.1);
        ratios.push(pair.0 / pair.1);
    }
    drop(svc);
    drop(reaper);
    let (o, b, ratio) = (median(ours), median(raw), median(ratios.clone()));
    let q = spread(&ratios);
    println!("start to running, OS-less guest with 4 virtio NICs on a bridge, {rounds} paired rounds, median ms");
    println!("  daemon Service::start (makes its 4 taps)     {o:8.1}");
    println!("  raw QEMU, same argv, 4 taps made beforehand  {b:8.1}");
    println!(
        "  ratio (median of per-round) {ratio:.3}x (quartiles {:.3}..{:.3})",
        q.0, q.1
    );
    Ok(format!(
        "start with 4 NICs: {o:.1} ms vs raw {b:.1} ms = {ratio:.3}x; goal <= 1.10x: {}",
        verdict(ratio <= 1.10)
    ))
}

fn network_xml(name: &str, bridge: &str, net: u8) -> String {
    format!(
        "<network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}' stp='off'/>\
         <ip address='10.{net}.0.1' prefix='24'><dhcp><range start='10.{net}.0.10' end='10.{net}.0.50'/>\
         </dhcp></ip></network>"
    )
}

/// A veth pair: `a` (down, for the bridge) and `b` (with `mac`, moved into the probe's
/// namespace and up there). Made before the clock starts.
fn veth(probe: &dhcp_probe::Probe, a: &str, b: &str, mac: [u8; 6]) -> Result<()> {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
    ip(&["link", "set", b, "address", &mac_str(mac)])?;
    probe.adopt(b)
}

/// Attaches `a` to `bridge` and brings it up (one netlink sequence), then DISCOVERs from
/// `b` (in the probe's namespace) until the network's dnsmasq OFFERs.
async fn offered(
    nl: &netlink::Netlink,
    probe: &std::sync::Arc<dhcp_probe::Probe>,
    bridge: &str,
    a: &str,
    b: &str,
    mac: [u8; 6],
) -> Result<()> {
    let br = nl.link(bridge).await?.context("bridge")?.index;
    let port = ifindex(a)?;
    nl.attach_port(port, br, false).await?;
    nl.set_up(port, true).await?;
    let (p, b) = (probe.clone(), b.to_owned());
    tokio::task::spawn_blocking(move || p.offer(&b, mac, Duration::from_secs(10))).await??;
    Ok(())
}

/// `env`'s runtime directory moved to tmpfs, where it is in production (`/run/novacron` on
/// a systemd host; this machine's /run is on disk, /dev/shm is tmpfs). Definitions stay on
/// disk. The returned directory must outlive the service.
fn run_dir_on_tmpfs(env: &mut Env) -> Result<tempfile::TempDir> {
    let shm = tempfile::Builder::new()
        .prefix("ncbench-run-")
        .tempdir_in("/dev/shm")
        .context("tmpfs run dir")?;
    env.config.run_dir = shm.path().join("run");
    Ok(shm)
}

/// One durable file replacement (`persist::write_atomic`: fsync of the file and of its
/// directory) in `dir`, median ms of 9: the floor any record written before an answer adds.
fn durable_write_ms(dir: &Path) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("probe.json");
    let mut v = vec![];
    for _ in 0..9 {
        let t = Instant::now();
        novacrond::persist::write_atomic(&p, &[b'x'; 512], 0o600)?;
        v.push(millis(t.elapsed()));
    }
    std::fs::remove_file(&p)?;
    Ok(median(v))
}

async fn network_to_dhcp(rounds: usize) -> Result<String> {
    let mut env = Env::new()?;
    let _shm = run_dir_on_tmpfs(&mut env)?;
    let probe = std::sync::Arc::new(dhcp_probe::Probe::new()?);
    let reaper = Reaper::default();
    reaper.records(env.records_dir());
    let svc = Service::open(env.config.clone())
        .await
        .context("Service::open")?;
    let nl = netlink::Netlink::connect()?;
    let by_hand = env.dir.path().join("by-hand");
    std::fs::create_dir_all(&by_hand)?;
    // dnsmasq drops to its user and writes its lease file there.
    std::fs::set_permissions(
        &by_hand,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let (mut ours, mut raw, mut ratios) = (vec![], vec![], vec![]);
    for r in 0..=rounds {
        let daemon_first = r % 2 == 0;
        let mut pair = (0.0, 0.0);
        for side in 0..2 {
            if (side == 0) == daemon_first {
                let (name, bridge) = (format!("nbd{r}"), format!("ncbd{r}"));
                let (a, b) = (format!("vda{r}"), format!("vdb{r}"));
                let m = mac(0x60_0000 + r as u32);
                veth(&probe, &a, &b, m)?;
                let cfg = parse_network(&network_xml(&name, &bridge, 100 + r as u8))?;
                let t = Instant::now();
                svc.networks().define(cfg).await?;
                svc.networks().start(&name).await?;
                offered(&nl, &probe, &bridge, &a, &b, m).await?;
                pair.0 = millis(t.elapsed());
                svc.networks().stop(&name).await?;
                svc.networks().undefine(&name, &[]).await?;
                ip(&["link", "del", &a])?;
            } else {
                let (name, bridge) = (format!("nbr{r}"), format!("ncbr{r}"));
                let (a, b) = (format!("vra{r}"), format!("vrb{r}"));
                let m = mac(0x70_0000 + r as u32);
                veth(&probe, &a, &b, m)?;
                let cfg = parse_network(&network_xml(&name, &bridge, 150 + r as u8))?;
                let ipc = cfg.ip.clone().context("ip")?;
                let rules = nft::ruleset(&nft::RulesetInput {
                    network: &name,
                    bridge: &bridge,
                    mode: cfg.forward.mode,
                    ip: Some(&ipc),
                    uplink: None,
                });
                let files = dnsmasq::Files::new(&by_hand, &name);
                let conf = dnsmasq::config(&cfg, &bridge, &files, dnsmasq::run_user())
                    .context("dnsmasq config")?;
                let t = Instant::now();
                let index = nl.create_bridge(&bridge, &name, None, None, false).await?;
                nl.add_address(index, ipc.address, ipc.prefix).await?;
                nl.set_up(index, true).await?;
                let (n2, f2) = (name.clone(), files.clone());
                let proc = tokio::task::spawn_blocking(move || -> Result<dnsmasq::Proc> {
                    nft::apply(&rules, &n2)?;
                    sysctl::write(Path::new(sysctl::IP_FORWARD), "1")?;
                    std::fs::write(&f2.conf, conf)?;
                    Ok(dnsmasq::start(&n2, &f2)?)
                })
                .await??;
                offered(&nl, &probe, &bridge, &a, &b, m).await?;
                pair.1 = millis(t.elapsed());
                let f2 = files.clone();
                tokio::task::spawn_blocking(move || dnsmasq::stop(proc, &f2.conf)).await?;
                nft::delete_table(&name, &bridge)?;
                nl.delete(index).await?;
                ip(&["link", "del", &a])?;
            }
        }
        if r == 0 {
            continue;
        }
        ours.push(pair.0);
        raw.push(pair.1);
        ratios.push(pair.0 / pair.1);
    }
    drop(svc);
    drop(reaper);
    let (o, b, ratio) = (median(ours), median(raw), median(ratios.clone()));
    let q = spread(&ratios);
    println!("\nNAT network create to DHCP-ready (a DISCOVER from a veth in another namespace gets an OFFER), {rounds} paired rounds, median ms");
    println!("  daemon define + start, veth attached, DISCOVER..OFFER     {o:8.1}");
    println!("  by hand: netlink bridge, nft -f, dnsmasq, same veth/probe {b:8.1}");
    println!(
        "  ratio (median of per-round) {ratio:.2}x (quartiles {:.2}..{:.2})",
        q.0, q.1
    );
    Ok(format!(
        "network create to DHCP-ready: {o:.1} ms (by hand {b:.1} ms, {ratio:.2}x); goal <= 200 ms: {}",
        verdict(o <= 200.0)
    ))
}

/// The ids of the pcie-root-ports in an argv, in order.
fn root_ports(argv: &[String]) -> Vec<String> {
    argv.iter()
        .filter(|a| a.starts_with("pcie-root-port"))
        .filter_map(|a| {
            a.split(',')
                .find_map(|p| p.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// `tmpfs`: the runtime directory (where the NIC ledger is written durably before the
/// answer) on tmpfs as in production; else on this machine's disk, beside the definitions.
async fn hotplug(rounds: usize, tmpfs: bool) -> Result<String> {
    const NAME: &str = "bench-hot";
    let mut env = Env::new()?;
    let _shm = if tmpfs {
        Some(run_dir_on_tmpfs(&mut env)?)
    } else {
        None
    };
    let where_ = if tmpfs {
        "run dir on tmpfs"
    } else {
        "run dir on disk"
    };
    let fsync_ms = durable_write_ms(&env.config.run_dir)?;
    // One spare root port per round (an OS-less guest never releases a NIC, so none is reused).
    env.config.hotplug_slots = rounds as u32 + 1;
    let reaper = Reaper::default();
    reaper.records(env.records_dir());
    let svc = Service::open(env.config.clone())
        .await
        .context("Service::open")?;
    svc.define(osless(NAME)?).await?;
    svc.start(NAME).await?;
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.record(NAME))?)?;
    let raw_socket = env.dir.path().join("raw.qmp");
    let argv = novacron_benches::daemon::raw_argv(&record, &raw_socket)?;
    let ports = root_ports(&argv);
    if ports.len() < rounds + 1 {
        bail!(
            "{} root ports for {} rounds: {argv:?}",
            ports.len(),
            rounds + 1
        );
    }
    let (_, child, qmp) = raw_spawn(&argv, &raw_socket, &[]).await?;
    let nl = Netlink::open()?;
    let br = ifindex(BRIDGE)?;
    let (mut ours, mut raw, mut qmp_only, mut ratios) = (vec![], vec![], vec![], vec![]);
    let mut held = vec![];
    for (r, port) in ports.iter().enumerate().take(rounds + 1) {
        let daemon_first = r % 2 == 0;
        let mut pair = (0.0, 0.0);
        for side in 0..2 {
            if (side == 0) == daemon_first {
                let nic = nic_of(mac(0x40_0000 + r as u32))?;
                let t = Instant::now();
                svc.attach_interface(
                    NAME,
                    nic,
                    Scope {
                        live: true,
                        config: false,
                    },
                )
                .await?;
                pair.0 = millis(t.elapsed());
            } else {
                let m = mac(0x50_0000 + r as u32);
                let t = Instant::now();
                let tap = raw_tap(&nl, &format!("nch{r}"), m, br).await?;
                let tq = Instant::now();
                let fdname = format!("tapfd{r}");
                qmp.send_fd(&fdname, tap.as_fd()).await?;
                let netdev = format!("hostnet{r}");
                qmp.execute_raw(
                    "netdev_add",
                    Some(&json!({ "type": "tap", "id": netdev, "fd": fdname })),
                )
                .await?;
                qmp.execute_raw(
                    "device_add",
                    Some(
                        &json!({ "driver": "virtio-net-pci", "id": format!("net{r}"),
                                  "bus": port, "netdev": netdev, "mac": mac_str(m) }),
                    ),
                )
                .await?;
                pair.1 = millis(t.elapsed());
                qmp_only.push(millis(tq.elapsed()));
                held.push(tap);
            }
        }
        if r == 0 {
            qmp_only.clear();
            continue;
        }
        ours.push(pair.0);
        raw.push(pair.1);
        ratios.push(pair.0 / pair.1);
    }
    raw_quit(child, qmp).await?;
    drop(held);
    svc.destroy(NAME).await?;
    drop(svc);
    drop(reaper);
    let (o, b, qo, ratio) = (
        median(ours),
        median(raw),
        median(qmp_only),
        median(ratios.clone()),
    );
    let q = spread(&ratios);
    println!("\nNIC hotplug (live, bridge) on a running OS-less guest, {where_}, {rounds} paired rounds, median ms");
    println!("  one durable write (file + directory fsync) in that run dir {fsync_ms:8.2}");
    println!("  daemon attach_interface                             {o:8.2}");
    println!("  raw: tap (TUNSETIFF + RTM_SETLINK) + getfd + netdev_add + device_add {b:8.2}");
    println!("  raw QMP part alone (getfd + netdev_add + device_add) {qo:8.2}");
    println!(
        "  ratio daemon/raw (median of per-round) {ratio:.2}x (quartiles {:.2}..{:.2})",
        q.0, q.1
    );
    Ok(format!(
        "NIC hotplug ({where_}; one durable write there {fsync_ms:.2} ms): {o:.2} ms vs raw {b:.2} ms (QMP alone {qo:.2}) = {ratio:.2}x; goal <= 2x: {}",
        verdict(ratio <= 2.0)
    ))
}
