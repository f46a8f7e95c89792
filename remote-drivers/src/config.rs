//! A registered remote host: which driver, where, and with what credentials.
//!
//! Credentials are held in [`Secret`]s, which never print and never serialize, so no log line,
//! error or API answer can carry them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::breaker::BreakerOptions;

/// The vendor APIs this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Vsphere,
    Proxmox,
    Xapi,
    Hyperv,
}

impl DriverKind {
    pub const ALL: [DriverKind; 4] = [Self::Vsphere, Self::Proxmox, Self::Xapi, Self::Hyperv];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vsphere => "vsphere",
            Self::Proxmox => "proxmox",
            Self::Xapi => "xapi",
            Self::Hyperv => "hyperv",
        }
    }

    /// Whether this build carries the adapter (cargo features).
    pub const fn compiled_in(self) -> bool {
        match self {
            Self::Vsphere => cfg!(feature = "vsphere"),
            Self::Proxmox => cfg!(feature = "proxmox"),
            Self::Xapi => cfg!(feature = "xapi"),
            Self::Hyperv => cfg!(feature = "hyperv"),
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DriverKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ConfigError(format!(
                    "unknown driver '{s}' (expected one of vsphere, proxmox, xapi, hyperv)"
                ))
            })
    }
}

/// A password or token secret. `Debug` and `Display` print `***`; there is no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How the daemon logs in to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password: vSphere, XAPI, Hyper-V, and Proxmox ticket login.
    Password { user: String, password: Secret },
    /// A Proxmox API token: id `USER@REALM!TOKENID` and its secret.
    Token { id: String, secret: Secret },
}

impl Credentials {
    /// Parses a credentials file (or systemd credential): `key = value` lines, `#` comments,
    /// either `user` and `password`, or `token_id` and `token_secret`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut user = None;
        let mut password = None;
        let mut token_id = None;
        let mut token_secret = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError(format!(
                    "credentials line {}: expected 'key = value'",
                    i + 1
                )));
            };
            let value = value.trim().to_owned();
            let slot = match key.trim() {
                "user" => &mut user,
                "password" => &mut password,
                "token_id" => &mut token_id,
                "token_secret" => &mut token_secret,
                other => {
                    return Err(ConfigError(format!(
                        "credentials line {}: unknown key '{other}' (expected user, password, token_id or token_secret)",
                        i + 1
                    )))
                }
            };
            *slot = Some(value);
        }
        match (user, password, token_id, token_secret) {
            (Some(user), Some(password), None, None) => Ok(Self::Password {
                user,
                password: Secret(password),
            }),
            (None, None, Some(id), Some(secret)) => Ok(Self::Token {
                id,
                secret: Secret(secret),
            }),
            _ => Err(ConfigError(
                "credentials: give either 'user' and 'password', or 'token_id' and 'token_secret'"
                    .into(),
            )),
        }
    }

    /// Who we log in as (never the secret).
    pub fn principal(&self) -> &str {
        match self {
            Self::Password { user, .. } => user,
            Self::Token { id, .. } => id,
        }
    }
}

/// TLS to the vendor endpoint. Verification is on unless a host is explicitly configured
/// otherwise; `ca_file` adds a PEM bundle to the system's roots (self-signed vCenters, PVE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            verify: true,
            ca_file: None,
        }
    }
}

/// Per-host time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// One HTTP request.
    pub request: Duration,
    /// A whole read (list, get), retries included.
    pub read: Duration,
    /// A whole lifecycle call, vendor task polling included.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            read: Duration::from_secs(30),
            operation: Duration::from_secs(600),
        }
    }
}

/// One registered host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The registry name (`/v1/hosts/{name}`).
    pub name: String,
    pub driver: DriverKind,
    /// Base URL of the endpoint (`https://vcenter.example.com`, `https://pve:8006`,
    /// `https://xcp-master`, `https://hyperv:5986`); each adapter appends its API path.
    pub url: url::Url,
    pub credentials: Credentials,
    pub tls: TlsOptions,
    pub timeouts: Timeouts,
    pub breaker: BreakerOptions,
}

impl HostConfig {
    /// A config with default TLS, timeouts and breaker.
    pub fn new(
        name: impl Into<String>,
        driver: DriverKind,
        url: url::Url,
        credentials: Credentials,
    ) -> Self {
        Self {
            name: name.into(),
            driver,
            url,
            credentials,
            tls: TlsOptions::default(),
            timeouts: Timeouts::default(),
            breaker: BreakerOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_never_print() {
        let c =
            Credentials::parse("# vc\nuser = admin@vsphere.local\npassword = s3cr=t\n").unwrap();
        assert_eq!(c.principal(), "admin@vsphere.local");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        match c {
            Credentials::Password { password, .. } => assert_eq!(password.expose(), "s3cr=t"),
            Credentials::Token { .. } => panic!("expected a password"),
        }
        let t = Credentials::parse("token_id=root@pam!ci\ntoken_secret=abc").unwrap();
        assert_eq!(t.principal(), "root@pam!ci");
    }

    #[test]
    fn credentials_refuse_mixed_or_unknown_keys() {
        let either =
            "credentials: give either 'user' and 'password', or 'token_id' and 'token_secret'";
        assert_eq!(
            Credentials::parse("user=a\ntoken_secret=b").unwrap_err(),
            ConfigError(either.into())
        );
        let e = Credentials::parse("user=a\npasswd=b").unwrap_err();
        assert!(e.0.contains("line 2") && e.0.contains("passwd"), "{e}");
        assert_eq!(
            Credentials::parse("").unwrap_err(),
            ConfigError(either.into())
        );
        assert_eq!(
            Credentials::parse("user a").unwrap_err(),
            ConfigError("credentials line 1: expected 'key = value'".into())
        );
    }

    #[test]
    fn driver_kind_round_trips() {
        for k in DriverKind::ALL {
            assert_eq!(k.as_str().parse::<DriverKind>().unwrap(), k);
        }
        assert_eq!(
            "vmware".parse::<DriverKind>().unwrap_err(),
            ConfigError(
                "unknown driver 'vmware' (expected one of vsphere, proxmox, xapi, hyperv)".into()
            )
        );
    }
}
