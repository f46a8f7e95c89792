//! `<filesystem>`: source paths, mount tags, and what each driver supports.

use std::collections::BTreeMap;

use super::{Problem, V};
use crate::model::*;

/// virtio-9p's mount tag limit (QEMU `MAX_TAG_LEN` less the terminator).
const MAX_TAG: usize = 31;

fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

pub(super) fn filesystems(v: &mut V, d: &DomainConfig) {
    let fs = &d.devices.filesystems;
    if fs.len() > MAX_FILESYSTEMS {
        v.err(
            "devices.filesystems",
            Problem::TooLong {
                max: MAX_FILESYSTEMS,
            },
        );
    }
    let mut tags = BTreeMap::new();
    for (i, f) in fs.iter().enumerate() {
        let p = format!("devices.filesystems[{i}]");
        v.path(format!("{p}.source"), &f.source);
        v.token(
            format!("{p}.target"),
            &f.target,
            MAX_TAG,
            "ASCII letters, digits, '_', '-', '.', '/'",
            tag_char,
        );
        if f.driver == FsDriver::Virtiofs {
            virtiofs(v, d, &p, f);
        }
        if let Some(prev) = tags.insert(f.target.clone(), i) {
            v.err(
                format!("{p}.target"),
                Problem::Duplicate(format!(
                    "mount tag '{}' (also devices.filesystems[{prev}])",
                    f.target
                )),
            );
        }
        if matches!(f.address, Some(ref a) if !matches!(a, Address::Pci { .. })) {
            v.err(
                format!("{p}.address"),
                Problem::Inconsistent("a filesystem sits on PCI".into()),
            );
        }
    }
}

/// virtiofs as libvirt takes it: the daemon's virtiofsd maps guest RAM, so the RAM must be
/// shared; ownership is passed through (virtiofsd has no mapped/squash modes) and the share
/// is writable (QEMU 7.2's virtiofsd has no read-only export).
fn virtiofs(v: &mut V, d: &DomainConfig, p: &str, f: &Filesystem) {
    if !super::resources::memory_is_shared(d) {
        v.err(
            format!("{p}.driver"),
            Problem::Unsupported(
                "virtiofs without shared guest memory (virtiofsd maps guest RAM: set \
                 memory_backing.access shared with source memfd or file, \
                 <memoryBacking><access mode='shared'/><source type='memfd'/>)"
                    .into(),
            ),
        );
    }
    if f.access_mode != FsAccessMode::Passthrough {
        v.err(
            format!("{p}.access_mode"),
            Problem::Unsupported(format!(
                "accessmode '{}' with virtiofs (only passthrough)",
                f.access_mode.as_str()
            )),
        );
    }
    if f.readonly {
        v.err(
            format!("{p}.readonly"),
            Problem::Unsupported("read-only virtiofs (QEMU 7.2's virtiofsd cannot)".into()),
        );
    }
}
