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

    /// An idempotent read: one breaker ticket for the whole read, retried on host failures,
    /// bounded by the host's read time limit as a whole.
    async fn read<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let attempts = async {
            let mut backoff = READ_RETRY_BACKOFF.iter();
            loop {
                let result = call().await;
                match (&result, backoff.next()) {
                    (Err(e), Some(pause)) if retryable(e) => tokio::time::sleep(*pause).await,
                    _ => return result,
                }
            }
        };
        self.guarded(operation, self.config.timeouts.read, attempts)
            .await
    }

    /// A lifecycle call: never retried (it may have happened), refused unless the breaker is
    /// closed (a half-open host is probed by reads only), bounded by the operation limit.
    async fn mutate<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if self.breaker.state() != BreakerState::Closed {
            return Err(Error::Unavailable {
                host: self.config.name.clone(),
                reason: format!(
                    "read-only while its circuit breaker is not closed; {operation} refused"
                ),
            });
        }
        self.guarded(operation, self.config.timeouts.operation, call)
            .await
    }

    /// One logical call through the breaker, bounded by `limit`. Its outcome, a time-out
    /// included, is what the breaker counts; a caller that goes away (its future dropped)
    /// counts as nothing.
    async fn guarded<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
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
        let mut guard = TicketGuard {
            breaker: &self.breaker,
            ticket: Some(ticket),
        };
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation,
                after: limit,
            }),
        };
        if let Some(ticket) = guard.ticket.take() {
            self.breaker.record(ticket, result.as_ref().map(|_| ()));
        }
        if let Err(e) = &result {
            if crate::breaker::counts_against_host(e) {
                *lock(&self.last_error) = Some(format!("{operation}: {e}"));
            }
        }
        result
    }
}

/// Hands an abandoned call's ticket back: a caller hanging up says nothing about the host.
struct TicketGuard<'a> {
    breaker: &'a Breaker,
    ticket: Option<crate::breaker::Ticket>,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.abandon(ticket);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use novacron_domain::{DomainState, ValidatedDomain};

    use super::*;
    use crate::breaker::BreakerOptions;
    use crate::config::{Credentials, Secret, Timeouts};

    /// A host that is down for its first `down_for` list calls (or hangs when `hang`).
    struct Flaky {
        calls: AtomicUsize,
        down_for: usize,
        hang: bool,
    }

    #[async_trait]
    impl Driver for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn capabilities(&self) -> Result<Capabilities, Error> {
            Err(self.unsupported("capabilities"))
        }
        async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if n < self.down_for {
                return Err(Error::Unavailable {
                    host: "h".into(),
                    reason: "refused".into(),
                });
            }
            Ok(vec![DomainSummary {
                name: "vm".into(),
                uuid: None,
                state: DomainState::Running,
            }])
        }
        async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
            Err(Error::not_found(novacron_domain::Kind::Domain, name))
        }
        async fn define(&self, _: ValidatedDomain) -> Result<DomainSummary, Error> {
            Err(self.unsupported("define"))
        }
        async fn undefine(&self, _: &str) -> Result<(), Error> {
            Err(self.unsupported("undefine"))
        }
        async fn start(&self, _: &str) -> Result<(), Error> {
            Ok(())
        }
        async fn shutdown(&self, _: &str, _: Duration) -> Result<(), Error> {
            Ok(())
        }
        async fn destroy(&self, _: &str) -> Result<(), Error> {
            Ok(())
        }
    }

    fn host(driver: Flaky, read: Duration) -> RemoteHost {
        let mut config = HostConfig::new(
            "h",
            DriverKind::Xapi,
            "https://h.invalid".parse().unwrap(),
            Credentials::Password {
                user: "u".into(),
                password: Secret::new("p"),
            },
        );
        config.timeouts = Timeouts {
            read,
            ..Timeouts::default()
        };
        config.breaker = BreakerOptions {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
        };
        RemoteHost::new(config, Arc::new(driver))
    }

    #[tokio::test]
    async fn a_read_with_retries_counts_once_against_the_host() {
        let h = host(
            Flaky {
                calls: AtomicUsize::new(0),
                down_for: usize::MAX,
                hang: false,
            },
            Duration::from_secs(5),
        );
        match h.inventory().await {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Unavailable { host: "h", reason: "refused" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        assert_eq!(
            h.status().breaker,
            BreakerState::Closed,
            "three attempts, one failure"
        );
        match h.inventory().await {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Unavailable { host: "h", reason: "refused" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        assert_eq!(h.status().breaker, BreakerState::Open);
        // Open: mutations are refused without reaching the driver.
        let e = h.start("vm").await.unwrap_err();
        assert_eq!(e.code(), novacron_domain::ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_is_not_a_host_failure() {
        let h = host(
            Flaky {
                calls: AtomicUsize::new(0),
                down_for: 0,
                hang: true,
            },
            Duration::from_secs(30),
        );
        for _ in 0..3 {
            let _ = tokio::time::timeout(Duration::from_millis(20), h.inventory()).await;
        }
        assert_eq!(h.status().breaker, BreakerState::Closed);
    }

    #[tokio::test]
    async fn the_time_limit_counts_and_the_last_inventory_is_served_stale() {
        let flaky = Flaky {
            calls: AtomicUsize::new(0),
            down_for: 0,
            hang: false,
        };
        let h = host(flaky, Duration::from_millis(50));
        assert!(h.inventory().await.unwrap().stale.is_none());
        let hanging = host(
            Flaky {
                calls: AtomicUsize::new(0),
                down_for: 0,
                hang: true,
            },
            Duration::from_millis(50),
        );
        let e = hanging.inventory().await.unwrap_err();
        assert_eq!(e.code(), novacron_domain::ErrorCode::Timeout);
        assert!(hanging.status().last_error.is_some());
    }
}
