//! `<bandwidth>`, `<filterref>` and `<port isolated>` of an interface: values in range, and
//! only on NICs whose host side is a tap on a bridge (what tc and our bridge filter act on).

use super::{Problem, V};
use crate::model::*;

/// Largest rate (kB/s, ~4.3 GB/s): far above what a tap carries, and keeps every rate well
/// inside tc's 64-bit rates.
pub const MAX_RATE_KIB: u64 = 4 * 1024 * 1024 - 1;
/// Largest burst (KiB): tc keeps a burst in a 32-bit byte count.
pub const MAX_BURST_KIB: u64 = 4 * 1024 * 1024 - 1;
/// Most `IP` parameters of one filter.
pub const MAX_FILTER_IPS: usize = 16;

/// The values of one `<bandwidth>`, a NIC's or a network's (its field path `at`): rates and
/// bursts in range, `peak` not below `average`, no outbound `peak`.
pub(crate) fn bandwidth(b: &Bandwidth, at: &str, mut err: impl FnMut(String, Problem)) {
    let range = |path: String, value: u64, max: u64| {
        (!(1..=max).contains(&value)).then(|| {
            let (value, min, max) = (value.into(), 1, max.into());
            (path, Problem::OutOfRange { value, min, max })
        })
    };
    for (dir, r) in [("inbound", &b.inbound), ("outbound", &b.outbound)] {
        let Some(r) = r else { continue };
        let f = format!("{at}.{dir}");
        let peak = r.peak.and_then(|peak| {
            let path = format!("{f}.peak");
            if dir == "outbound" {
                // A police action has one rate; libvirt ignores it, we say so.
                let m =
                    "peak on outbound traffic (it is policed at one rate: use average and burst)";
                Some((path, Problem::Unsupported(m.into())))
            } else if peak < r.average {
                let m = format!("peak {peak} is below average {}", r.average);
                Some((path, Problem::Inconsistent(m)))
            } else {
                range(path, peak, MAX_RATE_KIB)
            }
        });
        let burst = r
            .burst
            .and_then(|k| range(format!("{f}.burst"), k, MAX_BURST_KIB));
        for (path, problem) in [
            range(format!("{f}.average"), r.average, MAX_RATE_KIB),
            peak,
            burst,
        ]
        .into_iter()
        .flatten()
        {
            err(path, problem);
        }
    }
}

pub(super) fn nic(v: &mut V, p: &str, nic: &Interface) {
    let on_tap = matches!(
        nic.source,
        InterfaceSource::Bridge { .. } | InterfaceSource::Network { .. }
    );
    let needs_tap = |v: &mut V, field: &str, what: &str| {
        if !on_tap {
            v.err(
                format!("{p}.{field}"),
                Problem::Unsupported(format!(
                    "{what} needs a tap on a bridge (type 'bridge' or 'network'), not this interface type"
                )),
            );
        }
    };
    if let Some(b) = &nic.bandwidth {
        needs_tap(v, "bandwidth", "a bandwidth limit");
        bandwidth(b, &format!("{p}.bandwidth"), |path, problem| {
            v.err(path, problem)
        });
    }
    if let Some(f) = &nic.filterref {
        needs_tap(v, "filterref", "a traffic filter");
        if f.ips.len() > MAX_FILTER_IPS {
            v.err(
                format!("{p}.filterref.ips"),
                Problem::Inconsistent(format!("more than {MAX_FILTER_IPS} addresses")),
            );
        }
        for (i, ip) in f.ips.iter().enumerate() {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
                v.err(
                    format!("{p}.filterref.ips[{i}]"),
                    Problem::Inconsistent(format!("{ip} is not a guest's unicast address")),
                );
            }
        }
    }
    if nic.port_isolated {
        needs_tap(v, "port_isolated", "an isolated port");
    }
}
