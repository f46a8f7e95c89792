//! The host side of the test guest's command shell: a virtio-serial port named
//! [`COMMAND_CHANNEL`] whose host end is a Unix socket (QEMU
//! `-chardev socket,...,server=on` + `-device virtserialport,name=...`, or a
//! domain's `<channel type='unix'><source mode='bind' path=.../><target
//! type='virtio' name='org.novacron.cmd.0'/></channel>`).
//!
//! The guest runs each line with `sh -c` (stdin `/dev/null`, stderr merged)
//! and answers `NOVACRON-OUT <n>\n<n bytes>NOVACRON-RC <rc>\n`. Commands run
//! one at a time; background long ones (`cmd &`) and poll.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Name of the virtio-serial port the guest's init serves commands on.
pub const COMMAND_CHANNEL: &str = "org.novacron.cmd.0";
/// Name of the virtio-serial port qemu-ga serves (QEMU's default).
pub const AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Largest answer accepted (the guest's `/tmp` is RAM; tests read small files).
const MAX_OUTPUT: usize = 16 << 20;

/// A connection to the guest's command shell.
#[derive(Debug)]
pub struct GuestShell {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Set when a call timed out or failed mid-answer: the framing is lost.
    broken: bool,
}

impl GuestShell {
    /// Connects to the host end of the command channel, retrying until the
    /// socket accepts (QEMU creates it at start) or `timeout` passes.
    pub async fn connect(socket: impl AsRef<Path>, timeout: Duration) -> Result<GuestShell> {
        let path = socket.as_ref().to_owned();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(&path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!("cannot connect to the command channel {}", path.display())
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (r, w) = stream.into_split();
        Ok(GuestShell {
            path,
            reader: BufReader::new(r),
            writer: w,
            broken: false,
        })
    }

    /// Runs `command` in the guest; returns its exit status and output
    /// (stdout and stderr). The first call after boot waits for the guest to
    /// open its port, so give it a boot-sized `timeout`.
    pub async fn run(&mut self, command: &str, timeout: Duration) -> Result<(i32, String)> {
        if self.broken {
            bail!(
                "the command channel {} lost its framing after an earlier failure; reconnect",
                self.path.display()
            );
        }
        if command.contains(['\n', '\r']) {
            bail!("a guest command is one line: {command:?}");
        }
        self.broken = true;
        let answer = tokio::time::timeout(timeout, self.exchange(command))
            .await
            .with_context(|| {
                format!("guest command {command:?} unanswered within {timeout:?}")
            })??;
        self.broken = false;
        Ok(answer)
    }

    /// [`Self::run`], failing unless the command exits 0; returns its output.
    pub async fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(command, timeout).await?;
        if rc != 0 {
            bail!("guest command {command:?} exited {rc}; output:\n{out}");
        }
        Ok(out)
    }

    async fn exchange(&mut self, command: &str) -> Result<(i32, String)> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("writing to the command channel")?;
        let len: usize = self
            .line_with("NOVACRON-OUT ")
            .await?
            .parse()
            .context("bad NOVACRON-OUT length")?;
        if len > MAX_OUTPUT {
            bail!("guest answer of {len} bytes exceeds {MAX_OUTPUT}");
        }
        let mut out = vec![0; len];
        self.reader
            .read_exact(&mut out)
            .await
            .context("command channel closed mid-answer")?;
        let rc = self
            .line_with("NOVACRON-RC ")
            .await?
            .parse()
            .context("bad NOVACRON-RC status")?;
        Ok((rc, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Reads lines until one starts with `prefix`; returns the rest, trimmed.
    async fn line_with(&mut self, prefix: &str) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("command channel {} closed", self.path.display());
            }
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
    }
}
