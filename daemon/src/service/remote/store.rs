//! Hosts registered through the API, kept across restarts: `<state>/hosts/<name>.json` (the
//! entry, no secret in it) and `<state>/hosts/<name>.cred` (mode 0600, the credentials).
//! Both written atomically, credentials first, so an entry never points at a missing file.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::remote::HostEntry;
use crate::persist::atomic::{remove_durable_async, write_atomic_async};

/// Entry files are a few hundred bytes.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub struct HostStore {
    dir: PathBuf,
}

impl HostStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn credentials_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cred"))
    }

    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Every stored entry; unreadable ones come back as (file, reason) and are skipped.
    pub fn load_all(&self) -> (Vec<HostEntry>, Vec<(PathBuf, String)>) {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return (entries, problems);
        };
        for item in dir.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match load_entry(&path) {
                Ok(e) => entries.push(e),
                Err(reason) => problems.push((path, reason)),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        (entries, problems)
    }

    /// Writes the credentials (0600) then the entry pointing at them.
    pub async fn save(&self, entry: &HostEntry, credentials: String) -> io::Result<()> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || crate::paths::create_dir(&dir, 0o700))
            .await
            .map_err(io::Error::other)??;
        write_atomic_async(
            self.credentials_path(&entry.name),
            credentials.into_bytes(),
            0o600,
        )
        .await?;
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        write_atomic_async(self.entry_path(&entry.name), json, 0o600).await
    }

    /// Removes the entry, then its credentials.
    pub async fn remove(&self, name: &str) -> io::Result<()> {
        remove_durable_async(self.entry_path(name)).await?;
        remove_durable_async(self.credentials_path(name)).await?;
        Ok(())
    }
}

fn load_entry(path: &Path) -> Result<HostEntry, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ENTRY_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_ENTRY_BYTES {
        return Err("file too large".into());
    }
    let entry: HostEntry = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if path.file_stem().and_then(|s| s.to_str()) != Some(entry.name.as_str()) {
        return Err(format!(
            "names host '{}' but the file is named for another",
            entry.name
        ));
    }
    Ok(entry)
}
