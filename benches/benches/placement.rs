//! What placement adds to start-to-running: the same OS-less guest (2 vCPUs, 1 iothread)
//! started through the service unpinned, pinned (vcpupin, emulatorpin, iothreadpin: QMP
//! thread queries, sched_setaffinity and the /proc read-back, before `cont`), and pinned in
//! its own cgroup (`[cgroups] mode = "on"`: cpuset and memory cgroups created, QEMU moved
//! in, removed after it exits) where the host has the controllers. Interleaved rounds; each
//! guest is destroyed outside the timing.
//!
//! cargo bench -p novacron-benches --bench placement [-- ROUNDS]

use std::time::Instant;

use anyhow::{Context, Result};
use novacron_benches::daemon::{osless, Env, Reaper};
use novacron_benches::{print_table, Rounds, Stats};
use novacron_domain::DomainConfig;
use novacrond::host::cgroup::{CgroupConfig, CgroupMode, Cgroups, Layout};
use novacrond::Service;

fn guest(name: &str, cputune: &str) -> Result<DomainConfig> {
    let mut config = osless(name)?;
    let tuned = DomainConfig::from_xml(&format!(
        "<domain type='kvm'><name>{name}</name><memory>65536</memory><vcpu>2</vcpu>
           <iothreads>1</iothreads><cputune>{cputune}</cputune><os><type>hvm</type></os></domain>"
    ))?;
    config.vcpu = tuned.vcpu;
    config.iothreads = tuned.iothreads;
    config.cputune = tuned.cputune.filter(|t| *t != Default::default());
    Ok(config)
}

async fn timed_start(svc: &Service, name: &str) -> Result<Stats> {
    let t0 = Instant::now();
    svc.start(name)
        .await
        .with_context(|| format!("start {name}"))?;
    let took = t0.elapsed();
    svc.destroy(name).await?;
    Ok(Stats::from_latencies(vec![took], took))
}

fn ms(s: &Stats) -> f64 {
    s.median.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let pins = "<vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/>
                <emulatorpin cpuset='0'/><iothreadpin iothread='1' cpuset='1'/>";
    let mut parent = format!("novacron-bench-{}", std::process::id());
    // cgroup v2 gives no controllers below a cgroup with processes (ours): start at the root.
    if let Some(Layout::V2 { .. }) = Cgroups::detect(parent.as_ref())
        .ok()
        .map(|c| c.layout().clone())
    {
        parent.insert(0, '/');
    }
    let cgroups_here = Cgroups::detect(parent.as_ref()).ok();

    let plain_env = Env::new()?;
    let mut cg_env = Env::new()?;
    cg_env.config.cgroups = CgroupConfig {
        mode: CgroupMode::On,
        parent: parent.clone().into(),
    };
    let reaper = Reaper::default();
    reaper.records(plain_env.records_dir());
    reaper.records(cg_env.records_dir());
    let plain = Service::open(plain_env.config.clone()).await?;
    plain.define(guest("unpinned", "")?).await?;
    plain.define(guest("pinned", pins)?).await?;
    let caged = match &cgroups_here {
        Some(_) => {
            let svc = Service::open(cg_env.config.clone()).await?;
            svc.define(guest("caged", pins)?).await?;
            Some(svc)
        }
        None => None,
    };
    println!(
        "accel {:?}; {rounds} interleaved rounds after one warm-up; cgroups: {}",
        novacron_tests::osless_accel(),
        cgroups_here
            .as_ref()
            .map_or("none on this host".to_owned(), |c| format!(
                "{:?}",
                c.layout()
            ))
    );

    let mut all = Vec::new();
    for round in 0..=rounds {
        let unpinned = timed_start(&plain, "unpinned").await?;
        let pinned = timed_start(&plain, "pinned").await?;
        let caged = match &caged {
            Some(svc) => timed_start(svc, "caged").await?,
            None => pinned,
        };
        // Round 0 warms caches (the QEMU capability probe, page cache).
        if round > 0 {
            all.push([unpinned, pinned, caged]);
        }
    }
    let r = Rounds(all);
    let mut rows = vec![(
        "pinned vs unpinned",
        r.figure(1, ms),
        r.figure(0, ms),
        r.ratio(1, 0, ms),
    )];
    if caged.is_some() {
        rows.push((
            "pinned+cgroup vs unpinned",
            r.figure(2, ms),
            r.figure(0, ms),
            r.ratio(2, 0, ms),
        ));
    }
    print_table(
        "Start to running, OS-less guest with 2 vCPUs + 1 iothread, milliseconds (ratio = median of per-round ratios)",
        &rows,
    );
    let added = r.figure(1, ms) - r.figure(0, ms);
    println!(
        "\nplacement adds {added:.1} ms (medians); load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(caged);
    drop(plain);
    if let Some(c) = cgroups_here {
        // The per-guest cgroups are gone with their guests; the parents are this run's own.
        for dir in c.guest("caged").dirs {
            if let Some(p) = dir.parent() {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
    drop(reaper);
    Ok(())
}
