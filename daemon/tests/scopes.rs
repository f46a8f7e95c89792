//! Each QEMU in its own transient scope, via systemd's D-Bus API. systemd cannot run in this
//! container, so a stand-in `org.freedesktop.systemd1.Manager` on a private bus answers
//! `StartTransientUnit` with the signature systemd publishes: (s name, s mode, a(sv)
//! properties, a(sa(sv)) aux) -> o job.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use novacron_domain::DomainState;
use novacrond::config::{ScopeConfig, ScopeMode};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

#[derive(Debug, Clone)]
struct Call {
    unit: String,
    mode: String,
    pids: Vec<u32>,
    slice: String,
}

struct FakeSystemd {
    calls: Arc<Mutex<Vec<Call>>>,
    refuse: bool,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedValue)>,
        _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        if self.refuse {
            return Err(zbus::fdo::Error::AccessDenied(
                "scopes are not for you".into(),
            ));
        }
        let props: HashMap<String, OwnedValue> = properties.into_iter().collect();
        let pids = props
            .get("PIDs")
            .and_then(|v| Vec::<u32>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        let slice = props
            .get("Slice")
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        self.calls.lock().unwrap().push(Call {
            unit: name,
            mode,
            pids,
            slice,
        });
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap())
    }
}

async fn manager(address: &str, refuse: bool) -> (zbus::Connection, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let conn = zbus::connection::Builder::address(address)
        .unwrap()
        .serve_at(
            "/org/freedesktop/systemd1",
            FakeSystemd {
                calls: calls.clone(),
                refuse,
            },
        )
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .build()
        .await
        .unwrap();
    (conn, calls)
}

fn scoped_env(address: &str) -> Env {
    let mut env = Env::new();
    env.config.scopes = ScopeConfig {
        mode: ScopeMode::On,
        bus_address: Some(address.to_owned()),
    };
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_qemu_is_moved_into_its_own_scope() {
    let dir = tempfile::tempdir().unwrap();
    let bus = common::bus::PrivateBus::start(dir.path());
    let (_systemd, calls) = manager(&bus.address, false).await;
    let env = scoped_env(&bus.address);
    let svc = env.open().await;
    svc.define(osless("web-1")).await.unwrap();
    svc.start("web-1").await.unwrap();
    let pid = recorded_pid(&env, "web-1");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].unit, format!("novacron-web-1-{pid}.scope"));
    assert_eq!(calls[0].mode, "fail");
    assert_eq!(
        calls[0].pids,
        vec![pid],
        "the scope must hold the guest's QEMU"
    );
    assert_eq!(calls[0].slice, "machine.slice");
    svc.destroy("web-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scope_fails_the_start_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = common::bus::PrivateBus::start(dir.path());
    let (_systemd, _) = manager(&bus.address, true).await;
    let env = scoped_env(&bus.address);
    let svc = env.open().await;
    svc.define(osless("noscope")).await.unwrap();
    let err = svc.start("noscope").await.unwrap_err().to_string();
    assert!(err.contains("refused the scope novacron-noscope-"), "{err}");
    assert_eq!(
        svc.get("noscope").unwrap().summary.state,
        DomainState::Shutoff
    );
    assert!(!env.record("noscope").exists());
    let left = std::process::Command::new("pgrep")
        .args(["-f", "guest=noscope,"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "a QEMU was left running: {left:?}");
}
