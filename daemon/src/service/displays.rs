//! Autoport displays at start: ports from the host's range (`host::display_ports`), the
//! display numbers QEMU's argv needs, and the config as the guest runs (the live XML shows
//! `port='5901' autoport='yes'`, as libvirt's does).

use std::sync::Arc;

use novacron_domain::model::{Graphics, SpiceListen, VncPort};
use novacron_domain::{DomainConfig, Error};

use super::Inner;
use crate::host::display_ports::VNC_BASE;

/// What a start got. The ports go back when this drops, unless the start succeeded and
/// called [`Displays::keep`]: then the supervisor releases them (from the record) once the
/// guest stops.
pub(super) struct Displays {
    inner: Arc<Inner>,
    name: String,
    kept: bool,
    /// Every port reserved for the guest, recorded in its runtime record.
    pub ports: Vec<u16>,
    /// For `LaunchContext::vnc_display`.
    pub vnc_display: Option<u16>,
    /// For `LaunchContext::spice_port`.
    pub spice_port: Option<u16>,
    /// The config with the assigned ports filled in: the runtime record's.
    pub live_config: DomainConfig,
}

/// Reserves a port for each autoport display of `config`. A graphics type that needs ports
/// (SPICE: port and tlsPort) adds one arm below, asking `allocate` for as many as it needs.
pub(super) fn assign(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
) -> Result<Displays, Error> {
    let mut live_config = config.clone();
    let mut ports = Vec::new();
    let mut vnc_display = None;
    let mut spice_port = None;
    let allocate = |count: usize| {
        inner
            .display_ports
            .allocate(name, count)
            .map_err(|e| Error::Internal(format!("domain '{name}': {e}")))
    };
    match &mut live_config.devices.graphics {
        Some(Graphics::Vnc { port, .. })
            if matches!(port, VncPort::Auto | VncPort::Assigned(_)) =>
        {
            let got = allocate(1)?;
            // The range starts at 5900 or above (checked with the configuration).
            vnc_display = Some(got[0] - VNC_BASE);
            *port = VncPort::Assigned(got[0]);
            ports.extend(got);
        }
        Some(Graphics::Vnc {
            port: VncPort::Fixed(p),
            ..
        }) => {
            inner
                .display_ports
                .reserve(name, *p)
                .map_err(|e| Error::Busy {
                    name: name.to_owned(),
                    detail: e.to_string(),
                })?;
            ports.push(*p);
        }
        // No TLS port: a tlsPort is refused while no SPICE TLS is configured.
        Some(Graphics::Spice {
            port,
            listen: SpiceListen::Address { .. },
            ..
        }) if matches!(port, VncPort::Auto | VncPort::Assigned(_)) => {
            let got = allocate(1)?;
            spice_port = Some(got[0]);
            *port = VncPort::Assigned(got[0]);
            ports.extend(got);
        }
        Some(Graphics::Spice {
            port: VncPort::Fixed(p),
            listen: SpiceListen::Address { .. },
            ..
        }) => {
            inner
                .display_ports
                .reserve(name, *p)
                .map_err(|e| Error::Busy {
                    name: name.to_owned(),
                    detail: e.to_string(),
                })?;
            ports.push(*p);
        }
        _ => {}
    }
    Ok(Displays {
        inner: inner.clone(),
        name: name.to_owned(),
        kept: false,
        ports,
        vnc_display,
        spice_port,
        live_config,
    })
}

impl Displays {
    /// The guest runs: its ports stay reserved until it stops.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Displays {
    fn drop(&mut self) {
        if !self.kept {
            release(&self.inner, &self.name, &self.ports);
        }
    }
}

/// Gives back what `assign` reserved (a failed start, or a stopped guest's record).
pub(super) fn release(inner: &Inner, name: &str, ports: &[u16]) {
    inner.display_ports.release(name, ports);
}

impl super::Service {
    /// The display ports reserved for `name` (its running QEMU's autoport displays).
    pub fn display_ports(&self, name: &str) -> Vec<u16> {
        self.inner.display_ports.held_by(name)
    }
}
