//! `snapshot-create-as`, `snapshot-list`, `snapshot-info`, `snapshot-dumpxml`,
//! `snapshot-delete`, `snapshot-revert`: as virsh names them.

use novacrond::client::Client;
use serde_json::{json, Value};

use crate::exit::CliError;
use crate::output;

#[derive(Debug, Clone)]
pub enum Snap {
    CreateAs {
        name: String,
        snapshot: String,
        description: Option<String>,
        disk_only: bool,
        quiesce: bool,
        /// `paused` or `live`: a snapshot with the guest's RAM.
        memory: Option<&'static str>,
    },
    List {
        name: String,
        tree: bool,
    },
    Info {
        name: String,
        snapshot: String,
    },
    Dumpxml {
        name: String,
        snapshot: String,
    },
    Delete {
        name: String,
        snapshot: String,
    },
    Revert {
        name: String,
        snapshot: String,
    },
    Schedule {
        name: String,
        every: Option<String>,
        keep: Option<u32>,
        disable: bool,
    },
}

fn info_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let disks = v["disks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(t, f)| format!("{t}={}", f.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    output::fields(&[
        ("Name", s("name")),
        ("Domain state", s("state")),
        ("Parent", s("parent")),
        (
            "Current",
            if v["current"] == true { "yes" } else { "no" }.into(),
        ),
        (
            "Children",
            v["children"].as_array().map_or(0, Vec::len).to_string(),
        ),
        ("Created", v["created"].to_string()),
        (
            "Quiesced",
            if v["quiesced"] == true { "yes" } else { "no" }.into(),
        ),
        ("Disks", disks),
    ])
}

pub async fn run(client: &Client, json: bool, cmd: Snap) -> Result<(), CliError> {
    match cmd {
        Snap::CreateAs {
            name,
            snapshot,
            description,
            disk_only,
            quiesce,
            memory,
        } => {
            match (disk_only, memory) {
                (true, Some(_)) => {
                    return Err(CliError::Input(
                        "--disk-only and --memspec/--memory exclude each other".into(),
                    ))
                }
                (false, None) => {
                    return Err(CliError::Input(
                        "say what to save: --disk-only, or --memspec snapshot=external \
                         (--memory) for the guest's RAM too"
                            .into(),
                    ))
                }
                _ => {}
            }
            let mut req = json!({ "name": snapshot });
            if let Some(m) = memory {
                req["memory"] = json!(m);
            }
            if let Some(d) = description {
                req["description"] = json!(d);
            }
            if quiesce {
                req["quiesce"] = json!("required");
            }
            let v = client.snapshot_create(&name, &req).await?;
            if json {
                return output::json(&v);
            }
            output::line(&format!(
                "Domain snapshot {} created",
                v["name"].as_str().unwrap_or_default()
            ))
        }
        Snap::List { name, tree } => {
            let v = client.snapshot_list(&name).await?;
            if json {
                return output::json(&v);
            }
            if tree {
                return output::line(v["tree"].as_str().unwrap_or_default().trim_end());
            }
            let rows: Vec<Vec<String>> = v["snapshots"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            vec![
                                s["name"].as_str().unwrap_or_default().to_owned(),
                                s["created"].to_string(),
                                s["state"].as_str().unwrap_or_default().to_owned(),
                                s["parent"].as_str().unwrap_or("-").to_owned(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            output::line(
                output::table(&["Name", "Creation Time", "State", "Parent"], &rows).trim_end(),
            )
        }
        Snap::Info { name, snapshot } => {
            let v = client.snapshot_get(&name, &snapshot).await?;
            if json {
                return output::json(&v);
            }
            output::line(info_text(&v).trim_end())
        }
        Snap::Dumpxml { name, snapshot } => {
            let x = client.snapshot_xml(&name, &snapshot).await?;
            output::line(x.trim_end())
        }
        Snap::Delete { name, snapshot } => {
            client.snapshot_delete(&name, &snapshot).await?;
            output::line(&format!("Domain snapshot {snapshot} deleted"))
        }
        Snap::Schedule {
            name,
            every,
            keep,
            disable,
        } => {
            let set = every.map(|e| json!({ "every": e, "keep": keep.unwrap_or(1) }));
            let v = client
                .snapshot_schedule(&name, set.as_ref(), disable)
                .await?;
            if json || !v.is_null() {
                return output::json(&v);
            }
            output::line(&format!("Snapshot schedule of {name} removed"))
        }
        Snap::Revert { name, snapshot } => {
            client.snapshot_revert(&name, &snapshot).await?;
            output::line(&format!("Domain {name} reverted to snapshot {snapshot}"))
        }
    }
}

/// virsh's `--memspec [file=...,]snapshot=external|no` / `--memory` and `--live` as the
/// request's `memory` mode. The daemon names the state file: a `file=` is refused.
pub fn memory_mode(
    memspec: Option<&str>,
    memory: bool,
    live: bool,
) -> Result<Option<&'static str>, CliError> {
    let mut wanted = memory;
    if let Some(spec) = memspec {
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("snapshot", "external")) => wanted = true,
                Some(("snapshot", "no")) => wanted = false,
                Some(("file", _)) => {
                    return Err(CliError::Input(
                        "--memspec file=...: the daemon keeps the state file in the domain's \
                         snapshot directory; give snapshot=external only"
                            .into(),
                    ))
                }
                _ => {
                    return Err(CliError::Input(format!(
                        "--memspec {spec:?}: only snapshot=external (or no) is supported"
                    )))
                }
            }
        }
    }
    match (wanted, live) {
        (true, true) => Ok(Some("live")),
        (true, false) => Ok(Some("paused")),
        (false, true) => Err(CliError::Input(
            "--live needs --memspec snapshot=external (or --memory)".into(),
        )),
        (false, false) => Ok(None),
    }
}
