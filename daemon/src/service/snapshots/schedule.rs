//! Scheduled snapshots with retention (seed 004): per domain an interval (`30s`, `15m`, `6h`,
//! `1d`, `@hourly`, `@daily`) and how many to keep. Persisted beside the tree
//! (`schedule.json`, with the time of the last run), so a restarted daemon picks up where it
//! was; run by one tokio task per domain; retention deletes the oldest scheduled snapshots
//! beyond `keep` through the normal delete path (a branch point is skipped, not forced).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use novacron_domain::Error;
use serde::{Deserialize, Serialize};

use super::{invalid, now, CreateRequest, DeleteRequest, Quiesce};
use crate::service::Service;

pub const MAX_KEEP: u32 = 1000;
const MAX_INTERVAL: u64 = 366 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `30s`, `15m`, `6h`, `1d`, `@hourly`, `@daily`.
    pub every: String,
    /// Scheduled snapshots kept (the oldest beyond go).
    pub keep: u32,
    #[serde(default)]
    pub quiesce: Quiesce,
    /// Seconds since the epoch of the last run (kept by the daemon).
    #[serde(default)]
    pub last_run: Option<u64>,
}

/// Scheduled snapshots are named `auto-<unix ms>`.
pub const PREFIX: &str = "auto-";

/// The interval in seconds, or why the spec is refused.
pub fn interval(every: &str) -> Result<u64, String> {
    let secs = match every {
        "@hourly" => 3600,
        "@daily" => 86_400,
        s => {
            let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = n.parse().map_err(|_| {
                format!("'{every}': a number and a unit (s, m, h, d), or @hourly/@daily")
            })?;
            let mul = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("'{every}': the unit must be s, m, h or d")),
            };
            n.saturating_mul(mul)
        }
    };
    if secs == 0 || secs > MAX_INTERVAL {
        return Err(format!("'{every}': between 1s and 366d"));
    }
    Ok(secs)
}

fn path(state_dir: &Path, domain: &str) -> PathBuf {
    super::meta::dir(state_dir, domain).join("schedule.json")
}

fn load(state_dir: &Path, domain: &str) -> std::io::Result<Option<Schedule>> {
    match std::fs::read(path(state_dir, domain)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn save(state_dir: &Path, domain: &str, s: Option<&Schedule>) -> std::io::Result<()> {
    let p = path(state_dir, domain);
    match s {
        None => crate::persist::atomic::remove_durable(&p).map(drop),
        Some(s) => {
            std::fs::create_dir_all(super::meta::dir(state_dir, domain))?;
            let bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
            crate::persist::atomic::write_atomic(&p, &bytes, 0o600)
        }
    }
}

/// The running schedule tasks, by state directory and domain.
fn tasks() -> &'static Mutex<HashMap<(PathBuf, String), tokio::task::AbortHandle>> {
    static TASKS: OnceLock<Mutex<HashMap<(PathBuf, String), tokio::task::AbortHandle>>> =
        OnceLock::new();
    TASKS.get_or_init(Mutex::default)
}

impl Service {
    pub async fn snapshot_schedule(&self, domain: &str) -> Result<Option<Schedule>, Error> {
        self.inner.handle(domain)?;
        let (dir, d) = (self.state_dir(), domain.to_owned());
        tokio::task::spawn_blocking(move || load(&dir, &d))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| super::io_err("read", "schedule.json", e))
    }

    /// Sets (or with `None` removes) the schedule and (re)starts its task.
    pub async fn set_snapshot_schedule(
        &self,
        domain: &str,
        schedule: Option<Schedule>,
    ) -> Result<Option<Schedule>, Error> {
        self.inner.handle(domain)?;
        let schedule = match schedule {
            None => None,
            Some(mut s) => {
                interval(&s.every).map_err(|m| invalid("every", m))?;
                if s.keep == 0 || s.keep > MAX_KEEP {
                    return Err(invalid("keep", format!("between 1 and {MAX_KEEP}")));
                }
                // The clock starts now; a previous schedule's runs do not count.
                s.last_run = Some(now());
                Some(s)
            }
        };
        let (dir, d, s) = (self.state_dir(), domain.to_owned(), schedule.clone());
        tokio::task::spawn_blocking(move || save(&dir, &d, s.as_ref()))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| super::io_err("write", "schedule.json", e))?;
        self.restart_schedule(domain, schedule.is_some());
        Ok(schedule)
    }

    fn restart_schedule(&self, domain: &str, run: bool) {
        let key = (self.state_dir(), domain.to_owned());
        let mut t = tasks().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = t.remove(&key) {
            old.abort();
        }
        if run {
            let svc = self.clone();
            let d = domain.to_owned();
            let h = tokio::spawn(async move { svc.schedule_loop(&d).await });
            t.insert(key, h.abort_handle());
        }
    }

    async fn schedule_loop(&self, domain: &str) {
        loop {
            let Ok(Some(s)) = self.snapshot_schedule(domain).await else {
                return;
            };
            let Ok(every) = interval(&s.every) else {
                return;
            };
            let due = s.last_run.unwrap_or(0).saturating_add(every);
            let wait = due.saturating_sub(now());
            tokio::time::sleep(Duration::from_secs(wait)).await;
            if let Err(e) = self.run_schedule_once(domain, s).await {
                tracing::warn!(domain, error = %e, "scheduled snapshot");
                // Try again after an interval, not in a tight loop.
            }
        }
    }

    async fn run_schedule_once(&self, domain: &str, mut s: Schedule) -> Result<(), Error> {
        // The run is recorded first: a failing snapshot waits for the next interval.
        s.last_run = Some(now());
        let (dir, d, copy) = (self.state_dir(), domain.to_owned(), s.clone());
        tokio::task::spawn_blocking(move || save(&dir, &d, Some(&copy)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| super::io_err("write", "schedule.json", e))?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{PREFIX}{ms}");
        let req = CreateRequest {
            name: name.clone(),
            description: Some(format!("scheduled ({})", s.every)),
            quiesce: s.quiesce,
            memory: None,
        };
        self.snapshot_create(domain, req).await?;
        tracing::info!(domain, snapshot = name, "scheduled snapshot taken");
        // Retention: the oldest scheduled ones beyond `keep`.
        let list = self.snapshot_list(domain).await?;
        let mut auto: Vec<_> = list
            .snapshots
            .into_iter()
            .filter(|x| x.name.starts_with(PREFIX))
            .collect();
        auto.sort_by_key(|x| (x.created, x.name.clone()));
        let excess = auto.len().saturating_sub(s.keep as usize);
        for old in auto.into_iter().take(excess) {
            match self
                .snapshot_delete(domain, &old.name, DeleteRequest::default())
                .await
            {
                Ok(()) => tracing::info!(domain, snapshot = old.name, "retention removed"),
                Err(e) => tracing::warn!(domain, snapshot = old.name, error = %e, "retention"),
            }
        }
        Ok(())
    }
}

/// Starts the task of every domain with a schedule (at daemon start).
pub(crate) fn spawn_all(svc: &Service) {
    for d in svc.list() {
        let p = path(&svc.state_dir(), &d.name);
        if p.exists() {
            svc.restart_schedule(&d.name, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interval;

    #[test]
    fn intervals() {
        assert_eq!(interval("30s"), Ok(30));
        assert_eq!(interval("15m"), Ok(900));
        assert_eq!(interval("@daily"), Ok(86_400));
        assert!(interval("0s").is_err());
        assert!(interval("5w").is_err());
        assert!(interval("m").is_err());
        assert!(interval("400d").is_err());
    }
}
