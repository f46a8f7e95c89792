//! A file volume (qcow2 or raw) in a pool. `VolumeConfig` is what `vol-create` takes,
//! `VolumeInfo` what `vol-list`/`vol-info`/`vol-dumpxml` report. XML as libvirt's
//! `<volume type='file'><name/><capacity unit=/><allocation/><target><format type=/></target>
//! <backingStore/></volume>`; the key and path `vol-dumpxml` shows are read back as output.

use serde::{Deserialize, Serialize};

use super::{check_name, esc, parse_unit, MAX_VOLUME_BYTES};
use crate::xml::tree::{self, Element};
use crate::xml::XmlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    Raw,
    Qcow2,
}

impl VolumeFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Raw => "raw",
            VolumeFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::str::FromStr for VolumeFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(VolumeFormat::Raw),
            "qcow2" => Ok(VolumeFormat::Qcow2),
            _ => Err(format!("unsupported volume format {s:?} (raw or qcow2)")),
        }
    }
}

/// The file a qcow2 overlay reads what it has not written (a linked clone's base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backing {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<VolumeFormat>,
}

/// A volume to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub name: String,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes to preallocate: `None`/0 sparse; equal to the capacity: fully allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<u64>,
    pub format: VolumeFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<Backing>,
}

/// A volume as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub pool: String,
    pub name: String,
    pub path: String,
    pub format: VolumeFormat,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes allocated on the host file system.
    pub allocation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<Backing>,
}

fn write(
    o: &mut String,
    name: &str,
    path: Option<&str>,
    capacity: u64,
    allocation: Option<u64>,
    format: VolumeFormat,
    backing: Option<&Backing>,
) {
    o.push_str("<volume type='file'>\n");
    o.push_str(&format!("  <name>{}</name>\n", esc(name)));
    if let Some(p) = path {
        o.push_str(&format!("  <key>{}</key>\n", esc(p)));
    }
    o.push_str(&format!("  <capacity unit='bytes'>{capacity}</capacity>\n"));
    if let Some(a) = allocation {
        o.push_str(&format!("  <allocation unit='bytes'>{a}</allocation>\n"));
    }
    o.push_str("  <target>\n");
    if let Some(p) = path {
        o.push_str(&format!("    <path>{}</path>\n", esc(p)));
    }
    o.push_str(&format!("    <format type='{}'/>\n", format.as_str()));
    o.push_str("  </target>\n");
    if let Some(b) = backing {
        o.push_str("  <backingStore>\n");
        o.push_str(&format!("    <path>{}</path>\n", esc(&b.path)));
        if let Some(f) = b.format {
            o.push_str(&format!("    <format type='{}'/>\n", f.as_str()));
        }
        o.push_str("  </backingStore>\n");
    }
    o.push_str("</volume>\n");
}

impl VolumeConfig {
    pub fn to_xml(&self) -> String {
        let mut o = String::new();
        write(
            &mut o,
            &self.name,
            None,
            self.capacity,
            self.allocation,
            self.format,
            self.backing.as_ref(),
        );
        o
    }

    /// Reads `<volume>` as `virsh vol-create` sends it. Sizes are bounded by
    /// [`MAX_VOLUME_BYTES`]; encryption, permissions and other types are refused by name.
    pub fn from_xml(xml: &str) -> Result<VolumeConfig, XmlError> {
        read(&tree::parse(xml, &[])?)
    }
}

impl VolumeInfo {
    /// `virsh vol-dumpxml` layout.
    pub fn to_xml(&self) -> String {
        let mut o = String::new();
        write(
            &mut o,
            &self.name,
            Some(&self.path),
            self.capacity,
            Some(self.allocation),
            self.format,
            self.backing.as_ref(),
        );
        o
    }
}

fn size(e: &Element) -> Result<u64, XmlError> {
    e.allow(&["unit"], &[])?;
    let unit = e.attr("unit").unwrap_or("bytes");
    let mult =
        parse_unit(unit).ok_or_else(|| e.invalid_attr("unit", format!("unknown unit {unit:?}")))?;
    let n: u64 = e.text_int()?;
    let bytes = n
        .checked_mul(mult)
        .filter(|b| *b <= MAX_VOLUME_BYTES)
        .ok_or_else(|| {
            e.invalid_text(format!(
                "{n} {unit} is over the {MAX_VOLUME_BYTES} byte volume limit"
            ))
        })?;
    Ok(bytes)
}

fn format_of(target: &Element) -> Result<Option<VolumeFormat>, XmlError> {
    match target.child("format")? {
        None => Ok(None),
        Some(f) => {
            f.allow(&["type"], &[])?;
            let ty = f.req_attr("type")?;
            ty.parse()
                .map(Some)
                .map_err(|_| f.unsupported_value(Some("type"), ty, &["raw", "qcow2"]))
        }
    }
}

fn read(root: &Element) -> Result<VolumeConfig, XmlError> {
    if root.name != "volume" {
        return Err(root.unsupported());
    }
    root.allow(
        &["type"],
        &[
            "name",
            "key",
            "capacity",
            "allocation",
            "target",
            "backingStore",
        ],
    )?;
    if let Some(ty) = root.attr("type") {
        if ty != "file" {
            return Err(root.unsupported_value(Some("type"), ty, &["file"]));
        }
    }
    let name_el = root.req_child("name")?;
    let name = name_el.req_text()?.to_owned();
    check_name(&name).map_err(|m| name_el.invalid_text(m))?;
    let capacity = size(root.req_child("capacity")?)?;
    let allocation = root.child("allocation")?.map(size).transpose()?;
    let format = match root.child("target")? {
        Some(t) => {
            t.allow(&[], &["path", "format"])?;
            format_of(t)?
        }
        None => None,
    }
    .unwrap_or(VolumeFormat::Raw);
    let backing = match root.child("backingStore")? {
        None => None,
        Some(b) => {
            b.allow(&[], &["path", "format"])?;
            Some(Backing {
                path: b.req_child("path")?.req_text()?.to_owned(),
                format: format_of(b)?,
            })
        }
    };
    Ok(VolumeConfig {
        name,
        capacity,
        allocation,
        format,
        backing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v = VolumeConfig {
            name: "web1 & <co>.qcow2".into(),
            capacity: 64 << 20,
            allocation: Some(0),
            format: VolumeFormat::Qcow2,
            backing: Some(Backing {
                path: "/var/lib/novacron/images/base.qcow2".into(),
                format: Some(VolumeFormat::Qcow2),
            }),
        };
        assert_eq!(VolumeConfig::from_xml(&v.to_xml()).unwrap(), v);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<VolumeConfig>(&json).unwrap(), v);
        let info = VolumeInfo {
            pool: "default".into(),
            name: v.name.clone(),
            path: "/var/lib/novacron/images/web1.qcow2".into(),
            format: v.format,
            capacity: v.capacity,
            allocation: 0,
            backing: v.backing.clone(),
        };
        // What vol-dumpxml shows is what vol-create reads (key and path are output).
        assert_eq!(VolumeConfig::from_xml(&info.to_xml()).unwrap(), v);
    }

    #[test]
    fn reads_virsh_units() {
        let v = VolumeConfig::from_xml(
            "<volume><name>d.img</name><capacity unit='G'>2</capacity><allocation>0</allocation></volume>",
        )
        .unwrap();
        assert_eq!(v.capacity, 2 << 30);
        assert_eq!(v.format, VolumeFormat::Raw);
    }

    #[test]
    fn refuses_hostile_volumes() {
        for (xml, want) in [
            ("<volume><name>../x</name><capacity>1</capacity></volume>", "volume/name"),
            ("<volume><name>x</name><capacity unit='EiB'>1</capacity></volume>", "volume limit"),
            ("<volume><name>x</name><capacity>1</capacity><target><format type='vmdk'/></target></volume>", "vmdk"),
            ("<volume><name>x</name><capacity>1</capacity><target><encryption/></target></volume>", "encryption"),
            ("<volume type='block'><name>x</name><capacity>1</capacity></volume>", "block"),
        ] {
            let e = VolumeConfig::from_xml(xml).unwrap_err().to_string();
            assert!(e.contains(want), "{xml}: {e}");
        }
    }
}
