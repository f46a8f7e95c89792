//! QAPI enumerations with a fallback for values this crate does not know yet.
//!
//! QEMU adds enum values in every release; a client that fails to parse a reply because of a new
//! run state or event reason breaks on upgrade. Every enum here keeps unknown values as `Other`.

/// Declares a QAPI string enum: known variants plus `Other(String)`, (de)serialized as the wire
/// string, with `ALL` listing the known variants (used by the schema drift test).
macro_rules! qapi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version of the crate does not know.
            Other(String),
        }

        impl $name {
            /// Every value this crate knows, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(s) => s.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok($name::from(s.as_ref()))
            }
        }
    };
}

qapi_enum! {
    /// QMP error classes (`QapiErrorClass`).
    ErrorClass {
        GenericError = "GenericError",
        CommandNotFound = "CommandNotFound",
        DeviceNotActive = "DeviceNotActive",
        DeviceNotFound = "DeviceNotFound",
        KvmMissingCap = "KVMMissingCap",
    }
}

qapi_enum! {
    /// Capabilities offered in the greeting and enabled by `qmp_capabilities`.
    QmpCapability {
        Oob = "oob",
    }
}

qapi_enum! {
    /// The VM run state (`RunState`).
    RunState {
        Debug = "debug",
        InMigrate = "inmigrate",
        InternalError = "internal-error",
        IoError = "io-error",
        Paused = "paused",
        PostMigrate = "postmigrate",
        Prelaunch = "prelaunch",
        FinishMigrate = "finish-migrate",
        RestoreVm = "restore-vm",
        Running = "running",
        SaveVm = "save-vm",
        Shutdown = "shutdown",
        Suspended = "suspended",
        Watchdog = "watchdog",
        GuestPanicked = "guest-panicked",
        Colo = "colo",
    }
}

qapi_enum! {
    /// Why the guest shut down or reset (`ShutdownCause`).
    ShutdownCause {
        None = "none",
        HostError = "host-error",
        HostQmpQuit = "host-qmp-quit",
        HostQmpSystemReset = "host-qmp-system-reset",
        HostSignal = "host-signal",
        HostUi = "host-ui",
        GuestShutdown = "guest-shutdown",
        GuestReset = "guest-reset",
        GuestPanic = "guest-panic",
        SubsystemReset = "subsystem-reset",
        SnapshotLoad = "snapshot-load",
    }
}

qapi_enum! {
    /// What QEMU did about a guest panic (`GuestPanicAction`).
    GuestPanicAction {
        Pause = "pause",
        Poweroff = "poweroff",
        Run = "run",
    }
}

qapi_enum! {
    /// Migration status (`MigrationStatus`).
    MigrationStatus {
        None = "none",
        Setup = "setup",
        Cancelling = "cancelling",
        Cancelled = "cancelled",
        Active = "active",
        PostcopyActive = "postcopy-active",
        PostcopyPaused = "postcopy-paused",
        PostcopyRecover = "postcopy-recover",
        Completed = "completed",
        Failed = "failed",
        Colo = "colo",
        PreSwitchover = "pre-switchover",
        Device = "device",
        WaitUnplug = "wait-unplug",
    }
}

impl MigrationStatus {
    /// True once the migration can make no more progress (it completed, failed or was cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }
}

qapi_enum! {
    /// Migration capabilities (`MigrationCapability`) as of QEMU 7.2.
    MigrationCapability {
        Xbzrle = "xbzrle",
        RdmaPinAll = "rdma-pin-all",
        AutoConverge = "auto-converge",
        ZeroBlocks = "zero-blocks",
        Compress = "compress",
        Events = "events",
        PostcopyRam = "postcopy-ram",
        ReleaseRam = "release-ram",
        Block = "block",
        ReturnPath = "return-path",
        PauseBeforeSwitchover = "pause-before-switchover",
        Multifd = "multifd",
        DirtyBitmaps = "dirty-bitmaps",
        PostcopyBlocktime = "postcopy-blocktime",
        LateBlockActivate = "late-block-activate",
        XIgnoreShared = "x-ignore-shared",
        ValidateUuid = "validate-uuid",
        BackgroundSnapshot = "background-snapshot",
    }
}

qapi_enum! {
    /// Compression used by multifd channels (`MultiFDCompression`).
    MultifdCompression {
        None = "none",
        Zlib = "zlib",
        Zstd = "zstd",
    }
}

qapi_enum! {
    /// Block job types (`JobType`).
    JobType {
        Commit = "commit",
        Stream = "stream",
        Mirror = "mirror",
        Backup = "backup",
        Create = "create",
        Amend = "amend",
        SnapshotLoad = "snapshot-load",
        SnapshotSave = "snapshot-save",
        SnapshotDelete = "snapshot-delete",
    }
}

qapi_enum! {
    /// Block I/O error actions (`BlockErrorAction`).
    BlockErrorAction {
        Ignore = "ignore",
        Report = "report",
        Stop = "stop",
    }
}

qapi_enum! {
    /// Whether an I/O error happened on read or write (`IoOperationType`).
    IoOperationType {
        Read = "read",
        Write = "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_survive_a_round_trip() {
        let s: RunState = serde_json::from_str("\"some-new-state\"").unwrap();
        assert_eq!(s, RunState::Other("some-new-state".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"some-new-state\"");
    }

    #[test]
    fn known_values_map_to_variants() {
        let s: MigrationStatus = serde_json::from_str("\"postcopy-active\"").unwrap();
        assert_eq!(s, MigrationStatus::PostcopyActive);
        assert!(!s.is_finished());
        assert_eq!(ErrorClass::from("KVMMissingCap"), ErrorClass::KvmMissingCap);
    }
}
