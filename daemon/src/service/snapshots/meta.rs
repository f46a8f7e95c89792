//! Our own snapshot metadata, one JSON file per domain (`<state>/snapshots/<domain>/tree.json`,
//! written atomically): the tree (parent, children, current), per snapshot the file each disk
//! was frozen in, the active top file of each disk, every file we know with its backing file,
//! who made it and how many references it has, the live node names of the running QEMU, and
//! the journal of a block job in flight. A file is unlinked only when it is ours and no
//! snapshot, disk or other file refers to it (virt-manager#811: users lost base images when a
//! tool deleted what was still a backing file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use novacron_domain::model::DiskFormat;
use novacron_domain::snapshot::SnapshotState;
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

/// One kind per domain tree: external overlays (disk-only now; RAM state files later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeKind {
    #[default]
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapKind {
    DiskOnly,
    /// With the guest's RAM (issue 19): `memory_file` is set.
    Memory,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub version: u32,
    pub kind: TreeKind,
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub snapshots: BTreeMap<String, Snap>,
    /// Path -> what we know of it.
    #[serde(default)]
    pub files: BTreeMap<String, FileRec>,
    /// Disk target -> its active (top) file now.
    #[serde(default)]
    pub active: BTreeMap<String, String>,
    /// Node names in the running QEMU, valid for that process only.
    #[serde(default)]
    pub live: Option<LiveNodes>,
    /// Counter for overlay node names (`nc{n}`) and file names.
    #[serde(default)]
    pub next: u64,
    /// A block job in flight, written before it starts.
    #[serde(default)]
    pub journal: Option<Journal>,
    /// A RAM state file being written, recorded before QEMU gets its descriptor: a restart
    /// removes the partial file and resumes a guest the save paused (see `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_memory: Option<PendingMemory>,
    /// A revert to a full snapshot whose state is being loaded: its fresh overlays, made
    /// before anything else changed and adopted only once the load is done. A restart
    /// removes them (the guest stays off on the disks it had; see `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_revert: Option<PendingRevert>,
}

/// A revert's fresh overlays, not yet the disks' files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRevert {
    pub snapshot: String,
    pub overlays: Vec<String>,
    /// Overlay -> the snapshot's file it is made over: the backing its header must name for
    /// a recovery to remove it (a file under the name without it is not the revert's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backing: BTreeMap<String, String>,
}

/// A full snapshot's RAM save in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMemory {
    pub snapshot: String,
    /// The temporary name QEMU writes to (renamed to the final one once fsync'd).
    pub temp_file: String,
    /// The guest ran before the save paused it: resumed by recovery.
    pub was_running: bool,
    /// The QEMU process the save was for (a restarted guest is not resumed).
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snap {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub children: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub kind: SnapKind,
    pub state: SnapshotState,
    /// The guest's filesystems were frozen by its agent while the snapshot was taken.
    pub quiesced: bool,
    /// Per disk target: the file holding the disk as it was at this snapshot.
    pub disks: BTreeMap<String, SnapDisk>,
    /// Overlay made for each disk when this snapshot was taken (what became active).
    #[serde(default)]
    pub overlays: BTreeMap<String, String>,
    /// The RAM state file of a full snapshot.
    #[serde(default)]
    pub memory_file: Option<String>,
    /// A full snapshot: the domain as QEMU had it then (libvirt XML; hot-plugged vCPUs,
    /// memory devices and disks included), the device set a revert starts QEMU with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_xml: Option<String>,
    /// A full snapshot of a guest with hot-added vCPUs: the count the revert's QEMU plugs
    /// before the load (it starts with `domain_xml`'s current count, see
    /// `migration::DeviceSet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_vcpus: Option<u32>,
    /// A live full snapshot: how long the guest was paused (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapDisk {
    pub file: String,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRec {
    pub format: DiskFormat,
    #[serde(default)]
    pub backing: Option<String>,
    /// Made by the daemon (an overlay): may be unlinked when no longer referenced. A file we
    /// did not make (the user's base image) is never unlinked.
    pub owned: bool,
    /// Snapshots freezing it + disks using it as top + known files backed by it.
    pub refs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveNodes {
    pub pid: u32,
    pub start_time: u64,
    /// File -> its format node; the storage node is `{node}-storage`.
    pub nodes: BTreeMap<String, String>,
}

/// An operation on the tree that a crash may interrupt, recorded before it changes anything
/// outside the tree: a deletion's block jobs (before the first starts), a creation's overlays
/// (before the first file is made). Recovery (`recover`) finishes or rolls it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub op: JournalOp,
    pub snapshot: String,
    /// Delete: one merge per disk.
    #[serde(default)]
    pub steps: Vec<CommitStep>,
    /// Create: one overlay per disk, over the file it freezes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<OverlayStep>,
    /// Create: the snapshot the tree gets when the overlays stay. None for a snapshot with
    /// memory: its RAM save (`Tree::pending_memory`) is rolled back, its overlays stay as
    /// plain layers (as a RAM save QEMU refuses after the switch leaves them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap: Option<Box<Snap>>,
    /// Create on a running guest: the QEMU whose disks switch (its block graph tells whether
    /// they did; another process's says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalOp {
    Delete,
    Create,
}

/// One disk's part of a snapshot being taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayStep {
    pub target: String,
    /// The active file before: frozen by the snapshot.
    pub file: String,
    pub format: DiskFormat,
    /// The new qcow2 over `file`: the disk's active file once switched.
    pub overlay: String,
    /// Its format node in QEMU (running guests).
    pub node: String,
}

/// A QEMU process, as `LiveNodes` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuId {
    pub pid: u32,
    pub start_time: u64,
}

/// One disk's merge: `top`'s data goes into `base` (its backing file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStep {
    pub disk: String,
    pub top: String,
    pub base: String,
    /// Live only: the QEMU job and node names.
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub top_node: Option<String>,
    #[serde(default)]
    pub base_node: Option<String>,
    /// `top` is the disk's active layer (an active commit, completed on BLOCK_JOB_READY).
    pub active: bool,
    #[serde(default)]
    pub done: bool,
}

pub fn dir(state_dir: &Path, domain: &str) -> PathBuf {
    state_dir.join("snapshots").join(domain)
}

pub fn path(state_dir: &Path, domain: &str) -> PathBuf {
    dir(state_dir, domain).join("tree.json")
}

/// Blocking: reads the tree (an empty one when there is none).
pub fn load(state_dir: &Path, domain: &str) -> std::io::Result<Tree> {
    match std::fs::read(path(state_dir, domain)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tree {
            version: VERSION,
            ..Tree::default()
        }),
        Err(e) => Err(e),
    }
}

/// Blocking: writes the tree atomically (temp file, fsync, rename, fsync the directory).
pub fn save(state_dir: &Path, domain: &str, tree: &Tree) -> std::io::Result<()> {
    let d = dir(state_dir, domain);
    std::fs::create_dir_all(&d)?;
    let bytes = serde_json::to_vec_pretty(tree).map_err(std::io::Error::other)?;
    crate::persist::atomic::write_atomic(&d.join("tree.json"), &bytes, 0o600)
}

impl Tree {
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.journal.is_none() && self.pending_memory.is_none()
    }

    /// RAM state files no snapshot refers to any more (unlinked once the tree is saved).
    pub fn memory_files_unused(&self, candidates: &[String]) -> Vec<String> {
        candidates
            .iter()
            .filter(|f| {
                !self
                    .snapshots
                    .values()
                    .any(|s| s.memory_file.as_deref() == Some(f.as_str()))
            })
            .cloned()
            .collect()
    }

    /// Recomputes every file's reference count from the structure.
    pub fn recount(&mut self) {
        let mut refs: BTreeMap<String, u32> = BTreeMap::new();
        for s in self.snapshots.values() {
            for d in s.disks.values() {
                *refs.entry(d.file.clone()).or_default() += 1;
            }
        }
        for f in self.active.values() {
            *refs.entry(f.clone()).or_default() += 1;
        }
        for f in self.files.values() {
            if let Some(b) = &f.backing {
                *refs.entry(b.clone()).or_default() += 1;
            }
        }
        for (p, f) in &mut self.files {
            f.refs = refs.get(p).copied().unwrap_or(0);
        }
    }

    /// Drops unreferenced files from the map (cascading down backing chains); returns the
    /// ones we made, which the caller unlinks *after* this tree is on disk. Files we did not
    /// make are forgotten, never returned.
    pub fn collect_garbage(&mut self) -> Vec<String> {
        let mut unlink = Vec::new();
        loop {
            self.recount();
            let dead: Vec<String> = self
                .files
                .iter()
                .filter(|(_, f)| f.refs == 0)
                .map(|(p, _)| p.clone())
                .collect();
            if dead.is_empty() {
                return unlink;
            }
            for p in dead {
                if let Some(f) = self.files.remove(&p) {
                    if f.owned {
                        unlink.push(p.clone());
                    }
                }
                if let Some(live) = &mut self.live {
                    live.nodes.remove(&p);
                }
            }
        }
    }

    /// Files whose backing file is `file`.
    pub fn dependents(&self, file: &str) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, f)| f.backing.as_deref() == Some(file))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Removes `name` from the tree: its children move to its parent; the current snapshot
    /// moves to its parent when it was the one removed.
    pub fn unlink_snapshot(&mut self, name: &str) {
        let Some(s) = self.snapshots.remove(name) else {
            return;
        };
        for c in &s.children {
            if let Some(child) = self.snapshots.get_mut(c) {
                child.parent = s.parent.clone();
            }
        }
        if let Some(p) = s.parent.as_ref().and_then(|p| self.snapshots.get_mut(p)) {
            p.children.retain(|c| c != name);
            p.children.extend(s.children.iter().cloned());
        }
        if self.current.as_deref() == Some(name) {
            self.current = s.parent.clone();
        }
    }

    /// Every reference to `from` becomes one to `to` (after `from` was merged into `to`).
    pub fn redirect(&mut self, from: &str, to: &str) {
        for s in self.snapshots.values_mut() {
            for d in s.disks.values_mut() {
                if d.file == from {
                    d.file = to.to_owned();
                }
            }
        }
        for a in self.active.values_mut() {
            if a == from {
                *a = to.to_owned();
            }
        }
        for f in self.files.values_mut() {
            if f.backing.as_deref() == Some(from) {
                f.backing = Some(to.to_owned());
            }
        }
    }

    /// The tree as text, `virsh snapshot-list --tree` style.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let roots: Vec<&Snap> = self
            .snapshots
            .values()
            .filter(|s| s.parent.is_none())
            .collect();
        for r in roots {
            self.render_one(r, "", true, true, &mut out);
        }
        out
    }

    fn render_one(&self, s: &Snap, prefix: &str, last: bool, root: bool, out: &mut String) {
        if root {
            out.push_str(&s.name);
        } else {
            out.push_str(&format!(
                "{prefix}{}{}",
                if last { "└─ " } else { "├─ " },
                s.name
            ));
        }
        if self.current.as_deref() == Some(&s.name) {
            out.push_str(" (current)");
        }
        out.push('\n');
        let child_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        let mut kids: Vec<&Snap> = s
            .children
            .iter()
            .filter_map(|c| self.snapshots.get(c))
            .collect();
        kids.sort_by_key(|k| (k.created, k.name.clone()));
        let n = kids.len();
        for (i, k) in kids.into_iter().enumerate() {
            self.render_one(k, &child_prefix, i + 1 == n, false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(backing: Option<&str>, owned: bool) -> FileRec {
        FileRec {
            format: DiskFormat::Qcow2,
            backing: backing.map(str::to_owned),
            owned,
            refs: 0,
        }
    }

    fn snap(name: &str, parent: Option<&str>, frozen: &str) -> Snap {
        Snap {
            name: name.into(),
            description: None,
            parent: parent.map(str::to_owned),
            children: Vec::new(),
            created: 0,
            kind: SnapKind::DiskOnly,
            state: SnapshotState::DiskSnapshot,
            quiesced: false,
            disks: [(
                "vda".to_owned(),
                SnapDisk {
                    file: frozen.into(),
                    format: DiskFormat::Qcow2,
                },
            )]
            .into(),
            overlays: BTreeMap::new(),
            memory_file: None,
            domain_xml: None,
            live_vcpus: None,
            downtime_ms: None,
        }
    }

    #[test]
    fn a_referenced_file_is_never_collected_and_the_base_never_unlinked() {
        let mut t = Tree::default();
        t.files.insert("base".into(), file(None, false));
        t.files.insert("o1".into(), file(Some("base"), true));
        t.files.insert("o2".into(), file(Some("o1"), true));
        t.snapshots.insert("s1".into(), snap("s1", None, "base"));
        t.active.insert("vda".into(), "o2".into());
        // o1 is no snapshot's and no disk's, but o2 is backed by it.
        assert!(t.collect_garbage().is_empty());
        assert_eq!(t.files["o1"].refs, 1);
        assert_eq!(t.files["base"].refs, 2);
        // The disk moves away (a revert onto a fresh overlay over base): o2 and o1 go, base stays.
        t.files.insert("o3".into(), file(Some("base"), true));
        t.active.insert("vda".into(), "o3".into());
        let mut gone = t.collect_garbage();
        gone.sort();
        assert_eq!(gone, ["o1", "o2"]);
        t.unlink_snapshot("s1");
        t.active.clear();
        // The base is forgotten, never returned for unlinking.
        assert_eq!(t.collect_garbage(), ["o3"]);
        assert!(t.files.is_empty());
    }

    #[test]
    fn removing_a_middle_snapshot_reparents_its_children() {
        let mut t = Tree::default();
        t.snapshots.insert("a".into(), snap("a", None, "f0"));
        t.snapshots.insert("b".into(), snap("b", Some("a"), "f1"));
        t.snapshots.insert("c".into(), snap("c", Some("b"), "f2"));
        t.snapshots.get_mut("a").unwrap().children = vec!["b".into()];
        t.snapshots.get_mut("b").unwrap().children = vec!["c".into()];
        t.current = Some("b".into());
        t.unlink_snapshot("b");
        assert_eq!(t.snapshots["a"].children, ["c"]);
        assert_eq!(t.snapshots["c"].parent.as_deref(), Some("a"));
        assert_eq!(t.current.as_deref(), Some("a"));
        assert_eq!(t.render(), "a (current)\n└─ c\n");
    }
}
