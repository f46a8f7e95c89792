//! CPU pinning applied before the guest runs, proven from /proc (issue 7, item 3).

mod common;

use common::*;
use novacron_domain::{DomainConfig, ErrorCode};

fn allowed(pid: u32, tid: u64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn pinned(name: &str, cputune: &str) -> DomainConfig {
    let mut config = osless(name);
    let tuned = DomainConfig::from_xml(&format!(
        "<domain type='kvm'><name>{name}</name><memory>65536</memory><vcpu>2</vcpu>
           <iothreads>1</iothreads><cputune>{cputune}</cputune><os><type>hvm</type></os></domain>"
    ))
    .unwrap();
    config.vcpu = tuned.vcpu;
    config.iothreads = tuned.iothreads;
    config.cputune = tuned.cputune;
    config
}

#[tokio::test]
async fn vcpu_iothread_and_emulator_threads_run_where_the_definition_says() {
    assert!(
        std::thread::available_parallelism().unwrap().get() >= 2,
        "this test needs 2 host CPUs"
    );
    let env = Env::new();
    let svc = env.open().await;
    svc.define(pinned(
        "pinned",
        "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='0'/>
         <emulatorpin cpuset='0'/><iothreadpin iothread='1' cpuset='1'/>",
    ))
    .await
    .unwrap();
    svc.start("pinned").await.unwrap();
    let pid = recorded_pid(&env, "pinned");
    let cpus = svc
        .qmp_passthrough("pinned", "query-cpus-fast", None)
        .await
        .unwrap();
    let tid_of = |index: u64| {
        cpus.as_array()
            .unwrap()
            .iter()
            .find(|c| c["cpu-index"] == index)
            .and_then(|c| c["thread-id"].as_u64())
            .unwrap()
    };
    assert_eq!(allowed(pid, tid_of(0)), "1", "vCPU 0");
    assert_eq!(allowed(pid, tid_of(1)), "0", "vCPU 1");
    let io = svc
        .qmp_passthrough("pinned", "query-iothreads", None)
        .await
        .unwrap();
    let io_tid = io[0]["thread-id"].as_u64().unwrap();
    assert_eq!(allowed(pid, io_tid), "1", "iothread 1");
    assert_eq!(
        allowed(pid, u64::from(pid)),
        "0",
        "the main (emulator) thread"
    );
    svc.destroy("pinned").await.unwrap();
}

#[tokio::test]
async fn a_pin_to_a_cpu_the_host_lacks_is_refused_before_qemu_starts() {
    let env = Env::new();
    let svc = env.open().await;
    svc.define(pinned("nowhere", "<vcpupin vcpu='0' cpuset='4095'/>"))
        .await
        .unwrap();
    let err = svc.start("nowhere").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(
        err.to_string().contains("4095"),
        "the CPU must be named: {err}"
    );
    assert!(!env.record("nowhere").exists());
}

/// Restores the host's 2 MiB hugepage pool size when dropped.
struct Pool {
    before: String,
}

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

impl Pool {
    fn take() -> Pool {
        Pool {
            before: std::fs::read_to_string(POOL).expect("a 2 MiB hugepage pool"),
        }
    }

    fn resize(&self, pages: u64) -> u64 {
        std::fs::write(POOL, pages.to_string()).expect("resizing the pool needs root");
        std::fs::read_to_string(POOL)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(POOL, self.before.trim());
    }
}

#[tokio::test]
async fn hugepage_backed_memory_is_proven_from_smaps_and_a_short_pool_is_refused() {
    let pool = Pool::take();
    let env = Env::new();
    let svc = env.open().await;
    let mut config = osless("hugemem");
    config.memory_backing = DomainConfig::from_xml(
        "<domain type='kvm'><name>x</name><memory>65536</memory><vcpu>1</vcpu>
           <memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>
           <os><type>hvm</type></os></domain>",
    )
    .unwrap()
    .memory_backing;
    svc.define(config).await.unwrap();

    // 8 pages (16 MiB) cannot hold 64 MiB: refused before QEMU starts, with the shortfall.
    pool.resize(8);
    let err = svc.start("hugemem").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(err.to_string().contains("free 2 MiB hugepages"), "{err}");
    assert!(!env.record("hugemem").exists());

    // Enough pages: the guest's RAM is on them.
    let have = pool.resize(48);
    assert!(have >= 32, "the kernel gave only {have} hugepages");
    svc.start("hugemem").await.unwrap();
    let pid = recorded_pid(&env, "hugemem");
    let ramblocks = common::smaps::query_ramblocks(&svc, "hugemem").await;
    // The backend's whole mapping, the guest's 64 MiB, is hugetlb on 2 MiB pages: every page
    // the guest touches comes from the pool.
    let ram = common::smaps::wait_ram_on_2m_pages(pid, &ramblocks, "pc.ram", 64 << 10).await;
    println!("guest RAM: {ram:?}");
    svc.destroy("hugemem").await.unwrap();
    drop(pool);
}
