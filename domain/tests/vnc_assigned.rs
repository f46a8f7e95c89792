//! A running guest's autoport VNC display with the port the host gave it (`Assigned`): the
//! live XML shows `port='N' autoport='yes'` as libvirt's does, read back it is autoport again,
//! and a start picks a new display rather than reusing the recorded one.

use novacron_domain::model::{Graphics, VncPort};
use novacron_domain::{build_argv, Accel, CpuChoice, DomainConfig, LaunchContext, MonitorSocket};

fn guest() -> DomainConfig {
    DomainConfig::from_xml(
        "<domain type='kvm'>
           <name>vnc</name>
           <uuid>6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b</uuid>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <devices><graphics type='vnc' port='-1' autoport='yes'/></devices>
         </domain>",
    )
    .expect("xml")
}

fn ctx(vnc_display: Option<u16>) -> LaunchContext {
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Path("/run/novacron/domains/vnc/qmp.sock".into()),
        fd_sets: Vec::new(),
        runtime_dir: "/run/novacron/domains/vnc".into(),
        memory_dir: None,
        serial_log: None,
        net_fds: Default::default(),
        vnc_display,
        spice_port: None,
        swtpm_socket: None,
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn with_port(port: VncPort) -> DomainConfig {
    let mut c = guest();
    c.devices.graphics = Some(Graphics::Vnc {
        port,
        listen: None,
        keymap: None,
    });
    c
}

#[test]
fn live_xml_shows_the_assigned_port_with_autoport_and_reads_back_as_auto() {
    let xml = with_port(VncPort::Assigned(5907)).to_xml();
    assert!(
        xml.contains("port=\"5907\"") || xml.contains("port='5907'"),
        "{xml}"
    );
    assert!(
        xml.contains("autoport=\"yes\"") || xml.contains("autoport='yes'"),
        "{xml}"
    );
    let back = DomainConfig::from_xml(&xml).expect("reads back");
    assert_eq!(back, with_port(VncPort::Auto));
}

#[test]
fn a_start_uses_the_display_it_is_given_not_the_recorded_one() {
    let vd = with_port(VncPort::Assigned(5907))
        .validate()
        .expect("valid");
    let argv = build_argv(&vd, &ctx(Some(2))).expect("argv");
    let at = argv.iter().position(|a| a == "-vnc").expect("-vnc");
    assert_eq!(argv[at + 1], "127.0.0.1:2");
    assert!(
        build_argv(&vd, &ctx(None)).is_err(),
        "needs a display like Auto"
    );
}
