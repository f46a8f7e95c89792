//! A SPICE desktop guest as virt-manager defines it (SPICE on an allocated port, QXL, the
//! agent channel, USB redirection, ICH9 sound on a SPICE audio backend) started in real QEMU:
//! the devices exist in the running guest, and SPICE listens only where the definition says.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use novacron_domain::{DomainConfig, DomainState};
use novacron_tests::{osless_accel, Accel};
use novacrond::service::events::EventKind;
use serde_json::{json, Value};

fn desktop(name: &str, graphics: &str) -> DomainConfig {
    let ty = match osless_accel() {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let xml = format!(
        "<domain type='{ty}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
           <devices>
             <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
             <channel type='spicevmc'>
               <target type='virtio' name='com.redhat.spice.0'/>
             </channel>
             {graphics}
             <sound model='ich9'>
               <audio id='1'/>
             </sound>
             <audio id='1' type='spice'/>
             <video>
               <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
             </video>
             <redirdev bus='usb' type='spicevmc'/>
           </devices>
         </domain>"
    );
    DomainConfig::from_xml(&xml).expect("desktop xml")
}

async fn qmp(svc: &novacrond::Service, name: &str, cmd: &str, args: Option<Value>) -> Value {
    svc.qmp_passthrough(name, cmd, args.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// The TCP sockets process `pid` listens on, as `address:port` (from /proc/net/tcp{,6}).
fn listening(pid: u32) -> BTreeSet<String> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut out = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A = LISTEN; inode is field 9.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                out.insert(decode(f[1]));
            }
        }
    }
    out
}

/// `0100007F:170C` -> `127.0.0.1:5900`; IPv6 groups are written as the kernel stores them.
fn decode(local: &str) -> String {
    let (addr, port) = local.split_once(':').expect("addr:port");
    let port = u16::from_str_radix(port, 16).expect("port");
    if addr.len() == 8 {
        let v = u32::from_str_radix(addr, 16).expect("v4");
        format!("{}:{port}", std::net::Ipv4Addr::from(v.swap_bytes()))
    } else {
        format!("[{addr}]:{port}")
    }
}

#[tokio::test]
async fn spice_desktop_guest_runs_with_its_devices_on_localhost_only() {
    let mut env = Env::new();
    // Ports of its own: tests in parallel run separate daemons on one host.
    env.config.graphics.port_min = 16100;
    env.config.graphics.port_max = 16149;
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    svc.define(desktop(
        "spice1",
        "<graphics type='spice' port='-1' tlsPort='-1' autoport='yes'>
           <listen type='address'/>
           <image compression='off'/>
           <streaming mode='filter'/>
           <clipboard copypaste='no'/>
           <mouse mode='client'/>
           <filetransfer enable='no'/>
         </graphics>",
    ))
    .await
    .unwrap();
    svc.start("spice1").await.unwrap();
    wait_event(
        &mut events,
        "spice1",
        Duration::from_secs(10),
        |e| matches!(&e.kind, EventKind::StateChanged { to, .. } if *to == DomainState::Running),
    )
    .await;

    let spice = qmp(&svc, "spice1", "query-spice", None).await;
    assert_eq!(spice["enabled"], true, "{spice}");
    assert_eq!(spice["auth"], "none", "{spice}");
    assert_eq!(spice["host"], "127.0.0.1", "{spice}");
    assert!(
        spice.get("tls-port").is_none(),
        "no TLS port without certificates: {spice}"
    );
    let port = spice["port"].as_u64().expect("SPICE port");
    assert!((5900..=65535).contains(&port), "{spice}");

    // Every device of the definition exists in the running guest.
    let peripherals = qmp(
        &svc,
        "spice1",
        "qom-list",
        Some(json!({"path": "/machine/peripheral"})),
    )
    .await;
    let have: BTreeSet<String> = peripherals
        .as_array()
        .expect("qom-list")
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p["name"].as_str().unwrap_or(""),
                p["type"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "video0=child<qxl-vga>",
        "sound0=child<ich9-intel-hda>",
        "sound0-codec0=child<hda-duplex>",
        "redir0=child<usb-redir>",
        "channel0=child<virtserialport>",
        "usb=child<qemu-xhci>",
    ] {
        assert!(have.contains(want), "{want} missing from {have:?}");
    }
    let channel = qmp(
        &svc,
        "spice1",
        "qom-get",
        Some(json!({"path": "/machine/peripheral/channel0", "property": "name"})),
    )
    .await;
    assert_eq!(channel, "com.redhat.spice.0");
    let audiodev = qmp(
        &svc,
        "spice1",
        "qom-get",
        Some(json!({"path": "/machine/peripheral/sound0-codec0", "property": "audiodev"})),
    )
    .await;
    assert_eq!(audiodev, "audio1");
    let vgamem = qmp(
        &svc,
        "spice1",
        "qom-get",
        Some(json!({"path": "/machine/peripheral/video0", "property": "vgamem_mb"})),
    )
    .await;
    assert_eq!(vgamem, 16);

    // QEMU listens for SPICE on localhost and nowhere else.
    let pid = recorded_pid(&env, "spice1");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.contains("streaming-video=filter,agent-mouse=on,disable-copy-paste=on,disable-agent-file-xfer=on"),
        "{cmdline}"
    );
    assert_eq!(
        listening(pid),
        BTreeSet::from([format!("127.0.0.1:{port}")]),
        "QEMU's listening TCP sockets"
    );

    // <listen type='none'>: SPICE with no network listener at all.
    svc.define(desktop(
        "spice2",
        "<graphics type='spice'><listen type='none'/></graphics>",
    ))
    .await
    .unwrap();
    svc.start("spice2").await.unwrap();
    let spice = qmp(&svc, "spice2", "query-spice", None).await;
    assert_eq!(spice["enabled"], true, "{spice}");
    assert!(spice.get("port").is_none(), "{spice}");
    assert_eq!(listening(recorded_pid(&env, "spice2")), BTreeSet::new());

    svc.destroy("spice1").await.unwrap();
    svc.destroy("spice2").await.unwrap();
}

/// virt-install's VNC (`autoport='yes'`, no listen) starts too: the daemon picks the display,
/// and QEMU listens on localhost only.
#[tokio::test]
async fn vnc_autoport_guest_gets_a_display_on_localhost() {
    let mut env = Env::new();
    env.config.graphics.port_min = 16150;
    env.config.graphics.port_max = 16199;
    let svc = env.open().await;
    let mut config = osless("vnc1");
    config.devices.graphics = Some(novacron_domain::model::Graphics::Vnc {
        port: novacron_domain::model::VncPort::Auto,
        listen: None,
        keymap: None,
    });
    svc.define(config).await.unwrap();
    svc.start("vnc1").await.unwrap();
    let vnc = qmp(&svc, "vnc1", "query-vnc", None).await;
    assert_eq!(vnc["enabled"], true, "{vnc}");
    assert_eq!(vnc["host"], "127.0.0.1", "{vnc}");
    let port: u16 = vnc["service"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("VNC port");
    assert!(port >= 5900, "{vnc}");
    assert_eq!(
        listening(recorded_pid(&env, "vnc1")),
        BTreeSet::from([format!("127.0.0.1:{port}")])
    );
    svc.destroy("vnc1").await.unwrap();
}
