//! Websocket tickets: browsers cannot set headers on a websocket, so an authenticated call
//! mints a short-lived, one-use ticket (Proxmox's vncproxy model) that the websocket URL
//! carries. A ticket is bound to a domain, a kind (serial console or VNC) and its minter,
//! whose identity the websocket then acts (and is audited) as.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::service::audit::Actor;

/// How long a ticket may wait for its websocket, unless `api.ticket_ttl_secs` says otherwise.
pub const LIFETIME: Duration = crate::config::DEFAULT_TICKET_TTL;
/// Unredeemed tickets held at most (the oldest are forgotten first): minting cannot grow
/// the daemon without bound.
const MAX_TICKETS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Console,
    Vnc,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Console => "console",
            Kind::Vnc => "vnc",
        }
    }
}

/// What the minting call answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ticket {
    pub ticket: String,
    pub expires_in: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error(
        "no ticket: open the websocket with ?ticket= from POST /v1/domains/{{name}}/{0}/ticket"
    )]
    Missing(&'static str),
    #[error("unknown or already used ticket")]
    Unknown,
    #[error("the ticket expired (tickets are valid for {secs}s)")]
    Expired { secs: u64 },
    #[error("the ticket is for {kind} of domain '{domain}', not this one")]
    Mismatch { domain: String, kind: &'static str },
}

impl TicketError {
    /// 401 for a ticket that proves nothing, 403 for a valid one presented at the wrong door.
    pub fn forbidden(&self) -> bool {
        matches!(self, TicketError::Mismatch { .. })
    }
}

struct Entry {
    domain: String,
    kind: Kind,
    actor: Actor,
    expires: Instant,
}

pub struct Tickets {
    map: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
}

impl Default for Tickets {
    fn default() -> Tickets {
        Tickets::new(LIFETIME)
    }
}

impl Tickets {
    /// Tickets good for `ttl` after minting.
    pub fn new(ttl: Duration) -> Tickets {
        Tickets {
            map: Mutex::default(),
            ttl,
        }
    }

    pub fn mint(&self, domain: &str, kind: Kind, actor: Actor) -> Result<Ticket, String> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| format!("no randomness for a ticket: {e}"))?;
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, e| e.expires > now);
        if map.len() >= MAX_TICKETS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            ticket.clone(),
            Entry {
                domain: domain.to_owned(),
                kind,
                actor,
                expires: now + self.ttl,
            },
        );
        Ok(Ticket {
            ticket,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Takes the ticket (used once, whatever the outcome) and answers who minted it.
    pub fn redeem(&self, ticket: &str, domain: &str, kind: Kind) -> Result<Actor, TicketError> {
        let entry = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ticket)
            .ok_or(TicketError::Unknown)?;
        if entry.expires <= Instant::now() {
            return Err(TicketError::Expired {
                secs: self.ttl.as_secs(),
            });
        }
        if entry.domain != domain || entry.kind != kind {
            return Err(TicketError::Mismatch {
                domain: entry.domain,
                kind: entry.kind.as_str(),
            });
        }
        Ok(entry.actor)
    }

    #[cfg(test)]
    fn age(&self, ticket: &str, by: Duration) {
        if let Some(e) = self.map.lock().unwrap().get_mut(ticket) {
            e.expires -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_use_bound_to_domain_and_kind_and_expiring() {
        let t = Tickets::default();
        let a = t.mint("vm", Kind::Console, Actor::daemon()).unwrap();
        assert_eq!(a.expires_in, 30);
        assert_eq!(a.ticket.len(), 48);
        assert!(t.redeem(&a.ticket, "vm", Kind::Console).is_ok());
        assert_eq!(
            t.redeem(&a.ticket, "vm", Kind::Console),
            Err(TicketError::Unknown)
        );
        let b = t.mint("vm", Kind::Console, Actor::daemon()).unwrap();
        assert!(t
            .redeem(&b.ticket, "other", Kind::Console)
            .unwrap_err()
            .forbidden());
        let c = t.mint("vm", Kind::Console, Actor::daemon()).unwrap();
        assert!(t
            .redeem(&c.ticket, "vm", Kind::Vnc)
            .unwrap_err()
            .forbidden());
        let d = t.mint("vm", Kind::Vnc, Actor::daemon()).unwrap();
        t.age(&d.ticket, LIFETIME);
        assert_eq!(
            t.redeem(&d.ticket, "vm", Kind::Vnc),
            Err(TicketError::Expired { secs: 30 })
        );
    }
}
