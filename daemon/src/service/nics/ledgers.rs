//! Every guest's NIC ledger in memory, as last written to its file ([`super::ledger`]): the
//! files are what a restarted daemon reads, the map spares each NIC operation a file read and
//! the MAC check a scan of every file. All writes go through here (one daemon per run
//! directory), each file write under the map's lock, so the two never disagree.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use super::ledger::{self, Ledger};

enum Entry {
    Read(Ledger),
    /// A file a previous daemon left that does not parse: kept, its links untouched.
    Unreadable(String),
}

pub(crate) struct Ledgers {
    run_dir: PathBuf,
    map: tokio::sync::Mutex<BTreeMap<String, Entry>>,
}

impl Ledgers {
    /// Reads every ledger file of `run_dir`. Blocking (small files in the run directory).
    pub fn load(run_dir: PathBuf) -> Ledgers {
        let map = ledger::domains(&run_dir)
            .into_iter()
            .filter_map(|d| {
                let entry = match ledger::load(&run_dir, &d) {
                    Ok(Some(l)) => Entry::Read(l),
                    Ok(None) => return None,
                    Err(e) => Entry::Unreadable(e.to_string()),
                };
                Some((d, entry))
            })
            .collect();
        Ledgers {
            run_dir,
            map: tokio::sync::Mutex::new(map),
        }
    }

    /// `domain`'s ledger, `None` if it has none; an error names why its file is unusable.
    pub async fn get(&self, domain: &str) -> Result<Option<Ledger>, String> {
        match self.map.lock().await.get(domain) {
            None => Ok(None),
            Some(Entry::Read(l)) => Ok(Some(l.clone())),
            Some(Entry::Unreadable(e)) => Err(e.clone()),
        }
    }

    /// Writes `domain`'s ledger file (atomically), then keeps it.
    pub async fn save(&self, domain: &str, l: &Ledger) -> io::Result<()> {
        let mut map = self.map.lock().await;
        self.write(domain, l).await?;
        map.insert(domain.to_owned(), Entry::Read(l.clone()));
        Ok(())
    }

    /// Changes `domain`'s ledger with `f` and writes it, only if it has one (one that was
    /// removed, with its guest, is not brought back). Whether it had one.
    pub async fn update(&self, domain: &str, f: impl FnOnce(&mut Ledger)) -> io::Result<bool> {
        let mut map = self.map.lock().await;
        let Some(Entry::Read(current)) = map.get(domain) else {
            return Ok(false);
        };
        let mut l = current.clone();
        f(&mut l);
        self.write(domain, &l).await?;
        map.insert(domain.to_owned(), Entry::Read(l));
        Ok(true)
    }

    /// The file write (callers hold the map's lock across it).
    async fn write(&self, domain: &str, l: &Ledger) -> io::Result<()> {
        let (dir, d, copy) = (self.run_dir.clone(), domain.to_owned(), l.clone());
        tokio::task::spawn_blocking(move || ledger::save(&dir, &d, &copy))
            .await
            .map_err(io::Error::other)?
    }

    /// Removes `domain`'s ledger file and entry.
    pub async fn remove(&self, domain: &str) {
        let mut map = self.map.lock().await;
        let (dir, d) = (self.run_dir.clone(), domain.to_owned());
        match tokio::task::spawn_blocking(move || ledger::remove(&dir, &d)).await {
            Ok(Ok(())) => {
                map.remove(domain);
            }
            Ok(Err(e)) => tracing::warn!(domain, error = %e, "cannot remove the NIC ledger"),
            Err(e) => tracing::warn!(domain, error = %e, "cannot remove the NIC ledger"),
        }
    }

    /// The domains that have a ledger file, readable or not.
    pub async fn domains(&self) -> Vec<String> {
        self.map.lock().await.keys().cloned().collect()
    }

    /// Every readable ledger but `except`'s.
    pub async fn all_but(&self, except: &str) -> Vec<(String, Ledger)> {
        self.map
            .lock()
            .await
            .iter()
            .filter(|(d, _)| d.as_str() != except)
            .filter_map(|(d, e)| match e {
                Entry::Read(l) => Some((d.clone(), l.clone())),
                Entry::Unreadable(_) => None,
            })
            .collect()
    }
}
