//! Autoport VNC, as virt-install writes it (`port='-1' autoport='yes'`): a real novacrond
//! gives each running guest its own port from `[graphics] port_min/port_max`, skips ports
//! someone else listens on, takes ports back when guests stop, and a restarted daemon keeps
//! the ports its running guests hold.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::{curl, Daemon};
use common::*;

/// Below the ephemeral range, away from the 5900s other tests' guests may use.
const MIN: u16 = 15900;
const MAX: u16 = 15919;

fn graphics_config() -> String {
    format!("[graphics]\nport_min = {MIN}\nport_max = {MAX}\n")
}

/// The OS-less SeaBIOS guest with the graphics element virt-install writes.
fn vnc_guest_xml(name: &str) -> String {
    let virt = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{virt}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
           <devices>
             <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>
               <listen type='address' address='127.0.0.1'/>
             </graphics>
           </devices>
         </domain>"
    )
}

fn define_and_start(d: &Daemon, name: &str) -> u16 {
    let xml = vnc_guest_xml(name);
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "define {name}: {}", r.body);
    start(d, name)
}

/// Starts `name` and returns the port its live info shows.
fn start(d: &Daemon, name: &str) -> u16 {
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "start {name}: {}", r.body);
    live_port(d, name)
}

fn live_port(d: &Daemon, name: &str) -> u16 {
    let r = curl(&d.socket, "GET", &format!("/v1/domains/{name}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let port = &r.json()["config"]["devices"]["graphics"]["port"]["assigned"];
    let port = port
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: no assigned port in the live info: {}", r.body));
    // The live XML shows it as libvirt's does, autoport kept.
    let r = curl(&d.socket, "GET", &format!("/v1/domains/{name}/xml"), &[]);
    assert!(
        r.body.contains(&format!("port=\"{port}\"")) || r.body.contains(&format!("port='{port}'")),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("autoport=\"yes\"") || r.body.contains("autoport='yes'"),
        "{}",
        r.body
    );
    u16::try_from(port).unwrap()
}

/// QEMU's VNC server greets with the RFB version on connect.
fn assert_rfb(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "port {port}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 12];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"RFB 003.008\n", "port {port}");
}

fn destroy(d: &Daemon, name: &str) {
    let r = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        &[],
    );
    assert_eq!(r.status, 200, "destroy {name}: {}", r.body);
}

#[tokio::test]
async fn autoport_vnc_gets_distinct_ports_released_on_stop_and_kept_over_a_restart() {
    let mut env = Env::new();
    env.config.graphics.port_min = MIN;
    env.config.graphics.port_max = MAX;
    // Someone else's listener on the first port of the range: skipped.
    let foreign =
        TcpListener::bind((Ipv4Addr::LOCALHOST, MIN)).expect("the test's port range is free");

    let mut d = env.start_daemon(&graphics_config());
    let p1 = define_and_start(&d, "vnc1");
    let p2 = define_and_start(&d, "vnc2");
    assert_ne!(p1, p2);
    assert!(
        [p1, p2].iter().all(|p| (MIN + 1..=MAX).contains(p)),
        "{p1} {p2}"
    );
    assert_rfb(p1);
    assert_rfb(p2);

    // Destroyed, its port goes back and is the next one handed out (lowest free first).
    destroy(&d, "vnc1");
    let p3 = define_and_start(&d, "vnc3");
    assert_eq!(p3, p1, "vnc1's port is re-used once it stopped");
    assert_rfb(p3);

    // The daemon dies; the guests keep running and keep their ports.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);
    let svc = env.open().await;
    assert_eq!(
        svc.display_ports("vnc2"),
        vec![p2],
        "re-reserved from the record"
    );
    assert_eq!(
        svc.display_ports("vnc3"),
        vec![p3],
        "re-reserved from the record"
    );
    svc.start("vnc1").await.unwrap();
    let p4 = svc.display_ports("vnc1");
    assert_eq!(p4.len(), 1);
    assert!(![MIN, p2, p3].contains(&p4[0]), "{p4:?} is in use");
    assert_rfb(p4[0]);
    drop(foreign);

    // A fixed port another guest holds is refused before QEMU is spawned, naming the holder.
    let mut fixed = osless("fixed");
    fixed.devices.graphics = Some(novacron_domain::model::Graphics::Vnc {
        port: novacron_domain::model::VncPort::Fixed(p2),
        listen: None,
        keymap: None,
    });
    svc.define(fixed).await.unwrap();
    let err = svc.start("fixed").await.unwrap_err();
    assert_eq!(err.code(), novacron_domain::ErrorCode::Busy, "{err}");
    assert!(err.to_string().contains("vnc2"), "{err}");
    assert!(svc.display_ports("fixed").is_empty());

    for n in ["vnc1", "vnc2", "vnc3"] {
        svc.destroy(n).await.unwrap();
        assert!(svc.display_ports(n).is_empty(), "{n} still holds its port");
    }
}
