//! The errors a QMP client can return.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::qapi::ErrorClass;

/// An error QEMU returned for a command (`{"error": {"class": ..., "desc": ...}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.desc)
    }
}

/// Why a connection ended. Every command pending at that moment, and every later one, fails with
/// [`Error::Closed`] carrying this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the socket (QEMU exited or closed the monitor).
    PeerClosed,
    /// This side closed the connection (the last `Client` handle was dropped, or `close()`).
    ClientClosed,
    /// Reading or writing the socket failed.
    Io(String),
    /// The peer broke the protocol (a line that is not a JSON object, a line over the size
    /// bound). We cannot know which reply was lost, so the connection is not trusted further.
    Protocol(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the peer closed the connection"),
            CloseReason::ClientClosed => f.write_str("the client closed the connection"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol violation by the peer: {e}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("bad QMP greeting: {0}")]
    Greeting(String),
    #[error("QMP command {command} failed: {error}")]
    Qmp { command: String, error: QmpError },
    #[error("QMP command {command} got no reply within {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("QMP connection closed: {0}")]
    Closed(CloseReason),
    #[error("cannot decode the reply to QMP command {command}: {source}")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the arguments of QMP command {command}: {source}")]
    Encode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("out-of-band execution of {0} needs the 'oob' capability, which was not negotiated")]
    OobNotNegotiated(String),
    #[error("cannot pass a file descriptor: {0}")]
    FdPassing(#[source] io::Error),
    #[error("no matching QMP event within {0:?}")]
    EventTimeout(Duration),
    #[error("{0} QMP events were dropped because this subscriber fell behind")]
    EventsLost(u64),
}

impl Error {
    /// True when the connection is gone and a new one is needed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
