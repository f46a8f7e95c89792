//! Virtual networks: `/v1/networks/...`. Answers stay JSON values: novactl prints them.

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use super::{Client, ClientError, DefinitionFormat};

fn path(name: &str, rest: &str) -> String {
    format!("/v1/networks/{}{rest}", crate::http_client::encode(name))
}

impl Client {
    /// `GET /v1/networks`.
    pub async fn networks(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/networks", None).await
    }

    /// `POST /v1/networks`: define (or redefine) from libvirt network XML or JSON.
    pub async fn net_define(
        &self,
        body: impl Into<Bytes>,
        format: DefinitionFormat,
    ) -> Result<Value, ClientError> {
        let body = Some((body.into(), format.content_type()));
        self.json(Method::POST, "/v1/networks", body).await
    }

    /// `GET /v1/networks/{name}`: `{"info", "config"}`.
    pub async fn net_info(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &path(name, ""), None).await
    }

    /// `GET /v1/networks/{name}/xml`.
    pub async fn net_xml(&self, name: &str) -> Result<String, ClientError> {
        let (_, body) = self
            .call(Method::GET, &path(name, "/xml"), None, "application/xml")
            .await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("the network XML is not UTF-8".into()))
    }

    /// `DELETE /v1/networks/{name}`.
    pub async fn net_undefine(&self, name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &path(name, ""), None, "application/json")
            .await
            .map(drop)
    }

    /// `POST /v1/networks/{name}/start` or `/stop`.
    pub async fn net_action(&self, name: &str, start: bool) -> Result<Value, ClientError> {
        let action = if start { "/start" } else { "/stop" };
        self.json(Method::POST, &path(name, action), None).await
    }

    /// `POST /v1/networks/{name}/autostart`.
    pub async fn net_autostart(&self, name: &str, enabled: bool) -> Result<Value, ClientError> {
        let body = json!({ "enabled": enabled }).to_string();
        self.json(
            Method::POST,
            &path(name, "/autostart"),
            Some((body.into(), "application/json")),
        )
        .await
    }

    /// `GET /v1/networks/{name}/leases`.
    pub async fn net_leases(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &path(name, "/leases"), None).await
    }
}
