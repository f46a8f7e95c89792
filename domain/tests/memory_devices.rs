//! Hot-pluggable RAM and vCPUs at define: `<maxMemory slots>` and `<vcpu current>` become
//! `-m size,slots,maxmem` and `-smp cpus,maxcpus`; `<memory model='dimm'|'virtio-mem'>` devices
//! are read, written back, validated against the ceiling and given a backend and a device.

use std::collections::BTreeMap;
use std::path::PathBuf;

use novacron_domain::model::*;
use novacron_domain::{build_argv, Accel, CpuChoice, DomainConfig, LaunchContext, MonitorSocket};

fn ctx() -> LaunchContext {
    let run = PathBuf::from("/run/novacron/domains/t");
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Path(run.join("qmp.sock")),
        fd_sets: Vec::new(),
        runtime_dir: run,
        memory_dir: None,
        serial_log: None,
        net_fds: BTreeMap::new(),
        vnc_display: None,
        spice_port: None,
        swtpm_socket: None,
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn doc(max: &str, dev: &str) -> String {
    doc_mem(512, max, dev)
}

/// A document with `<memory>` of `mem` MiB (libvirt's meaning: the devices included).
fn doc_mem(mem: u64, max: &str, dev: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>t</name>
  <uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
  {max}
  <memory unit='MiB'>{mem}</memory>
  <vcpu current='1'>4</vcpu>
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

const MAX: &str = "<maxMemory slots='4' unit='MiB'>2048</maxMemory>";
const VMEM: &str = "<memory model='virtio-mem'><target><size unit='MiB'>512</size>\
    <node>0</node><block unit='KiB'>2048</block><requested unit='MiB'>0</requested>\
    </target></memory>";
const DIMM: &str =
    "<memory model='dimm'><target><size unit='MiB'>256</size><node>0</node></target></memory>";

#[test]
fn hotplug_ceilings_and_memory_devices_reach_the_command_line() {
    // <memory> is 512 MiB of boot RAM plus the devices' 512 + 256 MiB.
    let cfg =
        DomainConfig::from_xml(&doc_mem(1280, MAX, &format!("{VMEM}{DIMM}"))).expect("parses");
    assert_eq!(cfg.devices.memory.len(), 2);
    assert_eq!(cfg.devices.memory[0].model, MemoryModel::VirtioMem);
    assert_eq!(cfg.devices.memory[0].size_kib, 512 * 1024);
    assert_eq!(cfg.devices.memory[0].requested_kib, Some(0));
    assert_eq!(cfg.devices.memory[1].model, MemoryModel::Dimm);
    let back = DomainConfig::from_xml(&cfg.to_xml()).expect("round trip");
    assert_eq!(back, cfg, "{}", cfg.to_xml());
    let vd = cfg.validate().expect("valid");
    let argv = build_argv(&vd, &ctx()).expect("argv");
    let joined = argv.join(" ");
    for want in [
        "-m size=524288k,slots=4,maxmem=2097152k",
        "-smp cpus=1,maxcpus=4,",
        "-object memory-backend-ram,id=memvirtiomem0,size=524288k",
        "-device virtio-mem-pci,id=virtiomem0,memdev=memvirtiomem0,node=0,requested-size=0k,block-size=2048k",
        "-object memory-backend-ram,id=memdimm0,size=262144k",
        "-device pc-dimm,id=dimm0,memdev=memdimm0,node=0",
    ] {
        assert!(joined.contains(want), "no {want:?} in {joined}");
    }
}

#[test]
fn memory_devices_outside_the_ceiling_are_refused_by_field() {
    // No <maxMemory>: nowhere to put them.
    let e = DomainConfig::from_xml(&doc("", DIMM))
        .unwrap()
        .validate()
        .expect_err("no maxMemory");
    assert!(e.0.iter().any(|x| x.path == "devices.memory"), "{e}");
    // 512 + 512 + 1024 + 256 > 2048.
    let big = DIMM.replace("256", "1024");
    let e = DomainConfig::from_xml(&doc_mem(2304, MAX, &format!("{VMEM}{big}{DIMM}")))
        .unwrap()
        .validate()
        .expect_err("above maxMemory");
    assert!(e.to_string().contains("is below <memory>"), "{e}");
    // A requested size that is not a block multiple, or larger than the device.
    for (req, why) in [("1025", "not a block multiple"), ("1048576", "above size")] {
        let x = VMEM.replace(
            "<requested unit='MiB'>0",
            &format!("<requested unit='KiB'>{req}"),
        );
        let e = DomainConfig::from_xml(&doc_mem(1024, MAX, &x))
            .unwrap()
            .validate()
            .expect_err(why);
        assert!(
            e.0.iter()
                .any(|x| x.path == "devices.memory[0].requested_kib"),
            "{why}: {e}"
        );
    }
    // A NUMA cell the guest does not have.
    let x = DIMM.replace("<node>0", "<node>3");
    let e = DomainConfig::from_xml(&doc_mem(768, MAX, &x))
        .unwrap()
        .validate()
        .expect_err("node");
    assert!(
        e.0.iter().any(|x| x.path == "devices.memory[0].node"),
        "{e}"
    );
}

#[test]
fn file_mapped_memory_models_are_refused_with_the_reason() {
    let e = DomainConfig::from_xml(&doc(
        MAX,
        "<memory model='nvdimm'><source><path>/x</path></source><target><size>524288</size></target></memory>",
    ))
    .expect_err("nvdimm");
    assert!(e.to_string().contains("nvdimm"), "{e}");
}

#[test]
fn a_memory_device_element_alone_is_read_for_hotplug() {
    let m = novacron_domain::xml::parse_memory_device(DIMM).expect("dimm");
    assert_eq!(m.model, MemoryModel::Dimm);
    assert_eq!(m.size_kib, 256 * 1024);
    assert!(novacron_domain::xml::parse_memory_device("<disk/>").is_err());
}

fn argv_of(cfg: &DomainConfig) -> String {
    build_argv(&cfg.clone().validate().expect("valid"), &ctx())
        .expect("argv")
        .join(" ")
}

/// libvirt's meaning of `<memory>`: the total at boot including the memory devices. A libvirt
/// document with 1 GiB of `<memory>` and a 256 MiB DIMM gives QEMU 768 MiB of boot RAM, so the
/// guest has 1 GiB in all, as under libvirt (it used to get 1.25 GiB).
#[test]
fn memory_includes_the_memory_devices_as_in_libvirt() {
    let cfg = DomainConfig::from_xml(&doc_mem(1024, MAX, DIMM)).expect("parses");
    assert_eq!(cfg.boot_memory_kib(), 768 * 1024);
    let argv = argv_of(&cfg);
    assert!(
        argv.contains("-m size=786432k,slots=4,maxmem=2097152k"),
        "{argv}"
    );
    // A virtio-mem device counts with its whole size, whatever it is asked to plug.
    let cfg = DomainConfig::from_xml(&doc_mem(1024, MAX, VMEM)).expect("parses");
    assert!(argv_of(&cfg).contains("-m size=524288k,"));
    // The JSON form means the same: the same argv from the same config through JSON.
    let json = serde_json::to_string(&cfg).expect("json");
    let back: DomainConfig = serde_json::from_str(&json).expect("json back");
    assert_eq!(argv_of(&back), argv_of(&cfg));
    // Without devices nothing changes: <memory> is the boot RAM.
    let cfg = DomainConfig::from_xml(&doc_mem(1024, MAX, "")).expect("parses");
    assert!(argv_of(&cfg).contains("-m size=1048576k,"));
}

#[test]
fn memory_smaller_than_its_devices_is_refused_with_the_rule() {
    // 512 MiB of <memory> cannot hold 512 + 256 MiB of devices.
    let e = DomainConfig::from_xml(&doc_mem(512, MAX, &format!("{VMEM}{DIMM}")))
        .unwrap()
        .validate()
        .expect_err("devices above memory");
    let m = e.to_string();
    assert!(e.0.iter().any(|x| x.path == "devices.memory"), "{m}");
    assert!(m.contains("includes the memory devices"), "{m}");
    // Exactly the devices' size leaves no boot RAM.
    assert!(DomainConfig::from_xml(&doc_mem(256, MAX, DIMM))
        .unwrap()
        .validate()
        .is_err());
    // <maxMemory> below <memory>.
    let small = "<maxMemory slots='4' unit='MiB'>1024</maxMemory>";
    let e = DomainConfig::from_xml(&doc_mem(1280, small, DIMM))
        .unwrap()
        .validate()
        .expect_err("maxMemory below memory");
    assert!(
        e.0.iter()
            .any(|x| x.path == "memory.max.size_kib"
                && x.problem.to_string().contains("below <memory>")),
        "{e}"
    );
    // <currentMemory> above <memory>.
    let x = doc_mem(1024, MAX, DIMM).replace(
        "<vcpu current",
        "<currentMemory unit='MiB'>2000</currentMemory><vcpu current",
    );
    let e = DomainConfig::from_xml(&x)
        .unwrap()
        .validate()
        .expect_err("currentMemory above memory");
    assert!(e.0.iter().any(|x| x.path == "memory.current_kib"), "{e}");
}

/// NUMA cells hold the boot RAM: they add up to `<memory>` minus the devices.
#[test]
fn numa_cells_add_up_to_memory_minus_the_devices() {
    let numa = |cell_mib: u64| {
        format!(
            "<cpu><numa><cell id='0' cpus='0-3' memory='{cell_mib}' unit='MiB'/></numa></cpu>\n  \
             <devices>"
        )
    };
    let good = doc_mem(1024, MAX, DIMM).replacen("<devices>", &numa(768), 1);
    let cfg = DomainConfig::from_xml(&good).expect("parses");
    let argv = argv_of(&cfg);
    assert!(argv.contains("-m size=786432k,"), "{argv}");
    assert!(
        argv.contains("size=805306368"),
        "the cell's backend: {argv}"
    );
    // The cells equal to <memory> (devices on top, the old reading): refused, with the fix.
    let bad = doc_mem(1024, MAX, DIMM).replacen("<devices>", &numa(1024), 1);
    let e = DomainConfig::from_xml(&bad)
        .unwrap()
        .validate()
        .expect_err("cells = memory");
    let m = e.to_string();
    assert!(e.0.iter().any(|x| x.path == "cpu.numa"), "{m}");
    assert!(m.contains("set <memory> to 1310720 KiB"), "{m}");
}
