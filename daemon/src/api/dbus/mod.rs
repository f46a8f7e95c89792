//! The D-Bus face: `org.novacron1` with the manager at `/org/novacron1`
//! (`org.novacron1.Manager` and `org.freedesktop.DBus.ObjectManager`) and one
//! `org.novacron1.Domain` object per domain under `/org/novacron1/domain/`.
//!
//! Like the HTTP face it only translates: methods call the service, and one task turns the
//! service's event bus into signals, `PropertiesChanged`, and objects appearing and
//! disappearing (`InterfacesAdded`/`InterfacesRemoved`).

mod error;
mod networks;
mod objects;
pub mod path;
mod polkit;
pub mod remote;
mod snapshots;
mod storage;
mod templates;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

pub use crate::config::dbus::{BusKind, DbusConfig};
pub use error::DbusError;
pub use objects::{DomainObject, Manager, Props, MANAGER_PATH};
pub use path::{domain_path, escape, unescape};
pub use polkit::ACTION_MANAGE;

use crate::service::events::{DomainEvent, EventKind};
use crate::service::{ListFilter, Service};

/// The well-known name, requested once every object is registered.
pub const BUS_NAME: &str = "org.novacron1";
const DOMAIN_IFACE: &str = "org.novacron1.Domain";

/// Starts the D-Bus face: registers the manager, the ObjectManager and an object per existing
/// domain, then requests `org.novacron1`, then follows the event bus until `shutdown`.
/// `Ok(None)`: not configured, or (with `bus = "auto"`) the bus could not be used.
pub async fn serve(
    service: Service,
    config: &DbusConfig,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>> {
    let explicit = config.address.is_some() || config.bus != BusKind::Auto;
    let which = match (config.bus, &config.address) {
        (BusKind::None, _) => return Ok(None),
        (_, Some(address)) => address.clone(),
        (BusKind::System, None) => "system bus".to_owned(),
        (BusKind::Session, None) => "session bus".to_owned(),
        (BusKind::Auto, None) if nix::unistd::geteuid().is_root() => "system bus".to_owned(),
        (BusKind::Auto, None) => return Ok(None),
    };
    match connect(service, config, shutdown).await {
        Ok(task) => {
            tracing::info!(bus = %which, name = BUS_NAME, "D-Bus API ready");
            Ok(Some(task))
        }
        Err(e) if !explicit => {
            tracing::error!(
                bus = %which,
                "D-Bus API not started ({e:#}); continuing without it (set [dbus] bus = \"none\" to silence)"
            );
            Ok(None)
        }
        Err(e) => Err(e.context(format!("serving {BUS_NAME} on the {which}"))),
    }
}

async fn connect(
    service: Service,
    config: &DbusConfig,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let builder = match (&config.address, config.bus) {
        (Some(address), _) => zbus::connection::Builder::address(address.as_str())?,
        (None, BusKind::Session) => zbus::connection::Builder::session()?,
        (None, _) => zbus::connection::Builder::system()?,
    };
    // Subscribe before listing, so no change falls between the two.
    let events = service.events().subscribe();
    let mut builder = builder
        .serve_at(
            MANAGER_PATH,
            Manager {
                service: service.clone(),
            },
        )?
        .serve_at(MANAGER_PATH, zbus::fdo::ObjectManager)?;
    for host in service.remote_hosts() {
        builder = builder.serve_at(
            remote::host_path(&host.status.name),
            remote::RemoteHostObject::new(service.clone(), &host.status.name),
        )?;
    }
    let mut known = HashMap::new();
    for status in service.list_status(&ListFilter::default()) {
        if let Ok(props) = Props::of(&service, &status.name) {
            builder = builder.serve_at(
                domain_path(&status.name),
                DomainObject::new(service.clone(), &status.name),
            )?;
            known.insert(status.name, props);
        }
    }
    // Last: the name is requested (without queueing) only once every object is there.
    let conn = builder
        .name(BUS_NAME)?
        .build()
        .await
        .context("connecting and requesting the name")?;
    Ok(tokio::spawn(follow_events(
        conn, service, events, known, shutdown,
    )))
}

/// The event bus to signals and objects. `known` holds the last properties seen per
/// registered domain object, so each event sends exactly the properties it changed.
async fn follow_events(
    conn: Connection,
    service: Service,
    mut events: broadcast::Receiver<Arc<DomainEvent>>,
    mut known: HashMap<String, Props>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = events.recv() => e,
        };
        let result = match event {
            Ok(event) => on_event(&conn, &service, &mut known, &event).await,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "D-Bus face fell behind the event bus; resynchronising"
                );
                resync(&conn, &service, &mut known).await
            }
            Err(RecvError::Closed) => break,
        };
        if let Err(e) = result {
            tracing::warn!("D-Bus signal: {e}");
        }
    }
    // Dropping the connection releases the name.
    drop(conn);
}

async fn on_event(
    conn: &Connection,
    service: &Service,
    known: &mut HashMap<String, Props>,
    event: &DomainEvent,
) -> zbus::Result<()> {
    if let EventKind::RemoteStateChanged { host, from, to } = &event.kind {
        return remote::remote_state_changed(conn, service, host, &event.domain, *from, *to).await;
    }
    let name = event.domain.as_str();
    let path = domain_path(name);
    let emitter = SignalEmitter::new(conn, path.clone())?;
    let now = Props::of(service, name).ok();
    // A new domain's object appears (InterfacesAdded) before its first signal.
    if let Some(props) = &now {
        if !known.contains_key(name) {
            conn.object_server()
                .at(&path, DomainObject::new(service.clone(), name))
                .await?;
            known.insert(name.to_owned(), props.clone());
        }
    }
    match &event.kind {
        EventKind::StateChanged { from, to, reason } => {
            let (reason, detail) = reason_strings(reason);
            DomainObject::state_change(&emitter, from.as_str(), to.as_str(), &reason, &detail)
                .await?;
        }
        EventKind::Reset => DomainObject::guest_reset(&emitter).await?,
        EventKind::GuestPanicked { action } => {
            DomainObject::guest_panicked(&emitter, action).await?;
        }
        EventKind::Reconnected { pid } => DomainObject::reconnected(&emitter, *pid).await?,
        EventKind::ReconnectFailed { pid, error } => {
            DomainObject::reconnect_failed(&emitter, *pid, error).await?;
        }
        EventKind::Defined { .. }
        | EventKind::Undefined
        | EventKind::PinsRestored { .. }
        | EventKind::LiveDevicesDrifted { .. } => {}
        EventKind::RemoteStateChanged { .. } => {}
        EventKind::MigrationStarted { .. } => {}
        EventKind::MigrationProgress { progress: p } => {
            DomainObject::migration_progress(
                &emitter,
                p.phase.as_str(),
                p.transferred_bytes,
                p.remaining_bytes,
                p.total_bytes,
                p.dirty_rate_bytes,
                p.iterations,
            )
            .await?;
        }
        EventKind::MigrationFinished {
            id,
            outcome,
            detail,
        } => {
            DomainObject::migration_finished(&emitter, id, outcome, detail).await?;
        }
    }
    match now {
        Some(props) => {
            if let Some(old) = known.get_mut(name) {
                let changed = props.changed_since(old);
                *old = props;
                emit_changed(&emitter, changed).await?;
            }
        }
        // Gone: the object disappears (InterfacesRemoved).
        None => {
            if known.remove(name).is_some() {
                conn.object_server()
                    .remove::<DomainObject, _>(&path)
                    .await?;
            }
        }
    }
    Ok(())
}

/// After missing events: bring every object and property up to date.
async fn resync(
    conn: &Connection,
    service: &Service,
    known: &mut HashMap<String, Props>,
) -> zbus::Result<()> {
    let mut names: Vec<String> = known.keys().cloned().collect();
    names.extend(
        service
            .list_status(&ListFilter::default())
            .into_iter()
            .map(|s| s.name),
    );
    names.sort();
    names.dedup();
    for name in names {
        let event = DomainEvent {
            seq: 0,
            time_unix_ms: 0,
            domain: name,
            kind: EventKind::Defined { persistent: false },
        };
        on_event(conn, service, known, &event).await?;
    }
    Ok(())
}

async fn emit_changed(
    emitter: &SignalEmitter<'_>,
    changed: HashMap<&'static str, zbus::zvariant::Value<'static>>,
) -> zbus::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    zbus::fdo::Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(DOMAIN_IFACE),
        changed.iter().map(|(k, v)| (*k, v.clone())).collect(),
        std::borrow::Cow::Borrowed(&[]),
    )
    .await
}

/// The reason as its stable snake_case name, and its detail ("" when it has none).
fn reason_strings(reason: &crate::service::events::StateReason) -> (String, String) {
    let v = serde_json::to_value(reason).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    (s("reason"), s("detail"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::events::StateReason;

    #[test]
    fn reasons_are_the_event_stream_names() {
        assert_eq!(
            reason_strings(&StateReason::QemuDied("signal 9".into())),
            ("qemu_died".to_owned(), "signal 9".to_owned())
        );
        assert_eq!(
            reason_strings(&StateReason::Booted),
            ("booted".to_owned(), String::new())
        );
    }

    #[test]
    fn config_defaults_and_parsing() {
        assert_eq!(DbusConfig::default().bus, BusKind::Auto);
        let c: DbusConfig = toml::from_str("bus = 'session'\naddress = 'unix:path=/x'").unwrap();
        assert_eq!(c.bus, BusKind::Session);
        assert_eq!(c.address.as_deref(), Some("unix:path=/x"));
        let e = toml::from_str::<DbusConfig>("bus = 'sytem'").unwrap_err();
        assert_eq!(
            e.message(),
            "unknown variant `sytem`, expected one of `auto`, `system`, `session`, `none`"
        );
        let e = toml::from_str::<DbusConfig>("adress = 'x'").unwrap_err();
        assert_eq!(
            e.message(),
            "unknown field `adress`, expected `bus` or `address`"
        );
    }
}
