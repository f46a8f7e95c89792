//! Validate-only define: everything a define checks (parse, validation, name, uuid, the
//! storage-root admission for the caller) and the QEMU command line a start would build,
//! without defining anything.

use novacron_domain::model::{Graphics, SpiceListen, VirtType, VncPort};
use novacron_domain::{
    build_argv, Accel, CpuChoice, DomainConfig, Error, LaunchContext, MonitorSocket,
};
use serde::Serialize;

use super::Service;
use crate::persist::definitions::Trust;

/// What a define would do with this definition.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub name: String,
    /// The uuid it would have (generated when the definition has none).
    pub uuid: Option<String>,
    /// Whether it would replace an existing domain's definition.
    pub replaces: bool,
    /// `admin` (host paths as written) or `restricted` (storage roots only), for this caller.
    pub trust: &'static str,
    /// The definition as it would be stored (defaults filled in), as libvirt XML.
    pub xml: String,
    /// The QEMU command line a start would run, with the host's files named directly (a
    /// real start hands them over as descriptors).
    pub argv: Vec<String>,
}

impl Service {
    pub async fn check_definition(&self, config: DomainConfig) -> Result<Checked, Error> {
        let existing = self.inner.read_domains().get(&config.name).cloned();
        let replaces = existing.is_some();
        let validated = self
            .inner
            .prepare(config, existing.as_ref().map(|h| h.definition()))?;
        let trust = self.inner.admit(&validated).await?;
        let accel = match validated.virt_type {
            VirtType::Kvm => match &self.inner.kvm {
                Ok(()) => Accel::Kvm,
                Err(why) => {
                    return Err(Error::InvalidConfig(format!(
                        "domain '{}' has type 'kvm', but KVM is not usable on this host ({why})",
                        validated.name
                    )))
                }
            },
            VirtType::Qemu => Accel::Tcg,
        };
        // What a start resolves on the host (host-model CPU, autoselected firmware), looked
        // up without making anything; ports a start allocates get placeholders.
        let volumes = self
            .inner
            .volume_disks(
                validated.config(),
                super::storage::disk_volumes::Formats::Start,
            )
            .await?;
        let resolved = super::resolve::resolve(
            &self.inner,
            &validated.name,
            volumes.as_ref().unwrap_or(validated.config()),
            super::resolve::Effects::DryRun,
        )
        .await?;
        let run = resolved.config.clone().validate()?;
        // Ports a start allocates (autoport) get placeholders: nothing is reserved.
        let (vnc_display, spice_port) = match &run.config().devices.graphics {
            Some(Graphics::Vnc {
                port: VncPort::Auto,
                ..
            }) => (Some(0), None),
            Some(Graphics::Spice {
                port: VncPort::Auto,
                listen: SpiceListen::Address { .. },
                ..
            }) => (None, Some(5900)),
            _ => (None, None),
        };
        let paths = &self.inner.paths;
        let context = LaunchContext {
            emulator: self.inner.config.emulator.clone(),
            accel,
            cpu: CpuChoice::AsConfigured,
            monitor: MonitorSocket::Path(paths.qmp_socket(&validated.name)),
            fd_sets: Vec::new(),
            runtime_dir: paths.guest_dir(&validated.name),
            memory_dir: None,
            serial_log: None,
            net_fds: Default::default(),
            vnc_display,
            spice_port,
            swtpm_socket: None,
            sandbox: self.inner.config.sandbox,
            host_paths: Default::default(),
            backing_chains: Default::default(),
        };
        let argv = build_argv(&run, &context)
            .map_err(|e| Error::InvalidConfig(format!("domain '{}': {e}", validated.name)))?;
        Ok(Checked {
            name: validated.name.clone(),
            uuid: validated.uuid.map(|u| u.to_string()),
            replaces,
            trust: match trust {
                Trust::Admin => "admin",
                Trust::Restricted => "restricted",
            },
            xml: validated.config().to_xml(),
            argv,
        })
    }
}
