//! Our nftables: one table per network (`inet novacron-<network>`), written as a ruleset text
//! and applied with `nft -f -` as one transaction. Text, not a netlink nft crate: no
//! well-kept Rust nftables-over-netlink crate exists (rustables and nftnl-rs are thin or
//! stale), the text is what an operator reads in `nft list ruleset`, and it is golden-tested.
//! Nothing outside our own tables is ever flushed or changed.

use std::io::Write as _;
use std::process::{Command, Stdio};

use novacron_domain::network::{ForwardMode, IpConfig};

/// The nft table of a network.
pub fn table_name(network: &str) -> String {
    format!("novacron-{network}")
}

/// What the ruleset needs to know.
pub struct RulesetInput<'a> {
    pub network: &'a str,
    pub bridge: &'a str,
    pub mode: ForwardMode,
    pub ip: Option<&'a IpConfig>,
    /// `forward@dev`: the only uplink nat/route traffic may leave by.
    pub uplink: Option<&'a str>,
}

/// The ruleset for one network. Applying it (re)creates exactly our table: the leading
/// `table`+`delete table` pair makes it idempotent within one transaction.
/// Carried by every table [`ruleset`] writes (its `comment`): a table a daemon adopts without
/// it was written by an earlier daemon with other rules, and is written again. Changed
/// whenever the rules change.
pub const RULESET_VERSION: &str = "novacron ruleset 2";

pub fn ruleset(i: &RulesetInput<'_>) -> String {
    let t = table_name(i.network);
    let br = i.bridge;
    let mut r = format!(
        "# novacrond: network '{net}'. Generated; changed only by novacrond.\n\
         table inet {t}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
         \tcomment \"{RULESET_VERSION}\"\n",
        net = i.network
    );
    // DHCP and DNS from the guests to dnsmasq on the bridge.
    r.push_str(&format!(
        "\tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{br}\" udp dport {{ 53, 67 }} counter accept\n\
         \t\tiifname \"{br}\" tcp dport 53 counter accept\n\
         \t}}\n"
    ));
    r.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    // Guest to guest on our bridge, first, for every mode (libvirt's LIBVIRT_FWX `-i br -o br
    // -j ACCEPT`): with br_netfilter loaded and bridge-nf-call-iptables on (Docker loads it),
    // bridged frames pass this hook too, and the rejects below would cut guests on one
    // bridge apart (isolated networks always; nat/route with `forward dev`, and IPv6 or
    // off-subnet addresses everywhere). Keeping guests apart is the bridge's port isolation,
    // which acts before this hook.
    r.push_str(&format!(
        "\t\tiifname \"{br}\" oifname \"{br}\" counter accept\n"
    ));
    let out = i
        .uplink
        .map(|u| format!("oifname \"{u}\" "))
        .unwrap_or_default();
    let inn = i
        .uplink
        .map(|u| format!("iifname \"{u}\" "))
        .unwrap_or_default();
    let ct = match i.mode {
        // Only replies come back in through the masquerade.
        ForwardMode::Nat => "ct state established,related ",
        _ => "",
    };
    if let (ForwardMode::Nat | ForwardMode::Route, Some(ip)) = (i.mode, i.ip) {
        let net = format!("{}/{}", ip.network(), ip.prefix);
        r.push_str(&format!(
            "\t\tiifname \"{br}\" {out}ip saddr {net} counter accept\n\
             \t\t{inn}oifname \"{br}\" ip daddr {net} {ct}counter accept\n"
        ));
    }
    // Whatever is left (isolated networks, spoofed sources, other uplinks) goes nowhere.
    r.push_str(&format!(
        "\t\tiifname \"{br}\" counter reject\n\
         \t\toifname \"{br}\" counter reject\n\
         \t}}\n"
    ));
    if let (ForwardMode::Nat, Some(ip)) = (i.mode, i.ip) {
        let net = format!("{}/{}", ip.network(), ip.prefix);
        r.push_str(&format!(
            "\tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {net} ip daddr 224.0.0.0/24 return\n\
             \t\tip saddr {net} ip daddr 255.255.255.255 return\n\
             \t\tip saddr {net} ip daddr != {net} {out}counter masquerade\n\
             \t}}\n"
        ));
    }
    r.push_str("}\n");
    r
}

#[derive(Debug, thiserror::Error)]
#[error("nft {what}: {message}")]
pub struct NftError {
    pub what: String,
    pub message: String,
}

pub(crate) fn run(args: &[&str], stdin: Option<&str>, what: &str) -> Result<String, NftError> {
    let e = |m: String| NftError {
        what: what.into(),
        message: m,
    };
    let mut c = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|x| e(format!("cannot run nft (package nftables): {x}")))?;
    if let (Some(text), Some(mut s)) = (stdin, c.stdin.take()) {
        s.write_all(text.as_bytes())
            .map_err(|x| e(format!("writing the ruleset: {x}")))?;
    }
    let out = c.wait_with_output().map_err(|x| e(x.to_string()))?;
    if !out.status.success() {
        return Err(e(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a ruleset from [`ruleset`] (blocking: call from spawn_blocking).
pub fn apply(ruleset: &str, network: &str) -> Result<(), NftError> {
    run(
        &["-f", "-"],
        Some(ruleset),
        &format!("apply the table of '{network}'"),
    )
    .map(|_| ())
}

/// Whether our table of `network` carries this daemon's [`RULESET_VERSION`]. Blocking.
pub fn table_is_current(network: &str) -> Result<bool, NftError> {
    let t = table_name(network);
    let listed = run(
        &["list", "table", "inet", &t],
        None,
        &format!("list table inet {t}"),
    )?;
    Ok(listed.contains(&format!("comment \"{RULESET_VERSION}\"")))
}

/// Whether our table of `network` exists.
pub fn table_exists(network: &str) -> Result<bool, NftError> {
    let out = run(&["list", "tables"], None, "list tables")?;
    let want = format!("table inet {}", table_name(network));
    Ok(out.lines().any(|l| l.trim() == want))
}

/// Whose a table of ours by name is: the name alone is not enough, two daemons on one host
/// (or a stale definition) may each have a network of that name, on different bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// No table of that name.
    Absent,
    /// It names `bridge` (`needle`), so it is this network's.
    Ours,
    /// A table of that name about another bridge: not ours to touch.
    Elsewhere,
}

/// The owner of table `family novacron-<network>`, judged by `needle` in its listing.
pub(crate) fn owner(family: &str, network: &str, needle: &str) -> Result<Owner, NftError> {
    let out = run(&["list", "tables", family], None, "list tables")?;
    let want = format!("table {family} {}", table_name(network));
    if !out.lines().any(|l| l.trim() == want) {
        return Ok(Owner::Absent);
    }
    let t = table_name(network);
    let listed = run(
        &["list", "table", family, &t],
        None,
        &format!("list table {family} {t}"),
    )?;
    Ok(if listed.contains(needle) || orphaned(family, &listed) {
        Owner::Ours
    } else {
        Owner::Elsewhere
    })
}

/// A netdev table bound to no device: its bridge is gone (a kernel drops a deleted device
/// from a netdev chain, or the chain with it), so the table acts on nothing. Ours to
/// delete or replace, or the network could never start again.
fn orphaned(family: &str, listed: &str) -> bool {
    family == "netdev" && !listed.contains("device")
}

/// The owner of our `inet` table of `network` on `bridge` (its rules name the bridge).
pub fn table_owner(network: &str, bridge: &str) -> Result<Owner, NftError> {
    owner("inet", network, &format!("iifname \"{bridge}\""))
}

/// Deletes our table of `network` on `bridge`, if it is there and about that bridge (one
/// about another bridge is another daemon's network of the same name).
pub fn delete_table(network: &str, bridge: &str) -> Result<(), NftError> {
    match table_owner(network, bridge)? {
        Owner::Ours => {}
        Owner::Absent => return Ok(()),
        Owner::Elsewhere => {
            return Err(NftError {
                what: format!("delete the table of '{network}'"),
                message: format!(
                    "table inet {} is about another bridge than '{bridge}': not ours, left alone",
                    table_name(network)
                ),
            })
        }
    }
    run(
        &["delete", "table", "inet", &table_name(network)],
        None,
        &format!("delete the table of '{network}'"),
    )
    .map(|_| ())
}

/// The whole ruleset, as `nft list ruleset` prints it (for the probe and tests).
pub fn list_ruleset() -> Result<String, NftError> {
    run(&["list", "ruleset"], None, "list the ruleset")
}

#[cfg(test)]
mod owner_tests {
    #[test]
    fn a_netdev_table_bound_to_no_device_is_orphaned() {
        let bound = "table netdev novacron-x {\n\tchain ingress {\n\t\ttype filter hook ingress device \"br1\" priority -500; policy accept;\n\t}\n}";
        let unbound = "table netdev novacron-x {\n\tchain ingress {\n\t\ttype filter hook ingress priority -500; policy accept;\n\t}\n}";
        assert!(!super::orphaned("netdev", bound));
        assert!(super::orphaned("netdev", unbound));
        assert!(super::orphaned("netdev", "table netdev novacron-x {\n}"));
        assert!(!super::orphaned("inet", "table inet novacron-x {\n}"));
    }
}
