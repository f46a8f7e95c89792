//! A small client for the novacrond HTTP API (`daemon/API.md`), used by `novactl` and usable
//! by any Rust program: one typed async method per endpoint, errors carrying the server's
//! stable code. It holds no behaviour of its own; the daemon decides everything.
//!
//! ```no_run
//! # async fn demo() -> Result<(), novacrond::client::ClientError> {
//! use novacrond::client::{Action, Client, Target};
//! let client = Client::new(Target::Unix(Target::default_socket()));
//! client.action("vm1", Action::Start, true, None).await?;
//! # Ok(()) }
//! ```

mod addresses;
mod agent;
mod console;
mod disks;
mod events;
mod live_resources;
mod migration;
mod networks;
mod nic_tune;
mod pinning;
mod remote;
mod snapshots;
pub mod sse;
mod templates;
mod types;
mod volumes;

// The transport lives below the service (which speaks to peer daemons with it); the client is
// its typed endpoints.
use crate::http_client::{decode, encode, read_bounded};
pub use crate::http_client::{Client, ClientError, Target, Tls, DEFAULT_MAX_BODY};
pub use agent::AgentCall;
pub use console::ConsoleSocket;
pub use events::EventStream;
pub use pinning::{PinTarget, Pinning, ThreadAffinity};
pub use remote::{HostList, RemoteDomain, RemoteHostRow, RemoteInventory};
pub use types::{
    ActionOutcome, DefinitionFormat, DomainCounts, DomainInfo, DomainStatus, ErrorBody, Event,
    HostInfo, Kvm, Operation,
};
pub use volumes::{PoolRow, VolumeRows};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use novacron_domain::DomainState;
use serde_json::{json, Value};

/// A lifecycle action (`POST /v1/domains/{name}/{action}`): the operation layer's own type,
/// not a copy.
pub use crate::ops::lifecycle::Kind as Action;

/// Server-side filters for `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<DomainState>,
    /// A glob over names (`*`, `?`).
    pub name: Option<String>,
    /// Only domains with this tag (local domains).
    pub tag: Option<String>,
}

impl Client {
    /// `GET /v1/domains`, sorted by name.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<DomainStatus>, ClientError> {
        let mut query = Vec::new();
        if let Some(state) = filter.state {
            query.push(format!("state={}", state.as_str()));
        }
        if let Some(name) = &filter.name {
            query.push(format!("name={}", encode(name)));
        }
        if let Some(tag) = &filter.tag {
            query.push(format!("tag={}", encode(tag)));
        }
        let path = if query.is_empty() {
            "/v1/domains".to_owned()
        } else {
            format!("/v1/domains?{}", query.join("&"))
        };
        self.json(Method::GET, &path, None).await
    }

    /// `GET /v1/domains/{name}`: status and definition.
    pub async fn get(&self, name: &str) -> Result<DomainInfo, ClientError> {
        self.json(Method::GET, &domain_path(name, ""), None).await
    }

    /// `GET /v1/domains/{name}/xml`: the definition as libvirt XML.
    pub async fn xml(&self, name: &str) -> Result<String, ClientError> {
        let (_, body) = self
            .call(
                Method::GET,
                &domain_path(name, "/xml"),
                None,
                "application/xml",
            )
            .await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("the domain XML is not UTF-8".into()))
    }

    /// `POST /v1/domains`: defines (or redefines) a persistent domain.
    pub async fn define(
        &self,
        body: impl Into<Bytes>,
        format: DefinitionFormat,
    ) -> Result<DomainStatus, ClientError> {
        let body = Some((body.into(), format.content_type()));
        self.json(Method::POST, "/v1/domains", body).await
    }

    /// `POST /v1/domains?dry_run=true`: checks a definition as a define would and defines
    /// nothing; the answer is the summary (name, uuid, replaces, trust, xml, argv).
    pub async fn validate(
        &self,
        body: impl Into<Bytes>,
        format: DefinitionFormat,
    ) -> Result<Value, ClientError> {
        let body = Some((body.into(), format.content_type()));
        self.json(Method::POST, "/v1/domains?dry_run=true", body)
            .await
    }

    /// `POST /v1/domains?transient=true`: creates and starts a transient domain.
    pub async fn create(
        &self,
        body: impl Into<Bytes>,
        format: DefinitionFormat,
    ) -> Result<DomainStatus, ClientError> {
        let body = Some((body.into(), format.content_type()));
        self.json(Method::POST, "/v1/domains?transient=true", body)
            .await
    }

    /// `DELETE /v1/domains/{name}`.
    pub async fn undefine(&self, name: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &domain_path(name, ""),
            None,
            "application/json",
        )
        .await
        .map(drop)
    }

    /// `POST /v1/domains/{name}/{action}`. With `wait`, the server answers once the operation
    /// finished; without, at once with the running operation. `body` is the optional
    /// `shutdown` options (`{"timeout_secs", "force"}`).
    pub async fn action(
        &self,
        name: &str,
        action: Action,
        wait: bool,
        body: Option<Value>,
    ) -> Result<ActionOutcome, ClientError> {
        let mut path = domain_path(name, &format!("/{}", action.as_str()));
        if !wait {
            path.push_str("?wait=false");
        }
        let body = body.map(|v| (Bytes::from(v.to_string()), "application/json"));
        let (status, bytes) = self
            .call(Method::POST, &path, body, "application/json")
            .await?;
        if status == StatusCode::ACCEPTED {
            decode(&bytes).map(ActionOutcome::Accepted)
        } else {
            decode(&bytes).map(ActionOutcome::Done)
        }
    }

    /// `PUT /v1/domains/{name}/autostart`.
    pub async fn set_autostart(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<DomainStatus, ClientError> {
        let body = json!({ "enabled": enabled }).to_string();
        self.json(
            Method::PUT,
            &domain_path(name, "/autostart"),
            Some((body.into(), "application/json")),
        )
        .await
    }

    /// The serial console of `name` as a websocket: mints a ticket, then opens
    /// `GET /v1/domains/{name}/console?ticket=..&mode=..` (`writer`: take the keyboard).
    pub async fn console(&self, name: &str, writer: bool) -> Result<ConsoleSocket, ClientError> {
        crate::client::console::open(self, name, writer).await
    }

    /// `PUT /v1/domains/{name}/metadata`: `change` is `{"title", "description", "tags"}`
    /// (absent fields are left as they are). Returns the metadata afterwards.
    pub async fn set_metadata(&self, name: &str, change: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::PUT,
            &domain_path(name, "/metadata"),
            Some((change.to_string().into(), "application/json")),
        )
        .await
    }

    /// `GET /v1/domains/{name}/interfaces` (domiflist).
    pub async fn interfaces(&self, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &domain_path(name, "/interfaces"), None)
            .await
    }

    /// `POST /v1/domains/{name}/interfaces` (attach-interface): `request` as the route takes
    /// it (`type`, `source`, `mode`, `model`, `mac`, `mtu`, `live`, `config`).
    pub async fn attach_interface(
        &self,
        name: &str,
        request: &Value,
    ) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &domain_path(name, "/interfaces"),
            Some((request.to_string().into(), "application/json")),
        )
        .await
    }

    /// `DELETE /v1/domains/{name}/interfaces/{mac}` (detach-interface).
    pub async fn detach_interface(
        &self,
        name: &str,
        mac: &str,
        live: bool,
        config: bool,
        wait_secs: Option<u64>,
    ) -> Result<(), ClientError> {
        let mut path = domain_path(
            name,
            &format!("/interfaces/{}?live={live}&config={config}", encode(mac)),
        );
        if let Some(w) = wait_secs {
            path.push_str(&format!("&wait_secs={w}"));
        }
        self.call(Method::DELETE, &path, None, "application/json")
            .await
            .map(drop)
    }

    /// `POST /v1/domains/{name}/interfaces/{mac}/link` (domif-setlink).
    pub async fn set_interface_link(
        &self,
        name: &str,
        mac: &str,
        up: bool,
    ) -> Result<(), ClientError> {
        let body = json!({ "state": if up { "up" } else { "down" } }).to_string();
        self.call(
            Method::POST,
            &domain_path(name, &format!("/interfaces/{}/link", encode(mac))),
            Some((body.into(), "application/json")),
            "application/json",
        )
        .await
        .map(drop)
    }

    /// `POST /v1/domains/{name}/qmp` (admins only): returns QEMU's `return` value.
    pub async fn qmp(
        &self,
        name: &str,
        execute: &str,
        arguments: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut req = json!({ "execute": execute });
        if let Some(args) = arguments {
            req["arguments"] = args;
        }
        let mut answer: Value = self
            .json(
                Method::POST,
                &domain_path(name, "/qmp"),
                Some((req.to_string().into(), "application/json")),
            )
            .await?;
        match answer.get_mut("return") {
            Some(ret) => Ok(ret.take()),
            None => Err(ClientError::Protocol(
                "QMP answer without a \"return\" member".into(),
            )),
        }
    }

    /// `GET /v1/host`.
    pub async fn host(&self) -> Result<HostInfo, ClientError> {
        self.json(Method::GET, "/v1/host", None).await
    }

    /// `GET /v1/operations/{id}`.
    pub async fn operation(&self, id: &str) -> Result<Operation, ClientError> {
        self.json(Method::GET, &format!("/v1/operations/{}", encode(id)), None)
            .await
    }

    /// `GET /v1/events`: the event stream, from the events after sequence number `after`
    /// (those still in the daemon's replay buffer) or from now on.
    pub async fn events(&self, after: Option<u64>) -> Result<EventStream, ClientError> {
        let path = match after {
            Some(seq) => format!("/v1/events?after={seq}"),
            None => "/v1/events".to_owned(),
        };
        let response = self
            .send(Method::GET, &path, None, "text/event-stream")
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = read_bounded(response.into_body(), self.max_body()).await?;
            return Err(ClientError::from_response(status, &body));
        }
        Ok(EventStream::new(response.into_body()))
    }
}

fn domain_path(name: &str, rest: &str) -> String {
    format!("/v1/domains/{}{rest}", encode(name))
}

#[cfg(test)]
mod tests;
