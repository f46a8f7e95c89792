//! `[remote]` in the daemon's configuration: the vendor hosts it proxies.
//!
//! A host entry names its credentials by reference only, a file or a systemd credential, so the
//! configuration (which operators paste into tickets) never holds a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use novacron_remote_drivers::breaker::BreakerOptions;
use novacron_remote_drivers::config::Timeouts;
use novacron_remote_drivers::{Credentials, DriverKind, HostConfig, TlsOptions};

/// Longest time limit or breaker period a host may be given (a day).
const MAX_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Credentials files hold two short lines.
const MAX_CREDENTIALS_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Vendor adapters switched off at run time (`vsphere`, `proxmox`, `xapi`, `hyperv`); local
    /// KVM guests are never affected.
    pub disabled_drivers: Vec<DriverKind>,
    /// Seconds between inventory polls of each host, which turn remote power-state changes into
    /// events; 0 turns polling off.
    pub poll_secs: u64,
    /// Hosts defined here; more can be registered through the API.
    pub hosts: Vec<HostEntry>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            disabled_drivers: Vec::new(),
            poll_secs: 30,
            hosts: Vec::new(),
        }
    }
}

/// One remote host, as configured or as registered through the API (then persisted with
/// `credentials_file` pointing at a 0600 file in the state directory).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub driver: DriverKind,
    /// Base URL: `https://vcenter.example.com`, `https://pve:8006`, `https://xcp-master`,
    /// `https://hyperv:5986`.
    pub url: String,
    /// A file of `user = ...` / `password = ...` (or `token_id` / `token_secret`) lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// A systemd credential name (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// PEM bundle trusted in addition to the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_timeout_secs: Option<u64>,
    /// Consecutive failures that open the host's circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    /// Seconds the breaker stays open before a probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
#[error("remote host '{host}': {reason}")]
pub struct EntryError {
    pub host: String,
    pub reason: String,
}

impl HostEntry {
    fn invalid(&self, reason: impl Into<String>) -> EntryError {
        EntryError {
            host: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Checks the entry without reading any file: name, URL, exactly one credentials source.
    pub fn check(&self) -> Result<url::Url, EntryError> {
        check_name(&self.name).map_err(|reason| self.invalid(reason))?;
        let url = url::Url::parse(&self.url).map_err(|e| self.invalid(format!("url: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(self.invalid("url: the scheme must be https (or http for WinRM)"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                self.invalid("url: must not carry credentials; use credentials_file or credential")
            );
        }
        match (&self.credentials_file, &self.credential) {
            (Some(_), Some(_)) => {
                Err(self.invalid("give credentials_file or credential, not both"))
            }
            (None, None) => Err(self.invalid("needs credentials_file or credential")),
            (Some(p), None) if !p.is_absolute() => {
                Err(self.invalid("credentials_file must be an absolute path"))
            }
            (None, Some(c)) if c.is_empty() || c.contains('/') || c.starts_with('.') => {
                Err(self.invalid("credential must be a plain systemd credential name"))
            }
            _ => Ok(url),
        }
    }

    /// The adapter's configuration, credentials read from their file. Blocking (file reads).
    pub fn to_host_config(&self) -> Result<HostConfig, EntryError> {
        let url = self.check()?;
        let path = match (&self.credentials_file, &self.credential) {
            (Some(p), _) => p.clone(),
            (None, Some(name)) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|d| PathBuf::from(d).join(name))
                .ok_or_else(|| {
                    self.invalid(format!(
                        "credential '{name}': $CREDENTIALS_DIRECTORY is not set (add LoadCredential={name}:... to the unit)"
                    ))
                })?,
            (None, None) => return Err(self.invalid("needs credentials_file or credential")),
        };
        let credentials = read_credentials(&path).map_err(|reason| self.invalid(reason))?;
        let defaults = Timeouts::default();
        let secs = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
        let timeouts = Timeouts {
            connect: defaults.connect,
            request: secs(self.request_timeout_secs, defaults.request),
            read: secs(self.read_timeout_secs, defaults.read),
            operation: secs(self.operation_timeout_secs, defaults.operation),
        };
        let all = [timeouts.request, timeouts.read, timeouts.operation];
        if all.contains(&Duration::ZERO) || all.iter().any(|t| *t > MAX_LIMIT) {
            return Err(self.invalid(format!(
                "timeouts must be 1 to {} seconds",
                MAX_LIMIT.as_secs()
            )));
        }
        if self
            .breaker_open_secs
            .is_some_and(|s| s > MAX_LIMIT.as_secs())
        {
            return Err(self.invalid(format!(
                "breaker_open_secs must be at most {}",
                MAX_LIMIT.as_secs()
            )));
        }
        let breaker_defaults = BreakerOptions::default();
        let breaker = BreakerOptions {
            failure_threshold: self
                .breaker_failures
                .unwrap_or(breaker_defaults.failure_threshold)
                .max(1),
            open_for: secs(self.breaker_open_secs, breaker_defaults.open_for),
        };
        Ok(HostConfig {
            name: self.name.clone(),
            driver: self.driver,
            url,
            credentials,
            tls: TlsOptions {
                verify: self.tls_verify,
                ca_file: self.ca_file.clone(),
            },
            timeouts,
            breaker,
        })
    }
}

/// Host names are path segments in the API and file names in the state directory.
pub fn check_name(name: &str) -> Result<(), String> {
    // "discover" is a route of its own (`POST /v1/hosts/discover`).
    let ok = !name.is_empty()
        && name != "discover"
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name '{}' must be 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'",
            name.escape_debug()
        ))
    }
}

fn read_credentials(path: &Path) -> Result<Credentials, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("credentials {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("credentials {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_CREDENTIALS_BYTES {
        return Err(format!("credentials {}: file too large", path.display()));
    }
    Credentials::parse(&text).map_err(|e| format!("credentials {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HostEntry {
        HostEntry {
            name: "vc1".into(),
            driver: DriverKind::Vsphere,
            url: "https://vc.example".into(),
            credentials_file: Some("/etc/novacron/vc1.cred".into()),
            credential: None,
            tls_verify: true,
            ca_file: None,
            request_timeout_secs: None,
            read_timeout_secs: None,
            operation_timeout_secs: None,
            breaker_failures: None,
            breaker_open_secs: None,
        }
    }

    #[test]
    fn entries_are_checked_with_the_host_named() {
        assert!(entry().check().is_ok());
        let e = HostEntry {
            url: "https://root:pw@vc.example".into(),
            ..entry()
        }
        .check()
        .unwrap_err();
        assert!(
            e.to_string().contains("vc1") && !e.to_string().contains("pw"),
            "{e}"
        );
        let e = HostEntry {
            credential: Some("x".into()),
            ..entry()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = HostEntry {
            name: "../x".into(),
            ..entry()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.host, "../x");
        assert_eq!(
            e.reason,
            "name '../x' must be 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'"
        );
    }

    #[test]
    fn credentials_are_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, "user = u\npassword = hunter2\n").unwrap();
        let config = HostEntry {
            credentials_file: Some(path),
            ..entry()
        }
        .to_host_config()
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
