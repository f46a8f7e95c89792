//! The console's service methods, as the operations and the websocket face call them.

use std::sync::Arc;

use novacron_domain::Error;
use tokio::net::UnixStream;

use super::{Console, Kind, Ticket, TicketError};
use crate::service::audit::Actor;
use crate::service::Service;

impl Service {
    /// Mints a websocket ticket for a running guest's console or screen, bound to `actor`.
    pub fn console_ticket(&self, name: &str, kind: Kind, actor: Actor) -> Result<Ticket, Error> {
        match kind {
            Kind::Console => drop(self.inner.console(name)?),
            Kind::Vnc => {
                self.inner.handle(name)?;
            }
        }
        self.inner
            .consoles
            .tickets
            .mint(name, kind, actor)
            .map_err(Error::Internal)
    }

    /// Takes a ticket: who minted it, if it is good for `kind` of `name` now.
    pub fn redeem_ticket(
        &self,
        ticket: &str,
        name: &str,
        kind: Kind,
    ) -> Result<Actor, TicketError> {
        self.inner.consoles.tickets.redeem(ticket, name, kind)
    }

    /// The serial console of a running guest.
    pub fn console(&self, name: &str) -> Result<Arc<Console>, Error> {
        self.inner.console(name)
    }

    /// A new VNC connection to a running guest's display.
    pub async fn vnc_connect(&self, name: &str) -> Result<UnixStream, Error> {
        self.inner.vnc_connect(name).await
    }

    /// The guest's screen as PNG.
    pub async fn screenshot(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.inner.screenshot(name).await
    }

    /// Records a console event in the audit log under `actor` (a websocket opened or cut).
    pub fn audit_console(
        &self,
        actor: Actor,
        op: &str,
        name: &str,
        outcome: &str,
        error: Option<String>,
    ) {
        crate::service::audit::with_actor(actor, || {
            self.inner.audit.record_outcome(op, name, outcome, error)
        });
    }
}
