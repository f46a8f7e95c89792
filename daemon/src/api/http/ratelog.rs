//! Warnings that a flood could repeat thousands of times a second: the first is logged with its
//! details, the rest of each interval become one summary line with a count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One summary line per this at most.
const INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct RateLog {
    what: &'static str,
    state: Mutex<State>,
    /// Lines logged so far.
    lines: AtomicU64,
}

#[derive(Default)]
struct State {
    /// An interval is running: further events are only counted.
    open: bool,
    suppressed: u64,
    last: String,
}

impl RateLog {
    pub fn new(what: &'static str) -> Arc<RateLog> {
        Arc::new(RateLog {
            what,
            state: Mutex::new(State::default()),
            lines: AtomicU64::new(0),
        })
    }

    /// Log `detail` now if no interval is running, else count it for the interval's summary.
    pub fn warn(self: &Arc<Self>, detail: impl std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.open {
            state.suppressed += 1;
            state.last = detail.to_string();
            return;
        }
        state.open = true;
        drop(state);
        self.lines.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "{}: {detail} (further ones are summarised every {}s)",
            self.what,
            INTERVAL.as_secs()
        );
        let this = self.clone();
        tokio::spawn(async move { this.summarise().await });
    }

    /// Each interval: the count of what was suppressed; closes once an interval was quiet.
    async fn summarise(&self) {
        loop {
            tokio::time::sleep(INTERVAL).await;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.suppressed == 0 {
                state.open = false;
                return;
            }
            let (n, last) = (state.suppressed, std::mem::take(&mut state.last));
            state.suppressed = 0;
            drop(state);
            self.lines.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "{}: {n} more in the last {}s (last: {last})",
                self.what,
                INTERVAL.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_then_one_summary_per_interval() {
        let log = RateLog::new("test");
        let lines = || log.lines.load(Ordering::Relaxed);
        for i in 0..100 {
            log.warn(i);
        }
        assert_eq!(lines(), 1);
        // The summary of the 99 comes at the end of the interval, even with nothing after.
        tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(lines(), 2);
        log.warn("again");
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(lines(), 3);
        // A quiet interval closes the window: the next one is logged at once.
        tokio::time::sleep(INTERVAL * 2).await;
        assert_eq!(lines(), 3);
        log.warn("later");
        assert_eq!(lines(), 4);
    }
}
