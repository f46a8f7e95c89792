//! Who QEMU runs as. A root daemon starts QEMU as the unprivileged `novacron-qemu` unless the
//! configuration names another user; root only when `qemu_user = "root"` says so, with a
//! warning at every start of the daemon. A non-root daemon starts QEMU as itself.

use std::io;

use super::spawn::RunAs;
/// Created by `systemd/novacron.sysusers.conf` and by `quickstart.sh`.
pub use crate::config::DEFAULT_QEMU_USER;

/// How to create the default user, for the error when it is missing.
pub const CREATE_USER_HINT: &str = "create it with `systemd-sysusers` (install \
     systemd/novacron.sysusers.conf as /usr/lib/sysusers.d/novacron.conf) or `useradd --system \
     --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin novacron-qemu` (what \
     ./quickstart.sh does), or name another user in qemu_user";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("qemu_user '{user}': no such user on this host; {hint}", hint = CREATE_USER_HINT)]
    Missing { user: String },
    #[error("qemu_user '{user}': {source}")]
    Lookup {
        user: String,
        #[source]
        source: io::Error,
    },
}

/// The resolved identity: `None` runs QEMU as the daemon itself.
pub fn resolve(qemu_user: Option<&str>) -> Result<Option<RunAs>, IdentityError> {
    let Some(user) = qemu_user else {
        return Ok(None);
    };
    let run_as = RunAs::lookup(user).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => IdentityError::Missing {
            user: user.to_owned(),
        },
        _ => IdentityError::Lookup {
            user: user.to_owned(),
            source,
        },
    })?;
    if run_as.uid.is_root() {
        tracing::warn!(
            qemu_user = user,
            "QEMU runs as root because qemu_user names root: every guest's QEMU can read and \
             write any host file it is given. Remove qemu_user to run QEMU as {DEFAULT_QEMU_USER}"
        );
        return Ok(None);
    }
    Ok(Some(run_as))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_the_daemon_itself() {
        assert!(resolve(None).unwrap().is_none());
    }

    #[test]
    fn root_by_name_runs_as_the_daemon() {
        assert!(resolve(Some("root")).unwrap().is_none());
    }

    #[test]
    fn a_missing_user_names_the_fix() {
        let e = resolve(Some("novacron-no-such-user"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("qemu_user 'novacron-no-such-user': no such user"),
            "{e}"
        );
        assert!(e.contains("sysusers") && e.contains("quickstart.sh"), "{e}");
    }

    #[test]
    fn an_unprivileged_user_resolves_with_its_groups() {
        // `nobody` exists on every Debian system.
        let r = resolve(Some("nobody"))
            .unwrap()
            .expect("nobody is not root");
        assert!(!r.uid.is_root());
        assert!(r.groups.contains(&r.gid));
    }
}
