//! Value types, lifecycle states, error codes and the Driver trait's honest defaults.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use novacron_domain::model::ids::{to_kib, ParseValueError};
use novacron_domain::model::{IdSet, MacAddr, Uuid};
use novacron_domain::*;

#[test]
fn id_sets_parse_libvirt_syntax_and_print_canonically() {
    let s: IdSet = "0-3,^2,8, 9".parse().expect("set");
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 3, 8, 9]);
    assert_eq!(s.to_string(), "0-1,3,8-9");
    // Each refusal says what is wrong, and with which part of the text.
    let not_a_set = |s: &str| format!("'{s}' is not an id set (e.g. 0-3,^2,8)");
    for (bad, why) in [
        ("", not_a_set("")),
        ("a", not_a_set("a")),
        ("3-1", "range 3-1 in '3-1' is reversed".to_owned()),
        (
            "0-99999",
            "id 99999 in '0-99999' exceeds the maximum 16383".to_owned(),
        ),
        ("^1", "id set '^1' is empty".to_owned()),
        ("1,,2", not_a_set("1,,2")),
        ("-1", not_a_set("-1")),
    ] {
        let err = bad.parse::<IdSet>().expect_err(bad);
        assert_eq!(err, ParseValueError(why), "{bad:?}");
    }
}

#[test]
fn uuids_and_macs() {
    let u: Uuid = "7D3F5A2E9C1B4E8AA6F23B5C9D1E4F70".parse().expect("uuid");
    assert_eq!(u.to_string(), "7d3f5a2e-9c1b-4e8a-a6f2-3b5c9d1e4f70");
    assert_eq!(u, u.to_string().parse().expect("uuid"));
    for bad in [
        "",
        "7d3f5a2e",
        "zz3f5a2e-9c1b-4e8a-a6f2-3b5c9d1e4f70",
        "7d3f5a2e-9c1b-4e8a-a6f2-3b5c9d1e4f70-00",
    ] {
        let err = bad.parse::<Uuid>().expect_err(bad);
        assert_eq!(err, ParseValueError(format!("'{bad}' is not a UUID")));
    }
    let m: MacAddr = "52:54:00:AB:cd:01".parse().expect("mac");
    assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
    assert!(!m.is_multicast());
    for bad in [
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:01:02",
        "5254.00ab.cd01",
        "52:54:00:ab:cd:1",
        "g2:54:00:ab:cd:01",
    ] {
        let err = bad.parse::<MacAddr>().expect_err(bad);
        assert_eq!(
            err,
            ParseValueError(format!(
                "'{bad}' is not a MAC address (expected xx:xx:xx:xx:xx:xx)"
            ))
        );
    }
}

#[test]
fn memory_units() {
    assert_eq!(to_kib(1, "GiB"), Ok(1 << 20));
    assert_eq!(to_kib(1, "G"), Ok(1 << 20));
    assert_eq!(to_kib(1, "GB"), Ok(976_563)); // 1e9 bytes, rounded up to whole KiB
    assert_eq!(to_kib(1025, "b"), Ok(2));
    assert_eq!(to_kib(7, "KiB"), Ok(7));
    let err = |m: &str| Err(ParseValueError(m.to_owned()));
    assert_eq!(to_kib(1, "furlongs"), err("unknown memory unit 'furlongs'"));
    assert_eq!(
        to_kib(u64::MAX, "TiB"),
        err(&format!("{} TiB overflows", u64::MAX))
    );
    assert_eq!(to_kib(16, "EiB"), err("16 EiB overflows"));
}

#[test]
fn lifecycle_graph() {
    use DomainState::*;
    let ok = [
        (Shutoff, Starting),
        (Starting, Running),
        (Running, Paused),
        (Paused, Running),
        (Running, ShuttingDown),
        (ShuttingDown, Shutoff),
        (Running, Migrating),
        (Migrating, Shutoff),
        (Migrating, Running),
        (Running, Crashed),
        (Paused, Crashed),
        (Migrating, Crashed),
        (Starting, Crashed),
        (Running, Suspended),
        (Suspended, Running),
        (Suspended, Shutoff),
    ];
    for (a, b) in ok {
        assert!(a.can_transition_to(b), "{a} -> {b}");
    }
    for (a, b) in [
        (Shutoff, Running),
        (Shutoff, Crashed),
        (Paused, Starting),
        (Crashed, Running),
        (Shutoff, Paused),
    ] {
        assert!(!a.can_transition_to(b), "{a} -> {b} must be illegal");
    }
    for s in DomainState::ALL {
        assert_eq!(s.as_str().parse::<DomainState>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            format!("\"{}\"", s.as_str())
        );
    }
}

#[test]
fn error_codes_are_stable() {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "not_found",
            "already_exists",
            "invalid_config",
            "wrong_state",
            "busy",
            "unsupported",
            "timeout",
            "internal",
            "remote",
            "unavailable",
            "forbidden"
        ]
    );
    // A vendor fault travels under the code it was classified into, keeping its own name.
    let vendor = Error::Vendor {
        host: "vc1".into(),
        code: ErrorCode::WrongState,
        fault: "InvalidPowerState".into(),
        message: "powered off".into(),
    };
    assert_eq!(vendor.code(), ErrorCode::WrongState);
    assert_eq!(
        vendor.to_string(),
        "remote host 'vc1': InvalidPowerState: powered off"
    );
    let e = Error::WrongState {
        name: "vm".into(),
        state: DomainState::Paused,
        operation: "start",
    };
    assert_eq!(e.code(), ErrorCode::WrongState);
    assert_eq!(e.dbus_name(), "org.novacron1.Error.WrongState");
    assert_eq!(e.to_string(), "cannot start domain 'vm' while it is paused");
    let xml_err: Error = DomainConfig::from_xml("<x/>").expect_err("bad").into();
    assert_eq!(xml_err.code(), ErrorCode::InvalidConfig);
    for c in ErrorCode::ALL {
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            format!("\"{}\"", c.as_str())
        );
    }
}

struct Minimal;

#[async_trait::async_trait]
impl Driver for Minimal {
    fn name(&self) -> &str {
        "minimal"
    }
    async fn capabilities(&self) -> Result<Capabilities, Error> {
        Ok(Capabilities {
            driver: "minimal".into(),
            ..Default::default()
        })
    }
    async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        Ok(vec![])
    }
    async fn get(&self, name: &str) -> Result<DomainInfo, Error> {
        Err(Error::not_found(Kind::Domain, name))
    }
    async fn define(&self, _config: ValidatedDomain) -> Result<DomainSummary, Error> {
        Err(self.unsupported("define"))
    }
    async fn undefine(&self, name: &str) -> Result<(), Error> {
        Err(Error::not_found(Kind::Domain, name))
    }
    async fn start(&self, name: &str) -> Result<(), Error> {
        Err(Error::not_found(Kind::Domain, name))
    }
    async fn shutdown(&self, _name: &str, timeout: Duration) -> Result<(), Error> {
        Err(Error::Timeout {
            operation: "shutdown",
            after: timeout,
        })
    }
    async fn destroy(&self, name: &str) -> Result<(), Error> {
        Err(Error::not_found(Kind::Domain, name))
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn driver_defaults_answer_unsupported() {
    let d: Box<dyn Driver> = Box::new(Minimal);
    for r in [
        block_on(d.suspend("vm")),
        block_on(d.resume("vm")),
        block_on(d.reboot("vm")),
        block_on(d.migrate(
            "vm",
            &MigrationTarget {
                uri: "tcp:peer:4444".into(),
                live: true,
                timeout: None,
            },
        )),
    ] {
        let e = r.expect_err("unsupported");
        assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
        assert!(e.to_string().contains("driver 'minimal'"));
    }
    let e = block_on(d.shutdown("vm", Duration::from_secs(30))).expect_err("timeout");
    assert_eq!(e.to_string(), "shutdown timed out after 30s");
}
