//! NUMA placement and hugepage reservation on this machine, with real QEMU (issue 7, items 4
//! and 5): the guest's own view of its NUMA cells (printed by the test guest's init on the
//! serial console), the host-side memory policy of each cell's backend from
//! /proc/<pid>/numa_maps, refusals naming the node and its sysfs path, and the per-node 2 MiB
//! pool grown for a guest and shrunk back when it stops.

mod common;

use std::time::Duration;

use common::*;
use novacron_domain::model::{Cpu, CpuMode, NumaCell};
use novacron_domain::{DomainConfig, ErrorCode};

fn parse(xml_fragment: &str) -> DomainConfig {
    DomainConfig::from_xml(&format!(
        "<domain type='qemu'><name>x</name><memory unit='MiB'>256</memory><vcpu>2</vcpu>
           {xml_fragment}<os><type>hvm</type></os></domain>"
    ))
    .unwrap()
}

/// (start address, size in bytes) of every mapping in /proc/<pid>/maps.
fn mappings(pid: u32) -> Vec<(u64, u64)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            Some((a, b - a))
        })
        .collect()
}

/// Sizes (bytes) of the mappings whose memory policy in numa_maps is `policy`.
fn sizes_with_policy(pid: u32, policy: &str) -> Vec<u64> {
    let maps = mappings(pid);
    std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let start = u64::from_str_radix(f.next()?, 16).ok()?;
            (f.next()? == policy).then_some(start)
        })
        .filter_map(|start| maps.iter().find(|(a, _)| *a == start).map(|(_, s)| *s))
        .collect()
}

/// The memory policy numa_maps gives the mapping that starts at `start`.
fn policy_at(pid: u32, start: u64) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (u64::from_str_radix(f.next()?, 16).ok()? == start).then(|| f.next().map(str::to_owned))
        })
        .flatten()
}

/// `NOVACRON-NUMA node0 cpus=0 mem_kib=123` lines: (node, cpus, KiB).
fn guest_nodes(serial: &str) -> Vec<(String, String, u64)> {
    serial
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("NOVACRON-NUMA ")? + "NOVACRON-NUMA ".len()..];
            let mut f = rest.split_whitespace();
            let node = f.next()?.to_owned();
            let cpus = f.next()?.strip_prefix("cpus=")?.to_owned();
            let kib = f.next()?.strip_prefix("mem_kib=")?.parse().ok()?;
            Some((node, cpus, kib))
        })
        .collect()
}

/// The test guest with two NUMA cells of 128 MiB and one vCPU each; cell 0's memory bound
/// (strict) and cell 1's interleaved over host node 0, the only node this machine has.
#[tokio::test]
async fn the_guest_sees_two_numa_cells_and_each_cell_has_its_host_policy() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = linux("numa2", "");
    let shaped = parse(
        "<cpu><numa>
           <cell id='0' cpus='0' memory='131072' unit='KiB'><distances><sibling id='0' value='10'/><sibling id='1' value='20'/></distances></cell>
           <cell id='1' cpus='1' memory='131072' unit='KiB'><distances><sibling id='0' value='20'/><sibling id='1' value='10'/></distances></cell>
         </numa></cpu>
         <numatune><memnode cellid='0' mode='strict' nodeset='0'/>
                   <memnode cellid='1' mode='interleave' nodeset='0'/></numatune>",
    );
    config.vcpu = shaped.vcpu;
    config.memory = shaped.memory;
    config.numatune = shaped.numatune;
    let cells: Vec<NumaCell> = shaped.cpu.unwrap().numa;
    match &mut config.cpu {
        Some(cpu) => cpu.numa = cells,
        None => {
            config.cpu = Some(Cpu {
                mode: CpuMode::Custom {
                    model: "qemu64".into(),
                },
                check: None,
                fallback: None,
                features: vec![],
                topology: None,
                numa: cells,
            })
        }
    }
    svc.define(config).await.unwrap();
    svc.start("numa2").await.unwrap();
    let pid = recorded_pid(&env, "numa2");

    // Host side: each cell's backend carries its own policy.
    let bound = sizes_with_policy(pid, "bind:0");
    let interleaved = sizes_with_policy(pid, "interleave:0");
    println!("bind:0 mappings {bound:?}, interleave:0 mappings {interleaved:?}");
    assert!(bound.iter().any(|s| *s >= 128 << 20), "cell 0: {bound:?}");
    assert!(
        interleaved.iter().any(|s| *s >= 128 << 20),
        "cell 1: {interleaved:?}"
    );

    // Guest side: two nodes, one CPU each, about 128 MiB each (minus what the kernel keeps).
    let serial = env.serial_log("numa2");
    wait_file(
        &serial,
        novacron_tests::READY_MARKER,
        1,
        Duration::from_secs(240),
    )
    .await;
    let nodes = guest_nodes(&std::fs::read_to_string(&serial).unwrap());
    println!("guest NUMA view: {nodes:?}");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_eq!((nodes[0].0.as_str(), nodes[0].1.as_str()), ("node0", "0"));
    assert_eq!((nodes[1].0.as_str(), nodes[1].1.as_str()), ("node1", "1"));
    for (node, _, kib) in &nodes {
        assert!(
            (64 * 1024..=128 * 1024).contains(kib),
            "{node}: {kib} KiB is not about 128 MiB"
        );
    }
    svc.destroy("numa2").await.unwrap();
}

#[tokio::test]
async fn numatune_to_a_host_node_that_does_not_exist_is_refused_naming_it() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("nonode");
    config.numatune = parse("<numatune><memory mode='strict' nodeset='3'/></numatune>").numatune;
    svc.define(config).await.unwrap();
    let err = svc.start("nonode").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("node(s) 3") && msg.contains("/sys/devices/system/node/node3"),
        "{msg}"
    );
    assert!(!env.record("nonode").exists());
}

/// Restores a hugepage pool's size when dropped; one test at a time sizes the pool.
struct Pool {
    path: &'static str,
    before: String,
    _only: tokio::sync::MutexGuard<'static, ()>,
}

/// Pages of the default size in use anywhere on the host (`HugePages_Total - HugePages_Free`).
fn hugepages_in_use() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Total:").saturating_sub(field("HugePages_Free:"))
}

static POOL_USER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Pool {
    async fn take(path: &'static str) -> Pool {
        let only = POOL_USER.lock().await;
        // A QEMU killed just before (by another test or test binary) may still hold pages.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while hugepages_in_use() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Pool {
            path,
            before: std::fs::read_to_string(path).expect("a 2 MiB hugepage pool"),
            _only: only,
        }
    }
    fn count(&self) -> u64 {
        std::fs::read_to_string(self.path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
    /// Sizes the pool, waiting (up to 10 s) while pages are still in use: a QEMU the previous
    /// test killed gives its pages back only once the kernel has torn it down.
    fn resize(&self, pages: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            std::fs::write(self.path, pages.to_string()).expect("resizing the pool needs root");
            if self.count() == pages || std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.before.trim());
    }
}

const NODE0_POOL: &str = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";

/// A 64 MiB guest on 2 MiB pages bound to host node 0: with an empty node-0 pool it is refused
/// (naming the node's pool), unless reservation is allowed: then the daemon adds exactly the
/// 32 pages to node 0's pool, records them, and takes them back when the guest stops.
#[tokio::test]
async fn a_short_node_pool_is_refused_or_grown_for_the_guest_and_shrunk_after() {
    let pool = Pool::take(NODE0_POOL).await;
    let mut config = osless("hugenode");
    let shaped = parse(
        "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>
         <numatune><memory mode='strict' nodeset='0'/></numatune>",
    );
    config.memory_backing = shaped.memory_backing;
    config.numatune = shaped.numatune;
    pool.resize(0);
    assert_eq!(pool.count(), 0);

    {
        let env = Env::new();
        let svc = env.open().await;
        svc.define(config.clone()).await.unwrap();
        let err = svc.start("hugenode").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
        assert!(
            err.to_string().contains(
                "needs 32 free 2 MiB hugepages on host node(s) 0, but they have 0 free \
                 (/sys/devices/system/node/node0/hugepages/hugepages-2048kB)"
            ),
            "{err}"
        );
        assert_eq!(pool.count(), 0);
    }

    let mut env = Env::new();
    env.config.hugepages.reserve = true;
    let svc = env.open().await;
    svc.define(config).await.unwrap();
    svc.start("hugenode").await.unwrap();
    assert_eq!(
        pool.count(),
        32,
        "the node-0 pool grew by the guest's 32 pages"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.record("hugenode")).unwrap()).unwrap();
    assert_eq!(
        record["held"]["hugepages"],
        serde_json::json!([{"node": 0, "size_kib": 2048, "pages": 32}])
    );
    let pid = recorded_pid(&env, "hugenode");
    let ramblocks = common::smaps::query_ramblocks(&svc, "hugenode").await;
    // The guest's RAM is one hugetlb mapping of 64 MiB on 2 MiB pages, and that very mapping
    // is bound to node 0.
    let ram = common::smaps::wait_ram_on_2m_pages(pid, &ramblocks, "pc.ram", 64 << 10).await;
    assert_eq!(
        policy_at(pid, ram.start).as_deref(),
        Some("bind:0"),
        "the memory policy of the guest's RAM {ram:?}"
    );
    svc.destroy("hugenode").await.unwrap();
    // The supervisor gives the pages back as it cleans up after QEMU.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.count() != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool.count(), 0, "the 32 pages were given back");
    drop(pool);
}

fn on_hugepages(name: &str) -> DomainConfig {
    let mut config = osless(name);
    config.memory_backing = parse(
        "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>",
    )
    .memory_backing;
    config
}

/// Two 64 MiB guests on 2 MiB pages started at once with room for one (32 free pages, no
/// reservation): the fit checks do not both count the same pages. One runs; the other is
/// refused by the fit check (not by QEMU failing to map its memory), naming the pool.
#[tokio::test]
async fn concurrent_starts_do_not_both_count_the_same_free_pages() {
    let pool = Pool::take(NODE0_POOL).await;
    pool.resize(32);
    assert_eq!(pool.count(), 32);
    let env = Env::new();
    let svc = env.open().await;
    svc.define(on_hugepages("pages-a")).await.unwrap();
    svc.define(on_hugepages("pages-b")).await.unwrap();
    let (a, b) = tokio::join!(svc.start("pages-a"), svc.start("pages-b"));
    println!("pages-a: {a:?}\npages-b: {b:?}");
    let (ran, refused) = match (a, b) {
        (Ok(_), Err(e)) => ("pages-a", e),
        (Err(e), Ok(_)) => ("pages-b", e),
        other => panic!("exactly one start must succeed: {other:?}"),
    };
    assert_eq!(refused.code(), ErrorCode::InvalidConfig, "{refused}");
    assert!(
        refused.to_string().contains(
            "needs 32 free 2 MiB hugepages for 64 MiB of memory, but the host has 0 free"
        ),
        "{refused}"
    );
    svc.destroy(ran).await.unwrap();
    drop(pool);
}

/// A daemon that died after growing a pool for a start but before writing the guest's runtime
/// record left a journal naming the pages: the next daemon gives them back as it opens.
#[tokio::test]
async fn pages_of_a_start_cut_short_by_a_crash_are_given_back_on_restart() {
    let pool = Pool::take(NODE0_POOL).await;
    pool.resize(0);
    let env = Env::new();
    drop(env.open().await);
    // What the dead daemon did: grew node 0's pool by 32 pages and wrote them down.
    pool.resize(32);
    let journal = env.config.run_dir.join("domains/cut-short.held");
    std::fs::write(
        &journal,
        r#"{"hugepages":[{"node":0,"size_kib":2048,"pages":32}]}"#,
    )
    .unwrap();
    let _svc = env.open().await;
    assert_eq!(pool.count(), 0, "the 32 pages were given back");
    assert!(!journal.exists(), "the journal is gone once handled");
    drop(pool);
}

/// Reservation against a copy of the recorded 2-socket tree (its pool files take whatever is
/// written, like a kernel that finds every page): a cell bound to node 3 grows node 3's pool
/// by its shortfall, an unbound cell the host-wide pool, and release takes exactly that back.
#[test]
fn reservation_grows_the_bound_nodes_pool_in_a_recorded_tree() {
    use novacrond::host::hugepages::{demand, release, reserve, Grant};
    use novacrond::host::{SysfsRoot, Topology};
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sysfs/two-socket-four-node"),
        )
        .arg(dir.path().join("sys"))
        .status()
        .unwrap();
    assert!(status.success());
    let root = SysfsRoot::new(dir.path().join("sys"));
    let topo = Topology::read(&root).unwrap();
    // 2 GiB per cell on 2 MiB pages: cell 0 bound to node 3 (0 free), cell 1 unbound.
    let mut g = parse(
        "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>
         <numatune><memnode cellid='0' mode='strict' nodeset='3'/></numatune>
         <cpu><numa><cell id='0' cpus='0' memory='2' unit='GiB'/>
                    <cell id='1' cpus='1' memory='2' unit='GiB'/></numa></cpu>",
    );
    g.memory.memory_kib = 4 << 20;
    let wants = demand(&g, &topo);
    assert_eq!(wants.len(), 2);
    let grants = reserve(&root, &topo, &wants).unwrap();
    // Node 3 had 0 free: +1024. Host-wide 2536 free covers cell 1's 1024 plus cell 0's
    // 1024 (which the node-3 pages now provide): nothing more.
    assert_eq!(
        grants,
        [Grant {
            node: Some(3),
            size_kib: 2048,
            pages: 1024
        }]
    );
    let node3 = root
        .path()
        .join("devices/system/node/node3/hugepages/hugepages-2048kB/nr_hugepages");
    assert_eq!(std::fs::read_to_string(&node3).unwrap().trim(), "2048");
    release(&root, &grants);
    assert_eq!(std::fs::read_to_string(&node3).unwrap().trim(), "1024");
}
