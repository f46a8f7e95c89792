//! `<interface>`'s `<bandwidth>`, `<filterref>` and `<port>`.

use super::R;
use crate::model::*;
use crate::xml::tree::Element;

/// Also a network's `<bandwidth>` (the same element in libvirt's network XML).
pub(crate) fn bandwidth(b: &Element) -> R<Bandwidth> {
    b.allow(&[], &["inbound", "outbound"])?;
    let rate = |name: &str| -> R<Option<BandwidthRate>> {
        let Some(r) = b.child(name)? else {
            return Ok(None);
        };
        // `floor` needs a network-wide QoS tree (libvirt's hierarchical htb): refused by name.
        r.allow(&["average", "peak", "burst"], &[])?;
        Ok(Some(BandwidthRate {
            average: r.req_attr_int("average")?,
            peak: r.attr_int("peak")?,
            burst: r.attr_int("burst")?,
        }))
    };
    Ok(Bandwidth {
        inbound: rate("inbound")?,
        outbound: rate("outbound")?,
    })
}

pub(super) fn filterref(f: &Element) -> R<FilterRef> {
    f.allow(&["filter"], &["parameter"])?;
    let filters: Vec<(&str, TrafficFilter)> = TrafficFilter::ALL
        .iter()
        .map(|t| (t.as_str(), *t))
        .collect();
    let filter = f.req_attr_enum("filter", &filters)?;
    let mut ips = Vec::new();
    for p in f.children_named("parameter") {
        p.allow(&["name", "value"], &[])?;
        // Only IP: CTRL_IP_LEARNING, DHCPSERVER, MAC... change what the filter trusts.
        p.req_attr("value")?;
        p.attr_only("name", &["IP"])?;
        p.req_attr("name")?;
        if let Some(ip) = p.attr_parse("value")? {
            ips.push(ip);
        }
    }
    Ok(FilterRef { filter, ips })
}

pub(super) fn port_isolated(p: &Element) -> R<bool> {
    p.allow(&["isolated"], &[])?;
    Ok(p.attr_enum("isolated", super::YES_NO)?.unwrap_or(false))
}
