//! `Driver` over the XenAPI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use novacron_domain::{
    Capabilities, DomainInfo, DomainSummary, Driver, Error, MigrationTarget, ValidatedDomain,
};

use super::client::{Client, Protocol};
use super::error::XapiError;
use super::methods::{self, Method};
use super::model::{PowerState, Shape, VmRecord};
use crate::config::{HostConfig, Timeouts};
use crate::http::{deadline_after, inner_limit, migration_limit};

/// The prefix that addresses a VM (or a migration target host) by its XAPI UUID.
pub const ID_PREFIX: &str = "id:";
/// How often `shutdown` re-reads the power state after the shutdown task finished.
const STATE_POLL: Duration = Duration::from_millis(100);

/// A XenServer / XCP-ng pool (or standalone host) through XAPI.
pub struct XapiDriver {
    /// Shared with the clean-up of tasks whose caller went away.
    client: Arc<Client>,
    timeouts: Timeouts,
}

impl XapiDriver {
    /// No network traffic: the session is logged in on first use.
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        Ok(Self {
            client: Arc::new(Client::new(config)?),
            timeouts: config.timeouts,
        })
    }

    /// Logs the session out (best effort). Dropping the driver without it leaves the session
    /// to XAPI's idle expiry.
    pub async fn logout(&self) {
        self.client.logout().await;
    }

    /// Whether the host turned out to speak JSON-RPC (`Some(true)`) or only XML-RPC.
    pub fn speaks_jsonrpc(&self) -> Option<bool> {
        self.client.protocol().map(|p| p == Protocol::JsonRpc)
    }

    /// A lifecycle call's deadline and its length: a little inside the host's operation
    /// limit, so a task that runs too long is cancelled and destroyed here, with XAPI's
    /// answer, before the outer limit abandons the call.
    fn budget(&self) -> (Instant, Duration) {
        let limit = inner_limit(self.timeouts.operation);
        (deadline_after(Instant::now(), limit), limit)
    }

    fn err(&self, e: XapiError, subject: Option<&str>) -> Error {
        e.into_error(self.client.host(), subject)
    }

    async fn call(&self, m: &Method, args: Vec<Value>, subject: &str) -> Result<Value, Error> {
        self.client
            .call(m, args)
            .await
            .map_err(|e| self.err(e, Some(subject)))
    }

    async fn record(&self, vm_ref: &str, subject: &str) -> Result<VmRecord, Error> {
        let r = self
            .call(&methods::VM_GET_RECORD, vec![json!(vm_ref)], subject)
            .await?;
        VmRecord::parse(&r).map_err(|detail| self.malformed("VM.get_record", detail))
    }

    fn malformed(&self, method: &str, detail: String) -> Error {
        self.err(
            XapiError::Malformed {
                method: method.into(),
                detail,
            },
            None,
        )
    }

    /// The guest `name` designates: a unique name label, or `id:<uuid>`. Templates, snapshots
    /// and control domains are not guests and are never found.
    async fn resolve(&self, name: &str) -> Result<(String, VmRecord), Error> {
        let refs: Vec<String> = if let Some(uuid) = name.strip_prefix(ID_PREFIX) {
            match self
                .client
                .call(&methods::VM_GET_BY_UUID, vec![json!(uuid)])
                .await
            {
                Ok(r) => r.as_str().map(str::to_owned).into_iter().collect(),
                Err(XapiError::Fault(f)) if f.code == "UUID_INVALID" => Vec::new(),
                Err(e) => return Err(self.err(e, Some(name))),
            }
        } else {
            let v = self
                .call(&methods::VM_GET_BY_NAME_LABEL, vec![json!(name)], name)
                .await?;
            refs_of(&v)
        };
        let mut guests = Vec::new();
        for r in refs {
            match self.record(&r, name).await {
                Ok(rec) if rec.is_guest() => guests.push((r, rec)),
                Ok(_) => {}
                // Gone between the two calls.
                Err(e) if e.code() == novacron_domain::ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match guests.len() {
            0 => Err(Error::not_found(novacron_domain::Kind::Domain, name)),
            1 => Ok(guests.remove(0)),
            _ => Err(ambiguous(name, guests.iter().map(|(_, r)| r.uuid.as_str()))),
        }
    }

    /// Runs a power operation on `name` as a task within the host's operation time limit.
    async fn power(
        &self,
        name: &str,
        method: &Method,
        extra: Vec<Value>,
        operation: &'static str,
    ) -> Result<(), Error> {
        let (deadline, limit) = self.budget();
        let (vm_ref, _) = self.resolve(name).await?;
        self.task(name, method, vm_ref, extra, operation, deadline, limit)
            .await
            .map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    async fn task(
        &self,
        name: &str,
        method: &Method,
        vm_ref: String,
        extra: Vec<Value>,
        operation: &'static str,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Value, Error> {
        let mut args = vec![Value::String(vm_ref)];
        args.extend(extra);
        self.client
            .run_task(method, args, operation, deadline, limit)
            .await
            .map_err(|e| self.err(e, Some(name)))
    }

    async fn host_ref(&self, target: &str) -> Result<String, Error> {
        let refs = if let Some(uuid) = target.strip_prefix(ID_PREFIX) {
            match self
                .client
                .call(&methods::HOST_GET_BY_UUID, vec![json!(uuid)])
                .await
            {
                Ok(r) => r.as_str().map(str::to_owned).into_iter().collect(),
                Err(XapiError::Fault(f)) if f.code == "UUID_INVALID" => Vec::new(),
                Err(e) => return Err(self.err(e, Some(target))),
            }
        } else {
            let v = self
                .call(
                    &methods::HOST_GET_BY_NAME_LABEL,
                    vec![json!(target)],
                    target,
                )
                .await?;
            refs_of(&v)
        };
        match refs.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::InvalidConfig(format!(
                "migration target: no host '{target}' in the pool of '{}' (give a host name \
                 label or id:<host uuid>; XAPI pool_migrate moves VMs within one pool)",
                self.client.host()
            ))),
            many => Err(Error::InvalidConfig(format!(
                "migration target: host name '{target}' matches {} hosts; use id:<host uuid>",
                many.len()
            ))),
        }
    }

    /// VCPUs and memory of a halted VM, in an order XAPI accepts (at_startup <= max always).
    async fn reshape(&self, vm_ref: &str, current: &VmRecord, shape: &Shape) -> Result<(), Error> {
        let name = shape.name.as_str();
        let set_max = (&methods::VM_SET_VCPUS_MAX, shape.vcpus_max);
        let set_start = (&methods::VM_SET_VCPUS_AT_STARTUP, shape.vcpus_at_startup);
        let order = if shape.vcpus_max >= current.vcpus_at_startup {
            [set_max, set_start]
        } else {
            [set_start, set_max]
        };
        for (m, v) in order {
            self.call(m, vec![json!(vm_ref), json!(v)], name).await?;
        }
        let [smin, smax, dmin, dmax] = shape.memory_limits();
        self.call(
            &methods::VM_SET_MEMORY_LIMITS,
            vec![
                json!(vm_ref),
                json!(smin),
                json!(smax),
                json!(dmin),
                json!(dmax),
            ],
            name,
        )
        .await?;
        self.call(
            &methods::VM_SET_NAME_DESCRIPTION,
            vec![json!(vm_ref), json!(shape.description)],
            name,
        )
        .await?;
        Ok(())
    }
}

fn refs_of(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn ambiguous<'a>(name: &str, uuids: impl Iterator<Item = &'a str>) -> Error {
    let ids: Vec<String> = uuids.map(|u| format!("{ID_PREFIX}{u}")).collect();
    Error::InvalidConfig(format!(
        "name '{name}' matches {} VMs on this host ({}); address one by its id",
        ids.len(),
        ids.join(", ")
    ))
}

#[async_trait]
impl Driver for XapiDriver {
    fn name(&self) -> &str {
        "xapi"
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let host = self.client.host().to_owned();
        let pools = self.call(&methods::POOL_GET_ALL, Vec::new(), &host).await?;
        let pool = refs_of(&pools)
            .into_iter()
            .next()
            .ok_or_else(|| self.malformed("pool.get_all", "no pool".into()))?;
        let master = self
            .call(&methods::POOL_GET_MASTER, vec![json!(pool)], &host)
            .await?;
        let master = master
            .as_str()
            .ok_or_else(|| self.malformed("pool.get_master", format!("{master}")))?
            .to_owned();
        let versions = self
            .call(
                &methods::HOST_GET_SOFTWARE_VERSION,
                vec![json!(master)],
                &host,
            )
            .await?;
        let major = self
            .call(
                &methods::HOST_GET_API_VERSION_MAJOR,
                vec![json!(master)],
                &host,
            )
            .await?;
        let minor = self
            .call(
                &methods::HOST_GET_API_VERSION_MINOR,
                vec![json!(master)],
                &host,
            )
            .await?;
        let mut details = BTreeMap::new();
        for key in [
            "product_brand",
            "product_version",
            "platform_name",
            "xapi",
            "xen",
        ] {
            if let Some(v) = versions.get(key).and_then(Value::as_str) {
                details.insert(key.to_owned(), v.to_owned());
            }
        }
        let num = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        details.insert(
            "api_version".into(),
            format!("{}.{}", num(&major), num(&minor)),
        );
        if let Some(p) = self.client.protocol() {
            let p = match p {
                Protocol::JsonRpc => "json-rpc",
                Protocol::XmlRpc => "xml-rpc",
            };
            details.insert("protocol".into(), p.into());
        }
        Ok(Capabilities {
            driver: "xapi".into(),
            define: true,
            suspend: true,
            reboot: true,
            migrate: true,
            details,
        })
    }

    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        let host = self.client.host().to_owned();
        let all = self
            .call(&methods::VM_GET_ALL_RECORDS, Vec::new(), &host)
            .await?;
        let Value::Object(map) = all else {
            return Err(self.malformed("VM.get_all_records", "not a map of records".into()));
        };
        let mut out = Vec::with_capacity(map.len());
        for (_, r) in map {
            let rec = VmRecord::parse(&r)
                .map_err(|detail| self.malformed("VM.get_all_records", detail))?;
            if rec.is_guest() {
                out.push(rec.summary());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.uuid.cmp(&b.uuid)));
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        let (_, rec) = self.resolve(name).await?;
        Ok(DomainInfo {
            summary: rec.summary(),
            config: rec.config(),
        })
    }

    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error> {
        let shape = Shape::from_config(config.config()).map_err(Error::InvalidConfig)?;
        let name = shape.name.clone();
        match self.resolve(&name).await {
            Ok((vm_ref, current)) => {
                if current.power != PowerState::Halted {
                    return Err(Error::WrongState {
                        name,
                        state: current.power.state(),
                        operation: "redefine",
                    });
                }
                self.reshape(&vm_ref, &current, &shape).await?;
                Ok(self.record(&vm_ref, &name).await?.summary())
            }
            Err(Error::NotFound { .. }) => {
                let vm_ref = self
                    .call(&methods::VM_CREATE, vec![shape.create_record()], &name)
                    .await?;
                let vm_ref = vm_ref
                    .as_str()
                    .ok_or_else(|| self.malformed("VM.create", format!("{vm_ref}")))?
                    .to_owned();
                Ok(self.record(&vm_ref, &name).await?.summary())
            }
            Err(e) => Err(e),
        }
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        let (vm_ref, rec) = self.resolve(name).await?;
        if rec.power != PowerState::Halted {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: rec.power.state(),
                operation: "undefine",
            });
        }
        self.call(&methods::VM_DESTROY, vec![json!(vm_ref)], name)
            .await
            .map(|_| ())
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        // start_paused = false, force = false
        self.power(
            name,
            &methods::VM_START,
            vec![json!(false), json!(false)],
            "start",
        )
        .await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let begin = Instant::now();
        // The caller's timeout, but never past the host's operation limit.
        let bound = timeout.min(inner_limit(self.timeouts.operation));
        let deadline = deadline_after(begin, bound);
        let (vm_ref, _) = self.resolve(name).await?;
        self.task(
            name,
            &methods::VM_CLEAN_SHUTDOWN,
            vm_ref.clone(),
            Vec::new(),
            "shutdown",
            deadline,
            bound,
        )
        .await?;
        // The task ends when XAPI has halted the domain; confirm rather than assume.
        loop {
            if self.record(&vm_ref, name).await?.power == PowerState::Halted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: "shutdown",
                    after: bound,
                });
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        self.power(name, &methods::VM_HARD_SHUTDOWN, Vec::new(), "destroy")
            .await
    }

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        self.power(name, &methods::VM_SUSPEND, Vec::new(), "suspend")
            .await
    }

    async fn resume(&self, name: &str) -> Result<(), Error> {
        let (deadline, limit) = self.budget();
        let (vm_ref, rec) = self.resolve(name).await?;
        if rec.power == PowerState::Paused {
            self.task(
                name,
                &methods::VM_UNPAUSE,
                vm_ref,
                Vec::new(),
                "resume",
                deadline,
                limit,
            )
            .await?;
        } else {
            // From Suspended; any other state gets XAPI's own VM_BAD_POWER_STATE.
            self.task(
                name,
                &methods::VM_RESUME,
                vm_ref,
                vec![json!(false), json!(false)],
                "resume",
                deadline,
                limit,
            )
            .await?;
        }
        Ok(())
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        self.power(name, &methods::VM_CLEAN_REBOOT, Vec::new(), "reboot")
            .await
    }

    async fn migrate(&self, name: &str, target: &MigrationTarget) -> Result<(), Error> {
        let begin = Instant::now();
        let limit = migration_limit(
            target.timeout,
            inner_limit(self.timeouts.operation),
            self.client.host(),
        );
        let deadline = deadline_after(begin, limit);
        let (vm_ref, rec) = self.resolve(name).await?;
        if rec.power != PowerState::Running && rec.power != PowerState::Paused {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: rec.power.state(),
                operation: "migrate",
            });
        }
        let host_name = target.uri.strip_prefix("xapi:").unwrap_or(&target.uri);
        let host_ref = self.host_ref(host_name).await?;
        let options = json!({"live": if target.live { "true" } else { "false" }});
        self.task(
            name,
            &methods::VM_POOL_MIGRATE,
            vm_ref,
            vec![json!(host_ref), options],
            "migrate",
            deadline,
            limit,
        )
        .await
        .map(|_| ())
    }
}
