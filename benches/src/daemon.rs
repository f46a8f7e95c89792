//! Helpers for the benchmarks that drive the daemon (`daemon_start`, `daemon_scale`): private
//! state directories, the OS-less SeaBIOS domain, the real `novacrond` binary, and a guard
//! that kills every QEMU (and daemon) a benchmark leaves behind, also when it panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use novacron_domain::DomainConfig;
use novacron_tests::{osless_accel, Accel};
use novacrond::Config;

pub use crate::median;

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "met" or "MISSED".
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// A daemon's three directories under one temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Env {
    pub fn new() -> Result<Env> {
        let dir = tempfile::Builder::new()
            .prefix("ncbench-")
            .tempdir()
            .context("tempdir")?;
        let config = Config {
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
            log_dir: dir.path().join("log"),
            job_wait_secs: 5,
            ..Config::default()
        };
        Ok(Env { dir, config })
    }

    pub fn records_dir(&self) -> PathBuf {
        self.config.run_dir.join("domains")
    }

    pub fn record(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.json"))
    }

    pub fn definitions_dir(&self) -> PathBuf {
        self.config.state_dir.join("domains")
    }

    /// Writes the daemon's TOML config for these directories; returns its path.
    pub fn write_config_file(&self) -> Result<PathBuf> {
        self.write_config_file_with("")
    }

    /// The same plus `extra` TOML, right after the base keys (so it may start with top-level
    /// keys). Without a `[dbus]` section of its own the daemon gets no D-Bus, so a benchmark
    /// never touches the host's system bus.
    pub fn write_config_file_with(&self, extra: &str) -> Result<PathBuf> {
        let path = self.dir.path().join("novacrond.toml");
        let dbus = if extra.contains("[dbus]") {
            ""
        } else {
            "[dbus]\nbus = \"none\"\n"
        };
        let text = format!(
            "state_dir = {:?}\nrun_dir = {:?}\nlog_dir = {:?}\njob_wait_secs = {}\n{extra}\n{dbus}",
            self.config.state_dir,
            self.config.run_dir,
            self.config.log_dir,
            self.config.job_wait_secs
        );
        std::fs::write(&path, text).context("writing the daemon config")?;
        Ok(path)
    }
}

/// The OS-less SeaBIOS guest of the daemon tests: 64 MiB, 1 vCPU, q35, KVM where it works.
pub fn osless(name: &str) -> Result<DomainConfig> {
    let virt = match osless_accel() {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{virt}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
         </domain>"
    );
    DomainConfig::from_xml(&xml).context("osless xml")
}

/// The `novacrond` binary of this build: `target/<profile>/novacrond`, found among the
/// ancestors of the running benchmark (`target/<profile>/deps/<bench>-<hash>`).
pub fn novacrond_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("novacrond");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "the novacrond binary is not next to {} (searched its ancestors): build it first with \
         `cargo build --release -p novacrond`",
        exe.display()
    )
}

/// Starts `novacrond --config <config>`, stdout and stderr appended to `log`.
pub fn spawn_daemon(binary: &Path, config: &Path, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .context("daemon log")?;
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// How often `needle` occurs in the file (0 if unreadable).
pub fn count_in_file(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Kills, when dropped (normal return, `?` or panic), the daemons it tracks and every QEMU
/// whose runtime record lies in one of its record directories. The benchmarks clean up
/// properly on success; this is the safety net.
#[derive(Default)]
pub struct Reaper {
    daemons: Mutex<Vec<u32>>,
    records_dirs: Mutex<Vec<PathBuf>>,
}

impl Reaper {
    pub fn daemon(&self, pid: u32) {
        self.daemons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
    }

    pub fn records(&self, dir: PathBuf) {
        self.records_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    }

    /// The QEMU pids recorded in `dir` that are still alive and still a QEMU.
    pub fn recorded_qemus(dir: &Path) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                String::from_utf8_lossy(&cmdline)
                    .contains("qemu-system")
                    .then_some(pid)
            })
            .collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let daemons = std::mem::take(self.daemons.get_mut().unwrap_or_else(|e| e.into_inner()));
        for pid in daemons {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let dirs = std::mem::take(
            self.records_dirs
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for dir in dirs {
            let pids = Reaper::recorded_qemus(&dir);
            if !pids.is_empty() {
                eprintln!("reaper: killing {} leftover QEMU(s): {pids:?}", pids.len());
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// The argv of a recorded guest, for a raw QEMU started by a benchmark: the same command line,
/// but QEMU creates its monitor socket at `raw_socket` itself (the daemon hands its QEMUs a
/// pre-bound socket as fd 3 instead).
pub fn raw_argv(record: &serde_json::Value, raw_socket: &Path) -> Result<Vec<String>> {
    let raw = raw_socket.to_str().context("utf-8 socket path")?;
    let argv: Vec<String> = record["argv"]
        .as_array()
        .context("record argv")?
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap_or_default();
            match a.strip_prefix("socket,id=qmp,") {
                Some(rest) if rest.starts_with("fd=") => {
                    let tail = rest.split_once(',').map_or("", |(_, t)| t);
                    format!("socket,id=qmp,path={raw},{tail}")
                }
                _ => a.to_owned(),
            }
        })
        .collect();
    if !argv.iter().any(|a| a.contains(raw)) {
        bail!("no QMP monitor in the recorded argv: {argv:?}");
    }
    if argv.iter().any(|a| a == "-add-fd") {
        bail!("the recorded argv passes descriptors a raw QEMU would not have: {argv:?}");
    }
    Ok(argv)
}
