//! domiftune: `/v1/domains/{name}/interfaces/{mac}/bandwidth` (answers as JSON values).

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::{domain_path, encode, Client, ClientError};

impl Client {
    /// `POST /v1/domains/{name}/interfaces/{interface}/bandwidth` with `{"inbound"?,
    /// "outbound"?, "live", "config"}` (no rate: a read). `interface`: MAC or link name.
    pub async fn interface_tune(
        &self,
        name: &str,
        interface: &str,
        request: &Value,
    ) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &domain_path(
                name,
                &format!("/interfaces/{}/bandwidth", encode(interface)),
            ),
            Some((Bytes::from(request.to_string()), "application/json")),
        )
        .await
    }
}
