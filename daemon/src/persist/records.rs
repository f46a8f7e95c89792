//! Runtime records of running guests: `<run>/domains/<name>.json`, one per QEMU process we
//! started. They let a restarted daemon find (and verify) its guests again. Written with
//! `atomic::write_runtime`: a record outlives a crash of the daemon, not of the host, like the
//! QEMU it describes (a record from before a reboot is told by its `boot_id`).

use std::io;
use std::path::{Path, PathBuf};

use novacron_domain::DomainConfig;

use super::{atomic, file_for, join_problem, scan, Others, Problem};

/// The record layout this daemon writes and understands.
pub const RECORD_VERSION: u32 = 1;
/// Records are small (argv plus one config); the cap bounds work on a corrupt file.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
const EXT: &str = ".json";
const MODE: u32 = 0o600;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeRecord {
    /// `RECORD_VERSION`; other versions are a Problem (not ours to interpret).
    pub version: u32,
    pub name: String,
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22 (starttime, clock ticks since boot): detects pid reuse.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` at spawn: detects a reboot.
    pub boot_id: String,
    pub qmp_socket: PathBuf,
    /// Emulator and arguments exactly as spawned.
    pub argv: Vec<String>,
    /// The config the guest was started with (transient guests have no XML file).
    pub config: DomainConfig,
    pub started_at_unix_ms: u64,
    /// Hugepages and PCI devices taken for this guest, given back when it stops.
    #[serde(
        default,
        skip_serializing_if = "crate::host::resources::HeldResources::is_empty"
    )]
    pub held: crate::host::resources::HeldResources,
    /// Set for a QEMU started to receive a live migration: a restarted daemon must know it
    /// is not (yet) the guest, and answer the source truthfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<IncomingMark>,
    /// The file QEMU's stdout and stderr go to, capped while the guest runs. Absent in
    /// records of daemons that put it at `<log_dir>/<name>.log` (`Paths::legacy_qemu_log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_log: Option<PathBuf>,
    /// Ports given to the guest's autoport displays (`[graphics]`), reserved while it runs:
    /// a restarted daemon re-reserves them before it hands out any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub display_ports: Vec<u16>,
    /// The virtiofsd serving each virtiofs share: adopted with the guest by a restarted
    /// daemon, stopped once QEMU is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtiofsd: Vec<HelperProcess>,
    /// The disks as changed while running (attach, detach, media); absent until the first
    /// change, when `config`'s disks are the live set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_devices: Option<super::live_devices::LiveDevices>,
}

/// A helper process the daemon started for a guest, verified by start time like QEMU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperProcess {
    /// Index into `devices.filesystems`.
    pub index: usize,
    pub pid: u32,
    /// `/proc/<pid>/stat` starttime.
    pub start_time: u64,
}

/// Where an incoming migration stood when its record was last written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingMark {
    /// The id the source knows the migration by.
    pub id: String,
    pub phase: IncomingPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncomingPhase {
    /// Waiting for or loading the stream; never resumed here. Discarded on restart.
    Prepared,
    /// The take-over was decided (definition saved) and `cont` was or is about to be sent:
    /// the guest belongs here now.
    TakingOver,
    /// Resumed here: an ordinary guest.
    Finished,
}

/// Read before the full record so that a record from another daemon version is reported as
/// such, not as whatever field it added or renamed.
#[derive(serde::Deserialize)]
struct VersionProbe {
    version: u32,
}

#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    pub fn new(dir: PathBuf) -> Self {
        RecordStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every readable record, sorted by name, plus one Problem per `*.json` file that is not
    /// one. Other files (QMP sockets, per-guest dirs, temp files) are skipped silently.
    pub fn load_all(&self) -> (Vec<RuntimeRecord>, Vec<Problem>) {
        scan(&self.dir, EXT, Others::Skip, MAX_RECORD_BYTES, parse)
    }

    /// Async wrapper: `load_all` on the blocking pool.
    pub async fn load_all_async(&self) -> (Vec<RuntimeRecord>, Vec<Problem>) {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_all())
            .await
            .unwrap_or_else(|e| join_problem(&self.dir, e))
    }

    /// Write `<name>.json`, atomically and durably.
    pub fn save_blocking(&self, record: &RuntimeRecord) -> io::Result<()> {
        let (path, bytes) = self.encode(record)?;
        atomic::write_runtime(&path, &bytes, MODE)
    }

    pub async fn save(&self, record: &RuntimeRecord) -> io::Result<()> {
        let (path, bytes) = self.encode(record)?;
        atomic::write_runtime_async(path, bytes, MODE).await
    }

    /// Remove `<name>.json`; `Ok(false)` if there was none.
    pub fn remove_blocking(&self, name: &str) -> io::Result<bool> {
        atomic::remove_runtime(&file_for(&self.dir, name, EXT)?)
    }

    pub async fn remove(&self, name: &str) -> io::Result<bool> {
        atomic::remove_runtime_async(file_for(&self.dir, name, EXT)?).await
    }

    fn encode(&self, record: &RuntimeRecord) -> io::Result<(PathBuf, Vec<u8>)> {
        let path = file_for(&self.dir, &record.name, EXT)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        Ok((path, bytes))
    }
}

fn parse(stem: &str, bytes: Vec<u8>) -> Result<RuntimeRecord, String> {
    let probe: VersionProbe =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a runtime record: {e}"))?;
    if probe.version != RECORD_VERSION {
        return Err(format!(
            "record version {}, this daemon understands {RECORD_VERSION}; left alone",
            probe.version
        ));
    }
    let record: RuntimeRecord =
        serde_json::from_slice(&bytes).map_err(|e| format!("bad runtime record: {e}"))?;
    if record.name != stem {
        return Err(format!(
            "record of domain {:?} but the file name says {stem:?}",
            record.name
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::definitions::tests::config;

    fn record(name: &str) -> RuntimeRecord {
        RuntimeRecord {
            version: RECORD_VERSION,
            name: name.to_owned(),
            pid: 4242,
            start_time: 123_456,
            boot_id: "0b7a6c3e-5d1f-4b8e-9f00-112233445566".to_owned(),
            qmp_socket: PathBuf::from(format!("/run/novacron/domains/{name}.qmp")),
            argv: vec!["/usr/bin/qemu-system-x86_64".into(), "-S".into()],
            config: config(name),
            started_at_unix_ms: 1_700_000_000_000,
            held: Default::default(),
            incoming: None,
            qemu_log: Some(PathBuf::from(format!("/var/log/novacron/qemu/{name}.log"))),
            display_ports: vec![5901],
            virtiofsd: Vec::new(),
            live_devices: None,
        }
    }

    #[test]
    fn a_record_without_display_ports_holds_none() {
        let mut old = serde_json::to_value(record("vm1")).unwrap();
        assert_eq!(old["display_ports"], serde_json::json!([5901]));
        old.as_object_mut().unwrap().remove("display_ports");
        let parsed: RuntimeRecord = serde_json::from_value(old).unwrap();
        assert!(parsed.display_ports.is_empty());
    }

    #[test]
    fn a_record_without_a_log_path_is_one_of_an_older_daemon() {
        let mut old = serde_json::to_value(record("vm1")).unwrap();
        old.as_object_mut().unwrap().remove("qemu_log");
        let parsed: RuntimeRecord = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.qemu_log, None);
    }

    #[tokio::test]
    async fn save_load_remove_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RecordStore::new(tmp.path().to_owned());
        store.save(&record("vm2")).await.unwrap();
        store.save_blocking(&record("vm1")).unwrap();
        let (records, problems) = store.load_all_async().await;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records, [record("vm1"), record("vm2")]);
        assert!(store.remove("vm1").await.unwrap());
        assert!(!store.remove_blocking("vm1").unwrap());
        assert_eq!(store.load_all().0, [record("vm2")]);
    }

    #[test]
    fn neighbours_are_skipped_and_bad_records_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let store = RecordStore::new(d.to_owned());
        store.save_blocking(&record("ok")).unwrap();
        // Neighbours that share the directory: skipped silently.
        let _sock = std::os::unix::net::UnixListener::bind(d.join("ok.qmp")).unwrap();
        std::fs::create_dir(d.join("ok.d")).unwrap();
        std::fs::write(d.join(".ok.json.tmp.1.2"), "{").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        // Bad records: reported.
        std::fs::write(d.join("trunc.json"), "{\"version\": 1, \"name\": \"tr").unwrap();
        let mut v2 = serde_json::to_value(record("v2")).unwrap();
        v2["version"] = 2.into();
        v2["new_field"] = true.into();
        std::fs::write(d.join("v2.json"), v2.to_string()).unwrap();
        let mut extra = serde_json::to_value(record("extra")).unwrap();
        extra["surprise"] = 1.into();
        std::fs::write(d.join("extra.json"), extra.to_string()).unwrap();
        let moved = serde_json::to_string(&record("elsewhere")).unwrap();
        std::fs::write(d.join("moved.json"), moved).unwrap();
        std::fs::write(d.join("big.json"), vec![b' '; MAX_RECORD_BYTES + 1]).unwrap();
        std::fs::create_dir(d.join("dir.json")).unwrap();

        let (records, problems) = store.load_all();
        assert_eq!(records, [record("ok")]);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let has = |file: &str, what: &str| {
            assert!(
                text.iter()
                    .any(|t| t.contains(&format!("/{file}: ")) && t.contains(what)),
                "{file}: {what:?} not in {text:#?}"
            )
        };
        has("big.json", "over the");
        has("dir.json", "directory");
        has("extra.json", "unknown field `surprise`");
        has("moved.json", "file name says \"moved\"");
        has("trunc.json", "not a runtime record");
        has("v2.json", "record version 2, this daemon understands 1");
        assert_eq!(problems.len(), 6, "{text:#?}");
        assert!(d.join("v2.json").exists() && d.join("trunc.json").exists());
    }
}
