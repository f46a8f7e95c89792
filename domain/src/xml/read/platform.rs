//! `<os>`, `<features>`, `<clock>` and `<pm>`.

use super::{flag, ON_OFF, R, YES_NO};
use crate::model::*;
use crate::xml::error::XmlError;
use crate::xml::tree::Element;

pub(super) fn os(e: &Element) -> R<Os> {
    e.allow(
        &["firmware"],
        &[
            "type", "loader", "nvram", "boot", "kernel", "initrd", "cmdline", "firmware",
            "bootmenu",
        ],
    )?;
    let ty = e.req_child("type")?;
    ty.allow(&["arch", "machine"], &[])?;
    if ty.trimmed() != "hvm" {
        return Err(ty.unsupported_value(None, ty.trimmed(), &["hvm"]));
    }
    let loader = e.child("loader")?;
    // firmware='efi' asks libvirt to pick the firmware; we accept it only once resolved into an
    // explicit <loader> (as `virsh dumpxml` shows). <os><firmware> features were the inputs
    // to that choice and are redundant once the loader is explicit.
    if let Some(fw) = e.attr("firmware") {
        if fw != "efi" {
            return Err(e.unsupported_value(Some("firmware"), fw, &["efi"]));
        }
        if loader.is_none() {
            return Err(XmlError::Missing {
                what: "explicit <loader> (firmware autoselection is not supported)".into(),
                path: format!("{}/loader", e.path),
                line: e.line,
            });
        }
    }
    if let (Some(f), None) = (e.child("firmware")?, loader) {
        return Err(f.unsupported());
    }
    let firmware = match loader {
        None => {
            if let Some(n) = e.child("nvram")? {
                return Err(n.unsupported());
            }
            Firmware::Bios
        }
        Some(l) => {
            l.allow(&["readonly", "secure", "type"], &[])?;
            l.attr_only("type", &["pflash"])?;
            let nvram = match e.child("nvram")? {
                Some(n) => {
                    n.allow(&["template"], &[])?;
                    Some(Nvram {
                        path: n.req_text()?.to_owned(),
                        template: n.attr("template").map(str::to_owned),
                    })
                }
                None => None,
            };
            Firmware::Uefi {
                loader: Loader {
                    path: l.req_text()?.to_owned(),
                    readonly: l.attr_enum("readonly", YES_NO)?.unwrap_or(false),
                    secure: l.attr_enum("secure", YES_NO)?.unwrap_or(false),
                },
                nvram,
            }
        }
    };
    let mut boot = Vec::new();
    for b in e.children_named("boot") {
        b.allow(&["dev"], &[])?;
        boot.push(b.req_attr_enum(
            "dev",
            &[
                ("hd", BootDevice::Hd),
                ("cdrom", BootDevice::Cdrom),
                ("network", BootDevice::Network),
                ("fd", BootDevice::Fd),
            ],
        )?);
    }
    let text_of = |n: &str| -> R<Option<String>> {
        match e.text_child(n)? {
            Some(c) => {
                c.allow(&[], &[])?;
                Ok(Some(c.trimmed().to_owned()))
            }
            None => Ok(None),
        }
    };
    let kernel = match text_of("kernel")? {
        Some(k) => Some(DirectKernel {
            kernel: k,
            initrd: text_of("initrd")?,
            cmdline: text_of("cmdline")?,
        }),
        None => {
            for n in ["initrd", "cmdline"] {
                if let Some(c) = e.text_child(n)? {
                    return Err(XmlError::Missing {
                        what: format!("<kernel> (required by <{n}>)"),
                        path: format!("{}/kernel", e.path),
                        line: c.line,
                    });
                }
            }
            None
        }
    };
    let bootmenu = match e.child("bootmenu")? {
        Some(m) => {
            m.allow(&["enable", "timeout"], &[])?;
            Some(BootMenu {
                enable: m.req_attr_enum("enable", YES_NO)?,
                timeout_ms: m.attr_int("timeout")?,
            })
        }
        None => None,
    };
    Ok(Os {
        arch: ty.attr_enum("arch", &[("x86_64", Arch::X86_64), ("i686", Arch::I686)])?,
        machine: ty.attr("machine").map(str::to_owned),
        firmware,
        boot,
        kernel,
        bootmenu,
    })
}

pub(super) fn features(e: &Element) -> R<Features> {
    e.allow(&[], &["acpi", "apic", "pae", "vmport", "smm"])?;
    let state = |n: &str| -> R<Option<bool>> {
        match e.child(n)? {
            Some(c) => {
                c.allow(&["state"], &[])?;
                Ok(Some(c.attr_enum("state", ON_OFF)?.unwrap_or(true)))
            }
            None => Ok(None),
        }
    };
    Ok(Features {
        acpi: flag(e, "acpi")?,
        apic: flag(e, "apic")?,
        pae: flag(e, "pae")?,
        vmport: state("vmport")?,
        smm: state("smm")?,
    })
}

pub(super) fn clock(e: &Element) -> R<Clock> {
    e.allow(&["offset"], &["timer"])?;
    let mut timers = Vec::new();
    for t in e.children_named("timer") {
        t.allow(&["name", "present", "tickpolicy"], &[])?;
        let names: Vec<(&str, TimerName)> =
            TimerName::ALL.iter().map(|n| (n.as_str(), *n)).collect();
        let policies: Vec<(&str, TickPolicy)> =
            TickPolicy::ALL.iter().map(|n| (n.as_str(), *n)).collect();
        timers.push(Timer {
            name: t.req_attr_enum("name", &names)?,
            present: t.attr_enum("present", YES_NO)?,
            tickpolicy: t.attr_enum("tickpolicy", &policies)?,
        });
    }
    Ok(Clock {
        offset: e
            .attr_enum(
                "offset",
                &[
                    ("utc", ClockOffset::Utc),
                    ("localtime", ClockOffset::Localtime),
                ],
            )?
            .unwrap_or(ClockOffset::Utc),
        timers,
    })
}

pub(super) fn pm(e: &Element) -> R<PowerManagement> {
    e.allow(&[], &["suspend-to-mem", "suspend-to-disk"])?;
    let en = |n: &str| -> R<Option<bool>> {
        match e.child(n)? {
            Some(c) => {
                c.allow(&["enabled"], &[])?;
                Ok(Some(c.req_attr_enum("enabled", YES_NO)?))
            }
            None => Ok(None),
        }
    };
    Ok(PowerManagement {
        suspend_to_mem: en("suspend-to-mem")?,
        suspend_to_disk: en("suspend-to-disk")?,
    })
}
