//! A real systemd in a container: [`Container::boot`] starts `systemd-nspawn -b` on a
//! throw-away overlay of a root file system (see [`crate::nspawn_rootfs`]) and waits until
//! the container's systemd has finished booting; [`Container::run`] runs a shell script in
//! it with `nsenter`. Dropping it powers the container off (and kills what is left).
//!
//! The host needs no systemd: the container is not registered with machined
//! (`--register=no --keep-unit`). With `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`,
//! `--capability=all` and `--system-call-filter=bpf` the container's systemd gets a cgroup v2
//! tree and may load BPF programs, so it enforces `DevicePolicy=`/`DeviceAllow=` like on a
//! host (without them it silently does not).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// A host path made visible in the container.
#[derive(Debug, Clone)]
pub struct Bind {
    pub host: PathBuf,
    pub inside: String,
    pub read_only: bool,
}

pub struct Container {
    nspawn: Child,
    leader: u32,
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a script in the container got.
#[derive(Debug)]
pub struct Ran {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Container {
    /// Boots `rootfs` as machine `name` with `binds` and `/dev/kvm` (when present), and waits
    /// (up to `within`) until its systemd reports `running` or `degraded`. The root file
    /// system is an overlay with a tmpfs on top (`--volatile=overlay`): `rootfs` is only read.
    pub fn boot(rootfs: &Path, name: &str, binds: &[Bind], within: Duration) -> Result<Container> {
        for tool in ["systemd-nspawn", "nsenter", "timeout"] {
            ensure!(
                which(tool),
                "{tool} is missing (./quickstart.sh installs systemd-container and util-linux)"
            );
        }
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("nspawn.log");
        let out = File::create(&log)?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args(["-b", "-D"])
            .arg(rootfs)
            .args(["-M", name])
            .args([
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--private-network",
                "--link-journal=no",
                "--capability=all",
                "--system-call-filter=bpf",
                "--console=read-only",
            ]);
        if Path::new("/dev/kvm").exists() {
            cmd.arg("--bind=/dev/kvm");
        }
        for b in binds {
            let host = b.host.to_str().context("bind path is not UTF-8")?;
            ensure!(
                !host.contains(':') && !b.inside.contains(':'),
                "bind paths may not contain ':': {host} {}",
                b.inside
            );
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={host}:{}", b.inside));
        }
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start systemd-nspawn")?;
        let mut container = Container {
            nspawn,
            leader: 0,
            name: name.to_owned(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + within;
        container.leader = container.find_leader(deadline)?;
        container.wait_booted(deadline)?;
        Ok(container)
    }

    /// The container's PID 1 as the host sees it.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What systemd-nspawn and the container's console printed.
    pub fn console(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` with `sh -c` in all of the container's namespaces, as root, with a clean
    /// environment; killed after `within`.
    pub fn run(&self, script: &str, within: Duration) -> Result<Ran> {
        let out: Output = Command::new("timeout")
            .args(["-k", "5"])
            .arg(format!("{}", within.as_secs().max(1)))
            .args(["nsenter", "-t", &self.leader.to_string(), "-a", "--"])
            .args([
                "env",
                "-i",
                &format!("PATH={PATH}"),
                "HOME=/root",
                "LANG=C.UTF-8",
            ])
            .args(["SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .context("cannot run nsenter")?;
        let ran = Ran {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if ran.status == Some(124) {
            bail!("timed out after {within:?} in the container: {script}\n{ran:?}");
        }
        Ok(ran)
    }

    fn find_leader(&mut self, deadline: Instant) -> Result<u32> {
        let nspawn = self.nspawn.id();
        loop {
            if let Some(status) = self.nspawn.try_wait()? {
                bail!(
                    "systemd-nspawn exited ({status}) before the container booted:\n{}",
                    self.console()
                );
            }
            // PID 1 of the container's PID namespace is a child of systemd-nspawn.
            for child in children(nspawn) {
                let status =
                    fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
                let ns_pid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|l| l.split_whitespace().last().map(str::to_owned));
                if ns_pid.as_deref() == Some("1") {
                    return Ok(child);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no container PID 1 under systemd-nspawn (pid {nspawn}):\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_booted(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if let Some(status) = self.nspawn.try_wait()? {
                bail!(
                    "the container stopped ({status}) while booting:\n{}",
                    self.console()
                );
            }
            // Fails until the container's systemd answers on its private socket.
            let ran = self.run("systemctl is-system-running", Duration::from_secs(10))?;
            let last = format!("{}{}", ran.stdout, ran.stderr);
            match ran.stdout.trim() {
                "running" => return Ok(()),
                // A unit NovaCron does not need may fail on some hosts: say which, go on.
                "degraded" => {
                    let failed =
                        self.run("systemctl --failed --no-legend", Duration::from_secs(10))?;
                    eprintln!(
                        "novacron-tests: container {} booted degraded:\n{}",
                        self.name, failed.stdout
                    );
                    return Ok(());
                }
                _ => {}
            }
            ensure!(
                Instant::now() < deadline,
                "the container did not finish booting (last: {last}):\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Powers the container off (systemd-nspawn turns SIGTERM into an orderly shutdown of the
/// container); kills its PID 1, and so everything in it, if that takes too long.
impl Drop for Container {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.leader != 0 {
            let leader = nix::unistd::Pid::from_raw(self.leader as i32);
            let _ = nix::sys::signal::kill(leader, nix::sys::signal::Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
