//! What backs a guest's RAM, from /proc/<pid>/smaps: the memory backend's own mapping (found
//! at the host address QEMU reports for the RAM block), its size and its kernel page size.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub size_kib: u64,
    /// The pathname column (empty for anonymous memory).
    pub name: String,
    pub kernel_page_kib: u64,
    /// `Shared_Hugetlb` + `Private_Hugetlb`: hugetlb memory faulted in.
    pub hugetlb_kib: u64,
    pub vm_flags: Vec<String>,
}

/// Every mapping of the process.
pub fn smaps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            // A header: "start-end perms offset dev inode [pathname]".
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let name = line
                    .split_whitespace()
                    .skip(5)
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(Mapping {
                    start: a,
                    size_kib: (b - a) >> 10,
                    name,
                    kernel_page_kib: 0,
                    hugetlb_kib: 0,
                    vm_flags: Vec::new(),
                });
                continue;
            }
        }
        let Some(m) = out.last_mut() else { continue };
        let value = || f.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "KernelPageSize:" => m.kernel_page_kib = value().unwrap_or(0),
            "Shared_Hugetlb:" | "Private_Hugetlb:" => m.hugetlb_kib += value().unwrap_or(0),
            "VmFlags:" => m.vm_flags = f.map(str::to_owned).collect(),
            _ => {}
        }
    }
    out
}

/// One row of QMP `x-query-ramblock`: `pc.ram  2 MiB  0x0 <used> <total>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBlock {
    pub name: String,
    pub page_kib: u64,
    pub used: u64,
    pub total: u64,
}

/// The rows of `x-query-ramblock`'s text.
pub fn ramblocks(text: &str) -> Vec<RamBlock> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let page: u64 = f.get(1)?.parse().ok()?;
            let page_kib = match *f.get(2)? {
                "KiB" => page,
                "MiB" => page << 10,
                "GiB" => page << 20,
                _ => return None,
            };
            let hex = |i: usize| u64::from_str_radix(f.get(i)?.strip_prefix("0x")?, 16).ok();
            Some(RamBlock {
                name: f[0].to_owned(),
                page_kib,
                used: hex(4)?,
                total: hex(5)?,
            })
        })
        .collect()
}

/// Waits (with a deadline) until the guest's RAM block `id` (the memory backend's id:
/// `pc.ram` without NUMA cells) is, by QEMU's account, `kib` on 2 MiB pages, and its mapping
/// in QEMU's smaps is one hugetlb mapping of exactly `kib` on 2 MiB pages with pages in it;
/// returns that mapping: the guest's whole RAM block, not just some page of it. QEMU 7.2
/// names every memfd `memory-backend-memfd` and reports no host address for a block, so
/// the mapping is the memfd mapping of the block's size (one backend per test guest).
pub async fn wait_ram_on_2m_pages(pid: u32, ramblock_text: &str, id: &str, kib: u64) -> Mapping {
    let block = ramblocks(ramblock_text)
        .into_iter()
        .find(|b| b.name == id)
        .unwrap_or_else(|| panic!("no RAM block {id} in:\n{ramblock_text}"));
    assert_eq!(
        (block.page_kib, block.used, block.total),
        (2048, kib << 10, kib << 10),
        "QEMU's RAM block {id}: page size (KiB), used and total bytes\n{ramblock_text}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let backends: Vec<Mapping> = smaps(pid)
            .into_iter()
            .filter(|m| m.name.starts_with("/memfd:memory-backend"))
            .collect();
        let found: Vec<&Mapping> = backends.iter().filter(|m| m.size_kib == kib).collect();
        let ok = found.len() == 1
            && found[0].kernel_page_kib == 2048
            && found[0].vm_flags.iter().any(|f| f == "ht")
            && found[0].hugetlb_kib >= 2048;
        if ok {
            return found[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "RAM block {id} is not one {kib} KiB hugetlb mapping on 2 MiB pages with pages in \
             it; memory backend mappings: {backends:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// QEMU's own view of the guest's RAM blocks (`x-query-ramblock`), through the service.
pub async fn query_ramblocks(svc: &novacrond::Service, domain: &str) -> String {
    svc.qmp_passthrough(domain, "x-query-ramblock", None)
        .await
        .unwrap()["human-readable-text"]
        .as_str()
        .unwrap()
        .to_owned()
}
