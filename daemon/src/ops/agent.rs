//! The guest agent's operations (qemu-ga). None takes the domain's job slot (the service
//! serialises agent calls on the agent's own lock); each has a deadline, the caller's
//! `timeout_secs` (absent or 0: the default, at most `MAX_TIMEOUT`).

use std::borrow::Cow;
use std::time::Duration;

use novacron_domain::Error;
use serde::Serialize;
use serde_json::Value;

use super::{table, OpInfo, Operation};
use crate::service::agent::{
    timeout_from_secs, AgentInfo, AgentInterface, AgentPing, AgentState, FsFreezeResult,
};
use crate::service::Service;

/// What the agent call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    Info,
    Ping,
    FsFreeze,
    FsThaw,
    Interfaces,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub domain: String,
    pub action: AgentAction,
    pub timeout_secs: Option<u64>,
}

/// The answer of an agent operation.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AgentAnswer {
    /// `GET .../agent`: the state, with the agent's info when it answered.
    Info {
        #[serde(flatten)]
        state: AgentState,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<AgentInfo>,
        /// Why there is no info (not connected, timed out...).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Ping(AgentPing),
    Freeze(FsFreezeResult),
    Interfaces {
        interfaces: Vec<AgentInterface>,
    },
}

impl Operation for Agent {
    type Response = AgentAnswer;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        match self.action {
            AgentAction::Info => &table::AGENT_INFO,
            AgentAction::Ping => &table::AGENT_PING,
            AgentAction::FsFreeze => &table::AGENT_FSFREEZE,
            AgentAction::FsThaw => &table::AGENT_FSTHAW,
            AgentAction::Interfaces => &table::AGENT_INTERFACES,
        }
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        timeout_from_secs(self.timeout_secs).map(drop)
    }

    async fn local(self, svc: Service) -> Result<AgentAnswer, Error> {
        let t = timeout_from_secs(self.timeout_secs)?;
        let name = self.domain.as_str();
        Ok(match self.action {
            AgentAction::Info => info(&svc, name, t).await?,
            AgentAction::Ping => AgentAnswer::Ping(svc.agent_ping(name, t).await?),
            AgentAction::FsFreeze => AgentAnswer::Freeze(FsFreezeResult {
                filesystems: svc.agent_fsfreeze(name, t).await?,
            }),
            AgentAction::FsThaw => AgentAnswer::Freeze(FsFreezeResult {
                filesystems: svc.agent_fsthaw(name, t).await?,
            }),
            AgentAction::Interfaces => AgentAnswer::Interfaces {
                interfaces: svc.agent_interfaces(name, t).await?,
            },
        })
    }
}

/// The state always (a query must answer even when the agent does not); the info when the
/// agent gave it in time.
async fn info(svc: &Service, name: &str, t: Duration) -> Result<AgentAnswer, Error> {
    let state = svc.agent_state(name)?;
    if !state.connected {
        return Ok(AgentAnswer::Info {
            state,
            info: None,
            error: None,
        });
    }
    Ok(match svc.agent_info(name, t).await {
        Ok(info) => AgentAnswer::Info {
            state,
            info: Some(info),
            error: None,
        },
        Err(e) => AgentAnswer::Info {
            state,
            info: None,
            error: Some(e.to_string()),
        },
    })
}

/// Any agent command, for administrators (virsh `qemu-agent-command`); audited with the
/// command's name.
#[derive(Debug, Clone)]
pub struct AgentCommand {
    pub domain: String,
    pub execute: String,
    pub arguments: Option<Value>,
    pub timeout_secs: Option<u64>,
}

impl Operation for AgentCommand {
    type Response = Value;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::AGENT_COMMAND
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Owned(format!("qemu-agent-command:{}", self.execute))
    }

    fn check(&self) -> Result<(), Error> {
        let ok = !self.execute.is_empty()
            && self.execute.len() <= 64
            && self
                .execute
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::Invalid {
                message: format!("execute: {:?} is not an agent command name", self.execute),
                details: vec![novacron_domain::FieldError::new(
                    "execute",
                    "1-64 ASCII letters, digits, '-', '_'",
                )],
            });
        }
        timeout_from_secs(self.timeout_secs).map(drop)
    }

    async fn local(self, svc: Service) -> Result<Value, Error> {
        let t = timeout_from_secs(self.timeout_secs)?;
        svc.agent_command(&self.domain, &self.execute, self.arguments.as_ref(), t)
            .await
    }
}
