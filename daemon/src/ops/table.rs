//! The table of operations: what every face and the coverage tests read. A face's row for an
//! operation names it here; an operation missing a face says so with `None`.

use super::{Access, JobKind, OpInfo};
use crate::service::jobs::{AsyncJob, Job};

/// A row with nothing set but the name, access and what it is; the rows fill in the rest.
const fn row(name: &'static str, access: Access, what: &'static str) -> OpInfo {
    OpInfo {
        name,
        access,
        what,
        job: JobKind::None,
        long: false,
        audited: false,
        http: None,
        http_remote: None,
        dbus: None,
        dbus_remote: None,
        novactl: None,
    }
}

macro_rules! lifecycle {
    ($id:ident, $name:literal, $job:ident, $long:literal, $dbus:literal, $remote:expr, $dbus_remote:expr) => {
        pub static $id: OpInfo = OpInfo {
            job: JobKind::Sync(Job::$job),
            long: $long,
            audited: true,
            http: Some(("POST", concat!("/v1/domains/{name}/", $name))),
            http_remote: $remote,
            dbus: Some(concat!("org.novacron1.Domain.", $dbus)),
            dbus_remote: $dbus_remote,
            novactl: Some($name),
            ..row($name, Access::Operate, $name)
        };
    };
}

lifecycle!(
    START,
    "start",
    Start,
    true,
    "Start",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/start")),
    Some("org.novacron1.RemoteHost.Start")
);
lifecycle!(
    SHUTDOWN,
    "shutdown",
    Shutdown,
    true,
    "Shutdown",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/shutdown")),
    Some("org.novacron1.RemoteHost.Shutdown")
);
lifecycle!(
    DESTROY,
    "destroy",
    Destroy,
    true,
    "Destroy",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/destroy")),
    Some("org.novacron1.RemoteHost.Destroy")
);
lifecycle!(
    SUSPEND,
    "suspend",
    Suspend,
    true,
    "Suspend",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/suspend")),
    Some("org.novacron1.RemoteHost.Suspend")
);
lifecycle!(
    RESUME,
    "resume",
    Resume,
    true,
    "Resume",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/resume")),
    Some("org.novacron1.RemoteHost.Resume")
);
lifecycle!(
    REBOOT,
    "reboot",
    Reboot,
    true,
    "Reboot",
    Some(("POST", "/v1/hosts/{host}/domains/{name}/reboot")),
    Some("org.novacron1.RemoteHost.Reboot")
);
lifecycle!(RESET, "reset", Reset, true, "Reset", None, None);

pub static LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains")),
    dbus: Some("org.novacron1.Manager.ListDomains"),
    novactl: Some("list"),
    http_remote: Some(("GET", "/v1/hosts/{host}/domains")),
    dbus_remote: Some("org.novacron1.RemoteHost.ListDomains"),
    ..row("list", Access::Read, "listing domains")
};
pub static GET: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}")),
    dbus: Some("org.novacron1.Manager.LookupByName"),
    novactl: Some("info"),
    http_remote: Some(("GET", "/v1/hosts/{host}/domains/{name}")),
    dbus_remote: Some("org.novacron1.RemoteHost.DomainState"),
    ..row("get", Access::Read, "reading a domain")
};
pub static XML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/xml")),
    dbus: Some("org.novacron1.Domain.GetXML"),
    novactl: Some("dumpxml"),
    ..row("dumpxml", Access::Read, "reading a domain's XML")
};
pub static DEFINE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Define),
    audited: true,
    http: Some(("POST", "/v1/domains")),
    dbus: Some("org.novacron1.Manager.DefineXML"),
    novactl: Some("define"),
    ..row("define", Access::Operate, "defining a domain")
};
pub static CREATE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Start),
    audited: true,
    http: Some(("POST", "/v1/domains")),
    dbus: Some("org.novacron1.Manager.CreateXML"),
    novactl: Some("create"),
    ..row("create", Access::Operate, "creating a domain")
};
pub static UNDEFINE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Undefine),
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}")),
    dbus: Some("org.novacron1.Domain.Undefine"),
    novactl: Some("undefine"),
    ..row("undefine", Access::Operate, "undefining a domain")
};
pub static AUTOSTART: OpInfo = OpInfo {
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/autostart")),
    dbus: Some("org.novacron1.Domain.SetAutostart"),
    novactl: Some("autostart"),
    ..row("autostart", Access::Operate, "autostart")
};
pub static SET_METADATA: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Define),
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/metadata")),
    dbus: Some("org.novacron1.Domain.SetMetadata"),
    novactl: Some("set-metadata"),
    ..row("set-metadata", Access::Operate, "setting metadata")
};
pub static PINNING: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/pinning")),
    dbus: Some("org.novacron1.Domain.GetPinning"),
    novactl: Some("vcpupin"),
    ..row("pinning", Access::Read, "reading pins")
};
macro_rules! pin {
    ($id:ident, $name:literal, $dbus:literal) => {
        pub static $id: OpInfo = OpInfo {
            job: JobKind::Sync(Job::Modify),
            audited: true,
            http: Some(("PUT", "/v1/domains/{name}/pinning")),
            dbus: Some(concat!("org.novacron1.Domain.", $dbus)),
            novactl: Some($name),
            ..row($name, Access::Operate, "pinning")
        };
    };
}
pin!(VCPUPIN, "vcpupin", "PinVCPU");
pin!(EMULATORPIN, "emulatorpin", "PinEmulator");
pin!(IOTHREADPIN, "iothreadpin", "PinIOThread");
pub static QMP: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/qmp")),
    novactl: Some("qmp"),
    ..row("qmp", Access::Admin, "QMP passthrough")
};
pub static OPERATION: OpInfo = OpInfo {
    http: Some(("GET", "/v1/operations/{id}")),
    novactl: Some("operation"),
    ..row("operation", Access::Read, "reading an operation")
};
pub static HOST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/host")),
    dbus: Some("org.novacron1.Manager.GetHostInfo"),
    novactl: Some("host"),
    ..row("host", Access::Read, "reading the host")
};
pub static EVENTS: OpInfo = OpInfo {
    http: Some(("GET", "/v1/events")),
    novactl: Some("events"),
    ..row("events", Access::Read, "the event stream")
};
pub static OPENAPI: OpInfo = OpInfo {
    http: Some(("GET", "/v1/openapi.json")),
    ..row("openapi", Access::Read, "the API description")
};
pub static METRICS: OpInfo = OpInfo {
    http: Some(("GET", "/metrics")),
    ..row("metrics", Access::Read, "metrics")
};
pub static HOSTS: OpInfo = OpInfo {
    http: Some(("GET", "/v1/hosts")),
    novactl: Some("hosts"),
    ..row("hosts", Access::Read, "listing remote hosts")
};
pub static HOST_GET: OpInfo = OpInfo {
    http: Some(("GET", "/v1/hosts/{host}")),
    novactl: Some("hosts"),
    ..row("host-get", Access::Read, "reading a remote host")
};
pub static REGISTER_HOST: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/hosts")),
    novactl: Some("hosts"),
    ..row("register host", Access::Admin, "registering a remote host")
};
pub static UNREGISTER_HOST: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/hosts/{host}")),
    novactl: Some("hosts"),
    ..row(
        "unregister host",
        Access::Admin,
        "unregistering a remote host",
    )
};
pub static DISCOVER_HOSTS: OpInfo = OpInfo {
    http: Some(("POST", "/v1/hosts/discover")),
    novactl: Some("hosts"),
    ..row("discover hosts", Access::Admin, "probing addresses")
};
pub static MIGRATE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Migration),
    long: true,
    audited: false,
    http: Some(("POST", "/v1/domains/{name}/migrate")),
    dbus: Some("org.novacron1.Domain.Migrate"),
    novactl: Some("migrate"),
    ..row("migrate", Access::Operate, "migrating")
};
pub static MIGRATION: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/migration")),
    novactl: Some("migration"),
    ..row("migration", Access::Read, "reading a migration")
};
pub static MIGRATE_CANCEL: OpInfo = OpInfo {
    http: Some(("DELETE", "/v1/domains/{name}/migration")),
    dbus: Some("org.novacron1.Domain.CancelMigration"),
    novactl: Some("migrate-cancel"),
    ..row("migrate-cancel", Access::Operate, "cancelling a migration")
};
pub static MIGRATE_POSTCOPY: OpInfo = OpInfo {
    http: Some(("POST", "/v1/domains/{name}/migration/postcopy")),
    novactl: Some("migrate-postcopy"),
    ..row(
        "migrate-postcopy",
        Access::Operate,
        "switching to post-copy",
    )
};
pub static INCOMING_PREPARE: OpInfo = OpInfo {
    http: Some(("POST", "/v1/migrations/incoming")),
    ..row(
        "migrate-incoming",
        Access::Peer,
        "the migration peer protocol",
    )
};
pub static INCOMING_GET: OpInfo = OpInfo {
    http: Some(("GET", "/v1/migrations/incoming/{id}")),
    ..row(
        "migrate-incoming-get",
        Access::Peer,
        "the migration peer protocol",
    )
};
pub static INCOMING_FINISH: OpInfo = OpInfo {
    http: Some(("POST", "/v1/migrations/incoming/{id}/finish")),
    ..row(
        "migrate-finish",
        Access::Peer,
        "the migration peer protocol",
    )
};
pub static INCOMING_ABORT: OpInfo = OpInfo {
    http: Some(("DELETE", "/v1/migrations/incoming/{id}")),
    ..row("migrate-abort", Access::Peer, "the migration peer protocol")
};
pub static CONSOLE_TICKET: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/console/ticket")),
    ..row("console-ticket", Access::Operate, "the serial console")
};
pub static VNC_TICKET: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/vnc/ticket")),
    ..row("vnc-ticket", Access::Operate, "the graphical console")
};
/// The websockets themselves: HTTP only (D-Bus and novactl have no websocket face; novactl
/// console mints a ticket and opens this route). Audited when opened.
pub static CONSOLE: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/console")),
    ..row("console", Access::Operate, "the serial console")
};
pub static VNC: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/vnc")),
    ..row("vnc", Access::Operate, "the graphical console")
};
pub static SCREENSHOT: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/screenshot")),
    ..row("screenshot", Access::Operate, "a screenshot")
};

/// Every operation, in the order the docs list them.
pub static ALL: &[&OpInfo] = &[
    &LIST,
    &GET,
    &XML,
    &DEFINE,
    &CREATE,
    &UNDEFINE,
    &START,
    &SHUTDOWN,
    &DESTROY,
    &SUSPEND,
    &RESUME,
    &REBOOT,
    &RESET,
    &AUTOSTART,
    &SET_METADATA,
    &PINNING,
    &VCPUPIN,
    &EMULATORPIN,
    &IOTHREADPIN,
    &QMP,
    &OPERATION,
    &HOST,
    &EVENTS,
    &OPENAPI,
    &METRICS,
    &HOSTS,
    &HOST_GET,
    &REGISTER_HOST,
    &UNREGISTER_HOST,
    &DISCOVER_HOSTS,
    &MIGRATE,
    &MIGRATION,
    &MIGRATE_CANCEL,
    &MIGRATE_POSTCOPY,
    &INCOMING_PREPARE,
    &INCOMING_GET,
    &INCOMING_FINISH,
    &INCOMING_ABORT,
    &SNAPSHOT_CREATE,
    &SNAPSHOT_LIST,
    &SNAPSHOT_INFO,
    &SNAPSHOT_XML,
    &SNAPSHOT_DELETE,
    &SNAPSHOT_REVERT,
    &SNAPSHOT_SCHEDULE,
    &SNAPSHOT_SCHEDULE_SET,
    &SNAPSHOT_SCHEDULE_DELETE,
    &CONSOLE_TICKET,
    &VNC_TICKET,
    &CONSOLE,
    &VNC,
    &SCREENSHOT,
];

// Disk snapshots (issue 17): changes take the domain's async job slot; queries none.
pub static SNAPSHOT_CREATE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/snapshots")),
    novactl: Some("snapshot-create-as"),
    ..row("snapshot-create", Access::Operate, "taking a snapshot")
};
pub static SNAPSHOT_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots")),
    novactl: Some("snapshot-list"),
    ..row("snapshot-list", Access::Read, "listing snapshots")
};
pub static SNAPSHOT_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots/{snap}")),
    novactl: Some("snapshot-info"),
    ..row("snapshot-info", Access::Read, "reading a snapshot")
};
pub static SNAPSHOT_XML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots/{snap}/xml")),
    novactl: Some("snapshot-dumpxml"),
    ..row("snapshot-dumpxml", Access::Read, "reading a snapshot's XML")
};
pub static SNAPSHOT_DELETE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/snapshots/{snap}")),
    novactl: Some("snapshot-delete"),
    ..row("snapshot-delete", Access::Operate, "deleting a snapshot")
};
pub static SNAPSHOT_REVERT: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/snapshots/{snap}/revert")),
    novactl: Some("snapshot-revert"),
    ..row(
        "snapshot-revert",
        Access::Operate,
        "reverting to a snapshot",
    )
};

pub static SNAPSHOT_SCHEDULE: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshot-schedule")),
    novactl: Some("snapshot-schedule"),
    ..row(
        "snapshot-schedule",
        Access::Read,
        "reading a snapshot schedule",
    )
};
pub static SNAPSHOT_SCHEDULE_SET: OpInfo = OpInfo {
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/snapshot-schedule")),
    novactl: Some("snapshot-schedule"),
    ..row(
        "snapshot-schedule-set",
        Access::Operate,
        "setting a snapshot schedule",
    )
};
pub static SNAPSHOT_SCHEDULE_DELETE: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/snapshot-schedule")),
    novactl: Some("snapshot-schedule"),
    ..row(
        "snapshot-schedule-delete",
        Access::Operate,
        "removing a snapshot schedule",
    )
};

/// The row named `name`.
pub fn find(name: &str) -> Option<&'static OpInfo> {
    ALL.iter().copied().find(|i| i.name == name)
}
