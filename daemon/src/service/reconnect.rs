//! What a starting daemon does first: take back the guests a previous daemon left running.
//! Each runtime record is checked against the live process (pid, start time, boot id, command
//! line) before it is trusted; a guest that cannot be reconnected is reported and left alone.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use novacron_domain::{DomainState, ValidatedDomain};
use novacron_qmp::commands::{Cont, QueryStatus, Quit};
use novacron_qmp::qapi::RunState;
use novacron_qmp::{Client, Subscription};

use super::domain::{Definition, DomainHandle, Intent, Live, Monitor, Run, UpState};
use super::events::{EventKind, StateReason};
use super::{supervise, Inner};
use crate::persist::records::IncomingPhase;
use crate::persist::{Problem, RuntimeRecord};
use crate::qemu::procinfo::{self, Liveness};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A guest found alive.
struct Adopted {
    live: Arc<Live>,
    state: UpState,
    events: Option<Subscription>,
    /// Pinned threads whose affinity was found changed and put back (or why not).
    drift: Result<Vec<super::placement::Drift>, String>,
    /// What the recorded live device set (vCPUs, memory devices) had wrong against QEMU
    /// (corrected in the record), or why it could not be checked.
    devices_drift: Result<Vec<String>, String>,
}

pub(super) async fn recover(inner: &Arc<Inner>) {
    // Definitions load while the guests are being reconnected: neither waits for the other.
    let loading = {
        let inner = inner.clone();
        tokio::spawn(async move { inner.definitions.load_all_async().await })
    };
    let (records, mut problems) = inner.records.load_all_async().await;
    // Starts a previous daemon left unfinished give back what they took, before any start.
    super::host_resources::recover_journals(inner, &records).await;

    // Verify and reconnect every record at once: a hung QEMU costs its own timeout only.
    let boot_id = procinfo::boot_id().unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for record in records {
        let boot_id = boot_id.clone();
        tasks.spawn(async move {
            let check = record.clone();
            let liveness = tokio::task::spawn_blocking(move || {
                procinfo::verify(check.pid, check.start_time, &boot_id, &check.argv)
            })
            .await
            .unwrap_or_else(|e| Liveness::Unsure(e.to_string()));
            let adopted = match liveness {
                // A QEMU still waiting for (or loading) a migration never ran the guest here:
                // the source has it. Kept, an operator's resume would run it on both hosts.
                Liveness::Same if never_taken_over(&record) => {
                    kill_incoming(&record).await;
                    None
                }
                Liveness::Same => Some(adopt(record.clone()).await),
                Liveness::Gone | Liveness::Reused(_) | Liveness::Unsure(_) => None,
            };
            (record, liveness, adopted)
        });
    }

    let (definitions, def_problems) = loading.await.unwrap_or_default();
    problems.extend(def_problems);
    let mut by_name: BTreeMap<String, (Definition, Run, Option<Adopted>)> = definitions
        .into_iter()
        .map(|(d, trust)| {
            let name = d.name.clone();
            let definition = Definition {
                config: Arc::new(d),
                persistent: true,
                trust,
            };
            (name, (definition, Run::Off, None))
        })
        .collect();
    let mut vanished = Vec::new();
    let mut discarded = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((record, liveness, adopted)) = joined else {
            continue;
        };
        let name = record.name.clone();
        if let Some(mark) = &record.incoming {
            let ended = match (&adopted, &liveness) {
                (Some(_), _) => Some(super::migration::IncomingState::Finished),
                (None, Liveness::Unsure(_)) => None,
                // Gone after the take-over: what became of the guest is not known here.
                (None, _) if mark.phase != IncomingPhase::Prepared => None,
                (None, _) => Some(super::migration::IncomingState::Aborted),
            };
            if let Some(state) = ended {
                inner
                    .migrations
                    .remember_incoming(super::migration::IncomingView {
                        id: mark.id.clone(),
                        domain: name.clone(),
                        state,
                        detail: Some("settled by a daemon restart".into()),
                        resumed_at_us: None,
                    });
            }
            if ended == Some(super::migration::IncomingState::Aborted) {
                tracing::warn!(domain = %name, id = %mark.id, "incoming migration interrupted by a daemon restart discarded");
                discarded.push((name, record.held, record.virtiofsd));
                continue;
            }
        }
        match adopted {
            Some(adopted) => {
                // Its QEMU listens on them: never handed out again while it runs.
                inner.display_ports.adopt(&name, &record.display_ports);
                warn_if_logging_into_the_audit_log(inner, &record);
                let definition = match by_name.remove(&name) {
                    Some((definition, _, _)) => definition,
                    None => match record.config.clone().validate() {
                        Ok(v) => transient(v),
                        Err(e) => {
                            // Still never killed: reported, and left running unmanaged.
                            problems.push(Problem {
                                path: inner.paths.record(&name),
                                reason: format!(
                                    "guest is running (pid {}) but its recorded config is no longer valid: {e}",
                                    record.pid
                                ),
                            });
                            continue;
                        }
                    },
                };
                let run = Run::Up {
                    live: adopted.live.clone(),
                    state: adopted.state,
                };
                by_name.insert(name, (definition, run, Some(adopted)));
            }
            None => match liveness {
                // It may still be our guest: keep its record (a start refuses while it
                // exists), report it, and never touch the process.
                Liveness::Unsure(why) => {
                    inner.display_ports.adopt(&name, &record.display_ports);
                    problems.push(Problem {
                        path: inner.paths.record(&name),
                        reason: format!(
                        "cannot tell whether pid {} is still this guest ({why}); the record is \
                         kept and the domain will not start until it is removed",
                        record.pid
                    ),
                    });
                }
                _ => {
                    tracing::info!(domain = %name, pid = record.pid, ?liveness, "guest stopped while the daemon was down");
                    vanished.push((name, record.held, record.virtiofsd));
                }
            },
        }
    }

    {
        let mut domains = inner
            .domains
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, (definition, run, _)) in &by_name {
            inner.events.uuids.remember(name, definition.config.uuid);
            domains.insert(
                name.clone(),
                Arc::new(DomainHandle::new(definition.clone(), run.clone())),
            );
        }
    }
    for (name, held, virtiofsd) in discarded {
        super::virtiofsd::stop(&virtiofsd).await;
        super::host_resources::release(inner, &held).await;
        supervise::remove_runtime_files(inner, &name).await;
    }
    for (name, held, virtiofsd) in vanished {
        // Its QEMU is gone: the virtiofsd serving it has nobody to serve.
        super::virtiofsd::stop(&virtiofsd).await;
        // What the previous daemon took for the guest is given back now.
        super::host_resources::release(inner, &held).await;
        supervise::remove_runtime_files(inner, &name).await;
        inner.events.publish(
            &name,
            EventKind::StateChanged {
                from: DomainState::Running,
                to: DomainState::Shutoff,
                reason: StateReason::ExitedWhileDaemonDown,
            },
        );
    }
    for (name, (_, _, adopted)) in by_name {
        let Some(adopted) = adopted else { continue };
        let Ok(h) = inner.handle(&name) else { continue };
        let pid = adopted.live.pid;
        if adopted.live.record.incoming.is_some() {
            // An interrupted take-over is complete now (`Finished` in the adopted record).
            if let Err(e) = inner.records.save(&adopted.live.record).await {
                tracing::warn!(domain = %name, error = %e, "cannot update the runtime record");
            }
        }
        match &adopted.live.monitor {
            Monitor::Connected(_) => {
                inner.events.publish(&name, EventKind::Reconnected { pid });
                match adopted.drift {
                    Ok(drifted) if drifted.is_empty() => {}
                    Ok(drifted) => {
                        tracing::warn!(domain = %name, pid, ?drifted, "pinned threads had drifted; restored");
                        inner
                            .events
                            .publish(&name, EventKind::PinsRestored { drifted });
                    }
                    Err(error) => {
                        tracing::warn!(domain = %name, pid, %error, "cannot check the pins of a reconnected guest");
                    }
                }
                match &adopted.devices_drift {
                    Ok(drifted) if drifted.is_empty() => {}
                    Ok(drifted) => {
                        tracing::warn!(domain = %name, pid, ?drifted, "the live device set had drifted; record corrected");
                        if let Err(e) = inner.records.save(&adopted.live.record_now()).await {
                            tracing::warn!(domain = %name, error = %e, "cannot update the runtime record");
                        }
                        inner.events.publish(
                            &name,
                            EventKind::LiveDevicesDrifted {
                                drifted: drifted.clone(),
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(domain = %name, pid, %error, "cannot check the live device set of a reconnected guest");
                    }
                }
            }
            Monitor::Lost(error) => {
                tracing::error!(domain = %name, pid, %error, "guest is running but its monitor cannot be reached; leaving it alone");
                inner.events.publish(
                    &name,
                    EventKind::ReconnectFailed {
                        pid,
                        error: error.clone(),
                    },
                );
            }
        }
        supervise::spawn(inner.clone(), h, adopted.live, None, adopted.events);
    }
    for p in &problems {
        tracing::warn!(problem = %p, "skipped");
    }
    inner
        .problems
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(problems);
}

fn transient(config: ValidatedDomain) -> Definition {
    Definition {
        config: Arc::new(config),
        persistent: false,
        // Running unmanaged from a record: its next start (if any) is held to the roots.
        trust: super::trust::Trust::Restricted,
    }
}

/// A QEMU started for an incoming migration that was never resumed here.
fn never_taken_over(record: &RuntimeRecord) -> bool {
    record
        .incoming
        .as_ref()
        .is_some_and(|m| m.phase == IncomingPhase::Prepared)
}

/// Kills a verified incoming QEMU the previous daemon left, and waits until it is gone.
async fn kill_incoming(record: &RuntimeRecord) {
    let (pid, start) = (record.pid, record.start_time);
    if let Err(e) = crate::qemu::spawn::signal(pid, nix::sys::signal::Signal::SIGKILL) {
        tracing::error!(domain = %record.name, pid, error = %e, "cannot kill an abandoned incoming QEMU");
    }
    for _ in 0..100 {
        if !procinfo::is_same_alive(pid, start) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(domain = %record.name, pid, "an abandoned incoming QEMU did not exit");
}

/// Reconnects to a verified QEMU and asks it where it is.
async fn adopt(mut record: RuntimeRecord) -> Adopted {
    let pid = record.pid;
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&record.qmp_socket)).await;
    let client = match connected {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return lost(record, e.to_string()),
        Err(_) => {
            return lost(
                record,
                format!("no QMP greeting within {CONNECT_TIMEOUT:?}"),
            )
        }
    };
    let events = client.subscribe();
    let status = match client.execute(&QueryStatus).await {
        Ok(status) => status,
        Err(e) => return lost(record, e.to_string()),
    };
    // The record holds the pins in force (live changes included): put back what drifted.
    let drift = super::placement::restore_drifted(&client, pid, &record.config).await;
    // The live device set is checked against QEMU; the record is corrected where it differs.
    let devices_drift = super::live_resources::verify::verify(&client, &mut record).await;
    let taking_over = match &mut record.incoming {
        Some(mark) if mark.phase == IncomingPhase::TakingOver => {
            mark.phase = IncomingPhase::Finished;
            true
        }
        _ => false,
    };
    let live = Arc::new(Live::new(pid, record, Monitor::Connected(client.clone())));
    let state = match status.status {
        RunState::Running => UpState::Running,
        // The previous daemon decided the take-over of a migrated guest (the source was or
        // will be told "finished") and died around `cont`: the guest runs here.
        RunState::Paused if taking_over => match client.execute(&Cont).await {
            Ok(_) => UpState::Running,
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot finish an interrupted migration take-over");
                UpState::Paused
            }
        },
        // The previous daemon died between writing the record and `cont`: the start it was
        // asked for is finished here, with what that daemon sent before `cont` and may not
        // have (the start balloon: setting the same target again is a no-op).
        RunState::Prelaunch => match finish_start(&client, &live).await {
            Ok(_) => UpState::Running,
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot finish an interrupted start");
                UpState::Paused
            }
        },
        RunState::Shutdown => {
            // The guest powered off while nobody was watching: finish what the SHUTDOWN event
            // would have started.
            live.set_intent(Intent::Shutdown);
            let _ = client.execute(&Quit).await;
            UpState::Paused
        }
        _ => UpState::Paused,
    };
    Adopted {
        live,
        state,
        events: Some(events),
        drift,
        devices_drift,
    }
}

/// What a start does between the record and the guest's first instruction that the guest
/// would miss for good (a balloon target set later reaches a driver that already loaded, but
/// `<currentMemory>` is what the guest must start with), then `cont`.
async fn finish_start(client: &Client, live: &Live) -> Result<(), String> {
    let record = &live.record;
    if record.incoming.is_none() {
        super::live_resources::apply_balloon_at_start(client, &record.name, &record.config)
            .await
            .map_err(|e| e.to_string())?;
    }
    client
        .execute(&Cont)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn lost(record: RuntimeRecord, error: String) -> Adopted {
    Adopted {
        live: Arc::new(Live::new(record.pid, record, Monitor::Lost(error))),
        state: UpState::Running,
        events: None,
        drift: Ok(Vec::new()),
        devices_drift: Ok(Vec::new()),
    }
}

/// A guest named `audit` started by a daemon from before `<log_dir>/qemu/` has its QEMU output
/// going into the audit log. It keeps that file open, so only a restart of the guest moves it;
/// until then its output is interleaved there (appended, never capped: see the log capper).
fn warn_if_logging_into_the_audit_log(inner: &Inner, record: &RuntimeRecord) {
    if record.qemu_log.is_none()
        && crate::qemu::logs::same_file(
            &inner.paths.legacy_qemu_log(&record.name),
            inner.audit.path(),
        )
    {
        tracing::warn!(
            domain = %record.name,
            audit_log = %inner.audit.path().display(),
            "this guest was started by an older daemon and writes its QEMU output into the \
             audit log; it is never capped there; restart the guest to move its log to {}",
            inner.paths.qemu_log(&record.name).display()
        );
    }
}
