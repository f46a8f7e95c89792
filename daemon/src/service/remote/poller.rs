//! Remote power-state changes as events on the one bus, so a remote guest's start or stop shows
//! up in the HTTP event stream and on D-Bus like a local one.
//!
//! Changes are seen when anyone lists a host or acts on a domain, and by a background poll
//! every `remote.poll_secs`. The first sighting of a host sets the baseline silently.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use novacron_domain::{DomainState, DomainSummary};

use crate::service::events::EventKind;
use crate::service::Inner;

/// A state and when the vendor was asked for it.
#[derive(Clone, Copy)]
struct Seen {
    state: DomainState,
    asked_at: Instant,
}

/// Last seen state per host, per domain name.
#[derive(Default)]
pub(crate) struct Known(Mutex<HashMap<String, BTreeMap<String, Seen>>>);

/// A full listing of `host`, asked for at `asked_at`: every change since the last sighting
/// becomes an event. A listing older than a domain's last sighting (a poll that raced an
/// action) says nothing about that domain.
pub(crate) fn observe(inner: &Inner, host: &str, domains: &[DomainSummary], asked_at: Instant) {
    let mut known = inner
        .remote_known
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let first = !known.contains_key(host);
    let states = known.entry(host.to_owned()).or_default();
    let mut listed = std::collections::BTreeSet::new();
    for d in domains {
        listed.insert(d.name.as_str());
        let before = states.get(&d.name).copied();
        if before.is_some_and(|b| b.asked_at > asked_at) {
            continue;
        }
        states.insert(
            d.name.clone(),
            Seen {
                state: d.state,
                asked_at,
            },
        );
        let from = before.map(|b| b.state);
        if !first && from != Some(d.state) {
            publish(inner, host, &d.name, from, Some(d.state));
        }
    }
    let gone: Vec<(String, DomainState)> = states
        .iter()
        .filter(|(name, seen)| !listed.contains(name.as_str()) && seen.asked_at <= asked_at)
        .map(|(name, seen)| (name.clone(), seen.state))
        .collect();
    for (name, from) in gone {
        states.remove(&name);
        publish(inner, host, &name, Some(from), None);
    }
}

/// One domain's state, asked for at `asked_at` (after an action on it).
pub(crate) fn observe_one(inner: &Inner, host: &str, summary: &DomainSummary, asked_at: Instant) {
    let mut known = inner
        .remote_known
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Before the host's first full listing there is no baseline to compare with; that
    // listing will set one (and announce nothing).
    let Some(states) = known.get_mut(host) else {
        return;
    };
    let before = states.get(&summary.name).copied();
    if before.is_some_and(|b| b.asked_at > asked_at) {
        return;
    }
    states.insert(
        summary.name.clone(),
        Seen {
            state: summary.state,
            asked_at,
        },
    );
    let from = before.map(|b| b.state);
    if from != Some(summary.state) {
        publish(inner, host, &summary.name, from, Some(summary.state));
    }
}

/// Forgets a host (unregistered): a later host of that name starts from a new baseline.
pub(crate) fn forget(inner: &Inner, host: &str) {
    inner
        .remote_known
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(host);
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
            let Some(strong) = inner.upgrade() else {
                return;
            };
            for host in strong.remote.all() {
                let name = host.name().to_owned();
                if running.get(&name).is_some_and(|t| !t.is_finished()) {
                    continue; // Still waiting on the last poll of this host.
                }
                let weak = inner.clone();
                running.insert(
                    name.clone(),
                    tokio::spawn(async move {
                        let asked_at = Instant::now();
                        if let Ok(inventory) = host.inventory().await {
                            if inventory.stale.is_none() {
                                if let Some(inner) = weak.upgrade() {
                                    observe(&inner, &name, &inventory.domains, asked_at);
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
