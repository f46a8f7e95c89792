//! `<disk><iotune>`: libvirt's per-disk I/O limits, each an element holding a non-negative
//! integer (0: unlimited), plus `<group_name>`. An element given twice, a value that is not an
//! integer or does not fit 64 bits is an error naming it; the limits' consistency (QEMU's
//! rules) is checked by validation. An `<iotune>` that sets nothing reads as absent.

use super::super::tree::Element;
use super::R;
use crate::model::IoTune;

const ELEMENTS: [&str; 20] = [
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
    "total_bytes_sec_max",
    "read_bytes_sec_max",
    "write_bytes_sec_max",
    "total_iops_sec_max",
    "read_iops_sec_max",
    "write_iops_sec_max",
    "size_iops_sec",
    "group_name",
    "total_bytes_sec_max_length",
    "read_bytes_sec_max_length",
    "write_bytes_sec_max_length",
    "total_iops_sec_max_length",
    "read_iops_sec_max_length",
    "write_iops_sec_max_length",
];

pub(super) fn iotune(disk: &Element) -> R<Option<IoTune>> {
    let Some(e) = disk.child("iotune")? else {
        return Ok(None);
    };
    e.allow(&[], &ELEMENTS)?;
    let mut t = IoTune::default();
    for name in ELEMENTS {
        let Some(c) = e.text_child(name)? else {
            continue;
        };
        c.allow(&[], &[])?;
        if name == "group_name" {
            t.group_name = Some(c.req_text()?.to_owned());
        } else if let Some(slot) = t.field_mut(name) {
            *slot = c.text_int::<u64>()?;
        }
    }
    Ok((!t.is_unlimited()).then_some(t))
}
