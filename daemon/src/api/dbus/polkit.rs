//! Authorisation of mutating calls with polkit, where polkitd runs.
//!
//! The subject is the caller's unique bus name (`system-bus-name`), never its pid, so the
//! answer cannot be raced by pid reuse. Where `org.freedesktop.PolicyKit1` has no owner on the
//! bus (a session bus, a host without polkitd) there is nothing to ask and the bus policy
//! (`systemd/org.novacron1.conf`) is the only gate.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::names::BusName;
use zbus::zvariant::Value;
use zbus::Connection;

use super::error::DbusError;
use crate::service::audit::{Actor, Asked, Refusal, Refused};
use crate::service::Service;

/// The one action every mutating method needs.
pub const ACTION_MANAGE: &str = "org.novacron1.manage";
const POLKIT: &str = "org.freedesktop.PolicyKit1";
/// `CheckAuthorization` flag: the agent may ask the user for a password.
const ALLOW_USER_INTERACTION: u32 = 1;

/// Who is calling (for the audit log), when the caller may mutate: always where no polkit
/// runs on this bus, else as polkit decides. A refusal is audited here, with the caller and
/// the method and object it asked for.
pub async fn authorize(
    conn: &Connection,
    header: &Header<'_>,
    service: &Service,
) -> Result<Actor, DbusError> {
    let mut actor = Actor {
        via: "dbus",
        ..Actor::default()
    };
    let Some(sender) = header.sender() else {
        // Peer-to-peer connections carry no sender; there is no bus to hold polkit either.
        return Ok(actor);
    };
    actor.bus_name = Some(sender.to_string());
    let decided = match zbus::fdo::DBusProxy::new(conn).await {
        Ok(dbus) => {
            actor.uid = dbus
                .get_connection_unix_user(BusName::from(sender.clone()))
                .await
                .ok();
            // polkit (or the bus policy) decides who may mutate at all; what a definition may
            // name on the host follows the uid: root is admin, anyone else an operator. A
            // peer-to-peer caller (no sender, above) has no known uid and stays restricted.
            actor.role = Some(if actor.uid == Some(0) {
                crate::config::Role::Admin
            } else {
                crate::config::Role::Operator
            });
            check(conn, header, sender).await
        }
        Err(e) => Err(format!("polkit: {e}")),
    };
    match decided {
        Ok(()) => Ok(actor),
        Err(why) => {
            let field = |v: Option<String>| v.unwrap_or_default();
            service.audit_refused(Refusal {
                actor,
                asked: Asked::Dbus {
                    interface: field(header.interface().map(|i| i.to_string())),
                    member: field(header.member().map(|m| m.to_string())),
                    object: field(header.path().map(|p| p.to_string())),
                },
                outcome: Refused::AccessDenied,
                reason: why.clone(),
            });
            Err(DbusError::access_denied(why))
        }
    }
}

/// Asks polkit whether `sender` may manage; `Ok` also where no polkit runs on this bus, else
/// why not.
async fn check(
    conn: &Connection,
    header: &Header<'_>,
    sender: &zbus::names::UniqueName<'_>,
) -> Result<(), String> {
    let allow_interaction = header
        .primary()
        .flags()
        .contains(zbus::message::Flags::AllowInteractiveAuth);
    let subject: (&str, HashMap<&str, Value<'_>>) = (
        "system-bus-name",
        HashMap::from([("name", Value::from(sender.as_str()))]),
    );
    let details: HashMap<&str, &str> = HashMap::new();
    let flags = if allow_interaction {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    let reply = conn
        .call_method(
            Some(POLKIT),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &(subject, ACTION_MANAGE, details, flags, ""),
        )
        .await;
    // Asked directly rather than only when polkitd already owns its name: the bus starts it
    // on demand, and "not running yet" must not mean "allowed". Only a bus with no polkit at
    // all (a session bus, a host without polkitd) leaves the bus policy as the gate.
    let reply = match reply {
        Ok(reply) => reply,
        Err(zbus::Error::MethodError(name, _, _))
            if matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(format!("polkit check failed: {e}")),
    };
    let ((authorized, challenge, _details),): ((bool, bool, HashMap<String, String>),) = reply
        .body()
        .deserialize()
        .map_err(|e| format!("polkit answered oddly: {e}"))?;
    if authorized {
        Ok(())
    } else if challenge {
        Err(format!(
            "{ACTION_MANAGE} needs authentication (call with interactive authorisation allowed)"
        ))
    } else {
        Err(format!("{sender} is not authorised for {ACTION_MANAGE}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_installed_policy_defines_the_action_the_code_checks() {
        let policy = include_str!("../../../../systemd/org.novacron1.policy");
        assert!(
            policy.contains(&format!("<action id=\"{}\">", super::ACTION_MANAGE)),
            "systemd/org.novacron1.policy must define {}",
            super::ACTION_MANAGE
        );
    }
}
