//! libvirt's per-disk `<iotune>` (virsh `blkdeviotune`): 0 is unlimited. Bytes and operations
//! per second, total or per direction (not both), bursts (`*_max`) and how long a burst may
//! last (`*_max_length`, seconds), the operation size `size_iops_sec`, and a group name that
//! makes disks share one limit. The same struct is the definition's `<iotune>` and the body of
//! the live `blkdeviotune` operation; [`IoTune::problems`] is QEMU's own rule set
//! (`throttle_is_valid`), so a definition QEMU would refuse at start is refused at define.

use serde::{Deserialize, Serialize};

/// QEMU's limit on every throttle value (`THROTTLE_VALUE_MAX`, 1e15).
pub const MAX_THROTTLE: u64 = 1_000_000_000_000_000;
/// Group names: QEMU throttle-group ids, and they appear in QMP arguments.
pub const MAX_GROUP_NAME: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoTune {
    #[serde(default)]
    pub total_bytes_sec: u64,
    #[serde(default)]
    pub read_bytes_sec: u64,
    #[serde(default)]
    pub write_bytes_sec: u64,
    #[serde(default)]
    pub total_iops_sec: u64,
    #[serde(default)]
    pub read_iops_sec: u64,
    #[serde(default)]
    pub write_iops_sec: u64,
    #[serde(default)]
    pub total_bytes_sec_max: u64,
    #[serde(default)]
    pub read_bytes_sec_max: u64,
    #[serde(default)]
    pub write_bytes_sec_max: u64,
    #[serde(default)]
    pub total_iops_sec_max: u64,
    #[serde(default)]
    pub read_iops_sec_max: u64,
    #[serde(default)]
    pub write_iops_sec_max: u64,
    /// Seconds a burst may last (QEMU's `*_max_length`); 0 leaves QEMU's default (1 s).
    #[serde(default)]
    pub total_bytes_sec_max_length: u64,
    #[serde(default)]
    pub read_bytes_sec_max_length: u64,
    #[serde(default)]
    pub write_bytes_sec_max_length: u64,
    #[serde(default)]
    pub total_iops_sec_max_length: u64,
    #[serde(default)]
    pub read_iops_sec_max_length: u64,
    #[serde(default)]
    pub write_iops_sec_max_length: u64,
    /// Bytes one operation counts as for the iops limits (QEMU's `iops_size`).
    #[serde(default)]
    pub size_iops_sec: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

/// One bucket: (field prefix, average, burst, burst length).
type Bucket<'a> = (&'a str, u64, u64, u64);

impl IoTune {
    /// Every numeric field with its libvirt element name, in libvirt's document order.
    pub fn fields(&self) -> [(&'static str, u64); 19] {
        [
            ("total_bytes_sec", self.total_bytes_sec),
            ("read_bytes_sec", self.read_bytes_sec),
            ("write_bytes_sec", self.write_bytes_sec),
            ("total_iops_sec", self.total_iops_sec),
            ("read_iops_sec", self.read_iops_sec),
            ("write_iops_sec", self.write_iops_sec),
            ("total_bytes_sec_max", self.total_bytes_sec_max),
            ("read_bytes_sec_max", self.read_bytes_sec_max),
            ("write_bytes_sec_max", self.write_bytes_sec_max),
            ("total_iops_sec_max", self.total_iops_sec_max),
            ("read_iops_sec_max", self.read_iops_sec_max),
            ("write_iops_sec_max", self.write_iops_sec_max),
            ("size_iops_sec", self.size_iops_sec),
            (
                "total_bytes_sec_max_length",
                self.total_bytes_sec_max_length,
            ),
            ("read_bytes_sec_max_length", self.read_bytes_sec_max_length),
            (
                "write_bytes_sec_max_length",
                self.write_bytes_sec_max_length,
            ),
            ("total_iops_sec_max_length", self.total_iops_sec_max_length),
            ("read_iops_sec_max_length", self.read_iops_sec_max_length),
            ("write_iops_sec_max_length", self.write_iops_sec_max_length),
        ]
    }

    /// The field named `name` (a libvirt element name), for the XML reader.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "total_bytes_sec" => &mut self.total_bytes_sec,
            "read_bytes_sec" => &mut self.read_bytes_sec,
            "write_bytes_sec" => &mut self.write_bytes_sec,
            "total_iops_sec" => &mut self.total_iops_sec,
            "read_iops_sec" => &mut self.read_iops_sec,
            "write_iops_sec" => &mut self.write_iops_sec,
            "total_bytes_sec_max" => &mut self.total_bytes_sec_max,
            "read_bytes_sec_max" => &mut self.read_bytes_sec_max,
            "write_bytes_sec_max" => &mut self.write_bytes_sec_max,
            "total_iops_sec_max" => &mut self.total_iops_sec_max,
            "read_iops_sec_max" => &mut self.read_iops_sec_max,
            "write_iops_sec_max" => &mut self.write_iops_sec_max,
            "size_iops_sec" => &mut self.size_iops_sec,
            "total_bytes_sec_max_length" => &mut self.total_bytes_sec_max_length,
            "read_bytes_sec_max_length" => &mut self.read_bytes_sec_max_length,
            "write_bytes_sec_max_length" => &mut self.write_bytes_sec_max_length,
            "total_iops_sec_max_length" => &mut self.total_iops_sec_max_length,
            "read_iops_sec_max_length" => &mut self.read_iops_sec_max_length,
            "write_iops_sec_max_length" => &mut self.write_iops_sec_max_length,
            _ => return None,
        })
    }

    /// No limit at all (what a definition without `<iotune>` means).
    pub fn is_unlimited(&self) -> bool {
        self.fields().iter().all(|(_, v)| *v == 0) && self.group_name.is_none()
    }

    fn buckets(&self) -> [Bucket<'static>; 6] {
        [
            (
                "total_bytes_sec",
                self.total_bytes_sec,
                self.total_bytes_sec_max,
                self.total_bytes_sec_max_length,
            ),
            (
                "read_bytes_sec",
                self.read_bytes_sec,
                self.read_bytes_sec_max,
                self.read_bytes_sec_max_length,
            ),
            (
                "write_bytes_sec",
                self.write_bytes_sec,
                self.write_bytes_sec_max,
                self.write_bytes_sec_max_length,
            ),
            (
                "total_iops_sec",
                self.total_iops_sec,
                self.total_iops_sec_max,
                self.total_iops_sec_max_length,
            ),
            (
                "read_iops_sec",
                self.read_iops_sec,
                self.read_iops_sec_max,
                self.read_iops_sec_max_length,
            ),
            (
                "write_iops_sec",
                self.write_iops_sec,
                self.write_iops_sec_max,
                self.write_iops_sec_max_length,
            ),
        ]
    }

    /// What QEMU would refuse (its `throttle_is_valid`), as (field, why); empty when valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let pairs = [
            (
                "total_bytes_sec",
                self.total_bytes_sec,
                self.read_bytes_sec,
                self.write_bytes_sec,
            ),
            (
                "total_iops_sec",
                self.total_iops_sec,
                self.read_iops_sec,
                self.write_iops_sec,
            ),
            (
                "total_bytes_sec_max",
                self.total_bytes_sec_max,
                self.read_bytes_sec_max,
                self.write_bytes_sec_max,
            ),
            (
                "total_iops_sec_max",
                self.total_iops_sec_max,
                self.read_iops_sec_max,
                self.write_iops_sec_max,
            ),
        ];
        for (total, t, r, w) in pairs {
            if t != 0 && (r != 0 || w != 0) {
                let rest = total.strip_prefix("total_").unwrap_or(total);
                out.push((
                    total,
                    format!("{total} cannot be combined with read_{rest}/write_{rest}"),
                ));
            }
        }
        for (name, v) in self.fields() {
            if v > MAX_THROTTLE && !name.ends_with("_length") {
                out.push((name, format!("{v} is over QEMU's limit of {MAX_THROTTLE}")));
            }
        }
        if self.size_iops_sec != 0
            && self.total_iops_sec == 0
            && self.read_iops_sec == 0
            && self.write_iops_sec == 0
        {
            out.push((
                "size_iops_sec",
                "needs an iops limit (total_iops_sec, read_iops_sec or write_iops_sec)".into(),
            ));
        }
        for (name, avg, max, length) in self.buckets() {
            if max != 0 && avg == 0 {
                out.push((
                    field_max(name),
                    format!("a burst rate needs {name} (the rate it bursts above)"),
                ));
            }
            if max != 0 && max < avg {
                out.push((
                    field_max(name),
                    format!("{max} is lower than {name} ({avg})"),
                ));
            }
            if length > 1 && max == 0 {
                out.push((
                    field_length(name),
                    format!("a burst length needs a burst rate ({})", field_max(name)),
                ));
            }
            if max != 0 && length > MAX_THROTTLE / max {
                out.push((
                    field_length(name),
                    format!("{length} s is too long for a burst rate of {max}"),
                ));
            }
        }
        if let Some(g) = &self.group_name {
            if g.is_empty()
                || g.len() > MAX_GROUP_NAME
                || !g
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                out.push((
                    "group_name",
                    format!("{g:?}: 1 to {MAX_GROUP_NAME} of A-Z a-z 0-9 - _ ."),
                ));
            }
        }
        out
    }
}

fn field_max(avg: &str) -> &'static str {
    match avg {
        "total_bytes_sec" => "total_bytes_sec_max",
        "read_bytes_sec" => "read_bytes_sec_max",
        "write_bytes_sec" => "write_bytes_sec_max",
        "total_iops_sec" => "total_iops_sec_max",
        "read_iops_sec" => "read_iops_sec_max",
        _ => "write_iops_sec_max",
    }
}

fn field_length(avg: &str) -> &'static str {
    match avg {
        "total_bytes_sec" => "total_bytes_sec_max_length",
        "read_bytes_sec" => "read_bytes_sec_max_length",
        "write_bytes_sec" => "write_bytes_sec_max_length",
        "total_iops_sec" => "total_iops_sec_max_length",
        "read_iops_sec" => "read_iops_sec_max_length",
        _ => "write_iops_sec_max_length",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemus_rules() {
        assert!(IoTune::default().problems().is_empty());
        let ok = IoTune {
            read_bytes_sec: 1 << 20,
            write_iops_sec: 100,
            write_iops_sec_max: 200,
            write_iops_sec_max_length: 10,
            size_iops_sec: 4096,
            group_name: Some("g-1".into()),
            ..IoTune::default()
        };
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let bad = |t: IoTune, field: &str| {
            let p = t.problems();
            assert!(p.iter().any(|(f, _)| *f == field), "{field}: {p:?}");
        };
        bad(
            IoTune {
                total_bytes_sec: 1,
                read_bytes_sec: 1,
                ..IoTune::default()
            },
            "total_bytes_sec",
        );
        bad(
            IoTune {
                total_iops_sec_max: 2,
                total_iops_sec: 1,
                write_iops_sec_max: 1,
                ..IoTune::default()
            },
            "total_iops_sec_max",
        );
        bad(
            IoTune {
                total_bytes_sec: MAX_THROTTLE + 1,
                ..IoTune::default()
            },
            "total_bytes_sec",
        );
        bad(
            IoTune {
                read_iops_sec_max: 10,
                ..IoTune::default()
            },
            "read_iops_sec_max",
        );
        bad(
            IoTune {
                total_bytes_sec: 10,
                total_bytes_sec_max: 5,
                ..IoTune::default()
            },
            "total_bytes_sec_max",
        );
        bad(
            IoTune {
                total_bytes_sec: 10,
                total_bytes_sec_max_length: 5,
                ..IoTune::default()
            },
            "total_bytes_sec_max_length",
        );
        bad(
            IoTune {
                total_bytes_sec: MAX_THROTTLE,
                total_bytes_sec_max: MAX_THROTTLE,
                total_bytes_sec_max_length: 2,
                ..IoTune::default()
            },
            "total_bytes_sec_max_length",
        );
        bad(
            IoTune {
                size_iops_sec: 512,
                ..IoTune::default()
            },
            "size_iops_sec",
        );
        bad(
            IoTune {
                group_name: Some("a b".into()),
                ..IoTune::default()
            },
            "group_name",
        );
    }
}
