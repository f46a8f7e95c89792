//! Console operations: websocket tickets and screenshots. The websockets themselves are a
//! face of the HTTP API (`api/http/websocket.rs`) over the service's consoles.

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::console::{Kind, Ticket};
use crate::service::Service;

/// `console-ticket` / `vnc-ticket`: a one-use ticket for the websocket, bound to the caller.
#[derive(Debug, Clone)]
pub struct MintTicket {
    pub domain: String,
    pub kind: Kind,
}

impl Operation for MintTicket {
    type Response = Ticket;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        match self.kind {
            Kind::Console => &table::CONSOLE_TICKET,
            Kind::Vnc => &table::VNC_TICKET,
        }
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<Ticket, Error> {
        let actor = crate::service::audit::current();
        svc.console_ticket(&self.domain, self.kind, actor)
    }
}

/// `screenshot`: the guest's screen as PNG.
#[derive(Debug, Clone)]
pub struct Screenshot {
    pub domain: String,
}

impl Operation for Screenshot {
    type Response = Vec<u8>;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::SCREENSHOT
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<Vec<u8>, Error> {
        svc.screenshot(&self.domain).await
    }
}
