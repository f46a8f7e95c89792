//! The Proxmox VE test peer: `fakepve` 0.5.0 from PyPI (a third-party fake driven by the real
//! PVE 9 API schema, AGPL), run as an outside process through `tests/peers/proxmox/serve_fakepve.py`,
//! which only calls fakepve's public API (fakepve's own CLI cannot register API tokens or pick a
//! free port). Nothing is built; quickstart.sh installs fakepve.
//!
//! The peer listens on 127.0.0.1 with a port the system picks and a self-signed certificate
//! made at start (its PEM is [`Peer::ca_file`]); the password and token secret are random per
//! peer and reach the child through its environment, never its command line. The inventory is
//! described in the script's docstring: `vm_count` qemu guests `vm-000`.. on nodes pve1/pve2,
//! the duplicate-name pair `dup`, `noacpi` (ignores ACPI) and the container `ct-web`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The API token the peer accepts (its secret is random per peer).
pub const TOKEN_ID: &str = "root@pam!novacron";
pub const USER: &str = "root@pam";
/// Real seconds per PVE second: tasks take a little real time, so clients really poll them.
pub const TIME_SCALE: f64 = 0.01;

/// A running fakepve, killed and reaped on drop.
pub struct Peer {
    child: Child,
    /// `https://127.0.0.1:<port>` (the adapter appends `/api2/json`).
    pub url: String,
    pub user: String,
    pub password: String,
    pub token_id: String,
    pub token_secret: String,
    /// The peer's self-signed certificate (PEM), to verify TLS against.
    pub ca_file: PathBuf,
    /// Holds the certificate and key for the peer's lifetime.
    _dir: tempfile::TempDir,
}

impl Peer {
    /// The child's pid (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A stopped child does not die of SIGKILL until continued on some kernels' ptrace paths;
        // SIGCONT first is harmless.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The launcher script in this tree.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/proxmox/serve_fakepve.py")
}

/// Starts a fakepve with `vm_count` qemu guests (plus the fixed ones) and waits until it listens.
pub fn start(vm_count: usize) -> Result<Peer> {
    start_with_ticket_ttl(vm_count, Duration::from_secs(7200))
}

/// Like [`start`], with login tickets that expire after `ticket_ttl` (PVE's are 2 h), to see a
/// client log in again.
pub fn start_with_ticket_ttl(vm_count: usize, ticket_ttl: Duration) -> Result<Peer> {
    let dir = tempfile::Builder::new()
        .prefix("novacron-fakepve-")
        .tempdir()
        .context("temporary directory for fakepve")?;
    let password = super::random_hex(16)?;
    let token_secret = super::random_hex(16)?;
    let mut child = Command::new("python3")
        .arg(script())
        .arg("--vms")
        .arg(vm_count.to_string())
        .arg("--dir")
        .arg(dir.path())
        .arg("--time-scale")
        .arg(TIME_SCALE.to_string())
        .arg("--ticket-ttl")
        .arg(ticket_ttl.as_secs_f64().to_string())
        .env("FAKEPVE_PASSWORD", &password)
        .env("FAKEPVE_TOKEN_ID", TOKEN_ID)
        .env("FAKEPVE_TOKEN_SECRET", &token_secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run python3 (fakepve is installed by quickstart.sh)")?;
    let stdout = child.stdout.take().context("fakepve stdout")?;
    let mut stderr = child.stderr.take().context("fakepve stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx.recv_timeout(START_TIMEOUT);
    let line = match ready {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            bail!(
                "fakepve did not report ready within {START_TIMEOUT:?}: {}",
                err.trim()
            );
        }
    };
    // Keep draining stderr so a chatty peer never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
    });
    let port = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .and_then(|p| p.parse::<u16>().ok());
    let cert = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cert="))
        .map(PathBuf::from);
    let (Some(port), Some(ca_file)) = (port, cert) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("unexpected fakepve ready line: {line}");
    };
    Ok(Peer {
        child,
        url: format!("https://127.0.0.1:{port}"),
        user: USER.to_owned(),
        password,
        token_id: TOKEN_ID.to_owned(),
        token_secret,
        ca_file,
        _dir: dir,
    })
}
