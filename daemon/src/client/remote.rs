//! Remote vendor hosts: `/v1/hosts/...`.

use bytes::Bytes;
use hyper::Method;
use novacron_domain::DomainSummary;
use serde::Deserialize;
use serde_json::Value;

use super::{encode, Client, ClientError};

/// `GET /v1/hosts`.
#[derive(Debug, Clone, Deserialize)]
pub struct HostList {
    pub hosts: Vec<RemoteHostRow>,
    pub problems: Vec<String>,
}

/// One remote host as the daemon shows it (never its credentials).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct RemoteHostRow {
    pub name: String,
    pub driver: String,
    pub url: String,
    pub user: String,
    pub breaker: String,
    pub read_only: bool,
    pub last_inventory_age_secs: Option<f64>,
    pub last_error: Option<String>,
    pub origin: String,
}

/// `GET /v1/hosts/{host}/domains`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct RemoteInventory {
    pub domains: Vec<DomainSummary>,
    pub fetched_at_unix: u64,
    pub stale: Option<Staleness>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Staleness {
    pub age_secs: f64,
    pub reason: String,
}

/// `GET /v1/hosts/{host}/domains/{name}` and the answer to an action.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct RemoteDomain {
    pub summary: DomainSummary,
    pub config: Value,
}

fn host_path(host: &str, rest: &str) -> String {
    format!("/v1/hosts/{}{rest}", encode(host))
}

fn json_body(v: &Value) -> Option<(Bytes, &'static str)> {
    Some((Bytes::from(v.to_string()), "application/json"))
}

impl Client {
    pub async fn remote_hosts(&self) -> Result<HostList, ClientError> {
        self.json(Method::GET, "/v1/hosts", None).await
    }

    pub async fn remote_host(&self, host: &str) -> Result<RemoteHostRow, ClientError> {
        self.json(Method::GET, &host_path(host, ""), None).await
    }

    pub async fn remote_domains(&self, host: &str) -> Result<RemoteInventory, ClientError> {
        self.remote_list(host, &Default::default()).await
    }

    /// `GET /v1/hosts/{host}/domains?state=&name=`: filtered by the daemon.
    pub async fn remote_list(
        &self,
        host: &str,
        filter: &super::ListFilter,
    ) -> Result<RemoteInventory, ClientError> {
        let mut query = Vec::new();
        if let Some(state) = filter.state {
            query.push(format!("state={}", state.as_str()));
        }
        if let Some(name) = &filter.name {
            query.push(format!("name={}", encode(name)));
        }
        let mut path = host_path(host, "/domains");
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.json(Method::GET, &path, None).await
    }

    pub async fn remote_domain(&self, host: &str, name: &str) -> Result<RemoteDomain, ClientError> {
        let path = host_path(host, &format!("/domains/{}", encode(name)));
        self.json(Method::GET, &path, None).await
    }

    /// `POST /v1/hosts/{host}/domains/{name}/{action}` (start, shutdown, destroy, suspend,
    /// resume, reboot); answers once the vendor finished.
    pub async fn remote_action(
        &self,
        host: &str,
        name: &str,
        action: super::Action,
        body: Option<Value>,
    ) -> Result<RemoteDomain, ClientError> {
        let path = host_path(
            host,
            &format!("/domains/{}/{}", encode(name), action.as_str()),
        );
        self.json(Method::POST, &path, body.as_ref().and_then(json_body))
            .await
    }

    /// `POST /v1/hosts` (admins): `registration` is the RegisterHostRequest JSON.
    pub async fn register_host(&self, registration: &Value) -> Result<RemoteHostRow, ClientError> {
        self.json(Method::POST, "/v1/hosts", json_body(registration))
            .await
    }

    /// `DELETE /v1/hosts/{host}` (admins).
    pub async fn unregister_host(&self, host: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &host_path(host, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    /// `POST /v1/hosts/discover`.
    pub async fn discover_hosts(&self, request: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, "/v1/hosts/discover", json_body(request))
            .await
    }
}
