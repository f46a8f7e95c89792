//! `[migration]` in the configuration: what a migration peer may make this daemon do.
//! The defaults are the safe ones: TLS to the peer, the stream only to the host we contacted,
//! the incoming stream only on an address of this host.

use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    /// Allow `http://` destinations: the bearer token and the guest's definition then cross
    /// the network in clear text. Off by default.
    pub allow_plain_http: bool,
    /// Addresses, besides the destination's own (its URL's host, resolved), that a
    /// destination may name for the migration stream (e.g. a dedicated migration network).
    pub stream_hosts: Vec<IpAddr>,
    /// Addresses, besides this host's own, an incoming stream may listen on; the unspecified
    /// addresses (`0.0.0.0`, `::`) only if listed here.
    pub listen_hosts: Vec<IpAddr>,
}

impl MigrationConfig {
    /// Semantic checks: the key and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for ip in &self.stream_hosts {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err((
                    "migration.stream_hosts",
                    format!("{ip} is not an address a stream can go to"),
                ));
            }
        }
        Ok(())
    }
}
