//! Guards the typed QMP layer against drift from QEMU's schema: every command the typed layer
//! can emit, with every argument set and every enum value used, is checked member by member
//! against `query-qmp-schema` from the real QEMU; so are the typed event names.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use novacron_qmp::commands::*;
use novacron_qmp::qapi::{MigrationCapability, MultifdCompression, QmpCapability};
use novacron_qmp::{Client, TYPED_EVENTS};
use novacron_tests::QemuBuilder;
use serde_json::{json, Map, Value};

/// Commands whose arguments may carry members the schema does not list (`device_add` takes any
/// property of the device being added).
const OPEN_ARGUMENTS: &[&str] = &["device_add"];

struct Schema(HashMap<String, Value>);

impl Schema {
    fn entry(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Checks `value` against QAPI type `ty`; pushes what does not fit onto `errors`.
    fn check(&self, value: &Value, ty: &str, path: &str, open: bool, errors: &mut Vec<String>) {
        if let Some(elem) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, elem, &format!("{path}[{i}]"), false, errors);
                    }
                }
                None => errors.push(format!("{path}: {value} is not an array")),
            }
            return;
        }
        let ok = match ty {
            "str" => value.is_string(),
            "int" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "bool" => value.is_boolean(),
            "null" => value.is_null(),
            "any" => true,
            _ => return self.check_named(value, ty, path, open, errors),
        };
        if !ok {
            errors.push(format!("{path}: {value} is not of type {ty}"));
        }
    }

    fn check_named(
        &self,
        value: &Value,
        ty: &str,
        path: &str,
        open: bool,
        errors: &mut Vec<String>,
    ) {
        let Some(entry) = self.entry(ty) else {
            errors.push(format!("{path}: type {ty} missing from the schema"));
            return;
        };
        match entry["meta-type"].as_str() {
            Some("enum") => {
                let values: BTreeSet<&str> = entry["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match value.as_str() {
                    Some(v) if values.contains(v) => {}
                    _ => errors.push(format!("{path}: {value} is not one of {values:?}")),
                }
            }
            Some("object") => self.check_object(value, entry, path, open, errors),
            Some("alternate") => {
                let fits = entry["members"].as_array().into_iter().flatten().any(|m| {
                    let mut probe = Vec::new();
                    self.check(
                        value,
                        m["type"].as_str().unwrap_or("?"),
                        path,
                        false,
                        &mut probe,
                    );
                    probe.is_empty()
                });
                if !fits {
                    errors.push(format!("{path}: {value} fits no branch of alternate {ty}"));
                }
            }
            Some("builtin") => {
                let json_type = entry["json-type"].as_str().unwrap_or("?");
                let ok = match json_type {
                    "string" => value.is_string(),
                    "int" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    _ => true,
                };
                if !ok {
                    errors.push(format!("{path}: {value} is not {json_type}"));
                }
            }
            other => errors.push(format!("{path}: unexpected meta-type {other:?} for {ty}")),
        }
    }

    fn check_object(
        &self,
        value: &Value,
        entry: &Value,
        path: &str,
        open: bool,
        errors: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            errors.push(format!("{path}: {value} is not an object"));
            return;
        };
        let mut members: Vec<&Value> = entry["members"].as_array().into_iter().flatten().collect();
        // Flat unions: the variant selected by the tag adds its members.
        if let (Some(tag), Some(variants)) = (entry["tag"].as_str(), entry["variants"].as_array()) {
            let chosen = object.get(tag).and_then(Value::as_str);
            for variant in variants {
                if variant["case"].as_str() == chosen {
                    if let Some(v) = variant["type"].as_str().and_then(|t| self.entry(t)) {
                        members.extend(v["members"].as_array().into_iter().flatten());
                    }
                }
            }
        }
        for member in &members {
            let name = member["name"].as_str().unwrap_or("?");
            let optional = member.get("default").is_some();
            if !optional && !object.contains_key(name) {
                errors.push(format!("{path}: required member {name} is not sent"));
            }
        }
        for (key, v) in object {
            match members.iter().find(|m| m["name"] == json!(key)) {
                Some(m) => {
                    let ty = m["type"].as_str().unwrap_or("?");
                    self.check(v, ty, &format!("{path}.{key}"), false, errors);
                }
                None if open => {}
                None => errors.push(format!("{path}: member {key} does not exist")),
            }
        }
    }
}

fn sample<C: Command>(cmd: C) -> (&'static str, Value) {
    (C::NAME, serde_json::to_value(&cmd).unwrap_or(Value::Null))
}

/// Maximal instances: every optional argument set, every known enum value used somewhere.
fn samples() -> Vec<(&'static str, Value)> {
    let mut all = vec![
        sample(QmpCapabilities {
            enable: QmpCapability::ALL.to_vec(),
        }),
        sample(QueryStatus),
        sample(Cont),
        sample(Stop),
        sample(SystemPowerdown),
        sample(SystemReset),
        sample(Quit),
        sample(HumanMonitorCommand {
            command_line: "info status".into(),
            cpu_index: Some(0),
        }),
        sample(QueryCpusFast),
        sample(QueryIothreads),
        sample(QueryMigrate),
        sample(Migrate {
            uri: "tcp:127.0.0.1:4444".into(),
            resume: Some(false),
        }),
        sample(MigrateIncoming {
            uri: "tcp:127.0.0.1:4444".into(),
        }),
        sample(MigrateSetCapabilities {
            capabilities: MigrationCapability::ALL
                .iter()
                .map(|c| MigrationCapabilityStatus {
                    capability: c.clone(),
                    state: true,
                })
                .collect(),
        }),
        sample(MigrateCancel),
        sample(MigrateStartPostcopy),
        sample(QueryBlock),
        sample(QueryBlockstats),
        sample(DeviceAdd {
            driver: "virtio-net-pci".into(),
            id: Some("net1".into()),
            bus: Some("pcie.0".into()),
            properties: Map::from_iter([("mac".to_owned(), json!("52:54:00:00:00:01"))]),
        }),
        sample(DeviceDel { id: "net1".into() }),
        sample(GetFd {
            fdname: "mig".into(),
        }),
        sample(AddFd {
            fdset_id: Some(1),
            opaque: Some("x".into()),
        }),
    ];
    for compression in MultifdCompression::ALL {
        all.push(sample(MigrateSetParameters {
            max_bandwidth: Some(1 << 30),
            downtime_limit: Some(300),
            multifd_channels: Some(4),
            multifd_compression: Some(compression.clone()),
            xbzrle_cache_size: Some(64 << 20),
            max_postcopy_bandwidth: Some(1 << 30),
            cpu_throttle_initial: Some(20),
            cpu_throttle_increment: Some(10),
            max_cpu_throttle: Some(99),
            compress_level: Some(1),
            compress_threads: Some(2),
            decompress_threads: Some(2),
            tls_creds: Some("tls0".into()),
            tls_hostname: Some("peer".into()),
        }));
    }
    all
}

/// A fresh QEMU, a QMP connection to it, and its schema by name.
async fn live_schema() -> Result<(novacron_tests::QemuProcess, Client, Schema)> {
    let qemu = tokio::task::spawn_blocking(|| QemuBuilder::osless().paused().spawn()).await??;
    let qmp = Client::connect(qemu.qmp_socket()).await?;
    let raw = qmp.execute_raw("query-qmp-schema", None).await?;
    let schema = Schema(
        raw.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e.clone())))
            .collect(),
    );
    Ok((qemu, qmp, schema))
}

#[tokio::test]
async fn typed_commands_and_events_match_the_live_schema() -> Result<()> {
    let (_qemu, qmp, schema) = live_schema().await?;
    eprintln!(
        "checking against QEMU {} ({} schema entries)",
        qmp.greeting().version.qemu,
        schema.0.len()
    );

    let samples = samples();
    let covered: BTreeSet<&str> = samples.iter().map(|(n, _)| *n).collect();
    let typed: BTreeSet<&str> = TYPED_COMMANDS.iter().copied().collect();
    assert_eq!(covered, typed, "every typed command needs a sample here");

    let mut errors = Vec::new();
    for (name, args) in &samples {
        let Some(entry) = schema.entry(name).filter(|e| e["meta-type"] == "command") else {
            errors.push(format!("command {name} does not exist"));
            continue;
        };
        let arg_type = entry["arg-type"].as_str().unwrap_or("?");
        let args = if args.is_null() {
            json!({})
        } else {
            args.clone()
        };
        let open = OPEN_ARGUMENTS.contains(name);
        schema.check(&args, arg_type, name, open, &mut errors);
    }
    for event in TYPED_EVENTS {
        if !schema
            .entry(event)
            .is_some_and(|e| e["meta-type"] == "event")
        {
            errors.push(format!("event {event} does not exist"));
        }
    }
    assert!(errors.is_empty(), "schema drift:\n{}", errors.join("\n"));
    Ok(())
}

/// The checker itself must catch drift, or the test above proves nothing.
#[tokio::test]
async fn the_checker_catches_wrong_names_types_and_enum_values() -> Result<()> {
    let (_qemu, _qmp, schema) = live_schema().await?;
    let arg_type = |cmd: &str| {
        schema
            .entry(cmd)
            .and_then(|e| e["arg-type"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let bad = [
        ("migrate-set-parameters", json!({"max_bandwidth": 1})),
        ("migrate-set-parameters", json!({"downtime-limit": "300"})),
        (
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "warp-drive", "state": true}]}),
        ),
        ("migrate", json!({})),
        ("getfd", json!({"fdname": "x", "extra": 1})),
    ];
    for (cmd, args) in bad {
        let mut errors = Vec::new();
        schema.check(&args, &arg_type(cmd), cmd, false, &mut errors);
        assert!(!errors.is_empty(), "{cmd} {args} passed the checker");
    }
    Ok(())
}
