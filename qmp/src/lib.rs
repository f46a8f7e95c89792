//! An async client for the QEMU Machine Protocol (QMP).
//!
//! - Many commands in flight from many tasks on one connection, matched to replies by id.
//! - A timeout on every command (by command, overridable per call); a timed-out command does
//!   not wedge the connection.
//! - Events fanned out to any number of subscribers, typed where the daemon needs them, raw
//!   otherwise; a slow subscriber never stalls the connection.
//! - File descriptor passing (SCM_RIGHTS) for `getfd` / `add-fd`.
//! - The peer is untrusted: bounded line length, no panics on any input, a protocol violation
//!   closes the connection with a reason every pending caller sees.
//!
//! ```no_run
//! # async fn demo() -> Result<(), novacron_qmp::Error> {
//! use novacron_qmp::{commands::QueryStatus, Client};
//! let qmp = Client::connect("/run/novacron/domains/demo.qmp").await?;
//! let status = qmp.execute(&QueryStatus).await?;
//! println!("{} running={}", status.status, status.running);
//! # Ok(()) }
//! ```
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod codec;
pub mod commands;
mod connection;
mod error;
mod event;
mod message;
pub mod qapi;
mod subscription;
mod timeouts;

pub use client::{Client, ClientOptions};
pub use codec::DEFAULT_MAX_LINE;
pub use error::{CloseReason, Error, QmpError, Result};
pub use event::{BlockJobInfo, Event, EventKind, Timestamp, TYPED_EVENTS};
pub use message::{Greeting, QemuVersion, VersionInfo};
pub use subscription::{Notification, Subscription};
pub use timeouts::Timeouts;

/// Entry points for fuzzing the decoder; not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// Feeds `data` through the line framer and the message parser, as the reader task does.
    pub fn decode_stream(data: &[u8], max_line: usize) {
        let mut codec = crate::codec::LineCodec::new(max_line);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(line)) = codec.decode(&mut buf) {
            let _ = crate::message::parse_line(&line);
        }
    }
}
