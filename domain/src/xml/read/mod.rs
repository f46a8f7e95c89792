//! libvirt domain XML -> `DomainConfig`.
//!
//! Every reader lists the attributes and children it understands (`Element::allow`); anything
//! else is an error naming its path and line, because silently dropping a setting would change
//! the guest. The only exceptions are the runtime-only, guest-neutral nodes libvirt adds in
//! `virsh dumpxml`, each listed with its reason where it is accepted:
//!
//! | node | why it is safe to ignore |
//! |---|---|
//! | `<alias>` on any device | QEMU device id; we assign our own |
//! | `domain@id`, `domain@xmlns:*` | runtime domain number; namespace declarations only |
//! | `<resource><partition>` | host cgroup placement |
//! | `<seclabel>` | host security labelling (SELinux/DAC) |
//! | `disk/source@index`, `disk/backingStore` | runtime backing-chain bookkeeping |
//! | `disk/target@tray='closed'` | the default state |
//! | `interface/target@dev`, `network source@portid/@bridge` | runtime tap/port allocation |
//! | `serial|console source@path` (pty), `console@tty` | runtime pty path |
//! | `serial/target/model name='isa-serial'` | the default device spelled out |
//! | `channel/target@state` | live guest-agent connection state |
//! | `graphics/listen type='address'` | mirror of `graphics@listen` (checked equal) |
//! | `video/model@heads='1'`, `@primary='yes'` | the single supported head |
//! | `disk/driver@cache='default'` | the hypervisor's default, read as absent (as libvirt) |
//! | `graphics@port`/`@tlsPort` with `autoport='yes'` | libvirt discards them at define and allocates at start (no TLS port while no SPICE TLS is configured) |
//! | `cpu@check`, `cpu@migratable='on'`, `cpu/model@fallback`, `cpu/vendor` | host-side CPU checks |
//! | `os@firmware='efi'` + `os/firmware` with an explicit loader | autoselection already resolved |
//!
//! Text-valued elements left empty (`<uuid></uuid>`, `<kernel/>`) read as absent, as in
//! libvirt (`Element::text_child`).

mod devices;
mod filesystem;
mod iotune;
mod memory_device;
mod netdisk;
pub(crate) mod nic_qos;
mod platform;
mod resources;
mod spice;

use super::error::XmlError;
use super::tree::{self, Element};
use crate::model::ids::to_kib;
use crate::model::*;

pub(super) type R<T> = Result<T, XmlError>;

pub(super) const YES_NO: &[(&str, bool)] = &[("yes", true), ("no", false)];

pub(super) const ON_OFF: &[(&str, bool)] = &[("on", true), ("off", false)];

pub fn parse_domain(xml: &str) -> R<DomainConfig> {
    let root = tree::parse(xml, &["metadata"])?;
    if root.name != "domain" {
        return Err(XmlError::NotADomain {
            found: root.name.clone(),
            line: root.line,
        });
    }
    domain(&root)
}

/// A lone `<disk>` element (see [`crate::xml::parse_disk`]).
pub fn parse_disk(xml: &str) -> R<Disk> {
    let root = tree::parse(xml, &[])?;
    if root.name != "disk" {
        return Err(XmlError::Missing {
            what: format!("element <disk> (found <{}>)", root.name),
            path: root.path.clone(),
            line: root.line,
        });
    }
    devices::disk(&root)
}

/// One `<memory model=..>` device element (hotplug requests).
pub fn parse_memory_device(xml: &str) -> R<MemoryDevice> {
    let root = tree::parse(xml, &[])?;
    if root.name != "memory" {
        return Err(XmlError::Missing {
            what: format!("element <memory> (found <{}>)", root.name),
            path: root.path.clone(),
            line: root.line,
        });
    }
    memory_device::memory_device(&root)
}

fn domain(d: &Element) -> R<DomainConfig> {
    // `id` is the runtime domain number; `xmlns:*` only declares prefixes (any prefixed
    // element such as <qemu:commandline> is still rejected below).
    if let Some((k, _)) = d
        .attrs
        .iter()
        .find(|(k, _)| k != "type" && k != "id" && !k.starts_with("xmlns"))
    {
        return Err(XmlError::UnsupportedAttribute {
            path: format!("domain@{k}"),
            line: d.line,
        });
    }
    d.allow_children(&[
        "name",
        "uuid",
        "title",
        "description",
        "metadata",
        "memory",
        "currentMemory",
        "maxMemory",
        "vcpu",
        "iothreads",
        "cputune",
        "numatune",
        "memtune",
        "memoryBacking",
        "os",
        "features",
        "cpu",
        "clock",
        "on_poweroff",
        "on_reboot",
        "on_crash",
        "pm",
        "devices",
        // Host cgroup placement and host security labels: guest-neutral.
        "resource",
        "seclabel",
    ])?;
    let virt_type = d.req_attr_enum("type", &[("kvm", VirtType::Kvm), ("qemu", VirtType::Qemu)])?;
    if let Some(r) = d.child("resource")? {
        r.allow(&[], &["partition"])?;
    }
    let name = d.req_child("name")?.req_text()?.to_owned();
    let uuid = match d.text_child("uuid")? {
        Some(u) => Some(
            u.allow(&[], &[])
                .and_then(|()| u.req_text())?
                .parse::<Uuid>()
                .map_err(|e| u.invalid_text(e.to_string()))?,
        ),
        None => None,
    };
    let plain_text = |n: &str| -> R<Option<String>> {
        match d.text_child(n)? {
            Some(e) => {
                e.allow(&[], &[])?;
                Ok(Some(e.text.clone()))
            }
            None => Ok(None),
        }
    };
    let title = plain_text("title")?;
    let description = plain_text("description")?;
    let metadata = match d.child("metadata")? {
        Some(m) => {
            m.allow(&[], &[])?;
            Some(m.raw_inner.clone().unwrap_or_default())
        }
        None => None,
    };
    let action = |n: &str| -> R<Option<LifecycleAction>> {
        match d.child(n)? {
            Some(e) => {
                e.allow(&[], &[])?;
                let v = e.trimmed();
                LifecycleAction::ALL
                    .into_iter()
                    .find(|a| a.as_str() == v)
                    .map(Some)
                    .ok_or_else(|| {
                        e.unsupported_value(None, v, &["destroy", "restart", "preserve"])
                    })
            }
            None => Ok(None),
        }
    };
    // Devices default by machine type (USB model, root bus), as libvirt's post-parse.
    let os = platform::os(d.req_child("os")?)?;
    let i440fx = os.is_i440fx();
    Ok(DomainConfig {
        virt_type,
        name,
        uuid,
        title,
        description,
        metadata,
        memory: resources::memory(d)?,
        vcpu: resources::vcpu(d.req_child("vcpu")?)?,
        iothreads: match d.child("iothreads")? {
            Some(e) => {
                e.allow(&[], &[])?;
                Some(e.text_int()?)
            }
            None => None,
        },
        cputune: d.child("cputune")?.map(resources::cputune).transpose()?,
        numatune: d.child("numatune")?.map(resources::numatune).transpose()?,
        memtune: d.child("memtune")?.map(resources::memtune).transpose()?,
        memory_backing: d
            .child("memoryBacking")?
            .map(resources::memory_backing)
            .transpose()?,
        os,
        features: d
            .child("features")?
            .map(platform::features)
            .transpose()?
            .unwrap_or_default(),
        cpu: d.child("cpu")?.map(resources::cpu).transpose()?,
        clock: d.child("clock")?.map(platform::clock).transpose()?,
        on_poweroff: action("on_poweroff")?,
        on_reboot: action("on_reboot")?,
        on_crash: action("on_crash")?,
        pm: d.child("pm")?.map(platform::pm).transpose()?,
        devices: match d.child("devices")? {
            Some(e) => devices::devices(e, i440fx)?,
            None => Devices::default(),
        },
    })
}

/// A sized element: text value plus `unit` attribute (default KiB).
pub(super) fn size_kib(e: &Element, value: u64, unit_attr: &str) -> R<u64> {
    let unit = e.attr(unit_attr).unwrap_or("KiB");
    to_kib(value, unit).map_err(|err| e.invalid_attr(unit_attr, err.to_string()))
}

pub(super) fn text_kib(e: &Element) -> R<u64> {
    let v: u64 = e.text_int()?;
    size_kib(e, v, "unit")
}

pub(super) fn idset(e: &Element, attr: &str) -> R<IdSet> {
    e.req_attr(attr)?;
    e.attr_parse(attr)?
        .ok_or_else(|| e.invalid_attr(attr, "missing"))
}

pub(super) fn flag(e: &Element, name: &str) -> R<bool> {
    match e.child(name)? {
        Some(c) => {
            c.allow(&[], &[])?;
            Ok(true)
        }
        None => Ok(false),
    }
}
