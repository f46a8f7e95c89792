//! Adapters for remote vendor hypervisors, each behind the [`Driver`] trait from `domain`.
//!
//! - [`config`]: what a registered host is (driver, URL, credentials that never print).
//! - [`http`]: the one HTTP client construction every adapter uses (timeouts, TLS, pooling).
//! - [`breaker`] and [`host`]: the resilience the product asks for, the same for every vendor:
//!   per-call timeouts, retries for idempotent reads only, a circuit breaker, and the last
//!   inventory served stale while a host is down.
//! - [`discover`]: which vendor API answers at an address.
//! - `xml`: the one bounded XML reader every XML-speaking adapter uses.
//! - One module per vendor, each behind a cargo feature.

pub mod breaker;
pub mod config;
pub mod discover;
pub mod host;
pub mod http;
#[cfg(any(feature = "vsphere", feature = "hyperv", feature = "xapi"))]
pub mod xml;

#[cfg(feature = "hyperv")]
pub mod hyperv;
#[cfg(feature = "proxmox")]
pub mod proxmox;
#[cfg(feature = "vsphere")]
pub mod vsphere;
#[cfg(feature = "xapi")]
pub mod xapi;

use std::sync::Arc;

use novacron_domain::{Driver, Error};

pub use config::{Credentials, DriverKind, HostConfig, Secret, TlsOptions};
pub use host::{HostStatus, Inventory, RemoteHost};

/// The adapter for `config.driver`, or a clear refusal if that vendor is compiled out.
pub fn connect(config: &HostConfig) -> Result<Arc<dyn Driver>, Error> {
    match config.driver {
        #[cfg(feature = "vsphere")]
        DriverKind::Vsphere => Ok(Arc::new(vsphere::VsphereDriver::new(config)?)),
        #[cfg(feature = "proxmox")]
        DriverKind::Proxmox => Ok(Arc::new(proxmox::ProxmoxDriver::new(config)?)),
        #[cfg(feature = "xapi")]
        DriverKind::Xapi => Ok(Arc::new(xapi::XapiDriver::new(config)?)),
        #[cfg(feature = "hyperv")]
        DriverKind::Hyperv => Ok(Arc::new(hyperv::HypervDriver::new(config)?)),
        #[allow(unreachable_patterns)]
        kind => Err(Error::InvalidConfig(format!(
            "host '{}': the {} driver is not compiled into this build",
            config.name,
            kind.as_str()
        ))),
    }
}
