//! Hugepage accounting per host NUMA node: what a guest's RAM blocks draw from which pool,
//! whether those pools have room, and (when the configuration allows it) growing a pool by
//! what a guest needs before it starts and giving exactly that back when it stops.
//!
//! A block bound to host nodes (numatune strict, interleave or restrictive) can only get its
//! pages from those nodes' pools, so it is checked against them; an unbound block (no numatune
//! or `preferred`) may take pages from any node and is checked against the host-wide pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use novacron_domain::model::{DomainConfig, NumaMode};
use novacron_domain::qemu::ram_blocks;
use serde::{Deserialize, Serialize};

use super::fit::kib;
use super::topology::{SysfsRoot, Topology};

pub use crate::config::host::HugepageConfig;

/// One RAM block's need: `pages` pages of `size_kib` from `nodes` (any node when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// "guest memory" or "guest NUMA cell N", for messages.
    pub what: String,
    pub size_kib: u64,
    pub pages: u64,
    /// Host nodes the pages must come from; `None` = anywhere.
    pub nodes: Option<Vec<u32>>,
}

/// Pages this daemon added to a pool for one guest, given back when the guest stops. Kept in
/// the guest's runtime record so a restarted daemon still gives them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The node's pool, or the host-wide pool when `None`.
    pub node: Option<u32>,
    pub size_kib: u64,
    pub pages: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HugepageError {
    #[error("cannot resize the hugepage pool {}: {source}", path.display())]
    Resize {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Pools are host-wide state: resizes from concurrent starts and stops must not interleave
/// their read-modify-write of `nr_hugepages`.
static POOL_LOCK: Mutex<()> = Mutex::new(());

/// Host nodes a guest RAM block is confined to by numatune (`cell` is the block's cell index).
fn bound_nodes(config: &DomainConfig, cell: Option<usize>) -> Option<Vec<u32>> {
    let nt = config.numatune.as_ref()?;
    let memnode = cell.and_then(|c| {
        nt.memnodes
            .iter()
            .find(|m| usize::try_from(m.cellid).ok() == Some(c))
    });
    let (mode, set) = match (memnode, &nt.memory) {
        (Some(m), _) => (m.mode, &m.nodeset),
        (None, Some(p)) => (p.mode, &p.nodeset),
        (None, None) => return None,
    };
    match mode {
        NumaMode::Strict | NumaMode::Interleave | NumaMode::Restrictive => {
            Some(set.iter().collect())
        }
        NumaMode::Preferred => None,
    }
}

/// What each hugepage-backed RAM block of `config` needs. `<hugepages/>` without a size means
/// the host's default size: the smallest pool it has (2 MiB on x86).
pub fn demand(config: &DomainConfig, topo: &Topology) -> Vec<Demand> {
    let default = topo.hugepage_sizes_kib().first().copied();
    ram_blocks(config)
        .into_iter()
        .filter_map(|b| {
            let size_kib = b.hugepages?.or(default).filter(|s| *s > 0)?;
            let what = match b.cell {
                Some(i) => {
                    let id = config
                        .cpu
                        .as_ref()
                        .and_then(|c| c.numa.get(i))
                        .map_or(i as u64, |c| u64::from(c.id));
                    format!("guest NUMA cell {id}")
                }
                None => "guest memory".to_owned(),
            };
            Some(Demand {
                what,
                size_kib,
                pages: b.kib.div_ceil(size_kib),
                nodes: bound_nodes(config, b.cell),
            })
        })
        .collect()
}

/// Demands summed per (size, node set): two cells bound to the same node share its pool.
fn grouped(demands: &[Demand]) -> Vec<Demand> {
    let mut out: Vec<Demand> = Vec::new();
    for d in demands {
        match out
            .iter_mut()
            .find(|o| o.size_kib == d.size_kib && o.nodes == d.nodes)
        {
            Some(o) => {
                o.pages = o.pages.saturating_add(d.pages);
                o.what = format!("{} and {}", o.what, d.what);
            }
            None => out.push(d.clone()),
        }
    }
    out
}

fn free_on(topo: &Topology, node: u32, size_kib: u64) -> u64 {
    topo.node(node)
        .and_then(|n| n.hugepages.iter().find(|p| p.size_kib == size_kib))
        .map_or(0, |p| p.free)
}

/// Free pages nobody has claimed: a QEMU that mapped hugepage memory without touching it
/// holds a reservation (`resv_hugepages`) that `free_hugepages` still counts.
fn free_host(topo: &Topology, size_kib: u64) -> u64 {
    topo.hugepages
        .iter()
        .find(|p| p.size_kib == size_kib)
        .map_or(0, |p| p.free.saturating_sub(p.reserved.unwrap_or(0)))
}

/// The sysfs directory of a pool.
pub fn pool_dir(root: &SysfsRoot, node: Option<u32>, size_kib: u64) -> PathBuf {
    let leaf = format!("hugepages-{size_kib}kB");
    match node {
        Some(n) => root
            .path()
            .join(format!("devices/system/node/node{n}/hugepages"))
            .join(leaf),
        None => root.path().join("kernel/mm/hugepages").join(leaf),
    }
}

/// Whether a node's pool is a real per-node pool (the host has NUMA directories).
fn per_node(topo: &Topology) -> bool {
    !topo.nodes.iter().any(|n| n.implicit)
}

/// Every pool too small for `demands`, one sentence each naming the pool's sysfs directory.
pub fn shortfalls(demands: &[Demand], topo: &Topology, root: &SysfsRoot) -> Vec<String> {
    let mut why = Vec::new();
    let sizes = topo.hugepage_sizes_kib();
    // Unknown sizes are reported by the fit check's page-size sentence.
    let demands: Vec<Demand> = demands
        .iter()
        .filter(|d| sizes.contains(&d.size_kib))
        .cloned()
        .collect();
    for d in grouped(&demands) {
        if let (Some(nodes), true) = (&d.nodes, per_node(topo)) {
            let free: u64 = nodes.iter().map(|n| free_on(topo, *n, d.size_kib)).sum();
            if free < d.pages {
                let pools: Vec<String> = nodes
                    .iter()
                    .map(|n| pool_dir(root, Some(*n), d.size_kib).display().to_string())
                    .collect();
                why.push(format!(
                    "{} needs {} free {} hugepages on host node(s) {}, but they have {free} free ({})",
                    d.what,
                    d.pages,
                    kib(d.size_kib),
                    nodes
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    pools.join(", ")
                ));
            }
        }
    }
    // Every page comes out of the host-wide pool too.
    let mut per_size: Vec<(u64, u64)> = Vec::new();
    for d in &demands {
        match per_size.iter_mut().find(|(s, _)| *s == d.size_kib) {
            Some((_, p)) => *p = p.saturating_add(d.pages),
            None => per_size.push((d.size_kib, d.pages)),
        }
    }
    for (size, pages) in per_size {
        let free = free_host(topo, size);
        if free < pages {
            why.push(format!(
                "the domain needs {pages} free {} hugepages for {} of memory, but the host has \
                 {free} free ({})",
                kib(size),
                kib(pages.saturating_mul(size)),
                pool_dir(root, None, size).display()
            ));
        }
    }
    why
}

/// Grows the pools `demands` fall short on by the shortfall, per node where the demand is
/// bound to nodes (the first of its nodes), else host-wide. Returns what was added (the kernel
/// may add fewer pages than asked when memory is fragmented; the fit check then refuses).
/// On an error, what was already added is given back.
pub fn reserve(
    root: &SysfsRoot,
    topo: &Topology,
    demands: &[Demand],
) -> Result<Vec<Grant>, HugepageError> {
    let _lock = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let sizes = topo.hugepage_sizes_kib();
    let mut grants: Vec<Grant> = Vec::new();
    let mut host_needed: Vec<(u64, u64)> = Vec::new();
    for d in grouped(demands)
        .into_iter()
        .filter(|d| sizes.contains(&d.size_kib))
    {
        match (&d.nodes, per_node(topo)) {
            (Some(nodes), true) => {
                let free: u64 = nodes.iter().map(|n| free_on(topo, *n, d.size_kib)).sum();
                let short = d.pages.saturating_sub(free);
                if let (Some(node), true) = (nodes.first(), short > 0) {
                    match grow(root, Some(*node), d.size_kib, short) {
                        Ok(g) => grants.extend(g),
                        Err(e) => {
                            release_locked(root, &grants);
                            return Err(e);
                        }
                    }
                }
            }
            _ => match host_needed.iter_mut().find(|(s, _)| *s == d.size_kib) {
                Some((_, p)) => *p = p.saturating_add(d.pages),
                None => host_needed.push((d.size_kib, d.pages)),
            },
        }
    }
    for (size, pages) in host_needed {
        // Pages added to nodes above count towards the host-wide free count too.
        let added: u64 = grants
            .iter()
            .filter(|g| g.size_kib == size)
            .map(|g| g.pages)
            .sum();
        let bound: u64 = demands
            .iter()
            .filter(|d| d.size_kib == size && d.nodes.is_some() && per_node(topo))
            .map(|d| d.pages)
            .sum();
        let free = free_host(topo, size).saturating_add(added);
        let short = pages.saturating_add(bound).saturating_sub(free);
        if short > 0 {
            match grow(root, None, size, short) {
                Ok(g) => grants.extend(g),
                Err(e) => {
                    release_locked(root, &grants);
                    return Err(e);
                }
            }
        }
    }
    Ok(grants)
}

/// Raises one pool's `nr_hugepages` by `pages`; the grant is what the kernel really added.
fn grow(
    root: &SysfsRoot,
    node: Option<u32>,
    size_kib: u64,
    pages: u64,
) -> Result<Option<Grant>, HugepageError> {
    let path = pool_dir(root, node, size_kib).join("nr_hugepages");
    let err = |source| HugepageError::Resize {
        path: path.clone(),
        source,
    };
    let before = read_count(&path).map_err(err)?;
    write_count(&path, before.saturating_add(pages)).map_err(err)?;
    let after = read_count(&path).map_err(err)?;
    let added = after.saturating_sub(before);
    tracing::info!(pool = %path.display(), before, after, asked = pages, "grew hugepage pool");
    Ok((added > 0).then_some(Grant {
        node,
        size_kib,
        pages: added,
    }))
}

/// Gives back what [`reserve`] added; failures are logged (a stop must not fail over it).
pub fn release(root: &SysfsRoot, grants: &[Grant]) {
    if grants.is_empty() {
        return;
    }
    let _lock = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    release_locked(root, grants);
}

fn release_locked(root: &SysfsRoot, grants: &[Grant]) {
    for g in grants {
        let path = pool_dir(root, g.node, g.size_kib).join("nr_hugepages");
        let result = read_count(&path)
            .and_then(|now| write_count(&path, now.saturating_sub(g.pages)).map(|()| now));
        match result {
            Ok(now) => tracing::info!(
                pool = %path.display(),
                before = now,
                returned = g.pages,
                "gave back hugepages"
            ),
            Err(e) => tracing::warn!(
                pool = %path.display(),
                pages = g.pages,
                error = %e,
                "cannot give back hugepages"
            ),
        }
    }
}

fn read_count(path: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("'{}' is not a page count", text.trim()),
        )
    })
}

fn write_count(path: &Path, pages: u64) -> std::io::Result<()> {
    std::fs::write(path, pages.to_string())
}
