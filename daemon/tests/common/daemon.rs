//! A real `novacrond` process for tests, and real clients (curl) to talk to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Env;

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Env {
    /// Writes the daemon's TOML config (plus `extra` lines) and returns its path.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("novacrond.toml");
        // Tests never touch the host's system bus unless they configure a bus themselves. The
        // extra lines come first, so top-level keys in them stay top-level.
        let dbus = if extra.contains("[dbus]") {
            ""
        } else {
            "[dbus]\nbus = \"none\"\n"
        };
        let text = format!(
            "state_dir = {:?}\nrun_dir = {:?}\nlog_dir = {:?}\njob_wait_secs = 2\n{extra}\n{dbus}",
            self.config.state_dir, self.config.run_dir, self.config.log_dir
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts novacrond and waits until its API socket answers.
    pub fn start_daemon(&self, extra_config: &str) -> Daemon {
        let config = self.write_config(extra_config);
        let log = self.dir.path().join("daemon.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_novacrond"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn novacrond");
        let socket = self.config.run_dir.join("novacrond.sock");
        let daemon = Daemon { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "novacrond did not serve {}:\n{}",
                daemon.socket.display(),
                std::fs::read_to_string(&daemon.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: status, body, and the content type.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Marker curl writes before `%{http_code} %{content_type}`.
const MARKER: &str = "\n--novacron-curl--";

fn reply(out: &Output, marker: &str) -> Reply {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text
        .rsplit_once(marker)
        .unwrap_or_else(|| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    let (status, content_type) = meta.split_once(' ').unwrap_or((meta, ""));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        content_type: content_type.trim().to_owned(),
    }
}

/// Runs curl against the daemon's Unix socket. `args` go before the URL.
pub fn curl(socket: &Path, method: &str, path: &str, args: &[&str]) -> Reply {
    curl_as(None, socket, method, path, args)
}

/// As [`curl`], run as `user` (through `runuser`) when given.
pub fn curl_as(
    user: Option<&str>,
    socket: &Path,
    method: &str,
    path: &str,
    args: &[&str],
) -> Reply {
    let marker = MARKER;
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out: Output = cmd
        .args(["-sS", "--unix-socket"])
        .arg(socket)
        .args(["-X", method, "-w"])
        .arg(format!("{marker}%{{http_code}} %{{content_type}}"))
        .args(args)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl must be installed");
    reply(&out, marker)
}

/// Runs curl against the daemon's TCP listener on loopback `port` with a bearer `token`.
/// `args` go before the URL.
pub fn curl_tcp(port: u16, token: &str, method: &str, path: &str, args: &[&str]) -> Reply {
    let marker = MARKER;
    let out: Output = Command::new("curl")
        .args(["-sS", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg("-w")
        .arg(format!("{marker}%{{http_code}} %{{content_type}}"))
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl must be installed");
    reply(&out, marker)
}

/// An `[api]` section listening on loopback port 0 (the daemon binds a free port itself and
/// logs it: [`Daemon::tcp_port`]) with these tokens (name, secret, role).
pub fn tcp_api(tokens: &[(&str, &str, &str)]) -> String {
    use sha2::Digest as _;
    let mut toml = "[api]\nlisten = \"127.0.0.1:0\"\n".to_owned();
    for (name, secret, role) in tokens {
        let hash: String = sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        toml.push_str(&format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n"
        ));
    }
    toml
}

impl Daemon {
    /// The TCP port this daemon bound, from its "HTTP API on TCP" log line (the last one:
    /// the log is appended across restarts). Binding the port in the daemon, not picking a
    /// free one here, leaves no window for another process to take it.
    pub fn tcp_port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let port = text
                .lines()
                .rev()
                .filter(|l| l.contains("HTTP API on TCP"))
                .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
                .next()
                .map(|a| a.port());
            if let Some(port) = port {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "novacrond logged no TCP address:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs novactl against the daemon on `socket`: (exit code, stdout, stderr).
pub fn novactl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("novactl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
