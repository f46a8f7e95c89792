//! The operation layer: every operation is one type declaring its name, access level, job
//! kind, request and response, how it runs on a local domain and how on a remote vendor host
//! (cloud-hypervisor's `ApiAction`, Firecracker's `VmmAction`). One [`Executor`] runs them
//! all: access check, detaching, span, audit record, metrics, background runs, routing to a
//! local or remote target. The faces (HTTP, D-Bus, novactl) are tables over [`ALL`].
//!
//! Imports run one way: faces → ops → service.

pub mod addresses;
pub mod agent;
pub mod autostart;
pub mod console;
pub mod define;
pub mod disks;
pub mod executor;
pub mod hosts;
pub mod interfaces;
pub mod lifecycle;
pub mod live_resources;
pub mod metadata;
pub mod networks;
pub mod pinning;
pub mod qmp;
pub mod snapshots;
pub mod table;
pub mod templates;
pub mod volumes;

use std::borrow::Cow;
use std::future::Future;

use novacron_domain::Error;
use serde::Serialize;

use crate::config::Role;
use crate::service::jobs::{AsyncJob, Job};
use crate::service::Service;

pub use executor::Executor;
pub use table::ALL;

/// Who may run an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Queries: every authenticated caller but a migration peer.
    Read,
    /// Changes to domains: operators and administrators.
    Operate,
    /// Raw QMP, host registration, probing: administrators only.
    Admin,
    /// The migration peer protocol: migration peers and administrators.
    Peer,
}

impl Access {
    /// Whether `role` reaches this level; the refusal says why, `what` naming the operation.
    /// An unknown role (a face that did not say) is held to the operator's rights.
    pub fn check(self, role: Option<Role>, what: &str) -> Result<(), String> {
        match (self, role.unwrap_or(Role::Operator)) {
            (_, Role::Admin) => Ok(()),
            (Access::Peer, Role::MigrationPeer) => Ok(()),
            (_, Role::MigrationPeer) => {
                Err("a migration peer token may only use the /v1/migrations/incoming routes".into())
            }
            (Access::Peer, Role::Operator) => Err(
                "the /v1/migrations/incoming routes are for migration peers (role migration_peer) \
                 and administrators"
                    .into(),
            ),
            (Access::Admin, Role::Operator) => Err(format!("{what} is for administrators")),
            (Access::Read | Access::Operate, Role::Operator) => Ok(()),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Operate => "operate",
            Access::Admin => "admin",
            Access::Peer => "peer",
        }
    }
}

/// Which per-domain job slot an operation takes (the service takes it, at the point its
/// behaviour needs it: a shutdown lets go of it while it waits for the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Queries and host-level operations: no slot.
    None,
    Sync(Job),
    Long(AsyncJob),
}

/// An operation's static description: what every face table and test reads.
#[derive(Debug)]
pub struct OpInfo {
    /// Stable name: the audit `op`, the metrics label, the background operation's name.
    pub name: &'static str,
    pub access: Access,
    /// For refusals: "{what} is for administrators".
    pub what: &'static str,
    pub job: JobKind,
    /// May run in the background (`?wait=false` on HTTP).
    pub long: bool,
    /// Recorded in the audit log (every change is; queries are not).
    pub audited: bool,
    /// `(method, path)` of the local route.
    pub http: Option<(&'static str, &'static str)>,
    /// `(method, path)` of the route on a remote vendor host's domain.
    pub http_remote: Option<(&'static str, &'static str)>,
    /// `Interface.Member` on D-Bus.
    pub dbus: Option<&'static str>,
    /// `Interface.Member` on a remote host's D-Bus object.
    pub dbus_remote: Option<&'static str>,
    /// The novactl subcommand (`--host X` aims it at a remote host when `http_remote` is set).
    pub novactl: Option<&'static str>,
    /// The target names a domain (false: a pool or volume, `pool/volume`).
    pub domain: bool,
}

/// Where an operation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    /// A registered remote vendor host (by name).
    Remote(String),
}

/// How an operation's failure is recorded (audit result, metrics label) and reported.
pub trait Failure: From<Error> + std::fmt::Display + Send + 'static {
    /// `ok` is never returned: an error code (`not_found`, `qmp_error`...).
    fn code(&self) -> &'static str;
    /// As a service error, for background operations.
    fn into_error(self) -> Error;
}

impl Failure for Error {
    fn code(&self) -> &'static str {
        Error::code(self).as_str()
    }
    fn into_error(self) -> Error {
        self
    }
}

/// One operation. A value of the type is one request; the executor runs it.
pub trait Operation: Send + Sized + 'static {
    type Response: Send + 'static;
    type Failure: Failure;

    fn info(&self) -> &'static OpInfo;

    /// The domain (or host) the audit line names.
    fn target(&self) -> &str;

    /// The audit `op` (the info's name unless the request refines it, e.g. `qmp:<command>`).
    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.info().name)
    }

    /// Checks on the request itself (caps, shapes) made before anything runs.
    fn check(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Runs on this host's service.
    fn local(
        self,
        svc: Service,
    ) -> impl Future<Output = Result<Self::Response, Self::Failure>> + Send;

    /// Runs on a remote vendor host; unsupported unless the operation says otherwise.
    fn remote(
        self,
        svc: Service,
        host: String,
    ) -> impl Future<Output = Result<Self::Response, Self::Failure>> + Send {
        let operation = self.info().name;
        async move { Err(unsupported(&svc, &host, operation).into()) }
    }
}

/// The typed `unsupported` naming the vendor (or the host, if it is not registered).
pub fn unsupported(svc: &Service, host: &str, operation: &'static str) -> Error {
    match svc.remote_host(host) {
        Ok(view) => Error::Unsupported {
            driver: view.status.driver.to_string(),
            operation,
        },
        Err(e) => e,
    }
}
