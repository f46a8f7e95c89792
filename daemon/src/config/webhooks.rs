//! `[[webhooks]]` in the configuration: endpoints that receive the daemon's events as signed
//! JSON POSTs (issue 20 item 5).

#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed: `http://` or `https://` (public roots), no query.
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Novacron-Signature: sha256=<hex>` header.
    pub secret: String,
    /// Event names to send (`state_changed`, `defined`, `remote_state_changed`...); empty:
    /// every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Events held for a slow or dead endpoint; past it the oldest are dropped (counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

// The secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("queue", &self.queue)
            .finish()
    }
}

fn default_queue() -> usize {
    1024
}

impl WebhookConfig {
    /// Semantic checks: the key and why.
    pub fn check(list: &[WebhookConfig]) -> Result<(), (&'static str, String)> {
        for w in list {
            let scheme_ok = w.url.starts_with("http://") || w.url.starts_with("https://");
            if !scheme_ok || w.url.contains('?') {
                return Err((
                    "webhooks.url",
                    format!(
                        "{:?}: must be an http:// or https:// URL without a query",
                        w.url
                    ),
                ));
            }
            if w.secret.len() < 16 {
                return Err((
                    "webhooks.secret",
                    format!("{:?}: at least 16 characters", w.url),
                ));
            }
            if !(1..=1_000_000).contains(&w.queue) {
                return Err(("webhooks.queue", format!("{:?}: 1..=1000000", w.url)));
            }
        }
        Ok(())
    }
}
