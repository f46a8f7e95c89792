//! A domain snapshot as libvirt's `<domainsnapshot>` describes it
//! (<https://libvirt.org/formatsnapshot.html>): the model, its reader and its writer, and JSON
//! through serde. Only external snapshots exist here (one kind per domain tree): a disk is
//! `external` (a qcow2 overlay made at that moment) or `no` (left out, e.g. read-only media);
//! memory is `no` (disk-only) or `external` (a state file, for full snapshots with RAM).
//! What libvirt has beyond that (internal snapshots, `manual` disks, the embedded `<domain>`)
//! is refused by name with the reason.

use quick_xml::escape::escape;
use serde::{Deserialize, Serialize};

use crate::model::DiskFormat;
use crate::xml::tree::{self, Element};
use crate::xml::XmlError;

/// Longest snapshot name: it becomes part of overlay file names.
pub const MAX_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSnapshot {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The domain's state when it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SnapshotState>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub memory: SnapshotMemory,
    #[serde(default)]
    pub disks: Vec<SnapshotDisk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotState {
    Running,
    Paused,
    Shutoff,
    /// libvirt's state of a disk-only snapshot.
    DiskSnapshot,
}

const STATES: &[(&str, SnapshotState)] = &[
    ("running", SnapshotState::Running),
    ("paused", SnapshotState::Paused),
    ("shutoff", SnapshotState::Shutoff),
    ("disk-snapshot", SnapshotState::DiskSnapshot),
];

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        STATES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("running", |(n, _)| n)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "snapshot", deny_unknown_fields)]
pub enum SnapshotMemory {
    /// Disk-only.
    #[default]
    No,
    /// The guest's RAM saved to this file.
    External { file: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDisk {
    /// The disk's target (`vda`).
    pub name: String,
    pub snapshot: DiskSnapshotMode,
    /// The overlay file (external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DiskFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSnapshotMode {
    No,
    External,
}

/// Why a snapshot name is refused, or `None` when it is fine: 1 to [`MAX_NAME`] bytes of
/// letters, digits, `.`, `_`, `-`, not starting with `.` (it becomes part of file names).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Some(format!("must be 1 to {MAX_NAME} bytes"));
    }
    if name.starts_with('.') {
        return Some("must not start with '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{c:?} is not allowed (letters, digits, '.', '_' and '-' only)"
        ));
    }
    None
}

impl DomainSnapshot {
    /// A bare request: only the name set.
    pub fn named(name: impl Into<String>) -> DomainSnapshot {
        DomainSnapshot {
            name: name.into(),
            description: None,
            state: None,
            creation_time: None,
            parent: None,
            memory: SnapshotMemory::No,
            disks: Vec::new(),
        }
    }

    pub fn from_xml(input: &str) -> Result<DomainSnapshot, XmlError> {
        let root = tree::parse(input, &[])?;
        if root.name != "domainsnapshot" {
            return Err(XmlError::Invalid {
                path: root.path.clone(),
                line: root.line,
                message: format!("root element is <{}>, not <domainsnapshot>", root.name),
            });
        }
        read(&root)
    }

    pub fn to_xml(&self) -> String {
        let mut out = String::from("<domainsnapshot>\n");
        let text = |out: &mut String, name: &str, v: &str| {
            out.push_str(&format!("  <{name}>{}</{name}>\n", escape(v)));
        };
        text(&mut out, "name", &self.name);
        if let Some(d) = &self.description {
            text(&mut out, "description", d);
        }
        if let Some(s) = self.state {
            text(&mut out, "state", s.as_str());
        }
        if let Some(p) = &self.parent {
            out.push_str(&format!(
                "  <parent>\n    <name>{}</name>\n  </parent>\n",
                escape(p)
            ));
        }
        if let Some(t) = self.creation_time {
            text(&mut out, "creationTime", &t.to_string());
        }
        match &self.memory {
            SnapshotMemory::No => out.push_str("  <memory snapshot='no'/>\n"),
            SnapshotMemory::External { file } => out.push_str(&format!(
                "  <memory snapshot='external' file='{}'/>\n",
                escape(file.as_str())
            )),
        }
        if !self.disks.is_empty() {
            out.push_str("  <disks>\n");
            for d in &self.disks {
                let mode = match d.snapshot {
                    DiskSnapshotMode::No => "no",
                    DiskSnapshotMode::External => "external",
                };
                let open = format!(
                    "    <disk name='{}' snapshot='{mode}'{}",
                    escape(d.name.as_str()),
                    if d.source.is_some() {
                        " type='file'"
                    } else {
                        ""
                    }
                );
                if d.source.is_none() && d.driver.is_none() {
                    out.push_str(&format!("{open}/>\n"));
                    continue;
                }
                out.push_str(&format!("{open}>\n"));
                if let Some(f) = d.driver {
                    out.push_str(&format!("      <driver type='{}'/>\n", format_name(f)));
                }
                if let Some(s) = &d.source {
                    out.push_str(&format!("      <source file='{}'/>\n", escape(s.as_str())));
                }
                out.push_str("    </disk>\n");
            }
            out.push_str("  </disks>\n");
        }
        out.push_str("</domainsnapshot>\n");
        out
    }
}

fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

fn not_supported(e: &Element, why: &str) -> XmlError {
    XmlError::NotSupported {
        path: e.path.clone(),
        line: e.line,
        reason: why.to_owned(),
    }
}

fn read(root: &Element) -> Result<DomainSnapshot, XmlError> {
    for c in &root.children {
        match c.name.as_str() {
            "domain" | "inactiveDomain" => {
                return Err(not_supported(
                    c,
                    "an embedded domain definition is not supported: the daemon keeps the \
                     definition itself",
                ))
            }
            "cookie" => return Err(not_supported(c, "migration cookies are not supported")),
            _ => {}
        }
    }
    root.allow(
        &[],
        &[
            "name",
            "description",
            "state",
            "creationTime",
            "parent",
            "memory",
            "disks",
        ],
    )?;
    let name = root.req_child("name")?.req_text()?.to_owned();
    if let Some(why) = name_problem(&name) {
        return Err(root
            .req_child("name")?
            .invalid_text(format!("snapshot name {why}")));
    }
    let description = root
        .text_child("description")?
        .map(|e| e.text.clone())
        .filter(|s| !s.is_empty());
    let state = match root.text_child("state")? {
        None => None,
        Some(e) => {
            let t = e.req_text()?;
            Some(
                STATES
                    .iter()
                    .find(|(n, _)| *n == t)
                    .map(|(_, s)| *s)
                    .ok_or_else(|| {
                        e.invalid_text(format!(
                            "state '{t}' is not one of running, paused, shutoff, disk-snapshot"
                        ))
                    })?,
            )
        }
    };
    let creation_time = root
        .text_child("creationTime")?
        .map(|e| e.text_int::<u64>())
        .transpose()?;
    let parent = match root.child("parent")? {
        None => None,
        Some(p) => {
            p.allow(&[], &["name"])?;
            Some(p.req_child("name")?.req_text()?.to_owned())
        }
    };
    let memory = match root.child("memory")? {
        None => SnapshotMemory::No,
        Some(m) => {
            m.allow(&["snapshot", "file"], &[])?;
            match m.attr("snapshot") {
                None | Some("no") if m.attr("file").is_none() => SnapshotMemory::No,
                Some("external") | None => SnapshotMemory::External {
                    file: m.req_attr("file")?.to_owned(),
                },
                Some("internal") => {
                    return Err(m.invalid_attr(
                        "snapshot",
                        "internal snapshots are not supported: snapshots here are external \
                         (one kind per domain)",
                    ))
                }
                Some(v) => {
                    return Err(m.unsupported_value(Some("snapshot"), v, &["no", "external"]))
                }
            }
        }
    };
    let mut disks = Vec::new();
    if let Some(ds) = root.child("disks")? {
        ds.allow(&[], &["disk"])?;
        for d in ds.children_named("disk") {
            d.allow(&["name", "snapshot", "type"], &["driver", "source"])?;
            d.attr_only("type", &["file"])?;
            let name = d.req_attr("name")?.to_owned();
            let snapshot = match d.attr("snapshot") {
                None | Some("external") => DiskSnapshotMode::External,
                Some("no") => DiskSnapshotMode::No,
                Some("internal") => {
                    return Err(d.invalid_attr(
                        "snapshot",
                        "internal snapshots are not supported: snapshots here are external",
                    ))
                }
                Some("manual") => {
                    return Err(d.invalid_attr(
                        "snapshot",
                        "manual disk snapshots are not supported: the daemon takes every disk \
                         in one transaction",
                    ))
                }
                Some(v) => {
                    return Err(d.unsupported_value(Some("snapshot"), v, &["no", "external"]))
                }
            };
            let driver = match d.child("driver")? {
                None => None,
                Some(e) => {
                    e.allow(&["type"], &[])?;
                    Some(e.req_attr_enum(
                        "type",
                        &[("qcow2", DiskFormat::Qcow2), ("raw", DiskFormat::Raw)],
                    )?)
                }
            };
            let source = match d.child("source")? {
                None => None,
                Some(e) => {
                    e.allow(&["file"], &[])?;
                    Some(e.req_attr("file")?.to_owned())
                }
            };
            disks.push(SnapshotDisk {
                name,
                snapshot,
                source,
                driver,
            });
        }
    }
    Ok(DomainSnapshot {
        name,
        description,
        state,
        creation_time,
        parent,
        memory,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> DomainSnapshot {
        DomainSnapshot {
            name: "before-upgrade".into(),
            description: Some("with <escapes> & 'quotes'".into()),
            state: Some(SnapshotState::DiskSnapshot),
            creation_time: Some(1_764_806_400),
            parent: Some("base".into()),
            memory: SnapshotMemory::No,
            disks: vec![
                SnapshotDisk {
                    name: "vda".into(),
                    snapshot: DiskSnapshotMode::External,
                    source: Some("/var/lib/novacron/images/web.vda.before-upgrade.qcow2".into()),
                    driver: Some(DiskFormat::Qcow2),
                },
                SnapshotDisk {
                    name: "hdc".into(),
                    snapshot: DiskSnapshotMode::No,
                    source: None,
                    driver: None,
                },
            ],
        }
    }

    #[test]
    fn xml_and_json_round_trip() {
        for s in [
            full(),
            DomainSnapshot::named("x"),
            DomainSnapshot {
                memory: SnapshotMemory::External {
                    file: "/srv/mem.state".into(),
                },
                state: Some(SnapshotState::Running),
                ..full()
            },
        ] {
            let xml = s.to_xml();
            assert_eq!(DomainSnapshot::from_xml(&xml).unwrap(), s, "{xml}");
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<DomainSnapshot>(&json).unwrap(), s);
        }
    }

    #[test]
    fn reads_virsh_style_input() {
        let s = DomainSnapshot::from_xml(
            "<domainsnapshot><name>s1</name><memory snapshot='no'/>\
             <disks><disk name='vda' snapshot='external'><source file='/x/o.qcow2'/></disk>\
             </disks></domainsnapshot>",
        )
        .unwrap();
        assert_eq!(s.disks[0].source.as_deref(), Some("/x/o.qcow2"));
        assert_eq!(s.memory, SnapshotMemory::No);
    }

    #[test]
    fn refuses_what_is_unsupported_by_name() {
        for (doc, needle) in [
            ("<domainsnapshot><name>a/b</name></domainsnapshot>", "'/' is not allowed"),
            (
                "<domainsnapshot><name>a</name><memory snapshot='internal'/></domainsnapshot>",
                "internal snapshots",
            ),
            (
                "<domainsnapshot><name>a</name><disks><disk name='vda' snapshot='manual'/></disks></domainsnapshot>",
                "manual",
            ),
            (
                "<domainsnapshot><name>a</name><domain type='kvm'/></domainsnapshot>",
                "embedded domain",
            ),
            ("<domain><name>a</name></domain>", "not <domainsnapshot>"),
            ("<domainsnapshot><name>a</name><bogus/></domainsnapshot>", "bogus"),
        ] {
            let e = DomainSnapshot::from_xml(doc).unwrap_err().to_string();
            assert!(e.contains(needle), "{doc}: {e}");
        }
    }

    #[test]
    fn names() {
        assert!(name_problem("ok-1.2_x").is_none());
        assert!(name_problem("").is_some());
        assert!(name_problem(".hidden").is_some());
        assert!(name_problem("a/b").is_some());
        assert!(name_problem(&"x".repeat(MAX_NAME + 1)).is_some());
    }
}
