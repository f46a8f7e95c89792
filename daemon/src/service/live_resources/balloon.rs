//! `setmem` (the balloon target, as virsh: it never plugs memory, it takes it back from the
//! guest up to what it has) and `dommemstat` (QEMU's `query-balloon` and the balloon driver's
//! `guest-stats`, polled at `guest-stats-polling-interval`).

use std::collections::BTreeMap;

use novacron_domain::model::MemballoonModel;
use novacron_domain::Error;
use serde::Serialize;
use serde_json::{json, Value};

use super::super::jobs::Job;
use super::super::Service;
use super::{invalid, qmp_error, resolve, Scope};

/// The smallest balloon target: below it a Linux guest stalls or its OOM killer runs (libvirt
/// has no floor; Proxmox refuses below its own minimum the same way).
pub const MIN_BALLOON_KIB: u64 = 64 * 1024;
/// The balloon device's id on the command line.
const BALLOON: &str = "/machine/peripheral/balloon0";

/// virsh `dommemstat`: KiB values by virsh's names, plus the balloon target.
#[derive(Debug, Clone, Serialize)]
pub struct MemStats {
    /// What the guest has after the balloon (`query-balloon` actual).
    pub actual: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// The guest driver's statistics (`guest-stats`), present once the polling interval is
    /// set and the guest reported: swap_in, swap_out, major_fault, minor_fault, unused,
    /// available, usable, disk_caches, last_update (seconds since the epoch).
    pub stats: BTreeMap<String, u64>,
    /// The polling interval in force (seconds; 0: off).
    pub period: u64,
}

/// virsh's names for QEMU's `stat-*` keys (bytes unless noted).
const STATS: &[(&str, &str, bool)] = &[
    ("stat-swap-in", "swap_in", true),
    ("stat-swap-out", "swap_out", true),
    ("stat-major-faults", "major_fault", false),
    ("stat-minor-faults", "minor_fault", false),
    ("stat-free-memory", "unused", true),
    ("stat-total-memory", "available", true),
    ("stat-available-memory", "usable", true),
    ("stat-disk-caches", "disk_caches", true),
    ("stat-htlb-pgalloc", "hugetlb_pgalloc", false),
    ("stat-htlb-pgfail", "hugetlb_pgfail", false),
];

fn has_balloon(c: &novacron_domain::DomainConfig) -> bool {
    c.devices
        .memballoon
        .as_ref()
        .is_some_and(|b| b.model == MemballoonModel::Virtio)
}

fn no_balloon(name: &str) -> Error {
    invalid(
        "memballoon",
        format!("domain '{name}' has no virtio balloon (<memballoon model='virtio'/>)"),
    )
}

/// `<currentMemory>` below `<memory>` is the balloon target from the start (libvirt sets it
/// before the vCPUs first run): sent while QEMU waits at `-S`, so the guest's driver finds it
/// when it loads. Without a virtio balloon there is nothing to apply it to.
pub(in crate::service) async fn apply_at_start(
    qmp: &novacron_qmp::Client,
    name: &str,
    config: &novacron_domain::DomainConfig,
) -> Result<(), Error> {
    let Some(target) = start_target(config) else {
        return Ok(());
    };
    qmp.execute_raw("balloon", Some(&json!({ "value": target * 1024 })))
        .await
        .map_err(|e| qmp_error(name, "start (balloon to <currentMemory>)", e))?;
    Ok(())
}

/// The balloon target a guest starts with (KiB): `<currentMemory>` when it is below
/// `<memory>` and there is a virtio balloon to apply it.
pub(in crate::service) fn start_target(c: &novacron_domain::DomainConfig) -> Option<u64> {
    c.memory
        .current_kib
        .filter(|&k| k < c.memory.memory_kib && has_balloon(c))
}

impl Service {
    /// `setmem SIZE [--live] [--config]`: the balloon target.
    pub async fn set_mem(&self, name: &str, kib: u64, scope: Scope) -> Result<MemStats, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "change the memory of (--live)")?;
        if kib < MIN_BALLOON_KIB {
            return Err(invalid(
                "size",
                format!("{kib} KiB is below the guest's minimum ({MIN_BALLOON_KIB} KiB)"),
            ));
        }
        let defined = h.definition().config.config().clone();
        if config && kib > defined.memory.memory_kib {
            return Err(invalid(
                "size",
                format!(
                    "{kib} KiB is above the definition's memory ({} KiB): raise <memory> or add \
                     memory devices",
                    defined.memory.memory_kib
                ),
            ));
        }
        if let Some(live) = &live {
            let c = live.config();
            if !has_balloon(&c) {
                return Err(no_balloon(name));
            }
            // What the guest has been given: boot RAM plus every device's request.
            let most = c.boot_memory_kib()
                + c.devices
                    .memory
                    .iter()
                    .map(|m| m.plugged_target_kib())
                    .sum::<u64>();
            if kib > most {
                return Err(invalid(
                    "size",
                    format!(
                        "{kib} KiB is above the guest's memory ({most} KiB): grow it with \
                         update-memory-device or attach memory first (a balloon only takes \
                         memory back)"
                    ),
                ));
            }
            live.qmp(name)?
                .execute_raw("balloon", Some(&json!({ "value": kib * 1024 })))
                .await
                .map_err(|e| qmp_error(name, "setmem (balloon)", e))?;
            let mut d = live.devices();
            d.balloon_kib = Some(kib);
            inner.save_live(name, live, d).await?;
        }
        if config {
            let mut c = defined;
            c.memory.current_kib = (kib != c.memory.memory_kib).then_some(kib);
            inner.save_definition(&h, c).await?;
        }
        drop(job);
        match live {
            Some(_) => self.mem_stats(name, None).await,
            None => Ok(MemStats {
                actual: kib,
                target: Some(kib),
                stats: BTreeMap::new(),
                period: 0,
            }),
        }
    }

    /// `dommemstat [--period N]`: sets the guest's polling interval first when given.
    pub async fn mem_stats(&self, name: &str, period: Option<u32>) -> Result<MemStats, Error> {
        let h = self.inner.handle(name)?;
        let Some(live) = h.run().live().cloned() else {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "read the memory statistics of",
            });
        };
        if !has_balloon(&live.config()) {
            return Err(no_balloon(name));
        }
        let qmp = live.qmp(name)?;
        if let Some(p) = period {
            if p > 86_400 {
                return Err(invalid("period", "0 to 86400 seconds".into()));
            }
            let set =
                json!({"path": BALLOON, "property": "guest-stats-polling-interval", "value": p});
            qmp.execute_raw("qom-set", Some(&set))
                .await
                .map_err(|e| qmp_error(name, "dommemstat (guest-stats-polling-interval)", e))?;
        }
        let actual = qmp
            .execute_raw("query-balloon", None)
            .await
            .map_err(|e| qmp_error(name, "dommemstat (query-balloon)", e))?["actual"]
            .as_u64()
            .unwrap_or(0)
            / 1024;
        let get = |p: &'static str| json!({"path": BALLOON, "property": p});
        let period = match qmp
            .execute_raw("qom-get", Some(&get("guest-stats-polling-interval")))
            .await
        {
            Ok(v) => v.as_u64().unwrap_or(0),
            Err(_) => 0,
        };
        let mut stats = BTreeMap::new();
        if let Ok(v) = qmp.execute_raw("qom-get", Some(&get("guest-stats"))).await {
            let s = &v["stats"];
            for (qemu, ours, bytes) in STATS {
                // QEMU reports -1 (as u64::MAX) for what the guest did not send.
                if let Some(x) = s
                    .get(*qemu)
                    .and_then(Value::as_u64)
                    .filter(|x| *x != u64::MAX)
                {
                    stats.insert((*ours).to_owned(), if *bytes { x / 1024 } else { x });
                }
            }
            if let Some(t) = v["last-update"].as_u64().filter(|t| *t != 0) {
                stats.insert("last_update".into(), t);
            }
        }
        Ok(MemStats {
            actual,
            target: live
                .devices()
                .balloon_kib
                .or_else(|| start_target(&live.record.config)),
            stats,
            period,
        })
    }
}
