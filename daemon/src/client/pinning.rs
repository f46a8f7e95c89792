//! CPU pinning: `GET`/`PUT /v1/domains/{name}/pinning`.

use hyper::Method;
use serde_json::json;

use super::{domain_path, Client, ClientError};
pub use crate::service::placement::{Pinning, ThreadAffinity};

/// Which thread a pin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinTarget {
    Vcpu(u32),
    Iothread(u32),
    Emulator,
}

impl Client {
    /// `GET /v1/domains/{name}/pinning`: live while running unless `config`.
    pub async fn pinning(&self, name: &str, config: bool) -> Result<Pinning, ClientError> {
        let query = if config { "?config=true" } else { "" };
        self.json(
            Method::GET,
            &domain_path(name, &format!("/pinning{query}")),
            None,
        )
        .await
    }

    /// `PUT /v1/domains/{name}/pinning`; `live` and `config` as `virsh vcpupin` (neither: the
    /// current state).
    pub async fn pin(
        &self,
        name: &str,
        target: PinTarget,
        cpuset: &str,
        live: bool,
        config: bool,
    ) -> Result<Pinning, ClientError> {
        let mut body = json!({ "cpuset": cpuset, "live": live, "config": config });
        match target {
            PinTarget::Vcpu(n) => body["vcpu"] = json!(n),
            PinTarget::Iothread(n) => body["iothread"] = json!(n),
            PinTarget::Emulator => body["emulator"] = json!(true),
        }
        self.json(
            Method::PUT,
            &domain_path(name, "/pinning"),
            Some((body.to_string().into(), "application/json")),
        )
        .await
    }
}
