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
    // Once the suspend holds the slot, a second call gets busy naming it (the deadline only
    // catches a hang; the job wait is 2 s).
    let err = busy_behind(&svc, "one").await;
    let msg = err.to_string();
    assert!(msg.contains("suspend") && msg.contains("one"), "{msg}");
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    stuck.await.unwrap().unwrap();
    assert_eq!(svc.get("one").unwrap().summary.state, DomainState::Paused);
    svc.destroy("one").await.unwrap();
}

/// Retries `resume` on a running domain until it answers busy: from then on another job
/// (the one the caller spawned) holds the slot. Before that, resume finds the domain running.
async fn busy_behind(svc: &novacrond::Service, name: &str) -> novacron_domain::Error {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let call = tokio::time::timeout(Duration::from_secs(60), svc.resume(name));
        let err = call
            .await
            .expect("resume hung past its job wait")
            .unwrap_err();
        match err.code() {
            ErrorCode::Busy => return err,
            ErrorCode::WrongState => assert!(Instant::now() < deadline, "never busy: {err}"),
            _ => panic!("{err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // The suspend holds the slot and waits for the stopped QEMU from here on.
    busy_behind(&svc, "hung").await;

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
    // Ordering, not a stopwatch: all of that finished while the stopped QEMU's call still
    // waits (its QMP timeout is far longer), so none of it queued behind that call.
    println!("100 list+get and 4 operations beside a stopped QEMU: {took:?}");
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

/// The four mutations of the hundred, with what each does from each state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Suspend,
    Resume,
    Destroy,
    Start,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Suspend => "suspend",
            Op::Resume => "resume",
            Op::Destroy => "destroy",
            Op::Start => "start",
        }
    }

    /// The model: the state after the operation, or `None` when the operation must be refused
    /// with `WrongState` naming that operation and the state it found.
    fn from(self, state: DomainState) -> Option<DomainState> {
        use DomainState::*;
        match (self, state) {
            (Op::Suspend, Running) => Some(Paused),
            (Op::Resume, Paused) => Some(Running),
            (Op::Destroy, Running | Paused) => Some(Shutoff),
            (Op::Start, Shutoff) => Some(Running),
            _ => None,
        }
    }

    async fn run(self, svc: &novacrond::Service, name: &str) -> Result<(), novacron_domain::Error> {
        match self {
            Op::Suspend => svc.suspend(name).await,
            Op::Resume => svc.resume(name).await,
            Op::Destroy => svc.destroy(name).await,
            Op::Start => svc.start(name).await,
        }
    }
}

/// What one operation answered: `Ok`, or the state and operation a `WrongState` named. Any
/// other error (busy included: the job wait is far longer than the test) fails the test.
type Outcome = Result<(), (DomainState, &'static str)>;

/// Whether some serial order of `done` (operations on one domain hold its job slot one at a
/// time, so they ran in some order) explains every answer from `Running`, ending in `end`.
fn explained(done: &[(Op, Outcome)], state: DomainState, end: DomainState) -> bool {
    if done.is_empty() {
        return state == end;
    }
    (0..done.len()).any(|i| {
        let (op, outcome) = done[i];
        let fits = match (op.from(state), outcome) {
            (Some(next), Ok(())) => Some(next),
            (None, Err((found, named))) if found == state && named == op.name() => Some(state),
            _ => None,
        };
        fits.is_some_and(|next| {
            let mut rest = done.to_vec();
            let _ = rest.remove(i);
            explained(&rest, next, end)
        })
    })
}

#[tokio::test]
async fn a_hundred_concurrent_operations_over_twenty_guests() {
    let mut env = Env::new();
    // Five operations queue for each domain's job slot; none may time out into `busy`.
    env.config.job_wait_secs = 300;
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
    // 100 mutations, five per guest from one of four scripts, all launched at once and
    // interleaved across guests; each script mixes operations its states allow and refuse.
    use Op::*;
    let scripts = [
        [Suspend, Resume, Suspend, Destroy, Start],
        [Resume, Suspend, Suspend, Resume, Destroy],
        [Destroy, Start, Start, Suspend, Resume],
        [Suspend, Destroy, Resume, Start, Suspend],
    ];
    let started = Instant::now();
    let mut ops = Vec::new();
    // Step k of every guest's script, then step k+1: interleaved across guests.
    for (step, g) in (0..5).flat_map(|step| (0..20).map(move |g| (step, g))) {
        let op = scripts[g % 4][step];
        let (svc, name) = (svc.clone(), names[g].clone());
        ops.push((
            g,
            op,
            tokio::spawn(async move { op.run(&svc, &name).await }),
        ));
    }
    assert_eq!(ops.len(), 100);
    let mut done: Vec<Vec<(Op, Outcome)>> = vec![Vec::new(); 20];
    for (g, op, task) in ops {
        let outcome = match task.await.unwrap() {
            Ok(()) => Ok(()),
            Err(novacron_domain::Error::WrongState {
                name,
                state,
                operation,
            }) => {
                assert_eq!(name, names[g]);
                Err((state, operation))
            }
            Err(e) => panic!("{} on {}: unexpected {e}", op.name(), names[g]),
        };
        done[g].push((op, outcome));
    }
    println!(
        "100 concurrent mutations over 20 guests: {:?}",
        started.elapsed()
    );

    for (g, name) in names.iter().enumerate() {
        let end = svc.get(name).unwrap().summary.state;
        assert!(
            explained(&done[g], DomainState::Running, end),
            "{name}: no order of {:?} from running ends {end}",
            done[g]
        );
        // The daemon's view against QEMU's own: a live guest's query-status, or no QEMU.
        match end {
            DomainState::Running | DomainState::Paused => {
                let status = svc
                    .qmp_passthrough(name, "query-status", None)
                    .await
                    .unwrap();
                let want = if end == DomainState::Running {
                    "running"
                } else {
                    "paused"
                };
                assert_eq!(
                    status["status"], want,
                    "{name}: daemon {end}, QEMU {status}"
                );
                assert_eq!(status["running"], end == DomainState::Running, "{status}");
            }
            DomainState::Shutoff => {
                assert!(!env.record(name).exists(), "{name}: shut off with a record");
                let err = svc
                    .qmp_passthrough(name, "query-status", None)
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("while it is shutoff"), "{err}");
            }
            other => panic!("{name}: ended {other}"),
        }
    }
    let stops: Vec<_> = names
        .iter()
        .map(|n| {
            let (svc, n) = (svc.clone(), n.clone());
            tokio::spawn(async move {
                match svc.destroy(&n).await {
                    Err(novacron_domain::Error::WrongState { .. }) => Ok(()),
                    other => other,
                }
            })
        })
        .collect();
    for s in stops {
        s.await.unwrap().unwrap();
    }
    assert!(svc.list().iter().all(|d| d.state == DomainState::Shutoff));
}
