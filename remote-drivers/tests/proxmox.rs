//! The Proxmox VE adapter against fakepve (the third-party PVE fake from PyPI, run as an outside
//! process). One test runs every scenario in sequence against two peers started once: A (the
//! subject) and B (the healthy neighbour while A hangs).
//!
//! Every request the adapter sends is recorded (method, path template, parameter names) and
//! checked at the end against the PVE API schema fakepve ships (`fakepve/data/pve-api.json.gz`).
#![cfg(feature = "proxmox")]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novacron_domain::{DomainConfig, DomainState, Driver, Error, ErrorCode, MigrationTarget};
use novacron_remote_drivers::breaker::BreakerOptions;
use novacron_remote_drivers::config::Timeouts;
use novacron_remote_drivers::discover::discover;
use novacron_remote_drivers::proxmox::{ProxmoxDriver, RequestShape};
use novacron_remote_drivers::{
    Credentials, DriverKind, HostConfig, RemoteHost, Secret, TlsOptions,
};
use novacron_tests::peers::fakepve::{self, Peer};

const VMS: usize = 10;
/// Peer B's login tickets expire this fast, so the re-login path runs.
const TICKET_TTL: Duration = Duration::from_millis(700);

fn tls(peer: &Peer) -> TlsOptions {
    TlsOptions {
        verify: true,
        ca_file: Some(peer.ca_file.clone()),
    }
}

fn config(peer: &Peer, credentials: Credentials) -> HostConfig {
    let mut c = HostConfig::new(
        "pve-test",
        DriverKind::Proxmox,
        url::Url::parse(&peer.url).unwrap(),
        credentials,
    );
    c.tls = tls(peer);
    c.timeouts.operation = Duration::from_secs(20);
    c
}

fn token(peer: &Peer) -> Credentials {
    Credentials::Token {
        id: peer.token_id.clone(),
        secret: Secret::new(peer.token_secret.clone()),
    }
}

fn password(peer: &Peer) -> Credentials {
    Credentials::Password {
        user: peer.user.clone(),
        password: Secret::new(peer.password.clone()),
    }
}

async fn state(d: &ProxmoxDriver, name: &str) -> DomainState {
    d.get(name).await.unwrap().summary.state
}

fn vendor(e: &Error) -> (ErrorCode, &str, &str) {
    match e {
        Error::Vendor {
            code,
            fault,
            message,
            ..
        } => (*code, fault.as_str(), message.as_str()),
        other => panic!("expected a PVE fault, got {other:?}"),
    }
}

#[test]
fn proxmox_against_fakepve() {
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let b = s.spawn(|| fakepve::start_with_ticket_ttl(2, TICKET_TTL));
        let a = fakepve::start(VMS).expect("fakepve A");
        (a, b.join().expect("peer B thread").expect("fakepve B"))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = ProxmoxDriver::new(&config(&a, token(&a))).unwrap();
        d.record_requests(true);
        discovery(&a).await;
        listing(&d).await;
        lifecycle(&d).await;
        errors(&d).await;
        define_and_undefine(&d).await;
        migration(&d, &a).await;
        let p = ProxmoxDriver::new(&config(&a, password(&a))).unwrap();
        p.record_requests(true);
        ticket_login(&p).await;
        bad_credentials(&a).await;
        ticket_expiry(&b).await;
        let mut shapes = d.recorded_requests();
        shapes.extend(p.recorded_requests());
        schema_check(&shapes);
        hanging_peer(&a, &b).await;
    });
    eprintln!("proxmox scenarios took {:?}", started.elapsed());
}

async fn discovery(a: &Peer) {
    let found = discover(&a.url, &tls(a), Duration::from_secs(5)).await;
    let pve: Vec<_> = found
        .found
        .iter()
        .filter(|f| f.driver == DriverKind::Proxmox)
        .collect();
    assert_eq!(pve.len(), 1, "{found:?}");
    assert!(pve[0].url.starts_with(&a.url), "{found:?}");
    // PVE tells its version only after a login (or on its web UI page, which fakepve does not
    // serve): discovery recognises it from its 401 and leaves the version unknown.
    assert_eq!(pve[0].version, None, "{found:?}");
}

async fn listing(d: &ProxmoxDriver) {
    let list = d.list().await.unwrap();
    assert_eq!(list.len(), VMS + 4, "{list:?}");
    let by_name: BTreeMap<&str, DomainState> =
        list.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(by_name["vm-000"], DomainState::Running);
    assert_eq!(by_name["vm-001"], DomainState::Shutoff);
    assert_eq!(by_name["ct-web"], DomainState::Running);
    assert_eq!(list.iter().filter(|s| s.name == "dup").count(), 2);
    let caps = d.capabilities().await.unwrap();
    assert_eq!(caps.details["pve_version"], "9.0.10", "{caps:?}");
    assert!(caps.details["nodes"].contains("pve2"), "{caps:?}");
    let info = d.get("vm-002").await.unwrap();
    assert_eq!(info.config.memory.memory_kib, 1024 * 1024);
    assert_eq!(info.config.vcpu.count, 2);
    assert_eq!(
        info.summary.uuid.as_deref(),
        Some("00000000-0000-4000-8000-000000000102")
    );
}

async fn lifecycle(d: &ProxmoxDriver) {
    let vm = "vm-001";
    d.start(vm).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Running);
    d.suspend(vm).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Paused);
    d.resume(vm).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Running);
    d.reboot(vm).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Running);
    d.shutdown(vm, Duration::from_secs(5)).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Shutoff);
    d.start(vm).await.unwrap();
    d.destroy(vm).await.unwrap();
    assert_eq!(state(d, vm).await, DomainState::Shutoff);
    // A guest that ignores ACPI: PVE's shutdown task gives up; ours is a Timeout, guest still up.
    let e = d
        .shutdown("noacpi", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(state(d, "noacpi").await, DomainState::Running);
}

async fn errors(d: &ProxmoxDriver) {
    // Wrong power state: PVE's own words (an HTTP 500 and a failed task).
    let e = d
        .shutdown("vm-001", Duration::from_secs(2))
        .await
        .unwrap_err();
    let (code, fault, msg) = vendor(&e);
    assert_eq!((code, fault), (ErrorCode::WrongState, "HTTP 500"), "{e}");
    assert_eq!(msg, "VM 101 not running");
    let e = d.start("vm-000").await.unwrap_err();
    let (code, fault, msg) = vendor(&e);
    assert_eq!(
        (code, fault),
        (ErrorCode::WrongState, "task qmstart"),
        "{e}"
    );
    assert_eq!(msg, "VM 100 already running");
    let e = d.resume("vm-000").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    // Unknown guests.
    assert!(matches!(
        d.get("no-such-vm").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.start("id:9999").await,
        Err(Error::NotFound { .. })
    ));
    // Ambiguous names, and the exact form.
    let e = d.get("dup").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig);
    assert!(e.to_string().contains("9000, 9001"), "{e}");
    assert_eq!(d.get("id:9001").await.unwrap().summary.name, "dup");
    // Containers: listed and readable, never driven.
    assert_eq!(state(d, "ct-web").await, DomainState::Running);
    let e = d.destroy("ct-web").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
}

async fn define_and_undefine(d: &ProxmoxDriver) {
    let xml = "<domain type='kvm'><name>nc-new</name><memory unit='MiB'>512</memory>\
               <vcpu>2</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>";
    let validated = || DomainConfig::from_xml(xml).unwrap().validate().unwrap();
    let s = d.define(validated()).await.unwrap();
    assert_eq!(s.state, DomainState::Shutoff);
    let info = d.get("nc-new").await.unwrap();
    assert_eq!(info.config.memory.memory_kib, 512 * 1024);
    assert_eq!(info.config.vcpu.count, 2);
    // Redefining a shut-off guest reconfigures it.
    d.define(validated()).await.unwrap();
    assert_eq!(
        d.list()
            .await
            .unwrap()
            .iter()
            .filter(|s| s.name == "nc-new")
            .count(),
        1
    );
    d.start("nc-new").await.unwrap();
    let e = d.undefine("nc-new").await.unwrap_err();
    let (code, _, msg) = vendor(&e);
    assert_eq!(code, ErrorCode::WrongState, "{e}");
    assert!(msg.contains("is running"), "{e}");
    d.destroy("nc-new").await.unwrap();
    d.undefine("nc-new").await.unwrap();
    assert!(matches!(d.get("nc-new").await, Err(Error::NotFound { .. })));
}

/// The node the peer says guest `name` lives on (`/cluster/resources`, with the API token).
async fn node_of(peer: &Peer, name: &str) -> String {
    let pem = std::fs::read(&peer.ca_file).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let v: serde_json::Value = http
        .get(format!("{}/api2/json/cluster/resources?type=vm", peer.url))
        .header(
            "Authorization",
            format!("PVEAPIToken={}={}", peer.token_id, peer.token_secret),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found: Vec<&serde_json::Value> = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter(|r| r["name"] == name)
        .collect();
    let [one] = found.as_slice() else {
        panic!("{name}: {v}");
    };
    one["node"].as_str().unwrap().to_owned()
}

async fn migration(d: &ProxmoxDriver, a: &Peer) {
    let to = |uri: &str| MigrationTarget {
        uri: uri.into(),
        live: true,
        timeout: Some(Duration::from_secs(10)),
    };
    // The peer runs PVE's migrate (serve_fakepve.py): afterwards the guest lives on pve2.
    assert_eq!(node_of(a, "vm-000").await, "pve1");
    d.migrate("vm-000", &to("pve2")).await.unwrap();
    assert_eq!(node_of(a, "vm-000").await, "pve2");
    assert_eq!(state(d, "vm-000").await, DomainState::Running);
    // Refusals leave it where it is.
    let e = d.migrate("vm-000", &to("pve2")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
    let e = d.migrate("vm-000", &to("nowhere")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
    assert!(e.to_string().contains("pve1, pve2"), "{e}");
    assert_eq!(node_of(a, "vm-000").await, "pve2");
    // And back, through the node the adapter now finds it on.
    d.migrate("vm-000", &to("pve1")).await.unwrap();
    assert_eq!(node_of(a, "vm-000").await, "pve1");
}

async fn ticket_login(p: &ProxmoxDriver) {
    // Reads and writes (CSRF token) through a ticket session.
    assert_eq!(p.list().await.unwrap().len(), VMS + 4);
    p.start("vm-002").await.unwrap();
    p.destroy("vm-002").await.unwrap();
    assert_eq!(state(p, "vm-002").await, DomainState::Shutoff);
}

/// PVE answers 401 to an expired ticket; the driver logs in again once and carries on.
async fn ticket_expiry(b: &Peer) {
    let d = ProxmoxDriver::new(&config(b, password(b))).unwrap();
    d.record_requests(true);
    assert_eq!(d.list().await.unwrap().len(), 2 + 4);
    tokio::time::sleep(TICKET_TTL + Duration::from_millis(300)).await;
    // A write: the new ticket's CSRF token goes with it.
    d.start("vm-001").await.unwrap();
    tokio::time::sleep(TICKET_TTL + Duration::from_millis(300)).await;
    d.destroy("vm-001").await.unwrap();
    let logins = d
        .recorded_requests()
        .iter()
        .filter(|s| s.template == "/access/ticket")
        .count();
    assert_eq!(logins, 3, "one login, then one per expiry");
    assert_eq!(state(&d, "vm-001").await, DomainState::Shutoff);
}

async fn bad_credentials(a: &Peer) {
    let wrong = "wrong-password-Zq81";
    let creds = [
        Credentials::Password {
            user: a.user.clone(),
            password: Secret::new(wrong),
        },
        Credentials::Token {
            id: a.token_id.clone(),
            secret: Secret::new(wrong),
        },
    ];
    for c in creds {
        let d = ProxmoxDriver::new(&config(a, c)).unwrap();
        for e in [
            d.list().await.unwrap_err(),
            d.start("vm-003").await.unwrap_err(),
        ] {
            let (code, fault, msg) = vendor(&e);
            assert_eq!((code, fault), (ErrorCode::Remote, "HTTP 401"), "{e}");
            assert!(msg.contains("authentication failure"), "{e}");
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(wrong), "secret in error: {shown}");
                assert!(!shown.contains(&a.password), "secret in error: {shown}");
                assert!(!shown.contains(&a.token_secret), "secret in error: {shown}");
            }
        }
    }
}

/// Per method: (declared parameters, required ones).
type Methods = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// The PVE schema fakepve ships: path template → its methods.
fn load_schema() -> BTreeMap<String, Methods> {
    let script = r#"
import gzip, json, os, fakepve
path = os.path.join(os.path.dirname(fakepve.__file__), 'data', 'pve-api.json.gz')
paths = json.load(gzip.open(path))['paths']
out = {}
for tpl, methods in paths.items():
    out[tpl] = {}
    for m, info in methods.items():
        props = (info.get('parameters') or {}).get('properties') or {}
        out[tpl][m] = [sorted(props), sorted(k for k, v in props.items() if not v.get('optional'))]
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn schema_check(shapes: &[RequestShape]) {
    let schema = load_schema();
    let mut seen: Vec<&RequestShape> = shapes.iter().collect();
    seen.sort();
    seen.dedup();
    assert!(
        seen.len() >= 15,
        "too few request shapes recorded: {seen:?}"
    );
    let mut problems = Vec::new();
    for s in &seen {
        let Some(methods) = schema.get(&s.template) else {
            problems.push(format!("{} {}: no such path", s.method, s.template));
            continue;
        };
        let Some((declared, required)) = methods.get(&s.method) else {
            problems.push(format!("{} {}: method not allowed", s.method, s.template));
            continue;
        };
        let in_path = |p: &str| s.template.contains(&format!("{{{p}}}"));
        for p in &s.params {
            if !declared.contains(p) {
                problems.push(format!(
                    "{} {}: undeclared parameter {p}",
                    s.method, s.template
                ));
            }
        }
        for r in required {
            if !in_path(r) && !s.params.contains(r) {
                problems.push(format!("{} {}: missing required {r}", s.method, s.template));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "requests outside the PVE schema: {problems:#?}"
    );
    eprintln!(
        "{} distinct request shapes match the PVE schema",
        seen.len()
    );
}

fn short(peer: &Peer, name: &str) -> HostConfig {
    let mut c = config(peer, token(peer));
    c.name = name.into();
    c.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(1),
        read: Duration::from_secs(2),
        operation: Duration::from_secs(2),
    };
    c.breaker = BreakerOptions {
        failure_threshold: 2,
        open_for: Duration::from_secs(1),
    };
    c
}

async fn hanging_peer(a: &Peer, b: &Peer) {
    let ha = RemoteHost::new(
        short(a, "pve-a"),
        Arc::new(ProxmoxDriver::new(&short(a, "pve-a")).unwrap()),
    );
    let hb = RemoteHost::new(
        short(b, "pve-b"),
        Arc::new(ProxmoxDriver::new(&short(b, "pve-b")).unwrap()),
    );
    let fresh = ha.inventory().await.unwrap();
    assert!(fresh.stale.is_none());
    let paused = novacron_tests::peers::pause(a.pid()).unwrap();
    {
        let (stale, healthy) = tokio::join!(ha.inventory(), async {
            let t = Instant::now();
            let r = hb.inventory().await;
            (r, t.elapsed())
        });
        let stale = stale.unwrap();
        let why = stale.stale.as_ref().expect("stale inventory while A hangs");
        assert_eq!(stale.domains.len(), fresh.domains.len());
        assert!(!why.reason.is_empty());
        let (healthy, took) = healthy;
        assert!(healthy.unwrap().stale.is_none());
        // Well inside A's 2 s read limit, which A spends hanging.
        assert!(took < Duration::from_millis(1500), "B took {took:?}");
        // One failed read is one failure (its retries included); the second opens it.
        assert!(ha.inventory().await.unwrap().stale.is_some());
        assert!(ha.status().read_only, "{:?}", ha.status());
        let e = ha.start("vm-004").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    }
    paused.resume();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = ha.inventory().await.unwrap();
    assert!(back.stale.is_none(), "{:?}", back.stale);
    assert!(!ha.status().read_only);
}
