//! The typed subset of QMP commands the daemon uses. Arguments serialize to exactly the QAPI
//! member names; outputs accept unknown members, and every enum keeps unknown values, so a newer
//! QEMU does not break decoding. `tests/qmp_schema_drift.rs` checks the arguments against a real
//! QEMU's `query-qmp-schema`.

mod block;
mod device;
mod fd;
mod migration;
mod threads;
mod vm;

pub use block::*;
pub use device::*;
pub use fd::*;
pub use migration::*;
pub use threads::*;
pub use vm::*;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A QMP command: its wire name, its arguments (the implementing type itself, serialized as a
/// JSON object, or a unit struct for none) and its output.
pub trait Command: Serialize {
    const NAME: &'static str;
    type Output: DeserializeOwned;
}

/// The output of commands that return `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Empty {}

/// Every command name the typed layer can emit (the drift test covers each).
pub const TYPED_COMMANDS: &[&str] = &[
    QmpCapabilities::NAME,
    QueryStatus::NAME,
    Cont::NAME,
    Stop::NAME,
    SystemPowerdown::NAME,
    SystemReset::NAME,
    Quit::NAME,
    HumanMonitorCommand::NAME,
    QueryCpusFast::NAME,
    QueryIothreads::NAME,
    QueryMigrate::NAME,
    Migrate::NAME,
    MigrateIncoming::NAME,
    MigrateSetCapabilities::NAME,
    MigrateSetParameters::NAME,
    MigrateCancel::NAME,
    MigrateStartPostcopy::NAME,
    QueryBlock::NAME,
    QueryBlockstats::NAME,
    DeviceAdd::NAME,
    DeviceDel::NAME,
    GetFd::NAME,
    AddFd::NAME,
];

/// Declares a command without arguments.
macro_rules! no_arg_command {
    ($(#[$meta:meta])* $name:ident = $wire:literal -> $output:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct $name;

        impl $crate::commands::Command for $name {
            const NAME: &'static str = $wire;
            type Output = $output;
        }
    };
}
pub(crate) use no_arg_command;
