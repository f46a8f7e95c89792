//! One dnsmasq per network: the config file we generate (golden-tested), starting it,
//! knowing it again after a daemon restart (pid + start time + its config path on its
//! command line), stopping it, and reading its leases.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use novacron_domain::model::ids::MacAddr;
use novacron_domain::network::NetworkConfig;
use serde::{Deserialize, Serialize};

use crate::qemu::procinfo;

/// Files of one network's dnsmasq, all under `<run>/networks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub conf: PathBuf,
    pub pid: PathBuf,
    pub leases: PathBuf,
}

impl Files {
    pub fn new(dir: &Path, network: &str) -> Files {
        Files {
            conf: dir.join(format!("{network}.dnsmasq.conf")),
            pid: dir.join(format!("{network}.dnsmasq.pid")),
            leases: dir.join(format!("{network}.leases")),
        }
    }
}

/// The user dnsmasq drops to: `dnsmasq` (Debian's dnsmasq-base makes it), else `nobody`.
pub fn run_user() -> &'static str {
    if nix::unistd::User::from_name("dnsmasq")
        .ok()
        .flatten()
        .is_some()
    {
        "dnsmasq"
    } else {
        "nobody"
    }
}

/// The config for `n` on `bridge`. `None` when the network has no subnet (nothing to serve).
pub fn config(n: &NetworkConfig, bridge: &str, files: &Files, user: &str) -> Option<String> {
    let ip = n.ip.as_ref()?;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# novacrond: network '{}'. Generated; changed only by novacrond.",
        n.name
    );
    let _ = writeln!(c, "user={user}");
    let _ = writeln!(c, "pid-file={}", files.pid.display());
    // Only our bridge, never the host's other interfaces, and no host config files.
    let _ = writeln!(c, "interface={bridge}");
    c.push_str("except-interface=lo\nbind-dynamic\nno-hosts\nstrict-order\n");
    let _ = writeln!(c, "listen-address={}", ip.address);
    let dns = n.dns.as_ref();
    if dns.is_some_and(|d| !d.enable) {
        c.push_str("port=0\n");
    } else {
        if let Some(d) = dns {
            if !d.forwarders.is_empty() {
                c.push_str("no-resolv\n");
            }
            for f in &d.forwarders {
                let _ = writeln!(c, "server={f}");
            }
            if let Some(dom) = &d.domain {
                let _ = writeln!(c, "domain={dom}\nlocal=/{dom}/\nexpand-hosts");
            }
            for h in &d.hosts {
                let _ = writeln!(c, "host-record={},{}", h.hostnames.join(","), h.ip);
            }
        }
    }
    if let Some(d) = &ip.dhcp {
        let mask = ip.netmask();
        let mut size: u64 = 0;
        for r in &d.ranges {
            let _ = writeln!(c, "dhcp-range={},{},{mask}", r.start, r.end);
            size += u64::from(u32::from(r.end)).saturating_sub(u64::from(u32::from(r.start))) + 1;
        }
        if d.ranges.is_empty() && !d.hosts.is_empty() {
            // Static leases only: dnsmasq still needs the subnet.
            let _ = writeln!(c, "dhcp-range={},static,{mask}", ip.network());
        }
        size += d.hosts.len() as u64;
        c.push_str("dhcp-no-override\ndhcp-authoritative\n");
        // No ICMP probe of an address before offering it: dnsmasq holds every first OFFER
        // for its 3 s ping wait (a guest's lease took 3.1 s; 0.1 s without). Only guests
        // the daemon attached live on our bridge and the range is ours; Incus passes
        // --no-ping to its dnsmasq for the same reason.
        c.push_str("no-ping\n");
        let _ = writeln!(c, "dhcp-lease-max={size}");
        let _ = writeln!(c, "dhcp-leasefile={}", files.leases.display());
        for h in &d.hosts {
            match &h.name {
                Some(name) => {
                    let _ = writeln!(c, "dhcp-host={},{},{name}", h.mac, h.ip);
                }
                None => {
                    let _ = writeln!(c, "dhcp-host={},{}", h.mac, h.ip);
                }
            }
        }
    }
    Some(c)
}

/// A running dnsmasq, as the runtime record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("dnsmasq of network '{network}': {message}")]
pub struct DnsmasqError {
    pub network: String,
    pub message: String,
}

/// Starts dnsmasq on `files.conf` (blocking). dnsmasq forks; its parent exits only once the
/// child has bound its sockets and written the pid file (or with the error), so a zero exit
/// means DHCP is ready.
pub fn start(network: &str, files: &Files) -> Result<Proc, DnsmasqError> {
    let e = |m: String| DnsmasqError {
        network: network.into(),
        message: m,
    };
    let out = Command::new("dnsmasq")
        .arg(format!("--conf-file={}", files.conf.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|x| e(format!("cannot run dnsmasq (package dnsmasq-base): {x}")))?;
    if !out.status.success() {
        return Err(e(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let pid: u32 = std::fs::read_to_string(&files.pid)
        .map_err(|x| e(format!("no pid file {}: {x}", files.pid.display())))?
        .trim()
        .parse()
        .map_err(|x| e(format!("pid file {}: {x}", files.pid.display())))?;
    let start_time = procinfo::start_time(pid).map_err(|x| e(format!("pid {pid}: {x}")))?;
    Ok(Proc { pid, start_time })
}

/// Whether `p` is still the dnsmasq we started on `conf` (pid reuse is caught by the start
/// time, and a stranger by its command line).
pub fn is_ours(p: Proc, conf: &Path) -> bool {
    // A zombie (exited, not yet reaped by whoever inherited it) is gone for our purposes.
    let same = procinfo::stat(p.pid).is_ok_and(|s| s.start_time == p.start_time && s.state != 'Z');
    let want = format!("--conf-file={}", conf.display());
    same && procinfo::cmdline(p.pid).is_ok_and(|c| c.contains(&want))
}

/// Stops our dnsmasq, if it is still ours, and waits (bounded) for it to go.
pub fn stop(p: Proc, conf: &Path) {
    if !is_ours(p, conf) {
        return;
    }
    let Ok(pid) = i32::try_from(p.pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while is_ours(p, conf) {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if std::time::Instant::now() > deadline + std::time::Duration::from_secs(5) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Unix time the lease ends (0: never).
    pub expiry: u64,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Parses dnsmasq's lease file (`expiry mac ip hostname client-id`, `*` for none); lines
/// it cannot read are skipped (the file is dnsmasq's, not a guest's, but bounded anyway).
pub fn parse_leases(text: &str) -> Vec<Lease> {
    let opt = |s: Option<&str>| s.filter(|s| *s != "*").map(str::to_owned);
    text.lines()
        .take(65_536)
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let expiry = f.next()?.parse().ok()?;
            let mac = f.next()?.parse().ok()?;
            let ip = f.next()?.parse().ok()?;
            Some(Lease {
                expiry,
                mac,
                ip,
                hostname: opt(f.next()),
                client_id: opt(f.next()),
            })
        })
        .collect()
}

/// The current leases of a network (blocking).
pub fn leases(files: &Files) -> Vec<Lease> {
    std::fs::read_to_string(&files.leases)
        .map(|t| parse_leases(&t))
        .unwrap_or_default()
}
