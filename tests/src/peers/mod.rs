//! Remote-hypervisor test peers, started by the tests and benchmarks themselves.
//!
//! - [`vcsim`]: the vSphere simulator from govmomi (real vendor simulator), built once per
//!   machine from Debian's govmomi sources and cached.
//! - [`fakepve`]: the third-party Proxmox VE fake from PyPI, run as an outside process.
//! - [`xapi`]: a XAPI JSON-RPC/XML-RPC test peer built in this tree from the published API
//!   (`shared/vendor-api/xenapi.json`); not a real XenServer.
//! - [`winrm`]: a WinRM test peer built in this tree (NTLM via pyspnego, message encryption,
//!   the Hyper-V cmdlets' documented output); not a real Hyper-V.
//!
//! Each peer is a child process killed on drop.

pub mod fakepve;
pub mod vcsim;
pub mod winrm;
pub mod xapi;

use std::io::{BufRead, BufReader, Read};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::Duration;

/// A random secret: `bytes` bytes from /dev/urandom, in hex.
pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The first line a peer prints (its "listening" line), or `None` if it printed none within
/// `timeout`. Read on a thread, since a pipe read cannot be given a deadline.
pub(crate) fn first_line(stdout: ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).ok()
}

/// A peer stopped with SIGSTOP (a host that hangs: connections accepted, nothing answered),
/// continued by [`Paused::resume`] or, should the test fail half-way, on drop.
#[must_use = "the peer is continued when this is dropped"]
pub struct Paused(nix::unistd::Pid);

/// Stops the process `pid` until the returned guard is resumed or dropped.
pub fn pause(pid: u32) -> anyhow::Result<Paused> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    Ok(Paused(pid))
}

impl Paused {
    /// Lets the peer run again.
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}
