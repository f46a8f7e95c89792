//! vcsim, govmomi's vSphere simulator, as a test peer.
//!
//! Debian ships govmomi's library (`golang-github-vmware-govmomi-dev`) but not the vcsim
//! command, so `tests/peers/vsphere/vcsim/main.go` (a few lines around `simulator.VPX()`) is
//! built offline in GOPATH mode against `/usr/share/gocode` once per machine and cached under
//! `<cache>/vcsim/vcsim-<hash of main.go>` (under a file lock; about a minute on a cold Go
//! build cache). Each [`Peer`] is one simulator process: one datacenter, one cluster of two
//! hosts (`DC0_C0_H0`, `DC0_C0_H1`), one datastore and `vm_count` powered-on VMs named
//! `DC0_C0_RP0_VM<i>`. Only [`Peer::user`] with [`Peer::password`] (random per peer) may
//! log in. Killed and reaped on drop; its datastore directories live in the peer's own
//! temporary directory.
//!
//! Each peer serves a certificate for 127.0.0.1 signed by a CA made for it at start
//! (openssl), so clients verify TLS against [`Peer::ca_file`] as they would a vCenter's.
//! `main.go` also logs every SOAP call (`GET /_peer/calls`) and can end every session
//! (`POST /_peer/expire_sessions`); see there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The Go source, embedded so the cache key is the source actually built.
const MAIN_GO: &str = include_str!("../../peers/vsphere/vcsim/main.go");
/// Where Debian installs Go library sources.
const GOCODE: &str = "/usr/share/gocode";
const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const USER: &str = "novacron";
/// The cluster's hosts, migration targets for each other.
pub const HOSTS: [&str; 2] = ["DC0_C0_H0", "DC0_C0_H1"];

pub struct Peer {
    child: Child,
    /// Base URL (`https://127.0.0.1:<port>`); the SDK is at `<url>/sdk`.
    pub url: String,
    pub user: String,
    pub password: String,
    pub pid: u32,
    /// The PEM certificate of the CA that signed the simulator's certificate.
    pub ca_file: PathBuf,
    /// Holds the datastore directories and the simulator's stderr log.
    dir: tempfile::TempDir,
}

impl Peer {
    pub fn sdk_url(&self) -> String {
        format!("{}/sdk", self.url)
    }

    /// The simulator's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("vcsim.log")).unwrap_or_default()
    }

    /// The VM names the model creates.
    pub fn vm_name(i: usize) -> String {
        format!("DC0_C0_RP0_VM{i}")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// FNV-1a: a stable hash for the cache key (std's hasher may change between releases).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The simulator binary, built if the cache does not have this source's build yet.
pub fn binary() -> Result<PathBuf> {
    let dir = crate::cache_dir().join("vcsim");
    let bin = dir.join(format!("vcsim-{:016x}", fnv1a(MAIN_GO.as_bytes())));
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = crate::cache::lock("vcsim")?;
    if bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    build(&bin)?;
    Ok(bin)
}

fn build(bin: &Path) -> Result<()> {
    if !Path::new(GOCODE)
        .join("src/github.com/vmware/govmomi/simulator")
        .is_dir()
    {
        bail!("govmomi sources missing under {GOCODE}: install golang-github-vmware-govmomi-dev");
    }
    let gopath = tempfile::tempdir().context("temporary GOPATH")?;
    let src = gopath.path().join("src/novacron-vcsim");
    fs::create_dir_all(&src)?;
    fs::write(src.join("main.go"), MAIN_GO)?;
    let partial = bin.with_extension("partial");
    eprintln!("building vcsim from govmomi sources (once per machine)...");
    let mut cmd = Command::new("go");
    cmd.args(["build", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:{GOCODE}", gopath.path().to_string_lossy()),
        )
        .env("GOPROXY", "off")
        .env("GOFLAGS", "");
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        cmd.env("GOCACHE", crate::cache_dir().join("go-build"));
    }
    let out = cmd
        .output()
        .context("running `go build` (is golang-go installed?)")?;
    if !out.status.success() {
        bail!(
            "go build of vcsim failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::rename(&partial, bin).with_context(|| format!("installing {}", bin.display()))?;
    Ok(())
}

/// Runs openssl with `args`, failing with its stderr.
fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A CA (`ca.pem`) and a leaf for 127.0.0.1 signed by it (`cert.pem`, `key.pem`) in `dir`.
fn make_certificates(dir: &Path) -> Result<()> {
    const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC);
    ca.extend([
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=NovaCron test CA (vcsim)",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca, dir)?;
    let mut csr = vec!["req"];
    csr.extend(EC);
    csr.extend([
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&csr, dir)?;
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    )
}

/// Starts a simulator with `vm_count` VMs (blocking; builds the binary the first time).
pub fn start(vm_count: usize) -> Result<Peer> {
    start_with(vm_count, None)
}

/// Like [`start`], with sessions ended by the simulator after `idle_timeout` without calls.
pub fn start_with(vm_count: usize, idle_timeout: Option<Duration>) -> Result<Peer> {
    let bin = binary()?;
    let dir = tempfile::Builder::new()
        .prefix("novacron-vcsim-")
        .tempdir()
        .context("peer directory")?;
    let log = fs::File::create(dir.path().join("vcsim.log"))?;
    let password = super::random_hex(12)?;
    let idle = format!("{}ms", idle_timeout.unwrap_or_default().as_millis());
    make_certificates(dir.path())?;
    let mut child = Command::new(&bin)
        .args([
            "-vm",
            &vm_count.to_string(),
            "-user",
            USER,
            "-idle-timeout",
            &idle,
        ])
        .arg("-tlscert")
        .arg(dir.path().join("cert.pem"))
        .arg("-tlskey")
        .arg(dir.path().join("key.pem"))
        .env("VCSIM_PASSWORD", &password)
        .env("TMPDIR", dir.path())
        // Our end of stdin closes when we die, which stops the simulator even after SIGKILL.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("vcsim stdout")?;
    let mut peer = Peer {
        child,
        url: String::new(),
        user: USER.to_owned(),
        password,
        pid,
        ca_file: dir.path().join("ca.pem"),
        dir,
    };
    let line = super::first_line(stdout, START_TIMEOUT).unwrap_or_default();
    let sdk = line.trim();
    let Some(base) = sdk
        .strip_suffix("/sdk")
        .filter(|b| b.starts_with("https://"))
    else {
        bail!(
            "vcsim did not print its URL within {START_TIMEOUT:?} (got {sdk:?}); log:\n{}",
            peer.log()
        );
    };
    peer.url = base.to_owned();
    Ok(peer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv_is_stable() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
