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
        } => {
            if !disk_only {
                return Err(CliError::Input(
                    "only disk-only snapshots exist so far: add --disk-only".into(),
                ));
            }
            let mut req = json!({ "name": snapshot });
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
