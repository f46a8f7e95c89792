//! The QMP client handle.

use std::future::Future;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio_util::codec::Decoder;

use crate::codec::{LineCodec, LineError, DEFAULT_MAX_LINE};
use crate::commands::{AddFd, AddFdInfo, Command, GetFd, QmpCapabilities};
use crate::connection::{read_loop, write_loop, Outgoing, Shared};
use crate::error::{CloseReason, Error, Result};
use crate::event::Event;
use crate::message::{parse_line, preview, Greeting, ServerMessage};
use crate::qapi::QmpCapability;
use crate::subscription::Subscription;
use crate::timeouts::Timeouts;

/// How a connection is set up.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timeouts: Timeouts,
    /// The longest line accepted from the peer; a longer one closes the connection.
    pub max_line: usize,
    /// Events buffered per subscriber before the slowest one starts losing them.
    pub event_capacity: usize,
    /// Enable out-of-band execution when the server offers it.
    pub negotiate_oob: bool,
    /// Bound on connecting and on the greeting + capabilities handshake.
    pub handshake_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeouts: Timeouts::default(),
            max_line: DEFAULT_MAX_LINE,
            event_capacity: 1024,
            negotiate_oob: true,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection to one QMP server. Cheap to clone; all clones share the connection, which closes
/// when the last clone is dropped. Commands from any number of tasks are in flight at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    greeting: Greeting,
    oob: bool,
    timeouts: Timeouts,
    next_id: AtomicU64,
    /// Held from sending a command that carries descriptors until its reply: QEMU keeps only
    /// the descriptors of the latest message that carried any, and may read a later message
    /// before it runs an earlier command, so two such commands in flight could swap them.
    fd_slot: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl Client {
    /// Connects to the QMP socket at `path` and negotiates capabilities.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Client::connect_with(path, ClientOptions::default()).await
    }

    pub async fn connect_with(path: impl AsRef<Path>, options: ClientOptions) -> Result<Client> {
        let path = path.as_ref();
        let connect_error = |source| Error::Connect {
            path: path.display().to_string(),
            source,
        };
        let stream = tokio::time::timeout(options.handshake_timeout, UnixStream::connect(path))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        Client::from_stream(stream, options).await
    }

    /// Runs the handshake on an already connected socket (e.g. one end of a socketpair, or a
    /// socket handed over by a supervisor).
    pub async fn from_stream(stream: UnixStream, options: ClientOptions) -> Result<Client> {
        let (mut read, write) = stream.into_split();
        let mut codec = LineCodec::new(options.max_line);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let greeting = tokio::time::timeout(
            options.handshake_timeout,
            read_greeting(&mut read, &mut codec, &mut buf),
        )
        .await
        .map_err(|_| Error::Greeting(format!("none within {:?}", options.handshake_timeout)))??;

        let shared = Shared::new(options.event_capacity, write);
        tokio::spawn(read_loop(shared.clone(), read, codec, buf));
        tokio::spawn(write_loop(shared.clone()));

        let oob = options.negotiate_oob && greeting.capabilities.contains(&QmpCapability::Oob);
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                greeting,
                oob,
                timeouts: options.timeouts,
                next_id: AtomicU64::new(1),
                fd_slot: tokio::sync::Mutex::new(()),
            }),
        };
        let enable = if oob {
            vec![QmpCapability::Oob]
        } else {
            Vec::new()
        };
        client
            .execute_with_timeout(&QmpCapabilities { enable }, options.handshake_timeout)
            .await?;
        Ok(client)
    }

    /// The server's greeting (QEMU version and offered capabilities).
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob
    }

    /// Runs a typed command with the timeout the table gives it.
    pub async fn execute<C: Command>(&self, command: &C) -> Result<C::Output> {
        let timeout = self.inner.timeouts.for_command(C::NAME);
        self.execute_with_timeout(command, timeout).await
    }

    pub async fn execute_with_timeout<C: Command>(
        &self,
        command: &C,
        timeout: Duration,
    ) -> Result<C::Output> {
        self.typed_call(command, timeout, false, Vec::new()).await
    }

    /// Runs a typed command out of band: it overtakes commands queued before it. Only
    /// commands QEMU marks `allow-oob` may be sent this way.
    pub async fn execute_oob<C: Command>(&self, command: &C) -> Result<C::Output> {
        if !self.inner.oob {
            return Err(Error::OobNotNegotiated(C::NAME.to_owned()));
        }
        let timeout = self.inner.timeouts.for_command(C::NAME);
        self.typed_call(command, timeout, true, Vec::new()).await
    }

    /// Runs a typed command with file descriptors attached (SCM_RIGHTS); for `getfd` and
    /// `add-fd`. The descriptors are duplicated, so the caller keeps its own.
    pub async fn execute_with_fds<C: Command>(
        &self,
        command: &C,
        fds: &[BorrowedFd<'_>],
    ) -> Result<C::Output> {
        let owned = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<OwnedFd>>>()
            .map_err(Error::FdPassing)?;
        let timeout = self.inner.timeouts.for_command(C::NAME);
        self.typed_call(command, timeout, false, owned).await
    }

    /// Passes `fd` to QEMU under `fdname` (`getfd`).
    pub async fn send_fd(&self, fdname: &str, fd: BorrowedFd<'_>) -> Result<()> {
        self.execute_with_fds(
            &GetFd {
                fdname: fdname.to_owned(),
            },
            &[fd],
        )
        .await
        .map(drop)
    }

    /// Adds `fd` to an fd set (`add-fd`), creating a new set when `fdset_id` is `None`.
    pub async fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        fdset_id: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo> {
        let cmd = AddFd {
            fdset_id,
            opaque: opaque.map(str::to_owned),
        };
        self.execute_with_fds(&cmd, &[fd]).await
    }

    /// Runs any command by name (passthrough). `arguments` must be a JSON object or `None`.
    pub async fn execute_raw(&self, command: &str, arguments: Option<&Value>) -> Result<Value> {
        let timeout = self.inner.timeouts.for_command(command);
        self.execute_raw_with_timeout(command, arguments, timeout)
            .await
    }

    pub async fn execute_raw_with_timeout(
        &self,
        command: &str,
        arguments: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let args = arguments
            .map(|a| encode_args(command, a))
            .transpose()?
            .flatten();
        let raw = self.call(command, args, timeout, false, Vec::new()).await?;
        decode(command, &raw)
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.inner.shared.clone())
    }

    /// Runs `command` and then waits for an event matching `matches` (e.g. DEVICE_DELETED after
    /// device_del). The subscription is taken before the command is sent, so an event that
    /// arrives before the reply is not missed.
    pub async fn execute_and_wait<C: Command>(
        &self,
        command: &C,
        event_timeout: Duration,
        matches: impl FnMut(&Event) -> bool,
    ) -> Result<(C::Output, Arc<Event>)> {
        let mut events = self.subscribe();
        let output = self.execute(command).await?;
        let event = events.wait_for(event_timeout, matches).await?;
        Ok((output, event))
    }

    /// Why the connection closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.shared.close_reason()
    }

    /// Resolves when the connection closes, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.inner.shared.closed.cancelled().await;
        self.close_reason().unwrap_or(CloseReason::ClientClosed)
    }

    /// Closes the connection now, for every clone; pending commands fail with `Closed`.
    pub fn close(&self) {
        self.inner.shared.close(CloseReason::ClientClosed);
    }

    async fn typed_call<C: Command>(
        &self,
        command: &C,
        timeout: Duration,
        oob: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<C::Output> {
        let args = encode_args(C::NAME, command)?;
        let raw = self.call(C::NAME, args, timeout, oob, fds).await?;
        decode(C::NAME, &raw)
    }

    async fn call(
        &self,
        command: &str,
        args: Option<Vec<u8>>,
        timeout: Duration,
        oob: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<Box<RawValue>> {
        let _slot = if fds.is_empty() {
            None
        } else {
            Some(self.inner.fd_slot.lock().await)
        };
        self.sent(command, args, timeout, oob, fds)?.await
    }

    /// Queues the frame now (before returning) and gives a future of its reply.
    fn sent(
        &self,
        command: &str,
        args: Option<Vec<u8>>,
        timeout: Duration,
        oob: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<impl Future<Output = Result<Box<RawValue>>> + '_> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(command, args.as_deref(), id, oob);
        let reply = inner.shared.register(id).map_err(Error::Closed)?;
        // Unregisters on every way out, including the reply's future being dropped.
        let registered = Registered {
            shared: &inner.shared,
            id,
        };
        inner
            .shared
            .send(Outgoing { frame, fds })
            .map_err(Error::Closed)?;
        let command = command.to_owned();
        Ok(async move {
            let _registered = registered;
            match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(Ok(raw))) => Ok(raw),
                Ok(Ok(Err(error))) => Err(Error::Qmp { command, error }),
                Ok(Err(_)) => Err(Error::Closed(self.reason_or_client_closed())),
                Err(_) => Err(Error::Timeout {
                    command,
                    after: timeout,
                }),
            }
        })
    }

    /// How long a reply to `command` is waited for by default.
    pub fn timeout_for(&self, command: &str) -> Duration {
        self.inner.timeouts.for_command(command)
    }

    /// Sends a typed command, with `fds` attached (duplicated: the caller keeps its own), and
    /// returns a future of its reply, waited for at most `within`. The frame is queued before
    /// this returns: commands sent one after another reach QEMU, and run, in that order, so
    /// a caller may send one that needs what the one before makes without waiting for that
    /// one's reply (it fails if that one failed). With descriptors it first waits until no
    /// other command carrying some is unanswered, and the returned future holds that slot
    /// until it resolves or is dropped: await it (or drop it) before sending another.
    pub async fn send<C: Command>(
        &self,
        command: &C,
        fds: &[BorrowedFd<'_>],
        within: Duration,
    ) -> Result<impl Future<Output = Result<C::Output>> + '_> {
        let owned = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<OwnedFd>>>()
            .map_err(Error::FdPassing)?;
        let args = encode_args(C::NAME, command)?;
        let slot = if owned.is_empty() {
            None
        } else {
            Some(self.inner.fd_slot.lock().await)
        };
        let reply = self.sent(C::NAME, args, within, false, owned)?;
        Ok(async move {
            let _slot = slot;
            decode(C::NAME, &reply.await?)
        })
    }

    /// [`Client::send`] for any command by name, without descriptors (as
    /// [`Client::execute_raw`]).
    pub fn send_raw(
        &self,
        command: &str,
        arguments: Option<&Value>,
        within: Duration,
    ) -> Result<impl Future<Output = Result<Value>> + '_> {
        let args = arguments
            .map(|a| encode_args(command, a))
            .transpose()?
            .flatten();
        let reply = self.sent(command, args, within, false, Vec::new())?;
        let command = command.to_owned();
        Ok(async move { decode(&command, &reply.await?) })
    }

    fn reason_or_client_closed(&self) -> CloseReason {
        self.close_reason().unwrap_or(CloseReason::ClientClosed)
    }
}

struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.unregister(self.id);
    }
}

async fn read_greeting(
    read: &mut tokio::net::unix::OwnedReadHalf,
    codec: &mut LineCodec,
    buf: &mut BytesMut,
) -> Result<Greeting> {
    loop {
        match codec.decode(buf) {
            Ok(Some(line)) => {
                return match parse_line(&line) {
                    Ok(ServerMessage::Greeting(g)) => Ok(g),
                    Ok(_) => Err(Error::Greeting(format!(
                        "expected the greeting, got: {}",
                        preview(&line, 120)
                    ))),
                    Err(e) => Err(Error::Greeting(e.to_string())),
                }
            }
            Ok(None) => {}
            Err(LineError::TooLong { max }) => {
                return Err(Error::Greeting(format!("a line exceeds {max} bytes")))
            }
            Err(LineError::Io(e)) => return Err(Error::Closed(CloseReason::Io(e.to_string()))),
        }
        buf.reserve(4096);
        match read.read_buf(buf).await {
            Ok(0) => return Err(Error::Closed(CloseReason::PeerClosed)),
            Ok(_) => {}
            Err(e) => return Err(Error::Closed(CloseReason::Io(e.to_string()))),
        }
    }
}

/// Serializes arguments; `None` when they are empty (unit struct, `null` or `{}`).
fn encode_args<A: Serialize + ?Sized>(command: &str, args: &A) -> Result<Option<Vec<u8>>> {
    let bytes = serde_json::to_vec(args).map_err(|source| Error::Encode {
        command: command.to_owned(),
        source,
    })?;
    match bytes.as_slice() {
        b"null" | b"{}" => Ok(None),
        [b'{', ..] => Ok(Some(bytes)),
        _ => Err(Error::Encode {
            command: command.to_owned(),
            source: serde::ser::Error::custom("arguments must be a JSON object"),
        }),
    }
}

fn encode_frame(command: &str, args: Option<&[u8]>, id: u64, oob: bool) -> Vec<u8> {
    use std::io::Write;
    let mut frame = Vec::with_capacity(48 + command.len() + args.map_or(0, <[u8]>::len));
    frame.extend_from_slice(if oob {
        b"{\"exec-oob\":"
    } else {
        b"{\"execute\":"
    });
    // A command name is a string we did not necessarily write (passthrough): escape it.
    let _ = serde_json::to_writer(&mut frame, command);
    if let Some(args) = args {
        frame.extend_from_slice(b",\"arguments\":");
        frame.extend_from_slice(args);
    }
    let _ = write!(frame, ",\"id\":{id}}}\r\n");
    frame
}

fn decode<T: DeserializeOwned>(command: &str, raw: &RawValue) -> Result<T> {
    serde_json::from_str(raw.get()).map_err(|source| Error::Decode {
        command: command.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_single_lines_with_escaped_names() {
        let f = encode_frame("query-status", None, 3, false);
        assert_eq!(f, b"{\"execute\":\"query-status\",\"id\":3}\r\n");
        let f = encode_frame("evil\"\n", Some(b"{\"a\":1}"), 4, true);
        let text = String::from_utf8(f).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            v,
            json!({"exec-oob": "evil\"\n", "arguments": {"a": 1}, "id": 4})
        );
    }

    #[test]
    fn arguments_must_be_objects() {
        match encode_args("x", &json!([1])) {
            Err(Error::Encode { command, source }) => {
                assert_eq!(command, "x");
                assert_eq!(source.to_string(), "arguments must be a JSON object");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(encode_args("x", &json!({})).unwrap(), None);
        assert_eq!(encode_args("x", &()).unwrap(), None);
    }
}
