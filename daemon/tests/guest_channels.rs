//! A daemon-started test guest with the command-shell channel: the path-less
//! `<channel type='unix'>` gets its socket in the guest's runtime directory and
//! a test can run commands in the guest through it.

mod common;

use std::time::Duration;

use common::{wait_file, Env};
use novacron_domain::DomainConfig;
use novacron_tests::{
    test_guest_domain_xml_with, GuestShell, COMMAND_CHANNEL, COMMAND_CHANNEL_XML,
};

#[tokio::test]
async fn a_daemon_started_guest_runs_commands_on_its_channel() {
    let env = Env::new();
    let svc = env.open().await;
    let xml = tokio::task::spawn_blocking(|| {
        test_guest_domain_xml_with("chan1", "", COMMAND_CHANNEL_XML)
    })
    .await
    .unwrap()
    .expect("test guest");
    svc.define(DomainConfig::from_xml(&xml).unwrap())
        .await
        .unwrap();
    svc.start("chan1").await.unwrap();
    wait_file(
        &env.serial_log("chan1"),
        novacron_tests::READY_MARKER,
        1,
        Duration::from_secs(90),
    )
    .await;
    let socket = env
        .config
        .run_dir
        .join("domains/chan1.d")
        .join(format!("{COMMAND_CHANNEL}.sock"));
    let mut shell = GuestShell::connect(&socket, Duration::from_secs(10))
        .await
        .unwrap();
    let out = shell
        .run_ok(
            "cat /sys/class/virtio-ports/*/name",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(out.trim(), COMMAND_CHANNEL);
    svc.destroy("chan1").await.unwrap();
}
