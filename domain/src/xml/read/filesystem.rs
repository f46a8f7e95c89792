//! `<filesystem type='mount'>` (9p and virtiofs).

use super::devices::address;
use super::{flag, R};
use crate::model::*;
use crate::xml::tree::Element;

pub(super) fn filesystem(e: &Element) -> R<Filesystem> {
    // <binary> (the virtiofsd to run and its options) is the host's choice, not the guest's.
    // virtiofs's rules (shared guest RAM, passthrough, read-write) are validation's.
    e.allow(
        &["type", "accessmode"],
        &["driver", "source", "target", "readonly", "address"],
    )?;
    e.attr_only("type", &["mount"])?;
    let modes: Vec<(&str, FsAccessMode)> =
        FsAccessMode::ALL.iter().map(|m| (m.as_str(), *m)).collect();
    let access_mode = e
        .attr_enum("accessmode", &modes)?
        .unwrap_or(FsAccessMode::Passthrough);
    let driver = match e.child("driver")? {
        Some(d) => {
            d.allow(&["type"], &[])?;
            d.attr_enum(
                "type",
                &[("path", FsDriver::Path), ("virtiofs", FsDriver::Virtiofs)],
            )?
            .unwrap_or(FsDriver::Path)
        }
        None => FsDriver::Path,
    };
    let s = e.req_child("source")?;
    s.allow(&["dir"], &[])?;
    let t = e.req_child("target")?;
    t.allow(&["dir"], &[])?;
    Ok(Filesystem {
        driver,
        access_mode,
        source: s.req_attr("dir")?.to_owned(),
        target: t.req_attr("dir")?.to_owned(),
        readonly: flag(e, "readonly")?,
        address: address(e)?,
    })
}
