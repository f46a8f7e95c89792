//! What a definition leaves to the host, settled at each start: `<cpu mode='host-model'>`
//! becomes the named model this host resolves it to, plus the host's features beyond it, and
//! `<os firmware='efi'>` without a loader becomes the firmware QEMU's descriptors offer, with
//! the guest's NVRAM (copied from the descriptor's template on first use) in the state
//! directory. The result is the config the guest runs with: its argv, its runtime record and
//! the live info show the resolved model and files, as libvirt's live XML does.

use std::path::PathBuf;
use std::sync::Arc;

use novacron_domain::model::{
    CpuFeature, CpuMode, DomainConfig, FeaturePolicy, Firmware, Loader, Nvram, VirtType,
};
use novacron_domain::Error;

use super::Inner;
use crate::host::firmware;

/// The config to run, and the firmware files the daemon opens itself (loader, NVRAM).
pub(super) struct Resolved {
    pub config: DomainConfig,
    pub firmware: Option<(PathBuf, PathBuf)>,
}

/// What a resolve may do on the host: a start makes the NVRAM from the template; a
/// validate-only define only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effects {
    Apply,
    DryRun,
}

pub(super) async fn resolve(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
    effects: Effects,
) -> Result<Resolved, Error> {
    let host_model = matches!(
        config.cpu.as_ref().map(|c| &c.mode),
        Some(CpuMode::HostModel)
    );
    let auto_fw = matches!(config.os.firmware, Firmware::UefiAuto { .. });
    let mut resolved = Resolved {
        config: config.clone(),
        firmware: None,
    };
    if !host_model && !auto_fw {
        return Ok(resolved);
    }
    let caps = inner.host.qemu_caps().await.map_err(|e| {
        Error::InvalidConfig(format!(
            "domain '{name}' leaves its CPU model or firmware to the host, which needs the \
             QEMU probe: {e}"
        ))
    })?;
    if let Some(cpu) = resolved.config.cpu.as_mut().filter(|_| host_model) {
        let hm = caps.host_model.as_ref().ok_or_else(|| {
            Error::InvalidConfig(format!(
                "domain '{name}' has <cpu mode='host-model'>, but no named CPU model of {} \
                 runs on this host without unavailable features",
                inner.config.emulator.display()
            ))
        })?;
        // The host's extra features first, as `require`; the definition's own features
        // after them and overriding them (a feature it disables is not added).
        let mut features: Vec<CpuFeature> = hm
            .features
            .iter()
            .filter(|f| !cpu.features.iter().any(|c| &c.name == *f))
            .map(|f| CpuFeature {
                policy: FeaturePolicy::Require,
                name: f.clone(),
            })
            .collect();
        features.append(&mut cpu.features);
        cpu.features = features;
        cpu.mode = CpuMode::Custom {
            model: hm.model.clone(),
        };
    }
    if let Firmware::UefiAuto {
        secure_boot,
        enrolled_keys,
    } = config.os.firmware
    {
        let machine = config.os.machine.as_deref().unwrap_or("q35");
        // The descriptors' globs name full machine types (`pc-q35-*`), not aliases.
        let machine = caps
            .machine(machine)
            .map_or(machine, |m| m.name.as_str())
            .to_owned();
        // SMM as the guest will have it: as asked, else what the accelerator can do (a
        // nested KVM may lack it; QEMU then refuses to start secure-boot firmware).
        let (smm, smm_off) = match (config.features.smm, config.virt_type) {
            (Some(false), _) => (Some(false), "the domain turns off"),
            (Some(true), _) | (None, VirtType::Qemu) => (config.features.smm, ""),
            (None, VirtType::Kvm) => match inner.host.kvm().await.value {
                Some(k) if !k.has("KVM_CAP_X86_SMM") => {
                    (Some(false), "this host's KVM lacks (KVM_CAP_X86_SMM)")
                }
                _ => (None, ""),
            },
        };
        let nvram = inner.paths.nvram(name);
        let nvram_for_copy = nvram.clone();
        let picked = tokio::task::spawn_blocking(move || {
            let dirs: Vec<PathBuf> = firmware::DESCRIPTOR_DIRS
                .iter()
                .map(PathBuf::from)
                .collect();
            let loaded = firmware::load(&dirs);
            let d = firmware::select(
                &loaded,
                &firmware::Wanted {
                    arch: "x86_64",
                    machine: &machine,
                    secure_boot,
                    enrolled_keys,
                    smm,
                    smm_off,
                },
            )?
            .clone();
            if effects == Effects::Apply {
                firmware::ensure_nvram(&d.nvram_template, &nvram_for_copy).map_err(|e| {
                    format!(
                        "cannot create the NVRAM {} from {}: {e}",
                        nvram_for_copy.display(),
                        d.nvram_template.display()
                    )
                })?;
            }
            Ok::<_, String>(d)
        })
        .await
        .map_err(|e| Error::Internal(format!("firmware selection for '{name}' failed: {e}")))?
        .map_err(|e| Error::InvalidConfig(format!("domain '{name}': {e}")))?;
        let smm_needed = picked.has("requires-smm");
        if smm_needed && resolved.config.features.smm.is_none() {
            resolved.config.features.smm = Some(true);
        }
        resolved.config.os.firmware = Firmware::Uefi {
            loader: Loader {
                path: path_string(&picked.executable)?,
                readonly: true,
                // Firmware that keeps its variables behind SMM needs the flash locked to it.
                secure: smm_needed,
            },
            nvram: Some(Nvram {
                path: path_string(&nvram)?,
                template: Some(path_string(&picked.nvram_template)?),
            }),
        };
        resolved.firmware = Some((picked.executable, nvram));
    }
    Ok(resolved)
}

fn path_string(p: &std::path::Path) -> Result<String, Error> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidConfig(format!("firmware path {p:?} is not UTF-8")))
}
