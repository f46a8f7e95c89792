//! `novactl --host NAME ...` (a remote vendor host's domains) and `novactl hosts ...`.

use serde_json::{json, Value};

use novacrond::client::{Action, Client, ListFilter, RemoteDomain};

use crate::cli::{Command, HostsCommand};
use crate::exit::CliError;
use crate::output;
use crate::progress::Spinner;

/// A domain command aimed at remote host `host`. Commands remote hosts don't take are refused
/// before anything is sent.
pub async fn run(
    client: &Client,
    json_out: bool,
    host: &str,
    command: Command,
) -> Result<(), CliError> {
    let act = |name: String, action: Action, body: Option<Value>| async move {
        let action_name = action.as_str();
        let spinner = Spinner::start(!json_out, format!("{action_name} {name} on {host}"));
        let result = client.remote_action(host, &name, action, body).await;
        let took = spinner.finish();
        let domain = result?;
        if json_out {
            output::json(&domain)
        } else {
            output::line(&format!(
                "{action_name}: {name} on {host} is {}{took}",
                domain.summary.state
            ))
        }
    };
    match command {
        Command::List {
            state,
            name,
            all,
            tag: None,
        } => {
            // State and name are filtered by the daemon, as for local domains.
            let filter = ListFilter {
                state: state.map(Into::into),
                name,
                tag: None,
            };
            let inventory = client.remote_list(host, &filter).await?;
            let mut domains = inventory.domains.clone();
            if filter.state.is_none() && !all {
                domains.retain(|d| d.state.is_live());
            }
            if json_out {
                return output::json(&json!({
                    "domains": domains,
                    "fetched_at_unix": inventory.fetched_at_unix,
                    "stale": inventory.stale,
                }));
            }
            let rows: Vec<Vec<String>> = domains
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.state.to_string(),
                        d.uuid.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let mut text = output::table(&["NAME", "STATE", "UUID"], &rows);
            if let Some(stale) = &inventory.stale {
                text.push_str(&format!(
                    "\n(stale: {host} cannot be reached; this is its inventory from {:.0}s ago: {})",
                    stale.age_secs, stale.reason
                ));
            }
            output::line(&text)
        }
        Command::Info { name } => {
            let domain = client.remote_domain(host, &name).await?;
            if json_out {
                output::json(&domain)
            } else {
                output::line(&remote_info(host, &domain))
            }
        }
        Command::Start { name, .. } => act(name, Action::Start, None).await,
        Command::Shutdown { name, timeout, force, .. } => {
            if force {
                return Err(CliError::Input(
                    "--force is not available for remote hosts; use destroy".into(),
                ));
            }
            act(name, Action::Shutdown, timeout.map(|t| json!({ "timeout_secs": t }))).await
        }
        Command::Destroy { name, .. } => act(name, Action::Destroy, None).await,
        Command::Suspend { name, .. } => act(name, Action::Suspend, None).await,
        Command::Resume { name, .. } => act(name, Action::Resume, None).await,
        Command::Reboot { name, .. } => act(name, Action::Reboot, None).await,
        other => Err(CliError::Input(format!(
            "{} is not available with --host (remote hosts take list, info, start, shutdown, destroy, suspend, resume, reboot)",
            command_name(&other)
        ))),
    }
}

fn command_name(c: &Command) -> String {
    format!("{c:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn remote_info(host: &str, d: &RemoteDomain) -> String {
    let get = |k: &str| {
        d.config
            .get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into())
    };
    output::fields(&[
        ("Name", d.summary.name.clone()),
        ("Host", host.to_owned()),
        ("UUID", d.summary.uuid.clone().unwrap_or_else(|| "-".into())),
        ("State", d.summary.state.to_string()),
        ("vCPUs", get("vcpus")),
        ("Memory", get("memory")),
    ])
}

/// `novactl hosts [list|show|discover|register|remove]`.
pub async fn hosts(
    client: &Client,
    json_out: bool,
    command: Option<HostsCommand>,
) -> Result<(), CliError> {
    match command.unwrap_or(HostsCommand::List) {
        HostsCommand::List => {
            let list = client.remote_hosts().await?;
            if json_out {
                return output::json(&json!({ "hosts": list.hosts, "problems": list.problems }));
            }
            let rows: Vec<Vec<String>> = list
                .hosts
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.driver.clone(),
                        h.url.clone(),
                        h.breaker.clone(),
                        h.last_inventory_age_secs
                            .map(|a| format!("{a:.0}s"))
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let mut text = output::table(
                &["NAME", "DRIVER", "URL", "BREAKER", "INVENTORY AGE"],
                &rows,
            );
            for p in &list.problems {
                text.push_str(&format!("\nleft out: {p}"));
            }
            output::line(&text)
        }
        HostsCommand::Show { name } => {
            let h = client.remote_host(&name).await?;
            if json_out {
                return output::json(&h);
            }
            output::line(&output::fields(&[
                ("Name", h.name.clone()),
                ("Driver", h.driver.clone()),
                ("URL", h.url.clone()),
                ("User", h.user.clone()),
                ("Breaker", h.breaker.clone()),
                ("Read-only", if h.read_only { "yes" } else { "no" }.into()),
                ("Registered by", h.origin.clone()),
                (
                    "Last error",
                    h.last_error.clone().unwrap_or_else(|| "-".into()),
                ),
            ]))
        }
        HostsCommand::Discover {
            addresses,
            insecure,
            timeout,
        } => {
            let mut request = json!({ "addresses": addresses, "tls_verify": !insecure });
            if let Some(t) = timeout {
                request["timeout_secs"] = json!(t);
            }
            let found = client.discover_hosts(&request).await?;
            if json_out {
                return output::json(&found);
            }
            let mut rows = Vec::new();
            for entry in found.as_array().into_iter().flatten() {
                let address = entry["address"].as_str().unwrap_or_default().to_owned();
                let hits = entry["found"].as_array().cloned().unwrap_or_default();
                if hits.is_empty() {
                    rows.push(vec![
                        address.clone(),
                        "-".into(),
                        "-".into(),
                        "nothing answered".into(),
                    ]);
                }
                for hit in hits {
                    rows.push(vec![
                        address.clone(),
                        hit["driver"].as_str().unwrap_or_default().to_owned(),
                        hit["url"].as_str().unwrap_or_default().to_owned(),
                        hit["version"].as_str().unwrap_or("-").to_owned(),
                    ]);
                }
            }
            output::line(&output::table(
                &["ADDRESS", "DRIVER", "URL", "VERSION"],
                &rows,
            ))
        }
        HostsCommand::Register {
            name,
            driver,
            endpoint,
            credentials_file,
            insecure,
            ca_file,
        } => {
            let text = std::fs::read_to_string(&credentials_file).map_err(|e| {
                CliError::Input(format!(
                    "--credentials-file {}: {e}",
                    credentials_file.display()
                ))
            })?;
            let credentials = novacron_remote_drivers::Credentials::parse(&text).map_err(|e| {
                CliError::Input(format!(
                    "--credentials-file {}: {e}",
                    credentials_file.display()
                ))
            })?;
            let credentials = match credentials {
                novacron_remote_drivers::Credentials::Password { user, password } => {
                    json!({ "user": user, "password": password.expose() })
                }
                novacron_remote_drivers::Credentials::Token { id, secret } => {
                    json!({ "token_id": id, "token_secret": secret.expose() })
                }
            };
            let mut request = json!({
                "name": name, "driver": driver, "url": endpoint,
                "credentials": credentials, "tls_verify": !insecure,
            });
            if let Some(ca) = ca_file {
                request["ca_file"] = json!(ca);
            }
            let h = client.register_host(&request).await?;
            if json_out {
                output::json(&h)
            } else {
                output::line(&format!(
                    "registered {} ({} at {})",
                    h.name, h.driver, h.url
                ))
            }
        }
        HostsCommand::Remove { name } => {
            client.unregister_host(&name).await?;
            if json_out {
                output::json(&json!({}))
            } else {
                output::line(&format!("unregistered {name}"))
            }
        }
    }
}
