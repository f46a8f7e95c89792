//! Live migration commands.

use serde::{Deserialize, Serialize};

use super::{no_arg_command, Command, Empty};
use crate::qapi::{MigrationCapability, MigrationStatus, MultifdCompression};

no_arg_command!(
    /// `query-migrate`: status and progress of the current or last migration.
    QueryMigrate = "query-migrate" -> MigrationInfo
);
no_arg_command!(
    /// `migrate_cancel`
    MigrateCancel = "migrate_cancel" -> Empty
);
no_arg_command!(
    /// `migrate-start-postcopy`: switch a running pre-copy migration to post-copy.
    MigrateStartPostcopy = "migrate-start-postcopy" -> Empty
);

/// `migrate`: start migrating to `uri` (e.g. `tcp:host:port`, `fd:name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrate {
    pub uri: String,
    /// Resume a paused post-copy migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

impl Command for Migrate {
    const NAME: &'static str = "migrate";
    type Output = Empty;
}

/// `migrate-incoming`: start listening on a QEMU started with `-incoming defer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateIncoming {
    pub uri: String,
}

impl Command for MigrateIncoming {
    const NAME: &'static str = "migrate-incoming";
    type Output = Empty;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationCapabilityStatus {
    pub capability: MigrationCapability,
    pub state: bool,
}

/// `migrate-set-capabilities`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateSetCapabilities {
    pub capabilities: Vec<MigrationCapabilityStatus>,
}

impl Command for MigrateSetCapabilities {
    const NAME: &'static str = "migrate-set-capabilities";
    type Output = Empty;
}

/// `migrate-set-parameters`: only the members that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateSetParameters {
    /// Bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_compression: Option<MultifdCompression>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_postcopy_bandwidth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_throttle: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_threads: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decompress_threads: Option<u8>,
    /// The id of a `tls-creds-x509` object; the empty string turns TLS off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_creds: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_hostname: Option<String>,
}

impl Command for MigrateSetParameters {
    const NAME: &'static str = "migrate-set-parameters";
    type Output = Empty;
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    pub status: Option<MigrationStatus>,
    pub ram: Option<MigrationStats>,
    /// Milliseconds since the migration started.
    pub total_time: Option<u64>,
    /// Milliseconds (while active).
    pub expected_downtime: Option<u64>,
    /// Milliseconds (once completed).
    pub downtime: Option<u64>,
    pub setup_time: Option<u64>,
    pub cpu_throttle_percentage: Option<u64>,
    pub error_desc: Option<String>,
    /// On the destination: where it listens (the real port when asked for port 0).
    pub socket_address: Option<Vec<MigrationSocketAddress>>,
}

/// One `SocketAddress` from `query-migrate` (`type` inet, unix, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MigrationSocketAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub host: Option<String>,
    /// QAPI carries the port as a string.
    pub port: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationStats {
    pub transferred: u64,
    pub remaining: u64,
    pub total: u64,
    #[serde(default)]
    pub duplicate: u64,
    #[serde(default)]
    pub normal: u64,
    #[serde(default)]
    pub normal_bytes: u64,
    #[serde(default)]
    pub dirty_pages_rate: u64,
    #[serde(default)]
    pub mbps: f64,
    #[serde(default)]
    pub dirty_sync_count: u64,
    #[serde(default)]
    pub postcopy_requests: u64,
    #[serde(default)]
    pub page_size: u64,
    #[serde(default)]
    pub multifd_bytes: u64,
    #[serde(default)]
    pub pages_per_second: u64,
}
