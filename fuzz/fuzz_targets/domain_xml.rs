//! Fuzz the libvirt XML reader. Oracle: anything accepted must write back to XML that reads
//! to the same model; validation and (if valid) the argv builder must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use novacron_domain::{
    build_argv, Accel, CpuChoice, DomainConfig, FdSetEntry, LaunchContext, MonitorSocket,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = DomainConfig::from_xml(text) else {
        return;
    };
    let xml = cfg.to_xml();
    let again = DomainConfig::from_xml(&xml)
        .unwrap_or_else(|e| panic!("writer output rejected: {e}\n{xml}"));
    assert_eq!(cfg, again, "parse(write(x)) != x\n{xml}");
    let json = cfg.to_json();
    assert_eq!(
        DomainConfig::from_json(&json).ok().as_ref(),
        Some(&cfg),
        "JSON round trip\n{json}"
    );
    if let Ok(vd) = cfg.validate() {
        let ctx = LaunchContext {
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Kvm,
            cpu: CpuChoice::Model("qemu64".into()),
            // As the daemon starts QEMU: the monitor an inherited fd, the serial log an fd set.
            monitor: MonitorSocket::Fd(3),
            fd_sets: vec![FdSetEntry {
                fd: 4,
                set: 1,
                opaque: "serial-log".into(),
            }],
            runtime_dir: "/run/q".into(),
            memory_dir: None,
            serial_log: Some("/dev/fdset/1".into()),
            net_fds: (0..64)
                .map(|i| {
                    (
                        i,
                        novacron_domain::NetFd::single(100 + i as i32, None),
                    )
                })
                .collect(),
            vnc_display: Some(0),
            spice_port: Some(5930),
            swtpm_socket: Some("/run/q/swtpm.sock".into()),
            sandbox: true,
            host_paths: Default::default(),
            backing_chains: Default::default(),
        };
        let _ = build_argv(&vd, &ctx);
    }
});
