//! Jobs and isolation: one domain's trouble never slows down another.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use novacron_domain::{DomainState, ErrorCode};

#[tokio::test]
async fn two_mutating_calls_on_one_domain() {
    let env = Env::new();
    let svc = env.open().await;
    svc.define(osless("one")).await.unwrap();
    // Two starts at once: exactly one starts the guest; the other waits for the job, then finds
    // the domain already running.
    let (a, b) = tokio::join!(svc.start("one"), svc.start("one"));
    let errors: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code(), ErrorCode::WrongState);

    // A job that cannot finish (its QEMU is stopped) holds the slot; a second call gets a
    // clear busy error after the configured wait instead of hanging.
    let pid = recorded_pid(&env, "one");
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let stuck = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.suspend("one").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = svc.resume("one").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Busy, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("suspend") && msg.contains("one"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(4));
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    stuck.await.unwrap().unwrap();
    assert_eq!(svc.get("one").unwrap().summary.state, DomainState::Paused);
    svc.destroy("one").await.unwrap();
}

#[tokio::test]
async fn a_stopped_qemu_does_not_slow_listing_or_other_guests() {
    let env = Env::new();
    let svc = env.open().await;
    for name in ["hung", "ok1", "ok2"] {
        svc.define(osless(name)).await.unwrap();
        svc.start(name).await.unwrap();
    }
    let pid = recorded_pid(&env, "hung");
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let blocked = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.suspend("hung").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(svc.list().len(), 3);
        assert_eq!(svc.get("hung").unwrap().summary.state, DomainState::Running);
    }
    for name in ["ok1", "ok2"] {
        svc.suspend(name).await.unwrap();
        svc.resume(name).await.unwrap();
    }
    let took = started.elapsed();
    println!("100 list+get and 4 operations beside a stopped QEMU: {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(
        !blocked.is_finished(),
        "the stopped QEMU's call should still be waiting"
    );

    // Destroy works on the stopped QEMU (SIGTERM stays pending; SIGKILL does it).
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    let _ = blocked.await.unwrap();
    for name in ["hung", "ok1", "ok2"] {
        svc.destroy(name).await.unwrap();
    }
}

#[tokio::test]
async fn destroy_kills_a_stopped_qemu() {
    let env = Env::new();
    let svc = env.open().await;
    svc.define(osless("frozen")).await.unwrap();
    svc.start("frozen").await.unwrap();
    let pid = recorded_pid(&env, "frozen");
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    svc.destroy("frozen").await.unwrap();
    assert!(!pid_alive(pid));
    assert_eq!(
        svc.get("frozen").unwrap().summary.state,
        DomainState::Shutoff
    );
}

#[tokio::test]
async fn a_hundred_concurrent_operations_over_twenty_guests() {
    let env = Env::new();
    let svc = env.open().await;
    let names: Vec<String> = (0..20).map(|i| format!("g{i:02}")).collect();
    for name in &names {
        svc.define(osless(name)).await.unwrap();
    }
    // Start all twenty at once.
    let starts: Vec<_> = names
        .iter()
        .map(|n| {
            let (svc, n) = (svc.clone(), n.clone());
            tokio::spawn(async move { svc.start(&n).await })
        })
        .collect();
    for s in starts {
        s.await.unwrap().unwrap();
    }
    // 100 operations: each guest gets suspend+resume and three queries, interleaved.
    let started = Instant::now();
    let ops: Vec<_> = (0..100)
        .map(|i| {
            let svc = svc.clone();
            let name = names[i % 20].clone();
            tokio::spawn(async move {
                match i / 20 {
                    0 => svc.suspend(&name).await.map(drop),
                    1 => svc.get(&name).map(drop),
                    2 => {
                        assert_eq!(svc.list().len(), 20);
                        Ok(())
                    }
                    3 => svc.get(&name).map(drop),
                    _ => svc.resume(&name).await.map(drop),
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for op in ops {
        if let Err(e) = op.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    println!(
        "100 concurrent operations over 20 guests: {:?}",
        started.elapsed()
    );
    // A resume may run before its suspend (they race by design): that one answers WrongState.
    assert!(
        failures.iter().all(|f| f.contains("cannot resume")),
        "{failures:?}"
    );
    for name in &names {
        let state = svc.get(name).unwrap().summary.state;
        assert!(
            matches!(state, DomainState::Running | DomainState::Paused),
            "{name}: {state}"
        );
    }
    let stops: Vec<_> = names
        .iter()
        .map(|n| {
            let (svc, n) = (svc.clone(), n.clone());
            tokio::spawn(async move { svc.destroy(&n).await })
        })
        .collect();
    for s in stops {
        s.await.unwrap().unwrap();
    }
    assert!(svc.list().iter().all(|d| d.state == DomainState::Shutoff));
}
