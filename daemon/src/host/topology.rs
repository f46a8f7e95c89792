//! Host topology from sysfs: CPUs, NUMA nodes, hugepage pools, PCI devices and IOMMU groups.
//!
//! Everything is read below a configurable root ([`SysfsRoot`], `/sys` in production) so the
//! same code runs against a recorded tree in tests. Missing files are normal (offline CPUs have
//! no `topology/`, hosts without NUMA have no `node/` directory) and odd content never panics:
//! a value that does not parse is treated as absent.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::HostError;

/// Largest CPU or node id accepted (as the domain model's id sets).
pub const MAX_ID: u32 = novacron_domain::model::ids::MAX_SET_ID;
/// Sysfs attribute files are a page at most; the cap bounds what an odd tree can make us read.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Bound on entries examined per directory.
const MAX_DIR_ENTRIES: usize = 1 << 16;

/// Where sysfs is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot(pub PathBuf);

impl Default for SysfsRoot {
    fn default() -> Self {
        SysfsRoot(PathBuf::from("/sys"))
    }
}

impl SysfsRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SysfsRoot(path.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    fn cpu_dir(&self) -> PathBuf {
        self.0.join("devices/system/cpu")
    }
    fn node_dir(&self) -> PathBuf {
        self.0.join("devices/system/node")
    }
    fn memory_dir(&self) -> PathBuf {
        self.0.join("devices/system/memory")
    }
    fn hugepages_dir(&self) -> PathBuf {
        self.0.join("kernel/mm/hugepages")
    }
    fn pci_dir(&self) -> PathBuf {
        self.0.join("bus/pci/devices")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Sorted by id.
    pub cpus: Vec<Cpu>,
    /// Sorted by id. A host without NUMA gets one implicit node 0 holding every CPU.
    pub nodes: Vec<Node>,
    /// Host-wide hugepage pools (`/sys/kernel/mm/hugepages`), sorted by size.
    pub hugepages: Vec<HugepagePool>,
    /// Sorted by address.
    pub pci: Vec<PciDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    pub id: u32,
    pub online: bool,
    /// `None` where the kernel does not say (offline CPUs have no `topology/`).
    pub core_id: Option<u32>,
    pub die_id: Option<u32>,
    pub socket_id: Option<u32>,
    /// Hardware threads sharing this CPU's core, this CPU included.
    pub thread_siblings: Vec<u32>,
    pub node: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: u32,
    pub cpus: Vec<u32>,
    /// `None` when unknown (no `meminfo`, or an implicit node without memory block info).
    pub memory_total_bytes: Option<u64>,
    /// The kernel's SLIT row: distance to node `nodes[i]`, in the order the file lists them
    /// (node ids ascending); empty when unknown.
    pub distances: Vec<u32>,
    /// Per-node pools, sorted by size.
    pub hugepages: Vec<HugepagePool>,
    /// True when the host has no NUMA information and this node stands for the whole host.
    pub implicit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepagePool {
    pub size_kib: u64,
    /// `nr_hugepages`.
    pub total: u64,
    /// `free_hugepages`.
    pub free: u64,
    /// `surplus_hugepages`.
    pub surplus: u64,
    /// `resv_hugepages`: only the host-wide pools have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// `dddd:bb:ss.f`.
    pub address: String,
    /// e.g. `0x10de`.
    pub vendor: String,
    pub device: String,
    /// e.g. `0x030000`.
    pub class: String,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
}

impl Topology {
    /// Reads the topology below `root`. Fails only when the CPU directory itself is unreadable;
    /// everything else that is missing is reported as absent.
    pub fn read(root: &SysfsRoot) -> Result<Topology, HostError> {
        let cpu_dir = root.cpu_dir();
        let cpu_ids = numbered_entries(&cpu_dir, "cpu").map_err(|source| HostError::Sysfs {
            path: cpu_dir.clone(),
            source,
        })?;
        let global_online = read_attr(&cpu_dir.join("online")).and_then(|s| parse_cpulist(&s).ok());

        let mut nodes = read_nodes(root);
        let hugepages = read_pools(&root.hugepages_dir(), true);
        let mut cpus: Vec<Cpu> = cpu_ids
            .into_iter()
            .map(|id| read_cpu(&cpu_dir, id, global_online.as_deref()))
            .collect();
        if nodes.is_empty() {
            nodes.push(Node {
                id: 0,
                cpus: cpus.iter().map(|c| c.id).collect(),
                memory_total_bytes: implicit_memory(&root.memory_dir()),
                distances: vec![10],
                hugepages: hugepages
                    .iter()
                    .map(|p| HugepagePool {
                        reserved: None,
                        ..p.clone()
                    })
                    .collect(),
                implicit: true,
            });
        }
        for cpu in &mut cpus {
            if cpu.node.is_none() {
                cpu.node = nodes
                    .iter()
                    .find(|n| n.cpus.binary_search(&cpu.id).is_ok())
                    .map(|n| n.id);
            }
        }
        // CPUs found only through their `nodeN` link still belong to that node's list.
        for cpu in &cpus {
            if let Some(n) = cpu
                .node
                .and_then(|id| nodes.iter_mut().find(|n| n.id == id))
            {
                if let Err(at) = n.cpus.binary_search(&cpu.id) {
                    n.cpus.insert(at, cpu.id);
                }
            }
        }
        Ok(Topology {
            cpus,
            nodes,
            hugepages,
            pci: read_pci(&root.pci_dir()),
        })
    }

    pub fn cpu(&self, id: u32) -> Option<&Cpu> {
        self.cpus
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.cpus[i])
    }

    pub fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn online_cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.cpus.iter().filter(|c| c.online).map(|c| c.id)
    }

    /// Sum of node memory, `None` when any node's is unknown.
    pub fn memory_total_bytes(&self) -> Option<u64> {
        self.nodes
            .iter()
            .try_fold(0u64, |acc, n| acc.checked_add(n.memory_total_bytes?))
    }

    /// Every hugepage size the host has a pool for (host-wide or on any node), ascending.
    pub fn hugepage_sizes_kib(&self) -> Vec<u64> {
        let mut sizes: Vec<u64> = self
            .hugepages
            .iter()
            .chain(self.nodes.iter().flat_map(|n| n.hugepages.iter()))
            .map(|p| p.size_kib)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// Distance between two nodes from the SLIT, if known.
    pub fn distance(&self, from: u32, to: u32) -> Option<u32> {
        let row = &self.node(from)?.distances;
        let col = self.nodes.iter().position(|n| n.id == to)?;
        row.get(col).copied()
    }

    /// The PCI devices in IOMMU group `group`, by address.
    pub fn iommu_group(&self, group: u32) -> Vec<&PciDevice> {
        self.pci
            .iter()
            .filter(|d| d.iommu_group == Some(group))
            .collect()
    }

    /// Distinct sockets among CPUs that report one.
    pub fn sockets(&self) -> Vec<u32> {
        let mut s: Vec<u32> = self.cpus.iter().filter_map(|c| c.socket_id).collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// Parses a kernel cpulist/nodelist ("0-3,8-11", "", "5"), sorted and deduplicated. Ids above
/// [`MAX_ID`], reversed ranges and junk are errors; surrounding whitespace is ignored.
pub fn parse_cpulist(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    let id = |t: &str| -> Result<u32, String> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("'{s}': '{t}' is not a CPU id"));
        }
        match t.parse::<u32>() {
            Ok(v) if v <= MAX_ID => Ok(v),
            _ => Err(format!("'{s}': id {t} exceeds {MAX_ID}")),
        }
    };
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if b < a {
                    return Err(format!("'{s}': range {a}-{b} is reversed"));
                }
                out.extend(a..=b);
            }
            None => out.push(id(part)?),
        }
        if out.len() > (MAX_ID as usize + 1) * 2 {
            // Overlapping ranges repeated many times; dedup keeps the real size bounded.
            out.sort_unstable();
            out.dedup();
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Reads a small attribute file, trimmed; `None` when missing, unreadable, too big or not UTF-8.
fn read_attr(path: &Path) -> Option<String> {
    let file = fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut buf).ok()?;
    String::from_utf8(buf).ok().map(|s| s.trim().to_owned())
}

fn read_u32(path: &Path) -> Option<u32> {
    read_attr(path)?.parse().ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_attr(path)?.parse().ok()
}

/// The basename of a symlink's target (`driver -> ../../bus/pci/drivers/vfio-pci`).
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name()?.to_str().map(str::to_owned)
}

/// Ids N of the entries `<prefix>N` in `dir`, sorted; entries that are not exactly that are
/// skipped (`cpufreq`, `cpuidle`, `possible`...).
fn numbered_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)?.take(MAX_DIR_ENTRIES) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(id) = rest.parse::<u32>() {
            if id <= MAX_ID {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn read_cpu(cpu_dir: &Path, id: u32, global_online: Option<&[u32]>) -> Cpu {
    let dir = cpu_dir.join(format!("cpu{id}"));
    // cpu0 often has no `online` file (it cannot be offlined): present means online.
    let online = match read_attr(&dir.join("online")) {
        Some(v) => v == "1",
        None => global_online.is_none_or(|list| list.binary_search(&id).is_ok()),
    };
    let topo = dir.join("topology");
    let thread_siblings = read_attr(&topo.join("thread_siblings_list"))
        .and_then(|s| parse_cpulist(&s).ok())
        .unwrap_or_default();
    let node = numbered_entries(&dir, "node")
        .ok()
        .and_then(|ids| ids.first().copied());
    Cpu {
        id,
        online,
        core_id: read_u32(&topo.join("core_id")),
        die_id: read_u32(&topo.join("die_id")),
        socket_id: read_u32(&topo.join("physical_package_id")),
        thread_siblings,
        node,
    }
}

fn read_nodes(root: &SysfsRoot) -> Vec<Node> {
    let dir = root.node_dir();
    let Ok(ids) = numbered_entries(&dir, "node") else {
        return Vec::new();
    };
    ids.into_iter()
        .map(|id| {
            let nd = dir.join(format!("node{id}"));
            Node {
                id,
                cpus: read_attr(&nd.join("cpulist"))
                    .and_then(|s| parse_cpulist(&s).ok())
                    .unwrap_or_default(),
                memory_total_bytes: read_attr(&nd.join("meminfo"))
                    .and_then(|m| meminfo_total_kib(&m))
                    .and_then(|kib| kib.checked_mul(1024)),
                distances: read_attr(&nd.join("distance"))
                    .map(|d| {
                        d.split_whitespace()
                            .map_while(|v| v.parse().ok())
                            .take(MAX_DIR_ENTRIES)
                            .collect()
                    })
                    .unwrap_or_default(),
                hugepages: read_pools(&nd.join("hugepages"), false),
                implicit: false,
            }
        })
        .collect()
}

/// `Node 0 MemTotal:       32768 kB` (per node) or `MemTotal: 32768 kB` (`/proc/meminfo`).
pub fn meminfo_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let (_, rest) = l.split_once("MemTotal:")?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// `hugepages-<size>kB/` directories below `dir`.
fn read_pools(dir: &Path, host_wide: bool) -> Vec<HugepagePool> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pools: Vec<HugepagePool> = entries
        .take(MAX_DIR_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let size_kib = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let p = e.path();
            Some(HugepagePool {
                size_kib,
                total: read_u64(&p.join("nr_hugepages")).unwrap_or(0),
                free: read_u64(&p.join("free_hugepages")).unwrap_or(0),
                surplus: read_u64(&p.join("surplus_hugepages")).unwrap_or(0),
                reserved: if host_wide {
                    read_u64(&p.join("resv_hugepages"))
                } else {
                    None
                },
            })
        })
        .collect();
    pools.sort_by_key(|p| p.size_kib);
    pools
}

/// Memory of a host without NUMA dirs: online memory blocks × block size (memory hotplug ABI).
fn implicit_memory(dir: &Path) -> Option<u64> {
    let block = u64::from_str_radix(
        read_attr(&dir.join("block_size_bytes"))?.trim_start_matches("0x"),
        16,
    )
    .ok()?;
    let blocks = numbered_entries(dir, "memory").ok()?;
    let online = blocks
        .iter()
        .filter(|b| {
            read_attr(&dir.join(format!("memory{b}")).join("online")).as_deref() != Some("0")
        })
        .count() as u64;
    if online == 0 {
        return None;
    }
    block.checked_mul(online)
}

fn read_pci(dir: &Path) -> Vec<PciDevice> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut devs: Vec<PciDevice> = entries
        .take(MAX_DIR_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let address = e.file_name().to_str()?.to_owned();
            if !is_pci_address(&address) {
                return None;
            }
            let p = e.path();
            Some(PciDevice {
                vendor: read_attr(&p.join("vendor")).unwrap_or_default(),
                device: read_attr(&p.join("device")).unwrap_or_default(),
                class: read_attr(&p.join("class")).unwrap_or_default(),
                driver: link_name(&p.join("driver")),
                iommu_group: link_name(&p.join("iommu_group")).and_then(|g| g.parse().ok()),
                // -1 means "no affinity".
                numa_node: read_attr(&p.join("numa_node")).and_then(|n| n.parse().ok()),
                address,
            })
        })
        .collect();
    devs.sort_by(|a, b| a.address.cmp(&b.address));
    devs
}

/// `dddd:bb:ss.f` in hex.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Per-node CPU ids, for callers that want a map.
pub fn node_cpus(t: &Topology) -> BTreeMap<u32, Vec<u32>> {
    t.nodes.iter().map(|n| (n.id, n.cpus.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist(""), Ok(vec![]));
        assert_eq!(parse_cpulist("\n"), Ok(vec![]));
        assert_eq!(parse_cpulist("5\n"), Ok(vec![5]));
        assert_eq!(
            parse_cpulist("0-3,8-11"),
            Ok(vec![0, 1, 2, 3, 8, 9, 10, 11])
        );
        assert_eq!(parse_cpulist("3,1,1-2"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_cpulist(" 0 - 1 "), Ok(vec![0, 1]));
        // Each refusal quotes the list and names the part that is wrong.
        for (bad, why) in [
            ("a", "'a' is not a CPU id"),
            ("1-", "'' is not a CPU id"),
            ("-1", "'' is not a CPU id"),
            ("3-1", "range 3-1 is reversed"),
            ("1,,2", "'' is not a CPU id"),
            ("1-2-3", "'2-3' is not a CPU id"),
            ("+1", "'+1' is not a CPU id"),
            ("99999999999", "id 99999999999 exceeds 16383"),
            ("16384", "id 16384 exceeds 16383"),
            ("0x1", "'0x1' is not a CPU id"),
            ("1;2", "'1;2' is not a CPU id"),
        ] {
            assert_eq!(parse_cpulist(bad), Err(format!("'{bad}': {why}")));
        }
        assert_eq!(parse_cpulist("0-16383").map(|v| v.len()), Ok(16384));
    }

    #[test]
    fn cpulist_fuzzish_never_panics_and_stays_bounded() {
        // A small deterministic generator over the alphabet the parser cares about.
        let alphabet = b"0123456789,-  \n9x";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = Vec::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let s = String::from_utf8(s).unwrap();
            if let Ok(v) = parse_cpulist(&s) {
                assert!(v.len() <= MAX_ID as usize + 1);
                assert!(v.windows(2).all(|w| w[0] < w[1]), "{s:?} -> unsorted");
                assert!(v.iter().all(|&id| id <= MAX_ID));
            }
        }
        // Many overlapping full ranges stay bounded.
        let many = vec!["0-16383"; 64].join(",");
        assert_eq!(parse_cpulist(&many).map(|v| v.len()), Ok(16384));
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(!is_pci_address("0000:3b:00"));
        assert!(!is_pci_address("0000:3g:00.0"));
        assert!(!is_pci_address("pci0000:00"));
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            meminfo_total_kib("Node 1 MemTotal:       65536 kB\nNode 1 MemFree: 1 kB\n"),
            Some(65536)
        );
        assert_eq!(meminfo_total_kib("MemTotal: x kB"), None);
    }

    #[test]
    fn missing_root_is_an_error_naming_the_path() {
        let err = Topology::read(&SysfsRoot::new("/nonexistent/sys")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/sys/devices/system/cpu"),
            "{err}"
        );
    }

    #[test]
    fn odd_content_is_absent_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu/cpu0/topology");
        fs::create_dir_all(&cpu).unwrap();
        fs::write(cpu.join("core_id"), "banana").unwrap();
        fs::write(cpu.join("thread_siblings_list"), "9-1").unwrap();
        fs::write(cpu.join("physical_package_id"), [0xff, 0xfe]).unwrap();
        let node = dir.path().join("devices/system/node/node0");
        fs::create_dir_all(node.join("hugepages/hugepages-xkB")).unwrap();
        fs::write(node.join("distance"), "10 zz 20").unwrap();
        fs::write(node.join("cpulist"), "0-").unwrap();
        let t = Topology::read(&SysfsRoot::new(dir.path())).unwrap();
        assert_eq!(t.cpus.len(), 1);
        assert_eq!(t.cpus[0].core_id, None);
        assert_eq!(t.cpus[0].socket_id, None);
        assert!(t.cpus[0].thread_siblings.is_empty());
        assert_eq!(t.nodes[0].distances, vec![10]);
        assert!(t.nodes[0].hugepages.is_empty());
        assert_eq!(t.nodes[0].memory_total_bytes, None);
        assert_eq!(t.memory_total_bytes(), None);
    }
}
