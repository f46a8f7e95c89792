//! Every validation rule: the error names the field path and what is wrong.

use novacron_domain::model::*;
use novacron_domain::validate::Problem;
use novacron_domain::{DomainConfig, ValidationErrors};

fn corpus(name: &str) -> DomainConfig {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/corpus/{name}.xml"));
    DomainConfig::from_xml(&std::fs::read_to_string(p).expect("read")).expect("parse")
}

#[track_caller]
fn fails(cfg: DomainConfig, path: &str, needle: &str) -> ValidationErrors {
    let e = cfg.validate().expect_err("must fail validation");
    let hit = e.0.iter().find(|x| x.path == path);
    let hit = hit.unwrap_or_else(|| panic!("no error at {path}; got: {e}"));
    let msg = hit.to_string();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    e
}

fn linux() -> DomainConfig {
    corpus("linux-guest")
}
fn numa() -> DomainConfig {
    corpus("pinned-numa-hugepages")
}

#[test]
fn names_become_file_names() {
    for bad in [
        "../etc",
        "a/b",
        ".hidden",
        "",
        "with space",
        "tab\tname",
        "ünï",
        "semi;colon",
        "a,b",
    ] {
        let mut c = linux();
        c.name = bad.into();
        fails(c, "name", "");
    }
    let mut c = linux();
    c.name = "x".repeat(65);
    fails(c, "name", "longer than 64");
    let mut c = linux();
    c.name = ".x".into();
    fails(c, "name", "must not start with '.'");
    let mut c = linux();
    c.name = "ok-name_1.2+x".into();
    c.validate().expect("valid name");
}

#[test]
fn uuid_and_text() {
    let mut c = linux();
    c.uuid = Some(Uuid([0; 16]));
    fails(c, "uuid", "nil");
    let mut c = linux();
    c.title = Some("two\nlines".into());
    fails(c, "title", "contains");
    let mut c = linux();
    c.metadata = Some("<a><b></a>".into());
    fails(c, "metadata", "not well-formed");
}

#[test]
fn memory_sizes() {
    let mut c = linux();
    c.memory.memory_kib = 0;
    fails(c, "memory.memory_kib", "outside 1024..=");
    let mut c = linux();
    c.memory.current_kib = Some(c.memory.memory_kib + 1);
    fails(c, "memory.current_kib", "is above <memory>");
    let mut c = linux();
    c.memory.max = Some(MaxMemory {
        size_kib: 1024,
        slots: 4,
    });
    fails(c, "memory.max.size_kib", "is below <memory>");
    let mut c = linux();
    c.memory.max = Some(MaxMemory {
        size_kib: c.memory.memory_kib * 2,
        slots: 0,
    });
    fails(c, "memory.max.slots", "outside 1..=255");
    let mut c = linux();
    c.memory.memory_kib = u64::MAX;
    fails(c, "memory.memory_kib", "outside");
}

#[test]
fn vcpus_and_topology() {
    let mut c = linux();
    c.vcpu.count = 0;
    fails(c, "vcpu.count", "outside 1..=4096");
    let mut c = linux();
    c.vcpu.count = 5000;
    fails(c, "vcpu.count", "outside 1..=4096");
    let mut c = linux();
    c.vcpu.current = Some(9);
    fails(c, "vcpu.current", "outside 1..=4");
    let mut c = linux();
    c.vcpu.count = 6;
    fails(
        c,
        "cpu.topology",
        "sockets*dies*cores*threads = 4 but vcpu count is 6",
    );
    let mut c = linux();
    if let Some(cpu) = &mut c.cpu {
        cpu.topology = Some(CpuTopology {
            sockets: u32::MAX,
            dies: Some(u32::MAX),
            cores: 2,
            threads: 2,
        });
    }
    fails(c, "cpu.topology", "overflow");
}

#[test]
fn vcpupin_beyond_vcpu_count() {
    let mut c = numa();
    if let Some(t) = &mut c.cputune {
        t.vcpupins.push(VcpuPin {
            vcpu: 8,
            cpuset: "1".parse().expect("set"),
        });
    }
    fails(
        c,
        "cputune.vcpupins[8].vcpu",
        "vcpu 8 but the domain has 8 vcpus",
    );
    let mut c = numa();
    if let Some(t) = &mut c.cputune {
        t.vcpupins[1].vcpu = 0;
    }
    fails(c, "cputune.vcpupins[1].vcpu", "duplicate pin for vcpu 0");
    let mut c = numa();
    if let Some(t) = &mut c.cputune {
        t.iothreadpins[0].iothread = 3;
    }
    fails(
        c,
        "cputune.iothreadpins[0].iothread",
        "iothread 3 but the domain has 2",
    );
    let mut c = numa();
    if let Some(t) = &mut c.cputune {
        t.quota = Some(5);
    }
    fails(c, "cputune.quota", "outside");
}

#[test]
fn numa_cells_must_add_up() {
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[1].cpus = "4-6".parse().expect("set");
    fails(c, "cpu.numa", "vcpu 7 is in no NUMA cell");
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[1].cpus = "3-7".parse().expect("set");
    fails(c, "cpu.numa[1].cpus", "vcpu 3 in two cells");
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[1].memory_kib = 1 << 20;
    fails(
        c,
        "cpu.numa",
        "cell memory adds up to 9437184 KiB but <memory> is 16777216 KiB",
    );
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[1].cpus = "4-8".parse().expect("set");
    fails(c, "cpu.numa[1].cpus", "vcpu 8 (domain has 8)");
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[1].id = 5;
    fails(c, "cpu.numa[1].id", "cell ids must be 0..2");
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[0].distances[1].id = 7;
    fails(c, "cpu.numa[0].distances[1].id", "cell 7");
    let mut c = numa();
    c.cpu.as_mut().expect("cpu").numa[0].distances[0].value = 20;
    fails(c, "cpu.numa[0].distances[0].value", "outside 10..=10");
}

#[test]
fn numatune_refers_to_cells() {
    let mut c = numa();
    c.numatune.as_mut().expect("nt").memnodes[1].cellid = 4;
    fails(
        c,
        "numatune.memnodes[1].cellid",
        "guest NUMA cell 4 (2 defined)",
    );
}

#[test]
fn memory_backing_combinations() {
    let mut c = numa();
    c.memory_backing.as_mut().expect("mb").source = Some(MemorySource::File);
    fails(c, "memory_backing.source", "hugepages with source 'file'");
    let mut c = numa();
    c.memory_backing.as_mut().expect("mb").hugepages = Some(vec![HugePage {
        size_kib: 3000,
        nodeset: None,
    }]);
    fails(
        c,
        "memory_backing.hugepages[0].size_kib",
        "not a huge page size",
    );
    let mut c = numa();
    let cpu = c.cpu.as_mut().expect("cpu");
    cpu.numa[0].memory_kib += 2048;
    cpu.numa[1].memory_kib -= 2048;
    fails(
        c,
        "cpu.numa[0].memory_kib",
        "not a multiple of the 1048576 KiB huge page size",
    );
    let mut c = numa();
    c.memory_backing.as_mut().expect("mb").hugepages = Some(vec![HugePage {
        size_kib: 2048,
        nodeset: Some("0-2".parse().expect("set")),
    }]);
    fails(
        c,
        "memory_backing.hugepages[0].nodeset",
        "guest NUMA cell 2",
    );
    let mut c = linux();
    c.memory_backing = Some(MemoryBacking {
        access: Some(MemoryAccess::Shared),
        source: Some(MemorySource::Anonymous),
        ..Default::default()
    });
    fails(
        c,
        "memory_backing.access",
        "shared access with anonymous memory",
    );
}

#[test]
fn vhost_user_needs_shared_memory() {
    let mut c = numa();
    for cell in &mut c.cpu.as_mut().expect("cpu").numa {
        cell.mem_access = None;
    }
    c.memory_backing.as_mut().expect("mb").access = None;
    fails(
        c,
        "devices.interfaces[0].source",
        "vhost-user without shared guest memory",
    );
}

#[test]
fn disks() {
    let mut c = linux();
    let d = c.devices.disks[0].clone();
    c.devices.disks.push(d);
    fails(
        c,
        "devices.disks[2].target.dev",
        "duplicate target 'vda' (also devices.disks[0])",
    );
    let mut c = linux();
    c.devices.disks[0].target.dev = "sda1".into();
    fails(c, "devices.disks[0].target.dev", "not a vdX name");
    let mut c = linux();
    c.devices.disks[1].target.bus = DiskBus::Virtio;
    c.devices.disks[1].target.dev = "vdz".into();
    fails(c, "devices.disks[1].target.bus", "CD-ROM on the virtio bus");
    let mut c = linux();
    c.devices.disks[0].source = Some(DiskSource::File {
        path: "images/x.qcow2".into(),
    });
    fails(c, "devices.disks[0].source.path", "absolute path");
    let mut c = linux();
    c.devices.disks[0].source = None;
    fails(c, "devices.disks[0].source", "must not be empty");
    let mut c = linux();
    c.devices.disks[0].driver.io = Some(DiskIo::Native);
    fails(
        c,
        "devices.disks[0].driver.io",
        "io 'native' needs cache 'none'",
    );
    let mut c = linux();
    c.devices.disks[0].driver.iothread = Some(1);
    fails(c, "devices.disks[0].driver.iothread", "iothread 1");
    let mut c = linux();
    c.devices.disks.truncate(1);
    c.devices.disks.extend((0..300).map(|i| {
        let mut d = corpus("linux-guest").devices.disks[0].clone();
        d.target.dev = format!(
            "vd{}{}",
            (b'a' + (i / 26) as u8) as char,
            (b'a' + (i % 26) as u8) as char
        );
        d.address = None;
        d
    }));
    fails(c, "devices.disks", "longer than 256");
}

#[test]
fn duplicate_pci_addresses() {
    let mut c = linux();
    c.devices.rngs[0].address = c.devices.memballoon.as_ref().and_then(|b| b.address);
    fails(
        c,
        "devices.memballoon.address",
        "duplicate PCI address 0000:05:00.0 (also devices.rngs[0].address)",
    );
    let mut c = linux();
    c.devices.rngs[0].address = Some(Address::Pci {
        domain: 0,
        bus: 9,
        slot: 0,
        function: 0,
        multifunction: None,
    });
    fails(
        c,
        "devices.rngs[0].address",
        "no pcie-root-port with index 9",
    );
    let mut c = linux();
    c.devices.rngs[0].address = Some(Address::Pci {
        domain: 0,
        bus: 6,
        slot: 3,
        function: 0,
        multifunction: None,
    });
    fails(c, "devices.rngs[0].address", "only slot 0");
}

#[test]
fn nics() {
    let mut c = linux();
    c.devices.interfaces[0].mac = Some("01:00:5e:00:00:01".parse().expect("mac"));
    fails(c, "devices.interfaces[0].mac", "multicast");
    let mut c = linux();
    let mut n = c.devices.interfaces[0].clone();
    n.address = None;
    c.devices.interfaces.push(n);
    fails(
        c,
        "devices.interfaces[1].mac",
        "duplicate MAC 52:54:00:6b:3c:58",
    );
    let mut c = linux();
    c.devices.interfaces[0].mtu = Some(10);
    fails(c, "devices.interfaces[0].mtu", "outside 68..=65535");
    let mut c = linux();
    c.devices.interfaces[0].source = InterfaceSource::Bridge {
        bridge: "br0; rm -rf".into(),
    };
    fails(c, "devices.interfaces[0].source.bridge", "contains");
}

#[test]
fn platform_rules() {
    let mut c = linux();
    c.os.machine = Some("microvm".into());
    fails(c, "os.machine", "only q35");
    let mut c = corpus("uefi-secureboot");
    c.features.smm = None;
    fails(
        c,
        "os.firmware.loader.secure",
        "secure boot needs features.smm on",
    );
    let mut c = linux();
    c.devices.disks[0].boot_order = Some(1);
    fails(
        c,
        "devices.disks[0].boot_order",
        "cannot be combined with os.boot",
    );
    let mut c = corpus("uefi-secureboot");
    c.devices.interfaces[0].boot_order = Some(1);
    fails(
        c,
        "devices.interfaces[0].boot_order",
        "duplicate boot order 1",
    );
    let mut c = linux();
    c.devices.graphics = Some(Graphics::Vnc {
        port: VncPort::Auto,
        listen: Some("example.com".into()),
        keymap: None,
    });
    fails(c, "devices.graphics.listen", "not an IP address");
    let mut c = linux();
    c.devices.graphics = Some(Graphics::Vnc {
        port: VncPort::Auto,
        listen: None,
        keymap: Some("en-us,x=y".into()),
    });
    fails(c, "devices.graphics.keymap", "not a keymap QEMU has");
    let mut c = linux();
    c.devices
        .controllers
        .retain(|x| !matches!(x.kind, ControllerKind::Usb { .. }));
    fails(c, "devices.inputs[0].bus", "USB controller");
    let mut c = linux();
    c.vcpu.placement = Some(VcpuPlacement::Auto);
    fails(c, "vcpu.placement", "numad");
    let mut c = linux();
    c.clock.as_mut().expect("clock").timers[0].tickpolicy = Some(TickPolicy::Merge);
    fails(c, "clock.timers[0].tickpolicy", "unsupported");
    let mut c = linux();
    c.devices.serials[0].port = 7;
    fails(c, "devices.serials[0].port", "outside 0..=3");
    let mut c = linux();
    c.devices.consoles[0].source = CharSource::File {
        path: "/tmp/x".into(),
    };
    fails(
        c,
        "devices.consoles[0].source",
        "differs from serial port 0",
    );
    let mut c = linux();
    let ch = c.devices.channels[0].clone();
    c.devices.channels.push(ch);
    fails(c, "devices.channels[1].name", "duplicate channel");
}

#[test]
fn all_errors_are_reported_at_once() {
    let mut c = linux();
    c.name = "a/b".into();
    c.vcpu.count = 0;
    let e = c.validate().expect_err("invalid");
    assert!(e.has("name") && e.has("vcpu.count"), "{e}");
    assert!(matches!(
        e.0[0].problem,
        Problem::BadChar { found: '/', .. }
    ));
}

#[test]
fn json_front_end_rejects_unknown_and_bad_values() {
    let json = linux().to_json();
    let bad = json.replacen("\"name\"", "\"nmae\": 1, \"name\"", 1);
    let e = DomainConfig::from_json(&bad).expect_err("unknown field");
    assert!(e.to_string().contains("nmae"), "{e}");
    let bad = json.replace("52:54:00:6b:3c:58", "52:54:00:6b:3c");
    assert!(DomainConfig::from_json(&bad)
        .expect_err("bad mac")
        .to_string()
        .contains("MAC"));
    let bad = json.replace("7d3f5a2e-9c1b-4e8a-a6f2-3b5c9d1e4f70", "7d3f5a2e");
    match DomainConfig::from_json(&bad).expect_err("short uuid") {
        JsonError::Syntax(m) => assert!(m.contains("'7d3f5a2e' is not a UUID"), "{m}"),
        other => panic!("{other:?}"),
    }
    let huge = " ".repeat(novacron_domain::MAX_DOCUMENT_BYTES + 1);
    assert_eq!(
        DomainConfig::from_json(&huge).expect_err("huge"),
        JsonError::TooLarge(novacron_domain::MAX_DOCUMENT_BYTES + 1)
    );
}

#[test]
fn memtune_limits_must_leave_the_guest_its_ram() {
    let with = |hard: Option<u64>, soft: Option<u64>| {
        let mut c = linux();
        c.memtune = Some(MemTune {
            hard_limit_kib: hard,
            soft_limit_kib: soft,
        });
        c
    };
    let ram = linux().memory.memory_kib;
    fails(
        with(Some(ram - 1), None),
        "memtune.hard_limit_kib",
        "below the guest's",
    );
    fails(
        with(Some(ram * 2), Some(ram * 3)),
        "memtune.soft_limit_kib",
        "above the hard limit",
    );
    fails(with(None, None), "memtune", "must not be empty");
    with(Some(ram * 2), Some(ram)).validate().expect("valid");
}
