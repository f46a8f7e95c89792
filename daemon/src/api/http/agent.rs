//! The guest agent routes under `/v1/domains/{name}/agent`: parse, run one operation
//! (`crate::ops::agent`), render. `?timeout_secs=N` sets a call's deadline.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::request::{query, read_body};
use super::response::{json_response, Response};
use crate::ops::agent::{Agent, AgentAction, AgentCommand};
use crate::ops::{table, Executor, OpInfo, Target};
use crate::service::audit::Actor;

/// The agent endpoints (see `routes::ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEndpoint {
    Action(AgentAction),
    Command,
}

impl AgentEndpoint {
    pub fn info(self) -> &'static OpInfo {
        match self {
            AgentEndpoint::Action(AgentAction::Info) => &table::AGENT_INFO,
            AgentEndpoint::Action(AgentAction::Ping) => &table::AGENT_PING,
            AgentEndpoint::Action(AgentAction::FsFreeze) => &table::AGENT_FSFREEZE,
            AgentEndpoint::Action(AgentAction::FsThaw) => &table::AGENT_FSTHAW,
            AgentEndpoint::Action(AgentAction::Interfaces) => &table::AGENT_INTERFACES,
            AgentEndpoint::Command => &table::AGENT_COMMAND,
        }
    }
}

pub(crate) async fn dispatch(
    endpoint: AgentEndpoint,
    domain: String,
    req: Request<Incoming>,
    exec: &Executor,
    actor: Actor,
) -> Result<Response, ApiError> {
    let timeout_secs = match query(&req)?.get("timeout_secs") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter timeout_secs must be a whole number of seconds, not {v:?}"
            ))
        })?),
    };
    match endpoint {
        AgentEndpoint::Action(action) => {
            let op = Agent {
                domain,
                action,
                timeout_secs,
            };
            Ok(json_response(
                StatusCode::OK,
                &exec.run(actor, Target::Local, op).await?,
            ))
        }
        AgentEndpoint::Command => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                execute: String,
                arguments: Option<Value>,
            }
            let body: Body = serde_json::from_slice(&read_body(req).await?)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let op = AgentCommand {
                domain,
                execute: body.execute,
                arguments: body.arguments,
                timeout_secs,
            };
            let ret = exec.run(actor, Target::Local, op).await?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "return": ret }),
            ))
        }
    }
}
