//! `<disk type='volume'>` and `<iotune>`: read from libvirt XML and the JSON model, written
//! back in libvirt's form, validated (volume names are one file name each; the limits by
//! QEMU's throttling rules; a group's disks agree), and a volume left unresolved never reaches
//! an argv.

use novacron_domain::model::{DiskSource, DomainConfig, IoTune};
use novacron_domain::{build_argv, Accel, CpuChoice, LaunchContext, MonitorSocket};

fn domain(disks: &str) -> String {
    format!(
        "<domain type='kvm'><name>t</name><uuid>7c1f2e3d-4a5b-4c6d-8e9f-0a1b2c3d4e60</uuid>\
         <memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>{disks}</devices></domain>"
    )
}

const VOLUME_DISK: &str = "<disk type='volume' device='disk'>\
    <driver name='qemu' type='qcow2'/>\
    <source pool='default' volume='web1.qcow2'/>\
    <target dev='vda' bus='virtio'/>\
    <iotune>\
      <total_bytes_sec>1048576</total_bytes_sec>\
      <read_iops_sec>400</read_iops_sec>\
      <write_iops_sec>200</write_iops_sec>\
      <write_iops_sec_max>300</write_iops_sec_max>\
      <size_iops_sec>4096</size_iops_sec>\
      <group_name>web</group_name>\
      <write_iops_sec_max_length>5</write_iops_sec_max_length>\
    </iotune>\
    </disk>";

#[test]
fn a_volume_disk_with_iotune_reads_and_writes_back() {
    let c = DomainConfig::from_xml(&domain(VOLUME_DISK)).unwrap();
    let d = &c.devices.disks[0];
    assert_eq!(
        d.source,
        Some(DiskSource::Volume {
            pool: "default".into(),
            volume: "web1.qcow2".into()
        })
    );
    let want = IoTune {
        total_bytes_sec: 1 << 20,
        read_iops_sec: 400,
        write_iops_sec: 200,
        write_iops_sec_max: 300,
        size_iops_sec: 4096,
        write_iops_sec_max_length: 5,
        group_name: Some("web".into()),
        ..IoTune::default()
    };
    assert_eq!(d.iotune.as_ref(), Some(&want));
    c.clone().validate().unwrap();

    // Written back in libvirt's form and order (rates, group_name, burst lengths).
    let xml = c.to_xml();
    let disk = &xml[xml.find("<disk").unwrap()..xml.find("</disk>").unwrap() + 7];
    let golden = "<disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='default' volume='web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <iotune>
        <total_bytes_sec>1048576</total_bytes_sec>
        <read_iops_sec>400</read_iops_sec>
        <write_iops_sec>200</write_iops_sec>
        <write_iops_sec_max>300</write_iops_sec_max>
        <size_iops_sec>4096</size_iops_sec>
        <group_name>web</group_name>
        <write_iops_sec_max_length>5</write_iops_sec_max_length>
      </iotune>
    </disk>";
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squash(disk), squash(golden), "{xml}");
    assert_eq!(DomainConfig::from_xml(&xml).unwrap(), c);

    // The JSON model carries the same.
    let json = serde_json::to_value(&c).unwrap();
    let jd = &json["devices"]["disks"][0];
    assert_eq!(jd["source"]["type"], "volume");
    assert_eq!(jd["source"]["pool"], "default");
    assert_eq!(jd["source"]["volume"], "web1.qcow2");
    assert_eq!(jd["iotune"]["total_bytes_sec"], 1 << 20);
    assert_eq!(jd["iotune"]["group_name"], "web");
    let back: DomainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn an_empty_iotune_is_no_iotune_and_a_file_disk_writes_none() {
    let c = DomainConfig::from_xml(&domain(
        "<disk type='file' device='disk'><source file='/img/a.raw'/>\
         <target dev='vda' bus='virtio'/><iotune><total_bytes_sec>0</total_bytes_sec></iotune></disk>",
    ))
    .unwrap();
    assert_eq!(c.devices.disks[0].iotune, None);
    assert!(!c.to_xml().contains("iotune"));
}

fn xml_err(disks: &str) -> String {
    DomainConfig::from_xml(&domain(disks))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

fn invalid(disks: &str) -> String {
    let c = DomainConfig::from_xml(&domain(disks)).unwrap();
    c.validate()
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

fn with_iotune(tune: &str) -> String {
    format!(
        "<disk type='file' device='disk'><source file='/img/a.raw'/>\
         <target dev='vda' bus='virtio'/><iotune>{tune}</iotune></disk>"
    )
}

#[test]
fn hostile_iotune_and_volume_names_are_refused_naming_the_field() {
    // Not integers, negative, beyond 64 bits, unknown elements, duplicates: the reader.
    for (tune, what) in [
        ("<total_bytes_sec>-1</total_bytes_sec>", "total_bytes_sec"),
        ("<total_bytes_sec>1M</total_bytes_sec>", "total_bytes_sec"),
        (
            "<read_bytes_sec>99999999999999999999</read_bytes_sec>",
            "read_bytes_sec",
        ),
        ("<bogus_sec>1</bogus_sec>", "bogus_sec"),
        (
            "<total_iops_sec>1</total_iops_sec><total_iops_sec>2</total_iops_sec>",
            "total_iops_sec",
        ),
    ] {
        let e = xml_err(&with_iotune(tune));
        assert!(e.contains(what), "{tune}: {e}");
    }
    // What QEMU would refuse: validation, with the model path.
    for (tune, field) in [
        (
            "<total_bytes_sec>10</total_bytes_sec><read_bytes_sec>5</read_bytes_sec>",
            "devices.disks[0].iotune.total_bytes_sec",
        ),
        (
            "<total_iops_sec>1000000000000001</total_iops_sec>",
            "devices.disks[0].iotune.total_iops_sec",
        ),
        (
            "<read_bytes_sec>100</read_bytes_sec><read_bytes_sec_max>50</read_bytes_sec_max>",
            "devices.disks[0].iotune.read_bytes_sec_max",
        ),
        (
            "<write_iops_sec_max>50</write_iops_sec_max>",
            "devices.disks[0].iotune.write_iops_sec_max",
        ),
        (
            "<total_bytes_sec>10</total_bytes_sec>\
             <total_bytes_sec_max_length>60</total_bytes_sec_max_length>",
            "devices.disks[0].iotune.total_bytes_sec_max_length",
        ),
        (
            "<size_iops_sec>4096</size_iops_sec>",
            "devices.disks[0].iotune.size_iops_sec",
        ),
        (
            "<total_bytes_sec>1</total_bytes_sec><group_name>a b</group_name>",
            "devices.disks[0].iotune.group_name",
        ),
    ] {
        let e = invalid(&with_iotune(tune));
        assert!(e.contains(field), "{tune}: {e}");
    }
    // One group, one set of limits.
    let e = invalid(
        "<disk type='file' device='disk'><source file='/img/a.raw'/><target dev='vda' bus='virtio'/>\
         <iotune><total_bytes_sec>10</total_bytes_sec><group_name>g</group_name></iotune></disk>\
         <disk type='file' device='disk'><source file='/img/b.raw'/><target dev='vdb' bus='virtio'/>\
         <iotune><total_bytes_sec>20</total_bytes_sec><group_name>g</group_name></iotune></disk>",
    );
    assert!(
        e.contains("devices.disks[1].iotune") && e.contains("group 'g'"),
        "{e}"
    );
    // Volume and pool names are one file name each.
    for (pool, volume, field) in [
        ("default", "../etc/shadow", "source.volume"),
        ("default", "a/b", "source.volume"),
        ("..", "x.qcow2", "source.pool"),
        ("default", ".hidden", "source.volume"),
    ] {
        let e = invalid(&format!(
            "<disk type='volume' device='disk'><source pool='{pool}' volume='{volume}'/>\
             <target dev='vda' bus='virtio'/></disk>"
        ));
        assert!(e.contains(&format!("devices.disks[0].{field}")), "{e}");
    }
    // A volume source needs both names; iSCSI's mode is not taken.
    assert!(xml_err(
        "<disk type='volume' device='disk'><source pool='default'/>\
         <target dev='vda' bus='virtio'/></disk>"
    )
    .contains("volume"));
    assert!(xml_err(
        "<disk type='volume' device='disk'><source pool='p' volume='v' mode='host'/>\
         <target dev='vda' bus='virtio'/></disk>"
    )
    .contains("mode"));
}

#[test]
fn an_unresolved_volume_never_reaches_the_argv() {
    let c = DomainConfig::from_xml(&domain(VOLUME_DISK))
        .unwrap()
        .validate()
        .unwrap();
    // No host reference: nothing to check or open until the host resolves it to a file.
    assert!(c.host_refs().is_empty(), "{:?}", c.host_refs());
    let ctx = LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Fd(3),
        fd_sets: Vec::new(),
        runtime_dir: "/run/t".into(),
        memory_dir: None,
        serial_log: None,
        net_fds: Default::default(),
        vnc_display: None,
        spice_port: None,
        swtpm_socket: None,
        sandbox: false,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    };
    let e = build_argv(&c, &ctx).unwrap_err().to_string();
    assert!(
        e.contains("devices.disks[0]") && e.contains("volume"),
        "{e}"
    );
}
