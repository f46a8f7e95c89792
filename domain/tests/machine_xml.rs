//! The machine type and its default devices as libvirt reads them: i440fx with IDE, PIIX/ICH9
//! USB and cirrus; controllers without `index`; model-less USB controllers; empty text
//! elements as absent; and what stays refused, by name.

use novacron_domain::model::*;
use novacron_domain::{build_argv, Accel, CpuChoice, DomainConfig, LaunchContext, MonitorSocket};

fn doc(machine: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>m</name>
  <uuid>0b6f2d7e-4a1c-4f4e-9d2b-1c3e5a7f9b01</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
  </os>
  <devices>
    {devices}
  </devices>
</domain>
"
    )
}

fn ctx() -> LaunchContext {
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Fd(3),
        fd_sets: Vec::new(),
        runtime_dir: "/run/m".into(),
        memory_dir: None,
        serial_log: None,
        net_fds: Default::default(),
        vnc_display: None,
        spice_port: None,
        swtpm_socket: None,
        sandbox: false,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn argv(xml: &str) -> Vec<String> {
    let vd = DomainConfig::from_xml(xml)
        .expect("parse")
        .validate()
        .expect("valid");
    build_argv(&vd, &ctx()).expect("argv")
}

/// The value following `opt` for each occurrence.
fn values<'a>(argv: &'a [String], opt: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == opt)
        .map(|w| w[1].as_str())
        .collect()
}

#[track_caller]
fn invalid(xml: &str, path: &str, needle: &str) {
    let e = DomainConfig::from_xml(xml)
        .expect("parse")
        .validate()
        .expect_err("must be refused");
    let hit = e.0.iter().find(|x| x.path == path);
    let msg = hit
        .unwrap_or_else(|| panic!("no error at {path}: {e}"))
        .to_string();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[track_caller]
fn unreadable(xml: &str, needle: &str) {
    let msg = DomainConfig::from_xml(xml)
        .expect_err("must be refused")
        .to_string();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

const IDE_DISK: &str = "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/srv/a.qcow2'/><target dev='hda' bus='ide'/></disk>";

#[test]
fn vagrant_template_empty_elements_read_as_absent() {
    let xml = include_str!("corpus/vagrant-template.xml");
    let cfg = DomainConfig::from_xml(xml).expect("vagrant-libvirt's template is accepted");
    assert_eq!(cfg.uuid, None);
    assert_eq!(cfg.os.kernel, None);
    assert_eq!(
        cfg.os.bootmenu,
        Some(BootMenu {
            enable: true,
            timeout_ms: None
        })
    );
    assert_eq!(cfg.devices.disks[0].driver.cache, None, "cache='default'");
    assert_eq!(
        cfg.devices.videos[0].model,
        VideoModel::Cirrus {
            vram_kib: Some(16384)
        }
    );
    // Empty is absent, but a value without what it needs is still refused.
    let bad = xml.replace("<initrd></initrd>", "<initrd>/boot/initrd</initrd>");
    unreadable(&bad, "<kernel> (required by <initrd>)");
    // An element with attributes is not "empty": it is read and refused by name.
    let bad = xml.replace("<uuid></uuid>", "<uuid type='x'></uuid>");
    unreadable(&bad, "domain/uuid@type");
    let bad = xml.replace("<uuid></uuid>", "<uuid>nope</uuid>");
    unreadable(&bad, "domain/uuid");
}

#[test]
fn controllers_without_index_get_the_first_free_one_per_type() {
    let devs = "<controller type='pci' model='pcie-root-port'/>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='usb'/>
    <controller type='virtio-serial'/>";
    let cfg = DomainConfig::from_xml(&doc("q35", devs)).expect("parse");
    let idx: Vec<u32> = cfg.devices.controllers.iter().map(|c| c.index).collect();
    // Explicit indexes are known first; the others fill the gaps in document order.
    assert_eq!(idx, [2, 1, 0, 3, 0, 0]);
    cfg.clone().validate().expect("valid");
    let again = DomainConfig::from_xml(&cfg.to_xml()).expect("re-parse");
    assert_eq!(cfg, again);
}

#[test]
fn model_less_usb_controller_is_the_machines_default() {
    let usb = |machine: &str| {
        let cfg = DomainConfig::from_xml(&doc(machine, "<controller type='usb' index='0'/>"))
            .expect("parse");
        match cfg.devices.controllers[0].kind {
            ControllerKind::Usb { model, .. } => model,
            ref k => panic!("{k:?}"),
        }
    };
    assert_eq!(usb("q35"), UsbModel::QemuXhci);
    assert_eq!(usb("pc-q35-7.2"), UsbModel::QemuXhci);
    assert_eq!(usb("pc"), UsbModel::Piix3Uhci);
    assert_eq!(usb("pc-i440fx-7.2"), UsbModel::Piix3Uhci);
    // A refused model is quoted as written, never as a made-up '(default)'.
    let msg = DomainConfig::from_xml(&doc("q35", "<controller type='usb' model='nec-xhci'/>"))
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("'nec-xhci'") && !msg.contains("(default)"),
        "{msg}"
    );
}

#[test]
fn i440fx_defaults_in_the_argv() {
    let devs = format!(
        "{IDE_DISK}
    <disk type='file' device='cdrom'><target dev='hdd' bus='ide'/><readonly/></disk>
    <controller type='usb' index='0'/>
    <controller type='pci' index='0'/>
    <controller type='ide' index='0'/>
    <serial type='null'><target port='0'/></serial>
    <video><model type='cirrus'/></video>"
    );
    let a = argv(&doc("pc", &devs));
    let devices = values(&a, "-device");
    assert!(devices.contains(&"ide-hd,bus=ide.0,unit=0,id=ide0-0-0,drive=disk0,write-cache=on"));
    assert!(devices.contains(&"ide-cd,bus=ide.1,unit=1,id=ide0-1-1"));
    // libvirt's place for the PIIX3 UHCI: the PIIX3's function 2.
    assert!(devices.contains(&"piix3-usb-uhci,id=usb,bus=pci.0,addr=0x1.0x2"));
    assert!(devices.contains(&"cirrus-vga,id=video0"));
    assert!(values(&a, "-chardev").contains(&"null,id=charserial0"));
    assert!(!a.iter().any(|x| x.contains("pcie")), "{a:?}");
    assert_eq!(values(&a, "-machine")[0], "pc,usb=off,acpi=off");
}

#[test]
fn boot_menu_and_i686_in_the_argv() {
    let xml = doc("q35", "").replace(
        "<type arch='x86_64' machine='q35'>hvm</type>",
        "<type arch='i686' machine='q35'>hvm</type><bootmenu enable='yes' timeout='2500'/>",
    );
    let a = argv(&xml);
    assert_eq!(values(&a, "-boot"), ["menu=on,splash-time=2500,strict=on"]);
    assert_eq!(values(&a, "-cpu"), ["qemu32"]);
    // A model the host layer chose is kept.
    let vd = DomainConfig::from_xml(&xml)
        .expect("parse")
        .validate()
        .expect("valid");
    let mut c = ctx();
    c.cpu = CpuChoice::Model("Westmere".into());
    assert_eq!(
        values(&build_argv(&vd, &c).expect("argv"), "-cpu"),
        ["Westmere"]
    );
    let cfg = DomainConfig::from_xml(&xml).expect("parse");
    assert_eq!(cfg.os.arch, Some(Arch::I686));
    assert_eq!(
        DomainConfig::from_xml(&cfg.to_xml()).expect("re-parse"),
        cfg
    );
    invalid(
        &xml.replace("timeout='2500'", "timeout='70000'"),
        "os.bootmenu.timeout_ms",
        "outside 0..=65535",
    );
}

#[test]
fn machine_mismatched_devices_are_refused_by_name() {
    invalid(
        &doc("q35", IDE_DISK),
        "devices.disks[0].target.bus",
        "ide on a q35 machine",
    );
    invalid(
        &doc("q35", "<controller type='ide' index='0'/>"),
        "devices.controllers[0].type",
        "IDE controller (q35 has none",
    );
    invalid(
        &doc(
            "pc",
            "<controller type='pci' index='1' model='pcie-root-port'/>",
        ),
        "devices.controllers[0].type",
        "i440fx has no PCI Express",
    );
    invalid(
        &doc("pc", "<controller type='pci' index='0' model='pcie-root'/>"),
        "devices.controllers[0].type",
        "pcie-root",
    );
    invalid(
        &doc("q35", "<controller type='pci' index='0' model='pci-root'/>"),
        "devices.controllers[0].type",
        "pci-root",
    );
    let sata = IDE_DISK.replace("dev='hda' bus='ide'", "dev='sda' bus='sata'");
    invalid(&doc("pc", &sata), "devices.disks[0].target.bus", "no AHCI");
    invalid(
        &doc("pc", "<watchdog model='itco'/>"),
        "devices.watchdog.model",
        "q35 only",
    );
}

#[test]
fn ide_addressing_follows_libvirt() {
    invalid(
        &doc("pc", &IDE_DISK.replace("hda", "hde")),
        "devices.disks[0].target.dev",
        "hda..hdd",
    );
    let addr = |a: &str| IDE_DISK.replace("</disk>", &format!("{a}</disk>"));
    invalid(
        &doc(
            "pc",
            &addr("<address type='drive' controller='0' bus='2' target='0' unit='0'/>"),
        ),
        "devices.disks[0].address",
        "bus 0-1",
    );
    // hdb is bus 0 unit 1: an explicit address there clashes.
    let two = format!(
        "{}\n{}",
        IDE_DISK.replace("hda", "hdb"),
        addr("<address type='drive' controller='0' bus='0' target='0' unit='1'/>")
            .replace("a.qcow2", "b.qcow2")
    );
    invalid(
        &doc("pc", &two),
        "devices.disks[1].address",
        "IDE bus 0 unit 1",
    );
    invalid(
        &doc(
            "pc",
            "<controller type='ide' index='0'><address type='pci' bus='0' slot='4' function='0'/></controller>",
        ),
        "devices.controllers[0].address",
        "00:01.1",
    );
    // The PIIX3 owns slot 1; slot 0 is the host bridge.
    invalid(
        &doc(
            "pc",
            "<memballoon model='virtio'><address type='pci' bus='0' slot='1' function='3'/></memballoon>",
        ),
        "devices.memballoon.address",
        "i440fx chipset",
    );
}

#[test]
fn usb_companions_need_their_master() {
    let companion =
        "<controller type='usb' index='0' model='ich9-uhci2'><master startport='2'/></controller>";
    invalid(
        &doc("pc", companion),
        "devices.controllers[0].master",
        "ich9-ehci1 controller with index 0",
    );
    let ok = format!("<controller type='usb' index='0' model='ich9-ehci1'/>{companion}");
    let a = argv(&doc("q35", &ok));
    let devices = values(&a, "-device");
    let ehci = devices
        .iter()
        .position(|d| d.starts_with("ich9-usb-ehci1,id=usb"));
    let uhci = devices
        .iter()
        .position(|d| *d == "ich9-usb-uhci2,masterbus=usb.0,firstport=2");
    assert!(ehci.is_some() && uhci > ehci, "{devices:?}");
    // Two of the same companion on one master.
    invalid(
        &doc("pc", &format!("{ok}{companion}")),
        "devices.controllers[2].index",
        "usb controller index 0",
    );
    unreadable(
        &doc("pc", "<controller type='usb' index='0' model='piix3-uhci'><master startport='0'/></controller>"),
        "unsupported element <master>",
    );
}

#[test]
fn root_port_model_name_is_kept_and_unknown_ones_refused() {
    let ioh = "<controller type='pci' index='1' model='pcie-root-port'><model name='ioh3420'/></controller>";
    let cfg = DomainConfig::from_xml(&doc("q35", ioh)).expect("parse");
    assert!(matches!(
        cfg.devices.controllers[0].kind,
        ControllerKind::PcieRootPort {
            model: RootPortModel::Ioh3420,
            ..
        }
    ));
    assert!(cfg.to_xml().contains("<model name='ioh3420'/>"));
    assert_eq!(
        values(&argv(&doc("q35", ioh)), "-device"),
        ["ioh3420,chassis=1,id=pci.1"]
    );
    unreadable(
        &doc("q35", &ioh.replace("ioh3420", "x3130-upstream")),
        "'x3130-upstream'",
    );
    unreadable(
        &doc(
            "q35",
            "<controller type='usb' model='qemu-xhci'><model name='nec-usb-xhci'/></controller>",
        ),
        "unsupported element <model>",
    );
}

#[test]
fn video_memory_attributes_outside_qxl_are_refused_by_name() {
    for attr in ["ram='65536'", "vgamem='16384'", "heads='2'"] {
        let v = format!("<video><model type='vga' {attr}/></video>");
        unreadable(&doc("q35", &v), &attr[..attr.find('=').unwrap_or(0)]);
    }
    unreadable(
        &doc("q35", "<serial type='null'><source path='/x'/></serial>"),
        "serial/source",
    );
}

/// virt-install writes the ICH9 USB2 set without any index: the companions belong to the
/// EHCI before them, so all four are controller 0.
#[test]
fn index_less_usb2_set_from_virt_install_is_one_controller() {
    let devs = "<controller type='usb' model='ich9-ehci1'/>
    <controller type='usb' model='ich9-uhci1'><master startport='0'/></controller>
    <controller type='usb' model='ich9-uhci2'><master startport='2'/></controller>
    <controller type='usb' model='ich9-uhci3'><master startport='4'/></controller>
    <controller type='virtio-serial'/>
    <input type='tablet' bus='usb'/>";
    let cfg = DomainConfig::from_xml(&doc("pc", devs)).expect("parse");
    let idx: Vec<u32> = cfg.devices.controllers.iter().map(|c| c.index).collect();
    assert_eq!(idx, [0, 0, 0, 0, 0]);
    let a = argv(&doc("pc", devs));
    let devices = values(&a, "-device");
    assert!(
        devices.contains(&"ich9-usb-uhci3,masterbus=usb.0,firstport=4"),
        "{devices:?}"
    );
    assert!(devices.contains(&"usb-tablet,id=input0,bus=usb.0"));
}

#[test]
fn bios_useserial_turns_graphics_off_and_round_trips() {
    let xml = doc("q35", "").replace(
        "<type arch='x86_64' machine='q35'>hvm</type>",
        "<type arch='x86_64' machine='q35'>hvm</type><bios useserial='yes'/>",
    );
    let a = argv(&xml);
    assert!(values(&a, "-machine")[0].contains(",graphics=off"), "{a:?}");
    let cfg = DomainConfig::from_xml(&xml).expect("parse");
    assert!(cfg.os.bios_serial);
    assert_eq!(
        DomainConfig::from_xml(&cfg.to_xml()).expect("re-parse"),
        cfg
    );
    // Without it, graphics stay on; an attribute it does not know is refused by name.
    assert!(!values(&argv(&doc("q35", "")), "-machine")[0].contains("graphics"));
    let err = DomainConfig::from_xml(&xml.replace("useserial='yes'", "rebootTimeout='0'"))
        .expect_err("rebootTimeout is not supported");
    assert!(err.to_string().contains("rebootTimeout"), "{err}");
}
