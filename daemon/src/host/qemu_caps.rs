//! What a QEMU binary offers: its version, machine types and CPU models, asked over QMP from a
//! throwaway `-machine none` instance, and cached per binary (path, size, mtime).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use novacron_qmp::{Client, ClientOptions};
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

use super::HostError;

/// Bound on the whole probe (start, the queries, quit).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the stderr kept for an error message.
const MAX_STDERR: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QemuCaps {
    pub version: QemuVersion,
    /// Sorted by name.
    pub machines: Vec<Machine>,
    /// Sorted by name.
    pub cpu_models: Vec<CpuModel>,
    /// What `<cpu mode='host-model'>` becomes here; `None` when no named model is usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_model: Option<super::host_model::HostCpuModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// Distribution package suffix, e.g. ` (Debian 1:7.2+dfsg-7)`.
    pub package: String,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub name: String,
    /// e.g. `q35` for `pc-q35-7.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub is_default: bool,
    pub cpu_max: u32,
    pub deprecated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuModel {
    pub name: String,
    /// Whether the model runs on this host with the probe's accelerator; `None` when QEMU
    /// did not say.
    pub usable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

impl QemuCaps {
    /// The machine called `name`, by name or alias.
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines
            .iter()
            .find(|m| m.name == name || m.alias.as_deref() == Some(name))
    }

    pub fn cpu_model(&self, name: &str) -> Option<&CpuModel> {
        self.cpu_models.iter().find(|m| m.name == name)
    }

    /// Builds the caps from the three QMP replies; unknown fields are ignored, missing ones
    /// take neutral values.
    pub fn from_qmp(version: &Value, machines: &Value, cpus: &Value) -> Result<QemuCaps, String> {
        let num = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let q = version
            .get("qemu")
            .ok_or("query-version: no 'qemu' member")?;
        let version = QemuVersion {
            major: num(q, "major").ok_or("query-version: no major")?,
            minor: num(q, "minor").unwrap_or(0),
            micro: num(q, "micro").unwrap_or(0),
            package: version
                .get("package")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        };
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut machines: Vec<Machine> = machines
            .as_array()
            .ok_or("query-machines: not a list")?
            .iter()
            .filter_map(|m| {
                Some(Machine {
                    name: str_of(m, "name")?,
                    alias: str_of(m, "alias"),
                    is_default: m.get("is-default").and_then(Value::as_bool) == Some(true),
                    cpu_max: num(m, "cpu-max").unwrap_or(1),
                    deprecated: m.get("deprecated").and_then(Value::as_bool) == Some(true),
                })
            })
            .collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        let mut cpu_models: Vec<CpuModel> = cpus
            .as_array()
            .ok_or("query-cpu-definitions: not a list")?
            .iter()
            .filter_map(|c| {
                Some(CpuModel {
                    name: str_of(c, "name")?,
                    usable: c
                        .get("unavailable-features")
                        .and_then(Value::as_array)
                        .map(Vec::is_empty),
                    alias_of: str_of(c, "alias-of"),
                })
            })
            .collect();
        cpu_models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(QemuCaps {
            version,
            machines,
            cpu_models,
            host_model: None,
        })
    }
}

static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts `emulator -machine none` on a private QMP socket below `work_dir` (or the system
/// temp dir when that path would be too long for a socket), asks it, and makes it quit.
pub async fn probe(emulator: &Path, work_dir: &Path) -> Result<QemuCaps, HostError> {
    let fail = |reason: String| HostError::Qemu {
        path: emulator.to_path_buf(),
        reason,
    };
    let name = format!(
        "host-probe-{}-{}",
        std::process::id(),
        PROBE_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut dir = work_dir.join(&name);
    if dir.as_os_str().len() > 90 {
        dir = std::env::temp_dir().join(&name);
    }
    let dir_for_create = dir.clone();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir_for_create)
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let result = tokio::time::timeout(PROBE_TIMEOUT, probe_in(emulator, &dir))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")));
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result.map_err(fail)
}

async fn probe_in(emulator: &Path, dir: &Path) -> Result<QemuCaps, String> {
    let sock = dir.join("qmp.sock");
    // We listen, QEMU connects: no polling for a socket to appear.
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    let mut child = tokio::process::Command::new(emulator)
        .args(["-machine", "none", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-S"])
        .args(["-accel", "kvm", "-accel", "tcg"])
        .arg("-chardev")
        .arg(format!("socket,id=probe,path={}", sock.display()))
        .args(["-mon", "chardev=probe,mode=control"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let stream = tokio::select! {
        accepted = listener.accept() => accepted.map_err(|e| e.to_string())?.0,
        status = child.wait() => {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.take() {
                let _ = stderr.take(MAX_STDERR).read_to_string(&mut err).await;
            }
            return Err(format!(
                "exited before connecting ({}): {}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                err.trim()
            ));
        }
    };
    let client = Client::from_stream(stream, ClientOptions::default())
        .await
        .map_err(|e| format!("QMP handshake: {e}"))?;
    let ask = |cmd: &'static str| {
        let client = client.clone();
        async move {
            client
                .execute_raw(cmd, None)
                .await
                .map_err(|e| format!("{cmd}: {e}"))
        }
    };
    let caps = async {
        let version = ask("query-version").await?;
        let machines = ask("query-machines").await?;
        let cpus = ask("query-cpu-definitions").await?;
        let mut caps = QemuCaps::from_qmp(&version, &machines, &cpus)?;
        caps.host_model = super::host_model::resolve(&client, &caps.cpu_models).await?;
        Ok(caps)
    }
    .await;
    // `quit` may race the reply with the connection closing; the exit is what matters.
    let _ = client.execute_raw("quit", None).await;
    drop(client);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    caps
}

/// Identifies one build of a binary: a replaced binary gets probed again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BinaryKey {
    path: PathBuf,
    size: u64,
    mtime: Option<SystemTime>,
}

/// Probe results per binary, failures included (a broken emulator is not re-run on every
/// call; replacing it changes the key).
#[derive(Debug, Default)]
pub struct QemuCapsCache {
    entries: tokio::sync::Mutex<HashMap<BinaryKey, Result<Arc<QemuCaps>, String>>>,
}

impl QemuCapsCache {
    /// The caps of `emulator`, probing it (under `work_dir`) when this build was not seen yet.
    /// Concurrent callers wait for one probe.
    pub async fn get(&self, emulator: &Path, work_dir: &Path) -> Result<Arc<QemuCaps>, String> {
        let meta = tokio::fs::metadata(emulator)
            .await
            .map_err(|e| format!("QEMU {}: {e}", emulator.display()))?;
        let key = BinaryKey {
            path: emulator.to_path_buf(),
            size: meta.len(),
            mtime: meta.modified().ok(),
        };
        let mut entries = self.entries.lock().await;
        if let Some(hit) = entries.get(&key) {
            return hit.clone();
        }
        let result = probe(emulator, work_dir)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string());
        entries.retain(|k, _| k.path != key.path);
        entries.insert(key, result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_qmp_replies() {
        let caps = QemuCaps::from_qmp(
            &json!({"qemu": {"major": 7, "minor": 2, "micro": 9}, "package": "Debian 1:7.2"}),
            &json!([
                {"name": "pc-q35-7.2", "alias": "q35", "cpu-max": 288, "deprecated": false},
                {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": true, "cpu-max": 255},
                {"cpu-max": 1},
            ]),
            &json!([
                {"name": "qemu64", "unavailable-features": []},
                {"name": "Skylake-Server", "unavailable-features": ["avx512f"]},
                {"name": "max"},
            ]),
        )
        .unwrap();
        assert_eq!(caps.version.to_string(), "7.2.9");
        assert_eq!(caps.machines.len(), 2);
        assert_eq!(caps.machine("q35").unwrap().cpu_max, 288);
        assert!(caps.machine("pc").unwrap().is_default);
        assert!(caps.machine("virt").is_none());
        assert_eq!(caps.cpu_model("qemu64").unwrap().usable, Some(true));
        assert_eq!(
            caps.cpu_model("Skylake-Server").unwrap().usable,
            Some(false)
        );
        assert_eq!(caps.cpu_model("max").unwrap().usable, None);
        match QemuCaps::from_qmp(&json!({}), &json!([]), &json!([])) {
            Err(e) => assert_eq!(format!("{e:?}"), r#""query-version: no 'qemu' member""#),
            Ok(_) => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn missing_binary_is_named_and_not_probed() {
        let cache = QemuCapsCache::default();
        let err = cache
            .get(Path::new("/nonexistent/qemu"), &std::env::temp_dir())
            .await
            .unwrap_err();
        assert!(err.contains("/nonexistent/qemu"), "{err}");
    }

    #[tokio::test]
    async fn a_binary_that_is_not_qemu_fails_with_a_reason() {
        let err = probe(Path::new("/bin/false"), &std::env::temp_dir())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/bin/false") && err.contains("exited"),
            "{err}"
        );
    }
}
