//! What a migration may be asked to do, checked once, and turned into QEMU capabilities and
//! parameters for each end.

use novacron_domain::Error;
use novacron_qmp::commands::{MigrateSetParameters, MigrationCapabilityStatus};
use novacron_qmp::qapi::{MigrationCapability, MultifdCompression};
use serde::{Deserialize, Serialize};

/// The downtime QEMU aims for when the caller names none (libvirt's default is 300 ms too).
pub const DEFAULT_MAX_DOWNTIME_MS: u64 = 300;
const MAX_MULTIFD_CHANNELS: u8 = 64;
/// A 10 GiB xbzrle cache is far beyond any sensible use; bounded so a typo cannot OOM the host.
const MAX_XBZRLE_CACHE: u64 = 10 << 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Zlib,
    Zstd,
}

/// What happens when a migration has not finished within `timeout_secs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Cancel: the guest keeps running here.
    #[default]
    Abort,
    /// Switch to post-copy: the guest runs there at once and pulls the rest.
    Postcopy,
    /// Pause the guest so that what is left can be copied (a longer downtime, but it ends).
    Pause,
}

/// The tunables of one migration. Both ends get the capabilities; the source the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationOptions {
    /// Bytes per second; unlimited when absent.
    pub max_bandwidth: Option<u64>,
    /// The pause QEMU may take to copy the last dirty pages; 300 ms when absent.
    pub max_downtime_ms: Option<u64>,
    /// Parallel streams (multifd); one ordinary stream when absent.
    pub multifd_channels: Option<u8>,
    /// Throttle the vCPUs of a guest that dirties memory faster than the link copies it.
    pub auto_converge: bool,
    /// Size of the xbzrle cache (delta compression of pages sent before); off when absent.
    pub xbzrle_cache_bytes: Option<u64>,
    /// Compression of the multifd streams (needs `multifd_channels`).
    pub compression: Compression,
    /// Allow post-copy (`POST .../migration/postcopy` switches to it).
    pub postcopy: bool,
    /// Encrypt the stream with the hosts' migration certificates. When absent: on for an
    /// `https://` destination, off for an (allowed) `http://` one.
    pub tls: Option<bool>,
    /// Give up (or act) after this many seconds.
    pub timeout_secs: Option<u64>,
    pub timeout_action: TimeoutAction,
}

impl MigrationOptions {
    /// Refuses what cannot work, naming the option.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(format!("migration option {m}")));
        if let Some(n) = self.multifd_channels {
            if n == 0 || n > MAX_MULTIFD_CHANNELS {
                return bad(format!(
                    "multifd_channels must be 1..={MAX_MULTIFD_CHANNELS}, not {n}"
                ));
            }
        }
        if self.compression != Compression::None && self.multifd_channels.is_none() {
            return bad(
                "compression needs multifd_channels (QEMU compresses multifd streams)".into(),
            );
        }
        if let Some(size) = self.xbzrle_cache_bytes {
            if !(1 << 20..=MAX_XBZRLE_CACHE).contains(&size) {
                return bad(format!(
                    "xbzrle_cache_bytes must be between 1 MiB and 10 GiB, not {size}"
                ));
            }
        }
        if self.max_bandwidth == Some(0) {
            return bad("max_bandwidth must be above 0 (omit it for unlimited)".into());
        }
        if self
            .max_downtime_ms
            .is_some_and(|d| d == 0 || d > 2_000_000)
        {
            return bad("max_downtime_ms must be 1..=2000000".into());
        }
        if self.timeout_secs == Some(0) {
            return bad("timeout_secs must be above 0 (omit it for none)".into());
        }
        if self.postcopy && self.multifd_channels.is_some() {
            // QEMU 7.2 refuses the pair; saying so here gives the better message.
            return bad("postcopy cannot be combined with multifd_channels in QEMU 7.2".into());
        }
        Ok(())
    }

    /// The stream is encrypted (the source settles an absent `tls` before sending).
    pub fn stream_tls(&self) -> bool {
        self.tls == Some(true)
    }

    /// Post-copy may be entered: asked for, or the timeout's chosen way out.
    pub fn postcopy_allowed(&self) -> bool {
        self.postcopy || self.timeout_action == TimeoutAction::Postcopy
    }

    /// The same on both ends: every capability this code manages, on or off, so that a QEMU
    /// reused for a second attempt carries nothing over.
    pub fn capabilities(&self) -> Vec<MigrationCapabilityStatus> {
        let cap = |capability, state| MigrationCapabilityStatus { capability, state };
        vec![
            cap(MigrationCapability::Events, true),
            cap(
                MigrationCapability::Xbzrle,
                self.xbzrle_cache_bytes.is_some(),
            ),
            cap(MigrationCapability::AutoConverge, self.auto_converge),
            cap(
                MigrationCapability::Multifd,
                self.multifd_channels.is_some(),
            ),
            cap(MigrationCapability::PostcopyRam, self.postcopy_allowed()),
        ]
    }

    /// Parameters both ends must agree on (multifd).
    pub fn shared_parameters(&self) -> MigrateSetParameters {
        MigrateSetParameters {
            multifd_channels: self.multifd_channels,
            multifd_compression: self.multifd_channels.map(|_| match self.compression {
                Compression::None => MultifdCompression::None,
                Compression::Zlib => MultifdCompression::Zlib,
                Compression::Zstd => MultifdCompression::Zstd,
            }),
            ..MigrateSetParameters::default()
        }
    }

    /// Parameters of the sending end.
    pub fn source_parameters(&self) -> MigrateSetParameters {
        MigrateSetParameters {
            // QEMU's own default is 128 MiB/s: "unlimited" must be said explicitly.
            max_bandwidth: Some(self.max_bandwidth.unwrap_or(u64::from(u32::MAX) * 16)),
            downtime_limit: Some(self.max_downtime_ms.unwrap_or(DEFAULT_MAX_DOWNTIME_MS)),
            xbzrle_cache_size: self.xbzrle_cache_bytes,
            ..self.shared_parameters()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_option() {
        let o = MigrationOptions {
            compression: Compression::Zstd,
            ..Default::default()
        };
        assert!(o.check().unwrap_err().to_string().contains("compression"));
        let o = MigrationOptions {
            multifd_channels: Some(0),
            ..Default::default()
        };
        assert!(o
            .check()
            .unwrap_err()
            .to_string()
            .contains("multifd_channels"));
        assert!(MigrationOptions::default().check().is_ok());
    }

    #[test]
    fn timeout_postcopy_enables_the_capability_and_defaults_fill_in() {
        let o = MigrationOptions {
            timeout_action: TimeoutAction::Postcopy,
            ..Default::default()
        };
        let caps = o.capabilities();
        assert!(caps
            .iter()
            .any(|c| c.capability == MigrationCapability::PostcopyRam && c.state));
        let p = MigrationOptions::default().source_parameters();
        assert_eq!(p.downtime_limit, Some(DEFAULT_MAX_DOWNTIME_MS));
        assert!(p.max_bandwidth.unwrap() > 1 << 30);
        assert!(p.multifd_channels.is_none());
    }
}
