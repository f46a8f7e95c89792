//! Webhooks against a real novacrond: a local receiver gets the events signed (HMAC-SHA256
//! checked here) and in order; a receiver that is down gets them once it is up; one that
//! hangs never delays a start; the status API shows each endpoint's delivery.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::curl;
use common::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "webhook-test-secret-0123456789";

/// Serves POSTs on `listener`, handing (signature header, body) to the returned channel.
fn receiver(listener: TcpListener) -> mpsc::UnboundedReceiver<(String, Bytes)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("x-novacron-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((sig, body));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    rx
}

fn verify(sig: &str, body: &[u8]) -> Value {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={want}"), "bad signature");
    serde_json::from_slice(body).unwrap()
}

/// Events of `domain` until one satisfies `until`, checking signatures and order.
async fn events_until(
    rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>,
    domain: &str,
    until: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (sig, body) = rx.recv().await.expect("receiver gone");
            let e = verify(&sig, &body);
            if let Some(prev) = got.last() {
                assert!(
                    e["seq"].as_u64() > prev["seq"].as_u64(),
                    "out of order: {prev} then {e}"
                );
            }
            let done = e["domain"] == domain && until(&e);
            got.push(e);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event; got {got:?}"));
    got
}

fn running(e: &Value) -> bool {
    e["event"] == "state_changed" && e["to"] == "running"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_signed_ordered_redelivered_and_never_wait_for_a_hanging_endpoint() {
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_port = good.local_addr().unwrap().port();
    let mut good = receiver(good);
    // Down: a port nobody listens on until later.
    let down_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Hanging: accepts, never answers.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });

    let env = Env::new();
    let hooks: String = [good_port, down_port, hang_port]
        .iter()
        .map(|p| {
            format!("[[webhooks]]\nurl = \"http://127.0.0.1:{p}/hook\"\nsecret = \"{SECRET}\"\n")
        })
        .collect();
    let d = env.start_daemon(&hooks);
    let name = "hook1";
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &osless(name).to_xml(),
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    // The hanging endpoint holds a delivery now...
    tokio::time::timeout(Duration::from_secs(20), accepted.recv())
        .await
        .expect("the hanging endpoint was never called");
    // ...and the start goes through regardless, its events reaching the good receiver.
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = events_until(&mut good, name, running).await;
    assert!(seen.iter().any(|e| e["event"] == "defined"), "{seen:?}");

    // The down endpoint failed meanwhile; the status says so.
    let status = |port: u16| -> Value {
        let r = curl(&d.socket, "GET", "/v1/webhooks", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["url"] == format!("http://127.0.0.1:{port}/hook"))
            .cloned()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(down_port)["last_error"].is_null() {
        assert!(Instant::now() < deadline, "{}", status(down_port));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status(down_port)["queued"].as_u64().unwrap() >= 2);
    assert!(status(good_port)["delivered"].as_u64().unwrap() >= 2);
    assert!(status(hang_port)["queued"].as_u64().unwrap() >= 2);

    // It comes back: it gets the same events, in order, signed.
    let mut back = receiver(
        TcpListener::bind(("127.0.0.1", down_port))
            .await
            .expect("the down endpoint's port was taken meanwhile"),
    );
    let late = events_until(&mut back, name, running).await;
    let seqs = |v: &[Value]| v.iter().map(|e| e["seq"].as_u64()).collect::<Vec<_>>();
    assert_eq!(seqs(&late), seqs(&seen));
    assert!(status(down_port)["last_success_unix_ms"].is_u64());

    let r = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
}
