//! A network's own bandwidth (libvirt's network-wide `<bandwidth>`) on our bridge, where
//! libvirt puts it: `virNetDevBandwidthSet(bridge, bandwidth, hierarchical, swapped=true)`
//! in bridge_driver.c, i.e. the directions seen from the guests, as a NIC's.
//! - `inbound`, towards the guests, is what the host sends out of the bridge device (routed
//!   in from the uplink, or from the host itself): shaped on the bridge's root by the same
//!   htb class as a tap's inbound ([`super::qos`], run on the bridge's name); libvirt hangs
//!   a second class under it for NICs' guaranteed `floor`, which is not built here.
//! - `outbound`, from the guests, is what the bridge device receives for the host (to be
//!   routed on, or for the host itself): policed on the bridge's ingress. libvirt polices
//!   with tc's police action on an ingress qdisc; kernels without `act_police` (this CI's)
//!   cannot run it, so the policer is nft's `limit` (a tap's outbound's,
//!   [`super::nic_rules::limit_over`]) in a netdev-family ingress chain on the bridge: the
//!   same hook, reached only by frames the bridge passes up to the host, so traffic between
//!   two guests of the network is limited by neither, as in libvirt.
//!
//! Both limit the sum over all the network's guests. The policer's table is
//! `netdev novacron-<network>` (ours by name, as the network's `inet` table); it is deleted
//! at stop, not left to the bridge's deletion (a kernel may keep a netdev chain whose device
//! is gone, and bind it again to a new device of that name).

use std::fmt::Write as _;

use novacron_domain::model::BandwidthRate;

use super::nft::{self, NftError};
use super::nic_rules;

/// The named counter of frames the policer dropped.
pub const POLICER_COUNTER: &str = "over_limit";

/// The policer's ruleset. Applying it (re)creates exactly our netdev table in one
/// transaction (the leading `table` + `delete table` pair, as the network's `inet` table).
pub fn policer_ruleset(network: &str, bridge: &str, outbound: &BandwidthRate) -> String {
    let t = nft::table_name(network);
    let mut r = format!(
        "# novacrond: network '{network}', outbound limit on bridge '{bridge}'. Generated; changed only by novacrond.\n\
         table netdev {t}\n\
         delete table netdev {t}\n\
         table netdev {t} {{\n\
         \tcounter {POLICER_COUNTER} {{\n\
         \t}}\n\
         \tchain from_guests {{\n\
         \t\ttype filter hook ingress device \"{bridge}\" priority filter; policy accept;\n"
    );
    let _ = writeln!(
        r,
        "\t\t{} counter name \"{POLICER_COUNTER}\" drop",
        nic_rules::limit_over(outbound)
    );
    r.push_str("\t}\n}\n");
    r
}

/// Applies a ruleset from [`policer_ruleset`]. Blocking.
pub fn apply_policer(ruleset: &str, network: &str) -> Result<(), NftError> {
    nft::run(
        &["-f", "-"],
        Some(ruleset),
        &format!("apply the policer table of '{network}'"),
    )
    .map(drop)
}

/// Whether the policer table of `network` exists. Blocking.
pub fn policer_exists(network: &str) -> Result<bool, NftError> {
    let out = nft::run(&["list", "tables", "netdev"], None, "list netdev tables")?;
    let want = format!("table netdev {}", nft::table_name(network));
    Ok(out.lines().any(|l| l.trim() == want))
}

/// The owner of the policer table of `network`: ours when its chain is bound to `bridge`.
/// Blocking.
pub fn policer_owner(network: &str, bridge: &str) -> Result<nft::Owner, NftError> {
    nft::owner("netdev", network, &format!("device \"{bridge}\""))
}

/// Deletes the policer table of `network` on `bridge`, if there is one bound to that bridge
/// (one bound elsewhere is another daemon's network of the same name). Blocking.
pub fn delete_policer(network: &str, bridge: &str) -> Result<(), NftError> {
    match policer_owner(network, bridge)? {
        nft::Owner::Ours => {}
        nft::Owner::Absent => return Ok(()),
        nft::Owner::Elsewhere => {
            return Err(NftError {
                what: format!("delete the policer table of '{network}'"),
                message: format!(
                "table netdev {} is bound to another device than '{bridge}': not ours, left alone",
                nft::table_name(network)
            ),
            })
        }
    }
    nft::run(
        &["delete", "table", "netdev", &nft::table_name(network)],
        None,
        &format!("delete the policer table of '{network}'"),
    )
    .map(drop)
}

/// Packets the policer of `network` dropped (for tests and metrics). Blocking.
pub fn policer_drops(network: &str) -> Result<u64, NftError> {
    let what = "list the policer's counter";
    let out = nft::run(
        &[
            "-j",
            "list",
            "counter",
            "netdev",
            &nft::table_name(network),
            POLICER_COUNTER,
        ],
        None,
        what,
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| NftError {
        what: what.into(),
        message: e.to_string(),
    })?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o.get("counter")?.get("packets")?.as_u64())
        .unwrap_or(0))
}
