//! The test guest: a Debian cloud kernel plus a busybox initramfs, built once
//! per machine by `tests/guest/build-test-guest.sh` and cached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::cache::{cache_dir, lock};

/// Serial marker printed by the guest's init once modules and acpid are up.
pub const READY_MARKER: &str = "NOVACRON-TEST-GUEST-READY";
/// Prefix of the once-a-second heartbeat line (`NOVACRON-HEARTBEAT <n>`).
pub const HEARTBEAT_MARKER: &str = "NOVACRON-HEARTBEAT";
/// Prefix of the line printed when the `novacron.dirty_mib=N` fill is done
/// (`NOVACRON-DIRTY-READY <N>`).
pub const DIRTY_READY_MARKER: &str = "NOVACRON-DIRTY-READY";
/// Printed by the guest's ACPI power-button handler just before `poweroff -f`.
pub const POWERDOWN_MARKER: &str = "NOVACRON-POWERDOWN";

/// Prefix of the line printed for each DHCP lease with `novacron.dhcp=1`
/// (`NOVACRON-DHCP <iface> <ip>`).
pub const DHCP_MARKER: &str = "NOVACRON-DHCP";
/// Printed when qemu-ga's `guest-shutdown` runs the guest's `/sbin/shutdown`
/// (`NOVACRON-AGENT-SHUTDOWN poweroff|reboot`).
pub const AGENT_SHUTDOWN_MARKER: &str = "NOVACRON-AGENT-SHUTDOWN";

/// Kernel and initramfs of the built test guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// First line of the build's `VERSION` stamp (`script-sha256 <hash>`).
    pub stamp: String,
}

/// Path of the build script (in the source tree).
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build-test-guest.sh")
}

/// Directory the guest is built into: `<cache_dir>/test-guest`.
pub fn guest_dir() -> PathBuf {
    cache_dir().join("test-guest")
}

/// Returns the test guest, building it first if the cached build is missing
/// or was made by a different version of the build script.
///
/// The build runs under an exclusive file lock, so parallel test binaries
/// build it once; the result (or the error) is memoised per process.
///
/// This blocks (for seconds on a first build, which downloads two Debian
/// packages). Async tests call it through `tokio::task::spawn_blocking`, or
/// before building their runtime; `QemuBuilder::spawn` calls it too.
pub fn test_guest() -> Result<TestGuest> {
    static GUEST: OnceLock<Result<TestGuest, String>> = OnceLock::new();
    GUEST
        .get_or_init(|| build_if_needed().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("test guest unavailable: {e}"))
}

fn build_if_needed() -> Result<TestGuest> {
    let script = build_script();
    let expected = format!("script-sha256 {}", sha256_of(&script)?);
    let out = guest_dir();
    let _lock = lock("test-guest")?;
    if let Some(guest) = cached(&out, &expected) {
        return Ok(guest);
    }
    eprintln!(
        "novacron-tests: building the test guest into {} (once per machine)",
        out.display()
    );
    let start = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}); its stderr:\n{}",
            script.display(),
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let guest = cached(&out, &expected).with_context(|| {
        format!(
            "{} succeeded but {}/VERSION does not start with `{expected}`",
            script.display(),
            out.display()
        )
    })?;
    eprintln!(
        "novacron-tests: test guest built in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(guest)
}

/// The guest in `dir`, if its stamp's first line is `expected` and the images
/// exist.
fn cached(dir: &Path, expected: &str) -> Option<TestGuest> {
    let stamp = fs::read_to_string(dir.join("VERSION")).ok()?;
    let first = stamp.lines().next()?;
    let guest = TestGuest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        stamp: first.to_owned(),
    };
    (first == expected && guest.kernel.is_file() && guest.initrd.is_file()).then_some(guest)
}

fn sha256_of(path: &Path) -> Result<String> {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum (coreutils)")?;
    if !output.status.success() {
        bail!(
            "sha256sum {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("unexpected sha256sum output: {text:?}"))
}
