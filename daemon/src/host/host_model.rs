//! `<cpu mode='host-model'>` resolved the way libvirt's x86 driver does it: of the named CPU
//! models this QEMU can run on this host with no unavailable feature (and the host's vendor),
//! the one that already covers the most of the host's features; the host's remaining features
//! are added to it. A named model, never `-cpu host`: it migrates, and on hosts whose `host`
//! model cannot start (this machine's nested KVM aborts on it) it still runs.
//!
//! Asked of the probe's QEMU (`-machine none`, KVM when usable): `query-cpu-model-expansion`
//! with `type: static` gives every model (and `host`, or `max` under TCG) as `base` plus its
//! CPUID feature flags and vendor.

use std::collections::BTreeSet;

use novacron_qmp::Client;
use serde::Serialize;
use serde_json::{json, Value};

use super::qemu_caps::CpuModel;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCpuModel {
    /// The named QEMU model, e.g. `Skylake-Client-IBRS`.
    pub model: String,
    /// Host features the model lacks, each added as `+name`; sorted.
    pub features: Vec<String>,
    /// The accelerator it was resolved for (`kvm`, or `tcg` when KVM is not usable).
    pub accel: String,
}

/// A static expansion: the feature flags that are on, and the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub vendor: Option<String>,
    pub features: BTreeSet<String>,
}

impl Expansion {
    /// From a `query-cpu-model-expansion` reply (`{"model": {"name", "props"}}`).
    pub fn from_qmp(reply: &Value) -> Option<Expansion> {
        let props = reply.get("model")?.get("props")?.as_object()?;
        Some(Expansion {
            vendor: props
                .get("vendor")
                .and_then(Value::as_str)
                .map(str::to_owned),
            features: props
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
        })
    }
}

/// Models that are not a fixed CPU: never the answer.
const NOT_NAMED: &[&str] = &["host", "max", "base"];

/// The named models worth expanding: usable here, fixed.
pub fn candidates(models: &[CpuModel]) -> impl Iterator<Item = &CpuModel> {
    models
        .iter()
        .filter(|m| m.usable == Some(true) && !NOT_NAMED.contains(&m.name.as_str()))
}

/// Features never added on an AMD host. IA32_ARCH_CAPABILITIES (MSR 0x10a) is Intel's; KVM
/// emulates it on AMD, but a nested KVM there refuses QEMU's write of it and QEMU aborts at
/// start ("failed to set MSR 0x10a", seen on this project's EPYC CI machines, as with `-cpu
/// host`). The named AMD models never have it; without the MSR its bits mean nothing.
const AMD_NOT_ADDED: &[&str] = &[
    "arch-capabilities",
    "rdctl-no",
    "ibrs-all",
    "rsba",
    "skip-l1dfl-vmentry",
    "ssb-no",
    "mds-no",
    "pschange-mc-no",
    "tsx-ctrl",
    "taa-no",
];

/// libvirt's choice among the expanded candidates: no feature the host lacks, the host's
/// vendor, the most features; on a tie the alias (`Skylake-Client-IBRS` over
/// `Skylake-Client-v2`, what libvirt and people write), then the first name.
pub fn pick(
    host: &Expansion,
    expanded: &[(&CpuModel, Expansion)],
    accel: &str,
) -> Option<HostCpuModel> {
    let best = expanded
        .iter()
        .filter(|(_, e)| e.features.is_subset(&host.features))
        .filter(|(_, e)| host.vendor.is_none() || e.vendor == host.vendor)
        .max_by(|(ma, ea), (mb, eb)| {
            ea.features
                .len()
                .cmp(&eb.features.len())
                .then(ma.alias_of.is_some().cmp(&mb.alias_of.is_some()))
                .then(mb.name.cmp(&ma.name))
        })?;
    Some(HostCpuModel {
        model: best.0.name.clone(),
        features: host
            .features
            .difference(&best.1.features)
            .filter(|f| {
                host.vendor.as_deref() != Some("AuthenticAMD")
                    || !AMD_NOT_ADDED.contains(&f.as_str())
            })
            .cloned()
            .collect(),
        accel: accel.to_owned(),
    })
}

/// Asks the probe's QEMU. `Ok(None)`: nothing named is usable here (reported at start).
pub async fn resolve(client: &Client, models: &[CpuModel]) -> Result<Option<HostCpuModel>, String> {
    let kvm = client
        .execute_raw("query-kvm", None)
        .await
        .map_err(|e| format!("query-kvm: {e}"))?
        .get("enabled")
        .and_then(Value::as_bool)
        == Some(true);
    let (accel, whole) = if kvm { ("kvm", "host") } else { ("tcg", "max") };
    let expand = |name: String| async move {
        let args = json!({"type": "static", "model": {"name": name}});
        client
            .execute_raw("query-cpu-model-expansion", Some(&args))
            .await
            .map_err(|e| format!("query-cpu-model-expansion {name}: {e}"))
            .and_then(|r| {
                Expansion::from_qmp(&r)
                    .ok_or_else(|| format!("query-cpu-model-expansion {name}: no model props"))
            })
    };
    let host = expand(whole.to_owned()).await?;
    let mut expanded = Vec::new();
    for m in candidates(models) {
        // One model QEMU cannot expand does not spoil the others.
        if let Ok(e) = expand(m.name.clone()).await {
            expanded.push((m, e));
        }
    }
    Ok(pick(&host, &expanded, accel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(vendor: &str, features: &[&str]) -> Expansion {
        Expansion {
            vendor: Some(vendor.into()),
            features: features.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn model(name: &str, alias_of: Option<&str>) -> CpuModel {
        CpuModel {
            name: name.into(),
            usable: Some(true),
            alias_of: alias_of.map(str::to_owned),
        }
    }

    #[test]
    fn an_amd_host_never_gets_the_intel_arch_capabilities_msr_added() {
        let host = exp(
            "AuthenticAMD",
            &["fpu", "svm", "arch-capabilities", "mds-no", "rdctl-no"],
        );
        let epyc = model("EPYC", None);
        let got = pick(&host, &[(&epyc, exp("AuthenticAMD", &["fpu"]))], "kvm").unwrap();
        assert_eq!(got.features, vec!["svm".to_owned()]);
        // An Intel host keeps them (the MSR is its own).
        let host = exp("GenuineIntel", &["fpu", "arch-capabilities"]);
        let sky = model("Skylake", None);
        let got = pick(&host, &[(&sky, exp("GenuineIntel", &["fpu"]))], "kvm").unwrap();
        assert_eq!(got.features, vec!["arch-capabilities".to_owned()]);
    }

    #[test]
    fn the_largest_fitting_model_of_the_hosts_vendor_plus_the_rest() {
        let host = exp("GenuineIntel", &["fpu", "sse", "sse2", "lm", "vmx", "avx"]);
        let (old, new_v, new_alias, amd, too_new) = (
            model("Old", None),
            model("New-v2", None),
            model("New-IBRS", Some("New-v2")),
            model("EPYC", None),
            model("Newer", None),
        );
        let expanded = vec![
            (&old, exp("GenuineIntel", &["fpu", "sse"])),
            (&new_v, exp("GenuineIntel", &["fpu", "sse", "sse2", "lm"])),
            (
                &new_alias,
                exp("GenuineIntel", &["fpu", "sse", "sse2", "lm"]),
            ),
            // More features, but another vendor's.
            (
                &amd,
                exp("AuthenticAMD", &["fpu", "sse", "sse2", "lm", "avx"]),
            ),
            // Would need a feature the host lacks.
            (
                &too_new,
                exp("GenuineIntel", &["fpu", "sse", "sse2", "lm", "avx512f"]),
            ),
        ];
        let got = pick(&host, &expanded, "kvm").unwrap();
        assert_eq!(
            got,
            HostCpuModel {
                model: "New-IBRS".into(),
                features: vec!["avx".into(), "vmx".into()],
                accel: "kvm".into(),
            }
        );
        assert_eq!(pick(&host, &[], "kvm"), None);
    }

    #[test]
    fn expansion_replies_and_candidates() {
        let reply = json!({"model": {"name": "base", "props": {
            "vendor": "GenuineIntel", "family": 6, "sse2": true, "avx": false, "lm": true}}});
        assert_eq!(
            Expansion::from_qmp(&reply),
            Some(exp("GenuineIntel", &["lm", "sse2"]))
        );
        assert_eq!(Expansion::from_qmp(&json!({})), None);
        let models = vec![
            model("host", None),
            model("max", None),
            model("base", None),
            CpuModel {
                usable: Some(false),
                ..model("Skylake", None)
            },
            CpuModel {
                usable: None,
                ..model("unknown", None)
            },
            model("pentium3", None),
        ];
        let names: Vec<&str> = candidates(&models).map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["pentium3"]);
    }
}
