//! Remote power-state changes as events on the one bus, so a remote guest's start or stop shows
//! up in the HTTP event stream and on D-Bus like a local one.
//!
//! Changes are seen when anyone lists a host or acts on a domain, and by a background poll
//! every `remote.poll_secs`. The first sighting of a host sets the baseline silently.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use novacron_domain::{DomainState, DomainSummary};

use crate::service::events::EventKind;
use crate::service::Inner;

/// Last seen state per host, per domain name.
#[derive(Default)]
pub(crate) struct Known(Mutex<HashMap<String, BTreeMap<String, DomainState>>>);

/// A full listing of `host`: every change since the last one becomes an event.
pub(crate) fn observe(inner: &Inner, host: &str, domains: &[DomainSummary]) {
    let mut known = inner.remote_known.0.lock().unwrap_or_else(PoisonError::into_inner);
    let now: BTreeMap<String, DomainState> = domains
        .iter()
        .map(|d| (d.name.clone(), d.state))
        .collect();
    let Some(before) = known.insert(host.to_owned(), now.clone()) else {
        return;
    };
    for (name, to) in &now {
        let from = before.get(name).copied();
        if from != Some(*to) {
            publish(inner, host, name, from, Some(*to));
        }
    }
    for (name, from) in &before {
        if !now.contains_key(name) {
            publish(inner, host, name, Some(*from), None);
        }
    }
}

/// One domain's state, after an action on it.
pub(crate) fn observe_one(inner: &Inner, host: &str, summary: &DomainSummary) {
    let mut known = inner.remote_known.0.lock().unwrap_or_else(PoisonError::into_inner);
    let states = known.entry(host.to_owned()).or_default();
    let from = states.insert(summary.name.clone(), summary.state);
    if from != Some(summary.state) {
        publish(inner, host, &summary.name, from, Some(summary.state));
    }
}

fn publish(
    inner: &Inner,
    host: &str,
    name: &str,
    from: Option<DomainState>,
    to: Option<DomainState>,
) {
    inner.events.publish(
        name,
        EventKind::RemoteStateChanged {
            host: host.to_owned(),
            from,
            to,
        },
    );
}

/// Polls every host each `every`, one task per host so a slow host delays only itself. Ends
/// when the service is gone.
pub(crate) fn spawn(inner: Weak<Inner>, every: Duration) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(strong) = inner.upgrade() else { return };
            for host in strong.remote.all() {
                let name = host.name().to_owned();
                if running.get(&name).is_some_and(|t| !t.is_finished()) {
                    continue; // Still waiting on the last poll of this host.
                }
                let weak = inner.clone();
                running.insert(
                    name.clone(),
                    tokio::spawn(async move {
                        if let Ok(inventory) = host.inventory().await {
                            if inventory.stale.is_none() {
                                if let Some(inner) = weak.upgrade() {
                                    observe(&inner, &name, &inventory.domains);
                                }
                            }
                        }
                    }),
                );
            }
            drop(strong);
        }
    });
}
