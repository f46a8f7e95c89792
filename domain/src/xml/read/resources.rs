//! `<memory>`, `<vcpu>`, `<cputune>`, `<numatune>`, `<memtune>`, `<memoryBacking>` and `<cpu>`.

use super::{flag, idset, size_kib, text_kib, R};
use crate::model::*;
use crate::xml::tree::Element;

pub(super) fn memory(d: &Element) -> R<Memory> {
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

pub(super) fn vcpu(e: &Element) -> R<Vcpu> {
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

pub(super) fn cputune(e: &Element) -> R<CpuTune> {
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

pub(super) fn memtune(e: &Element) -> R<MemTune> {
    // swap_hard_limit and min_guarantee are refused by name: the first needs swap
    // accounting, the second is ESX-only in libvirt.
    e.allow(&[], &["hard_limit", "soft_limit"])?;
    let limit = |n: &str| -> R<Option<u64>> {
        match e.child(n)? {
            Some(c) => {
                c.allow(&["unit"], &[])?;
                Ok(Some(text_kib(c)?))
            }
            None => Ok(None),
        }
    };
    Ok(MemTune {
        hard_limit_kib: limit("hard_limit")?,
        soft_limit_kib: limit("soft_limit")?,
    })
}

pub(super) const NUMA_MODES: &[(&str, NumaMode)] = &[
    ("strict", NumaMode::Strict),
    ("preferred", NumaMode::Preferred),
    ("interleave", NumaMode::Interleave),
    ("restrictive", NumaMode::Restrictive),
];

pub(super) fn numatune(e: &Element) -> R<NumaTune> {
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

pub(super) fn memory_backing(e: &Element) -> R<MemoryBacking> {
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

pub(super) fn cpu(e: &Element) -> R<Cpu> {
    // `vendor` is implied by the named model.
    e.allow(
        &["mode", "match", "check", "migratable"],
        &["model", "vendor", "topology", "feature", "numa"],
    )?;
    e.attr_only("match", &["exact"])?;
    e.attr_only("migratable", &["on"])?;
    let mut fallback = None;
    let model = match e.child("model")? {
        Some(m) => {
            m.allow(&["fallback"], &[])?;
            let fallbacks: Vec<(&str, CpuFallback)> =
                CpuFallback::ALL.iter().map(|f| (f.as_str(), *f)).collect();
            fallback = m.attr_enum("fallback", &fallbacks)?;
            // An empty <model fallback='allow'/> (vagrant-libvirt, host-model) names no model.
            Some(m.trimmed().to_owned()).filter(|t| !t.is_empty())
        }
        None => None,
    };
    let checks: Vec<(&str, CpuCheck)> = CpuCheck::ALL.iter().map(|c| (c.as_str(), *c)).collect();
    let check = e.attr_enum("check", &checks)?;
    if let Some(v) = e.child("vendor")? {
        v.allow(&[], &[])?;
    }
    let mode_attr = e.attr("mode").unwrap_or("custom");
    let mode = match (mode_attr, model) {
        ("host-passthrough", None) => CpuMode::HostPassthrough,
        ("host-model", None) => CpuMode::HostModel,
        ("custom", Some(model)) => CpuMode::Custom { model },
        // libvirt allows a <cpu> without a model (topology, NUMA, check only): QEMU's
        // default model, and written back without one.
        ("custom", None) => CpuMode::Default,
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
        for (i, c) in n.children_named("cell").enumerate() {
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
            // libvirt numbers a cell without `id` by its position (virt-install writes none).
            let id = match c.attr_int("id")? {
                Some(id) => id,
                None => u32::try_from(i).map_err(|_| c.invalid_attr("id", "too many cells"))?,
            };
            numa.push(NumaCell {
                id,
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
        check,
        fallback,
        features,
        topology,
        numa,
    })
}
