//! Rendering for people (aligned tables, `key: value` blocks, one-line events) and the
//! plumbing that writes to stdout without panicking on a closed pipe.

use std::io::Write;

use novacrond::client::{DomainInfo, DomainStatus, Event, HostInfo};
use serde::Serialize;
use serde_json::Value;

use crate::exit::CliError;

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            what: "writing to standard output".into(),
            source,
        })
}

/// Machine output: the API's JSON, compact, one document per line.
pub fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
    line(&text)
}

/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded so lines carry no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            let mut text = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    text.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            text
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Key:   value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn domain_table(domains: &[DomainStatus]) -> String {
    let rows: Vec<Vec<String>> = domains
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.state.to_string(),
                yes_no(d.autostart),
                yes_no(d.persistent),
                d.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "AUTOSTART", "PERSISTENT", "PID"], &rows)
}

pub fn domain_info(info: &DomainInfo) -> String {
    let s = &info.status;
    let mut pairs = vec![
        ("Name", s.name.clone()),
        ("UUID", s.uuid.clone().unwrap_or_else(|| "-".into())),
        ("State", s.state.to_string()),
        ("PID", s.pid.map_or_else(|| "-".into(), |p| p.to_string())),
        ("Persistent", yes_no(s.persistent)),
        ("Autostart", yes_no(s.autostart)),
    ];
    // The definition is the model's JSON; show the few settings people look for, and only
    // when present, so a model change degrades to fewer lines rather than an error.
    let cfg = &info.config;
    if let Some(n) = cfg.pointer("/vcpu/count").and_then(Value::as_u64) {
        pairs.push(("vCPUs", n.to_string()));
    }
    if let Some(kib) = cfg.pointer("/memory/memory_kib").and_then(Value::as_u64) {
        pairs.push(("Memory", bytes(kib.saturating_mul(1024))));
        // virsh's "Used memory": the balloon target (`<currentMemory>`) when below it.
        if let Some(cur) = cfg
            .pointer("/memory/current_kib")
            .and_then(Value::as_u64)
            .filter(|c| *c < kib)
        {
            pairs.push(("Used memory", bytes(cur.saturating_mul(1024))));
        }
    }
    if let Some(m) = cfg.pointer("/os/machine").and_then(Value::as_str) {
        pairs.push(("Machine", m.to_owned()));
    }
    if let Some(t) = cfg.get("virt_type").and_then(Value::as_str) {
        pairs.push(("Type", t.to_owned()));
    }
    // One line per leased address, as `domifaddr` shows them (a NIC without a lease: none).
    for nic in info.interfaces.iter().flatten() {
        for a in &nic.addresses {
            let net = nic
                .network
                .as_deref()
                .map_or(String::new(), |n| format!(", {n}"));
            pairs.push((
                "Address",
                format!(
                    "{} {}/{} (lease{net})",
                    nic.mac.as_deref().unwrap_or("-"),
                    a.address,
                    a.prefix
                ),
            ));
        }
    }
    fields(&pairs)
}

pub fn host_info(h: &HostInfo) -> String {
    let emulator = match &h.emulator {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let kvm = match (&h.kvm.usable, &h.kvm.reason) {
        (true, _) => "usable".to_owned(),
        (false, Some(why)) => format!("not usable: {why}"),
        (false, None) => "not usable".to_owned(),
    };
    fields(&[
        ("Hostname", h.hostname.clone()),
        ("Daemon", h.daemon_version.clone()),
        ("Emulator", emulator),
        ("KVM", kvm),
        ("CPUs", h.cpus.to_string()),
        ("Memory", bytes(h.memory_bytes)),
        (
            "Domains",
            format!("{} ({} running)", h.domains.total, h.domains.running),
        ),
    ])
}

/// `2024-05-01T12:00:03.123Z  #12  vm1  state_changed  starting -> running (booted)`
pub fn event_line(e: &Event) -> String {
    let what = match (e.event.as_str(), e.detail_str("from"), e.detail_str("to")) {
        ("state_changed", Some(from), Some(to)) => {
            // API.md has `reason` and `detail` flat; a daemon that nests them as
            // `"reason": {"reason", "detail"}` is read the same way.
            let nested = e.details.get("reason").filter(|r| r.is_object());
            let field = |key: &str| match nested {
                Some(r) => r.get(key).and_then(Value::as_str),
                None => e.detail_str(key),
            };
            let why = match (field("reason"), field("detail")) {
                (Some(r), Some(d)) => format!(" ({r}: {d})"),
                (Some(r), None) => format!(" ({r})"),
                _ => String::new(),
            };
            format!("{from} -> {to}{why}")
        }
        // Anything else: its fields as key=value, in a stable (sorted) order.
        _ => e
            .details
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let text = format!(
        "{}  #{}  {}  {}  {what}",
        utc_timestamp(e.time_unix_ms),
        e.seq,
        e.domain,
        e.event
    );
    text.trim_end().to_owned()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Binary units, one decimal when not whole: `64 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut value = n as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// RFC 3339 in UTC with milliseconds, without a date-time dependency.
pub fn utc_timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use novacron_domain::DomainState;

    fn status(name: &str, state: DomainState, pid: Option<u32>) -> DomainStatus {
        DomainStatus {
            name: name.into(),
            uuid: None,
            state,
            persistent: true,
            autostart: pid.is_some(),
            pid,
            extra: Default::default(),
        }
    }

    #[test]
    fn domain_table_is_aligned() {
        let t = domain_table(&[
            status("a", DomainState::Running, Some(1234)),
            status("longer-name", DomainState::ShuttingDown, None),
        ]);
        assert_eq!(
            t,
            "NAME         STATE          AUTOSTART  PERSISTENT  PID\n\
             a            running        yes        yes         1234\n\
             longer-name  shutting_down  no         yes         -"
        );
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let t = table(
            &["N", "X"],
            &[vec!["é".into(), "1".into()], vec!["ab".into(), "2".into()]],
        );
        assert_eq!(t, "N   X\né   1\nab  2");
    }

    #[test]
    fn fields_are_aligned() {
        assert_eq!(
            fields(&[("Name", "vm1".into()), ("Autostart", "no".into())]),
            "Name:       vm1\nAutostart:  no"
        );
    }

    #[test]
    fn info_shows_model_settings_when_present() {
        let info = DomainInfo {
            status: status("vm1", DomainState::Running, Some(7)),
            config: serde_json::json!({"vcpu": {"count": 2}, "memory": {"memory_kib": 65536}, "os": {"machine": "q35"}}),
            interfaces: Some(vec![novacrond::service::nics::addresses::NicAddresses {
                name: Some("nc01020304t0".into()),
                mac: Some("52:54:00:aa:bb:cc".into()),
                network: Some("default".into()),
                addresses: vec![novacrond::service::nics::addresses::IpAddress {
                    family: "ipv4".into(),
                    address: "192.168.122.7".into(),
                    prefix: 24,
                }],
            }]),
        };
        let text = domain_info(&info);
        assert!(text.contains("vCPUs:       2"), "{text}");
        assert!(text.contains("Memory:      64 MiB"), "{text}");
        assert!(text.contains("Machine:     q35"), "{text}");
        assert!(
            text.contains("Address:     52:54:00:aa:bb:cc 192.168.122.7/24 (lease, default)"),
            "{text}"
        );
        let bare = DomainInfo {
            config: Value::Null,
            ..info
        };
        assert!(!domain_info(&bare).contains("vCPUs"));
    }

    #[test]
    fn units_and_time() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_timestamp(1_718_000_000_999), "2024-06-10T06:13:20.999Z");
    }

    #[test]
    fn event_lines() {
        let e: Event = serde_json::from_str(
            r#"{"seq":12,"time_unix_ms":0,"domain":"vm1","event":"state_changed","from":"running","to":"crashed","reason":"qemu_died","detail":"killed by signal 9"}"#,
        )
        .unwrap();
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:00.000Z  #12  vm1  state_changed  running -> crashed (qemu_died: killed by signal 9)"
        );
        let e: Event = serde_json::from_str(
            r#"{"seq":13,"time_unix_ms":0,"domain":"vm1","event":"reconnect_failed","pid":9,"error":"no QMP"}"#,
        )
        .unwrap();
        assert!(event_line(&e).ends_with("reconnect_failed  error=no QMP pid=9"));
        let e: Event = serde_json::from_str(
            r#"{"seq":2,"time_unix_ms":0,"domain":"vm1","event":"state_changed","from":"shutoff","to":"starting","reason":{"reason":"start_failed","detail":"no kvm"}}"#,
        )
        .unwrap();
        assert!(event_line(&e).ends_with("shutoff -> starting (start_failed: no kvm)"));
        let e: Event =
            serde_json::from_str(r#"{"seq":14,"time_unix_ms":0,"domain":"vm1","event":"reset"}"#)
                .unwrap();
        assert!(event_line(&e).ends_with("#14  vm1  reset"));
    }
}
