//! XenServer / XCP-ng through XAPI (the XenAPI).
//!
//! JSON-RPC 2.0 at `<base>/jsonrpc`, falling back to XML-RPC at `<base>/` for hosts that answer
//! the JSON-RPC endpoint with 404 or XML; the protocol that worked is remembered. A session
//! (`session.login_with_password`) is logged in lazily, shared, and logged in again once when
//! the host answers `SESSION_INVALID`. Power operations run as `Async.VM.*` tasks, polled with
//! `task.get_status` / `get_result` / `get_error_info`, cancelled on time-out and destroyed
//! after. Every method and arity used is listed in [`methods`] and checked against the
//! published model (`tests/peers/xapi/xenapi.json`) by a unit test.
//!
//! | XAPI `vm_power_state` | `DomainState` |
//! |---|---|
//! | `Halted` | `Shutoff` |
//! | `Running` | `Running` |
//! | `Paused` | `Paused` |
//! | `Suspended` | `Suspended` |
//!
//! | Driver call | XAPI |
//! |---|---|
//! | list | `VM.get_all_records`, minus templates, snapshots and control domains |
//! | get | `VM.get_by_name_label` / `VM.get_by_uuid`, `VM.get_record` |
//! | define (new) | `VM.create` with every constructor field the model requires (HVM, BIOS order) |
//! | define (existing, halted) | `VM.set_VCPUs_max` / `set_VCPUs_at_startup`, `set_memory_limits`, `set_name_description` |
//! | undefine | `VM.destroy`, refused unless `Halted` |
//! | start | `Async.VM.start(vm, false, false)` |
//! | shutdown | `Async.VM.clean_shutdown`, then the power state is polled until `Halted` or `Error::Timeout` |
//! | destroy | `Async.VM.hard_shutdown` |
//! | suspend / resume | `Async.VM.suspend` / `Async.VM.resume(vm, false, false)`; a `Paused` VM is resumed with `Async.VM.unpause` |
//! | reboot | `Async.VM.clean_reboot` |
//! | migrate | `Async.VM.pool_migrate(vm, host, {live})`, host by name label or `id:<host uuid>` |
//! | capabilities | `pool.get_master`, `host.get_software_version`, `host.get_API_version_*` |
//!
//! What cannot be mapped:
//! - XAPI has no crashed, starting or shutting-down power state; a crashed guest is restarted,
//!   destroyed or preserved per `actions_after_crash` and then reports one of the four states.
//! - `get` returns what the VM record holds: name, UUID, description, memory (static max;
//!   dynamic max as current), VCPUs (max / at startup) and lifecycle actions. Disks (VBD/VDI),
//!   NICs (VIF), firmware details and the CPU model are not read; firmware is reported as BIOS.
//! - `define` refuses disks, NICs, host devices, direct kernel boot and UEFI loader paths:
//!   those are XAPI objects in SRs and networks (VDI/VBD/VIF) this adapter does not create.
//!   A requested UUID is not honoured (XAPI assigns it); the returned summary carries XAPI's.
//!   Memory ballooning ranges are not mapped: dynamic min = dynamic max = current memory.
//! - `undefine` (`VM.destroy`) removes the VM record; its virtual disks stay in their SR.
//! - Migration is XAPI's in-pool `pool_migrate`; cross-pool `migrate_send` is not offered.
//! - `probe` finds XAPI without credentials but XAPI discloses no version without a session;
//!   `capabilities` reports it.
//!
//! Names: XAPI name labels are not unique. A name matching several guests is refused with
//! `InvalidConfig` listing their `id:<uuid>` forms; `id:<uuid>` addresses one VM exactly.

mod client;
mod driver;
mod error;
mod methods;
mod model;
mod probe;
mod xmlrpc;

pub use driver::{XapiDriver, ID_PREFIX};
pub use error::{Fault, XapiError};
pub use probe::probe;
