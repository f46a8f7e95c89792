//! A circuit breaker per remote host.
//!
//! `Closed` counts consecutive failures; at the threshold it opens. `Open` refuses calls until
//! its cool-down ends; the first call after that is let through as the single probe
//! (`HalfOpen`); the probe's outcome closes the breaker or opens it again. Only failures of the
//! host itself count (unreachable, timed out): a vendor saying "wrong power state" is a healthy
//! host answering.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use novacron_domain::{Error, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a probe is allowed.
    pub open_for: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Permission to make one call; hand it back with [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    probe: bool,
}

#[derive(Debug)]
pub struct Breaker {
    options: BreakerOptions,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket to call the host, or how long until it may be tried again.
    pub fn admit(&self) -> Result<Ticket, Duration> {
        self.admit_at(Instant::now())
    }

    /// [`Breaker::admit`] as of `now` (tests step past the open period without sleeping).
    fn admit_at(&self, now: Instant) -> Result<Ticket, Duration> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Ticket { probe: false }),
            State::Open { until } => {
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(Ticket { probe: true })
                } else {
                    Err(until - now)
                }
            }
            // One probe at a time; everyone else waits for its verdict.
            State::HalfOpen => Err(Duration::ZERO),
        }
    }

    /// The outcome of the call `ticket` admitted.
    pub fn record(&self, ticket: Ticket, outcome: Result<(), &Error>) {
        let failed = matches!(outcome, Err(e) if counts_against_host(e));
        let mut state = self.lock();
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::HalfOpen, true) if ticket.probe => self.open(),
            (State::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.options.failure_threshold {
                    self.open()
                } else {
                    State::Closed { failures }
                }
            }
            // A late failure from before the breaker opened changes nothing.
            (other, true) => other,
        };
    }

    /// A ticket whose call was abandoned by its caller: nothing is counted, and an abandoned
    /// probe lets the next caller probe at once.
    pub fn abandon(&self, ticket: Ticket) {
        if ticket.probe {
            let mut state = self.lock();
            if *state == State::HalfOpen {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }

    fn open(&self) -> State {
        let now = Instant::now();
        State::Open {
            // A configured period too long to add saturates at a year: open "for good".
            until: now
                .checked_add(self.options.open_for)
                .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
                .unwrap_or(now),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// Whether an error says the host is unwell (rather than the request being refused).
pub fn counts_against_host(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Remote
    ) && !matches!(e, Error::Vendor { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Error {
        Error::Unavailable {
            host: "h".into(),
            reason: "refused".into(),
        }
    }

    /// The open period of these tests: far longer than any test runs, so "still open" never
    /// depends on the machine's speed; "after it" is asked as of a later instant instead.
    const OPEN_FOR: Duration = Duration::from_secs(600);

    fn after_open() -> Instant {
        Instant::now() + OPEN_FOR + Duration::from_secs(1)
    }

    #[test]
    fn opens_after_threshold_then_probes_once_and_closes() {
        let b = Breaker::new(BreakerOptions {
            failure_threshold: 2,
            open_for: OPEN_FOR,
        });
        let t = b.admit().unwrap();
        b.record(t, Err(&down()));
        assert_eq!(b.state(), BreakerState::Closed);
        let t = b.admit().unwrap();
        b.record(t, Err(&down()));
        assert_eq!(b.state(), BreakerState::Open);
        let retry_in = b.admit().unwrap_err();
        assert!(
            retry_in > OPEN_FOR - Duration::from_secs(60),
            "{retry_in:?}"
        );
        assert_eq!(b.state_at(after_open()), BreakerState::HalfOpen);
        let probe = b.admit_at(after_open()).unwrap();
        assert!(probe.probe);
        assert_eq!(
            b.admit_at(after_open()).unwrap_err(),
            Duration::ZERO,
            "a second call while the probe runs is refused"
        );
        b.record(probe, Ok(()));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.admit().unwrap().probe);
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            open_for: OPEN_FOR,
        });
        let t = b.admit().unwrap();
        b.record(t, Err(&down()));
        let probe = b.admit_at(after_open()).unwrap();
        assert!(probe.probe);
        b.record(probe, Err(&down()));
        assert_eq!(b.state(), BreakerState::Open);
        // Open again for a whole new period, counted from the failed probe.
        let retry_in = b.admit().unwrap_err();
        assert!(
            retry_in > OPEN_FOR - Duration::from_secs(60),
            "{retry_in:?}"
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe_and_counts_nothing() {
        let b = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            open_for: OPEN_FOR,
        });
        let t = b.admit().unwrap();
        b.record(t, Err(&down()));
        let probe = b.admit_at(after_open()).unwrap();
        b.abandon(probe);
        let probe = b.admit().expect("the next caller probes");
        b.record(probe, Ok(()));
        assert_eq!(b.state(), BreakerState::Closed);
        let t = b.admit().unwrap();
        b.abandon(t);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_huge_open_period_does_not_panic() {
        let b = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            open_for: Duration::MAX,
        });
        let t = b.admit().unwrap();
        b.record(t, Err(&down()));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn vendor_refusals_do_not_count() {
        let b = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            open_for: Duration::from_secs(60),
        });
        let refusal = Error::Vendor {
            host: "h".into(),
            code: ErrorCode::WrongState,
            fault: "InvalidPowerState".into(),
            message: "powered off".into(),
        };
        let t = b.admit().unwrap();
        b.record(t, Err(&refusal));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
