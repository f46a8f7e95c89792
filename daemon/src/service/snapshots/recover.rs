//! After a restart: a deletion the journal says was in flight is finished — a live job still
//! running is driven to its end (an active commit completed once ready), one that ended is
//! recognised from the block graph, one that never started is started; a stopped guest's
//! `qemu-img commit` is run again (repeating it writes the same data). Nothing is unlinked
//! before the tree without the snapshot is on disk.

use std::time::Duration;

use super::{placement, Where};
use crate::service::jobs::AsyncJob;
use crate::service::Service;

/// Looks at every domain's tree once, in the background; then starts the schedules.
pub(crate) fn spawn_recovery(svc: Service) {
    tokio::spawn(async move {
        let names: Vec<String> = svc.list().into_iter().map(|d| d.name).collect();
        for name in names {
            let tree = match svc.load_tree(&name).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(domain = name, error = %e, "snapshot metadata unreadable");
                    continue;
                }
            };
            if let Err(e) = svc.recover_memory(&name).await {
                tracing::warn!(domain = name, error = %e, "interrupted snapshot with memory");
            }
            if tree.journal.is_none() {
                continue;
            }
            match svc.finish_interrupted(&name).await {
                Ok(()) => tracing::info!(domain = name, "interrupted snapshot deletion finished"),
                Err(e) => {
                    tracing::warn!(domain = name, error = %e, "interrupted snapshot deletion")
                }
            }
        }
        super::schedule::spawn_all(&svc);
    });
}

impl Service {
    async fn finish_interrupted(&self, name: &str) -> Result<(), novacron_domain::Error> {
        let h = self.inner.handle(name)?;
        let _job = h
            .begin(crate::service::jobs::Job::Modify, Duration::from_secs(60))
            .await?;
        let _long = h.jobs.begin_async(name, AsyncJob::Snapshot)?;
        let mut tree = self.load_tree(name).await?;
        let place = placement(&h, "finish a snapshot deletion of")?;
        if let Where::Running(l) = &place {
            // The nodes were recorded for this very QEMU; a restarted guest has other ones,
            // and its images are closed: then the offline path applies.
            let same = tree
                .live
                .as_ref()
                .is_some_and(|n| n.pid == l.pid && n.start_time == l.record.start_time);
            if !same {
                return Err(novacron_domain::Error::Busy {
                    name: name.to_owned(),
                    detail: "the guest was restarted while a snapshot deletion was in flight; \
                             stop it to finish the deletion"
                        .into(),
                });
            }
        }
        self.run_journal(&h, &place, &mut tree, None, true).await?;
        self.finish(&h, &place, tree).await
    }
}
