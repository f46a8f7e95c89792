//! Consoles (issue 20): per running guest one permanent connection to its serial chardev (a
//! Unix socket QEMU serves in the guest's runtime directory; the daemon is the client, so a
//! daemon killed with -9 merely disconnects and its successor connects again), a ring of
//! recent output and the viewers of the moment; VNC viewers through QMP `add_client`; and the
//! one-use tickets a websocket presents instead of headers browsers cannot set.

pub mod api;
mod ring;
pub mod serial;
pub mod tickets;
pub mod vnc;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use novacron_domain::model::{CharSource, ConsoleTarget, SocketMode};
use novacron_domain::{DomainConfig, Error};

pub use serial::{Console, Mode, Viewer};
pub use tickets::{Kind, Ticket, TicketError};

/// The console of each guest that has one (the latest run's), and the tickets.
pub struct Consoles {
    map: Mutex<HashMap<String, Arc<Console>>>,
    pub tickets: tickets::Tickets,
}

impl Consoles {
    /// No consoles yet; tickets good for `ticket_ttl`.
    pub fn new(ticket_ttl: std::time::Duration) -> Consoles {
        Consoles {
            map: Mutex::default(),
            tickets: tickets::Tickets::new(ticket_ttl),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Console>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn insert(&self, console: Arc<Console>) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(console.name().to_owned(), console);
    }
}

/// The file name of the console socket in a guest's runtime directory.
pub const SOCKET_NAME: &str = "console.sock";

/// The config QEMU's argv is built from when the guest's first serial console is a `pty`
/// (libvirt's "the host provides a console"): that chardev becomes a Unix socket QEMU serves
/// at `socket`, which the daemon reads. A console routed elsewhere by the definition (a file,
/// a socket of its own, null) is left as defined: the daemon has no console for it.
pub(crate) fn wire(config: &DomainConfig, socket: &Path) -> Option<DomainConfig> {
    let mut wired = config.clone();
    let server = CharSource::Unix {
        path: socket.to_string_lossy().into_owned(),
        mode: SocketMode::Server,
    };
    let devices = &mut wired.devices;
    if let Some(first) = devices.serials.iter_mut().min_by_key(|s| s.port) {
        if first.source != CharSource::Pty {
            return None;
        }
        first.source = server.clone();
        let port = first.port;
        // A serial-target console on that port is the same device: the same source.
        for c in devices.consoles.iter_mut() {
            if c.target == ConsoleTarget::Serial && c.port == port {
                c.source = server.clone();
            }
        }
    } else {
        let first = devices.consoles.first_mut()?;
        if first.source != CharSource::Pty {
            return None;
        }
        first.source = server;
    }
    Some(wired)
}

/// Whether a guest's argv has the daemon's console socket (guests started before consoles
/// existed have none).
pub(crate) fn has_socket(argv: &[String], socket: &Path) -> bool {
    let want = format!("path={}", socket.to_string_lossy().replace(',', ",,"));
    argv.iter()
        .any(|a| a.starts_with("socket,id=char") && a.contains(&format!(",{want},")))
}

impl super::Inner {
    /// Starts (or restarts, after a daemon restart) the console pump of a guest that has the
    /// daemon's console socket; called wherever a guest becomes supervised.
    pub(crate) fn attach_console(self: &Arc<Self>, name: &str, live: &Arc<super::domain::Live>) {
        let socket = self.paths.guest_dir(name).join(SOCKET_NAME);
        if !has_socket(&live.record.argv, &socket) {
            return;
        }
        let console = Arc::new(Console::new(name));
        self.consoles.insert(console.clone());
        serial::spawn_pump(
            Arc::downgrade(self),
            console,
            Arc::downgrade(live),
            socket,
            self.paths.serial_log(name),
        );
    }

    /// The console of a running guest.
    pub(crate) fn console(&self, name: &str) -> Result<Arc<Console>, Error> {
        let h = self.handle(name)?;
        let live = h.run().live().cloned().ok_or_else(|| Error::WrongState {
            name: name.to_owned(),
            state: h.state(),
            operation: "attach to the console of",
        })?;
        let socket = self.paths.guest_dir(name).join(SOCKET_NAME);
        if !has_socket(&live.record.argv, &socket) {
            return Err(no_console(name));
        }
        self.consoles.get(name).ok_or_else(|| no_console(name))
    }
}

fn no_console(name: &str) -> Error {
    Error::InvalidConfig(format!(
        "domain '{name}' has no daemon console: its first serial or console device is not \
         type 'pty' (or it was started by a daemon without consoles)"
    ))
}
