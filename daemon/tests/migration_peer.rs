//! A migration peer is untrusted (issue 13 §2, §3): a real source daemon facing a scripted
//! destination that answers hostile stream URIs (a real peer cannot be made to), the
//! default refusal of plain http://, the migration-peer token role, the listen address of
//! an incoming stream, and CA files named in a request (/dev/zero, a FIFO, outside the
//! allowed directory).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{tcp_api, Daemon};
use common::*;
use novacron_domain::DomainState;
use novacrond::client::{Client, ClientError, DefinitionFormat, Target};
use novacrond::service::migration::{IncomingRequest, MigrateRequest, Phase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PEER: &str = "peer-secret";
const OPS: &str = "ops-secret";
/// Generous: only a hung daemon misses it.
const DEADLINE: Duration = Duration::from_secs(30);

struct Host {
    env: Env,
    _daemon: Daemon,
    port: u16,
}

impl Host {
    /// A daemon with a TCP API: a peer token and an operator token; `extra` config lines.
    fn start(extra: &str) -> Host {
        let env = Env::new();
        let mut toml = tcp_api(&[("peer", PEER, "migration_peer"), ("ops", OPS, "operator")]);
        toml.push_str(extra);
        let daemon = env.start_daemon(&toml);
        let port = daemon.tcp_port();
        Host {
            env,
            _daemon: daemon,
            port,
        }
    }

    fn local(&self) -> Client {
        Client::new(Target::Unix(self.env.config.run_dir.join("novacrond.sock")))
    }

    fn tcp(&self, token: &str) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port);
        Client::new(Target::from_url(&url).unwrap()).with_token(token)
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.env.config.log_dir.join("audit.log")).unwrap_or_default()
    }

    /// The audit log has (or gets, within the deadline) a line with every one of `needles`.
    /// Refusals are written as summaries per interval, so a refusal's line may come later.
    async fn assert_audited(&self, needles: &[&str]) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let audit = self.audit();
            if audit.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no audit line with {needles:?}:\n{audit}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_osless(&self, name: &str) {
        let c = self.local();
        c.define(osless(name).to_xml(), DefinitionFormat::Xml)
            .await
            .unwrap();
        c.action(name, novacrond::client::Action::Start, true, None)
            .await
            .unwrap();
    }

    /// Running by the daemon's account and by QEMU's own.
    async fn assert_running(&self, name: &str) {
        let info = self.local().get(name).await.unwrap();
        assert_eq!(info.status.state, DomainState::Running, "{name}");
        let status = self.local().qmp(name, "query-status", None).await.unwrap();
        assert_eq!(status["status"], "running", "{status}");
    }
}

/// A scripted destination: answers a prepare with `uri`, records every request line; answers
/// an abort only while `aborts` is true.
struct FakeDestination {
    port: u16,
    uri: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<String>>>,
    aborts: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FakeDestination {
    async fn start() -> FakeDestination {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri = Arc::new(Mutex::new(String::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let aborts = Arc::new(tokio::sync::watch::Sender::new(true));
        let (u, s, a) = (uri.clone(), seen.clone(), aborts.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (u, s, a) = (u.clone(), s.clone(), a.subscribe());
                tokio::spawn(async move { serve(stream, u, s, a).await });
            }
        });
        FakeDestination {
            port,
            uri,
            seen,
            aborts,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    uri: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<String>>>,
    mut aborts: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = head.lines().next().unwrap_or_default().to_owned();
    seen.lock().unwrap().push(line.clone());
    let (status, body) = if line.starts_with("POST /v1/migrations/incoming ") {
        let uri = uri.lock().unwrap().clone();
        (
            "201 Created",
            serde_json::json!({ "id": "in-fake", "uri": uri }).to_string(),
        )
    } else if line.starts_with("DELETE /v1/migrations/incoming/in-fake ") {
        let _ = aborts.wait_for(|answer| *answer).await;
        ("204 No Content", String::new())
    } else if line.starts_with("GET /v1/migrations/incoming/in-fake ") {
        (
            "200 OK",
            r#"{"id":"in-fake","domain":"x","state":"prepared"}"#.to_owned(),
        )
    } else {
        (
            "404 Not Found",
            r#"{"error":{"code":"not_found","message":"no"}}"#.to_owned(),
        )
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn to(dest: &str) -> MigrateRequest {
    MigrateRequest {
        destination: dest.to_owned(),
        token: Some("whatever".into()),
        destination_ca: None,
        options: Default::default(),
        keep_source_definition: false,
    }
}

/// The destination answers `exec:`, `fd:`, `file:`, `rdma:`, another host, garbage: each is
/// refused before QEMU sees it, the guest keeps running here, the destination is told to
/// abort, the refusal is audited naming the URI, and the exec marker never appears.
#[tokio::test]
async fn hostile_stream_uris_from_the_destination_are_refused() {
    let a = Host::start("[migration]\nallow_plain_http = true\n");
    let fake = FakeDestination::start().await;
    let name = "peer-uri";
    a.start_osless(name).await;
    let marker = a.env.dir.path().join("exec-ran");
    let other = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let hostile = [
        format!("exec:touch {}", marker.display()),
        format!("tcp:127.0.0.2:{other_port}"),
        "tcp:evil.example:4444".to_owned(),
        "fd:3".to_owned(),
        format!("file:{}", marker.display()),
        "rdma:127.0.0.1:4444".to_owned(),
        "tcp:127.0.0.1:70000".to_owned(),
        "garbage".to_owned(),
    ];
    for uri in &hostile {
        *fake.uri.lock().unwrap() = uri.clone();
        let before = fake.seen().len();
        let p = a
            .local()
            .migrate(name, &to(&fake.url()), true)
            .await
            .unwrap();
        assert_eq!(p.phase, Phase::Failed, "{uri}: {p:?}");
        let detail = p.detail.clone().unwrap_or_default();
        assert!(
            detail.contains("refused the destination's migration URI") && detail.contains(uri),
            "{uri}: {detail}"
        );
        a.assert_running(name).await;
        let seen = fake.seen();
        assert!(
            seen[before..]
                .iter()
                .any(|l| l.starts_with("DELETE /v1/migrations/incoming/in-fake ")),
            "{uri}: the destination was not told to abort: {seen:?}"
        );
        a.assert_audited(&["migrate-stream-uri", "refused", name])
            .await;
        assert!(!marker.exists(), "{uri}: the exec: URI ran");
    }
    // The other host's listener never saw a connection (no RAM went there).
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the stream went to 127.0.0.2");
    a.assert_audited(&["\"op\":\"migrate\"", "failed", "exec:touch"])
        .await;
}

/// A stream that fails shows `failing` while the source is still settling (here: the
/// destination has not yet answered the abort), never `failed`: a client that reads a final
/// phase can rely on the guest running here again.
#[tokio::test]
async fn a_failed_stream_is_final_only_once_the_guest_runs_here_again() {
    let a = Host::start("[migration]\nallow_plain_http = true\n");
    let fake = FakeDestination::start().await;
    let name = "peer-failing";
    a.start_osless(name).await;
    // The stream's end accepts and hangs up at once: the source QEMU's migration fails.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *fake.uri.lock().unwrap() = format!("tcp:127.0.0.1:{}", sink.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((stream, _)) = sink.accept().await {
            drop(stream);
        }
    });
    fake.aborts.send_replace(false);
    a.local()
        .migrate(name, &to(&fake.url()), false)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let failing = loop {
        let p = a.local().migration(name).await.unwrap();
        assert!(
            !p.phase.is_final(),
            "a final phase while the destination has not answered the abort: {p:?}"
        );
        if p.phase == Phase::Failing {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never failing: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info = a.local().get(name).await.unwrap();
    assert_eq!(info.status.state, DomainState::Migrating, "{failing:?}");
    // The abort is asked for, and held; once answered, the outcome is final.
    while !fake
        .seen()
        .iter()
        .any(|l| l.starts_with("DELETE /v1/migrations/incoming/in-fake "))
    {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", fake.seen());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!a.local().migration(name).await.unwrap().phase.is_final());
    fake.aborts.send_replace(true);
    let ended = loop {
        let p = a.local().migration(name).await.unwrap();
        if p.phase.is_final() {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ended: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ended.phase, Phase::Failed, "{ended:?}");
    a.assert_running(name).await;
    // The job is released with it: the guest takes commands again.
    a.local()
        .action(name, novacrond::client::Action::Suspend, true, None)
        .await
        .unwrap();
}

/// Without `allow_plain_http`, an http:// destination is refused before anything is sent
/// (the token and the guest's definition would travel in clear text), and audited.
#[tokio::test]
async fn plain_http_destinations_are_refused_by_default() {
    let a = Host::start("");
    let fake = FakeDestination::start().await;
    let name = "peer-plain";
    a.start_osless(name).await;
    let e = a
        .local()
        .migrate(name, &to(&fake.url()), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_config"), "{e}");
    assert!(e.to_string().contains("allow_plain_http"), "{e}");
    assert!(
        fake.seen().is_empty(),
        "a request went out: {:?}",
        fake.seen()
    );
    a.assert_running(name).await;
    a.assert_audited(&["\"op\":\"migrate\"", "invalid_config", "allow_plain_http"])
        .await;
}

/// A migration-peer token reaches the incoming routes only; an operator token does not reach
/// them. Each refusal is a 403, audited.
#[tokio::test]
async fn the_migration_peer_role_reaches_only_the_incoming_routes() {
    let a = Host::start("");
    let peer = a.tcp(PEER);
    let e = peer.list(&Default::default()).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 403, .. }), "{e}");
    let e = peer.host().await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 403, .. }), "{e}");
    a.assert_audited(&[
        "\"op\":\"refused\"",
        "\"method\":\"GET\",\"path\":\"/v1/domains\"",
        "\"result\":\"forbidden\"",
        "\"token\":\"peer\"",
    ])
    .await;
    // Reached (the id is unknown, so: not found).
    let e = peer.incoming("in-nope").await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e}");

    let ops = a.tcp(OPS);
    ops.list(&Default::default()).await.unwrap();
    let e = ops.incoming("in-nope").await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 403, .. }), "{e}");
    let prepare = IncomingRequest {
        xml: osless("peer-role").to_xml(),
        options: Default::default(),
        listen_host: "127.0.0.1".into(),
        persistent: false,
        lease_secs: None,
        live_vcpus: None,
    };
    let e = ops.prepare_incoming(&prepare).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 403, .. }), "{e}");
    // The second refusal of one caller within a second is folded: its line (with the count)
    // is written when the window ends.
    a.assert_audited(&[
        "\"op\":\"refused\"",
        "\"method\":\"POST\",\"path\":\"/v1/migrations/incoming\"",
        "\"result\":\"forbidden\"",
        "\"token\":\"ops\"",
    ])
    .await;
    assert!(a.local().get("peer-role").await.is_err(), "nothing defined");
}

/// The incoming stream listens only on an address of this host: the wildcard and a foreign
/// address are refused (nothing is started); a local one works.
#[tokio::test]
async fn an_incoming_stream_listens_only_on_this_hosts_addresses() {
    let a = Host::start("");
    let peer = a.tcp(PEER);
    for (host, name) in [
        ("0.0.0.0", "peer-any"),
        ("192.0.2.1", "peer-foreign"),
        ("::", "peer-any6"),
    ] {
        let prepare = IncomingRequest {
            xml: osless(name).to_xml(),
            options: Default::default(),
            listen_host: host.into(),
            persistent: false,
            lease_secs: None,
            live_vcpus: None,
        };
        let e = peer.prepare_incoming(&prepare).await.unwrap_err();
        assert_eq!(e.code(), Some("invalid_config"), "{host}: {e}");
        assert!(e.to_string().contains("listen_host"), "{host}: {e}");
        assert!(
            a.local().get(name).await.is_err(),
            "{host}: a guest was made"
        );
    }
    // An operator following the event stream sees the incoming migration, not its id
    // (which is what lets a caller finish or abort it).
    let mut events = a.tcp(OPS).events(None).await.unwrap();
    let prepare = IncomingRequest {
        xml: osless("peer-local").to_xml(),
        options: Default::default(),
        listen_host: "127.0.0.1".into(),
        persistent: false,
        lease_secs: None,
        live_vcpus: None,
    };
    let answer = peer.prepare_incoming(&prepare).await.unwrap();
    assert!(answer.uri.starts_with("tcp:127.0.0.1:"), "{answer:?}");
    peer.abort_incoming(&answer.id).await.unwrap();
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(DEADLINE, async {
        loop {
            let e = events.next().await.unwrap().expect("the stream ended");
            seen.push(serde_json::to_string(&e).unwrap());
            if e.event == "migration_finished" {
                break;
            }
        }
    })
    .await;
    assert!(finished.is_ok(), "no migration_finished event: {seen:?}");
    let started = seen
        .iter()
        .find(|e| e.contains("migration_started"))
        .expect("a migration_started event");
    assert!(started.contains("in-event-"), "{started}");
    for e in &seen {
        assert!(!e.contains(&answer.id), "the incoming id went out: {e}");
    }
}

/// `destination_ca` names a file the daemon (root) reads: /dev/zero, a character device and
/// a FIFO inside the allowed directory, a symlink out of it, and a file outside it are all
/// refused at once, without a writer ever opening the FIFO, while the API keeps answering.
#[tokio::test]
async fn request_named_ca_files_are_refused_unless_small_regular_files_in_the_pki_dir() {
    let a = Host::start("");
    let name = "peer-ca";
    a.start_osless(name).await;
    let pki = a.env.config.state_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let fifo = pki.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = pki.join("zero.pem");
    nix::sys::stat::mknod(
        &zero,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let link = pki.join("link.pem");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let outside = a.env.dir.path().join("ca.pem");
    std::fs::write(
        &outside,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let https = "https://127.0.0.1:9";
    let with_ca = |ca: &std::path::Path| MigrateRequest {
        destination_ca: Some(ca.to_owned()),
        ..to(https)
    };

    // Many at once: in the old code each one held a worker thread on the FIFO's open.
    let mut pending = Vec::new();
    for _ in 0..8 {
        let (c, r) = (a.local(), with_ca(&fifo));
        pending.push(tokio::spawn(
            async move { c.migrate("peer-ca", &r, true).await },
        ));
    }
    let answered = tokio::time::timeout(DEADLINE, a.local().host()).await;
    let refused = tokio::time::timeout(DEADLINE, async {
        let mut out = Vec::new();
        for p in pending {
            out.push(p.await.unwrap());
        }
        out
    })
    .await;
    if refused.is_err() || answered.is_err() {
        // Unblock a daemon stuck on the FIFO so the test ends (and fails).
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        panic!("the API stopped answering while a FIFO was read as a CA");
    }
    answered.unwrap().unwrap();
    for r in refused.unwrap() {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
    }

    for (ca, why) in [
        (zero.as_path(), "character device"),
        (link.as_path(), "destination_ca"),
        (std::path::Path::new("/dev/zero"), "outside"),
        (outside.as_path(), "outside"),
    ] {
        let e = tokio::time::timeout(DEADLINE, a.local().migrate(name, &with_ca(ca), true))
            .await
            .expect("answered")
            .unwrap_err();
        assert_eq!(e.code(), Some("invalid_config"), "{}: {e}", ca.display());
        assert!(e.to_string().contains(why), "{}: {e}", ca.display());
    }
    a.assert_audited(&["\"op\":\"migrate\"", "invalid_config", "destination_ca"])
        .await;
    a.assert_running(name).await;
}
