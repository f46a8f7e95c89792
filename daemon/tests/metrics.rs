//! `GET /metrics` of a real novacrond with running OS-less guests: the exposition is parsed
//! by a strict text-format 0.0.4 parser (and by `promtool check metrics`, which must be there),
//! names and labels follow Prometheus conventions, and the values describe the guests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::*;

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
}

/// Sorted (name, value) pairs.
type Labels = Vec<(String, String)>;
/// name -> labels -> value.
type Samples = BTreeMap<String, BTreeMap<Labels, f64>>;

#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
    samples: Samples,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        self.samples.get(name)?.get(&key).copied()
    }

    fn series(&self, name: &str) -> Vec<(&Labels, f64)> {
        self.samples
            .get(name)
            .map(|m| m.iter().map(|(k, v)| (k, *v)).collect())
            .unwrap_or_default()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Labels `{k="v",...}` at the start of `s`; returns them and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("unquoted label value")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ,".into());
        }
    }
}

/// The family a sample belongs to: histogram/summary suffixes map to their base name.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| f.kind == "histogram") {
                return base;
            }
        }
    }
    name
}

/// A strict parser of text format 0.0.4 plus the naming conventions of
/// https://prometheus.io/docs/practices/naming/.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let Some(name) = name else { continue };
            if !is_metric_name(name) {
                return Err(at("bad metric name".into()));
            }
            if matches!(kw, Some("HELP" | "TYPE")) && current.as_deref() != Some(name) {
                if let Some(prev) = current.replace(name.to_owned()) {
                    finished.insert(prev);
                }
                if finished.contains(name) {
                    return Err(at("family appears twice".into()));
                }
            }
            let has_samples = e
                .samples
                .keys()
                .any(|s| s == name || (s.starts_with(name) && s[name.len()..].starts_with('_')));
            let f = e.families.entry(name.to_owned()).or_default();
            match kw {
                Some("HELP") => {
                    if f.help || arg.is_none_or(str::is_empty) {
                        return Err(at("duplicate or empty HELP".into()));
                    }
                    f.help = true;
                }
                Some("TYPE") => {
                    let kind = arg.unwrap_or_default();
                    if !f.kind.is_empty() {
                        return Err(at("duplicate TYPE".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("bad type {kind}")));
                    }
                    if has_samples {
                        return Err(at("TYPE after samples".into()));
                    }
                    f.kind = kind.to_owned();
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (mut labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest.split_ascii_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &e.families);
        if current.as_deref() != Some(family) {
            return Err(at(format!(
                "sample outside its family's block ({current:?})"
            )));
        }
        let names: BTreeSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        if names.len() != labels.len() {
            return Err(at("repeated label".into()));
        }
        labels.sort();
        if e.samples
            .entry(name.to_owned())
            .or_default()
            .insert(labels, value)
            .is_some()
        {
            return Err(at("duplicate series".into()));
        }
    }
    check_conventions(&e)?;
    Ok(e)
}

fn check_conventions(e: &Exposition) -> Result<(), String> {
    for (name, f) in &e.families {
        if !f.help || f.kind.is_empty() {
            return Err(format!("{name}: needs HELP and TYPE"));
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("{name}: not snake_case"));
        }
        if !(name.starts_with("novacron_") || name.starts_with("process_")) {
            return Err(format!("{name}: no namespace prefix"));
        }
        let is_counter = f.kind == "counter";
        if is_counter != name.ends_with("_total") {
            return Err(format!(
                "{name}: counters, and only counters, end in _total"
            ));
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        // Base units only: seconds and bytes, never ms, kB, percent...
        for bad in [
            "_ms",
            "_milliseconds",
            "_us",
            "_kb",
            "_kib",
            "_mb",
            "_mib",
            "_percent",
        ] {
            if base.contains(bad) {
                return Err(format!("{name}: non-base unit {bad}"));
            }
        }
        if (base.contains("memory") || base.contains("rss") || base.contains("balloon"))
            && !base.ends_with("_bytes")
        {
            return Err(format!("{name}: a size must end in _bytes"));
        }
        if (base.contains("duration") || base.contains("time")) && !base.ends_with("_seconds") {
            return Err(format!("{name}: a time must end in _seconds"));
        }
        if f.kind == "histogram" {
            check_histogram(e, name)?;
        }
    }
    Ok(())
}

fn check_histogram(e: &Exposition, name: &str) -> Result<(), String> {
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for (labels, v) in e.series(&format!("{name}_bucket")) {
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .ok_or(format!("{name}_bucket without le"))?;
        let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        groups
            .entry(rest)
            .or_default()
            .push((parse_value(&le.1)?, v));
    }
    for (labels, mut buckets) in groups {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            return Err(format!("{name}{labels:?}: no +Inf bucket"));
        }
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name}{labels:?}: buckets not cumulative"));
        }
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = e.value(&format!("{name}_count"), &pairs);
        if count != buckets.last().map(|b| b.1) {
            return Err(format!("{name}{labels:?}: _count != +Inf bucket"));
        }
        if e.value(&format!("{name}_sum"), &pairs).is_none() {
            return Err(format!("{name}{labels:?}: no _sum"));
        }
    }
    Ok(())
}

fn scrape(socket: &Path) -> Exposition {
    let started = Instant::now();
    let r = curl(socket, "GET", "/metrics", &["--max-time", "20"]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "{r:?}"
    );
    eprintln!("scrape took {:?}", started.elapsed());
    promtool(&r.body);
    parse(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

/// `promtool check metrics` too: Prometheus's own checker, from Debian's prometheus package
/// (on PATH, or unpacked alone into the test cache by `./quickstart.sh test`). Mandatory: a
/// missing promtool fails, it does not skip.
fn promtool(body: &str) {
    use std::io::Write;
    let cached = novacron_tests::cache_dir().join("promtool/usr/bin/promtool");
    let program = if cached.exists() {
        cached
    } else {
        "promtool".into()
    };
    let mut child = std::process::Command::new(&program)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool ({}) is needed: {e}; `./quickstart.sh test` unpacks it from Debian's \
                 prometheus package (or: apt-get install prometheus)",
                program.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

fn start(socket: &Path, name: &str) {
    let xml = osless(name).to_xml();
    let r = curl(
        socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn parser_rejects_what_prometheus_rejects() {
    let ok =
        "# HELP novacron_a_total A.\n# TYPE novacron_a_total counter\nnovacron_a_total{x=\"1\\\"\"} 3\n";
    assert_eq!(
        parse(ok)
            .unwrap()
            .value("novacron_a_total", &[("x", "1\"")]),
        Some(3.0)
    );
    for bad in [
        "# HELP other_total A.\n# TYPE other_total counter\nother_total 1\n", // no namespace
        "novacron_a_total 1\n",                                                 // no HELP/TYPE
        "# HELP novacron_a A.\n# TYPE novacron_a counter\nnovacron_a 1\n",                        // counter without _total
        "# HELP novacron_a_total A.\n# TYPE novacron_a_total counter\nnovacron_a_total{x=1} 1\n", // unquoted
        "# HELP novacron_a_total A.\n# TYPE novacron_a_total counter\nnovacron_a_total 1\nnovacron_a_total 2\n", // duplicate
        "# HELP novacron_a_ms A.\n# TYPE novacron_a_ms gauge\nnovacron_a_ms 1\n",                  // unit
        "# HELP novacron_a A.\n# TYPE novacron_a gauge\n# HELP novacron_b B.\n# TYPE novacron_b gauge\nnovacron_a 1\n", // interleaved
        "# HELP novacron_a A.\n# TYPE novacron_a gauge\nnovacron_a 1",                            // no final newline
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_describe_running_guests_and_survive_a_hung_one() {
    let env = Env::new();
    let d = env.start_daemon("");
    let s = &d.socket;

    let m = scrape(s);
    assert_eq!(m.value("novacron_up", &[]), Some(1.0));
    assert_eq!(m.value("novacron_domains", &[]), Some(0.0));
    assert_eq!(m.value("novacron_problems", &[]), Some(0.0));
    assert_eq!(
        m.value(
            "novacron_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(m.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(m.value("process_open_fds", &[]).unwrap() > 0.0);

    start(s, "m1");
    start(s, "m2");
    let r = curl(s, "POST", "/v1/domains/m1/suspend", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(s, "POST", "/v1/domains/m1/resume", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(s, "POST", "/v1/domains/nope/start", &[]);
    assert_eq!(r.status, 404);

    let m = scrape(s);
    assert_eq!(m.value("novacron_domains", &[]), Some(2.0));
    for name in ["m1", "m2"] {
        for (labels, v) in m.series("novacron_domain_state") {
            if labels.contains(&("domain".into(), name.into())) {
                let running = labels.contains(&("state".into(), "running".into()));
                assert_eq!(v, if running { 1.0 } else { 0.0 }, "{labels:?}");
            }
        }
        assert_eq!(
            m.series("novacron_domain_state")
                .iter()
                .filter(|(l, _)| l.contains(&("domain".into(), name.into())))
                .count(),
            novacron_domain::DomainState::ALL.len()
        );
        assert!(
            m.value("novacron_domain_memory_rss_bytes", &[("domain", name)])
                .unwrap()
                > 1e6
        );
        let info = m
            .series("novacron_domain_info")
            .into_iter()
            .find(|(l, _)| l.contains(&("domain".into(), name.into())))
            .expect("domain info");
        assert!(
            info.0.iter().any(|(k, v)| k == "uuid" && v.len() == 36),
            "{info:?}"
        );
    }
    assert_eq!(
        m.value(
            "novacron_operations_total",
            &[("op", "start"), ("result", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.value(
            "novacron_operations_total",
            &[("op", "suspend"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "novacron_operations_total",
            &[("op", "start"), ("result", "not_found")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "novacron_operation_duration_seconds_count",
            &[("op", "start"), ("result", "ok")]
        ),
        Some(2.0)
    );
    assert!(
        m.value(
            "novacron_operation_duration_seconds_sum",
            &[("op", "start"), ("result", "ok")]
        )
        .unwrap()
            > 0.0
    );

    // vCPU time: positive, and growing while the guest runs (SeaBIOS keeps its vCPU busy
    // enough under TCG; under KVM an idle vCPU may halt, so allow a few seconds).
    let vcpu = |m: &Exposition| {
        m.value(
            "novacron_domain_vcpu_seconds_total",
            &[("domain", "m2"), ("vcpu", "0")],
        )
        .expect("vcpu 0 of m2")
    };
    // /proc counts in 10 ms ticks: a KVM guest fresh out of SeaBIOS may show 0 yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut values = vec![vcpu(&m)];
    while values.iter().filter(|&&v| v > 0.0).count() < 2 || values[values.len() - 1] <= values[0] {
        assert!(
            Instant::now() < deadline,
            "vCPU seconds not growing: {values:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let now = vcpu(&scrape(s));
        assert!(
            now >= values[values.len() - 1],
            "vCPU seconds went back: {values:?} -> {now}"
        );
        values.push(now);
    }

    // A hung QEMU (SIGSTOP: QMP never answers) must not stall the scrape nor hide m2.
    let hung = recorded_pid(&env, "m1");
    signal(hung, nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    let m = scrape(s);
    let took = started.elapsed();
    signal(hung, nix::sys::signal::Signal::SIGCONT);
    assert!(
        took < Duration::from_secs(4),
        "scrape took {took:?} with a hung guest"
    );
    assert!(m
        .value(
            "novacron_domain_vcpu_seconds_total",
            &[("domain", "m1"), ("vcpu", "0")]
        )
        .is_none());
    assert!(m
        .value("novacron_domain_memory_rss_bytes", &[("domain", "m1")])
        .is_some());
    assert_eq!(
        m.value(
            "novacron_domain_state",
            &[("domain", "m1"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert!(
        m.value("novacron_scrape_errors_total", &[("domain", "m1")])
            .unwrap()
            >= 1.0
    );
    assert!(vcpu(&m) > 0.0, "m2 must still be reported");
    assert!(m
        .value("novacron_scrape_errors_total", &[("domain", "m2")])
        .is_none());

    // Once continued, m1 answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(s)
        .value(
            "novacron_domain_vcpu_seconds_total",
            &[("domain", "m1"), ("vcpu", "0")],
        )
        .is_none()
    {
        assert!(Instant::now() < deadline, "m1 never answered again");
        std::thread::sleep(Duration::from_millis(200));
    }

    let r = curl(s, "POST", "/v1/domains/m1/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = scrape(s);
    assert_eq!(
        m.value(
            "novacron_domain_state",
            &[("domain", "m1"), ("state", "shutoff")]
        ),
        Some(1.0)
    );
    assert!(m
        .value("novacron_domain_memory_rss_bytes", &[("domain", "m1")])
        .is_none());
}
