//! `<filesystem type='mount'>`: a host directory shared with the guest, over 9p (QEMU serves
//! it) or virtiofs (a `virtiofsd` the host layer runs serves it).

use serde::{Deserialize, Serialize};

use super::devices::Address;

pub const MAX_FILESYSTEMS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Filesystem {
    pub driver: FsDriver,
    /// How guest file ownership maps to the host (9p `security_model`).
    pub access_mode: FsAccessMode,
    /// `<source dir=...>`: the host directory.
    pub source: String,
    /// `<target dir=...>`: the mount tag the guest mounts by.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsDriver {
    /// libvirt's `type='path'` (its default): QEMU's own 9p server.
    Path,
    Virtiofs,
}

impl FsDriver {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Virtiofs => "virtiofs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccessMode {
    /// Files get the guest's owners on the host (as QEMU's user can set them).
    Passthrough,
    /// Guest owners and modes kept in extended attributes.
    Mapped,
    /// Like passthrough, ownership changes ignored.
    Squash,
}

impl FsAccessMode {
    pub const ALL: [FsAccessMode; 3] = [Self::Passthrough, Self::Mapped, Self::Squash];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Mapped => "mapped",
            Self::Squash => "squash",
        }
    }
    /// QEMU's `-fsdev local,security_model=...`.
    pub const fn security_model(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Mapped => "mapped-xattr",
            Self::Squash => "none",
        }
    }
}
