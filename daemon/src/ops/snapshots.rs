//! Disk snapshots: create, delete, revert (changes, audited, long) of one domain.

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::snapshots::schedule::Schedule;
use crate::service::snapshots::{CreateRequest, DeleteRequest, SnapshotInfo};
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct SnapshotCreate {
    pub domain: String,
    pub request: CreateRequest,
}

impl Operation for SnapshotCreate {
    type Response = SnapshotInfo;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::SNAPSHOT_CREATE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        crate::service::snapshots::check_name(&self.request.name)
    }

    async fn local(self, svc: Service) -> Result<SnapshotInfo, Error> {
        svc.snapshot_create(&self.domain, self.request).await
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotDelete {
    pub domain: String,
    pub snapshot: String,
    pub request: DeleteRequest,
}

impl Operation for SnapshotDelete {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::SNAPSHOT_DELETE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.snapshot_delete(&self.domain, &self.snapshot, self.request)
            .await
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotRevert {
    pub domain: String,
    pub snapshot: String,
}

impl Operation for SnapshotRevert {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::SNAPSHOT_REVERT
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.snapshot_revert(&self.domain, &self.snapshot).await
    }
}

/// Sets (`Some`) or removes (`None`) a domain's snapshot schedule.
#[derive(Debug, Clone)]
pub struct SetSchedule {
    pub domain: String,
    pub schedule: Option<Schedule>,
}

impl Operation for SetSchedule {
    type Response = Option<Schedule>;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        if self.schedule.is_some() {
            &table::SNAPSHOT_SCHEDULE_SET
        } else {
            &table::SNAPSHOT_SCHEDULE_DELETE
        }
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<Option<Schedule>, Error> {
        svc.set_snapshot_schedule(&self.domain, self.schedule).await
    }
}
