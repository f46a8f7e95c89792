//! The guest agent commands, with virsh's names: `guestinfo`, `domfsfreeze`, `domfsthaw`,
//! `domifaddr --source agent`, `qemu-agent-command`; and `guest-agent-ping`.

use clap::Args;
use novacrond::client::{AgentCall, Client};
use serde_json::Value;

use crate::exit::CliError;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Seconds to wait for the agent [default: 10; at most 300]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

pub async fn call(
    client: &Client,
    json: bool,
    name: &str,
    call: AgentCall,
    args: &AgentArgs,
) -> Result<(), CliError> {
    let answer = client.agent(name, call, args.timeout).await?;
    if json {
        return output::json(&answer);
    }
    let text = match call {
        AgentCall::Ping => format!(
            "Guest agent of {name} answered in {:.1} ms",
            answer["round_trip_ms"].as_f64().unwrap_or_default()
        ),
        AgentCall::FsFreeze => format!(
            "Froze {} filesystem(s)",
            answer["filesystems"].as_u64().unwrap_or_default()
        ),
        AgentCall::FsThaw => format!(
            "Thawed {} filesystem(s)",
            answer["filesystems"].as_u64().unwrap_or_default()
        ),
        AgentCall::Interfaces => interfaces(&answer),
        AgentCall::Info => info(&answer),
    };
    output::line(&text)
}

fn info(v: &Value) -> String {
    let yes = |k: &str| {
        if v[k].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let mut out = format!(
        "Agent channel: {}\nAgent connected: {}",
        yes("channel"),
        yes("connected")
    );
    if let Some(version) = v["info"]["version"].as_str() {
        out.push_str(&format!("\nAgent version: {version}"));
    }
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("\nAgent error: {e}"));
    }
    out
}

fn interfaces(v: &Value) -> String {
    let mut rows = Vec::new();
    for i in v["interfaces"].as_array().into_iter().flatten() {
        let name = i["name"].as_str().unwrap_or("").to_owned();
        let mac = i["hardware_address"].as_str().unwrap_or("-").to_owned();
        let addrs: Vec<&Value> = i["addresses"].as_array().into_iter().flatten().collect();
        if addrs.is_empty() {
            rows.push(vec![name.clone(), mac.clone(), "N/A".into(), "N/A".into()]);
        }
        for a in addrs {
            rows.push(vec![
                name.clone(),
                mac.clone(),
                a["family"].as_str().unwrap_or("").to_owned(),
                format!(
                    "{}/{}",
                    a["address"].as_str().unwrap_or(""),
                    a["prefix"].as_u64().unwrap_or_default()
                ),
            ]);
        }
    }
    output::table(&["NAME", "MAC ADDRESS", "PROTOCOL", "ADDRESS"], &rows)
}

/// `qemu-agent-command NAME '{"execute": ..., "arguments": ...}'`, as virsh takes it.
pub async fn command(
    client: &Client,
    json: bool,
    name: &str,
    text: &str,
    args: &AgentArgs,
) -> Result<(), CliError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| CliError::Input(format!("the command is not JSON: {e}")))?;
    let Some(execute) = v.get("execute").and_then(Value::as_str) else {
        return Err(CliError::Input(
            "the command needs an \"execute\" member, e.g. '{\"execute\":\"guest-info\"}'".into(),
        ));
    };
    let ret = client
        .agent_command(name, execute, v.get("arguments").cloned(), args.timeout)
        .await?;
    if json {
        output::json(&serde_json::json!({ "return": ret }))
    } else {
        let pretty = serde_json::to_string_pretty(&serde_json::json!({ "return": ret }))
            .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
        output::line(&pretty)
    }
}
