//! The guest agent through the daemon, on the real test guest (TCG): the daemon follows the
//! agent port, pings it, reads info and interfaces, freezes the guest's file systems (a write
//! in the guest stalls until the thaw) and shuts the guest down through it; a guest whose port
//! is open but unanswered costs a caller its deadline while the domain keeps answering.

mod common;

use std::time::{Duration, Instant};

use common::{wait_file, Env};
use novacron_domain::{DomainConfig, DomainState, Error, ErrorCode};
use novacron_tests::{
    test_guest_domain_xml_with, GuestShell, AGENT_CHANNEL_XML, AGENT_SHUTDOWN_MARKER,
    COMMAND_CHANNEL, COMMAND_CHANNEL_XML, READY_MARKER,
};
use novacrond::service::{ShutdownMode, ShutdownOptions};
use novacrond::Service;

const BOOT: Duration = Duration::from_secs(120);
const CMD: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(20);

async fn guest(env: &Env, name: &str, cmdline: &str, devices: String) -> DomainConfig {
    let (name, cmdline) = (name.to_owned(), cmdline.to_owned());
    let xml =
        tokio::task::spawn_blocking(move || test_guest_domain_xml_with(&name, &cmdline, &devices))
            .await
            .unwrap()
            .expect("test guest");
    let _ = env;
    DomainConfig::from_xml(&xml).unwrap()
}

async fn wait_connected(svc: &Service, name: &str) {
    let deadline = Instant::now() + BOOT;
    while !svc.agent_state(name).unwrap().connected {
        assert!(
            Instant::now() < deadline,
            "the agent of {name} never connected: {:?}",
            svc.agent_state(name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shell(env: &Env, name: &str) -> GuestShell {
    let socket = env
        .config
        .run_dir
        .join(format!("domains/{name}.d"))
        .join(format!("{COMMAND_CHANNEL}.sock"));
    GuestShell::connect(&socket, CMD).await.unwrap()
}

#[tokio::test]
async fn the_agent_answers_freezes_the_guest_and_shuts_it_down() {
    let env = Env::new();
    let svc = env.open().await;
    let disk = env.dir.path().join("ga1.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let devices = format!(
        "{AGENT_CHANNEL_XML}{COMMAND_CHANNEL_XML}<disk type='file' device='disk'>\
         <driver name='qemu' type='raw'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        disk.display()
    );
    svc.define(guest(&env, "ga1", "", devices).await)
        .await
        .unwrap();
    assert!(!svc.agent_state("ga1").unwrap().channel, "not running yet");
    svc.start("ga1").await.unwrap();
    wait_file(&env.serial_log("ga1"), READY_MARKER, 1, BOOT).await;
    wait_connected(&svc, "ga1").await;

    let ping = svc.agent_ping("ga1", CALL).await.unwrap();
    let again = svc.agent_ping("ga1", CALL).await.unwrap();
    eprintln!(
        "agent ping round trip: {:.1} ms (first, with resync), {:.1} ms",
        ping.round_trip_ms, again.round_trip_ms
    );
    let info = svc.agent_info("ga1", CALL).await.unwrap();
    assert!(!info.version.is_empty(), "{info:?}");
    assert!(info.state.connected);
    assert!(
        info.commands.iter().any(|c| c == "guest-fsfreeze-freeze"),
        "{info:?}"
    );
    let mut sh = shell(&env, "ga1").await;
    sh.run_ok("ip link set lo up", CMD).await.unwrap();
    let ifaces = svc.agent_interfaces("ga1", CALL).await.unwrap();
    let lo = ifaces.iter().find(|i| i.name == "lo").expect("lo listed");
    assert!(
        lo.addresses
            .iter()
            .any(|a| a.address == "127.0.0.1" && a.prefix == 8),
        "{ifaces:?}"
    );

    sh.run_ok(
        "mke2fs /dev/vda >/dev/null && mount -t ext4 /dev/vda /mnt",
        CMD,
    )
    .await
    .unwrap();
    assert_eq!(svc.agent_fsfreeze("ga1", CALL).await.unwrap(), 1);
    assert_eq!(
        svc.agent_fsfreeze_status("ga1", CALL).await.unwrap(),
        "frozen"
    );
    // A write in the guest blocks on the frozen file system...
    sh.run_ok(
        "(echo data >/mnt/f; echo done >/tmp/written) >/dev/null 2>&1 &",
        CMD,
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let (rc, _) = sh.run("test -e /tmp/written", CMD).await.unwrap();
        assert_ne!(rc, 0, "the write finished on a frozen file system");
        // The domain answers queries meanwhile.
        assert_eq!(svc.status("ga1").unwrap().state, DomainState::Running);
    }
    // ...until the thaw.
    assert_eq!(svc.agent_fsthaw("ga1", CALL).await.unwrap(), 1);
    let deadline = Instant::now() + CMD;
    while sh.run("test -e /tmp/written", CMD).await.unwrap().0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the write never finished after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sh.run_ok("cat /mnt/f", CMD).await.unwrap(), "data\n");

    svc.shutdown_by(
        "ga1",
        ShutdownOptions::from_secs(Some(60), false),
        ShutdownMode::Agent,
    )
    .await
    .unwrap();
    assert_eq!(svc.status("ga1").unwrap().state, DomainState::Shutoff);
    wait_file(&env.serial_log("ga1"), AGENT_SHUTDOWN_MARKER, 1, CMD).await;
    assert!(!svc.agent_state("ga1").unwrap().channel);
}

#[tokio::test]
async fn a_hung_agent_times_out_on_schedule_and_the_domain_stays_responsive() {
    let env = Env::new();
    let svc = env.open().await;
    svc.define(guest(&env, "ga2", "novacron.agent=hang", AGENT_CHANNEL_XML.into()).await)
        .await
        .unwrap();
    svc.start("ga2").await.unwrap();
    wait_file(&env.serial_log("ga2"), "NOVACRON-AGENT-HANG", 1, BOOT).await;
    wait_connected(&svc, "ga2").await;

    let deadline = Duration::from_secs(2);
    let start = Instant::now();
    let (first, second, probes) = tokio::join!(
        svc.agent_ping("ga2", deadline),
        // Queued behind the first: its own deadline still holds.
        svc.agent_fsfreeze("ga2", deadline),
        async {
            // While both hang, the domain answers at once, again and again.
            let mut n = 0;
            while start.elapsed() < deadline {
                let t = Instant::now();
                assert_eq!(svc.status("ga2").unwrap().state, DomainState::Running);
                let _ = svc.get("ga2").unwrap();
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "info took {:?}",
                    t.elapsed()
                );
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        }
    );
    let took = start.elapsed();
    for r in [first.map(drop), second.map(drop)] {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
        assert!(matches!(e, Error::AgentTimeout { .. }), "{e:?}");
    }
    assert!(took >= deadline, "timed out early: {took:?}");
    assert!(took < deadline * 10, "timed out late: {took:?}");
    assert!(probes > 0);
    eprintln!(
        "hung agent: two calls timed out after {took:?}; {probes} info calls answered meanwhile"
    );
    svc.destroy("ga2").await.unwrap();
}

#[tokio::test]
async fn a_guest_without_an_agent_is_refused_at_once() {
    let env = Env::new();
    let svc = env.open().await;
    let mut config = common::osless("ga3");
    config.devices.channels = DomainConfig::from_xml(&format!(
        "<domain type='qemu'><name>x</name><memory>65536</memory><vcpu>1</vcpu>
           <os><type>hvm</type></os><devices>{AGENT_CHANNEL_XML}</devices></domain>"
    ))
    .unwrap()
    .devices
    .channels;
    svc.define(config).await.unwrap();
    let e = svc.agent_ping("ga3", CALL).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    svc.start("ga3").await.unwrap();
    let state = svc.agent_state("ga3").unwrap();
    assert!(state.channel && !state.connected, "{state:?}");
    let t = Instant::now();
    let e = svc.agent_ping("ga3", CALL).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(t.elapsed() < CALL);
    svc.destroy("ga3").await.unwrap();

    let mut plain = common::osless("ga4");
    plain.devices.channels.clear();
    svc.define(plain).await.unwrap();
    svc.start("ga4").await.unwrap();
    let e = svc.agent_ping("ga4", CALL).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(
        e.to_string().contains("no daemon-managed agent channel"),
        "{e}"
    );
    svc.destroy("ga4").await.unwrap();
}
