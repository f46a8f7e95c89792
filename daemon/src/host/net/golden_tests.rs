//! Golden files for what we hand to nft and dnsmasq, per network type. Regenerate with
//! `NOVACRON_BLESS=1 cargo test -p novacrond --lib golden` after a deliberate change, and
//! read the diff.

use std::path::{Path, PathBuf};

use novacron_domain::network::{parse_network, ForwardMode};

use super::{dnsmasq, firewall_probe, nft};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/host/net/golden")
        .join(name);
    if std::env::var_os("NOVACRON_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs (NOVACRON_BLESS=1 to accept)",
        path.display()
    );
}

const NAT: &str = "<network><name>lab</name><forward mode='nat'/><bridge name='ncbr3'/>\
    <domain name='lab.example'/><dns><forwarder addr='192.0.2.53'/>\
    <host ip='10.20.0.5'><hostname>db</hostname></host></dns>\
    <ip address='10.20.0.1' prefix='24'><dhcp><range start='10.20.0.100' end='10.20.0.199'/>\
    <host mac='52:54:00:12:34:56' ip='10.20.0.10' name='web'/></dhcp></ip></network>";
const ROUTE: &str = "<network><name>routed</name><forward mode='route' dev='eth1'/>\
    <bridge name='ncbr4'/><ip address='10.30.0.1' prefix='16'><dhcp>\
    <range start='10.30.1.0' end='10.30.1.255'/></dhcp></ip></network>";
const ISOLATED: &str = "<network><name>iso</name><bridge name='ncbr5'/><dns enable='no'/>\
    <ip address='10.40.0.1' prefix='24'><dhcp><range start='10.40.0.2' end='10.40.0.9'/>\
    </dhcp></ip></network>";

fn check(xml: &str, stem: &str) {
    let n = parse_network(xml).unwrap();
    let bridge = n.bridge.as_ref().unwrap().name.clone();
    let rules = nft::ruleset(&nft::RulesetInput {
        network: &n.name,
        bridge: &bridge,
        mode: n.forward.mode,
        ip: n.ip.as_ref(),
        uplink: n.forward.dev.as_deref(),
    });
    golden(&format!("{stem}.nft"), &rules);
    let files = dnsmasq::Files::new(Path::new("/run/novacron/networks"), &n.name);
    let conf = dnsmasq::config(&n, &bridge, &files, "dnsmasq").unwrap();
    golden(&format!("{stem}.dnsmasq.conf"), &conf);
}

#[test]
fn golden_nat() {
    check(NAT, "nat");
}

#[test]
fn golden_route() {
    check(ROUTE, "route");
}

#[test]
fn golden_isolated() {
    let n = parse_network(ISOLATED).unwrap();
    assert_eq!(n.forward.mode, ForwardMode::Isolated);
    check(ISOLATED, "isolated");
}

#[test]
fn nft_accepts_every_golden_ruleset() {
    // `nft -c` parses and checks against the kernel without changing anything.
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("nft not installed; skipped");
        return;
    }
    for stem in ["nat", "route", "isolated"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/host/net/golden")
            .join(format!("{stem}.nft"));
        // `delete table` of a table that does not exist fails a check; the leading
        // `table` line creates it within the same transaction, so the file checks as is.
        let out = std::process::Command::new("nft")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{stem}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_probe_finds_dockers_forward_drop_and_names_the_fix() {
    let ruleset = "table ip filter {\n\tchain DOCKER-USER {\n\t}\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable inet novacron-lab {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable inet fw {\n\tchain fwd {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";
    let found = firewall_probe::forward_drops(ruleset);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].chain, "table ip filter chain FORWARD");
    assert!(found[0].fix.contains("DOCKER-USER"), "{found:?}");
}

/// The table of one tap: clean-traffic with the guest's addresses given and an outbound
/// limit; clean-traffic learning from DHCP; an outbound limit alone.
fn nic_tables() -> [(&'static str, String); 3] {
    use super::nic_rules::{ruleset, NicRules};
    use novacron_domain::model::BandwidthRate;
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let ips = ["10.20.0.10".parse().unwrap(), "10.20.0.11".parse().unwrap()];
    let limit = |burst| BandwidthRate {
        average: 128,
        peak: None,
        burst,
    };
    [
        (
            "nic-clean-traffic.nft",
            ruleset(&NicRules {
                ifname: "ncab12cd340",
                mac,
                clean_traffic: Some(&ips),
                outbound: Some(&limit(Some(1024))),
            }),
        ),
        (
            "nic-clean-traffic-learn.nft",
            ruleset(&NicRules {
                ifname: "ncab12cd341",
                mac,
                clean_traffic: Some(&[]),
                outbound: None,
            }),
        ),
        (
            "nic-outbound-limit.nft",
            ruleset(&NicRules {
                ifname: "ncab12cd342",
                mac,
                clean_traffic: None,
                outbound: Some(&limit(None)),
            }),
        ),
    ]
}

#[test]
fn golden_nic_filters_and_limits() {
    use novacron_domain::model::{Bandwidth, BandwidthRate};
    for (name, rules) in nic_tables() {
        golden(name, &rules);
    }
    let bw = Bandwidth {
        inbound: Some(BandwidthRate {
            average: 1000,
            peak: Some(5000),
            burst: Some(1024),
        }),
        outbound: Some(BandwidthRate {
            average: 128,
            peak: None,
            burst: None,
        }),
    };
    golden("nic-bandwidth.tc", &super::qos::batch("ncab12cd340", &bw));
    let inbound_only = Bandwidth {
        inbound: Some(BandwidthRate {
            average: 100_000,
            peak: None,
            burst: None,
        }),
        outbound: None,
    };
    golden(
        "nic-bandwidth-inbound.tc",
        &super::qos::batch("ncab12cd341", &inbound_only),
    );
    assert_eq!(super::qos::batch("x", &Bandwidth::default()), "");
}

#[test]
fn nft_accepts_the_nic_filters() {
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("nft not installed; skipped");
        return;
    }
    for (name, _) in nic_tables() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/host/net/golden")
            .join(name);
        let out = std::process::Command::new("nft")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A network's own limits on its bridge: the inbound htb class (the tap's, on the bridge)
/// and the outbound policer's netdev table, from the network XML.
fn network_limits() -> (String, String) {
    let n = parse_network(
        "<network><name>lab</name><forward mode='nat'/><bridge name='ncbr3'/>\
         <bandwidth><inbound average='1000' peak='2000' burst='256'/>\
         <outbound average='500' burst='1024'/></bandwidth>\
         <ip address='10.20.0.1' prefix='24'/></network>",
    )
    .unwrap();
    novacron_domain::network::check_network(&n).unwrap();
    let bw = n.bandwidth.as_ref().unwrap();
    (
        super::qos::batch("ncbr3", bw),
        super::net_qos::policer_ruleset("lab", "ncbr3", bw.outbound.as_ref().unwrap()),
    )
}

#[test]
fn golden_network_limits() {
    let (tc, nft) = network_limits();
    golden("net-bandwidth.tc", &tc);
    golden("net-outbound-limit.nft", &nft);
}

#[test]
fn nft_accepts_the_network_policer() {
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("nft not installed; skipped");
        return;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/host/net/golden/net-outbound-limit.nft");
    let out = std::process::Command::new("nft")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
