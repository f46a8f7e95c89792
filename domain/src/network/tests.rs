use super::*;

const DEFAULT_XML: &str = "<network connections='1'>
  <name>default</name>
  <uuid>9a05da11-e96b-47f3-8253-a3a482e445f5</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:0a:cd:21'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='52:54:00:00:00:01' ip='192.168.122.10' name='web'/>
    </dhcp>
  </ip>
</network>";

fn parse(xml: &str) -> NetworkConfig {
    parse_network(xml).expect("parses")
}

fn roundtrip(n: &NetworkConfig) {
    let xml = network_xml(n);
    assert_eq!(&parse_network(&xml).expect("own XML parses"), n, "{xml}");
    let json = serde_json::to_string(n).expect("serializes");
    assert_eq!(&parse_network_json(&json).expect("own JSON parses"), n);
}

#[test]
fn libvirt_default_network_reads_and_round_trips() {
    let n = parse(DEFAULT_XML);
    assert_eq!(n.name, "default");
    assert_eq!(n.forward.mode, ForwardMode::Nat);
    assert_eq!(n.bridge.as_ref().map(|b| b.name.as_str()), Some("virbr0"));
    let ip = n.ip.as_ref().expect("ip");
    assert_eq!(ip.prefix, 24);
    assert_eq!(ip.network().to_string(), "192.168.122.0");
    let dhcp = ip.dhcp.as_ref().expect("dhcp");
    assert_eq!(dhcp.ranges.len(), 1);
    assert_eq!(dhcp.hosts[0].name.as_deref(), Some("web"));
    check_network(&n).expect("valid");
    roundtrip(&n);
}

#[test]
fn every_kind_round_trips() {
    for xml in [
        "<network><name>iso</name><bridge name='nciso0' stp='off'/><port isolated='yes'/>\
         <domain name='lab.example'/><dns enable='yes'><forwarder addr='10.9.9.9'/>\
         <host ip='10.1.0.5'><hostname>a</hostname><hostname>b.lab</hostname></host></dns>\
         <mtu size='9000'/><ip address='10.1.0.1' prefix='24'/></network>",
        "<network><name>r</name><forward mode='route' dev='eth0'/>\
         <ip address='10.2.0.1' prefix='16'><dhcp><range start='10.2.0.10' end='10.2.0.20'/>\
         </dhcp></ip></network>",
        "<network><name>hb</name><forward mode='bridge'/><bridge name='br0'/></network>",
        "<network><name>mv</name><forward mode='vepa'><interface dev='eth1'/></forward></network>",
        "<network><name>nodns</name><forward/><dns enable='no'/><ip address='10.3.0.1' prefix='24'/></network>",
    ] {
        let n = parse(xml);
        check_network(&n).unwrap_or_else(|e| panic!("{xml}: {e}"));
        roundtrip(&n);
    }
}

#[test]
fn kinds_are_derived_from_forward_and_bridge() {
    let hb =
        parse("<network><name>hb</name><forward mode='bridge'/><bridge name='br0'/></network>");
    assert_eq!(hb.kind(), NetworkKind::HostBridge("br0"));
    let mv = parse("<network><name>m</name><forward mode='private'><interface dev='eth1'/></forward></network>");
    assert_eq!(
        mv.kind(),
        NetworkKind::Direct {
            dev: "eth1",
            mode: ForwardMode::Private
        }
    );
    let iso = parse("<network><name>i</name><ip address='10.0.0.1' prefix='24'/></network>");
    assert_eq!(iso.kind(), NetworkKind::Managed(ForwardMode::Isolated));
}

#[test]
fn unknown_and_unsupported_nodes_are_refused_by_path() {
    for (xml, path) in [
        ("<network><name>a</name><bandwidth><inbound average='8' floor='4'/></bandwidth></network>", "network/bandwidth/inbound@floor"),
        ("<network><name>a</name><bandwidth><inbound peak='8'/></bandwidth></network>", "network/bandwidth/inbound@average"),
        ("<network><name>a</name><bandwidth><outbound average='fast'/></bandwidth></network>", "network/bandwidth/outbound@average"),
        ("<network><name>a</name><bandwidth><sideways average='8'/></bandwidth></network>", "network/bandwidth/sideways"),
        ("<network><name>a</name><ip address='1.2.3.1' prefix='24' family='ipv6'/></network>", "network/ip@family"),
        ("<network><name>a</name><forward mode='hostdev'/></network>", "network/forward@mode"),
        ("<network><name>a</name><forward><nat><port start='1' end='2'/></nat></forward></network>", "network/forward/nat/port@start"),
        ("<domain><name>a</name></domain>", "domain"),
    ] {
        let e = parse_network(xml).expect_err(xml);
        assert_eq!(e.path(), Some(path), "{xml}: {e}");
    }
}

fn details(n: &NetworkConfig) -> Vec<String> {
    check_network(n)
        .expect_err("invalid")
        .details()
        .iter()
        .map(|d| d.path.clone())
        .collect()
}

#[test]
fn bad_definitions_name_the_field() {
    let mut n = parse(DEFAULT_XML);
    n.bridge = Some(Bridge {
        name: "abcdefghijklmnop".into(),
        stp: true,
    });
    let e = check_network(&n).expect_err("long bridge");
    assert_eq!(e.details()[0].path, "bridge.name");
    assert!(e.to_string().contains("16 bytes"), "{e}");

    let mut n = parse(DEFAULT_XML);
    n.bridge = Some(Bridge {
        name: "a/b".into(),
        stp: true,
    });
    assert_eq!(details(&n), ["bridge.name"]);

    // Names that would break out of a quoted name in our nft rulesets, tc batches or
    // dnsmasq config, on every field that carries one there.
    for bad in [
        "br\"x", "br;x", "br#x", "br{x", "br}x", "br\nx", "br x", "brä", "br$x",
    ] {
        let mut n = parse(DEFAULT_XML);
        n.bridge = Some(Bridge {
            name: bad.into(),
            stp: true,
        });
        let e = check_network(&n).expect_err(bad);
        assert_eq!(e.details()[0].path, "bridge.name", "{bad:?}");
        assert!(e.to_string().contains("letters, digits"), "{e}");
        let mut n = parse(DEFAULT_XML);
        n.forward.dev = Some(bad.into());
        assert_eq!(details(&n), ["forward.dev"], "{bad:?}");
        let mut n =
            parse("<network><name>mv</name><forward mode='vepa'><interface dev='eth1'/></forward></network>");
        n.forward.interfaces[0] = bad.into();
        assert_eq!(details(&n), ["forward.interfaces[0]"], "{bad:?}");
    }
    let mut n = parse(DEFAULT_XML);
    n.bridge = Some(Bridge {
        name: "br-lan_0.1".into(),
        stp: true,
    });
    check_network(&n).expect("letters, digits, '-', '_' and '.'");
    // A definition stored before that rule keeps loading (held to the kernel's rule), so an
    // upgrade neither loses it nor tears its running network down.
    let mut n = parse(DEFAULT_XML);
    n.bridge = Some(Bridge {
        name: "br+1".into(),
        stp: true,
    });
    assert_eq!(details(&n), ["bridge.name"]);
    crate::network::check_stored_network(&n).expect("the kernel takes 'br+1'");
    n.bridge = Some(Bridge {
        name: "br/1".into(),
        stp: true,
    });
    crate::network::check_stored_network(&n).expect_err("the kernel refuses 'br/1'");

    let mut n = parse(DEFAULT_XML);
    if let Some(d) = n.ip.as_mut().and_then(|i| i.dhcp.as_mut()) {
        d.ranges[0].end = "192.168.123.5".parse().expect("ip");
        d.hosts[0].ip = "192.168.122.1".parse().expect("ip");
    }
    assert_eq!(
        details(&n),
        ["ip.dhcp.ranges[0].end", "ip.dhcp.hosts[0].ip"]
    );

    let mut n = parse(DEFAULT_XML);
    if let Some(i) = n.ip.as_mut() {
        i.address = "192.168.122.0".parse().expect("ip");
    }
    assert!(details(&n).contains(&"ip.address".to_owned()));

    let mut n = parse(DEFAULT_XML);
    n.name = "../x".into();
    assert_eq!(details(&n), ["name"]);

    let mut n = parse(DEFAULT_XML);
    n.ip = None;
    assert_eq!(details(&n), ["ip"]);
}

#[test]
fn overlapping_subnets_name_both() {
    let a = parse(DEFAULT_XML);
    let mut b = parse(
        "<network><name>b</name><forward/><ip address='192.168.122.129' prefix='25'/></network>",
    );
    let e = check_conflicts(&b, [&a], &[]).expect_err("overlap");
    assert!(e.to_string().contains("network 'default'"), "{e}");
    assert!(e.to_string().contains("192.168.122.128/25"), "{e}");
    let host = [HostSubnet {
        what: "address 10.5.0.2/16 on eth0".into(),
        network: "10.5.0.0".parse().expect("ip"),
        prefix: 16,
    }];
    b.ip = Some(IpConfig {
        address: "10.5.3.1".parse().expect("ip"),
        prefix: 24,
        dhcp: None,
    });
    let e = check_conflicts(&b, [&a], &host).expect_err("host overlap");
    assert!(e.to_string().contains("on eth0"), "{e}");
    b.ip = Some(IpConfig {
        address: "10.6.3.1".parse().expect("ip"),
        prefix: 24,
        dhcp: None,
    });
    check_conflicts(&b, [&a], &host).expect("free");
}

#[test]
fn json_refuses_unknown_fields() {
    let e = parse_network_json(r#"{"name":"a","forward":{"mode":"nat"},"bogus":1}"#)
        .expect_err("unknown");
    assert!(e.to_string().contains("bogus"), "{e}");
}

const LIMITED: &str = "<network><name>lim</name><forward mode='nat'/><bridge name='ncbr9'/>\
    <bandwidth><inbound average='1000' peak='5000' burst='1024'/><outbound average='128' burst='256'/>\
    </bandwidth><ip address='10.9.0.1' prefix='24'/></network>";

#[test]
fn a_network_bandwidth_reads_writes_and_round_trips() {
    let n = parse(LIMITED);
    let b = n.bandwidth.as_ref().expect("bandwidth");
    let i = b.inbound.as_ref().expect("inbound");
    assert_eq!((i.average, i.peak, i.burst), (1000, Some(5000), Some(1024)));
    let o = b.outbound.as_ref().expect("outbound");
    assert_eq!((o.average, o.peak, o.burst), (128, None, Some(256)));
    check_network(&n).expect("valid");
    roundtrip(&n);
    let xml = network_xml(&n);
    assert!(
        xml.contains(
            "  <bandwidth>\n    <inbound average='1000' peak='5000' burst='1024'/>\n    \
             <outbound average='128' burst='256'/>\n  </bandwidth>\n  <ip "
        ),
        "{xml}"
    );
    // One direction, an empty element (no limit), each on the other managed kinds.
    for (bw, kind) in [
        (
            "<bandwidth><outbound average='64'/></bandwidth>",
            "<forward mode='route'/>",
        ),
        ("<bandwidth/>", ""),
        ("<bandwidth><inbound average='4194303'/></bandwidth>", ""),
    ] {
        let x = format!(
            "<network><name>b</name>{kind}{bw}<ip address='10.8.0.1' prefix='24'/></network>"
        );
        let n = parse(&x);
        assert!(n.bandwidth.is_some(), "{x}");
        check_network(&n).unwrap_or_else(|e| panic!("{x}: {e}"));
        roundtrip(&n);
    }
    // Without one, the JSON has no key (definitions stored before it read the same).
    let plain = parse(DEFAULT_XML);
    let json = serde_json::to_string(&plain).expect("json");
    assert!(!json.contains("bandwidth"), "{json}");
    let j = parse_network_json(
        r#"{"name":"j","forward":{"mode":"isolated"},"bandwidth":{"inbound":{"average":10,"burst":4}}}"#,
    )
    .expect("json with bandwidth");
    assert_eq!(
        j.bandwidth.and_then(|b| b.inbound).map(|r| r.average),
        Some(10)
    );
    let e = parse_network_json(
        r#"{"name":"j","forward":{"mode":"nat"},"bandwidth":{"inbound":{"average":1,"floor":1}}}"#,
    )
    .expect_err("floor");
    assert!(e.to_string().contains("floor"), "{e}");
}

#[test]
fn bad_network_bandwidth_names_the_field() {
    let with = |bw: &str| {
        parse(&LIMITED.replace(
            "<bandwidth><inbound average='1000' peak='5000' burst='1024'/><outbound average='128' burst='256'/></bandwidth>",
            bw,
        ))
    };
    for (bw, paths, says) in [
        (
            "<bandwidth><inbound average='0'/></bandwidth>",
            vec!["bandwidth.inbound.average"],
            "value 0 is outside 1..=4194303",
        ),
        (
            "<bandwidth><inbound average='4194304'/></bandwidth>",
            vec!["bandwidth.inbound.average"],
            "outside",
        ),
        (
            "<bandwidth><inbound average='100' peak='50'/></bandwidth>",
            vec!["bandwidth.inbound.peak"],
            "peak 50 is below average 100",
        ),
        (
            "<bandwidth><inbound average='100' peak='99999999'/></bandwidth>",
            vec!["bandwidth.inbound.peak"],
            "outside",
        ),
        (
            "<bandwidth><outbound average='100' peak='200'/></bandwidth>",
            vec!["bandwidth.outbound.peak"],
            "policed at one rate",
        ),
        (
            "<bandwidth><outbound average='100' burst='0'/></bandwidth>",
            vec!["bandwidth.outbound.burst"],
            "value 0",
        ),
        (
            "<bandwidth><inbound average='1' burst='4194304'/></bandwidth>",
            vec!["bandwidth.inbound.burst"],
            "outside",
        ),
        (
            "<bandwidth><inbound average='0'/><outbound average='0'/></bandwidth>",
            vec!["bandwidth.inbound.average", "bandwidth.outbound.average"],
            "",
        ),
    ] {
        let n = with(bw);
        assert_eq!(details(&n), paths, "{bw}");
        let e = check_network(&n).expect_err(bw);
        assert!(e.to_string().contains(says), "{bw}: {e}");
    }
    // libvirt's rule: only on a bridge the network makes.
    for (xml, says) in [
        (
            "<network><name>hb</name><forward mode='bridge'/><bridge name='br0'/>\
             <bandwidth><inbound average='10'/></bandwidth></network>",
            "'br0' is not ours",
        ),
        (
            "<network><name>mv</name><forward mode='vepa'><interface dev='eth1'/></forward>\
             <bandwidth><outbound average='10'/></bandwidth></network>",
            "macvtap network (forward mode 'vepa')",
        ),
        (
            "<network><name>mb</name><forward mode='bridge'><interface dev='eth1'/></forward>\
             <bandwidth/></network>",
            "forward mode 'bridge'",
        ),
    ] {
        let n = parse(xml);
        assert_eq!(details(&n), ["bandwidth"], "{xml}");
        let e = check_network(&n).expect_err(xml);
        assert!(e.to_string().contains(says), "{xml}: {e}");
    }
}
