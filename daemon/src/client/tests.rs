//! Protocol tests against a tiny in-test HTTP server on a Unix socket that answers canned
//! responses per API.md, recording what the client sent.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::*;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, &'static str, String) + Send + Sync>;

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(
        handler: impl Fn(&Seen) -> (u16, &'static str, String) + Send + Sync + 'static,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let log = log.clone();
                    async move {
                        let header = |name| {
                            req.headers()
                                .get(name)
                                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let mut seen = Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            content_type: header("content-type"),
                            authorization: header("authorization"),
                            body: String::new(),
                        };
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.body = String::from_utf8_lossy(&body).into_owned();
                        let (status, content_type, body) = handler(&seen);
                        log.lock().unwrap().push(seen);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server {
            _dir: dir,
            socket,
            seen,
        }
    }

    fn client(&self) -> Client {
        Client::new(Target::Unix(self.socket.clone()))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const JSON: &str = "application/json";

fn status_json(name: &str, state: &str) -> String {
    format!(
        r#"{{"name":"{name}","uuid":"u-{name}","state":"{state}","persistent":true,"autostart":false{}}}"#,
        if state == "running" {
            r#","pid":42"#
        } else {
            ""
        }
    )
}

fn error_json(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

#[tokio::test]
async fn list_sends_filters_and_parses() {
    let server = Server::start(|_| {
        (
            200,
            JSON,
            format!(
                "[{},{}]",
                status_json("web1", "running"),
                status_json("web 2", "shutoff")
            ),
        )
    });
    let filter = ListFilter {
        state: Some(DomainState::Running),
        name: Some("web *?&".into()),
        tag: None,
    };
    let list = server
        .client()
        .with_token("s3cret")
        .list(&filter)
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].pid, Some(42));
    assert_eq!(list[1].state, DomainState::Shutoff);
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/v1/domains?state=running&name=web%20*%3F%26");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer s3cret"));
}

#[tokio::test]
async fn server_errors_keep_status_and_code() {
    let server = Server::start(|_| (404, JSON, error_json("not_found", "domain 'x y' not found")));
    let e = server.client().get("x y").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.code(), Some("not_found"));
    assert_eq!(e.to_string(), "domain 'x y' not found");
    assert_eq!(server.seen()[0].uri, "/v1/domains/x%20y");
    assert_eq!(server.seen()[0].authorization, None);
}

#[tokio::test]
async fn define_create_undefine() {
    let server = Server::start(|seen| match seen.method.as_str() {
        "POST" => (201, JSON, status_json("vm1", "shutoff")),
        _ => (204, JSON, String::new()),
    });
    let client = server.client();
    let s = client
        .define("<domain/>", DefinitionFormat::Xml)
        .await
        .unwrap();
    assert_eq!(s.name, "vm1");
    client
        .create(Bytes::from_static(b"{}"), DefinitionFormat::Json)
        .await
        .unwrap();
    client.undefine("vm1").await.unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].uri, "/v1/domains");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/xml"));
    assert_eq!(seen[0].body, "<domain/>");
    assert_eq!(seen[1].uri, "/v1/domains?transient=true");
    assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        (seen[2].method.as_str(), seen[2].uri.as_str()),
        ("DELETE", "/v1/domains/vm1")
    );
}

#[tokio::test]
async fn actions_wait_or_return_the_operation() {
    let server = Server::start(|seen| {
        if seen.uri.ends_with("wait=false") {
            (
                202,
                JSON,
                r#"{"id":"op-7","domain":"vm1","operation":"shutdown","status":"running","started_unix_ms":1}"#.into(),
            )
        } else {
            (200, JSON, status_json("vm1", "running"))
        }
    });
    let client = server.client();
    match client
        .action("vm1", Action::Start, true, None)
        .await
        .unwrap()
    {
        ActionOutcome::Done(s) => assert_eq!(s.state, DomainState::Running),
        other => panic!("{other:?}"),
    }
    let body = json!({"timeout_secs": 5, "force": true});
    match client
        .action("vm1", Action::Shutdown, false, Some(body))
        .await
        .unwrap()
    {
        ActionOutcome::Accepted(op) => assert_eq!(op.id, "op-7"),
        other => panic!("{other:?}"),
    }
    let seen = server.seen();
    assert_eq!(seen[0].uri, "/v1/domains/vm1/start");
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[1].uri, "/v1/domains/vm1/shutdown?wait=false");
    let sent: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(sent, json!({"timeout_secs": 5, "force": true}));
}

#[tokio::test]
async fn autostart_qmp_host_operation() {
    let server = Server::start(|seen| {
        match seen.uri.as_str() {
        "/v1/domains/vm1/autostart" => (200, JSON, status_json("vm1", "shutoff")),
        "/v1/domains/vm1/qmp" => (200, JSON, r#"{"return":{"status":"running"}}"#.into()),
        "/v1/host" => (
            200,
            JSON,
            r#"{"hostname":"h","daemon_version":"0.1.0","emulator":"/usr/bin/qemu","kvm":{"usable":false,"reason":"no /dev/kvm"},"cpus":2,"memory_bytes":1024,"domains":{"total":3,"running":1}}"#.into(),
        ),
        _ => (
            200,
            JSON,
            r#"{"id":"op-1","domain":"vm1","operation":"start","status":"failed","error":{"code":"timeout","message":"t"},"started_unix_ms":1,"finished_unix_ms":2}"#.into(),
        ),
    }
    });
    let client = server.client();
    client.set_autostart("vm1", true).await.unwrap();
    let ret = client
        .qmp("vm1", "query-status", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(ret, json!({"status": "running"}));
    let host = client.host().await.unwrap();
    assert_eq!(host.kvm.reason.as_deref(), Some("no /dev/kvm"));
    assert_eq!(host.domains.running, 1);
    let op = client.operation("op-1").await.unwrap();
    assert_eq!(op.error.unwrap().code, "timeout");
    let seen = server.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].body, r#"{"enabled":true}"#);
    let qmp: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(qmp, json!({"execute": "query-status", "arguments": {}}));
    assert_eq!(seen[3].uri, "/v1/operations/op-1");
}

#[tokio::test]
async fn xml_and_foreign_bodies() {
    let server = Server::start(|seen| match seen.uri.as_str() {
        "/v1/domains/vm1/xml" => (200, "application/xml", "<domain/>".into()),
        "/v1/domains/vm1" => (200, JSON, "not json".into()),
        _ => (502, "text/html", "<html>proxy</html>".into()),
    });
    let client = server.client();
    assert_eq!(client.xml("vm1").await.unwrap(), "<domain/>");
    assert!(matches!(
        client.get("vm1").await,
        Err(ClientError::Protocol(_))
    ));
    let e = client.host().await.unwrap_err();
    assert_eq!(e.status(), Some(502));
}

#[tokio::test]
async fn response_size_is_bounded() {
    let server = Server::start(|_| (200, JSON, format!("\"{}\"", "x".repeat(4096))));
    let e = server
        .client()
        .with_max_body(1024)
        .xml("vm1")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { limit: 1024 }), "{e:?}");
}

#[tokio::test]
async fn event_stream() {
    let server = Server::start(|seen| {
        assert_eq!(seen.uri, "/v1/events?after=11");
        let body = concat!(
            ": keep-alive\n\n",
            "id: 12\nevent: state_changed\n",
            r#"data: {"seq":12,"time_unix_ms":5,"domain":"vm1","event":"state_changed","from":"starting","to":"running","reason":"booted"}"#,
            "\n\nid: 13\nevent: undefined\n",
            r#"data: {"seq":13,"time_unix_ms":6,"domain":"vm1","event":"undefined"}"#,
            "\n\n"
        );
        (200, "text/event-stream", body.into())
    });
    let mut stream = server.client().events(Some(11)).await.unwrap();
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!((e.seq, e.event.as_str()), (12, "state_changed"));
    assert_eq!(e.detail_str("reason"), Some("booted"));
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!((e.seq, e.domain.as_str()), (13, "vm1"));
    assert_eq!(stream.last_seq(), Some(13));
    assert!(stream.next().await.unwrap().is_none());
}

#[tokio::test]
async fn event_stream_refused() {
    let server = Server::start(|_| (401, JSON, error_json("unauthorized", "no token")));
    let e = server.client().events(None).await.unwrap_err();
    assert_eq!(e.code(), Some("unauthorized"));
}

#[tokio::test]
async fn connect_failure_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let e = Client::new(Target::Unix(socket.clone()))
        .host()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
}

#[test]
fn encodes_path_segments() {
    assert_eq!(encode("vm-1_a.b~"), "vm-1_a.b~");
    assert_eq!(
        encode("a/b?c#d%e f&g=h+"),
        "a%2Fb%3Fc%23d%25e%20f%26g%3Dh%2B"
    );
    assert_eq!(encode("é"), "%C3%A9");
}
