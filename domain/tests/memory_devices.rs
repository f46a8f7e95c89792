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
    format!(
        "<domain type='kvm'>
  <name>t</name>
  <uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
  {max}
  <memory unit='MiB'>512</memory>
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
    let cfg = DomainConfig::from_xml(&doc(MAX, &format!("{VMEM}{DIMM}"))).expect("parses");
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
    let e = DomainConfig::from_xml(&doc(MAX, &format!("{VMEM}{big}{DIMM}")))
        .unwrap()
        .validate()
        .expect_err("above maxMemory");
    assert!(e.to_string().contains("above <maxMemory>"), "{e}");
    // A requested size that is not a block multiple, or larger than the device.
    for (req, why) in [("1025", "not a block multiple"), ("1048576", "above size")] {
        let x = VMEM.replace(
            "<requested unit='MiB'>0",
            &format!("<requested unit='KiB'>{req}"),
        );
        let e = DomainConfig::from_xml(&doc(MAX, &x))
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
    let e = DomainConfig::from_xml(&doc(MAX, &x))
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
