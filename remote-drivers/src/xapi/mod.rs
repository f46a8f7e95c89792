//! PLACEHOLDER: the xapi adapter (being written).

use std::time::Duration;

use async_trait::async_trait;
use novacron_domain::{Capabilities, DomainInfo, DomainSummary, Driver, Error, ValidatedDomain};

use crate::config::HostConfig;
use crate::http::TransportError;

pub struct XapiDriver {
    name: String,
}

impl XapiDriver {
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        Ok(Self {
            name: config.name.clone(),
        })
    }
}

/// Whether the xapi API answers at `base`; its version if so. No credentials are sent.
pub async fn probe(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let _ = (client, base, timeout);
    Ok(None)
}

#[async_trait]
impl Driver for XapiDriver {
    fn name(&self) -> &str {
        "xapi"
    }
    async fn capabilities(&self) -> Result<Capabilities, Error> {
        Err(self.unsupported("capabilities"))
    }
    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        let _ = &self.name;
        Err(self.unsupported("list"))
    }
    async fn get(&self, _name: &str) -> Result<DomainInfo, Error> {
        Err(self.unsupported("get"))
    }
    async fn define(&self, _config: ValidatedDomain) -> Result<DomainSummary, Error> {
        Err(self.unsupported("define"))
    }
    async fn undefine(&self, _name: &str) -> Result<(), Error> {
        Err(self.unsupported("undefine"))
    }
    async fn start(&self, _name: &str) -> Result<(), Error> {
        Err(self.unsupported("start"))
    }
    async fn shutdown(&self, _name: &str, _timeout: Duration) -> Result<(), Error> {
        Err(self.unsupported("shutdown"))
    }
    async fn destroy(&self, _name: &str) -> Result<(), Error> {
        Err(self.unsupported("destroy"))
    }
}
