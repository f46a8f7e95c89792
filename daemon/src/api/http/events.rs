//! `GET /v1/events`: domain events as server-sent events, resumable by sequence number.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::error::ApiError;
use super::limits::StreamSlot;
use super::request::query;
use super::response::Response;
use super::Ctx;
use crate::service::events::DomainEvent;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Feed {
    backlog: VecDeque<Arc<DomainEvent>>,
    live: broadcast::Receiver<Arc<DomainEvent>>,
    shutdown: CancellationToken,
    /// The stream's place under the caps; released when hyper drops the body.
    _slot: StreamSlot,
}

pub fn stream<B>(req: &Request<B>, ctx: &Ctx, caller: &Caller) -> Result<Response, ApiError> {
    // Last-Event-ID (what browsers and curl scripts send on reconnect) wins over ?after=.
    let after = match req.headers().get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event sequence number")
                })?,
        ),
        None => query(req)?
            .get("after")
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("after must be an event sequence number"))
            })
            .transpose()?,
    };
    let slot = ctx.limits.admit_stream(caller)?;
    let (backlog, live) = ctx.service.events().subscribe_after(after);
    let feed = Feed {
        backlog: backlog.into(),
        live,
        shutdown: ctx.shutdown.clone(),
        _slot: slot,
    };
    // A first comment says the subscription is in place (and gets the headers out at once):
    // a client can act after it without missing anything.
    let subscribed = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b": subscribed\n\n")))
    });
    let frames = subscribed.chain(futures_util::stream::unfold(feed, |mut feed| async move {
        let bytes = next_frame(&mut feed).await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(bytes)), feed))
    }));
    let mut r = hyper::Response::new(StreamBody::new(frames).boxed_unsync());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

async fn next_frame(feed: &mut Feed) -> Option<Bytes> {
    if let Some(e) = feed.backlog.pop_front() {
        return Some(encode(&e));
    }
    tokio::select! {
        _ = feed.shutdown.cancelled() => None,
        received = feed.live.recv() => match received {
            Ok(e) => Some(encode(&e)),
            // The client fell behind: tell it, so it can reconnect with Last-Event-ID.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Some(Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        },
        _ = tokio::time::sleep(KEEP_ALIVE) => Some(Bytes::from_static(b": keep-alive\n\n")),
    }
}

fn encode(e: &DomainEvent) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    let kind = serde_json::to_value(e)
        .ok()
        .and_then(|v| v.get("event").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned());
    Bytes::from(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", e.seq))
}
