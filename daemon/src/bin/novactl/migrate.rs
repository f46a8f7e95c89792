//! `novactl migrate`, `migrate-cancel`, `migrate-postcopy`: start a live migration and follow
//! it with a progress bar (bytes sent of the guest's RAM, phase, dirty rate, passes).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use novacrond::client::Client;
use novacrond::service::migration::{
    Compression, MigrateRequest, MigrationOptions, Phase, Progress, TimeoutAction,
};

use crate::exit::CliError;
use crate::output;

/// The command-line form of a migration.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    pub name: String,
    /// The destination daemon's API, e.g. https://host2:8443 (http:// only where the source's
    /// configuration allows plain transport)
    pub destination: String,
    /// The destination's bearer token (named apart from the global --token, which is for the
    /// daemon novactl talks to)
    #[arg(long, env = "NOVACTL_MIGRATE_TOKEN", hide_env_values = true)]
    pub destination_token: Option<String>,
    /// CA certificate (PEM) to verify an https destination: a path on the source host,
    /// inside its api.request_files_dir (default <state_dir>/pki), read by the daemon
    #[arg(long)]
    pub destination_ca: Option<PathBuf>,
    /// Answer once started instead of following the progress
    #[arg(long)]
    pub no_wait: bool,
    /// Bytes per second (unlimited when omitted)
    #[arg(long)]
    pub max_bandwidth: Option<u64>,
    /// The longest pause allowed for the switch-over (default 300)
    #[arg(long)]
    pub max_downtime_ms: Option<u64>,
    /// Parallel streams
    #[arg(long)]
    pub multifd_channels: Option<u8>,
    #[arg(long)]
    pub auto_converge: bool,
    #[arg(long)]
    pub xbzrle_cache_bytes: Option<u64>,
    /// none, zlib or zstd (multifd streams)
    #[arg(long, value_parser = ["none", "zlib", "zstd"], default_value = "none")]
    pub compression: String,
    /// Allow switching to post-copy (`novactl migrate-postcopy`)
    #[arg(long)]
    pub postcopy: bool,
    /// Encrypt the stream (certificates configured on both hosts); the default for an
    /// https:// destination
    #[arg(long, conflicts_with = "no_tls")]
    pub tls: bool,
    /// Do not encrypt the stream, even to an https:// destination
    #[arg(long)]
    pub no_tls: bool,
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// What the timeout does: abort, postcopy or pause
    #[arg(long, value_parser = ["abort", "postcopy", "pause"], default_value = "abort")]
    pub timeout_action: String,
    /// Keep the (shut off) definition here too
    #[arg(long)]
    pub keep_source_definition: bool,
}

impl MigrateArgs {
    fn request(&self) -> MigrateRequest {
        MigrateRequest {
            destination: self.destination.clone(),
            token: self.destination_token.clone(),
            destination_ca: self.destination_ca.clone(),
            options: MigrationOptions {
                max_bandwidth: self.max_bandwidth,
                max_downtime_ms: self.max_downtime_ms,
                multifd_channels: self.multifd_channels,
                auto_converge: self.auto_converge,
                xbzrle_cache_bytes: self.xbzrle_cache_bytes,
                compression: match self.compression.as_str() {
                    "zlib" => Compression::Zlib,
                    "zstd" => Compression::Zstd,
                    _ => Compression::None,
                },
                postcopy: self.postcopy,
                tls: match (self.tls, self.no_tls) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                timeout_secs: self.timeout_secs,
                timeout_action: match self.timeout_action.as_str() {
                    "postcopy" => TimeoutAction::Postcopy,
                    "pause" => TimeoutAction::Pause,
                    _ => TimeoutAction::Abort,
                },
            },
            keep_source_definition: self.keep_source_definition,
        }
    }
}

pub async fn migrate(client: &Client, json: bool, args: MigrateArgs) -> Result<(), CliError> {
    let started = client.migrate(&args.name, &args.request(), false).await?;
    if args.no_wait {
        return if json {
            output::json(&started)
        } else {
            output::line(&format!(
                "migration {} of {} started; follow it with `novactl migration {}`",
                started.id, args.name, args.name
            ))
        };
    }
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(1);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let last = loop {
        let p = client.migration(&args.name).await?;
        if let Some(bar) = &bar {
            draw(bar, &p);
        }
        if p.id == started.id && p.phase.is_final() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report(json, &args.name, &last)
}

fn draw(bar: &ProgressBar, p: &Progress) {
    bar.set_prefix(p.phase.as_str());
    bar.set_length(p.total_bytes.max(1));
    bar.set_position(p.total_bytes.saturating_sub(p.remaining_bytes));
    bar.set_message(format!(
        "pass {} dirty {}/s",
        p.iterations,
        output::bytes(p.dirty_rate_bytes)
    ));
}

/// The outcome, with a failure's detail as the error (and its exit code).
fn report(json: bool, name: &str, p: &Progress) -> Result<(), CliError> {
    if json {
        output::json(p)?;
    } else if p.phase == Phase::Completed {
        output::line(&format!(
            "domain {name} migrated to {} in {:.1}s ({} sent, downtime {} ms)",
            p.destination,
            p.elapsed_ms as f64 / 1000.0,
            output::bytes(p.transferred_bytes),
            p.downtime_ms.unwrap_or_default()
        ))?;
    }
    match p.phase {
        Phase::Completed => Ok(()),
        phase => Err(CliError::Failed {
            code: if phase == Phase::Cancelled {
                "cancelled".into()
            } else {
                "migration_failed".into()
            },
            message: format!(
                "migration of {name} {}: {}",
                phase.as_str(),
                p.detail.as_deref().unwrap_or("no detail")
            ),
        }),
    }
}

pub async fn show(client: &Client, json: bool, name: &str) -> Result<(), CliError> {
    let p = client.migration(name).await?;
    if json {
        return output::json(&p);
    }
    output::line(&output::fields(&[
        ("id", p.id.clone()),
        ("phase", p.phase.as_str().to_owned()),
        ("destination", p.destination.clone()),
        (
            "transferred",
            format!(
                "{} of {} ({} left)",
                output::bytes(p.transferred_bytes),
                output::bytes(p.total_bytes),
                output::bytes(p.remaining_bytes)
            ),
        ),
        (
            "throughput",
            format!("{}/s", output::bytes(p.throughput_bytes)),
        ),
        (
            "dirty rate",
            format!("{}/s", output::bytes(p.dirty_rate_bytes)),
        ),
        ("passes", p.iterations.to_string()),
        (
            "downtime",
            p.downtime_ms
                .or(p.expected_downtime_ms)
                .map_or("-".into(), |d| format!("{d} ms")),
        ),
        ("elapsed", format!("{:.1}s", p.elapsed_ms as f64 / 1000.0)),
        ("detail", p.detail.clone().unwrap_or_default()),
    ]))
}

pub async fn cancel(client: &Client, json: bool, name: &str) -> Result<(), CliError> {
    let p = client.cancel_migration(name).await?;
    if json {
        output::json(&p)
    } else {
        output::line(&format!(
            "migration of {name}: {} ({})",
            p.phase.as_str(),
            p.detail.as_deref().unwrap_or("")
        ))
    }
}

pub async fn postcopy(client: &Client, json: bool, name: &str) -> Result<(), CliError> {
    let p = client.start_postcopy(name).await?;
    if json {
        output::json(&p)
    } else {
        output::line(&format!("migration of {name}: switching to post-copy"))
    }
}
