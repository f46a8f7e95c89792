//! Raw QMP for administrators, audited with the command's name (`qmp:<command>`).

use std::borrow::Cow;

use novacron_domain::Error;
use serde_json::Value;

use super::{table, Failure, OpInfo, Operation};
use crate::service::passthrough::PassthroughError;
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct Qmp {
    pub domain: String,
    pub execute: String,
    pub arguments: Option<Value>,
}

impl Failure for PassthroughError {
    fn code(&self) -> &'static str {
        match self {
            PassthroughError::Domain(e) => e.code().as_str(),
            PassthroughError::Qmp { .. } => "qmp_error",
        }
    }

    fn into_error(self) -> Error {
        match self {
            PassthroughError::Domain(e) => e,
            e => Error::Internal(e.to_string()),
        }
    }
}

impl Operation for Qmp {
    type Response = Value;
    type Failure = PassthroughError;

    fn info(&self) -> &'static OpInfo {
        &table::QMP
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn audit_name(&self) -> Cow<'static, str> {
        // Raw QMP can change anything: the command name is part of what is recorded.
        Cow::Owned(format!("qmp:{}", self.execute))
    }

    async fn local(self, svc: Service) -> Result<Value, PassthroughError> {
        svc.qmp_passthrough(&self.domain, &self.execute, self.arguments.as_ref())
            .await
    }
}
