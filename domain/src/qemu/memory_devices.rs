//! Memory devices (`<memory model='dimm'|'virtio-mem'>`) as QEMU arguments: one backend object
//! (`mem<id>`) and one device (`<id>`) each. The command line and a hotplug (`object-add` +
//! `device_add`) use the same ids and properties, so a hot-added DIMM and a started one are
//! the same to QEMU and to a migration destination started from the live device set.

use serde_json::{json, Value};

use crate::model::*;

/// The backend object id of device `id`.
pub fn backend_id(id: &str) -> String {
    format!("mem{id}")
}

/// Shared guest RAM (vhost-user, virtiofs) needs a shareable backend for hot-added RAM too.
fn shared(d: &DomainConfig) -> bool {
    d.memory_backing
        .as_ref()
        .is_some_and(|b| b.access == Some(MemoryAccess::Shared))
}

/// `object-add` arguments of device `id`'s backend.
pub fn backend_json(d: &DomainConfig, dev: &MemoryDevice, id: &str) -> Value {
    let mut v = json!({
        "qom-type": if shared(d) { "memory-backend-memfd" } else { "memory-backend-ram" },
        "id": backend_id(id),
        "size": dev.size_kib * 1024,
    });
    if shared(d) {
        v["share"] = json!(true);
    }
    v
}

/// `device_add` arguments of device `id` (without a PCI address: a hot-added virtio-mem goes
/// where the caller puts it, `bus` included).
pub fn device_json(dev: &MemoryDevice, id: &str) -> Value {
    let mut v = json!({
        "driver": match dev.model {
            MemoryModel::Dimm => "pc-dimm",
            MemoryModel::VirtioMem => "virtio-mem-pci",
        },
        "id": id,
        "memdev": backend_id(id),
        "node": dev.node.unwrap_or(0),
    });
    if dev.model == MemoryModel::VirtioMem {
        v["requested-size"] = json!(dev.requested_kib.unwrap_or(0) * 1024);
        v["block-size"] = json!(dev.block() * 1024);
    }
    v
}

/// `-object` and `-device` values for device `id`; `pci` is the `,bus=..,addr=..` suffix.
pub(super) fn argv(d: &DomainConfig, dev: &MemoryDevice, id: &str, pci: &str) -> [String; 2] {
    let backend = if shared(d) {
        format!(
            "memory-backend-memfd,id={},size={}k,share=on",
            backend_id(id),
            dev.size_kib
        )
    } else {
        format!(
            "memory-backend-ram,id={},size={}k",
            backend_id(id),
            dev.size_kib
        )
    };
    let node = dev.node.unwrap_or(0);
    let device = match dev.model {
        MemoryModel::Dimm => format!("pc-dimm,id={id},memdev={},node={node}", backend_id(id)),
        MemoryModel::VirtioMem => format!(
            "virtio-mem-pci,id={id},memdev={},node={node},requested-size={}k,block-size={}k{pci}",
            backend_id(id),
            dev.requested_kib.unwrap_or(0),
            dev.block()
        ),
    };
    [backend, device]
}
