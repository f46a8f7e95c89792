//! NovaCron domain library: the guest model, libvirt-compatible XML and JSON front-ends,
//! validation, the QEMU command-line builder, and the `Driver` trait.
//!
//! Pure: no processes, sockets or host access. Everything reachable from untrusted XML/JSON
//! is bounded and panic-free.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod driver;
pub mod error;
pub mod model;
pub mod network;
pub mod qemu;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod validate;
pub mod xml;

pub use driver::{Capabilities, DomainInfo, DomainSummary, Driver, MigrationTarget};
pub use error::{Error, ErrorCode, FieldError, Kind};
pub use model::DomainConfig;
pub use qemu::virtiofs_socket;
pub use qemu::{
    build_argv, Accel, ArgvError, BackingImage, CpuChoice, FdSetEntry, LaunchContext,
    MonitorSocket, NetFd,
};
pub use state::DomainState;
pub use validate::{ValidatedDomain, ValidationError, ValidationErrors};
pub use xml::XmlError;

/// Largest XML or JSON document accepted, in bytes: definitions are small; this bounds work
/// done on untrusted input.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
