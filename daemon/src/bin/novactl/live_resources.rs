//! `setvcpus`, `vcpucount`, `setmem`, `dommemstat`, `dommeminfo`, `update-memory-device`,
//! `attach-memory`, `detach-memory`, `setmaxmem` (virsh's names and flags where virsh has them).

use clap::{Args, Subcommand};
use novacrond::client::Client;
use serde_json::{json, Value};

use crate::exit::CliError;
use crate::output;

/// virsh's `--live`, `--config` (none: the running guest if it runs, else the definition).
#[derive(Debug, Clone, Copy, Args)]
pub struct Scope {
    /// Change the running guest
    #[arg(long)]
    pub live: bool,
    /// Change the persistent definition
    #[arg(long)]
    pub config: bool,
}

impl Scope {
    fn into_json(self, v: &mut Value) {
        v["live"] = json!(self.live);
        v["config"] = json!(self.config);
    }
}

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Set the number of vCPUs (a running guest: hot-plug or unplug)
    Setvcpus {
        name: String,
        count: u32,
        /// Set the definition's most vCPUs (with --config)
        #[arg(long)]
        maximum: bool,
        /// Seconds to wait for the guest to release vCPUs (default 10)
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show the maximum and current vCPUs of the definition and the running guest
    Vcpucount { name: String },
    /// Set the balloon target (KiB, or with a suffix K, M, G)
    Setmem {
        name: String,
        size: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show the memory statistics (--period N: set the guest's polling interval first)
    Dommemstat {
        name: String,
        #[arg(long)]
        period: Option<u32>,
    },
    /// Show requested against guest-visible memory, per memory device
    Dommeminfo {
        name: String,
        /// The definition's, not the running guest's
        #[arg(long)]
        inactive: bool,
    },
    /// Change a virtio-mem device's requested size (KiB, or with a suffix K, M, G)
    UpdateMemoryDevice {
        name: String,
        #[arg(long)]
        alias: String,
        #[arg(long = "requested-size")]
        requested_size: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Attach memory: a file with one <memory model='dimm'|'virtio-mem'> element
    AttachMemory {
        name: String,
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
        #[command(flatten)]
        scope: Scope,
    },
    /// Detach a memory device; a running guest must release it (waits, then times out)
    DetachMemory {
        name: String,
        alias: String,
        /// Seconds to wait for the guest to release it (default 10)
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Set the definition's memory, <memory> (KiB, or with a suffix K, M, G; --config)
    Setmaxmem {
        name: String,
        size: String,
        #[command(flatten)]
        scope: Scope,
    },
}

/// virsh's memory sizes: a plain number is KiB; a suffix makes it bytes in that unit.
fn kib(s: &str) -> Result<u64, CliError> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| CliError::Input(format!("size {s:?}: not a number")));
    }
    Ok(crate::disks::parse_size(s)? / 1024)
}

fn kv(v: &Value, keys: &[&str]) -> String {
    let pairs: Vec<(&str, String)> = keys
        .iter()
        .filter_map(|k| v.get(*k).map(|x| (*k, x.to_string())))
        .collect();
    output::fields(&pairs)
}

pub async fn run(c: &Client, json_out: bool, cmd: ResourceCommand) -> Result<(), CliError> {
    let v = match cmd {
        ResourceCommand::Setvcpus {
            name,
            count,
            maximum,
            timeout,
            scope,
        } => {
            let mut req = json!({ "count": count, "maximum": maximum });
            if let Some(t) = timeout {
                req["timeout"] = json!(t);
            }
            scope.into_json(&mut req);
            c.set_vcpus(&name, &req).await?
        }
        ResourceCommand::Vcpucount { name } => c.vcpu_count(&name).await?,
        ResourceCommand::Setmem { name, size, scope } => {
            let mut req = json!({ "size_kib": kib(&size)? });
            scope.into_json(&mut req);
            c.set_memory(&name, &req).await?
        }
        ResourceCommand::Dommemstat { name, period } => c.memory_stats(&name, period).await?,
        ResourceCommand::Dommeminfo { name, inactive } => c.memory_info(&name, inactive).await?,
        ResourceCommand::UpdateMemoryDevice {
            name,
            alias,
            requested_size,
            scope,
        } => {
            let mut req = json!({ "requested_kib": kib(&requested_size)? });
            scope.into_json(&mut req);
            c.update_memory_device(&name, &alias, &req).await?
        }
        ResourceCommand::AttachMemory { name, file, scope } => {
            let xml = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
            let mut req = json!({ "xml": xml });
            scope.into_json(&mut req);
            c.attach_memory(&name, &req).await?
        }
        ResourceCommand::DetachMemory {
            name,
            alias,
            timeout,
            scope,
        } => {
            let mut q = format!("?live={}&config={}", scope.live, scope.config);
            if let Some(t) = timeout {
                q.push_str(&format!("&timeout={t}"));
            }
            c.detach_memory(&name, &alias, &q).await?
        }
        ResourceCommand::Setmaxmem { name, size, scope } => {
            let mut req = json!({ "size_kib": kib(&size)? });
            scope.into_json(&mut req);
            c.set_max_memory(&name, &req).await?
        }
    };
    if json_out {
        return output::json(&v);
    }
    // vcpucount and dommemstat read as virsh's key/value lines; the rest as the same fields.
    let text = if v.get("config_maximum").is_some() {
        kv(
            &v,
            &[
                "config_maximum",
                "config_current",
                "live_maximum",
                "live_current",
                "live_plugged",
                "unplugging",
            ],
        )
    } else if let Some(stats) = v.get("stats").and_then(Value::as_object) {
        let mut pairs = vec![("actual", v["actual"].to_string())];
        pairs.extend(stats.iter().map(|(k, x)| (k.as_str(), x.to_string())));
        output::fields(&pairs)
    } else {
        kv(
            &v,
            &[
                "boot_kib",
                "memory_kib",
                "max_kib",
                "slots",
                "requested_kib",
                "plugged_kib",
                "balloon_target_kib",
                "balloon_actual_kib",
            ],
        )
    };
    output::line(text.trim_end())
}
