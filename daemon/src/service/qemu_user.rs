//! At daemon start: who QEMU runs as, and that this user can reach what QEMU opens by path
//! (`/dev/kvm`, the per-guest runtime and memory directories). Everything else QEMU uses (its
//! monitor, logs, serial console) is a descriptor the daemon hands over.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::host::access::{self, DeviceAccess, SearchError};
use crate::paths::Paths;
use crate::qemu::identity::{self, IdentityError};
use crate::qemu::spawn::RunAs;

#[derive(Debug, thiserror::Error)]
pub enum QemuUserError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Reach(#[from] SearchError),
    #[error("cannot create memory_backing_dir {}: {source}", path.display())]
    MemoryDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU user check failed: {0}")]
    Join(String),
}

/// What `Service::open` keeps: the identity and whether KVM is usable by it.
pub(super) struct Prepared {
    pub run_as: Option<RunAs>,
    pub kvm: Result<(), String>,
}

/// Resolves the QEMU user and, when it is not the daemon itself, makes `/dev/kvm` and the
/// daemon's runtime (and memory backing) directories usable by it. A missing user, or a
/// runtime directory below one it cannot pass, is an error: better at startup than at the
/// first guest start.
pub(super) async fn prepare(config: &Config, paths: &Paths) -> Result<Prepared, QemuUserError> {
    let user = config.qemu_user.clone();
    let run_dir = config.run_dir.clone();
    let records = paths.records_dir();
    let memory = config.memory_backing_dir.clone();
    tokio::task::spawn_blocking(move || {
        let run_as = identity::resolve(user.as_deref())?;
        let Some(who) = run_as else {
            return Ok(Prepared {
                run_as: None,
                kvm: crate::host::kvm_usable(),
            });
        };
        let kvm = kvm_for(&who);
        if let Some(dir) = &memory {
            create_private(dir).map_err(|source| QemuUserError::MemoryDir {
                path: dir.clone(),
                source,
            })?;
        }
        let mut owned: Vec<&Path> = vec![&run_dir, &records];
        owned.extend(memory.as_deref());
        let granted = access::ensure_search(&who, &owned)?;
        if !granted.is_empty() {
            tracing::info!(user = %who.user, dirs = ?granted, "gave the QEMU user search permission (ACL) on the daemon's directories");
        }
        Ok(Prepared {
            run_as: Some(who),
            kvm,
        })
    })
    .await
    .map_err(|e| QemuUserError::Join(e.to_string()))?
}

/// `/dev/kvm` as the QEMU user sees it, after adding `u:<user>:rw` to its ACL if needed (a
/// host without udev rules for it, where it is root-only 0600).
fn kvm_for(who: &RunAs) -> Result<(), String> {
    let device = Path::new(crate::host::KVM_DEVICE);
    match access::ensure_device_rw(who, device) {
        Ok(DeviceAccess::Already) => Ok(()),
        Ok(DeviceAccess::Granted) => {
            tracing::info!(user = %who.user, device = %device.display(), "added an ACL entry so the QEMU user can open the KVM device");
            Ok(())
        }
        Err(why) => Err(format!(
            "{}: {why} (as the QEMU user {})",
            device.display(),
            who.user
        )),
    }
}

/// `memory_backing_dir` when missing: its parents as usual (0755), itself root-only; the
/// QEMU user gets search permission on it only.
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}
