//! The inbound bandwidth limit of a guest's tap (libvirt's `<bandwidth><inbound>`: traffic
//! TO the guest, which the host side of the tap sends) as an htb class on the tap's root,
//! shaped (queued, so TCP slows down instead of losing), as libvirt does. The same class on
//! our bridge's root is a network's inbound limit ([`super::net_qos`]). Run as Debian's
//! `tc` (iproute2) with a batch the daemon builds, fed on stdin (`tc -batch -`, no shell).
//! The outbound limit (what the guest sends) is policed in the tap's nftables table
//! ([`super::nic_rules`]): this kernel has no tc police action.
//!
//! Not netlink: rtnetlink 0.24 / netlink-packet-route 0.34 know only the ingress and
//! fq_codel qdiscs; htb would mean hand-encoding `tc_ratespec`s and rate tables, which
//! iproute2 computes and keeps right. Only the root qdisc of our own tap or bridge is ever
//! touched, and it goes with it. Units are libvirt's, handed to tc exactly as libvirt does:
//! rates `kbps` (tc: 1000 bytes/s), bursts `kb` (1024 bytes). libvirt adds an sfq leaf for
//! fairness between flows; it is left out because kernels without sch_sfq (this CI's) would
//! refuse the whole limit: the class keeps htb's default fifo.

use std::io::Write as _;
use std::process::{Command, Stdio};

use novacron_domain::model::{Bandwidth, BandwidthRate};

#[derive(Debug, thiserror::Error)]
#[error("tc on '{ifname}': {message}")]
pub struct TcError {
    pub ifname: String,
    pub message: String,
}

/// htb's quantum (bytes a class sends per round): rate/10 as htb's default r2q, kept between
/// one full frame and htb's own 200000 ceiling (above it the kernel logs a warning).
fn quantum(r: &BandwidthRate) -> u64 {
    (r.average * 1000 / 10).clamp(1600, 200_000)
}

/// The tc batch that installs `bw`'s inbound limit on `ifname` (one command a line, as
/// `tc -batch`). Empty when there is none.
pub fn batch(ifname: &str, bw: &Bandwidth) -> String {
    let Some(r) = &bw.inbound else {
        return String::new();
    };
    let ceil = r.peak.unwrap_or(r.average);
    let burst = r
        .burst
        .map(|k| format!(" burst {k}kb cburst {k}kb"))
        .unwrap_or_default();
    format!(
        "qdisc add dev {ifname} root handle 1: htb default 1\n\
         class add dev {ifname} parent 1: classid 1:1 htb rate {avg}kbps ceil {ceil}kbps{burst} quantum {q}\n",
        avg = r.average,
        q = quantum(r),
    )
}

fn tc(ifname: &str, args: &[&str], stdin: Option<&str>) -> Result<String, TcError> {
    let e = |m: String| TcError {
        ifname: ifname.into(),
        message: m,
    };
    let mut c = Command::new("tc")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|x| e(format!("cannot run tc (package iproute2): {x}")))?;
    if let (Some(text), Some(mut s)) = (stdin, c.stdin.take()) {
        s.write_all(text.as_bytes())
            .map_err(|x| e(format!("writing the batch: {x}")))?;
    }
    let out = c.wait_with_output().map_err(|x| e(x.to_string()))?;
    if !out.status.success() {
        return Err(e(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs `bw` on a tap that has no limits yet (a new tap). Blocking.
pub fn apply(ifname: &str, bw: &Bandwidth) -> Result<(), TcError> {
    let b = batch(ifname, bw);
    if b.is_empty() {
        return Ok(());
    }
    // A batch is not a transaction: what a failed one left is taken back.
    tc(ifname, &["-batch", "-"], Some(&b))
        .map(drop)
        .inspect_err(|_| {
            let _ = clear(ifname);
        })
}

/// Removes our root qdisc from `ifname`, where present. Blocking.
pub fn clear(ifname: &str) -> Result<(), TcError> {
    if present(ifname)? {
        tc(ifname, &["qdisc", "del", "dev", ifname, "root"], None)?;
    }
    Ok(())
}

/// Replaces the inbound limit of a running tap: the old class goes, `bw`'s comes. Blocking.
pub fn replace(ifname: &str, bw: Option<&Bandwidth>) -> Result<(), TcError> {
    clear(ifname)?;
    match bw {
        Some(bw) => apply(ifname, bw),
        None => Ok(()),
    }
}

/// Whether `ifname` has our htb root. Blocking.
pub fn present(ifname: &str) -> Result<bool, TcError> {
    let out = tc(ifname, &["-j", "qdisc", "show", "dev", ifname], None)?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).map_err(|x| TcError {
        ifname: ifname.into(),
        message: format!("unreadable `tc -j qdisc show`: {x}"),
    })?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .any(|q| q["kind"] == "htb" && q["handle"] == "1:"))
}

/// Puts `bw`'s inbound limit back on `ifname`, an interface of ours whose root is not our
/// htb any more (removed, or replaced by hand): whatever root qdisc is there goes first
/// (deleting the default root fails, which is fine). Blocking.
pub fn put_back(ifname: &str, bw: &Bandwidth) -> Result<(), TcError> {
    let _ = tc(ifname, &["qdisc", "del", "dev", ifname, "root"], None);
    apply(ifname, bw)
}
