//! novacrond: the NovaCron host daemon.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use novacrond::{systemd, Config, Service};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: novacrond [--config FILE]";

fn parse_args() -> Result<Option<PathBuf>> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--config" | "-c") => {
                config = Some(PathBuf::from(args.next().context("--config needs a file")?));
            }
            Some("--help" | "-h") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some("--version" | "-V") => {
                println!("novacrond {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> Result<()> {
    systemd::init_logging();
    let config_path = parse_args()?;
    let config = Config::load(config_path.as_deref()).context("loading the configuration")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    systemd::status("reconnecting to running guests");
    let service = Service::open(config.clone())
        .await
        .context("opening the state")?;
    let listeners = novacrond::api::http::Listeners::bind(&config)
        .await
        .context("starting the HTTP API")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let api = tokio::spawn(listeners.serve(service.clone(), shutdown.clone()));
    let dbus = novacrond::api::dbus::serve(service.clone(), &config.dbus, shutdown.clone())
        .await
        .context("starting the D-Bus API")?;
    let domains = service.list();
    let running = domains.iter().filter(|d| d.state.is_live()).count();
    tracing::info!(
        domains = domains.len(),
        running,
        problems = service.problems().len(),
        socket = %config.api_socket().display(),
        "novacrond ready"
    );
    systemd::ready(&format!(
        "serving {} domains ({running} running)",
        domains.len()
    ));
    let _watchdog = systemd::spawn_watchdog(service.clone());
    let started =
        novacrond::ops::autostart::run(&novacrond::ops::Executor::new(service.clone())).await;
    if !started.is_empty() {
        tracing::info!(?started, "autostarted");
    }

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Guests are separate sessions and keep running; the next daemon reconnects to them.
    tracing::info!("stopping; guests keep running");
    systemd::stopping();
    shutdown.cancel();
    let _ = api.await;
    // Operations already under way finish (a start half-done would leave a QEMU unrecorded).
    service.quiesce(std::time::Duration::from_secs(30)).await;
    if let Some(dbus) = dbus {
        let _ = dbus.await;
    }
    Ok(())
}
