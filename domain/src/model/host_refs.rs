//! Every host resource a definition names: files, sockets, devices. The host layer decides
//! which of them a caller may name (storage roots, admin-only devices) and opens them; this
//! module only lists them, so that no path field can reach QEMU unlisted.
//!
//! The walk destructures each model struct without `..`: adding a field to `DomainConfig`,
//! `Os`, `Devices`, `Disk`, an interface, a chardev or a channel does not compile until it is
//! listed here or explicitly marked as naming nothing on the host.

use super::*;

/// What a host reference is, which decides the rule that applies and how it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefKind {
    /// A disk or CD-ROM image: a regular file, opened read-only when `readonly`.
    DiskImage { readonly: bool, format: DiskFormat },
    /// A host block device as a disk (`<source dev=...>`): admin-only.
    BlockDevice { readonly: bool },
    /// `-kernel` / `-initrd`: a regular file QEMU reads once.
    BootImage,
    /// UEFI firmware code (`<loader>`), opened read-only when `readonly`.
    Firmware { readonly: bool },
    /// The per-guest UEFI variable store (read-write).
    Nvram,
    /// The pristine variable store `nvram` is copied from (read-only).
    NvramTemplate,
    /// A chardev `file` source: QEMU appends the guest's output to it (created if missing).
    CharFile,
    /// A UNIX socket QEMU binds (`server`) or connects to.
    UnixSocket { server: bool },
    /// The entropy source of a virtio-rng device.
    RngBackend,
    /// A host PCI function passed through with VFIO: admin-only.
    HostPci { managed: bool },
    /// A host network interface a macvtap is created on: admin-only.
    HostNic,
    /// A VLAN tag on a port of a host bridge (value: the bridge): it would put the guest on
    /// that VLAN of the host's own network, so it is admin-only (daemon networks are not).
    HostVlan,
    /// A directory shared with the guest (`<filesystem>`): QEMU's 9p server works beneath
    /// it, writing unless `readonly`.
    SharedDir { readonly: bool, virtiofs: bool },
    /// A network disk: QEMU connects to this server (value: `proto://host:port/name`) or
    /// NBD socket (value: the socket path) itself.
    NetworkDisk { protocol: NetProtocol },
    /// An IP address a console (VNC, SPICE) listens on: beyond loopback it opens the guest's
    /// screen and input to the network, so it is admin-only.
    ListenAddress,
}

/// One host reference: the field that holds it (JSON model path, with libvirt's `file` /
/// `dev` attribute names for disk sources), the value, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRef<'a> {
    pub field: String,
    pub value: std::borrow::Cow<'a, str>,
    pub kind: HostRefKind,
}

impl DomainConfig {
    /// Every host path or device this definition names, in document order.
    pub fn host_refs<'a>(&'a self) -> Vec<HostRef<'a>> {
        let mut out = Refs(Vec::new());
        let DomainConfig {
            virt_type: _,
            name: _,
            uuid: _,
            title: _,
            description: _,
            metadata: _,
            memory: _,
            vcpu: _,
            iothreads: _,
            cputune: _,
            numatune: _,
            memtune: _,
            // File-backed RAM lives where the daemon's configuration says, never the guest's.
            memory_backing: _,
            os,
            features: _,
            cpu: _,
            clock: _,
            on_poweroff: _,
            on_reboot: _,
            on_crash: _,
            pm: _,
            devices,
        } = self;
        let Os {
            arch: _,
            machine: _,
            firmware,
            boot: _,
            kernel,
            bootmenu: _,
            bios_serial: _,
        } = os;
        match firmware {
            // Autoselected firmware is chosen and opened by the host layer, from QEMU's
            // descriptors: nothing in the definition names a host file.
            Firmware::Bios
            | Firmware::UefiAuto {
                secure_boot: _,
                enrolled_keys: _,
            } => {}
            Firmware::Uefi { loader, nvram } => {
                let Loader {
                    path,
                    readonly,
                    secure: _,
                } = loader;
                out.add(
                    "os.firmware.loader.path".into(),
                    path,
                    HostRefKind::Firmware {
                        readonly: *readonly,
                    },
                );
                if let Some(Nvram { path, template }) = nvram {
                    out.add("os.firmware.nvram.path".into(), path, HostRefKind::Nvram);
                    if let Some(t) = template {
                        out.add(
                            "os.firmware.nvram.template".into(),
                            t,
                            HostRefKind::NvramTemplate,
                        );
                    }
                }
            }
        }
        if let Some(DirectKernel {
            kernel,
            initrd,
            cmdline: _,
        }) = kernel
        {
            out.add("os.kernel.kernel".into(), kernel, HostRefKind::BootImage);
            if let Some(i) = initrd {
                out.add("os.kernel.initrd".into(), i, HostRefKind::BootImage);
            }
        }
        let Devices {
            // The daemon's configuration decides what runs; this value is never executed.
            emulator: _,
            disks,
            controllers: _,
            interfaces,
            serials,
            consoles,
            channels,
            inputs: _,
            // swtpm is run by the host layer, with its state in the daemon's own directories.
            tpm: _,
            graphics,
            videos: _,
            hostdevs,
            watchdog: _,
            memballoon: _,
            rngs,
            filesystems,
            // USB redirection is carried over the SPICE connection: nothing on the host.
            redirdevs: _,
            sounds: _,
            // Only backends that open nothing on the host exist in the model (none, spice).
            audios: _,
            // Anonymous RAM of QEMU's own: nothing on the host is named.
            memory: _,
        } = devices;
        // The port is picked by the host layer (autoport) or a number: only where it listens
        // is a host resource.
        match graphics {
            Some(Graphics::Vnc {
                port: _,
                listen: Some(l),
                keymap: _,
            })
            | Some(Graphics::Spice {
                port: _,
                listen: SpiceListen::Address { address: Some(l) },
                image_compression: _,
                gl: _,
                options: _,
                keymap: _,
            }) => out.add(
                "devices.graphics.listen".into(),
                l,
                HostRefKind::ListenAddress,
            ),
            _ => {}
        }
        for (i, disk) in disks.iter().enumerate() {
            let Disk {
                device,
                source,
                driver,
                target: _,
                readonly,
                shareable: _,
                serial: _,
                boot_order: _,
                address: _,
                // Limits QEMU applies: nothing on the host.
                iotune: _,
            } = disk;
            let readonly = *readonly || *device == DiskDevice::Cdrom;
            match source {
                None => {}
                Some(DiskSource::File { path }) => out.add(
                    format!("devices.disks[{i}].source.file"),
                    path,
                    HostRefKind::DiskImage {
                        readonly,
                        format: driver.format,
                    },
                ),
                Some(DiskSource::Block { dev }) => out.add(
                    format!("devices.disks[{i}].source.dev"),
                    dev,
                    HostRefKind::BlockDevice { readonly },
                ),
                // Names a pool and a volume, no path: the host layer resolves it to the
                // file in the pool before anything is checked or opened (that file is then
                // listed as a `source.file`); the argv builder refuses one left unresolved.
                Some(DiskSource::Volume { .. }) => {}
                Some(DiskSource::Network(n)) => out.0.push(HostRef {
                    field: format!("devices.disks[{i}].source"),
                    value: match n.hosts.first() {
                        Some(NetHost::Unix { socket }) => socket.as_str().into(),
                        _ => n.display().into(),
                    },
                    kind: HostRefKind::NetworkDisk {
                        protocol: n.protocol,
                    },
                }),
            }
        }
        for (i, f) in filesystems.iter().enumerate() {
            let Filesystem {
                driver,
                access_mode: _,
                source,
                target: _,
                readonly,
                address: _,
            } = f;
            out.add(
                format!("devices.filesystems[{i}].source"),
                source,
                HostRefKind::SharedDir {
                    readonly: *readonly,
                    virtiofs: *driver == super::filesystem::FsDriver::Virtiofs,
                },
            );
        }
        for (i, nic) in interfaces.iter().enumerate() {
            if let (InterfaceSource::Bridge { bridge }, Some(_)) = (&nic.source, nic.vlan) {
                out.add(
                    format!("devices.interfaces[{i}].vlan"),
                    bridge,
                    HostRefKind::HostVlan,
                );
            }
            match &nic.source {
                InterfaceSource::Bridge { .. }
                | InterfaceSource::Network { .. }
                | InterfaceSource::User => {}
                InterfaceSource::Direct { dev, mode: _ } => out.add(
                    format!("devices.interfaces[{i}].source.dev"),
                    dev,
                    HostRefKind::HostNic,
                ),
                InterfaceSource::VhostUser { path, mode } => out.add(
                    format!("devices.interfaces[{i}].source.path"),
                    path,
                    HostRefKind::UnixSocket {
                        server: *mode == SocketMode::Server,
                    },
                ),
            }
        }
        let chardev = |out: &mut Refs<'a>, field: String, source: &'a CharSource| match source {
            CharSource::Pty | CharSource::Null => {}
            CharSource::Unix { path, mode } => out.add(
                format!("{field}.source.path"),
                path,
                HostRefKind::UnixSocket {
                    server: *mode == SocketMode::Server,
                },
            ),
            CharSource::File { path } => {
                out.add(format!("{field}.source.path"), path, HostRefKind::CharFile)
            }
        };
        for (i, s) in serials.iter().enumerate() {
            let Serial { source, port: _ } = s;
            chardev(&mut out, format!("devices.serials[{i}]"), source);
        }
        for (i, c) in consoles.iter().enumerate() {
            let Console {
                source,
                target: _,
                port: _,
            } = c;
            chardev(&mut out, format!("devices.consoles[{i}]"), source);
        }
        for (i, ch) in channels.iter().enumerate() {
            let Channel {
                kind: _,
                path,
                name: _,
                address: _,
            } = ch;
            if let Some(p) = path {
                out.add(
                    format!("devices.channels[{i}].path"),
                    p,
                    HostRefKind::UnixSocket { server: true },
                );
            }
        }
        for (i, h) in hostdevs.iter().enumerate() {
            let Hostdev {
                source,
                managed,
                boot_order: _,
                address: _,
            } = h;
            out.0.push(HostRef {
                field: format!("devices.hostdevs[{i}].source"),
                value: source.to_string().into(),
                kind: HostRefKind::HostPci { managed: *managed },
            });
        }
        for (i, r) in rngs.iter().enumerate() {
            let Rng {
                backend,
                address: _,
            } = r;
            out.add(
                format!("devices.rngs[{i}].backend"),
                backend,
                HostRefKind::RngBackend,
            );
        }
        out.0
    }
}

struct Refs<'a>(Vec<HostRef<'a>>);

impl<'a> Refs<'a> {
    fn add(&mut self, field: String, value: &'a str, kind: HostRefKind) {
        self.0.push(HostRef {
            field,
            value: value.into(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const BASE: &str = "<domain type='kvm'><name>max</name><memory unit='MiB'>64</memory>\
        <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>";

    /// A definition with every kind of host reference the model can hold.
    fn maximal() -> DomainConfig {
        let mut d = DomainConfig::from_xml(BASE).unwrap();
        d.os.firmware = Firmware::Uefi {
            loader: Loader {
                path: "/fw/code.fd".into(),
                readonly: true,
                secure: false,
            },
            nvram: Some(Nvram {
                path: "/fw/vars.fd".into(),
                template: Some("/fw/vars.tmpl".into()),
            }),
        };
        d.os.kernel = Some(DirectKernel {
            kernel: "/boot/k".into(),
            initrd: Some("/boot/i".into()),
            cmdline: Some("console=ttyS0".into()),
        });
        let disk = |source, device| Disk {
            device,
            source,
            driver: DiskDriver {
                format: DiskFormat::Raw,
                cache: None,
                io: None,
                discard: None,
                iothread: None,
            },
            target: DiskTarget {
                dev: "vda".into(),
                bus: DiskBus::Virtio,
            },
            readonly: false,
            shareable: false,
            serial: None,
            boot_order: None,
            address: None,
            iotune: None,
        };
        d.devices.emulator = Some("/usr/bin/qemu-system-x86_64".into());
        d.devices.disks = vec![
            disk(
                Some(DiskSource::File {
                    path: "/img/a.raw".into(),
                }),
                DiskDevice::Disk,
            ),
            disk(
                Some(DiskSource::Block {
                    dev: "/dev/sda".into(),
                }),
                DiskDevice::Disk,
            ),
            disk(
                Some(DiskSource::File {
                    path: "/img/cd.iso".into(),
                }),
                DiskDevice::Cdrom,
            ),
            disk(None, DiskDevice::Cdrom),
            disk(
                Some(DiskSource::Network(NetSource {
                    protocol: NetProtocol::Nbd,
                    name: Some("exp".into()),
                    hosts: vec![NetHost::Tcp {
                        name: "10.0.0.1".into(),
                        port: None,
                    }],
                })),
                DiskDevice::Disk,
            ),
            disk(
                Some(DiskSource::Network(NetSource {
                    protocol: NetProtocol::Nbd,
                    name: None,
                    hosts: vec![NetHost::Unix {
                        socket: "/sock/nbd".into(),
                    }],
                })),
                DiskDevice::Disk,
            ),
        ];
        let nic = |source| Interface {
            source,
            mac: None,
            model: NicModel::Virtio,
            driver: None,
            mtu: None,
            boot_order: None,
            address: None,
            target_dev: None,
            vlan: None,
            link_down: false,
            bandwidth: None,
            filterref: None,
            port_isolated: false,
        };
        d.devices.filesystems = vec![Filesystem {
            driver: FsDriver::Path,
            access_mode: FsAccessMode::Mapped,
            source: "/share/dir".into(),
            target: "tag".into(),
            readonly: true,
            address: None,
        }];
        d.devices.interfaces = vec![
            nic(InterfaceSource::User),
            nic(InterfaceSource::Direct {
                dev: "eth0".into(),
                mode: MacvtapMode::Bridge,
            }),
            nic(InterfaceSource::VhostUser {
                path: "/sock/vhost".into(),
                mode: SocketMode::Client,
            }),
        ];
        d.devices.serials = vec![
            Serial {
                source: CharSource::File {
                    path: "/log/serial".into(),
                },
                port: 0,
            },
            Serial {
                source: CharSource::Pty,
                port: 1,
            },
        ];
        d.devices.consoles = vec![Console {
            source: CharSource::Unix {
                path: "/sock/console".into(),
                mode: SocketMode::Server,
            },
            target: ConsoleTarget::Virtio,
            port: 0,
        }];
        d.devices.channels = vec![
            Channel {
                kind: ChannelKind::Unix,
                path: Some("/sock/agent".into()),
                name: "org.qemu.guest_agent.0".into(),
                address: None,
            },
            Channel {
                kind: ChannelKind::Unix,
                path: None,
                name: "other".into(),
                address: None,
            },
        ];
        d.devices.hostdevs = vec![Hostdev {
            source: PciAddr {
                domain: 0,
                bus: 0x41,
                slot: 0,
                function: 1,
            },
            managed: true,
            boot_order: None,
            address: None,
        }];
        d.devices.rngs = vec![Rng {
            backend: "/dev/urandom".into(),
            address: None,
        }];
        d.devices.graphics = Some(Graphics::Spice {
            port: VncPort::Auto,
            listen: SpiceListen::Address {
                address: Some("0.0.0.0".into()),
            },
            keymap: None,
            image_compression: None,
            gl: None,
            options: SpiceOptions::default(),
        });
        d
    }

    #[test]
    fn every_reference_of_a_maximal_definition_is_listed() {
        let d = maximal();
        let refs: Vec<(String, String, HostRefKind)> = d
            .host_refs()
            .into_iter()
            .map(|r| (r.field, r.value.into_owned(), r.kind))
            .collect();
        let expect = |f: &str, v: &str, k: HostRefKind| (f.to_owned(), v.to_owned(), k);
        let raw = DiskFormat::Raw;
        assert_eq!(
            refs,
            vec![
                expect(
                    "os.firmware.loader.path",
                    "/fw/code.fd",
                    HostRefKind::Firmware { readonly: true }
                ),
                expect("os.firmware.nvram.path", "/fw/vars.fd", HostRefKind::Nvram),
                expect(
                    "os.firmware.nvram.template",
                    "/fw/vars.tmpl",
                    HostRefKind::NvramTemplate
                ),
                expect("os.kernel.kernel", "/boot/k", HostRefKind::BootImage),
                expect("os.kernel.initrd", "/boot/i", HostRefKind::BootImage),
                expect(
                    "devices.graphics.listen",
                    "0.0.0.0",
                    HostRefKind::ListenAddress
                ),
                expect(
                    "devices.disks[0].source.file",
                    "/img/a.raw",
                    HostRefKind::DiskImage {
                        readonly: false,
                        format: raw
                    }
                ),
                expect(
                    "devices.disks[1].source.dev",
                    "/dev/sda",
                    HostRefKind::BlockDevice { readonly: false }
                ),
                expect(
                    "devices.disks[2].source.file",
                    "/img/cd.iso",
                    HostRefKind::DiskImage {
                        readonly: true,
                        format: raw
                    }
                ),
                expect(
                    "devices.disks[4].source",
                    "nbd://10.0.0.1:10809/exp",
                    HostRefKind::NetworkDisk {
                        protocol: NetProtocol::Nbd
                    }
                ),
                expect(
                    "devices.disks[5].source",
                    "/sock/nbd",
                    HostRefKind::NetworkDisk {
                        protocol: NetProtocol::Nbd
                    }
                ),
                expect(
                    "devices.filesystems[0].source",
                    "/share/dir",
                    HostRefKind::SharedDir {
                        readonly: true,
                        virtiofs: false
                    }
                ),
                expect(
                    "devices.interfaces[1].source.dev",
                    "eth0",
                    HostRefKind::HostNic
                ),
                expect(
                    "devices.interfaces[2].source.path",
                    "/sock/vhost",
                    HostRefKind::UnixSocket { server: false }
                ),
                expect(
                    "devices.serials[0].source.path",
                    "/log/serial",
                    HostRefKind::CharFile
                ),
                expect(
                    "devices.consoles[0].source.path",
                    "/sock/console",
                    HostRefKind::UnixSocket { server: true }
                ),
                expect(
                    "devices.channels[0].path",
                    "/sock/agent",
                    HostRefKind::UnixSocket { server: true }
                ),
                expect(
                    "devices.hostdevs[0].source",
                    "0000:41:00.1",
                    HostRefKind::HostPci { managed: true }
                ),
                expect(
                    "devices.rngs[0].backend",
                    "/dev/urandom",
                    HostRefKind::RngBackend
                ),
            ]
        );
    }

    /// Catches a path added somewhere the destructuring does not reach (inside a struct that
    /// is walked with `..`): every absolute path anywhere in the serialized model must be
    /// listed, except the emulator, which is never executed.
    #[test]
    fn no_absolute_path_in_the_model_goes_unlisted() {
        fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
            match v {
                serde_json::Value::String(s) if s.starts_with('/') => {
                    out.push((at.to_owned(), s.clone()))
                }
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        walk(x, &format!("{at}[{i}]"), out)
                    }
                }
                serde_json::Value::Object(o) => {
                    for (k, x) in o {
                        walk(x, &format!("{at}.{k}"), out)
                    }
                }
                _ => {}
            }
        }
        let d = maximal();
        let mut paths = Vec::new();
        walk(&serde_json::to_value(&d).unwrap(), "", &mut paths);
        let listed: Vec<String> = d
            .host_refs()
            .into_iter()
            .map(|r| r.value.into_owned())
            .collect();
        for (at, p) in paths {
            if at == ".devices.emulator" {
                continue;
            }
            assert!(
                listed.contains(&p),
                "{at} = {p} is not a listed host reference"
            );
        }
    }
}

#[cfg(test)]
mod argv_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::model::DomainConfig;
    use crate::qemu::{Accel, CpuChoice, LaunchContext, MonitorSocket};

    /// Every file the host layer substitutes is written as the substitute: with a path for
    /// every listed file field, no original file path is left on the command line.
    #[test]
    fn the_argv_builder_uses_every_substituted_path() {
        let xml = "<domain type='kvm'><name>s</name>\
            <uuid>c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f</uuid>\
            <memory unit='MiB'>64</memory><vcpu>1</vcpu>\
            <os><type arch='x86_64' machine='q35'>hvm</type>\
            <loader readonly='yes' type='pflash'>/orig/code.fd</loader><nvram>/orig/vars.fd</nvram>\
            <kernel>/orig/k</kernel><initrd>/orig/i</initrd></os>\
            <devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
              <source file='/orig/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            <disk type='block' device='disk'><driver name='qemu' type='raw'/>\
              <source dev='/orig/sdb'/><target dev='vdb' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
              <source file='/orig/cd.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
            <serial type='file'><source path='/orig/serial.log'/><target port='0'/></serial>\
            <console type='file'><source path='/orig/console.log'/><target type='virtio' port='0'/></console>\
            <rng model='virtio'><backend model='random'>/orig/rng</backend></rng>\
            </devices></domain>";
        let d = DomainConfig::from_xml(xml).unwrap();
        let host_paths = d
            .host_refs()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.field.clone(), format!("/dev/fdset/{i}")))
            .collect();
        let ctx = LaunchContext {
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Kvm,
            cpu: CpuChoice::AsConfigured,
            monitor: MonitorSocket::Fd(3),
            fd_sets: vec![],
            runtime_dir: "/run/x".into(),
            memory_dir: None,
            serial_log: None,
            net_fds: Default::default(),
            vnc_display: None,
            spice_port: None,
            swtpm_socket: None,
            sandbox: true,
            host_paths,
            backing_chains: [(
                "devices.disks[0].source.file".to_owned(),
                vec![crate::qemu::BackingImage {
                    format: crate::model::DiskFormat::Raw,
                    path: "/dev/fdset/99".into(),
                }],
            )]
            .into(),
        };
        let argv = crate::build_argv(&d.validate().unwrap(), &ctx)
            .unwrap()
            .join(" ");
        assert!(!argv.contains("/orig/"), "{argv}");
        assert!(
            argv.contains(
                "backing.driver=raw,backing.file.driver=file,backing.file.filename=/dev/fdset/99"
            ),
            "{argv}"
        );
    }
}
