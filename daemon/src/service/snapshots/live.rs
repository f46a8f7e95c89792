//! QMP for snapshots of a running guest: overlays added as nodes over descriptors the daemon
//! opened (QEMU never opens an image by name), one `transaction` of `blockdev-snapshot`s,
//! block-commit jobs, the block graph, `blockdev-del` of dropped nodes.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use novacron_qmp::{Client, Event};
use serde_json::{json, Value};

pub type QmpResult<T> = Result<T, String>;

/// The `opaque` of the read-write descriptors [`ensure_writable`] adds.
const COMMIT_BASE: &str = "snapshot-commit-base";
/// The `opaque` of the read-only descriptor it puts back for a read-only base.
const BASE_READ_ONLY: &str = "snapshot-base-read-only";

fn err(cmd: &str, e: novacron_qmp::Error) -> String {
    format!("{cmd}: {e}")
}

pub async fn raw(q: &Client, cmd: &str, args: Value) -> QmpResult<Value> {
    q.execute_raw(cmd, Some(&args))
        .await
        .map_err(|e| err(cmd, e))
}

/// [`raw`] keeping QMP's typed error: only `Error::Qmp` (QEMU's error reply) says the command
/// did nothing; a timeout or a closed connection leaves it unknown.
pub async fn typed(q: &Client, cmd: &str, args: Value) -> Result<Value, novacron_qmp::Error> {
    q.execute_raw(cmd, Some(&args)).await
}

/// `remove-fd` of set `set` once QEMU holds its file: QEMU closes the daemon's descriptor and
/// keeps the set (empty) only while a node uses the file, so a deleted node leaves nothing
/// behind. Best effort: a set that stays only costs a descriptor.
pub async fn release_set(q: &Client, set: u64) {
    if let Err(e) = raw(q, "remove-fd", json!({ "fdset-id": set })).await {
        tracing::warn!(set, error = %e, "remove-fd");
    }
}

/// Removes every descriptor `opaque` names from QEMU's fd sets (the read-write ones added for
/// a commit, once the commit has reopened its base through them).
pub async fn release_fds(q: &Client, opaque: &str) {
    let Ok(sets) = raw(q, "query-fdsets", json!({})).await else {
        return;
    };
    for set in sets.as_array().into_iter().flatten() {
        for fd in set["fds"].as_array().into_iter().flatten() {
            if fd["opaque"] == opaque {
                let args = json!({"fdset-id": set["fdset-id"], "fd": fd["fd"]});
                if let Err(e) = raw(q, "remove-fd", args).await {
                    tracing::warn!(opaque, error = %e, "remove-fd");
                }
            }
        }
    }
}

/// Adds the overlay opened as `fd` as nodes `node` (qcow2, no backing yet) over
/// `node-storage` (file on an fd set). The set's descriptor goes once QEMU holds the file:
/// the overlay is read-write, so a later commit into it never reopens it through the set.
pub async fn add_overlay(q: &Client, fd: &OwnedFd, node: &str) -> QmpResult<()> {
    let info = q
        .add_fd(fd.as_fd(), None, Some(node))
        .await
        .map_err(|e| err("add-fd", e))?;
    let set = info.fdset_id;
    let storage = format!("{node}-storage");
    let r = async {
        raw(
            q,
            "blockdev-add",
            json!({"driver": "file", "node-name": storage, "filename": format!("/dev/fdset/{set}")}),
        )
        .await?;
        if let Err(e) = raw(
            q,
            "blockdev-add",
            json!({"driver": "qcow2", "node-name": node, "file": storage, "backing": null}),
        )
        .await
        {
            let _ = raw(q, "blockdev-del", json!({"node-name": storage})).await;
            return Err(e);
        }
        Ok(())
    }
    .await;
    release_set(q, set).await;
    r
}

/// Deletes a node we added and its storage node (errors ignored: best effort after a failure,
/// or a node already gone).
pub async fn del_nodes(q: &Client, node: &str) {
    if node.starts_with('#') {
        // An implicit backing node: QEMU frees it itself once nothing uses it.
        return;
    }
    if let Err(e) = raw(q, "blockdev-del", json!({"node-name": node})).await {
        tracing::warn!(node, error = %e, "blockdev-del");
    }
    let storage = format!("{node}-storage");
    if let Err(e) = raw(q, "blockdev-del", json!({"node-name": storage})).await {
        tracing::warn!(node = storage, error = %e, "blockdev-del");
    }
}

/// One transaction: every `(active node, overlay node)` pair at once (crash-consistent).
pub async fn snapshot_transaction(
    q: &Client,
    pairs: &[(String, String)],
) -> Result<(), novacron_qmp::Error> {
    let actions: Vec<Value> = pairs
        .iter()
        .map(|(node, overlay)| {
            json!({"type": "blockdev-snapshot", "data": {"node": node, "overlay": overlay}})
        })
        .collect();
    typed(q, "transaction", json!({ "actions": actions }))
        .await
        .map(drop)
}

/// The block graph: node names and backing edges.
pub struct Graph {
    nodes: Vec<(u64, String, String)>,
    edges: Vec<(u64, u64, String)>,
}

pub async fn graph(q: &Client) -> QmpResult<Graph> {
    let v = raw(q, "x-debug-query-block-graph", json!({})).await?;
    let nodes = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some((
                        n["id"].as_u64()?,
                        n["type"].as_str()?.to_owned(),
                        n["name"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let edges = v["edges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e["parent"].as_u64()?,
                        e["child"].as_u64()?,
                        e["name"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Graph { nodes, edges })
}

impl Graph {
    fn id(&self, name: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, t, n)| t == "block-driver" && n == name)
            .map(|(i, _, _)| *i)
    }

    /// Whether node `name` is in the graph.
    pub fn has(&self, name: &str) -> bool {
        self.id(name).is_some()
    }

    fn name(&self, id: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, _, n)| n.as_str())
    }

    /// Node names from `top` down its backing chain.
    pub fn chain(&self, top: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = self.id(top);
        while let Some(id) = at {
            let Some(name) = self.name(id) else { break };
            out.push(name.to_owned());
            at = self
                .edges
                .iter()
                .find(|(p, _, n)| *p == id && n == "backing")
                .map(|(_, c, _)| *c);
        }
        out
    }

    /// Whether `node` is the top node of a device (a block backend's root).
    pub fn is_device_top(&self, node: &str) -> bool {
        let Some(id) = self.id(node) else {
            return false;
        };
        self.edges.iter().any(|(p, c, _)| {
            *c == id
                && self
                    .nodes
                    .iter()
                    .any(|(i, t, _)| i == p && t == "block-backend")
        })
    }

    /// Whether a device or another image still uses `node` (jobs do not count).
    pub fn in_use(&self, node: &str) -> bool {
        let Some(id) = self.id(node) else {
            return false;
        };
        self.edges.iter().any(|(p, c, _)| {
            *c == id
                && self
                    .nodes
                    .iter()
                    .any(|(i, t, _)| i == p && t != "block-job")
        })
    }
}

/// The job `id` as `query-block-jobs` shows it: `(ready, offset, len)`.
pub async fn job(q: &Client, id: &str) -> QmpResult<Option<(bool, u64, u64)>> {
    let v = raw(q, "query-block-jobs", json!({})).await?;
    Ok(v.as_array().and_then(|a| {
        a.iter().find(|j| j["device"] == id).map(|j| {
            (
                j["ready"].as_bool().unwrap_or(false),
                j["offset"].as_u64().unwrap_or(0),
                j["len"].as_u64().unwrap_or(0),
            )
        })
    }))
}

fn job_event<'a>(names: &'a [&'a str], id: &'a str) -> impl FnMut(&Event) -> bool + 'a {
    move |e: &Event| names.contains(&e.name()) && e.data["device"] == id
}

/// Why a commit did not end well.
#[derive(Debug)]
pub enum CommitError {
    /// QEMU refused to start the job (its error reply): nothing was written, the chain is
    /// as it was.
    Refused(String),
    /// The job failed, or waiting for it did, or starting it got no answer.
    Failed(String),
}

/// Starts (unless `resume`) and drives one commit job to its end: an active commit is
/// completed when it reports ready. Events first, then the job list, so nothing is missed.
pub async fn commit(
    q: &Client,
    step: &super::meta::CommitStep,
    active_node: &str,
    speed: Option<u64>,
    resume: bool,
    timeout: Duration,
) -> Result<(), CommitError> {
    let id = step.job_id.clone().unwrap_or_default();
    let mut events = q.subscribe();
    if !resume {
        let mut args = json!({
            "job-id": id,
            "device": active_node,
            "base-node": step.base_node,
        });
        if !step.active {
            args["top-node"] = json!(step.top_node);
            // QEMU would write its own name for the base (/dev/fdset/N) into the header of
            // the image above; the path is what a later start opens.
            args["backing-file"] = json!(step.base);
        }
        if let Some(s) = speed {
            args["speed"] = json!(s);
        }
        let started = typed(q, "block-commit", args).await;
        // The base is reopened read-write (if it was read-only) when the job starts: the
        // descriptor ensure_writable added has done its work either way.
        release_fds(q, COMMIT_BASE).await;
        match started {
            Ok(_) => {}
            // Only QEMU's error reply says the job never started; with no answer (a timeout,
            // the connection closed) it may be merging: the journal must stay.
            Err(e @ novacron_qmp::Error::Qmp { .. }) => {
                return Err(CommitError::Refused(err("block-commit", e)))
            }
            Err(e) => return Err(CommitError::Failed(err("block-commit", e))),
        }
    }
    drive(q, step, &id, speed, resume, &mut events, timeout)
        .await
        .map_err(CommitError::Failed)
}

/// Drives the started commit job `id` to its end (see [`commit`]).
async fn drive(
    q: &Client,
    step: &super::meta::CommitStep,
    id: &str,
    speed: Option<u64>,
    resume: bool,
    events: &mut novacron_qmp::Subscription,
    timeout: Duration,
) -> QmpResult<()> {
    if resume {
        release_fds(q, COMMIT_BASE).await;
        match job(q, id).await? {
            Some((true, _, _)) if step.active => {
                raw(q, "job-complete", json!({ "id": id })).await?;
            }
            Some(_) => {
                if speed.is_none() {
                    let _ = raw(q, "block-job-set-speed", json!({"device": id, "speed": 0})).await;
                }
            }
            None => return Ok(()),
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = events
            .wait_for(
                left,
                job_event(
                    &["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR"],
                    id,
                ),
            )
            .await
            .map_err(|e| format!("waiting for block job {id}: {e}"))?;
        match e.name() {
            "BLOCK_JOB_READY" => {
                raw(q, "job-complete", json!({ "id": id })).await?;
            }
            "BLOCK_JOB_COMPLETED" => {
                return match e.data.get("error").and_then(Value::as_str) {
                    Some(why) => Err(format!("block job {id} failed: {why}")),
                    None => Ok(()),
                };
            }
            _ => {
                tracing::warn!(job = id, data = %e.data, "block job I/O error");
            }
        }
    }
}

/// Makes sure QEMU can reopen `node` (image `path`) read-write for a commit into it: an
/// image QEMU got as a backing file came through an fd set holding a read-only descriptor,
/// and QEMU reopens through the set; the daemon adds a read-write one to that set.
pub async fn ensure_writable(q: &Client, graph: &Graph, node: &str, path: &str) -> QmpResult<()> {
    let Some(id) = graph.id(node) else {
        return Err(format!("node {node} is not in the block graph"));
    };
    let Some(storage) = graph
        .edges
        .iter()
        .find(|(p, _, n)| *p == id && n == "file")
        .and_then(|(_, c, _)| graph.name(*c))
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let nodes = raw(q, "query-named-block-nodes", json!({"flat": true})).await?;
    let info = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node-name"] == storage.as_str()));
    let file = info
        .and_then(|n| n["file"].as_str())
        .unwrap_or_default()
        .to_owned();
    let Some(set) = file
        .strip_prefix("/dev/fdset/")
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let p = path.to_owned();
    let (fd, ro) = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&p)
                .map(OwnedFd::from)
        };
        // The read-only one always: `release_others` takes whatever the set held, and the
        // base may be reopened read-only later (a commit's end, a later snapshot).
        Ok::<_, std::io::Error>((open(true)?, open(false)?))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot open {path}: {e}"))?;
    q.add_fd(fd.as_fd(), Some(set), Some(COMMIT_BASE))
        .await
        .map_err(|e| err("add-fd", e))?;
    release_others(q, set).await;
    // A fresh read-only descriptor (no locks on it) for the commit's end, when QEMU reopens
    // a base that was read-only read-only again.
    q.add_fd(ro.as_fd(), Some(set), Some(BASE_READ_ONLY))
        .await
        .map_err(|e| err("add-fd", e))?;
    Ok(())
}

/// Removes the descriptors of set `set` other than the read-write ones [`ensure_writable`]
/// added: the read-only one a start (or a revert's `-incoming` QEMU, or an earlier commit)
/// put there for a backing image. QEMU's node uses a duplicate of it, i.e. the same open file description; when the
/// reopen switches the node to the read-write description, QEMU closes its duplicate without
/// unlocking, and the set's descriptor keeps the old description open with QEMU's image
/// locks on it (no one else may write). The commit's own write permission then meets that
/// foreign lock: 'Failed to get "write" lock' (with a raw base, whose write permission comes
/// after the reopen; a qcow2 base gets it within the reopen, unchecked). QEMU closes a removed
/// descriptor at once while the guest runs, otherwise at the set's next clean-up.
async fn release_others(q: &Client, set: u64) {
    let Ok(sets) = raw(q, "query-fdsets", json!({})).await else {
        return;
    };
    for s in sets.as_array().into_iter().flatten() {
        if s["fdset-id"].as_u64() != Some(set) {
            continue;
        }
        for fd in s["fds"].as_array().into_iter().flatten() {
            if fd["opaque"] != COMMIT_BASE {
                let args = json!({"fdset-id": set, "fd": fd["fd"]});
                if let Err(e) = raw(q, "remove-fd", args).await {
                    tracing::warn!(set, error = %e, "remove-fd");
                }
            }
        }
    }
}
