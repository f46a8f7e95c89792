//! `<filesystem>` (9p and virtiofs), and the refusals around it: virtiofs without shared guest
//! RAM and file-mapped `<memory>` devices (nvdimm), each named with its reason.

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

#[test]
fn a_9p_share_is_read_as_written_and_round_trips() {
    let xml =
        doc("<filesystem type='mount'><source dir='/srv/a'/><target dir='tag'/></filesystem>");
    let cfg = DomainConfig::from_xml(&xml).unwrap();
    assert_eq!(
        cfg.devices.filesystems,
        vec![Filesystem {
            driver: FsDriver::Path,
            access_mode: FsAccessMode::Passthrough,
            source: "/srv/a".into(),
            target: "tag".into(),
            readonly: false,
            address: None,
        }]
    );
    let back = DomainConfig::from_xml(&cfg.to_xml()).unwrap();
    assert_eq!(back, cfg);
    assert!(
        cfg.to_xml().contains("<driver type='path'/>"),
        "{}",
        cfg.to_xml()
    );
    cfg.validate().expect("valid");
}

fn shared(dev: &str) -> String {
    doc(dev).replace(
        "<vcpu>",
        "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n  <vcpu>",
    )
}

const VIRTIOFS: &str =
    "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>\
     <source dir='/srv/a'/><target dir='tag'/></filesystem>";

#[test]
fn virtiofs_with_shared_memory_is_read_validated_and_round_trips() {
    let cfg = DomainConfig::from_xml(&shared(VIRTIOFS)).expect("parses");
    assert_eq!(cfg.devices.filesystems[0].driver, FsDriver::Virtiofs);
    let mb = cfg.memory_backing.as_ref().expect("memoryBacking");
    assert_eq!(mb.access, Some(MemoryAccess::Shared));
    assert_eq!(mb.source, Some(MemorySource::Memfd));
    let back = DomainConfig::from_xml(&cfg.to_xml()).unwrap();
    assert_eq!(back, cfg);
    assert!(cfg.to_xml().contains("<driver type='virtiofs'/>"));
    cfg.validate().expect("valid");
}

#[test]
fn virtiofs_without_shared_memory_is_refused_by_name() {
    // Parsed (the document is well-formed libvirt), refused by validation: virtiofsd maps
    // guest RAM, private RAM cannot be mapped by another process.
    let cfg = DomainConfig::from_xml(&doc(VIRTIOFS)).expect("parses");
    let e = cfg.validate().expect_err("private RAM");
    assert!(
        e.0.iter().any(|x| x.path == "devices.filesystems[0].driver"
            && x.to_string().contains("shared guest memory")),
        "{e}"
    );
    // Shared access on anonymous RAM is not shareable either (refused on memory_backing).
    let cfg = DomainConfig::from_xml(&doc(VIRTIOFS).replace(
        "<vcpu>",
        "<memoryBacking><source type='anonymous'/><access mode='shared'/></memoryBacking><vcpu>",
    ))
    .expect("parses");
    let e = cfg.validate().expect_err("anonymous");
    assert!(e.0.iter().any(|x| x.path == "memory_backing.access"), "{e}");
    // virtiofsd passes ownership through and exports read-write only.
    let cfg = DomainConfig::from_xml(&shared(
        "<filesystem type='mount' accessmode='mapped'><driver type='virtiofs'/>\
         <source dir='/srv/a'/><target dir='tag'/><readonly/></filesystem>",
    ))
    .expect("parses");
    let e = cfg.validate().expect_err("mapped, readonly");
    for p in [
        "devices.filesystems[0].access_mode",
        "devices.filesystems[0].readonly",
    ] {
        assert!(e.0.iter().any(|x| x.path == p), "no {p} in {e}");
    }
}

#[test]
fn file_mapped_memory_devices_are_refused_with_the_reason() {
    let e = DomainConfig::from_xml(&doc(
        "<memory model='nvdimm'><target><size unit='KiB'>524288</size><node>0</node></target></memory>",
    ))
    .expect_err("nvdimm");
    assert!(matches!(e, XmlError::NotSupported { .. }), "{e:?}");
    assert!(
        e.to_string().contains("domain/devices/memory") && e.to_string().contains("nvdimm"),
        "{e}"
    );
}

#[test]
fn unsupported_filesystem_shapes_are_named() {
    for (fs, needle) in [
        (
            "<filesystem type='block'><source dev='/dev/sda'/><target dir='t'/></filesystem>",
            "unsupported value 'block' for domain/devices/filesystem@type",
        ),
        (
            "<filesystem type='mount'><binary path='/bin/sh'/><source dir='/a'/><target dir='t'/></filesystem>",
            "unsupported element <binary>",
        ),
        (
            "<filesystem type='mount'><driver type='path' wrpolicy='immediate'/><source dir='/a'/><target dir='t'/></filesystem>",
            "unsupported attribute domain/devices/filesystem/driver@wrpolicy",
        ),
        (
            "<filesystem type='mount' accessmode='weird'><source dir='/a'/><target dir='t'/></filesystem>",
            "unsupported value 'weird'",
        ),
        (
            "<filesystem type='mount'><target dir='t'/></filesystem>",
            "missing element <source>",
        ),
    ] {
        let e = DomainConfig::from_xml(&doc(fs)).expect_err(fs);
        assert!(e.to_string().contains(needle), "{e}\nwanted: {needle}");
        assert_eq!(e.line(), Some(9), "{e}");
    }
}

#[test]
fn filesystem_rules() {
    let cfg = DomainConfig::from_xml(&doc(
        "<filesystem type='mount'><source dir='rel'/><target dir='a tag'/></filesystem>\
         <filesystem type='mount'><source dir='/b'/><target dir='a tag'/></filesystem>\
         <filesystem type='mount'><source dir='/c'/><target dir='abcdefghijabcdefghijabcdefghij12'/></filesystem>",
    ))
    .unwrap();
    let e = cfg.validate().expect_err("invalid");
    let at = |p: &str, needle: &str| {
        assert!(
            e.0.iter()
                .any(|x| x.path == p && x.to_string().contains(needle)),
            "no {p}: {needle} in {e}"
        )
    };
    at("devices.filesystems[0].source", "absolute path");
    at("devices.filesystems[0].target", "contains ' '");
    at(
        "devices.filesystems[1].target",
        "duplicate mount tag 'a tag'",
    );
    at("devices.filesystems[2].target", "longer than 31 bytes");
}

#[test]
fn json_cannot_sneak_virtiofs_past_the_shared_memory_rule() {
    let cfg = DomainConfig::from_xml(&doc(
        "<filesystem type='mount'><source dir='/srv/a'/><target dir='tag'/></filesystem>",
    ))
    .unwrap();
    let json = cfg
        .to_json()
        .replace("\"driver\": \"path\"", "\"driver\": \"virtiofs\"");
    let c = DomainConfig::from_json(&json).expect("json parses");
    assert_eq!(c.devices.filesystems[0].driver, FsDriver::Virtiofs);
    let e = c
        .validate()
        .expect_err("virtiofs without shared RAM refused");
    assert!(
        e.0.iter().any(|x| x.path == "devices.filesystems[0].driver"
            && x.to_string().contains("shared guest memory")),
        "{e}"
    );
}
