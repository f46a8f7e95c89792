//! Hold points for crash tests (debug builds only; release builds compile them out): a test
//! arms point `name` by creating `<run_dir>/hold/<name>`; the daemon reaching it creates
//! `<run_dir>/hold/<name>.reached` and waits there while the armed file exists, so the test
//! can `kill -9` it at exactly that point of an operation.

use std::path::Path;

/// Waits at point `name` while a test holds it (debug builds); returns at once otherwise.
#[cfg_attr(not(debug_assertions), allow(unused_variables))]
pub(crate) async fn point(run_dir: &Path, name: &str) {
    #[cfg(debug_assertions)]
    {
        let dir = run_dir.join("hold");
        let armed = dir.join(name);
        if !tokio::fs::try_exists(&armed).await.unwrap_or(false) {
            return;
        }
        // Created, never followed or reused: the run directory's `hold` is not trusted.
        let _ = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(dir.join(format!("{name}.reached")))
            .await;
        tracing::warn!(point = name, "held at a test hold point");
        while tokio::fs::try_exists(&armed).await.unwrap_or(false) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
