//! Host topology and fit checks against recorded sysfs trees (tests/fixtures/sysfs), and one
//! real probe of this machine's /dev/kvm, QEMU and /sys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use novacron_domain::DomainConfig;
use novacrond::host::kvm::KvmCaps;
use novacrond::host::{
    check_fit, check_fit_in, HostFacts, HostProbe, Probed, QemuCaps, SysfsRoot, Topology,
};
use serde_json::json;

fn fixture(name: &str) -> SysfsRoot {
    SysfsRoot::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sysfs")
            .join(name),
    )
}

fn two_socket() -> Topology {
    Topology::read(&fixture("two-socket-four-node")).unwrap()
}

fn laptop() -> Topology {
    Topology::read(&fixture("laptop")).unwrap()
}

#[test]
fn two_socket_cpus_and_siblings() {
    let t = two_socket();
    assert_eq!(t.cpus.len(), 32);
    assert!(t.cpus.iter().all(|c| c.online));
    assert_eq!(t.sockets(), vec![0, 1]);
    assert_eq!(t.cpus.iter().filter(|c| c.socket_id == Some(1)).count(), 16);
    let c5 = t.cpu(5).unwrap();
    assert_eq!(
        (c5.core_id, c5.die_id, c5.socket_id, c5.node),
        (Some(5), Some(0), Some(0), Some(1))
    );
    assert_eq!(c5.thread_siblings, vec![5, 21]);
    assert_eq!(t.cpu(21).unwrap().thread_siblings, vec![5, 21]);
    assert_eq!(t.cpu(30).unwrap().node, Some(3));
    // 4 cores x 2 threads per node, 8 distinct (socket, core) pairs per socket.
    let mut cores: Vec<(u32, u32)> = t
        .cpus
        .iter()
        .map(|c| (c.socket_id.unwrap(), c.core_id.unwrap()))
        .collect();
    cores.sort_unstable();
    cores.dedup();
    assert_eq!(cores.len(), 16);
}

#[test]
fn two_socket_nodes_distances_memory() {
    let t = two_socket();
    assert_eq!(
        t.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(t.nodes.iter().all(|n| !n.implicit && n.cpus.len() == 8));
    assert_eq!(t.node(0).unwrap().cpus, [0, 1, 2, 3, 16, 17, 18, 19]);
    assert_eq!(t.node(3).unwrap().cpus, [12, 13, 14, 15, 28, 29, 30, 31]);
    assert_eq!(t.node(0).unwrap().distances, [10, 16, 32, 32]);
    assert_eq!(t.distance(2, 3), Some(16));
    assert_eq!(t.distance(1, 2), Some(32));
    assert_eq!(t.distance(3, 3), Some(10));
    assert_eq!(t.distance(0, 9), None);
    assert_eq!(t.node(2).unwrap().memory_total_bytes, Some(64 << 30));
    assert_eq!(t.memory_total_bytes(), Some(256 << 30));
}

#[test]
fn two_socket_hugepage_pools() {
    let t = two_socket();
    assert_eq!(t.hugepage_sizes_kib(), [2048, 1 << 20]);
    let free: Vec<(u64, u64)> = t
        .nodes
        .iter()
        .map(|n| (n.hugepages[0].free, n.hugepages[1].free))
        .collect();
    assert_eq!(free, [(1024, 16), (512, 8), (1000, 4), (0, 2)]);
    let n1 = &t.node(1).unwrap().hugepages;
    assert_eq!(
        (n1[1].size_kib, n1[1].total, n1[1].surplus),
        (1 << 20, 16, 0)
    );
    assert_eq!(n1[1].reserved, None);
    let host_1g = &t.hugepages[1];
    assert_eq!(
        (host_1g.total, host_1g.free, host_1g.reserved),
        (64, 30, Some(2))
    );
}

#[test]
fn two_socket_gpu_shares_its_iommu_group_with_its_audio_function() {
    let t = two_socket();
    assert_eq!(t.pci.len(), 7);
    let group: Vec<(&str, &str, &str)> = t
        .iommu_group(12)
        .iter()
        .map(|d| (d.address.as_str(), d.vendor.as_str(), d.class.as_str()))
        .collect();
    assert_eq!(
        group,
        [
            ("0000:3b:00.0", "0x10de", "0x030000"),
            ("0000:3b:00.1", "0x10de", "0x040300")
        ]
    );
    let gpu = &t.iommu_group(12)[0];
    assert_eq!(gpu.driver.as_deref(), Some("vfio-pci"));
    assert_eq!((gpu.device.as_str(), gpu.numa_node), ("0x2236", Some(1)));
    let nic = t.pci.iter().find(|d| d.class == "0x020000").unwrap();
    assert_eq!(nic.iommu_group, Some(40));
    assert_eq!(nic.driver.as_deref(), Some("ice"));
    assert_eq!(t.iommu_group(40).len(), 1);
    // A second GPU on its host drivers shares group 13 with its audio function and the root
    // port above them (tests/vfio.rs detaches it).
    let drivers: Vec<Option<&str>> = t
        .iommu_group(13)
        .iter()
        .map(|d| d.driver.as_deref())
        .collect();
    assert_eq!(
        drivers,
        [Some("pcieport"), Some("nouveau"), Some("snd_hda_intel")]
    );
}

#[test]
fn laptop_implicit_node_and_offline_cpu() {
    let t = laptop();
    assert_eq!(t.cpus.len(), 4);
    assert_eq!(t.online_cpus().collect::<Vec<_>>(), [0, 1, 2]);
    let c3 = t.cpu(3).unwrap();
    assert!(!c3.online);
    assert_eq!((c3.core_id, c3.socket_id), (None, None));
    assert!(c3.thread_siblings.is_empty());
    assert_eq!(t.cpu(0).unwrap().thread_siblings, [0, 2]);
    assert_eq!(t.cpu(1).unwrap().thread_siblings, [1]);
    assert_eq!(t.nodes.len(), 1);
    let n = &t.nodes[0];
    assert!(n.implicit);
    assert_eq!((n.id, n.cpus.as_slice()), (0, [0, 1, 2, 3].as_slice()));
    assert!(t.cpus.iter().all(|c| c.node == Some(0)));
    assert_eq!(n.memory_total_bytes, Some(8 << 30));
    assert_eq!(n.distances, [10]);
    assert_eq!(t.hugepage_sizes_kib(), [2048]);
    assert_eq!(n.hugepages[0].free, 60);
    assert_eq!(t.hugepages[0].reserved, Some(4));
    assert_eq!(t.pci.len(), 2);
    assert!(t.pci.iter().all(|d| d.iommu_group.is_none()));
    assert_eq!(t.pci[0].driver.as_deref(), Some("i915"));
    assert_eq!(t.pci[0].numa_node, None);
}

#[test]
fn topology_serializes() {
    let v = serde_json::to_value(two_socket()).unwrap();
    assert_eq!(v["cpus"].as_array().unwrap().len(), 32);
    assert_eq!(v["pci"][1]["iommu_group"], 12);
    assert_eq!(v["hugepages"][1]["reserved"], 2);
}

// --- fit ---------------------------------------------------------------------------------

fn kvm(max_vcpus: u32) -> KvmCaps {
    KvmCaps {
        api_version: 12,
        max_vcpus,
        recommended_vcpus: 32,
        extensions: BTreeMap::new(),
        cpuid: None,
    }
}

fn qemu() -> QemuCaps {
    QemuCaps::from_qmp(
        &json!({"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}),
        &json!([
            {"name": "pc-q35-7.2", "alias": "q35", "cpu-max": 288},
            {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": true, "cpu-max": 255},
        ]),
        &json!([{"name": "Skylake-Server", "unavailable-features": []}]),
    )
    .unwrap()
}

fn facts(topology: Topology, max_vcpus: u32) -> HostFacts {
    HostFacts {
        kvm: Probed::from_result::<String>(Ok(kvm(max_vcpus))),
        qemu: Probed::from_result::<String>(Ok(qemu())),
        topology: Probed::from_result::<String>(Ok(topology)),
    }
}

fn pinned_numa_guest() -> DomainConfig {
    let xml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../domain/tests/corpus/pinned-numa-hugepages.xml"),
    )
    .unwrap();
    DomainConfig::from_xml(&xml).unwrap()
}

#[test]
fn pinned_numa_guest_fits_the_two_socket_host() {
    assert_eq!(
        check_fit(&pinned_numa_guest(), &facts(two_socket(), 1024)),
        Ok(())
    );
}

#[test]
fn pinned_numa_guest_does_not_fit_the_laptop_and_every_reason_is_given() {
    let why = check_fit(&pinned_numa_guest(), &facts(laptop(), 1024)).unwrap_err();
    let all = why.join("\n");
    for needle in [
        "16384 MiB of memory but the host has 8192 MiB",
        "numatune memory nodeset names host NUMA node(s) 1 but the host has node(s) 0",
        "numatune memnode cell 1",
        "1 GiB hugepages but the host has pools of 2 MiB",
        "vcpu cpuset names host CPU(s) 3-9,12-19 that are not online (online: 0-2)",
        "vcpupin for vCPU 0 names host CPU(s) 2", // 2 is online: must not be listed
        "iothreadpin for iothread 2 names host CPU(s) 10",
    ] {
        if needle.starts_with("vcpupin for vCPU 0") {
            assert!(!all.contains(needle), "{all}");
        } else {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }
    assert!(!all.contains("emulatorpin"), "{all}");
    assert!(!all.contains("memnode cell 0"), "{all}");
}

/// Hugepages are counted per host node: a cell bound to a node draws from that node's pool,
/// two cells bound to the same node share it, and the refusal names the pool's directory.
#[test]
fn hugepages_of_a_bound_cell_come_from_its_node_pool() {
    let root = fixture("two-socket-four-node");
    let mut g = pinned_numa_guest();
    let nt = g.numatune.as_mut().unwrap();
    // Node 3 has 2 free 1 GiB pages; cell 1 needs 8.
    nt.memnodes[1].mode = novacron_domain::model::NumaMode::Strict;
    nt.memnodes[1].nodeset = "3".parse().unwrap();
    let why = check_fit_in(&g, &facts(two_socket(), 1024), &root).unwrap_err();
    assert_eq!(why.len(), 1, "{why:#?}");
    assert!(
        why[0].contains("guest NUMA cell 1 needs 8 free 1 GiB hugepages on host node(s) 3, but they have 2 free")
            && why[0].contains(&format!(
                "{}/devices/system/node/node3/hugepages/hugepages-1048576kB",
                root.path().display()
            )),
        "{why:#?}"
    );
    // Both cells on node 1 (8 free): 16 pages from one pool.
    let nt = g.numatune.as_mut().unwrap();
    nt.memnodes[0].nodeset = "1".parse().unwrap();
    nt.memnodes[1].nodeset = "1".parse().unwrap();
    let why = check_fit_in(&g, &facts(two_socket(), 1024), &root).unwrap_err();
    assert!(
        why.join("\n")
            .contains("needs 16 free 1 GiB hugepages on host node(s) 1, but they have 8 free"),
        "{why:#?}"
    );
    // Spread over nodes 0 and 1 (16 + 8 free) it fits.
    let nt = g.numatune.as_mut().unwrap();
    nt.memnodes[0].nodeset = "0".parse().unwrap();
    assert_eq!(check_fit_in(&g, &facts(two_socket(), 1024), &root), Ok(()));
}

#[test]
fn vcpus_machine_and_cpu_model_limits() {
    let mut g = pinned_numa_guest();
    g.vcpu.count = 300;
    g.vcpu.cpuset = None;
    g.os.machine = Some("pc-q35-9.9".to_owned());
    g.cpu.as_mut().unwrap().mode = novacron_domain::model::CpuMode::Custom {
        model: "EPYC-Genoa".to_owned(),
    };
    let why = check_fit(&g, &facts(two_socket(), 240)).unwrap_err();
    assert_eq!(why.len(), 3, "{why:#?}");
    assert!(why[0].contains("300 vCPUs but KVM on this host allows at most 240"));
    assert!(why[1].contains("machine type 'pc-q35-9.9' is not one this QEMU (7.2.0) offers"));
    assert!(why[2].contains("CPU model 'EPYC-Genoa'"));

    // The alias counts, and its cpu-max applies.
    g.os.machine = Some("q35".to_owned());
    g.cpu = None;
    let why = check_fit(&g, &facts(two_socket(), 1024)).unwrap_err();
    assert_eq!(
        why,
        ["the domain asks for 300 vCPUs but machine type 'pc-q35-7.2' allows at most 288"]
    );
}

#[test]
fn unknown_facts_skip_their_checks() {
    let mut g = pinned_numa_guest();
    g.vcpu.count = 5000;
    let unknown = HostFacts {
        kvm: Probed::from_result::<String>(Err("/dev/kvm: No such file or directory".into())),
        qemu: Probed::from_result::<String>(Err("QEMU /x: gone".into())),
        topology: Probed::from_result::<String>(Err("cannot read /sys".into())),
    };
    assert_eq!(check_fit(&g, &unknown), Ok(()));
    // A TCG guest is not bound by KVM's vCPU limit.
    g.vcpu.count = 200;
    g.virt_type = novacron_domain::model::VirtType::Qemu;
    assert_eq!(check_fit(&g, &facts(two_socket(), 64)), Ok(()));
}

// --- the real host ----------------------------------------------------------------------

#[tokio::test]
async fn real_probe_of_this_host() {
    let work = tempfile::tempdir().unwrap();
    let emulator = PathBuf::from("/usr/bin/qemu-system-x86_64");
    let probe = HostProbe::new("/dev/kvm", &emulator, SysfsRoot::default(), work.path());
    let facts = probe.facts().await;
    match &facts.kvm.value {
        Some(k) => {
            println!(
                "KVM: API {} max_vcpus {} recommended {} extensions {:?}",
                k.api_version, k.max_vcpus, k.recommended_vcpus, k.extensions
            );
            if let Some(c) = &k.cpuid {
                println!(
                    "CPUID: {} family {:#x} model {:#x}, {} entries, features {:?}",
                    c.vendor, c.family, c.model, c.entries, c.features
                );
            }
            assert_eq!(k.api_version, 12);
            assert!(k.max_vcpus >= 1 && k.has("KVM_CAP_USER_MEMORY"));
        }
        None => {
            let reason = facts.kvm.reason.as_deref().unwrap_or_default();
            println!("KVM not usable: {reason}");
            assert!(reason.contains("/dev/kvm"), "{reason}");
        }
    }
    match &facts.qemu.value {
        Some(q) => {
            println!(
                "QEMU {} ({}): {} machines (default {:?}), {} CPU models ({} usable)",
                q.version,
                q.version.package,
                q.machines.len(),
                q.machines.iter().find(|m| m.is_default).map(|m| &m.name),
                q.cpu_models.len(),
                q.cpu_models
                    .iter()
                    .filter(|m| m.usable == Some(true))
                    .count()
            );
            assert!(q.machine("q35").is_some());
        }
        None if !emulator.exists() => println!("no QEMU at {}", emulator.display()),
        None => panic!("QEMU probe failed: {:?}", facts.qemu.reason),
    }
    let t = facts.topology.value.as_ref().expect("/sys is readable");
    println!(
        "topology: {} CPUs ({} online), {} node(s), hugepage sizes {:?} KiB, {} PCI devices",
        t.cpus.len(),
        t.online_cpus().count(),
        t.nodes.len(),
        t.hugepage_sizes_kib(),
        t.pci.len()
    );
    assert!(!t.cpus.is_empty() && !t.nodes.is_empty());
    // The QEMU probe left nothing behind, and the second call is served from the cache.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    let again = probe.facts().await;
    assert_eq!(again.qemu, facts.qemu);
    assert_eq!(again.kvm, facts.kvm);
    // The whole thing is what GET /v1/host shows.
    let v = serde_json::to_value(&facts).unwrap();
    assert!(v["kvm"]["usable"].is_boolean() && v["topology"]["cpus"].is_array());
}
