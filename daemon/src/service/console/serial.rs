//! One guest's serial console: the pump that reads QEMU's console socket into the ring, the
//! log file and the viewers' queues, and writes the writer's keystrokes back.
//!
//! Nothing a client does can slow the pump: each viewer has a bounded queue, and a viewer
//! whose queue is full is dropped (told why) rather than waited for. QEMU serves the socket
//! with `server=on,wait=off`: with no client connected (the daemon down) it discards output,
//! never blocking the guest.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::ring::Ring;
use crate::service::domain::Live;
use crate::service::Inner;

/// Recent output kept per guest.
pub const RING_BYTES: usize = 1 << 20;
/// Bytes a viewer may have waiting (not yet taken by its connection) before it is dropped as
/// too slow. Counted in bytes, not chunks: a batch is anything from one byte to a buffer
/// full, so a count of chunks bounds nothing.
pub const VIEWER_BYTES: usize = 1 << 20;
/// Keystrokes queued towards the guest.
const INPUT_QUEUE: usize = 64;
/// One read from the chardev takes at most this.
const READ_BUF: usize = 64 * 1024;
/// Output leaves the pump (to the ring, every viewer and the log) at most this long after
/// its first byte arrived, unless a buffer's worth piled up: the emulated UART writes the
/// socket a byte (or a FIFO's worth) at a time, so a guest printing steadily would otherwise
/// cost a wake-up and a websocket frame per viewer (and a file write) for every few bytes,
/// and a line delivered in several bursts would leave in several batches. The pump batches
/// once for all viewers: each batch is one shared buffer that every viewer's queue holds a
/// reference to (no copy per viewer), and each viewer wakes once per batch. The echo of a
/// keystroke (and what follows within `ECHO`) goes out at once. The pump itself reads as
/// soon as anything arrives: QEMU's socket holds only a few hundred bytes written one at a
/// time, so waiting there would slow the guest.
pub const BATCH: Duration = Duration::from_millis(10);
/// After a keystroke, output is not batched for this long (its echo, the command's answer).
const ECHO: Duration = Duration::from_millis(100);
/// This much waiting leaves without waiting for `BATCH`.
const BATCH_BYTES: usize = 64 * 1024;
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
    /// When keystrokes were last written to the guest (ns after `born`, 0: never): for
    /// `ECHO` after that, viewers send what they have at once, so the echo of typing is
    /// never held back by batching.
    typed: AtomicU64,
    born: tokio::time::Instant,
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
    feed: Arc<Feed>,
}

/// One viewer's queue: the batches it has not taken yet (each shared with every other
/// viewer, not copied), and why it ended.
/// What a queued batch costs a viewer's budget at the least (its handle and queue slot).
const ENTRY_COST: usize = 64;

#[derive(Default)]
struct Feed {
    state: Mutex<FeedState>,
    wake: Notify,
}

#[derive(Default)]
struct FeedState {
    queue: VecDeque<Bytes>,
    /// Bytes charged for `queue` (each entry at least `ENTRY_COST`).
    bytes: usize,
    ended: Option<Ended>,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `batch` (a reference, not a copy), unless that would put more than
    /// `VIEWER_BYTES` in waiting.
    fn push(&self, batch: &Bytes) -> bool {
        let mut f = self.lock();
        // Each entry is charged at least ENTRY_COST: while someone types, every UART read is
        // its own batch, and a stalled viewer must not hold a million one-byte handles.
        let cost = batch.len().max(ENTRY_COST);
        if f.bytes + cost > VIEWER_BYTES {
            return false;
        }
        f.bytes += cost;
        f.queue.push_back(batch.clone());
        drop(f);
        self.wake.notify_one();
        true
    }

    fn end(&self, why: Ended) {
        self.lock().ended.get_or_insert(why);
        self.wake.notify_one();
    }
}

/// A client's place on the console: history first, then live output, from `recv`.
pub struct Viewer {
    pub id: u64,
    pub history: Vec<u8>,
    feed: Arc<Feed>,
    console: Arc<Console>,
}

impl Viewer {
    /// Everything output since the last call (waiting for some: the pump batches, so a
    /// viewer that keeps up takes one batch per wake-up, the very buffer every other viewer
    /// takes), or why the feed ended once what was queued before the end has been taken.
    /// Cancel-safe: output stays queued until it is returned.
    pub async fn recv(&mut self) -> Result<Bytes, Ended> {
        loop {
            {
                let mut f = self.feed.lock();
                if let Some(first) = f.queue.pop_front() {
                    let out = if f.queue.is_empty() {
                        first
                    } else {
                        // Behind by several batches: they leave as one message.
                        let mut all = BytesMut::with_capacity(f.bytes);
                        all.extend_from_slice(&first);
                        for b in f.queue.drain(..) {
                            all.extend_from_slice(&b);
                        }
                        all.freeze()
                    };
                    f.bytes = 0;
                    return Ok(out);
                } else if let Some(why) = f.ended {
                    return Err(why);
                }
            }
            // A push or end between the check and here left a permit: no wake-up is lost.
            self.feed.wake.notified().await;
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
            typed: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
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
        let feed = Arc::new(Feed::default());
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        if mode == Mode::Writer {
            if let Some(old) = s.writer.replace(id) {
                end(&mut s.viewers, old, Ended::TakenOver);
            }
        }
        if s.closed {
            feed.end(Ended::Gone);
        } else {
            s.viewers.push(Slot {
                id,
                feed: feed.clone(),
            });
        }
        Viewer {
            id,
            history: s.ring.snapshot(),
            feed,
            console: self.clone(),
        }
    }

    /// A batch of output from the guest: into the ring and every viewer's queue (the same
    /// buffer for all); a viewer whose queue is full is dropped.
    fn publish(&self, batch: &Bytes) {
        let mut s = self.lock();
        s.ring.push(batch);
        let mut slow = Vec::new();
        for v in &s.viewers {
            if !v.feed.push(batch) {
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

    /// Keystrokes were just written to the guest.
    fn note_typed(&self) {
        let ns = self.born.elapsed().as_nanos() as u64 + 1;
        self.typed.store(ns, Ordering::Relaxed);
    }

    /// Whether keystrokes were written to the guest within `ECHO` before `now`.
    fn typed_lately(&self, now: tokio::time::Instant) -> bool {
        let at = self.typed.load(Ordering::Relaxed);
        at != 0 && now.duration_since(self.born).as_nanos() as u64 <= at + ECHO.as_nanos() as u64
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
        viewers.swap_remove(i).feed.end(why);
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

/// Output read from the chardev and not yet handed on, and when it is due.
struct Batcher {
    pending: BytesMut,
    /// When what is pending must leave (`BATCH` after its first byte).
    due: Option<Instant>,
}

impl Batcher {
    fn new() -> Batcher {
        Batcher {
            pending: BytesMut::new(),
            due: None,
        }
    }

    /// Makes room for the next read, without moving what is pending.
    fn reserve(&mut self) {
        if self.pending.capacity() - self.pending.len() < 4096 {
            self.pending.reserve(READ_BUF);
        }
    }

    /// After a read: the batch if it leaves now (a buffer full, or while keystrokes' echoes
    /// are due), else `None` and `due` says when.
    fn after_read(&mut self, now: Instant, typed_lately: bool) -> Option<Bytes> {
        if typed_lately || self.pending.len() >= BATCH_BYTES {
            return Some(self.take());
        }
        self.due.get_or_insert(now + BATCH);
        None
    }

    fn take(&mut self) -> Bytes {
        self.due = None;
        self.pending.split().freeze()
    }
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
                console.note_typed();
            }
        })
    };
    let mut batcher = Batcher::new();
    loop {
        batcher.reserve();
        let due = batcher.due;
        let batch = tokio::select! {
            n = rd.read_buf(&mut batcher.pending) => {
                match n {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = Instant::now();
                batcher.after_read(now, console.typed_lately(now))
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                Some(batcher.take())
            }
        };
        if let Some(batch) = batch {
            hand_on(console, log, batch).await;
        }
    }
    if !batcher.pending.is_empty() {
        let batch = batcher.take();
        hand_on(console, log, batch).await;
    }
    input.abort();
    let _ = input.await;
}

/// One batch to the ring, the viewers and the log file.
async fn hand_on(console: &Console, log: &mut Option<tokio::fs::File>, batch: Bytes) {
    console.publish(&batch);
    write_log(console, log, &batch).await;
}

/// Appends a batch to the serial log (a failed write ends logging: said once).
async fn write_log(console: &Console, log: &mut Option<tokio::fs::File>, batch: &[u8]) {
    if let Some(f) = log {
        if let Err(e) = f.write_all(batch).await {
            tracing::warn!(domain = %console.name(), error = %e, "serial log write failed; no longer logging");
            *log = None;
        }
    }
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

    #[tokio::test(start_paused = true)]
    async fn a_viewer_that_stops_reading_is_dropped_and_the_others_go_on() {
        let console = Arc::new(Console::new("vm"));
        console.publish(&Bytes::from_static(b"before"));
        let mut slow = console.join(Mode::Viewer);
        let mut fast = console.join(Mode::Writer);
        assert_eq!(slow.history, b"before");
        // 1 KiB chunks: the slow viewer holds VIEWER_BYTES of them, the next one drops it.
        let chunk = |i: usize| Bytes::from(format!("{i:>1023};"));
        let fits = VIEWER_BYTES / 1024;
        for i in 0..fits * 2 {
            console.publish(&chunk(i));
            // The fast viewer keeps up.
            assert_eq!(fast.recv().await.unwrap(), chunk(i));
            let dropped = console.dropped_viewers.load(Ordering::Relaxed);
            assert_eq!(dropped, u64::from(i >= fits), "after chunk {i}");
        }
        // The slow one gets what was queued (all of it in one piece), then learns why its
        // feed ended.
        let queued = slow.recv().await.unwrap();
        assert_eq!(queued.len(), VIEWER_BYTES);
        assert!(queued.ends_with(&chunk(fits - 1)));
        assert_eq!(slow.recv().await, Err(Ended::TooSlow));
        assert!(fast.is_writer());
        assert_eq!(console.viewers(), 1);
        // The ring kept the output regardless.
        assert!(console
            .lock()
            .ring
            .snapshot()
            .ends_with(&chunk(fits * 2 - 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pump_batches_steady_output_once_for_all_viewers_but_not_an_echo() {
        let console = Arc::new(Console::new("vm"));
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let pumping = {
            let console = console.clone();
            tokio::spawn(async move { pump(&console, ours, &mut None).await })
        };
        let mut a = console.join(Mode::Viewer);
        let mut b = console.join(Mode::Writer);
        // Output is held for BATCH from its first byte, then leaves as one buffer, the very
        // same one to both viewers.
        guest.write_all(b"hello").await.unwrap();
        let t = Instant::now();
        let (x, y) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert_eq!(x, &b"hello"[..]);
        assert_eq!(t.elapsed(), BATCH);
        assert_eq!(x.as_ptr(), y.as_ptr(), "each viewer got its own copy");
        // Bytes arriving one at a time (as the UART writes them) leave as one batch, BATCH
        // after the first of them, again shared.
        let t = Instant::now();
        for c in b"more" {
            guest.write_all(&[*c]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (x, y) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert_eq!(x, &b"more"[..]);
        assert_eq!(t.elapsed(), BATCH);
        assert_eq!(x.as_ptr(), y.as_ptr());
        // A keystroke reached the guest: its echo is not held back.
        assert!(b.input(Bytes::from_static(b"k")).await);
        let mut typed = [0u8; 1];
        guest.read_exact(&mut typed).await.unwrap();
        assert_eq!(&typed, b"k");
        guest.write_all(b"k").await.unwrap();
        let t = Instant::now();
        assert_eq!(a.recv().await.unwrap(), &b"k"[..]);
        assert_eq!(t.elapsed(), Duration::ZERO);
        // The ring has it all, in order.
        assert_eq!(console.lock().ring.snapshot(), b"hellomorek");
        drop(guest);
        pumping.await.unwrap();
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
