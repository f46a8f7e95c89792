//! vCPUs and memory: `/v1/domains/{name}/vcpus`, `/v1/domains/{name}/memory...` (answers as
//! JSON values).

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::{domain_path, encode, Client, ClientError};

fn body(v: &Value) -> Option<(Bytes, &'static str)> {
    Some((Bytes::from(v.to_string()), "application/json"))
}

impl Client {
    /// `GET /v1/domains/{name}/vcpus`.
    pub async fn vcpu_count(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &domain_path(name, "/vcpus"), None)
            .await
    }

    /// `PUT /v1/domains/{name}/vcpus` with `{"count", "live", "config", "maximum", "timeout"}`.
    pub async fn set_vcpus(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(Method::PUT, &domain_path(name, "/vcpus"), body(request))
            .await
    }

    /// `PUT /v1/domains/{name}/memory/balloon` with `{"size_kib", "live", "config"}`.
    pub async fn set_memory(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::PUT,
            &domain_path(name, "/memory/balloon"),
            body(request),
        )
        .await
    }

    /// `PUT /v1/domains/{name}/memory/maximum` (`setmaxmem`).
    pub async fn set_max_memory(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::PUT,
            &domain_path(name, "/memory/maximum"),
            body(request),
        )
        .await
    }

    /// `GET /v1/domains/{name}/memory/stats`, or `PUT` with the period when given.
    pub async fn memory_stats(
        &self,
        name: &str,
        period: Option<u32>,
    ) -> Result<Value, ClientError> {
        let path = domain_path(name, "/memory/stats");
        match period {
            Some(p) => {
                let b = serde_json::json!({ "period": p });
                self.json(Method::PUT, &path, body(&b)).await
            }
            None => self.json(Method::GET, &path, None).await,
        }
    }

    /// `GET /v1/domains/{name}/memory` (`config`: the definition's).
    pub async fn memory_info(&self, name: &str, config: bool) -> Result<Value, ClientError> {
        let q = if config { "?config=true" } else { "" };
        self.json(
            Method::GET,
            &domain_path(name, &format!("/memory{q}")),
            None,
        )
        .await
    }

    /// `PUT /v1/domains/{name}/memory/devices/{alias}` with `{"requested_kib", "live", "config"}`.
    pub async fn update_memory_device(
        &self,
        name: &str,
        alias: &str,
        request: &Value,
    ) -> Result<Value, ClientError> {
        let path = domain_path(name, &format!("/memory/devices/{}", encode(alias)));
        self.json(Method::PUT, &path, body(request)).await
    }

    /// `POST /v1/domains/{name}/memory/devices` with `{"xml"|"device", "live", "config"}`.
    pub async fn attach_memory(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &domain_path(name, "/memory/devices"),
            body(request),
        )
        .await
    }

    /// `DELETE /v1/domains/{name}/memory/devices/{alias}?live=&config=&timeout=`.
    pub async fn detach_memory(
        &self,
        name: &str,
        alias: &str,
        query: &str,
    ) -> Result<Value, ClientError> {
        let path = domain_path(name, &format!("/memory/devices/{}{query}", encode(alias)));
        self.json(Method::DELETE, &path, None).await
    }
}
