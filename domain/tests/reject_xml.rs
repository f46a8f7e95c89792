//! Every XML rejection path: the error must name the element/attribute path and its line.

use novacron_domain::{DomainConfig, XmlError};

const BASE: &str = "<domain type='kvm'>
  <name>t</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  @TOP@
  <devices>
    @DEV@
  </devices>
</domain>
";

fn doc(top: &str, dev: &str) -> String {
    BASE.replace("@TOP@", top).replace("@DEV@", dev)
}

#[track_caller]
fn rejects(xml: &str, needle: &str, line: u32) -> XmlError {
    let err = DomainConfig::from_xml(xml).expect_err("must be rejected");
    let msg = err.to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert_eq!(err.line(), Some(line), "wrong line in {msg:?}");
    assert!(
        msg.contains(&format!("line {line}")),
        "message lacks line: {msg}"
    );
    err
}

const DISK: &str = "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>";

#[test]
fn base_document_is_accepted() {
    let cfg = DomainConfig::from_xml(&doc("", DISK)).expect("base parses");
    cfg.validate().expect("base validates");
}

#[test]
fn unsupported_device_element() {
    let e = rejects(
        &doc("", "<smartcard mode='host'/>"),
        "unsupported element <smartcard> at domain/devices/smartcard (line 10)",
        10,
    );
    assert!(matches!(e, XmlError::UnsupportedElement { .. }));
}

#[test]
fn unsupported_top_level_element() {
    rejects(
        &doc("<sysinfo type='smbios'/>", ""),
        "<sysinfo> at domain/sysinfo",
        8,
    );
    rejects(
        &doc("<vcpus><vcpu id='0' enabled='yes'/></vcpus>", ""),
        "domain/vcpus",
        8,
    );
    rejects(
        &doc("<iothreadids><iothread id='1'/></iothreadids>", ""),
        "domain/iothreadids",
        8,
    );
}

#[test]
fn unsupported_hyperv_enlightenments_are_rejected_not_dropped() {
    let top = "<features>\n    <acpi/>\n    <hyperv mode='custom'>\n      <relaxed state='on'/><xmm_input state='on'/></hyperv>\n  </features>";
    rejects(
        &doc(top, ""),
        "unsupported element <xmm_input> at domain/features/hyperv/xmm_input",
        11,
    );
}

#[test]
fn qemu_commandline_passthrough_is_rejected() {
    let xml = doc("<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-foo'/></qemu:commandline>", "");
    rejects(&xml, "<qemu:commandline> at domain/qemu:commandline", 8);
}

#[test]
fn unsupported_attribute_with_indexed_path() {
    let second = "<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='stop'/><source file='/b.img'/><target dev='vdb' bus='virtio'/></disk>";
    let dev = format!("{DISK}\n    {second}");
    rejects(
        &doc("", &dev),
        "unsupported attribute domain/devices/disk[2]/driver@error_policy (line 11)",
        11,
    );
}

#[test]
fn unsupported_attribute_on_root() {
    let xml = BASE.replace("<domain type='kvm'>", "<domain type='kvm' foo='bar'>");
    rejects(&xml, "domain@foo", 1);
}

#[test]
fn unsupported_values() {
    let xen = DISK.replace("bus='virtio'", "bus='xen'");
    rejects(
        &doc("", &xen),
        "unsupported value 'xen' for domain/devices/disk/target@bus",
        10,
    );
    let vmdk = DISK.replace("type='raw'", "type='vmdk'");
    rejects(&doc("", &vmdk), "domain/devices/disk/driver@type", 10);
    rejects(
        &doc("", "<graphics type='rdp' autoport='yes'/>"),
        "'rdp' for domain/devices/graphics@type",
        10,
    );
    rejects(
        &doc(
            "",
            "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>",
        ),
        "domain/devices/interface@type",
        10,
    );
    rejects(
        &doc("", "<controller type='usb' index='0' model='nec-xhci'/>"),
        "domain/devices/controller@model",
        10,
    );
    rejects(
        &doc("", "<hostdev mode='subsystem' type='usb'/>"),
        "domain/devices/hostdev@type",
        10,
    );
    rejects(
        &doc("", "<audio id='1' type='pulseaudio'/>"),
        "domain/devices/audio@type",
        10,
    );
    rejects(
        &doc(
            "<cpu mode='custom' match='minimum'><model>qemu64</model></cpu>",
            "",
        ),
        "domain/cpu@match",
        8,
    );
    rejects(
        &doc("<cpu mode='host-passthrough' migratable='off'/>", ""),
        "domain/cpu@migratable",
        8,
    );
    rejects(
        &doc(
            "<numatune><memory mode='strict' placement='auto'/></numatune>",
            "",
        ),
        "domain/numatune/memory@placement",
        8,
    );
    rejects(
        &doc("<on_crash>coredump-destroy</on_crash>", ""),
        "domain/on_crash",
        8,
    );
    let tray = "<disk type='file' device='cdrom'><target dev='sda' bus='sata' tray='open'/></disk>";
    rejects(&doc("", tray), "domain/devices/disk/target@tray", 10);
    let xml = BASE.replace("<domain type='kvm'>", "<domain type='xen'>");
    rejects(&xml, "domain@type", 1);
}

#[test]
fn missing_required_parts() {
    let xml = BASE.replace("  <name>t</name>\n", "");
    let e = DomainConfig::from_xml(&xml).expect_err("no name");
    assert!(matches!(e, XmlError::Missing { .. }), "{e}");
    assert_eq!(e.path(), Some("domain/name"));
    rejects(
        &doc("", "<console type='unix'><target type='serial'/></console>"),
        "missing element <source> at domain/devices/console/source",
        10,
    );
    // Autoselected firmware keeps its NVRAM in the daemon's state directory: a path needs
    // an explicit loader.
    let xml = BASE.replace(
        "<os>",
        "<os firmware='efi'>\n    <nvram>/var/lib/x/VARS.fd</nvram>",
    );
    rejects(&xml, "explicit <loader>", 6);
    let xml = BASE.replace(
        "<type arch='x86_64' machine='q35'>hvm</type>",
        "<type>hvm</type>\n    <initrd>/boot/initrd</initrd>",
    );
    rejects(&xml, "<kernel> (required by <initrd>)", 7);
}

#[test]
fn duplicates() {
    let xml = BASE.replace("<name>t</name>", "<name>t</name><name>u</name>");
    let e = rejects(&xml, "domain/name[2] given more than once", 2);
    assert!(matches!(e, XmlError::Duplicate { .. }));
}

#[test]
fn invalid_values() {
    rejects(
        &doc("<uuid>not-a-uuid</uuid>", ""),
        "invalid value for domain/uuid (line 8)",
        8,
    );
    let bad_mac = "<interface type='user'><mac address='52:54:00:zz:00:01'/><model type='virtio'/></interface>";
    rejects(
        &doc("", bad_mac),
        "domain/devices/interface/mac@address",
        10,
    );
    let xml = BASE.replace("unit='MiB'", "unit='parsecs'");
    rejects(&xml, "domain/memory@unit", 3);
    let xml = BASE.replace(
        "<memory unit='MiB'>1024</memory>",
        "<memory unit='EiB'>100000</memory>",
    );
    let e = rejects(&xml, "overflows", 3);
    assert_eq!(e.path(), Some("domain/memory@unit"));
    let xml = BASE.replace("<vcpu>2</vcpu>", "<vcpu>many</vcpu>");
    rejects(&xml, "domain/vcpu", 4);
    rejects(&doc("<vcpu cpuset='3-1'>2</vcpu>", ""), "domain/vcpu", 8);
}

#[test]
fn malformed_xml() {
    let xml = BASE.replace("</os>", "");
    let e = DomainConfig::from_xml(&xml).expect_err("malformed");
    assert!(matches!(e, XmlError::Syntax { .. }), "{e}");
    let e = DomainConfig::from_xml("<domain type='kvm'>\n<name>a &bogus; b</name></domain>")
        .expect_err("entity");
    assert_eq!(e.line(), Some(2), "{e}");
    let e = DomainConfig::from_xml("<guest/>").expect_err("root");
    assert!(matches!(e, XmlError::NotADomain { .. }), "{e}");
}

#[test]
fn doctype_and_entity_expansion_are_refused() {
    let xml = "<?xml version='1.0'?>\n<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>\n<domain type='kvm'><name>&lol;</name></domain>";
    let e = DomainConfig::from_xml(xml).expect_err("doctype");
    assert!(e.to_string().contains("DOCTYPE"), "{e}");
    assert_eq!(e.line(), Some(2));
}

#[test]
fn size_and_depth_limits() {
    let big = format!(
        "<domain type='kvm'><description>{}</description></domain>",
        "x".repeat(novacron_domain::MAX_DOCUMENT_BYTES)
    );
    assert!(matches!(
        DomainConfig::from_xml(&big),
        Err(XmlError::TooLarge(_))
    ));
    let deep = format!(
        "<domain type='kvm'><metadata>{}{}</metadata></domain>",
        "<a>".repeat(100),
        "</a>".repeat(100)
    );
    let e = DomainConfig::from_xml(&deep).expect_err("deep");
    assert!(matches!(e, XmlError::TooDeep { .. }), "{e}");
    let deep = format!(
        "<domain type='kvm'><devices>{}{}</devices></domain>",
        "<x>".repeat(100),
        "</x>".repeat(100)
    );
    assert!(matches!(
        DomainConfig::from_xml(&deep),
        Err(XmlError::TooDeep { .. })
    ));
}

#[test]
fn runtime_only_nodes_are_accepted() {
    let dev = "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default' portid='x' bridge='virbr0'/><target dev='vnet0'/><model type='virtio'/><alias name='net0'/></interface>
    <serial type='pty'><source path='/dev/pts/4'/><target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>";
    let xml = doc("<resource><partition>/machine</partition></resource><seclabel type='dynamic' model='dac' relabel='yes'/>", dev)
        .replace("<domain type='kvm'>", "<domain type='kvm' id='7'>");
    let cfg = DomainConfig::from_xml(&xml).expect("accepted");
    assert_eq!(cfg.devices.interfaces.len(), 1);
    // ...and not re-emitted.
    let out = cfg.to_xml();
    for gone in [
        "vnet0",
        "portid",
        "/dev/pts/4",
        "alias",
        "seclabel",
        "partition",
        "id='7'",
    ] {
        assert!(!out.contains(gone), "{gone} leaked into {out}");
    }
}

#[test]
fn resource_with_guest_affecting_children_is_rejected() {
    rejects(
        &doc("<resource><fibrechannel appid='x'/></resource>", ""),
        "domain/resource/fibrechannel",
        8,
    );
}

#[test]
fn memtune_limits_parse_with_units_and_the_unsupported_ones_are_named() {
    let cfg = DomainConfig::from_xml(&doc(
        "<memtune><hard_limit unit='GiB'>2</hard_limit><soft_limit unit='MiB'>1536</soft_limit></memtune>",
        "",
    ))
    .expect("memtune parses");
    let t = cfg.memtune.as_ref().expect("memtune");
    assert_eq!(t.hard_limit_kib, Some(2 << 20));
    assert_eq!(t.soft_limit_kib, Some(1536 << 10));
    assert_eq!(DomainConfig::from_xml(&cfg.to_xml()).expect("again"), cfg);
    rejects(
        &doc(
            "<memtune><swap_hard_limit>1</swap_hard_limit></memtune>",
            "",
        ),
        "domain/memtune/swap_hard_limit",
        8,
    );
}

/// Issue 16: `<model name='ioh3420'/>` is another guest-visible device than the pcie-root-port;
/// it was accepted and dropped. Now it is kept (and built); a name we do not build is refused.
#[test]
fn controller_model_name_other_than_ours_is_refused() {
    let port = |name: &str| {
        format!(
            "<controller type='pci' index='0' model='pcie-root'/>\
             <controller type='pci' index='1' model='pcie-root-port'><model name='{name}'/></controller>"
        )
    };
    let cfg = DomainConfig::from_xml(&doc("", &port("pcie-root-port"))).expect("our device");
    assert_eq!(cfg.devices.controllers.len(), 2);
    let cfg = DomainConfig::from_xml(&doc("", &port("ioh3420"))).expect("ioh3420");
    assert!(cfg.to_xml().contains("ioh3420"), "{}", cfg.to_xml());
    let e = rejects(
        &doc("", &port("x3130-upstream")),
        "unsupported value 'x3130-upstream' for domain/devices/controller[2]/model@name (line 10)",
        10,
    );
    assert!(matches!(e, XmlError::UnsupportedValue { .. }));
    rejects(
        &doc(
            "",
            "<controller type='usb' index='0' model='qemu-xhci'><model name='nec-usb-xhci'/></controller>",
        ),
        "unsupported element <model> at domain/devices/controller/model",
        10,
    );
}

/// Issue 16: virt-install writes NUMA cells without `id`; libvirt numbers them by position.
/// The ids become explicit on the way out, and a cell out of order is still refused.
#[test]
fn numa_cells_without_id_are_numbered_by_position() {
    let cells = |a: &str, b: &str| {
        doc(
            &format!(
                "<cpu mode='custom'><model>qemu64</model><numa>\
                 <cell {a}cpus='0' memory='512' unit='MiB'/><cell {b}cpus='1' memory='512' unit='MiB'/>\
                 </numa></cpu>"
            ),
            "",
        )
    };
    let cfg = DomainConfig::from_xml(&cells("", "")).expect("cells without id");
    let ids: Vec<u32> = cfg
        .cpu
        .as_ref()
        .expect("cpu")
        .numa
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [0, 1]);
    let out = cfg.to_xml();
    assert!(out.contains("<cell id='1' cpus='1'"), "{out}");
    assert_eq!(DomainConfig::from_xml(&out).expect("re-parse"), cfg);
    cfg.validate().expect("valid");
    let swapped = DomainConfig::from_xml(&cells("id='1' ", "id='0' ")).expect("parses");
    assert!(
        swapped.validate().is_err(),
        "cells out of order must be refused"
    );
}
