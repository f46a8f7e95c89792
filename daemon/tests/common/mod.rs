//! Shared setup for the daemon's real-QEMU tests: a service on private directories, and
//! domain definitions for the OS-less SeaBIOS guest (fast, KVM where it works) and the Linux
//! test guest (TCG where KVM cannot boot it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use novacron_domain::DomainConfig;
use novacron_tests::{osless_accel, Accel};
use novacrond::service::events::DomainEvent;
use novacrond::{Config, Service};
use tokio::sync::broadcast;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        // As root the daemon runs QEMU as novacron-qemu (the default, as users get it), which
        // must pass through to the per-guest runtime directories below run_dir (the daemon
        // refuses to start otherwise): like /run, the test's directory lets others through
        // without listing it, whatever the umask.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod tempdir");
        let config = Config {
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
            log_dir: dir.path().join("log"),
            job_wait_secs: 2,
            ..Config::default()
        };
        Env { dir, config }
    }

    pub async fn open(&self) -> Service {
        Service::open(self.config.clone()).await.expect("open")
    }

    pub fn serial_log(&self, name: &str) -> PathBuf {
        self.config
            .log_dir
            .join("serial")
            .join(format!("{name}.log"))
    }

    pub fn record(&self, name: &str) -> PathBuf {
        self.config
            .run_dir
            .join("domains")
            .join(format!("{name}.json"))
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.config
            .run_dir
            .join("domains")
            .join(format!("{name}.qmp"))
    }
}

/// Guests are detached from the daemon by design, so a test that fails half-way would leave
/// its QEMUs running: kill every guest recorded under this test's run directory.
impl Drop for Env {
    fn drop(&mut self) {
        let records = self.config.run_dir.join("domains");
        for entry in std::fs::read_dir(records).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let Some(record) = record else { continue };
            let (Some(pid), Some(start)) = (record["pid"].as_u64(), record["start_time"].as_u64())
            else {
                continue;
            };
            // Only the very process the record names (same pid and start time): the monitor
            // is an inherited fd, so QEMU's command line does not name this directory.
            if novacrond::qemu::procinfo::is_same_alive(pid as u32, start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn virt_type(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    }
}

/// An OS-less guest: SeaBIOS finds nothing to boot and idles. Ignores the power button.
pub fn osless(name: &str) -> DomainConfig {
    let xml = format!(
        "<domain type='{}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
         </domain>",
        virt_type(osless_accel())
    );
    DomainConfig::from_xml(&xml).expect("osless xml")
}

/// The Linux test guest (built once per machine) with its serial console logged.
pub fn linux(name: &str, extra_cmdline: &str) -> DomainConfig {
    let xml = novacron_tests::test_guest_domain_xml(name, extra_cmdline).expect("test guest");
    DomainConfig::from_xml(&xml).expect("linux xml")
}

/// Waits until `marker` has appeared `count` times in the file.
pub async fn wait_file(path: &Path, marker: &str, count: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(marker).count() >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{marker} x{count} not in {} within {timeout:?}; tail:\n{}",
            path.display(),
            novacron_tests::tail(&text, 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the next event about `domain` satisfying `pred`.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<Arc<DomainEvent>>,
    domain: &str,
    timeout: Duration,
    pred: impl Fn(&DomainEvent) -> bool,
) -> Arc<DomainEvent> {
    tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(e) if e.domain == domain && pred(&e) => return e,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event bus: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {domain} within {timeout:?}"))
}

pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// The pid in a domain's runtime record.
pub fn recorded_pid(env: &Env, name: &str) -> u32 {
    let text = std::fs::read_to_string(env.record(name)).expect("runtime record");
    let v: serde_json::Value = serde_json::from_str(&text).expect("record json");
    v["pid"].as_u64().expect("pid") as u32
}

pub mod bus;
pub mod daemon;
pub mod flood;
pub mod http;
pub mod netns;
pub mod openapi;
pub mod readme;
pub mod smaps;

/// Runs the openssl CLI in `dir` (test certificates); its stderr is the failure message.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The audit log's entries (`<log_dir>/audit.log`, one JSON object a line), oldest first.
pub fn audit_entries(env: &Env) -> Vec<serde_json::Value> {
    let path = env.config.log_dir.join("audit.log");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// The audit entries whose op satisfies `op`, as (op, domain, result, actor.via).
pub fn audited(env: &Env, op: impl Fn(&str) -> bool) -> Vec<(String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    audit_entries(env)
        .iter()
        .filter(|e| op(e["op"].as_str().unwrap_or_default()))
        .map(|e| {
            (
                s(&e["op"]),
                s(&e["domain"]),
                s(&e["result"]),
                s(&e["actor"]["via"]),
            )
        })
        .collect()
}
