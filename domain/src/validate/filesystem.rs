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
        // The XML reader refuses it by name; the JSON front-end reaches here.
        if f.driver == FsDriver::Virtiofs {
            v.err(
                format!("{p}.driver"),
                Problem::Unsupported(
                    "virtiofs (needs a virtiofsd the daemon supervises, not done yet; use 9p)"
                        .into(),
                ),
            );
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
