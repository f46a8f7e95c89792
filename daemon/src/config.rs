//! The daemon's one TOML configuration file.
//!
//! Every key is optional; a missing key takes its default, an unknown key is an error (a typo
//! must not silently fall back to a default). Defaults depend on whether the daemon runs as
//! root (system paths) or as a user (XDG paths).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod dbus;
pub mod host;
pub mod migration;
pub mod remote;
pub mod webhooks;

/// Config files are a few hundred bytes; the cap bounds what a wrong path can make us read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Smallest accepted `log_max_bytes`: below this a boot log would not fit.
pub const MIN_LOG_MAX_BYTES: u64 = 64 * 1024;
/// Longest `api.idle_timeout_secs` (an hour): idle connections hold descriptors.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
/// Longest `api.ticket_ttl_secs` (ten minutes): a ticket in a URL is a bearer credential.
pub const MAX_TICKET_TTL_SECS: u64 = 600;
/// A websocket ticket's lifetime unless `api.ticket_ttl_secs` says otherwise.
pub const DEFAULT_TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Who QEMU runs as when the daemon runs as root and `qemu_user` is not given.
pub const DEFAULT_QEMU_USER: &str = "novacron-qemu";

/// Free PCIe root ports define gives a q35 guest for hot-plugged disks and NICs.
pub const DEFAULT_HOTPLUG_SLOTS: u32 = 4;

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state (domain definitions).
    pub state_dir: PathBuf,
    /// Runtime state (records, QMP sockets, per-guest dirs); lost at reboot, as are guests.
    pub run_dir: PathBuf,
    /// Per-guest logs (QEMU stderr, serial console).
    pub log_dir: PathBuf,
    pub emulator: PathBuf,
    /// Run QEMU under `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`.
    pub sandbox: bool,
    /// Run QEMU as this user (requires the daemon to run as root). Root's default is
    /// [`DEFAULT_QEMU_USER`]; `"root"` runs QEMU as root (warned at startup). Unset (a
    /// non-root daemon): QEMU runs as the daemon's user.
    pub qemu_user: Option<String>,
    /// Graceful shutdown wait when the caller gives none.
    pub shutdown_timeout_secs: u64,
    /// How long a mutating call waits for the domain's job slot before failing as busy.
    pub job_wait_secs: u64,
    /// Cap per guest log file; see `qemu::logs::cap_log`.
    pub log_max_bytes: u64,
    /// Where sysfs is mounted: the host topology (CPUs, NUMA, hugepages, PCI) is read below it.
    pub sysfs_root: PathBuf,
    /// Where file-backed guest RAM (`<memoryBacking><source type='file'/>`) lives: a directory
    /// per guest holding one named file per RAM block, removed when the guest stops (libvirt's
    /// `memory_backing_dir`). Unset: an unlinked temporary file in the guest's runtime dir.
    pub memory_backing_dir: Option<PathBuf>,
    /// Free PCIe root ports a q35 guest is given at define for hot-plugged disks and NICs
    /// (written into the definition, so the slot layout survives restarts and migrations);
    /// 0: none added.
    pub hotplug_slots: u32,
    /// Storage roots by name (`[storage_roots]`, e.g. `iso = "/srv/iso"`): the only
    /// directories a non-admin's definition may name files in. `images` is
    /// `<state_dir>/images` unless set here; missing roots are created (0750) at startup.
    pub storage_roots: std::collections::BTreeMap<String, PathBuf>,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Each QEMU in its own transient systemd scope.
    pub scopes: ScopeConfig,
    /// The D-Bus API (`[dbus]`).
    pub dbus: dbus::DbusConfig,
    /// Hugepage pool reservation (`[hugepages]`).
    pub hugepages: host::HugepageConfig,
    /// Per-guest cgroups (`[cgroups]`).
    pub cgroups: host::CgroupConfig,
    /// Remote vendor hypervisors (`[remote]`, `[[remote.hosts]]`).
    pub remote: remote::RemoteConfig,
    /// Live migration between daemons (`[migration]`).
    pub migration: migration::MigrationConfig,
    /// Ports for autoport VNC/SPICE displays (`[graphics] port_min/port_max`).
    pub graphics: crate::host::display_ports::GraphicsConfig,
    /// Event notifications to HTTP endpoints (`[[webhooks]]`).
    pub webhooks: Vec<webhooks::WebhookConfig>,
}

/// Whether each QEMU is moved into its own transient systemd scope (`novacron-<name>.scope` in
/// `machine.slice`), so the daemon's cgroup (a restart, a crash, `systemctl stop`) never takes
/// a guest with it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeConfig {
    pub mode: ScopeMode,
    /// The bus systemd's manager is on; the system bus when unset.
    pub bus_address: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// When systemd is the init system (`/run/systemd/system` exists).
    #[default]
    Auto,
    On,
    Off,
}

/// Where and to whom the HTTP API is served.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The Unix socket; `<run_dir>/novacrond.sock` when unset.
    pub socket: Option<PathBuf>,
    /// Group owning the socket (mode 0660), so its members may use the API.
    pub socket_group: Option<String>,
    /// Also serve on TCP at this address; every request then needs a bearer token.
    pub listen: Option<std::net::SocketAddr>,
    /// Tokens accepted on TCP, stored as SHA-256 hashes (hex) of the secret.
    pub tokens: Vec<ApiToken>,
    /// TLS on the TCP listener: the certificate chain (PEM, leaf first). Needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The only directory files named in requests are read from (`destination_ca` of a
    /// migration, `ca_file` of a registered host); `<state_dir>/pki` when unset.
    pub request_files_dir: Option<PathBuf>,
    // Connection limits (`api::http::limits`); unset: the default in brackets.
    /// Connections in total from everyone but root on the Unix socket [half of RLIMIT_NOFILE,
    /// 16..4096, at most RLIMIT_NOFILE - 256].
    pub max_connections: Option<usize>,
    /// Connections per non-root uid on the Unix socket [128].
    pub max_connections_per_uid: Option<usize>,
    /// TCP connections that have not yet presented a valid token, in total [256].
    pub max_unauthenticated: Option<usize>,
    /// Such connections per peer address (IPv6: per /64) [8].
    pub max_unauthenticated_per_address: Option<usize>,
    /// `/v1/events` streams open at once, admins not counted [1024].
    pub max_event_streams: Option<usize>,
    /// `/v1/events` streams per caller (uid or token), admins not counted [32].
    pub max_event_streams_per_caller: Option<usize>,
    /// Idle keep-alive connections are closed after this [75].
    pub idle_timeout_secs: Option<u64>,
    /// How long a console/VNC websocket ticket stays good after it is minted [30; 1 to
    /// `MAX_TICKET_TTL_SECS`].
    pub ticket_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    pub role: Role,
}

/// What a caller may do: operators everything but raw QMP and the migration peer routes;
/// a migration peer (the source daemon of an incoming migration) only the peer routes
/// (`/v1/migrations/incoming...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Admin,
    MigrationPeer,
}

impl Config {
    /// Where files named in requests may be read from (see `ApiConfig::request_files_dir`).
    pub fn request_files_dir(&self) -> PathBuf {
        self.api
            .request_files_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("pki"))
    }

    /// How long a websocket ticket stays good.
    pub fn ticket_ttl(&self) -> std::time::Duration {
        self.api
            .ticket_ttl_secs
            .map_or(DEFAULT_TICKET_TTL, std::time::Duration::from_secs)
    }

    /// The API's Unix socket path.
    pub fn api_socket(&self) -> PathBuf {
        self.api
            .socket
            .clone()
            .unwrap_or_else(|| self.run_dir.join("novacrond.sock"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is over the {max} byte limit", max = MAX_CONFIG_BYTES)]
    TooLarge { path: PathBuf },
    /// toml's message names the key, line and column, with a snippet; it is kept verbatim.
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// The config file, or "default configuration".
        origin: String,
        key: &'static str,
        reason: String,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config::default_for(nix::unistd::geteuid().is_root(), |k| std::env::var_os(k))
    }
}

impl Config {
    /// Defaults for a daemon running as root (`euid_is_root`) or as a user, reading the
    /// environment through `env` so tests need not touch the process environment.
    ///
    /// Non-root without a usable `$XDG_STATE_HOME` or `$HOME` gets an empty `state_dir`,
    /// which `check` rejects with a hint, rather than a guessed volatile location. The
    /// non-root `/tmp/novacron-<uid>` fallback reads the real euid (root never needs it).
    pub fn default_for(euid_is_root: bool, env: impl Fn(&str) -> Option<OsString>) -> Config {
        let (state_dir, run_dir, log_dir) = if euid_is_root {
            (
                PathBuf::from("/var/lib/novacron"),
                PathBuf::from("/run/novacron"),
                PathBuf::from("/var/log/novacron"),
            )
        } else {
            // XDG: relative values are invalid and must be ignored.
            let abs = |k: &str| env(k).map(PathBuf::from).filter(|p| p.is_absolute());
            let state = abs("XDG_STATE_HOME")
                .or_else(|| abs("HOME").map(|h| h.join(".local/state")))
                .map(|p| p.join("novacron"))
                .unwrap_or_default();
            let run = abs("XDG_RUNTIME_DIR")
                .map(|p| p.join("novacron"))
                .unwrap_or_else(|| {
                    PathBuf::from(format!("/tmp/novacron-{}", nix::unistd::geteuid()))
                });
            let log = state.join("logs");
            (state, run, log)
        };
        Config {
            state_dir,
            run_dir,
            log_dir,
            emulator: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            sandbox: true,
            qemu_user: euid_is_root.then(|| DEFAULT_QEMU_USER.to_owned()),
            shutdown_timeout_secs: 120,
            job_wait_secs: 30,
            log_max_bytes: 4 << 20,
            sysfs_root: PathBuf::from("/sys"),
            memory_backing_dir: None,
            hotplug_slots: DEFAULT_HOTPLUG_SLOTS,
            storage_roots: Default::default(),
            api: ApiConfig::default(),
            scopes: ScopeConfig::default(),
            dbus: dbus::DbusConfig::default(),
            hugepages: host::HugepageConfig::default(),
            cgroups: host::CgroupConfig::default(),
            remote: remote::RemoteConfig::default(),
            migration: migration::MigrationConfig::default(),
            graphics: crate::host::display_ports::GraphicsConfig::default(),
            webhooks: Vec::new(),
        }
    }

    /// Load and check the configuration: `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let euid_is_root = nix::unistd::geteuid().is_root();
        let env = |k: &str| std::env::var_os(k);
        let Some(path) = path else {
            let config = Config::default_for(euid_is_root, env);
            config.check("default configuration", euid_is_root)?;
            return Ok(config);
        };
        let text = read_bounded(path)?;
        let config =
            Config::parse(&text, euid_is_root, env).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.check(&path.display().to_string(), euid_is_root)?;
        Ok(config)
    }

    /// Parse TOML text over the defaults. Unlike plain `#[serde(default)]`, a non-root
    /// `log_dir` left unset follows a configured `state_dir`, as its default says.
    pub fn parse(
        text: &str,
        euid_is_root: bool,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, toml::de::Error> {
        let defaults = Config::default_for(euid_is_root, env);
        // Typed parse first: its errors carry the line; the table only tells which keys
        // were given.
        let mut config: Config = toml::from_str(text)?;
        let table: toml::Table = toml::from_str(text)?;
        let given = |k: &str| table.contains_key(k);
        // `#[serde(default)]` filled the gaps from `Default`, i.e. the real environment;
        // redo that from `defaults` so `parse` depends only on its arguments.
        macro_rules! fill {
            ($($field:ident),*) => {$(
                if !given(stringify!($field)) {
                    config.$field = defaults.$field.clone();
                }
            )*};
        }
        fill!(
            state_dir,
            run_dir,
            log_dir,
            emulator,
            sandbox,
            qemu_user,
            shutdown_timeout_secs,
            job_wait_secs,
            log_max_bytes,
            sysfs_root,
            memory_backing_dir
        );
        if !euid_is_root && !given("log_dir") {
            config.log_dir = config.state_dir.join("logs");
        }
        Ok(config)
    }

    /// Semantic checks; `origin` names the file (or the defaults) in the error.
    pub fn check(&self, origin: &str, euid_is_root: bool) -> Result<(), ConfigError> {
        let err = |key: &'static str, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason: reason.to_owned(),
        };
        for (key, dir) in [
            ("state_dir", &self.state_dir),
            ("run_dir", &self.run_dir),
            ("log_dir", &self.log_dir),
            ("emulator", &self.emulator),
            ("sysfs_root", &self.sysfs_root),
        ] {
            if dir.as_os_str().is_empty() && matches!(key, "state_dir" | "log_dir") {
                return Err(err(
                    key,
                    "no default: set it, or set $XDG_STATE_HOME or $HOME",
                ));
            }
            if !dir.is_absolute() {
                return Err(err(key, "must be an absolute path"));
            }
        }
        if self
            .memory_backing_dir
            .as_ref()
            .is_some_and(|d| !d.is_absolute())
        {
            return Err(err("memory_backing_dir", "must be an absolute path"));
        }
        for (name, path) in &self.storage_roots {
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(err(
                    "storage_roots",
                    &format!("root name {name:?}: use letters, digits, '-' and '_'"),
                ));
            }
            let normal = path.is_absolute()
                && path
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir))
                && path.parent().is_some();
            if !normal {
                return Err(err(
                    "storage_roots",
                    &format!("{name}: must be an absolute path without '..', not /"),
                ));
            }
            // A guest image must never be one of the daemon's own files (definitions and
            // their trust marks, records, sockets, the audit log).
            let images = self.state_dir.join("images");
            let clash = [&self.state_dir, &self.run_dir, &self.log_dir]
                .into_iter()
                // Guests' RAM files and the files requests may name are not images either.
                .chain(self.memory_backing_dir.as_ref())
                .chain(self.api.request_files_dir.as_ref())
                .find(|d| {
                    d.starts_with(path) || (path.starts_with(d) && !path.starts_with(&images))
                });
            if let Some(d) = clash {
                return Err(err(
                    "storage_roots",
                    &format!(
                        "{name}: {} overlaps the daemon's own directory {}",
                        path.display(),
                        d.display()
                    ),
                ));
            }
        }
        if self.shutdown_timeout_secs == 0 {
            return Err(err("shutdown_timeout_secs", "must be greater than 0"));
        }
        if self.job_wait_secs == 0 {
            return Err(err("job_wait_secs", "must be greater than 0"));
        }
        if self.log_max_bytes < MIN_LOG_MAX_BYTES {
            return Err(err(
                "log_max_bytes",
                &format!("must be at least {MIN_LOG_MAX_BYTES}"),
            ));
        }
        if let Some(user) = &self.qemu_user {
            if user.is_empty() {
                return Err(err("qemu_user", "must not be empty (omit it instead)"));
            }
            if user.trim() != user || user.chars().any(char::is_control) {
                return Err(err(
                    "qemu_user",
                    "must not contain whitespace at the ends or control characters",
                ));
            }
            if !euid_is_root {
                return Err(err("qemu_user", "requires the daemon to run as root"));
            }
        }
        for token in &self.api.tokens {
            let hex = token.sha256.len() == 64
                && token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(err(
                    "api.tokens",
                    &format!(
                        "token '{}': sha256 must be 64 lowercase hex digits",
                        token.name
                    ),
                ));
            }
        }
        let mut host_names = std::collections::BTreeSet::new();
        for host in &self.remote.hosts {
            if let Err(e) = host.check() {
                return Err(err("remote.hosts", &e.to_string()));
            }
            if !host_names.insert(host.name.as_str()) {
                return Err(err(
                    "remote.hosts",
                    &format!("host '{}' is defined twice", host.name),
                ));
            }
        }
        if self
            .api
            .request_files_dir
            .as_ref()
            .is_some_and(|d| !d.is_absolute())
        {
            return Err(err("api.request_files_dir", "must be an absolute path"));
        }
        if let Err((key, reason)) = self.migration.check() {
            return Err(err(key, &reason));
        }
        if let Err((key, reason)) = webhooks::WebhookConfig::check(&self.webhooks) {
            return Err(err(key, &reason));
        }
        if let Err(reason) = self.cgroups.check() {
            return Err(err("cgroups.parent", &reason));
        }
        if let Some(reason) = self.graphics.problem() {
            return Err(err("graphics", &reason));
        }
        for (key, value) in [
            ("api.max_connections", self.api.max_connections),
            (
                "api.max_connections_per_uid",
                self.api.max_connections_per_uid,
            ),
            ("api.max_unauthenticated", self.api.max_unauthenticated),
            (
                "api.max_unauthenticated_per_address",
                self.api.max_unauthenticated_per_address,
            ),
            ("api.max_event_streams", self.api.max_event_streams),
            (
                "api.max_event_streams_per_caller",
                self.api.max_event_streams_per_caller,
            ),
        ] {
            if value == Some(0) {
                return Err(err(key, "must be greater than 0 (omit it for the default)"));
            }
        }
        if let Some(secs) = self.api.idle_timeout_secs {
            if !(1..=MAX_IDLE_TIMEOUT_SECS).contains(&secs) {
                return Err(err(
                    "api.idle_timeout_secs",
                    &format!("must be 1 to {MAX_IDLE_TIMEOUT_SECS}"),
                ));
            }
        }
        if let Some(secs) = self.api.ticket_ttl_secs {
            if !(1..=MAX_TICKET_TTL_SECS).contains(&secs) {
                return Err(err(
                    "api.ticket_ttl_secs",
                    &format!("must be 1 to {MAX_TICKET_TTL_SECS}"),
                ));
            }
        }
        if self.api.listen.is_some() && self.api.tokens.is_empty() {
            return Err(err(
                "api.listen",
                "TCP needs at least one entry in api.tokens (every request must authenticate)",
            ));
        }
        match (&self.api.tls_cert, &self.api.tls_key) {
            (Some(_), None) => return Err(err("api.tls_key", "api.tls_cert needs api.tls_key")),
            (None, Some(_)) => return Err(err("api.tls_cert", "api.tls_key needs api.tls_cert")),
            (Some(cert), Some(key)) => {
                if self.api.listen.is_none() {
                    return Err(err(
                        "api.tls_cert",
                        "TLS applies to the TCP listener only: set api.listen too",
                    ));
                }
                for (key, path) in [("api.tls_cert", cert), ("api.tls_key", key)] {
                    if !path.is_absolute() {
                        return Err(err(key, "must be an absolute path"));
                    }
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn job_wait(&self) -> Duration {
        Duration::from_secs(self.job_wait_secs)
    }
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    // Read one byte past the cap so an oversized file is detected, not truncated.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn example_file_matches_root_defaults() {
        let text = include_str!("../novacrond.example.toml");
        let parsed: Config = toml::from_str(text).unwrap();
        assert_eq!(parsed, Config::default_for(true, no_env));
        // Every key is spelled out (uncommented) in the example.
        let table: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(Config::default_for(true, no_env)).unwrap();
        for key in defaults.keys() {
            assert!(table.contains_key(key), "example lacks {key}");
        }
        assert!(text.contains("# qemu_user = \"root\""));
    }

    #[test]
    fn storage_roots_never_cover_the_daemons_own_files() {
        let check = |root: &str| {
            let mut c = Config::default_for(true, no_env);
            c.storage_roots.insert("r".into(), PathBuf::from(root));
            c.check("t", true)
        };
        check("/srv/images").unwrap();
        check("/var/lib/novacron/images/iso").unwrap();
        for bad in [
            "/var",
            "/var/lib/novacron",
            "/var/lib/novacron/domains",
            "/run/novacron/x",
            "/var/log",
            "relative",
            "/srv/../etc",
            "/",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let mut c = Config::default_for(true, no_env);
        c.storage_roots
            .insert("bad name".into(), PathBuf::from("/srv"));
        assert!(c.check("t", true).is_err());
    }

    #[test]
    fn root_defaults() {
        let c = Config::default_for(true, env_of(&[("HOME", "/root")]));
        assert_eq!(c.state_dir, Path::new("/var/lib/novacron"));
        assert_eq!(c.run_dir, Path::new("/run/novacron"));
        assert_eq!(c.log_dir, Path::new("/var/log/novacron"));
        assert_eq!(c.shutdown_timeout(), Duration::from_secs(120));
        assert_eq!(c.job_wait(), Duration::from_secs(30));
        assert_eq!(c.log_max_bytes, 4 * 1024 * 1024);
        assert!(c.sandbox);
        assert_eq!(c.qemu_user.as_deref(), Some("novacron-qemu"));
        c.check("t", true).unwrap();
    }

    #[test]
    fn user_defaults_follow_xdg_then_home() {
        let c = Config::default_for(
            false,
            env_of(&[
                ("XDG_STATE_HOME", "/x/state"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("HOME", "/home/u"),
            ]),
        );
        assert_eq!(c.state_dir, Path::new("/x/state/novacron"));
        assert_eq!(c.run_dir, Path::new("/run/user/1000/novacron"));
        assert_eq!(c.log_dir, Path::new("/x/state/novacron/logs"));
        // QEMU runs as the daemon's own user.
        assert_eq!(c.qemu_user, None);

        // Relative XDG values are ignored, per the XDG spec.
        let c = Config::default_for(
            false,
            env_of(&[("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")]),
        );
        assert_eq!(c.state_dir, Path::new("/home/u/.local/state/novacron"));
        assert_eq!(c.log_dir, Path::new("/home/u/.local/state/novacron/logs"));
        let uid = nix::unistd::geteuid();
        assert_eq!(c.run_dir, PathBuf::from(format!("/tmp/novacron-{uid}")));
        c.check("t", false).unwrap();
    }

    #[test]
    fn user_without_home_must_configure_state_dir() {
        let c = Config::default_for(false, no_env);
        let e = c.check("default configuration", false).unwrap_err();
        assert!(e.to_string().contains("state_dir: no default"), "{e}");
        let c = Config::parse("state_dir = '/srv/nc'", false, no_env).unwrap();
        assert_eq!(c.log_dir, Path::new("/srv/nc/logs"));
        c.check("t", false).unwrap();
    }

    #[test]
    fn missing_keys_take_defaults_and_given_keys_win() {
        let c = Config::parse(
            "job_wait_secs = 5\nsandbox = false\nqemu_user = 'qemu'\n",
            true,
            no_env,
        )
        .unwrap();
        let mut want = Config::default_for(true, no_env);
        want.job_wait_secs = 5;
        want.sandbox = false;
        want.qemu_user = Some("qemu".into());
        assert_eq!(c, want);
        assert_eq!(
            Config::parse("", true, no_env).unwrap(),
            Config::default_for(true, no_env)
        );
        // An explicit log_dir is kept for non-root too.
        let c = Config::parse("log_dir = '/l'\nstate_dir = '/s'", false, no_env).unwrap();
        assert_eq!(c.log_dir, Path::new("/l"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let e = Config::parse("sandbox = true\njob_wait_sec = 5\n", true, no_env).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("job_wait_sec"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        // Wrong types: toml names the line, shows the value and says what was expected.
        let msg = Config::parse("job_wait_secs = -1", true, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 1") && msg.contains("job_wait_secs = -1"),
            "{msg}"
        );
        assert!(msg.contains("u64"), "{msg}");
        let msg = Config::parse("sandbox = 'yes'", true, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 1") && msg.contains("sandbox = 'yes'"),
            "{msg}"
        );
        assert!(msg.contains("boolean"), "{msg}");
    }

    #[test]
    fn check_rejects_bad_values() {
        let ok = Config::default_for(true, no_env);
        let bad = |f: &dyn Fn(&mut Config), key: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.check("f.toml", true).unwrap_err().to_string();
            assert!(e.starts_with(&format!("f.toml: {key}: ")), "{e}");
        };
        bad(&|c| c.state_dir = "rel".into(), "state_dir");
        bad(&|c| c.run_dir = "".into(), "run_dir");
        bad(&|c| c.log_dir = "./x".into(), "log_dir");
        bad(&|c| c.emulator = "qemu-system-x86_64".into(), "emulator");
        bad(
            &|c| c.memory_backing_dir = Some("ram".into()),
            "memory_backing_dir",
        );
        bad(&|c| c.job_wait_secs = 0, "job_wait_secs");
        bad(&|c| c.shutdown_timeout_secs = 0, "shutdown_timeout_secs");
        bad(
            &|c| c.log_max_bytes = MIN_LOG_MAX_BYTES - 1,
            "log_max_bytes",
        );
        bad(&|c| c.qemu_user = Some(String::new()), "qemu_user");
        bad(&|c| c.qemu_user = Some(" qemu".into()), "qemu_user");
        bad(
            &|c| c.api.max_connections_per_uid = Some(0),
            "api.max_connections_per_uid",
        );
        bad(
            &|c| c.api.idle_timeout_secs = Some(0),
            "api.idle_timeout_secs",
        );
        bad(
            &|c| c.api.idle_timeout_secs = Some(u64::MAX),
            "api.idle_timeout_secs",
        );
        bad(&|c| c.api.ticket_ttl_secs = Some(0), "api.ticket_ttl_secs");
        bad(
            &|c| c.api.ticket_ttl_secs = Some(MAX_TICKET_TTL_SECS + 1),
            "api.ticket_ttl_secs",
        );
        let mut c = ok.clone();
        c.qemu_user = Some("qemu".into());
        c.check("f", true).unwrap();
        assert_eq!(
            c.check("f", false).unwrap_err().to_string(),
            "f: qemu_user: requires the daemon to run as root"
        );
        bad(
            &|c| {
                c.api.tokens = vec![ApiToken {
                    name: "t".into(),
                    sha256: "XYZ".into(),
                    role: Role::Admin,
                }]
            },
            "api.tokens",
        );
        bad(
            &|c| c.api.listen = Some("127.0.0.1:1".parse().unwrap()),
            "api.listen",
        );
    }

    #[test]
    fn tls_needs_cert_key_and_listen() {
        let mut ok = Config::default_for(true, no_env);
        ok.api.listen = Some("127.0.0.1:8443".parse().unwrap());
        ok.api.tokens = vec![ApiToken {
            name: "t".into(),
            sha256: "a".repeat(64),
            role: Role::Operator,
        }];
        ok.api.tls_cert = Some("/etc/novacron/cert.pem".into());
        ok.api.tls_key = Some("/etc/novacron/key.pem".into());
        ok.check("f.toml", true).unwrap();
        let bad = |f: &dyn Fn(&mut Config), key: &str, says: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.check("f.toml", true).unwrap_err().to_string();
            assert!(e.starts_with(&format!("f.toml: {key}: ")), "{e}");
            assert!(e.contains(says), "{e}");
        };
        bad(
            &|c| c.api.tls_key = None,
            "api.tls_key",
            "needs api.tls_key",
        );
        bad(
            &|c| c.api.tls_cert = None,
            "api.tls_cert",
            "needs api.tls_cert",
        );
        bad(
            &|c| {
                c.api.listen = None;
                c.api.tokens.clear();
            },
            "api.tls_cert",
            "api.listen",
        );
        bad(
            &|c| c.api.tls_key = Some("key.pem".into()),
            "api.tls_key",
            "absolute",
        );
        // Parsed from TOML too.
        let c = Config::parse(
            &format!(
                "[api]\nlisten = '127.0.0.1:1'\ntls_cert = '/c.pem'\n\
                 [[api.tokens]]\nname = 't'\nsha256 = '{}'\nrole = 'admin'\n",
                "a".repeat(64)
            ),
            true,
            no_env,
        )
        .unwrap();
        assert_eq!(c.api.tls_cert.as_deref(), Some(Path::new("/c.pem")));
        let e = c.check("f", true).unwrap_err().to_string();
        assert!(e.contains("api.tls_key"), "{e}");
    }

    #[test]
    fn load_reads_file_and_bounds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("novacrond.toml");
        std::fs::write(
            &path,
            "job_wait_secs = 7\nstate_dir = '/srv/nc'\nqemu_user = ''\n",
        )
        .unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("qemu_user"), "{e}");
        std::fs::write(&path, "job_wait_secs = 7\nstate_dir = '/srv/nc'\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.job_wait_secs, 7);
        assert_eq!(c.state_dir, Path::new("/srv/nc"));

        std::fs::write(&path, "\n".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
        assert!(matches!(
            Config::load(Some(&path)),
            Err(ConfigError::TooLarge { .. })
        ));
        let missing = dir.path().join("missing.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("missing.toml"));
    }
}
