//! Domain pipeline benchmark: libvirt XML -> DomainConfig -> validate -> QEMU argv, for a
//! typical virt-install guest. The baseline, measured in the same process, is quick-xml
//! merely tokenizing the same document, so the ratio is our overhead over the raw tokenizer.
//!
//! Run: `cargo bench -p novacron-benches --bench domain_pipeline`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use novacron_domain::{build_argv, Accel, CpuChoice, DomainConfig, LaunchContext, NetFd};
use quick_xml::events::Event;
use quick_xml::Reader;

const XML: &str = include_str!("../../domain/tests/corpus/linux-guest.xml");
const BUDGET: Duration = Duration::from_millis(1500);

fn ctx() -> LaunchContext {
    let mut net_fds = BTreeMap::new();
    net_fds.insert(0, NetFd::single(21, Some(22)));
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: novacron_domain::MonitorSocket::Path(
            "/run/novacron/domains/fedora39/qmp.sock".into(),
        ),
        fd_sets: Vec::new(),
        runtime_dir: "/run/novacron/domains/fedora39".into(),
        memory_dir: None,
        serial_log: None,
        net_fds,
        vnc_display: Some(1),
        spice_port: Some(5930),
        swtpm_socket: None,
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

/// Run `f` repeatedly for about `BUDGET`; returns (iterations, seconds per iteration).
fn measure(mut f: impl FnMut()) -> (u64, f64) {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < BUDGET {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    (n, start.elapsed().as_secs_f64() / n as f64)
}

fn tokenize(xml: &str) -> usize {
    let mut r = Reader::from_str(xml);
    let mut events = 0;
    loop {
        match r.read_event() {
            Ok(Event::Eof) => break,
            Ok(_) => events += 1,
            Err(e) => panic!("corpus must tokenize: {e}"),
        }
    }
    events
}

fn main() {
    let ctx = ctx();
    let parsed = DomainConfig::from_xml(XML).expect("corpus parses");
    let validated = parsed.clone().validate().expect("corpus validates");

    let rows: Vec<(&str, (u64, f64))> = vec![
        (
            "baseline: quick-xml tokenize",
            measure(|| {
                black_box(tokenize(black_box(XML)));
            }),
        ),
        (
            "parse (from_xml)",
            measure(|| {
                black_box(DomainConfig::from_xml(black_box(XML)).expect("parse"));
            }),
        ),
        (
            "validate",
            measure(|| {
                black_box(black_box(parsed.clone()).validate().expect("valid"));
            }),
        ),
        (
            "argv (build_argv)",
            measure(|| {
                black_box(build_argv(black_box(&validated), &ctx).expect("argv"));
            }),
        ),
        (
            "write (to_xml)",
            measure(|| {
                black_box(black_box(&parsed).to_xml());
            }),
        ),
        (
            "pipeline: parse+validate+argv",
            measure(|| {
                let cfg = DomainConfig::from_xml(black_box(XML)).expect("parse");
                let vd = cfg.validate().expect("valid");
                black_box(build_argv(&vd, &ctx).expect("argv"));
            }),
        ),
    ];

    let base = rows.first().map_or(1.0, |r| r.1 .1);
    println!(
        "domain_pipeline: linux-guest.xml ({} bytes), {} ms per row",
        XML.len(),
        BUDGET.as_millis()
    );
    println!(
        "{:<32} {:>10} {:>12} {:>14} {:>10}",
        "stage", "iters", "us/op", "ops/s", "x base"
    );
    for (name, (n, secs)) in &rows {
        println!(
            "{:<32} {:>10} {:>12.2} {:>14.0} {:>10.2}",
            name,
            n,
            secs * 1e6,
            1.0 / secs,
            secs / base
        );
    }
}
