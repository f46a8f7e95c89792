//! A guest tap's own nftables table, `bridge novacron-nic-<tap>`: libvirt's `clean-traffic`
//! filter and the policer of its outbound bandwidth. One table per tap: made with the tap
//! before QEMU gets it, deleted with it, so a stopped guest leaves no rule and nothing shared
//! is ever edited.
//!
//! The filter, from the guest's tap, as libvirt's clean-traffic (no-mac-spoofing,
//! no-ip-spoofing, no-arp-spoofing, no-other-l2-traffic, qemu-announce-self): frames must
//! carry the guest's MAC; ARP must name its MAC and one of its addresses (or 0.0.0.0, a
//! probe); IPv4 must come from one of its addresses, except a DHCP DISCOVER/REQUEST from
//! 0.0.0.0; RARP (QEMU's announce-self) passes; every other ethertype is dropped. Each kind
//! of drop has a named counter. The guest's addresses are the filter's `IP` parameters, or,
//! without any, learned from the DHCP server's replies (BOOTREPLY `yiaddr`) as they go out
//! to the tap: the network's dnsmasq (locally sent, hook output) or a DHCP server on the
//! bridge (forward).
//!
//! The policer (libvirt's outbound `<bandwidth>`, what the guest sends): libvirt uses tc's
//! police action on the tap's ingress; kernels without `act_police` (this CI's has none,
//! nor sfq) cannot run it, while nftables' `limit` is a policer every nftables kernel has,
//! on the very frames the tap hands the bridge. Its token bucket holds one second of the
//! rate plus `burst`; libvirt's default burst is one second of the rate, so with no
//! `burst` the two agree, and a larger `burst` is added on top of it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use novacron_domain::model::BandwidthRate;

use super::nft::{self, NftError};

/// The table prefix; every table with it is ours (and names a tap).
pub const TABLE_PREFIX: &str = "novacron-nic-";

pub fn table_name(ifname: &str) -> String {
    format!("{TABLE_PREFIX}{ifname}")
}

/// The named counters of frames the filter dropped, by what was spoofed.
pub const FILTER_COUNTERS: [&str; 4] = ["mac_spoof", "arp_spoof", "ip_spoof", "other_l2"];
/// The named counter of frames the policer dropped.
pub const LIMIT_COUNTER: &str = "over_limit";

pub struct NicRules<'a> {
    /// The guest's tap (host side).
    pub ifname: &'a str,
    /// The guest's MAC (the NIC's `<mac>`, not the tap's host-side one).
    pub mac: [u8; 6],
    /// clean-traffic with these IPv4 addresses (empty: learned from DHCP); None: no filter.
    pub clean_traffic: Option<&'a [Ipv4Addr]>,
    /// The outbound limit (libvirt units: kB/s, KiB).
    pub outbound: Option<&'a BandwidthRate>,
}

impl NicRules<'_> {
    /// Whether the tap needs a table at all.
    pub fn needed(&self) -> bool {
        self.clean_traffic.is_some() || self.outbound.is_some()
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// nft's policer for an outbound limit (`limit rate over ... burst ...`, matching what is
/// over it), shared with a network's policer ([`super::net_qos`]). Bytes, exactly: tc's kbps
/// (libvirt's unit) is 1000 bytes/s, nft's kbytes 1024.
pub fn limit_over(o: &BandwidthRate) -> String {
    let rate = o.average * 1000;
    let extra = o.burst.map_or(0, |kib| (kib * 1024).saturating_sub(rate));
    format!("limit rate over {rate} bytes/second burst {extra} bytes")
}

/// The ruleset of one tap's table. Applying it (re)creates exactly that table in one
/// transaction (the leading `table` + `delete table` pair), so a repeat never duplicates.
pub fn ruleset(i: &NicRules<'_>) -> String {
    let t = table_name(i.ifname);
    let dev = i.ifname;
    let mac = mac_str(i.mac);
    let mut r = format!(
        "# novacrond: tap '{dev}' (guest MAC {mac}). Generated; changed only by novacrond.\n\
         table bridge {t}\n\
         delete table bridge {t}\n\
         table bridge {t} {{\n"
    );
    let mut counters: Vec<&str> = Vec::new();
    if i.outbound.is_some() {
        counters.push(LIMIT_COUNTER);
    }
    if i.clean_traffic.is_some() {
        counters.extend(FILTER_COUNTERS);
    }
    for c in counters {
        let _ = writeln!(r, "\tcounter {c} {{\n\t}}");
    }
    if let Some(ips) = i.clean_traffic {
        r.push_str("\tset ip4 {\n\t\ttype ipv4_addr\n");
        if ips.is_empty() {
            // Filled from the packet path by the learn rule; bounded, so a flood of replies
            // cannot grow it.
            r.push_str("\t\tsize 16\n\t\tflags dynamic\n");
        } else {
            let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
            let _ = writeln!(r, "\t\telements = {{ {} }}", list.join(", "));
        }
        r.push_str("\t}\n");
    }
    let _ = write!(
        r,
        "\tchain from_guest {{\n\
         \t\ttype filter hook prerouting priority filter; policy accept;\n\
         \t\tiifname != \"{dev}\" accept\n"
    );
    if let Some(o) = i.outbound {
        let _ = writeln!(
            r,
            "\t\t{} counter name \"{LIMIT_COUNTER}\" drop",
            limit_over(o)
        );
    }
    if i.clean_traffic.is_some() {
        let _ = write!(
            r,
            "\t\tether saddr != {mac} counter name \"mac_spoof\" drop\n\
             \t\tether type arp arp saddr ether != {mac} counter name \"arp_spoof\" drop\n\
             \t\tether type arp arp saddr ip 0.0.0.0 accept\n\
             \t\tether type arp arp saddr ip != @ip4 counter name \"arp_spoof\" drop\n\
             \t\tether type arp accept\n\
             \t\tether type 0x8035 accept\n\
             \t\tether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept\n\
             \t\tether type ip ip saddr != @ip4 counter name \"ip_spoof\" drop\n\
             \t\tether type ip accept\n\
             \t\tcounter name \"other_l2\" drop\n"
        );
    }
    r.push_str("\t}\n");
    if i.clean_traffic.is_some_and(|ips| ips.is_empty()) {
        // BOOTREPLY (op 2, the UDP payload's first byte) sent to the tap by this host (the
        // network's dnsmasq): its yiaddr (payload bytes 16..20) becomes the guest's address.
        // Only the output hook: a reply bridged from another port could be forged by a
        // neighbour to hand the guest someone else's address (a guest behind an outside DHCP
        // server names its addresses with IP parameters instead).
        let _ = write!(
            r,
            "\tchain learn_local {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\toifname \"{dev}\" udp sport 67 udp dport 68 @th,64,8 2 add @ip4 {{ @th,192,32 }}\n\
             \t}}\n"
        );
    }
    r.push_str("}\n");
    r
}

/// Applies a ruleset from [`ruleset`]. Blocking.
pub fn apply(ruleset: &str, ifname: &str) -> Result<(), NftError> {
    nft::run(
        &["-f", "-"],
        Some(ruleset),
        &format!("apply the table of tap '{ifname}'"),
    )
    .map(drop)
}

/// The taps our tap tables name (`bridge novacron-nic-<tap>`). Blocking.
pub fn tables() -> Result<Vec<String>, NftError> {
    let out = nft::run(&["list", "tables", "bridge"], None, "list bridge tables")?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table bridge "))
        .filter_map(|t| t.strip_prefix(TABLE_PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Deletes the table of `ifname`, if there is one. Blocking.
pub fn delete(ifname: &str) -> Result<(), NftError> {
    if !tables()?.iter().any(|t| t == ifname) {
        return Ok(());
    }
    nft::run(
        &["delete", "table", "bridge", &table_name(ifname)],
        None,
        &format!("delete the table of tap '{ifname}'"),
    )
    .map(drop)
}

/// Packets each named counter of `ifname`'s table dropped (for tests and metrics). Blocking.
pub fn drops(ifname: &str) -> Result<Vec<(String, u64)>, NftError> {
    let out = nft::run(
        &[
            "-j",
            "list",
            "counters",
            "table",
            "bridge",
            &table_name(ifname),
        ],
        None,
        "list the tap table's counters",
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| NftError {
        what: "list the tap table's counters".into(),
        message: e.to_string(),
    })?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = o.get("counter")?;
            Some((c["name"].as_str()?.to_owned(), c["packets"].as_u64()?))
        })
        .collect())
}

/// The addresses the learn rule put in `ifname`'s set (empty without a table or set).
/// Blocking.
pub fn learned(ifname: &str) -> Result<Vec<Ipv4Addr>, NftError> {
    if !tables()?.iter().any(|t| t == ifname) {
        return Ok(Vec::new());
    }
    let what = "list the tap table's learned addresses";
    let out = match nft::run(
        &["-j", "list", "set", "bridge", &table_name(ifname), "ip4"],
        None,
        what,
    ) {
        Ok(o) => o,
        // A table without the set (no clean-traffic filter).
        Err(_) => return Ok(Vec::new()),
    };
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| NftError {
        what: what.into(),
        message: e.to_string(),
    })?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("set")?.get("elem")?.as_array().cloned())
        .flatten()
        .filter_map(|e| {
            // A plain address, or `{"elem": {"val": "a.b.c.d", ...}}` with timeouts.
            let s = e.as_str().or_else(|| e["elem"]["val"].as_str())?;
            s.parse().ok()
        })
        .collect())
}

/// Replaces the running tap's table by the one of `rules` (a live bandwidth change) in one
/// transaction, the addresses learned so far kept; deletes it when `rules` need none.
/// Blocking.
pub fn replace(rules: &NicRules<'_>) -> Result<(), NftError> {
    let keep = match rules.clean_traffic {
        Some([]) => learned(rules.ifname)?,
        _ => Vec::new(),
    };
    if !rules.needed() {
        return delete(rules.ifname);
    }
    let mut text = ruleset(rules);
    if !keep.is_empty() {
        let list: Vec<String> = keep.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(
            text,
            "add element bridge {} ip4 {{ {} }}",
            table_name(rules.ifname),
            list.join(", ")
        );
    }
    apply(&text, rules.ifname)
}
