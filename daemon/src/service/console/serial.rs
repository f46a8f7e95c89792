//! One guest's serial console: the pump that reads QEMU's console socket into the ring, the
//! log file and the viewers' queues, and writes the writer's keystrokes back.
//!
//! Nothing a client does can slow the pump: each viewer has a bounded queue, and a viewer
//! whose queue is full is dropped (told why) rather than waited for. QEMU serves the socket
//! with `server=on,wait=off`: with no client connected (the daemon down) it discards output,
//! never blocking the guest.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::ring::Ring;
use crate::service::domain::Live;
use crate::service::Inner;

/// Recent output kept per guest.
pub const RING_BYTES: usize = 1 << 20;
/// Chunks a viewer may have queued before it is dropped as too slow.
pub const VIEWER_QUEUE: usize = 256;
/// Keystrokes queued towards the guest.
const INPUT_QUEUE: usize = 64;
const READ_CHUNK: usize = 16 * 1024;
/// Between attempts to reach a running guest's console socket.
const RECONNECT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Viewer,
    Writer,
}

/// Why a viewer's feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its queue was full: it did not keep up.
    TooSlow,
    /// Another client took the writer's seat.
    TakenOver,
    /// The guest stopped (or a new run replaced this console).
    Gone,
}

pub struct Console {
    name: String,
    state: Mutex<State>,
    input: mpsc::Sender<Bytes>,
    input_rx: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    /// Whether the pump holds a connection to QEMU now.
    connected: AtomicBool,
    /// Viewers dropped as too slow, since the guest started.
    pub dropped_viewers: AtomicU64,
}

struct State {
    ring: Ring,
    viewers: Vec<Slot>,
    writer: Option<u64>,
    next_id: u64,
    closed: bool,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    ended: Arc<Mutex<Option<Ended>>>,
}

/// A client's place on the console: history first, then live output, from `recv`.
pub struct Viewer {
    pub id: u64,
    pub history: Vec<u8>,
    rx: mpsc::Receiver<Bytes>,
    ended: Arc<Mutex<Option<Ended>>>,
    console: Arc<Console>,
}

impl Viewer {
    /// The next output, or why the feed ended.
    pub async fn recv(&mut self) -> Result<Bytes, Ended> {
        match self.rx.recv().await {
            Some(b) => Ok(b),
            None => Err(self
                .ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or(Ended::Gone)),
        }
    }

    pub fn is_writer(&self) -> bool {
        self.console.lock().writer == Some(self.id)
    }

    /// Sends keystrokes to the guest if this viewer holds the writer's seat (else they are
    /// ignored: `false`). Waits while the guest is not reading, up to a bound.
    pub async fn input(&self, data: Bytes) -> bool {
        if !self.is_writer() {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.console.input.send(data)).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut s = self.console.lock();
        s.viewers.retain(|v| v.id != self.id);
        if s.writer == Some(self.id) {
            s.writer = None;
        }
    }
}

impl Console {
    pub fn new(name: &str) -> Console {
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        Console {
            name: name.to_owned(),
            state: Mutex::new(State {
                ring: Ring::new(RING_BYTES),
                viewers: Vec::new(),
                writer: None,
                next_id: 1,
                closed: false,
            }),
            input,
            input_rx: tokio::sync::Mutex::new(input_rx),
            connected: AtomicBool::new(false),
            dropped_viewers: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Joins the console: the history as it is now, then everything after it, with no gap
    /// and nothing twice (both under one lock). A writer takes the seat from the writer
    /// before it, whose feed ends with `TakenOver`.
    pub fn join(self: &Arc<Self>, mode: Mode) -> Viewer {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let ended = Arc::new(Mutex::new(None));
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        if mode == Mode::Writer {
            if let Some(old) = s.writer.replace(id) {
                end(&mut s.viewers, old, Ended::TakenOver);
            }
        }
        if s.closed {
            *ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ended::Gone);
        } else {
            s.viewers.push(Slot {
                id,
                tx,
                ended: ended.clone(),
            });
        }
        Viewer {
            id,
            history: s.ring.snapshot(),
            rx,
            ended,
            console: self.clone(),
        }
    }

    /// Output from the guest: into the ring and every viewer's queue; a viewer whose queue
    /// is full is dropped.
    fn publish(&self, data: Bytes) {
        let mut s = self.lock();
        s.ring.push(&data);
        let mut slow = Vec::new();
        for v in &s.viewers {
            if let Err(mpsc::error::TrySendError::Full(_)) = v.tx.try_send(data.clone()) {
                slow.push(v.id);
            }
        }
        for id in slow {
            tracing::info!(domain = %self.name, viewer = id, "console viewer too slow; dropped");
            self.dropped_viewers.fetch_add(1, Ordering::Relaxed);
            end(&mut s.viewers, id, Ended::TooSlow);
            if s.writer == Some(id) {
                s.writer = None;
            }
        }
    }

    fn seed(&self, history: &[u8]) {
        self.lock().ring.push(history);
    }

    fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let ids: Vec<u64> = s.viewers.iter().map(|v| v.id).collect();
        for id in ids {
            end(&mut s.viewers, id, Ended::Gone);
        }
    }
}

fn end(viewers: &mut Vec<Slot>, id: u64, why: Ended) {
    if let Some(i) = viewers.iter().position(|v| v.id == id) {
        let v = viewers.swap_remove(i);
        *v.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }
}

/// Whether `live` is still the guest's current run (a stopped or restarted guest ends the
/// pump of the old run).
fn current(inner: &Weak<Inner>, console: &Console, live: &Weak<Live>) -> bool {
    let (Some(inner), Some(live)) = (inner.upgrade(), live.upgrade()) else {
        return false;
    };
    let Ok(h) = inner.handle(console.name()) else {
        return false;
    };
    let run = h.run();
    run.live().is_some_and(|l| Arc::ptr_eq(l, &live))
        && inner
            .consoles
            .get(console.name())
            .is_some_and(|c| std::ptr::eq(&*c, console))
}

/// Runs the console of one guest run until the guest stops.
pub(super) fn spawn_pump(
    inner: Weak<Inner>,
    console: Arc<Console>,
    live: Weak<Live>,
    socket: PathBuf,
    log: PathBuf,
) {
    tokio::spawn(async move {
        // A restarted daemon shows what the last one logged: the tail of the log file.
        let tail = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || read_tail(&log, RING_BYTES as u64))
                .await
                .ok()
                .flatten()
        };
        if let Some(tail) = tail {
            console.seed(&tail);
        }
        let mut log_file = match crate::qemu::logs::open_append_async(log.clone()).await {
            Ok(f) => Some(tokio::fs::File::from_std(f)),
            Err(e) => {
                tracing::warn!(domain = %console.name(), log = %log.display(), error = %e, "cannot open the serial log; the console still works");
                None
            }
        };
        while current(&inner, &console, &live) {
            let stream = match UnixStream::connect(&socket).await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(RECONNECT).await;
                    continue;
                }
            };
            tracing::debug!(domain = %console.name(), "console connected");
            console.connected.store(true, Ordering::Relaxed);
            pump(&console, stream, &mut log_file).await;
            console.connected.store(false, Ordering::Relaxed);
        }
        console.close();
    });
}

/// One connection: output to ring, log and viewers; input from the writer.
async fn pump(console: &Arc<Console>, stream: UnixStream, log: &mut Option<tokio::fs::File>) {
    let (mut rd, mut wr) = stream.into_split();
    // The writer half in its own task: a guest not reading its input never stalls output.
    let input = {
        let console = console.clone();
        tokio::spawn(async move {
            let mut rx = console.input_rx.lock().await;
            while let Some(data) = rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        console.publish(data.clone());
        if let Some(f) = log {
            if let Err(e) = f.write_all(&data).await {
                tracing::warn!(domain = %console.name(), error = %e, "serial log write failed; no longer logging");
                *log = None;
            }
        }
    }
    input.abort();
    let _ = input.await;
}

/// The last `max` bytes of `path`, if it exists.
fn read_tail(path: &std::path::Path, max: u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    f.seek(SeekFrom::Start(meta.len().saturating_sub(max)))
        .ok()?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_viewer_that_stops_reading_is_dropped_and_the_others_go_on() {
        let console = Arc::new(Console::new("vm"));
        console.publish(Bytes::from_static(b"before"));
        let mut slow = console.join(Mode::Viewer);
        let mut fast = console.join(Mode::Writer);
        assert_eq!(slow.history, b"before");
        for i in 0..VIEWER_QUEUE * 2 {
            console.publish(Bytes::from(format!("{i};")));
            // The fast viewer keeps up.
            assert_eq!(fast.recv().await.unwrap(), format!("{i};").as_bytes());
        }
        assert_eq!(console.dropped_viewers.load(Ordering::Relaxed), 1);
        // The slow one gets what was queued, then learns why its feed ended.
        let mut queued = 0;
        let why = loop {
            match slow.recv().await {
                Ok(_) => queued += 1,
                Err(why) => break why,
            }
        };
        assert_eq!((queued, why), (VIEWER_QUEUE, Ended::TooSlow));
        assert!(fast.is_writer());
        assert_eq!(console.viewers(), 1);
        // The ring kept the output regardless.
        assert!(console.lock().ring.snapshot().ends_with(b"511;"));
    }

    #[tokio::test]
    async fn a_new_writer_takes_the_seat() {
        let console = Arc::new(Console::new("vm"));
        let mut first = console.join(Mode::Writer);
        let second = console.join(Mode::Writer);
        assert_eq!(first.recv().await, Err(Ended::TakenOver));
        assert!(second.is_writer() && !first.is_writer());
        assert!(!first.input(Bytes::from_static(b"x")).await);
    }
}
