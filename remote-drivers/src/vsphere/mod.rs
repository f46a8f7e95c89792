//! VMware vSphere (vCenter or a standalone ESXi) over the SOAP vim25 API at `<base>/sdk`.
//!
//! # Why a hand-written client
//! Generated vim25 bindings (from the WSDL) are tens of thousands of types and add minutes of
//! build time for the ~15 methods used here: RetrieveServiceContent, Login, Logout,
//! CreateContainerView, DestroyView, RetrievePropertiesEx, ContinueRetrievePropertiesEx,
//! PowerOnVM_Task, PowerOffVM_Task, ShutdownGuest, SuspendVM_Task, ResetVM_Task,
//! CreateVM_Task, Destroy_Task, RelocateVM_Task and the snapshot tasks. Requests are written
//! with escaping helpers ([`soap::Request`]); answers are read into a bounded quick-xml tree
//! ([`xml`]) and only the properties asked for are interpreted.
//!
//! # Session
//! `new` sends nothing. The first call fetches ServiceContent and logs in; the session lives
//! in the host's cookie jar (`vmware_soap_session`). A `NotAuthenticated` fault (the server
//! expired the session) leads to one new login and one retry. Token credentials are refused
//! (vSphere has none).
//!
//! # Inventory
//! One ContainerView over the root folder (type VirtualMachine, recursive) per session,
//! read with PropertyCollector.RetrievePropertiesEx and ContinueRetrievePropertiesEx for the
//! following pages. Templates (`config.template`) are left out: they cannot run.
//!
//! # Names
//! Our API addresses domains by name; vSphere names are unique per folder only. A name that
//! matches several VMs is refused with `InvalidConfig` listing their ids; `id:<moref>`
//! (`id:vm-42`) addresses one VM exactly. `DomainSummary.uuid` is `config.instanceUuid`
//! (vCenter's unique id), else `config.uuid`; `get`'s config carries `config.uuid` (the
//! SMBIOS UUID), the vCPU count, memory and the annotation as description. Devices, firmware
//! and placement are not mapped into our model.
//!
//! # Power states
//! | vSphere `runtime.powerState` | `DomainState` |
//! |---|---|
//! | `poweredOn`  | `running`   |
//! | `poweredOff` | `shutoff`   |
//! | `suspended`  | `suspended` |
//! | anything else (not in the API) | `crashed`, with a warning logged |
//!
//! Not mappable: vSphere has no paused state (suspend saves to disk), and it reports
//! starting, shutting down and migrating as tasks, never as power states, so `starting`,
//! `shutting_down`, `paused` and `migrating` are never reported.
//!
//! # Operations
//! | Driver call | vim25 |
//! |---|---|
//! | start | PowerOnVM_Task |
//! | shutdown | ShutdownGuest (needs VMware Tools), then `runtime.powerState` polled until `poweredOff` or `Error::Timeout` |
//! | destroy | PowerOffVM_Task (hard power off) |
//! | suspend / resume | SuspendVM_Task / PowerOnVM_Task (resume of a powered-off VM is refused: it would boot) |
//! | reboot | ResetVM_Task: a hard reset. RebootGuest (graceful) is absent from vcsim 0.24.2, our test peer, so it is not used untested |
//! | define | CreateVM_Task in the first datacenter's VM folder, its first compute resource's root pool, the accessible datastore with most free space; a minimal spec (name, SMBIOS UUID, vCPUs, memory, annotation, guest id `otherGuest64`, no devices). A name already in the inventory is `AlreadyExists`; redefining is not supported |
//! | undefine | Destroy_Task: removes the VM **and deletes its files** from the datastore |
//! | migrate | RelocateVM_Task to the host named by `MigrationTarget.uri` = `host:<name>` or `host:id:<moref>` (vMotion when powered on; `live` is not a choice vSphere offers) |
//! | snapshots | [`VsphereDriver::create_snapshot`], [`VsphereDriver::revert_to_snapshot`], [`VsphereDriver::remove_snapshot`], [`VsphereDriver::snapshots`] (inherent: the trait has no snapshot call) |
//!
//! Tasks are polled through the PropertyCollector (`info.state`, `info.error`) with a
//! doubling pause (20 ms to 1 s), bounded by the host's operation time limit.
//!
//! # Faults
//! vim faults keep their name and text in `Error::Vendor` ([`error::classify`]):
//! InvalidPowerState / InvalidState / ToolsUnavailable → `wrong_state` (with requested and
//! existing state), ManagedObjectNotFound / NotFound → `not_found`, DuplicateName /
//! AlreadyExists / FileAlreadyExists → `already_exists`, NotSupported → `unsupported`,
//! TaskInProgress → `busy`, InvalidLogin and anything else → `remote`.

mod client;
mod driver;
pub mod error;
mod model;
pub mod soap;
pub use crate::xml;

use std::time::Duration;

pub use driver::{SnapshotInfo, VsphereDriver};
pub use error::VsphereError;

use crate::http::TransportError;

/// Whether the vSphere API answers at `base`: RetrieveServiceContent (no login) at
/// `<base>/sdk`. Its product name, version and API version if so.
pub async fn probe(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let sdk = client::sdk_url(base);
    let request = soap::Request::new(
        "RetrieveServiceContent",
        &soap::MoRef::new("ServiceInstance", "ServiceInstance"),
    );
    let node = match client::post(client, &sdk, &request, timeout).await {
        Ok(soap::Answer::Response(node)) => node,
        // A SOAP fault, a non-SOAP body or an HTTP error status: something else lives here.
        Ok(soap::Answer::Fault(_))
        | Err(VsphereError::Protocol { .. } | VsphereError::Fault(_))
        | Err(VsphereError::Transport(TransportError::Status { .. })) => return Ok(None),
        Err(VsphereError::Transport(t)) => return Err(t),
    };
    let Some(about) = node.child("returnval").and_then(|r| r.child("about")) else {
        return Ok(None);
    };
    let full = about.child_text("fullName").unwrap_or("");
    let version = about.child_text("version").unwrap_or("");
    let api = about.child_text("apiVersion").unwrap_or("");
    let product = if full.is_empty() { version } else { full };
    Ok(Some(if api.is_empty() {
        product.to_owned()
    } else {
        format!("{product} (API {api})")
    }))
}
