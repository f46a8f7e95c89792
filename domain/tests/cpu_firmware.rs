//! libvirt XML as virt-manager/virt-install and vagrant-libvirt write it for the CPU, the
//! firmware and Hyper-V: read, written back unchanged, and the exact argv pinned in
//! `tests/golden/<name>.argv` (`UPDATE_GOLDEN=1` rewrites them, refused under `CI=true`).

use std::fs;
use std::path::PathBuf;

use novacron_domain::model::*;
use novacron_domain::{build_argv, Accel, ArgvError, CpuChoice, DomainConfig, LaunchContext};

fn ctx(cpu: CpuChoice) -> LaunchContext {
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu,
        monitor: novacron_domain::MonitorSocket::Fd(3),
        fd_sets: Vec::new(),
        runtime_dir: "/run/novacron/domains/x".into(),
        memory_dir: None,
        serial_log: None,
        net_fds: Default::default(),
        vnc_display: None,
        spice_port: None,
        swtpm_socket: None,
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

fn check_golden(name: &str, argv: &[String]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.argv"));
    let text = argv.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "UPDATE_GOLDEN is refused under CI=true"
        );
        fs::write(&path, &text).expect("write golden");
        return;
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(want, text, "{name}: argv differs from golden");
}

fn doc(os: &str, body: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>g</name>
  <uuid>5b0c3f1e-7a2d-4c8e-9b1f-3e4d5c6b7a90</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <os{os}><type arch='x86_64' machine='q35'>hvm</type></os>
  {body}
</domain>"
    )
}

/// Parsed, written, parsed again: the same model, and the second write is the first.
fn round_trip(xml: &str) -> DomainConfig {
    let cfg = DomainConfig::from_xml(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let written = cfg.to_xml();
    let back = DomainConfig::from_xml(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(cfg, back, "{written}");
    assert_eq!(written, back.to_xml());
    let json = DomainConfig::from_json(&cfg.to_json()).expect("json");
    assert_eq!(cfg, json);
    cfg
}

/// virt-manager's features and clock for every Windows guest (Windows 11 template).
const WINDOWS: &str = "<features>
    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='8191'/>
      <vpindex state='on'/>
      <runtime state='on'/>
      <synic state='on'/>
      <stimer state='on'><direct state='on'/></stimer>
      <reset state='on'/>
      <vendor_id state='on' value='KVM Hv'/>
      <frequencies state='on'/>
      <reenlightenment state='off'/>
      <tlbflush state='on'/>
      <ipi state='on'/>
      <evmcs state='off'/>
    </hyperv>
    <kvm><hidden state='on'/></kvm>
    <vmport state='off'/>
    <smm state='on'/>
    <ioapic driver='kvm'/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
    <timer name='hypervclock' present='yes'/>
  </clock>";

#[test]
fn windows_enlightenments_round_trip_and_reach_the_cpu() {
    let cfg = round_trip(&doc("", WINDOWS));
    let h = cfg.features.hyperv.as_ref().expect("hyperv");
    assert_eq!(h.mode, HypervMode::Custom);
    assert_eq!(h.flags.get(&HypervFlag::Reenlightenment), Some(&false));
    assert_eq!(
        h.spinlocks,
        Some(Spinlocks {
            state: true,
            retries: Some(8191)
        })
    );
    assert_eq!(cfg.features.kvm_hidden, Some(true));
    assert_eq!(cfg.features.ioapic, Some(IoapicDriver::Kvm));
    assert_eq!(cfg.cpu.as_ref().and_then(|c| c.check), Some(CpuCheck::None));
    let vd = cfg.validate().expect("valid");
    let argv = build_argv(&vd, &ctx(CpuChoice::AsConfigured)).expect("argv");
    check_golden("windows-hyperv", &argv);
    let cpu = &argv[argv.iter().position(|a| a == "-cpu").expect("-cpu") + 1];
    assert_eq!(
        cpu,
        "host,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-vpindex=on,\
         hv-runtime=on,hv-synic=on,hv-stimer=on,hv-stimer-direct=on,hv-reset=on,\
         hv-vendor-id=KVM Hv,hv-frequencies=on,hv-tlbflush=on,hv-ipi=on,kvm=off"
    );
    let machine = &argv[argv.iter().position(|a| a == "-machine").expect("-machine") + 1];
    assert!(
        machine.contains("smm=on,vmport=off,kernel_irqchip=on"),
        "{machine}"
    );
}

#[test]
fn hyperv_passthrough_and_the_bare_virt_install_form() {
    // virt-install writes <hyperv> without a mode: custom.
    let cfg = round_trip(&doc(
        "",
        "<features><hyperv><relaxed state='on'/><vapic state='on'/>\
         <spinlocks state='on' retries='8191'/></hyperv></features>",
    ));
    assert_eq!(
        cfg.features.hyperv.as_ref().map(|h| h.mode),
        Some(HypervMode::Custom)
    );
    let cfg = round_trip(&doc(
        "",
        "<features><hyperv mode='passthrough'><evmcs state='off'/></hyperv></features>\
         <cpu mode='host-passthrough'/>",
    ));
    let argv = build_argv(
        &cfg.validate().expect("valid"),
        &ctx(CpuChoice::AsConfigured),
    )
    .expect("argv");
    assert!(
        argv.contains(&"host,hv-passthrough=on,hv-evmcs=off".to_owned()),
        "{argv:?}"
    );
}

#[test]
fn hyperv_values_are_checked_and_unknown_ones_refused_by_name() {
    let bad = DomainConfig::from_xml(&doc(
        "",
        "<features><hyperv><spinlocks state='on' retries='100'/>\
         <vendor_id state='on' value='far-too-long-vendor'/></hyperv></features>",
    ))
    .expect("parse")
    .validate()
    .expect_err("invalid");
    let text = bad.to_string();
    assert!(
        text.contains("features.hyperv.spinlocks.retries") && text.contains("4095"),
        "{text}"
    );
    assert!(text.contains("features.hyperv.vendor_id.value"), "{text}");
    for (xml, path) in [
        (
            "<features><hyperv><xmm_input state='on'/></hyperv></features>",
            "domain/features/hyperv/xmm_input",
        ),
        (
            "<features><kvm><poll-control state='on'/></kvm></features>",
            "domain/features/kvm/poll-control",
        ),
        (
            "<features><ioapic driver='xen'/></features>",
            "domain/features/ioapic@driver",
        ),
    ] {
        let e = DomainConfig::from_xml(&doc("", xml)).expect_err(xml);
        assert_eq!(e.path(), Some(path), "{e}");
    }
}

#[test]
fn host_model_keeps_mode_check_and_fallback_and_needs_the_host() {
    // vagrant-libvirt's and virt-install's host-model forms.
    for body in [
        "<cpu mode='host-model' check='partial'><model fallback='allow'/></cpu>",
        "<cpu mode='host-model'><model fallback='allow'></model><topology sockets='1' cores='2' threads='1'/></cpu>",
    ] {
        let cfg = round_trip(&doc("", body));
        let c = cfg.cpu.clone().expect("cpu");
        assert_eq!(c.mode, CpuMode::HostModel);
        assert_eq!(c.fallback, Some(CpuFallback::Allow));
        let vd = cfg.validate().expect("valid");
        assert_eq!(
            build_argv(&vd, &ctx(CpuChoice::AsConfigured)),
            Err(ArgvError::UnresolvedHostModel)
        );
    }
    let cfg = round_trip(&doc(
        "",
        "<cpu mode='host-model' check='partial'><model fallback='allow'/></cpu>",
    ));
    let resolved = CpuChoice::HostModel {
        model: "Skylake-Client-IBRS".into(),
        features: vec!["ss".into(), "vmx".into()],
    };
    let argv = build_argv(&cfg.validate().expect("valid"), &ctx(resolved)).expect("argv");
    check_golden("host-model", &argv);
    assert!(
        argv.contains(&"Skylake-Client-IBRS,+ss,+vmx".to_owned()),
        "{argv:?}"
    );
    let bad = CpuChoice::HostModel {
        model: "qemu64".into(),
        features: vec!["a,b".into()],
    };
    let vd = DomainConfig::from_xml(&doc("", "<cpu mode='host-model'/>"))
        .expect("parse")
        .validate()
        .expect("valid");
    assert!(matches!(
        build_argv(&vd, &ctx(bad)),
        Err(ArgvError::BadCpuModel(_))
    ));
}

#[test]
fn a_cpu_with_only_topology_gets_no_model_added() {
    let cfg = round_trip(&doc(
        "",
        "<cpu><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>",
    ));
    assert_eq!(cfg.cpu.as_ref().map(|c| &c.mode), Some(&CpuMode::Default));
    let written = cfg.to_xml();
    assert!(!written.contains("<model"), "{written}");
    assert!(written.contains("<cpu>"), "{written}");
    // check and fallback survive on a named model too; check='full' enforces it.
    let cfg = round_trip(&doc(
        "",
        "<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>Haswell-noTSX</model></cpu>",
    ));
    let c = cfg.cpu.clone().expect("cpu");
    assert_eq!(
        (c.check, c.fallback),
        (Some(CpuCheck::Full), Some(CpuFallback::Forbid))
    );
    let argv = build_argv(
        &cfg.validate().expect("valid"),
        &ctx(CpuChoice::AsConfigured),
    )
    .expect("argv");
    assert!(
        argv.contains(&"Haswell-noTSX,enforce".to_owned()),
        "{argv:?}"
    );
}

#[test]
fn efi_without_a_loader_is_autoselection() {
    let cfg = round_trip(&doc(" firmware='efi'", "<features><acpi/></features>"));
    assert_eq!(
        cfg.os.firmware,
        Firmware::UefiAuto {
            secure_boot: None,
            enrolled_keys: None
        }
    );
    // Nothing in the definition names a host file: the host picks and opens the firmware.
    assert!(cfg.host_refs().is_empty(), "{:?}", cfg.host_refs());
    let xml = doc(
        " firmware='efi'",
        "",
    )
    .replace(
        "hvm</type>",
        "hvm</type><firmware><feature enabled='no' name='enrolled-keys'/><feature enabled='yes' name='secure-boot'/></firmware>",
    );
    let cfg = round_trip(&xml);
    assert_eq!(
        cfg.os.firmware,
        Firmware::UefiAuto {
            secure_boot: Some(true),
            enrolled_keys: Some(false)
        }
    );
    for (xml, path) in [
        (
            "hvm</type><firmware><feature enabled='yes' name='amd-sev'/></firmware>",
            "domain/os/firmware/feature@name",
        ),
        (
            "hvm</type><nvram>/var/lib/x/VARS.fd</nvram>",
            "domain/os/loader",
        ),
    ] {
        let bad = doc(" firmware='efi'", "").replace("hvm</type>", xml);
        let e = DomainConfig::from_xml(&bad).expect_err(xml);
        assert_eq!(e.path(), Some(path), "{e}");
    }
    // Secure boot with SMM explicitly off cannot work.
    let xml = doc(" firmware='efi'", "<features><smm state='off'/></features>").replace(
        "hvm</type>",
        "hvm</type><firmware><feature enabled='yes' name='secure-boot'/></firmware>",
    );
    let e = DomainConfig::from_xml(&xml)
        .expect("parse")
        .validate()
        .expect_err("invalid");
    assert!(e.to_string().contains("os.firmware.secure_boot"), "{e}");
}
