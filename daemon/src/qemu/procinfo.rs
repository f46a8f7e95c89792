//! Is this pid still the QEMU we started? A pid alone is not an identity: after a daemon
//! restart the recorded pid may have exited and been reused, or the host may have rebooted.
//! Start time, boot id and command line together tell.

use std::io;
use std::path::PathBuf;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: R, S, D, Z, T, t, X, I...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parse the contents of `/proc/<pid>/stat`. `comm` (field 2) is arbitrary bytes in
/// parentheses and may itself contain spaces and ')', so fields are counted after the LAST
/// ')'.
pub fn parse_stat(stat: &[u8]) -> io::Result<Stat> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("stat: {what}"));
    let close = stat
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| bad("no ')' after comm"))?;
    let rest = std::str::from_utf8(&stat[close + 1..]).map_err(|_| bad("not ASCII after comm"))?;
    let mut fields = rest.split_ascii_whitespace();
    // fields[0] is field 3 (state); field 22 is fields[19].
    let state = fields
        .next()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| bad("no state"))?;
    let start_time = fields
        .nth(18)
        .ok_or_else(|| bad("fewer than 22 fields"))?
        .parse()
        .map_err(|_| bad("start time is not a number"))?;
    Ok(Stat { state, start_time })
}

pub fn stat(pid: u32) -> io::Result<Stat> {
    parse_stat(&std::fs::read(proc_path(pid, "stat"))?)
}

pub fn start_time(pid: u32) -> io::Result<u64> {
    stat(pid).map(|s| s.start_time)
}

pub fn state_char(pid: u32) -> io::Result<char> {
    stat(pid).map(|s| s.state)
}

pub fn boot_id() -> io::Result<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    Ok(id.trim().to_owned())
}

/// The process's arguments (NUL-separated in /proc), lossily decoded.
pub fn cmdline(pid: u32) -> io::Result<Vec<String>> {
    let raw = std::fs::read(proc_path(pid, "cmdline"))?;
    Ok(split_cmdline(&raw))
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The process we started, still running.
    Same,
    /// It exited (or is a zombie), or the host rebooted since.
    Gone,
    /// The pid now belongs to another process (its start time differs): ours is gone. Never
    /// signal the pid.
    Reused(String),
    /// We cannot tell (unreadable /proc, a command line that does not match the record): it
    /// may be our guest. Never signal it, never treat it as stopped.
    Unsure(String),
}

/// Compare the live process `pid` against what was recorded at spawn.
pub fn verify(pid: u32, start_time: u64, boot_id: &str, argv: &[String]) -> Liveness {
    match self::boot_id() {
        Ok(now) if now != boot_id => return Liveness::Gone,
        Ok(_) => {}
        Err(e) => return Liveness::Unsure(format!("cannot read boot id: {e}")),
    }
    let stat = match stat(pid) {
        Ok(s) => s,
        Err(e) if is_gone(&e) => return Liveness::Gone,
        // Unreadable is not proof of exit: report it as not ours so nobody kills it.
        Err(e) => return Liveness::Unsure(format!("cannot read /proc/{pid}/stat: {e}")),
    };
    if is_zombie(stat.state) {
        return Liveness::Gone;
    }
    if stat.start_time != start_time {
        return Liveness::Reused(format!(
            "pid {pid} reused: start time {} != {start_time}",
            stat.start_time
        ));
    }
    match cmdline(pid) {
        Ok(live) => match cmdline_difference(&live, argv) {
            None => Liveness::Same,
            Some(diff) => Liveness::Unsure(format!("pid {pid}: cmdline differs: {diff}")),
        },
        // It exited between the two reads.
        Err(e) if is_gone(&e) => Liveness::Gone,
        Err(e) => Liveness::Unsure(format!("cannot read /proc/{pid}/cmdline: {e}")),
    }
}

/// Async wrapper: `verify` on the blocking pool (several /proc reads).
pub async fn verify_async(
    pid: u32,
    start_time: u64,
    boot_id: String,
    argv: Vec<String>,
) -> Liveness {
    tokio::task::spawn_blocking(move || verify(pid, start_time, &boot_id, &argv))
        .await
        .unwrap_or_else(|e| Liveness::Unsure(format!("verification failed: {e}")))
}

/// Exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    state_char(pid).is_ok_and(|s| !is_zombie(s))
}

/// Whether `pid` is still the process that started at `start_time` (and not a zombie): a pid
/// reused by another process is not "alive" for us, and must never be signalled.
pub fn is_same_alive(pid: u32, start_time: u64) -> bool {
    stat(pid).is_ok_and(|s| !is_zombie(s.state) && s.start_time == start_time)
}

fn is_zombie(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

fn is_gone(e: &io::Error) -> bool {
    // ESRCH: the /proc entry was opened but the task exited before the read.
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// A short description of the first difference, or None if equal.
fn cmdline_difference(live: &[String], want: &[String]) -> Option<String> {
    fn short(s: &str) -> String {
        const MAX: usize = 80;
        match s.char_indices().nth(MAX) {
            Some((i, _)) => format!("{:?}...", &s[..i]),
            None => format!("{s:?}"),
        }
    }
    if let Some(i) = (0..live.len().min(want.len())).find(|&i| live[i] != want[i]) {
        return Some(format!(
            "argument {i} is {} != {}",
            short(&live[i]),
            short(&want[i])
        ));
    }
    (live.len() != want.len())
        .then(|| format!("{} arguments != {} recorded", live.len(), want.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn parse_stat_with_hostile_comm() {
        let line = b"1234 ((a) b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line).unwrap(),
            Stat {
                state: 'S',
                start_time: 987654
            }
        );
        let weird = b"7 (\xff ) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42\n";
        assert_eq!(parse_stat(weird).unwrap().start_time, 42);
        assert_eq!(parse_stat(weird).unwrap().state, 'Z');
        match parse_stat(b"1234 (x") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidData, error: "stat: no ')' after comm" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_stat(b"1234 (x) S 1 2") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidData, error: "stat: fewer than 22 fields" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_stat(b"1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 nan") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidData, error: "stat: start time is not a number" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse_stat(b"") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidData, error: "stat: no ')' after comm" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn split_cmdline_cases() {
        assert_eq!(split_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(split_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        assert!(split_cmdline(b"").is_empty());
        assert_eq!(split_cmdline(b"\xff\x00"), ["\u{fffd}"]);
    }

    #[test]
    fn this_process() {
        let pid = std::process::id();
        let st = start_time(pid).unwrap();
        assert!(st > 0);
        // The tgid's state is the main thread's: running, or waiting for the test thread.
        assert!(matches!(state_char(pid).unwrap(), 'R' | 'S'));
        let boot = boot_id().unwrap();
        assert_eq!(boot.len(), 36, "{boot:?}");
        let argv = cmdline(pid).unwrap();
        assert!(!argv.is_empty());
        assert_eq!(verify(pid, st, &boot, &argv), Liveness::Same);
        assert_eq!(verify(pid, st, "another-boot", &argv), Liveness::Gone);
        assert!(is_alive(pid));
        assert!(!is_alive(u32::MAX));
        assert_eq!(verify(u32::MAX, st, &boot, &argv), Liveness::Gone);
    }

    fn wait_for_state(pid: u32, want: char) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_char(pid).ok() != Some(want) {
            assert!(Instant::now() < deadline, "pid {pid} never reached {want}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn child_lifecycle() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Between fork and exec the child still shows our cmdline; wait for sleep's.
        let argv: Vec<String> = vec!["sleep".into(), "30".into()];
        let deadline = Instant::now() + Duration::from_secs(10);
        while cmdline(pid).unwrap() != argv {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = start_time(pid).unwrap();
        let boot = boot_id().unwrap();
        assert_eq!(verify(pid, st, &boot, &argv), Liveness::Same);
        assert!(is_alive(pid));

        assert!(is_same_alive(pid, st));
        assert!(!is_same_alive(pid, st + 1));
        match verify(pid, st + 1, &boot, &argv) {
            Liveness::Reused(why) => assert!(why.contains("start time"), "{why}"),
            other => panic!("{other:?}"),
        }
        let other_argv: Vec<String> = vec!["sleep".into(), "31".into()];
        match verify(pid, st, &boot, &other_argv) {
            Liveness::Unsure(why) => {
                assert!(why.contains("argument 1 is \"30\" != \"31\""), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match verify(pid, st, &boot, &argv[..1]) {
            Liveness::Unsure(why) => assert!(why.contains("2 arguments != 1"), "{why}"),
            other => panic!("{other:?}"),
        }

        child.kill().unwrap();
        wait_for_state(pid, 'Z');
        assert_eq!(verify(pid, st, &boot, &argv), Liveness::Gone);
        assert!(!is_alive(pid));
        child.wait().unwrap();
        assert_eq!(verify(pid, st, &boot, &argv), Liveness::Gone);
        assert!(!is_alive(pid));
        match start_time(pid) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Os { code: 2, kind: NotFound, message: "No such file or directory" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn verify_async_matches() {
        let pid = std::process::id();
        let st = start_time(pid).unwrap();
        let argv = cmdline(pid).unwrap();
        let boot = boot_id().unwrap();
        assert_eq!(verify_async(pid, st, boot, argv).await, Liveness::Same);
    }
}
