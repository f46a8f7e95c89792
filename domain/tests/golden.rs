//! Golden argv tests: the exact QEMU command line for each corpus guest is pinned in
//! `tests/golden/<name>.argv` (one argument per line). `UPDATE_GOLDEN=1` rewrites them
//! (refused under `CI=true`).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use novacron_domain::{
    build_argv, Accel, ArgvError, CpuChoice, DomainConfig, LaunchContext, MonitorSocket, NetFd,
};

pub fn ctx(name: &str) -> LaunchContext {
    let run = PathBuf::from("/run/novacron/domains").join(name);
    let mut net_fds = BTreeMap::new();
    net_fds.insert(0, NetFd::single(21, Some(22)));
    net_fds.insert(1, NetFd::single(23, None));
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Path(run.join("qmp.sock")),
        fd_sets: Vec::new(),
        runtime_dir: run.clone(),
        memory_dir: None,
        serial_log: None,
        net_fds,
        vnc_display: Some(3),
        spice_port: Some(5930),
        swtpm_socket: Some(run.join("swtpm.sock")),
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn corpus(name: &str) -> DomainConfig {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/corpus/{name}.xml"));
    DomainConfig::from_xml(&fs::read_to_string(p).expect("read")).expect("parse")
}

fn check_golden(name: &str, argv: &[String]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.argv"));
    let text = argv.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // Rewriting the expectation makes the test pass whatever the builder does: a person
        // may do that and review the diff, CI never.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "UPDATE_GOLDEN is refused under CI=true: it would rewrite {} instead of checking it",
            path.display()
        );
        fs::write(&path, &text).expect("write golden");
        return;
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    if want != text {
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .take(10)
            .collect();
        panic!(
            "{name}: argv differs from golden\n{}\n(full)\n{text}",
            diff.join("\n")
        );
    }
}

fn golden(name: &str, cpu: CpuChoice) {
    let vd = corpus(name).validate().expect("valid");
    let mut c = ctx(name);
    c.cpu = cpu;
    if vd.virt_type == novacron_domain::model::VirtType::Qemu {
        c.accel = Accel::Tcg;
    }
    let argv = build_argv(&vd, &c).expect("argv");
    // Deterministic: a second build is identical.
    assert_eq!(argv, build_argv(&vd, &c).expect("argv"));
    check_golden(name, &argv);
}

/// Network disks (nbd over TCP and a socket, http(s), iscsi, rbd) and virtio-net driver
/// tuning: NIC 0 has a vhost fd but asks for QEMU's backend, NIC 1 asks for vhost where the
/// host has none (falls back), NIC 2 is a multiqueue vhost-user port.
#[test]
fn golden_network_disks() {
    golden("network-disks", CpuChoice::AsConfigured);
}

/// 9p shares in each access mode, one read-only at a fixed PCI address.
#[test]
fn golden_shared_dirs() {
    golden("shared-dirs", CpuChoice::AsConfigured);
}

/// A virtiofs share (vhost-user socket in the runtime directory, memfd RAM shared) beside 9p.
#[test]
fn golden_virtiofs() {
    golden("virtiofs", CpuChoice::AsConfigured);
}

#[test]
fn golden_linux_guest() {
    golden("linux-guest", CpuChoice::AsConfigured);
}

#[test]
fn golden_windows_guest() {
    golden("windows-guest", CpuChoice::AsConfigured);
}

#[test]
fn golden_pinned_numa_hugepages() {
    golden("pinned-numa-hugepages", CpuChoice::AsConfigured);
}

#[test]
fn golden_uefi_secureboot() {
    golden(
        "uefi-secureboot",
        CpuChoice::Model("Skylake-Client-IBRS".into()),
    );
}

#[test]
fn golden_vfio_hostdev() {
    golden("vfio-hostdev", CpuChoice::Model("EPYC-Rome".into()));
}

#[test]
fn golden_direct_kernel() {
    golden("direct-kernel", CpuChoice::AsConfigured);
}

/// virt-manager's SPICE desktop: SPICE on an allocated port, the agent channel, QXL, ICH9
/// sound on a SPICE audio backend, two USB redirection ports.
#[test]
fn golden_spice_desktop() {
    golden("spice-desktop", CpuChoice::AsConfigured);
}

#[test]
fn golden_ci_runner() {
    golden("ci-runner", CpuChoice::AsConfigured);
}

#[test]
fn argv_requires_host_facts() {
    let vd = corpus("uefi-secureboot").validate().expect("valid");
    assert_eq!(
        build_argv(&vd, &ctx("x")),
        Err(ArgvError::UnresolvedHostModel)
    );
    let mut c = ctx("x");
    c.cpu = CpuChoice::Model("qemu64".into());
    c.swtpm_socket = None;
    assert_eq!(build_argv(&vd, &c), Err(ArgvError::MissingSwtpmSocket));
    let vd = corpus("windows-guest").validate().expect("valid");
    let mut c = ctx("x");
    c.net_fds.clear();
    assert_eq!(build_argv(&vd, &c), Err(ArgvError::MissingTapFd(0)));
    let mut c = ctx("x");
    c.vnc_display = None;
    assert_eq!(build_argv(&vd, &c), Err(ArgvError::MissingVncDisplay));
    let mut c = ctx("x");
    c.cpu = CpuChoice::Model("qemu64,kvm=off".into());
    assert!(matches!(
        build_argv(&vd, &c),
        Err(ArgvError::BadCpuModel(_))
    ));
    let mut cfg = corpus("windows-guest");
    cfg.uuid = None;
    assert_eq!(
        build_argv(&cfg.validate().expect("valid"), &ctx("x")),
        Err(ArgvError::MissingUuid)
    );
    let mut cfg = corpus("windows-guest");
    cfg.devices.interfaces[0].mac = None;
    assert_eq!(
        build_argv(&cfg.validate().expect("valid"), &ctx("x")),
        Err(ArgvError::MissingMac(0))
    );
}

#[test]
fn argv_escapes_commas_in_paths() {
    let mut cfg = corpus("direct-kernel");
    if let Some(novacron_domain::model::DiskSource::File { path }) =
        &mut cfg.devices.disks[0].source
    {
        *path = "/srv/a,b.img".into();
    }
    let argv = build_argv(&cfg.validate().expect("valid"), &ctx("x")).expect("argv");
    assert!(
        argv.iter().any(|a| a.contains("filename=/srv/a,,b.img,")),
        "{argv:?}"
    );
}

/// Guest NUMA without hugepages: one memory-backend-ram per cell, each with its host policy
/// (the whole-guest interleave over a split node set, a cell's own strict memnode), and the
/// cell distances as `-numa dist`.
#[test]
fn golden_numa_cells_on_ram_backends() {
    let xml = "<domain type='kvm'>
      <name>numa-ram</name>
      <uuid>5b0c3f1e-7a2d-4c8e-9b1f-3e4d5c6b7a80</uuid>
      <memory unit='GiB'>3</memory>
      <vcpu>6</vcpu>
      <numatune>
        <memory mode='interleave' nodeset='0-1,3'/>
        <memnode cellid='1' mode='strict' nodeset='2'/>
      </numatune>
      <os><type arch='x86_64' machine='q35'>hvm</type></os>
      <cpu mode='custom'><model>qemu64</model>
        <numa>
          <cell id='0' cpus='0-1' memory='1' unit='GiB'>
            <distances><sibling id='0' value='10'/><sibling id='1' value='20'/><sibling id='2' value='30'/></distances>
          </cell>
          <cell id='1' cpus='2-3' memory='1' unit='GiB'>
            <distances><sibling id='0' value='20'/><sibling id='1' value='10'/><sibling id='2' value='20'/></distances>
          </cell>
          <cell id='2' cpus='4-5' memory='1' unit='GiB'>
            <distances><sibling id='0' value='30'/><sibling id='1' value='20'/><sibling id='2' value='10'/></distances>
          </cell>
        </numa>
      </cpu>
    </domain>";
    let vd = DomainConfig::from_xml(xml)
        .expect("parse")
        .validate()
        .expect("valid");
    let argv = build_argv(&vd, &ctx("numa-ram")).expect("argv");
    check_golden("numa-ram", &argv);
}

/// File-backed RAM: without a memory directory QEMU gets the runtime directory (an unlinked
/// temporary file); with one, each backend its own named file there, private by default.
#[test]
fn file_backed_ram_goes_to_the_memory_directory() {
    let xml = "<domain type='kvm'>
      <name>filemem</name>
      <uuid>5b0c3f1e-7a2d-4c8e-9b1f-3e4d5c6b7a81</uuid>
      <memory unit='MiB'>512</memory>
      <vcpu>1</vcpu>
      <memoryBacking><source type='file'/><access mode='private'/></memoryBacking>
      <os><type arch='x86_64' machine='q35'>hvm</type></os>
    </domain>";
    let vd = DomainConfig::from_xml(xml)
        .expect("parse")
        .validate()
        .expect("valid");
    let backend = |argv: Vec<String>| {
        argv.into_iter()
            .find(|a| a.starts_with("memory-backend-file"))
            .expect("a file backend")
    };
    let mut c = ctx("filemem");
    assert_eq!(
        backend(build_argv(&vd, &c).expect("argv")),
        "memory-backend-file,id=pc.ram,mem-path=/run/novacron/domains/filemem,share=off,size=536870912"
    );
    c.memory_dir = Some("/srv/ram/filemem".into());
    assert_eq!(
        backend(build_argv(&vd, &c).expect("argv")),
        "memory-backend-file,id=pc.ram,mem-path=/srv/ram/filemem/pc.ram,share=off,size=536870912"
    );
}

/// i440fx as virt-install/virt-manager write it: pci-root, PIIX3 IDE disk and CD-ROM by
/// drive address, ICH9 EHCI with its three UHCI companions, cirrus, a null serial port,
/// boot menu, i686 (qemu32) and the PIIX4 power management globals.
#[test]
fn golden_i440fx_legacy() {
    golden("i440fx-legacy", CpuChoice::AsConfigured);
}

/// q35 controllers without `index` (numbered as libvirt does), an ioh3420 root port, a
/// model-less USB controller (qemu-xhci), `cache='default'`.
#[test]
fn golden_q35_virt_install() {
    golden("q35-virt-install", CpuChoice::AsConfigured);
}
