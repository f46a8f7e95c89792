//! The vSphere adapter against vcsim (govmomi's simulator, a real vim25 server built from
//! Debian's govmomi sources; see `novacron_tests::peers::vcsim`). Each test starts its own
//! simulator(s); all are killed on drop.

use std::time::{Duration, Instant};

use novacron_domain::{DomainConfig, DomainState, Driver, Error, ErrorCode, MigrationTarget};
use novacron_remote_drivers::breaker::{BreakerOptions, BreakerState};
use novacron_remote_drivers::config::Timeouts;
use novacron_remote_drivers::vsphere::VsphereDriver;
use novacron_remote_drivers::{
    discover, Credentials, DriverKind, HostConfig, RemoteHost, Secret, TlsOptions,
};
use novacron_tests::peers::vcsim::{self, Peer};

fn start_peer(vms: usize) -> Peer {
    vcsim::start(vms).expect("vcsim starts")
}

fn config(peer: &Peer, password: &str) -> HostConfig {
    let mut c = HostConfig::new(
        "vc1",
        DriverKind::Vsphere,
        url::Url::parse(&peer.url).expect("peer URL"),
        Credentials::Password {
            user: peer.user.clone(),
            password: Secret::new(password),
        },
    );
    // The peer's certificate is signed by a CA made for it: verified as a vCenter's would be.
    c.tls = TlsOptions {
        verify: true,
        ca_file: Some(peer.ca_file.clone()),
    };
    c
}

fn driver(peer: &Peer) -> VsphereDriver {
    VsphereDriver::new(&config(peer, &peer.password)).expect("driver")
}

async fn state(d: &VsphereDriver, name: &str) -> DomainState {
    d.get(name).await.expect("get").summary.state
}

/// A vendor refusal with the expected code and vim fault name.
fn assert_vendor(e: &Error, code: ErrorCode, fault: &str) {
    match e {
        Error::Vendor {
            code: c, fault: f, ..
        } => {
            assert_eq!((*c, f.as_str()), (code, fault), "{e}");
        }
        other => panic!("expected vendor fault {fault}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_against_vcsim() {
    let peer = tokio::task::spawn_blocking(|| start_peer(3)).await.unwrap();
    let d = driver(&peer);
    let vm0 = Peer::vm_name(0);
    let vm1 = Peer::vm_name(1);

    // Listing: every VM, running, with vCenter's instance UUID.
    let list = d.list().await.expect("list");
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list.iter().all(|s| s.state == DomainState::Running),
        "{list:?}"
    );
    assert!(list
        .iter()
        .all(|s| s.uuid.as_deref().is_some_and(|u| u.len() == 36)));
    let info = d.get(&vm0).await.expect("get");
    assert_eq!(info.config.name, vm0);
    assert!(info.config.vcpu.count >= 1 && info.config.memory.memory_kib >= 1024);
    assert!(info.config.uuid.is_some());

    let caps = d.capabilities().await.expect("capabilities");
    assert_eq!(
        caps.details.get("api_version").map(String::as_str),
        Some("6.5")
    );
    assert!(caps.details["product"].contains("vCenter"), "{caps:?}");

    // Unknown VM, by name and by id.
    assert_eq!(
        d.start("no-such-vm").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        d.get("id:vm-999999").await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // Power: destroy, then destroy again is the vendor's InvalidPowerState with its states.
    d.destroy(&vm0).await.expect("power off");
    assert_eq!(state(&d, &vm0).await, DomainState::Shutoff);
    let e = d.destroy(&vm0).await.unwrap_err();
    assert_vendor(&e, ErrorCode::WrongState, "InvalidPowerState");
    assert!(e.to_string().contains("existingState=poweredOff"), "{e}");
    let e = d.resume(&vm0).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");

    d.start(&vm0).await.expect("power on");
    assert_eq!(state(&d, &vm0).await, DomainState::Running);
    let e = d.start(&vm0).await.unwrap_err();
    assert_vendor(&e, ErrorCode::WrongState, "InvalidPowerState");
    assert!(e.to_string().contains("requestedState=poweredOn"), "{e}");

    d.suspend(&vm0).await.expect("suspend");
    assert_eq!(state(&d, &vm0).await, DomainState::Suspended);
    d.resume(&vm0).await.expect("resume");
    assert_eq!(state(&d, &vm0).await, DomainState::Running);
    d.reboot(&vm0).await.expect("reboot");
    assert_eq!(state(&d, &vm0).await, DomainState::Running);

    d.shutdown(&vm0, Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert_eq!(state(&d, &vm0).await, DomainState::Shutoff);
    let e = d.shutdown(&vm0, Duration::from_secs(1)).await.unwrap_err();
    assert_vendor(&e, ErrorCode::WrongState, "InvalidPowerState");

    // The id form addresses the same VM.
    let by_id = format!("id:{}", d.id_of(&vm1).await.unwrap());
    assert!(by_id.starts_with("id:vm-"), "{by_id}");
    assert_eq!(d.get(&by_id).await.unwrap().summary.name, vm1);

    // Migration between the cluster's hosts (RelocateVM_Task).
    let before = d.host_of(&vm1).await.unwrap().expect("a host");
    let other = vcsim::HOSTS
        .iter()
        .find(|h| **h != before)
        .expect("another host");
    let target = MigrationTarget {
        uri: format!("host:{other}"),
        live: true,
        timeout: None,
    };
    d.migrate(&vm1, &target).await.expect("migrate");
    assert_eq!(d.host_of(&vm1).await.unwrap().as_deref(), Some(*other));
    let bad = MigrationTarget {
        uri: "host:nowhere".into(),
        live: true,
        timeout: None,
    };
    assert_eq!(
        d.migrate(&vm1, &bad).await.unwrap_err().code(),
        ErrorCode::InvalidConfig
    );

    // Snapshots (inherent calls).
    let id = d
        .create_snapshot(&vm1, "before", "test", false)
        .await
        .expect("snapshot");
    d.create_snapshot(&vm1, "after", "", false)
        .await
        .expect("second snapshot");
    let snaps = d.snapshots(&vm1).await.unwrap();
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["before", "after"], "{snaps:?}");
    assert!(snaps[1].current && snaps[0].id == id);
    d.revert_to_snapshot(&vm1, "before").await.expect("revert");
    d.remove_snapshot(&vm1, "after", false)
        .await
        .expect("remove");
    let names: Vec<String> = d
        .snapshots(&vm1)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["before"]);
    assert_eq!(
        d.remove_snapshot(&vm1, "after", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );

    // Define, duplicate, start, refuse undefine while on, power off, undefine.
    let xml =
        "<domain type='kvm'><name>nc-new</name><uuid>6a7e3c4e-1d2b-4c3a-9f00-1234567890ab</uuid>\
               <memory unit='KiB'>262144</memory><vcpu>2</vcpu>\
               <os><type arch='x86_64'>hvm</type></os></domain>";
    let validated =
        novacron_domain::validate::validate(DomainConfig::from_xml(xml).unwrap()).unwrap();
    let created = d.define(validated.clone()).await.expect("define");
    assert_eq!(
        (created.name.as_str(), created.state),
        ("nc-new", DomainState::Shutoff)
    );
    let info = d.get("nc-new").await.unwrap();
    assert_eq!(
        (info.config.vcpu.count, info.config.memory.memory_kib),
        (2, 262144)
    );
    assert_eq!(
        info.config.uuid.map(|u| u.to_string()).as_deref(),
        Some("6a7e3c4e-1d2b-4c3a-9f00-1234567890ab")
    );
    assert_eq!(
        d.define(validated).await.unwrap_err().code(),
        ErrorCode::AlreadyExists
    );
    d.start("nc-new").await.expect("start the new VM");
    let e = d.undefine("nc-new").await.unwrap_err();
    assert_vendor(&e, ErrorCode::WrongState, "InvalidPowerState");
    d.destroy("nc-new").await.unwrap();
    d.undefine("nc-new").await.expect("undefine");
    assert_eq!(
        d.get("nc-new").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(d.list().await.unwrap().len(), 3);

    d.logout().await.expect("logout");
    // A call after logout logs in again.
    assert_eq!(d.list().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_name_the_fault_never_the_password() {
    let peer = tokio::task::spawn_blocking(|| start_peer(1)).await.unwrap();
    let wrong = "Wr0ng-Pa55word-xyzzy";
    let d = VsphereDriver::new(&config(&peer, wrong)).unwrap();
    let errors = [
        d.list().await.unwrap_err(),
        d.capabilities().await.unwrap_err(),
        d.start(&Peer::vm_name(0)).await.unwrap_err(),
    ];
    for e in &errors {
        assert_vendor(e, ErrorCode::Remote, "InvalidLogin");
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(wrong), "{shown}");
            assert!(!shown.contains(&peer.password), "{shown}");
        }
    }
    // The right password works against the same peer.
    assert_eq!(driver(&peer).list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_vsphere_with_its_version() {
    let peer = tokio::task::spawn_blocking(|| start_peer(1)).await.unwrap();
    let tls = TlsOptions {
        verify: true,
        ca_file: Some(peer.ca_file.clone()),
    };
    let found = discover::discover(&peer.url, &tls, Duration::from_secs(5)).await;
    let vsphere = found
        .found
        .iter()
        .find(|f| f.driver == DriverKind::Vsphere)
        .unwrap_or_else(|| panic!("vSphere not found: {found:?}"));
    let version = vsphere.version.as_deref().unwrap_or("");
    assert!(
        version.contains("vCenter") && version.contains("API 6.5"),
        "{version}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_peer_opens_the_breaker_and_serves_stale_inventory() {
    let (hung, healthy) = tokio::task::spawn_blocking(|| (start_peer(2), start_peer(2)))
        .await
        .unwrap();
    let short = |peer: &Peer, name: &str| {
        let mut c = config(peer, &peer.password);
        c.name = name.into();
        c.timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
            read: Duration::from_secs(2),
            operation: Duration::from_secs(2),
        };
        // Open long enough to check the open breaker in on a loaded machine.
        c.breaker = BreakerOptions {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
        };
        RemoteHost::connect(c).unwrap()
    };
    let a = short(&hung, "hung");
    let b = short(&healthy, "healthy");
    let fresh = a.inventory().await.expect("first listing");
    assert!(fresh.stale.is_none() && fresh.domains.len() == 2);

    let paused = novacron_tests::peers::pause(hung.pid).unwrap();
    let inv = a.inventory().await.expect("stale listing");
    let stale = inv.stale.expect("marked stale");
    assert_eq!(inv.domains, fresh.domains);
    assert!(!stale.reason.is_empty());
    // One failed read is one failure (its retries included); the second opens the breaker.
    assert!(a.inventory().await.unwrap().stale.is_some());
    assert_eq!(a.status().breaker, BreakerState::Open);
    // While open: lists answer from the cache without asking the vendor (the breaker's reason,
    // not a timeout), mutations are refused.
    let inv = a.inventory().await.unwrap();
    let stale = inv.stale.expect("stale while open");
    assert!(
        stale.reason.contains("circuit breaker open"),
        "{}",
        stale.reason
    );
    let e = a.start(&Peer::vm_name(0)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    // The other host is unaffected.
    let other = b.inventory().await.expect("healthy host");
    assert!(other.stale.is_none() && other.domains.len() == 2);

    paused.resume();
    // After the open period a probe closes the breaker (polled; the deadline only catches a
    // breaker that never closes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let inv = a.inventory().await.expect("recovered");
        if inv.stale.is_none() {
            break inv;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            inv.stale
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(back.stale.is_none(), "{:?}", back.stale);
    assert_eq!(a.status().breaker, BreakerState::Closed);
    a.destroy(&Peer::vm_name(0))
        .await
        .expect("mutations allowed again");
}

fn peer_http(peer: &Peer) -> reqwest::Client {
    let pem = std::fs::read(&peer.ca_file).expect("the peer's CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("HTTP client")
}

/// Ends every session the peer has issued (they answer NotAuthenticated from now on).
async fn expire_sessions(peer: &Peer) {
    let r = peer_http(peer)
        .post(format!("{}/_peer/expire_sessions", peer.url))
        .send()
        .await
        .expect("expire_sessions");
    assert!(r.status().is_success(), "{r:?}");
}

/// The peer's log of SOAP calls (`method`, `session`, `outcome`, `new_session`), in order.
async fn call_log(peer: &Peer) -> Vec<serde_json::Value> {
    let v: serde_json::Value = peer_http(peer)
        .get(format!("{}/_peer/calls", peer.url))
        .send()
        .await
        .expect("calls")
        .json()
        .await
        .expect("JSON call log");
    v.as_array().cloned().expect("an array")
}

/// After the `n`th expiry in the peer's log: a call carrying the session issued before it
/// was refused NotAuthenticated, exactly one new login followed, and every call after that
/// login carried the new session, including the refused call's retry, and succeeded.
fn assert_renewed(log: &[serde_json::Value], n: usize) {
    let events: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, c)| c["event"] == "expired")
        .map(|(i, _)| i)
        .collect();
    let at = events[n];
    let end = events.get(n + 1).copied().unwrap_or(log.len());
    let old = log[..at]
        .iter()
        .rev()
        .find_map(|c| c["new_session"].as_str())
        .expect("a session issued before the expiry");
    let after = &log[at + 1..end];
    let logins: Vec<usize> = after
        .iter()
        .enumerate()
        .filter(|(_, c)| c["method"] == "Login")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(logins.len(), 1, "exactly one new login: {after:#?}");
    let login = &after[logins[0]];
    assert_eq!(login["outcome"], "success", "{after:#?}");
    let new = login["new_session"].as_str().expect("the new session");
    assert_ne!(new, old, "{after:#?}");
    let refused: Vec<&serde_json::Value> = after[..logins[0]]
        .iter()
        .filter(|c| c["session"] == old && c["outcome"] == "NotAuthenticated")
        .collect();
    assert!(
        !refused.is_empty(),
        "the old session was never refused: {after:#?}"
    );
    let retried = &after[logins[0] + 1..];
    assert!(
        retried
            .iter()
            .any(|c| c["method"] == refused[0]["method"] && c["session"] == new),
        "the refused call was not retried on the new session: {after:#?}"
    );
    for c in retried {
        assert_eq!(c["session"], new, "{after:#?}");
        assert_eq!(c["outcome"], "success", "{after:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_replaced_by_a_new_login() {
    let peer = tokio::task::spawn_blocking(|| start_peer(2)).await.unwrap();
    let d = driver(&peer);
    assert_eq!(d.list().await.unwrap().len(), 2);
    expire_sessions(&peer).await;
    assert_eq!(d.list().await.unwrap().len(), 2, "list after expiry");
    assert_renewed(&call_log(&peer).await, 0);
    expire_sessions(&peer).await;
    d.destroy(&Peer::vm_name(0))
        .await
        .expect("a task after expiry");
    assert_renewed(&call_log(&peer).await, 1);
    assert_eq!(
        d.get(&Peer::vm_name(0)).await.unwrap().summary.state,
        DomainState::Shutoff
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_configured_ca_only() {
    let peer = tokio::task::spawn_blocking(|| start_peer(1)).await.unwrap();
    // The system's roots do not know the peer's test CA: refused before any login.
    let mut c = config(&peer, &peer.password);
    c.tls.ca_file = None;
    let e = VsphereDriver::new(&c)
        .expect("driver")
        .list()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
    assert!(
        call_log(&peer).await.is_empty(),
        "a call got through an unverified connection"
    );
    assert_eq!(driver(&peer).list().await.unwrap().len(), 1);
}
