//! `net-*` commands (virsh's names) for virtual networks.

use std::io::Read as _;

use clap::Subcommand;
use novacrond::client::{Client, DefinitionFormat};
use serde_json::Value;

use crate::exit::CliError;
use crate::output;

#[derive(Debug, Subcommand)]
// The variants are virsh's command names (net-define...), so they share the prefix.
#[allow(clippy::enum_variant_names)]
pub enum NetCommand {
    /// Define (or redefine) a network from libvirt network XML or JSON ("-" reads stdin)
    NetDefine {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// Undefine a stopped network that no domain uses
    NetUndefine { network: String },
    /// Start a network (bridge, nftables table, dnsmasq)
    NetStart { network: String },
    /// Stop a network, leaving the host as it was before its start
    NetDestroy { network: String },
    /// Start a network with the daemon (or stop doing so with --disable)
    NetAutostart {
        network: String,
        #[arg(long)]
        disable: bool,
    },
    /// List the networks
    NetList,
    /// Show a network's state
    NetInfo { network: String },
    /// Print a network's libvirt XML
    NetDumpxml { network: String },
    /// List a network's DHCP leases
    NetDhcpLeases { network: String },
}

fn read_file(file: &str) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    let res = if file == "-" {
        std::io::stdin()
            .take(16 << 20)
            .read_to_end(&mut buf)
            .map(drop)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(16 << 20).read_to_end(&mut buf).map(drop))
    };
    res.map_err(|source| CliError::Io {
        what: format!("reading {file}"),
        source,
    })?;
    Ok(buf)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn info_line(info: &Value) -> String {
    format!(
        "network {}: {}, {} on {}{}",
        s(&info["name"]),
        if info["active"] == Value::Bool(true) {
            "active"
        } else {
            "inactive"
        },
        s(&info["forward"]),
        s(&info["bridge"]),
        info["address"]
            .as_str()
            .map(|a| format!(", gateway {a}"))
            .unwrap_or_default()
    )
}

pub async fn run(client: &Client, json: bool, cmd: NetCommand) -> Result<(), CliError> {
    match cmd {
        NetCommand::NetDefine { file } => {
            let body = read_file(&file)?;
            let format = DefinitionFormat::sniff(&body);
            let info = client.net_define(body, format).await?;
            if json {
                return output::json(&info);
            }
            output::line(&format!("network {} defined", s(&info["name"])))
        }
        NetCommand::NetUndefine { network } => {
            client.net_undefine(&network).await?;
            output::line(&format!("network {network} undefined"))
        }
        NetCommand::NetStart { network } => {
            let info = client.net_action(&network, true).await?;
            if json {
                return output::json(&info);
            }
            output::line(&format!("network {network} started ({})", info_line(&info)))
        }
        NetCommand::NetDestroy { network } => {
            let info = client.net_action(&network, false).await?;
            if json {
                return output::json(&info);
            }
            output::line(&format!("network {network} stopped"))
        }
        NetCommand::NetAutostart { network, disable } => {
            let info = client.net_autostart(&network, !disable).await?;
            if json {
                return output::json(&info);
            }
            output::line(&format!(
                "network {network} {}",
                if disable {
                    "no longer starts with the daemon"
                } else {
                    "starts with the daemon"
                }
            ))
        }
        NetCommand::NetList => {
            let v = client.networks().await?;
            if json {
                return output::json(&v);
            }
            let rows: Vec<Vec<String>> = v["networks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    vec![
                        s(&n["name"]),
                        if n["active"] == Value::Bool(true) {
                            "active"
                        } else {
                            "inactive"
                        }
                        .into(),
                        if n["autostart"] == Value::Bool(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        s(&n["forward"]),
                        s(&n["bridge"]),
                        s(&n["address"]),
                    ]
                })
                .collect();
            output::line(
                output::table(
                    &["Name", "State", "Autostart", "Forward", "Bridge", "Address"],
                    &rows,
                )
                .trim_end(),
            )?;
            for f in v["foreign_firewalls"].as_array().into_iter().flatten() {
                eprintln!(
                    "warning: {} drops forwarded traffic; fix: {}",
                    s(&f["chain"]),
                    s(&f["fix"])
                );
            }
            Ok(())
        }
        NetCommand::NetInfo { network } => {
            let v = client.net_info(&network).await?;
            if json {
                return output::json(&v["info"]);
            }
            output::line(&info_line(&v["info"]))
        }
        NetCommand::NetDumpxml { network } => {
            let xml = client.net_xml(&network).await?;
            output::line(xml.trim_end())
        }
        NetCommand::NetDhcpLeases { network } => {
            let v = client.net_leases(&network).await?;
            if json {
                return output::json(&v);
            }
            let rows: Vec<Vec<String>> = v["leases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    vec![
                        s(&l["mac"]),
                        s(&l["ip"]),
                        s(&l["hostname"]),
                        s(&l["expiry"]),
                    ]
                })
                .collect();
            output::line(output::table(&["MAC", "IP", "Hostname", "Expiry"], &rows).trim_end())
        }
    }
}
