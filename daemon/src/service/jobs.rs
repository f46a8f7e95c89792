//! Per-domain job slots, as libvirt has them: one synchronous job at a time (start, shutdown,
//! suspend, …), and one long-running job (migration, later snapshots) beside which only a
//! listed set of synchronous jobs may run. Queries take no slot at all.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use novacron_domain::Error;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Synchronous jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Define,
    Undefine,
    Start,
    Shutdown,
    Destroy,
    Suspend,
    Resume,
    Reboot,
    Reset,
    /// QMP passthrough and live changes.
    Modify,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Define => "define",
            Job::Undefine => "undefine",
            Job::Start => "start",
            Job::Shutdown => "shutdown",
            Job::Destroy => "destroy",
            Job::Suspend => "suspend",
            Job::Resume => "resume",
            Job::Reboot => "reboot",
            Job::Reset => "reset",
            Job::Modify => "modify",
        }
    }
}

/// Long-running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncJob {
    Migration,
    /// A detach waiting for the guest to let go of a device (DEVICE_DELETED).
    Unplug,
    /// A NIC detach waiting for the guest to release the device (DEVICE_DELETED).
    NicUnplug,
    /// Snapshot create/delete/revert (block jobs).
    Snapshot,
}

impl AsyncJob {
    pub fn as_str(self) -> &'static str {
        match self {
            AsyncJob::Migration => "migration",
            AsyncJob::Unplug => "unplug",
            AsyncJob::NicUnplug => "nic-unplug",
            AsyncJob::Snapshot => "snapshot",
        }
    }

    /// The synchronous jobs allowed while this one runs: pausing and resuming (convergence
    /// needs them; the state check refuses a resume while the domain is migrating) and
    /// destroying (an operator must always be able to pull the plug). Not `Modify`: raw QMP
    /// (a `cont`) or live pinning must not interleave with the migration's own commands.
    fn allows(self, job: Job) -> bool {
        match self {
            AsyncJob::Migration => matches!(job, Job::Suspend | Job::Resume | Job::Destroy),
            // Waiting on the guest blocks nothing but what would redefine or move it: other
            // live changes and the lifecycle go on (the detaching disk stays in the live set).
            AsyncJob::Unplug => !matches!(job, Job::Define | Job::Undefine | Job::Start),
            // The guest may need to run (or be stopped) to answer; NIC changes may go on.
            AsyncJob::NicUnplug => !matches!(job, Job::Start | Job::Define | Job::Undefine),
            // A block job survives a pause; a destroy must always be possible (recovery at
            // the next start finishes what the journal says).
            AsyncJob::Snapshot => matches!(job, Job::Suspend | Job::Resume | Job::Destroy),
        }
    }
}

fn busy(domain: &str, detail: String) -> Error {
    Error::Busy {
        name: domain.to_owned(),
        detail,
    }
}

#[derive(Default)]
pub struct JobSlots {
    sync: std::sync::Arc<AsyncMutex<()>>,
    current: Mutex<Option<(Job, Instant)>>,
    long: Mutex<Option<AsyncJob>>,
}

/// Holds the synchronous slot until dropped.
pub struct JobGuard<'a> {
    _slot: OwnedMutexGuard<()>,
    slots: &'a JobSlots,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        *self
            .slots
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Holds the long-running slot until dropped.
pub struct AsyncJobGuard<'a> {
    slots: &'a JobSlots,
}

impl Drop for AsyncJobGuard<'_> {
    fn drop(&mut self) {
        *self
            .slots
            .long
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl JobSlots {
    /// Takes the synchronous slot for `job`, waiting at most `wait`.
    pub async fn begin(
        &self,
        domain: &str,
        job: Job,
        wait: Duration,
    ) -> Result<JobGuard<'_>, Error> {
        if let Some(long) = *self.long.lock().unwrap_or_else(PoisonError::into_inner) {
            if !long.allows(job) {
                return Err(busy(
                    domain,
                    format!(
                        "a {} job is running, which does not allow {} beside it",
                        long.as_str(),
                        job.as_str()
                    ),
                ));
            }
        }
        let slot = match tokio::time::timeout(wait, self.sync.clone().lock_owned()).await {
            Ok(slot) => slot,
            Err(_) => {
                let holder = *self.current.lock().unwrap_or_else(PoisonError::into_inner);
                let what = holder.map_or_else(
                    || "another job".to_owned(),
                    |(j, since)| format!("{} for {:.1?}", j.as_str(), since.elapsed()),
                );
                return Err(busy(
                    domain,
                    format!("{what}; {} gave up after {wait:?}", job.as_str()),
                ));
            }
        };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((job, Instant::now()));
        Ok(JobGuard {
            _slot: slot,
            slots: self,
        })
    }

    /// Takes the long-running slot; fails at once if one is running.
    pub fn begin_async(&self, domain: &str, job: AsyncJob) -> Result<AsyncJobGuard<'_>, Error> {
        let mut long = self.long.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = *long {
            return Err(busy(
                domain,
                format!("a {} job is already running", running.as_str()),
            ));
        }
        *long = Some(job);
        Ok(AsyncJobGuard { slots: self })
    }

    /// The synchronous job running now, if any (for display).
    pub fn current(&self) -> Option<Job> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|(j, _)| j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_job_waits_then_is_busy() {
        let slots = JobSlots::default();
        let held = slots
            .begin("vm", Job::Start, Duration::from_secs(1))
            .await
            .unwrap();
        let err = slots
            .begin("vm", Job::Destroy, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("busy") && msg.contains("start"), "{msg}");
        drop(held);
        assert!(slots
            .begin("vm", Job::Destroy, Duration::from_millis(50))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn migration_allows_only_listed_jobs_beside_it() {
        let slots = JobSlots::default();
        let _migration = slots.begin_async("vm", AsyncJob::Migration).unwrap();
        match slots.begin_async("vm", AsyncJob::Migration) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Busy { name: "vm", detail: "a migration job is already running" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        assert!(slots
            .begin("vm", Job::Start, Duration::from_millis(10))
            .await
            .is_err());
        assert!(slots
            .begin("vm", Job::Suspend, Duration::from_millis(10))
            .await
            .is_ok());
        assert!(slots
            .begin("vm", Job::Destroy, Duration::from_millis(10))
            .await
            .is_ok());
        assert!(slots
            .begin("vm", Job::Modify, Duration::from_millis(10))
            .await
            .is_err());
    }
}
