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
        domain: true,
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
// NICs (taps): attach/detach/link state/list.
pub static ATTACH_INTERFACE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/interfaces")),
    dbus: Some("org.novacron1.Domain.AttachInterface"),
    novactl: Some("attach-interface"),
    ..row("attach-interface", Access::Operate, "attaching a NIC")
};
pub static DETACH_INTERFACE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::NicUnplug),
    long: true,
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/interfaces/{mac}")),
    dbus: Some("org.novacron1.Domain.DetachInterface"),
    novactl: Some("detach-interface"),
    ..row("detach-interface", Access::Operate, "detaching a NIC")
};
pub static DOMIF_SETLINK: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/interfaces/{mac}/link")),
    dbus: Some("org.novacron1.Domain.SetInterfaceLink"),
    novactl: Some("domif-setlink"),
    ..row("domif-setlink", Access::Operate, "setting a NIC's link")
};
pub static DOMIFLIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/interfaces")),
    dbus: Some("org.novacron1.Domain.ListInterfaces"),
    novactl: Some("domiflist"),
    ..row("domiflist", Access::Read, "listing NICs")
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
    novactl: Some("console"),
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
pub static WEBHOOKS: OpInfo = OpInfo {
    http: Some(("GET", "/v1/webhooks")),
    ..row("webhooks", Access::Admin, "webhook status")
};

// Pools and volumes: targets are `pool` or `pool/volume`, not domains.
pub static POOL_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools")),
    dbus: Some("org.novacron1.Manager.ListPools"),
    novactl: Some("pool-list"),
    domain: false,
    ..row("pool-list", Access::Read, "listing pools")
};
pub static POOL_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools/{pool}")),
    dbus: Some("org.novacron1.Manager.GetPoolInfo"),
    novactl: Some("pool-info"),
    domain: false,
    ..row("pool-info", Access::Read, "reading a pool")
};
pub static POOL_XML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools/{pool}/xml")),
    dbus: Some("org.novacron1.Manager.GetPoolXML"),
    novactl: Some("pool-dumpxml"),
    domain: false,
    ..row("pool-dumpxml", Access::Read, "reading a pool's XML")
};
pub static POOL_DEFINE: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/pools")),
    dbus: Some("org.novacron1.Manager.DefinePoolXML"),
    novactl: Some("pool-define"),
    domain: false,
    ..row("pool-define", Access::Operate, "defining a pool")
};
pub static POOL_UNDEFINE: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/pools/{pool}")),
    dbus: Some("org.novacron1.Manager.UndefinePool"),
    novactl: Some("pool-undefine"),
    domain: false,
    ..row("pool-undefine", Access::Operate, "undefining a pool")
};
pub static VOL_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools/{pool}/volumes")),
    dbus: Some("org.novacron1.Manager.ListVolumes"),
    novactl: Some("vol-list"),
    domain: false,
    ..row("vol-list", Access::Read, "listing volumes")
};
pub static VOL_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools/{pool}/volumes/{volume}")),
    dbus: Some("org.novacron1.Manager.GetVolumeInfo"),
    novactl: Some("vol-info"),
    domain: false,
    ..row("vol-info", Access::Read, "reading a volume")
};
pub static VOL_XML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/pools/{pool}/volumes/{volume}/xml")),
    dbus: Some("org.novacron1.Manager.GetVolumeXML"),
    novactl: Some("vol-dumpxml"),
    domain: false,
    ..row("vol-dumpxml", Access::Read, "reading a volume's XML")
};
pub static VOL_CREATE: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/pools/{pool}/volumes")),
    dbus: Some("org.novacron1.Manager.CreateVolume"),
    novactl: Some("vol-create-as"),
    domain: false,
    ..row("vol-create", Access::Operate, "creating a volume")
};
pub static VOL_RESIZE: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/pools/{pool}/volumes/{volume}/resize")),
    dbus: Some("org.novacron1.Manager.ResizeVolume"),
    novactl: Some("vol-resize"),
    domain: false,
    ..row("vol-resize", Access::Operate, "resizing a volume")
};
pub static VOL_DELETE: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/pools/{pool}/volumes/{volume}")),
    dbus: Some("org.novacron1.Manager.DeleteVolume"),
    novactl: Some("vol-delete"),
    domain: false,
    ..row("vol-delete", Access::Operate, "deleting a volume")
};
pub static VOL_CLONE: OpInfo = OpInfo {
    audited: true,
    long: true,
    http: Some(("POST", "/v1/pools/{pool}/volumes/{volume}/clone")),
    dbus: Some("org.novacron1.Manager.CloneVolume"),
    novactl: Some("vol-clone"),
    domain: false,
    ..row("vol-clone", Access::Operate, "cloning a volume")
};
// Byte streams: HTTP only (a D-Bus message is no place for gigabytes).
pub static VOL_UPLOAD: OpInfo = OpInfo {
    audited: true,
    http: Some(("PUT", "/v1/pools/{pool}/volumes/{volume}/data")),
    novactl: Some("vol-upload"),
    domain: false,
    ..row("vol-upload", Access::Operate, "uploading into a volume")
};
pub static VOL_DOWNLOAD: OpInfo = OpInfo {
    audited: true,
    http: Some(("GET", "/v1/pools/{pool}/volumes/{volume}/data")),
    novactl: Some("vol-download"),
    domain: false,
    ..row("vol-download", Access::Read, "downloading a volume")
};
// An existing host file into a pool: the path is checked by the caller's role (non-admins
// only inside the storage roots) in the service.
pub static VOL_IMPORT: OpInfo = OpInfo {
    audited: true,
    long: true,
    http: Some(("POST", "/v1/pools/{pool}/volumes/{volume}/import")),
    dbus: Some("org.novacron1.Manager.ImportVolume"),
    novactl: Some("vol-import"),
    domain: false,
    ..row(
        "vol-import",
        Access::Operate,
        "importing a file as a volume",
    )
};

// The guest agent (qemu-ga): no job slot (agent I/O never holds one); each call has a deadline.
pub static AGENT_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/agent")),
    dbus: Some("org.novacron1.Domain.AgentInfo"),
    novactl: Some("guestinfo"),
    ..row("agent-info", Access::Read, "reading the guest agent")
};
pub static AGENT_PING: OpInfo = OpInfo {
    http: Some(("POST", "/v1/domains/{name}/agent/ping")),
    dbus: Some("org.novacron1.Domain.AgentPing"),
    novactl: Some("guest-agent-ping"),
    ..row("agent-ping", Access::Read, "pinging the guest agent")
};
pub static AGENT_FSFREEZE: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/agent/fsfreeze")),
    dbus: Some("org.novacron1.Domain.AgentFsFreeze"),
    novactl: Some("domfsfreeze"),
    ..row(
        "agent-fsfreeze",
        Access::Operate,
        "freezing guest file systems",
    )
};
pub static AGENT_FSTHAW: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/agent/fsthaw")),
    dbus: Some("org.novacron1.Domain.AgentFsThaw"),
    novactl: Some("domfsthaw"),
    ..row(
        "agent-fsthaw",
        Access::Operate,
        "thawing guest file systems",
    )
};
pub static AGENT_INTERFACES: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/agent/interfaces")),
    dbus: Some("org.novacron1.Domain.AgentInterfaces"),
    ..row("agent-interfaces", Access::Read, "reading guest interfaces")
};
pub static AGENT_COMMAND: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/agent/command")),
    novactl: Some("qemu-agent-command"),
    ..row(
        "qemu-agent-command",
        Access::Admin,
        "raw guest agent commands",
    )
};

// Disks of a domain (attach/detach/resize/throttle/media).
pub static DOMBLKLIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/disks")),
    dbus: Some("org.novacron1.Domain.ListDisks"),
    novactl: Some("domblklist"),
    ..row("domblklist", Access::Read, "listing disks")
};
pub static ATTACH_DISK: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/disks")),
    dbus: Some("org.novacron1.Domain.AttachDisk"),
    novactl: Some("attach-disk"),
    ..row("attach-disk", Access::Operate, "attaching a disk")
};
pub static DETACH_DISK: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Unplug),
    long: true,
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/disks/{target}")),
    dbus: Some("org.novacron1.Domain.DetachDisk"),
    novactl: Some("detach-disk"),
    ..row("detach-disk", Access::Operate, "detaching a disk")
};
pub static BLOCKRESIZE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/disks/{target}/resize")),
    dbus: Some("org.novacron1.Domain.ResizeDisk"),
    novactl: Some("blockresize"),
    ..row("blockresize", Access::Operate, "resizing a disk")
};
pub static BLKDEVIOTUNE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/disks/{target}/iotune")),
    dbus: Some("org.novacron1.Domain.SetDiskIoTune"),
    novactl: Some("blkdeviotune"),
    ..row("blkdeviotune", Access::Operate, "throttling a disk")
};
pub static DISK_IOTUNE: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/disks/{target}/iotune")),
    dbus: Some("org.novacron1.Domain.GetDiskIoTune"),
    ..row("disk-iotune", Access::Read, "reading a disk's I/O limits")
};
pub static CHANGE_MEDIA: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/disks/{target}/media")),
    dbus: Some("org.novacron1.Domain.ChangeMedia"),
    novactl: Some("change-media"),
    ..row(
        "change-media",
        Access::Operate,
        "changing a CD-ROM's medium",
    )
};

/// Every operation, in the order the docs list them.
// Virtual networks (libvirt's net-*).
pub static NET_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/networks")),
    dbus: Some("org.novacron1.Manager.ListNetworks"),
    novactl: Some("net-list"),
    ..row("net-list", Access::Read, "listing networks")
};
pub static NET_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/networks/{name}")),
    dbus: Some("org.novacron1.Manager.NetworkInfo"),
    novactl: Some("net-info"),
    ..row("net-info", Access::Read, "reading a network")
};
pub static NET_DUMPXML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/networks/{name}/xml")),
    dbus: Some("org.novacron1.Manager.NetworkXML"),
    novactl: Some("net-dumpxml"),
    ..row("net-dumpxml", Access::Read, "reading a network's XML")
};
pub static NET_LEASES: OpInfo = OpInfo {
    http: Some(("GET", "/v1/networks/{name}/leases")),
    dbus: Some("org.novacron1.Manager.NetworkLeases"),
    novactl: Some("net-dhcp-leases"),
    ..row("net-dhcp-leases", Access::Read, "reading DHCP leases")
};
pub static NET_DEFINE: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/networks")),
    novactl: Some("net-define"),
    ..row("net-define", Access::Admin, "defining a network")
};
pub static NET_UNDEFINE: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/networks/{name}")),
    novactl: Some("net-undefine"),
    ..row("net-undefine", Access::Admin, "undefining a network")
};
pub static NET_START: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/networks/{name}/start")),
    dbus: Some("org.novacron1.Manager.NetworkStart"),
    novactl: Some("net-start"),
    ..row("net-start", Access::Operate, "starting a network")
};
pub static NET_DESTROY: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/networks/{name}/stop")),
    dbus: Some("org.novacron1.Manager.NetworkDestroy"),
    novactl: Some("net-destroy"),
    ..row("net-destroy", Access::Operate, "stopping a network")
};
pub static NET_AUTOSTART: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/networks/{name}/autostart")),
    dbus: Some("org.novacron1.Manager.NetworkSetAutostart"),
    novactl: Some("net-autostart"),
    ..row("net-autostart", Access::Operate, "network autostart")
};

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
    &ATTACH_INTERFACE,
    &DETACH_INTERFACE,
    &DOMIF_SETLINK,
    &DOMIFLIST,
    &PINNING,
    &VCPUPIN,
    &EMULATORPIN,
    &IOTHREADPIN,
    &QMP,
    &AGENT_INFO,
    &AGENT_PING,
    &AGENT_FSFREEZE,
    &AGENT_FSTHAW,
    &AGENT_INTERFACES,
    &AGENT_COMMAND,
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
    &POOL_LIST,
    &POOL_INFO,
    &POOL_XML,
    &POOL_DEFINE,
    &POOL_UNDEFINE,
    &VOL_LIST,
    &VOL_INFO,
    &VOL_XML,
    &VOL_CREATE,
    &VOL_RESIZE,
    &VOL_DELETE,
    &VOL_CLONE,
    &VOL_UPLOAD,
    &VOL_DOWNLOAD,
    &WEBHOOKS,
    &DOMBLKLIST,
    &ATTACH_DISK,
    &DETACH_DISK,
    &BLOCKRESIZE,
    &BLKDEVIOTUNE,
    &DISK_IOTUNE,
    &CHANGE_MEDIA,
    &NET_LIST,
    &NET_INFO,
    &NET_DUMPXML,
    &NET_LEASES,
    &NET_DEFINE,
    &NET_UNDEFINE,
    &NET_START,
    &NET_DESTROY,
    &NET_AUTOSTART,
    &VOL_IMPORT,
    &DOMIFADDR,
    &TEMPLATE_LIST,
    &TEMPLATE_INFO,
    &TEMPLATE_CREATE,
    &TEMPLATE_UPDATE,
    &TEMPLATE_DELETE,
    &TEMPLATE_DEPLOY,
    &SETVCPUS,
    &VCPUCOUNT,
    &SETMEM,
    &DOMMEMSTAT,
    &DOMMEMSTAT_PERIOD,
    &DOMMEMINFO,
    &UPDATE_MEMORY_DEVICE,
    &ATTACH_MEMORY,
    &DETACH_MEMORY,
    &DOMIFTUNE,
    &SETMAXMEM,
];

// Guest addresses per NIC (leases, or the agent on request).
pub static DOMIFADDR: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/addresses")),
    dbus: Some("org.novacron1.Domain.InterfaceAddresses"),
    novactl: Some("domifaddr"),
    ..row("domifaddr", Access::Read, "reading guest addresses")
};

// Disk snapshots (issue 17): changes take the domain's async job slot; queries none.
pub static SNAPSHOT_CREATE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/snapshots")),
    dbus: Some("org.novacron1.Domain.CreateSnapshot"),
    novactl: Some("snapshot-create-as"),
    ..row("snapshot-create", Access::Operate, "taking a snapshot")
};
pub static SNAPSHOT_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots")),
    dbus: Some("org.novacron1.Domain.ListSnapshots"),
    novactl: Some("snapshot-list"),
    ..row("snapshot-list", Access::Read, "listing snapshots")
};
pub static SNAPSHOT_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots/{snap}")),
    dbus: Some("org.novacron1.Domain.GetSnapshotInfo"),
    novactl: Some("snapshot-info"),
    ..row("snapshot-info", Access::Read, "reading a snapshot")
};
pub static SNAPSHOT_XML: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshots/{snap}/xml")),
    dbus: Some("org.novacron1.Domain.GetSnapshotXML"),
    novactl: Some("snapshot-dumpxml"),
    ..row("snapshot-dumpxml", Access::Read, "reading a snapshot's XML")
};
pub static SNAPSHOT_DELETE: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/snapshots/{snap}")),
    dbus: Some("org.novacron1.Domain.DeleteSnapshot"),
    novactl: Some("snapshot-delete"),
    ..row("snapshot-delete", Access::Operate, "deleting a snapshot")
};
pub static SNAPSHOT_REVERT: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Snapshot),
    long: true,
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/snapshots/{snap}/revert")),
    dbus: Some("org.novacron1.Domain.RevertSnapshot"),
    novactl: Some("snapshot-revert"),
    ..row(
        "snapshot-revert",
        Access::Operate,
        "reverting to a snapshot",
    )
};

pub static SNAPSHOT_SCHEDULE: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/snapshot-schedule")),
    dbus: Some("org.novacron1.Domain.GetSnapshotSchedule"),
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
    dbus: Some("org.novacron1.Domain.SetSnapshotSchedule"),
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
    dbus: Some("org.novacron1.Domain.DeleteSnapshotSchedule"),
    novactl: Some("snapshot-schedule"),
    ..row(
        "snapshot-schedule-delete",
        Access::Operate,
        "removing a snapshot schedule",
    )
};

// Domain templates (issue 17): targets are template names (a deploy's is the new domain).
pub static TEMPLATE_LIST: OpInfo = OpInfo {
    http: Some(("GET", "/v1/templates")),
    dbus: Some("org.novacron1.Manager.ListTemplates"),
    novactl: Some("template-list"),
    domain: false,
    ..row("template-list", Access::Read, "listing templates")
};
pub static TEMPLATE_INFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/templates/{template}")),
    dbus: Some("org.novacron1.Manager.GetTemplateInfo"),
    novactl: Some("template-info"),
    domain: false,
    ..row("template-info", Access::Read, "reading a template")
};
pub static TEMPLATE_CREATE: OpInfo = OpInfo {
    audited: true,
    long: true,
    http: Some(("POST", "/v1/templates")),
    dbus: Some("org.novacron1.Manager.CreateTemplate"),
    novactl: Some("template-create"),
    domain: false,
    ..row("template-create", Access::Operate, "making a template")
};
pub static TEMPLATE_UPDATE: OpInfo = OpInfo {
    audited: true,
    long: true,
    http: Some(("PATCH", "/v1/templates/{template}")),
    dbus: Some("org.novacron1.Manager.UpdateTemplate"),
    novactl: Some("template-update"),
    domain: false,
    ..row("template-update", Access::Operate, "updating a template")
};
pub static TEMPLATE_DELETE: OpInfo = OpInfo {
    audited: true,
    http: Some(("DELETE", "/v1/templates/{template}")),
    dbus: Some("org.novacron1.Manager.DeleteTemplate"),
    novactl: Some("template-delete"),
    domain: false,
    ..row("template-delete", Access::Operate, "deleting a template")
};
pub static TEMPLATE_DEPLOY: OpInfo = OpInfo {
    audited: true,
    http: Some(("POST", "/v1/templates/{template}/deploy")),
    dbus: Some("org.novacron1.Manager.DeployTemplate"),
    novactl: Some("template-deploy"),
    domain: false,
    ..row("template-deploy", Access::Operate, "deploying a template")
};
pub static SETVCPUS: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Unplug),
    long: true,
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/vcpus")),
    dbus: Some("org.novacron1.Domain.SetVcpus"),
    novactl: Some("setvcpus"),
    ..row("setvcpus", Access::Operate, "changing the vCPUs")
};
pub static VCPUCOUNT: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/vcpus")),
    dbus: Some("org.novacron1.Domain.VcpuCount"),
    novactl: Some("vcpucount"),
    ..row("vcpucount", Access::Read, "reading the vCPU counts")
};
pub static SETMEM: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/memory/balloon")),
    dbus: Some("org.novacron1.Domain.SetMemory"),
    novactl: Some("setmem"),
    ..row("setmem", Access::Operate, "setting the balloon target")
};
pub static DOMMEMSTAT: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/memory/stats")),
    dbus: Some("org.novacron1.Domain.MemoryStats"),
    novactl: Some("dommemstat"),
    ..row("dommemstat", Access::Read, "reading memory statistics")
};
pub static DOMMEMSTAT_PERIOD: OpInfo = OpInfo {
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/memory/stats")),
    dbus: Some("org.novacron1.Domain.SetMemoryStatsPeriod"),
    novactl: Some("dommemstat"),
    ..row(
        "dommemstat-period",
        Access::Operate,
        "setting the memory statistics period",
    )
};
pub static DOMMEMINFO: OpInfo = OpInfo {
    http: Some(("GET", "/v1/domains/{name}/memory")),
    dbus: Some("org.novacron1.Domain.MemoryInfo"),
    novactl: Some("dommeminfo"),
    ..row(
        "dommeminfo",
        Access::Read,
        "reading requested and guest memory",
    )
};
pub static UPDATE_MEMORY_DEVICE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/memory/devices/{alias}")),
    dbus: Some("org.novacron1.Domain.UpdateMemoryDevice"),
    novactl: Some("update-memory-device"),
    ..row(
        "update-memory-device",
        Access::Operate,
        "resizing a virtio-mem device",
    )
};
pub static ATTACH_MEMORY: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/memory/devices")),
    dbus: Some("org.novacron1.Domain.AttachMemory"),
    novactl: Some("attach-memory"),
    ..row("attach-memory", Access::Operate, "attaching memory")
};
pub static DETACH_MEMORY: OpInfo = OpInfo {
    job: JobKind::Long(AsyncJob::Unplug),
    long: true,
    audited: true,
    http: Some(("DELETE", "/v1/domains/{name}/memory/devices/{alias}")),
    dbus: Some("org.novacron1.Domain.DetachMemory"),
    novactl: Some("detach-memory"),
    ..row("detach-memory", Access::Operate, "detaching memory")
};

pub static DOMIFTUNE: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("POST", "/v1/domains/{name}/interfaces/{mac}/bandwidth")),
    dbus: Some("org.novacron1.Domain.InterfaceTune"),
    novactl: Some("domiftune"),
    ..row("domiftune", Access::Operate, "changing a NIC's bandwidth")
};

/// The row named `name`.
pub fn find(name: &str) -> Option<&'static OpInfo> {
    ALL.iter().copied().find(|i| i.name == name)
}

pub static SETMAXMEM: OpInfo = OpInfo {
    job: JobKind::Sync(Job::Modify),
    audited: true,
    http: Some(("PUT", "/v1/domains/{name}/memory/maximum")),
    dbus: Some("org.novacron1.Domain.SetMaxMemory"),
    novactl: Some("setmaxmem"),
    ..row(
        "setmaxmem",
        Access::Operate,
        "setting the definition's memory",
    )
};
