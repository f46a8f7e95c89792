//! Machine type, firmware, boot order and clock.

use std::collections::BTreeSet;

use super::{Problem, V};
use crate::model::*;

pub(super) fn os(v: &mut V, d: &DomainConfig) {
    let o = &d.os;
    if let Some(m) = &o.machine {
        let versioned = |prefix: &str| {
            m.strip_prefix(prefix)
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit() || c == '.'))
        };
        let known =
            ["q35", "pc"].contains(&m.as_str()) || versioned("pc-q35-") || versioned("pc-i440fx-");
        if !known {
            v.err(
                "os.machine",
                Problem::Unsupported(format!(
                    "machine '{m}' (only q35, pc-q35-X.Y, pc and pc-i440fx-X.Y)"
                )),
            );
        }
    }
    if let Some(m) = &o.bootmenu {
        if let Some(t) = m.timeout_ms {
            v.range("os.bootmenu.timeout_ms", t, 0, 65535);
        }
    }
    if let Firmware::Uefi { loader, nvram } = &o.firmware {
        v.path("os.firmware.loader.path", &loader.path);
        if loader.secure && d.features.smm != Some(true) {
            v.err(
                "os.firmware.loader.secure",
                Problem::Inconsistent("secure boot needs features.smm on".into()),
            );
        }
        if let Some(n) = nvram {
            v.path("os.firmware.nvram.path", &n.path);
            if let Some(t) = &n.template {
                v.path("os.firmware.nvram.template", t);
            }
        }
    }
    if let Some(k) = &o.kernel {
        v.path("os.kernel.kernel", &k.kernel);
        if let Some(i) = &k.initrd {
            v.path("os.kernel.initrd", i);
        }
        if let Some(c) = &k.cmdline {
            v.text("os.kernel.cmdline", c, false);
            if c.trim() != c {
                v.err(
                    "os.kernel.cmdline",
                    Problem::Inconsistent("surrounding whitespace".into()),
                );
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, b) in o.boot.iter().enumerate() {
        if !seen.insert(b.as_str()) {
            v.err(
                format!("os.boot[{i}]"),
                Problem::Duplicate(format!("boot device '{}'", b.as_str())),
            );
        }
        if *b == BootDevice::Fd {
            v.err(
                format!("os.boot[{i}]"),
                Problem::Unsupported("floppy boot".into()),
            );
        }
    }
    // Per-device boot order.
    let dv = &d.devices;
    let orders = dv
        .disks
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("devices.disks[{i}].boot_order"), x.boot_order))
        .chain(
            dv.interfaces
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("devices.interfaces[{i}].boot_order"), x.boot_order)),
        )
        .chain(
            dv.hostdevs
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("devices.hostdevs[{i}].boot_order"), x.boot_order)),
        );
    let mut seen = BTreeSet::new();
    for (p, order) in orders {
        let Some(order) = order else { continue };
        if !o.boot.is_empty() {
            v.err(
                p.clone(),
                Problem::Inconsistent(
                    "per-device boot order cannot be combined with os.boot".into(),
                ),
            );
        }
        if order == 0 {
            v.range(p.clone(), order, 1, u32::MAX);
        }
        if !seen.insert(order) {
            v.err(p, Problem::Duplicate(format!("boot order {order}")));
        }
    }
}

pub(super) fn clock(v: &mut V, d: &DomainConfig) {
    let Some(c) = &d.clock else { return };
    let mut seen = BTreeSet::new();
    for (i, t) in c.timers.iter().enumerate() {
        let p = format!("clock.timers[{i}]");
        if !seen.insert(t.name) {
            v.err(
                format!("{p}.name"),
                Problem::Duplicate(format!("timer '{}'", t.name.as_str())),
            );
        }
        let ok_policy = matches!(
            (t.name, t.tickpolicy),
            (_, None)
                | (
                    TimerName::Rtc,
                    Some(TickPolicy::Catchup | TickPolicy::Delay)
                )
                | (
                    TimerName::Pit,
                    Some(TickPolicy::Delay | TickPolicy::Discard)
                )
        );
        if !ok_policy {
            v.err(
                format!("{p}.tickpolicy"),
                Problem::Unsupported(format!("this tickpolicy for timer '{}'", t.name.as_str())),
            );
        }
        let ok_present = matches!(
            (t.name, t.present),
            (TimerName::Hpet | TimerName::Pit | TimerName::Kvmclock, _) | (_, None | Some(true))
        );
        if !ok_present {
            v.err(
                format!("{p}.present"),
                Problem::Unsupported(format!("removing timer '{}'", t.name.as_str())),
            );
        }
    }
}

/// `<features>`: the Hyper-V values QEMU takes as they are.
pub(super) fn features(v: &mut V, d: &DomainConfig) {
    if let Some(h) = &d.features.hyperv {
        if let Some(sl) = h.spinlocks {
            match (sl.state, sl.retries) {
                (true, None) => v.err(
                    "features.hyperv.spinlocks.retries",
                    Problem::Inconsistent("required when spinlocks are on".into()),
                ),
                (_, Some(r)) => v.range(
                    "features.hyperv.spinlocks.retries",
                    r,
                    MIN_SPINLOCK_RETRIES,
                    u32::MAX,
                ),
                (false, None) => {}
            }
        }
        if let Some(vid) = &h.vendor_id {
            match &vid.value {
                Some(val) => v.token(
                    "features.hyperv.vendor_id.value",
                    val,
                    12,
                    "printable ASCII without ','",
                    |c| c == ' ' || (c.is_ascii_graphic() && c != ','),
                ),
                None if vid.state => v.err(
                    "features.hyperv.vendor_id.value",
                    Problem::Inconsistent("required when vendor_id is on".into()),
                ),
                None => {}
            }
        }
        if h.stimer.is_some_and(|s| s.direct == Some(true) && !s.state) {
            v.err(
                "features.hyperv.stimer.direct",
                Problem::Inconsistent("direct mode needs stimer on".into()),
            );
        }
    }
    if let Firmware::UefiAuto {
        secure_boot: Some(true),
        ..
    } = d.os.firmware
    {
        if d.features.smm == Some(false) {
            v.err(
                "os.firmware.secure_boot",
                Problem::Inconsistent("secure boot needs features.smm on".into()),
            );
        }
    }
}
