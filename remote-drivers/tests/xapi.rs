//! The XAPI adapter against the XAPI test peer (`tests/peers/xapi/`): a Python process built
//! from the published XenAPI model, NOT a real XenServer/XCP-ng. It accepts exactly the
//! model's methods and arities, keeps XAPI's power-state transitions and speaks JSON-RPC and
//! XML-RPC over TLS with a certificate made at its start.
//!
//! Run: `cargo test -p novacron-remote-drivers --test xapi`

#![cfg(feature = "xapi")]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use novacron_domain::{DomainConfig, DomainState, Driver, Error, ErrorCode, MigrationTarget};
use novacron_remote_drivers::breaker::{BreakerOptions, BreakerState};
use novacron_remote_drivers::config::Timeouts;
use novacron_remote_drivers::xapi::XapiDriver;
use novacron_remote_drivers::{
    discover, Credentials, DriverKind, HostConfig, RemoteHost, Secret, TlsOptions,
};
use novacron_tests::peers::xapi::{self as peer, Peer};
use serde_json::{json, Value};

/// Ordinary VMs on the shared peer: vm-000..vm-007, even ones running.
const VMS: usize = 8;

fn shared() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| peer::start(VMS).expect("start the XAPI test peer"))
}

fn config(p: &Peer, password: &str) -> HostConfig {
    let mut c = HostConfig::new(
        "xcp-test",
        DriverKind::Xapi,
        url::Url::parse(&p.url).unwrap(),
        Credentials::Password {
            user: p.user.clone(),
            password: Secret::new(password),
        },
    );
    c.tls = TlsOptions {
        verify: true,
        ca_file: Some(p.ca_file.clone()),
    };
    c
}

fn driver(p: &Peer) -> XapiDriver {
    XapiDriver::new(&config(p, &p.password)).unwrap()
}

fn domain(name: &str, vcpus: u32, devices: &str) -> novacron_domain::ValidatedDomain {
    let xml = format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>512</memory>\
         <vcpu>{vcpus}</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>\
         <devices>{devices}</devices></domain>"
    );
    DomainConfig::from_xml(&xml).unwrap().validate().unwrap()
}

async fn state(d: &XapiDriver, name: &str) -> DomainState {
    d.get(name).await.unwrap().summary.state
}

fn vendor_fault(e: &Error) -> &str {
    match e {
        Error::Vendor { fault, .. } => fault,
        other => panic!("expected a vendor fault, got {other:?}"),
    }
}

/// Calls the peer directly (what an operator's tool would do), for setups the Driver API
/// does not offer, such as two VMs with one name.
async fn raw(p: &Peer, method: &str, params: Vec<Value>) -> Value {
    let pem = std::fs::read(&p.ca_file).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let v: Value = http
        .post(format!("{}jsonrpc", p.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// Calls the peer directly and answers its whole JSON-RPC response (faults included).
async fn raw_response(p: &Peer, method: &str, params: Vec<Value>) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    peer_http(p)
        .post(format!("{}jsonrpc", p.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn peer_http(p: &Peer) -> reqwest::Client {
    let pem = std::fs::read(&p.ca_file).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// The peer's log of every API call, in order (see `xapi_peer.py`).
async fn call_log(p: &Peer) -> Vec<Value> {
    let log: Value = peer_http(p)
        .get(format!("{}_peer/calls", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log.as_array().cloned().expect("the call log is an array")
}

/// The name of the host the VM named `vm` is resident on, as the peer records it.
async fn resident_host(p: &Peer, session: &str, vm: &str) -> String {
    let refs = raw(p, "VM.get_by_name_label", vec![json!(session), json!(vm)]).await;
    let [vm_ref] = refs.as_array().unwrap().as_slice() else {
        panic!("{vm}: {refs}");
    };
    let host = raw(
        p,
        "VM.get_resident_on",
        vec![json!(session), vm_ref.clone()],
    )
    .await;
    let name = raw(p, "host.get_name_label", vec![json!(session), host]).await;
    name.as_str().unwrap().to_owned()
}

async fn raw_login(p: &Peer) -> String {
    let s = raw(
        p,
        "session.login_with_password",
        vec![
            json!(p.user),
            json!(p.password),
            json!("2.21"),
            json!("test"),
        ],
    )
    .await;
    s.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn lists_guests_only_and_reads_them() {
    let p = shared();
    let d = driver(p);
    let list = d.list().await.unwrap();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<String> = (0..VMS).map(|i| format!("vm-{i:03}")).collect();
    // Templates, control domains and vm-000's snapshot are filtered out; other tests may
    // have added VMs of their own, so look only at ours.
    for name in &expected {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{name} in {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("Control domain") || n.starts_with("Debian")),
        "{names:?}"
    );
    let vm3 = list.iter().find(|s| s.name == "vm-003").unwrap();
    assert!(
        vm3.uuid.as_deref().is_some_and(|u| u.len() == 36),
        "{vm3:?}"
    );
    let vm2 = list.iter().find(|s| s.name == "vm-002").unwrap();
    assert_eq!(vm2.state, DomainState::Running);

    let info = d.get("vm-003").await.unwrap();
    assert_eq!(info.config.memory.memory_kib, 1024 * 1024);
    assert_eq!(info.config.vcpu.count, 2);
    assert_eq!(info.summary.uuid, vm3.uuid);
    let by_id = d
        .get(&format!("id:{}", vm3.uuid.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(by_id.summary.name, "vm-003");

    let caps = d.capabilities().await.unwrap();
    assert_eq!(caps.driver, "xapi");
    assert_eq!(caps.details["product_version"], "8.3.0");
    assert_eq!(caps.details["api_version"], "2.21");
    assert_eq!(caps.details["protocol"], "json-rpc");
    assert_eq!(d.speaks_jsonrpc(), Some(true));
    d.logout().await;
}

#[tokio::test]
async fn every_lifecycle_call_and_the_state_it_leads_to() {
    let p = shared();
    let d = driver(p);
    let vm = "vm-001";
    assert_eq!(state(&d, vm).await, DomainState::Shutoff);

    d.start(vm).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Running);

    // Wrong state: XAPI's fault and its text survive.
    let e = d.start(vm).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    assert_eq!(vendor_fault(&e), "VM_BAD_POWER_STATE");
    let text = e.to_string();
    assert!(
        text.contains("running") && text.contains("halted") && text.contains(vm),
        "{text}"
    );

    d.suspend(vm).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Suspended);
    d.resume(vm).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Running);
    d.reboot(vm).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Running);

    let to = |uri: &str| MigrationTarget {
        uri: uri.into(),
        live: true,
        timeout: Some(Duration::from_secs(10)),
    };
    let session = raw_login(p).await;
    assert_eq!(resident_host(p, &session, vm).await, "xcp-host-1");
    d.migrate(vm, &to("xcp-host-2")).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Running);
    // The VM really moved: the peer's VM.resident_on names the target host now.
    assert_eq!(resident_host(p, &session, vm).await, "xcp-host-2");
    let e = d.migrate(vm, &to("no-such-host")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
    assert_eq!(resident_host(p, &session, vm).await, "xcp-host-2");

    d.shutdown(vm, Duration::from_secs(10)).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Shutoff);
    let e = d.destroy(vm).await.unwrap_err();
    assert_eq!(vendor_fault(&e), "VM_BAD_POWER_STATE", "{e}");
    let e = d.suspend(vm).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");

    d.start(vm).await.unwrap();
    d.destroy(vm).await.unwrap();
    assert_eq!(state(&d, vm).await, DomainState::Shutoff);
}

#[tokio::test]
async fn define_redefine_and_undefine() {
    let p = shared();
    let d = driver(p);
    let name = "made-here";
    let s = d.define(domain(name, 2, "")).await.unwrap();
    assert_eq!(s.state, DomainState::Shutoff);
    assert!(s.uuid.is_some());
    let info = d.get(name).await.unwrap();
    assert_eq!(info.config.memory.memory_kib, 512 * 1024);
    assert_eq!(info.config.vcpu.count, 2);

    // Redefining a halted VM reshapes it in place (same UUID).
    let again = d.define(domain(name, 3, "")).await.unwrap();
    assert_eq!(again.uuid, s.uuid);
    assert_eq!(d.get(name).await.unwrap().config.vcpu.count, 3);
    let fewer = d.define(domain(name, 1, "")).await.unwrap();
    assert_eq!(fewer.uuid, s.uuid);
    assert_eq!(d.get(name).await.unwrap().config.vcpu.count, 1);

    let disk = "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                <source file='/tmp/x.img'/><target dev='vda' bus='virtio'/></disk>";
    let e = d.define(domain("with-disk", 1, disk)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig);
    assert!(e.to_string().contains("disk"), "{e}");

    d.start(name).await.unwrap();
    let e = d.undefine(name).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    let e = d.define(domain(name, 2, "")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    d.destroy(name).await.unwrap();
    d.undefine(name).await.unwrap();
    let e = d.get(name).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
}

#[tokio::test]
async fn unknown_and_ambiguous_names() {
    let p = shared();
    let d = driver(p);
    let e = d.get("no-such-vm").await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { kind: novacron_domain::Kind::Domain, ref name } if name == "no-such-vm"),
        "{e}"
    );
    let e = d
        .start("id:00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    // Templates and control domains are not guests.
    let e = d.start("Debian Bookworm 12").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");

    // Two VMs named "twin", made the way an operator could.
    let session = raw_login(p).await;
    let src = raw(
        p,
        "VM.get_by_name_label",
        vec![json!(session), json!("vm-003")],
    )
    .await;
    let src = src[0].as_str().unwrap().to_owned();
    for _ in 0..2 {
        raw(
            p,
            "VM.clone",
            vec![json!(session), json!(src), json!("twin")],
        )
        .await;
    }
    let e = d.get("twin").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
    let text = e.to_string();
    assert_eq!(text.matches("id:").count(), 2, "{text}");
    let first_id = text
        .split("id:")
        .nth(1)
        .map(|s| s.chars().take(36).collect::<String>())
        .unwrap();
    let one = d.get(&format!("id:{first_id}")).await.unwrap();
    assert_eq!(one.summary.name, "twin");
    assert_eq!(one.summary.uuid.as_deref(), Some(first_id.as_str()));
}

#[tokio::test]
async fn bad_credentials_name_the_fault_never_the_password() {
    let p = shared();
    let wrong = "hunter2-not-the-password";
    let d = XapiDriver::new(&config(p, wrong)).unwrap();
    let e = d.list().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Remote, "{e}");
    assert_eq!(vendor_fault(&e), "SESSION_AUTHENTICATION_FAILED");
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains(wrong), "{shown}");
        assert!(!shown.contains(&p.password), "{shown}");
    }
    let e = d.start("vm-000").await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains(wrong));
}

#[tokio::test]
async fn an_expired_session_is_renewed_once() {
    // Its own peer: expiring every session of the shared one would hit the sessions of the
    // tests running beside this one.
    let own = tokio::task::spawn_blocking(|| peer::start(VMS).expect("start the XAPI test peer"))
        .await
        .unwrap();
    let p = &own;
    let d = driver(p);
    d.list().await.unwrap();
    let r = peer_http(p)
        .post(format!("{}_peer/expire_sessions", p.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(d.list().await.unwrap().len() >= VMS);

    // What the peer saw: the cached session rejected, one new login, the same call again
    // with the new session, and nothing after that used the old one.
    let log = call_log(p).await;
    let expired = log
        .iter()
        .position(|c| c["event"] == "expired")
        .expect("the peer logged the expiry");
    let old = log[..expired]
        .iter()
        .rev()
        .find(|c| c["method"] == "session.login_with_password" && c["outcome"] == "success")
        .and_then(|c| c["result"].as_str())
        .expect("a login before the expiry");
    let after = &log[expired + 1..];
    let logins: Vec<_> = after
        .iter()
        .filter(|c| c["method"] == "session.login_with_password")
        .collect();
    assert_eq!(logins.len(), 1, "exactly one new login: {after:#?}");
    assert_eq!(logins[0]["outcome"], "success", "{after:#?}");
    let new = logins[0]["result"].as_str().expect("the new session");
    assert_ne!(new, old, "the peer issued a fresh session");
    let [rejected, login, retried, ..] = after else {
        panic!("expected a rejected call, a login and a retry: {after:#?}");
    };
    assert_eq!(rejected["session"], old, "{after:#?}");
    assert_eq!(rejected["outcome"], "SESSION_INVALID", "{after:#?}");
    assert_eq!(login["method"], "session.login_with_password", "{after:#?}");
    assert_eq!(retried["method"], rejected["method"], "{after:#?}");
    assert_eq!(retried["session"], new, "{after:#?}");
    assert_eq!(retried["outcome"], "success", "{after:#?}");
    for c in &after[3..] {
        assert_ne!(
            c["session"], old,
            "the old session was used again: {after:#?}"
        );
        assert_eq!(c["outcome"], "success", "{after:#?}");
    }
}

#[tokio::test]
async fn the_peer_unmarshals_every_argument_by_its_declared_type() {
    let p = shared();
    let session = raw_login(p).await;
    let refs = raw(
        p,
        "VM.get_by_name_label",
        vec![json!(session), json!("vm-005")],
    )
    .await;
    let vm = refs[0].clone();
    let fault = |r: &Value| -> Vec<String> {
        let e = &r["error"];
        let mut v = vec![e["message"].as_str().unwrap_or_default().to_owned()];
        v.extend(
            e["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_str().unwrap_or_default().to_owned()),
        );
        v
    };
    // A string where the model declares a bool (start_paused), an int (value), an enum, a
    // record field of the wrong type, a set element and a map value of the wrong type.
    let cases = [
        (
            "VM.start",
            vec![json!(session), vm.clone(), json!("false"), json!(false)],
            "start_paused",
        ),
        (
            "VM.set_VCPUs_max",
            vec![json!(session), vm.clone(), json!("two")],
            "value",
        ),
        (
            "VM.set_VCPUs_max",
            vec![json!(session), vm.clone(), json!(true)],
            "value",
        ),
        (
            "VM.set_actions_after_crash",
            vec![json!(session), vm.clone(), json!("explode")],
            "value",
        ),
        (
            "VM.create",
            vec![
                json!(session),
                json!({"name_label": "typed", "memory_static_max": "lots"}),
            ],
            "args",
        ),
        (
            "VM.set_other_config",
            vec![json!(session), vm.clone(), json!({"k": 1})],
            "value",
        ),
        ("VM.get_record", vec![json!(session), json!(42)], "self"),
        (
            "VM.get_all_records",
            vec![json!(["not", "a", "session"])],
            "session_id",
        ),
    ];
    for (method, params, name) in cases {
        let r = raw_response(p, method, params).await;
        assert_eq!(
            fault(&r),
            ["FIELD_TYPE_ERROR", name],
            "{method} with a mistyped {name}: {r}"
        );
    }
    // Refused before dispatch: nothing changed.
    let rec = raw(p, "VM.get_record", vec![json!(session), vm.clone()]).await;
    assert_eq!(rec["power_state"], "Halted", "{rec}");
    assert_eq!(rec["VCPUs_max"], 2, "{rec}");
    assert_eq!(rec["actions_after_crash"], "restart", "{rec}");
    assert!(raw(
        p,
        "VM.get_by_name_label",
        vec![json!(session), json!("typed")]
    )
    .await
    .as_array()
    .unwrap()
    .is_empty());
    // The same values, well typed, are accepted (XAPI's 64-bit ints may travel as strings).
    raw(
        p,
        "VM.set_VCPUs_max",
        vec![json!(session), vm.clone(), json!("2")],
    )
    .await;
}

#[tokio::test]
async fn a_guest_that_ignores_shutdown_times_out_and_can_be_destroyed() {
    let p = shared();
    let d = driver(p);
    let name = "stubborn-1";
    d.define(domain(name, 1, "")).await.unwrap();
    d.start(name).await.unwrap();
    let begin = Instant::now();
    let e = d.shutdown(name, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                operation: "shutdown",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "{:?}",
        begin.elapsed()
    );
    assert_eq!(state(&d, name).await, DomainState::Running);
    d.destroy(name).await.unwrap();
    assert_eq!(state(&d, name).await, DomainState::Shutoff);
    d.undefine(name).await.unwrap();
}

#[tokio::test]
async fn xml_rpc_only_hosts_are_spoken_to_in_xml_rpc() {
    let p = tokio::task::spawn_blocking(|| {
        peer::start_with(&peer::Options {
            xmlrpc_only: true,
            ..peer::Options::new(3)
        })
    })
    .await
    .unwrap()
    .unwrap();
    let d = driver(&p);
    let list = d.list().await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(d.speaks_jsonrpc(), Some(false));
    d.start("vm-001").await.unwrap();
    assert_eq!(state(&d, "vm-001").await, DomainState::Running);
    let e = d.start("vm-001").await.unwrap_err();
    assert_eq!(vendor_fault(&e), "VM_BAD_POWER_STATE", "{e}");
    assert!(e.to_string().contains("running"), "{e}");
    d.define(domain("xml-made", 2, "")).await.unwrap();
    assert_eq!(d.get("xml-made").await.unwrap().config.vcpu.count, 2);
    let caps = d.capabilities().await.unwrap();
    assert_eq!(caps.details["protocol"], "xml-rpc");
    assert_eq!(caps.details["api_version"], "2.21");

    // Discovery finds it too, through the XML-RPC fallback.
    let tls = TlsOptions {
        verify: true,
        ca_file: Some(p.ca_file.clone()),
    };
    let found = discover::discover(&p.url, &tls, Duration::from_secs(5)).await;
    assert!(
        found.found.iter().any(|f| f.driver == DriverKind::Xapi),
        "{found:?}"
    );
}

#[tokio::test]
async fn discovery_finds_xapi_and_nothing_else() {
    let p = shared();
    let tls = TlsOptions {
        verify: true,
        ca_file: Some(p.ca_file.clone()),
    };
    let found = discover::discover(&p.url, &tls, Duration::from_secs(5)).await;
    let xapi: Vec<_> = found
        .found
        .iter()
        .filter(|f| f.driver == DriverKind::Xapi)
        .collect();
    assert_eq!(xapi.len(), 1, "{found:?}");
    assert_eq!(xapi[0].url, p.url);
    // XAPI tells no version without a session (see the adapter's module docs).
    assert_eq!(xapi[0].version, None);
    assert!(
        found.found.iter().all(|f| f.driver == DriverKind::Xapi),
        "another vendor claimed the XAPI peer: {found:?}"
    );
}

#[tokio::test]
async fn a_hanging_host_opens_its_breaker_and_serves_stale_while_others_answer() {
    let hanging = tokio::task::spawn_blocking(|| peer::start(3))
        .await
        .unwrap()
        .unwrap();
    let healthy = shared();
    // A read of the hung host lasts long enough for the healthy one to answer inside it, and
    // the breaker stays open long enough to be checked on a loaded machine.
    let short = |p: &Peer| {
        let mut c = config(p, &p.password);
        c.timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(3),
            read: Duration::from_secs(3),
            operation: Duration::from_secs(5),
        };
        c.breaker = BreakerOptions {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
        };
        c
    };
    let a = RemoteHost::connect(short(&hanging)).unwrap();
    let b = RemoteHost::connect(short(healthy)).unwrap();
    let fresh = a.inventory().await.unwrap();
    assert!(fresh.stale.is_none());
    assert_eq!(fresh.domains.len(), 3);

    let paused = novacron_tests::peers::pause(hanging.pid).unwrap();
    // The healthy host answers while the read of the hung one is still waiting (ordering).
    let hung_read = a.inventory();
    tokio::pin!(hung_read);
    tokio::select! {
        biased;
        inv = &mut hung_read => panic!("the hung host's read ended first: {inv:?}"),
        other = b.inventory() => assert!(other.unwrap().stale.is_none()),
    }
    let inv = hung_read.await.unwrap();
    let stale = inv.stale.expect("the last inventory, marked stale");
    assert!(!stale.reason.is_empty());
    assert_eq!(inv.domains, fresh.domains);
    // One failed read is one failure (its retries included); the second opens the breaker.
    assert!(a.inventory().await.unwrap().stale.is_some());
    assert_eq!(a.status().breaker, BreakerState::Open);

    // Open: answered from the cache without asking the host (the breaker's reason, not a
    // time-out); mutations refused.
    let stale = a
        .inventory()
        .await
        .unwrap()
        .stale
        .expect("stale while open");
    assert!(
        stale.reason.contains("circuit breaker open"),
        "{}",
        stale.reason
    );
    let e = a.start("vm-001").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");

    // It comes back: after open_for, the probe closes the breaker and lists fresh (polled;
    // the deadline only catches a breaker that never closes).
    paused.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let inv = a.inventory().await.unwrap();
        if inv.stale.is_none() {
            break inv;
        }
        assert!(Instant::now() < deadline, "never recovered: {inv:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(back.stale.is_none(), "{back:?}");
    assert_eq!(a.status().breaker, BreakerState::Closed);
    a.start("vm-001").await.unwrap();
}

/// The tasks the peer still holds.
async fn live_tasks(p: &Peer, session: &str) -> Vec<Value> {
    raw(p, "task.get_all", vec![json!(session)])
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (briefly) until the peer holds no task.
async fn no_tasks_left(p: &Peer, session: &str) {
    let begin = Instant::now();
    loop {
        let tasks = live_tasks(p, session).await;
        if tasks.is_empty() {
            return;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(3),
            "tasks left on the host: {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_task_cut_by_the_time_limit_is_cancelled_and_destroyed_on_the_host() {
    // Tasks take 10 s on this peer: every lifecycle call outlives its limit.
    let p = tokio::task::spawn_blocking(|| {
        let mut o = peer::Options::new(4);
        o.task_delay = Duration::from_secs(10);
        peer::start_with(&o)
    })
    .await
    .unwrap()
    .unwrap();
    let session = raw_login(&p).await;
    let mut c = config(&p, &p.password);
    c.timeouts.operation = Duration::from_secs(2);
    let host = RemoteHost::connect(c).unwrap();

    // The adapter's own deadline (inside the host's limit) fires first: XAPI's time-out,
    // reported with the adapter's bound, and the task cancelled and destroyed.
    let begin = Instant::now();
    let e = host.start("vm-001").await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout { operation: "start", after } if after < Duration::from_secs(2)),
        "{e:?}"
    );
    assert!(
        begin.elapsed() < Duration::from_secs(2),
        "{:?}",
        begin.elapsed()
    );
    no_tasks_left(&p, &session).await;

    // A migration timeout above the host's limit is capped to it (not cut by the outer
    // limit): the adapter's time-out again, and no task left.
    let d = driver(&p);
    let mut c = config(&p, &p.password);
    c.timeouts.operation = Duration::from_secs(2);
    let limited = XapiDriver::new(&c).unwrap();
    let e = limited
        .migrate(
            "vm-000",
            &MigrationTarget {
                uri: "xcp-host-2".into(),
                live: true,
                timeout: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { operation: "migrate", after } if after < Duration::from_secs(2)),
        "{e:?}"
    );
    no_tasks_left(&p, &session).await;

    // The caller goes away mid-wait (its future dropped): the clean-up still runs.
    let cut = tokio::time::timeout(Duration::from_millis(300), d.start("vm-003")).await;
    assert!(cut.is_err(), "the start should still be waiting: {cut:?}");
    no_tasks_left(&p, &session).await;
    // Cancelled before it ran: the VM never started.
    assert_eq!(state(&d, "vm-003").await, DomainState::Shutoff);
    assert_eq!(state(&d, "vm-001").await, DomainState::Shutoff);
}
