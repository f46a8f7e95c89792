//! `GET /v1/domains/{name}/addresses` (domifaddr).

use hyper::Method;

use super::{domain_path, Client, ClientError};
use crate::service::nics::addresses::InterfaceAddresses;

impl Client {
    /// The running guest's addresses per NIC; `source` is `lease` or `agent`,
    /// `timeout_secs` bounds an agent call.
    pub async fn interface_addresses(
        &self,
        name: &str,
        source: &str,
        timeout_secs: Option<u64>,
    ) -> Result<InterfaceAddresses, ClientError> {
        let mut path = format!(
            "{}?source={}",
            domain_path(name, "/addresses"),
            crate::http_client::encode(source)
        );
        if let Some(s) = timeout_secs {
            path.push_str(&format!("&timeout_secs={s}"));
        }
        self.json(Method::GET, &path, None).await
    }
}
