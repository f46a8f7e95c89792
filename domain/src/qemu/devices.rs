//! `-device`, `-blockdev`, `-netdev` and `-chardev` arguments for `<devices>`.

use super::argv::{esc, on_off, path_str, Args};
use super::{ArgvError, LaunchContext};
use crate::model::*;

/// `bus=...,addr=...` for a guest PCI address; empty lets QEMU pick a slot on pcie.0.
fn pci(addr: &Option<Address>) -> String {
    match addr {
        Some(Address::Pci {
            bus,
            slot,
            function,
            multifunction,
            ..
        }) => {
            let bus = if *bus == 0 {
                "pcie.0".to_owned()
            } else {
                format!("pci.{bus}")
            };
            let mut s = format!(",bus={bus},addr={slot:#x}");
            if *function != 0 {
                s.push_str(&format!(".{function:#x}"));
            }
            if *multifunction == Some(true) {
                s.push_str(",multifunction=on");
            }
            s
        }
        _ => String::new(),
    }
}

/// Unit number libvirt derives from the target name: sda -> 0, sdz -> 25, sdaa -> 26.
pub(super) fn disk_index(dev: &str) -> u32 {
    dev.get(2..)
        .unwrap_or("")
        .bytes()
        .fold(0u32, |acc, b| {
            acc.saturating_mul(26)
                .saturating_add(u32::from(b.saturating_sub(b'a')) + 1)
        })
        .saturating_sub(1)
        .min(u32::from(u16::MAX))
}

pub(super) fn devices(
    a: &mut Args,
    d: &DomainConfig,
    ctx: &LaunchContext,
) -> Result<(), ArgvError> {
    let dv = &d.devices;
    controllers(a, d);
    disks(a, d, ctx);
    for h in dv.hostdevs.iter().enumerate() {
        let (i, h) = h;
        let mut s = format!("vfio-pci,host={},id=hostdev{i}", h.source);
        if let Some(b) = h.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        s.push_str(&pci(&h.address));
        a.push("-device", s);
    }
    for (i, f) in dv.filesystems.iter().enumerate() {
        if f.driver == FsDriver::Virtiofs {
            // The daemon's virtiofsd serves the directory; QEMU only connects to its socket.
            let sock = super::virtiofs_socket(&ctx.runtime_dir, i);
            a.push(
                "-chardev",
                format!("socket,id=chr-fs{i},path={}", path_str(&sock)?),
            );
            a.push(
                "-device",
                format!(
                    "vhost-user-fs-pci,id=fs{i},chardev=chr-fs{i},queue-size={},tag={}{}",
                    super::virtiofs::QUEUE_SIZE,
                    esc(&f.target),
                    pci(&f.address)
                ),
            );
            continue;
        }
        // The host layer passes the directory as `/proc/self/fd/N` (opened beneath its
        // storage root): QEMU never resolves the definition's path itself.
        let dir = ctx.host_path(&format!("devices.filesystems[{i}].source"), &f.source);
        let mut s = format!(
            "local,id=fsdev-fs{i},path={},security_model={}",
            esc(dir),
            f.access_mode.security_model()
        );
        if f.readonly {
            s.push_str(",readonly=on");
        }
        a.push("-fsdev", s);
        a.push(
            "-device",
            format!(
                "virtio-9p-pci,id=fs{i},fsdev=fsdev-fs{i},mount_tag={}{}",
                esc(&f.target),
                pci(&f.address)
            ),
        );
    }
    interfaces(a, d, ctx)?;
    chardevs(a, dv, ctx)?;
    for (i, inp) in dv.inputs.iter().enumerate() {
        let dev = match (inp.bus, inp.kind) {
            // PS/2 keyboard and mouse are part of the q35 board (i8042).
            (InputBus::Ps2, _) => continue,
            (InputBus::Usb, InputKind::Tablet) => "usb-tablet",
            (InputBus::Usb, InputKind::Mouse) => "usb-mouse",
            (InputBus::Usb, InputKind::Keyboard) => "usb-kbd",
            (InputBus::Virtio, InputKind::Tablet) => "virtio-tablet-pci",
            (InputBus::Virtio, InputKind::Mouse) => "virtio-mouse-pci",
            (InputBus::Virtio, InputKind::Keyboard) => "virtio-keyboard-pci",
        };
        let mut s = format!("{dev},id=input{i}");
        match inp.address {
            Some(Address::Usb { port, .. }) => s.push_str(&format!(",bus=usb.0,port={port}")),
            _ if inp.bus == InputBus::Usb => s.push_str(",bus=usb.0"),
            _ => s.push_str(&pci(&inp.address)),
        }
        a.push("-device", s);
    }
    if let Some(t) = &dv.tpm {
        let sock = ctx
            .swtpm_socket
            .as_deref()
            .ok_or(ArgvError::MissingSwtpmSocket)?;
        a.push(
            "-chardev",
            format!("socket,id=chrtpm,path={}", path_str(sock)?),
        );
        a.push("-tpmdev", "emulator,id=tpm-tpm0,chardev=chrtpm");
        let m = match t.model {
            TpmModel::TpmCrb => "tpm-crb",
            TpmModel::TpmTis => "tpm-tis",
        };
        a.push("-device", format!("{m},tpmdev=tpm-tpm0,id=tpm0"));
    }
    super::spice::audiodevs(a, dv);
    a.push("-display", "none");
    if let Some(Graphics::Vnc { port, listen, .. }) = &dv.graphics {
        let display = match port {
            VncPort::Fixed(p) => p.saturating_sub(5900),
            // An assigned port is the previous run's: the host layer picks again.
            VncPort::Auto | VncPort::Assigned(_) => {
                ctx.vnc_display.ok_or(ArgvError::MissingVncDisplay)?
            }
        };
        let host = match listen.as_deref() {
            None => "127.0.0.1".to_owned(),
            Some(l) if l.contains(':') => format!("[{l}]"),
            Some(l) => l.to_owned(),
        };
        a.push("-vnc", format!("{host}:{display}"));
    }
    super::spice::graphics(a, dv, ctx)?;
    // The layout QEMU translates keys for (VNC's and SPICE's alike), as libvirt passes it.
    if let Some(
        Graphics::Vnc {
            keymap: Some(k), ..
        }
        | Graphics::Spice {
            keymap: Some(k), ..
        },
    ) = &dv.graphics
    {
        a.push("-k", k.clone());
    }
    for (i, v) in dv.videos.iter().enumerate() {
        let dev = match v.model {
            VideoModel::None => continue,
            VideoModel::Virtio => format!("virtio-vga,id=video{i}"),
            VideoModel::Vga { vram_kib: Some(k) } => {
                format!("VGA,id=video{i},vgamem_mb={}", (k / 1024).max(1))
            }
            VideoModel::Vga { vram_kib: None } => format!("VGA,id=video{i}"),
            VideoModel::Qxl {
                ram_kib,
                vram_kib,
                vgamem_kib,
                heads,
            } => {
                // The only (so primary) video device: qxl-vga, with libvirt's sizes in bytes.
                let mut s = format!("qxl-vga,id=video{i}");
                if let Some(h) = heads {
                    s.push_str(&format!(",max_outputs={h}"));
                }
                if let Some(k) = ram_kib {
                    s.push_str(&format!(",ram_size={}", u64::from(k) * 1024));
                }
                if let Some(k) = vram_kib {
                    s.push_str(&format!(",vram_size={}", u64::from(k) * 1024));
                }
                if let Some(k) = vgamem_kib {
                    s.push_str(&format!(",vgamem_mb={}", k / 1024));
                }
                s
            }
            VideoModel::Cirrus { .. } => format!("cirrus-vga,id=video{i}"),
        };
        a.push("-device", format!("{dev}{}", pci(&v.address)));
    }
    super::spice::sounds(a, dv, pci);
    if let Some(w) = &dv.watchdog {
        match w.model {
            WatchdogModel::I6300esb => a.push(
                "-device",
                format!("i6300esb,id=watchdog0{}", pci(&w.address)),
            ),
            // iTCO is built into ICH9; it only needs to be allowed to reset the machine.
            WatchdogModel::Itco => a.push("-global", "ICH9-LPC.noreboot=off"),
        }
        a.push("-action", format!("watchdog={}", w.action.as_str()));
    }
    super::spice::redirdevs(a, dv);
    if let Some(b) = &dv.memballoon {
        if b.model == MemballoonModel::Virtio {
            a.push(
                "-device",
                format!("virtio-balloon-pci,id=balloon0{}", pci(&b.address)),
            );
        }
    }
    let ids = memory_device_ids(&dv.memory);
    for (m, id) in dv.memory.iter().zip(&ids) {
        let [backend, device] = super::memory_devices::argv(d, m, id, &pci(&m.address));
        a.push("-object", backend);
        a.push("-device", device);
    }
    for (i, r) in dv.rngs.iter().enumerate() {
        a.push(
            "-object",
            format!(
                "rng-random,id=objrng{i},filename={}",
                esc(ctx.host_path(&format!("devices.rngs[{i}].backend"), &r.backend))
            ),
        );
        a.push(
            "-device",
            format!("virtio-rng-pci,rng=objrng{i},id=rng{i}{}", pci(&r.address)),
        );
    }
    Ok(())
}

fn controllers(a: &mut Args, d: &DomainConfig) {
    let dv = &d.devices;
    // Root ports first, by index: other devices (even controllers) may sit behind them.
    // A USB companion follows its EHCI master (same index), which QEMU needs to exist.
    let mut ordered: Vec<&Controller> = dv.controllers.iter().collect();
    ordered.sort_by_key(|c| {
        (
            !matches!(c.kind, ControllerKind::PcieRootPort { .. }),
            c.index,
            matches!(
                c.kind,
                ControllerKind::Usb {
                    model: UsbModel::Ich9Uhci { .. },
                    ..
                }
            ),
        )
    });
    for c in ordered {
        // libvirt's alias: `usb` for USB controller 0, `usbN` after.
        let usb_id = if c.index == 0 {
            "usb".to_owned()
        } else {
            format!("usb{}", c.index)
        };
        let mut address = c.address;
        let s = match c.kind {
            ControllerKind::PcieRoot
            | ControllerKind::PciRoot
            | ControllerKind::Ide
            | ControllerKind::Sata
            | ControllerKind::Usb {
                model: UsbModel::None,
                ..
            } => continue,
            ControllerKind::PcieRootPort {
                chassis,
                port,
                model,
            } => {
                let mut s = model.as_str().to_owned();
                if let Some(p) = port {
                    s.push_str(&format!(",port={p:#x}"));
                }
                s.push_str(&format!(
                    ",chassis={},id=pci.{}",
                    chassis.map_or(c.index, u32::from),
                    c.index
                ));
                s
            }
            ControllerKind::VirtioScsi => format!("virtio-scsi-pci,id=scsi{}", c.index),
            ControllerKind::Usb {
                model: UsbModel::QemuXhci,
                ports,
            } => match ports {
                Some(p) => format!("qemu-xhci,p2={p},p3={p},id={usb_id}"),
                None => format!("qemu-xhci,id={usb_id}"),
            },
            ControllerKind::Usb {
                model: UsbModel::Piix3Uhci,
                ..
            } => {
                // libvirt's place for it on i440fx: function 2 of the PIIX3.
                if address.is_none() && d.os.is_i440fx() && c.index == 0 {
                    address = Some(Address::Pci {
                        domain: 0,
                        bus: 0,
                        slot: 1,
                        function: 2,
                        multifunction: None,
                    });
                }
                format!("piix3-usb-uhci,id={usb_id}")
            }
            ControllerKind::Usb {
                model: UsbModel::Ich9Ehci1,
                ..
            } => format!("ich9-usb-ehci1,id={usb_id}"),
            ControllerKind::Usb {
                model: UsbModel::Ich9Uhci { n, startport },
                ..
            } => match startport {
                // A companion is part of its master's bus and has no id of its own.
                Some(p) => format!("ich9-usb-uhci{n},masterbus={usb_id}.0,firstport={p}"),
                None => format!("ich9-usb-uhci{n},id={usb_id}"),
            },
            ControllerKind::VirtioSerial => {
                format!("virtio-serial-pci,id=virtio-serial{}", c.index)
            }
        };
        a.push("-device", format!("{s}{}", pci(&address)));
    }
    // libvirt adds these implicitly when a device needs them; so do we.
    let has = |k: &ControllerKind| dv.controllers.iter().any(|c| &c.kind == k && c.index == 0);
    if dv.disks.iter().any(|x| x.target.bus == DiskBus::Scsi) && !has(&ControllerKind::VirtioScsi) {
        a.push("-device", "virtio-scsi-pci,id=scsi0");
    }
    let wants_serial = !dv.channels.is_empty()
        || dv
            .consoles
            .iter()
            .any(|c| c.target == ConsoleTarget::Virtio);
    if wants_serial && !has(&ControllerKind::VirtioSerial) {
        a.push("-device", "virtio-serial-pci,id=virtio-serial0");
    }
}

fn disks(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) {
    for (i, disk) in d.devices.disks.iter().enumerate() {
        let node = format!("disk{i}");
        let dr = &disk.driver;
        let ro = disk.readonly || disk.device == DiskDevice::Cdrom;
        let (direct, no_flush, write_cache) = match dr.cache {
            None | Some(DiskCache::Writeback) => (false, false, true),
            Some(DiskCache::None) => (true, false, true),
            Some(DiskCache::Writethrough) => (false, false, false),
            Some(DiskCache::Directsync) => (true, false, false),
            Some(DiskCache::Unsafe) => (false, true, true),
        };
        let common = |s: &mut String| {
            s.push_str(&format!(
                ",cache.direct={},cache.no-flush={}",
                on_off(direct),
                on_off(no_flush)
            ));
            if ro {
                s.push_str(",read-only=on");
            }
            if dr.discard == Some(DiskDiscard::Unmap) {
                s.push_str(",discard=unmap");
            }
        };
        let has_media = if let Some(src) = &disk.source {
            let file = |drv: &str, field: String, path: &str| {
                format!(
                    "driver={drv},filename={},node-name={node}-storage",
                    esc(ctx.host_path(&field, path))
                )
            };
            let mut s = match src {
                DiskSource::File { path } => {
                    file("file", format!("devices.disks[{i}].source.file"), path)
                }
                DiskSource::Block { dev } => {
                    file("host_device", format!("devices.disks[{i}].source.dev"), dev)
                }
                DiskSource::Network(n) => {
                    format!("{},node-name={node}-storage", super::netdisk::storage(n))
                }
                // `build_argv` refuses an unresolved volume before it gets here.
                DiskSource::Volume { .. } => continue,
            };
            if let Some(io) = dr.io {
                s.push_str(&format!(",aio={}", io.as_str()));
            }
            common(&mut s);
            a.push("-blockdev", s);
            let fmt = match dr.format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            };
            let mut s = format!("driver={fmt},file={node}-storage,node-name={node}");
            common(&mut s);
            let chain = ctx
                .backing_chains
                .get(&format!("devices.disks[{i}].source.file"))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut prefix = String::new();
            for b in chain {
                prefix.push_str("backing.");
                let fmt = match b.format {
                    DiskFormat::Raw => "raw",
                    DiskFormat::Qcow2 => "qcow2",
                };
                s.push_str(&format!(
                    ",{prefix}driver={fmt},{prefix}file.driver=file,{prefix}file.filename={}",
                    esc(&b.path)
                ));
            }
            a.push("-blockdev", s);
            true
        } else {
            false
        };
        let cd = disk.device == DiskDevice::Cdrom;
        let mut s = match disk.target.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,id=virtio-{}", disk.target.dev),
            DiskBus::Sata => {
                let unit = match disk.address {
                    Some(Address::Drive { unit, .. }) => u32::from(unit),
                    _ => disk_index(&disk.target.dev),
                };
                format!(
                    "{},bus=ide.{unit},id=sata0-0-{unit}",
                    if cd { "ide-cd" } else { "ide-hd" }
                )
            }
            DiskBus::Ide => {
                // Validation made sure the slot exists.
                let (bus, unit) = crate::validate::machine::ide_slot(disk).unwrap_or((0, 0));
                format!(
                    "{},bus=ide.{bus},unit={unit},id=ide0-{bus}-{unit}",
                    if cd { "ide-cd" } else { "ide-hd" }
                )
            }
            DiskBus::Scsi => {
                let (ctl, target, unit) = match disk.address {
                    Some(Address::Drive {
                        controller,
                        target,
                        unit,
                        ..
                    }) => (controller, target, u32::from(unit)),
                    _ => (0, 0, disk_index(&disk.target.dev)),
                };
                format!(
                    "{},bus=scsi{ctl}.0,channel=0,scsi-id={target},lun={unit},id=scsi{ctl}-0-{target}-{unit}",
                    if cd { "scsi-cd" } else { "scsi-hd" }
                )
            }
        };
        if has_media {
            s.push_str(&format!(",drive={node}"));
        }
        if !cd {
            s.push_str(&format!(",write-cache={}", on_off(write_cache)));
        }
        if disk.shareable {
            s.push_str(",share-rw=on");
        }
        if let Some(ser) = &disk.serial {
            s.push_str(&format!(",serial={ser}"));
        }
        if let Some(t) = dr.iothread {
            s.push_str(&format!(",iothread=iothread{t}"));
        }
        if let Some(b) = disk.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        if disk.target.bus == DiskBus::Virtio {
            s.push_str(&pci(&disk.address));
        }
        a.push("-device", s);
    }
}

fn interfaces(a: &mut Args, d: &DomainConfig, ctx: &LaunchContext) -> Result<(), ArgvError> {
    for (i, nic) in d.devices.interfaces.iter().enumerate() {
        let mac = nic.mac.ok_or(ArgvError::MissingMac(i))?;
        let virtio = nic.model == NicModel::Virtio;
        match &nic.source {
            InterfaceSource::User => a.push("-netdev", format!("user,id=hostnet{i}")),
            InterfaceSource::VhostUser { path, mode } => {
                let server = if *mode == SocketMode::Server {
                    ",server=on,wait=off"
                } else {
                    ""
                };
                a.push(
                    "-chardev",
                    format!("socket,id=charnet{i},path={}{server}", esc(path)),
                );
                let mut s = format!("vhost-user,chardev=charnet{i},id=hostnet{i}");
                if let Some(q) = nic.driver.as_ref().and_then(|d| d.queues) {
                    s.push_str(&format!(",queues={q}"));
                }
                a.push("-netdev", s);
            }
            InterfaceSource::Bridge { .. }
            | InterfaceSource::Network { .. }
            | InterfaceSource::Direct { .. } => {
                let fd = ctx.net_fds.get(&i).ok_or(ArgvError::MissingTapFd(i))?;
                let list =
                    |fds: &[i32]| fds.iter().map(i32::to_string).collect::<Vec<_>>().join(":");
                let mut s = match fd.taps.as_slice() {
                    [] => return Err(ArgvError::MissingTapFd(i)),
                    [one] => format!("tap,fd={one},id=hostnet{i}"),
                    // One tap descriptor per queue: QEMU counts the queues from the list.
                    many => format!("tap,fds={},id=hostnet{i}", list(many)),
                };
                // driver name='qemu' asks for QEMU's own backend even where vhost-net is.
                let userspace = nic
                    .driver
                    .as_ref()
                    .is_some_and(|d| d.name == Some(NicBackend::Qemu));
                if virtio && !userspace && !fd.vhosts.is_empty() {
                    match fd.vhosts.as_slice() {
                        [one] if fd.taps.len() == 1 => {
                            s.push_str(&format!(",vhost=on,vhostfd={one}"))
                        }
                        many => s.push_str(&format!(",vhost=on,vhostfds={}", list(many))),
                    }
                }
                a.push("-netdev", s);
            }
        }
        let model = match nic.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
        };
        let mut s = format!("{model},netdev=hostnet{i},id=net{i},mac={mac}");
        if let (true, Some(m)) = (virtio, nic.mtu) {
            s.push_str(&format!(",host_mtu={m}"));
        }
        if let (true, Some(dr)) = (virtio, &nic.driver) {
            if let Some(q) = dr.queues.filter(|q| *q > 1) {
                // One MSI-X vector per queue plus config and control, as libvirt sets.
                s.push_str(&format!(",mq=on,vectors={}", 2 * q + 2));
            }
            if let Some(r) = dr.rx_queue_size {
                s.push_str(&format!(",rx_queue_size={r}"));
            }
            if let Some(t) = dr.tx_queue_size {
                s.push_str(&format!(",tx_queue_size={t}"));
            }
        }
        if let Some(b) = nic.boot_order {
            s.push_str(&format!(",bootindex={b}"));
        }
        s.push_str(&pci(&nic.address));
        a.push("-device", s);
    }
    Ok(())
}

/// `field` names the chardev in the model (`devices.serials[0]`), for host path substitution.
fn chardev(
    id: &str,
    src: &CharSource,
    log: Option<&str>,
    ctx: &LaunchContext,
    field: &str,
) -> Result<String, ArgvError> {
    let mut s = match src {
        CharSource::Pty => format!("pty,id={id}"),
        CharSource::Unix { path, mode } => {
            let server = if *mode == SocketMode::Server {
                ",server=on,wait=off"
            } else {
                ""
            };
            format!("socket,id={id},path={}{server}", esc(path))
        }
        CharSource::File { path } => format!(
            "file,id={id},path={}",
            esc(ctx.host_path(&format!("{field}.source.path"), path))
        ),
        CharSource::Null => format!("null,id={id}"),
    };
    if let Some(l) = log {
        s.push_str(&format!(",logfile={l},logappend=on"));
    }
    Ok(s)
}

fn chardevs(a: &mut Args, dv: &Devices, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let log = ctx.serial_log.as_deref().map(path_str).transpose()?;
    let mut serials: Vec<(u32, &CharSource, String)> = dv
        .serials
        .iter()
        .enumerate()
        .map(|(i, s)| (s.port, &s.source, format!("devices.serials[{i}]")))
        .collect();
    // A serial-target console without a matching <serial> creates that serial port.
    for (i, c) in dv.consoles.iter().enumerate() {
        if c.target == ConsoleTarget::Serial && !serials.iter().any(|(p, _, _)| *p == c.port) {
            serials.push((c.port, &c.source, format!("devices.consoles[{i}]")));
        }
    }
    for (port, src, field) in serials {
        a.push(
            "-chardev",
            chardev(
                &format!("charserial{port}"),
                src,
                log.as_deref(),
                ctx,
                &field,
            )?,
        );
        a.push(
            "-device",
            format!("isa-serial,chardev=charserial{port},id=serial{port},index={port}"),
        );
    }
    for (i, c) in dv.consoles.iter().enumerate() {
        if c.target == ConsoleTarget::Virtio {
            a.push(
                "-chardev",
                chardev(
                    &format!("charconsole{i}"),
                    &c.source,
                    log.as_deref(),
                    ctx,
                    &format!("devices.consoles[{i}]"),
                )?,
            );
            a.push(
                "-device",
                format!("virtconsole,bus=virtio-serial0.0,chardev=charconsole{i},id=console{i}"),
            );
        }
    }
    for (i, ch) in dv.channels.iter().enumerate() {
        if ch.kind == ChannelKind::Spicevmc {
            // The SPICE server carries the agent channel; `vdagent` is its QEMU name.
            a.push(
                "-chardev",
                format!("spicevmc,id=charchannel{i},name=vdagent"),
            );
        } else {
            let path = match &ch.path {
                Some(p) => esc(p),
                None => format!("{}/{}.sock", path_str(&ctx.runtime_dir)?, ch.name),
            };
            a.push(
                "-chardev",
                format!("socket,id=charchannel{i},path={path},server=on,wait=off"),
            );
        }
        let (ctl, port) = match ch.address {
            Some(Address::VirtioSerial {
                controller, port, ..
            }) => (controller, format!(",nr={port}")),
            _ => (0, String::new()),
        };
        a.push(
            "-device",
            format!(
                "virtserialport,bus=virtio-serial{ctl}.0{port},chardev=charchannel{i},id=channel{i},name={}",
                ch.name
            ),
        );
    }
    Ok(())
}
