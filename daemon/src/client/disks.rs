//! A domain's disks: `/v1/domains/{name}/disks...` (answers as JSON values).

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::{domain_path, encode, Client, ClientError};

fn body(v: &Value) -> Option<(Bytes, &'static str)> {
    Some((Bytes::from(v.to_string()), "application/json"))
}

fn disk_path(name: &str, target: &str, rest: &str) -> String {
    domain_path(name, &format!("/disks/{}{rest}", encode(target)))
}

impl Client {
    /// `GET /v1/domains/{name}/disks` (`config`: the definition's).
    pub async fn list_disks(&self, name: &str, config: bool) -> Result<Value, ClientError> {
        let q = if config { "?config=true" } else { "" };
        self.json(Method::GET, &domain_path(name, &format!("/disks{q}")), None)
            .await
    }

    /// `POST /v1/domains/{name}/disks`: `request` is `{"xml"|"disk", "live", "config", ...}`.
    pub async fn attach_disk(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, &domain_path(name, "/disks"), body(request))
            .await
    }

    /// `DELETE /v1/domains/{name}/disks/{target}?live=&config=&persistent=&timeout=`.
    pub async fn detach_disk(
        &self,
        name: &str,
        target: &str,
        query: &str,
    ) -> Result<Value, ClientError> {
        self.json(Method::DELETE, &disk_path(name, target, query), None)
            .await
    }

    /// `POST .../disks/{target}/resize` with `{"size": bytes}`.
    pub async fn resize_disk(
        &self,
        name: &str,
        target: &str,
        size: u64,
    ) -> Result<Value, ClientError> {
        let b = serde_json::json!({ "size": size });
        self.json(Method::POST, &disk_path(name, target, "/resize"), body(&b))
            .await
    }

    /// `GET .../disks/{target}/iotune`, or `PUT` with `tune` when given.
    pub async fn disk_iotune(
        &self,
        name: &str,
        target: &str,
        tune: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let path = disk_path(name, target, "/iotune");
        match tune {
            None => self.json(Method::GET, &path, None).await,
            Some(t) => self.json(Method::PUT, &path, body(t)).await,
        }
    }

    /// `POST .../disks/{target}/media` with `{"action", "source", "force", "live", ...}`.
    pub async fn change_media(
        &self,
        name: &str,
        target: &str,
        change: &Value,
    ) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &disk_path(name, target, "/media"),
            body(change),
        )
        .await
    }
}
