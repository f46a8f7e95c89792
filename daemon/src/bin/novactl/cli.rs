//! The command line (clap derive). Behaviour lives in `commands.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use novacron_domain::DomainState;

use crate::exit;

const ABOUT: &str = "Manage the domains (virtual machines) of a NovaCron host";

#[derive(Debug, Parser)]
#[command(
    name = "novactl",
    version,
    about = ABOUT,
    long_about = format!(
        "{ABOUT}.\n\n\
         novactl talks to novacrond over its Unix socket (the default), or over TCP with \
         --url and --token. Output is meant for people; --json prints the API's JSON \
         instead, for scripts.\n\n{}",
        exit::HELP
    ),
)]
pub struct Cli {
    /// The daemon's Unix socket [default: /run/novacron/novacrond.sock as root, else
    /// $XDG_RUNTIME_DIR/novacron/novacrond.sock, else /tmp/novacron-<uid>/novacrond.sock]
    #[arg(long, global = true, env = "NOVACRON_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Talk to a daemon over TCP instead, e.g. http://host:8080 or https://host:8443 (takes
    /// precedence over --socket)
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// Bearer token for --url
    #[arg(
        long,
        global = true,
        env = "NOVACRON_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// For an https --url: trust only the CA certificate(s) in this PEM file (a private CA)
    /// instead of the built-in public roots
    #[arg(long, global = true, env = "NOVACRON_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Print the API's JSON instead of tables and sentences
    #[arg(long, global = true)]
    pub json: bool,

    /// Act on a domain of this remote vendor host (see `novactl hosts`) instead of a local
    /// one: list, info, start, shutdown, destroy, suspend, resume, reboot
    #[arg(long = "host", global = true, value_name = "NAME")]
    pub remote_host: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pools and volumes (pool-list, vol-create-as, vol-clone, ...)
    #[command(flatten)]
    Storage(crate::volumes::StorageCommand),
    /// List domains (only active ones unless --all or --state)
    List {
        /// Only domains in this state (implies --all)
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only domains whose name matches this glob (`*`, `?`)
        #[arg(long, value_name = "GLOB")]
        name: Option<String>,
        /// Include inactive domains (shut off, crashed)
        #[arg(long, short)]
        all: bool,
        /// Only domains with this tag (see set-metadata)
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
    },
    /// Show a domain's status and main settings
    Info { name: String },
    /// Define (or redefine) a persistent domain from libvirt XML or model JSON
    Define {
        /// The definition; `-` reads standard input. XML if it starts with `<`, else JSON.
        #[arg(long, short, value_name = "FILE", required_unless_present = "validate")]
        file: Option<PathBuf>,
        /// Only check FILE as a define would (validation, storage roots, the QEMU command
        /// line); define nothing
        #[arg(long, value_name = "FILE", conflicts_with = "file")]
        validate: Option<PathBuf>,
    },
    /// Create and start a transient domain (gone once it stops)
    Create {
        /// The definition; `-` reads standard input. XML if it starts with `<`, else JSON.
        #[arg(long, short, value_name = "FILE")]
        file: PathBuf,
    },
    /// Remove a domain's definition (a running domain keeps running, as transient)
    Undefine { name: String },
    /// Start a domain
    Start {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Ask the guest to power off (ACPI), waiting up to a timeout
    Shutdown {
        name: String,
        /// Seconds to wait for the guest [default: the daemon's shutdown_timeout_secs]
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Power off hard if the guest has not stopped by the timeout
        #[arg(long)]
        force: bool,
        /// Ask the guest by the ACPI power button (default) or through its agent
        #[arg(long, value_parser = ["acpi", "agent"])]
        mode: Option<String>,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Power a domain off at once (the guest gets no chance to shut down)
    Destroy {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Pause a domain's vCPUs
    Suspend {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Resume a paused domain
    Resume {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Ask the guest to reboot
    Reboot {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Reset a domain (like pressing the reset button)
    Reset {
        name: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Print a domain's definition as libvirt XML
    Dumpxml { name: String },
    /// Start a domain with the daemon (or stop doing so with --disable)
    Autostart {
        name: String,
        #[arg(long)]
        disable: bool,
    },
    /// Attach the terminal to a domain's serial console (Ctrl-] leaves, as virsh console)
    Console {
        name: String,
        /// Only watch: do not take the keyboard from another client
        #[arg(long)]
        viewer: bool,
    },
    /// Set a domain's title, description or tags (what is not given stays as it is)
    SetMetadata {
        name: String,
        /// One line; "" removes it
        #[arg(long)]
        title: Option<String>,
        /// Free text; "" removes it
        #[arg(long)]
        description: Option<String>,
        /// A tag (repeat for more); replaces the domain's tags
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Remove every tag
        #[arg(long, conflicts_with = "tags")]
        clear_tags: bool,
    },
    /// List a domain's NICs (live when it runs)
    Domiflist { name: String },
    /// Add a NIC (a tap on a bridge or network, or a macvtap on a host NIC)
    AttachInterface {
        name: String,
        /// bridge, network or direct
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The bridge, network or host NIC
        #[arg(long)]
        source: String,
        /// macvtap mode for direct: bridge, vepa, private, passthrough
        #[arg(long)]
        mode: Option<String>,
        /// virtio (default), e1000e, e1000, rtl8139
        #[arg(long)]
        model: Option<String>,
        /// Drawn free when absent
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Affect the running guest
        #[arg(long)]
        live: bool,
        /// Affect the definition
        #[arg(long)]
        config: bool,
        /// Limit traffic to the guest: average[,peak[,burst]] (kB/s, kB/s, KiB)
        #[arg(long)]
        inbound: Option<String>,
        /// Limit traffic from the guest: average[,,burst] (kB/s, KiB)
        #[arg(long)]
        outbound: Option<String>,
        /// Queue pairs of a multi-queue virtio NIC
        #[arg(long)]
        queues: Option<u32>,
        /// VLAN tag of the tap's bridge port
        #[arg(long)]
        vlan: Option<u16>,
        /// The host link's name
        #[arg(long)]
        target: Option<String>,
    },
    /// Remove a NIC by its MAC (waits for the guest to release it)
    DetachInterface {
        name: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        live: bool,
        #[arg(long)]
        config: bool,
        /// Seconds to wait for the guest (default 20)
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Set a NIC's link up or down as the guest sees it
    DomifSetlink {
        name: String,
        /// The NIC's MAC
        interface: String,
        /// up or down
        state: String,
    },
    /// Follow domain events until interrupted (Ctrl-C)
    Events {
        /// Begin after this sequence number (replaying what the daemon still holds)
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
    },
    /// Show a domain's guest agent: connected or not, its version
    Guestinfo {
        name: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// Ping a domain's guest agent and print the round trip
    GuestAgentPing {
        name: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// Freeze the guest's file systems through its agent (until domfsthaw)
    Domfsfreeze {
        name: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// Thaw the guest's file systems through its agent
    Domfsthaw {
        name: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// List the guest's addresses per NIC: DHCP leases of the daemon's networks, or as its
    /// agent reports them
    Domifaddr {
        name: String,
        /// Where the addresses come from
        #[arg(long, value_parser = ["lease", "agent"], default_value = "lease")]
        source: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// Send a raw command to a domain's guest agent (admins only), e.g.
    /// '{"execute":"guest-info"}'
    #[command(name = "qemu-agent-command")]
    QemuAgentCmd {
        name: String,
        /// The command as JSON: {"execute": ..., "arguments": {...}}
        #[arg(value_name = "JSON")]
        command: String,
        #[command(flatten)]
        agent: crate::agent::AgentArgs,
    },
    /// Send a QMP command to a domain's QEMU (admins only) and print its return
    Qmp {
        name: String,
        /// The QMP command, e.g. query-status
        command: String,
        /// The command's arguments as a JSON object
        #[arg(value_name = "ARGS_JSON")]
        arguments: Option<String>,
    },
    /// Show an operation started with --no-wait (exits with the operation's error code
    /// if it failed)
    Operation { id: String },
    /// Show the host: versions, KVM, CPUs, memory, domain counts
    Host,
    /// Take a snapshot: external qcow2 overlays over every writable disk, and with
    /// --memspec (or --memory) the running guest's RAM too
    SnapshotCreateAs {
        name: String,
        snapshot: String,
        #[arg(long)]
        description: Option<String>,
        /// Disks only
        #[arg(long)]
        disk_only: bool,
        /// Freeze the guest's filesystems first (refused without a connected guest agent)
        #[arg(long)]
        quiesce: bool,
        /// Save the guest's RAM too: `snapshot=external` (the daemon names the file, in the
        /// domain's snapshot directory)
        #[arg(long, value_name = "SPEC")]
        memspec: Option<String>,
        /// The same as --memspec snapshot=external
        #[arg(long)]
        memory: bool,
        /// With memory: keep the guest running while its RAM is written
        /// (QEMU's background snapshot); paused for the whole save otherwise
        #[arg(long)]
        live: bool,
    },
    /// List a domain's snapshots
    SnapshotList {
        name: String,
        /// As a tree
        #[arg(long)]
        tree: bool,
    },
    /// Show one snapshot
    SnapshotInfo { name: String, snapshot: String },
    /// A snapshot as libvirt's <domainsnapshot> XML
    SnapshotDumpxml { name: String, snapshot: String },
    /// Delete a snapshot (its image is merged; files still referenced are kept)
    SnapshotDelete { name: String, snapshot: String },
    /// Revert to a snapshot: a stopped domain's disks, or with a snapshot with memory the
    /// whole guest (a new QEMU continues from that moment)
    SnapshotRevert { name: String, snapshot: String },
    /// Show, set (--every with --keep) or remove (--disable) a domain's snapshot schedule
    SnapshotSchedule {
        name: String,
        /// 30s, 15m, 6h, 1d, @hourly, @daily
        #[arg(long, requires = "keep")]
        every: Option<String>,
        /// How many scheduled snapshots to keep
        #[arg(long)]
        keep: Option<u32>,
        #[arg(long, conflicts_with = "every")]
        disable: bool,
    },
    /// Show where a domain's vCPUs may run, or pin one (like virsh vcpupin)
    Vcpupin {
        name: String,
        /// The vCPU to show or pin (all are shown when omitted)
        vcpu: Option<u32>,
        /// Host CPUs in libvirt syntax, e.g. 0-3,^2 (shows the pins when omitted)
        #[arg(requires = "vcpu")]
        cpulist: Option<String>,
        #[command(flatten)]
        scope: PinScopeArg,
    },
    /// Show where a domain's emulator threads may run, or pin them (like virsh emulatorpin)
    Emulatorpin {
        name: String,
        /// Host CPUs in libvirt syntax (shows the pin when omitted)
        cpulist: Option<String>,
        #[command(flatten)]
        scope: PinScopeArg,
    },
    /// Show where a domain's iothreads may run, or pin one (like virsh iothreadpin)
    Iothreadpin {
        name: String,
        /// The iothread id (from 1)
        iothread: Option<u32>,
        /// Host CPUs in libvirt syntax (shows the pins when omitted)
        #[arg(requires = "iothread")]
        cpulist: Option<String>,
        #[command(flatten)]
        scope: PinScopeArg,
    },
    /// Remote vendor hosts (vSphere, Proxmox VE, XenServer/XCP-ng, Hyper-V): list them, probe
    /// addresses, register and remove (default: list)
    Hosts {
        #[command(subcommand)]
        command: Option<HostsCommand>,
    },
    /// Migrate a running domain live to another novacrond, following it with a progress bar
    Migrate(crate::migrate::MigrateArgs),
    /// Show the running or last migration of a domain
    Migration { name: String },
    /// Cancel a running migration: the guest keeps running here
    MigrateCancel { name: String },
    /// Switch a running migration (started with --postcopy) to post-copy
    MigratePostcopy { name: String },
    /// List a domain's disks (the running guest's; --inactive: the definition's)
    Domblklist(crate::disks::ListArgs),
    /// Attach a disk (a running guest: hot-plug; --config: the definition)
    AttachDisk(crate::disks::AttachArgs),
    /// Detach a disk; a running guest must release it (waits, then times out)
    DetachDisk(crate::disks::DetachArgs),
    /// Grow a running guest's disk
    Blockresize(crate::disks::ResizeArgs),
    /// Show or set a running guest's disk I/O limits
    Blkdeviotune(crate::disks::IoTuneArgs),
    /// Eject, insert or replace a CD-ROM's medium
    ChangeMedia(crate::disks::MediaArgs),
    /// Virtual networks (net-define, net-start, net-list, ...)
    #[command(flatten)]
    Net(crate::networks::NetCommand),
    /// Domain templates (template-create, template-deploy, ...)
    #[command(flatten)]
    Templates(crate::templates::TemplateCommand),
    /// vCPUs and memory (setvcpus, vcpucount, setmem, dommemstat, ...)
    #[command(flatten)]
    Resources(crate::live_resources::ResourceCommand),
    /// A NIC's bandwidth (domiftune)
    #[command(flatten)]
    NicTune(crate::nic_tune::NicTuneCommand),
    /// Print a shell completion script, e.g. `novactl completions bash > /etc/bash_completion.d/novactl`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Every remote host with its circuit-breaker state
    List,
    /// One remote host
    Show { name: String },
    /// Probe addresses (host, host:port or URL) for vSphere, Proxmox VE, XAPI and WinRM;
    /// registers nothing
    Discover {
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Accept any TLS certificate while probing
        #[arg(long)]
        insecure: bool,
        /// Seconds per probe [default: 5]
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Register a remote host (admins); its credentials are stored by the daemon, 0600
    Register {
        name: String,
        /// vsphere, proxmox, xapi or hyperv
        #[arg(long)]
        driver: String,
        /// The vendor API's base URL, e.g. https://vcenter.example.com (not `--url`, which is
        /// always the daemon's)
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// A file of `user = ...` and `password = ...` (or `token_id` / `token_secret`) lines
        #[arg(long, value_name = "FILE")]
        credentials_file: PathBuf,
        /// Do not verify the endpoint's TLS certificate
        #[arg(long)]
        insecure: bool,
        /// Trust this PEM CA bundle for the endpoint (on the daemon's machine)
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Unregister an API-registered host (admins)
    Remove { name: String },
}

/// `--live`, `--config` as virsh has them: neither means the running guest if it runs, else
/// its definition.
#[derive(Debug, Clone, Copy, Args)]
pub struct PinScopeArg {
    /// The running guest's threads
    #[arg(long)]
    pub live: bool,
    /// The persistent definition (for the next start); with no cpulist, show its pins
    #[arg(long)]
    pub config: bool,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArg {
    /// Return at once with the operation's id instead of waiting for it to finish
    #[arg(long)]
    pub no_wait: bool,
}

/// `DomainState` as clap sees it (the API's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Shutoff,
    Starting,
    Running,
    Paused,
    #[value(name = "shutting_down", alias = "shutting-down")]
    ShuttingDown,
    Migrating,
    Suspended,
    Crashed,
}

impl From<StateArg> for DomainState {
    fn from(s: StateArg) -> DomainState {
        match s {
            StateArg::Shutoff => DomainState::Shutoff,
            StateArg::Starting => DomainState::Starting,
            StateArg::Running => DomainState::Running,
            StateArg::Paused => DomainState::Paused,
            StateArg::ShuttingDown => DomainState::ShuttingDown,
            StateArg::Migrating => DomainState::Migrating,
            StateArg::Suspended => DomainState::Suspended,
            StateArg::Crashed => DomainState::Crashed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every long name, short name, alias and id an argument answers to.
    fn names(a: &clap::Arg) -> Vec<String> {
        let mut n = vec![format!("id {}", a.get_id())];
        n.extend(a.get_long().map(|l| format!("--{l}")));
        n.extend(a.get_short().map(|s| format!("-{s}")));
        n.extend(
            a.get_all_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        n.extend(
            a.get_all_short_aliases()
                .into_iter()
                .flatten()
                .map(|s| format!("-{s}")),
        );
        n
    }

    /// Where a subcommand's option has a global option's name, clap quietly gives the value to
    /// one of them: `hosts register --url` once sent the vendor's credentials to the vendor.
    #[test]
    fn no_subcommand_option_shares_a_name_with_a_global_one() {
        fn walk(cmd: &clap::Command, at: &str, globals: &[String], clashes: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let at = format!("{at} {}", sub.get_name());
                for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
                    for name in names(arg) {
                        if globals.contains(&name) {
                            clashes.push(format!("{at}: {name}"));
                        }
                    }
                }
                walk(sub, &at, globals, clashes);
            }
        }
        let root = Cli::command();
        let globals: Vec<String> = root
            .get_arguments()
            .filter(|a| a.is_global_set())
            .flat_map(names)
            .collect();
        assert!(globals.contains(&"--url".to_owned()), "{globals:?}");
        let mut clashes = Vec::new();
        walk(&root, "novactl", &globals, &mut clashes);
        assert!(
            clashes.is_empty(),
            "subcommand options named like global ones: {clashes:?}"
        );
    }

    /// The README's command lines, as written, reach the subcommand and arguments meant.
    #[test]
    fn every_readme_command_line_parses_to_what_it_says() {
        let expected: &[(&str, &str)] = &[
            ("novactl list --all", r#"List { state: None, name: None, all: true, tag: None }"#),
            ("novactl define -f web1.xml", r#"Define { file: Some("web1.xml"), validate: None }"#),
            ("novactl start web1", r#"Start { name: "web1", wait: WaitArg { no_wait: false } }"#),
            ("novactl info web1", r#"Info { name: "web1" }"#),
            ("novactl suspend web1", r#"Suspend { name: "web1", wait: WaitArg { no_wait: false } }"#),
            ("novactl resume web1", r#"Resume { name: "web1", wait: WaitArg { no_wait: false } }"#),
            (
                "novactl shutdown web1 --timeout 60 --force",
                r#"Shutdown { name: "web1", timeout: Some(60), force: true, mode: None, wait: WaitArg { no_wait: false } }"#,
            ),
            ("novactl events", "Events { after: None }"),
            (
                "novactl qmp web1 query-status",
                r#"Qmp { name: "web1", command: "query-status", arguments: None }"#,
            ),
            (
                "novactl vcpupin web1 0 2-3 --live --config",
                r#"Vcpupin { name: "web1", vcpu: Some(0), cpulist: Some("2-3"), scope: PinScopeArg { live: true, config: true } }"#,
            ),
            (
                "novactl migrate web1 https://peer:8443 --destination-token T",
                r#"name: "web1", destination: "https://peer:8443", destination_token: Some("T")"#,
            ),
            (
                "novactl hosts discover pve.example",
                r#"Hosts { command: Some(Discover { addresses: ["pve.example"], insecure: false, timeout: None }) }"#,
            ),
            (
                "novactl hosts register pve1 --driver proxmox --endpoint https://pve.example:8006 --credentials-file pve1.cred",
                r#"Hosts { command: Some(Register { name: "pve1", driver: "proxmox", endpoint: "https://pve.example:8006", credentials_file: "pve1.cred", insecure: false, ca_file: None }) }"#,
            ),
            ("novactl --host pve1 list --all", "List { state: None, name: None, all: true, tag: None }"),
            (
                "novactl --host pve1 start web7",
                r#"Start { name: "web7", wait: WaitArg { no_wait: false } }"#,
            ),
        ];
        let lines = crate::readme::novactl_lines(crate::readme::README);
        let written: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
        let listed: Vec<&str> = expected.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            written, listed,
            "README.md's novactl lines changed: say here what each must parse to"
        );
        for (words, (line, command)) in lines.iter().zip(expected) {
            let cli = Cli::try_parse_from(words)
                .unwrap_or_else(|e| panic!("README line {line:?} does not parse:\n{e}"));
            let got = format!("{:?}", cli.command);
            assert!(got.contains(command), "{line:?} parsed to {got}");
            // Only a line that says --url talks to a daemon over TCP; --host only on its lines.
            assert_eq!(cli.url, None, "{line:?} would go to another daemon");
            assert_eq!(
                cli.remote_host.as_deref(),
                line.contains("--host pve1").then_some("pve1"),
                "{line:?}"
            );
        }
    }

    /// The README's registration as it was once written no longer parses: nothing is sent.
    #[test]
    fn the_vendor_url_is_never_taken_for_the_daemon_url() {
        let e = Cli::try_parse_from([
            "novactl",
            "hosts",
            "register",
            "pve1",
            "--driver",
            "proxmox",
            "--url",
            "https://pve.example:8006",
            "--credentials-file",
            "pve1.cred",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--endpoint"), "{e}");
        // Both given: each goes where it says.
        let cli = Cli::try_parse_from([
            "novactl",
            "--url",
            "https://daemon:8443",
            "hosts",
            "register",
            "pve1",
            "--driver",
            "proxmox",
            "--endpoint",
            "https://pve.example:8006",
            "--credentials-file",
            "pve1.cred",
        ])
        .unwrap();
        assert_eq!(cli.url.as_deref(), Some("https://daemon:8443"));
        let got = format!("{:?}", cli.command);
        assert!(
            got.contains(r#"endpoint: "https://pve.example:8006""#),
            "{got}"
        );
    }

    #[test]
    fn state_names_match_the_api() {
        for state in DomainState::ALL {
            let arg = StateArg::from_str(state.as_str(), false).unwrap();
            assert_eq!(DomainState::from(arg), state);
        }
    }

    #[test]
    fn parses_a_typical_line() {
        let cli = Cli::try_parse_from([
            "novactl",
            "--json",
            "shutdown",
            "vm1",
            "--timeout",
            "30",
            "--force",
            "--no-wait",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Shutdown {
                name,
                timeout,
                force,
                wait,
                ..
            } => {
                assert_eq!(
                    (name.as_str(), timeout, force, wait.no_wait),
                    ("vm1", Some(30), true, true)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
