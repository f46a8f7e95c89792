//! `ProxmoxDriver`: the `Driver` trait over the PVE REST API.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use novacron_domain::{
    Capabilities, DomainInfo, DomainState, DomainSummary, Driver, Error, MigrationTarget,
    ValidatedDomain,
};
use reqwest::Method;
use serde_json::Value;

use crate::config::HostConfig;
use crate::http::{deadline_after, inner_limit, migration_limit};

use super::client::{Call, Client, RequestShape};
use super::error::PveError;
use super::model::{self, Guest, Kind};

const QEMU_STATUS: &str = "/nodes/{node}/qemu/{vmid}/status/current";
const QEMU_CONFIG: &str = "/nodes/{node}/qemu/{vmid}/config";
const LXC_STATUS: &str = "/nodes/{node}/lxc/{vmid}/status/current";
const LXC_CONFIG: &str = "/nodes/{node}/lxc/{vmid}/config";
/// How long after a graceful shutdown's own limit we still wait for PVE's task to report.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct ProxmoxDriver {
    client: Client,
}

impl ProxmoxDriver {
    /// No network traffic: the first call logs in (ticket) or just sends the token.
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        Ok(Self {
            client: Client::new(config)?,
        })
    }

    /// Starts (or stops) recording the shape of every request sent (method, path template,
    /// parameter names; never values), for checking the adapter against PVE's API schema.
    pub fn record_requests(&self, on: bool) {
        self.client.record(on);
    }

    pub fn recorded_requests(&self) -> Vec<RequestShape> {
        self.client.recorded()
    }

    fn host(&self) -> &str {
        self.client.host()
    }

    async fn guests(&self) -> Result<Vec<Guest>, Error> {
        let data = self
            .client
            .call(Call::new(Method::GET, "/cluster/resources", &[]).param("type", "vm"))
            .await?;
        let rows = data.as_array().ok_or_else(|| {
            PveError::Decode {
                what: "/cluster/resources".into(),
                detail: "data is not a list".into(),
            }
            .into_error(self.host())
        })?;
        Ok(rows.iter().filter_map(Guest::from_resource).collect())
    }

    async fn find(&self, name: &str) -> Result<Guest, Error> {
        let guests = self.guests().await?;
        model::resolve(&guests, name).cloned()
    }

    /// The qemu guest `name`; containers are refused for `operation`.
    async fn find_qemu(&self, name: &str, operation: &'static str) -> Result<Guest, Error> {
        let guest = self.find(name).await?;
        match guest.kind {
            Kind::Qemu => Ok(guest),
            Kind::Lxc => Err(self.unsupported_lxc(operation)),
        }
    }

    fn unsupported_lxc(&self, operation: &'static str) -> Error {
        tracing::debug!(host = self.host(), operation, "refused on a PVE container");
        Error::Unsupported {
            driver: "proxmox (lxc containers are read-only)".into(),
            operation,
        }
    }

    async fn status(&self, guest: &Guest) -> Result<Value, Error> {
        let vmid = guest.vmid.to_string();
        let template = match guest.kind {
            Kind::Qemu => QEMU_STATUS,
            Kind::Lxc => LXC_STATUS,
        };
        self.client
            .call(Call::new(
                Method::GET,
                template,
                &[("node", &guest.node), ("vmid", &vmid)],
            ))
            .await
    }

    fn state_of(status: &Value) -> DomainState {
        let s = |k: &str| status.get(k).and_then(Value::as_str);
        model::state(s("status").unwrap_or("unknown"), s("qmpstatus"), s("lock"))
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/<action>` and its task to the end.
    async fn power(
        &self,
        guest: &Guest,
        action: &'static str,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let vmid = guest.vmid.to_string();
        let template = format!("/nodes/{{node}}/qemu/{{vmid}}/status/{action}");
        let mut call = Call::new(
            Method::POST,
            &template,
            &[("node", &guest.node), ("vmid", &vmid)],
        );
        call.params = params;
        let upid = self.client.call(call).await?;
        self.wait(&upid, deadline, action).await
    }

    async fn wait(&self, upid: &Value, deadline: Instant, op: &'static str) -> Result<(), Error> {
        let upid = upid.as_str().ok_or_else(|| {
            PveError::Decode {
                what: op.into(),
                detail: format!("expected a task UPID, got {upid}"),
            }
            .into_error(self.host())
        })?;
        self.client.wait_task(upid, deadline, op).await
    }

    /// A lifecycle call's deadline: a little inside the host's operation limit, so PVE's task
    /// outcome (or our time-out naming it) is what the caller sees, not the outer cut-off.
    fn deadline(&self) -> Instant {
        deadline_after(
            Instant::now(),
            inner_limit(self.client.timeouts().operation),
        )
    }

    /// The nodes of the cluster, online ones first, each sorted by name.
    async fn nodes(&self) -> Result<Vec<(String, bool)>, Error> {
        let data = self
            .client
            .call(Call::new(Method::GET, "/nodes", &[]))
            .await?;
        let mut nodes: Vec<(String, bool)> = data
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let name = r.get("node")?.as_str()?.to_owned();
                        let online = r.get("status").and_then(Value::as_str) == Some("online");
                        Some((name, online))
                    })
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(nodes)
    }
}

#[async_trait]
impl Driver for ProxmoxDriver {
    fn name(&self) -> &str {
        "proxmox"
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let version = self
            .client
            .call(Call::new(Method::GET, "/version", &[]))
            .await?;
        let mut details = std::collections::BTreeMap::new();
        for key in ["version", "release", "repoid"] {
            if let Some(v) = version.get(key).and_then(Value::as_str) {
                details.insert(format!("pve_{key}"), v.to_owned());
            }
        }
        let nodes = self.nodes().await?;
        details.insert(
            "nodes".into(),
            nodes
                .iter()
                .map(|(n, online)| format!("{n}{}", if *online { "" } else { " (offline)" }))
                .collect::<Vec<_>>()
                .join(", "),
        );
        details.insert(
            "containers".into(),
            "lxc guests are listed read-only; lifecycle calls on them are unsupported".into(),
        );
        Ok(Capabilities {
            driver: "proxmox".into(),
            define: true,
            suspend: true,
            reboot: true,
            migrate: true,
            details,
        })
    }

    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        Ok(self.guests().await?.iter().map(Guest::summary).collect())
    }

    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        let guest = self.find(name).await?;
        let vmid = guest.vmid.to_string();
        let args = [("node", guest.node.as_str()), ("vmid", vmid.as_str())];
        let config_path = match guest.kind {
            Kind::Qemu => QEMU_CONFIG,
            Kind::Lxc => LXC_CONFIG,
        };
        let (status, config) = tokio::try_join!(
            self.status(&guest),
            self.client.call(Call::new(Method::GET, config_path, &args))
        )?;
        let config = model::domain_config(&guest, &config)?;
        Ok(DomainInfo {
            summary: DomainSummary {
                name: guest.display_name(),
                uuid: config.uuid.map(|u| u.to_string()),
                state: Self::state_of(&status),
            },
            config,
        })
    }

    /// Creates a qemu guest with the definition's name, UUID (smbios1), vCPUs (cores),
    /// memory and description on the first online node; a shut-off guest of that name is
    /// reconfigured instead. Devices are not translated: a definition with disks or NICs is
    /// refused rather than created without them.
    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error> {
        let devices = &config.devices;
        if !devices.disks.is_empty()
            || !devices.interfaces.is_empty()
            || !devices.hostdevs.is_empty()
        {
            return Err(Error::InvalidConfig(format!(
                "the proxmox driver defines name, UUID, vCPUs and memory only; '{}' has {} disk(s), \
                 {} interface(s) and {} host device(s), which need PVE storage and bridge choices \
                 this driver does not make",
                config.name,
                devices.disks.len(),
                devices.interfaces.len(),
                devices.hostdevs.len()
            )));
        }
        let memory_mib = config.memory.memory_kib.div_ceil(1024).max(16);
        let mut params: Vec<(&'static str, String)> = vec![
            ("cores", config.vcpu.count.to_string()),
            ("sockets", "1".into()),
            ("memory", memory_mib.to_string()),
        ];
        if let Some(d) = &config.description {
            params.push(("description", d.clone()));
        }
        if let Some(u) = &config.uuid {
            params.push(("smbios1", format!("uuid={u}")));
        }
        let guests = self.guests().await?;
        match model::resolve(&guests, &config.name) {
            Ok(existing) => {
                if existing.kind == Kind::Lxc {
                    return Err(self.unsupported_lxc("define"));
                }
                let state = existing.state();
                if state != DomainState::Shutoff {
                    return Err(Error::WrongState {
                        name: config.name.clone(),
                        state,
                        operation: "redefine",
                    });
                }
                let vmid = existing.vmid.to_string();
                let mut call = Call::new(
                    Method::PUT,
                    QEMU_CONFIG,
                    &[("node", &existing.node), ("vmid", &vmid)],
                );
                call.params = params;
                self.client.call(call).await?;
                return Ok(DomainSummary {
                    name: config.name.clone(),
                    uuid: config.uuid.map(|u| u.to_string()),
                    state,
                });
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let node = self
            .nodes()
            .await?
            .into_iter()
            .find(|(_, online)| *online)
            .map(|(n, _)| n)
            .ok_or_else(|| Error::Unavailable {
                host: self.host().to_owned(),
                reason: "no PVE node is online to create the guest on".into(),
            })?;
        let nextid = self
            .client
            .call(Call::new(Method::GET, "/cluster/nextid", &[]))
            .await?;
        let vmid = model::as_u32(&nextid).ok_or_else(|| {
            PveError::Decode {
                what: "/cluster/nextid".into(),
                detail: format!("not a VMID: {nextid}"),
            }
            .into_error(self.host())
        })?;
        let vmid_s = vmid.to_string();
        let mut call = Call::new(Method::POST, "/nodes/{node}/qemu", &[("node", &node)])
            .param("vmid", vmid)
            .param("name", &config.name);
        call.params.extend(params);
        let upid = self.client.call(call).await?;
        self.wait(&upid, self.deadline(), "define").await?;
        tracing::info!(host = self.host(), vmid = %vmid_s, node = %node, name = %config.name, "PVE guest created");
        Ok(DomainSummary {
            name: config.name.clone(),
            uuid: config.uuid.map(|u| u.to_string()),
            state: DomainState::Shutoff,
        })
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "undefine").await?;
        let vmid = guest.vmid.to_string();
        let call = Call::new(
            Method::DELETE,
            "/nodes/{node}/qemu/{vmid}",
            &[("node", &guest.node), ("vmid", &vmid)],
        )
        // Also drop it from backup jobs, replication and HA, as the UI's "purge" does.
        .param("purge", 1);
        let upid = self.client.call(call).await?;
        self.wait(&upid, self.deadline(), "undefine").await
    }

    /// Also resumes a hibernated (suspended-to-disk) guest: PVE restores its saved state on start.
    async fn start(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "start").await?;
        self.power(&guest, "start", Vec::new(), self.deadline())
            .await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        // The caller's time plus a grace for PVE's task, never past the host's limit.
        let bound = timeout
            .saturating_add(SHUTDOWN_GRACE)
            .min(inner_limit(self.client.timeouts().operation));
        let deadline = deadline_after(started, bound);
        let guest = self.find_qemu(name, "shutdown").await?;
        // PVE's own limit, whole seconds; it leaves the guest running when it expires.
        let secs = timeout.min(bound).as_secs_f64().ceil().max(1.0) as u64;
        let outcome = self
            .power(
                &guest,
                "shutdown",
                vec![("timeout", secs.to_string())],
                deadline,
            )
            .await;
        match outcome {
            Ok(()) => {}
            Err(Error::Vendor {
                code: novacron_domain::ErrorCode::Timeout,
                ..
            }) => {
                return Err(Error::Timeout {
                    operation: "shutdown",
                    after: timeout,
                })
            }
            Err(e) => return Err(e),
        }
        // The task has ended; an HA-managed guest only stops once the HA manager acts.
        let mut pause = Duration::from_millis(20);
        loop {
            if Self::state_of(&self.status(&guest).await?) == DomainState::Shutoff {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: "shutdown",
                    after: started.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "destroy").await?;
        self.power(&guest, "stop", Vec::new(), self.deadline())
            .await
    }

    /// PVE's suspend without `todisk` is a pause (QEMU `stop`): our Paused.
    async fn suspend(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "suspend").await?;
        self.power(&guest, "suspend", Vec::new(), self.deadline())
            .await
    }

    /// A paused guest continues (`status/resume`); a hibernated one is started from its saved
    /// state (`status/start`, which is how PVE resumes those).
    async fn resume(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "resume").await?;
        let state = Self::state_of(&self.status(&guest).await?);
        match state {
            DomainState::Paused => {
                self.power(&guest, "resume", Vec::new(), self.deadline())
                    .await
            }
            DomainState::Suspended => {
                self.power(&guest, "start", Vec::new(), self.deadline())
                    .await
            }
            // PVE would accept `resume` on a running guest and do nothing; say what it is.
            state => Err(Error::WrongState {
                name: name.to_owned(),
                state,
                operation: "resume",
            }),
        }
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        let guest = self.find_qemu(name, "reboot").await?;
        self.power(&guest, "reboot", Vec::new(), self.deadline())
            .await
    }

    /// PVE's own migration to another node of the cluster: `target.uri` is the node name
    /// (`pve2`, or `node:pve2`). A running guest moves live (`online=1`); `live: false` on a
    /// running guest is refused rather than stopping it.
    async fn migrate(&self, name: &str, target: &MigrationTarget) -> Result<(), Error> {
        let limit = migration_limit(
            target.timeout,
            inner_limit(self.client.timeouts().operation),
            self.host(),
        );
        let deadline = deadline_after(Instant::now(), limit);
        let guest = self.find_qemu(name, "migrate").await?;
        let to = target.uri.strip_prefix("node:").unwrap_or(&target.uri);
        let nodes = self.nodes().await?;
        if !nodes.iter().any(|(n, _)| n == to) {
            let known: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::InvalidConfig(format!(
                "migration target '{to}' is not a node of this cluster (nodes: {})",
                known.join(", ")
            )));
        }
        if to == guest.node {
            return Err(Error::InvalidConfig(format!(
                "'{name}' is already on node '{to}'"
            )));
        }
        let running = guest.status == "running";
        if running && !target.live {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: guest.state(),
                operation: "migrate offline",
            });
        }
        let vmid = guest.vmid.to_string();
        let mut call = Call::new(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/migrate",
            &[("node", &guest.node), ("vmid", &vmid)],
        )
        .param("target", to);
        if running {
            call = call.param("online", 1);
        }
        let upid = self.client.call(call).await?;
        self.wait(&upid, deadline, "migrate").await
    }
}
