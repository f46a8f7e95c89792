//! `VsphereDriver`: the `Driver` trait over the vim25 client, plus snapshots.

use std::time::Duration;

use async_trait::async_trait;
use novacron_domain::{
    Capabilities, DomainInfo, DomainState, DomainSummary, Driver, Error, MigrationTarget,
    ValidatedDomain,
};

use super::client::{Client, WaitError};
use super::error::VsphereError;
use super::model::{self, PowerState, Vm};
use super::soap::{MoRef, Request};
use crate::config::HostConfig;

/// Power-state polling while a guest shuts down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(250);

pub struct VsphereDriver {
    client: Client,
    host: String,
    operation_limit: Duration,
}

/// One snapshot of a VM, flattened from the snapshot tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// The snapshot's managed object id (`snapshot-12`).
    pub id: String,
    pub description: String,
    /// Power state the VM had when the snapshot was taken.
    pub state: Option<DomainState>,
    pub current: bool,
}

impl VsphereDriver {
    /// No network traffic: the login happens on the first call.
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        Ok(Self {
            client: Client::new(config).map_err(|e| e.into_error(&config.name))?,
            host: config.name.clone(),
            // Inside the host's limit, so a task's time-out is ours (with vSphere's state)
            // rather than the outer cut-off.
            operation_limit: crate::http::inner_limit(config.timeouts.operation),
        })
    }

    fn err(&self, e: VsphereError) -> Error {
        e.into_error(&self.host)
    }

    fn wait_err(&self, e: WaitError) -> Error {
        match e {
            WaitError::Vsphere(e) => self.err(e),
            WaitError::Timeout { operation, limit } => Error::Timeout {
                operation,
                after: limit,
            },
        }
    }

    /// Ends the vSphere session (it would otherwise expire on the server's idle timer).
    pub async fn logout(&self) -> Result<(), Error> {
        self.client.logout().await.map_err(|e| self.err(e))
    }

    async fn all_vms(&self) -> Result<Vec<Vm>, Error> {
        let mut retried = false;
        let objects = loop {
            let view = self.client.vm_view().await.map_err(|e| self.err(e))?;
            match self
                .client
                .retrieve_view(&view, "VirtualMachine", model::VM_PATHS)
                .await
            {
                Ok(objects) => break objects,
                // The session ended (and with it the view) or the view is gone: once more
                // with a new view, on a new session if need be.
                Err(e)
                    if !retried
                        && matches!(
                            e.fault_name(),
                            Some("NotAuthenticated" | "ManagedObjectNotFound")
                        ) =>
                {
                    tracing::debug!(host = %self.host, error = %e, "VM view lost; recreating");
                    self.client.drop_vm_view();
                    retried = true;
                }
                Err(e) => return Err(self.err(e)),
            }
        };
        Ok(objects
            .iter()
            .filter_map(Vm::from_object)
            .filter(|vm| !vm.template)
            .collect())
    }

    /// The one VM `name` addresses: `id:<moref>` exactly, else by name (refused when several
    /// VMs share it).
    async fn resolve(&self, name: &str) -> Result<Vm, Error> {
        if let Some(id) = name.strip_prefix("id:") {
            let moref = MoRef::new("VirtualMachine", id);
            let found = self
                .client
                .retrieve_objects(&[moref], "VirtualMachine", model::VM_PATHS)
                .await;
            return match found {
                Ok(objects) => objects
                    .iter()
                    .filter_map(Vm::from_object)
                    .find(|vm| !vm.template)
                    .ok_or_else(|| Error::not_found(novacron_domain::Kind::Domain, name)),
                Err(e) if e.fault_name() == Some("ManagedObjectNotFound") => {
                    Err(Error::not_found(novacron_domain::Kind::Domain, name))
                }
                Err(e) => Err(self.err(e)),
            };
        }
        let mut matching: Vec<Vm> = self
            .all_vms()
            .await?
            .into_iter()
            .filter(|vm| vm.name == name)
            .collect();
        match matching.len() {
            0 => Err(Error::not_found(novacron_domain::Kind::Domain, name)),
            1 => Ok(matching.remove(0)),
            _ => {
                let ids: Vec<String> = matching
                    .iter()
                    .map(|vm| format!("id:{}", vm.moref.value))
                    .collect();
                Err(Error::InvalidConfig(format!(
                    "name '{name}' matches {} VMs on host '{}': {}; address one by its id",
                    matching.len(),
                    self.host,
                    ids.join(", ")
                )))
            }
        }
    }

    /// Runs `<method>(_this = vm)` as a task to completion.
    async fn vm_task(
        &self,
        vm: &Vm,
        method: &'static str,
        operation: &'static str,
    ) -> Result<(), Error> {
        self.client
            .run_task(operation, self.operation_limit, |_| {
                Request::new(method, &vm.moref)
            })
            .await
            .map(|_| ())
            .map_err(|e| self.wait_err(e))
    }

    async fn power_state(&self, vm: &MoRef) -> Result<Option<PowerState>, Error> {
        let objs = self
            .client
            .retrieve_objects(
                std::slice::from_ref(vm),
                "VirtualMachine",
                &["runtime.powerState"],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(objs
            .first()
            .and_then(|o| o.text("runtime.powerState"))
            .and_then(PowerState::parse))
    }

    /// Where `define` puts a VM: the first datacenter's VM folder, the root resource pool of
    /// its first compute resource, and its accessible datastore with the most free space.
    async fn placement(&self) -> Result<(MoRef, MoRef, String), Error> {
        let root = self
            .client
            .session()
            .await
            .map_err(|e| self.err(e))?
            .content
            .root_folder
            .clone();
        let dcs = self
            .objects_in(&root, "Datacenter", &["vmFolder", "datastore"])
            .await?;
        let dc = dcs
            .first()
            .ok_or_else(|| self.no_placement("no datacenter"))?;
        let folder = dc
            .props
            .get("vmFolder")
            .and_then(MoRef::from_node)
            .ok_or_else(|| self.no_placement("the datacenter has no VM folder"))?;
        let computes = self
            .objects_in(&dc.obj, "ComputeResource", &["resourcePool"])
            .await?;
        let pool = computes
            .iter()
            .find_map(|c| c.props.get("resourcePool").and_then(MoRef::from_node))
            .ok_or_else(|| self.no_placement("no compute resource with a resource pool"))?;
        let datastores: Vec<MoRef> = dc
            .props
            .get("datastore")
            .map(|v| v.children.iter().filter_map(MoRef::from_node).collect())
            .unwrap_or_default();
        let infos = self
            .client
            .retrieve_objects(
                &datastores,
                "Datastore",
                &["summary.name", "summary.accessible", "summary.freeSpace"],
            )
            .await
            .map_err(|e| self.err(e))?;
        let datastore = infos
            .iter()
            .filter(|d| d.text("summary.accessible") == Some("true"))
            .max_by_key(|d| {
                d.text("summary.freeSpace")
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0)
            })
            .and_then(|d| d.text("summary.name"))
            .ok_or_else(|| self.no_placement("no accessible datastore"))?
            .to_owned();
        Ok((folder, pool, datastore))
    }

    fn no_placement(&self, why: &str) -> Error {
        Error::Remote {
            host: self.host.clone(),
            message: format!("cannot place a new VM: {why}"),
        }
    }

    /// Objects of `kind` under `container` (through a short-lived ContainerView).
    async fn objects_in(
        &self,
        container: &MoRef,
        kind: &str,
        paths: &[&str],
    ) -> Result<Vec<super::client::ObjectContent>, Error> {
        let view = self
            .client
            .create_view(container, kind)
            .await
            .map_err(|e| self.err(e))?;
        let result = self.client.retrieve_view(&view, kind, paths).await;
        self.client.destroy_view(&view).await;
        result.map_err(|e| self.err(e))
    }

    /// The host a migration URI names: `host:<name>` or `host:id:<moref>`.
    async fn target_host(&self, uri: &str) -> Result<(MoRef, Option<MoRef>), Error> {
        let wanted = uri.strip_prefix("host:").ok_or_else(|| {
            Error::InvalidConfig(format!(
                "vSphere migration target '{uri}': expected host:<host name> or host:id:<host id>"
            ))
        })?;
        let root = self
            .client
            .session()
            .await
            .map_err(|e| self.err(e))?
            .content
            .root_folder
            .clone();
        let hosts = self
            .objects_in(&root, "HostSystem", &["name", "parent"])
            .await?;
        let found: Vec<_> = hosts
            .iter()
            .filter(|h| match wanted.strip_prefix("id:") {
                Some(id) => h.obj.value == id,
                None => h.text("name") == Some(wanted),
            })
            .collect();
        let host = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::InvalidConfig(format!(
                    "migration target '{uri}': no such host on '{}'",
                    self.host
                )))
            }
            many => {
                return Err(Error::InvalidConfig(format!(
                    "migration target '{uri}' matches {} hosts; use host:id:<id>",
                    many.len()
                )))
            }
        };
        // The target's root pool, so a move into another cluster lands in a valid pool.
        let pool = match host.props.get("parent").and_then(MoRef::from_node) {
            Some(parent) => self
                .client
                .retrieve_objects(
                    std::slice::from_ref(&parent),
                    &parent.kind,
                    &["resourcePool"],
                )
                .await
                .map_err(|e| self.err(e))?
                .first()
                .and_then(|c| c.props.get("resourcePool").and_then(MoRef::from_node)),
            None => None,
        };
        Ok((host.obj.clone(), pool))
    }

    /// The managed object id (`vm-42`) of the VM `name` addresses; `id:<it>` addresses it
    /// exactly even when names repeat.
    pub async fn id_of(&self, name: &str) -> Result<String, Error> {
        Ok(self.resolve(name).await?.moref.value)
    }

    /// The name of the host VM `name` runs on (where a migration put it).
    pub async fn host_of(&self, name: &str) -> Result<Option<String>, Error> {
        let vm = self.resolve(name).await?;
        let Some(host) = vm.host else {
            return Ok(None);
        };
        let objs = self
            .client
            .retrieve_objects(&[host], "HostSystem", &["name"])
            .await
            .map_err(|e| self.err(e))?;
        Ok(objs.first().and_then(|o| o.text("name")).map(str::to_owned))
    }

    /// The VM's snapshots, depth first.
    pub async fn snapshots(&self, name: &str) -> Result<Vec<SnapshotInfo>, Error> {
        let vm = self.resolve(name).await?;
        let objs = self
            .client
            .retrieve_objects(
                &[vm.moref],
                "VirtualMachine",
                &["snapshot.rootSnapshotList", "snapshot.currentSnapshot"],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(o) = objs.first() else {
            return Ok(Vec::new());
        };
        let current = o.text("snapshot.currentSnapshot").map(str::to_owned);
        let mut out = Vec::new();
        if let Some(list) = o.props.get("snapshot.rootSnapshotList") {
            // The value is an ArrayOfVirtualMachineSnapshotTree; its items nest by
            // childSnapshotList (depth bounded by the XML parser).
            let mut stack: Vec<&super::xml::Node> = list.children.iter().rev().collect();
            while let Some(tree) = stack.pop() {
                if let Some(snap) = tree.child("snapshot").and_then(MoRef::from_node) {
                    out.push(SnapshotInfo {
                        name: tree.child_text("name").unwrap_or("").to_owned(),
                        current: current.as_deref() == Some(snap.value.as_str()),
                        id: snap.value,
                        description: tree.child_text("description").unwrap_or("").to_owned(),
                        state: tree
                            .child_text("state")
                            .and_then(PowerState::parse)
                            .map(PowerState::domain_state),
                    });
                }
                stack.extend(
                    tree.children_named("childSnapshotList")
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev(),
                );
            }
        }
        Ok(out)
    }

    /// Takes a snapshot (`memory`: include the running guest's memory); its id.
    pub async fn create_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        description: &str,
        memory: bool,
    ) -> Result<String, Error> {
        let vm = self.resolve(name).await?;
        let result = self
            .client
            .run_task("create snapshot", self.operation_limit, |_| {
                let mut r = Request::new("CreateSnapshot_Task", &vm.moref);
                r.text("name", snapshot)
                    .text("description", description)
                    .text("memory", if memory { "true" } else { "false" })
                    .text("quiesce", "false");
                r
            })
            .await
            .map_err(|e| self.wait_err(e))?;
        result
            .as_ref()
            .and_then(MoRef::from_node)
            .map(|m| m.value)
            .ok_or_else(|| Error::Remote {
                host: self.host.clone(),
                message: "CreateSnapshot_Task succeeded without naming the snapshot".into(),
            })
    }

    /// The snapshot of VM `name` called `snapshot` (or `id:<snapshot id>`).
    async fn find_snapshot(&self, name: &str, snapshot: &str) -> Result<MoRef, Error> {
        let all = self.snapshots(name).await?;
        let matching: Vec<&SnapshotInfo> = all
            .iter()
            .filter(|s| match snapshot.strip_prefix("id:") {
                Some(id) => s.id == id,
                None => s.name == snapshot,
            })
            .collect();
        match matching.as_slice() {
            [one] => Ok(MoRef::new("VirtualMachineSnapshot", &one.id)),
            [] => Err(Error::not_found(
                novacron_domain::Kind::Snapshot,
                format!("{name}/{snapshot}"),
            )),
            many => Err(Error::InvalidConfig(format!(
                "snapshot name '{snapshot}' of '{name}' matches {}: {}; use id:<snapshot id>",
                many.len(),
                many.iter()
                    .map(|s| format!("id:{}", s.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub async fn revert_to_snapshot(&self, name: &str, snapshot: &str) -> Result<(), Error> {
        let snap = self.find_snapshot(name, snapshot).await?;
        self.client
            .run_task("revert to snapshot", self.operation_limit, |_| {
                Request::new("RevertToSnapshot_Task", &snap)
            })
            .await
            .map(|_| ())
            .map_err(|e| self.wait_err(e))
    }

    pub async fn remove_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        remove_children: bool,
    ) -> Result<(), Error> {
        let snap = self.find_snapshot(name, snapshot).await?;
        self.client
            .run_task("remove snapshot", self.operation_limit, |_| {
                let mut r = Request::new("RemoveSnapshot_Task", &snap);
                r.text(
                    "removeChildren",
                    if remove_children { "true" } else { "false" },
                );
                r
            })
            .await
            .map(|_| ())
            .map_err(|e| self.wait_err(e))
    }
}

#[async_trait]
impl Driver for VsphereDriver {
    fn name(&self) -> &str {
        "vsphere"
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let session = self.client.session().await.map_err(|e| self.err(e))?;
        let about = &session.content.about;
        let details = [
            ("product", &about.full_name),
            ("product_name", &about.name),
            ("version", &about.version),
            ("build", &about.build),
            ("api_type", &about.api_type),
            ("api_version", &about.api_version),
            ("instance_uuid", &about.instance_uuid),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
        Ok(Capabilities {
            driver: "vsphere".into(),
            define: true,
            suspend: true,
            reboot: true,
            migrate: true,
            details,
        })
    }

    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        Ok(self.all_vms().await?.iter().map(Vm::summary).collect())
    }

    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        let vm = self.resolve(name).await?;
        Ok(DomainInfo {
            summary: vm.summary(),
            config: vm.config(),
        })
    }

    async fn define(&self, config: ValidatedDomain) -> Result<DomainSummary, Error> {
        let config = config.into_inner();
        // vCenter refuses a duplicate name in a folder (DuplicateName); checking across the
        // whole inventory keeps names unique for our by-name API.
        if self
            .all_vms()
            .await?
            .iter()
            .any(|vm| vm.name == config.name)
        {
            return Err(Error::AlreadyExists(config.name));
        }
        let (folder, pool, datastore) = self.placement().await?;
        let spec = model::config_spec(&config, &datastore);
        let result = self
            .client
            .run_task("define", self.operation_limit, |_| {
                let mut r = Request::new("CreateVM_Task", &folder);
                r.raw(&format!("<config>{spec}</config>"))
                    .moref("pool", &pool);
                r
            })
            .await
            .map_err(|e| self.wait_err(e))?;
        let moref = result
            .as_ref()
            .and_then(MoRef::from_node)
            .ok_or_else(|| Error::Remote {
                host: self.host.clone(),
                message: "CreateVM_Task succeeded without naming the VM".into(),
            })?;
        let vm = self.resolve(&format!("id:{}", moref.value)).await?;
        Ok(vm.summary())
    }

    async fn undefine(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        self.vm_task(&vm, "Destroy_Task", "undefine").await
    }

    async fn start(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        self.vm_task(&vm, "PowerOnVM_Task", "start").await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        // ShutdownGuest returns once the request reaches the guest tools; no task to wait on.
        self.client
            .call(|_| Request::new("ShutdownGuest", &vm.moref))
            .await
            .map_err(|e| self.err(e))?;
        let bound = timeout.min(self.operation_limit);
        let deadline = crate::http::tokio_deadline_after(tokio::time::Instant::now(), bound);
        loop {
            if self.power_state(&vm.moref).await? == Some(PowerState::PoweredOff) {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    operation: "shutdown",
                    after: bound,
                });
            }
            tokio::time::sleep(SHUTDOWN_POLL.min(deadline - now)).await;
        }
    }

    async fn destroy(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        self.vm_task(&vm, "PowerOffVM_Task", "destroy").await
    }

    async fn suspend(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        self.vm_task(&vm, "SuspendVM_Task", "suspend").await
    }

    async fn resume(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        // vSphere resumes a suspended VM by powering it on; a powered-off one would boot,
        // which is not a resume.
        if vm.power == Some(PowerState::PoweredOff) {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: DomainState::Shutoff,
                operation: "resume",
            });
        }
        self.vm_task(&vm, "PowerOnVM_Task", "resume").await
    }

    async fn reboot(&self, name: &str) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        // A hard reset: RebootGuest (graceful, needs running VMware Tools) is not in the
        // simulator we test against, so it is not used untested.
        self.vm_task(&vm, "ResetVM_Task", "reboot").await
    }

    async fn migrate(&self, name: &str, target: &MigrationTarget) -> Result<(), Error> {
        let vm = self.resolve(name).await?;
        let (host, pool) = self.target_host(&target.uri).await?;
        if vm.host.as_ref() == Some(&host) {
            return Err(Error::InvalidConfig(format!(
                "'{name}' already runs on {}",
                target.uri
            )));
        }
        let mut spec = String::from("<spec>");
        // RelocateVMSpec's schema order: pool before host.
        if let Some(pool) = &pool {
            spec.push_str(&format!(
                "<pool type=\"ResourcePool\">{}</pool>",
                super::xml::escape(&pool.value)
            ));
        }
        spec.push_str(&format!(
            "<host type=\"HostSystem\">{}</host></spec>",
            super::xml::escape(&host.value)
        ));
        // Capped (with a warning) at the operation limit.
        let limit = crate::http::migration_limit(target.timeout, self.operation_limit, &self.host);
        self.client
            .run_task("migrate", limit, |_| {
                let mut r = Request::new("RelocateVM_Task", &vm.moref);
                r.raw(&spec).text("priority", "defaultPriority");
                r
            })
            .await
            .map(|_| ())
            .map_err(|e| self.wait_err(e))
    }
}
