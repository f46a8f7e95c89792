//! The client side of `GET /v1/events`: SSE frames off the wire, decoded into [`Event`]s.

use std::collections::VecDeque;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::sse::{SseError, SseFrame, SseParser};
use super::{ClientError, Event};

/// Events are a few hundred bytes; these bounds only stop a runaway peer.
const MAX_LINE: usize = 1 << 20;
const MAX_EVENT: usize = 1 << 20;

/// An open event stream. Read it with [`EventStream::next`]; dropping it closes the
/// connection.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    parser: SseParser,
    ready: VecDeque<SseFrame>,
    last_seq: Option<u64>,
}

impl EventStream {
    pub(crate) fn new(body: Incoming) -> EventStream {
        EventStream {
            body,
            parser: SseParser::new(MAX_LINE, MAX_EVENT),
            ready: VecDeque::new(),
            last_seq: None,
        }
    }

    /// The next event; `Ok(None)` when the daemon closed the stream (it stopped, say).
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                let event = decode_frame(&frame)?;
                self.last_seq = Some(event.seq);
                return Ok(Some(event));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            if let Ok(data) = frame?.into_data() {
                let frames = self.parser.push(&data).map_err(|e| match e {
                    SseError::LineTooLong(limit) | SseError::FrameTooLarge(limit) => {
                        ClientError::TooLarge { limit }
                    }
                    SseError::NotUtf8 => ClientError::Protocol(e.to_string()),
                })?;
                self.ready.extend(frames);
            }
        }
    }

    /// The sequence number of the last event returned: pass it as `after` to resume.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }
}

fn decode_frame(frame: &SseFrame) -> Result<Event, ClientError> {
    serde_json::from_str(&frame.data)
        .map_err(|e| ClientError::Protocol(format!("bad event data: {e}")))
}
