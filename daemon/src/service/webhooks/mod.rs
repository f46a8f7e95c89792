//! Webhooks (issue 20 item 5): every event on the bus that an endpoint's filter takes is
//! POSTed to it as JSON, signed (`X-Novacron-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`), in order, retried with exponential backoff. Each endpoint has its own bounded
//! queue and delivery task: a dead or hanging endpoint only fills its own queue (the oldest
//! events are dropped and counted), never slowing the bus, the daemon or a start.

mod deliver;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, Notify};

use super::events::DomainEvent;
use crate::config::webhooks::WebhookConfig;

/// One configured endpoint: its queue and how delivery goes.
pub struct Endpoint {
    config: WebhookConfig,
    queue: Mutex<VecDeque<Bytes>>,
    wake: Notify,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Default, Clone)]
struct Last {
    success_unix_ms: Option<u64>,
    error: Option<String>,
    error_unix_ms: Option<u64>,
}

/// An endpoint's delivery status (`GET /v1/webhooks`).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    pub url: String,
    /// The event filter (empty: every event).
    pub events: Vec<String>,
    /// Events waiting (the one being retried included).
    pub queued: usize,
    /// Events dropped because the queue was full (the oldest go first).
    pub dropped: u64,
    pub delivered: u64,
    /// Failed attempts (each retry counts).
    pub failed_attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_unix_ms: Option<u64>,
}

#[derive(Default)]
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
}

impl Webhooks {
    /// The endpoints of the configuration, with their delivery tasks and the task that
    /// fans events out from `events` (subscribed before anything is published).
    pub fn start(
        config: &[WebhookConfig],
        events: broadcast::Receiver<Arc<DomainEvent>>,
    ) -> Webhooks {
        let endpoints: Vec<Arc<Endpoint>> = config
            .iter()
            .map(|c| {
                Arc::new(Endpoint {
                    config: c.clone(),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    dropped: AtomicU64::new(0),
                    delivered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    last: Mutex::new(Last::default()),
                })
            })
            .collect();
        if !endpoints.is_empty() {
            for e in &endpoints {
                deliver::spawn(Arc::downgrade(e));
            }
            spawn_fan_out(endpoints.clone(), events);
        }
        Webhooks { endpoints }
    }

    pub fn status(&self) -> Vec<WebhookStatus> {
        self.endpoints.iter().map(|e| e.status()).collect()
    }
}

impl Endpoint {
    fn wants(&self, event: &str) -> bool {
        self.config.events.is_empty() || self.config.events.iter().any(|e| e == event)
    }

    /// Queues one event; a full queue drops its oldest. Never waits.
    fn push(&self, body: Bytes) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= self.config.queue {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(body);
        drop(q);
        self.wake.notify_one();
    }

    fn status(&self) -> WebhookStatus {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        WebhookStatus {
            url: self.config.url.clone(),
            events: self.config.events.clone(),
            queued: self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            dropped: self.dropped.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed.load(Ordering::Relaxed),
            last_success_unix_ms: last.success_unix_ms,
            last_error: last.error,
            last_error_unix_ms: last.error_unix_ms,
        }
    }
}

/// The event's name as its JSON says (`"event": "state_changed"`).
fn event_name(json: &serde_json::Value) -> &str {
    json["event"].as_str().unwrap_or_default()
}

fn spawn_fan_out(endpoints: Vec<Arc<Endpoint>>, mut events: broadcast::Receiver<Arc<DomainEvent>>) {
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                // The bus outran even this task: those events are lost to every endpoint.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    for e in &endpoints {
                        e.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Ok(json) = serde_json::to_value(&*event) else {
                continue;
            };
            let name = event_name(&json);
            let Ok(body) = serde_json::to_vec(&json) else {
                continue;
            };
            let body = Bytes::from(body);
            for e in endpoints.iter().filter(|e| e.wants(name)) {
                e.push(body.clone());
            }
        }
    });
}

impl super::Service {
    /// Delivery status of every configured webhook endpoint.
    pub fn webhooks(&self) -> Vec<WebhookStatus> {
        self.inner.webhooks.status()
    }
}
