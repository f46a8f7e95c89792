//! Raw QMP for administrators: one command to one running guest, under the domain's job slot
//! so it cannot interleave with a lifecycle operation.

use novacron_domain::Error;
use serde_json::Value;

use super::jobs::Job;
use super::Service;

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error(transparent)]
    Domain(#[from] Error),
    /// QEMU answered with an error; the class and text are QEMU's.
    #[error("QEMU refused {command}: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
}

impl Service {
    /// One raw QMP command under the domain's job slot (audited by `ops::qmp` with the
    /// command's name).
    pub async fn qmp_passthrough(
        &self,
        name: &str,
        command: &str,
        arguments: Option<&Value>,
    ) -> Result<Value, PassthroughError> {
        self.qmp_passthrough_inner(name, command, arguments).await
    }

    async fn qmp_passthrough_inner(
        &self,
        name: &str,
        command: &str,
        arguments: Option<&Value>,
    ) -> Result<Value, PassthroughError> {
        if command.is_empty() || command.len() > 128 {
            return Err(Error::InvalidConfig(
                "QMP command name must be 1 to 128 characters".into(),
            )
            .into());
        }
        if arguments.is_some_and(|a| !a.is_object()) {
            return Err(Error::InvalidConfig("QMP arguments must be a JSON object".into()).into());
        }
        let h = self.inner.handle(name)?;
        let _job = h.begin(Job::Modify, self.inner.job_wait()).await?;
        let Some(live) = h.run().live().cloned() else {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "qmp",
            }
            .into());
        };
        let qmp = live.qmp(name)?;
        // Any command may resize or replace a block node.
        live.forget_disk_sizes();
        match qmp.execute_raw(command, arguments).await {
            Ok(v) => Ok(v),
            Err(novacron_qmp::Error::Qmp { command, error }) => Err(PassthroughError::Qmp {
                command,
                class: error.class.as_str().to_owned(),
                desc: error.desc,
            }),
            Err(e) => Err(super::lifecycle::qmp_error(name, "qmp", e).into()),
        }
    }
}
