//! Issue 16: domain XML nobody on the team wrote — virt-install's output (written by libvirt's
//! embedded QEMU driver, `tests/corpus/generate.sh`), vagrant-libvirt's template rendered, and
//! documents in the style of libvirt's own test inputs. For each: parse, validate, build the
//! argv, write back, re-parse. An accepted document must round-trip exactly
//! (`parse(write(x)) == x`) and keep every guest-visible fact of the input (read from the input
//! with quick-xml, independently of our reader). A refused one must name the element.
//!
//! `tests/corpus/expected.toml` says, per document, `"accept"` or
//! `{ refuse = "<substring of the refusal>" }`; the test fails on any difference, so a feature
//! landing flips its documents there (and the table printed with `--nocapture` shows why each
//! is refused today).

mod corpus_facts;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use novacron_domain::{
    build_argv, Accel, ArgvError, CpuChoice, DomainConfig, LaunchContext, MonitorSocket, NetFd,
};

/// The corpus subdirectories; `handwritten` is the top-level files (also `corpus.rs`'s).
const SETS: &[&str] = &["handwritten", "virt-install", "vagrant-libvirt", "libvirt"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `(id, text)` for every document, id as `set/file-stem`.
fn documents() -> Vec<(String, String)> {
    let mut docs = Vec::new();
    for set in SETS {
        let dir = match *set {
            "handwritten" => root(),
            _ => root().join(set),
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.expect("corpus entry").path();
            if p.extension().is_some_and(|x| x == "xml") {
                let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
                docs.push((
                    format!("{set}/{stem}"),
                    fs::read_to_string(&p).expect("read corpus document"),
                ));
            }
        }
    }
    docs.sort();
    docs
}

/// One document's entry: refused (with this substring in the refusal) or accepted, and the
/// facts the written XML still loses (known losses in features another change owns; each must
/// still occur, so a fix makes the entry go stale and the test says so).
#[derive(Debug, Clone, PartialEq, Default)]
struct Expect {
    refuse: Option<String>,
    losing: Vec<String>,
}

fn expectations() -> BTreeMap<String, Expect> {
    let path = root().join("expected.toml");
    let text = fs::read_to_string(&path).expect("expected.toml");
    let table: toml::Table = text.parse().expect("expected.toml is TOML");
    let strings = |v: &toml::Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect()
    };
    table
        .into_iter()
        .map(|(doc, v)| {
            let bad = || -> ! {
                panic!(
                    "expected.toml: {doc}: want \"accept\" or a table of refuse = \"...\" \
                     and/or losing = [\"...\"], got {v}"
                )
            };
            let e = match &v {
                toml::Value::String(s) if s == "accept" => Expect::default(),
                toml::Value::Table(t) => {
                    let mut e = Expect::default();
                    for (k, x) in t {
                        match (k.as_str(), x) {
                            ("refuse", toml::Value::String(s)) if !s.is_empty() => {
                                e.refuse = Some(s.clone())
                            }
                            ("losing", x) => e.losing = strings(x).unwrap_or_else(|| bad()),
                            _ => bad(),
                        }
                    }
                    e
                }
                _ => bad(),
            };
            (doc, e)
        })
        .collect()
}

/// A launch context giving everything the host layer would: a tap per NIC, a VNC display, a
/// swtpm socket.
fn context(cfg: &DomainConfig) -> LaunchContext {
    let run = PathBuf::from("/run/novacron/domains").join(&cfg.name);
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: match cfg.virt_type {
            novacron_domain::model::VirtType::Kvm => Accel::Kvm,
            novacron_domain::model::VirtType::Qemu => Accel::Tcg,
        },
        // What the host layer does for host-model (the daemon's cpu_firmware test resolves
        // it on a real host): a named model with the host's features.
        cpu: match cfg.cpu.as_ref().map(|c| &c.mode) {
            Some(novacron_domain::model::CpuMode::HostModel) => CpuChoice::HostModel {
                model: "Skylake-Client".into(),
                features: vec!["vmx".into()],
            },
            _ => CpuChoice::AsConfigured,
        },
        monitor: MonitorSocket::Path(run.join("qmp.sock")),
        fd_sets: Vec::new(),
        runtime_dir: run.clone(),
        memory_dir: None,
        serial_log: None,
        net_fds: (0..cfg.devices.interfaces.len())
            .map(|i| {
                let fd = 20 + 2 * i32::try_from(i).expect("few NICs");
                (i, NetFd::single(fd, Some(fd + 1)))
            })
            .collect(),
        vnc_display: Some(3),
        spice_port: Some(5903),
        swtpm_socket: Some(run.join("swtpm.sock")),
        sandbox: true,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

/// The field an argv refusal concerns; `None` for one that names nothing (a test failure).
fn argv_element(e: &ArgvError) -> Option<String> {
    Some(match e {
        ArgvError::MissingUuid => "uuid".into(),
        ArgvError::MissingMac(i) | ArgvError::MissingTapFd(i) => {
            format!("devices.interfaces[{i}]")
        }
        ArgvError::MissingVncDisplay | ArgvError::MissingSpicePort => "devices.graphics".into(),
        ArgvError::MissingSwtpmSocket => "devices.tpm".into(),
        ArgvError::UnresolvedHostModel | ArgvError::BadCpuModel(_) => "cpu".into(),
        ArgvError::UnresolvedVolume(i) => format!("devices.disks[{i}]"),
        ArgvError::NonUtf8Path(_) => return None,
    })
}

#[derive(Debug)]
enum Outcome {
    Accepted,
    Refused {
        stage: &'static str,
        element: Option<String>,
        message: String,
    },
}

impl Outcome {
    fn refusal_text(&self) -> String {
        match self {
            Outcome::Accepted => String::new(),
            Outcome::Refused {
                element, message, ..
            } => format!("{}: {message}", element.as_deref().unwrap_or("")),
        }
    }
}

/// Parse, validate, build the argv; on acceptance also check the round trip (problems go to
/// `failures`).
fn run(id: &str, xml: &str, failures: &mut Vec<String>, losses: &mut Vec<String>) -> Outcome {
    let cfg = match DomainConfig::from_xml(xml) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Refused {
                stage: "parse",
                element: e.path().map(str::to_owned),
                message: e.to_string(),
            }
        }
    };
    // The round trip holds for whatever the reader accepts, valid or not.
    round_trip(id, xml, &cfg, failures, losses);
    let vd = match cfg.clone().validate() {
        Ok(v) => v,
        Err(errs) => {
            let first = &errs.0[0];
            if errs.0.iter().any(|e| e.path.is_empty()) {
                failures.push(format!("{id}: a validation error names no field: {errs}"));
            }
            return Outcome::Refused {
                stage: "validate",
                element: Some(first.path.clone()),
                message: errs.to_string(),
            };
        }
    };
    // A define assigns a uuid where the document has none (vagrant's empty <uuid/>).
    let vd = if vd.uuid.is_none() {
        let mut c = cfg.clone();
        c.uuid = Some(
            "6e6f7661-6372-6f6e-ffff-000000000000"
                .parse()
                .expect("uuid"),
        );
        match c.validate() {
            Ok(v) => v,
            Err(errs) => panic!("{id}: valid without a uuid, invalid with one: {errs}"),
        }
    } else {
        vd
    };
    match build_argv(&vd, &context(&cfg)) {
        Ok(argv) => {
            assert!(argv.len() > 5, "{id}: argv {argv:?}");
            Outcome::Accepted
        }
        Err(e) => Outcome::Refused {
            stage: "argv",
            element: argv_element(&e),
            message: e.to_string(),
        },
    }
}

/// Checks `parse(write(x)) == x`, writer stability and the JSON round trip (problems to
/// `failures`), and lists in `losses` the input's facts the written XML lost or changed and the
/// guest-identity facts it added.
fn round_trip(
    id: &str,
    xml: &str,
    cfg: &DomainConfig,
    failures: &mut Vec<String>,
    losses: &mut Vec<String>,
) {
    let out = cfg.to_xml();
    match DomainConfig::from_xml(&out) {
        Ok(again) if &again == cfg => {
            if again.to_xml() != out {
                failures.push(format!("{id}: writer output not stable"));
            }
        }
        Ok(_) => failures.push(format!("{id}: parse(write(x)) != x\n{out}")),
        Err(e) => failures.push(format!("{id}: written XML does not parse: {e}\n{out}")),
    }
    match DomainConfig::from_json(&cfg.to_json()) {
        Ok(back) if &back == cfg => {}
        other => failures.push(format!("{id}: JSON round trip: {other:?}")),
    }
    let (input, output) = match (corpus_facts::facts(xml), corpus_facts::facts(&out)) {
        (Ok(i), Ok(o)) => (i, o),
        (i, o) => {
            failures.push(format!("{id}: fact extraction: {i:?} / {o:?}"));
            return;
        }
    };
    for (key, got) in corpus_facts::added(&input, &output) {
        losses.push(format!("{key} = {got} (added)"));
    }
    for (key, want, got) in corpus_facts::lost(&input, &output) {
        losses.push(match got {
            Some(got) => format!("{key}: {want} -> {got}"),
            None => format!("{key} = {want} (lost)"),
        });
    }
}

#[test]
fn real_world_documents_match_the_expectation_file() {
    let docs = documents();
    assert!(
        docs.iter()
            .filter(|(id, _)| id.starts_with("virt-install/"))
            .count()
            >= 20,
        "the virt-install corpus is missing (tests/corpus/generate.sh writes it)"
    );
    let mut expected = expectations();
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (id, xml) in &docs {
        let mut losses = Vec::new();
        let outcome = run(id, xml, &mut failures, &mut losses);
        if let Outcome::Refused {
            stage,
            element: None,
            message,
        } = &outcome
        {
            failures.push(format!(
                "{id}: refused at {stage} without naming an element: {message}"
            ));
        }
        let known: &[String] = expected.get(id).map_or(&[], |e| &e.losing);
        for loss in &losses {
            if !known.iter().any(|k| loss.contains(k.as_str())) {
                failures.push(format!(
                    "{id}: the written XML differs from the input: {loss}"
                ));
            }
        }
        for k in known {
            if !losses.iter().any(|l| l.contains(k.as_str())) {
                failures.push(format!(
                    "{id}: expected.toml lists '{k}' as lost, but the written XML keeps it now: remove it"
                ));
            }
        }
        match (expected.remove(id).map(|e| e.refuse), &outcome) {
            (None, _) => failures.push(format!(
                "{id}: not in expected.toml (today: {})",
                match &outcome {
                    Outcome::Accepted => "accept".to_owned(),
                    o => format!("refuse: {}", o.refusal_text()),
                }
            )),
            (Some(None), Outcome::Accepted) => {}
            (Some(None), o) => failures.push(format!(
                "{id}: expected accept, refused: {}",
                o.refusal_text()
            )),
            (Some(Some(want)), Outcome::Accepted) => failures.push(format!(
                "{id}: expected a refusal naming '{want}', but it is accepted now: \
                 flip it to \"accept\" in expected.toml"
            )),
            (Some(Some(want)), o) => {
                if !o.refusal_text().contains(&want) {
                    failures.push(format!(
                        "{id}: expected a refusal containing '{want}', got: {}",
                        o.refusal_text()
                    ));
                }
            }
        }
        table.push((id.clone(), outcome));
    }
    for doc in expected.keys() {
        failures.push(format!(
            "expected.toml names {doc}, which is not in the corpus"
        ));
    }
    print_table(&table);
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn print_table(table: &[(String, Outcome)]) {
    let accepted = table
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Accepted))
        .count();
    println!("| document | outcome |\n| --- | --- |");
    for (id, o) in table {
        match o {
            Outcome::Accepted => println!("| {id} | accepted |"),
            Outcome::Refused {
                stage,
                element,
                message,
            } => println!(
                "| {id} | refused ({stage}) at `{}`: {} |",
                element.as_deref().unwrap_or("?"),
                message.replace('|', "\\|")
            ),
        }
    }
    println!("{accepted} of {} accepted", table.len());
}

/// The fact extractor must be able to see a loss: dropping a disk's cache mode, changing the
/// machine, or adding nothing must be told apart.
#[test]
fn fact_extractor_sees_lost_and_changed_settings() {
    let xml = "<domain type='kvm'><name>a</name><memory unit='MiB'>2</memory><vcpu>1</vcpu>\
               <os><type machine='q35'>hvm</type><kernel></kernel></os>\
               <clock><timer name='rtc' tickpolicy='catchup'/></clock>\
               <devices><disk type='file'><driver cache='none'/><alias name='x'/></disk>\
               <controller type='usb'/><controller type='pci' index='0'/></devices></domain>";
    let f = corpus_facts::facts(xml).expect("facts");
    assert_eq!(f.get("memory#kib").map(String::as_str), Some("2048"));
    assert_eq!(
        f.get("devices/disk[1]/driver[1]@cache").map(String::as_str),
        Some("none")
    );
    assert_eq!(
        f.get("clock/timer[rtc]@tickpolicy").map(String::as_str),
        Some("catchup")
    );
    assert_eq!(
        f.get("devices/controller[pci#1]@index").map(String::as_str),
        Some("0")
    );
    assert!(!f
        .keys()
        .any(|k| k.contains("kernel") || k.contains("alias")));
    let same = xml.replace("<memory unit='MiB'>2</memory>", "<memory>2048</memory>");
    assert!(corpus_facts::lost(&f, &corpus_facts::facts(&same).expect("facts")).is_empty());
    let dropped = xml.replace("<driver cache='none'/>", "<driver/>");
    let changed = xml.replace("q35", "pc");
    for other in [dropped, changed] {
        assert_eq!(
            corpus_facts::lost(&f, &corpus_facts::facts(&other).expect("facts")).len(),
            1
        );
    }
    // A CPU model written where the input had none is reported; a default spelled out is not.
    let more = xml.replace(
        "<vcpu>1</vcpu>",
        "<vcpu>1</vcpu><cpu mode='custom'><model>qemu64</model></cpu>",
    );
    let more = corpus_facts::facts(
        &more.replace("<disk type='file'>", "<disk type='file' device='disk'>"),
    )
    .expect("facts");
    let added: Vec<String> = corpus_facts::added(&f, &more)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(added, ["cpu/model[1]#text", "cpu@mode"]);
}
