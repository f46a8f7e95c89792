//! The WinRM test peer: `tests/peers/hyperv/winrm_peer.py`, a Python process standing in for
//! a Hyper-V host's WinRM service. It is NOT Windows or Hyper-V: it speaks the WS-Management
//! shell protocol, authenticates with pyspnego's real NTLM acceptor (HTTP, with WinRM message
//! encryption) or Basic over TLS (a fresh self-signed certificate from openssl), and interprets
//! the scripts it is sent (`pwsh.py`: a subset of Windows PowerShell 5.1 — variables, `if`,
//! `exit`, pipelines, `ConvertTo-Json`, `Select-Object`, `Write-Error`, the Hyper-V cmdlets
//! against an in-memory host) with 5.1's output conventions, refusing loudly what it does not
//! implement.
//!
//! Nothing is built or cached; the credentials file (`NTLM_USER_FILE`, `DOMAIN:USER:PASSWORD`)
//! and certificate live in a temporary directory. The process is killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// How long the peer may take to print its port (the HTTPS mode makes a certificate first).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the peer authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `http://…/`: NTLM with WinRM message encryption (Windows' default for port 5985).
    NtlmHttp,
    /// `https://…/`: Basic over TLS (port 5986 style).
    BasicHttps,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// VMs named `vm-000`…; every fourth (index 1, 5, …) is running, the rest off.
    pub vm_count: usize,
    pub mode: Mode,
    /// Also two VMs named `dup` and a running `slow-shutdown` whose guest takes 4 s to shut
    /// down.
    pub fixtures: bool,
}

impl Options {
    pub fn new(vm_count: usize, mode: Mode) -> Self {
        Self {
            vm_count,
            mode,
            fixtures: false,
        }
    }
}

/// A running WinRM test peer.
pub struct Peer {
    /// Base URL to register: `http://127.0.0.1:<port>/` or `https://127.0.0.1:<port>/`.
    pub url: String,
    /// `DOMAIN\user` form.
    pub user: String,
    pub password: String,
    /// The certificate the HTTPS peer serves (trust it as the CA); `None` over HTTP.
    pub ca_file: Option<PathBuf>,
    pub pid: u32,
    child: Child,
    dir: tempfile::TempDir,
}

impl Peer {
    /// Where the peer's logs go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("peer.log")
    }

    /// What the service saw of NTLM (HTTP mode), one JSON object a line, in order:
    /// `{"phase": "negotiate" | "authenticate" | "message", "context": <n>, "outcome":
    /// "success" | "401"}`, and `{"event": "forgotten"}` when SIGUSR1 made it forget every
    /// security context. Absent until the first request.
    pub fn ntlm_log_path(&self) -> PathBuf {
        self.dir.path().join("ntlm.jsonl")
    }
}

/// The peer's files in the source tree.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/hyperv")
}

/// `vm_count` plain VMs over HTTP with NTLM and message encryption (the benchmark's peer).
pub fn start(vm_count: usize) -> Result<Peer> {
    start_with(&Options::new(vm_count, Mode::NtlmHttp))
}

pub fn start_with(options: &Options) -> Result<Peer> {
    let dir = tempfile::Builder::new()
        .prefix("winrm-peer-")
        .tempdir()
        .context("temporary directory for the WinRM peer")?;
    let password = format!("Pw-{}!", super::random_hex(12)?);
    let users = dir.path().join("ntlm_users");
    std::fs::write(&users, format!("HVLAB:novacron:{password}\n"))
        .context("writing the peer's NTLM_USER_FILE")?;
    let log = std::fs::File::create(dir.path().join("peer.log")).context("peer log file")?;

    let mut cmd = Command::new("python3");
    cmd.arg(peer_dir().join("winrm_peer.py"))
        .arg("--mode")
        .arg(match options.mode {
            Mode::NtlmHttp => "ntlm",
            Mode::BasicHttps => "https",
        })
        .arg("--vms")
        .arg(options.vm_count.to_string())
        .arg("--dir")
        .arg(dir.path())
        .env("NTLM_USER_FILE", &users)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if options.fixtures {
        cmd.arg("--fixtures");
    }
    let mut child = cmd.spawn().context("starting python3 for the WinRM peer")?;
    let pid = child.id();
    let stdout = child.stdout.take();
    // Constructed before the port is known so an early failure still kills the child.
    let mut peer = Peer {
        url: String::new(),
        user: "HVLAB\\novacron".into(),
        password,
        ca_file: None,
        pid,
        child,
        dir,
    };
    let stdout = stdout.ok_or_else(|| anyhow!("the peer's stdout is not piped"))?;
    let line = super::first_line(stdout, START_TIMEOUT).ok_or_else(|| {
        anyhow!(
            "the WinRM peer printed no port within {START_TIMEOUT:?}: {}",
            std::fs::read_to_string(peer.log_path()).unwrap_or_default()
        )
    })?;
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "the WinRM peer did not start ({:?}): {}",
                line.trim(),
                std::fs::read_to_string(peer.log_path()).unwrap_or_default()
            )
        })?;
    peer.url = match options.mode {
        Mode::NtlmHttp => format!("http://127.0.0.1:{port}/"),
        Mode::BasicHttps => {
            peer.ca_file = Some(peer.dir.path().join("cert.pem"));
            format!("https://127.0.0.1:{port}/")
        }
    };
    Ok(peer)
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) peer still dies of SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
