//! The two interfaces: `org.novacron1.Manager` at `/org/novacron1` and `org.novacron1.Domain`
//! on one object per domain. Each mutating method asks polkit who is calling, runs one
//! operation (`crate::ops`) through the executor for that caller and maps the result.

use std::collections::HashMap;

use novacron_domain::{DomainConfig, DomainState};
use zbus::message::Header;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{interface, Connection};

use super::error::{to_fdo, DbusError};
use super::path::domain_path;
use super::polkit;
use crate::host::pinning::ThreadKind;
use crate::ops::define::{Create, Define, Defined, Undefine};
use crate::ops::lifecycle::{Kind, Lifecycle, ShutdownRequest};
use crate::ops::{Executor, Operation, Target};
use crate::service::audit::Actor;
use crate::service::placement::PinScope;
use crate::service::{ListFilter, Service};

pub const MANAGER_PATH: &str = "/org/novacron1";

pub struct Manager {
    pub service: Service,
}

/// Registers the object of a domain the service has just defined or created, so the path a
/// method returns can be used at once (the event task would do it a moment later).
async fn ensure_object(
    server: &ObjectServer,
    service: &Service,
    name: &str,
) -> Result<OwnedObjectPath, DbusError> {
    let path = domain_path(name);
    server
        .at(&path, DomainObject::new(service.clone(), name))
        .await
        .map_err(|e| DbusError::Internal(format!("registering {path}: {e}")))?;
    Ok(path)
}

/// Runs `op` on this host for `actor`.
async fn run<O>(service: &Service, actor: Actor, op: O) -> Result<O::Response, DbusError>
where
    O: Operation,
    DbusError: From<O::Failure>,
{
    Ok(Executor::new(service.clone())
        .run(actor, Target::Local, op)
        .await?)
}

fn parse_xml(xml: &str) -> Result<DomainConfig, DbusError> {
    DomainConfig::from_xml(xml).map_err(|e| novacron_domain::Error::from(e).into())
}

fn parse_json(json: &str) -> Result<DomainConfig, DbusError> {
    DomainConfig::from_json(json).map_err(|e| DbusError::invalid_args(e.to_string()))
}

impl Manager {
    /// The listing, filtered by the service ("" means no filter).
    fn list(&self, state: &str, tag: &str) -> Result<Vec<OwnedObjectPath>, DbusError> {
        let state = if state.is_empty() {
            None
        } else {
            Some(
                state
                    .parse::<DomainState>()
                    .map_err(|e| DbusError::invalid_args(format!("state: {e}")))?,
            )
        };
        let filter = ListFilter {
            state,
            name: None,
            tag: (!tag.is_empty()).then(|| tag.to_owned()),
        };
        Ok(self
            .service
            .list_status(&filter)
            .iter()
            .map(|s| domain_path(&s.name))
            .collect())
    }
}

#[interface(name = "org.novacron1.Manager")]
impl Manager {
    /// Object paths of the domains, sorted by name; `state` ("" for all) is one of the state
    /// strings (shutoff starting running paused shutting_down migrating crashed).
    #[zbus(out_args("domains"))]
    async fn list_domains(&self, state: &str) -> Result<Vec<OwnedObjectPath>, DbusError> {
        self.list(state, "")
    }

    /// As `ListDomains`, only the domains tagged `tag` ("" for all; see `SetMetadata`).
    #[zbus(out_args("domains"))]
    async fn list_domains_tagged(
        &self,
        state: &str,
        tag: &str,
    ) -> Result<Vec<OwnedObjectPath>, DbusError> {
        self.list(state, tag)
    }

    #[zbus(out_args("domain"))]
    async fn lookup_by_name(&self, name: &str) -> Result<OwnedObjectPath, DbusError> {
        self.service.status(name)?;
        Ok(domain_path(name))
    }

    #[zbus(name = "LookupByUUID", out_args("domain"))]
    async fn lookup_by_uuid(&self, uuid: &str) -> Result<OwnedObjectPath, DbusError> {
        self.service
            .list_status(&ListFilter::default())
            .iter()
            .find(|s| {
                s.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
            })
            .map(|s| domain_path(&s.name))
            .ok_or_else(|| DbusError::NotFound(format!("no domain with UUID '{uuid}'")))
    }

    /// Defines (or redefines) a persistent domain from libvirt XML.
    #[zbus(name = "DefineXML", out_args("domain"))]
    async fn define_xml(
        &self,
        xml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let config = parse_xml(xml)?;
        match run(&self.service, actor, Define::new(config)).await? {
            Defined::Done { status, .. } => {
                ensure_object(server, &self.service, &status.name).await
            }
            Defined::Checked(_) => {
                Err(DbusError::Internal("a define answered as a dry run".into()))
            }
        }
    }

    /// Defines (or redefines) a persistent domain from the JSON model.
    #[zbus(name = "DefineJSON", out_args("domain"))]
    async fn define_json(
        &self,
        json: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let config = parse_json(json)?;
        match run(&self.service, actor, Define::new(config)).await? {
            Defined::Done { status, .. } => {
                ensure_object(server, &self.service, &status.name).await
            }
            Defined::Checked(_) => {
                Err(DbusError::Internal("a define answered as a dry run".into()))
            }
        }
    }

    /// Checks a libvirt XML definition as `DefineXML` would (validation, storage roots for
    /// the caller, the QEMU command line) and defines nothing. Returns the summary as JSON
    /// (name, uuid, replaces, trust, the normalised xml, argv).
    #[zbus(name = "ValidateXML", out_args("summary"))]
    async fn validate_xml(
        &self,
        xml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let define = Define {
            config: parse_xml(xml)?,
            dry_run: true,
        };
        match run(&self.service, actor, define).await? {
            Defined::Checked(checked) => {
                serde_json::to_string(&checked).map_err(|e| DbusError::Internal(e.to_string()))
            }
            Defined::Done { .. } => Err(DbusError::Internal("a dry run defined".into())),
        }
    }

    /// Creates and starts a transient domain from libvirt XML; it is gone once it stops.
    #[zbus(name = "CreateXML", out_args("domain"))]
    async fn create_xml(
        &self,
        xml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let config = parse_xml(xml)?;
        let status = run(&self.service, actor, Create { config }).await?;
        ensure_object(server, &self.service, &status.name).await
    }

    /// Creates and starts a transient domain from the JSON model.
    #[zbus(name = "CreateJSON", out_args("domain"))]
    async fn create_json(
        &self,
        json: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let config = parse_json(json)?;
        let status = run(&self.service, actor, Create { config }).await?;
        ensure_object(server, &self.service, &status.name).await
    }

    /// hostname s, daemon_version s, emulator s, kvm_usable b, kvm_reason s (only when KVM is
    /// unusable), cpus u, memory_bytes t, domains_total u, domains_running u.
    #[zbus(out_args("info"))]
    async fn get_host_info(&self) -> HashMap<String, Value<'static>> {
        let h = self.service.host_info().await;
        let mut m: HashMap<String, Value<'static>> = HashMap::from([
            ("hostname".to_owned(), Value::from(h.hostname)),
            ("daemon_version".to_owned(), Value::from(h.daemon_version)),
            ("emulator".to_owned(), Value::from(h.emulator)),
            ("kvm_usable".to_owned(), Value::from(h.kvm.usable)),
            ("cpus".to_owned(), Value::from(count(h.cpus))),
            ("memory_bytes".to_owned(), Value::from(h.memory_bytes)),
            (
                "domains_total".to_owned(),
                Value::from(count(h.domains.total)),
            ),
            (
                "domains_running".to_owned(),
                Value::from(count(h.domains.running)),
            ),
        ]);
        if let Some(reason) = h.kvm.reason {
            m.insert("kvm_reason".to_owned(), Value::from(reason));
        }
        m
    }

    // Pools and volumes (`storage.rs`): queries answer the HTTP JSON bodies.
    #[zbus(out_args("pools"))]
    async fn list_pools(&self) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.pool_list().await?)
    }

    #[zbus(out_args("pool"))]
    async fn get_pool_info(&self, pool: &str) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.pool_info(pool).await?)
    }

    #[zbus(name = "GetPoolXML", out_args("xml"))]
    async fn get_pool_xml(&self, pool: &str) -> Result<String, DbusError> {
        Ok(self.service.pool_xml(pool).await?)
    }

    #[zbus(name = "DefinePoolXML", out_args("pool"))]
    async fn define_pool_xml(
        &self,
        xml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::storage::define_pool(&self.service, conn, &header, xml).await
    }

    async fn undefine_pool(
        &self,
        pool: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::storage::undefine_pool(&self.service, conn, &header, pool).await
    }

    #[zbus(out_args("volumes"))]
    async fn list_volumes(&self, pool: &str) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.vol_list(pool).await?)
    }

    #[zbus(out_args("volume"))]
    async fn get_volume_info(&self, pool: &str, volume: &str) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.vol_info(pool, volume).await?)
    }

    #[zbus(name = "GetVolumeXML", out_args("xml"))]
    async fn get_volume_xml(&self, pool: &str, volume: &str) -> Result<String, DbusError> {
        Ok(self.service.vol_info(pool, volume).await?.to_xml())
    }

    /// As `virsh vol-create-as`: format `raw` or `qcow2`, allocation 0 for sparse.
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("volume"))]
    async fn create_volume(
        &self,
        pool: &str,
        name: &str,
        capacity: u64,
        format: &str,
        allocation: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::storage::create_volume(
            &self.service,
            conn,
            &header,
            pool,
            name,
            capacity,
            format,
            allocation,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("volume"))]
    async fn resize_volume(
        &self,
        pool: &str,
        volume: &str,
        capacity: u64,
        shrink: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::storage::resize_volume(&self.service, conn, &header, pool, volume, capacity, shrink)
            .await
    }

    async fn delete_volume(
        &self,
        pool: &str,
        volume: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::storage::delete_volume(&self.service, conn, &header, pool, volume).await
    }

    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("volume"))]
    async fn clone_volume(
        &self,
        pool: &str,
        volume: &str,
        name: &str,
        linked: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::storage::clone_volume(&self.service, conn, &header, pool, volume, name, linked).await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    // Virtual networks (bodies in networks.rs); answers are JSON.
    #[zbus(out_args("networks"))]
    async fn list_networks(&self) -> Result<String, DbusError> {
        super::networks::list(&self.service)
    }
    #[zbus(out_args("info"))]
    async fn network_info(&self, name: &str) -> Result<String, DbusError> {
        super::networks::info(&self.service, name)
    }
    #[zbus(name = "NetworkXML", out_args("xml"))]
    async fn network_xml(&self, name: &str) -> Result<String, DbusError> {
        super::networks::xml(&self.service, name)
    }
    #[zbus(out_args("leases"))]
    async fn network_leases(&self, name: &str) -> Result<String, DbusError> {
        super::networks::leases(&self.service, name).await
    }
    #[zbus(out_args("info"))]
    async fn network_start(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        super::networks::change(&self.service, actor, name, super::networks::Change::Start).await
    }
    #[zbus(out_args("info"))]
    async fn network_destroy(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        super::networks::change(&self.service, actor, name, super::networks::Change::Destroy).await
    }
    #[zbus(out_args("info"))]
    async fn network_set_autostart(
        &self,
        name: &str,
        enabled: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let change = super::networks::Change::Autostart(enabled);
        super::networks::change(&self.service, actor, name, change).await
    }

    /// `vol-import`: the file `path` on this host becomes volume `name` of `pool` (`move`:
    /// renamed into the pool instead of copied); the volume's info as JSON.
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("volume"))]
    async fn import_volume(
        &self,
        pool: &str,
        name: &str,
        path: &str,
        move_file: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::storage::import_volume(&self.service, conn, &header, pool, name, path, move_file)
            .await
    }
    // Domain templates (`templates.rs`): "" and version 0 mean "not given".
    #[zbus(out_args("templates"))]
    async fn list_templates(&self) -> Result<String, DbusError> {
        super::templates::list(&self.service).await
    }
    #[zbus(out_args("template"))]
    async fn get_template_info(&self, name: &str) -> Result<String, DbusError> {
        super::templates::info(&self.service, name).await
    }
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("template"))]
    async fn create_template(
        &self,
        name: &str,
        domain: &str,
        pool: &str,
        description: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::templates::create(
            &self.service,
            conn,
            &header,
            name,
            domain,
            pool,
            description,
        )
        .await
    }
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("template"))]
    async fn update_template(
        &self,
        name: &str,
        domain: &str,
        pool: &str,
        description: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::templates::update(
            &self.service,
            conn,
            &header,
            name,
            domain,
            pool,
            description,
        )
        .await
    }
    async fn delete_template(
        &self,
        name: &str,
        version: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::templates::delete(&self.service, conn, &header, name, version).await
    }
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("deployed"))]
    async fn deploy_template(
        &self,
        template: &str,
        name: &str,
        version: u32,
        pool: &str,
        start: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::templates::deploy(
            &self.service,
            conn,
            &header,
            template,
            name,
            version,
            pool,
            start,
        )
        .await
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `org.novacron1.Domain` for one domain, by name. Holds no state: every read asks the service.
pub struct DomainObject {
    service: Service,
    name: String,
}

impl DomainObject {
    pub fn new(service: Service, name: &str) -> DomainObject {
        DomainObject {
            service,
            name: name.to_owned(),
        }
    }

    async fn perform(
        &self,
        op: Lifecycle,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, header, &self.service).await?;
        run(&self.service, actor, op).await.map(drop)
    }

    fn lifecycle(&self, kind: Kind) -> Lifecycle {
        Lifecycle::new(kind, self.name.clone())
    }
}

impl DomainObject {
    async fn pin(
        &self,
        kind: ThreadKind,
        cpuset: &str,
        live: bool,
        config: bool,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, header, &self.service).await?;
        let op = crate::ops::pinning::Pin {
            domain: self.name.clone(),
            thread: kind,
            cpuset: cpuset.to_owned(),
            scope: PinScope { live, config },
        };
        let pinning = run(&self.service, actor, op).await?;
        serde_json::to_string(&pinning).map_err(|e| DbusError::Internal(e.to_string()))
    }
}

/// The property values of one domain, as `org.novacron1.Domain` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Props {
    pub uuid: String,
    pub state: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub persistent: bool,
    pub autostart: bool,
}

impl Props {
    pub fn of(service: &Service, name: &str) -> Result<Props, novacron_domain::Error> {
        let status = service.status(name)?;
        let info = service.get(name)?;
        Ok(Props {
            uuid: status.uuid.unwrap_or_default(),
            state: status.state.to_string(),
            vcpus: info.config.vcpu.count,
            memory_bytes: info.config.memory.memory_kib.saturating_mul(1024),
            persistent: status.persistent,
            autostart: status.autostart,
        })
    }

    /// The properties that differ from `old`, by D-Bus name.
    pub fn changed_since(&self, old: &Props) -> HashMap<&'static str, Value<'static>> {
        let mut m = HashMap::new();
        if self.uuid != old.uuid {
            m.insert("UUID", Value::from(self.uuid.clone()));
        }
        if self.state != old.state {
            m.insert("State", Value::from(self.state.clone()));
        }
        if self.vcpus != old.vcpus {
            m.insert("VCPUs", Value::from(self.vcpus));
        }
        if self.memory_bytes != old.memory_bytes {
            m.insert("MemoryBytes", Value::from(self.memory_bytes));
        }
        if self.persistent != old.persistent {
            m.insert("Persistent", Value::from(self.persistent));
        }
        if self.autostart != old.autostart {
            m.insert("Autostart", Value::from(self.autostart));
        }
        m
    }
}

#[interface(name = "org.novacron1.Domain")]
impl DomainObject {
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Start), conn, &header)
            .await
    }

    /// Presses the power button and waits up to `timeout_secs` (0: the configured default) for
    /// the guest to power off; with `force`, destroys it if it has not.
    async fn shutdown(
        &self,
        timeout_secs: u64,
        force: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        let request = ShutdownRequest {
            timeout_secs: Some(timeout_secs),
            force,
            ..Default::default()
        };
        let op = Lifecycle::shutdown(self.name.clone(), request);
        self.perform(op, conn, &header).await
    }

    async fn destroy(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Destroy), conn, &header)
            .await
    }

    async fn suspend(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Suspend), conn, &header)
            .await
    }

    async fn resume(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Resume), conn, &header)
            .await
    }

    async fn reboot(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Reboot), conn, &header)
            .await
    }

    async fn reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.perform(self.lifecycle(Kind::Reset), conn, &header)
            .await
    }

    /// Sets the title, description and tags (`virsh desc`, libvirt `<metadata>`). A title or
    /// description of "" removes it; `keep` lists what to leave as it is ("title",
    /// "description", "tags"). Returns the metadata afterwards as JSON.
    #[zbus(out_args("metadata"))]
    async fn set_metadata(
        &self,
        title: String,
        description: String,
        tags: Vec<String>,
        keep: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let kept = |f: &str| keep.iter().any(|k| k == f);
        if let Some(bad) = keep
            .iter()
            .find(|k| !["title", "description", "tags"].contains(&k.as_str()))
        {
            return Err(DbusError::invalid_args(format!(
                "keep: unknown field '{bad}'"
            )));
        }
        let change = crate::service::metadata::MetadataChange {
            title: (!kept("title")).then_some(title),
            description: (!kept("description")).then_some(description),
            tags: (!kept("tags")).then_some(tags),
        };
        let op = crate::ops::metadata::SetMetadata {
            domain: self.name.clone(),
            change,
        };
        let metadata = run(&self.service, actor, op).await?;
        serde_json::to_string(&metadata).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Attaches a NIC (virsh attach-interface): `kind` bridge|network|direct, `source`, `mode`
    /// (direct; "" for the default), `model` ("" for virtio), `mac` ("" to draw one), `mtu`
    /// (0: none), `live`/`config` (both false: live when running, else the definition).
    /// Returns the NIC as attached, as JSON.
    #[zbus(out_args("interface"))]
    #[allow(clippy::too_many_arguments)]
    async fn attach_interface(
        &self,
        kind: String,
        source: String,
        mode: String,
        model: String,
        mac: String,
        mtu: u32,
        live: bool,
        config: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let op = crate::ops::interfaces::AttachInterface {
            domain: self.name.clone(),
            request: crate::ops::interfaces::AttachRequest {
                kind,
                source,
                mode: some(mode),
                model: some(model),
                mac: some(mac),
                mtu: (mtu > 0).then_some(mtu),
                live,
                config,
                inbound: None,
                outbound: None,
                queues: None,
                vlan: None,
                target: None,
            },
        };
        let nic = run(&self.service, actor, op).await?;
        serde_json::to_string(&nic).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Detaches the NIC with `mac` (virsh detach-interface); waits up to `wait_secs` (0: the
    /// default) for the guest to release it.
    async fn detach_interface(
        &self,
        mac: String,
        live: bool,
        config: bool,
        wait_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::interfaces::DetachInterface {
            domain: self.name.clone(),
            mac,
            scope: crate::service::nics::hotplug::Scope { live, config },
            wait_secs: (wait_secs > 0).then_some(wait_secs),
        };
        run(&self.service, actor, op).await
    }

    /// Sets the link of the NIC with `mac` up or down as the guest sees it (domif-setlink).
    async fn set_interface_link(
        &self,
        mac: String,
        up: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::interfaces::SetInterfaceLink {
            domain: self.name.clone(),
            mac,
            up,
        };
        run(&self.service, actor, op).await
    }

    /// The domain's NICs (domiflist), as JSON.
    #[zbus(out_args("interfaces"))]
    async fn list_interfaces(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::interfaces::ListInterfaces {
            domain: self.name.clone(),
        };
        let nics = run(&self.service, actor, op).await?;
        serde_json::to_string(&nics).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Removes the persistent definition; a running domain becomes transient.
    async fn undefine(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = Undefine {
            domain: self.name.clone(),
        };
        run(&self.service, actor, op).await
    }

    async fn set_autostart(
        &self,
        enabled: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::autostart::SetAutostart {
            domain: self.name.clone(),
            enabled,
        };
        run(&self.service, actor, op).await.map(drop)
    }

    /// Pins vCPU `vcpu` to the host CPUs in `cpuset` (libvirt syntax, e.g. "0-3,^2"): `live`
    /// on the running QEMU, `config` in the definition; neither means live while running,
    /// else the definition (as `virsh vcpupin`). Returns the pins afterwards as JSON (the
    /// HTTP API's `Pinning`).
    #[zbus(name = "PinVCPU", out_args("pinning"))]
    async fn pin_vcpu(
        &self,
        vcpu: u32,
        cpuset: &str,
        live: bool,
        config: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        self.pin(ThreadKind::Vcpu(vcpu), cpuset, live, config, conn, &header)
            .await
    }

    /// As `PinVCPU`, for the emulator threads (`virsh emulatorpin`).
    #[zbus(out_args("pinning"))]
    async fn pin_emulator(
        &self,
        cpuset: &str,
        live: bool,
        config: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        self.pin(ThreadKind::Emulator, cpuset, live, config, conn, &header)
            .await
    }

    /// As `PinVCPU`, for iothread `iothread` (`virsh iothreadpin`).
    #[zbus(name = "PinIOThread", out_args("pinning"))]
    async fn pin_iothread(
        &self,
        iothread: u32,
        cpuset: &str,
        live: bool,
        config: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        self.pin(
            ThreadKind::Iothread(iothread),
            cpuset,
            live,
            config,
            conn,
            &header,
        )
        .await
    }

    /// The pins as JSON (the HTTP API's `Pinning`): live while running unless `config`.
    #[zbus(out_args("pinning"))]
    async fn get_pinning(&self, config: bool) -> Result<String, DbusError> {
        let pinning = self.service.pinning(&self.name, config).await?;
        serde_json::to_string(&pinning).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Migrates live to the destination daemon (`http(s)://host:port`, its token; `options`
    /// is the HTTP API's `MigrationOptions` as JSON, "" for defaults). Returns the progress
    /// as JSON once the migration started; follow it with `MigrationProgress` signals.
    #[zbus(out_args("progress"))]
    async fn migrate(
        &self,
        destination: String,
        token: String,
        options: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let options = if options.trim().is_empty() {
            Default::default()
        } else {
            serde_json::from_str(&options)
                .map_err(|e| DbusError::InvalidConfig(format!("options: {e}")))?
        };
        let request = crate::service::migration::MigrateRequest {
            destination,
            token: (!token.is_empty()).then_some(token),
            destination_ca: None,
            options,
            keep_source_definition: false,
        };
        let progress = crate::service::audit::as_actor(
            actor,
            self.service.migrate(&self.name, request, false),
        )
        .await?;
        serde_json::to_string(&progress).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Cancels the running migration; returns the final progress as JSON.
    #[zbus(out_args("progress"))]
    async fn cancel_migration(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let progress =
            crate::service::audit::as_actor(actor, self.service.cancel_migration(&self.name))
                .await?;
        serde_json::to_string(&progress).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// The libvirt XML (the running config while the guest runs).
    #[zbus(name = "GetXML", out_args("xml"))]
    async fn get_xml(&self) -> Result<String, DbusError> {
        Ok(self.service.get(&self.name)?.config.to_xml())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// "" when the definition has none.
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> zbus::fdo::Result<String> {
        let s = self.service.status(&self.name).map_err(to_fdo)?;
        Ok(s.uuid.unwrap_or_default())
    }

    /// shutoff starting running paused shutting_down migrating crashed
    #[zbus(property)]
    fn state(&self) -> zbus::fdo::Result<String> {
        let s = self.service.status(&self.name).map_err(to_fdo)?;
        Ok(s.state.to_string())
    }

    #[zbus(property, name = "VCPUs")]
    fn vcpus(&self) -> zbus::fdo::Result<u32> {
        let info = self.service.get(&self.name).map_err(to_fdo)?;
        Ok(info.config.vcpu.count)
    }

    #[zbus(property)]
    fn memory_bytes(&self) -> zbus::fdo::Result<u64> {
        let info = self.service.get(&self.name).map_err(to_fdo)?;
        Ok(info.config.memory.memory_kib.saturating_mul(1024))
    }

    #[zbus(property)]
    fn persistent(&self) -> zbus::fdo::Result<bool> {
        let s = self.service.status(&self.name).map_err(to_fdo)?;
        Ok(s.persistent)
    }

    #[zbus(property)]
    fn autostart(&self) -> zbus::fdo::Result<bool> {
        let s = self.service.status(&self.name).map_err(to_fdo)?;
        Ok(s.autostart)
    }

    /// About once a second while the domain migrates away: phase (as the HTTP API's, never a
    /// final one: `cancelling`/`failing` while the guest is resumed here; the outcome comes
    /// with `MigrationFinished`), bytes sent, left and in all, dirty rate (bytes/s), passes
    /// over memory.
    #[zbus(signal)]
    pub async fn migration_progress(
        emitter: &SignalEmitter<'_>,
        phase: &str,
        transferred: u64,
        remaining: u64,
        total: u64,
        dirty_rate: u64,
        iterations: u64,
    ) -> zbus::Result<()>;

    /// A migration ended: outcome completed, failed, cancelled or unknown.
    #[zbus(signal)]
    pub async fn migration_finished(
        emitter: &SignalEmitter<'_>,
        id: &str,
        outcome: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// `reason` is the event's reason (booted, paused, resumed, guest_shutdown, destroyed,
    /// qemu_died, ...); `detail` is "" unless the reason carries one.
    #[zbus(signal, name = "StateChanged")]
    pub async fn state_change(
        emitter: &SignalEmitter<'_>,
        from: &str,
        to: &str,
        reason: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// `domblklist`: the disks as JSON (the running guest's, or the definition's when it is
    /// off or `config` is true).
    #[zbus(out_args("disks"))]
    async fn list_disks(&self, config: bool) -> Result<String, DbusError> {
        let disks = self.service.list_disks(&self.name, config)?;
        serde_json::to_string(&disks).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `attach-disk`: `request` is the JSON body of `POST /v1/domains/{name}/disks`
    /// (`{"xml": "<disk ...>"}` or `{"disk": {...}}`, with `live`/`config`/`persistent`).
    #[zbus(out_args("disk"))]
    async fn attach_disk(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let body: crate::ops::disks::AttachRequest = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let (disk, scope) = body.disk()?;
        let op = crate::ops::disks::AttachDisk {
            domain: self.name.clone(),
            disk,
            scope,
        };
        let entry = run(&self.service, actor, op).await?;
        serde_json::to_string(&entry).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `detach-disk`: `options` is `{"live", "config", "persistent", "timeout"}` as JSON.
    #[zbus(out_args("disk"))]
    async fn detach_disk(
        &self,
        target: String,
        options: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let options: crate::ops::disks::DetachOptions = serde_json::from_str(&options)
            .map_err(|e| DbusError::invalid_args(format!("options: {e}")))?;
        let op = crate::ops::disks::DetachDisk {
            domain: self.name.clone(),
            disk: target,
            options,
        };
        let entry = run(&self.service, actor, op).await?;
        serde_json::to_string(&entry).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `blockresize`: grows a running guest's disk to `size` bytes.
    #[zbus(out_args("size"))]
    async fn resize_disk(
        &self,
        target: String,
        size: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::disks::ResizeDisk {
            domain: self.name.clone(),
            disk: target,
            size,
        };
        run(&self.service, actor, op).await
    }

    /// `blkdeviotune`: `tune` is the JSON body of `PUT .../disks/{target}/iotune`.
    #[zbus(out_args("iotune"))]
    async fn set_disk_io_tune(
        &self,
        target: String,
        tune: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let body = crate::ops::disks::IoTuneRequest::parse(tune.as_bytes())?;
        let op = crate::ops::disks::SetIoTune {
            domain: self.name.clone(),
            disk: target,
            tune: body.tune,
            scope: body.scope,
        };
        let t = run(&self.service, actor, op).await?;
        serde_json::to_string(&t).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// The I/O limits in force on a running guest's disk, as JSON.
    #[zbus(out_args("iotune"))]
    async fn get_disk_io_tune(&self, target: String) -> Result<String, DbusError> {
        let t = self.service.disk_iotune(&self.name, &target).await?;
        serde_json::to_string(&t).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `change-media`: `change` is the JSON body of `POST .../disks/{target}/media`.
    #[zbus(out_args("disk"))]
    async fn change_media(
        &self,
        target: String,
        change: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let body = crate::ops::disks::MediaRequest::parse(change.as_bytes())?;
        let op = crate::ops::disks::ChangeMedia {
            domain: self.name.clone(),
            disk: target,
            change: body.change,
            scope: body.scope,
        };
        let entry = run(&self.service, actor, op).await?;
        serde_json::to_string(&entry).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// The running guest's addresses per NIC (domifaddr), as JSON; `source` is `lease` (the
    /// virtual networks' DHCP leases, never waits) or `agent` (bounded by `timeout_secs`, 0:
    /// the default).
    #[zbus(out_args("addresses"))]
    async fn interface_addresses(
        &self,
        source: &str,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::addresses::DomIfAddr {
            domain: self.name.clone(),
            source: crate::service::nics::addresses::AddressSource::parse(source)?,
            timeout_secs: Some(timeout_secs),
        };
        let answer = run(&self.service, actor, op).await?;
        serde_json::to_string(&answer).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `setvcpus`: `request` is the JSON body of `PUT /v1/domains/{name}/vcpus`
    /// (`{"count", "live", "config", "maximum", "timeout"}`); answers `vcpucount` as JSON.
    #[zbus(out_args("counts"))]
    async fn set_vcpus(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::live_resources::SetVcpus {
            domain: self.name.clone(),
            request,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `vcpucount` as JSON.
    #[zbus(out_args("counts"))]
    async fn vcpu_count(&self) -> Result<String, DbusError> {
        let out = self.service.vcpu_count(&self.name).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `setmem`: `request` is the JSON body of `PUT .../memory/balloon`
    /// (`{"size_kib", "live", "config"}`); answers `dommemstat` as JSON.
    #[zbus(out_args("stats"))]
    async fn set_memory(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::live_resources::SetMem {
            domain: self.name.clone(),
            request,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `setmaxmem`: `request` is the JSON body of `PUT .../memory/maximum`
    /// (`{"size_kib", "live", "config"}`); answers `dommeminfo --inactive` as JSON.
    #[zbus(out_args("memory"))]
    async fn set_max_memory(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::live_resources::SetMaxMem {
            domain: self.name.clone(),
            request,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `dommemstat` as JSON.
    #[zbus(out_args("stats"))]
    async fn memory_stats(&self) -> Result<String, DbusError> {
        let out = self.service.mem_stats(&self.name, None).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `dommemstat --period`: the balloon's statistics interval (seconds; 0: off).
    #[zbus(out_args("stats"))]
    async fn set_memory_stats_period(
        &self,
        period: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let op = crate::ops::live_resources::DomMemStat {
            domain: self.name.clone(),
            period: Some(period),
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Requested against guest-visible memory as JSON (the definition's when `config`).
    #[zbus(out_args("memory"))]
    async fn memory_info(&self, config: bool) -> Result<String, DbusError> {
        let out = self.service.memory_report(&self.name, config).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `update-memory-device`: `request` is `{"requested_kib", "live", "config"}`.
    #[zbus(out_args("memory"))]
    async fn update_memory_device(
        &self,
        alias: String,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::live_resources::UpdateMemoryDevice {
            domain: self.name.clone(),
            alias,
            request,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Attaches memory: `request` is the JSON body of `POST .../memory/devices`
    /// (`{"xml": "<memory model='dimm'>..."}` or `{"device": {...}}`, with `live`/`config`).
    #[zbus(out_args("memory"))]
    async fn attach_memory(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let body: crate::ops::live_resources::AttachMemoryRequest = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let (device, scope) = body.device()?;
        let op = crate::ops::live_resources::AttachMemory {
            domain: self.name.clone(),
            device,
            scope,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// Detaches memory device `alias`: `options` is `{"live", "config", "timeout"}` as JSON.
    #[zbus(out_args("memory"))]
    async fn detach_memory(
        &self,
        alias: String,
        options: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let options = serde_json::from_str(&options)
            .map_err(|e| DbusError::invalid_args(format!("options: {e}")))?;
        let op = crate::ops::live_resources::DetachMemory {
            domain: self.name.clone(),
            alias,
            options,
        };
        let out = run(&self.service, actor, op).await?;
        serde_json::to_string(&out).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// The guest was reset (by itself, by Reset, or as part of a reboot).
    #[zbus(signal)]
    pub async fn guest_reset(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    /// The guest reported a panic; `action` is what the daemon did about it.
    #[zbus(signal)]
    pub async fn guest_panicked(emitter: &SignalEmitter<'_>, action: &str) -> zbus::Result<()>;

    /// A restarted daemon found this guest running and took it back.
    #[zbus(signal)]
    pub async fn reconnected(emitter: &SignalEmitter<'_>, pid: u32) -> zbus::Result<()>;

    /// A restarted daemon found this guest's QEMU alive but could not talk to it; the guest is
    /// left alone.
    #[zbus(signal)]
    pub async fn reconnect_failed(
        emitter: &SignalEmitter<'_>,
        pid: u32,
        error: &str,
    ) -> zbus::Result<()>;

    // Disk snapshots and the guest agent (`snapshots.rs`): JSON as the HTTP bodies.

    /// `snapshot-create-as`: `request` is `{"name", "description"?, "quiesce"?}` (quiesce:
    /// required, best-effort, off). Returns the snapshot as JSON.
    #[zbus(out_args("snapshot"))]
    async fn create_snapshot(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::snapshots::create(&self.service, conn, &header, &self.name, &request).await
    }

    /// `snapshot-list`: every snapshot, the current one and the tree as text, as JSON.
    #[zbus(out_args("snapshots"))]
    async fn list_snapshots(&self) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.snapshot_list(&self.name).await?)
    }

    /// `snapshot-info`, as JSON.
    #[zbus(out_args("snapshot"))]
    async fn get_snapshot_info(&self, snapshot: String) -> Result<String, DbusError> {
        super::storage::to_json(&self.service.snapshot_get(&self.name, &snapshot).await?)
    }

    /// `snapshot-dumpxml`: libvirt's `<domainsnapshot>`.
    #[zbus(name = "GetSnapshotXML", out_args("xml"))]
    async fn get_snapshot_xml(&self, snapshot: String) -> Result<String, DbusError> {
        Ok(self
            .service
            .snapshot_xml(&self.name, &snapshot)
            .await?
            .to_xml())
    }

    /// `snapshot-delete`: `options` is `{"speed"?}` (bytes/s of the merge) or "".
    async fn delete_snapshot(
        &self,
        snapshot: String,
        options: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::snapshots::delete(
            &self.service,
            conn,
            &header,
            &self.name,
            &snapshot,
            &options,
        )
        .await
    }

    /// `snapshot-revert` of a stopped domain.
    async fn revert_snapshot(
        &self,
        snapshot: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::snapshots::revert(&self.service, conn, &header, &self.name, &snapshot).await
    }

    /// The snapshot schedule as JSON (`NotFound` when there is none).
    #[zbus(out_args("schedule"))]
    async fn get_snapshot_schedule(&self) -> Result<String, DbusError> {
        super::snapshots::schedule(&self.service, &self.name).await
    }

    /// Sets the schedule: `schedule` is `{"every", "keep", "quiesce"?}`; returns it as JSON.
    #[zbus(out_args("schedule"))]
    async fn set_snapshot_schedule(
        &self,
        schedule: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        super::snapshots::set_schedule(&self.service, conn, &header, &self.name, Some(&schedule))
            .await
    }

    async fn delete_snapshot_schedule(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        super::snapshots::set_schedule(&self.service, conn, &header, &self.name, None)
            .await
            .map(drop)
    }

    /// `guestinfo`: the agent's connection state, with its info when it answered, as JSON.
    /// `timeout_secs` 0 is the default deadline (for every agent method).
    #[zbus(out_args("agent"))]
    async fn agent_info(
        &self,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let action = crate::ops::agent::AgentAction::Info;
        super::snapshots::agent(
            &self.service,
            conn,
            &header,
            &self.name,
            action,
            timeout_secs,
        )
        .await
    }

    /// `guest-agent-ping`: `{"round_trip_ms"}` as JSON.
    #[zbus(out_args("ping"))]
    async fn agent_ping(
        &self,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let action = crate::ops::agent::AgentAction::Ping;
        super::snapshots::agent(
            &self.service,
            conn,
            &header,
            &self.name,
            action,
            timeout_secs,
        )
        .await
    }

    /// `domfsfreeze`: `{"filesystems"}` frozen, as JSON.
    #[zbus(out_args("result"))]
    async fn agent_fs_freeze(
        &self,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let action = crate::ops::agent::AgentAction::FsFreeze;
        super::snapshots::agent(
            &self.service,
            conn,
            &header,
            &self.name,
            action,
            timeout_secs,
        )
        .await
    }

    /// `domfsthaw`: `{"filesystems"}` thawed, as JSON.
    #[zbus(out_args("result"))]
    async fn agent_fs_thaw(
        &self,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let action = crate::ops::agent::AgentAction::FsThaw;
        super::snapshots::agent(
            &self.service,
            conn,
            &header,
            &self.name,
            action,
            timeout_secs,
        )
        .await
    }

    /// `domifaddr --source agent`: `{"interfaces"}` as JSON.
    #[zbus(out_args("interfaces"))]
    async fn agent_interfaces(
        &self,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let action = crate::ops::agent::AgentAction::Interfaces;
        super::snapshots::agent(
            &self.service,
            conn,
            &header,
            &self.name,
            action,
            timeout_secs,
        )
        .await
    }

    /// `attach-interface` with every field: `request` is the JSON body of
    /// `POST /v1/domains/{name}/interfaces` (`type`, `source`, `mode`, `model`, `mac`, `mtu`,
    /// `inbound`, `outbound`, `queues`, `vlan`, `target`, `live`, `config`). Returns the NIC
    /// as attached, as JSON.
    #[zbus(out_args("interface"))]
    async fn attach_interface_json(
        &self,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request: crate::ops::interfaces::AttachRequest = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::interfaces::AttachInterface {
            domain: self.name.clone(),
            request,
        };
        let nic = run(&self.service, actor, op).await?;
        serde_json::to_string(&nic).map_err(|e| DbusError::Internal(e.to_string()))
    }

    /// `domiftune`: `interface` is the NIC's MAC or host link name, `request` the JSON body
    /// of `POST /v1/domains/{name}/interfaces/{mac}/bandwidth` (`inbound`/`outbound` as
    /// virsh's `average[,peak[,burst]]`, average 0 clears; `live`, `config`; no rate: read).
    /// Returns the NIC's limits as JSON.
    #[zbus(out_args("bandwidth"))]
    async fn interface_tune(
        &self,
        interface: String,
        request: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, DbusError> {
        let actor = polkit::authorize(conn, &header, &self.service).await?;
        let request: crate::ops::interfaces::TuneRequest = serde_json::from_str(&request)
            .map_err(|e| DbusError::invalid_args(format!("request: {e}")))?;
        let op = crate::ops::interfaces::InterfaceTune {
            domain: self.name.clone(),
            interface,
            request,
        };
        let bw = run(&self.service, actor, op).await?;
        serde_json::to_string(&bw).map_err(|e| DbusError::Internal(e.to_string()))
    }
}
