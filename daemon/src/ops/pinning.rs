//! Pinning a vCPU, the emulator threads or an iothread (`virsh vcpupin`/`emulatorpin`/
//! `iothreadpin`).

use std::borrow::Cow;

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::host::pinning::ThreadKind;
use crate::service::placement::{PinScope, Pinning};
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct Pin {
    pub domain: String,
    pub thread: ThreadKind,
    pub cpuset: String,
    pub scope: PinScope,
}

impl Operation for Pin {
    type Response = Pinning;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        match self.thread {
            ThreadKind::Vcpu(_) => &table::VCPUPIN,
            ThreadKind::Iothread(_) => &table::IOTHREADPIN,
            ThreadKind::Emulator => &table::EMULATORPIN,
        }
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.info().name)
    }

    async fn local(self, svc: Service) -> Result<Pinning, Error> {
        svc.pin(&self.domain, self.thread, &self.cpuset, self.scope)
            .await
    }
}
