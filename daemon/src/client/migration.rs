//! Live migration endpoints, the operator's: `migrate`, progress, cancel, post-copy. The peer
//! protocol one daemon speaks to another (`/v1/migrations/incoming/...`) is the service's own
//! (`service::migration::peer_client`).

use hyper::Method;

use super::{domain_path, Client, ClientError};
use crate::service::migration::{MigrateRequest, Progress};

impl Client {
    /// `POST /v1/domains/{name}/migrate`. Without `wait` the answer comes once the
    /// migration has started; with it, once it ended (the final progress either way).
    pub async fn migrate(
        &self,
        name: &str,
        request: &MigrateRequest,
        wait: bool,
    ) -> Result<Progress, ClientError> {
        let mut path = domain_path(name, "/migrate");
        if wait {
            path.push_str("?wait=true");
        }
        self.json(Method::POST, &path, Some(body(request)?)).await
    }

    /// `GET /v1/domains/{name}/migration`: the running or last migration.
    pub async fn migration(&self, name: &str) -> Result<Progress, ClientError> {
        self.json(Method::GET, &domain_path(name, "/migration"), None)
            .await
    }

    /// `DELETE /v1/domains/{name}/migration`: cancels; answers once the guest is back.
    pub async fn cancel_migration(&self, name: &str) -> Result<Progress, ClientError> {
        self.json(Method::DELETE, &domain_path(name, "/migration"), None)
            .await
    }

    /// `POST /v1/domains/{name}/migration/postcopy`.
    pub async fn start_postcopy(&self, name: &str) -> Result<Progress, ClientError> {
        self.json(
            Method::POST,
            &domain_path(name, "/migration/postcopy"),
            None,
        )
        .await
    }
}

fn body<T: serde::Serialize>(value: &T) -> Result<(bytes::Bytes, &'static str), ClientError> {
    serde_json::to_vec(value)
        .map(|v| (v.into(), "application/json"))
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))
}
