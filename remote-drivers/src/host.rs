//! A registered remote host: its adapter guarded by time limits, read retries, a circuit breaker
//! and the last good inventory.
//!
//! Everything a face does with a remote host goes through here, so every vendor gets the same
//! resilience: a hanging vendor costs its own callers at most the host's time limit, never
//! anyone else's, and once its breaker opens the host is read-only, answering lists from the
//! last inventory marked stale with its age.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use novacron_domain::{Capabilities, DomainInfo, DomainSummary, Driver, Error};

use crate::breaker::{Breaker, BreakerState};
use crate::config::{DriverKind, HostConfig};

/// Pauses between attempts of an idempotent read.
const READ_RETRY_BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// A listing, fresh or from the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inventory {
    pub domains: Vec<DomainSummary>,
    /// When the vendor gave this listing (seconds since the epoch).
    pub fetched_at_unix: u64,
    /// Set when the host could not be asked and this is the last good listing.
    pub stale: Option<Staleness>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Staleness {
    pub age_secs: f64,
    pub reason: String,
}

/// What `/v1/hosts` shows of a host. No credentials, ever.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostStatus {
    pub name: String,
    pub driver: DriverKind,
    pub url: String,
    pub user: String,
    pub breaker: BreakerState,
    /// Read-only while the breaker is not closed.
    pub read_only: bool,
    pub last_inventory_age_secs: Option<f64>,
    pub last_error: Option<String>,
}

struct Cached {
    domains: Vec<DomainSummary>,
    at: Instant,
    wall: SystemTime,
}

pub struct RemoteHost {
    config: HostConfig,
    driver: Arc<dyn Driver>,
    breaker: Breaker,
    last_inventory: Mutex<Option<Cached>>,
    last_error: Mutex<Option<String>>,
}

impl RemoteHost {
    pub fn new(config: HostConfig, driver: Arc<dyn Driver>) -> Self {
        Self {
            breaker: Breaker::new(config.breaker),
            config,
            driver,
            last_inventory: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    /// Connects the configured adapter (no network traffic until the first call).
    pub fn connect(config: HostConfig) -> Result<Self, Error> {
        let driver = crate::connect(&config)?;
        Ok(Self::new(config, driver))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn status(&self) -> HostStatus {
        let breaker = self.breaker.state();
        HostStatus {
            name: self.config.name.clone(),
            driver: self.config.driver,
            url: self.config.url.to_string(),
            user: self.config.credentials.principal().to_owned(),
            breaker,
            read_only: breaker != BreakerState::Closed,
            last_inventory_age_secs: lock(&self.last_inventory)
                .as_ref()
                .map(|c| c.at.elapsed().as_secs_f64()),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// The host's domains; the last good listing marked stale if the host cannot answer.
    pub async fn inventory(&self) -> Result<Inventory, Error> {
        match self.read("list", || self.driver.list()).await {
            Ok(domains) => {
                let wall = SystemTime::now();
                *lock(&self.last_inventory) = Some(Cached {
                    domains: domains.clone(),
                    at: Instant::now(),
                    wall,
                });
                Ok(Inventory {
                    domains,
                    fetched_at_unix: unix(wall),
                    stale: None,
                })
            }
            Err(e) if crate::breaker::counts_against_host(&e) => {
                match lock(&self.last_inventory).as_ref() {
                    Some(c) => Ok(Inventory {
                        domains: c.domains.clone(),
                        fetched_at_unix: unix(c.wall),
                        stale: Some(Staleness {
                            age_secs: c.at.elapsed().as_secs_f64(),
                            reason: e.to_string(),
                        }),
                    }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        self.read("get", || self.driver.get(name)).await
    }

    pub async fn capabilities(&self) -> Result<Capabilities, Error> {
        self.read("capabilities", || self.driver.capabilities())
            .await
    }

    pub async fn start(&self, name: &str) -> Result<(), Error> {
        self.mutate("start", self.driver.start(name)).await
    }

    pub async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        self.mutate("shutdown", self.driver.shutdown(name, timeout))
            .await
    }

    pub async fn destroy(&self, name: &str) -> Result<(), Error> {
        self.mutate("destroy", self.driver.destroy(name)).await
    }

    pub async fn suspend(&self, name: &str) -> Result<(), Error> {
        self.mutate("suspend", self.driver.suspend(name)).await
    }

    pub async fn resume(&self, name: &str) -> Result<(), Error> {
        self.mutate("resume", self.driver.resume(name)).await
    }

    pub async fn reboot(&self, name: &str) -> Result<(), Error> {
        self.mutate("reboot", self.driver.reboot(name)).await
    }

    pub async fn undefine(&self, name: &str) -> Result<(), Error> {
        self.mutate("undefine", self.driver.undefine(name)).await
    }

    pub async fn define(
        &self,
        config: novacron_domain::ValidatedDomain,
    ) -> Result<DomainSummary, Error> {
        self.mutate("define", self.driver.define(config)).await
    }

    pub async fn migrate(
        &self,
        name: &str,
        target: &novacron_domain::MigrationTarget,
    ) -> Result<(), Error> {
        self.mutate("migrate", self.driver.migrate(name, target))
            .await
    }

    /// An idempotent read: admitted by the breaker, retried on host failures, bounded by the
    /// host's read time limit as a whole.
    async fn read<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let limit = self.config.timeouts.read;
        let attempts = async {
            let mut backoff = READ_RETRY_BACKOFF.iter();
            loop {
                let result = self.guarded(call()).await;
                match (&result, backoff.next()) {
                    // No retry once the breaker is open: its refusal is immediate and final.
                    (Err(e), Some(pause))
                        if retryable(e) && self.breaker.state() == BreakerState::Closed =>
                    {
                        tokio::time::sleep(*pause).await
                    }
                    _ => return result,
                }
            }
        };
        match tokio::time::timeout(limit, attempts).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(operation, limit)),
        }
    }

    /// A lifecycle call: never retried (it may have happened), refused while the breaker is
    /// not closed, bounded by the host's operation time limit.
    async fn mutate<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if self.breaker.state() == BreakerState::Open {
            return Err(Error::Unavailable {
                host: self.config.name.clone(),
                reason: format!("read-only while its circuit breaker is open; {operation} refused"),
            });
        }
        let limit = self.config.timeouts.operation;
        match tokio::time::timeout(limit, self.guarded(call)).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(operation, limit)),
        }
    }

    /// One call through the breaker.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let ticket = self
            .breaker
            .admit()
            .map_err(|retry_in| Error::Unavailable {
                host: self.config.name.clone(),
                reason: format!(
                    "circuit breaker open after repeated failures; next probe in {:.1}s",
                    retry_in.as_secs_f64()
                ),
            })?;
        // Hold the ticket across the call so a cancelled call still reports (as a failure).
        let mut guard = TicketGuard {
            breaker: &self.breaker,
            ticket: Some(ticket),
        };
        let result = call.await;
        if let Some(ticket) = guard.ticket.take() {
            self.breaker.record(ticket, result.as_ref().map(|_| ()));
        }
        if let Err(e) = &result {
            if crate::breaker::counts_against_host(e) {
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
        result
    }

    fn timed_out(&self, operation: &'static str, after: Duration) -> Error {
        // The guard has already counted the abandoned call against the host.
        let e = Error::Timeout { operation, after };
        *lock(&self.last_error) = Some(format!("{operation}: {e}"));
        e
    }
}

/// Reports an abandoned call (time limit hit, caller gone) as a host failure.
struct TicketGuard<'a> {
    breaker: &'a Breaker,
    ticket: Option<crate::breaker::Ticket>,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let abandoned = Error::Timeout {
                operation: "remote call",
                after: Duration::ZERO,
            };
            self.breaker.record(ticket, Err(&abandoned));
        }
    }
}

fn retryable(e: &Error) -> bool {
    crate::breaker::counts_against_host(e)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
