//! Live migration endpoints: the operator's (`migrate`, progress, cancel, post-copy) and the
//! peer protocol one daemon speaks to another (`/v1/migrations/incoming/...`).

use hyper::Method;

use super::{domain_path, encode, Client, ClientError};
use crate::service::migration::{
    IncomingAnswer, IncomingRequest, IncomingView, MigrateRequest, Progress,
};

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

    /// `POST /v1/migrations/incoming` (peer protocol).
    pub async fn prepare_incoming(
        &self,
        request: &IncomingRequest,
    ) -> Result<IncomingAnswer, ClientError> {
        self.json(
            Method::POST,
            "/v1/migrations/incoming",
            Some(body(request)?),
        )
        .await
    }

    /// `GET /v1/migrations/incoming/{id}`: its state; also renews its lease.
    pub async fn incoming(&self, id: &str) -> Result<IncomingView, ClientError> {
        self.json(Method::GET, &incoming_path(id, ""), None).await
    }

    /// `POST /v1/migrations/incoming/{id}/finish`: the destination resumes the guest.
    pub async fn finish_incoming(&self, id: &str) -> Result<IncomingView, ClientError> {
        self.json(Method::POST, &incoming_path(id, "/finish"), None)
            .await
    }

    /// `DELETE /v1/migrations/incoming/{id}`: the destination discards what it prepared.
    pub async fn abort_incoming(&self, id: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &incoming_path(id, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }
}

fn incoming_path(id: &str, rest: &str) -> String {
    format!("/v1/migrations/incoming/{}{rest}", encode(id))
}

fn body<T: serde::Serialize>(value: &T) -> Result<(bytes::Bytes, &'static str), ClientError> {
    serde_json::to_vec(value)
        .map(|v| (v.into(), "application/json"))
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))
}
