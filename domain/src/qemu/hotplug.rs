//! Disks of a running guest as QMP arguments: the same node names, device ids and block
//! options the command line gives a disk at start (`devices.rs`), so a hot-plugged disk and a
//! started one are indistinguishable to QEMU, to a migration and to the next start.

use serde_json::{json, Map, Value};

use super::BackingImage;
use crate::model::*;

/// The format node of the disk at `index` of the started config (its storage node is
/// `<node>-storage`), as the command line names it.
pub fn node_name(index: usize) -> String {
    format!("disk{index}")
}

/// The storage node under format node `node`.
pub fn storage_node(node: &str) -> String {
    format!("{node}-storage")
}

/// The qdev id the command line gives `disk` (`device_del`, `block_set_io_throttle`,
/// `blockdev-change-medium` name the device by it).
pub fn qdev_id(disk: &Disk) -> String {
    match disk.target.bus {
        DiskBus::Virtio => format!("virtio-{}", disk.target.dev),
        DiskBus::Sata => {
            let unit = match disk.address {
                Some(Address::Drive { unit, .. }) => u32::from(unit),
                _ => super::devices::disk_index(&disk.target.dev),
            };
            format!("sata0-0-{unit}")
        }
        DiskBus::Ide => {
            let (bus, unit) = crate::validate::machine::ide_slot(disk).unwrap_or((0, 0));
            format!("ide0-{bus}-{unit}")
        }
        DiskBus::Scsi => {
            let (ctl, target, unit) = match disk.address {
                Some(Address::Drive {
                    controller,
                    target,
                    unit,
                    ..
                }) => (controller, target, u32::from(unit)),
                _ => (0, 0, super::devices::disk_index(&disk.target.dev)),
            };
            format!("scsi{ctl}-0-{target}-{unit}")
        }
    }
}

fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// Cache and access options both nodes carry (as the command line sets them).
fn common(disk: &Disk, o: &mut Map<String, Value>) {
    let (direct, no_flush) = match disk.driver.cache {
        None | Some(DiskCache::Writeback) | Some(DiskCache::Writethrough) => (false, false),
        Some(DiskCache::None) | Some(DiskCache::Directsync) => (true, false),
        Some(DiskCache::Unsafe) => (false, true),
    };
    o.insert(
        "cache".into(),
        json!({"direct": direct, "no-flush": no_flush}),
    );
    if disk.readonly || disk.device == DiskDevice::Cdrom {
        o.insert("read-only".into(), Value::Bool(true));
    }
    if disk.driver.discard == Some(DiskDiscard::Unmap) {
        o.insert("discard".into(), json!("unmap"));
    }
}

/// `blockdev-add` arguments for the storage node (`file` at `path`, e.g. `/dev/fdset/N`) and
/// the format node above it, with the backing chain inline (as opened by the host layer).
pub fn blockdev_args(disk: &Disk, node: &str, path: &str, chain: &[BackingImage]) -> [Value; 2] {
    let driver = match disk.source {
        Some(DiskSource::Block { .. }) => "host_device",
        _ => "file",
    };
    let mut storage = Map::new();
    storage.insert("driver".into(), json!(driver));
    storage.insert("filename".into(), json!(path));
    storage.insert("node-name".into(), json!(storage_node(node)));
    if let Some(io) = disk.driver.io {
        storage.insert("aio".into(), json!(io.as_str()));
    }
    common(disk, &mut storage);
    let mut format = Map::new();
    format.insert("driver".into(), json!(format_name(disk.driver.format)));
    format.insert("file".into(), json!(storage_node(node)));
    format.insert("node-name".into(), json!(node));
    common(disk, &mut format);
    // Innermost first: each image's `backing` is the one below it.
    let mut backing: Option<Value> = None;
    for b in chain.iter().rev() {
        let mut img = json!({
            "driver": format_name(b.format),
            "file": {"driver": "file", "filename": b.path},
        });
        if let Some(below) = backing.take() {
            img["backing"] = below;
        }
        backing = Some(img);
    }
    if let Some(b) = backing {
        format.insert("backing".into(), b);
    }
    [Value::Object(storage), Value::Object(format)]
}

/// `device_add` arguments for a virtio disk on PCIe root port `pci.<port>` (slot 0, the only
/// one a root port has), over format node `node`.
pub fn virtio_device_args(disk: &Disk, node: &str, port: u32) -> Value {
    let write_cache = !matches!(
        disk.driver.cache,
        Some(DiskCache::Writethrough) | Some(DiskCache::Directsync)
    );
    let mut d = json!({
        "driver": "virtio-blk-pci",
        "id": qdev_id(disk),
        "bus": format!("pci.{port}"),
        "addr": "0x0",
        "drive": node,
        "write-cache": if write_cache { "on" } else { "off" },
    });
    if disk.shareable {
        d["share-rw"] = json!(true);
    }
    if let Some(s) = &disk.serial {
        d["serial"] = json!(s);
    }
    if let Some(t) = disk.driver.iothread {
        d["iothread"] = json!(format!("iothread{t}"));
    }
    d
}

/// The guest PCI address a disk gets on root port `port`: what the definition records, so
/// the next start (and a migration's destination) puts it in the same place.
pub fn root_port_address(port: u32) -> Address {
    Address::Pci {
        domain: 0,
        bus: u8::try_from(port).unwrap_or(u8::MAX),
        slot: 0,
        function: 0,
        multifunction: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{build_argv, Accel, CpuChoice, LaunchContext, MonitorSocket};

    #[test]
    fn ids_are_the_command_lines() {
        let xml = "<domain type='kvm'><name>t</name>\
            <uuid>7c1f2e3d-4a5b-4c6d-8e9f-0a1b2c3d4e60</uuid><memory unit='MiB'>64</memory>\
            <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
            <disk type='file' device='disk'><source file='/a'/><target dev='vdc' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><source file='/b'/><target dev='sdb' bus='sata'/><readonly/></disk>\
            <disk type='file' device='disk'><source file='/c'/><target dev='sdc' bus='scsi'/></disk>\
            </devices></domain>";
        let d = DomainConfig::from_xml(xml).unwrap().validate().unwrap();
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
        let argv = build_argv(&d, &ctx).unwrap().join(" ");
        for (i, disk) in d.config().devices.disks.iter().enumerate() {
            let id = format!(",id={},", qdev_id(disk));
            assert!(argv.contains(&id), "{id} not in {argv}");
            assert!(argv.contains(&format!("drive={}", node_name(i))), "{argv}");
        }
    }

    #[test]
    fn a_backing_chain_nests_top_down() {
        let disk = Disk {
            device: DiskDevice::Disk,
            source: Some(DiskSource::File { path: "/x".into() }),
            driver: DiskDriver {
                format: DiskFormat::Qcow2,
                cache: None,
                io: None,
                discard: None,
                iothread: None,
            },
            target: DiskTarget {
                dev: "vdb".into(),
                bus: DiskBus::Virtio,
            },
            readonly: false,
            shareable: false,
            serial: None,
            boot_order: None,
            address: None,
            iotune: None,
        };
        let chain = [
            BackingImage {
                format: DiskFormat::Qcow2,
                path: "/dev/fdset/5".into(),
            },
            BackingImage {
                format: DiskFormat::Raw,
                path: "/dev/fdset/6".into(),
            },
        ];
        let [s, f] = blockdev_args(&disk, "disk3", "/dev/fdset/4", &chain);
        assert_eq!(s["node-name"], "disk3-storage");
        assert_eq!(f["file"], "disk3-storage");
        assert_eq!(f["backing"]["file"]["filename"], "/dev/fdset/5");
        assert_eq!(f["backing"]["backing"]["driver"], "raw");
        assert_eq!(f["backing"]["backing"]["file"]["filename"], "/dev/fdset/6");
    }
}
