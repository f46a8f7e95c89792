//! Guest RAM layout: which RAM blocks exist (one per NUMA cell, or one for the whole guest)
//! and which QEMU memory backend each needs. Shared by validation (page-size divisibility)
//! and the argv builder (and the host layer's hugepage accounting), so they cannot disagree.

use crate::model::*;

/// Huge page size for a block: `Some(None)` = the host's default huge page size.
pub type HugeSize = Option<Option<u64>>;

/// One block of guest RAM and what backs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBlock {
    /// Guest NUMA cell, or `None` for the single non-NUMA block.
    pub cell: Option<usize>,
    pub hugepages: HugeSize,
    pub kib: u64,
    pub access: Option<MemoryAccess>,
}

fn hugepages_for(d: &DomainConfig, cell: Option<u32>) -> HugeSize {
    let pages = d.memory_backing.as_ref()?.hugepages.as_ref()?;
    if pages.is_empty() {
        return Some(None);
    }
    let by_node = cell.and_then(|c| {
        pages
            .iter()
            .find(|p| p.nodeset.as_ref().is_some_and(|n| n.contains(c)))
    });
    let by_node = by_node.or_else(|| match cell {
        // Without guest NUMA there is one node, 0.
        None => pages
            .iter()
            .find(|p| p.nodeset.as_ref().is_some_and(|n| n.contains(0))),
        Some(_) => None,
    });
    by_node
        .or_else(|| pages.iter().find(|p| p.nodeset.is_none()))
        .map(|p| Some(p.size_kib))
}

pub fn ram_blocks(d: &DomainConfig) -> Vec<RamBlock> {
    let backing_access = d.memory_backing.as_ref().and_then(|b| b.access);
    let cells = d
        .cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or_default();
    if cells.is_empty() {
        return vec![RamBlock {
            cell: None,
            hugepages: hugepages_for(d, None),
            kib: d.boot_memory_kib(),
            access: backing_access,
        }];
    }
    cells
        .iter()
        .enumerate()
        .map(|(i, c)| RamBlock {
            cell: Some(i),
            hugepages: hugepages_for(d, Some(c.id)),
            kib: c.memory_kib,
            access: c.mem_access.or(backing_access),
        })
        .collect()
}

/// Whether a non-NUMA guest needs an explicit backend object instead of plain `-m`.
pub(crate) fn needs_backend(d: &DomainConfig) -> bool {
    let b = d.memory_backing.as_ref();
    b.is_some_and(|b| {
        b.hugepages.is_some()
            || matches!(b.source, Some(MemorySource::File | MemorySource::Memfd))
            || b.access.is_some()
            || b.allocation == Some(MemoryAllocation::Immediate)
    }) || d
        .numatune
        .as_ref()
        .and_then(|n| n.memory.as_ref())
        .is_some_and(|m| m.mode != NumaMode::Restrictive)
}
