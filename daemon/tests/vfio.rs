//! VFIO passthrough against a writable copy of the recorded 2-socket sysfs tree
//! (tests/fixtures/sysfs/two-socket-four-node).
//!
//! This machine has no IOMMU, so no device can really move between drivers here. The tests run
//! the daemon's sysfs logic against a copy of the recorded tree in which a *fake kernel* (a
//! thread in this test, [`FakeKernel`]) plays the kernel's part: it reads what the daemon wrote
//! to `drivers/<d>/unbind`, `drivers/<d>/bind` and `drivers_probe` and moves the device's
//! `driver` symlink as the kernel would (honouring `driver_override`, else the device's native
//! driver as the kernel's id tables would pick it). The VFIO ioctl check does not run here:
//! it needs the real /sys and /dev/vfio.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use novacron_domain::model::Hostdev;
use novacron_domain::{DomainConfig, ErrorCode};
use novacrond::host::vfio::{self, Detached, VfioError};
use novacrond::host::SysfsRoot;

const GPU: &str = "0000:5e:00.0";
const AUDIO: &str = "0000:5e:00.1";
const BRIDGE: &str = "0000:5d:00.0";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

/// A writable copy of a recorded tree (symlinks kept as they are).
fn copy_tree(name: &str) -> (tempfile::TempDir, SysfsRoot) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture(name))
        .arg(dir.path().join("sys"))
        .status()
        .unwrap();
    assert!(status.success());
    let root = SysfsRoot::new(dir.path().join("sys"));
    (dir, root)
}

fn driver_of(root: &SysfsRoot, addr: &str) -> Option<String> {
    std::fs::read_link(
        root.path()
            .join("bus/pci/devices")
            .join(addr)
            .join("driver"),
    )
    .ok()
    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn override_of(root: &SysfsRoot, addr: &str) -> String {
    std::fs::read_to_string(
        root.path()
            .join("bus/pci/devices")
            .join(addr)
            .join("driver_override"),
    )
    .unwrap()
    .trim()
    .to_owned()
}

/// The kernel's side of the PCI driver-binding ABI, simulated over the copied tree.
struct FakeKernel {
    stop: Arc<AtomicBool>,
    /// While set, writes are left unanswered (a slow device reset).
    pub hold: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Passes over the tree completed so far.
    steps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKernel {
    fn start(root: &SysfsRoot) -> FakeKernel {
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(AtomicU64::new(0));
        let (s, h, l, r, n) = (
            stop.clone(),
            hold.clone(),
            log.clone(),
            root.path().to_owned(),
            steps.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if !h.load(Ordering::SeqCst) {
                    step(&r, &l);
                    n.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        FakeKernel {
            stop,
            hold,
            log,
            steps,
            thread: Some(thread),
        }
    }

    /// Returns once a whole pass that began after this call is done: every command written
    /// before it has been seen.
    fn settle(&self) {
        let target = self.steps.load(Ordering::SeqCst) + 2;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.steps.load(Ordering::SeqCst) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the fake kernel stalled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which driver the kernel's id tables would bind each device to.
fn native_driver(addr: &str) -> Option<&'static str> {
    match addr {
        GPU => Some("nouveau"),
        AUDIO => Some("snd_hda_intel"),
        BRIDGE => Some("pcieport"),
        "0000:af:00.0" => Some("ice"),
        _ => None,
    }
}

/// Takes a command written to a write-only attribute, leaving the file empty again.
fn take_command(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let cmd = text.trim().to_owned();
    if cmd.is_empty() {
        return None;
    }
    std::fs::write(path, "").unwrap();
    Some(cmd)
}

fn step(root: &Path, log: &Mutex<Vec<String>>) {
    let devices = root.join("bus/pci/devices");
    let drivers = root.join("bus/pci/drivers");
    let link = |addr: &str| devices.join(addr).join("driver");
    let bound = |addr: &str| {
        std::fs::read_link(link(addr))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let bind = |addr: &str, drv: &str| {
        std::os::unix::fs::symlink(format!("../../../../bus/pci/drivers/{drv}"), link(addr))
            .unwrap();
    };
    for entry in std::fs::read_dir(&drivers).unwrap().flatten() {
        let drv = entry.file_name().to_string_lossy().into_owned();
        if let Some(addr) = take_command(&entry.path().join("unbind")) {
            // Logged before the change is visible: a caller that saw the change finds it
            // in the log.
            log.lock().unwrap().push(format!("unbind {drv} {addr}"));
            if bound(&addr).as_deref() == Some(drv.as_str()) {
                std::fs::remove_file(link(&addr)).unwrap();
            }
        }
        if let Some(addr) = take_command(&entry.path().join("bind")) {
            log.lock().unwrap().push(format!("bind {drv} {addr}"));
            if bound(&addr).is_none() {
                bind(&addr, &drv);
            }
        }
    }
    // driver_override: the kernel shows a cleared override as "(null)".
    for entry in std::fs::read_dir(&devices).unwrap().flatten() {
        let path = entry.path().join("driver_override");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if text.lines().next().unwrap_or("").trim().is_empty() {
                std::fs::write(&path, "(null)\n").unwrap();
            }
        }
    }
    if let Some(addr) = take_command(&root.join("bus/pci/drivers_probe")) {
        let over = std::fs::read_to_string(devices.join(&addr).join("driver_override"))
            .unwrap_or_default();
        let over = over.lines().next().unwrap_or("").trim().to_owned();
        let pick = if !over.is_empty() && over != "(null)" {
            drivers.join(&over).exists().then_some(over)
        } else {
            native_driver(&addr).map(str::to_owned)
        };
        log.lock().unwrap().push(format!(
            "probe {addr} -> {}",
            pick.as_deref().unwrap_or("none")
        ));
        if let (None, Some(drv)) = (bound(&addr), &pick) {
            bind(&addr, drv);
        }
    }
}

fn hostdev(addr: &str, managed: bool) -> Hostdev {
    let xml = format!(
        "<domain type='kvm'><name>x</name><memory>65536</memory><vcpu>1</vcpu>
           <os><type>hvm</type></os><devices>
           <hostdev mode='subsystem' type='pci' managed='{}'><source><address domain='0x{}'
             bus='0x{}' slot='0x{}' function='0x{}'/></source></hostdev></devices></domain>",
        if managed { "yes" } else { "no" },
        &addr[0..4],
        &addr[5..7],
        &addr[8..10],
        &addr[11..12]
    );
    DomainConfig::from_xml(&xml).unwrap().devices.hostdevs[0].clone()
}

#[test]
fn managed_devices_move_to_vfio_pci_and_back_to_their_drivers() {
    let (_dir, root) = copy_tree("two-socket-four-node");
    let kernel = FakeKernel::start(&root);
    // The GPU and its audio function share group 13 with a root port (pcieport): a bridge is
    // allowed to stay on its driver, so passing both functions makes the group viable.
    let prepared = vfio::prepare(&root, &[hostdev(GPU, true), hostdev(AUDIO, true)]).unwrap();
    assert_eq!(
        prepared.detached,
        [
            Detached {
                address: GPU.into(),
                original_driver: Some("nouveau".into())
            },
            Detached {
                address: AUDIO.into(),
                original_driver: Some("snd_hda_intel".into())
            },
        ]
    );
    assert!(
        prepared.ioctl_checked.is_empty(),
        "no ioctls on a recorded tree"
    );
    for addr in [GPU, AUDIO] {
        assert_eq!(
            driver_of(&root, addr).as_deref(),
            Some("vfio-pci"),
            "{addr}"
        );
        assert_eq!(override_of(&root, addr), "vfio-pci");
    }
    assert_eq!(driver_of(&root, BRIDGE).as_deref(), Some("pcieport"));
    assert_eq!(
        kernel.log(),
        [
            format!("unbind nouveau {GPU}"),
            format!("probe {GPU} -> vfio-pci"),
            format!("unbind snd_hda_intel {AUDIO}"),
            format!("probe {AUDIO} -> vfio-pci"),
        ]
    );

    kernel.log.lock().unwrap().clear();
    assert!(vfio::give_back(&root, &prepared.detached).is_empty());
    assert_eq!(driver_of(&root, GPU).as_deref(), Some("nouveau"));
    assert_eq!(driver_of(&root, AUDIO).as_deref(), Some("snd_hda_intel"));
    assert_eq!(override_of(&root, GPU), "(null)");
    assert_eq!(override_of(&root, AUDIO), "(null)");
    assert_eq!(
        kernel.log(),
        [
            format!("unbind vfio-pci {GPU}"),
            format!("probe {GPU} -> nouveau"),
            format!("unbind vfio-pci {AUDIO}"),
            format!("probe {AUDIO} -> snd_hda_intel"),
        ]
    );
}

#[test]
fn a_group_member_left_on_a_host_driver_is_refused_by_name_and_nothing_moves() {
    let (_dir, root) = copy_tree("two-socket-four-node");
    let kernel = FakeKernel::start(&root);
    let err = vfio::prepare(&root, &[hostdev(GPU, true)]).unwrap_err();
    assert!(
        matches!(&err, VfioError::NotViable { group: 13, offender, driver, .. }
            if offender == AUDIO && driver == "snd_hda_intel"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(AUDIO) && msg.contains("snd_hda_intel"),
        "{msg}"
    );
    kernel.settle();
    assert!(kernel.log().is_empty(), "{:?}", kernel.log());
    assert_eq!(driver_of(&root, GPU).as_deref(), Some("nouveau"));
}

#[test]
fn managed_no_only_checks() {
    let (_dir, root) = copy_tree("two-socket-four-node");
    let kernel = FakeKernel::start(&root);
    // Group 12 is already all on vfio-pci: viable, nothing to do.
    let p = vfio::prepare(
        &root,
        &[
            hostdev("0000:3b:00.0", false),
            hostdev("0000:3b:00.1", false),
        ],
    )
    .unwrap();
    assert!(p.detached.is_empty());
    // The NIC is on ice: with managed='no' the daemon does not move it, it refuses.
    let err = vfio::prepare(&root, &[hostdev("0000:af:00.0", false)]).unwrap_err();
    assert!(
        matches!(&err, VfioError::NotBoundUnmanaged { driver, .. } if driver == "ice"),
        "{err:?}"
    );
    kernel.settle();
    assert!(kernel.log().is_empty(), "{:?}", kernel.log());
    assert_eq!(driver_of(&root, "0000:af:00.0").as_deref(), Some("ice"));
}

#[test]
fn no_iommu_and_unknown_devices_are_clear_errors() {
    // The laptop tree has no IOMMU groups at all.
    let laptop = SysfsRoot::new(fixture("laptop"));
    let err = vfio::prepare(&laptop, &[hostdev("0000:00:02.0", true)]).unwrap_err();
    assert!(matches!(err, VfioError::NoIommu { .. }), "{err:?}");
    assert!(
        err.to_string().contains("kernel/iommu_groups") && err.to_string().contains("no IOMMU"),
        "{err}"
    );
    let root = SysfsRoot::new(fixture("two-socket-four-node"));
    let err = vfio::prepare(&root, &[hostdev("0000:99:00.0", true)]).unwrap_err();
    assert!(err.to_string().contains("0000:99:00.0"), "{err}");
}

/// A guest with a hostdev started by the service on the fake tree: the devices are detached
/// before QEMU runs, QEMU is given them (`-device vfio-pci,host=...`; it then fails, as no
/// such device exists on this machine), the failed start gives them back, and while one guest
/// holds (here: is still taking) a device, another guest asking for it is refused.
#[tokio::test]
async fn the_service_detaches_refuses_a_second_guest_and_gives_back_on_failure() {
    let (_dir, root) = copy_tree("two-socket-four-node");
    let kernel = FakeKernel::start(&root);
    let mut env = Env::new();
    env.config.sysfs_root = root.path().to_owned();
    let svc = env.open().await;
    let with_gpu = |name: &str| {
        let mut c = osless(name);
        c.devices.hostdevs = vec![hostdev(GPU, true), hostdev(AUDIO, true)];
        c
    };
    svc.define(with_gpu("gpu-a")).await.unwrap();
    svc.define(with_gpu("gpu-b")).await.unwrap();

    // Hold the fake kernel so gpu-a stays in the middle of detaching.
    kernel.hold.store(true, Ordering::SeqCst);
    let first = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.start("gpu-a").await })
    };
    let unbind = root.path().join("bus/pci/drivers/nouveau/unbind");
    for _ in 0..500 {
        if std::fs::read_to_string(&unbind).unwrap().trim() == GPU {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = svc.start("gpu-b").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Busy, "{err}");
    assert!(
        err.to_string().contains(GPU) && err.to_string().contains("gpu-a"),
        "{err}"
    );
    kernel.hold.store(false, Ordering::SeqCst);

    let err = first.await.unwrap().unwrap_err();
    let log =
        std::fs::read_to_string(env.config.log_dir.join("qemu/gpu-a.log")).unwrap_or_default();
    assert!(
        log.contains("vfio") && log.contains(GPU),
        "QEMU was not given the device: {err}; log: {log}"
    );
    assert_eq!(driver_of(&root, GPU).as_deref(), Some("nouveau"));
    assert_eq!(driver_of(&root, AUDIO).as_deref(), Some("snd_hda_intel"));
    assert_eq!(override_of(&root, GPU), "(null)");
    assert!(!env.record("gpu-a").exists());
}

/// A guest that stopped while the daemon was down: the next daemon reads what it held from
/// its runtime record and gives the devices and the hugepages back.
#[tokio::test]
async fn a_restarted_daemon_gives_back_devices_of_a_guest_that_stopped_meanwhile() {
    let (_dir, root) = copy_tree("two-socket-four-node");
    let _kernel = FakeKernel::start(&root);
    let mut env = Env::new();
    env.config.sysfs_root = root.path().to_owned();
    // What the previous daemon did for the guest before it (and the guest) went away.
    let p = vfio::prepare(&root, &[hostdev(GPU, true), hostdev(AUDIO, true)]).unwrap();
    assert_eq!(driver_of(&root, GPU).as_deref(), Some("vfio-pci"));
    let mut config = osless("gone");
    config.devices.hostdevs = vec![hostdev(GPU, true), hostdev(AUDIO, true)];
    let record = novacrond::persist::RuntimeRecord {
        version: novacrond::persist::records::RECORD_VERSION,
        name: "gone".into(),
        pid: 1,
        start_time: 0,
        // Another boot: the guest cannot still be running.
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        qmp_socket: env.socket("gone"),
        argv: vec!["/usr/bin/qemu-system-x86_64".into()],
        config,
        started_at_unix_ms: 0,
        incoming: None,
        qemu_log: None,
        display_ports: Vec::new(),
        virtiofsd: Vec::new(),
        live_devices: None,
        held: novacrond::host::resources::HeldResources {
            // 24 pages it had added to node 1's 2 MiB pool (1024 in the recorded tree).
            hugepages: vec![novacrond::host::hugepages::Grant {
                node: Some(1),
                size_kib: 2048,
                pages: 24,
            }],
            vfio: p.detached,
            ..Default::default()
        },
    };
    std::fs::create_dir_all(env.record("gone").parent().unwrap()).unwrap();
    std::fs::write(
        env.record("gone"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    let node1 = root
        .path()
        .join("devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
    std::fs::write(&node1, "1048").unwrap();
    let _svc = env.open().await;
    assert_eq!(std::fs::read_to_string(&node1).unwrap().trim(), "1024");
    assert_eq!(driver_of(&root, GPU).as_deref(), Some("nouveau"));
    assert_eq!(driver_of(&root, AUDIO).as_deref(), Some("snd_hda_intel"));
    assert!(!env.record("gone").exists());
}
