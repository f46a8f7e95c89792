//! Proxmox VE: the REST API at `<base>/api2/json` (pveproxy, port 8006).
//!
//! - [`client`]: transport, API token or ticket login (renewed before its 2 h lifetime ends, and
//!   once on a 401), bounded answers, UPID task polling.
//! - [`error`]: PVE's errors kept word for word (HTTP status + message + per-field errors, or a
//!   task's exit status) and classified into our codes.
//! - [`model`]: `/cluster/resources` rows, state mapping, names, the derived domain config.
//! - [`driver`]: the [`Driver`](novacron_domain::Driver) implementation.
//! - [`probe`]: recognising PVE at an address without credentials.
//!
//! # Inventory and names
//! One `GET /cluster/resources?type=vm` lists every qemu guest and lxc container of the cluster.
//! Containers are listed (and `get` works) but are read-only: every lifecycle call on one is
//! `Unsupported`. PVE names are not unique: a name matching several guests is refused with
//! `InvalidConfig` listing their VMIDs, and `id:<vmid>` addresses one guest exactly (guests
//! without a name are listed as `id:<vmid>`). `list` carries no UUID (the listing has none);
//! `get` reads it from the config's `smbios1` `uuid=`.
//!
//! # Power states
//! | PVE `status` | `qmpstatus` (`status/current`) | `lock` | DomainState |
//! |---|---|---|---|
//! | running | running | | running |
//! | running | paused, suspended (guest S3), debug, watchdog | | paused |
//! | running | prelaunch, restore-vm | | starting |
//! | running | inmigrate, postmigrate, finish-migrate, save-vm, colo | | migrating |
//! | running | any | migrate | migrating |
//! | running | shutdown | | shutting_down |
//! | running | io-error, internal-error, guest-panicked | | crashed |
//! | stopped | | suspended (hibernated: `suspend todisk=1`) | suspended |
//! | stopped | | other or none | shutoff |
//! | unknown (node unreachable) | | | crashed |
//!
//! What cannot be mapped: the listing has no `qmpstatus`, so `list` shows a paused guest as
//! running (`get` shows it paused); `unknown` means PVE cannot reach the guest's node, and we
//! have no "unknown" state, so it shows as crashed; PVE's shutting-down and starting phases are
//! tasks, not states, and are not visible in either. Our `suspend` is PVE's pause (suspend
//! without `todisk`); a hibernated guest made elsewhere shows as suspended and `resume` (or
//! `start`) restores it.
//!
//! # Operations
//! start/stop(destroy)/shutdown/reboot/suspend/resume are `POST
//! /nodes/{node}/qemu/{vmid}/status/<action>`; define is `POST /nodes/{node}/qemu` with a VMID
//! from `/cluster/nextid` (name, UUID, vCPUs, memory, description only: definitions with disks or
//! NICs are refused), undefine `DELETE /nodes/{node}/qemu/{vmid}?purge=1`, migrate `POST
//! .../migrate target=<node> [online=1]`. Every one that starts a worker task waits for the task:
//! exit status OK (or `WARNINGS: n`) is success, anything else is PVE's fault text.

pub mod client;
mod driver;
pub mod error;
pub mod model;
mod probe;

pub use client::RequestShape;
pub use driver::ProxmoxDriver;
pub use probe::probe;
