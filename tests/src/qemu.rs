//! A QEMU launcher for tests: one temporary directory per instance holding
//! the QMP socket, the serial log and QEMU's stderr; QEMU is killed and
//! reaped on drop.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::{os_guest_choice, osless_accel, AccelChoice};
use crate::guest::test_guest;

const POLL: Duration = Duration::from_millis(50);
const COMMAND_SOCKET: &str = "cmd.sock";
const AGENT_SOCKET: &str = "qga.sock";

/// The QEMU binary: `$NOVACRON_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub fn qemu_binary() -> OsString {
    std::env::var_os("NOVACRON_QEMU")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Escapes a path for a QEMU `-chardev`/`-device` option value (`,` → `,,`).
pub fn escape_opt(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[derive(Clone, Debug)]
enum Kind {
    Osless,
    TestGuest,
}

/// Builds a QEMU command line for a test VM.
#[derive(Clone, Debug)]
pub struct QemuBuilder {
    kind: Kind,
    accel: Option<AccelChoice>,
    memory_mib: u32,
    cmdline_extra: Vec<String>,
    args: Vec<OsString>,
    paused: bool,
    spawn_timeout: Duration,
    /// virtio-serial ports: (port name, socket file name in the instance dir).
    channels: Vec<(String, String)>,
}

impl QemuBuilder {
    fn new(kind: Kind, memory_mib: u32) -> Self {
        QemuBuilder {
            kind,
            accel: None,
            memory_mib,
            cmdline_extra: Vec::new(),
            args: Vec::new(),
            paused: false,
            spawn_timeout: Duration::from_secs(10),
            channels: Vec::new(),
        }
    }

    /// An OS-less VM: SeaBIOS, no disk, `-m 64M`; accelerator from
    /// [`osless_accel`] (probed at `spawn`).
    pub fn osless() -> Self {
        Self::new(Kind::Osless, 64)
    }

    /// The Linux test guest (`-kernel`/`-initrd`, console on the serial log,
    /// `-no-reboot`), `-m 256M`; accelerator from [`os_guest_choice`]. The
    /// guest is built and the accelerator probed at `spawn` (blocking).
    pub fn test_guest() -> Self {
        Self::new(Kind::TestGuest, 256)
    }

    /// Uses this accelerator/CPU model instead of the probed one.
    pub fn with_accel(mut self, choice: AccelChoice) -> Self {
        self.accel = Some(choice);
        self
    }

    /// Appends an argument to the QEMU command line.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments to the QEMU command line.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Appends to the guest kernel command line (test guest only), e.g.
    /// `novacron.dirty_mib=32 novacron.dirty_rate=8`.
    pub fn kernel_cmdline_extra(mut self, extra: impl Into<String>) -> Self {
        self.cmdline_extra.push(extra.into());
        self
    }

    /// Guest RAM in MiB (`-m`).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Starts with the vCPUs stopped (`-S`); resume with QMP `cont`.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Adds a virtio-serial port named `name` whose host end is a listening
    /// Unix socket `<dir>/<file>` (see [`QemuProcess::dir`]).
    pub fn virtio_channel(mut self, name: &str, file: &str) -> Self {
        self.channels.push((name.to_owned(), file.to_owned()));
        self
    }

    /// The guest's command shell port ([`crate::COMMAND_CHANNEL`]) on
    /// [`QemuProcess::command_socket`]; connect with [`crate::GuestShell`].
    pub fn command_channel(self) -> Self {
        self.virtio_channel(crate::COMMAND_CHANNEL, COMMAND_SOCKET)
    }

    /// The qemu-ga port ([`crate::AGENT_CHANNEL`]) on
    /// [`QemuProcess::agent_socket`].
    pub fn agent_channel(self) -> Self {
        self.virtio_channel(crate::AGENT_CHANNEL, AGENT_SOCKET)
    }

    /// How long `spawn` waits for the QMP socket (default 10 s).
    pub fn spawn_timeout(mut self, timeout: Duration) -> Self {
        self.spawn_timeout = timeout;
        self
    }

    /// Starts QEMU and waits until its QMP socket exists. Blocking: for the
    /// test guest it may build the guest and probe the accelerator, so async
    /// callers use `tokio::task::spawn_blocking`.
    pub fn spawn(self) -> Result<QemuProcess> {
        let accel = match (&self.accel, &self.kind) {
            (Some(choice), _) => choice.clone(),
            (None, Kind::Osless) => AccelChoice {
                accel: osless_accel(),
                cpu: None,
            },
            (None, Kind::TestGuest) => os_guest_choice()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("novacron-qemu-")
            .tempdir()
            .context("cannot create a temporary directory for QEMU")?;
        let qmp = dir.path().join("qmp.sock");
        let serial = dir.path().join("serial.log");
        let stderr_path = dir.path().join("stderr.log");

        let bin = qemu_binary();
        let mut cmd = Command::new(&bin);
        cmd.args(["-machine", "q35", "-nodefaults", "-display", "none"])
            .args(accel.qemu_args())
            .arg("-m")
            .arg(format!("{}M", self.memory_mib))
            .arg("-chardev")
            .arg(format!(
                "socket,id=qmp,path={},server=on,wait=off",
                escape_opt(&qmp)
            ))
            .args(["-mon", "chardev=qmp,mode=control"])
            .arg("-chardev")
            .arg(format!("file,id=ser0,path={}", escape_opt(&serial)))
            .args(["-serial", "chardev:ser0"]);
        if self.paused {
            cmd.arg("-S");
        }
        if let Kind::TestGuest = self.kind {
            let guest = test_guest()?;
            let mut append = String::from("console=ttyS0 panic=-1 quiet");
            for extra in &self.cmdline_extra {
                append.push(' ');
                append.push_str(extra);
            }
            cmd.arg("-kernel")
                .arg(&guest.kernel)
                .arg("-initrd")
                .arg(&guest.initrd)
                .arg("-append")
                .arg(append)
                .arg("-no-reboot");
        } else if !self.cmdline_extra.is_empty() {
            bail!("kernel_cmdline_extra is only meaningful for QemuBuilder::test_guest()");
        }
        if !self.channels.is_empty() {
            cmd.args(["-device", "virtio-serial-pci,id=nvser0"]);
        }
        for (i, (name, file)) in self.channels.iter().enumerate() {
            cmd.arg("-chardev")
                .arg(format!(
                    "socket,id=nvchan{i},path={},server=on,wait=off",
                    escape_opt(&dir.path().join(file))
                ))
                .arg("-device")
                .arg(format!(
                    "virtserialport,bus=nvser0.0,chardev=nvchan{i},name={name}"
                ));
        }
        cmd.args(&self.args);

        let stderr = File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let command_line = format!("{cmd:?}");
        let child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {} (is QEMU installed?)",
                bin.to_string_lossy()
            )
        })?;
        let mut process = QemuProcess {
            child,
            dir,
            qmp,
            accel,
            command_line,
            exit: None,
        };

        let deadline = Instant::now() + self.spawn_timeout;
        while !process.qmp.exists() {
            if let Some(status) = process.try_wait()? {
                bail!(
                    "QEMU exited before creating its QMP socket ({status}).\ncommand: {}\nstderr:\n{}",
                    process.command_line,
                    tail(&process.stderr_text(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "QEMU did not create {} within {:?}.\ncommand: {}\nstderr:\n{}",
                    process.qmp.display(),
                    self.spawn_timeout,
                    process.command_line,
                    tail(&process.stderr_text(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(process)
    }
}

/// A running QEMU. Dropping it kills and reaps QEMU and removes its
/// temporary directory.
#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
    dir: tempfile::TempDir,
    qmp: PathBuf,
    accel: AccelChoice,
    command_line: String,
    exit: Option<ExitStatus>,
}

impl QemuProcess {
    /// The QMP control socket (`<dir>/qmp.sock`).
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp
    }

    /// The serial console log (`<dir>/serial.log`).
    pub fn serial_log(&self) -> PathBuf {
        self.dir.path().join("serial.log")
    }

    /// Host end of [`QemuBuilder::command_channel`].
    pub fn command_socket(&self) -> PathBuf {
        self.dir.path().join(COMMAND_SOCKET)
    }

    /// Host end of [`QemuBuilder::agent_channel`].
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join(AGENT_SOCKET)
    }

    /// This instance's temporary directory (free for test files, e.g. a
    /// migration socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The accelerator and CPU model QEMU was started with.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The serial log so far (lossy UTF-8; empty if not yet created).
    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.serial_log()).unwrap_or_default()).into_owned()
    }

    /// QEMU's stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("stderr.log")).unwrap_or_default())
            .into_owned()
    }

    /// QEMU's exit status if it has exited (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("waitpid on QEMU failed")?;
        }
        Ok(self.exit)
    }

    /// One poll of `wait_serial`: `Ok(true)` when `marker` is in the serial
    /// log, an error when QEMU has exited without printing it.
    fn poll_serial(&mut self, marker: &str) -> Result<bool> {
        if self.serial_text().contains(marker) {
            return Ok(true);
        }
        if let Some(status) = self.try_wait()? {
            // It may have printed the marker just before exiting.
            if self.serial_text().contains(marker) {
                return Ok(true);
            }
            bail!(
                "QEMU exited ({status}) before printing {marker:?}\n{}",
                self.diagnostics()
            );
        }
        Ok(false)
    }

    fn serial_timeout(&self, marker: &str, timeout: Duration) -> anyhow::Error {
        anyhow::anyhow!(
            "{marker:?} not on the serial console within {timeout:?} (accel {})\n{}",
            self.accel,
            self.diagnostics()
        )
    }

    /// The tails of the serial log and of stderr, for error messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- serial.log (tail) ---\n{}\n--- stderr.log (tail) ---\n{}\n--- command ---\n{}",
            tail(&self.serial_text(), 25),
            tail(&self.stderr_text(), 15),
            self.command_line
        )
    }

    /// Waits until `marker` appears (as a substring) in the serial log.
    /// Fails early if QEMU exits. Blocking; see [`Self::wait_serial_async`].
    pub fn wait_serial(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.poll_serial(marker)? {
            if Instant::now() >= deadline {
                return Err(self.serial_timeout(marker, timeout));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// [`Self::wait_serial`] for async tests (polls with `tokio::time::sleep`).
    pub async fn wait_serial_async(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.poll_serial(marker)? {
            if Instant::now() >= deadline {
                return Err(self.serial_timeout(marker, timeout));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    fn exit_timeout(&self, timeout: Duration) -> anyhow::Error {
        anyhow::anyhow!(
            "QEMU (pid {}) did not exit within {timeout:?}\n{}",
            self.pid(),
            self.diagnostics()
        )
    }

    /// Waits for QEMU to exit. Blocking; see [`Self::wait_exit_async`].
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.exit_timeout(timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`Self::wait_exit`] for async tests.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.exit_timeout(timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
