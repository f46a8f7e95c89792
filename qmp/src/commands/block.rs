//! Block device queries.

use serde::Deserialize;

use super::no_arg_command;

no_arg_command!(
    /// `query-block`
    QueryBlock = "query-block" -> Vec<BlockInfo>
);
no_arg_command!(
    /// `query-blockstats`
    QueryBlockstats = "query-blockstats" -> Vec<BlockStats>
);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockInfo {
    pub device: String,
    pub qdev: Option<String>,
    pub removable: bool,
    pub locked: bool,
    pub inserted: Option<BlockDeviceInfo>,
    #[serde(rename = "tray_open")]
    pub tray_open: Option<bool>,
    pub io_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockDeviceInfo {
    pub file: String,
    pub node_name: Option<String>,
    pub ro: bool,
    pub drv: String,
    #[serde(rename = "backing_file")]
    pub backing_file: Option<String>,
    pub encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockStats {
    pub device: Option<String>,
    pub node_name: Option<String>,
    pub qdev: Option<String>,
    pub stats: BlockDeviceStats,
}

/// Counters since the device was created (QAPI spells these with underscores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BlockDeviceStats {
    pub rd_bytes: u64,
    pub wr_bytes: u64,
    pub rd_operations: u64,
    pub wr_operations: u64,
    pub flush_operations: u64,
    pub rd_total_time_ns: u64,
    pub wr_total_time_ns: u64,
    pub flush_total_time_ns: u64,
}
