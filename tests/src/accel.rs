//! Accelerator selection by probing what actually works on this host.
//!
//! Nested or software KVM (e.g. kvm_pvm) can run OS-less guests (SeaBIOS) but
//! not a Linux kernel, so the two kinds of guest are probed separately. Each
//! decision is printed to stderr, so test output says what was used.
//! `NOVACRON_TEST_ACCEL=tcg|kvm|kvm-host` skips the probes.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cache::{cache_dir, lock};
use crate::guest::{test_guest, READY_MARKER};
use crate::qemu::{qemu_binary, QemuBuilder};

/// How long the OS-guest probe waits for the ready line under KVM.
pub const OS_GUEST_PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// A deadline, not a limit on a healthy host: SeaBIOS is done in ~70 ms, but a CI machine
/// building and booting guests on both cores once took over 10 s, and the fallback to TCG then
/// failed every test that needs a host CPU model.
const OSLESS_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A QEMU accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accelerator and the CPU model to use with it (`None`: QEMU's default).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccelChoice {
    pub accel: Accel,
    pub cpu: Option<String>,
}

impl AccelChoice {
    pub fn tcg() -> Self {
        AccelChoice {
            accel: Accel::Tcg,
            cpu: None,
        }
    }

    pub fn kvm(cpu: Option<&str>) -> Self {
        AccelChoice {
            accel: Accel::Kvm,
            cpu: cpu.map(str::to_owned),
        }
    }

    /// `-accel <a> [-cpu <model>]`.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = vec!["-accel".to_owned(), self.accel.as_str().to_owned()];
        if let Some(cpu) = &self.cpu {
            args.push("-cpu".to_owned());
            args.push(cpu.clone());
        }
        args
    }

    fn encode(&self) -> String {
        match &self.cpu {
            Some(cpu) => format!("{} {cpu}", self.accel),
            None => self.accel.as_str().to_owned(),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let mut words = s.split_whitespace();
        let accel = match words.next()? {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            _ => return None,
        };
        let cpu = words.next().map(str::to_owned);
        Some(AccelChoice { accel, cpu })
    }
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cpu {
            Some(cpu) => write!(f, "{} (-cpu {cpu})", self.accel),
            None => write!(f, "{} (default CPU model)", self.accel),
        }
    }
}

/// `NOVACRON_TEST_ACCEL`, if set.
fn forced() -> Option<AccelChoice> {
    let v = std::env::var("NOVACRON_TEST_ACCEL").ok()?;
    let choice = match v.trim() {
        "tcg" => AccelChoice::tcg(),
        "kvm" => AccelChoice::kvm(None),
        "kvm-host" => AccelChoice::kvm(Some("host")),
        "" => return None,
        other => {
            eprintln!(
                "novacron-tests: ignoring NOVACRON_TEST_ACCEL={other:?} (want tcg|kvm|kvm-host)"
            );
            return None;
        }
    };
    Some(choice)
}

/// Whether `/dev/kvm` opens read-write.
pub fn kvm_device_usable() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Accelerator for OS-less guests (SeaBIOS, no disk): KVM if `/dev/kvm` opens
/// read-write and such a guest really runs under `-accel kvm` (SeaBIOS gets
/// to "No bootable device"), else TCG. Probed once per process (~1 s).
pub fn osless_accel() -> Accel {
    static CHOICE: OnceLock<Accel> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let (accel, why) = probe_osless();
        eprintln!("novacron-tests: OS-less guest accelerator: {accel} ({why})");
        accel
    })
}

fn probe_osless() -> (Accel, String) {
    if let Some(choice) = forced() {
        return (choice.accel, "forced by NOVACRON_TEST_ACCEL".into());
    }
    if !kvm_device_usable() {
        return (Accel::Tcg, "/dev/kvm does not open read-write".into());
    }
    match try_osless_kvm() {
        Ok(()) => (Accel::Kvm, "SeaBIOS ran under kvm".into()),
        Err(e) => (Accel::Tcg, format!("kvm probe failed: {e:#}")),
    }
}

fn try_osless_kvm() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("novacron-probe-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let debugcon = dir.path().join("debugcon.log");
    let mut qemu = QemuBuilder::osless()
        .with_accel(AccelChoice::kvm(None))
        .arg("-chardev")
        .arg(format!(
            "file,id=dbg,path={}",
            crate::qemu::escape_opt(&debugcon)
        ))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .spawn()?;
    let deadline = Instant::now() + OSLESS_PROBE_TIMEOUT;
    loop {
        let log = fs::read(&debugcon).unwrap_or_default();
        if String::from_utf8_lossy(&log).contains("No bootable device") {
            return Ok(());
        }
        if let Some(status) = qemu.try_wait()? {
            bail!(
                "QEMU exited ({status}): {}",
                crate::qemu::tail(&qemu.stderr_text(), 5)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "SeaBIOS did not finish within {}s",
                OSLESS_PROBE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Accelerator for the Linux test guest (see [`os_guest_choice`]).
pub fn os_guest_accel() -> Result<Accel> {
    os_guest_choice().map(|c| c.accel)
}

/// The CPU model chosen for the Linux test guest (`None`: QEMU's default).
pub fn cpu_model() -> Result<Option<String>> {
    os_guest_choice().map(|c| c.cpu)
}

/// Accelerator and CPU model for the Linux test guest: boots it under KVM,
/// with `-cpu host` first and, if QEMU aborts, the default model, and waits
/// up to [`OS_GUEST_PROBE_TIMEOUT`] for the ready line; TCG if it does not
/// come. The result is cached in the cache directory, keyed by host kernel
/// release, QEMU version and guest build, so the wait is paid once per
/// machine; and memoised per process. Blocking (builds the guest if needed).
pub fn os_guest_choice() -> Result<AccelChoice> {
    static CHOICE: OnceLock<Result<AccelChoice, String>> = OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let (choice, why) = os_guest_decide().map_err(|e| format!("{e:#}"))?;
            eprintln!("novacron-tests: OS guest accelerator: {choice} ({why})");
            Ok(choice)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot choose the OS guest accelerator: {e}"))
}

fn os_guest_decide() -> Result<(AccelChoice, String)> {
    if let Some(choice) = forced() {
        return Ok((choice, "forced by NOVACRON_TEST_ACCEL".into()));
    }
    if !kvm_device_usable() {
        return Ok((
            AccelChoice::tcg(),
            "/dev/kvm does not open read-write".into(),
        ));
    }
    let guest = test_guest()?;
    let key = format!(
        "{} | {} | {}",
        host_kernel_release(),
        qemu_version()?,
        guest.stamp
    );
    let cache = cache_dir().join("os-guest-accel");
    let _lock = lock("os-guest-accel")?;
    if let Some(choice) = read_cached(&cache, &key) {
        return Ok((choice, format!("cached in {}", cache.display())));
    }
    let (choice, why) = probe_os_guest();
    let text = format!("key {key}\nchoice {}\nwhy {why}\n", choice.encode());
    let tmp = cache.with_extension("tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &cache))
        .with_context(|| format!("cannot write {}", cache.display()))?;
    Ok((choice, why))
}

fn read_cached(path: &std::path::Path, key: &str) -> Option<AccelChoice> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()?.strip_prefix("key ")? != key {
        return None;
    }
    AccelChoice::decode(lines.next()?.strip_prefix("choice ")?)
}

fn probe_os_guest() -> (AccelChoice, String) {
    let start = Instant::now();
    let deadline = start + OS_GUEST_PROBE_TIMEOUT;
    let mut notes = Vec::new();
    for cpu in [Some("host"), None] {
        let choice = AccelChoice::kvm(cpu);
        match try_os_guest(&choice, deadline) {
            Ok(()) => {
                notes.push(format!(
                    "kvm reached the ready line in {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                return (choice, notes.join("; "));
            }
            Err(ProbeFailure::Exited(msg)) => notes.push(format!("{choice}: {msg}")),
            Err(ProbeFailure::Hung) => {
                notes.push(format!(
                    "{choice} did not reach the ready line in {}s",
                    OS_GUEST_PROBE_TIMEOUT.as_secs()
                ));
                break;
            }
        }
    }
    (AccelChoice::tcg(), notes.join("; "))
}

enum ProbeFailure {
    Exited(String),
    Hung,
}

fn try_os_guest(choice: &AccelChoice, deadline: Instant) -> Result<(), ProbeFailure> {
    let mut qemu = QemuBuilder::test_guest()
        .with_accel(choice.clone())
        .spawn()
        .map_err(|e| ProbeFailure::Exited(format!("{e:#}")))?;
    loop {
        if qemu.serial_text().contains(READY_MARKER) {
            return Ok(());
        }
        match qemu.try_wait() {
            Ok(Some(status)) => {
                return Err(ProbeFailure::Exited(format!(
                    "QEMU exited ({status}): {}",
                    crate::qemu::tail(&qemu.stderr_text(), 3)
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(ProbeFailure::Exited(format!("{e:#}"))),
        }
        if Instant::now() >= deadline {
            return Err(ProbeFailure::Hung);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn host_kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown-kernel".into())
}

fn qemu_version() -> Result<String> {
    let bin = qemu_binary();
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", bin.to_string_lossy()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("unknown-qemu")
        .to_owned())
}
