//! TCP ports for SPICE and VNC `autoport`: as libvirt, the first port from 5900 up that is
//! free on the guest's listen address (for VNC, as display number port - 5900). QEMU binds it a moment later, so a port handed out recently is
//! skipped for a while: two guests starting at once do not both get 5900.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use novacron_domain::model::{DomainConfig, Graphics, SpiceListen, VncPort};

const FIRST_PORT: u16 = 5900;
/// Longer than any QEMU takes from spawn to binding its SPICE port.
const HOLD: Duration = Duration::from_secs(60);

static HANDED_OUT: Mutex<Vec<(u16, Instant)>> = Mutex::new(Vec::new());

/// The port for a SPICE guest with `autoport`, `None` when it needs none (fixed port, no
/// SPICE, `<listen type='none'>`). Errors say why no port could be had.
pub fn spice_autoport(config: &DomainConfig) -> Result<Option<u16>, String> {
    let Some(Graphics::Spice {
        port: VncPort::Auto,
        listen: SpiceListen::Address { address },
        ..
    }) = &config.devices.graphics
    else {
        return Ok(None);
    };
    free_port(address.as_deref(), "SPICE").map(Some)
}

/// The VNC display for a VNC guest with `autoport`, `None` when it needs none.
pub fn vnc_autodisplay(config: &DomainConfig) -> Result<Option<u16>, String> {
    let Some(Graphics::Vnc {
        port: VncPort::Auto,
        listen,
    }) = &config.devices.graphics
    else {
        return Ok(None);
    };
    free_port(listen.as_deref(), "VNC").map(|p| Some(p.saturating_sub(FIRST_PORT)))
}

fn free_port(address: Option<&str>, what: &str) -> Result<u16, String> {
    // Validated at define: an IP address; absent means localhost, as in the argv.
    let ip: IpAddr = match address {
        Some(a) => a
            .parse()
            .map_err(|_| format!("{what} listen address '{a}' is not an IP address"))?,
        None => Ipv4Addr::LOCALHOST.into(),
    };
    let mut held = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    held.retain(|(_, at)| now.duration_since(*at) < HOLD);
    for port in FIRST_PORT..=u16::MAX {
        if held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(_) => {
                held.push((port, now));
                return Ok(port);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            // Not an address of this host, or not allowed: no port will do.
            Err(e) => return Err(format!("cannot listen for {what} on {ip}: {e}")),
        }
    }
    Err(format!(
        "no free TCP port from {FIRST_PORT} up on {ip} for {what}"
    ))
}
