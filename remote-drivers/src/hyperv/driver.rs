//! `HypervDriver`: the `Driver` trait over PowerShell scripts run through WinRM.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use novacron_domain::{
    Capabilities, DomainInfo, DomainState, DomainSummary, Driver, Error, ValidatedDomain,
};
use tokio::time::Instant;

use crate::config::{HostConfig, Timeouts};
use crate::http::{inner_limit, tokio_deadline_after};

use super::error::HypervError;
use super::model::{self, VmRecord};
use super::powershell::{self as ps, Action, Target};
use super::transport::{AuthMode, Transport};
use super::wsman::{Output, Shell};

/// How often `shutdown` re-reads the state when Stop-VM returned before the VM was off.
const SHUTDOWN_POLL: Duration = Duration::from_millis(250);

pub struct HypervDriver {
    host: String,
    auth: AuthMode,
    /// Shared with the clean-up of shells whose caller went away.
    transport: Arc<Transport>,
    timeouts: Timeouts,
}

/// One call's time: its deadline (a little inside the host's limit, so the command is
/// terminated and its shell deleted here, before the outer limit abandons the call), the
/// bound it stands for and the operation's name for the time-out error.
#[derive(Clone, Copy)]
struct Budget {
    deadline: Instant,
    limit: Duration,
    operation: &'static str,
}

impl Budget {
    fn new(limit: Duration, operation: &'static str) -> Self {
        Self {
            deadline: tokio_deadline_after(Instant::now(), limit),
            limit,
            operation,
        }
    }
}

impl HypervDriver {
    /// Checks the URL and credentials; no traffic until the first call (each NTLM connection
    /// logs in when it is opened).
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        let auth = AuthMode::for_url(&config.url)
            .map_err(|m| Error::InvalidConfig(format!("host '{}': {m}", config.name)))?;
        let transport = Transport::new(config).map_err(|e| e.into_error(&config.name))?;
        Ok(Self {
            host: config.name.clone(),
            auth,
            transport: Arc::new(transport),
            timeouts: config.timeouts,
        })
    }

    fn err(&self, e: HypervError) -> Error {
        e.into_error(&self.host)
    }

    /// Like [`Self::err`], with a missed deadline reported as `b`'s time-out.
    fn err_in(&self, e: HypervError, b: Budget) -> Error {
        match e {
            HypervError::Deadline => Error::Timeout {
                operation: b.operation,
                after: b.limit,
            },
            e => self.err(e),
        }
    }

    fn read_budget(&self, operation: &'static str) -> Budget {
        Budget::new(inner_limit(self.timeouts.read), operation)
    }

    fn op_budget(&self, operation: &'static str) -> Budget {
        Budget::new(inner_limit(self.timeouts.operation), operation)
    }

    fn target(name: &str) -> Result<Target, Error> {
        Target::parse(name).map_err(Error::InvalidConfig)
    }

    async fn run(&self, script: &str, deadline: Option<Instant>) -> Result<Output, HypervError> {
        Shell::new(self.transport.clone())
            .run(&ps::arguments(script), deadline)
            .await
    }

    /// Runs a script printing VM records; its error record, if any, is the error.
    async fn records(
        &self,
        script: &str,
        addressed: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<Vec<VmRecord>, HypervError> {
        let out = self.run(script, deadline).await?;
        if out.exit_code == ps::EXIT_AMBIGUOUS {
            let ids = model::parse_records(&out.stdout)?
                .into_iter()
                .map(|r| r.id)
                .collect();
            return Err(HypervError::Ambiguous {
                name: addressed.unwrap_or("").to_owned(),
                ids,
            });
        }
        if let Some(e) = ps::parse_stderr(&out.stderr) {
            return Err(HypervError::PowerShell(e));
        }
        if out.exit_code != 0 {
            return Err(HypervError::Output(format!(
                "exit code {} without an error record; stdout: {}",
                out.exit_code,
                crate::http::excerpt(&out.stdout)
            )));
        }
        model::parse_records(&out.stdout)
    }

    /// The one VM a script printed for `name`.
    fn one(name: &str, mut records: Vec<VmRecord>) -> Result<VmRecord, HypervError> {
        match records.len() {
            1 => Ok(records.remove(0)),
            0 => Err(HypervError::Output(format!(
                "no VM record printed for '{name}'"
            ))),
            _ => Err(HypervError::Ambiguous {
                name: name.to_owned(),
                ids: records.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    async fn act(
        &self,
        name: &str,
        action: Action,
        deadline: Option<Instant>,
    ) -> Result<Option<VmRecord>, HypervError> {
        let target = Target::parse(name).map_err(HypervError::Config)?;
        let mut records = self
            .records(&ps::action(&target, action), Some(name), deadline)
            .await?;
        Ok(records.pop())
    }

    /// Save-VM: memory to disk, the VM becomes Saved (`Suspended`); `resume` or `start`
    /// brings it back. Not part of the `Driver` trait (which has no save), so not reachable
    /// from the API yet.
    pub async fn save(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Save, "save").await
    }

    async fn lifecycle(
        &self,
        name: &str,
        action: Action,
        operation: &'static str,
    ) -> Result<(), Error> {
        let b = self.op_budget(operation);
        self.act(name, action, Some(b.deadline))
            .await
            .map(drop)
            .map_err(|e| self.err_in(e, b))
    }
}

#[async_trait]
impl Driver for HypervDriver {
    fn name(&self) -> &str {
        "hyperv"
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let b = self.read_budget("capabilities");
        let out = self
            .run(&ps::host_info(), Some(b.deadline))
            .await
            .map_err(|e| self.err_in(e, b))?;
        if let Some(e) = ps::parse_stderr(&out.stderr) {
            return Err(self.err(HypervError::PowerShell(e)));
        }
        let info: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout)
            .map_err(|e| self.err(HypervError::Output(format!("Get-VMHost facts: {e}"))))?;
        let mut details = std::collections::BTreeMap::new();
        for (ours, theirs) in [
            ("version", "OsVersion"),
            ("powershell_version", "PSVersion"),
            ("computer_name", "ComputerName"),
            ("logical_processors", "LogicalProcessorCount"),
            ("memory_capacity_bytes", "MemoryCapacity"),
        ] {
            if let Some(v) = info.get(theirs) {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                details.insert(ours.to_owned(), v);
            }
        }
        details.insert(
            "transport".into(),
            match self.auth {
                AuthMode::Basic => "WinRM over HTTPS, Basic".into(),
                AuthMode::NtlmEncrypted => "WinRM over HTTP, NTLM with message encryption".into(),
            },
        );
        details.insert(
            "migrate".into(),
            "unsupported: Move-VM needs Kerberos constrained delegation or CredSSP between hosts"
                .into(),
        );
        Ok(Capabilities {
            driver: "hyperv".into(),
            define: true,
            suspend: true,
            reboot: true,
            migrate: false,
            details,
        })
    }

    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        let b = self.read_budget("list");
        let records = self
            .records(&ps::list(), None, Some(b.deadline))
            .await
            .map_err(|e| self.err_in(e, b))?;
        Ok(records.iter().map(VmRecord::summary).collect())
    }

    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        let b = self.read_budget("get");
        let target = Self::target(name)?;
        let records = self
            .records(&ps::get(&target), Some(name), Some(b.deadline))
            .await
            .map_err(|e| self.err_in(e, b))?;
        let record = Self::one(name, records).map_err(|e| self.err(e))?;
        Ok(DomainInfo {
            summary: record.summary(),
            config: record.config()?,
        })
    }

    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error> {
        let spec = model::spec(config.config())?;
        Target::parse(&spec.name).map_err(Error::InvalidConfig)?;
        if spec.name.starts_with("id:") {
            return Err(Error::InvalidConfig(format!(
                "'{}': names starting with 'id:' are reserved for addressing VMs by id",
                spec.name
            )));
        }
        // Refused rather than defined without them (as the Proxmox and XAPI adapters do): a
        // "successful" define that silently lost the guest's disks or NICs is worse.
        for (field, n) in [
            ("devices.disks", config.devices.disks.len()),
            ("devices.interfaces", config.devices.interfaces.len()),
        ] {
            if n > 0 {
                return Err(Error::InvalidConfig(format!(
                    "'{}': {field}: the Hyper-V adapter defines name, memory, vCPUs and \
                     generation only and cannot create the {n} device(s) given; define \
                     without them and attach them on the host",
                    spec.name
                )));
            }
        }
        let b = self.op_budget("define");
        let records = self
            .records(&ps::define(&spec), Some(&spec.name), Some(b.deadline))
            .await
            .map_err(|e| self.err_in(e, b))?;
        let record = Self::one(&spec.name, records).map_err(|e| self.err(e))?;
        Ok(record.summary())
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Remove, "undefine").await
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Start, "start").await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        // The caller's time, never past the host's operation limit.
        let bound = timeout.min(inner_limit(self.timeouts.operation));
        let deadline = tokio_deadline_after(Instant::now(), bound);
        let timed_out = Error::Timeout {
            operation: "shutdown",
            after: bound,
        };
        let after = match self.act(name, Action::Shutdown, Some(deadline)).await {
            Ok(r) => r,
            Err(HypervError::Deadline) => return Err(timed_out),
            Err(e) => return Err(self.err(e)),
        };
        let mut state = after.map(|r| r.summary().state);
        // Stop-VM normally returns once the VM is off; if the host reported it still
        // stopping, poll until off or the caller's time is up.
        while state != Some(DomainState::Shutoff) {
            if deadline.saturating_duration_since(Instant::now()) < SHUTDOWN_POLL {
                return Err(timed_out);
            }
            tokio::time::sleep(SHUTDOWN_POLL).await;
            state = Some(self.get(name).await?.summary.state);
        }
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::TurnOff, "destroy").await
    }

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Suspend, "suspend").await
    }

    async fn resume(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Resume, "resume").await
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        self.lifecycle(name, Action::Reboot, "reboot").await
    }
}
