//! The guest agent: `/v1/domains/{name}/agent...`.

use hyper::Method;
use serde_json::{json, Value};

use super::{domain_path, Client, ClientError};

/// Which agent route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCall {
    Info,
    Ping,
    FsFreeze,
    FsThaw,
    Interfaces,
}

impl Client {
    /// One agent route; `timeout_secs` is the call's deadline (the daemon's default if absent).
    pub async fn agent(
        &self,
        name: &str,
        call: AgentCall,
        timeout_secs: Option<u64>,
    ) -> Result<Value, ClientError> {
        let (method, rest) = match call {
            AgentCall::Info => (Method::GET, "/agent"),
            AgentCall::Ping => (Method::POST, "/agent/ping"),
            AgentCall::FsFreeze => (Method::POST, "/agent/fsfreeze"),
            AgentCall::FsThaw => (Method::POST, "/agent/fsthaw"),
            AgentCall::Interfaces => (Method::GET, "/agent/interfaces"),
        };
        let query = timeout_secs
            .map(|s| format!("?timeout_secs={s}"))
            .unwrap_or_default();
        self.json(method, &format!("{}{query}", domain_path(name, rest)), None)
            .await
    }

    /// `POST /v1/domains/{name}/agent/command` (admins only): the agent's `return` value.
    pub async fn agent_command(
        &self,
        name: &str,
        execute: &str,
        arguments: Option<Value>,
        timeout_secs: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut req = json!({ "execute": execute });
        if let Some(args) = arguments {
            req["arguments"] = args;
        }
        let query = timeout_secs
            .map(|s| format!("?timeout_secs={s}"))
            .unwrap_or_default();
        let mut answer: Value = self
            .json(
                Method::POST,
                &format!("{}{query}", domain_path(name, "/agent/command")),
                Some((req.to_string().into(), "application/json")),
            )
            .await?;
        match answer.get_mut("return") {
            Some(ret) => Ok(ret.take()),
            None => Err(ClientError::Protocol(
                "agent answer without a \"return\" member".into(),
            )),
        }
    }
}
