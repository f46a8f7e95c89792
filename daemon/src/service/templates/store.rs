//! Template metadata on disk: one JSON file per template (`<state>/templates/<name>.json`,
//! written atomically) and a journal of the files an operation in flight is making or
//! removing (`<state>/templates/pending/<id>.json`), written before the first file is touched
//! and removed once the metadata that keeps (or drops) them is on disk. After a crash the
//! journal says which files to look at; whether each stays is decided by what refers to it.

use std::path::{Path, PathBuf};

use novacron_domain::{DomainConfig, Error, Kind};
use serde::{Deserialize, Serialize};

use super::super::storage::errors::io;
use crate::persist::atomic::{remove_durable, write_atomic, TEMP_MARKER};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    #[serde(default = "version")]
    pub format: u32,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Milliseconds since the epoch.
    pub created: u64,
    /// Oldest first; numbers are never reused.
    pub versions: Vec<Version>,
}

fn version() -> u32 {
    VERSION
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    pub created: u64,
    #[serde(default)]
    pub description: Option<String>,
    /// The domain it was made from.
    pub source: String,
    /// The pool holding the bases.
    pub pool: String,
    /// The definition as a template: no uuid, no MACs; disk sources are the bases.
    pub config: DomainConfig,
    pub bases: Vec<Base>,
}

/// One read-only base: a flattened qcow2 copy of the source domain's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The disk's target (`vda`).
    pub disk: String,
    /// The volume in the version's pool.
    pub volume: String,
    pub path: String,
    pub capacity: u64,
}

impl Template {
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn get(&self, v: u32) -> Result<&Version, Error> {
        self.versions
            .iter()
            .find(|x| x.version == v)
            .ok_or_else(|| {
                let have: Vec<String> = self
                    .versions
                    .iter()
                    .map(|x| x.version.to_string())
                    .collect();
                Error::not_found(
                    Kind::Template,
                    format!(
                        "{} version {v} (it has version {})",
                        self.name,
                        have.join(", ")
                    ),
                )
            })
    }

    /// Whether any version holds the file at `path`.
    pub fn holds(&self, path: &str) -> bool {
        self.versions
            .iter()
            .any(|v| v.bases.iter().any(|b| b.path == path))
    }
}

/// What an interrupted operation may have left: files to keep only if referenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub op: PendingOp,
    /// The template (create, update, delete) or the deployed domain (deploy).
    pub owner: String,
    pub files: Vec<PendingFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingOp {
    /// Bases being made: they stay only if the template's metadata holds them.
    Bases,
    /// Bases being deleted: removed unless the template's metadata still holds them.
    Delete,
    /// Linked clones of a deploy: they stay only if the domain is defined with them.
    Deploy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFile {
    /// The pool directory and the volume name in it (removed beneath the directory).
    pub dir: String,
    pub name: String,
    /// Device and inode of the file once this operation has made it (recorded right after
    /// its exclusive create). Recovery removes only the file with this identity: a name
    /// journalled but not yet made may belong to somebody else by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<(u64, u64)>,
}

impl PendingFile {
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir.trim_end_matches('/'), self.name)
    }
}

/// The template files under one state directory.
#[derive(Clone)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("templates"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.file(name).exists()
    }

    pub fn load(&self, name: &str) -> Result<Template, Error> {
        let path = self.file(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(Kind::Template, name))
            }
            Err(e) => return Err(io("read", path.display().to_string(), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            action: "parse",
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Every readable template, by name; an unreadable file is logged and skipped.
    pub fn all(&self) -> Vec<Template> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.contains(TEMP_MARKER) || f.starts_with('.') {
                continue;
            }
            let Some(stem) = f.strip_suffix(".json") else {
                continue;
            };
            match self.load(stem) {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!(template = stem, error = %e, "skipping a template file"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn save(&self, t: &Template) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| io("create", self.dir.display().to_string(), e))?;
        let path = self.file(&t.name);
        let bytes = serde_json::to_vec_pretty(t).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&path, &bytes, 0o600).map_err(|e| io("write", path.display().to_string(), e))
    }

    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let path = self.file(name);
        remove_durable(&path)
            .map(drop)
            .map_err(|e| io("remove", path.display().to_string(), e))
    }

    /// Records `p` before its files are touched; the id names the journal entry.
    pub fn begin(&self, p: &Pending) -> Result<PathBuf, Error> {
        let dir = self.pending_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io("create", dir.display().to_string(), e))?;
        let id = format!(
            "{}-{}-{}",
            crate::service::events::now_unix_ms(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let path = dir.join(format!("{id}.json"));
        let bytes = serde_json::to_vec(p).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&path, &bytes, 0o600)
            .map_err(|e| io("write", path.display().to_string(), e))?;
        Ok(path)
    }

    /// Rewrites journal `journal` (a file it lists was just made).
    pub fn update(&self, journal: &Path, p: &Pending) -> Result<(), Error> {
        let bytes = serde_json::to_vec(p).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(journal, &bytes, 0o600)
            .map_err(|e| io("write", journal.display().to_string(), e))
    }

    pub fn end(&self, journal: &Path) {
        if let Err(e) = remove_durable(journal) {
            tracing::warn!(path = %journal.display(), error = %e, "cannot remove a template journal");
        }
    }

    /// The journals left by a previous run.
    pub fn pending(&self) -> Vec<(PathBuf, Pending)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.pending_dir()) else {
            return out;
        };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(TEMP_MARKER) || !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(p) => out.push((path, p)),
                None => tracing::warn!(path = %path.display(), "unreadable template journal"),
            }
        }
        out
    }
}

/// The store's writes and reads off the async threads (each is an fsync'd write or a read of
/// a state file: a request must not hold a runtime thread through a slow disk's flush).
impl Store {
    async fn off<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(crate::service::storage::errors::joined)?
    }

    pub async fn begin_off(&self, p: &Pending) -> Result<PathBuf, Error> {
        let p = p.clone();
        self.off(move |s| s.begin(&p)).await
    }

    pub async fn end_off(&self, journal: &Path) {
        let journal = journal.to_owned();
        let _ = self
            .off(move |s| {
                s.end(&journal);
                Ok(())
            })
            .await;
    }

    pub async fn save_off(&self, t: &Template) -> Result<(), Error> {
        let t = t.clone();
        self.off(move |s| s.save(&t)).await
    }

    pub async fn load_off(&self, name: &str) -> Result<Template, Error> {
        let name = name.to_owned();
        self.off(move |s| s.load(&name)).await
    }

    pub async fn remove_off(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.off(move |s| s.remove(&name)).await
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
