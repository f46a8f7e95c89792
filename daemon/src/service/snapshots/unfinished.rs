//! Operations that move a running guest's disks elsewhere (detach-disk, migration) wait for
//! an unfinished snapshot operation: its journal is settled from what the disks run on (the
//! block graph, the live device set), which they would change under it.

use novacron_domain::Error;

use crate::service::Service;

impl Service {
    /// Busy while a snapshot journal of `domain` is unfinished (settled by the next snapshot
    /// operation or a daemon restart); `Ok` otherwise. The caller audits the refusal.
    pub(crate) async fn refuse_while_snapshot_unfinished(&self, domain: &str) -> Result<(), Error> {
        if self.load_tree(domain).await?.journal.is_none() {
            return Ok(());
        }
        Err(Error::Busy {
            name: domain.to_owned(),
            detail: "an unfinished snapshot operation of this domain is waiting to be finished \
                     (by the next snapshot operation or a daemon restart)"
                .into(),
        })
    }
}
