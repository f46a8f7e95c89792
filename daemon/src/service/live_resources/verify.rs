//! After a daemon restart: the recorded vCPUs, memory devices and disk nodes are checked
//! against QEMU (`query-hotpluggable-cpus`, `query-memory-devices`, `query-block`). QEMU is the truth: what differs is
//! reported as drift (an event, as drifted pins are) and the record is corrected, so a
//! migration or the next report starts from what the guest really has. An unplug that the
//! guest finished while no daemon watched is completed here.

use crate::persist::live_devices::LiveDevices;
use crate::persist::records::RuntimeRecord;

/// Checks `record`'s live set against QEMU; corrects it and returns what differed.
pub(in crate::service) async fn verify(
    qmp: &novacron_qmp::Client,
    record: &mut RuntimeRecord,
) -> Result<Vec<String>, String> {
    let mut devices = record
        .live_devices
        .clone()
        .unwrap_or_else(|| LiveDevices::at_start(&record.config));
    let mut drift = Vec::new();
    let slots = super::vcpus::slots(qmp).await.map_err(|e| e.to_string())?;
    let plugged: Vec<u32> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.qom_path.is_some())
        .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let recorded = devices.vcpus(&record.config);
    let have = u32::try_from(plugged.len()).unwrap_or(u32::MAX);
    // An unplug finished while no daemon watched is not drift: the guest did what was asked.
    let released = devices
        .vcpus_unplugging
        .iter()
        .filter(|i| !plugged.contains(i))
        .count() as u32;
    devices.vcpus_unplugging.retain(|i| plugged.contains(i));
    if have != recorded.saturating_sub(released) {
        drift.push(format!("vcpus: recorded {recorded}, QEMU has {have}"));
    }
    devices.vcpus = Some(have);
    let found = super::memory::plugged(qmp)
        .await
        .map_err(|e| e.to_string())?;
    let mut mem = devices.memory(&record.config);
    devices
        .memory_unplugging
        .retain(|a| found.iter().any(|f| &f.0 == a));
    mem.retain(|m| {
        let alias = m.alias.clone().unwrap_or_default();
        let there = found.iter().any(|f| f.0 == alias);
        if !there && !devices.memory_unplugging.contains(&alias) {
            drift.push(format!("memory device {alias}: recorded, QEMU has none"));
        }
        there
    });
    for (id, model, _, requested) in &found {
        match mem
            .iter_mut()
            .find(|m| m.alias.as_deref() == Some(id.as_str()))
        {
            Some(m) => {
                if let (Some(q), Some(r)) = (requested, m.requested_kib) {
                    if *q != r {
                        drift.push(format!(
                            "memory device {id}: requested {r} KiB recorded, QEMU has {q} KiB"
                        ));
                        m.requested_kib = Some(*q);
                    }
                }
            }
            None => drift.push(format!(
                "memory device {id} ({model}): in QEMU, not recorded (not managed here)"
            )),
        }
    }
    devices.memory = Some(mem);
    let blocks = qmp
        .execute_raw("query-block", None)
        .await
        .map_err(|e| e.to_string())?;
    drift.extend(disk_nodes(&mut devices, &blocks));
    record.live_devices = Some(devices);
    Ok(drift)
}

/// Each recorded disk's node against the one its device reads (`query-block`'s inserted
/// node): a snapshot or a commit changes it, and what resizes or detaches the disk names it.
/// A disk whose device QEMU does not list, or whose tray is empty, is left as recorded.
fn disk_nodes(devices: &mut LiveDevices, blocks: &serde_json::Value) -> Vec<String> {
    let mut drift = Vec::new();
    for d in devices.disks.iter_mut().filter(|d| !d.detaching) {
        let backend = format!("/machine/peripheral/{}/", d.qdev);
        let reads = blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| {
                b["qdev"]
                    .as_str()
                    .is_some_and(|q| q == d.qdev || q.starts_with(&backend))
            })
            .and_then(|b| b["inserted"]["node-name"].as_str());
        let (Some(recorded), Some(reads)) = (d.node.as_deref(), reads) else {
            continue;
        };
        if recorded != reads {
            drift.push(format!(
                "disk {}: node {recorded} recorded, its device reads {reads}",
                d.disk.target.dev
            ));
            d.node = Some(reads.to_owned());
        }
    }
    drift
}
