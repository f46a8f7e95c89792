//! After a restart: the journals of template operations a crash interrupted. A journalled file
//! stays only if what should refer to it does — bases the template's metadata holds, clones
//! a defined domain's disks use — and is removed otherwise, so no half-made base or orphan
//! clone outlives the crash, and no half-defined domain exists (a definition is written
//! atomically after its clones).

use novacron_domain::model::DiskSource;

use super::store::{PendingFile, PendingOp, Store};
use crate::host::volumes::files;
use crate::service::Service;

/// Removes `f` beneath its directory (never through a link) if it is still the file the
/// operation made; a missing file, or one the operation never made, is left alone.
pub(super) fn unlink(f: &PendingFile) {
    let Some(made) = f.made else {
        return;
    };
    let same = |d: &std::os::fd::OwnedFd| -> std::io::Result<bool> {
        let st =
            nix::sys::stat::fstatat(d, f.name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        Ok((st.st_dev, st.st_ino) == made)
    };
    let r = files::open_dir(std::path::Path::new(&f.dir)).and_then(|d| {
        if same(&d)? {
            files::unlink(&d, &f.name)
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = f.path(), error = %e, "cannot remove a template file"),
    }
}

/// Finishes what the journals under the state directory describe, before any request runs.
pub(crate) async fn recover(svc: &Service) {
    let store = svc.template_store();
    let defined: Vec<(String, Vec<String>)> = svc
        .list()
        .into_iter()
        .filter_map(|d| {
            let info = svc.get(&d.name).ok()?;
            let paths = info
                .config
                .devices
                .disks
                .iter()
                .filter_map(|k| match &k.source {
                    Some(DiskSource::File { path }) => Some(path.clone()),
                    _ => None,
                })
                .collect();
            Some((d.name, paths))
        })
        .collect();
    let work = move || recover_blocking(&store, &defined);
    if let Err(e) = tokio::task::spawn_blocking(work).await {
        tracing::warn!(error = %e, "template recovery failed");
    }
}

fn recover_blocking(store: &Store, defined: &[(String, Vec<String>)]) {
    for (journal, p) in store.pending() {
        let keep = |f: &PendingFile| match p.op {
            PendingOp::Bases | PendingOp::Delete => {
                store.load(&p.owner).is_ok_and(|t| t.holds(&f.path()))
            }
            PendingOp::Deploy => defined
                .iter()
                .any(|(name, paths)| name == &p.owner && paths.contains(&f.path())),
        };
        for f in &p.files {
            if !keep(f) {
                tracing::info!(file = f.path(), op = ?p.op, owner = p.owner, "removing what an interrupted template operation left");
                unlink(f);
            }
        }
        store.end(&journal);
    }
}
