//! Memory devices of a running guest: virtio-mem's requested size (`qom-set requested-size`,
//! grow and shrink), DIMMs and virtio-mem devices plugged (`object-add` + `device_add`) and
//! unplugged (`device_del`, DEVICE_DELETED with a deadline, `object-del`), and the report of
//! requested against guest-visible memory (`query-memory-devices`, `query-balloon`): a guest
//! may not plug what it was asked to (no driver, memory not onlined), and users need both.

use std::time::Duration;

use novacron_domain::model::{memory_device_ids, Address, DomainConfig, MemoryDevice, MemoryModel};
use novacron_domain::qemu::memory_devices::{backend_id, backend_json, device_json};
use novacron_domain::Error;
use novacron_qmp::EventKind;
use serde::Serialize;
use serde_json::json;

use super::super::jobs::{AsyncJob, Job};
use super::super::Service;
use super::{check_timeout, invalid, qmp_error, resolve, Scope};

/// One memory device as `dommeminfo` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryDeviceReport {
    pub alias: String,
    pub model: &'static str,
    pub size_kib: u64,
    /// What the guest is asked to have of it (a DIMM: all of it).
    pub requested_kib: u64,
    /// What QEMU says the guest has plugged (virtio-mem's `size`); running guests only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugged_kib: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unplugging: bool,
}

/// Requested against guest-visible memory.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The boot RAM (QEMU's `-m size`): `<memory>` minus the memory devices.
    pub boot_kib: u64,
    /// `<memory>`: the boot RAM plus every memory device's size (libvirt's meaning).
    pub memory_kib: u64,
    /// `<maxMemory>` and its slots, if the guest may grow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    pub devices: Vec<MemoryDeviceReport>,
    /// Boot RAM plus what every device is asked to provide.
    pub requested_kib: u64,
    /// Boot RAM plus what the devices provide now (running guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugged_kib: Option<u64>,
    /// The balloon target last set (`setmem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_target_kib: Option<u64>,
    /// What the guest has after the balloon (`query-balloon` actual): the guest-visible size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon_actual_kib: Option<u64>,
    /// `live` or `config`.
    pub scope: &'static str,
}

/// Plugged bytes per device id from `query-memory-devices`.
pub(super) async fn plugged(
    qmp: &novacron_qmp::Client,
) -> Result<Vec<(String, &'static str, u64, Option<u64>)>, novacron_qmp::Error> {
    let v = qmp.execute_raw("query-memory-devices", None).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let model = match d["type"].as_str()? {
                "dimm" => "dimm",
                "virtio-mem" => "virtio-mem",
                _ => return None,
            };
            let data = &d["data"];
            Some((
                data["id"].as_str()?.to_owned(),
                model,
                data["size"].as_u64().unwrap_or(0) / 1024,
                data["requested-size"].as_u64().map(|b| b / 1024),
            ))
        })
        .collect())
}

fn unknown(name: &str, alias: &str) -> Error {
    invalid(
        "alias",
        format!("domain '{name}' has no memory device '{alias}'"),
    )
}

/// The definition's devices with the ids the command line gives them.
fn with_ids(c: &DomainConfig) -> Vec<(String, MemoryDevice)> {
    memory_device_ids(&c.devices.memory)
        .into_iter()
        .zip(c.devices.memory.iter().cloned())
        .collect()
}

/// Checks `requested` for virtio-mem device `d`.
fn check_requested(d: &MemoryDevice, alias: &str, requested: u64) -> Result<(), Error> {
    if d.model != MemoryModel::VirtioMem {
        return Err(invalid(
            "alias",
            format!("memory device '{alias}' is a DIMM: it has no requested size (detach it)"),
        ));
    }
    let b = d.block();
    if requested > d.size_kib || requested % b != 0 {
        return Err(invalid(
            "requested_kib",
            format!(
                "{requested} KiB for '{alias}': a multiple of its block ({b} KiB) from 0 to its \
                 size ({} KiB)",
                d.size_kib
            ),
        ));
    }
    Ok(())
}

impl Service {
    /// `dommeminfo`: boot, requested and guest-visible memory, per device.
    pub async fn memory_report(&self, name: &str, config: bool) -> Result<MemoryReport, Error> {
        let h = self.inner.handle(name)?;
        let live = if config {
            None
        } else {
            h.run().live().cloned()
        };
        let Some(live) = live else {
            let c = h.definition().config.config().clone();
            let devices: Vec<MemoryDeviceReport> = with_ids(&c)
                .into_iter()
                .map(|(alias, d)| report(alias, &d, None, false))
                .collect();
            let boot = c.boot_memory_kib();
            return Ok(MemoryReport {
                boot_kib: boot,
                memory_kib: c.memory.memory_kib,
                max_kib: c.memory.max.as_ref().map(|m| m.size_kib),
                slots: c.memory.max.as_ref().map(|m| m.slots),
                requested_kib: boot + devices.iter().map(|d| d.requested_kib).sum::<u64>(),
                devices,
                plugged_kib: None,
                balloon_target_kib: c.memory.current_kib,
                balloon_actual_kib: None,
                scope: "config",
            });
        };
        let c = live.config();
        let d = live.devices();
        let qmp = live.qmp(name)?;
        let found = plugged(qmp)
            .await
            .map_err(|e| qmp_error(name, "dommeminfo (query-memory-devices)", e))?;
        let devices: Vec<MemoryDeviceReport> = c
            .devices
            .memory
            .iter()
            .map(|m| {
                let alias = m.alias.clone().unwrap_or_default();
                let p = found.iter().find(|f| f.0 == alias).map(|f| f.2);
                let unplugging = d.memory_unplugging.contains(&alias);
                report(alias, m, Some(p.unwrap_or(0)), unplugging)
            })
            .collect();
        let actual = match qmp.execute_raw("query-balloon", None).await {
            Ok(v) => v["actual"].as_u64().map(|b| b / 1024),
            Err(_) => None,
        };
        let boot = c.boot_memory_kib();
        Ok(MemoryReport {
            boot_kib: boot,
            memory_kib: c.memory.memory_kib,
            max_kib: c.memory.max.as_ref().map(|m| m.size_kib),
            slots: c.memory.max.as_ref().map(|m| m.slots),
            requested_kib: boot + devices.iter().map(|d| d.requested_kib).sum::<u64>(),
            plugged_kib: Some(
                boot + devices
                    .iter()
                    .map(|d| d.plugged_kib.unwrap_or(0))
                    .sum::<u64>(),
            ),
            devices,
            balloon_target_kib: d
                .balloon_kib
                .or_else(|| super::balloon::start_target(&live.record.config)),
            balloon_actual_kib: actual,
            scope: "live",
        })
    }

    /// The answer to a change: the recorded state, without asking QEMU again (what the guest
    /// has plugged of a virtio-mem device, and the balloon's actual, are `dommeminfo`'s: right
    /// after a change the guest has not acted yet anyway). A plugged DIMM is plugged whole.
    async fn memory_answer(&self, name: &str, live: bool) -> Result<MemoryReport, Error> {
        let h = self.inner.handle(name)?;
        let Some(l) = h.run().live().cloned().filter(|_| live) else {
            return self.memory_report(name, true).await;
        };
        let c = l.config();
        let d = l.devices();
        let devices: Vec<MemoryDeviceReport> = c
            .devices
            .memory
            .iter()
            .map(|m| {
                let alias = m.alias.clone().unwrap_or_default();
                let unplugging = d.memory_unplugging.contains(&alias);
                let plugged = (m.model == MemoryModel::Dimm).then_some(m.size_kib);
                report(alias, m, plugged, unplugging)
            })
            .collect();
        let boot = c.boot_memory_kib();
        Ok(MemoryReport {
            boot_kib: boot,
            memory_kib: c.memory.memory_kib,
            max_kib: c.memory.max.as_ref().map(|m| m.size_kib),
            slots: c.memory.max.as_ref().map(|m| m.slots),
            requested_kib: boot + devices.iter().map(|d| d.requested_kib).sum::<u64>(),
            plugged_kib: None,
            devices,
            balloon_target_kib: d
                .balloon_kib
                .or_else(|| super::balloon::start_target(&l.record.config)),
            balloon_actual_kib: None,
            scope: "live",
        })
    }

    /// `update-memory-device --alias A --requested-size S`: a virtio-mem device's request.
    pub async fn update_memory_device(
        &self,
        name: &str,
        alias: &str,
        requested_kib: u64,
        scope: Scope,
    ) -> Result<MemoryReport, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "update a memory device of (--live)")?;
        let defined = h.definition().config.config().clone();
        let def_index = with_ids(&defined).iter().position(|(a, _)| a == alias);
        if config {
            let i = def_index.ok_or_else(|| unknown(name, alias))?;
            check_requested(&defined.devices.memory[i], alias, requested_kib)?;
        }
        if let Some(live) = &live {
            let before = live.devices();
            let mut d = before.clone();
            let mut mem = d.memory(&live.record.config);
            let m = mem
                .iter_mut()
                .find(|m| m.alias.as_deref() == Some(alias))
                .ok_or_else(|| unknown(name, alias))?;
            check_requested(m, alias, requested_kib)?;
            m.requested_kib = Some(requested_kib);
            d.memory = Some(mem);
            let qmp = live.qmp(name)?;
            let set = json!({
                "path": format!("/machine/peripheral/{alias}"),
                "property": "requested-size",
                "value": requested_kib * 1024,
            });
            let change = async {
                qmp.execute_raw("qom-set", Some(&set)).await.map_err(|e| {
                    qmp_error(name, "update-memory-device (qom-set requested-size)", e)
                })
            };
            super::change_recorded(inner, name, live, before, d, change).await?;
        }
        if config {
            let mut c = defined;
            if let Some(i) = def_index {
                c.devices.memory[i].requested_kib = Some(requested_kib);
            }
            inner.save_definition(&h, c).await?;
        }
        drop(job);
        self.memory_answer(name, live.is_some()).await
    }

    /// Plugs a DIMM or a virtio-mem device (`attach-device` of a `<memory>` element).
    pub async fn attach_memory(
        &self,
        name: &str,
        mut dev: MemoryDevice,
        scope: Scope,
    ) -> Result<MemoryReport, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "attach memory to (--live)")?;
        let defined = h.definition().config.config().clone();
        let new_config = if config {
            let mut c = defined.clone();
            let mut d = dev.clone();
            d.alias = None;
            // `<memory>` includes the devices (libvirt): it grows by the device's size.
            c.memory.memory_kib = c.memory.memory_kib.saturating_add(d.size_kib);
            c.devices.memory.push(d);
            // Validated whole: slots, maxMemory and sizes are checked there.
            inner.prepare(c.clone(), Some(h.definition()))?;
            Some(c)
        } else {
            None
        };
        if let Some(live) = &live {
            let running = live.config();
            let mut devs = running.devices.memory.clone();
            let id = (0..)
                .map(|i| format!("{}{i}", dev.model.id_prefix()))
                .find(|c| !devs.iter().any(|m| m.alias.as_deref() == Some(c)))
                .unwrap_or_default();
            dev.alias = Some(id.clone());
            if dev.model == MemoryModel::VirtioMem && dev.address.is_none() {
                let port = super::super::disks::free_root_ports(&running)
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        invalid(
                            "memory",
                            "no free PCIe root port for a virtio-mem device (define the domain \
                             with more hotplug slots)"
                                .into(),
                        )
                    })?;
                dev.address = Some(Address::Pci {
                    domain: 0,
                    bus: u8::try_from(port).unwrap_or(u8::MAX),
                    slot: 0,
                    function: 0,
                    multifunction: None,
                });
            }
            // The running config with the device must be valid: the same checks as a define
            // (maxMemory, slots, block sizes), against the ceiling QEMU was started with.
            let mut check = running.clone();
            check.memory.memory_kib = check.memory.memory_kib.saturating_add(dev.size_kib);
            devs.push(dev.clone());
            check.devices.memory = devs.clone();
            check.validate().map_err(Error::from)?;
            let qmp = live.qmp(name)?;
            let backend = backend_json(&running, &dev, &id);
            let mut args = device_json(&dev, &id);
            if let Some(Address::Pci { bus, .. }) = dev.address {
                args["bus"] = json!(format!("pci.{bus}"));
            }
            let change = async {
                qmp.execute_raw("object-add", Some(&backend))
                    .await
                    .map_err(|e| qmp_error(name, "attach memory (object-add)", e))?;
                if let Err(e) = qmp.execute_raw("device_add", Some(&args)).await {
                    // Nothing half-made stays: the backend goes with the failed device.
                    let _ = qmp
                        .execute_raw("object-del", Some(&json!({ "id": backend_id(&id) })))
                        .await;
                    return Err(qmp_error(name, "attach memory (device_add)", e));
                }
                Ok(())
            };
            let before = live.devices();
            let mut d = before.clone();
            d.memory = Some(devs);
            super::change_recorded(inner, name, live, before, d, change).await?;
        }
        if let Some(c) = new_config {
            inner.save_definition(&h, c).await?;
        }
        drop(job);
        self.memory_answer(name, live.is_some()).await
    }

    /// Unplugs memory device `alias`: `device_del`, the guest's release as the long-running
    /// job with a deadline, then its backend goes. A guest that never releases it keeps it
    /// (marked unplugging); the definition is changed only after the release.
    pub async fn detach_memory(
        &self,
        name: &str,
        alias: &str,
        scope: Scope,
        timeout: Option<Duration>,
    ) -> Result<MemoryReport, Error> {
        let timeout = check_timeout(timeout)?;
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "detach memory from (--live)")?;
        let defined = h.definition().config.config().clone();
        let def_index = with_ids(&defined).iter().position(|(a, _)| a == alias);
        if config && def_index.is_none() {
            return Err(unknown(name, alias));
        }
        let mut job = Some(job);
        if let Some(live) = &live {
            let d = live.devices();
            if !d
                .memory(&live.record.config)
                .iter()
                .any(|m| m.alias.as_deref() == Some(alias))
            {
                return Err(unknown(name, alias));
            }
            let _unplug = h.jobs.begin_async(name, AsyncJob::Unplug)?;
            let qmp = live.qmp(name)?.clone();
            let mut events = qmp.subscribe();
            let pending = d.memory_unplugging.iter().any(|a| a == alias);
            let gone = match qmp
                .execute_raw("device_del", Some(&json!({ "id": alias })))
                .await
            {
                Ok(_) => false,
                Err(novacron_qmp::Error::Qmp { error, .. })
                    if pending && error.class.as_str() == "DeviceNotFound" =>
                {
                    true
                }
                Err(novacron_qmp::Error::Qmp { .. }) if pending => false,
                Err(e) => return Err(qmp_error(name, "detach memory (device_del)", e)),
            };
            if !pending {
                let mut d = d.clone();
                d.memory_unplugging.push(alias.to_owned());
                inner.save_live(name, live, d).await?;
            }
            job = None;
            if !gone {
                let waited = events
                    .wait_for(timeout, |e| {
                        matches!(&e.kind, EventKind::DeviceDeleted { device: Some(x), .. } if x == alias)
                    })
                    .await;
                match waited {
                    Ok(_) => {}
                    Err(novacron_qmp::Error::EventTimeout(_)) => {
                        return Err(Error::Timeout {
                            operation: "detach memory: the guest did not release the device (no \
                                        DEVICE_DELETED); it stays plugged, marked unplugging, and \
                                        the definition is unchanged",
                            after: timeout,
                        })
                    }
                    Err(e) => {
                        return Err(qmp_error(
                            name,
                            "detach memory (waiting for DEVICE_DELETED)",
                            e,
                        ))
                    }
                }
            }
            let _job = h.begin(Job::Modify, inner.job_wait()).await?;
            if let Err(e) = qmp
                .execute_raw("object-del", Some(&json!({ "id": backend_id(alias) })))
                .await
            {
                tracing::warn!(domain = name, alias, error = %e, "detach memory: object-del");
            }
            let mut d = live.devices();
            let mut mem = d.memory(&live.record.config);
            mem.retain(|m| m.alias.as_deref() != Some(alias));
            d.memory = Some(mem);
            d.memory_unplugging.retain(|a| a != alias);
            inner.save_live(name, live, d).await?;
        }
        if config {
            let _job = match job.take() {
                Some(j) => j,
                None => h.begin(Job::Modify, inner.job_wait()).await?,
            };
            let mut c = defined;
            if let Some(i) = def_index {
                let gone = c.devices.memory.remove(i);
                // `<memory>` includes the devices (libvirt): it shrinks by the device's size.
                c.memory.memory_kib = c.memory.memory_kib.saturating_sub(gone.size_kib);
            }
            inner.save_definition(&h, c).await?;
        }
        drop(job);
        self.memory_report(name, live.is_none()).await
    }
}

impl Service {
    /// `setmaxmem SIZE --config`: the definition's `<memory>` (libvirt's total at boot, the
    /// memory devices included). As libvirt for QEMU guests: a running guest's is fixed
    /// (refused), a guest with NUMA cells sizes its RAM in the cells (refused), and
    /// `<currentMemory>` above the new size comes down to it.
    pub async fn set_max_mem(
        &self,
        name: &str,
        kib: u64,
        scope: Scope,
    ) -> Result<MemoryReport, Error> {
        let inner = &self.inner;
        let h = inner.handle(name)?;
        let job = h.begin(Job::Modify, inner.job_wait()).await?;
        let (live, config) = resolve(&h, scope, "change the maximum memory of (--live)")?;
        if live.is_some() {
            return Err(invalid(
                "live",
                format!(
                    "domain '{name}' is running: its <memory> cannot change while it runs (use \
                     --config for the next start, attach-memory or update-memory-device to grow \
                     it now, setmem to balloon it)"
                ),
            ));
        }
        debug_assert!(config);
        let mut c = h.definition().config.config().clone();
        if c.cpu.as_ref().is_some_and(|cpu| !cpu.numa.is_empty()) {
            return Err(invalid(
                "size_kib",
                format!(
                    "domain '{name}' has guest NUMA cells: its memory is the cells' (change \
                     <cell memory> in the definition)"
                ),
            ));
        }
        if let Some(max) = c.memory.max.as_ref().filter(|m| kib > m.size_kib) {
            return Err(invalid(
                "size_kib",
                format!("{kib} KiB is above <maxMemory> ({} KiB)", max.size_kib),
            ));
        }
        c.memory.memory_kib = kib;
        if c.memory.current_kib.is_some_and(|cur| cur >= kib) {
            c.memory.current_kib = None;
        }
        // Validated whole: the memory devices must still fit (`<memory>` includes them).
        inner.save_definition(&h, c).await?;
        drop(job);
        self.memory_report(name, true).await
    }
}

fn report(
    alias: String,
    d: &MemoryDevice,
    plugged: Option<u64>,
    unplugging: bool,
) -> MemoryDeviceReport {
    MemoryDeviceReport {
        alias,
        model: d.model.as_str(),
        size_kib: d.size_kib,
        requested_kib: d.plugged_target_kib(),
        plugged_kib: plugged,
        unplugging,
    }
}
