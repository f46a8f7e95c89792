//! The graphical console: a VNC client connection per viewer, handed to QEMU over QMP
//! (`getfd` + `add_client protocol=vnc`) as one end of a socketpair, so nothing needs to
//! listen on the host for it; and `screendump` thumbnails.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use novacron_domain::model::Graphics;
use novacron_domain::Error;
use serde_json::json;
use tokio::net::UnixStream;

use crate::service::lifecycle::qmp_error;
use crate::service::Inner;

static NEXT: AtomicU64 = AtomicU64::new(1);
/// Larger than any PNG of a 4K screen.
const MAX_SCREENSHOT: u64 = 64 << 20;

impl Inner {
    /// A new VNC client connection to the guest's display: raw RFB from its first byte.
    pub(crate) async fn vnc_connect(&self, name: &str) -> Result<UnixStream, Error> {
        let h = self.handle(name)?;
        let live = h.run().live().cloned().ok_or_else(|| Error::WrongState {
            name: name.to_owned(),
            state: h.state(),
            operation: "open the screen of",
        })?;
        if !matches!(
            live.record.config.devices.graphics,
            Some(Graphics::Vnc { .. })
        ) {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}' has no VNC display (<graphics type='vnc'>)"
            )));
        }
        let (ours, qemus) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::Internal(format!("socketpair: {e}")))?;
        let qmp = live.qmp(name)?;
        let fdname = format!("novacron-vnc-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        qmp.send_fd(&fdname, qemus.as_fd())
            .await
            .map_err(|e| qmp_error(name, "pass a VNC connection to", e))?;
        drop(qemus);
        // The websocket's ticket is the authentication: QEMU's own VNC password (if any)
        // guards its TCP listener, not this connection.
        qmp.execute_raw(
            "add_client",
            Some(&json!({"protocol": "vnc", "fdname": fdname, "skipauth": true})),
        )
        .await
        .map_err(|e| qmp_error(name, "add a VNC client to", e))?;
        ours.set_nonblocking(true)
            .map_err(|e| Error::Internal(e.to_string()))?;
        UnixStream::from_std(ours).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The guest's screen as PNG (QEMU's `screendump format=png`, written into the guest's
    /// runtime directory, read back and removed).
    pub(crate) async fn screenshot(&self, name: &str) -> Result<Vec<u8>, Error> {
        let h = self.handle(name)?;
        let live = h.run().live().cloned().ok_or_else(|| Error::WrongState {
            name: name.to_owned(),
            state: h.state(),
            operation: "take a screenshot of",
        })?;
        let file = self.paths.guest_dir(name).join(format!(
            "screendump-{}.png",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let filename = file.to_string_lossy().into_owned();
        let done = live
            .qmp(name)?
            .execute_raw(
                "screendump",
                Some(&json!({"filename": filename, "format": "png"})),
            )
            .await
            .map_err(|e| qmp_error(name, "take a screenshot of", e));
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            // QEMU's user owns the directory: never follow a link it left, never read more
            // than a screen can be.
            let bytes = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&file)
                .and_then(|f| {
                    let mut out = Vec::new();
                    f.take(MAX_SCREENSHOT).read_to_end(&mut out)?;
                    Ok(out)
                });
            let _ = std::fs::remove_file(&file);
            bytes
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        done?;
        read.map_err(|e| Error::Io {
            action: "read the screenshot",
            path: filename,
            message: e.to_string(),
        })
    }
}
