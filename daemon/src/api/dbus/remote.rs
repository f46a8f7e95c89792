//! `org.novacron1.RemoteHost`: one object per remote vendor host at
//! `/org/novacron1/host/<escaped name>`, the D-Bus view of `/v1/hosts/{host}/...`. Methods
//! run the same operations (`crate::ops`) the HTTP face runs, with the host as their target.

use novacron_domain::DomainState;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;
use zbus::{interface, Connection};

use super::error::{to_fdo, DbusError};
use super::path::escape;
use super::polkit;
use crate::ops::lifecycle::{Kind, Lifecycle, ShutdownRequest};
use crate::ops::{Executor, Target};
use crate::service::Service;

pub const HOST_PREFIX: &str = "/org/novacron1/host";

/// `/org/novacron1/host/<escaped name>`.
pub fn host_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{HOST_PREFIX}/{}", escape(name)))
        .expect("an escaped name is a valid path element")
}

pub struct RemoteHostObject {
    service: Service,
    name: String,
}

impl RemoteHostObject {
    pub fn new(service: Service, name: &str) -> Self {
        Self {
            service,
            name: name.to_owned(),
        }
    }

    async fn act(
        &self,
        op: Lifecycle,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(), DbusError> {
        let actor = polkit::authorize(conn, header, &self.service).await?;
        Executor::new(self.service.clone())
            .run(actor, Target::Remote(self.name.clone()), op)
            .await?;
        Ok(())
    }
}

#[interface(name = "org.novacron1.RemoteHost")]
impl RemoteHostObject {
    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn driver(&self) -> zbus::fdo::Result<String> {
        let view = self.service.remote_host(&self.name).map_err(to_fdo)?;
        Ok(view.status.driver.to_string())
    }

    /// `closed`, `open` or `half_open`.
    #[zbus(property)]
    fn breaker(&self) -> zbus::fdo::Result<String> {
        let view = self.service.remote_host(&self.name).map_err(to_fdo)?;
        Ok(serde_json::to_value(view.status.breaker)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default())
    }

    /// The host's domains as (name, uuid or "", state); `stale` is true when the host could
    /// not be asked and this is its last inventory, `age_secs` how old that is.
    #[zbus(out_args("domains", "stale", "age_secs"))]
    async fn list_domains(&self) -> Result<(Vec<(String, String, String)>, bool, f64), DbusError> {
        let inventory = self.service.remote_list(&self.name, None, None).await?;
        let rows = inventory
            .domains
            .into_iter()
            .map(|d| (d.name, d.uuid.unwrap_or_default(), d.state.to_string()))
            .collect();
        let age = inventory.stale.as_ref().map(|s| s.age_secs).unwrap_or(0.0);
        Ok((rows, inventory.stale.is_some(), age))
    }

    /// One domain's state string.
    #[zbus(out_args("state"))]
    async fn domain_state(&self, domain: &str) -> Result<String, DbusError> {
        let info = self.service.remote_get(&self.name, domain).await?;
        Ok(info.summary.state.to_string())
    }

    async fn start(
        &self,
        domain: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.act(Lifecycle::new(Kind::Start, domain), conn, &header)
            .await
    }

    /// Graceful power-off through the vendor, waiting up to `timeout_secs` (0: the default).
    async fn shutdown(
        &self,
        domain: &str,
        timeout_secs: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        // The cap (a day) is the operation's, as for local domains.
        let request = ShutdownRequest {
            timeout_secs: Some(timeout_secs),
            force: false,
            ..Default::default()
        };
        self.act(Lifecycle::shutdown(domain, request), conn, &header)
            .await
    }

    async fn destroy(
        &self,
        domain: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.act(Lifecycle::new(Kind::Destroy, domain), conn, &header)
            .await
    }

    async fn suspend(
        &self,
        domain: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.act(Lifecycle::new(Kind::Suspend, domain), conn, &header)
            .await
    }

    async fn resume(
        &self,
        domain: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.act(Lifecycle::new(Kind::Resume, domain), conn, &header)
            .await
    }

    async fn reboot(
        &self,
        domain: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), DbusError> {
        self.act(Lifecycle::new(Kind::Reboot, domain), conn, &header)
            .await
    }

    /// A remote domain changed power state ("" for appeared / gone).
    #[zbus(signal)]
    pub async fn domain_state_changed(
        emitter: &SignalEmitter<'_>,
        domain: &str,
        from: &str,
        to: &str,
    ) -> zbus::Result<()>;
}

/// Emits `DomainStateChanged` on the host's object (registering it first if the host was
/// registered after the D-Bus face started).
pub async fn remote_state_changed(
    conn: &Connection,
    service: &Service,
    host: &str,
    domain: &str,
    from: Option<DomainState>,
    to: Option<DomainState>,
) -> zbus::Result<()> {
    let path = host_path(host);
    conn.object_server()
        .at(&path, RemoteHostObject::new(service.clone(), host))
        .await?;
    let emitter = SignalEmitter::new(conn, path)?;
    let s = |s: Option<DomainState>| s.map(|s| s.to_string()).unwrap_or_default();
    RemoteHostObject::domain_state_changed(&emitter, domain, &s(from), &s(to)).await
}
