//! One task per running QEMU: turns its QMP events and its exit into state changes and
//! domain events, honours on_poweroff / on_crash, and cleans up after it.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use novacron_domain::model::LifecycleAction;
use novacron_domain::DomainState;
use novacron_qmp::commands::{Cont, QueryStatus, Quit, SystemReset};
use novacron_qmp::qapi::RunState;
use novacron_qmp::{Event, EventKind as QmpEvent, Notification, Subscription};
use tokio::process::Child;

use super::domain::{DomainHandle, Intent, Live, Run, UpState};
use super::events::{EventKind, StateReason};
use super::{Inner, Service};
use crate::qemu::procinfo;

pub(super) fn spawn(
    inner: Arc<Inner>,
    h: Arc<DomainHandle>,
    live: Arc<Live>,
    child: Option<Child>,
    events: Option<Subscription>,
) {
    inner.attach_console(&h.name, &live);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            inner,
            h,
            live,
            panicked: false,
            powered_off: false,
        };
        let detail = watcher.until_exit(child, events).await;
        // From here the pid may be reused: nobody may signal it any more.
        watcher.live.mark_exited();
        watcher.finish(detail).await;
    });
}

struct Watcher {
    inner: Arc<Inner>,
    h: Arc<DomainHandle>,
    live: Arc<Live>,
    panicked: bool,
    /// The guest powered off (SHUTDOWN seen): QEMU's STOP that follows is not a pause, and
    /// the RESUME after a reboot's reset is not a resume.
    powered_off: bool,
}

impl Watcher {
    /// Runs until the QEMU process is gone; returns how it ended.
    async fn until_exit(
        &mut self,
        mut child: Option<Child>,
        mut events: Option<Subscription>,
    ) -> String {
        loop {
            tokio::select! {
                status = wait_child(&mut child), if child.is_some() => {
                    return match status {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("exited (wait failed: {e})"),
                    };
                }
                n = next(&mut events), if events.is_some() => match n {
                    Some(Notification::Event(e)) => self.on_event(&e).await,
                    Some(Notification::Lagged(_)) => self.resync().await,
                    Some(Notification::Disconnected(_)) | None => {
                        // QMP ends when QEMU dies: our own child reports its status above;
                        // an adopted one is watched through /proc.
                        events = None;
                        if child.is_none() {
                            return wait_gone(self.live.pid, self.live.record.start_time, Duration::from_millis(5)).await;
                        }
                    }
                },
                // No QMP connection to tell us (a reconnect that failed): poll /proc.
                _ = tokio::time::sleep(Duration::from_millis(500)), if child.is_none() && events.is_none() => {
                    if !procinfo::is_same_alive(self.live.pid, self.live.record.start_time) {
                        return "exited (not our child: status unknown)".to_owned();
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, event: &Event) {
        let events = &self.inner.events;
        match &event.kind {
            // Only running <-> paused: a STOP while shutting down (QEMU pausing after the guest
            // powered off) is not a pause.
            QmpEvent::Stop if self.powered_off => {}
            QmpEvent::Stop if self.h.state() == DomainState::Running => {
                self.h
                    .set_up_state(events, UpState::Paused, StateReason::Paused);
            }
            QmpEvent::Resume if self.powered_off => self.powered_off = false,
            QmpEvent::Resume if self.h.state() == DomainState::Paused => {
                self.h
                    .set_up_state(events, UpState::Running, StateReason::Resumed);
            }
            QmpEvent::Reset { .. } => {
                events.publish(&self.h.name, EventKind::Reset);
            }
            QmpEvent::Shutdown { .. } => self.on_shutdown().await,
            QmpEvent::GuestPanicked { .. } => self.on_panic().await,
            _ => {}
        }
    }

    /// QEMU runs with -no-shutdown: after a guest power-off it waits for us to decide.
    async fn on_shutdown(&mut self) {
        self.powered_off = true;
        // A reboot request restarts (unless it is so old the guest ignored it, and this
        // power-off is the guest's own); so does a power-off the guest chose itself when the
        // definition says on_poweroff=restart. A shutdown the operator asked for shuts down.
        let window = self.inner.config.shutdown_timeout();
        let own_choice =
            || self.definition_action(|c| c.on_poweroff) == Some(LifecycleAction::Restart);
        let restart = match self.live.intent() {
            Intent::Reboot(since) if since.elapsed() <= window => true,
            Intent::Reboot(_) | Intent::None => own_choice(),
            Intent::Shutdown | Intent::Destroy | Intent::Migrated => false,
        };
        match self.live.intent() {
            Intent::Destroy | Intent::Migrated => return,
            _ if restart => {
                self.live.set_intent(Intent::None);
                if let Ok(qmp) = self.live.qmp(&self.h.name) {
                    let reset = qmp.execute(&SystemReset).await;
                    let cont = qmp.execute(&Cont).await;
                    if let Err(e) = reset.and(cont) {
                        tracing::warn!(domain = %self.h.name, error = %e, "reboot failed");
                    }
                }
                return;
            }
            Intent::None | Intent::Reboot(_) => self.live.set_intent(Intent::Shutdown),
            Intent::Shutdown => {}
        }
        if let Ok(qmp) = self.live.qmp(&self.h.name) {
            if let Err(e) = qmp.execute(&Quit).await {
                tracing::debug!(domain = %self.h.name, error = %e, "quit after guest power-off");
            }
        }
    }

    async fn on_panic(&mut self) {
        let action = self
            .definition_action(|c| c.on_crash)
            .unwrap_or(LifecycleAction::Destroy);
        self.inner.events.publish(
            &self.h.name,
            EventKind::GuestPanicked {
                action: action.as_str().to_owned(),
            },
        );
        if action != LifecycleAction::Preserve {
            self.panicked = true;
            let _ = self.live.signal(Signal::SIGKILL);
        }
    }

    fn definition_action(
        &self,
        pick: impl Fn(&novacron_domain::DomainConfig) -> Option<LifecycleAction>,
    ) -> Option<LifecycleAction> {
        pick(&self.live.record.config)
    }

    /// After lost events, ask QEMU where it is.
    async fn resync(&mut self) {
        let Ok(qmp) = self.live.qmp(&self.h.name) else {
            return;
        };
        if let Ok(status) = qmp.execute(&QueryStatus).await {
            let state = if status.running {
                UpState::Running
            } else {
                UpState::Paused
            };
            if status.status == RunState::Shutdown {
                self.on_shutdown().await;
            } else if matches!(self.h.state(), DomainState::Running | DomainState::Paused) {
                self.h
                    .set_up_state(&self.inner.events, state, StateReason::Resumed);
            }
        }
    }

    /// The process is gone: clean up and record how it ended.
    async fn finish(self, detail: String) {
        let inner = &self.inner;
        let name = self.h.name.clone();
        super::host_resources::release(inner, &self.live.record.held).await;
        super::displays::release(inner, &name, &self.live.record.display_ports);
        // virtiofsd exits when QEMU disconnects; one that does not is stopped here.
        super::virtiofsd::stop(&self.live.record.virtiofsd).await;
        remove_runtime_files(inner, &name).await;
        let (to, reason) = match self.live.intent() {
            Intent::Destroy => (Run::Off, StateReason::Destroyed),
            Intent::Migrated => (Run::Off, StateReason::MigratedAway),
            Intent::Shutdown => (Run::Off, StateReason::GuestShutdown),
            Intent::None | Intent::Reboot(_) if self.panicked => (
                Run::Crashed("guest panicked".into()),
                StateReason::GuestPanicked,
            ),
            Intent::None | Intent::Reboot(_) => {
                (Run::Crashed(detail.clone()), StateReason::QemuDied(detail))
            }
        };
        // A transient guest's autoselected-firmware NVRAM goes with it, as on undefine; before
        // the transition, which is what a stop waits for, and while the name is still taken.
        if !self.h.definition().persistent {
            if let Err(e) =
                crate::persist::atomic::remove_durable_async(inner.paths.nvram(&name)).await
            {
                tracing::warn!(domain = %name, error = %e, "cannot remove the NVRAM");
            }
        }
        if let Err(e) = self.h.transition(&inner.events, to, reason) {
            tracing::error!(domain = %name, error = %e, "cannot record the end of QEMU");
        }
        if !self.h.definition().persistent {
            inner.remove_if_same(&name, &self.h);
            inner.events.publish(&name, EventKind::Undefined);
            return;
        }
        let restart = self.panicked
            && self.definition_action(|c| c.on_crash) == Some(LifecycleAction::Restart);
        if restart {
            let service = Service {
                inner: inner.clone(),
            };
            // The daemon's own start (no face asked): audited and counted here, as the
            // executor does for the faces' operations.
            tokio::spawn(async move {
                let began = std::time::Instant::now();
                let result = service.start(&name).await;
                super::metrics::record_operation(
                    "start",
                    result.as_ref().map(drop),
                    began.elapsed(),
                );
                service.inner.audit.record("start", &name, &result);
                if let Err(e) = result {
                    tracing::error!(domain = %name, error = %e, "restart after crash failed");
                }
            });
        }
    }
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn next(events: &mut Option<Subscription>) -> Option<Notification> {
    match events {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Polls until `pid` is gone, starting fast (QMP just closed, so exit is imminent) and backing
/// off. A process that lives on is never killed: it is only reported.
async fn wait_gone(pid: u32, start_time: u64, first: Duration) -> String {
    let mut pause = first;
    let mut waited = Duration::ZERO;
    let mut reported = false;
    while procinfo::is_same_alive(pid, start_time) {
        tokio::time::sleep(pause).await;
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(500));
        if waited > Duration::from_secs(10) && !reported {
            tracing::error!(pid, "QEMU closed its monitor but is still running");
            reported = true;
        }
    }
    "exited (not our child: status unknown)".to_owned()
}

/// Removes what a running guest had under the run directory (record, QMP socket, guest dir)
/// and its memory directory, whose files would otherwise hold the guest's RAM on disk.
pub(super) async fn remove_runtime_files(inner: &Arc<Inner>, name: &str) {
    super::placement::leave_cgroup(inner, name).await;
    if let Err(e) = inner.records.remove(name).await {
        tracing::warn!(domain = name, error = %e, "cannot remove the runtime record");
    }
    let socket = inner.paths.qmp_socket(name);
    let dir = inner.paths.guest_dir(name);
    let tls = inner.paths.migration_tls_dir(name);
    let memory = inner.paths.memory_dir(name);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(tls);
        if let Some(memory) = memory {
            let _ = std::fs::remove_dir_all(memory);
        }
    })
    .await;
}
