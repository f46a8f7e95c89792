//! `plug`'s failures against a scripted QMP peer: the ones a real QEMU will not produce on
//! demand (a refused netdev_add, replies that never come).

use std::os::fd::OwnedFd;
use std::time::Duration;

use novacron_domain::model::{Interface, InterfaceSource, NicModel};
use novacron_qmp::{Client, ClientOptions, Timeouts};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;

use super::plug;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

/// The peer reads with blocking calls on its own thread: a short read at a descriptor
/// boundary of a unix stream would make an async reader wait for data already there.
struct Peer {
    lines: std::io::Lines<BufReader<StdUnixStream>>,
    write: StdUnixStream,
}

impl Peer {
    fn recv(&mut self) -> Value {
        let line = self.lines.next().expect("a command").expect("a command");
        serde_json::from_str(&line).unwrap()
    }

    fn send(&mut self, v: Value) {
        let mut line = v.to_string().into_bytes();
        line.extend_from_slice(b"\r\n");
        self.write.write_all(&line).unwrap();
    }

    fn ok(&mut self, cmd: &Value) {
        self.send(json!({ "return": {}, "id": cmd["id"] }));
    }

    fn refuse(&mut self, cmd: &Value, desc: &str) {
        self.send(json!({ "error": { "class": "GenericError", "desc": desc }, "id": cmd["id"] }));
    }

    /// Reads the batch: getfd, netdev_add, device_add, sent before any reply.
    fn batch(&mut self) -> [Value; 3] {
        let batch = [self.recv(), self.recv(), self.recv()];
        let names: Vec<&str> = batch.iter().filter_map(|c| c["execute"].as_str()).collect();
        assert_eq!(names, ["getfd", "netdev_add", "device_add"]);
        batch
    }
}

/// A client connected to a peer that has answered the handshake; `script` then plays the
/// peer's part on a thread of its own.
async fn connected(
    timeouts: Timeouts,
    script: impl FnOnce(Peer) + Send + 'static,
) -> (Client, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let peer = tokio::task::spawn_blocking(move || {
        let mut peer = Peer {
            lines: BufReader::new(theirs.try_clone().unwrap()).lines(),
            write: theirs,
        };
        peer.write
            .write_all(format!("{GREETING}\r\n").as_bytes())
            .unwrap();
        let caps = peer.recv();
        peer.ok(&caps);
        script(peer);
    });
    ours.set_nonblocking(true).unwrap();
    let options = ClientOptions {
        timeouts,
        ..ClientOptions::default()
    };
    let stream = tokio::net::UnixStream::from_std(ours).unwrap();
    (Client::from_stream(stream, options).await.unwrap(), peer)
}

fn nic() -> Interface {
    Interface {
        source: InterfaceSource::Bridge {
            bridge: "br0".into(),
        },
        mac: Some("52:54:00:00:00:01".parse().unwrap()),
        model: NicModel::Virtio,
        driver: None,
        mtu: None,
        boot_order: None,
        address: None,
        target_dev: None,
        vlan: None,
        link_down: false,
        bandwidth: None,
        filterref: None,
        port_isolated: false,
    }
}

fn tap() -> Vec<OwnedFd> {
    vec![std::fs::File::open("/dev/null").unwrap().into()]
}

#[tokio::test]
async fn a_refused_netdev_add_closes_the_descriptor_qemu_took() {
    let (qmp, peer) = connected(Timeouts::default(), |mut peer| {
        let [getfd, netdev, device] = peer.batch();
        peer.ok(&getfd);
        peer.refuse(&netdev, "could not open the tap");
        peer.refuse(&device, "Property 'netdev' can't find value 'hostnet0-x'");
        // Nothing was made but the descriptor QEMU took: only that is undone.
        let close = peer.recv();
        assert_eq!(close["execute"], "closefd", "{close}");
        assert_eq!(close["arguments"]["fdname"], "tapfd0q0", "{close}");
        peer.ok(&close);
    })
    .await;
    let (taps, nic) = (tap(), nic());
    let result = plug(
        "g",
        &qmp,
        0,
        "hostnet0-x",
        &nic,
        &taps,
        None,
        "pci.1".into(),
    )
    .await;
    peer.await.expect("the peer's script");
    let Err(f) = result else { panic!("refused") };
    assert!(!f.device_may_exist);
    let e = f.error.to_string();
    assert!(e.contains("could not open the tap"), "{e}");
}

#[tokio::test]
async fn an_unanswered_device_add_keeps_the_nic_as_it_may_be() {
    let short = Duration::from_millis(200);
    let timeouts = Timeouts::default()
        .with_action(short)
        .with_command("device_add", short);
    let (qmp, peer) = connected(timeouts, |mut peer| {
        // QEMU stalls: no reply to the batch. The device may be in the guest after all: it is
        // not deleted (nor its netdev); only a descriptor no netdev took is closed.
        let _ = peer.batch();
        let close = peer.recv();
        assert_eq!(close["execute"], "closefd", "{close}");
        peer.ok(&close);
    })
    .await;
    let (taps, nic) = (tap(), nic());
    let result = plug(
        "g",
        &qmp,
        0,
        "hostnet0-x",
        &nic,
        &taps,
        None,
        "pci.1".into(),
    )
    .await;
    peer.await.expect("the peer's script");
    let Err(f) = result else { panic!("timed out") };
    assert!(f.device_may_exist, "the device may be there");
    let e = f.error.to_string();
    assert!(e.contains("did not answer"), "a timeout: {e}");
}
