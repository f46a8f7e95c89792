//! The peer protocol one daemon speaks to another (`/v1/migrations/incoming/...`): the
//! source's calls to its destination, on the shared HTTP transport. The service owns it (it
//! is the service's protocol), so the service never needs the client library.

use hyper::Method;

use super::{IncomingAnswer, IncomingRequest, IncomingView};
use crate::http_client::{encode, Client, ClientError};

impl Client {
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
