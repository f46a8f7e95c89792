//! The daemon at scale, on one state of 1 000 defined OS-less domains, 20 of them autostart:
//!
//! 1. `Service::list` of the 1 000 (goal: under 10 ms), beside a plain `std::fs::read_dir` of
//!    the definitions directory; and `Service::open` of that state (0 running), beside reading
//!    every definition file (`read_dir` + `fs::read` of each XML).
//! 2. Reconnect after a restart with 20 running guests (goal: under 100 ms): the real
//!    `novacrond` autostarts the 20, is SIGKILLed, then `Service::open` is timed in-process,
//!    beside raw QMP clients doing connect + `query-status` on the same 20 sockets
//!    (sequentially, and concurrently). Later rounds "kill" the in-process daemon by shutting
//!    down its private tokio runtime, which closes its QMP connections as a death would.
//! 3. RSS of the real `novacrond` holding the 1 000 definitions with 20 running (goal: under
//!    25 MiB), beside the same binary idle with 0 domains.
//!
//! Baselines and measured runs alternate (A, B, A, B, ...); figures are medians.
//!
//! cargo build --release -p novacrond && cargo bench -p novacron-benches --bench daemon_scale

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use novacron_benches::daemon::{
    count_in_file, median, millis, novacrond_binary, osless, proc_status_kib, spawn_daemon,
    verdict, wait_until, Env, Reaper,
};
use novacron_benches::{micros, print_table};
use novacron_qmp::commands::QueryStatus;
use novacron_qmp::Client;
use novacrond::{Config, Service};

const DEFINED: usize = 1000;
const RUNNING: usize = 20;
const OPEN_ROUNDS: usize = 7;
const LIST_CALLS_PER_ROUND: usize = 30;
const RECONNECT_ROUNDS: usize = 5;
const RSS_ROUNDS: usize = 3;
const SETTLE: Duration = Duration::from_secs(1);

fn name(i: usize) -> String {
    format!("d{i:04}")
}

/// Defines the 1 000 domains, 16 at a time, and marks the first 20 autostart.
async fn populate(config: &Config) -> Result<Duration> {
    let svc = Service::open(config.clone()).await?;
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DEFINED {
        let (svc, permit) = (svc.clone(), sem.clone().acquire_owned().await?);
        let config = osless(&name(i))?;
        tasks.spawn(async move {
            let r = svc.define(config).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let elapsed = t.elapsed();
    for i in 0..RUNNING {
        svc.set_autostart(&name(i), true).await?;
    }
    Ok(elapsed)
}

/// Baseline of `Service::open`: list the definitions directory and read every file.
fn read_all_definitions(dir: &Path) -> Result<usize> {
    let mut bytes = 0;
    for e in std::fs::read_dir(dir)? {
        bytes += std::fs::read(e?.path())?.len();
    }
    Ok(bytes)
}

fn read_dir_count(dir: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir)?.count())
}

/// Item 2: open (0 running) and list, interleaved with their baselines.
async fn open_and_list(env: &Env) -> Result<[(f64, f64, f64); 2]> {
    let defs = env.definitions_dir();
    let (mut open, mut open_base, mut open_ratio) = (vec![], vec![], vec![]);
    let (mut list, mut list_base) = (vec![], vec![]);
    for _ in 0..OPEN_ROUNDS {
        let t = Instant::now();
        std::hint::black_box(read_all_definitions(&defs)?);
        let base = t.elapsed();
        let t = Instant::now();
        let svc = Service::open(env.config.clone()).await?;
        let ours = t.elapsed();
        open.push(millis(ours));
        open_base.push(millis(base));
        open_ratio.push(ours.as_secs_f64() / base.as_secs_f64());
        if svc.list().len() != DEFINED || !svc.problems().is_empty() {
            bail!(
                "open found {} domains, problems {:?}",
                svc.list().len(),
                svc.problems()
            );
        }
        for _ in 0..LIST_CALLS_PER_ROUND {
            let t = Instant::now();
            std::hint::black_box(read_dir_count(&defs)?);
            list_base.push(micros(t.elapsed()));
            let t = Instant::now();
            std::hint::black_box(svc.list());
            list.push(micros(t.elapsed()));
        }
    }
    let (l, lb) = (median(list), median(list_base));
    Ok([
        (median(open), median(open_base), median(open_ratio)),
        (l, lb, l / lb),
    ])
}

/// One raw QMP connect + query-status on every socket: sequential, then concurrent.
async fn raw_qmp(sockets: &[PathBuf]) -> Result<(Duration, Duration)> {
    async fn one(socket: PathBuf) -> Result<()> {
        let qmp = tokio::time::timeout(Duration::from_secs(5), Client::connect(&socket))
            .await
            .with_context(|| format!("no QMP greeting on {} within 5 s", socket.display()))??;
        qmp.execute(&QueryStatus).await?;
        qmp.close();
        Ok(())
    }
    let t = Instant::now();
    for s in sockets {
        one(s.clone()).await?;
    }
    let sequential = t.elapsed();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in sockets {
        tasks.spawn(one(s.clone()));
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((sequential, t.elapsed()))
}

/// Opens the service on a private runtime (2 workers, as the daemon's), times the open, checks
/// all 20 are running, then shuts the runtime down: every task and QMP connection is dropped,
/// as if the daemon died. The guests keep running.
fn open_and_die(config: Config) -> Result<Duration> {
    std::thread::spawn(move || -> Result<Duration> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let result = rt.block_on(async {
            let t = Instant::now();
            let svc = Service::open(config).await?;
            let took = t.elapsed();
            let running = svc.list().iter().filter(|d| d.state.is_live()).count();
            if running != RUNNING || !svc.problems().is_empty() {
                bail!(
                    "reopen found {running} running, problems {:?}",
                    svc.problems()
                );
            }
            Ok(took)
        });
        rt.shutdown_timeout(Duration::from_secs(2));
        result
    })
    .join()
    .map_err(|_| anyhow::anyhow!("open thread panicked"))?
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(reaper: &Reaper, binary: &Path, env: &Env) -> Result<Daemon> {
        let config = env.write_config_file()?;
        let log = env.dir.path().join("daemon.log");
        let child = spawn_daemon(binary, &config, &log)?;
        reaper.daemon(child.id());
        Ok(Daemon { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `nth` "novacrond ready" line of this log.
    fn wait_ready(&mut self, nth: usize) -> Result<()> {
        let (log, child) = (&self.log, &mut self.child);
        wait_until("novacrond ready", Duration::from_secs(60), || {
            count_in_file(log, "novacrond ready") >= nth || matches!(child.try_wait(), Ok(Some(_)))
        })?;
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "novacrond exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid(), "VmRSS")
    }

    fn stop(mut self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal)?;
        self.child.wait()?;
        Ok(())
    }
}

/// Total CPU ticks (1/100 s) `pids` have used.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            // Fields 14 and 15 (utime, stime) are rest[11] and rest[12].
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

const IDLE_TICKS: u64 = 10;

/// Waits until `pids` together use under IDLE_TICKS ticks per 500 ms; returns the wait.
fn wait_cpu_idle(pids: &[u32], timeout: Duration) -> Result<Duration> {
    let t = Instant::now();
    let mut last = cpu_ticks(pids);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_ticks(pids);
        if now - last < IDLE_TICKS {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            bail!("guests still busy after {timeout:?}");
        }
        last = now;
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let t_all = Instant::now();
    let binary = novacrond_binary()?;
    let env = Env::new()?;
    let idle = Env::new()?;
    let reaper = Reaper::default();
    reaper.records(env.records_dir());
    reaper.records(idle.records_dir());
    println!(
        "daemon {}; accel {:?}; state under {}",
        binary.display(),
        novacron_tests::osless_accel(),
        env.dir.path().display()
    );

    println!("load average at the start: {}", loadavg());
    let defining = populate(&env.config).await?;
    println!(
        "defined {DEFINED} domains in {:.1} s (16 concurrent defines, each fsynced)",
        defining.as_secs_f64()
    );

    // Item 2: list and open, nothing running.
    let [open, list] = open_and_list(&env).await?;

    // Item 4, first round, and the setup of item 3: the loaded daemon autostarts the 20.
    let (mut rss, mut rss_idle) = (vec![], vec![]);
    let mut d = Daemon::start(&reaper, &binary, &idle)?;
    d.wait_ready(1)?;
    std::thread::sleep(SETTLE);
    rss_idle.push(d.rss_kib()? as f64);
    d.stop(Signal::SIGTERM)?;

    let t = Instant::now();
    let mut d = Daemon::start(&reaper, &binary, &env)?;
    let marker = env.config.run_dir.join("autostarted");
    wait_until("autostart of 20", Duration::from_secs(120), || {
        marker.exists()
    })?;
    let autostart = t.elapsed();
    d.wait_ready(1)?;
    let names: Vec<String> = (0..RUNNING).map(name).collect();
    if let Some(n) = names.iter().find(|n| !env.record(n).exists()) {
        bail!("{n} was not autostarted");
    }
    std::thread::sleep(SETTLE);
    rss.push(d.rss_kib()? as f64);
    let anon = proc_status_kib(d.pid(), "RssAnon")? as f64;
    let file = proc_status_kib(d.pid(), "RssFile")? as f64;
    d.stop(Signal::SIGKILL)?;
    println!(
        "daemon ready with {RUNNING} autostarted in {:.1} s; its RSS: anon {:.1} MiB, file {:.1} MiB",
        autostart.as_secs_f64(),
        mib(anon),
        mib(file)
    );

    // SeaBIOS POST costs each guest ~1 s of CPU under nested KVM: 20 fresh guests keep both
    // cores busy for several seconds. Measure only once they idle (SeaBIOS retries the boot
    // every 60 s, so the rest must finish within a minute of the autostart).
    let pids: Vec<u32> = Reaper::recorded_qemus(&env.records_dir());
    let settled = wait_cpu_idle(&pids, Duration::from_secs(60))?;
    println!(
        "guests idle {:.1} s after the daemon started (under {IDLE_TICKS} CPU ticks per 500 ms for all {})",
        (autostart + SETTLE).as_secs_f64() + settled.as_secs_f64(),
        pids.len()
    );
    let t_after_autostart = Instant::now();

    // Item 3: reconnect, interleaved with raw QMP.
    let sockets: Vec<PathBuf> = names
        .iter()
        .map(|n| env.records_dir().join(format!("{n}.qmp")))
        .collect();
    // The same 20 guests under a state holding only their 20 definitions: the reconnect
    // without the cost of loading 1 000 definitions.
    let small = Config {
        state_dir: env.dir.path().join("state20"),
        ..env.config.clone()
    };
    std::fs::create_dir_all(small.state_dir.join("domains"))?;
    for n in &names {
        std::fs::copy(
            env.definitions_dir().join(format!("{n}.xml")),
            small.state_dir.join("domains").join(format!("{n}.xml")),
        )?;
    }
    let (mut seq, mut conc, mut reopen, mut reopen20) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RECONNECT_ROUNDS {
        let (s, c) = raw_qmp(&sockets).await?;
        seq.push(millis(s));
        conc.push(millis(c));
        reopen.push(millis(open_and_die(env.config.clone())?));
        let (s, c) = raw_qmp(&sockets).await?;
        seq.push(millis(s));
        conc.push(millis(c));
        reopen20.push(millis(open_and_die(small.clone())?));
    }

    // Item 4, further rounds: the loaded daemon now reconnects (autostart ran this boot).
    for round in 2..=RSS_ROUNDS {
        let mut d = Daemon::start(&reaper, &binary, &idle)?;
        d.wait_ready(round)?;
        std::thread::sleep(SETTLE);
        rss_idle.push(d.rss_kib()? as f64);
        d.stop(Signal::SIGTERM)?;
        let mut d = Daemon::start(&reaper, &binary, &env)?;
        d.wait_ready(round)?;
        let log = std::fs::read_to_string(&d.log)?;
        let ready = log.lines().rfind(|l| l.contains("novacrond ready"));
        if !ready.is_some_and(|l| l.contains(&format!("running={RUNNING}"))) {
            bail!("daemon did not find {RUNNING} running:\n{log}");
        }
        std::thread::sleep(SETTLE);
        rss.push(d.rss_kib()? as f64);
        d.stop(Signal::SIGTERM)?;
    }

    println!(
        "measurements done {:.1} s after the guests idled",
        t_after_autostart.elapsed().as_secs_f64()
    );

    // Cleanup: destroy the 20 through the service.
    let svc = Service::open(env.config.clone()).await?;
    for n in &names {
        svc.destroy(n).await?;
    }
    drop(svc);
    let left = Reaper::recorded_qemus(&env.records_dir());
    if !left.is_empty() {
        bail!("QEMUs left after destroy: {left:?}");
    }

    print_table(
        &format!("{DEFINED} defined, 0 running: microseconds (list) / milliseconds (open)"),
        &[
            ("list (us) vs read_dir", list.0, list.1, list.2),
            ("open (ms) vs read all", open.0, open.1, open.2),
        ],
    );
    let (seq_m, conc_m) = (median(seq.clone()), median(conc.clone()));
    let (reopen_m, reopen20_m) = (median(reopen.clone()), median(reopen20.clone()));
    print_table(
        &format!("Reconnect {RUNNING} running guests, milliseconds (baseline: raw QMP connect + query-status)"),
        &[
            ("open 1000 def vs seq", reopen_m, seq_m, reopen_m / seq_m),
            ("open 1000 def vs conc", reopen_m, conc_m, reopen_m / conc_m),
            ("open 20 def vs seq", reopen20_m, seq_m, reopen20_m / seq_m),
            ("open 20 def vs conc", reopen20_m, conc_m, reopen20_m / conc_m),
            ("open 1000 def vs goal", reopen_m, 100.0, reopen_m / 100.0),
        ],
    );
    let (rss_m, idle_m) = (mib(median(rss.clone())), mib(median(rss_idle.clone())));
    print_table(
        &format!(
            "novacrond VmRSS, MiB ({RSS_ROUNDS} rounds; baseline: same binary idle, 0 domains)"
        ),
        &[
            ("1000 def + 20 run vs idle", rss_m, idle_m, rss_m / idle_m),
            ("1000 def + 20 run vs goal", rss_m, 25.0, rss_m / 25.0),
        ],
    );
    println!(
        "\nlist: per-round medians over {} calls each side; open: {OPEN_ROUNDS} rounds, page cache warm",
        OPEN_ROUNDS * LIST_CALLS_PER_ROUND
    );
    println!(
        "reconnect: {RECONNECT_ROUNDS} rounds per variant; RSS rounds (MiB): loaded {:?}, idle {:?}",
        rss.iter().map(|k| (mib(*k) * 10.0).round() / 10.0).collect::<Vec<_>>(),
        rss_idle.iter().map(|k| (mib(*k) * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    println!(
        "reconnect rounds (ms): open 1000 def {reopen:.0?}; open 20 def {reopen20:.0?}; raw seq {seq:.0?}; raw conc {conc:.0?}"
    );
    println!("load average at the end: {}", loadavg());
    println!("\ngoals:");
    println!(
        "  list {DEFINED} domains under 10 ms: {} ({:.3} ms)",
        verdict(list.0 < 10_000.0),
        list.0 / 1000.0
    );
    println!(
        "  reconnect {RUNNING} running under 100 ms (Service::open with {DEFINED} definitions): {} ({reopen_m:.1} ms; {reopen20_m:.1} ms with 20 definitions)",
        verdict(reopen_m < 100.0)
    );
    println!(
        "  RSS with {DEFINED} defined + {RUNNING} running under 25 MiB: {} ({rss_m:.1} MiB; idle {idle_m:.1} MiB)",
        verdict(rss_m < 25.0)
    );
    println!("total wall time {:.0} s", t_all.elapsed().as_secs_f64());
    drop(reaper);
    Ok(())
}
