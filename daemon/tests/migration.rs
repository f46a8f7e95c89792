//! Live migration between two real novacrond processes on this machine (separate state and run
//! directories, TCP APIs with tokens on loopback), moving the real test guest while it dirties
//! memory. Every failure case checks that the guest still runs on the source and that nothing
//! is left on the destination.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{tcp_api, Daemon};
use common::*;
use novacron_domain::DomainState;
use novacrond::client::{Client, DefinitionFormat, Target};
use novacrond::service::migration::{
    Compression, MigrateRequest, MigrationOptions, Phase, Progress, TimeoutAction,
};

const TOKEN: &str = "peer-secret-token";
/// Bytes per second that keep a 64 MiB guest in flight for many seconds.
const SLOW: u64 = 3 << 20;

struct Host {
    env: Env,
    daemon: Option<Daemon>,
    port: u16,
    toml: String,
    https: bool,
    qemus: QemuWatch,
}

/// Every QEMU a host's daemon recorded, as (domain, pid, start time), seen by polling its
/// runtime records for as long as the host lives: a record is removed when its guest is
/// cleaned up, but the process it named must be gone too, and only pid plus start time say
/// which process that was (the command line names no run directory: the monitor is fd 3,
/// the serial log an fd set).
struct QemuWatch {
    seen: Arc<Mutex<BTreeSet<(String, u32, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QemuWatch {
    fn start(records: PathBuf) -> QemuWatch {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // A record is rewritten (live device set, marks) but its pid and start time never
            // change: parse a file again only when its size or mtime did.
            let mut known: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
            while !stop2.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&records).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let Some(name) = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".json"))
                    else {
                        continue;
                    };
                    let Ok(meta) = entry.metadata() else { continue };
                    let stamp = (
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                    if known.get(&path) == Some(&stamp) {
                        continue;
                    }
                    let record = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                    let Some(record) = record else { continue };
                    if let (Some(pid), Some(start)) =
                        (record["pid"].as_u64(), record["start_time"].as_u64())
                    {
                        seen2
                            .lock()
                            .unwrap()
                            .insert((name.to_owned(), pid as u32, start));
                        known.insert(path, stamp);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        QemuWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The recorded QEMUs of `name` that still run (same pid, same start time).
    fn alive(&self, name: &str) -> Vec<(u32, u64)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, pid, start)| {
                n == name && novacrond::qemu::procinfo::is_same_alive(*pid, *start)
            })
            .map(|(_, pid, start)| (*pid, *start))
            .collect()
    }

    /// Waits until `count` QEMUs of `name` have been seen here (their records exist now), so
    /// a later clean check is known to cover them.
    async fn wait_seen(&self, name: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, ..)| n == name)
                .count();
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{seen} QEMU records of {name} seen, not {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A failed test must not leave a QEMU behind that its record no longer names.
impl Drop for QemuWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, pid, start) in self.seen.lock().unwrap().iter() {
            if novacrond::qemu::procinfo::is_same_alive(*pid, *start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// QEMUs whose output goes to `log` (a domain's QEMU log): the processes a host started for
/// a domain even if no record of them was ever seen.
fn qemus_logging_to(log: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .is_some_and(|exe| String::from_utf8_lossy(exe).contains("qemu-system"))
            })
        })
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|target| target == log)
                && pid_alive(*pid)
        })
        .collect()
}

impl Host {
    fn start() -> Host {
        Host::start_with("")
    }

    /// `top`: top-level config lines.
    fn start_with(top: &str) -> Host {
        let env = Env::new();
        // Plain http:// between the two loopback daemons: allowed explicitly (the default
        // refuses it); the peer's token has the peer role. The peer is not an admin: the
        // guest's kernel must lie in a storage root here.
        let api = tcp_api(&[("peer", TOKEN, "migration_peer")]);
        let guest = novacron_tests::test_guest().expect("test guest");
        let kernel_dir = guest.kernel.parent().expect("kernel directory");
        let toml = format!(
            "{top}[storage_roots]\ntest-guest = {kernel_dir:?}\n{api}[migration]\nallow_plain_http = true\n"
        );
        Host::launch(env, toml, false)
    }

    /// Starts the daemon of `env` with `toml` (its TCP API on port 0) and watches its QEMUs.
    fn launch(env: Env, toml: String, https: bool) -> Host {
        let qemus = QemuWatch::start(env.config.run_dir.join("domains"));
        let daemon = env.start_daemon(&toml);
        // A restarted daemon keeps the port its first run got (peers know it by that URL).
        let port = daemon.tcp_port();
        let toml = toml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        Host {
            env,
            daemon: Some(daemon),
            port,
            toml,
            https,
            qemus,
        }
    }

    /// A daemon whose TCP API is TLS (certificate and key from `pki`), with the defaults of
    /// `[migration]` (plain http:// refused).
    fn start_https(pki: &std::path::Path) -> Host {
        let env = Env::new();
        let toml = tcp_api(&[("peer", TOKEN, "migration_peer")]);
        let tls = format!(
            "[api]\ntls_cert = {:?}\ntls_key = {:?}\n",
            pki.join("server-cert.pem"),
            pki.join("server-key.pem")
        );
        let toml = toml.replacen("[api]\n", &tls, 1);
        Host::launch(env, toml, true)
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Installs the migration certificates (`<state_dir>/pki/migration`) from `pki`.
    fn install_migration_pki(&self, pki: &std::path::Path) {
        let dir = self.env.config.state_dir.join("pki/migration");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "ca-cert.pem",
            "server-cert.pem",
            "server-key.pem",
            "client-cert.pem",
            "client-key.pem",
        ] {
            std::fs::copy(pki.join(f), dir.join(f)).unwrap();
        }
    }

    /// The local admin's client (Unix socket).
    fn local(&self) -> Client {
        Client::new(Target::Unix(self.env.config.run_dir.join("novacrond.sock")))
    }

    fn kill_daemon(&mut self) {
        self.daemon = None;
    }

    fn restart_daemon(&mut self) {
        self.daemon = Some(self.env.start_daemon(&self.toml));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// No guest, no runtime record, no QEMU: what a cleaned destination looks like.
    async fn assert_clean(&self, name: &str) {
        let list = self.local().list(&Default::default()).await.unwrap();
        assert!(
            list.iter().all(|d| d.name != name),
            "{name} still listed on the destination: {list:?}"
        );
        assert!(
            !self.env.record(name).exists(),
            "a runtime record is left on the destination"
        );
        // Every QEMU this host ran for the guest is gone (killed ones within a moment), and
        // none writes to the guest's QEMU log either.
        let log = self
            .env
            .config
            .log_dir
            .join("qemu")
            .join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (recorded, logging) = (self.qemus.alive(name), qemus_logging_to(&log));
            if recorded.is_empty() && logging.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a QEMU of {name} still runs here: recorded (pid, start time) {recorded:?}, \
                 writing to {}: {logging:?}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn request(dest: &Host, options: MigrationOptions) -> MigrateRequest {
    MigrateRequest {
        destination: dest.url(),
        token: Some(TOKEN.into()),
        destination_ca: None,
        options,
        keep_source_definition: false,
    }
}

fn slow() -> MigrationOptions {
    MigrationOptions {
        max_bandwidth: Some(SLOW),
        ..Default::default()
    }
}

/// Defines and starts the test guest dirtying 64 MiB, and waits until it does.
async fn start_dirty_guest(host: &Host, name: &str) {
    let name_owned = name.to_owned();
    let config = tokio::task::spawn_blocking(move || {
        linux(&name_owned, "novacron.dirty_mib=64 novacron.dirty_rate=4")
    })
    .await
    .unwrap();
    let c = host.local();
    c.define(config.to_xml(), DefinitionFormat::Xml)
        .await
        .unwrap();
    c.action(name, novacrond::client::Action::Start, true, None)
        .await
        .unwrap();
    wait_file(
        &host.env.serial_log(name),
        novacron_tests::DIRTY_READY_MARKER,
        1,
        Duration::from_secs(120),
    )
    .await;
}

async fn state(host: &Host, name: &str) -> Option<DomainState> {
    host.local().get(name).await.ok().map(|i| i.status.state)
}

/// Waits until the running migration is streaming (bytes on the wire).
async fn wait_in_flight(host: &Host, name: &str) -> Progress {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = host.local().migration(name).await.unwrap();
        if p.phase == Phase::Precopy && p.transferred_bytes > 1 << 20 {
            return p;
        }
        assert!(!p.phase.is_final(), "ended before it was in flight: {p:?}");
        assert!(Instant::now() < deadline, "never in flight: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the migration has ended, by its phase alone: a final phase is published only
/// once the source is settled, so the guest has left the migrating state by then.
async fn wait_ended(host: &Host, name: &str) -> Progress {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = host.local().migration(name).await.unwrap();
        if p.phase.is_final() {
            assert_ne!(
                state(host, name).await,
                Some(DomainState::Migrating),
                "a final phase was shown before the source was settled: {p:?}"
            );
            return p;
        }
        assert!(Instant::now() < deadline, "migration never ended: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heartbeats keep coming on this host's serial console.
async fn heartbeat_continues(host: &Host, name: &str) {
    let log = host.env.serial_log(name);
    let seen = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches(novacron_tests::HEARTBEAT_MARKER)
        .count();
    wait_file(
        &log,
        novacron_tests::HEARTBEAT_MARKER,
        seen + 2,
        Duration::from_secs(30),
    )
    .await;
}

async fn assert_runs_here(host: &Host, name: &str) {
    assert_eq!(
        state(host, name).await,
        Some(DomainState::Running),
        "the guest must still run on the source"
    );
    heartbeat_continues(host, name).await;
}

#[tokio::test]
async fn failures_leave_the_guest_running_on_the_source() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-fail";
    start_dirty_guest(&a, name).await;

    // The destination daemon is unreachable at prepare.
    let nowhere = MigrateRequest {
        destination: "http://127.0.0.1:9".into(),
        ..request(&b, MigrationOptions::default())
    };
    let p = a.local().migrate(name, &nowhere, true).await.unwrap();
    assert_eq!(p.phase, Phase::Failed, "{p:?}");
    assert!(
        p.detail
            .as_deref()
            .unwrap_or("")
            .contains("could not prepare"),
        "{p:?}"
    );
    assert_runs_here(&a, name).await;

    // Cancel mid-flight; meanwhile every other mutating call is refused as busy.
    a.local()
        .migrate(name, &request(&b, slow()), false)
        .await
        .unwrap();
    wait_in_flight(&a, name).await;
    assert_eq!(state(&a, name).await, Some(DomainState::Migrating));
    assert_eq!(
        state(&b, name).await,
        Some(DomainState::Starting),
        "the destination holds the incoming guest"
    );
    b.qemus.wait_seen(name, 1).await;
    let busy = a
        .local()
        .migrate(name, &request(&b, MigrationOptions::default()), false)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Some("busy"), "{busy}");
    let busy = a
        .local()
        .action(name, novacrond::client::Action::Shutdown, true, None)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Some("busy"), "{busy}");
    let p = a.local().cancel_migration(name).await.unwrap();
    assert_eq!(p.phase, Phase::Cancelled, "{p:?}");
    assert_runs_here(&a, name).await;
    b.assert_clean(name).await;

    // The destination's QEMU is killed mid-flight.
    a.local()
        .migrate(name, &request(&b, slow()), false)
        .await
        .unwrap();
    wait_in_flight(&a, name).await;
    b.qemus.wait_seen(name, 2).await;
    let pid = recorded_pid(&b.env, name);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p = wait_ended(&a, name).await;
    assert_eq!(p.phase, Phase::Failed, "{p:?}");
    assert_runs_here(&a, name).await;
    b.assert_clean(name).await;
    assert!(
        a.env.config.state_dir.join("domains/mig-fail.xml").exists(),
        "the source keeps its definition"
    );
    // Each attempt is audited on the source with its outcome, the busy refusal beside the
    // migration too; the destination audits each prepare, asked by the source's token.
    let t = |op: &str, result: &str, via: &str| {
        (
            op.to_owned(),
            name.to_owned(),
            result.to_owned(),
            via.to_owned(),
        )
    };
    assert_eq!(
        audited(&a.env, |op| op == "migrate" || op == "shutdown"),
        [
            t("migrate", "failed", "http-unix"),
            t("shutdown", "busy", "http-unix"),
            t("migrate", "cancelled", "http-unix"),
            t("migrate", "failed", "http-unix"),
        ]
    );
    assert_eq!(
        audited(&b.env, |op| op == "migrate-incoming"),
        [
            t("migrate-incoming", "ok", "http-tcp"),
            t("migrate-incoming", "ok", "http-tcp"),
        ]
    );
    assert!(audit_entries(&b.env)
        .iter()
        .all(|e| e["actor"]["token"] == "peer"));
}

#[tokio::test]
async fn precopy_multifd_and_postcopy_migrations_move_the_running_guest() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-ok";
    start_dirty_guest(&a, name).await;

    // A to B, pre-copy with the defaults: the heartbeat goes on on B's console.
    let p = a
        .local()
        .migrate(name, &request(&b, MigrationOptions::default()), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    assert!(p.transferred_bytes > 64 << 20, "{p:?}");
    // QEMU's own totals, not the zeros it shows for a moment after "completed".
    assert!(p.downtime_ms.is_some_and(|d| d > 0), "{p:?}");
    // The daemons' share of the guest's pause is measured too (QEMU's downtime leaves it out).
    assert!(p.handover_ms.is_some(), "{p:?}");
    assert!(p.elapsed_ms > 0, "{p:?}");
    assert_eq!(state(&b, name).await, Some(DomainState::Running));
    heartbeat_continues(&b, name).await;
    assert_eq!(state(&a, name).await, None, "the source forgot the guest");
    assert!(!a.env.config.state_dir.join("domains/mig-ok.xml").exists());
    assert!(b.env.config.state_dir.join("domains/mig-ok.xml").exists());
    assert!(!a.env.record(name).exists(), "the source QEMU is gone");

    // B back to A with multifd.
    let multifd = MigrationOptions {
        multifd_channels: Some(2),
        ..Default::default()
    };
    let p = b
        .local()
        .migrate(name, &request(&a, multifd), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    heartbeat_continues(&a, name).await;
    assert_eq!(state(&b, name).await, None);

    // A to B in post-copy, switched mid-flight. B's QEMU is unprivileged: where the kernel keeps
    // userfaultfd from unprivileged processes, B refuses up front and the guest stays on A;
    // then a destination whose QEMU runs as root (explicitly configured) takes it.
    let postcopy = MigrationOptions {
        postcopy: true,
        ..slow()
    };
    let uffd_for_all = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
        .map_or(true, |v| v.trim() != "0");
    let root_qemu = if uffd_for_all {
        None
    } else {
        let refused = a
            .local()
            .migrate(name, &request(&b, postcopy.clone()), true)
            .await;
        let message = match refused {
            Err(e) => e.to_string(),
            Ok(p) => format!("{:?}: {}", p.phase, p.detail.unwrap_or_default()),
        };
        assert!(
            message.contains("vm.unprivileged_userfaultfd"),
            "post-copy to an unprivileged QEMU must be refused naming the sysctl: {message}"
        );
        assert_runs_here(&a, name).await;
        b.assert_clean(name).await;
        Some(Host::start_with("qemu_user = \"root\"\n"))
    };
    let c = root_qemu.as_ref().unwrap_or(&b);
    a.local()
        .migrate(name, &request(c, postcopy), false)
        .await
        .unwrap();
    wait_in_flight(&a, name).await;
    a.local().start_postcopy(name).await.unwrap();
    let p = wait_ended(&a, name).await;
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), c.log());
    heartbeat_continues(c, name).await;
    assert_eq!(state(&a, name).await, None);
    c.assert_clean_of_source(&a, name).await;
    // Both sides audit their part: the source each migration's outcome (asked locally), the
    // destination each prepare and finish (asked by the source's token), a refusal included.
    let t = |op: &str, result: &str, via: &str| {
        (
            op.to_owned(),
            name.to_owned(),
            result.to_owned(),
            via.to_owned(),
        )
    };
    let migration_ops = |op: &str| op.starts_with("migrate");
    let mut on_a = vec![
        t("migrate", "completed", "http-unix"),
        t("migrate-incoming", "ok", "http-tcp"),
        t("migrate-finish", "ok", "http-tcp"),
    ];
    let mut on_b = vec![
        t("migrate-incoming", "ok", "http-tcp"),
        t("migrate-finish", "ok", "http-tcp"),
        t("migrate", "completed", "http-unix"),
    ];
    if root_qemu.is_some() {
        on_a.push(t("migrate", "failed", "http-unix"));
        on_b.push(t("migrate-incoming", "invalid_config", "http-tcp"));
    }
    on_a.push(t("migrate", "completed", "http-unix"));
    let on_c = [
        t("migrate-incoming", "ok", "http-tcp"),
        t("migrate-finish", "ok", "http-tcp"),
    ];
    if root_qemu.is_none() {
        on_b.extend(on_c.clone());
    }
    assert_eq!(audited(&a.env, migration_ops), on_a);
    assert_eq!(audited(&b.env, migration_ops), on_b);
    if let Some(c) = &root_qemu {
        assert_eq!(audited(&c.env, migration_ops), on_c);
    }
    for host in [Some(&a), Some(&b), root_qemu.as_ref()]
        .into_iter()
        .flatten()
    {
        for e in audit_entries(&host.env) {
            if e["actor"]["via"] == "http-tcp" {
                assert_eq!(e["actor"]["token"], "peer", "{e}");
            }
        }
    }
}

impl Host {
    /// The source kept no guest, record or QEMU.
    async fn assert_clean_of_source(&self, source: &Host, name: &str) {
        source.assert_clean(name).await;
        assert_eq!(state(self, name).await, Some(DomainState::Running));
    }
}

#[tokio::test]
async fn a_source_daemon_killed_mid_flight_recovers_consistently() {
    let mut a = Host::start();
    let b = Host::start();
    let name = "mig-crash";
    start_dirty_guest(&a, name).await;
    a.local()
        .migrate(name, &request(&b, slow()), false)
        .await
        .unwrap();
    wait_in_flight(&a, name).await;
    b.qemus.wait_seen(name, 1).await;
    a.kill_daemon();
    a.restart_daemon();
    // The restarted source undoes the stream it can no longer follow and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.log().contains("recovered after a daemon restart") {
        assert!(
            Instant::now() < deadline,
            "no recovery report:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_runs_here(&a, name).await;
    // The destination was told, or its lease ran out.
    let deadline = Instant::now() + Duration::from_secs(40);
    while state(&b, name).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "destination not cleaned:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.assert_clean(name).await;
    assert!(!a
        .env
        .config
        .run_dir
        .join("migrations/mig-crash.json")
        .exists());
}

// ---- Crash safety with OS-less guests (fast: KVM where it works, no guest OS needed). ----

/// Bytes per second that keep an OS-less 64 MiB guest (mostly zero pages) in flight a while.
const CRAWL: u64 = 48 << 10;

fn crawl() -> MigrationOptions {
    MigrationOptions {
        max_bandwidth: Some(CRAWL),
        ..Default::default()
    }
}

async fn start_osless(host: &Host, name: &str) {
    let c = host.local();
    c.define(osless(name).to_xml(), DefinitionFormat::Xml)
        .await
        .unwrap();
    c.action(name, novacrond::client::Action::Start, true, None)
        .await
        .unwrap();
    assert_eq!(state(host, name).await, Some(DomainState::Running));
}

/// How many of the hosts run the guest (the prime rule: never more than one).
async fn running_on(hosts: &[&Host], name: &str) -> usize {
    let mut n = 0;
    for h in hosts {
        if state(h, name).await == Some(DomainState::Running) {
            n += 1;
        }
    }
    n
}

async fn wait_phase(host: &Host, name: &str, want: Phase) -> Progress {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = host.local().migration(name).await.unwrap();
        if p.phase == want {
            return p;
        }
        assert!(
            !p.phase.is_final() || want.is_final(),
            "ended before {want:?}: {p:?}"
        );
        assert!(Instant::now() < deadline, "never {want:?}: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(host: &Host, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !host.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restarted_destination_discards_its_incoming_guest_or_is_never_taken_for_refusal() {
    let a = Host::start();
    let mut b = Host::start();
    let name = "mig-dest-crash";
    start_osless(&a, name).await;

    // (a) The destination daemon dies after prepare, mid-stream, and comes back: the QEMU it
    // prepared never ran the guest, so it is killed; the source keeps running it.
    a.local()
        .migrate(name, &request(&b, crawl()), false)
        .await
        .unwrap();
    wait_phase(&a, name, Phase::Precopy).await;
    b.qemus.wait_seen(name, 1).await;
    b.kill_daemon();
    b.restart_daemon();
    let p = wait_ended(&a, name).await;
    assert!(
        matches!(p.phase, Phase::Failed | Phase::Cancelled),
        "{p:?}\n{}",
        b.log()
    );
    assert_eq!(state(&a, name).await, Some(DomainState::Running), "{p:?}");
    b.assert_clean(name).await;
    assert_eq!(running_on(&[&a, &b], name).await, 1);

    // (b) The stream completes while the destination daemon is down, and the daemon that
    // comes back does not know the migration (here: a record without the incoming mark, as
    // an older daemon or a forgotten entry leaves it). Its 404 is not a refusal: the source
    // keeps the guest paused and says the outcome is unknown, it never resumes it.
    a.local()
        .migrate(name, &request(&b, crawl()), false)
        .await
        .unwrap();
    wait_phase(&a, name, Phase::Precopy).await;
    b.kill_daemon();
    wait_phase(&a, name, Phase::Finishing).await;
    let record = b.env.record(name);
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert!(
        rec.as_object_mut().unwrap().remove("incoming").is_some(),
        "the destination's record marks the incoming QEMU: {rec}"
    );
    std::fs::write(&record, serde_json::to_vec(&rec).unwrap()).unwrap();
    b.restart_daemon();
    let p = wait_ended(&a, name).await;
    assert_eq!(p.phase, Phase::Unknown, "{p:?}\n{}", a.log());
    assert_eq!(state(&a, name).await, Some(DomainState::Paused), "{p:?}");
    assert_eq!(running_on(&[&a, &b], name).await, 0, "{p:?}");
    // The source keeps its record and its definition for whoever settles it.
    assert!(a
        .env
        .config
        .run_dir
        .join(format!("migrations/{name}.json"))
        .exists());
    assert!(a
        .env
        .config
        .state_dir
        .join(format!("domains/{name}.xml"))
        .exists());
}

#[tokio::test]
async fn a_restarted_source_refuses_resume_until_the_destination_confirms() {
    let mut a = Host::start();
    let mut b = Host::start();
    let name = "mig-src-settle";
    start_osless(&a, name).await;
    a.local()
        .migrate(name, &request(&b, crawl()), false)
        .await
        .unwrap();
    wait_phase(&a, name, Phase::Precopy).await;
    b.qemus.wait_seen(name, 1).await;
    // Both daemons die; the source comes back while the destination cannot be asked.
    b.kill_daemon();
    a.kill_daemon();
    a.restart_daemon();
    // Marked before the API served: no resume slips in while it settles.
    assert_eq!(state(&a, name).await, Some(DomainState::Migrating));
    let refused = a
        .local()
        .action(name, novacrond::client::Action::Resume, true, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("wrong_state"), "{refused}");
    wait_log(&a, "asking again", Duration::from_secs(30)).await;
    assert_eq!(state(&a, name).await, Some(DomainState::Migrating));
    assert!(running_on(&[&a, &b], name).await <= 1);
    // The destination comes back (its prepared QEMU discarded): the source settles, the
    // guest runs here only.
    b.restart_daemon();
    wait_log(
        &a,
        "recovered after a daemon restart",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        state(&a, name).await,
        Some(DomainState::Running),
        "{}",
        a.log()
    );
    b.assert_clean(name).await;
    assert_eq!(running_on(&[&a, &b], name).await, 1);
    assert!(!a
        .env
        .config
        .run_dir
        .join(format!("migrations/{name}.json"))
        .exists());
}

/// `timeout_secs` with each action but post-copy (tested above through the switch itself):
/// abort gives up and the guest keeps running here; pause stops the guest so what is left is
/// copied, and the migration completes with the guest running there.
#[tokio::test]
async fn a_timed_out_migration_aborts_or_pauses_as_asked() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-timeout";
    start_osless(&a, name).await;

    let abort = MigrationOptions {
        timeout_secs: Some(1),
        ..crawl()
    };
    let t0 = Instant::now();
    let p = a
        .local()
        .migrate(name, &request(&b, abort), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Cancelled, "{p:?}");
    assert!(
        p.detail.as_deref().unwrap_or("").contains("timed out"),
        "{p:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(state(&a, name).await, Some(DomainState::Running));
    b.assert_clean(name).await;

    // Fast enough to finish once paused, too slow to finish within the second.
    let pause = MigrationOptions {
        timeout_secs: Some(1),
        timeout_action: TimeoutAction::Pause,
        // About 1 MiB of the OS-less guest is not zero pages: some 4 s at this rate.
        max_bandwidth: Some(256 << 10),
        ..Default::default()
    };
    let p = a
        .local()
        .migrate(name, &request(&b, pause), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}", a.log());
    assert!(p.elapsed_ms > 1000, "finished before the timeout: {p:?}");
    wait_log(&a, "migration timed out", Duration::from_secs(1)).await;
    assert_eq!(
        state(&b, name).await,
        Some(DomainState::Running),
        "the guest paused for the copy runs again there"
    );
    b.assert_clean_of_source(&a, name).await;
}

/// One CA and a server and a client certificate for 127.0.0.1, as `<state_dir>/pki/migration`
/// wants them, made with openssl.
fn migration_pki(dir: &std::path::Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=novacron test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
    ]);
    for (end, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{end}.ext")),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &format!("{end}-key.pem"),
            "-out",
            &format!("{end}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{end}.csr"),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{end}.ext"),
            "-out",
            &format!("{end}-cert.pem"),
        ]);
    }
}

/// `tls`: refused, with the missing file named, on a host without certificates (the guest
/// stays); with them on both hosts the stream runs through QEMU's TLS credentials.
#[tokio::test]
async fn a_tls_migration_needs_certificates_and_uses_them() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-tls";
    start_osless(&a, name).await;
    let tls = || MigrationOptions {
        tls: Some(true),
        ..Default::default()
    };

    let p = a
        .local()
        .migrate(name, &request(&b, tls()), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Failed, "{p:?}");
    assert!(
        p.detail.as_deref().unwrap_or("").contains("ca-cert.pem"),
        "{p:?}"
    );
    assert_eq!(state(&a, name).await, Some(DomainState::Running));
    b.assert_clean(name).await;

    let pki = tempfile::tempdir().unwrap();
    migration_pki(pki.path());
    for host in [&a, &b] {
        host.install_migration_pki(pki.path());
    }
    let p = a
        .local()
        .migrate(name, &request(&b, tls()), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    assert_eq!(state(&b, name).await, Some(DomainState::Running));
    let params = b
        .local()
        .qmp(name, "query-migrate-parameters", None)
        .await
        .unwrap();
    assert_eq!(params["tls-creds"], "novacron-migration-tls", "{params}");
}

/// An https:// destination (the source trusting it through a `destination_ca` in its
/// `<state_dir>/pki`): the stream is TLS without being asked, so it is refused while the
/// hosts have no migration certificates (the guest stays), and with them it completes over
/// TLS.
#[tokio::test]
async fn an_https_destination_gets_a_tls_stream_by_default() {
    let pki = tempfile::tempdir().unwrap();
    migration_pki(pki.path());
    let a = Host::start();
    let b = Host::start_https(pki.path());
    let name = "mig-https";
    start_osless(&a, name).await;
    let ca = a.env.config.state_dir.join("pki/destination-ca.pem");
    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
    std::fs::copy(pki.path().join("ca-cert.pem"), &ca).unwrap();
    let to_b = MigrateRequest {
        destination_ca: Some(ca),
        ..request(&b, MigrationOptions::default())
    };
    assert!(to_b.destination.starts_with("https://"));

    let p = a.local().migrate(name, &to_b, true).await.unwrap();
    assert_eq!(p.phase, Phase::Failed, "{p:?}");
    assert!(
        p.detail.as_deref().unwrap_or("").contains("ca-cert.pem"),
        "the stream should have been TLS: {p:?}"
    );
    assert_eq!(state(&a, name).await, Some(DomainState::Running));
    b.assert_clean(name).await;

    for host in [&a, &b] {
        host.install_migration_pki(pki.path());
    }
    let p = a.local().migrate(name, &to_b, true).await.unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    assert_eq!(state(&b, name).await, Some(DomainState::Running));
    let params = b
        .local()
        .qmp(name, "query-migrate-parameters", None)
        .await
        .unwrap();
    assert_eq!(params["tls-creds"], "novacron-migration-tls", "{params}");
}

/// The stream options QEMU applies on its own: an xbzrle cache on a single stream, and
/// multifd with zstd compression. Each migration completes and the guest runs there.
#[tokio::test]
async fn xbzrle_and_compressed_multifd_migrations_complete() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-opts";
    start_osless(&a, name).await;
    let xbzrle = MigrationOptions {
        xbzrle_cache_bytes: Some(16 << 20),
        auto_converge: true,
        ..Default::default()
    };
    let p = a
        .local()
        .migrate(name, &request(&b, xbzrle), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    b.assert_clean_of_source(&a, name).await;
    let caps = b
        .local()
        .qmp(name, "query-migrate-capabilities", None)
        .await
        .unwrap();
    let on = |cap: &str| {
        caps.as_array()
            .into_iter()
            .flatten()
            .any(|c| c["capability"] == cap && c["state"] == true)
    };
    assert!(on("xbzrle") && on("auto-converge"), "{caps}");

    let zstd = MigrationOptions {
        multifd_channels: Some(2),
        compression: Compression::Zstd,
        ..Default::default()
    };
    let p = b
        .local()
        .migrate(name, &request(&a, zstd), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}\n{}\n{}", a.log(), b.log());
    a.assert_clean_of_source(&b, name).await;
    let params = a
        .local()
        .qmp(name, "query-migrate-parameters", None)
        .await
        .unwrap();
    assert_eq!(params["multifd-compression"], "zstd", "{params}");
    assert_eq!(params["multifd-channels"], 2, "{params}");
}

/// Every thread of `pid` and the CPUs it may run on (`Cpus_allowed_list`).
fn thread_affinities(pid: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.push((tid, list.trim().to_owned()));
        }
    }
    out
}

/// The pins move with the guest: on the destination every vCPU is on its pin and every
/// other thread on the emulator's, including the ones that appear only once the vCPUs run
/// there (KVM's NX recovery thread, started from a vCPU thread by Linux >= 6.14).
#[tokio::test]
async fn a_pinned_guest_keeps_its_pins_on_the_destination() {
    assert!(
        std::thread::available_parallelism().unwrap().get() >= 2,
        "this test needs 2 host CPUs"
    );
    let a = Host::start();
    let b = Host::start();
    let name = "mig-pinned";
    let mut config = osless(name);
    let tuned = novacron_domain::DomainConfig::from_xml(&format!(
        "<domain type='kvm'><name>{name}</name><memory>65536</memory><vcpu>2</vcpu>
           <cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='1'/>
           <emulatorpin cpuset='0'/></cputune><os><type>hvm</type></os></domain>"
    ))
    .unwrap();
    config.vcpu = tuned.vcpu;
    config.cputune = tuned.cputune;
    let c = a.local();
    c.define(config.to_xml(), DefinitionFormat::Xml)
        .await
        .unwrap();
    c.action(name, novacrond::client::Action::Start, true, None)
        .await
        .unwrap();
    let p = a
        .local()
        .migrate(name, &request(&b, MigrationOptions::default()), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}");
    let pid = recorded_pid(&b.env, name);
    let cpus = b.local().qmp(name, "query-cpus-fast", None).await.unwrap();
    let vcpus: BTreeSet<u64> = cpus
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["thread-id"].as_u64().unwrap())
        .collect();
    assert_eq!(vcpus.len(), 2, "{cpus}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let off: Vec<_> = thread_affinities(pid)
            .into_iter()
            .filter(|(tid, cpus)| cpus != if vcpus.contains(tid) { "1" } else { "0" })
            .collect();
        if off.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "threads off their pins on the destination (tid, CPUs): {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.local()
        .action(name, novacrond::client::Action::Destroy, true, None)
        .await
        .unwrap();
}

/// The port QEMU's VNC server listens on (`query-vnc`), and the one the live config shows.
async fn vnc_ports(host: &Host, name: &str) -> (u16, u16) {
    let vnc = host.local().qmp(name, "query-vnc", None).await.unwrap();
    assert_eq!(vnc["enabled"], true, "{vnc}");
    let listening = vnc["service"].as_str().unwrap().parse().unwrap();
    let config = host.local().get(name).await.unwrap().config;
    let shown = config["devices"]["graphics"]["port"]["assigned"]
        .as_u64()
        .unwrap_or_else(|| panic!("no assigned port: {config}"));
    (listening, u16::try_from(shown).unwrap())
}

#[tokio::test]
async fn an_autoport_display_gets_its_own_port_on_the_destination() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-vnc";
    let mut config = osless(name);
    config.devices.graphics = Some(novacron_domain::model::Graphics::Vnc {
        port: novacron_domain::model::VncPort::Auto,
        listen: None,
        keymap: None,
    });
    let c = a.local();
    c.define(config.to_xml(), DefinitionFormat::Xml)
        .await
        .unwrap();
    c.action(name, novacrond::client::Action::Start, true, None)
        .await
        .unwrap();
    let (on_a, shown) = vnc_ports(&a, name).await;
    assert_eq!(on_a, shown);
    let p = c
        .migrate(name, &request(&b, MigrationOptions::default()), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}");
    // Both QEMUs listened at once on this one machine: the destination's port was free.
    let (on_b, shown) = vnc_ports(&b, name).await;
    assert_eq!(on_b, shown);
    assert_ne!(on_a, on_b);
    b.local()
        .action(name, novacrond::client::Action::Destroy, true, None)
        .await
        .unwrap();
}

/// Firmware the definition leaves to the host is chosen again on the destination: the source's
/// resolved loader and NVRAM paths (its own state directory) are not sent, the destination makes
/// its own NVRAM from the template, and QEMU carries the flash contents in the stream.
#[tokio::test]
async fn autoselected_firmware_is_chosen_again_on_the_destination() {
    let a = Host::start();
    let b = Host::start();
    let name = "mig-efi";
    let mut config = osless(name);
    // OVMF under this nested software KVM stops on an internal error a moment after it
    // starts (the guest pauses), and QEMU will not resume that state after migration: TCG.
    config.virt_type = novacron_domain::model::VirtType::Qemu;
    config.os.firmware = novacron_domain::model::Firmware::UefiAuto {
        secure_boot: None,
        enrolled_keys: None,
    };
    let c = a.local();
    c.define(config.to_xml(), DefinitionFormat::Xml)
        .await
        .unwrap();
    c.action(name, novacrond::client::Action::Start, true, None)
        .await
        .unwrap();
    let nvram_a = a.env.config.state_dir.join(format!("nvram/{name}.fd"));
    let nvram_b = b.env.config.state_dir.join(format!("nvram/{name}.fd"));
    assert!(nvram_a.exists() && !nvram_b.exists());
    let p = c
        .migrate(name, &request(&b, MigrationOptions::default()), true)
        .await
        .unwrap();
    assert_eq!(p.phase, Phase::Completed, "{p:?}");
    // OVMF prints nothing the OS-less heartbeat check could read: the state says it.
    assert_eq!(state(&b, name).await, Some(DomainState::Running));
    assert!(nvram_b.exists(), "the destination made its own NVRAM");
    let xml = b.local().xml(name).await.unwrap();
    assert!(
        xml.contains(&nvram_b.display().to_string())
            && !xml.contains(&nvram_a.display().to_string()),
        "{xml}"
    );
    b.local()
        .action(name, novacrond::client::Action::Destroy, true, None)
        .await
        .unwrap();
}
