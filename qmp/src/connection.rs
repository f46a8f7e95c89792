//! The connection's moving parts: the pending-reply table, the writer and the reader task.
//!
//! A command is encoded by the caller, registered in the pending table under its id, and
//! written whole: directly by the caller when the socket is idle (no task switch), otherwise
//! queued for the writer task. A partial write is always finished by the writer task before
//! anything else, and callers never await while writing, so a caller that times out or is
//! cancelled cannot leave half a command on the wire. The reader task is the only reader; it
//! completes pending commands by id and fans events out.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use nix::sys::socket::{sendmsg, shutdown, ControlMessage, MsgFlags, Shutdown};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot, Notify};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{LineCodec, LineError};
use crate::error::{CloseReason, QmpError};
use crate::event::Event;
use crate::message::{parse_line, ServerMessage};

pub(crate) type ReplyResult = Result<Box<RawValue>, QmpError>;

/// One encoded command (a whole line) and the descriptors to pass with its first byte.
pub(crate) struct Outgoing {
    pub frame: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// State shared by the client handles, the reader and the writer.
pub(crate) struct Shared {
    pending: Mutex<Pending>,
    write: OwnedWriteHalf,
    queue: Mutex<WriteQueue>,
    /// Wakes the writer task when the queue goes from empty to not empty.
    queued: Notify,
    /// `None` once the connection closed: dropping the sender ends every subscription.
    events: Mutex<Option<broadcast::Sender<Arc<Event>>>>,
    /// Cancelled by the client to stop both tasks.
    pub shutdown: CancellationToken,
    /// Cancelled once the connection is closed, for whoever waits on that.
    pub closed: CancellationToken,
}

/// Invariant: `queue` is non-empty only while `writer_busy`; then only the writer task writes.
#[derive(Default)]
struct WriteQueue {
    queue: VecDeque<Outgoing>,
    writer_busy: bool,
}

#[derive(Default)]
struct Pending {
    replies: HashMap<u64, oneshot::Sender<ReplyResult>>,
    closed: Option<CloseReason>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code holding these locks can panic half-way through an update.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(event_capacity: usize, write: OwnedWriteHalf) -> Arc<Shared> {
        let (tx, _) = broadcast::channel(event_capacity.max(1));
        Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            write,
            queue: Mutex::new(WriteQueue::default()),
            queued: Notify::new(),
            events: Mutex::new(Some(tx)),
            shutdown: CancellationToken::new(),
            closed: CancellationToken::new(),
        })
    }

    /// Registers a caller waiting for reply `id`; fails if the connection is already closed.
    pub fn register(&self, id: u64) -> Result<oneshot::Receiver<ReplyResult>, CloseReason> {
        let mut p = lock(&self.pending);
        if let Some(reason) = &p.closed {
            return Err(reason.clone());
        }
        let (tx, rx) = oneshot::channel();
        p.replies.insert(id, tx);
        Ok(rx)
    }

    /// Sends one whole frame: written at once when the socket is idle and takes it all, else
    /// (the rest) queued for the writer task. Never blocks, never awaits.
    pub fn send(&self, out: Outgoing) -> Result<(), CloseReason> {
        let mut q = lock(&self.queue);
        let rest = if q.writer_busy || !out.fds.is_empty() {
            Some(out)
        } else {
            match self.write.try_write(&out.frame) {
                Ok(n) if n == out.frame.len() => None,
                Ok(n) => Some(Outgoing {
                    frame: out.frame.get(n..).unwrap_or_default().to_vec(),
                    fds: Vec::new(),
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(out),
                Err(e) => {
                    drop(q);
                    let reason = io_close_reason(&e);
                    self.close(reason.clone());
                    return Err(reason);
                }
            }
        };
        if let Some(rest) = rest {
            q.queue.push_back(rest);
            if !q.writer_busy {
                q.writer_busy = true;
                self.queued.notify_one();
            }
        }
        Ok(())
    }

    /// Forgets a caller that stopped waiting (timeout or cancellation). A late reply is dropped.
    pub fn unregister(&self, id: u64) {
        lock(&self.pending).replies.remove(&id);
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.pending).closed.clone()
    }

    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Event>>> {
        lock(&self.events)
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// Marks the connection closed (the first reason wins), fails every pending command and ends
    /// every subscription.
    pub fn close(&self, reason: CloseReason) {
        let drained = {
            let mut p = lock(&self.pending);
            if p.closed.is_some() {
                return;
            }
            tracing::debug!(%reason, pending = p.replies.len(), "QMP connection closed");
            p.closed = Some(reason);
            std::mem::take(&mut p.replies)
        };
        // Dropping the senders wakes every waiter, which then reads the close reason.
        drop(drained);
        lock(&self.events).take();
        // Hang up at once, whoever still holds the socket, so the peer sees the end now.
        let _ = shutdown(self.write.as_ref().as_raw_fd(), Shutdown::Both);
        self.closed.cancel();
        self.shutdown.cancel();
    }

    fn dispatch(&self, msg: ServerMessage) {
        match msg {
            ServerMessage::Reply {
                id: Some(id),
                result,
            } => {
                let waiter = lock(&self.pending).replies.remove(&id);
                match waiter {
                    // The caller may have just given up; then the reply is simply dropped.
                    Some(tx) => drop(tx.send(result)),
                    None => tracing::debug!(id, "QMP reply for no pending command (timed out?)"),
                }
            }
            ServerMessage::Reply { id: None, result } => {
                tracing::warn!(?result, "QMP reply without a usable id ignored");
            }
            ServerMessage::Event(event) => {
                if let Some(tx) = lock(&self.events).as_ref() {
                    // No subscriber is not an error; a slow one lags instead of blocking us.
                    let _ = tx.send(Arc::new(event));
                }
            }
            ServerMessage::Greeting(_) => tracing::warn!("unexpected second QMP greeting ignored"),
            ServerMessage::Unknown => tracing::warn!("QMP message of unknown shape ignored"),
        }
    }
}

fn io_close_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
        _ => CloseReason::Io(e.to_string()),
    }
}

/// Reads lines until the peer closes, the peer breaks the protocol, or the client shuts down.
pub(crate) async fn read_loop(
    shared: Arc<Shared>,
    mut read: OwnedReadHalf,
    mut codec: LineCodec,
    mut buf: BytesMut,
) {
    let reason = 'conn: loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => match parse_line(&line) {
                    Ok(msg) => shared.dispatch(msg),
                    Err(e) => break 'conn CloseReason::Protocol(e.to_string()),
                },
                Ok(None) => break,
                Err(LineError::TooLong { max }) => {
                    break 'conn CloseReason::Protocol(format!("a line exceeds {max} bytes"))
                }
                Err(LineError::Io(e)) => break 'conn io_close_reason(&e),
            }
        }
        buf.reserve(16 * 1024);
        let n = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break CloseReason::ClientClosed,
            n = read.read_buf(&mut buf) => n,
        };
        match n {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::debug!(bytes = buf.len(), "QMP peer closed mid-message");
                }
                break CloseReason::PeerClosed;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break io_close_reason(&e),
        }
    };
    shared.close(reason);
}

/// Writes what callers queued (when the socket was busy), in order, coalesced.
pub(crate) async fn write_loop(shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            _ = shared.queued.notified() => {}
        }
        loop {
            let batch: Vec<Outgoing> = {
                let mut q = lock(&shared.queue);
                if q.queue.is_empty() {
                    q.writer_busy = false;
                    break;
                }
                q.queue.drain(..).collect()
            };
            let written = async {
                for msg in batch {
                    if msg.fds.is_empty() {
                        buf.extend_from_slice(&msg.frame);
                    } else {
                        write_all(&shared.write, &buf).await?;
                        buf.clear();
                        send_with_fds(&shared.write, &msg.frame, &msg.fds).await?;
                    }
                }
                write_all(&shared.write, &buf).await
            };
            let result = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => return,
                r = written => r,
            };
            buf.clear();
            if let Err(e) = result {
                shared.close(io_close_reason(&e));
                return;
            }
        }
    }
}

async fn write_all(write: &OwnedWriteHalf, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        write.writable().await?;
        match write.try_write(bytes) {
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `frame` with `fds` attached (SCM_RIGHTS) to its first bytes, then the rest plainly.
async fn send_with_fds(write: &OwnedWriteHalf, frame: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let stream = write.as_ref();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let cmsgs = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[io::IoSlice::new(frame)],
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    write_all(write, frame.get(sent..).unwrap_or_default()).await
}
