//! A `dir` pool: a name and a directory. XML as libvirt's
//! `<pool type='dir'><name/><uuid/><target><path/></target></pool>`; the capacity figures
//! `pool-dumpxml` shows are written, and read back as ignored output (libvirt does the same).

use serde::{Deserialize, Serialize};

use super::{check_name, esc};
use crate::xml::tree::{self, Element};
use crate::xml::XmlError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The pool's directory (absolute).
    pub path: String,
}

/// Whether the pool's directory is there now (`pool-info`'s State).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolState {
    Running,
    /// The directory is missing or unreadable: reported, never fatal.
    Inactive,
}

/// The file system figures of a pool, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

impl PoolConfig {
    /// `virsh pool-dumpxml` layout; `stats` adds the capacity figures.
    pub fn to_xml(&self, stats: Option<&PoolStats>) -> String {
        let mut o = String::from("<pool type='dir'>\n");
        o.push_str(&format!("  <name>{}</name>\n", esc(&self.name)));
        if let Some(u) = &self.uuid {
            o.push_str(&format!("  <uuid>{}</uuid>\n", esc(u)));
        }
        if let Some(s) = stats {
            o.push_str(&format!(
                "  <capacity unit='bytes'>{}</capacity>\n  <allocation unit='bytes'>{}</allocation>\n  <available unit='bytes'>{}</available>\n",
                s.capacity, s.allocation, s.available
            ));
        }
        o.push_str("  <source>\n  </source>\n  <target>\n");
        o.push_str(&format!("    <path>{}</path>\n", esc(&self.path)));
        o.push_str("  </target>\n</pool>\n");
        o
    }

    /// Reads `<pool type='dir'>`; other pool types and `<permissions>` are refused by name.
    pub fn from_xml(xml: &str) -> Result<PoolConfig, XmlError> {
        let root = tree::parse(xml, &[])?;
        read(&root)
    }
}

fn read(root: &Element) -> Result<PoolConfig, XmlError> {
    if root.name != "pool" {
        return Err(root.unsupported());
    }
    root.allow(
        &["type"],
        &[
            "name",
            "uuid",
            "capacity",
            "allocation",
            "available",
            "source",
            "target",
        ],
    )?;
    let ty = root.req_attr("type")?;
    if ty != "dir" {
        return Err(XmlError::NotSupported {
            path: format!("{}@type", root.path),
            line: root.line,
            reason: format!(
                "pool type '{ty}': only 'dir' pools (directories inside the storage roots) exist here"
            ),
        });
    }
    let name_el = root.req_child("name")?;
    let name = name_el.req_text()?.to_owned();
    check_name(&name).map_err(|m| name_el.invalid_text(m))?;
    let uuid = match root.text_child("uuid")? {
        Some(u) => Some(u.req_text()?.to_owned()),
        None => None,
    };
    if let Some(src) = root.child("source")? {
        src.allow(&[], &[])?;
    }
    let target = root.req_child("target")?;
    target.allow(&[], &["path"])?;
    let path_el = target.req_child("path")?;
    let path = path_el.req_text()?.to_owned();
    if !path.starts_with('/') {
        return Err(path_el.invalid_text("the pool's directory must be an absolute path"));
    }
    Ok(PoolConfig { name, uuid, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolConfig {
        PoolConfig {
            name: "fast".into(),
            uuid: Some("7d1c4f0e-53a4-4f49-9d39-2d47f7c1a001".into()),
            path: "/var/lib/novacron/images/fast & <co>".into(),
        }
    }

    #[test]
    fn round_trips() {
        let p = pool();
        assert_eq!(PoolConfig::from_xml(&p.to_xml(None)).unwrap(), p);
        let stats = PoolStats {
            capacity: 10,
            allocation: 4,
            available: 6,
        };
        assert_eq!(PoolConfig::from_xml(&p.to_xml(Some(&stats))).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PoolConfig>(&json).unwrap(), p);
    }

    #[test]
    fn reads_libvirts_form() {
        let p = PoolConfig::from_xml(
            "<pool type='dir'><name>default</name><target><path>/srv/img</path></target></pool>",
        )
        .unwrap();
        assert_eq!(p.path, "/srv/img");
        assert_eq!(p.uuid, None);
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        let e = PoolConfig::from_xml(
            "<pool type='logical'><name>vg</name><target><path>/dev/vg</path></target></pool>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only 'dir' pools"), "{e}");
        let e = PoolConfig::from_xml(
            "<pool type='dir'><name>a/b</name><target><path>/srv</path></target></pool>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pool/name"), "{e}");
        let e = PoolConfig::from_xml(
            "<pool type='dir'><name>p</name><target><path>/srv</path><permissions/></target></pool>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("permissions"), "{e}");
        assert!(PoolConfig::from_xml(
            "<pool type='dir'><name>p</name><target><path>rel</path></target></pool>"
        )
        .is_err());
    }
}
