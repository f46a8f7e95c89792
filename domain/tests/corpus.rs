//! Round-trip and validation over the hand-written libvirt corpus (virt-install / virsh
//! dumpxml style).

use std::fs;
use std::path::PathBuf;

use novacron_domain::DomainConfig;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "corpus must have the representative guests"
    );
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read corpus file"))
        })
        .collect()
}

#[test]
fn corpus_parses_and_validates() {
    for (name, xml) in corpus() {
        let cfg = DomainConfig::from_xml(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.clone()
            .validate()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn corpus_xml_round_trip_is_exact_and_stable() {
    for (name, xml) in corpus() {
        let cfg = DomainConfig::from_xml(&xml).expect("parse");
        let out = cfg.to_xml();
        let again = DomainConfig::from_xml(&out)
            .unwrap_or_else(|e| panic!("{name}: re-parse failed: {e}\n{out}"));
        assert_eq!(cfg, again, "{name}: parse(write(x)) != x");
        assert_eq!(out, again.to_xml(), "{name}: writer output not stable");
    }
}

#[test]
fn corpus_json_round_trip() {
    for (name, xml) in corpus() {
        let cfg = DomainConfig::from_xml(&xml).expect("parse");
        let json = cfg.to_json();
        let back = DomainConfig::from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}\n{json}"));
        assert_eq!(cfg, back, "{name}: JSON round trip");
    }
}

#[test]
fn corpus_keeps_metadata_verbatim() {
    let (_, xml) = corpus()
        .into_iter()
        .find(|(n, _)| n == "linux-guest")
        .expect("linux-guest");
    let cfg = DomainConfig::from_xml(&xml).expect("parse");
    let meta = cfg.metadata.as_deref().expect("metadata");
    assert!(
        meta.contains(r#"<libosinfo:os id="http://fedoraproject.org/fedora/39"/>"#),
        "{meta}"
    );
    assert!(cfg.to_xml().contains(meta));
    assert_eq!(
        cfg.description.as_deref(),
        Some("Created by virt-install; web frontend & CI runner")
    );
}

#[test]
fn corpus_units_are_converted_to_kib() {
    let all = corpus();
    let get = |n: &str| {
        let xml = &all.iter().find(|(name, _)| name == n).expect("file").1;
        DomainConfig::from_xml(xml).expect("parse")
    };
    assert_eq!(get("windows-guest").memory.memory_kib, 8 * 1024 * 1024);
    assert_eq!(get("direct-kernel").memory.memory_kib, 1_000_000); // 1024 MB = 1.024e9 bytes
    let numa = get("pinned-numa-hugepages");
    assert_eq!(numa.cpu.expect("cpu").numa[1].memory_kib, 8 * 1024 * 1024);
}
