//! `<memory model='dimm'|'virtio-mem'>` (hot-pluggable RAM). nvdimm and virtio-pmem are
//! refused by name: they map host files into the guest (a storage question, not RAM).

use super::devices::{address, refused};
use super::{text_kib, R};
use crate::model::*;
use crate::xml::tree::Element;

pub(super) fn memory_device(e: &Element) -> R<MemoryDevice> {
    e.allow(
        &["model", "access", "discard"],
        &["target", "address", "source"],
    )?;
    let model = match e.req_attr("model")? {
        "dimm" => MemoryModel::Dimm,
        "virtio-mem" => MemoryModel::VirtioMem,
        _ => {
            return Err(refused(
                e,
                "only memory models 'dimm' and 'virtio-mem' are supported (nvdimm and \
                 virtio-pmem map host files into the guest)",
            ))
        }
    };
    if e.child("source")?.is_some() {
        return Err(refused(
            e,
            "<source> of a memory device (host page sizes or files per device) is not \
             supported; the device uses the guest's memory backing",
        ));
    }
    if e.attr("access").is_some() || e.attr("discard").is_some() {
        return Err(refused(
            e,
            "access/discard of a memory device are not supported",
        ));
    }
    let t = e.req_child("target")?;
    let allowed: &[&str] = match model {
        MemoryModel::Dimm => &["size", "node"],
        MemoryModel::VirtioMem => &["size", "node", "block", "requested", "current"],
    };
    t.allow(&[], allowed)?;
    let kib = |n: &str| -> R<Option<u64>> {
        match t.child(n)? {
            Some(c) => {
                c.allow(&["unit"], &[])?;
                Ok(Some(text_kib(c)?))
            }
            None => Ok(None),
        }
    };
    let size_kib = {
        let s = t.req_child("size")?;
        s.allow(&["unit"], &[])?;
        text_kib(s)?
    };
    let node = match t.child("node")? {
        Some(n) => {
            n.allow(&[], &[])?;
            Some(n.text_int()?)
        }
        None => None,
    };
    // `<current>` is what libvirt reports the guest has plugged: output only.
    let _ = kib("current")?;
    let address = match model {
        MemoryModel::VirtioMem => address(e)?,
        MemoryModel::Dimm => {
            if e.child("address")?.is_some() {
                return Err(refused(
                    e,
                    "a DIMM's <address> (slot/base) is not supported: QEMU places it",
                ));
            }
            None
        }
    };
    Ok(MemoryDevice {
        model,
        size_kib,
        node,
        requested_kib: kib("requested")?,
        block_kib: kib("block")?,
        address,
        // Unlike other devices, a memory device keeps its QEMU id: a migration destination
        // and `update-memory-device` name it, and its migration section is keyed by it.
        alias: match e.child("alias")? {
            Some(a) => Some(a.req_attr("name")?.to_owned()),
            None => None,
        },
    })
}
