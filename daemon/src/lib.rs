//! `novacrond`, the NovaCron host daemon: it composes the QMP client (`novacron-qmp`) and the
//! domain model (`novacron-domain`) into one service that owns QEMU processes and definitions.
//! The faces (HTTP, D-Bus, CLI) call [`service::Service`] and hold no behaviour of their own.

pub mod api;
pub mod client;
pub mod config;
pub mod driver;
pub mod glob;
pub mod host;
pub mod http_client;
pub mod ops;
pub mod paths;
pub mod persist;
pub mod qemu;
pub mod service;
pub mod systemd;

pub use config::Config;
pub use service::{Service, ShutdownOptions};
