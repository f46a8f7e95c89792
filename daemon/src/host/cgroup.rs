//! Per-guest cgroups where systemd does not manage them: the cpuset and memory controllers,
//! cgroup v2 (the unified hierarchy) when it offers them, else the v1 hierarchies.
//!
//! Each guest gets `<parent>/<name>` in every hierarchy used; `parent` is relative to the
//! daemon's own cgroup (so a daemon in a container keeps its guests inside its own limits) or,
//! when absolute, to the hierarchy's root. The layout is read from `/proc/self/mountinfo` and
//! `/proc/self/cgroup`; both paths are parameters so tests can point elsewhere.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use crate::config::host::{CgroupConfig, CgroupMode};

/// What a guest's cgroup limits: `None` leaves that control as the parent has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpus: Option<Vec<u32>>,
    pub mems: Option<Vec<u32>>,
    pub memory_max_bytes: Option<u64>,
    /// Reclaim target under pressure: v2 `memory.high`, v1 `memory.soft_limit_in_bytes`.
    pub memory_high_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy with the cpuset or memory controller is mounted")]
    Unavailable,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "parent {parent:?}: the cpuset and memory controllers cannot be enabled in {} \
         because processes (e.g. novacrond itself) sit in it, and cgroup v2 gives no controllers \
         to the children of a non-root cgroup with processes; set parent to an absolute path \
         such as \"/novacron.slice\"",
        dir.display()
    )]
    HoldsProcesses { parent: PathBuf, dir: PathBuf },
}

/// The daemon's per-guest cgroup decision, made once at start from `[cgroups]`.
#[derive(Debug)]
pub struct GuestCgroups {
    mode: CgroupMode,
    cgroups: Option<Cgroups>,
    /// Auto mode logs one placement failure per daemon, not one per start.
    warned: AtomicBool,
}

impl GuestCgroups {
    /// No per-guest cgroups (mode off, or systemd scopes carry the limits).
    pub fn none() -> GuestCgroups {
        GuestCgroups {
            mode: CgroupMode::Off,
            cgroups: None,
            warned: AtomicBool::new(false),
        }
    }

    /// `detected`: the host's layout (see [`Cgroups::detect`]). It is checked up front, so a
    /// parent where the kernel cannot give the controllers is found at start, not per guest:
    /// mode `on` fails with the reason; `auto` logs it once and runs guests without cgroups.
    pub fn decide(
        mode: CgroupMode,
        detected: impl FnOnce() -> Result<Cgroups, CgroupError>,
    ) -> Result<GuestCgroups, CgroupError> {
        let cgroups = match mode {
            CgroupMode::Off => None,
            CgroupMode::On => Some(detected().and_then(|c| c.preflight().map(|()| c))?),
            CgroupMode::Auto => match detected().and_then(|c| c.preflight().map(|()| c)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "[cgroups] mode auto: guests run without per-guest cgroups");
                    None
                }
            },
        };
        Ok(GuestCgroups {
            mode,
            cgroups,
            warned: AtomicBool::new(false),
        })
    }

    /// The manager, when guests get cgroups.
    pub fn active(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    /// Places a new QEMU (see [`Cgroups::place`]). In auto mode a failure is a warning
    /// (logged once per daemon) and the guest runs without a cgroup: `Ok(None)`.
    pub fn place(
        &self,
        name: &str,
        pid: u32,
        limits: &Limits,
    ) -> Result<Option<GuestCgroup>, CgroupError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(None);
        };
        match cgroups.place(name, pid, limits) {
            Ok(g) => Ok(Some(g)),
            Err(e) if self.mode == CgroupMode::Auto => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        domain = name,
                        error = %e,
                        "[cgroups] mode auto: cannot place the guest in its cgroup; it runs \
                         without one (logged once)"
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Where the controllers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy with cpuset and memory available: one directory per guest.
    V2 { mount: PathBuf, own: PathBuf },
    /// Separate hierarchies; either may be missing.
    V1 {
        cpuset: Option<(PathBuf, PathBuf)>,
        memory: Option<(PathBuf, PathBuf)>,
    },
}

/// The cgroup manager for one daemon: the layout and the configured parent.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    parent: PathBuf,
}

/// One guest's cgroup directories (one in v2; one per controller in v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCgroup {
    pub dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Detects the layout from this process's view of the system.
    pub fn detect(parent: &Path) -> Result<Cgroups, CgroupError> {
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let own = read(Path::new("/proc/self/cgroup"))?;
        let layout = Layout::parse(&mountinfo, &own, |p| std::fs::read_to_string(p).ok())
            .ok_or(CgroupError::Unavailable)?;
        Ok(Cgroups {
            layout,
            parent: parent.to_owned(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether guests can get their controllers below the parent. On cgroup v2 every cgroup
    /// on the way that must newly enable cpuset/memory for its children must hold no
    /// processes (the root excepted): a relative parent below the daemon's own cgroup fails
    /// here unless the daemon runs in the root cgroup.
    pub fn preflight(&self) -> Result<(), CgroupError> {
        let Layout::V2 { mount, .. } = &self.layout else {
            return Ok(());
        };
        let dir = self.guest("x").dirs.remove(0);
        for a in dir.ancestors().skip(1).take_while(|a| a.starts_with(mount)) {
            if a == mount || !a.exists() {
                continue;
            }
            let enabled = read(&a.join("cgroup.subtree_control"))?;
            let missing = ["cpuset", "memory"]
                .iter()
                .any(|c| !enabled.split_whitespace().any(|x| x == *c));
            let busy = !read(&a.join("cgroup.procs"))?.trim().is_empty();
            if missing && busy {
                return Err(CgroupError::HoldsProcesses {
                    parent: self.parent.clone(),
                    dir: a.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The directories a guest named `name` gets, without creating them.
    pub fn guest(&self, name: &str) -> GuestCgroup {
        let under = |mount: &Path, own: &Path| {
            let base = if self.parent.is_absolute() {
                mount.to_owned()
            } else {
                join_rel(mount, own)
            };
            join_rel(&base, &self.parent).join(name)
        };
        let dirs = match &self.layout {
            Layout::V2 { mount, own } => vec![under(mount, own)],
            Layout::V1 { cpuset, memory } => [cpuset, memory]
                .into_iter()
                .flatten()
                .map(|(m, o)| under(m, o))
                .collect(),
        };
        GuestCgroup { dirs }
    }

    /// Creates the guest's cgroup(s) with `limits` and moves `pid` (all its threads) in.
    pub fn place(&self, name: &str, pid: u32, limits: &Limits) -> Result<GuestCgroup, CgroupError> {
        let guest = self.guest(name);
        let result = match &self.layout {
            Layout::V2 { mount, .. } => place_v2(mount, &guest.dirs[0], pid, limits),
            Layout::V1 { cpuset, memory } => {
                // `guest.dirs` holds the cpuset directory first, then the memory one.
                let mut dirs = guest.dirs.iter();
                let cpuset_dir = cpuset.as_ref().and_then(|(m, _)| Some((m, dirs.next()?)));
                let memory_dir = memory.as_ref().and_then(|(m, _)| Some((m, dirs.next()?)));
                cpuset_dir
                    .map_or(Ok(()), |(mount, dir)| {
                        place_v1_cpuset(mount, dir, pid, limits)
                    })
                    .and_then(|()| {
                        memory_dir.map_or(Ok(()), |(mount, dir)| {
                            place_v1_memory(mount, dir, pid, limits)
                        })
                    })
            }
        };
        match result {
            Ok(()) => Ok(guest),
            Err(e) => {
                remove(&guest, Duration::ZERO);
                Err(e)
            }
        }
    }

    /// Changes the CPUs of a guest's cpuset (`None`: as its parent has them). The kernel
    /// resets every thread's affinity to the new set, so callers re-apply their pins after.
    pub fn set_cpus(&self, name: &str, cpus: Option<&[u32]>) -> Result<(), CgroupError> {
        let guest = self.guest(name);
        let dir = match &self.layout {
            Layout::V2 { .. } => guest.dirs.first(),
            Layout::V1 { cpuset, .. } => cpuset.as_ref().and(guest.dirs.first()),
        };
        let Some(dir) = dir else { return Ok(()) };
        let parent = dir.parent().unwrap_or(dir);
        let value = match cpus {
            Some(c) => list(c),
            None => effective(parent, "cpus")?,
        };
        write(&dir.join("cpuset.cpus"), &value)
    }
}

impl Layout {
    /// From `/proc/self/mountinfo` and `/proc/self/cgroup`; `read` reads a controller list.
    pub fn parse(
        mountinfo: &str,
        own: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Option<Layout> {
        let mut v2 = None;
        let (mut cpuset, mut memory) = (None, None);
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split(' ').nth(4);
            let mut r = right.split(' ');
            let (fstype, _, options) = (r.next(), r.next(), r.next().unwrap_or(""));
            let Some(mount) = mount.map(PathBuf::from) else {
                continue;
            };
            match fstype {
                Some("cgroup2") => v2 = Some(mount),
                Some("cgroup") => {
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpuset") {
                        cpuset = Some(mount.clone());
                    }
                    if opts.contains(&"memory") {
                        memory = Some(mount);
                    }
                }
                _ => {}
            }
        }
        let own_path = |controller: Option<&str>| -> PathBuf {
            own.lines()
                .filter_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                    let hit = match controller {
                        None => ctrls.is_empty(),
                        Some(c) => ctrls.split(',').any(|x| x == c),
                    };
                    hit.then(|| PathBuf::from(path))
                })
                .next()
                .unwrap_or_else(|| PathBuf::from("/"))
        };
        if let Some(mount) = v2 {
            let controllers = read(&mount.join("cgroup.controllers")).unwrap_or_default();
            let has = |c| controllers.split_whitespace().any(|x| x == c);
            if has("cpuset") && has("memory") {
                return Some(Layout::V2 {
                    mount,
                    own: own_path(None),
                });
            }
        }
        if cpuset.is_none() && memory.is_none() {
            return None;
        }
        Some(Layout::V1 {
            cpuset: cpuset.map(|m| (m, own_path(Some("cpuset")))),
            memory: memory.map(|m| (m, own_path(Some("memory")))),
        })
    }
}

/// Removes a guest's cgroup(s), waiting up to `patience` for the kernel to let go of tasks
/// that just exited. Failures are logged: an empty cgroup left behind harms nothing.
pub fn remove(guest: &GuestCgroup, patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    for dir in &guest.dirs {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cgroup still busy");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the guest's cgroup");
                    break;
                }
            }
        }
    }
}

fn place_v2(mount: &Path, dir: &Path, pid: u32, limits: &Limits) -> Result<(), CgroupError> {
    // Controllers must be enabled in every ancestor's subtree_control, root down.
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(mount))
        .collect();
    ancestors.reverse();
    for a in &ancestors {
        mkdir(a)?;
        let control = a.join("cgroup.subtree_control");
        let enabled = read(&control)?;
        let missing: Vec<String> = ["cpuset", "memory"]
            .into_iter()
            .filter(|c| !enabled.split_whitespace().any(|x| x == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            write(&control, &missing.join(" "))?;
        }
    }
    mkdir(dir)?;
    if let Some(cpus) = &limits.cpus {
        write(&dir.join("cpuset.cpus"), &list(cpus))?;
    }
    if let Some(mems) = &limits.mems {
        write(&dir.join("cpuset.mems"), &list(mems))?;
    }
    if let Some(max) = limits.memory_max_bytes {
        write(&dir.join("memory.max"), &max.to_string())?;
    }
    if let Some(high) = limits.memory_high_bytes {
        write(&dir.join("memory.high"), &high.to_string())?;
    }
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

fn place_v1_cpuset(mount: &Path, dir: &Path, pid: u32, limits: &Limits) -> Result<(), CgroupError> {
    // A new v1 cpuset starts empty and takes no task until it has CPUs and memory nodes: each
    // directory created on the way copies its parent's.
    let mut created: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| a.starts_with(mount) && *a != mount)
        .collect();
    created.reverse();
    for d in created {
        let fresh = !d.exists();
        mkdir(d)?;
        let is_guest = d == dir;
        if fresh || is_guest {
            let parent = d.parent().unwrap_or(mount);
            let cpus = match (&limits.cpus, is_guest) {
                (Some(c), true) => list(c),
                _ => effective(parent, "cpus")?,
            };
            let mems = match (&limits.mems, is_guest) {
                (Some(m), true) => list(m),
                _ => effective(parent, "mems")?,
            };
            write(&d.join("cpuset.mems"), &mems)?;
            write(&d.join("cpuset.cpus"), &cpus)?;
        }
    }
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

fn place_v1_memory(mount: &Path, dir: &Path, pid: u32, limits: &Limits) -> Result<(), CgroupError> {
    let mut missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| a.starts_with(mount) && *a != mount)
        .collect();
    missing.reverse();
    for d in missing {
        mkdir(d)?;
    }
    if let Some(max) = limits.memory_max_bytes {
        write(&dir.join("memory.limit_in_bytes"), &max.to_string())?;
    }
    if let Some(high) = limits.memory_high_bytes {
        write(&dir.join("memory.soft_limit_in_bytes"), &high.to_string())?;
    }
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// `cpuset.effective_<what>` of `dir` (v1 and v2 both have it), else `cpuset.<what>`.
fn effective(dir: &Path, what: &str) -> Result<String, CgroupError> {
    read(&dir.join(format!("cpuset.effective_{what}")))
        .or_else(|_| read(&dir.join(format!("cpuset.{what}"))))
        .map(|s| s.trim().to_owned())
}

fn join_rel(base: &Path, rel: &Path) -> PathBuf {
    base.join(rel.strip_prefix("/").unwrap_or(rel))
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// `0-3,8`, the kernel's list format.
pub fn list(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
36 25 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
37 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 25 0:33 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
    const OWN: &str = "4:memory:/box/1\n3:cpuset:/\n0::/\n";

    #[test]
    fn a_hybrid_host_without_v2_controllers_uses_v1_under_the_own_cgroup() {
        let layout = Layout::parse(HYBRID, OWN, |_| Some("hugetlb\n".into())).unwrap();
        let cg = Cgroups {
            layout,
            parent: "novacron".into(),
        };
        assert_eq!(
            cg.guest("vm").dirs,
            [
                PathBuf::from("/sys/fs/cgroup/cpuset/novacron/vm"),
                PathBuf::from("/sys/fs/cgroup/memory/box/1/novacron/vm")
            ]
        );
        let abs = Cgroups {
            parent: "/machine".into(),
            ..cg
        };
        assert_eq!(
            abs.guest("vm").dirs[1],
            PathBuf::from("/sys/fs/cgroup/memory/machine/vm")
        );
    }

    #[test]
    fn v2_is_preferred_when_it_has_both_controllers() {
        let unified = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let layout = Layout::parse(unified, "0::/system.slice/novacrond.service\n", |p| {
            (p == Path::new("/sys/fs/cgroup/cgroup.controllers"))
                .then(|| "cpuset cpu io memory pids".into())
        })
        .unwrap();
        let cg = Cgroups {
            layout,
            parent: "/novacron.slice".into(),
        };
        assert_eq!(
            cg.guest("vm").dirs,
            [PathBuf::from("/sys/fs/cgroup/novacron.slice/vm")]
        );
        assert!(Layout::parse(unified, "0::/\n", |_| Some("cpu io".into())).is_none());
    }

    /// The v2 steps against a plain directory standing in for cgroupfs (this host's cpuset
    /// and memory controllers are on v1): which files are written, in which directories.
    #[test]
    fn v2_enables_controllers_down_the_path_then_limits_and_moves_the_pid() {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().to_owned();
        std::fs::write(mount.join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        std::fs::create_dir(mount.join("novacron.slice")).unwrap();
        std::fs::write(mount.join("novacron.slice/cgroup.subtree_control"), "").unwrap();
        let cg = Cgroups {
            layout: Layout::V2 {
                mount: mount.clone(),
                own: "/".into(),
            },
            parent: "/novacron.slice".into(),
        };
        let limits = Limits {
            cpus: Some(vec![1, 2, 3]),
            mems: Some(vec![0]),
            memory_max_bytes: Some(1 << 30),
            memory_high_bytes: Some(1 << 29),
        };
        let guest = cg.place("vm", 4242, &limits).unwrap();
        let dir = mount.join("novacron.slice/vm");
        assert_eq!(guest.dirs, std::slice::from_ref(&dir));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&mount.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(
            read(&mount.join("novacron.slice/cgroup.subtree_control")),
            "+cpuset +memory"
        );
        assert_eq!(read(&dir.join("cpuset.cpus")), "1-3");
        assert_eq!(read(&dir.join("cpuset.mems")), "0");
        assert_eq!(read(&dir.join("memory.max")), (1u64 << 30).to_string());
        assert_eq!(read(&dir.join("memory.high")), (1u64 << 29).to_string());
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    }

    /// A stand-in v2 tree: the root, and the daemon's own cgroup holding its pid.
    fn daemon_in_a_service_cgroup() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().to_owned();
        std::fs::write(mount.join("cgroup.subtree_control"), "cpuset memory\n").unwrap();
        let own = mount.join("novacrond.service");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(own.join("cgroup.procs"), "4141\n").unwrap();
        (root, mount)
    }

    fn v2(mount: &Path, parent: &str) -> Cgroups {
        Cgroups {
            layout: Layout::V2 {
                mount: mount.to_owned(),
                own: "/novacrond.service".into(),
            },
            parent: parent.into(),
        }
    }

    /// The default relative parent below a daemon's own (non-root, populated) v2 cgroup:
    /// the kernel would refuse the controllers (EBUSY). `on` fails at start naming the
    /// parent and the cgroup; `auto` runs guests without cgroups; `off` never looks.
    #[test]
    fn a_relative_v2_parent_below_a_populated_cgroup_is_refused_up_front() {
        let (_root, mount) = daemon_in_a_service_cgroup();
        let err = GuestCgroups::decide(CgroupMode::On, || Ok(v2(&mount, "novacron")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"novacron\""), "{err}");
        assert!(err.contains("novacrond.service"), "{err}");
        assert!(err.contains("absolute"), "{err}");
        let auto = GuestCgroups::decide(CgroupMode::Auto, || Ok(v2(&mount, "novacron"))).unwrap();
        assert!(auto.active().is_none());
        assert_eq!(auto.place("vm", 1, &Limits::default()).unwrap(), None);
        let off = GuestCgroups::decide(CgroupMode::Off, || panic!("not detected")).unwrap();
        assert!(off.active().is_none());
        // Nothing was written into the daemon's cgroup.
        let control = mount.join("novacrond.service/cgroup.subtree_control");
        assert_eq!(std::fs::read_to_string(control).unwrap(), "");
        assert!(!mount.join("novacrond.service/novacron").exists());
    }

    #[test]
    fn an_absolute_v2_parent_beside_the_daemon_is_used() {
        let (_root, mount) = daemon_in_a_service_cgroup();
        std::fs::create_dir(mount.join("novacron.slice")).unwrap();
        std::fs::write(mount.join("novacron.slice/cgroup.subtree_control"), "").unwrap();
        std::fs::write(mount.join("novacron.slice/cgroup.procs"), "").unwrap();
        let on =
            GuestCgroups::decide(CgroupMode::On, || Ok(v2(&mount, "/novacron.slice"))).unwrap();
        let guest = on.place("vm", 4242, &Limits::default()).unwrap().unwrap();
        assert_eq!(guest.dirs, [mount.join("novacron.slice/vm")]);
        let procs = std::fs::read_to_string(mount.join("novacron.slice/vm/cgroup.procs"));
        assert_eq!(procs.unwrap(), "4242");
    }

    /// A placement that fails later (here: the parent's control file is unreadable) is an
    /// error with `on`, and a guest without a cgroup with `auto`.
    #[test]
    fn auto_starts_without_a_cgroup_when_placement_fails() {
        let (_root, mount) = daemon_in_a_service_cgroup();
        std::fs::create_dir(mount.join("novacron.slice")).unwrap();
        std::fs::create_dir(mount.join("novacron.slice/cgroup.subtree_control")).unwrap();
        let on = GuestCgroups::decide(CgroupMode::On, || Ok(v2(&mount, "/novacron.slice")));
        assert!(matches!(on, Err(CgroupError::Read { .. })), "{on:?}");
        let cg = GuestCgroups {
            mode: CgroupMode::Auto,
            cgroups: Some(v2(&mount, "/novacron.slice")),
            warned: AtomicBool::new(false),
        };
        assert_eq!(cg.place("vm", 1, &Limits::default()).unwrap(), None);
        assert_eq!(cg.place("vm2", 1, &Limits::default()).unwrap(), None);
        let strict = GuestCgroups {
            mode: CgroupMode::On,
            ..cg
        };
        // Strict mode reports the file it could not read instead of running unconfined.
        match strict.place("vm", 1, &Limits::default()) {
            Err(CgroupError::Read { path, .. }) => {
                assert!(
                    path.ends_with("novacron.slice/cgroup.subtree_control"),
                    "{path:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists() {
        assert_eq!(list(&[3, 0, 1, 2, 8]), "0-3,8");
        assert_eq!(list(&[]), "");
    }
}
