//! One endpoint's delivery: the head of its queue POSTed until it is taken (2xx), with
//! exponential backoff between failures, so events arrive in order.

use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use sha2::Sha256;

use super::Endpoint;
use crate::http_client::Target;
use crate::service::events::now_unix_ms;

/// One attempt, connection and answer included; a hanging endpoint costs this, no more.
const ATTEMPT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const SIGNATURE_HEADER: &str = "x-novacron-signature";

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC key of any size");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

pub(super) fn spawn(endpoint: Weak<Endpoint>) {
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let Some(e) = endpoint.upgrade() else { return };
            let head = e
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .front()
                .cloned();
            let Some(body) = head else {
                // `notify_one` keeps a permit for a push that came before this wait; the
                // timeout re-checks now and then whether the endpoint is gone.
                let _ = tokio::time::timeout(Duration::from_secs(5), e.wake.notified()).await;
                continue;
            };
            match post(&e, body.clone()).await {
                Ok(()) => {
                    let mut q = e.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    // Unless the queue overflowed meanwhile and dropped it already.
                    if q.front().is_some_and(|f| f.as_ptr() == body.as_ptr()) {
                        q.pop_front();
                    }
                    drop(q);
                    e.delivered.fetch_add(1, Ordering::Relaxed);
                    e.last
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .success_unix_ms = Some(now_unix_ms());
                    backoff = FIRST_BACKOFF;
                }
                Err(why) => {
                    e.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(url = %e.config.url, error = %why, "webhook delivery failed; will retry");
                    {
                        let mut last = e.last.lock().unwrap_or_else(PoisonError::into_inner);
                        last.error = Some(why);
                        last.error_unix_ms = Some(now_unix_ms());
                    }
                    drop(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
}

async fn post(e: &Endpoint, body: Bytes) -> Result<(), String> {
    let target = Target::from_url(&e.config.url).map_err(|e| e.to_string())?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(match target.path("") {
            p if p.is_empty() => "/".to_owned(),
            p => p,
        })
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    let host = HeaderValue::from_str(&target.authority()).map_err(|e| e.to_string())?;
    h.insert(HOST, host);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(USER_AGENT, HeaderValue::from_static("novacrond-webhook"));
    let sig = HeaderValue::from_str(&signature(e.config.secret.as_bytes(), &body))
        .map_err(|e| e.to_string())?;
    h.insert(SIGNATURE_HEADER, sig);
    let answer = tokio::time::timeout(ATTEMPT, target.send(req))
        .await
        .map_err(|_| format!("no answer within {ATTEMPT:?}"))?
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
