//! Protocol edge cases against a scripted in-process peer: things a real QEMU does not do but a
//! compromised one could (garbage, huge lines, bogus ids), and orderings that are hard to force.

use std::sync::Arc;
use std::time::Duration;

use novacron_qmp::commands::{Cont, QueryStatus, Stop};
use novacron_qmp::qapi::RunState;
use novacron_qmp::{Client, ClientOptions, CloseReason, Error, EventKind, Notification, Timeouts};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

/// The server side of a socketpair, speaking raw lines.
struct Peer {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Peer {
    async fn send(&mut self, line: &str) {
        self.write.write_all(line.as_bytes()).await.unwrap();
        self.write.write_all(b"\r\n").await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("peer waited too long for a command")
            .unwrap()
            .expect("client closed");
        serde_json::from_str(&line).unwrap()
    }

    /// Reads a command and checks its name; returns its id.
    async fn expect(&mut self, name: &str) -> Value {
        let cmd = self.recv().await;
        assert_eq!(cmd["execute"], name, "{cmd}");
        cmd["id"].clone()
    }

    /// Whether any bytes from the client wait unread (in our buffer or the socket's).
    fn unread(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let reader = self.lines.get_mut();
        if !reader.buffer().is_empty() {
            return true;
        }
        let fd = reader.get_ref().as_ref().as_raw_fd();
        let mut byte = [0u8; 1];
        let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        matches!(nix::sys::socket::recv(fd, &mut byte, flags), Ok(n) if n > 0)
    }

    async fn reply(&mut self, id: &Value, ret: Value) {
        self.send(&json!({"return": ret, "id": id}).to_string())
            .await;
    }
}

/// A connected client and the peer after a completed handshake.
async fn connected(options: ClientOptions) -> (Client, Peer) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (read, write) = theirs.into_split();
    let mut peer = Peer {
        lines: BufReader::new(read).lines(),
        write,
    };
    let handshake = tokio::spawn(async move {
        peer.send(GREETING).await;
        let cmd = peer.recv().await;
        assert_eq!(cmd["execute"], "qmp_capabilities");
        assert_eq!(cmd["arguments"], json!({"enable": ["oob"]}));
        peer.reply(&cmd["id"], json!({})).await;
        peer
    });
    let client = Client::from_stream(ours, options).await.unwrap();
    (client, handshake.await.unwrap())
}

fn short_timeouts() -> ClientOptions {
    ClientOptions {
        timeouts: Timeouts::default()
            .with_query(Duration::from_millis(300))
            .with_action(Duration::from_millis(300)),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn handshake_negotiates_oob_and_reports_the_version() {
    let (client, _peer) = connected(ClientOptions::default()).await;
    assert!(client.oob_enabled());
    assert_eq!(client.greeting().version.qemu.to_string(), "7.2.0");
}

#[tokio::test]
async fn replies_out_of_order_reach_their_callers() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let c1 = client.clone();
    let first = tokio::spawn(async move { c1.execute(&QueryStatus).await });
    let id1 = peer.expect("query-status").await;
    let c2 = client.clone();
    let second = tokio::spawn(async move { c2.execute_raw("query-name", None).await });
    let id2 = peer.expect("query-name").await;
    // Answer the second first.
    peer.reply(&id2, json!({"name": "vm1"})).await;
    peer.reply(
        &id1,
        json!({"running": false, "status": "paused", "singlestep": false}),
    )
    .await;
    assert_eq!(second.await.unwrap().unwrap(), json!({"name": "vm1"}));
    let status = first.await.unwrap().unwrap();
    assert_eq!(status.status, RunState::Paused);
    assert!(!status.running);
}

#[tokio::test]
async fn events_interleaved_with_replies_reach_every_subscriber() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let mut a = client.subscribe();
    let mut b = client.subscribe();
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&Stop).await });
    let id = peer.expect("stop").await;
    peer.send(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#)
        .await;
    peer.reply(&id, json!({})).await;
    peer.send(r#"{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "FUTURE_EVENT", "data": {"k": [1]}}"#)
        .await;
    call.await.unwrap().unwrap();
    for sub in [&mut a, &mut b] {
        let Some(Notification::Event(e)) = sub.recv().await else {
            panic!("expected STOP")
        };
        assert_eq!(e.kind, EventKind::Stop);
        let Some(Notification::Event(e)) = sub.recv().await else {
            panic!("expected FUTURE_EVENT")
        };
        assert_eq!((e.name(), &e.data), ("FUTURE_EVENT", &json!({"k": [1]})));
    }
}

#[tokio::test]
async fn qmp_errors_are_typed() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&Cont).await });
    let id = peer.expect("cont").await;
    peer.send(
        &json!({"error": {"class": "DeviceNotFound", "desc": "no such thing"}, "id": id})
            .to_string(),
    )
    .await;
    match call.await.unwrap() {
        Err(Error::Qmp { command, error }) => {
            assert_eq!(command, "cont");
            assert_eq!(error.class.as_str(), "DeviceNotFound");
            assert_eq!(error.desc, "no such thing");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_ids_and_id_less_replies_are_ignored() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&QueryStatus).await });
    let id = peer.expect("query-status").await;
    peer.reply(
        &json!(999_999),
        json!({"running": true, "status": "running"}),
    )
    .await;
    peer.reply(&json!("not-a-number"), json!({})).await;
    peer.send(r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#)
        .await;
    peer.send(r#"{"something": "else"}"#).await;
    peer.reply(&id, json!({"running": true, "status": "running"}))
        .await;
    assert_eq!(call.await.unwrap().unwrap().status, RunState::Running);
}

#[tokio::test]
async fn a_timed_out_command_does_not_wedge_the_connection() {
    let (client, mut peer) = connected(short_timeouts()).await;
    let c = client.clone();
    let slow = tokio::spawn(async move { c.execute(&QueryStatus).await });
    let slow_id = peer.expect("query-status").await;
    match slow.await.unwrap() {
        Err(Error::Timeout { command, after }) => {
            assert_eq!(command, "query-status");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    // The late reply arrives and is dropped; the next command works.
    peer.reply(&slow_id, json!({"running": true, "status": "running"}))
        .await;
    let c = client.clone();
    let next = tokio::spawn(async move {
        c.execute_with_timeout(&QueryStatus, Duration::from_secs(5))
            .await
    });
    let id = peer.expect("query-status").await;
    peer.reply(&id, json!({"running": false, "status": "prelaunch"}))
        .await;
    assert_eq!(next.await.unwrap().unwrap().status, RunState::Prelaunch);
}

#[tokio::test]
async fn disconnect_mid_command_fails_pending_with_closed_and_ends_subscriptions() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let mut events = client.subscribe();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.execute(&QueryStatus).await })
        })
        .collect();
    for _ in 0..5 {
        peer.expect("query-status").await;
    }
    drop(peer);
    for call in calls {
        match call.await.unwrap() {
            Err(Error::Closed(CloseReason::PeerClosed)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        events.recv().await,
        Some(Notification::Disconnected(CloseReason::PeerClosed))
    ));
    assert!(events.recv().await.is_none());
    // Later commands and subscriptions fail at once, with the same reason.
    assert!(matches!(
        client.execute(&QueryStatus).await,
        Err(Error::Closed(CloseReason::PeerClosed))
    ));
    let mut late = client.subscribe();
    assert!(matches!(
        late.recv().await,
        Some(Notification::Disconnected(CloseReason::PeerClosed))
    ));
    assert_eq!(client.closed().await, CloseReason::PeerClosed);
}

async fn assert_protocol_violation(bad: &[u8], options: ClientOptions) -> String {
    let (client, mut peer) = connected(options).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&QueryStatus).await });
    peer.expect("query-status").await;
    // The client may hang up before the peer finishes writing (that is the point for huge lines).
    let _ = peer.write.write_all(bad).await;
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the client must give up on a broken peer")
        .unwrap();
    match result {
        Err(Error::Closed(CloseReason::Protocol(msg))) => msg,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_closes_the_connection_with_a_protocol_error() {
    let msg = assert_protocol_violation(b"\x00\x01garbage\xff\r\n", ClientOptions::default()).await;
    assert!(msg.contains("not a QMP JSON object"), "{msg}");
    let msg = assert_protocol_violation(b"[1, 2, 3]\n", ClientOptions::default()).await;
    assert!(msg.contains("not a QMP JSON object"), "{msg}");
}

#[tokio::test]
async fn truncated_json_followed_by_a_newline_is_a_protocol_error() {
    let msg = assert_protocol_violation(
        b"{\"return\": {\"status\": \"run\r\n",
        ClientOptions::default(),
    )
    .await;
    assert!(msg.contains("not a QMP JSON object"), "{msg}");
}

#[tokio::test]
async fn truncated_json_at_end_of_stream_is_a_peer_close() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&QueryStatus).await });
    let id = peer.expect("query-status").await;
    let partial = format!("{{\"return\": {{}}, \"id\": {id}");
    peer.write.write_all(partial.as_bytes()).await.unwrap();
    drop(peer);
    assert!(matches!(
        call.await.unwrap(),
        Err(Error::Closed(CloseReason::PeerClosed))
    ));
}

#[tokio::test]
async fn a_huge_line_is_refused_without_buffering_it_all() {
    let options = ClientOptions {
        max_line: 64 * 1024,
        ..ClientOptions::default()
    };
    // 1 MiB without a newline: the client must give up after 64 KiB, not wait for the end.
    let huge = vec![b'x'; 1024 * 1024];
    let msg = assert_protocol_violation(&huge, options).await;
    assert!(msg.contains("exceeds 65536 bytes"), "{msg}");
}

#[tokio::test]
async fn deeply_nested_json_does_not_overflow_the_stack() {
    let mut bad = "[".repeat(100_000);
    bad.push('\n');
    let msg = assert_protocol_violation(bad.as_bytes(), ClientOptions::default()).await;
    assert!(msg.contains("not a QMP JSON object"), "{msg}");
}

#[tokio::test]
async fn a_slow_subscriber_lags_but_does_not_stall_commands() {
    let options = ClientOptions {
        event_capacity: 4,
        ..ClientOptions::default()
    };
    let (client, mut peer) = connected(options).await;
    let mut slow = client.subscribe();
    for i in 0..20 {
        peer.send(&format!(
            r#"{{"timestamp": {{"seconds": {i}, "microseconds": 0}}, "event": "RTC_CHANGE", "data": {{"offset": {i}}}}}"#
        ))
        .await;
    }
    // Commands keep flowing while the subscriber has not read anything.
    let c = client.clone();
    let call = tokio::spawn(async move { c.execute(&QueryStatus).await });
    let id = peer.expect("query-status").await;
    peer.reply(&id, json!({"running": true, "status": "running"}))
        .await;
    call.await.unwrap().unwrap();
    match slow.recv().await {
        Some(Notification::Lagged(n)) => assert_eq!(n, 16),
        other => panic!("{other:?}"),
    }
    // It then gets the newest four, in order.
    for want in 16..20 {
        let Some(Notification::Event(e)) = slow.recv().await else {
            panic!("expected an event")
        };
        assert_eq!(e.kind, EventKind::RtcChange { offset: want });
    }
}

#[tokio::test]
async fn execute_and_wait_sees_an_event_that_precedes_the_reply() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.execute_and_wait(
            &novacron_qmp::commands::DeviceDel { id: "nic1".into() },
            Duration::from_secs(5),
            |e| matches!(&e.kind, EventKind::DeviceDeleted { device: Some(d), .. } if d == "nic1"),
        )
        .await
    });
    let id = peer.expect("device_del").await;
    peer.send(r#"{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "DEVICE_DELETED", "data": {"device": "nic1", "path": "/machine/peripheral/nic1"}}"#).await;
    peer.reply(&id, json!({})).await;
    let ((), event) = call.await.unwrap().map(|(_, e)| ((), e)).unwrap();
    assert_eq!(event.name(), "DEVICE_DELETED");
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_socket() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let mut events = client.subscribe();
    drop(client);
    let eof = tokio::time::timeout(Duration::from_secs(5), peer.lines.next_line())
        .await
        .expect("the socket must close");
    assert!(matches!(eof, Ok(None)));
    assert!(matches!(
        events.recv().await,
        Some(Notification::Disconnected(CloseReason::ClientClosed))
    ));
}

#[tokio::test]
async fn a_bad_greeting_is_refused() {
    for greeting in ["{\"return\": {}}", "not json", ""] {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_read, mut write) = theirs.into_split();
        write.write_all(greeting.as_bytes()).await.unwrap();
        write.write_all(b"\r\n").await.unwrap();
        if greeting.is_empty() {
            drop(write);
        }
        let options = ClientOptions {
            handshake_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        let err = match Client::from_stream(ours, options).await {
            Err(e) => e,
            Ok(_) => panic!("accepted greeting {greeting:?}"),
        };
        assert!(
            matches!(err, Error::Greeting(_) | Error::Closed(_)),
            "{greeting:?}: {err}"
        );
    }
}

#[tokio::test]
async fn oob_is_refused_when_not_negotiated() {
    let options = ClientOptions {
        negotiate_oob: false,
        ..ClientOptions::default()
    };
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (read, write) = theirs.into_split();
    let mut peer = Peer {
        lines: BufReader::new(read).lines(),
        write,
    };
    let server = tokio::spawn(async move {
        peer.send(GREETING).await;
        let cmd = peer.recv().await;
        assert_eq!(cmd.get("arguments"), None, "{cmd}");
        peer.reply(&cmd["id"], json!({})).await;
        peer
    });
    let client = Client::from_stream(ours, options).await.unwrap();
    let _peer = server.await.unwrap();
    assert!(!client.oob_enabled());
    assert!(matches!(
        client.execute_oob(&QueryStatus).await,
        Err(Error::OobNotNegotiated(_))
    ));
}

#[tokio::test]
async fn many_callers_each_get_their_own_reply() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let server = tokio::spawn(async move {
        // Collect all 200 commands, then answer them in reverse. Each answer carries the
        // caller's own tag back, so a caller handed another caller's reply sees the wrong tag.
        let mut commands = Vec::new();
        for _ in 0..200 {
            let cmd = peer.recv().await;
            assert_eq!(cmd["execute"], "echo", "{cmd}");
            commands.push(cmd);
        }
        for cmd in commands.iter().rev() {
            peer.reply(&cmd["id"], json!({ "tag": cmd["arguments"]["tag"] }))
                .await;
        }
        peer
    });
    let client = Arc::new(client);
    let calls: Vec<_> = (0..200u64)
        .map(|tag| {
            let c = client.clone();
            tokio::spawn(async move {
                let v = c.execute_raw("echo", Some(&json!({ "tag": tag }))).await;
                (tag, v)
            })
        })
        .collect();
    for call in calls {
        let (tag, v) = call.await.unwrap();
        let v = v.unwrap();
        assert_eq!(
            v["tag"], tag,
            "caller {tag} got another caller's reply: {v}"
        );
    }
    let _ = server.await.unwrap();
}

#[tokio::test]
async fn frames_stay_whole_when_the_socket_is_full_and_callers_give_up() {
    let options = ClientOptions {
        timeouts: Timeouts::default().with_action(Duration::from_millis(200)),
        ..ClientOptions::default()
    };
    let (client, mut peer) = connected(options).await;
    // 64 commands of ~64 KiB each: far more than the socket buffer holds while the peer does
    // not read, so most go through partial writes and the writer queue. Half of the callers
    // give up (timeout) while their frames are still queued or half written.
    let payload = "x".repeat(64 * 1024);
    let mut calls: Vec<_> = (0..64)
        .map(|i| {
            let c = client.clone();
            let args = json!({ "n": i, "pad": payload });
            tokio::spawn(async move {
                let timeout = if i % 2 == 0 {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(30)
                };
                c.execute_raw_with_timeout("big", Some(&args), timeout)
                    .await
            })
        })
        .collect();
    // The callers that give up do so while the peer reads nothing (so none of them can have
    // had an answer), however late under load their tasks ran.
    for (i, call) in calls.iter_mut().enumerate().step_by(2) {
        match call.await.unwrap() {
            Err(Error::Timeout { .. }) => {}
            other => panic!("call {i}: {other:?}"),
        }
    }
    // Now read everything: every line must be one whole, valid command.
    let mut seen = Vec::new();
    for _ in 0..64 {
        let cmd = peer.recv().await;
        assert_eq!(cmd["execute"], "big");
        assert_eq!(
            cmd["arguments"]["pad"].as_str().map(str::len),
            Some(64 * 1024)
        );
        seen.push(cmd["arguments"]["n"].as_u64().unwrap());
        peer.reply(&cmd["id"], json!({"n": cmd["arguments"]["n"]}))
            .await;
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    for (i, call) in calls.into_iter().enumerate().skip(1).step_by(2) {
        assert_eq!(call.await.unwrap().unwrap(), json!({"n": i}), "call {i}");
    }
}

#[tokio::test]
async fn commands_sent_in_a_row_go_out_at_once_in_order_and_each_reply_reaches_its_own() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    // Three commands queued, none of their replies polled yet: the frames are out already.
    let within = Duration::from_secs(5);
    let stop = client.send(&Stop, &[], within).await.unwrap();
    let name = client.send_raw("query-name", None, within).unwrap();
    let cont = client.send(&Cont, &[], within).await.unwrap();
    let ids = [
        peer.expect("stop").await,
        peer.expect("query-name").await,
        peer.expect("cont").await,
    ];
    peer.reply(&ids[2], json!({})).await;
    peer.send(
        &json!({"error": {"class": "GenericError", "desc": "no name"}, "id": ids[1]}).to_string(),
    )
    .await;
    peer.reply(&ids[0], json!({})).await;
    // Awaited in the reverse order.
    cont.await.unwrap();
    match name.await {
        Err(Error::Qmp { command, error }) => {
            assert_eq!(command, "query-name");
            assert_eq!(error.desc, "no name");
        }
        other => panic!("query-name: {other:?}"),
    }
    stop.await.unwrap();
}

#[tokio::test]
async fn a_command_carrying_descriptors_waits_until_the_one_before_is_answered() {
    let (client, mut peer) = connected(ClientOptions::default()).await;
    let null = std::fs::File::open("/dev/null").unwrap();
    let (c1, f1) = (client.clone(), null.try_clone().unwrap());
    let first = tokio::spawn(async move { c1.send_fd("a", std::os::fd::AsFd::as_fd(&f1)).await });
    let id = peer.expect("getfd").await;
    let (c2, f2) = (client.clone(), null.try_clone().unwrap());
    let second = tokio::spawn(async move { c2.send_fd("b", std::os::fd::AsFd::as_fd(&f2)).await });
    // The second caller and the writer run as far as they can (one thread: they have run
    // once this task is polled again after yielding to them).
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !peer.unread(),
        "the second getfd went out before the first was answered"
    );
    peer.reply(&id, json!({})).await;
    let cmd = peer.recv().await;
    assert_eq!(cmd["execute"], "getfd", "{cmd}");
    assert_eq!(cmd["arguments"]["fdname"], "b", "{cmd}");
    peer.reply(&cmd["id"], json!({})).await;
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}
