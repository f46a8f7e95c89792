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
        for (dir, r) in [("inbound", &b.inbound), ("outbound", &b.outbound)] {
            let Some(r) = r else { continue };
            let f = format!("{p}.bandwidth.{dir}");
            v.range(format!("{f}.average"), r.average, 1, MAX_RATE_KIB as i128);
            if let Some(peak) = r.peak {
                if dir == "outbound" {
                    // A police action has one rate; libvirt ignores it, we say so.
                    v.err(
                        format!("{f}.peak"),
                        Problem::Unsupported(
                            "peak on outbound traffic (it is policed at one rate: use average and burst)"
                                .into(),
                        ),
                    );
                } else if peak < r.average {
                    v.err(
                        format!("{f}.peak"),
                        Problem::Inconsistent(format!(
                            "peak {peak} is below average {}",
                            r.average
                        )),
                    );
                } else {
                    v.range(format!("{f}.peak"), peak, 1, MAX_RATE_KIB as i128);
                }
            }
            if let Some(burst) = r.burst {
                v.range(format!("{f}.burst"), burst, 1, MAX_BURST_KIB as i128);
            }
        }
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
