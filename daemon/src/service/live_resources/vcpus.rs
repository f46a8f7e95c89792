//! `setvcpus` and `vcpucount`. QEMU's CPU slots come from `query-hotpluggable-cpus`; the guest
//! always has the lowest slots (a hotplug takes the next free one, an unplug the highest
//! plugged), so `-smp cpus=N` at the next start is the same set; a migration's destination
//! starts with the started count and plugs the same slots (`plug_before_incoming`), since QEMU
//! sizes some devices by `-smp cpus` (virtio-blk's queues).
//! A plug is `device_add` of the slot's CPU type with its topology ids; an unplug is
//! `device_del` by QOM path (boot CPUs have no id) and waits for DEVICE_DELETED as the
//! domain's long-running job with a deadline: a guest without an OS never acknowledges, and
//! then the vCPU stays (recorded as unplugging) and the definition is left as it was.

use std::time::Duration;

use novacron_domain::Error;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::super::jobs::{AsyncJob, Job};
use super::super::Service;
use super::{check_timeout, invalid, qmp_error, resolve, Scope};

/// virsh `vcpucount`: the maximum and current vCPUs of the definition and of the running guest.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuCount {
    pub config_maximum: u32,
    pub config_current: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_maximum: Option<u32>,
    /// What the daemon recorded (plugged, releases pending included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_current: Option<u32>,
    /// What QEMU has plugged now (`query-hotpluggable-cpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_plugged: Option<u32>,
    /// vCPUs an unplug was asked for and the guest has not released.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unplugging: Vec<u32>,
}

/// One CPU slot of `query-hotpluggable-cpus`.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub driver: String,
    pub props: Map<String, Value>,
    pub qom_path: Option<String>,
}

/// The slots in topology order (socket, die, core, thread): slot i is vCPU i.
pub(super) async fn slots(qmp: &novacron_qmp::Client) -> Result<Vec<Slot>, novacron_qmp::Error> {
    let v = qmp.execute_raw("query-hotpluggable-cpus", None).await?;
    let mut out: Vec<Slot> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Slot {
            driver: s["type"].as_str().unwrap_or_default().to_owned(),
            props: s["props"].as_object().cloned().unwrap_or_default(),
            qom_path: s["qom-path"].as_str().map(str::to_owned),
        })
        .collect();
    let key = |s: &Slot| {
        ["node-id", "socket-id", "die-id", "core-id", "thread-id"]
            .map(|k| s.props.get(k).and_then(Value::as_u64).unwrap_or(0))
    };
    out.sort_by_key(|s| {
        let k = key(s);
        // node-id does not order CPUs; topology ids do.
        [k[1], k[2], k[3], k[4]]
    });
    Ok(out)
}

/// Plugs the lowest free slots of a QEMU that does not run the guest yet (a migration's
/// destination, `-S -incoming defer`) until it has `count` vCPUs, with the ids `setvcpus`
/// gives them, and records them in its live set: the same vCPUs, hot-plugged, as the source.
pub(in crate::service) async fn plug_before_incoming(
    inner: &std::sync::Arc<super::super::Inner>,
    name: &str,
    live: &super::super::domain::Live,
    count: u32,
) -> Result<(), Error> {
    let max = live.record.config.vcpu.count;
    if count > max {
        return Err(invalid(
            "live_vcpus",
            format!("{count} vCPUs is above the guest's maximum ({max})"),
        ));
    }
    let qmp = live.qmp(name)?;
    let all = slots(qmp)
        .await
        .map_err(|e| qmp_error(name, "replay vCPUs (query-hotpluggable-cpus)", e))?;
    for (i, slot) in all.iter().enumerate().take(count as usize) {
        if slot.qom_path.is_some() {
            continue;
        }
        let mut args = slot.props.clone();
        args.insert("driver".into(), json!(slot.driver));
        args.insert("id".into(), json!(format!("vcpu{i}")));
        qmp.execute_raw("device_add", Some(&Value::Object(args)))
            .await
            .map_err(|e| qmp_error(name, "replay vCPUs (device_add)", e))?;
    }
    let mut d = live.devices();
    d.vcpus = Some(count);
    inner.save_live(name, live, d).await
}

impl Service {
    pub async fn vcpu_count(&self, name: &str) -> Result<VcpuCount, Error> {
        let h = self.inner.handle(name)?;
        let def = h.definition().config.config().clone();
        let mut out = VcpuCount {
            config_maximum: def.vcpu.count,
            config_current: def.vcpu.current.unwrap_or(def.vcpu.count),
            live_maximum: None,
            live_current: None,
            live_plugged: None,
            unplugging: Vec::new(),
        };
        if let Some(live) = h.run().live().cloned() {
            let devices = live.devices();
            out.live_maximum = Some(live.record.config.vcpu.count);
            out.live_current = Some(devices.vcpus(&live.record.config));
            out.unplugging = devices.vcpus_unplugging.clone();
            if let Ok(qmp) = live.qmp(name) {
                if let Ok(s) = slots(qmp).await {
                    let n = s.iter().filter(|s| s.qom_path.is_some()).count();
                    out.live_plugged = Some(u32::try_from(n).unwrap_or(u32::MAX));
                }
            }
        }
        Ok(out)
    }

    /// `setvcpus N [--live] [--config] [--maximum]`.
    pub async fn set_vcpus(
        &self,
        name: &str,
        count: u32,
        scope: Scope,
        maximum: bool,
        timeout: Option<Duration>,
    ) -> Result<VcpuCount, Error> {
        let timeout = check_timeout(timeout)?;
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "change the vCPUs of (--live)")?;
        if count == 0 {
            return Err(invalid("count", "at least 1 vCPU".into()));
        }
        let defined = h.definition().config.config().clone();
        if maximum {
            // The most vCPUs is fixed while QEMU runs (`-smp maxcpus`).
            if live.is_some() {
                return Err(invalid(
                    "maximum",
                    "the maximum vCPUs cannot change while the guest runs: use --config".into(),
                ));
            }
            let mut c = defined;
            let cur = c.vcpu.current.unwrap_or(c.vcpu.count).min(count);
            c.vcpu.count = count;
            c.vcpu.current = (cur != count).then_some(cur);
            inner.save_definition(&h, c).await?;
            drop(job);
            return self.vcpu_count(name).await;
        }
        if config && count > defined.vcpu.count {
            return Err(invalid(
                "count",
                format!(
                    "{count} vCPUs is above the definition's maximum ({}); raise it with \
                     --maximum --config first",
                    defined.vcpu.count
                ),
            ));
        }
        if let Some(live) = &live {
            let max = live.record.config.vcpu.count;
            if count > max {
                return Err(invalid(
                    "count",
                    format!(
                        "{count} vCPUs is above the running guest's maximum ({max}, its -smp \
                         maxcpus)"
                    ),
                ));
            }
        }
        if let Some(live) = live {
            let qmp = live.qmp(name)?.clone();
            let all = slots(&qmp)
                .await
                .map_err(|e| qmp_error(name, "setvcpus (query-hotpluggable-cpus)", e))?;
            let plugged = all.iter().filter(|s| s.qom_path.is_some()).count() as u32;
            if count > plugged {
                let adds: Vec<(u32, Value)> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| s.qom_path.is_none() && (*i as u32) < count)
                    .map(|(i, slot)| {
                        let mut args = slot.props.clone();
                        args.insert("driver".into(), json!(slot.driver));
                        args.insert("id".into(), json!(format!("vcpu{i}")));
                        (i as u32, Value::Object(args))
                    })
                    .collect();
                let before = live.devices();
                let mut after = before.clone();
                let highest = adds.last().map_or(0, |(i, _)| i + 1);
                after.vcpus = Some(before.vcpus(&live.record.config).max(highest));
                // The record with every new vCPU is written while QEMU plugs them; one that
                // QEMU refuses leaves the record with those plugged before it.
                let plug = async {
                    let mut done = 0u32;
                    for (i, args) in &adds {
                        if let Err(e) = qmp.execute_raw("device_add", Some(args)).await {
                            return Err((done, qmp_error(name, "setvcpus (device_add)", e)));
                        }
                        done = i + 1;
                    }
                    Ok(done)
                };
                let (saved, plugged_now) = tokio::join!(inner.save_live(name, &live, after), plug);
                if let Err((done, e)) = plugged_now {
                    let mut back = before.clone();
                    back.vcpus = Some(before.vcpus(&live.record.config).max(done));
                    if let Err(w) = inner.save_live(name, &live, back).await {
                        tracing::warn!(domain = name, error = %w, "setvcpus: record not restored");
                    }
                    return Err(e);
                }
                saved?;
                if let Err(e) =
                    super::super::placement::restore_drifted(&qmp, live.pid, &live.config()).await
                {
                    tracing::warn!(domain = name, error = %e, "cannot pin hot-added vCPUs");
                }
                if config {
                    save_current(inner, &h, count).await?;
                }
                drop(job);
                // The answer from what was just done, without asking QEMU again.
                let def = h.definition().config.config().clone();
                let d = live.devices();
                return Ok(VcpuCount {
                    config_maximum: def.vcpu.count,
                    config_current: def.vcpu.current.unwrap_or(def.vcpu.count),
                    live_maximum: Some(live.record.config.vcpu.count),
                    live_current: Some(d.vcpus(&live.record.config)),
                    live_plugged: Some(plugged + adds.len() as u32),
                    unplugging: d.vcpus_unplugging.clone(),
                });
            } else if count < plugged {
                let _unplug = h.jobs.begin_async(name, AsyncJob::Unplug)?;
                let mut events = qmp.subscribe();
                let going: Vec<(u32, String)> = all
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| Some((i as u32, s.qom_path.clone()?)))
                    .filter(|(i, _)| *i >= count)
                    .collect();
                let mut d = live.devices();
                let mut refused = None;
                for (i, path) in &going {
                    match qmp
                        .execute_raw("device_del", Some(&json!({ "id": path })))
                        .await
                    {
                        Ok(_) => {}
                        // Asked before and still pending: wait for it again.
                        Err(novacron_qmp::Error::Qmp { .. }) if d.vcpus_unplugging.contains(i) => {}
                        Err(novacron_qmp::Error::Qmp { error, .. })
                            if error.desc.contains("not supported device type") =>
                        {
                            // QEMU's ACPI CPU hotplug stays in legacy mode (no unplug) until
                            // the guest's OS switches it: firmware alone never does.
                            refused = Some(invalid(
                                "count",
                                format!(
                                    "the guest cannot release vCPU {i}: it has not enabled ACPI \
                                     CPU hot-unplug (no OS, or one without CPU hotplug); QEMU: {}",
                                    error.desc
                                ),
                            ));
                            break;
                        }
                        Err(e) => {
                            refused = Some(qmp_error(name, "setvcpus (device_del)", e));
                            break;
                        }
                    }
                    if !d.vcpus_unplugging.contains(i) {
                        d.vcpus_unplugging.push(*i);
                    }
                }
                if d.vcpus_unplugging != live.devices().vcpus_unplugging {
                    inner.save_live(name, &live, d).await?;
                }
                if let Some(e) = refused {
                    return Err(e);
                }
                // The wait holds only the long-running slot: queries go on meanwhile.
                drop(job);
                wait_released(inner, name, &live, &qmp, &mut events, timeout).await?;
                if config {
                    let _job = h.begin(Job::Modify, inner.job_wait()).await?;
                    save_current(inner, &h, count).await?;
                }
                return self.vcpu_count(name).await;
            }
        }
        if config {
            save_current(inner, &h, count).await?;
        }
        drop(job);
        self.vcpu_count(name).await
    }
}

async fn save_current(
    inner: &std::sync::Arc<super::super::Inner>,
    h: &super::super::domain::DomainHandle,
    count: u32,
) -> Result<(), Error> {
    let mut c = h.definition().config.config().clone();
    c.vcpu.current = (count != c.vcpu.count).then_some(count);
    inner.save_definition(h, c).await
}

/// Waits until every vCPU recorded as unplugging has left QEMU (its slot has no QOM path),
/// recording each as it goes. QEMU 7.2 announces a CPU's removal unreliably (DEVICE_DELETED
/// names its lapic child, or nothing), so every event wakes a check of the slots, and so does
/// a short poll interval.
async fn wait_released(
    inner: &std::sync::Arc<super::super::Inner>,
    name: &str,
    live: &std::sync::Arc<super::super::domain::Live>,
    qmp: &novacron_qmp::Client,
    events: &mut novacron_qmp::Subscription,
    timeout: Duration,
) -> Result<(), Error> {
    const POLL: Duration = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = slots(qmp)
            .await
            .map_err(|e| qmp_error(name, "setvcpus (query-hotpluggable-cpus)", e))?;
        let mut d = live.devices();
        let gone: Vec<u32> = d
            .vcpus_unplugging
            .iter()
            .copied()
            .filter(|i| all.get(*i as usize).is_none_or(|s| s.qom_path.is_none()))
            .collect();
        if !gone.is_empty() {
            d.vcpus_unplugging.retain(|i| !gone.contains(i));
            let plugged = all.iter().filter(|s| s.qom_path.is_some()).count();
            d.vcpus = Some(u32::try_from(plugged).unwrap_or(u32::MAX));
            inner.save_live(name, live, d.clone()).await?;
        }
        if d.vcpus_unplugging.is_empty() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                operation: "setvcpus: the guest did not release the vCPU(s); they stay plugged, \
                            marked unplugging, and the definition is unchanged",
                after: timeout,
            });
        }
        let wait = (deadline - now).min(POLL);
        match events.wait_for(wait, |_| true).await {
            Ok(_) | Err(novacron_qmp::Error::EventTimeout(_)) => {}
            Err(e) => return Err(qmp_error(name, "setvcpus (waiting for the guest)", e)),
        }
    }
}
