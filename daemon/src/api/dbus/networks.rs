//! The network methods of `org.novacron1.Manager` (their bodies; `objects.rs` declares them
//! in the one interface block). Answers are JSON strings, as `ValidateXML`'s. Define and
//! undefine are administrators' and so stay off D-Bus (its one gate is polkit's manage).

use super::error::DbusError;
use crate::ops::networks::{NetAutostart, NetDestroy, NetStart};
use crate::ops::{Executor, Target};
use crate::service::audit::Actor;
use crate::service::Service;

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, DbusError> {
    serde_json::to_string(v).map_err(|e| DbusError::Internal(e.to_string()))
}

pub fn list(svc: &Service) -> Result<String, DbusError> {
    to_json(&svc.networks().list())
}

pub fn info(svc: &Service, name: &str) -> Result<String, DbusError> {
    to_json(&svc.networks().info(name)?)
}

pub fn xml(svc: &Service, name: &str) -> Result<String, DbusError> {
    Ok(novacron_domain::network::network_xml(
        &svc.networks().config(name)?,
    ))
}

pub async fn leases(svc: &Service, name: &str) -> Result<String, DbusError> {
    to_json(&svc.networks().leases(name).await?)
}

/// `what`: start, destroy, autostart on/off.
pub async fn change(
    svc: &Service,
    actor: Actor,
    name: &str,
    what: Change,
) -> Result<String, DbusError> {
    let exec = Executor::new(svc.clone());
    let network = name.to_owned();
    match what {
        Change::Start => exec.run(actor, Target::Local, NetStart { network }).await?,
        Change::Destroy => {
            exec.run(actor, Target::Local, NetDestroy { network })
                .await?
        }
        Change::Autostart(enabled) => {
            exec.run(actor, Target::Local, NetAutostart { network, enabled })
                .await?
        }
    }
    info(svc, name)
}

pub enum Change {
    Start,
    Destroy,
    Autostart(bool),
}
