//! `domiftune` (virsh's name and flags): a NIC's bandwidth limits read or changed.

use clap::Subcommand;
use novacrond::client::Client;
use serde_json::{json, Value};

use crate::exit::CliError;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum NicTuneCommand {
    /// Show or change a NIC's bandwidth limits (no --inbound/--outbound: show)
    Domiftune {
        name: String,
        /// The NIC's MAC or host link name (domiflist shows both)
        interface: String,
        /// Traffic to the guest: average[,peak[,burst]] (kB/s, kB/s, KiB); 0 clears
        #[arg(long)]
        inbound: Option<String>,
        /// Traffic from the guest: average[,,burst] (kB/s, KiB); 0 clears
        #[arg(long)]
        outbound: Option<String>,
        /// Affect the running guest
        #[arg(long)]
        live: bool,
        /// Affect the definition
        #[arg(long)]
        config: bool,
    },
}

fn rate_line(label: &str, r: &Value) -> String {
    let n = |k: &str| r[k].as_u64().map_or("0".to_owned(), |v| v.to_string());
    format!(
        "{label}.average: {}\n{label}.peak   : {}\n{label}.burst  : {}",
        n("average"),
        n("peak"),
        n("burst")
    )
}

pub async fn run(c: &Client, json_out: bool, cmd: NicTuneCommand) -> Result<(), CliError> {
    let NicTuneCommand::Domiftune {
        name,
        interface,
        inbound,
        outbound,
        live,
        config,
    } = cmd;
    let mut req = json!({ "live": live, "config": config });
    if let Some(i) = inbound {
        req["inbound"] = json!(i);
    }
    if let Some(o) = outbound {
        req["outbound"] = json!(o);
    }
    let v = c.interface_tune(&name, &interface, &req).await?;
    if json_out {
        return output::json(&v);
    }
    // virsh's layout: one `inbound.average: N` line per figure, 0 when unset.
    output::line(&format!(
        "{}\n{}",
        rate_line("inbound", &v["bandwidth"]["inbound"]),
        rate_line("outbound", &v["bandwidth"]["outbound"])
    ))
}
