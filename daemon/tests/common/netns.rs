//! Network namespaces for tests and a novacrond run inside one (its bridges, nftables table,
//! ip_forward and dnsmasq are then the namespace's, never the host's). Dropping either kills
//! what runs inside and removes it, also when the test fails. (The same shape as the private
//! helpers of networks.rs, shared here for further tests.)

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Env;

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

pub fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with its loopback up.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        assert!(name.len() <= 15, "{name}");
        let _ = run("ip", &["netns", "del", &name]);
        ok("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        ok("ip", &a)
    }
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }
    /// `ip link` names, sorted, without counters (what must be as before).
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            })
            .collect();
        v.sort();
        v
    }
    pub fn can_ping(&self, addr: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "2", addr])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = run("ip", &["netns", "pids", &self.0]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// novacrond run inside a namespace (`ip netns exec` execs it in place: the child is it).
pub struct NsDaemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl NsDaemon {
    pub fn start(env: &Env, ns: &Netns) -> NsDaemon {
        NsDaemon::start_with(env, ns, &[])
    }
    /// As [`NsDaemon::start`], with `vars` in the daemon's environment (e.g. a PATH with
    /// stand-ins for host tools first).
    pub fn start_with(env: &Env, ns: &Netns, vars: &[(&str, String)]) -> NsDaemon {
        let config = env.write_config("");
        let log = env.dir.path().join("daemon.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_novacrond"),
                "--config",
            ])
            .arg(&config)
            .envs(vars.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let socket = env.config.run_dir.join("novacrond.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "novacrond did not serve:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NsDaemon { child, socket, log }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
