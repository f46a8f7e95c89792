//! qemu-img on files the daemon opened: each descriptor is handed to the child as fd 3, 4...
//! and named `/dev/fd/N`, so qemu-img never resolves a name in a pool (no link is followed
//! out of it), and every run has a deadline (killed on expiry).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Stdio;
use std::time::Duration;

/// A run that failed: qemu-img's own words, or why it could not run.
#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error("qemu-img {what}: {message}")]
    Failed { what: String, message: String },
    #[error("qemu-img {what} did not finish within {}s", after.as_secs())]
    Timeout { what: String, after: Duration },
}

/// `/dev/fd/N` for the `i`th descriptor passed to [`run`].
pub fn fd_path(i: usize) -> String {
    format!("/dev/fd/{}", 3 + i)
}

/// Runs `qemu-img args...` with `fds[i]` as the child's fd `3 + i`; stdout on success.
pub async fn run(
    args: &[&str],
    fds: &[BorrowedFd<'_>],
    deadline: Duration,
) -> Result<String, QemuImgError> {
    let what = args.first().copied().unwrap_or_default().to_owned();
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec; dup2/fcntl are async-signal-safe and the
    // descriptor numbers were taken before the fork. Sources are moved above the targets
    // first, so a source that is itself 3 or 4 is never overwritten before it is copied.
    unsafe {
        cmd.pre_exec(move || {
            let mut moved = Vec::with_capacity(raw.len());
            for fd in &raw {
                let high = nix::libc::fcntl(*fd, nix::libc::F_DUPFD_CLOEXEC, 100);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved.push(high);
            }
            for (i, fd) in moved.iter().enumerate() {
                // dup2 clears close-on-exec on the copy.
                if nix::libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| QemuImgError::Failed {
        what: what.clone(),
        message: format!("cannot run: {e}"),
    })?;
    let out = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Err(_) => {
            return Err(QemuImgError::Timeout {
                what,
                after: deadline,
            })
        }
        Ok(Err(e)) => {
            return Err(QemuImgError::Failed {
                what,
                message: e.to_string(),
            })
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(QemuImgError::Failed {
            what,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
