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
//! | `serial/target/model name='isa-serial'`, `controller/model@name` | the default device spelled out |
//! | `channel/target@state` | live guest-agent connection state |
//! | `graphics/listen type='address'` | mirror of `graphics@listen` (checked equal) |
//! | `video/model@heads='1'`, `@primary='yes'` | the single supported head |
//! | `<audio type='none'/>` | no audio backend (only `none` accepted) |
//! | `cpu@check`, `cpu@migratable='on'`, `cpu/model@fallback`, `cpu/vendor` | host-side CPU checks |
//! | `os@firmware='efi'` + `os/firmware` with an explicit loader | autoselection already resolved |

use super::error::XmlError;
use super::tree::{self, Element};
use crate::model::ids::to_kib;
use crate::model::*;

type R<T> = Result<T, XmlError>;

const YES_NO: &[(&str, bool)] = &[("yes", true), ("no", false)];
const ON_OFF: &[(&str, bool)] = &[("on", true), ("off", false)];

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
    let uuid = match d.child("uuid")? {
        Some(u) => Some(
            u.req_text()?
                .parse::<Uuid>()
                .map_err(|e| u.invalid_text(e.to_string()))?,
        ),
        None => None,
    };
    let plain_text = |n: &str| -> R<Option<String>> {
        match d.child(n)? {
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
    Ok(DomainConfig {
        virt_type,
        name,
        uuid,
        title,
        description,
        metadata,
        memory: memory(d)?,
        vcpu: vcpu(d.req_child("vcpu")?)?,
        iothreads: match d.child("iothreads")? {
            Some(e) => {
                e.allow(&[], &[])?;
                Some(e.text_int()?)
            }
            None => None,
        },
        cputune: d.child("cputune")?.map(cputune).transpose()?,
        numatune: d.child("numatune")?.map(numatune).transpose()?,
        memory_backing: d.child("memoryBacking")?.map(memory_backing).transpose()?,
        os: os(d.req_child("os")?)?,
        features: d
            .child("features")?
            .map(features)
            .transpose()?
            .unwrap_or_default(),
        cpu: d.child("cpu")?.map(cpu).transpose()?,
        clock: d.child("clock")?.map(clock).transpose()?,
        on_poweroff: action("on_poweroff")?,
        on_reboot: action("on_reboot")?,
        on_crash: action("on_crash")?,
        pm: d.child("pm")?.map(pm).transpose()?,
        devices: d
            .child("devices")?
            .map(devices)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// A sized element: text value plus `unit` attribute (default KiB).
fn size_kib(e: &Element, value: u64, unit_attr: &str) -> R<u64> {
    let unit = e.attr(unit_attr).unwrap_or("KiB");
    to_kib(value, unit).map_err(|err| e.invalid_attr(unit_attr, err.to_string()))
}

fn text_kib(e: &Element) -> R<u64> {
    let v: u64 = e.text_int()?;
    size_kib(e, v, "unit")
}

fn memory(d: &Element) -> R<Memory> {
    let m = d.req_child("memory")?;
    m.allow(&["unit"], &[])?;
    let current_kib = match d.child("currentMemory")? {
        Some(c) => {
            c.allow(&["unit"], &[])?;
            Some(text_kib(c)?)
        }
        None => None,
    };
    let max = match d.child("maxMemory")? {
        Some(x) => {
            x.allow(&["unit", "slots"], &[])?;
            Some(MaxMemory {
                size_kib: text_kib(x)?,
                slots: x.req_attr_int("slots")?,
            })
        }
        None => None,
    };
    Ok(Memory {
        memory_kib: text_kib(m)?,
        current_kib,
        max,
    })
}

fn idset(e: &Element, attr: &str) -> R<IdSet> {
    e.req_attr(attr)?;
    e.attr_parse(attr)?
        .ok_or_else(|| e.invalid_attr(attr, "missing"))
}

fn vcpu(e: &Element) -> R<Vcpu> {
    e.allow(&["placement", "current", "cpuset"], &[])?;
    Ok(Vcpu {
        count: e.text_int()?,
        current: e.attr_int("current")?,
        placement: e.attr_enum(
            "placement",
            &[
                ("static", VcpuPlacement::Static),
                ("auto", VcpuPlacement::Auto),
            ],
        )?,
        cpuset: e.attr_parse("cpuset")?,
    })
}

fn cputune(e: &Element) -> R<CpuTune> {
    e.allow(
        &[],
        &[
            "vcpupin",
            "emulatorpin",
            "iothreadpin",
            "shares",
            "period",
            "quota",
        ],
    )?;
    let leaf = |n: &str| -> R<Option<&Element>> {
        let c = e.child(n)?;
        if let Some(c) = c {
            c.allow(&[], &[])?;
        }
        Ok(c)
    };
    let quota = match leaf("quota")? {
        Some(q) => {
            let t = q.req_text()?;
            Some(
                t.parse::<i64>()
                    .map_err(|_| q.invalid_text(format!("'{t}' is not an integer")))?,
            )
        }
        None => None,
    };
    let mut vcpupins = Vec::new();
    for p in e.children_named("vcpupin") {
        p.allow(&["vcpu", "cpuset"], &[])?;
        vcpupins.push(VcpuPin {
            vcpu: p.req_attr_int("vcpu")?,
            cpuset: idset(p, "cpuset")?,
        });
    }
    let mut iothreadpins = Vec::new();
    for p in e.children_named("iothreadpin") {
        p.allow(&["iothread", "cpuset"], &[])?;
        iothreadpins.push(IothreadPin {
            iothread: p.req_attr_int("iothread")?,
            cpuset: idset(p, "cpuset")?,
        });
    }
    let emulatorpin = match e.child("emulatorpin")? {
        Some(p) => {
            p.allow(&["cpuset"], &[])?;
            Some(idset(p, "cpuset")?)
        }
        None => None,
    };
    Ok(CpuTune {
        shares: leaf("shares")?.map(|s| s.text_int()).transpose()?,
        period: leaf("period")?.map(|s| s.text_int()).transpose()?,
        quota,
        vcpupins,
        emulatorpin,
        iothreadpins,
    })
}

const NUMA_MODES: &[(&str, NumaMode)] = &[
    ("strict", NumaMode::Strict),
    ("preferred", NumaMode::Preferred),
    ("interleave", NumaMode::Interleave),
    ("restrictive", NumaMode::Restrictive),
];

fn numatune(e: &Element) -> R<NumaTune> {
    e.allow(&[], &["memory", "memnode"])?;
    let memory = match e.child("memory")? {
        Some(m) => {
            m.allow(&["mode", "nodeset", "placement"], &[])?;
            // placement='auto' needs numad; only explicit nodesets are supported.
            m.attr_only("placement", &["static"])?;
            Some(NumaPolicy {
                mode: m.attr_enum("mode", NUMA_MODES)?.unwrap_or(NumaMode::Strict),
                nodeset: idset(m, "nodeset")?,
            })
        }
        None => None,
    };
    let mut memnodes = Vec::new();
    for n in e.children_named("memnode") {
        n.allow(&["cellid", "mode", "nodeset"], &[])?;
        memnodes.push(MemNode {
            cellid: n.req_attr_int("cellid")?,
            mode: n.attr_enum("mode", NUMA_MODES)?.unwrap_or(NumaMode::Strict),
            nodeset: idset(n, "nodeset")?,
        });
    }
    Ok(NumaTune { memory, memnodes })
}

fn flag(e: &Element, name: &str) -> R<bool> {
    match e.child(name)? {
        Some(c) => {
            c.allow(&[], &[])?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn memory_backing(e: &Element) -> R<MemoryBacking> {
    e.allow(
        &[],
        &[
            "hugepages",
            "nosharepages",
            "locked",
            "source",
            "access",
            "allocation",
        ],
    )?;
    let hugepages = match e.child("hugepages")? {
        Some(h) => {
            h.allow(&[], &["page"])?;
            let mut pages = Vec::new();
            for p in h.children_named("page") {
                p.allow(&["size", "unit", "nodeset"], &[])?;
                let size: u64 = p.req_attr_int("size")?;
                pages.push(HugePage {
                    size_kib: size_kib(p, size, "unit")?,
                    nodeset: p.attr_parse("nodeset")?,
                });
            }
            Some(pages)
        }
        None => None,
    };
    let one_attr = |n: &str| -> R<Option<&Element>> {
        let c = e.child(n)?;
        if let Some(c) = c {
            c.allow(&[if n == "source" { "type" } else { "mode" }], &[])?;
        }
        Ok(c)
    };
    Ok(MemoryBacking {
        hugepages,
        nosharepages: flag(e, "nosharepages")?,
        locked: flag(e, "locked")?,
        source: one_attr("source")?
            .map(|s| {
                s.req_attr_enum(
                    "type",
                    &[
                        ("anonymous", MemorySource::Anonymous),
                        ("file", MemorySource::File),
                        ("memfd", MemorySource::Memfd),
                    ],
                )
            })
            .transpose()?,
        access: one_attr("access")?
            .map(|s| {
                s.req_attr_enum(
                    "mode",
                    &[
                        ("shared", MemoryAccess::Shared),
                        ("private", MemoryAccess::Private),
                    ],
                )
            })
            .transpose()?,
        allocation: one_attr("allocation")?
            .map(|s| {
                s.req_attr_enum(
                    "mode",
                    &[
                        ("immediate", MemoryAllocation::Immediate),
                        ("ondemand", MemoryAllocation::Ondemand),
                    ],
                )
            })
            .transpose()?,
    })
}

fn os(e: &Element) -> R<Os> {
    e.allow(
        &["firmware"],
        &[
            "type", "loader", "nvram", "boot", "kernel", "initrd", "cmdline", "firmware",
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
        match e.child(n)? {
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
                if let Some(c) = e.child(n)? {
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
    Ok(Os {
        arch: ty.attr_enum("arch", &[("x86_64", Arch::X86_64)])?,
        machine: ty.attr("machine").map(str::to_owned),
        firmware,
        boot,
        kernel,
    })
}

fn features(e: &Element) -> R<Features> {
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

fn cpu(e: &Element) -> R<Cpu> {
    // `check` selects how strictly libvirt compares against the host CPU; the host layer does
    // that via `CpuChoice`, so it does not change what the guest sees. `vendor` is implied by
    // the named model.
    e.allow(
        &["mode", "match", "check", "migratable"],
        &["model", "vendor", "topology", "feature", "numa"],
    )?;
    e.attr_only("match", &["exact"])?;
    e.attr_only("migratable", &["on"])?;
    let model = match e.child("model")? {
        Some(m) => {
            // fallback: whether libvirt may substitute a model when the host lacks it: host side.
            m.allow(&["fallback"], &[])?;
            Some(m.req_text()?.to_owned())
        }
        None => None,
    };
    if let Some(v) = e.child("vendor")? {
        v.allow(&[], &[])?;
    }
    let mode_attr = e.attr("mode").unwrap_or("custom");
    let mode = match (mode_attr, model) {
        ("host-passthrough", None) => CpuMode::HostPassthrough,
        ("host-model", None) => CpuMode::HostModel,
        ("custom", Some(model)) => CpuMode::Custom { model },
        ("custom", None)
            if e.children_named("numa").next().is_some() || e.child("topology")?.is_some() =>
        {
            // libvirt allows a bare <cpu> with only topology/numa: the default model.
            CpuMode::Custom {
                model: "qemu64".into(),
            }
        }
        ("custom", None) => {
            return Err(XmlError::Missing {
                what: "element <model>".into(),
                path: format!("{}/model", e.path),
                line: e.line,
            })
        }
        ("host-passthrough" | "host-model", Some(_)) => {
            let m = e.req_child("model")?;
            return Err(m.unsupported());
        }
        (other, _) => {
            return Err(e.unsupported_value(
                Some("mode"),
                other,
                &["host-passthrough", "host-model", "custom"],
            ))
        }
    };
    let mut features = Vec::new();
    for f in e.children_named("feature") {
        f.allow(&["policy", "name"], &[])?;
        let p = f.attr("policy").unwrap_or("require");
        features.push(CpuFeature {
            policy: FeaturePolicy::parse(p).ok_or_else(|| {
                f.unsupported_value(
                    Some("policy"),
                    p,
                    &["force", "require", "optional", "disable", "forbid"],
                )
            })?,
            name: f.req_attr("name")?.to_owned(),
        });
    }
    let topology = match e.child("topology")? {
        Some(t) => {
            t.allow(&["sockets", "dies", "cores", "threads"], &[])?;
            Some(CpuTopology {
                sockets: t.req_attr_int("sockets")?,
                dies: t.attr_int("dies")?,
                cores: t.req_attr_int("cores")?,
                threads: t.req_attr_int("threads")?,
            })
        }
        None => None,
    };
    let mut numa = Vec::new();
    if let Some(n) = e.child("numa")? {
        n.allow(&[], &["cell"])?;
        for c in n.children_named("cell") {
            c.allow(
                &["id", "cpus", "memory", "unit", "memAccess"],
                &["distances"],
            )?;
            let mem: u64 = c.req_attr_int("memory")?;
            let mut distances = Vec::new();
            if let Some(ds) = c.child("distances")? {
                ds.allow(&[], &["sibling"])?;
                for s in ds.children_named("sibling") {
                    s.allow(&["id", "value"], &[])?;
                    distances.push(NumaDistance {
                        id: s.req_attr_int("id")?,
                        value: s.req_attr_int("value")?,
                    });
                }
            }
            numa.push(NumaCell {
                id: c.req_attr_int("id")?,
                cpus: idset(c, "cpus")?,
                memory_kib: size_kib(c, mem, "unit")?,
                mem_access: c.attr_enum(
                    "memAccess",
                    &[
                        ("shared", MemoryAccess::Shared),
                        ("private", MemoryAccess::Private),
                    ],
                )?,
                distances,
            });
        }
    }
    Ok(Cpu {
        mode,
        features,
        topology,
        numa,
    })
}

fn clock(e: &Element) -> R<Clock> {
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

fn pm(e: &Element) -> R<PowerManagement> {
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

fn devices(e: &Element) -> R<Devices> {
    e.allow(
        &[],
        &[
            "emulator",
            "disk",
            "controller",
            "interface",
            "serial",
            "console",
            "channel",
            "input",
            "tpm",
            "graphics",
            "video",
            "hostdev",
            "watchdog",
            "memballoon",
            "rng",
            // libvirt >= 7.2 adds <audio type='none'/> next to VNC; only 'none' is accepted below.
            "audio",
        ],
    )?;
    let mut d = Devices::default();
    if let Some(em) = e.child("emulator")? {
        em.allow(&[], &[])?;
        d.emulator = Some(em.req_text()?.to_owned());
    }
    for c in &e.children {
        match c.name.as_str() {
            "disk" => d.disks.push(disk(c)?),
            "controller" => d.controllers.push(controller(c)?),
            "interface" => d.interfaces.push(interface(c)?),
            "serial" => d.serials.push(serial(c)?),
            "console" => d.consoles.push(console(c)?),
            "channel" => d.channels.push(channel(c)?),
            "input" => d.inputs.push(input(c)?),
            "video" => d.videos.push(video(c)?),
            "hostdev" => d.hostdevs.push(hostdev(c)?),
            "rng" => d.rngs.push(rng(c)?),
            "audio" => {
                c.allow(&["id", "type"], &[])?;
                c.attr_only("type", &["none"])?;
            }
            _ => {}
        }
    }
    d.tpm = e.child("tpm")?.map(tpm).transpose()?;
    d.graphics = e.child("graphics")?.map(graphics).transpose()?;
    d.watchdog = e.child("watchdog")?.map(watchdog).transpose()?;
    d.memballoon = e.child("memballoon")?.map(memballoon).transpose()?;
    Ok(d)
}

fn address(parent: &Element) -> R<Option<Address>> {
    let Some(a) = parent.child("address")? else {
        return Ok(None);
    };
    let ty = a.req_attr("type")?;
    let addr = match ty {
        "pci" => {
            a.allow(
                &["type", "domain", "bus", "slot", "function", "multifunction"],
                &[],
            )?;
            Address::Pci {
                domain: a.attr_int("domain")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                slot: a.attr_int("slot")?.unwrap_or(0),
                function: a.attr_int("function")?.unwrap_or(0),
                multifunction: a.attr_enum("multifunction", ON_OFF)?,
            }
        }
        "drive" => {
            a.allow(&["type", "controller", "bus", "target", "unit"], &[])?;
            Address::Drive {
                controller: a.attr_int("controller")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                target: a.attr_int("target")?.unwrap_or(0),
                unit: a.attr_int("unit")?.unwrap_or(0),
            }
        }
        "virtio-serial" => {
            a.allow(&["type", "controller", "bus", "port"], &[])?;
            Address::VirtioSerial {
                controller: a.attr_int("controller")?.unwrap_or(0),
                bus: a.attr_int("bus")?.unwrap_or(0),
                port: a.attr_int("port")?.unwrap_or(0),
            }
        }
        "usb" => {
            a.allow(&["type", "bus", "port"], &[])?;
            Address::Usb {
                bus: a.attr_int("bus")?.unwrap_or(0),
                port: a.attr_int("port")?.unwrap_or(0),
            }
        }
        other => {
            return Err(a.unsupported_value(
                Some("type"),
                other,
                &["pci", "drive", "virtio-serial", "usb"],
            ))
        }
    };
    Ok(Some(addr))
}

fn boot_order(parent: &Element) -> R<Option<u32>> {
    match parent.child("boot")? {
        Some(b) => {
            b.allow(&["order"], &[])?;
            Ok(Some(b.req_attr_int("order")?))
        }
        None => Ok(None),
    }
}

fn disk(e: &Element) -> R<Disk> {
    // <backingStore> in dumpxml reports the image's backing chain as discovered from the image
    // header; it is informational for file/block disks.
    e.allow(
        &["type", "device"],
        &[
            "driver",
            "source",
            "target",
            "readonly",
            "shareable",
            "serial",
            "boot",
            "address",
            "backingStore",
        ],
    )?;
    let ty = e.req_attr_enum("type", &[("file", false), ("block", true)])?;
    let device = e
        .attr_enum(
            "device",
            &[("disk", DiskDevice::Disk), ("cdrom", DiskDevice::Cdrom)],
        )?
        .unwrap_or(DiskDevice::Disk);
    let source = match e.child("source")? {
        Some(s) => {
            // `index` numbers the backing chain at runtime.
            let key = if ty { "dev" } else { "file" };
            s.allow(&[key, "index"], &[])?;
            match s.attr(key) {
                Some(p) if ty => Some(DiskSource::Block { dev: p.to_owned() }),
                Some(p) => Some(DiskSource::File { path: p.to_owned() }),
                // `<source/>` without a path: empty CD-ROM, as libvirt writes for ejected media.
                None => None,
            }
        }
        None => None,
    };
    let driver = match e.child("driver")? {
        Some(dr) => {
            dr.allow(&["name", "type", "cache", "io", "discard", "iothread"], &[])?;
            dr.attr_only("name", &["qemu"])?;
            let caches: Vec<(&str, DiskCache)> =
                DiskCache::ALL.iter().map(|c| (c.as_str(), *c)).collect();
            let ios: Vec<(&str, DiskIo)> = DiskIo::ALL.iter().map(|c| (c.as_str(), *c)).collect();
            DiskDriver {
                format: dr
                    .attr_enum(
                        "type",
                        &[("raw", DiskFormat::Raw), ("qcow2", DiskFormat::Qcow2)],
                    )?
                    .unwrap_or(DiskFormat::Raw),
                cache: dr.attr_enum("cache", &caches)?,
                io: dr.attr_enum("io", &ios)?,
                discard: dr.attr_enum(
                    "discard",
                    &[
                        ("unmap", DiskDiscard::Unmap),
                        ("ignore", DiskDiscard::Ignore),
                    ],
                )?,
                iothread: dr.attr_int("iothread")?,
            }
        }
        // libvirt's default: raw, no format probing.
        None => DiskDriver {
            format: DiskFormat::Raw,
            cache: None,
            io: None,
            discard: None,
            iothread: None,
        },
    };
    let t = e.req_child("target")?;
    t.allow(&["dev", "bus", "tray"], &[])?;
    // An open tray changes what the guest sees; 'closed' is libvirt's default.
    t.attr_only("tray", &["closed"])?;
    let serial = match e.child("serial")? {
        Some(s) => {
            s.allow(&[], &[])?;
            Some(s.req_text()?.to_owned())
        }
        None => None,
    };
    Ok(Disk {
        device,
        source,
        driver,
        target: DiskTarget {
            dev: t.req_attr("dev")?.to_owned(),
            bus: t.req_attr_enum(
                "bus",
                &[
                    ("virtio", DiskBus::Virtio),
                    ("sata", DiskBus::Sata),
                    ("scsi", DiskBus::Scsi),
                ],
            )?,
        },
        readonly: flag(e, "readonly")?,
        shareable: flag(e, "shareable")?,
        serial,
        boot_order: boot_order(e)?,
        address: address(e)?,
    })
}

fn controller(e: &Element) -> R<Controller> {
    // <model name=...> is the QEMU device libvirt derived from the `model` attribute.
    e.allow(
        &["type", "index", "model", "ports"],
        &["address", "target", "model"],
    )?;
    let ty = e.req_attr("type")?;
    let model = e.attr("model");
    let no_ports = |kind: ControllerKind| -> R<ControllerKind> {
        if e.attr("ports").is_some() {
            return Err(XmlError::UnsupportedAttribute {
                path: format!("{}@ports", e.path),
                line: e.line,
            });
        }
        Ok(kind)
    };
    let kind = match (ty, model) {
        ("pci", Some("pcie-root")) => no_ports(ControllerKind::PcieRoot)?,
        ("pci", Some("pcie-root-port")) => {
            let (chassis, port) = match e.child("target")? {
                Some(t) => {
                    t.allow(&["chassis", "port"], &[])?;
                    (t.attr_int("chassis")?, t.attr_int("port")?)
                }
                None => (None, None),
            };
            no_ports(ControllerKind::PcieRootPort { chassis, port })?
        }
        ("pci", m) => {
            return Err(e.unsupported_value(
                Some("model"),
                m.unwrap_or(""),
                &["pcie-root", "pcie-root-port"],
            ))
        }
        ("sata", None) => no_ports(ControllerKind::Sata)?,
        ("scsi", Some("virtio-scsi")) => no_ports(ControllerKind::VirtioScsi)?,
        ("scsi", m) => {
            return Err(e.unsupported_value(
                Some("model"),
                m.unwrap_or("(default lsilogic)"),
                &["virtio-scsi"],
            ))
        }
        ("usb", Some("qemu-xhci")) => ControllerKind::Usb {
            model: UsbModel::QemuXhci,
            ports: e.attr_int("ports")?,
        },
        ("usb", Some("none")) => no_ports(ControllerKind::Usb {
            model: UsbModel::None,
            ports: None,
        })?,
        ("usb", m) => {
            return Err(e.unsupported_value(
                Some("model"),
                m.unwrap_or("(default)"),
                &["qemu-xhci", "none"],
            ))
        }
        ("virtio-serial", None) => no_ports(ControllerKind::VirtioSerial)?,
        ("sata" | "virtio-serial", Some(m)) => {
            return Err(e.unsupported_value(Some("model"), m, &[]))
        }
        (other, _) => {
            return Err(e.unsupported_value(
                Some("type"),
                other,
                &["pci", "sata", "scsi", "usb", "virtio-serial"],
            ))
        }
    };
    if !matches!(kind, ControllerKind::PcieRootPort { .. }) {
        if let Some(t) = e.child("target")? {
            return Err(t.unsupported());
        }
    }
    if let Some(m) = e.child("model")? {
        m.allow(&["name"], &[])?;
    }
    Ok(Controller {
        index: e.req_attr_int("index")?,
        kind,
        address: address(e)?,
    })
}

fn interface(e: &Element) -> R<Interface> {
    // <target dev='vnet0'/> is the runtime tap name the host created.
    e.allow(
        &["type"],
        &["mac", "source", "model", "mtu", "boot", "address", "target"],
    )?;
    let ty = e.req_attr("type")?;
    let src = e.child("source")?;
    let need_src = || {
        src.ok_or_else(|| XmlError::Missing {
            what: "element <source>".into(),
            path: format!("{}/source", e.path),
            line: e.line,
        })
    };
    let source = match ty {
        "bridge" => {
            let s = need_src()?;
            s.allow(&["bridge"], &[])?;
            InterfaceSource::Bridge {
                bridge: s.req_attr("bridge")?.to_owned(),
            }
        }
        "network" => {
            let s = need_src()?;
            // portid/bridge: runtime port allocation libvirt records in the live XML.
            s.allow(&["network", "portid", "bridge"], &[])?;
            InterfaceSource::Network {
                network: s.req_attr("network")?.to_owned(),
            }
        }
        "user" => {
            if let Some(s) = src {
                return Err(s.unsupported());
            }
            InterfaceSource::User
        }
        "direct" => {
            let s = need_src()?;
            s.allow(&["dev", "mode"], &[])?;
            let modes: Vec<(&str, MacvtapMode)> =
                MacvtapMode::ALL.iter().map(|m| (m.as_str(), *m)).collect();
            InterfaceSource::Direct {
                dev: s.req_attr("dev")?.to_owned(),
                mode: s.attr_enum("mode", &modes)?.unwrap_or(MacvtapMode::Vepa),
            }
        }
        "vhostuser" => {
            let s = need_src()?;
            s.allow(&["type", "path", "mode"], &[])?;
            s.attr_only("type", &["unix"])?;
            InterfaceSource::VhostUser {
                path: s.req_attr("path")?.to_owned(),
                mode: s.req_attr_enum(
                    "mode",
                    &[
                        ("server", SocketMode::Server),
                        ("client", SocketMode::Client),
                    ],
                )?,
            }
        }
        other => {
            return Err(e.unsupported_value(
                Some("type"),
                other,
                &["bridge", "network", "user", "direct", "vhostuser"],
            ))
        }
    };
    if let Some(t) = e.child("target")? {
        t.allow(&["dev"], &[])?;
    }
    let mac = match e.child("mac")? {
        Some(m) => {
            m.allow(&["address"], &[])?;
            m.req_attr("address")?;
            m.attr_parse("address")?
        }
        None => None,
    };
    let model = match e.child("model")? {
        Some(m) => {
            m.allow(&["type"], &[])?;
            let models: Vec<(&str, NicModel)> =
                NicModel::ALL.iter().map(|m| (m.as_str(), *m)).collect();
            m.req_attr_enum("type", &models)?
        }
        // libvirt's QEMU default NIC model on x86; written back explicitly.
        None => NicModel::Rtl8139,
    };
    let mtu = match e.child("mtu")? {
        Some(m) => {
            m.allow(&["size"], &[])?;
            Some(m.req_attr_int("size")?)
        }
        None => None,
    };
    Ok(Interface {
        source,
        mac,
        model,
        mtu,
        boot_order: boot_order(e)?,
        address: address(e)?,
    })
}

fn hostdev(e: &Element) -> R<Hostdev> {
    e.allow(
        &["mode", "type", "managed"],
        &["driver", "source", "boot", "address"],
    )?;
    e.attr_only("mode", &["subsystem"])?;
    let ty = e.req_attr("type")?;
    if ty != "pci" {
        return Err(e.unsupported_value(Some("type"), ty, &["pci"]));
    }
    if let Some(dr) = e.child("driver")? {
        dr.allow(&["name"], &[])?;
        dr.attr_only("name", &["vfio"])?;
    }
    let s = e.req_child("source")?;
    s.allow(&[], &["address"])?;
    let a = s.req_child("address")?;
    a.allow(&["domain", "bus", "slot", "function"], &[])?;
    Ok(Hostdev {
        source: PciAddr {
            domain: a.attr_int("domain")?.unwrap_or(0),
            bus: a.req_attr_int("bus")?,
            slot: a.req_attr_int("slot")?,
            function: a.attr_int("function")?.unwrap_or(0),
        },
        managed: e.attr_enum("managed", YES_NO)?.unwrap_or(false),
        boot_order: boot_order(e)?,
        address: address(e)?,
    })
}

fn char_source(e: &Element) -> R<CharSource> {
    let ty = e.req_attr("type")?;
    let src = e.child("source")?;
    match ty {
        "pty" => {
            // <source path='/dev/pts/N'/> is the pty QEMU allocated at runtime.
            if let Some(s) = src {
                s.allow(&["path"], &[])?;
            }
            Ok(CharSource::Pty)
        }
        "unix" => {
            let s = e.req_child("source")?;
            s.allow(&["mode", "path"], &[])?;
            Ok(CharSource::Unix {
                path: s.req_attr("path")?.to_owned(),
                mode: s
                    .attr_enum(
                        "mode",
                        &[
                            ("bind", SocketMode::Server),
                            ("connect", SocketMode::Client),
                        ],
                    )?
                    .unwrap_or(SocketMode::Server),
            })
        }
        "file" => {
            let s = e.req_child("source")?;
            s.allow(&["path"], &[])?;
            Ok(CharSource::File {
                path: s.req_attr("path")?.to_owned(),
            })
        }
        other => Err(e.unsupported_value(Some("type"), other, &["pty", "unix", "file"])),
    }
}

fn serial(e: &Element) -> R<Serial> {
    e.allow(&["type"], &["source", "target"])?;
    let mut port = 0;
    if let Some(t) = e.child("target")? {
        // <model name='isa-serial'/> is libvirt spelling out the default device.
        t.allow(&["type", "port"], &["model"])?;
        t.attr_only("type", &["isa-serial"])?;
        if let Some(m) = t.child("model")? {
            m.allow(&["name"], &[])?;
            m.attr_only("name", &["isa-serial"])?;
        }
        port = t.attr_int("port")?.unwrap_or(0);
    }
    Ok(Serial {
        source: char_source(e)?,
        port,
    })
}

fn console(e: &Element) -> R<Console> {
    // tty='/dev/pts/N' is the runtime pty path.
    e.allow(&["type", "tty"], &["source", "target"])?;
    let (target, port) = match e.child("target")? {
        Some(t) => {
            t.allow(&["type", "port"], &[])?;
            (
                t.attr_enum(
                    "type",
                    &[
                        ("serial", ConsoleTarget::Serial),
                        ("virtio", ConsoleTarget::Virtio),
                    ],
                )?
                .unwrap_or(ConsoleTarget::Serial),
                t.attr_int("port")?.unwrap_or(0),
            )
        }
        None => (ConsoleTarget::Serial, 0),
    };
    Ok(Console {
        source: char_source(e)?,
        target,
        port,
    })
}

fn channel(e: &Element) -> R<Channel> {
    e.allow(&["type"], &["source", "target", "address"])?;
    e.attr_only("type", &["unix"])?;
    e.req_attr("type")?;
    let path = match e.child("source")? {
        Some(s) => {
            s.allow(&["mode", "path"], &[])?;
            s.attr_only("mode", &["bind"])?;
            s.attr("path").map(str::to_owned)
        }
        None => None,
    };
    let t = e.req_child("target")?;
    // state='connected' is the live guest-agent connection state.
    t.allow(&["type", "name", "state"], &[])?;
    t.attr_only("type", &["virtio"])?;
    t.req_attr("type")?;
    Ok(Channel {
        path,
        name: t.req_attr("name")?.to_owned(),
        address: address(e)?,
    })
}

fn input(e: &Element) -> R<Input> {
    e.allow(&["type", "bus"], &["address"])?;
    let kind = e.req_attr_enum(
        "type",
        &[
            ("mouse", InputKind::Mouse),
            ("keyboard", InputKind::Keyboard),
            ("tablet", InputKind::Tablet),
        ],
    )?;
    let bus = e
        .attr_enum(
            "bus",
            &[
                ("ps2", InputBus::Ps2),
                ("usb", InputBus::Usb),
                ("virtio", InputBus::Virtio),
            ],
        )?
        .unwrap_or(if kind == InputKind::Tablet {
            InputBus::Usb
        } else {
            InputBus::Ps2
        });
    Ok(Input {
        kind,
        bus,
        address: address(e)?,
    })
}

fn tpm(e: &Element) -> R<Tpm> {
    e.allow(&["model"], &["backend"])?;
    let b = e.req_child("backend")?;
    b.allow(&["type", "version"], &[])?;
    b.attr_only("type", &["emulator"])?;
    b.req_attr("type")?;
    b.attr_only("version", &["2.0"])?;
    Ok(Tpm {
        model: e
            .attr_enum(
                "model",
                &[("tpm-crb", TpmModel::TpmCrb), ("tpm-tis", TpmModel::TpmTis)],
            )?
            .unwrap_or(TpmModel::TpmTis),
    })
}

fn graphics(e: &Element) -> R<Graphics> {
    e.allow(&["type", "port", "autoport", "listen"], &["listen"])?;
    let ty = e.req_attr("type")?;
    if ty != "vnc" {
        return Err(e.unsupported_value(Some("type"), ty, &["vnc"]));
    }
    let mut listen = e.attr("listen").map(str::to_owned);
    for l in e.children_named("listen") {
        // libvirt mirrors the listen attribute into <listen type='address'>.
        l.allow(&["type", "address"], &[])?;
        l.attr_only("type", &["address"])?;
        match (l.attr("address"), &listen) {
            (Some(a), Some(cur)) if a != cur => {
                return Err(l.invalid_attr("address", "differs from graphics@listen"))
            }
            (Some(a), None) => listen = Some(a.to_owned()),
            _ => {}
        }
    }
    let autoport = e.attr_enum("autoport", YES_NO)?.unwrap_or(false);
    let port = match e.attr("port") {
        None | Some("-1") => VncPort::Auto,
        Some(_) if autoport => VncPort::Auto,
        Some(_) => VncPort::Fixed(e.attr_int("port")?.unwrap_or(5900)),
    };
    Ok(Graphics::Vnc { port, listen })
}

fn video(e: &Element) -> R<Video> {
    e.allow(&[], &["model", "address"])?;
    let m = e.req_child("model")?;
    // heads='1' and primary='yes' are what libvirt writes for the single supported head.
    m.allow(&["type", "vram", "heads", "primary"], &[])?;
    m.attr_only("heads", &["1"])?;
    m.attr_only("primary", &["yes"])?;
    let ty = m.req_attr("type")?;
    let model = match ty {
        "none" => VideoModel::None,
        "virtio" => VideoModel::Virtio,
        "vga" => VideoModel::Vga {
            vram_kib: m.attr_int("vram")?,
        },
        other => return Err(m.unsupported_value(Some("type"), other, &["none", "virtio", "vga"])),
    };
    if !matches!(model, VideoModel::Vga { .. }) && m.attr("vram").is_some() {
        return Err(XmlError::UnsupportedAttribute {
            path: format!("{}@vram", m.path),
            line: m.line,
        });
    }
    Ok(Video {
        model,
        address: address(e)?,
    })
}

fn memballoon(e: &Element) -> R<Memballoon> {
    e.allow(&["model"], &["stats", "address"])?;
    let stats_period = match e.child("stats")? {
        Some(s) => {
            s.allow(&["period"], &[])?;
            Some(s.req_attr_int("period")?)
        }
        None => None,
    };
    Ok(Memballoon {
        model: e.req_attr_enum(
            "model",
            &[
                ("virtio", MemballoonModel::Virtio),
                ("none", MemballoonModel::None),
            ],
        )?,
        stats_period,
        address: address(e)?,
    })
}

fn rng(e: &Element) -> R<Rng> {
    e.allow(&["model"], &["backend", "address"])?;
    e.attr_only("model", &["virtio"])?;
    e.req_attr("model")?;
    let b = e.req_child("backend")?;
    b.allow(&["model"], &[])?;
    b.attr_only("model", &["random"])?;
    Ok(Rng {
        backend: b.req_text()?.to_owned(),
        address: address(e)?,
    })
}

fn watchdog(e: &Element) -> R<Watchdog> {
    e.allow(&["model", "action"], &["address"])?;
    let actions: Vec<(&str, WatchdogAction)> = WatchdogAction::ALL
        .iter()
        .map(|a| (a.as_str(), *a))
        .collect();
    Ok(Watchdog {
        model: e.req_attr_enum(
            "model",
            &[
                ("i6300esb", WatchdogModel::I6300esb),
                ("itco", WatchdogModel::Itco),
            ],
        )?,
        action: e
            .attr_enum("action", &actions)?
            .unwrap_or(WatchdogAction::Reset),
        address: address(e)?,
    })
}
