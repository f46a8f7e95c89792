//! Consoles over websockets against a real novacrond and QEMU: the OS-less guest's SeaBIOS
//! banner in the serial history, identical bytes to two viewers, writer takeover, refused
//! tickets and oversized frames (audited), the console surviving a daemon killed with -9,
//! and VNC (RFB handshake, ServerInit, a framebuffer update) through the same websockets.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{curl, curl_tcp, tcp_api, Daemon};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<UnixStream>;

const BANNER: &str = "SeaBIOS (version";

/// VNC display ports of this helper's range (6100-6199), apart per test process.
fn vnc_port() -> u16 {
    6100 + (std::process::id() % 100) as u16
}

fn guest_xml(name: &str) -> String {
    let ty = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{ty}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type><bios useserial='yes'/></os>
           <features><acpi/></features>
           <devices>
             <serial type='pty'><target port='0'/></serial>
             <console type='pty'><target type='serial' port='0'/></console>
             <graphics type='vnc' port='{}' autoport='no' listen='127.0.0.1'/>
             <video><model type='vga'/></video>
           </devices>
         </domain>",
        vnc_port()
    )
}

fn define_and_start(d: &Daemon, name: &str) {
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &guest_xml(name),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

fn ticket(d: &Daemon, name: &str, kind: &str) -> String {
    let r = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/{kind}/ticket"),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["expires_in"], 30);
    r.json()["ticket"].as_str().unwrap().to_owned()
}

/// Opens `path` as a websocket over the daemon's Unix socket: the socket, or the HTTP
/// status it was refused with.
async fn open(socket: &Path, path: &str) -> Result<Ws, u16> {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "binary".parse().unwrap());
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket to {path}: {e}"),
    }
}

async fn console(d: &Daemon, name: &str, mode: &str) -> Ws {
    let t = ticket(d, name, "console");
    open(
        &d.socket,
        &format!("/v1/domains/{name}/console?ticket={t}&mode={mode}"),
    )
    .await
    .expect("console websocket")
}

/// Binary bytes until `needle` has appeared `count` times in them (or the deadline).
async fn read_until(ws: &mut Ws, needle: &str, count: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let done = |b: &[u8]| String::from_utf8_lossy(b).matches(needle).count() >= count;
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while !done(&got) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("console ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{needle:?} x{count} never came; got {:?}",
        String::from_utf8_lossy(&got)
    );
    got
}

/// Binary bytes until `then` has appeared after the last `first` in them (or the deadline).
async fn read_until_after(ws: &mut Ws, first: &str, then: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let done = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        s.rfind(first).is_some_and(|i| s[i..].contains(then))
    };
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while !done(&got) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("console ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{then:?} after {first:?} never came; got {:?}",
        String::from_utf8_lossy(&got)
    );
    got
}

/// The close code the server ends with (skipping data).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("no close frame")
}

fn reset(d: &Daemon, name: &str) {
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/reset"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_console_history_viewers_takeover_refusals_and_a_daemon_restart() {
    let env = Env::new();
    let api = tcp_api(&[
        ("ops", "operator-secret", "operator"),
        ("peer", "peer-secret", "migration_peer"),
    ]);
    let mut d = env.start_daemon(&api);
    let name = "con1";
    define_and_start(&d, name);

    // History: SeaBIOS printed its banner before anyone connected.
    let mut a = console(&d, name, "viewer").await;
    read_until(&mut a, BANNER, 1).await;
    // On TCP (browsers): an operator's token mints, the websocket carries only the ticket.
    let port = d.tcp_port();
    let r = curl_tcp(
        port,
        "operator-secret",
        "POST",
        &format!("/v1/domains/{name}/console/ticket"),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json()["ticket"].as_str().unwrap().to_owned();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/v1/domains/{name}/console?ticket={t}");
    let (mut over_tcp, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("console websocket over TCP");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(BANNER) {
        match tokio::time::timeout(Duration::from_secs(20), over_tcp.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
            other => panic!("console over TCP: {other:?}"),
        }
    }
    // A migration peer's token may not mint one.
    let r = curl_tcp(
        port,
        "peer-secret",
        "POST",
        &format!("/v1/domains/{name}/console/ticket"),
        &[],
    );
    assert_eq!(r.status, 403, "{r:?}");

    // The daemon still writes the serial log.
    wait_file(&env.serial_log(name), BANNER, 1, Duration::from_secs(10)).await;

    // Two viewers get the same bytes: after both joined, a reset prints the banner again.
    let mut b = console(&d, name, "viewer").await;
    read_until(&mut b, BANNER, 1).await;
    reset(&d, name);
    // (Under TCG the first boot may still be printing when they join: its "Booting from"
    // does not count, only one after the reset's banner.)
    let from_a = read_until_after(&mut a, BANNER, "Booting from").await;
    let from_b = read_until_after(&mut b, BANNER, "Booting from").await;
    let tail = |v: &[u8]| {
        let s = String::from_utf8_lossy(v).into_owned();
        s[s.rfind(BANNER).unwrap()..s.rfind("Booting from").unwrap()].to_owned()
    };
    assert_eq!(tail(&from_a), tail(&from_b));

    // Takeover: a second writer takes the seat; the first is closed with 4001.
    let mut w1 = console(&d, name, "writer").await;
    let _w2 = console(&d, name, "writer").await;
    assert_eq!(close_code(&mut w1).await, Some(CloseCode::Library(4001)));

    // A frame over the limit closes that websocket (1009), audited; the others go on.
    let mut big = console(&d, name, "writer").await;
    big.send(Message::Binary(vec![b'x'; 200 * 1024].into()))
        .await
        .ok();
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));
    reset(&d, name);
    read_until(&mut a, BANNER, 1).await;
    assert!(
        audited(&env, |op| op == "console")
            .iter()
            .any(|(_, dom, result, _)| dom == name && result == "frame_too_large"),
        "{:?}",
        audited(&env, |op| op == "console")
    );

    // Refusals before the upgrade: no ticket, a used one, one for another domain or kind,
    // a ticket for an unknown domain; all audited as refusals.
    let path = format!("/v1/domains/{name}/console");
    assert_eq!(open(&d.socket, &path).await.err(), Some(401));
    let t = ticket(&d, name, "console");
    open(&d.socket, &format!("{path}?ticket={t}"))
        .await
        .unwrap();
    assert_eq!(
        open(&d.socket, &format!("{path}?ticket={t}")).await.err(),
        Some(401)
    );
    let t = ticket(&d, name, "console");
    assert_eq!(
        open(&d.socket, &format!("/v1/domains/nosuch/console?ticket={t}"))
            .await
            .err(),
        Some(403)
    );
    let t = ticket(&d, name, "vnc");
    assert_eq!(
        open(&d.socket, &format!("{path}?ticket={t}")).await.err(),
        Some(403)
    );
    let r = curl(&d.socket, "POST", "/v1/domains/nosuch/console/ticket", &[]);
    assert_eq!(r.status, 404, "{r:?}");
    // Repeats are folded into counts, written within a second or so.
    let counted = |result: &str| -> u64 {
        audit_entries(&env)
            .iter()
            .filter(|e| e["op"] == "refused" && e["result"] == result)
            .filter(|e| {
                e["asked"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/console"))
            })
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counted("unauthorized") < 2 || counted("forbidden") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "refusals not audited: {:?}",
            audit_entries(&env)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing else was affected: the first viewer still gets live output.
    reset(&d, name);
    read_until(&mut a, BANNER, 1).await;
    // The log is written in batches (at most 10 ms behind): in it before the kill.
    wait_file(&env.serial_log(name), BANNER, 4, Duration::from_secs(10)).await;

    // The daemon killed with -9: the guest runs on; a new daemon reconnects, has the
    // history (from the log) and live output again.
    let pid = recorded_pid(&env, name);
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);
    assert!(pid_alive(pid));
    let d = env.start_daemon(&api);
    let mut c = console(&d, name, "viewer").await;
    // The first boot and the three resets, as the last daemon logged them.
    read_until(&mut c, BANNER, 4).await;
    reset(&d, name);
    read_until(&mut c, BANNER, 1).await;
    assert_eq!(recorded_pid(&env, name), pid);

    // novactl console: the history on stdout; Ctrl-] leaves (exit 0).
    novactl_console(&d, name);

    // VNC: the RFB handshake through the websocket, ServerInit, a framebuffer update.
    vnc_handshake(&d, name).await;
    // A screenshot is a PNG.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&d.socket)
        .arg(format!("http://localhost/v1/domains/{name}/screenshot"))
        .output()
        .unwrap();
    assert!(
        out.stdout.starts_with(b"\x89PNG\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Bytes from a websocket until `n` are buffered.
async fn take(ws: &mut Ws, buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while buf.len() < n {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("vnc ended: {other:?}"),
            }
        }
    })
    .await
    .expect("vnc: too few bytes");
    buf.drain(..n).collect()
}

async fn vnc_handshake(d: &Daemon, name: &str) {
    let t = ticket(d, name, "vnc");
    let mut ws = open(&d.socket, &format!("/v1/domains/{name}/vnc?ticket={t}"))
        .await
        .expect("vnc websocket");
    let mut buf = Vec::new();
    assert_eq!(take(&mut ws, &mut buf, 12).await, b"RFB 003.008\n");
    ws.send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
        .await
        .unwrap();
    let n = take(&mut ws, &mut buf, 1).await[0] as usize;
    let types = take(&mut ws, &mut buf, n).await;
    assert!(
        types.contains(&1),
        "security types {types:?}: None expected (skipauth)"
    );
    ws.send(Message::Binary(vec![1].into())).await.unwrap();
    assert_eq!(take(&mut ws, &mut buf, 4).await, [0, 0, 0, 0]);
    ws.send(Message::Binary(vec![1].into())).await.unwrap();
    // ServerInit: width, height, pixel format (16), name length and name.
    let init = take(&mut ws, &mut buf, 24).await;
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    assert!(w > 0 && h > 0, "{w}x{h}");
    let len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    take(&mut ws, &mut buf, len).await;
    let mut req = vec![3, 0];
    for v in [0u16, 0, w, h] {
        req.extend_from_slice(&v.to_be_bytes());
    }
    ws.send(Message::Binary(req.into())).await.unwrap();
    let head = take(&mut ws, &mut buf, 4).await;
    assert_eq!(
        head[0], 0,
        "FramebufferUpdate expected, got message type {}",
        head[0]
    );
    assert!(u16::from_be_bytes([head[2], head[3]]) >= 1, "no rectangles");
}

fn novactl_console(d: &Daemon, name: &str) {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["console", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("novactl");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains(BANNER) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("novactl console printed no history");
    child.stdin.as_mut().unwrap().write_all(&[0x1d]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "Ctrl-] did not leave");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// On the Linux test guest (TCG, a shell on ttyS0) a command typed through the writer's
/// websocket runs in the guest, and its output reaches the writer and a viewer alike.
#[tokio::test]
async fn a_command_typed_into_the_console_runs_in_the_linux_guest() {
    let xml = tokio::task::spawn_blocking(|| {
        novacron_tests::test_guest_domain_xml_with("cshell", "novacron.serial_shell=1", "")
    })
    .await
    .unwrap()
    .expect("test guest");
    let env = Env::new();
    let d = env.start_daemon("");
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&d.socket, "POST", "/v1/domains/cshell/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let mut writer = console(&d, "cshell", "writer").await;
    // The ready line comes after the shell is started; TCG under load may take a while.
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while !String::from_utf8_lossy(&seen).contains(novacron_tests::READY_MARKER) {
            match writer.next().await {
                Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("console ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        ready.is_ok(),
        "no ready line: {}",
        String::from_utf8_lossy(&seen)
    );
    // A viewer joins now and is read from here on (an unread viewer is dropped, see below).
    let mut viewer = console(&d, "cshell", "viewer").await;
    // The answer is computed in the guest: the typed text itself does not contain it.
    writer
        .send(Message::Binary(b"echo NOVA$((6*7))CRON\r".to_vec().into()))
        .await
        .unwrap();
    tokio::join!(
        read_until(&mut writer, "NOVA42CRON", 1),
        read_until(&mut viewer, "NOVA42CRON", 1)
    );

    // A flood from the guest: a viewer that stops reading is dropped as too slow (1008),
    // while the writer and a reading viewer get all of it, and the guest is never held up.
    let mut stalled = console(&d, "cshell", "viewer").await;
    writer
        .send(Message::Binary(
            b"yes NOVAFLOOD | head -c 4000000; echo FLOOD$((1+1))DONE\r"
                .to_vec()
                .into(),
        ))
        .await
        .unwrap();
    let flood = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(
            read_until_within(&mut writer, "FLOOD2DONE", Duration::from_secs(300)),
            read_until_within(&mut viewer, "FLOOD2DONE", Duration::from_secs(300)),
        )
    })
    .await;
    assert!(flood.is_ok(), "the flood never finished");
    // The stalled viewer's stream ends (a 1008 close frame when there was room for it, else
    // the connection is cut) before the end of the flood: it was dropped, not waited for.
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the stalled viewer was never dropped");
    assert!(matches!(end, None | Some(CloseCode::Policy)), "{end:?}");
    assert!(
        !String::from_utf8_lossy(&got).contains("FLOOD2DONE"),
        "the stalled viewer got the whole flood ({} bytes): it was waited for",
        got.len()
    );
}

/// `read_until` with its own deadline (a flood through an emulated UART takes a while).
async fn read_until_within(ws: &mut Ws, needle: &str, limit: Duration) -> usize {
    let mut got = Vec::new();
    let mut total = 0;
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    total += b.len();
                    got.extend_from_slice(&b);
                    if String::from_utf8_lossy(&got).contains(needle) {
                        return;
                    }
                    // Keep only a tail: the needle may straddle two frames.
                    if got.len() > 4096 {
                        got.drain(..got.len() - 64);
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("console ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} never came"));
    total
}

/// The ticket's lifetime is the daemon's `api.ticket_ttl_secs` (here 2 s): a ticket left
/// unused past it is refused (401) and audited as expired, while one used in time opens the
/// console and cannot be used again (401, audited), and the console itself is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_reused_ticket_is_refused_and_audited() {
    let env = Env::new();
    let d = env.start_daemon("[api]\nticket_ttl_secs = 2\n");
    let name = "con-ttl";
    define_and_start(&d, name);
    let path = format!("/v1/domains/{name}/console");
    let mint = || {
        let r = curl(&d.socket, "POST", &format!("{path}/ticket"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["expires_in"], 2, "{r:?}");
        r.json()["ticket"].as_str().unwrap().to_owned()
    };
    let stale = mint();
    let minted = std::time::Instant::now();
    // Used in time: it opens the console (history and all), once.
    let fresh = mint();
    let mut ws = open(&d.socket, &format!("{path}?ticket={fresh}"))
        .await
        .expect("a fresh ticket opens the console");
    read_until(&mut ws, BANNER, 1).await;
    assert_eq!(
        open(&d.socket, &format!("{path}?ticket={fresh}"))
            .await
            .err(),
        Some(401),
        "a used ticket was accepted again"
    );
    // The other one, past its lifetime: what is tested is time passing, so it waits for it.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(minted.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        open(&d.socket, &format!("{path}?ticket={stale}"))
            .await
            .err(),
        Some(401),
        "an expired ticket was accepted"
    );
    // Both refusals audited, each with its reason (the second may come folded into a count,
    // written when its one-second window ends).
    let said = |what: &str| {
        audit_entries(&env).iter().any(|e| {
            e["op"] == "refused"
                && e["result"] == "unauthorized"
                && e["asked"]["path"] == path.as_str()
                && e["error"].as_str().is_some_and(|m| m.contains(what))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(said("already used") && said("expired (tickets are valid for 2s)")) {
        assert!(
            std::time::Instant::now() < deadline,
            "refusals not audited: {:?}",
            audit_entries(&env)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open console was not affected.
    reset(&d, name);
    read_until(&mut ws, BANNER, 1).await;
}
