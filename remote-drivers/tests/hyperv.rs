//! The Hyper-V adapter against the WinRM test peer (`tests/peers/hyperv/`): a Python process,
//! NOT Windows or Hyper-V. It authenticates with pyspnego's real NTLM acceptor and WinRM
//! message encryption (HTTP) or Basic over TLS (HTTPS), runs the WS-Man shell flow, and
//! interprets the adapter's scripts as Windows PowerShell 5.1 would (a subset: see
//! `tests/peers/hyperv/pwsh.py`), refusing what it does not implement. Every scenario runs over
//! both transports.
//!
//! Run: `cargo test -p novacron-remote-drivers --test hyperv`

use std::time::{Duration, Instant};

use novacron_domain::{DomainConfig, DomainState, Driver, Error, ErrorCode, MigrationTarget};
use novacron_remote_drivers::breaker::{BreakerOptions, BreakerState};
use novacron_remote_drivers::config::Timeouts;
use novacron_remote_drivers::hyperv::HypervDriver;
use novacron_remote_drivers::{
    discover, Credentials, DriverKind, HostConfig, RemoteHost, Secret, TlsOptions,
};
use novacron_tests::peers::winrm::{self as peer, Mode, Options, Peer};
use serde_json::Value;

/// Plain VMs: vm-000..vm-007; vm-001 and vm-005 run.
const VMS: usize = 8;

async fn start_peer(mode: Mode, fixtures: bool) -> Peer {
    tokio::task::spawn_blocking(move || {
        peer::start_with(&Options {
            vm_count: VMS,
            mode,
            fixtures,
        })
    })
    .await
    .unwrap()
    .expect("start the WinRM test peer")
}

fn config(p: &Peer, password: &str) -> HostConfig {
    let mut c = HostConfig::new(
        "hv-test",
        DriverKind::Hyperv,
        url::Url::parse(&p.url).unwrap(),
        Credentials::Password {
            user: p.user.clone(),
            password: Secret::new(password),
        },
    );
    c.tls = TlsOptions {
        verify: true,
        ca_file: p.ca_file.clone(),
    };
    c
}

fn domain(name: &str, mib: u64, vcpus: u32) -> novacron_domain::ValidatedDomain {
    let xml = format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>{mib}</memory>\
         <vcpu>{vcpus}</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    );
    DomainConfig::from_xml(&xml).unwrap().validate().unwrap()
}

async fn state(d: &HypervDriver, name: &str) -> DomainState {
    d.get(name).await.unwrap().summary.state
}

/// The vendor fault name and text of an error, asserting it is one.
fn vendor(e: &Error) -> (&str, &str) {
    match e {
        Error::Vendor { fault, message, .. } => (fault, message),
        other => panic!("expected a vendor fault, got {other:?}"),
    }
}

async fn lifecycle_suite(p: &Peer) {
    let d = HypervDriver::new(&config(p, &p.password)).unwrap();

    // Listing: numeric PS 5.1 states mapped, ids as uuids, fixtures included.
    let list = d.list().await.unwrap();
    assert_eq!(list.len(), VMS + 3, "{list:?}");
    let by = |n: &str| list.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by("vm-000").state, DomainState::Shutoff);
    assert_eq!(by("vm-001").state, DomainState::Running);
    assert_eq!(by("vm-000").uuid.as_ref().map(String::len), Some(36));

    let info = d.get("vm-000").await.unwrap();
    assert_eq!(info.config.name, "vm-000");
    assert_eq!(info.config.memory.memory_kib, 2 * 1024 * 1024);
    assert_eq!(info.config.vcpu.count, 2);
    assert_eq!(
        info.config.uuid.map(|u| u.to_string()),
        by("vm-000").uuid,
        "get's config carries the VM id"
    );

    // Each lifecycle call and the state it leads to.
    d.start("vm-000").await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Running);
    d.start("vm-000").await.unwrap(); // Hyper-V only warns: already in that state
    d.suspend("vm-000").await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Paused);
    d.resume("vm-000").await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Running);
    d.save("vm-000").await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Suspended);
    d.resume("vm-000").await.unwrap(); // Start-VM restores a saved VM
    assert_eq!(state(&d, "vm-000").await, DomainState::Running);
    d.reboot("vm-000").await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Running);
    d.shutdown("vm-000", Duration::from_secs(5)).await.unwrap();
    assert_eq!(state(&d, "vm-000").await, DomainState::Shutoff);
    d.destroy("vm-001").await.unwrap();
    assert_eq!(state(&d, "vm-001").await, DomainState::Shutoff);

    // Wrong state: Hyper-V's own fault text survives, classified WrongState.
    for e in [
        d.suspend("vm-000").await.unwrap_err(),
        d.resume("vm-000").await.unwrap_err(),
        d.reboot("vm-000").await.unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
        let (fault, message) = vendor(&e);
        assert_eq!(fault, "VirtualizationException");
        assert!(
            message.contains("'vm-000' failed to change state")
                && message.contains("in its current state")
                && message.contains("InvalidState,Microsoft.HyperV.PowerShell.Commands."),
            "{message}"
        );
    }

    // Unknown VMs, by name and by id.
    for name in ["no-such-vm", "id:00000000-0000-4000-8000-000000000000"] {
        let e = d.get(name).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
        assert!(vendor(&e).1.contains("unable to find"), "{e}");
        assert_eq!(d.start(name).await.unwrap_err().code(), ErrorCode::NotFound);
    }
    assert_eq!(
        d.get("id:junk").await.unwrap_err().code(),
        ErrorCode::InvalidConfig
    );

    // Duplicate names are refused with their ids; id:<guid> addresses one.
    let dups: Vec<String> = list
        .iter()
        .filter(|s| s.name == "dup")
        .filter_map(|s| s.uuid.clone())
        .collect();
    assert_eq!(dups.len(), 2);
    for e in [
        d.get("dup").await.unwrap_err(),
        d.start("dup").await.unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
        let text = e.to_string();
        assert!(dups.iter().all(|id| text.contains(id.as_str())), "{text}");
    }
    let one = format!("id:{}", dups[0]);
    d.start(&one).await.unwrap();
    assert_eq!(state(&d, &one).await, DomainState::Running);
    d.destroy(&one).await.unwrap();

    // Define, redefine, undefine (PowerShell quoting of names is unit-tested; our names have no quotes).
    let name = "new-vm";
    let s = d.define(domain(name, 1024, 2)).await.unwrap();
    assert_eq!((s.name.as_str(), s.state), (name, DomainState::Shutoff));
    let got = d.get(name).await.unwrap().config;
    assert_eq!((got.memory.memory_kib, got.vcpu.count), (1024 * 1024, 2));
    d.define(domain(name, 2048, 4)).await.unwrap();
    let got = d.get(name).await.unwrap().config;
    assert_eq!((got.memory.memory_kib, got.vcpu.count), (2048 * 1024, 4));
    d.start(name).await.unwrap();
    let e = d.define(domain(name, 1024, 1)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    let e = d.undefine(name).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongState, "{e}");
    assert!(vendor(&e).1.contains("turn it off first"), "{e}");
    d.destroy(name).await.unwrap();
    d.undefine(name).await.unwrap();
    assert_eq!(d.get(name).await.unwrap_err().code(), ErrorCode::NotFound);
    let e = d.define(domain("odd", 3, 1)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");

    // A guest slow to shut down: Timeout, still stopping, then off on its own.
    let e = d
        .shutdown("slow-shutdown", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert_eq!(state(&d, "slow-shutdown").await, DomainState::ShuttingDown);
    let begin = Instant::now();
    while state(&d, "slow-shutdown").await != DomainState::Shutoff {
        assert!(begin.elapsed() < Duration::from_secs(8));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A command outliving one HTTP exchange: Receive answers "nothing yet" (w:TimedOut)
    // before the 1 s request limit, and the adapter asks again until the VM is off.
    let mut quick = config(p, &p.password);
    quick.timeouts.request = Duration::from_secs(1);
    let q = HypervDriver::new(&quick).unwrap();
    q.start("slow-shutdown").await.unwrap();
    q.shutdown("slow-shutdown", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(state(&q, "slow-shutdown").await, DomainState::Shutoff);

    // Migration is refused honestly.
    let target = MigrationTarget {
        uri: "hyperv2".into(),
        live: true,
        timeout: None,
    };
    let e = d.migrate("vm-000", &target).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);

    let caps = d.capabilities().await.unwrap();
    assert_eq!(caps.driver, "hyperv");
    assert!(caps.define && caps.suspend && caps.reboot && !caps.migrate);
    assert_eq!(caps.details["version"], "10.0.20348.0");

    // The service forgets its NTLM contexts (as a restart would): the next call on a pooled
    // connection gets 401, and the adapter logs in again once, transparently.
    if p.ca_file.is_none() {
        let before = ntlm_log(p);
        let old: Vec<&Value> = before
            .iter()
            .filter(|c| c["phase"] == "authenticate" && c["outcome"] == "success")
            .map(|c| &c["context"])
            .collect();
        assert!(!old.is_empty(), "{before:#?}");
        signal(p.pid, nix::sys::signal::Signal::SIGUSR1);
        // The service notes it has forgotten (polled: a signal is delivered asynchronously).
        let deadline = Instant::now() + Duration::from_secs(20);
        let at = loop {
            let log = ntlm_log(p);
            if let Some(i) = log.iter().position(|c| c["event"] == "forgotten") {
                break i;
            }
            assert!(Instant::now() < deadline, "SIGUSR1 not handled: {log:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(d.list().await.unwrap().len(), VMS + 3);
        // What the service saw: the next message on the old context refused (401), one new
        // logon, then every message on the new context accepted; the old one never again.
        let log = ntlm_log(p);
        let after = &log[at + 1..];
        let [refused, negotiate, logon, retried, ..] = after else {
            panic!("expected a refusal, a new logon and a retry: {after:#?}");
        };
        assert_eq!(refused["phase"], "message", "{after:#?}");
        assert!(old.contains(&&refused["context"]), "{after:#?}");
        assert_eq!(refused["outcome"], "401", "{after:#?}");
        assert_eq!(negotiate["phase"], "negotiate", "{after:#?}");
        assert_eq!(logon["phase"], "authenticate", "{after:#?}");
        assert_eq!(logon["outcome"], "success", "{after:#?}");
        let new = &logon["context"];
        assert!(!old.contains(&new), "a fresh context: {after:#?}");
        assert_eq!(negotiate["context"], *new, "{after:#?}");
        assert_eq!(retried["phase"], "message", "{after:#?}");
        assert_eq!(retried["context"], *new, "{after:#?}");
        assert_eq!(retried["outcome"], "success", "{after:#?}");
        let logons = after
            .iter()
            .filter(|c| c["phase"] == "authenticate")
            .count();
        assert_eq!(logons, 1, "one new logon: {after:#?}");
        for c in &after[4..] {
            assert_eq!(c["context"], *new, "{after:#?}");
            assert_eq!(c["outcome"], "success", "{after:#?}");
        }
        let text = std::fs::read_to_string(p.log_path()).unwrap();
        assert!(text.contains("forgetting NTLM contexts"), "{text}");
    }

    // Bad credentials: the fault is named, the password never appears.
    let wrong = "Wr0ng-Secret-Value";
    let bad = HypervDriver::new(&config(p, wrong)).unwrap();
    let e = bad.list().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Remote, "{e}");
    assert_eq!(vendor(&e).0, "Unauthorized");
    assert!(e.to_string().contains("401"), "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(
            !text.contains(wrong) && !text.contains(&p.password),
            "{text}"
        );
    }
}

#[tokio::test]
async fn every_call_over_http_with_ntlm_message_encryption() {
    let p = start_peer(Mode::NtlmHttp, true).await;
    lifecycle_suite(&p).await;
}

#[tokio::test]
async fn every_call_over_https_with_basic() {
    let p = start_peer(Mode::BasicHttps, true).await;
    lifecycle_suite(&p).await;
}

#[tokio::test]
async fn basic_over_plain_http_is_refused_before_sending_anything() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = HostConfig::new(
        "hv-clear",
        DriverKind::Hyperv,
        url::Url::parse(&format!("http://127.0.0.1:{port}/?auth=basic")).unwrap(),
        Credentials::Password {
            user: "admin".into(),
            password: Secret::new("Sup3r-Secret"),
        },
    );
    c.timeouts.connect = Duration::from_millis(500);
    let e = HypervDriver::new(&c).err().expect("refused");
    assert_eq!(e.code(), ErrorCode::InvalidConfig);
    assert!(
        e.to_string().contains("Basic") && !e.to_string().contains("Sup3r"),
        "{e}"
    );
    // Through the host wrapper too: the same refusal, not a later connection failure.
    let e = RemoteHost::connect(c).err().expect("refused");
    assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
    assert!(e.to_string().contains("Basic"), "{e}");
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing may have connected"
    );
}

/// The peer's NTLM log (see `Peer::ntlm_log_path`).
fn ntlm_log(p: &Peer) -> Vec<Value> {
    let text = std::fs::read_to_string(p.ntlm_log_path()).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

#[tokio::test]
async fn a_hanging_host_opens_its_breaker_and_serves_stale_while_others_answer() {
    let (hanging, healthy) = tokio::join!(
        start_peer(Mode::NtlmHttp, false),
        start_peer(Mode::BasicHttps, false)
    );
    let short = |p: &Peer| {
        let mut c = config(p, &p.password);
        c.timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
            read: Duration::from_secs(2),
            operation: Duration::from_secs(5),
        };
        c.breaker = BreakerOptions {
            failure_threshold: 2,
            open_for: Duration::from_secs(1),
        };
        c
    };
    let a = RemoteHost::connect(short(&hanging)).unwrap();
    let b = RemoteHost::connect(short(&healthy)).unwrap();
    let fresh = a.inventory().await.unwrap();
    assert!(fresh.stale.is_none());
    assert_eq!(fresh.domains.len(), VMS);

    let paused = novacron_tests::peers::pause(hanging.pid).unwrap();
    let begin = Instant::now();
    let inv = a.inventory().await.unwrap();
    assert!(
        begin.elapsed() < Duration::from_secs(4),
        "{:?}",
        begin.elapsed()
    );
    let stale = inv.stale.expect("the last inventory, marked stale");
    assert!(!stale.reason.is_empty());
    assert_eq!(inv.domains, fresh.domains);
    // One failed read is one failure (its retries included); the second opens the breaker.
    assert!(a.inventory().await.unwrap().stale.is_some());
    assert_eq!(
        a.status().breaker,
        BreakerState::Open,
        "{:?} {:?}",
        a.status(),
        stale
    );

    // Open: answered at once from the cache; mutations refused.
    let begin = Instant::now();
    assert!(a.inventory().await.unwrap().stale.is_some());
    let e = a.start("vm-000").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    // No request reaches the host; what remains is RemoteHost's read-retry backoff (0.5 s).
    assert!(
        begin.elapsed() < Duration::from_secs(1),
        "{:?}",
        begin.elapsed()
    );

    // Meanwhile the healthy host answers promptly.
    let begin = Instant::now();
    let other = b.inventory().await.unwrap();
    assert!(other.stale.is_none());
    assert!(
        begin.elapsed() < Duration::from_secs(1),
        "{:?}",
        begin.elapsed()
    );

    // It comes back: after open_for, the probe closes the breaker and lists fresh.
    paused.resume();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = a.inventory().await.unwrap();
    assert!(back.stale.is_none(), "{back:?}");
    assert_eq!(a.status().breaker, BreakerState::Closed);
    a.start("vm-000").await.unwrap();

    // Discovery finds WinRM at both peers with the version Identify reports, without
    // credentials, and no other vendor claims them.
    for p in [&hanging, &healthy] {
        let tls = TlsOptions {
            verify: true,
            ca_file: p.ca_file.clone(),
        };
        let found = discover::discover(&p.url, &tls, Duration::from_secs(3)).await;
        let hv: Vec<_> = found
            .found
            .iter()
            .filter(|f| f.driver == DriverKind::Hyperv)
            .collect();
        assert_eq!(hv.len(), 1, "{found:?}");
        assert_eq!(
            hv[0].version.as_deref(),
            Some("OS: 10.0.20348 SP: 0.0 Stack: 3.0")
        );
        assert!(
            found.found.iter().all(|f| f.driver == DriverKind::Hyperv),
            "another vendor claimed the WinRM peer: {found:?}"
        );
    }
}

/// The shells open on the peer, as WS-Enumeration over the shell resource lists them (Basic
/// over HTTPS only: what an operator's `Get-WSManInstance -Enumerate` would do).
async fn open_shells(p: &Peer) -> usize {
    use base64::Engine as _;
    let pem = std::fs::read(p.ca_file.as_ref().expect("an HTTPS peer")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", p.user, p.password));
    let envelope = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" \
         xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"><s:Header>\
         <a:To>{}wsman</a:To><a:MessageID>uuid:1</a:MessageID>\
         <w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell</w:ResourceURI>\
         <a:Action>http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate</a:Action>\
         </s:Header><s:Body><n:Enumerate xmlns:n=\"http://schemas.xmlsoap.org/ws/2004/09/enumeration\">\
         <w:OptimizeEnumeration/></n:Enumerate></s:Body></s:Envelope>",
        p.url
    );
    let r = http
        .post(format!("{}wsman", p.url))
        .header("Content-Type", "application/soap+xml;charset=UTF-8")
        .header("Authorization", format!("Basic {basic}"))
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("EnumerateResponse"), "{body}");
    body.matches("<rsp:ShellId>").count()
}

/// Waits (briefly) until the peer has no shell open.
async fn no_shells_left(p: &Peer) {
    let begin = Instant::now();
    loop {
        let n = open_shells(p).await;
        if n == 0 {
            return;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(3),
            "{n} shells left open on the host"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_call_cut_off_leaves_no_shell_on_the_host() {
    let p = start_peer(Mode::BasicHttps, true).await;
    let d = HypervDriver::new(&config(&p, &p.password)).unwrap();
    assert_eq!(d.list().await.unwrap().len(), VMS + 3);
    assert_eq!(
        open_shells(&p).await,
        0,
        "a finished call deletes its shell"
    );

    // Stop-VM of this guest takes 4 s on the peer; the host allows 1 s per operation. The
    // adapter's own deadline comes first: its time-out, command terminated, shell deleted.
    let mut c = config(&p, &p.password);
    c.timeouts.operation = Duration::from_secs(2);
    let host = RemoteHost::connect(c).unwrap();
    let begin = Instant::now();
    let e = host
        .shutdown("slow-shutdown", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { operation: "shutdown", after } if after < Duration::from_secs(2)),
        "{e:?}"
    );
    assert!(
        begin.elapsed() < Duration::from_secs(2),
        "{:?}",
        begin.elapsed()
    );
    no_shells_left(&p).await;

    // The caller drops the call mid-command: the shell is still closed (from a spawned task).
    let begin = Instant::now();
    while state(&d, "slow-shutdown").await != DomainState::Shutoff {
        assert!(begin.elapsed() < Duration::from_secs(8));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.start("slow-shutdown").await.unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        d.shutdown("slow-shutdown", Duration::from_secs(30)),
    )
    .await;
    assert!(
        cut.is_err(),
        "the shutdown should still be running: {cut:?}"
    );
    no_shells_left(&p).await;
    // (Reads run through the same shell code; the peer answers them too fast to cut one
    // off mid-command deterministically.)
}

#[tokio::test]
async fn define_with_disks_or_nics_is_refused() {
    let p = start_peer(Mode::BasicHttps, false).await;
    let d = HypervDriver::new(&config(&p, &p.password)).unwrap();
    let with = |devices: &str| {
        let xml = format!(
            "<domain type='kvm'><name>with-devices</name><memory unit='MiB'>512</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>\
             <devices>{devices}</devices></domain>"
        );
        DomainConfig::from_xml(&xml).unwrap().validate().unwrap()
    };
    let disk = "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                <source file='/tmp/x.img'/><target dev='vda' bus='virtio'/></disk>";
    let nic = "<interface type='network'><source network='default'/></interface>";
    for (devices, field) in [(disk, "devices.disks"), (nic, "devices.interfaces")] {
        let e = d.define(with(devices)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidConfig, "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    // Nothing was created.
    assert_eq!(
        d.get("with-devices").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    d.define(with("")).await.unwrap();
    d.undefine("with-devices").await.unwrap();
}
