//! Property tests: arbitrary valid `DomainConfig`s round-trip exactly through XML and JSON,
//! and the reader never panics on mutated corpus documents.

use novacron_domain::model::*;
use novacron_domain::DomainConfig;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

fn idset(ids: Vec<u32>) -> IdSet {
    IdSet::from_ids(ids).expect("small ids")
}

fn cpu_strategy(count: u32, mem_kib: u64) -> impl Strategy<Value = Option<Cpu>> {
    let mode = prop_oneof![
        Just(CpuMode::HostPassthrough),
        Just(CpuMode::HostModel),
        Just(CpuMode::Default),
        select(vec!["qemu64", "Skylake-Server-IBRS", "EPYC-Rome"])
            .prop_map(|m| CpuMode::Custom { model: m.into() }),
    ];
    let features = subsequence(vec!["vmx", "x2apic", "invtsc", "hle", "rtm", "pcid"], 0..4)
        .prop_flat_map(|names| {
            let n = names.len();
            vec(
                select(vec![
                    FeaturePolicy::Force,
                    FeaturePolicy::Require,
                    FeaturePolicy::Optional,
                    FeaturePolicy::Disable,
                    FeaturePolicy::Forbid,
                ]),
                n,
            )
            .prop_map(move |ps| {
                names
                    .iter()
                    .zip(ps)
                    .map(|(n, p)| CpuFeature {
                        policy: p,
                        name: (*n).into(),
                    })
                    .collect::<Vec<_>>()
            })
        });
    let cells = if count >= 2 { 0usize..3 } else { 0usize..2 };
    option::of(
        (
            mode,
            features,
            any::<bool>(),
            any::<Option<u32>>(),
            cells,
            any::<bool>(),
            option::of(select(CpuCheck::ALL.to_vec())),
            option::of(select(CpuFallback::ALL.to_vec())),
        )
            .prop_map(
                move |(mode, features, topo, dies, ncells, shared, check, fallback)| {
                    let topology = topo.then_some(CpuTopology {
                        sockets: count,
                        dies: dies.map(|_| 1),
                        cores: 1,
                        threads: 1,
                    });
                    let n = ncells as u32;
                    let numa = (0..n)
                        .map(|i| {
                            // Split vCPUs and memory (2 MiB granules) between cells.
                            let lo = count * i / n;
                            let hi = count * (i + 1) / n;
                            let granules = mem_kib / 2048;
                            let m_lo = granules * u64::from(i) / u64::from(n);
                            let m_hi = granules * u64::from(i + 1) / u64::from(n);
                            NumaCell {
                                id: i,
                                cpus: idset((lo..hi).collect()),
                                memory_kib: (m_hi - m_lo) * 2048,
                                mem_access: shared.then_some(MemoryAccess::Shared),
                                distances: if n == 2 {
                                    (0..n)
                                        .map(|j| NumaDistance {
                                            id: j,
                                            value: if i == j { 10 } else { 20 },
                                        })
                                        .collect()
                                } else {
                                    vec![]
                                },
                            }
                        })
                        .collect();
                    Cpu {
                        mode,
                        check,
                        fallback,
                        features,
                        topology,
                        numa,
                    }
                },
            ),
    )
}

fn hyperv_strategy() -> impl Strategy<Value = Option<HyperV>> {
    option::of(
        (
            select(vec![HypervMode::Custom, HypervMode::Passthrough]),
            subsequence(HypervFlag::ALL.to_vec(), 0..12),
            any::<bool>(),
            option::of((any::<bool>(), MIN_SPINLOCK_RETRIES..100_000)),
            option::of((any::<bool>(), option::of(any::<bool>()))),
            option::of((any::<bool>(), "[A-Za-z0-9]{1,12}")),
        )
            .prop_map(|(mode, flags, on, spinlocks, stimer, vendor)| HyperV {
                mode,
                flags: flags
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| (f, on ^ (i % 3 == 0)))
                    .collect(),
                spinlocks: spinlocks.map(|(state, r)| Spinlocks {
                    state,
                    retries: Some(r),
                }),
                stimer: stimer.map(|(state, direct)| Stimer {
                    state,
                    direct: direct.map(|d| d && state),
                }),
                vendor_id: vendor.map(|(state, v)| VendorId {
                    state,
                    value: Some(v),
                }),
            }),
    )
}

fn net_source_strategy() -> impl Strategy<Value = NetSource> {
    let tcp = (
        "[a-z][a-z0-9.-]{0,12}|127\\.0\\.0\\.1|::1",
        option::of(1u16..),
    )
        .prop_map(|(name, port)| NetHost::Tcp { name, port });
    prop_oneof![
        (
            prop_oneof![
                tcp.clone(),
                "/run/[a-z]{1,8}\\.sock".prop_map(|socket| NetHost::Unix { socket })
            ],
            option::of("[a-zA-Z0-9_.,&-]{1,12}"),
        )
            .prop_map(|(h, name)| NetSource {
                protocol: NetProtocol::Nbd,
                name,
                hosts: vec![h],
            }),
        (
            select(vec![NetProtocol::Http, NetProtocol::Https]),
            tcp.clone(),
            "/?[a-z0-9]{1,8}(/[a-z0-9._,-]{1,8}){0,2}",
        )
            .prop_map(|(protocol, h, name)| NetSource {
                protocol,
                name: Some(name),
                hosts: vec![h],
            }),
        (
            tcp.clone(),
            "iqn\\.2013-07\\.com\\.example:[a-z]{1,8}(/[0-9]{1,2})?"
        )
            .prop_map(|(h, name)| NetSource {
                protocol: NetProtocol::Iscsi,
                name: Some(name),
                hosts: vec![h],
            }),
        (vec(tcp, 1..4), "[a-z]{1,6}(/[a-z]{1,6})?/[a-z0-9_.-]{1,8}").prop_map(|(hosts, name)| {
            NetSource {
                protocol: NetProtocol::Rbd,
                name: Some(name),
                hosts,
            }
        }),
    ]
}

fn disk_strategy(i: usize) -> impl Strategy<Value = Disk> {
    let dev = format!("vd{}", (b'a' + i as u8) as char);
    (
        any::<bool>(),
        "/[a-z]{1,8}/[a-zA-Z0-9 _.,&'<>-]{0,12}[a-z]",
        any::<bool>(),
        option::of(select(DiskCache::ALL.to_vec())),
        option::of(select(vec![DiskIo::Threads, DiskIo::IoUring])),
        option::of(select(vec![DiskDiscard::Unmap, DiskDiscard::Ignore])),
        any::<(bool, bool)>(),
        option::of("[A-Za-z0-9_.-]{1,20}"),
        any::<bool>(),
        option::of(net_source_strategy()),
    )
        .prop_map(
            move |(block, path, qcow, cache, io, discard, (ro, share), serial, addr, net)| Disk {
                device: DiskDevice::Disk,
                // HTTP images are read-only; aio= is only for local files.
                readonly: ro
                    || net.as_ref().is_some_and(|n| {
                        matches!(n.protocol, NetProtocol::Http | NetProtocol::Https)
                    }),
                source: Some(match (net.clone(), block) {
                    (Some(n), _) => DiskSource::Network(n),
                    (None, true) => DiskSource::Block { dev: path },
                    (None, false) => DiskSource::File { path },
                }),
                driver: DiskDriver {
                    format: if qcow {
                        DiskFormat::Qcow2
                    } else {
                        DiskFormat::Raw
                    },
                    cache,
                    io: io.filter(|_| net.is_none()),
                    discard,
                    iothread: None,
                },
                target: DiskTarget {
                    dev: dev.clone(),
                    bus: DiskBus::Virtio,
                },
                shareable: share,
                serial,
                boot_order: None,
                address: addr.then_some(Address::Pci {
                    domain: 0,
                    bus: 0,
                    slot: 8 + i as u8,
                    function: 0,
                    multifunction: None,
                }),
                iotune: None,
            },
        )
}

fn nic_strategy(i: usize) -> impl Strategy<Value = Interface> {
    let source = prop_oneof![
        Just(InterfaceSource::User),
        "[a-z][a-z0-9]{0,8}".prop_map(|b| InterfaceSource::Bridge { bridge: b }),
        "[a-z][a-z0-9-]{0,20}".prop_map(|n| InterfaceSource::Network { network: n }),
        ("[a-z][a-z0-9]{0,8}", select(MacvtapMode::ALL.to_vec()))
            .prop_map(|(d, m)| InterfaceSource::Direct { dev: d, mode: m }),
    ];
    (
        source,
        select(NicModel::ALL.to_vec()),
        option::of(68u32..9000),
        any::<[u8; 3]>(),
        option::of((
            option::of(select(vec![NicBackend::Vhost, NicBackend::Qemu])),
            option::of(Just(1u32)),
            option::of(select(vec![256u32, 512, 1024])),
            option::of(select(vec![256u32, 512, 1024])),
        )),
        (
            option::of((
                1u64..100_000,
                option::of(0u64..1000),
                option::of(1u64..4096),
                option::of(1u64..100_000),
            )),
            option::of(proptest::collection::vec(any::<[u8; 3]>(), 0..3)),
            any::<bool>(),
        ),
    )
        .prop_map(move |(source, model, mtu, tail, driver, (bw, ips, iso))| {
            // Bandwidth, filter and isolation need a tap on a bridge.
            let on_tap = matches!(
                source,
                InterfaceSource::Bridge { .. } | InterfaceSource::Network { .. }
            );
            Interface {
                bandwidth: bw
                    .filter(|_| on_tap)
                    .map(|(avg, extra, burst, out)| Bandwidth {
                        inbound: Some(BandwidthRate {
                            average: avg,
                            peak: extra.map(|e| avg + e),
                            burst,
                        }),
                        outbound: out.map(|o| BandwidthRate {
                            average: o,
                            peak: None,
                            burst: None,
                        }),
                    }),
                filterref: ips.filter(|_| on_tap).map(|v| FilterRef {
                    filter: TrafficFilter::CleanTraffic,
                    ips: v
                        .into_iter()
                        .map(|b| std::net::Ipv4Addr::new(10, b[0], b[1], b[2].max(1)))
                        .collect(),
                }),
                port_isolated: iso && on_tap,
                source,
                mac: Some(MacAddr([0x52, 0x54, i as u8, tail[0], tail[1], tail[2]])),
                model,
                // Driver tuning is virtio-only.
                driver: driver.filter(|_| model == NicModel::Virtio).map(
                    |(name, queues, rx, tx)| NicDriver {
                        name,
                        queues,
                        rx_queue_size: rx,
                        tx_queue_size: tx,
                    },
                ),
                mtu,
                boot_order: None,
                address: None,
                target_dev: None,
                vlan: None,
                link_down: tail[0] & 1 == 1,
            }
        })
}

fn char_source() -> impl Strategy<Value = CharSource> {
    prop_oneof![
        Just(CharSource::Pty),
        ("/run/[a-z]{1,10}\\.sock", any::<bool>()).prop_map(|(p, s)| CharSource::Unix {
            path: p,
            mode: if s {
                SocketMode::Server
            } else {
                SocketMode::Client
            }
        }),
        "/var/log/[a-z]{1,10}".prop_map(|p| CharSource::File { path: p }),
    ]
}

fn fs_strategy(i: usize) -> impl Strategy<Value = Filesystem> {
    (
        "/srv/[a-zA-Z0-9 _.,&'<>-]{0,12}[a-z]",
        "[a-z][a-z0-9_./-]{0,20}",
        select(FsAccessMode::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(source, tag, access_mode, readonly, addr)| Filesystem {
                driver: FsDriver::Path,
                access_mode,
                source,
                // Unique per guest: the index leads.
                target: format!("t{i}{tag}"),
                readonly,
                address: addr.then_some(Address::Pci {
                    domain: 0,
                    bus: 0,
                    slot: 0x18 + i as u8,
                    function: 0,
                    multifunction: None,
                }),
            },
        )
}

fn devices_strategy() -> impl Strategy<Value = Devices> {
    (
        (0usize..4).prop_flat_map(|n| (0..n).map(disk_strategy).collect::<Vec<_>>()),
        (0usize..3).prop_flat_map(|n| (0..n).map(nic_strategy).collect::<Vec<_>>()),
        option::of(char_source()),
        vec(option::of("/run/q/[a-z]{1,8}"), 0..2),
        option::of((
            any::<bool>(),
            5900u16..6000,
            option::of(select(vec!["127.0.0.1", "::1", "0.0.0.0"])),
        )),
        option::of(prop_oneof![
            Just(VideoModel::None),
            Just(VideoModel::Virtio),
            option::of(1024u32..65536).prop_map(|v| VideoModel::Vga { vram_kib: v })
        ]),
        option::of((any::<bool>(), option::of(0u32..100))),
        any::<bool>(),
        option::of((
            select(vec![WatchdogModel::I6300esb, WatchdogModel::Itco]),
            select(WatchdogAction::ALL.to_vec()),
        )),
        option::of(select(vec![TpmModel::TpmCrb, TpmModel::TpmTis])),
        (0usize..3).prop_flat_map(|n| (0..n).map(fs_strategy).collect::<Vec<_>>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                disks,
                interfaces,
                serial,
                channels,
                vnc,
                video,
                balloon,
                rng,
                wd,
                tpm,
                filesystems,
                ioh,
            )| {
                let serials: Vec<Serial> = serial
                    .iter()
                    .map(|s| Serial {
                        source: s.clone(),
                        port: 0,
                    })
                    .collect();
                let consoles = serial
                    .iter()
                    .map(|s| Console {
                        source: s.clone(),
                        target: ConsoleTarget::Serial,
                        port: 0,
                    })
                    .collect();
                Devices {
                    emulator: Some("/usr/bin/qemu-system-x86_64".into()),
                    disks,
                    controllers: vec![
                        Controller {
                            index: 0,
                            kind: ControllerKind::PcieRoot,
                            address: None,
                        },
                        Controller {
                            index: 0,
                            kind: ControllerKind::Usb {
                                model: UsbModel::QemuXhci,
                                ports: Some(15),
                            },
                            address: None,
                        },
                        Controller {
                            index: 1,
                            kind: ControllerKind::PcieRootPort {
                                chassis: Some(1),
                                port: Some(0x10),
                                model: if ioh {
                                    RootPortModel::Ioh3420
                                } else {
                                    RootPortModel::PcieRootPort
                                },
                            },
                            address: None,
                        },
                    ],
                    interfaces,
                    serials,
                    consoles,
                    channels: channels
                        .into_iter()
                        .enumerate()
                        .map(|(i, p)| Channel {
                            kind: ChannelKind::Unix,
                            path: p,
                            name: format!("org.example.ch{i}"),
                            address: None,
                        })
                        .collect(),
                    inputs: vec![Input {
                        kind: InputKind::Tablet,
                        bus: InputBus::Usb,
                        address: Some(Address::Usb { bus: 0, port: 1 }),
                    }],
                    tpm: tpm.map(|model| Tpm { model }),
                    graphics: vnc.map(|(auto, p, l)| Graphics::Vnc {
                        port: if auto {
                            VncPort::Auto
                        } else {
                            VncPort::Fixed(p)
                        },
                        listen: l.map(str::to_owned),
                        keymap: (p % 3 == 0).then(|| "en-us".to_owned()),
                    }),
                    videos: video
                        .into_iter()
                        .map(|model| Video {
                            model,
                            address: None,
                        })
                        .collect(),
                    hostdevs: vec![Hostdev {
                        source: PciAddr {
                            domain: 0,
                            bus: 0x41,
                            slot: 0,
                            function: 1,
                        },
                        managed: true,
                        boot_order: None,
                        address: Some(Address::Pci {
                            domain: 0,
                            bus: 1,
                            slot: 0,
                            function: 0,
                            multifunction: Some(true),
                        }),
                    }],
                    filesystems,
                    watchdog: wd.map(|(model, action)| Watchdog {
                        model,
                        action,
                        address: None,
                    }),
                    memballoon: balloon.map(|(v, p)| Memballoon {
                        model: if v {
                            MemballoonModel::Virtio
                        } else {
                            MemballoonModel::None
                        },
                        stats_period: p,
                        address: None,
                    }),
                    rngs: if rng {
                        vec![novacron_domain::model::Rng {
                            backend: "/dev/urandom".into(),
                            address: None,
                        }]
                    } else {
                        vec![]
                    },
                    redirdevs: vec![],
                    sounds: vec![],
                    audios: vec![],
                    memory: vec![],
                }
            },
        )
}

/// SPICE graphics with what virt-manager puts beside it: the agent channel, USB redirection,
/// QXL, sound devices and audio backends.
fn devices_with_spice() -> BoxedStrategy<Devices> {
    let listen = prop_oneof![
        Just(SpiceListen::None),
        option::of(select(vec!["127.0.0.1", "::1", "0.0.0.0"])).prop_map(|a| {
            SpiceListen::Address {
                address: a.map(str::to_owned),
            }
        }),
    ];
    let qxl = (
        option::of(select(vec![16384u32, 65536, 131072])),
        option::of(select(vec![16384u32, 65536])),
        option::of(select(vec![8192u32, 16384])),
        option::of(1u32..=4),
    )
        .prop_map(|(ram_kib, vram_kib, vgamem_kib, heads)| VideoModel::Qxl {
            ram_kib,
            vram_kib,
            vgamem_kib,
            heads,
        });
    let sound = (
        select(SoundModel::ALL.to_vec()),
        subsequence(SoundCodec::ALL.to_vec(), 0..=3),
        any::<bool>(),
        option::of(1u16..8),
    )
        .prop_map(|(model, codecs, audio, port)| Sound {
            model,
            codecs: if model.is_hda() { codecs } else { vec![] },
            audio_id: audio.then_some(1),
            address: match model {
                SoundModel::Usb => port.map(|port| Address::Usb {
                    bus: 0,
                    port: port + 8,
                }),
                _ => None,
            },
        });
    let spice = (
        any::<bool>(),
        6000u16..7000,
        listen,
        option::of(select(SpiceImageCompression::ALL.to_vec())),
        option::of(Just(false)),
        any::<bool>(),
        vec(option::of(20u16..30), 0..3),
        option::of(qxl),
        vec(sound, 0..3),
        select(vec![AudioBackend::None, AudioBackend::Spice]),
        (
            option::of(select(SpiceWanCompression::ALL.to_vec())),
            option::of(select(SpiceWanCompression::ALL.to_vec())),
            option::of(any::<bool>()),
            option::of(select(SpiceStreaming::ALL.to_vec())),
            option::of(any::<bool>()),
            option::of(select(vec![SpiceMouse::Server, SpiceMouse::Client])),
            option::of(any::<bool>()),
        )
            .prop_map(
                |(jpeg, zlib, playback, streaming, copypaste, mouse, filetransfer)| SpiceOptions {
                    jpeg_compression: jpeg,
                    zlib_compression: zlib,
                    playback_compression: playback,
                    streaming,
                    copypaste,
                    mouse,
                    filetransfer,
                },
            )
            .boxed(),
    )
        .boxed();
    (devices_strategy().boxed(), option::of(spice))
        .prop_map(|(mut d, spice)| {
            let Some((
                auto,
                port,
                listen,
                compression,
                gl,
                agent,
                redirs,
                qxl,
                sounds,
                backend,
                options,
            )) = spice
            else {
                return d;
            };
            d.graphics = Some(Graphics::Spice {
                port: if auto || listen == SpiceListen::None {
                    VncPort::Auto
                } else {
                    VncPort::Fixed(port)
                },
                listen,
                image_compression: compression,
                gl,
                options,
                keymap: (port % 2 == 0).then(|| "de-ch".to_owned()),
            });
            if agent {
                d.channels.push(Channel {
                    kind: ChannelKind::Spicevmc,
                    path: None,
                    name: "com.redhat.spice.0".into(),
                    address: None,
                });
            }
            d.redirdevs = redirs
                .into_iter()
                .map(|p| Redirdev {
                    address: p.map(|port| Address::Usb { bus: 0, port }),
                })
                .collect();
            if let Some(model) = qxl {
                d.videos = vec![Video {
                    model,
                    address: None,
                }];
            }
            // Every audio_id above names backend 1.
            if !sounds.is_empty() {
                d.audios = vec![Audio { id: 1, backend }];
            }
            d.sounds = sounds;
            d
        })
        .boxed()
}

fn domain_strategy() -> impl Strategy<Value = DomainConfig> {
    (1u32..=16, 1u64..=64).prop_flat_map(|(count, granules)| {
        let mem_kib = granules * 2048 * 16;
        let head = (
            "[a-z][a-z0-9_.+-]{0,20}",
            any::<[u8; 16]>().prop_filter("non-nil", |u| u.iter().any(|b| *b != 0)),
            option::of("[ -~]{1,30}"),
            option::of("[ -~\n\t]{1,40}"),
            option::of(select(vec!["", "<a/>", "\n  <x:y xmlns:x='urn:x'>t&amp;u<![CDATA[<raw>]]></x:y>\n"])),
            option::of(1024u64..=mem_kib),
            option::of((1u32..=8, 1u64..=4)),
            option::of(1..=count),
            select(vec![VirtType::Kvm, VirtType::Qemu]),
        );
        let mid = (
            cpu_strategy(count, mem_kib),
            option::of((option::of(2u64..262_144), option::of(1000u64..1_000_000), option::of(prop_oneof![Just(-1i64), 1000i64..100_000]), subsequence((0..count).collect::<Vec<_>>(), 0..count.min(4) as usize))),
            option::of((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())),
            (any::<(bool, bool, bool)>(), option::of(any::<bool>()), option::of(any::<bool>())),
            option::of((any::<bool>(), subsequence(vec![TimerName::Rtc, TimerName::Pit, TimerName::Hpet, TimerName::Kvmclock], 0..4))),
            (option::of(select(vec![LifecycleAction::Destroy, LifecycleAction::Restart])), option::of(select(LifecycleAction::ALL.to_vec())), option::of(select(LifecycleAction::ALL.to_vec()))),
            option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
        );
        let tail = (
            any::<bool>(),
            subsequence(vec![BootDevice::Hd, BootDevice::Cdrom, BootDevice::Network], 0..3),
            option::of(("/boot/[a-z]{1,8}", option::of("/boot/[a-z]{1,8}"), option::of("[a-z=0-9]{1,8}( [a-z=0-9]{1,8}){0,3}"))),
            option::of("pc-q35-[5-8]\\.[0-2]"),
            devices_with_spice(),
            (
                hyperv_strategy(),
                option::of(any::<bool>()),
                option::of(select(vec![IoapicDriver::Kvm, IoapicDriver::Qemu])),
                option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
            ),
        );
        (head, mid, tail).prop_map(move |(h, m, t)| {
            let (name, uuid, title, description, metadata, current, max, vcur, virt_type) = h;
            let (cpu, tune, backing, (acpi, apic, pae), vmport, smm, clock, (poff, reb, crash), pm) = (m.0, m.1, m.2, m.3 .0, m.3 .1, m.3 .2, m.4, m.5, m.6);
            let (uefi, boot, kernel, machine, devices, (hyperv, kvm_hidden, ioapic, auto_fw)) = t;
            let shared_cells = cpu.as_ref().is_some_and(|c| !c.numa.is_empty() && c.numa.iter().all(|x| x.mem_access.is_some()));
            let ncells = cpu.as_ref().map_or(0, |c| c.numa.len());
            DomainConfig {
                virt_type,
                name,
                uuid: Some(Uuid(uuid)),
                title,
                description,
                metadata: metadata.map(str::to_owned),
                memory: Memory {
                    memory_kib: mem_kib,
                    current_kib: current,
                    max: max.map(|(slots, f)| MaxMemory { size_kib: mem_kib * f, slots }),
                },
                vcpu: Vcpu { count, current: vcur, placement: Some(VcpuPlacement::Static), cpuset: Some(idset(vec![0, 1, 2, 5])) },
                iothreads: Some(2),
                cputune: tune.map(|(shares, period, quota, pins)| CpuTune {
                    shares,
                    period,
                    quota,
                    vcpupins: pins.into_iter().map(|v| VcpuPin { vcpu: v, cpuset: idset(vec![v, v + 8]) }).collect(),
                    emulatorpin: Some(idset(vec![0])),
                    iothreadpins: vec![IothreadPin { iothread: 2, cpuset: idset(vec![1, 3]) }],
                }),
                numatune: (ncells > 0).then(|| NumaTune {
                    memory: Some(NumaPolicy { mode: NumaMode::Interleave, nodeset: idset(vec![0, 1]) }),
                    memnodes: vec![MemNode { cellid: 0, mode: NumaMode::Preferred, nodeset: idset(vec![1]) }],
                }),
                // Above any maxMemory the generator makes (4x at most).
                memtune: vcur.map(|c| MemTune {
                    hard_limit_kib: Some(mem_kib * 8),
                    soft_limit_kib: (c % 2 == 0).then_some(mem_kib),
                }),
                memory_backing: backing.map(|(huge, nosh, locked, immediate, memfd)| MemoryBacking {
                    hugepages: huge.then(|| vec![HugePage { size_kib: 2048, nodeset: None }]),
                    nosharepages: nosh,
                    locked,
                    source: memfd.then_some(MemorySource::Memfd),
                    access: (shared_cells || memfd).then_some(MemoryAccess::Shared),
                    allocation: immediate.then_some(MemoryAllocation::Immediate),
                }),
                os: Os {
                    arch: Some(Arch::X86_64),
                    machine,
                    firmware: if uefi {
                        Firmware::Uefi {
                            loader: Loader { path: "/usr/share/OVMF/OVMF_CODE.fd".into(), readonly: true, secure: smm == Some(true) },
                            nvram: Some(Nvram { path: "/var/lib/n/VARS.fd".into(), template: Some("/usr/share/OVMF/OVMF_VARS.fd".into()) }),
                        }
                    } else if let Some((sb, keys)) = auto_fw {
                        Firmware::UefiAuto {
                            secure_boot: sb.filter(|on| !on || smm != Some(false)),
                            enrolled_keys: keys,
                        }
                    } else {
                        Firmware::Bios
                    },
                    boot,
                    kernel: kernel.map(|(k, i, c)| DirectKernel { kernel: k, initrd: i, cmdline: c }),
                    bootmenu: None,
                    bios_serial: false,
                },
                features: Features { acpi, apic, pae, vmport, smm, hyperv, kvm_hidden, ioapic },
                cpu,
                clock: clock.map(|(local, timers)| Clock {
                    offset: if local { ClockOffset::Localtime } else { ClockOffset::Utc },
                    timers: timers
                        .into_iter()
                        .map(|name| Timer {
                            name,
                            present: matches!(name, TimerName::Hpet).then_some(false),
                            tickpolicy: match name {
                                TimerName::Rtc => Some(TickPolicy::Catchup),
                                TimerName::Pit => Some(TickPolicy::Delay),
                                _ => None,
                            },
                        })
                        .collect(),
                }),
                on_poweroff: poff,
                on_reboot: reb,
                on_crash: crash,
                pm: pm.map(|(m, d)| PowerManagement { suspend_to_mem: m, suspend_to_disk: d }),
                devices,
            }
        })
    })
}

/// The generated domain moved onto an i440fx machine with libvirt's default devices there:
/// pci-root, the PIIX3 IDE controller with disks and CD-ROMs on its 2 buses x 2 units,
/// PIIX3 UHCI or ICH9 EHCI with UHCI companions, cirrus video, a null serial port, i686.
fn pc_strategy() -> BoxedStrategy<DomainConfig> {
    (
        // Boxed: the nested strategy types overflow the test thread's stack otherwise.
        domain_strategy().boxed(),
        select(vec!["pc", "pc-i440fx-7.2", "pc-i440fx-2.8"]),
        any::<bool>(),
        option::of((any::<bool>(), option::of(0u32..=65535))),
        (any::<bool>(), any::<bool>()),
        subsequence(vec![0u16, 1, 2, 3], 0..=4),
        any::<[(bool, bool); 4]>(),
        option::of(1024u32..65536),
        any::<bool>(),
    )
        .prop_map(
            |(mut d, machine, i686, menu, (ehci, usb_addr), ide, flags, vram, null)| {
                d.os.machine = Some(machine.into());
                if i686 {
                    d.os.arch = Some(Arch::I686);
                }
                d.os.bootmenu = menu.map(|(enable, timeout_ms)| BootMenu { enable, timeout_ms });
                let pci = |slot: u8, function: u8, multifunction: Option<bool>| {
                    Some(Address::Pci {
                        domain: 0,
                        bus: 0,
                        slot,
                        function,
                        multifunction,
                    })
                };
                let dv = &mut d.devices;
                for h in &mut dv.hostdevs {
                    h.address = pci(0x10, 0, None);
                }
                // iTCO is part of ICH9 (q35).
                if let Some(w) = &mut dv.watchdog {
                    w.model = WatchdogModel::I6300esb;
                }
                let ctl = |index, kind, address| Controller {
                    index,
                    kind,
                    address,
                };
                let usb = |model| ControllerKind::Usb { model, ports: None };
                dv.controllers = vec![
                    ctl(0, ControllerKind::PciRoot, None),
                    ctl(0, ControllerKind::Ide, pci(1, 1, None)),
                ];
                if ehci {
                    dv.controllers
                        .push(ctl(0, usb(UsbModel::Ich9Ehci1), pci(5, 7, None)));
                    for n in 1..=3u8 {
                        dv.controllers.push(ctl(
                            0,
                            usb(UsbModel::Ich9Uhci {
                                n,
                                startport: Some((n - 1) * 2),
                            }),
                            pci(5, n - 1, (n == 1).then_some(true)),
                        ));
                    }
                } else {
                    let a = if usb_addr { pci(1, 2, None) } else { None };
                    dv.controllers.push(ctl(0, usb(UsbModel::Piix3Uhci), a));
                }
                for i in ide {
                    let (cd, addr) = flags[usize::from(i)];
                    dv.disks.push(Disk {
                        device: if cd {
                            DiskDevice::Cdrom
                        } else {
                            DiskDevice::Disk
                        },
                        source: (!cd).then(|| DiskSource::File {
                            path: format!("/srv/ide{i}.img"),
                        }),
                        driver: DiskDriver {
                            format: DiskFormat::Qcow2,
                            cache: None,
                            io: None,
                            discard: None,
                            iothread: None,
                        },
                        target: DiskTarget {
                            dev: format!("hd{}", char::from(b'a' + i as u8)),
                            bus: DiskBus::Ide,
                        },
                        readonly: cd,
                        shareable: false,
                        serial: None,
                        boot_order: None,
                        address: addr.then_some(Address::Drive {
                            controller: 0,
                            bus: i / 2,
                            target: 0,
                            unit: i % 2,
                        }),
                        iotune: None,
                    });
                }
                dv.videos = vec![Video {
                    model: VideoModel::Cirrus { vram_kib: vram },
                    address: pci(2, 0, None),
                }];
                if null {
                    dv.serials.push(Serial {
                        source: CharSource::Null,
                        port: 1,
                    });
                }
                d
            },
        )
        .boxed()
}

fn test_ctx() -> novacron_domain::LaunchContext {
    novacron_domain::LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: novacron_domain::Accel::Kvm,
        cpu: novacron_domain::CpuChoice::Model("qemu64".into()),
        monitor: novacron_domain::MonitorSocket::Path("/run/q/qmp.sock".into()),
        fd_sets: Vec::new(),
        runtime_dir: "/run/q".into(),
        memory_dir: None,
        serial_log: Some("/var/log/q/serial.log".into()),
        net_fds: (0..4)
            .map(|i| (i, novacron_domain::NetFd::single(30 + i as i32, None)))
            .collect(),
        vnc_display: Some(1),
        spice_port: Some(5930),
        swtpm_socket: Some("/run/q/swtpm.sock".into()),
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pc_configs_are_valid_and_round_trip(cfg in pc_strategy()) {
        if let Err(e) = cfg.clone().validate() {
            prop_assert!(false, "generator produced an invalid config: {e}");
        }
        let xml = cfg.to_xml();
        let back = DomainConfig::from_xml(&xml);
        prop_assert!(back.is_ok(), "{:?}\n{xml}", back.err());
        let back = back.expect("checked");
        prop_assert_eq!(&cfg, &back, "{}", xml);
        prop_assert_eq!(&xml, &back.to_xml());
        let json = DomainConfig::from_json(&cfg.to_json());
        prop_assert_eq!(Some(&cfg), json.as_ref().ok());
    }

    #[test]
    fn pc_argv_is_deterministic_and_uses_the_pc_buses(cfg in pc_strategy()) {
        let vd = cfg.validate().expect("valid");
        let a = novacron_domain::build_argv(&vd, &test_ctx());
        prop_assert!(a.is_ok(), "{:?}", a.err());
        let a = a.expect("checked");
        prop_assert!(!a.iter().any(|x| x.contains("pcie.0")), "{a:?}");
        let ide = vd.devices.disks.iter().filter(|d| d.target.bus == DiskBus::Ide).count();
        prop_assert_eq!(ide, a.iter().filter(|x| x.starts_with("ide-")).count());
        prop_assert_eq!(Ok(a), novacron_domain::build_argv(&vd, &test_ctx()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_configs_are_valid(cfg in domain_strategy()) {
        if let Err(e) = cfg.clone().validate() {
            prop_assert!(false, "generator produced an invalid config: {e}");
        }
    }

    #[test]
    fn xml_round_trip(cfg in domain_strategy()) {
        let xml = cfg.to_xml();
        let back = DomainConfig::from_xml(&xml);
        prop_assert!(back.is_ok(), "{:?}\n{xml}", back.err());
        let back = back.expect("checked");
        prop_assert_eq!(&cfg, &back, "{}", xml);
        prop_assert_eq!(xml, back.to_xml());
    }

    #[test]
    fn json_round_trip(cfg in domain_strategy()) {
        let json = cfg.to_json();
        let back = DomainConfig::from_json(&json);
        prop_assert!(back.is_ok(), "{:?}", back.err());
        prop_assert_eq!(cfg, back.expect("checked"));
    }

    #[test]
    fn argv_is_deterministic_and_total(cfg in domain_strategy()) {
        let vd = cfg.validate().expect("valid");
        let ctx = novacron_domain::LaunchContext {
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            accel: novacron_domain::Accel::Kvm,
            cpu: novacron_domain::CpuChoice::Model("qemu64".into()),
            monitor: novacron_domain::MonitorSocket::Path("/run/q/qmp.sock".into()),
            fd_sets: Vec::new(),
            runtime_dir: "/run/q".into(),
            memory_dir: None,
            serial_log: Some("/var/log/q/serial.log".into()),
            net_fds: (0..4).map(|i| (i, novacron_domain::NetFd::single(30 + i as i32, None))).collect(),
            vnc_display: Some(1),
            spice_port: Some(5930),
            swtpm_socket: Some("/run/q/swtpm.sock".into()),
            sandbox: true,
            host_paths: Default::default(),
            backing_chains: Default::default(),
        };
        let a = novacron_domain::build_argv(&vd, &ctx);
        prop_assert!(a.is_ok(), "{:?}", a.err());
        prop_assert_eq!(a, novacron_domain::build_argv(&vd, &ctx));
    }

    #[test]
    fn reader_never_panics_on_mutated_xml(pos in 0usize..4000, len in 0usize..40, junk in "[ -~\n]{0,20}") {
        let xml = include_str!("corpus/linux-guest.xml");
        let start = pos.min(xml.len());
        let end = (start + len).min(xml.len());
        if xml.is_char_boundary(start) && xml.is_char_boundary(end) {
            let mutated = format!("{}{}{}", &xml[..start], junk, &xml[end..]);
            if let Ok(cfg) = DomainConfig::from_xml(&mutated) {
                let again = DomainConfig::from_xml(&cfg.to_xml());
                prop_assert_eq!(Some(cfg.clone()), again.ok());
                let _ = cfg.validate();
            }
        }
    }
}
