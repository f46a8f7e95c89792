//! Issue 16: an i440fx (`pc`) guest as virt-install and vagrant write it, with libvirt's
//! default devices, defined and started by the real service under KVM (the OS-less SeaBIOS
//! guest), and the devices checked from QEMU's side over QMP: the PIIX3 IDE controller with
//! the qcow2 disk and the empty CD-ROM on the buses libvirt puts them, PIIX3 UHCI at 00:01.2,
//! cirrus video, on the i440fx host bridge.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use novacron_domain::{DomainConfig, DomainState};
use novacron_tests::{osless_accel, Accel};
use novacrond::service::events::EventKind;
use serde_json::Value;

fn guest_xml(virt: &str, image: &str) -> String {
    format!(
        "<domain type='{virt}'>
  <name>legacy</name>
  <uuid></uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='i686' machine='pc'>hvm</type>
    <boot dev='hd'/>
    <bootmenu enable='yes' timeout='0'/>
    <kernel/>
  </os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='default'/>
      <source file='{image}'/>
      <target dev='hdb' bus='ide'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
      <address type='drive' controller='0' bus='1' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0'/>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='ide' index='0'/>
    <serial type='null'><target port='0'/></serial>
    <video><model type='cirrus' vram='16384' heads='1' primary='yes'/></video>
  </devices>
</domain>"
    )
}

/// `(slot, function)` -> device entry of bus 0 in `query-pci`.
fn pci_device(pci: &Value, slot: u64, function: u64) -> &Value {
    pci[0]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["slot"] == slot && d["function"] == function)
        .unwrap_or_else(|| panic!("no PCI device at 00:{slot:02x}.{function}: {pci}"))
}

#[tokio::test]
async fn i440fx_guest_with_ide_disk_runs_with_libvirts_default_devices() {
    let env = Env::new();
    let svc = env.open().await;
    let images = env.config.state_dir.join("images");
    let image = images.join("legacy.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("16M")
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let virt = match osless_accel() {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let config = DomainConfig::from_xml(&guest_xml(virt, image.to_str().expect("utf8")))
        .expect("the i440fx document is read");
    let mut events = svc.events().subscribe();
    svc.define(config).await.expect("define");
    svc.start("legacy").await.expect("start");
    wait_event(
        &mut events,
        "legacy",
        Duration::from_secs(10),
        |e| matches!(&e.kind, EventKind::StateChanged { to, .. } if *to == DomainState::Running),
    )
    .await;

    // An i686 guest runs on qemu-system-i386 where it is installed beside the configured
    // x86_64 emulator (Debian's qemu-system-x86 ships both; its /usr/bin one is a wrapper
    // that execs /usr/libexec/qemu-system-i386), as libvirt picks it.
    let exe = std::fs::read_link(format!("/proc/{}/exe", recorded_pid(&env, "legacy")))
        .expect("QEMU's executable");
    let want = if env
        .config
        .emulator
        .with_file_name("qemu-system-i386")
        .is_file()
    {
        "qemu-system-i386"
    } else {
        "qemu-system-x86_64"
    };
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some(want),
        "{exe:?}"
    );

    let pci = svc
        .qmp_passthrough("legacy", "query-pci", None)
        .await
        .expect("query-pci");
    let id = |d: &Value| (d["id"]["vendor"].clone(), d["id"]["device"].clone());
    // i440fx host bridge, PIIX3 ISA bridge and IDE, the PIIX3 UHCI at 00:01.2 as libvirt
    // places it, and the Cirrus CLGD 5446.
    assert_eq!(id(pci_device(&pci, 0, 0)), (0x8086.into(), 0x1237.into()));
    assert_eq!(id(pci_device(&pci, 1, 0)), (0x8086.into(), 0x7000.into()));
    assert_eq!(id(pci_device(&pci, 1, 1)), (0x8086.into(), 0x7010.into()));
    let uhci = pci_device(&pci, 1, 2);
    assert_eq!(id(uhci), (0x8086.into(), 0x7020.into()));
    assert_eq!(uhci["qdev_id"], "usb");
    let video: Vec<&Value> = pci[0]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["qdev_id"] == "video0")
        .collect();
    assert_eq!(video.len(), 1, "{pci}");
    assert_eq!(id(video[0]), (0x1013.into(), 0x00b8.into()));

    let blocks = svc
        .qmp_passthrough("legacy", "query-block", None)
        .await
        .expect("query-block");
    let block = |qdev: &str| -> Value {
        blocks
            .as_array()
            .expect("blocks")
            .iter()
            .find(|b| b["qdev"] == qdev)
            .cloned()
            .unwrap_or_else(|| panic!("no block device {qdev}: {blocks}"))
    };
    // hdb: IDE bus 0 unit 1 (from its name); hdc (by address): bus 1 unit 0, an empty tray.
    let disk = block("ide0-0-1");
    assert_eq!(disk["inserted"]["image"]["format"], "qcow2", "{disk}");
    assert_eq!(disk["removable"], false);
    let cd = block("ide0-1-0");
    assert_eq!(cd["removable"], true, "{cd}");
    assert!(cd.get("inserted").is_none(), "{cd}");
    // The devices sit on the PIIX3 IDE buses QEMU names ide.0 and ide.1.
    let tree = svc
        .qmp_passthrough(
            "legacy",
            "qom-get",
            Some(&serde_json::json!({"path": "/machine/peripheral/ide0-1-0", "property": "parent_bus"})),
        )
        .await
        .expect("qom-get");
    assert!(
        tree.as_str().is_some_and(|b| b.ends_with("/ide.1")),
        "{tree}"
    );

    // The definition kept what was written (uuid assigned at define, as for any guest).
    let summary = svc.get("legacy").expect("defined").summary;
    assert!(summary.uuid.is_some());
    svc.destroy("legacy").await.expect("destroy");
}
