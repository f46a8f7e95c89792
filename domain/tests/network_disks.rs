//! Network disks (`<disk type='network'>`) and `<interface><driver>`: what is accepted comes
//! back out unchanged; what is not is refused naming the node (and the reason) or the field.

use novacron_domain::model::*;
use novacron_domain::{DomainConfig, XmlError};

fn doc(dev: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>t</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    {dev}
  </devices>
</domain>
"
    )
}

fn net_disk(source: &str, extra: &str) -> String {
    format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>{source}\
         <target dev='vda' bus='virtio'/>{extra}</disk>"
    )
}

#[track_caller]
fn rejects(xml: &str, needle: &str) -> XmlError {
    let err = DomainConfig::from_xml(xml).expect_err("must be rejected");
    let msg = err.to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert_eq!(err.line(), Some(9), "{msg}");
    err
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
fn every_protocol_is_read_as_written() {
    let cases = [
        (
            "<source protocol='nbd' name='exp'><host name='127.0.0.1' port='10810'/></source>",
            NetSource {
                protocol: NetProtocol::Nbd,
                name: Some("exp".into()),
                hosts: vec![NetHost::Tcp {
                    name: "127.0.0.1".into(),
                    port: Some(10810),
                }],
            },
        ),
        (
            "<source protocol='nbd'><host transport='unix' socket='/run/x.sock'/></source>",
            NetSource {
                protocol: NetProtocol::Nbd,
                name: None,
                hosts: vec![NetHost::Unix {
                    socket: "/run/x.sock".into(),
                }],
            },
        ),
        (
            "<source protocol='rbd' name='p/i'><host name='a'/><host name='b' port='1'/></source>",
            NetSource {
                protocol: NetProtocol::Rbd,
                name: Some("p/i".into()),
                hosts: vec![
                    NetHost::Tcp {
                        name: "a".into(),
                        port: None,
                    },
                    NetHost::Tcp {
                        name: "b".into(),
                        port: Some(1),
                    },
                ],
            },
        ),
    ];
    for (src, want) in cases {
        let cfg = DomainConfig::from_xml(&doc(&net_disk(src, ""))).expect(src);
        assert_eq!(
            cfg.devices.disks[0].source,
            Some(DiskSource::Network(want)),
            "{src}"
        );
        let back = DomainConfig::from_xml(&cfg.to_xml()).expect("written form parses");
        assert_eq!(back, cfg, "{}", cfg.to_xml());
        assert_eq!(DomainConfig::from_json(&cfg.to_json()).expect("json"), cfg);
        cfg.validate().expect("valid");
    }
}

#[test]
fn credentials_are_refused_with_the_reason() {
    for (src, at) in [
        (
            "<source protocol='rbd' name='p/i'><host name='m'/><auth username='admin'>\
             <secret type='ceph' uuid='2ec115d7-3a88-3ceb-bc12-0ac909a6fd87'/></auth></source>",
            "domain/devices/disk/source/auth",
        ),
        (
            "<source protocol='iscsi' name='iqn.x:y/1'><host name='h'/></source>\
             <auth username='u'><secret type='iscsi' usage='x'/></auth>",
            "domain/devices/disk/auth",
        ),
    ] {
        let e = rejects(&doc(&net_disk(src, "")), at);
        assert!(matches!(e, XmlError::NotSupported { .. }), "{e:?}");
        assert!(e.to_string().contains("secret store"), "{e}");
    }
}

#[test]
fn unsupported_source_shapes_are_named() {
    let cases = [
        (
            "<source protocol='gluster' name='v/i'><host name='h'/></source>",
            "unsupported value 'gluster' for domain/devices/disk/source@protocol",
        ),
        (
            "<source protocol='nbd' tls='yes'><host name='h'/></source>",
            "unsupported attribute domain/devices/disk/source@tls",
        ),
        (
            "<source protocol='http' name='x' query='a=b'><host name='h'/></source>",
            "unsupported attribute domain/devices/disk/source@query",
        ),
        (
            "<source protocol='iscsi' name='iqn.x:y/1'><host name='h' transport='rdma'/></source>",
            "unsupported value 'rdma' for domain/devices/disk/source/host@transport",
        ),
        (
            "<source protocol='http' name='x'><host transport='unix' socket='/s'/></source>",
            "unsupported value 'unix' for domain/devices/disk/source/host@transport",
        ),
        (
            "<source protocol='rbd' name='p/i'><host name='h'/><snapshot name='s'/></source>",
            "unsupported element <snapshot>",
        ),
        (
            "<source protocol='https' name='x'><host name='h'/><ssl verify='no'/></source>",
            "unsupported element <ssl>",
        ),
        (
            "<source protocol='nbd'/>",
            "a nbd source names exactly one <host>",
        ),
        (
            "<source protocol='nbd'><host name='a'/><host name='b'/></source>",
            "a nbd source names exactly one <host>",
        ),
        (
            "<source protocol='http'><host name='a'/></source>",
            "missing attribute name",
        ),
        (
            "<source protocol='nbd'><host name='a' port='70000'/></source>",
            "domain/devices/disk/source/host@port",
        ),
    ];
    for (src, needle) in cases {
        rejects(&doc(&net_disk(src, "")), needle);
    }
}

#[test]
fn network_disk_rules() {
    let http = "<source protocol='http' name='a.img'><host name='h'/></source>";
    invalid(
        &doc(&net_disk(http, "")),
        "devices.disks[0].readonly",
        "QEMU reads HTTP images only",
    );
    DomainConfig::from_xml(&doc(&net_disk(http, "<readonly/>")))
        .unwrap()
        .validate()
        .expect("a read-only http disk is fine");
    invalid(
        &doc(
            "<disk type='network' device='disk'><driver name='qemu' type='raw' io='threads'/>\
             <source protocol='nbd'><host name='h'/></source><target dev='vda' bus='virtio'/></disk>",
        ),
        "devices.disks[0].driver.io",
        "io mode on a network disk",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='iscsi' name='iqn.x:y/lun'><host name='h'/></source>",
            "",
        )),
        "devices.disks[0].source.name",
        "not an iSCSI 'target/lun' name",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='rbd' name='img@snap'><host name='h'/></source>",
            "",
        )),
        "devices.disks[0].source.name",
        "not an rbd 'pool/image'",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='nbd' name='a b'><host name='h'/></source>",
            "",
        )),
        "devices.disks[0].source.name",
        "contains ' '",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='nbd'><host name='evil/host'/></source>",
            "",
        )),
        "devices.disks[0].source.hosts[0].name",
        "contains '/'",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='nbd'><host name='h' port='0'/></source>",
            "",
        )),
        "devices.disks[0].source.hosts[0].port",
        "outside 1..=65535",
    );
    invalid(
        &doc(&net_disk(
            "<source protocol='nbd'><host transport='unix' socket='rel.sock'/></source>",
            "",
        )),
        "devices.disks[0].source.hosts[0].socket",
        "absolute path",
    );
}

fn nic(model: &str, driver: &str) -> String {
    format!(
        "<interface type='user'><mac address='52:54:00:00:00:01'/>\
         <model type='{model}'/>{driver}</interface>"
    )
}

#[test]
fn nic_driver_is_read_written_and_checked() {
    let xml = doc(&nic(
        "virtio",
        "<driver name='qemu' queues='1' rx_queue_size='512' tx_queue_size='1024'/>",
    ));
    let cfg = DomainConfig::from_xml(&xml).unwrap();
    assert_eq!(
        cfg.devices.interfaces[0].driver,
        Some(NicDriver {
            name: Some(NicBackend::Qemu),
            queues: Some(1),
            rx_queue_size: Some(512),
            tx_queue_size: Some(1024),
        })
    );
    assert_eq!(DomainConfig::from_xml(&cfg.to_xml()).unwrap(), cfg);
    cfg.validate().expect("valid");
    for (attr, needle) in [
        ("txmode='iothread'", "driver@txmode"),
        ("packed='on'", "driver@packed"),
        ("name='vfio'", "unsupported value 'vfio'"),
    ] {
        let e = DomainConfig::from_xml(&doc(&nic("virtio", &format!("<driver {attr}/>"))))
            .expect_err(attr);
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = DomainConfig::from_xml(&doc(&nic("virtio", "<driver><host csum='off'/></driver>")))
        .expect_err("offload switches");
    assert!(e.to_string().contains("unsupported element <host>"), "{e}");
    invalid(
        &doc(&nic("e1000e", "<driver name='qemu'/>")),
        "devices.interfaces[0].driver",
        "driver settings on a e1000e NIC",
    );
    invalid(
        &doc(&nic("virtio", "<driver queues='4'/>")),
        "devices.interfaces[0].driver.queues",
        "more than one queue on a user-mode NIC",
    );
    invalid(
        &doc(&nic("virtio", "<driver rx_queue_size='300'/>")),
        "devices.interfaces[0].driver.rx_queue_size",
        "300 is not 256, 512 or 1024",
    );
    invalid(
        &doc(&nic("virtio", "<driver tx_queue_size='2048'/>")),
        "devices.interfaces[0].driver.tx_queue_size",
        "2048 is not 256, 512 or 1024",
    );
}

/// The JSON front-end skips the XML reader's shape checks: validation repeats them.
#[test]
fn json_network_disks_get_the_same_shape_rules() {
    let cfg = DomainConfig::from_xml(&doc(&net_disk(
        "<source protocol='http' name='a'><host name='h'/></source>",
        "<readonly/>",
    )))
    .unwrap();
    let json = cfg.to_json();
    let bad = |from: &str, to: &str, path: &str, needle: &str| {
        assert!(json.contains(from), "{json}");
        let c = DomainConfig::from_json(&json.replacen(from, to, 1)).expect("json parses");
        let e = c.validate().expect_err("invalid");
        assert!(
            e.0.iter()
                .any(|x| x.path == path && x.to_string().contains(needle)),
            "no {path}: {needle} in {e}"
        );
    };
    bad(
        "\"name\": \"a\"",
        "\"name\": null",
        "devices.disks[0].source.name",
        "empty",
    );
    bad(
        "\"hosts\": [",
        "\"hosts\": [{\"transport\": \"tcp\", \"name\": \"x\", \"port\": null}, ",
        "devices.disks[0].source.hosts",
        "exactly one host",
    );
    let mut c = cfg.clone();
    c.devices.disks[0].source = Some(DiskSource::Network(NetSource {
        protocol: NetProtocol::Http,
        name: Some("a".into()),
        hosts: vec![NetHost::Unix {
            socket: "/s".into(),
        }],
    }));
    let e = c.validate().expect_err("unix socket for http");
    assert!(
        e.0.iter().any(|x| x.path == "devices.disks[0].source.hosts"
            && x.to_string().contains("a unix socket for http (nbd only)")),
        "{e}"
    );
}
