//! A NIC's host side: `<target dev>`, `<vlan><tag>`, `<link state>` and multi-queue taps.
//! Read as written, written back, checked (naming the field), and the argv QEMU gets for
//! one and several queues, with and without vhost-net descriptors (this build host has no
//! /dev/vhost-net: the vhostfds= form is covered here only).

use std::collections::BTreeMap;

use novacron_domain::{
    build_argv, Accel, CpuChoice, DomainConfig, LaunchContext, MonitorSocket, NetFd,
};

fn doc(nics: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>t</name>
  <uuid>6f3c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    {nics}
  </devices>
</domain>
"
    )
}

fn bridge_nic(mac: &str, extra: &str) -> String {
    format!(
        "<interface type='bridge'><mac address='{mac}'/><source bridge='br0'/>\
         <model type='virtio'/>{extra}</interface>"
    )
}

#[track_caller]
fn invalid(xml: &str, path: &str, needle: &str) {
    let cfg = DomainConfig::from_xml(xml).expect("parses");
    let e = cfg.validate().expect_err("must fail validation");
    let hit = e.0.iter().find(|x| x.path == path);
    let msg = hit.unwrap_or_else(|| panic!("no error at {path}; got: {e}"));
    assert!(msg.to_string().contains(needle), "{msg} lacks {needle:?}");
}

#[track_caller]
fn rejects(xml: &str, needle: &str) {
    let e = DomainConfig::from_xml(xml).expect_err("must be rejected");
    assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
}

#[test]
fn target_vlan_and_link_are_read_written_and_kept_in_json() {
    let xml = doc(&bridge_nic(
        "52:54:00:00:00:01",
        "<target dev='web-nic7'/><vlan><tag id='42'/></vlan><link state='down'/>\
         <driver name='vhost' queues='4'/>",
    ));
    let cfg = DomainConfig::from_xml(&xml).unwrap();
    let nic = &cfg.devices.interfaces[0];
    assert_eq!(nic.target_dev.as_deref(), Some("web-nic7"));
    assert_eq!(nic.vlan, Some(42));
    assert!(nic.link_down);
    assert_eq!(nic.driver.as_ref().and_then(|d| d.queues), Some(4));
    let out = cfg.to_xml();
    for part in [
        "<target dev=\"web-nic7\"/>",
        "<vlan>",
        "<tag id=\"42\"/>",
        "<link state=\"down\"/>",
    ] {
        assert!(
            out.contains(part) || out.contains(&part.replace('"', "'")),
            "{part} not in {out}"
        );
    }
    assert_eq!(DomainConfig::from_xml(&out).unwrap(), cfg);
    assert_eq!(DomainConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    cfg.clone().validate().expect("valid");
    // Absent, nothing is written (old definitions keep their exact form).
    let plain = DomainConfig::from_xml(&doc(&bridge_nic("52:54:00:00:00:01", ""))).unwrap();
    let out = plain.to_xml();
    assert!(!out.contains("<vlan") && !out.contains("<link") && !out.contains("<target"));
    assert!(
        !plain.to_json().contains("link_down"),
        "{}",
        plain.to_json()
    );
    // A host-generated name (a live XML's vnetN/macvtapN) is dropped, as libvirt does on
    // define; asked for in JSON it is refused.
    let live = DomainConfig::from_xml(&doc(&bridge_nic(
        "52:54:00:00:00:01",
        "<target dev='vnet7'/>",
    )))
    .unwrap();
    assert_eq!(live.devices.interfaces[0].target_dev, None);
    let json = cfg.to_json().replace("web-nic7", "macvtap3");
    let e = DomainConfig::from_json(&json)
        .unwrap()
        .validate()
        .expect_err("reserved");
    assert!(
        e.0.iter()
            .any(|x| x.path == "devices.interfaces[0].target_dev"
                && x.to_string().contains("reserved for generated names")),
        "{e}"
    );
    let up = doc(&bridge_nic("52:54:00:00:00:01", "<link state='up'/>"));
    assert!(!DomainConfig::from_xml(&up).unwrap().devices.interfaces[0].link_down);
}

#[test]
fn what_is_not_offered_is_refused_by_name() {
    // Trunks (several tags, trunk='yes', a native VLAN) are not offered.
    rejects(
        &doc(&bridge_nic(
            "52:54:00:00:00:01",
            "<vlan><tag id='42'/><tag id='43'/></vlan>",
        )),
        "<tag>",
    );
    rejects(
        &doc(&bridge_nic(
            "52:54:00:00:00:01",
            "<vlan trunk='yes'><tag id='42'/></vlan>",
        )),
        "trunk",
    );
    rejects(
        &doc(&bridge_nic(
            "52:54:00:00:00:01",
            "<vlan><tag id='42' nativeMode='untagged'/></vlan>",
        )),
        "nativeMode",
    );
    rejects(
        &doc(&bridge_nic("52:54:00:00:00:01", "<vlan></vlan>")),
        "<tag>",
    );
    rejects(
        &doc(&bridge_nic("52:54:00:00:00:01", "<link state='sideways'/>")),
        "sideways",
    );
    rejects(
        &doc(&bridge_nic(
            "52:54:00:00:00:01",
            "<target dev='vnet1' managed='no'/>",
        )),
        "managed",
    );
}

#[test]
fn bad_host_side_values_name_the_field() {
    invalid(
        &doc(&bridge_nic(
            "52:54:00:00:00:01",
            "<target dev='a-name-of-16-byte'/>",
        )),
        "devices.interfaces[0].target_dev",
        "longer than 15 bytes",
    );
    invalid(
        &doc(&bridge_nic("52:54:00:00:00:01", "<target dev='ta p'/>")),
        "devices.interfaces[0].target_dev",
        "contains ' '",
    );
    invalid(
        &doc(&format!(
            "{}{}",
            bridge_nic("52:54:00:00:00:01", "<target dev='web-nic7'/>"),
            bridge_nic("52:54:00:00:00:02", "<target dev='web-nic7'/>")
        )),
        "devices.interfaces[1].target_dev",
        "duplicate host link name 'web-nic7' (also devices.interfaces[0])",
    );
    invalid(
        &doc(
            "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/>\
             <target dev='web-nic7'/></interface>",
        ),
        "devices.interfaces[0].target_dev",
        "a host link name on a NIC without a host link",
    );
    for id in ["0", "4095"] {
        invalid(
            &doc(&bridge_nic(
                "52:54:00:00:00:01",
                &format!("<vlan><tag id='{id}'/></vlan>"),
            )),
            "devices.interfaces[0].vlan",
            "outside 1..=4094",
        );
    }
    invalid(
        &doc(
            "<interface type='direct'><mac address='52:54:00:00:00:01'/>\
             <source dev='eth9' mode='bridge'/><model type='virtio'/>\
             <vlan><tag id='5'/></vlan></interface>",
        ),
        "devices.interfaces[0].vlan",
        "a VLAN tag on a NIC that is not a bridge port",
    );
    invalid(
        &doc(
            "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/>\
             <driver queues='2'/></interface>",
        ),
        "devices.interfaces[0].driver.queues",
        "more than one queue on a user-mode NIC",
    );
    // Queues on a tap are fine now (one tap descriptor per queue).
    DomainConfig::from_xml(&doc(&bridge_nic(
        "52:54:00:00:00:01",
        "<driver queues='8'/>",
    )))
    .unwrap()
    .validate()
    .expect("multi-queue tap");
    // Each queue is a host descriptor opened before QEMU starts: bounded per NIC and per domain.
    invalid(
        &doc(&bridge_nic("52:54:00:00:00:01", "<driver queues='17'/>")),
        "devices.interfaces[0].driver.queues",
        "16",
    );
    let many: String = (0..5)
        .map(|i| bridge_nic(&format!("52:54:00:00:00:1{i}"), "<driver queues='16'/>"))
        .collect();
    invalid(&doc(&many), "devices.interfaces", "at most 64 per domain");
}

fn ctx(net_fds: BTreeMap<usize, NetFd>) -> LaunchContext {
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Fd(3),
        fd_sets: Vec::new(),
        runtime_dir: "/run/t".into(),
        memory_dir: None,
        serial_log: None,
        net_fds,
        vnc_display: None,
        spice_port: None,
        swtpm_socket: None,
        sandbox: false,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn net_args(xml: &str, fds: BTreeMap<usize, NetFd>) -> Vec<String> {
    let vd = DomainConfig::from_xml(xml).unwrap().validate().unwrap();
    let argv = build_argv(&vd, &ctx(fds)).expect("argv");
    argv.windows(2)
        .filter(|w| w[0] == "-netdev" || (w[0] == "-device" && w[1].contains("netdev=hostnet")))
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect()
}

#[test]
fn multi_queue_taps_reach_qemu_as_fd_lists() {
    let xml = doc(&format!(
        "{}{}{}",
        bridge_nic("52:54:00:00:00:01", "<driver name='vhost' queues='4'/>"),
        bridge_nic("52:54:00:00:00:02", "<driver name='vhost' queues='2'/>"),
        bridge_nic("52:54:00:00:00:03", "<driver name='qemu' queues='2'/>"),
    ));
    let fds = BTreeMap::from([
        // vhost-net where the host has it: one vhost descriptor per queue.
        (
            0,
            NetFd {
                taps: vec![20, 21, 22, 23],
                vhosts: vec![24, 25, 26, 27],
            },
        ),
        // This host: no /dev/vhost-net, QEMU's own backend.
        (
            1,
            NetFd {
                taps: vec![28, 29],
                vhosts: vec![],
            },
        ),
        // driver name='qemu' never gets vhost, even when opened.
        (
            2,
            NetFd {
                taps: vec![30, 31],
                vhosts: vec![32, 33],
            },
        ),
    ]);
    let args = net_args(&xml, fds);
    let want = [
        "-netdev tap,fds=20:21:22:23,id=hostnet0,vhost=on,vhostfds=24:25:26:27",
        "-device virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01,mq=on,vectors=10",
        "-netdev tap,fds=28:29,id=hostnet1",
        "-device virtio-net-pci,netdev=hostnet1,id=net1,mac=52:54:00:00:00:02,mq=on,vectors=6",
        "-netdev tap,fds=30:31,id=hostnet2",
        "-device virtio-net-pci,netdev=hostnet2,id=net2,mac=52:54:00:00:00:03,mq=on,vectors=6",
    ];
    let got: Vec<String> = args
        .iter()
        .map(|a| a.split(",bus=").next().unwrap_or(a).to_owned())
        .collect();
    assert_eq!(got, want);
    // One queue keeps the single-descriptor form.
    let one = net_args(
        &doc(&bridge_nic("52:54:00:00:00:01", "")),
        BTreeMap::from([(0, NetFd::single(20, Some(21)))]),
    );
    assert_eq!(one[0], "-netdev tap,fd=20,id=hostnet0,vhost=on,vhostfd=21");
}
