//! Disk snapshots: `/v1/domains/{name}/snapshots[/{snap}...]`.

use hyper::Method;
use serde_json::Value;

use super::{domain_path, encode, Client, ClientError};

fn snap_path(name: &str, snap: &str, rest: &str) -> String {
    domain_path(name, &format!("/snapshots/{}{rest}", encode(snap)))
}

impl Client {
    /// `POST /v1/domains/{name}/snapshots`: `request` is `{"name", "description"?,
    /// "quiesce"?}`; the snapshot as taken.
    pub async fn snapshot_create(&self, name: &str, request: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &domain_path(name, "/snapshots"),
            Some((request.to_string().into(), "application/json")),
        )
        .await
    }

    /// `GET /v1/domains/{name}/snapshots`: `{"current", "snapshots", "tree"}`.
    pub async fn snapshot_list(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &domain_path(name, "/snapshots"), None)
            .await
    }

    /// `GET /v1/domains/{name}/snapshots/{snap}`.
    pub async fn snapshot_get(&self, name: &str, snap: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &snap_path(name, snap, ""), None)
            .await
    }

    /// `GET /v1/domains/{name}/snapshots/{snap}/xml`: libvirt's `<domainsnapshot>`.
    pub async fn snapshot_xml(&self, name: &str, snap: &str) -> Result<String, ClientError> {
        let (_, body) = self
            .call(
                Method::GET,
                &snap_path(name, snap, "/xml"),
                None,
                "application/xml",
            )
            .await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("the snapshot XML is not UTF-8".into()))
    }

    /// `DELETE /v1/domains/{name}/snapshots/{snap}`.
    pub async fn snapshot_delete(&self, name: &str, snap: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &snap_path(name, snap, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/domains/{name}/snapshot-schedule` (`{"every", "keep"}`), or with `None`
    /// `DELETE` it; `GET` when `show`.
    pub async fn snapshot_schedule(
        &self,
        name: &str,
        set: Option<&Value>,
        remove: bool,
    ) -> Result<Value, ClientError> {
        let path = domain_path(name, "/snapshot-schedule");
        match (set, remove) {
            (Some(s), _) => {
                self.json(
                    Method::PUT,
                    &path,
                    Some((s.to_string().into(), "application/json")),
                )
                .await
            }
            (None, true) => self
                .call(Method::DELETE, &path, None, "application/json")
                .await
                .map(|_| Value::Null),
            (None, false) => self.json(Method::GET, &path, None).await,
        }
    }

    /// `POST /v1/domains/{name}/snapshots/{snap}/revert`.
    pub async fn snapshot_revert(&self, name: &str, snap: &str) -> Result<(), ClientError> {
        self.call(
            Method::POST,
            &snap_path(name, snap, "/revert"),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }
}
