//! Domain templates: `/v1/templates/...`. Answers are the daemon's JSON, as given.

use hyper::Method;
use serde_json::{json, Value};

use super::{encode, Client, ClientError};

fn template_path(name: &str, rest: &str) -> String {
    format!("/v1/templates/{}{rest}", encode(name))
}

fn body(v: &Value) -> Option<(bytes::Bytes, &'static str)> {
    Some((v.to_string().into(), "application/json"))
}

/// `Some` fields only, as JSON.
fn fields(pairs: &[(&str, Option<Value>)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert((*k).to_owned(), v.clone());
        }
    }
    Value::Object(m)
}

impl Client {
    pub async fn template_list(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/templates", None).await
    }

    pub async fn template_info(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &template_path(name, ""), None).await
    }

    pub async fn template_create(
        &self,
        name: &str,
        domain: &str,
        pool: Option<&str>,
        description: Option<&str>,
    ) -> Result<Value, ClientError> {
        let b = fields(&[
            ("name", Some(json!(name))),
            ("domain", Some(json!(domain))),
            ("pool", pool.map(|p| json!(p))),
            ("description", description.map(|d| json!(d))),
        ]);
        self.json(Method::POST, "/v1/templates", body(&b)).await
    }

    pub async fn template_update(
        &self,
        name: &str,
        domain: Option<&str>,
        pool: Option<&str>,
        description: Option<&str>,
    ) -> Result<Value, ClientError> {
        let b = fields(&[
            ("domain", domain.map(|d| json!(d))),
            ("pool", pool.map(|p| json!(p))),
            ("description", description.map(|d| json!(d))),
        ]);
        self.json(Method::PATCH, &template_path(name, ""), body(&b))
            .await
    }

    pub async fn template_delete(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(), ClientError> {
        let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
        self.call(
            Method::DELETE,
            &template_path(name, &q),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    pub async fn template_deploy(
        &self,
        template: &str,
        name: &str,
        version: Option<u32>,
        pool: Option<&str>,
        start: bool,
    ) -> Result<Value, ClientError> {
        let b = fields(&[
            ("name", Some(json!(name))),
            ("version", version.map(|v| json!(v))),
            ("pool", pool.map(|p| json!(p))),
            ("start", Some(json!(start))),
        ]);
        self.json(Method::POST, &template_path(template, "/deploy"), body(&b))
            .await
    }
}
