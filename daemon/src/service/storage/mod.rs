//! Storage pools and volumes: libvirt's `dir` pools (every storage root is one, `images` as
//! `default`; more are defined as directories inside the roots) and the qcow2/raw files in
//! them. The host mechanics are in `host::volumes`; this is the behaviour: names checked,
//! pools resolved, sizes bounded, files in use by a domain or as a base protected.

pub(crate) mod disk_volumes;
pub(crate) mod errors;
pub mod import;
pub mod pools;
pub(crate) mod usage;
pub mod volumes;

pub use import::ImportRequest;
pub use pools::PoolView;
pub use volumes::{CloneRequest, VolumeList};
