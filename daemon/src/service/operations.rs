//! Operations the caller chose not to wait for: run in the background, polled by id.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use novacron_domain::{Error, FieldError};
use serde::Serialize;

use super::events::now_unix_ms;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
    /// The fields at fault, as in an HTTP error body.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub id: String,
    pub domain: String,
    pub operation: String,
    pub status: OperationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    pub started_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    /// How far a long copy has got (vol-import), as its work last reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OperationProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

tokio::task_local! {
    /// The background operation the current task runs for (set by [`Operations::spawn`]).
    static CURRENT: (Arc<Operations>, String);
}

/// Where the work of a background operation reports its progress; a no-op for an operation
/// the caller waits for (nobody polls it). Taken on the async task, usable from a blocking
/// thread.
#[derive(Clone, Default)]
pub struct Progress(Option<(Arc<Operations>, String)>);

impl Progress {
    /// The reporter of the background operation this task runs, if any.
    pub fn current() -> Progress {
        Progress(CURRENT.try_with(Clone::clone).ok())
    }

    pub fn report(&self, done_bytes: u64, total_bytes: u64) {
        if let Some((ops, id)) = &self.0 {
            if let Some(op) = ops.lock().by_id.get_mut(id) {
                op.progress = Some(OperationProgress {
                    done_bytes,
                    total_bytes,
                });
            }
        }
    }
}

/// How many finished operations are remembered (the oldest are forgotten first).
const KEEP_FINISHED: usize = 1024;

#[derive(Default)]
pub struct Operations {
    next: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_id: BTreeMap<String, Operation>,
    finished: VecDeque<String>,
}

impl Operations {
    pub fn spawn<F>(self: &Arc<Self>, domain: &str, operation: &str, work: F) -> Operation
    where
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let id = format!("op-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let op = Operation {
            id: id.clone(),
            domain: domain.to_owned(),
            operation: operation.to_owned(),
            status: OperationStatus::Running,
            error: None,
            started_unix_ms: now_unix_ms(),
            finished_unix_ms: None,
            progress: None,
        };
        self.lock().by_id.insert(id.clone(), op.clone());
        let ops = self.clone();
        let current = (self.clone(), id.clone());
        tokio::spawn(async move {
            let result = CURRENT.scope(current, work).await;
            let mut table = ops.lock();
            if let Some(op) = table.by_id.get_mut(&id) {
                op.finished_unix_ms = Some(now_unix_ms());
                match result {
                    Ok(()) => op.status = OperationStatus::Succeeded,
                    Err(e) => {
                        op.status = OperationStatus::Failed;
                        op.error = Some(OperationError {
                            code: e.code().as_str().to_owned(),
                            message: e.to_string(),
                            details: e.details().to_vec(),
                        });
                    }
                }
            }
            table.finished.push_back(id);
            while table.finished.len() > KEEP_FINISHED {
                if let Some(old) = table.finished.pop_front() {
                    table.by_id.remove(&old);
                }
            }
        });
        op
    }

    pub fn get(&self, id: &str) -> Option<Operation> {
        self.lock().by_id.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
