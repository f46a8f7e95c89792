//! Receiving events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::connection::Shared;
use crate::error::{CloseReason, Error, Result};
use crate::event::Event;

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Notification {
    Event(Arc<Event>),
    /// This subscriber fell behind and missed this many events; the connection carries on.
    Lagged(u64),
    /// The connection ended; this is the last notification before the end.
    Disconnected(CloseReason),
}

/// A stream of the connection's events from the moment of subscribing. Each subscriber has its
/// own bounded queue: a slow one loses the oldest events (and is told), it never stalls the
/// connection or other subscribers.
pub struct Subscription {
    shared: Arc<Shared>,
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    finished: bool,
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>) -> Subscription {
        let rx = shared.subscribe();
        Subscription {
            shared,
            rx,
            finished: false,
        }
    }

    /// The next notification; `None` after `Disconnected` has been delivered.
    pub async fn recv(&mut self) -> Option<Notification> {
        if self.finished {
            return None;
        }
        if let Some(rx) = &mut self.rx {
            match rx.recv().await {
                Ok(event) => return Some(Notification::Event(event)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(Notification::Lagged(n));
                }
                Err(broadcast::error::RecvError::Closed) => {}
            }
        }
        self.finished = true;
        self.rx = None;
        let reason = self
            .shared
            .close_reason()
            .unwrap_or(CloseReason::ClientClosed);
        Some(Notification::Disconnected(reason))
    }

    /// Waits for the first event that satisfies `matches`. Fails on timeout, when the
    /// connection closes, or when events were lost (the awaited one may be among them).
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Result<Arc<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Err(Error::EventTimeout(timeout)),
                Ok(Some(Notification::Event(event))) => {
                    if matches(&event) {
                        return Ok(event);
                    }
                }
                Ok(Some(Notification::Lagged(n))) => return Err(Error::EventsLost(n)),
                Ok(Some(Notification::Disconnected(reason))) => return Err(Error::Closed(reason)),
                Ok(None) => {
                    let reason = self
                        .shared
                        .close_reason()
                        .unwrap_or(CloseReason::ClientClosed);
                    return Err(Error::Closed(reason));
                }
            }
        }
    }
}
