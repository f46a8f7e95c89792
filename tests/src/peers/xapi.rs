//! The XAPI test peer: `tests/peers/xapi/xapi_peer.py`, a Python (stdlib only) process built
//! from the published XenAPI model (`tests/peers/xapi/xenapi.json`). It is NOT XenServer or
//! XCP-ng: it accepts exactly the model's methods and arities, unmarshals every argument by
//! its declared type (FIELD_TYPE_ERROR otherwise), keeps VM power states with XAPI's
//! transitions and serves JSON-RPC at `/jsonrpc` and XML-RPC at `/` over TLS. It logs every
//! call (`GET /_peer/calls`: method, session, outcome) so tests can see what the host saw.
//!
//! Each start generates a fresh self-signed certificate (openssl) and password in a temporary
//! directory; nothing is built or cached. The process is killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// How long the peer may take to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to run the peer.
#[derive(Debug, Clone)]
pub struct Options {
    pub vm_count: usize,
    /// Serve XML-RPC only (`/jsonrpc` answers 404), like a host without JSON-RPC.
    pub xmlrpc_only: bool,
    /// How long each `Async.*` task takes before it runs.
    pub task_delay: Duration,
}

impl Options {
    pub fn new(vm_count: usize) -> Self {
        Self {
            vm_count,
            xmlrpc_only: false,
            task_delay: Duration::from_millis(20),
        }
    }
}

/// A running XAPI test peer.
pub struct Peer {
    /// `https://127.0.0.1:<port>/`
    pub url: String,
    pub user: String,
    pub password: String,
    /// The PEM certificate the peer serves (its own CA).
    pub ca_file: PathBuf,
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The peer's files in the source tree.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/xapi")
}

/// The published XenAPI model the peer serves (and the adapter's contract test reads).
pub fn model_path() -> PathBuf {
    peer_dir().join("xenapi.json")
}

/// Starts a peer with `vm_count` ordinary VMs (plus templates, control domains, a snapshot).
pub fn start(vm_count: usize) -> Result<Peer> {
    start_with(&Options::new(vm_count))
}

pub fn start_with(options: &Options) -> Result<Peer> {
    let dir = tempfile::Builder::new()
        .prefix("xapi-peer-")
        .tempdir()
        .context("temporary directory for the XAPI peer")?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            // A leaf, not a CA: a client that trusts this file as its root (ca_file) must
            // still accept it as the server's certificate (webpki refuses a CA used as one).
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running openssl to make the peer's certificate")?;
    if !status.status.success() {
        bail!(
            "openssl failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let password = format!("pw-{}", super::random_hex(12)?);
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, &password).context("writing the peer's password file")?;

    let mut cmd = Command::new("python3");
    cmd.arg(peer_dir().join("xapi_peer.py"))
        .arg("--api")
        .arg(model_path())
        .arg("--vms")
        .arg(options.vm_count.to_string())
        .arg("--user")
        .arg("root")
        .arg("--password-file")
        .arg(&password_file)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--task-delay-ms")
        .arg(options.task_delay.as_millis().to_string())
        // The peer exits when this pipe closes: a peer kept in a never-dropped static dies
        // with the test process.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if options.xmlrpc_only {
        cmd.arg("--xmlrpc-only");
    }
    let mut child = cmd.spawn().context("starting python3 for the XAPI peer")?;
    let pid = child.id();
    let stdout = child.stdout.take();
    // Constructed before the port is known so an early failure still kills the child.
    let mut peer = Peer {
        url: String::new(),
        user: "root".into(),
        password,
        ca_file: cert,
        pid,
        child,
        _dir: dir,
    };
    let stdout = stdout.ok_or_else(|| anyhow!("the peer's stdout is not piped"))?;
    let line = super::first_line(stdout, START_TIMEOUT)
        .ok_or_else(|| anyhow!("the XAPI peer printed no port within {START_TIMEOUT:?}"))?;
    let port: u16 = line
        .strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("the XAPI peer did not start: {:?}", line.trim()))?;
    peer.url = format!("https://127.0.0.1:{port}/");
    Ok(peer)
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) peer still dies of SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
