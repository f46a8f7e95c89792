//! `<interface>`'s `<bandwidth>`, `<filterref>` and `<port isolated>`: read into the model,
//! written back unchanged (XML and JSON), and refused with the field or node named when
//! wrong.

use std::net::Ipv4Addr;

use novacron_domain::model::*;
use novacron_domain::DomainConfig;

fn doc(nic: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>t</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    {nic}
  </devices>
</domain>
"
    )
}

fn nic(ty: &str, source: &str, extra: &str) -> String {
    doc(&format!(
        "<interface type='{ty}'><mac address='52:54:00:aa:bb:01'/>{source}\
         <model type='virtio'/>{extra}</interface>"
    ))
}

const BR: &str = "<source bridge='br0'/>";

#[test]
fn bandwidth_filterref_and_port_are_read_and_written_back() {
    let xml = nic(
        "bridge",
        BR,
        "<bandwidth><inbound average='1000' peak='5000' burst='1024'/>\
         <outbound average='128'/></bandwidth>\
         <filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.5'/>\
         <parameter name='IP' value='10.0.0.6'/></filterref><port isolated='yes'/>",
    );
    let cfg = DomainConfig::from_xml(&xml).unwrap();
    let n = &cfg.devices.interfaces[0];
    assert_eq!(
        n.bandwidth,
        Some(Bandwidth {
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
        })
    );
    assert_eq!(
        n.filterref,
        Some(FilterRef {
            filter: TrafficFilter::CleanTraffic,
            ips: vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)],
        })
    );
    assert!(n.port_isolated);
    cfg.clone().validate().unwrap();
    let out = cfg.to_xml();
    assert!(
        out.contains("<inbound average='1000' peak='5000' burst='1024'/>")
            && out.contains("<filterref filter='clean-traffic'>")
            && out.contains("<parameter name='IP' value='10.0.0.6'/>")
            && out.contains("<port isolated='yes'/>"),
        "{out}"
    );
    assert_eq!(DomainConfig::from_xml(&out).unwrap(), cfg);
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(
        json.contains(r#""filterref":{"filter":"clean-traffic","ips":["10.0.0.5","10.0.0.6"]}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<DomainConfig>(&json).unwrap(), cfg);

    // A bare filter (addresses learned from DHCP) and a NIC without any of it.
    let bare = nic(
        "network",
        "<source network='default'/>",
        "<filterref filter='clean-traffic'/>",
    );
    let cfg = DomainConfig::from_xml(&bare).unwrap();
    cfg.clone().validate().unwrap();
    assert!(cfg.to_xml().contains("<filterref filter='clean-traffic'/>"));
    let plain = DomainConfig::from_xml(&nic("bridge", BR, "")).unwrap();
    let n = &plain.devices.interfaces[0];
    assert_eq!(
        (&n.bandwidth, &n.filterref, n.port_isolated),
        (&None, &None, false)
    );
    let json = serde_json::to_string(&plain).unwrap();
    assert!(
        !json.contains("bandwidth") && !json.contains("filterref"),
        "{json}"
    );
}

#[track_caller]
fn rejects(extra: &str, needle: &str) {
    let err = DomainConfig::from_xml(&nic("bridge", BR, extra)).expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

#[test]
fn what_the_host_cannot_honour_is_refused_by_name() {
    rejects(
        "<bandwidth><inbound average='10' floor='5'/></bandwidth>",
        "inbound@floor",
    );
    rejects("<bandwidth><inbound peak='10'/></bandwidth>", "average");
    rejects("<filterref filter='no-mac-spoofing'/>", "clean-traffic");
    rejects(
        "<filterref filter='clean-traffic'><parameter name='CTRL_IP_LEARNING' value='any'/></filterref>",
        "CTRL_IP_LEARNING",
    );
    rejects(
        "<filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.300'/></filterref>",
        "10.0.0.300",
    );
    rejects("<port isolated='maybe'/>", "maybe");
}

#[track_caller]
fn invalid(xml: &str, path: &str, needle: &str) {
    let cfg = DomainConfig::from_xml(xml).expect("parses");
    let e = cfg.validate().expect_err("must fail validation");
    let hit = e.0.iter().find(|x| x.path == path);
    let msg = hit.unwrap_or_else(|| panic!("no error at {path}; got: {e}"));
    assert!(msg.to_string().contains(needle), "{msg} lacks {needle:?}");
}

#[test]
fn bad_values_and_impossible_nics_fail_validation_naming_the_field() {
    let p = "devices.interfaces[0]";
    invalid(
        &nic(
            "bridge",
            BR,
            "<bandwidth><inbound average='0'/></bandwidth>",
        ),
        &format!("{p}.bandwidth.inbound.average"),
        "outside",
    );
    invalid(
        &nic(
            "bridge",
            BR,
            "<bandwidth><inbound average='100' peak='50'/></bandwidth>",
        ),
        &format!("{p}.bandwidth.inbound.peak"),
        "below average",
    );
    invalid(
        &nic(
            "bridge",
            BR,
            "<bandwidth><outbound average='100' peak='200'/></bandwidth>",
        ),
        &format!("{p}.bandwidth.outbound.peak"),
        "policed",
    );
    invalid(
        &nic(
            "bridge",
            BR,
            "<bandwidth><outbound average='100' burst='99999999'/></bandwidth>",
        ),
        &format!("{p}.bandwidth.outbound.burst"),
        "outside",
    );
    invalid(
        &nic(
            "bridge",
            BR,
            "<filterref filter='clean-traffic'><parameter name='IP' value='224.0.0.1'/></filterref>",
        ),
        &format!("{p}.filterref.ips[0]"),
        "unicast",
    );
    let direct = "<source dev='eth9' mode='bridge'/>";
    invalid(
        &nic(
            "direct",
            direct,
            "<bandwidth><inbound average='100'/></bandwidth>",
        ),
        &format!("{p}.bandwidth"),
        "tap on a bridge",
    );
    invalid(
        &nic("direct", direct, "<filterref filter='clean-traffic'/>"),
        &format!("{p}.filterref"),
        "tap on a bridge",
    );
    invalid(
        &nic("user", "", "<port isolated='yes'/>"),
        &format!("{p}.port_isolated"),
        "tap on a bridge",
    );
}
