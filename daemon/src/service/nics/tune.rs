//! `domiftune`: a NIC's bandwidth limits read or changed, live (the running tap's tc class
//! and nftables policer replaced, the change kept in the NIC ledger) and/or in the
//! definition, as virsh domiftune `--live`/`--config`. A rate with average 0 clears that
//! direction, as in virsh.

use novacron_domain::model::{Bandwidth, BandwidthRate, Interface};
use novacron_domain::{Error, FieldError};
use serde::Serialize;

use super::super::jobs::Job;
use super::super::Service;
use super::hotplug::{
    live_nics, load_ledger, parse_mac, resolve_scope, running, save_ledger, Scope,
};
use super::ledger::{LinkKind, Tuned};
use crate::host::net::{nic_rules, qos};

/// What `domiftune` changes: per direction, `None` leaves it, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuneChange {
    pub inbound: Option<Option<BandwidthRate>>,
    pub outbound: Option<Option<BandwidthRate>>,
}

impl TuneChange {
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }

    fn applied(&self, old: Option<&Bandwidth>) -> Option<Bandwidth> {
        let old = old.cloned().unwrap_or_default();
        let bw = Bandwidth {
            inbound: self.inbound.clone().unwrap_or(old.inbound),
            outbound: self.outbound.clone().unwrap_or(old.outbound),
        };
        (bw.inbound.is_some() || bw.outbound.is_some()).then_some(bw)
    }
}

/// A NIC's limits as `domiftune` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicBandwidth {
    pub mac: String,
    /// The daemon's tap, while the guest runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// `live` or `config`: which the figures are.
    pub scope: &'static str,
    pub bandwidth: Bandwidth,
}

fn no_nic(domain: &str, device: &str) -> Error {
    Error::Invalid {
        message: format!(
            "interface: domain '{domain}' has no NIC '{}' (a MAC or the host link's name)",
            device.escape_debug()
        ),
        details: vec![FieldError::new("interface", "no such NIC")],
    }
}

/// Whether `nic` is the one `device` names: its MAC or its (asked or made) link name.
fn names(nic: &Interface, ifname: Option<&str>, device: &str) -> bool {
    let mac = parse_mac(device).ok();
    (mac.is_some() && nic.mac == mac)
        || ifname == Some(device)
        || nic.target_dev.as_deref() == Some(device)
}

/// `nic` with `bandwidth`, validated as part of `config` (ranges, units, tap-only).
fn checked(
    mut config: novacron_domain::DomainConfig,
    nic: &Interface,
    bandwidth: Option<Bandwidth>,
) -> Result<Interface, Error> {
    let mut nic = nic.clone();
    nic.bandwidth = bandwidth;
    config
        .devices
        .interfaces
        .retain(|n| n.mac.is_none() || n.mac != nic.mac);
    config.devices.interfaces.push(nic.clone());
    config.validate()?;
    Ok(nic)
}

/// Installs `new` on the running tap `ifname` (guest MAC `mac`): the outbound policer with
/// the NIC's filter in its table (learned addresses kept), then the inbound class. On a
/// failure the old limits are put back. Blocking.
fn apply_live(
    ifname: &str,
    nic: &Interface,
    old: Option<&Bandwidth>,
    new: Option<&Bandwidth>,
) -> Result<(), String> {
    let mac = nic.mac.map(|m| m.0).unwrap_or_default();
    let ips = nic.filterref.as_ref().map(|f| f.ips.clone());
    let rules = |bw: Option<&Bandwidth>| -> Result<(), String> {
        let outbound = bw.and_then(|b| b.outbound.as_ref());
        nic_rules::replace(&nic_rules::NicRules {
            ifname,
            mac,
            clean_traffic: ips.as_deref(),
            outbound,
        })
        .map_err(|e| e.to_string())
    };
    let outbound_changes =
        old.and_then(|b| b.outbound.as_ref()) != new.and_then(|b| b.outbound.as_ref());
    if outbound_changes {
        rules(new)?;
    }
    if old.and_then(|b| b.inbound.as_ref()) != new.and_then(|b| b.inbound.as_ref()) {
        if let Err(e) = qos::replace(ifname, new) {
            let _ = qos::replace(ifname, old);
            if outbound_changes {
                let _ = rules(old);
            }
            return Err(e.to_string());
        }
    }
    Ok(())
}

impl Service {
    /// `domiftune`: `device` (MAC or host link name) of `name` gets `change` where `scope`
    /// says (neither: live when running, else the definition); an empty change reads. The
    /// limits after the change are returned (live ones when live was asked or implied).
    pub async fn interface_tune(
        &self,
        name: &str,
        device: &str,
        change: TuneChange,
        scope: Scope,
    ) -> Result<NicBandwidth, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let _job = h.begin(Job::Modify, inner.job_wait()).await?;
        let scope = resolve_scope(&h, scope, "domiftune")?;
        // The definition's change is made and checked before anything live changes: a NIC the
        // definition lacks (hot-added live only) or a refused config changes nothing.
        let config_change = if scope.config {
            let mut cfg = h.definition().config.config().clone();
            let Some(i) = cfg
                .devices
                .interfaces
                .iter()
                .position(|n| names(n, None, device))
            else {
                return Err(no_nic(name, device));
            };
            let current = cfg.devices.interfaces[i].bandwidth.clone();
            let new = if change.is_empty() {
                current
            } else {
                let new = change.applied(current.as_ref());
                cfg.devices.interfaces[i].bandwidth = new.clone();
                inner.prepare(cfg.clone(), Some(h.definition()))?;
                new
            };
            Some((cfg, i, new))
        } else {
            None
        };
        let mut answer = None;
        if scope.live {
            let live = running(&h).ok_or_else(|| Error::Internal("guest stopped".into()))?;
            let mut l = load_ledger(inner, name).await?;
            let Some((nic, _device, made)) = live_nics(&live, &l)
                .into_iter()
                .find(|(n, _, m)| names(n, m.as_ref().map(|m| m.ifname.as_str()), device))
            else {
                return Err(no_nic(name, device));
            };
            let Some(made) = made.filter(|m| m.kind == LinkKind::Tap) else {
                return Err(Error::Invalid {
                    message: format!(
                        "interface: NIC '{device}' of '{name}' has no tap on a bridge: bandwidth \
                         limits need one"
                    ),
                    details: vec![FieldError::new("interface", "not a tap on a bridge")],
                });
            };
            let current = match (&made.hotplugged, &made.tuned) {
                (Some(n), _) => n.bandwidth.clone(),
                (None, Some(t)) => t.bandwidth.clone(),
                (None, None) => nic.bandwidth.clone(),
            };
            let mut now = current.clone();
            if !change.is_empty() {
                let new = change.applied(current.as_ref());
                checked(live.config(), &nic, new.clone())?;
                let (ifname, n, old, nw) = (
                    made.ifname.clone(),
                    nic.clone(),
                    current.clone(),
                    new.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    apply_live(&ifname, &n, old.as_ref(), nw.as_ref())
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::Internal(format!("bandwidth of '{}': {e}", made.ifname)))?;
                for m in l.links.iter_mut().filter(|m| m.device == made.device) {
                    match &mut m.hotplugged {
                        Some(hot) => hot.bandwidth = new.clone(),
                        None => {
                            m.tuned = Some(Tuned {
                                bandwidth: new.clone(),
                            })
                        }
                    }
                }
                if let Err(e) = save_ledger(inner, name, &l).await {
                    // Unrecorded limits would be lost at the next adoption: put the old back.
                    let (ifname, n, old, nw) = (
                        made.ifname.clone(),
                        nic.clone(),
                        current.clone(),
                        new.clone(),
                    );
                    let undone = tokio::task::spawn_blocking(move || {
                        apply_live(&ifname, &n, nw.as_ref(), old.as_ref())
                    })
                    .await;
                    if !matches!(undone, Ok(Ok(_))) {
                        tracing::error!(domain = name, "domiftune: cannot put the old limits back");
                    }
                    return Err(e);
                }
                now = new;
            }
            answer = Some(NicBandwidth {
                mac: nic.mac.map(|m| m.to_string()).unwrap_or_default(),
                ifname: Some(made.ifname),
                scope: "live",
                bandwidth: now.unwrap_or_default(),
            });
        }
        if let Some((cfg, i, now)) = config_change {
            if !change.is_empty() {
                // Under the job: nothing defined meanwhile is overwritten by this copy.
                inner.save_definition(&h, cfg.clone()).await?;
            }
            if answer.is_none() {
                answer = Some(NicBandwidth {
                    mac: cfg.devices.interfaces[i]
                        .mac
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    ifname: None,
                    scope: "config",
                    bandwidth: now.unwrap_or_default(),
                });
            }
        }
        answer.ok_or_else(|| Error::Internal("domiftune: no scope".into()))
    }
}
