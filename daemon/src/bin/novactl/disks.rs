//! `attach-disk`, `detach-disk`, `domblklist`, `blockresize`, `blkdeviotune`, `change-media`
//! (virsh's names and flags).

use clap::Args;
use novacrond::client::Client;
use serde_json::{json, Value};

use crate::exit::CliError;
use crate::output;

/// virsh's `--live`, `--config`, `--persistent` (none: the running guest if it runs, else
/// the definition).
#[derive(Debug, Clone, Copy, Args)]
pub struct Scope {
    /// Change the running guest
    #[arg(long)]
    pub live: bool,
    /// Change the persistent definition
    #[arg(long)]
    pub config: bool,
    /// Both (the running guest if it runs)
    #[arg(long)]
    pub persistent: bool,
}

impl Scope {
    fn into_json(self, v: &mut Value) {
        v["live"] = json!(self.live);
        v["config"] = json!(self.config);
        v["persistent"] = json!(self.persistent);
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub name: String,
    /// The image (file) to attach
    #[arg(required_unless_present = "file")]
    pub source: Option<String>,
    /// The guest's name for it, e.g. vdb
    #[arg(required_unless_present = "file")]
    pub target: Option<String>,
    /// Image format: raw or qcow2
    #[arg(long, default_value = "raw")]
    pub subdriver: String,
    /// Bus: virtio (hot-pluggable), sata, scsi
    #[arg(long, default_value = "virtio")]
    pub targetbus: String,
    /// disk or cdrom
    #[arg(long = "type", default_value = "disk")]
    pub device: String,
    /// Cache mode (none, writeback, ...)
    #[arg(long)]
    pub cache: Option<String>,
    /// Attach read-only
    #[arg(long)]
    pub mode_readonly: bool,
    /// A file with one <disk> element instead of the arguments above
    #[arg(long, short = 'f', conflicts_with_all = ["source", "target"])]
    pub file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub scope: Scope,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
}

pub async fn attach(c: &Client, json_out: bool, a: AttachArgs) -> Result<(), CliError> {
    let xml = match &a.file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CliError::Input(format!("{}: {e}", f.display())))?,
        None => {
            let mut driver = format!("<driver name='qemu' type='{}'", esc(&a.subdriver));
            if let Some(c) = &a.cache {
                driver.push_str(&format!(" cache='{}'", esc(c)));
            }
            format!(
                "<disk type='file' device='{}'>{driver}/><source file='{}'/>\
                 <target dev='{}' bus='{}'/>{}</disk>",
                esc(&a.device),
                esc(a.source.as_deref().unwrap_or_default()),
                esc(a.target.as_deref().unwrap_or_default()),
                esc(&a.targetbus),
                if a.mode_readonly { "<readonly/>" } else { "" }
            )
        }
    };
    let mut req = json!({ "xml": xml });
    a.scope.into_json(&mut req);
    let entry = c.attach_disk(&a.name, &req).await?;
    if json_out {
        return output::json(&entry);
    }
    output::line(&format!(
        "Disk {} attached ({})",
        entry["target"].as_str().unwrap_or("?"),
        entry["state"].as_str().unwrap_or("?")
    ))
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    pub name: String,
    /// The disk's target, e.g. vdb
    pub target: String,
    /// Seconds to wait for the guest to release it (default 10)
    #[arg(long)]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub scope: Scope,
}

pub async fn detach(c: &Client, json_out: bool, a: DetachArgs) -> Result<(), CliError> {
    let mut q = format!(
        "?live={}&config={}&persistent={}",
        a.scope.live, a.scope.config, a.scope.persistent
    );
    if let Some(t) = a.timeout {
        q.push_str(&format!("&timeout={t}"));
    }
    let entry = c.detach_disk(&a.name, &a.target, &q).await?;
    if json_out {
        return output::json(&entry);
    }
    output::line(&format!("Disk {} detached", a.target))
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub name: String,
    /// The definition's disks, not the running guest's
    #[arg(long)]
    pub inactive: bool,
}

pub async fn list(c: &Client, json_out: bool, a: ListArgs) -> Result<(), CliError> {
    let disks = c.list_disks(&a.name, a.inactive).await?;
    if json_out {
        return output::json(&disks);
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = disks
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| vec![s(d, "target"), s(d, "source"), s(d, "state")])
        .collect();
    output::line(output::table(&["Target", "Source", "State"], &rows).trim_end())
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    pub name: String,
    pub target: String,
    /// The new size: bytes, or with a suffix K, M, G, T (powers of 1024)
    pub size: String,
}

pub(crate) fn parse_size(s: &str) -> Result<u64, CliError> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(CliError::Input(format!("size {s:?}: unknown unit {c}"))),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| CliError::Input(format!("size {s:?}: not a number of bytes")))
}

pub async fn resize(c: &Client, json_out: bool, a: ResizeArgs) -> Result<(), CliError> {
    let size = parse_size(&a.size)?;
    let r = c.resize_disk(&a.name, &a.target, size).await?;
    if json_out {
        return output::json(&r);
    }
    output::line(&format!("Block device '{}' is resized", a.target))
}

#[derive(Debug, Args)]
pub struct IoTuneArgs {
    pub name: String,
    pub target: String,
    #[arg(long)]
    pub total_bytes_sec: Option<u64>,
    #[arg(long)]
    pub read_bytes_sec: Option<u64>,
    #[arg(long)]
    pub write_bytes_sec: Option<u64>,
    #[arg(long)]
    pub total_iops_sec: Option<u64>,
    #[arg(long)]
    pub read_iops_sec: Option<u64>,
    #[arg(long)]
    pub write_iops_sec: Option<u64>,
    #[arg(long)]
    pub total_bytes_sec_max: Option<u64>,
    #[arg(long)]
    pub total_iops_sec_max: Option<u64>,
    #[arg(long)]
    pub group_name: Option<String>,
    #[arg(long)]
    pub read_bytes_sec_max: Option<u64>,
    #[arg(long)]
    pub write_bytes_sec_max: Option<u64>,
    #[arg(long)]
    pub read_iops_sec_max: Option<u64>,
    #[arg(long)]
    pub write_iops_sec_max: Option<u64>,
    #[arg(long)]
    pub size_iops_sec: Option<u64>,
    #[arg(long)]
    pub total_bytes_sec_max_length: Option<u64>,
    #[arg(long)]
    pub read_bytes_sec_max_length: Option<u64>,
    #[arg(long)]
    pub write_bytes_sec_max_length: Option<u64>,
    #[arg(long)]
    pub total_iops_sec_max_length: Option<u64>,
    #[arg(long)]
    pub read_iops_sec_max_length: Option<u64>,
    #[arg(long)]
    pub write_iops_sec_max_length: Option<u64>,
    #[command(flatten)]
    pub scope: Scope,
}

pub async fn iotune(c: &Client, json_out: bool, a: IoTuneArgs) -> Result<(), CliError> {
    let mut tune = serde_json::Map::new();
    for (k, v) in [
        ("total_bytes_sec", a.total_bytes_sec),
        ("read_bytes_sec", a.read_bytes_sec),
        ("write_bytes_sec", a.write_bytes_sec),
        ("total_iops_sec", a.total_iops_sec),
        ("read_iops_sec", a.read_iops_sec),
        ("write_iops_sec", a.write_iops_sec),
        ("total_bytes_sec_max", a.total_bytes_sec_max),
        ("total_iops_sec_max", a.total_iops_sec_max),
        ("read_bytes_sec_max", a.read_bytes_sec_max),
        ("write_bytes_sec_max", a.write_bytes_sec_max),
        ("read_iops_sec_max", a.read_iops_sec_max),
        ("write_iops_sec_max", a.write_iops_sec_max),
        ("size_iops_sec", a.size_iops_sec),
        ("total_bytes_sec_max_length", a.total_bytes_sec_max_length),
        ("read_bytes_sec_max_length", a.read_bytes_sec_max_length),
        ("write_bytes_sec_max_length", a.write_bytes_sec_max_length),
        ("total_iops_sec_max_length", a.total_iops_sec_max_length),
        ("read_iops_sec_max_length", a.read_iops_sec_max_length),
        ("write_iops_sec_max_length", a.write_iops_sec_max_length),
    ] {
        if let Some(v) = v {
            tune.insert(k.into(), json!(v));
        }
    }
    if let Some(g) = &a.group_name {
        tune.insert("group_name".into(), json!(g));
    }
    let r = if tune.is_empty() {
        c.disk_iotune(&a.name, &a.target, None).await?
    } else {
        let mut t = Value::Object(tune);
        a.scope.into_json(&mut t);
        c.disk_iotune(&a.name, &a.target, Some(&t)).await?
    };
    if json_out {
        return output::json(&r);
    }
    let rows: Vec<(&str, String)> = r
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.to_string().trim_matches('"').to_owned()))
        .collect();
    output::line(output::fields(&rows).trim_end())
}

#[derive(Debug, Args)]
pub struct MediaArgs {
    pub name: String,
    /// The CD-ROM's target, e.g. sda
    pub target: String,
    /// The new medium (for --insert/--update)
    pub source: Option<String>,
    #[arg(long, conflicts_with_all = ["insert", "update"])]
    pub eject: bool,
    #[arg(long, conflicts_with = "update")]
    pub insert: bool,
    #[arg(long)]
    pub update: bool,
    /// Open the tray even if the guest locked it
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub scope: Scope,
}

pub async fn media(c: &Client, json_out: bool, a: MediaArgs) -> Result<(), CliError> {
    // virsh: --update without a source ejects; no action flag means update.
    let action = match (a.eject, a.insert, a.source.is_some()) {
        (true, _, _) | (false, false, false) => "eject",
        (false, true, _) => "insert",
        (false, false, true) => "update",
    };
    let mut req = json!({ "action": action, "force": a.force });
    if action != "eject" {
        req["source"] = json!(a.source);
    }
    a.scope.into_json(&mut req);
    let r = c.change_media(&a.name, &a.target, &req).await?;
    if json_out {
        return output::json(&r);
    }
    output::line(&format!(
        "Successful media change ({action}) of {}",
        a.target
    ))
}
