//! What a definition leaves to the host, resolved at start against real QEMU: host-model
//! becomes this host's named CPU model, and `firmware='efi'` the firmware QEMU's descriptors
//! offer, with the guest's NVRAM made in the state directory and removed on undefine.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use novacron_domain::model::{CpuMode, Firmware};
use novacron_domain::{DomainConfig, DomainState};
use novacron_tests::{osless_accel, Accel};
use novacrond::host::firmware;
use novacrond::service::events::EventKind;

fn state_is(to: DomainState) -> impl Fn(&novacrond::service::events::DomainEvent) -> bool {
    move |e| matches!(&e.kind, EventKind::StateChanged { to: t, .. } if *t == to)
}

fn guest(name: &str, os_attr: &str, extra: &str) -> DomainConfig {
    let ty = match osless_accel() {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    DomainConfig::from_xml(&format!(
        "<domain type='{ty}'>
           <name>{name}</name>
           <memory unit='MiB'>128</memory>
           <vcpu>1</vcpu>
           <os{os_attr}><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
           {extra}
         </domain>"
    ))
    .expect("xml")
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .expect("cmdline")
        .split('\0')
        .map(str::to_owned)
        .collect()
}

fn arg_after(args: &[String], opt: &str) -> String {
    let i = args.iter().position(|a| a == opt).expect(opt);
    args[i + 1].clone()
}

#[tokio::test]
async fn host_model_runs_as_this_hosts_named_model() {
    let env = Env::new();
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    let cfg = guest(
        "hostmodel",
        "",
        "<cpu mode='host-model' check='partial'><model fallback='allow'/></cpu>",
    );
    svc.define(cfg).await.unwrap();
    svc.start("hostmodel").await.unwrap();
    wait_event(
        &mut events,
        "hostmodel",
        Duration::from_secs(10),
        state_is(DomainState::Running),
    )
    .await;
    // What a probe of the same QEMU resolves host-model to, independently of the service.
    let caps = novacrond::host::qemu_caps::probe(&env.config.emulator, env.dir.path())
        .await
        .expect("probe");
    let want = caps
        .host_model
        .clone()
        .expect("a named model is usable here");
    assert!(
        !["host", "max", "base"].contains(&want.model.as_str()),
        "{want:?}"
    );
    assert!(
        caps.cpu_model(&want.model)
            .is_some_and(|m| m.usable == Some(true)),
        "{want:?}"
    );
    // The command line runs exactly that model, with the host's extra features.
    let pid = recorded_pid(&env, "hostmodel");
    let cpu = arg_after(&cmdline(pid), "-cpu");
    let mut parts = cpu.split(',');
    assert_eq!(parts.next(), Some(want.model.as_str()), "{cpu}");
    let added: Vec<&str> = parts.filter_map(|p| p.strip_prefix('+')).collect();
    assert_eq!(added, want.features, "{cpu}");
    // The live info shows the resolved model, check and fallback kept; the definition stays
    // host-model.
    let live = svc.get("hostmodel").unwrap().config.cpu.expect("cpu");
    assert_eq!(
        live.mode,
        CpuMode::Custom {
            model: want.model.clone()
        }
    );
    assert_eq!(live.features.len(), want.features.len());
    assert!(live.check.is_some() && live.fallback.is_some());
    svc.destroy("hostmodel").await.unwrap();
    let defined = svc.get("hostmodel").unwrap().config.cpu.expect("cpu");
    assert_eq!(defined.mode, CpuMode::HostModel);
}

#[tokio::test]
async fn efi_firmware_is_autoselected_with_its_nvram_in_the_state_dir() {
    let env = Env::new();
    let svc = env.open().await;
    let mut events = svc.events().subscribe();
    svc.define(guest("uefi", " firmware='efi'", ""))
        .await
        .unwrap();
    let nvram = env.config.state_dir.join("nvram/uefi.fd");
    assert!(!nvram.exists(), "made at start, not at define");
    svc.start("uefi").await.unwrap();
    // Past prelaunch: the vCPUs run the firmware.
    wait_event(
        &mut events,
        "uefi",
        Duration::from_secs(30),
        state_is(DomainState::Running),
    )
    .await;
    // The firmware the descriptors give a q35 guest without preferences: the first by
    // priority, past those needing SMM when this host's KVM has none (nested KVM here).
    let dirs: Vec<PathBuf> = firmware::DESCRIPTOR_DIRS
        .iter()
        .map(PathBuf::from)
        .collect();
    let loaded = firmware::load(&dirs);
    let caps = novacrond::host::qemu_caps::probe(&env.config.emulator, env.dir.path())
        .await
        .expect("probe");
    let machine = &caps.machine("q35").expect("q35").name;
    let smm = match osless_accel() {
        Accel::Kvm => novacrond::host::kvm::probe_async("/dev/kvm".into())
            .await
            .expect("kvm")
            .has("KVM_CAP_X86_SMM"),
        Accel::Tcg => true,
    };
    let want = firmware::select(
        &loaded,
        &firmware::Wanted {
            arch: "x86_64",
            machine,
            smm: (!smm).then_some(false),
            ..Default::default()
        },
    )
    .expect("ovmf is installed")
    .clone();
    // The NVRAM was copied from the descriptor's template, and QEMU has it (and the code)
    // open through fd sets, never by name.
    assert_eq!(
        std::fs::read(&nvram).unwrap().len(),
        std::fs::read(&want.nvram_template).unwrap().len()
    );
    let pid = recorded_pid(&env, "uefi");
    let open: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect();
    assert!(open.contains(&nvram), "{open:?}");
    assert!(
        open.contains(&std::fs::canonicalize(&want.executable).unwrap()),
        "{open:?}"
    );
    let args = cmdline(pid);
    assert!(!args.iter().any(|a| a.contains("OVMF")), "{args:?}");
    assert!(
        arg_after(&args, "-machine").contains("pflash0=pflash0-fmt,pflash1=pflash1-fmt"),
        "{args:?}"
    );
    // The live info names the resolved loader and NVRAM.
    let live = svc.get("uefi").unwrap().config;
    match &live.os.firmware {
        Firmware::Uefi { loader, nvram: n } => {
            assert_eq!(PathBuf::from(&loader.path), want.executable);
            assert_eq!(loader.secure, want.has("requires-smm"));
            let n = n.as_ref().expect("nvram");
            assert_eq!(PathBuf::from(&n.path), nvram);
            assert_eq!(
                n.template.as_deref().map(PathBuf::from),
                Some(want.nvram_template.clone())
            );
        }
        other => panic!("live firmware {other:?}"),
    }
    if want.has("requires-smm") {
        assert_eq!(live.features.smm, Some(true));
    }
    svc.destroy("uefi").await.unwrap();
    assert!(nvram.exists(), "the guest's variables outlive a stop");
    // Undefine takes the daemon's NVRAM with it (virsh undefine --nvram).
    svc.undefine("uefi").await.unwrap();
    assert!(!nvram.exists());
    // A transient guest's NVRAM lives as long as the guest.
    svc.create(guest("uefi", " firmware='efi'", ""))
        .await
        .unwrap();
    assert!(nvram.exists());
    svc.destroy("uefi").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while svc.get("uefi").is_ok() || nvram.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "transient guest's NVRAM not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A transient guest whose start fails after its NVRAM was made (QEMU cannot bind the
    // display port someone else holds) leaves no NVRAM behind.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let failing = guest(
        "uefi",
        " firmware='efi'",
        &format!("<devices><graphics type='vnc' port='{port}' autoport='no'/></devices>"),
    );
    assert!(svc.create(failing).await.is_err(), "the start was to fail");
    assert!(svc.get("uefi").is_err());
    assert!(!nvram.exists(), "a failed transient start left its NVRAM");
}
