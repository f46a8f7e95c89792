//! The monitoring files shipped in monitoring/: the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), the Grafana dashboard
//! matches its schema, and every metric either names is one a running novacrond exports
//! (scraped here, not listed by hand).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::curl;
use common::*;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

/// promtool from Debian's prometheus package: on PATH, or unpacked alone into the test cache by
/// `./quickstart.sh test`. Mandatory: a missing promtool fails.
fn promtool(args: &[&str], dir: &Path) -> String {
    let cached = novacron_tests::cache_dir().join("promtool/usr/bin/promtool");
    let program = if cached.exists() {
        cached
    } else {
        "promtool".into()
    };
    let out = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool ({}) is needed: {e}", program.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    let dir = monitoring().join("prometheus");
    let said = promtool(&["check", "rules", "novacron-alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 5 rules found"), "{said}");
    promtool(&["test", "rules", "novacron-alerts.test.yml"], &dir);
}

/// Every family a running daemon exports, with a histogram's series names.
fn exported() -> BTreeSet<String> {
    let env = Env::new();
    let daemon = env.start_daemon("");
    let r = curl(&daemon.socket, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut names = BTreeSet::new();
    for line in r.body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE line");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name.to_owned());
    }
    names
}

/// The metric names in a PromQL expression: identifiers outside label matchers, strings,
/// ranges and grouping lists (`by (...)`, `without (...)`), that are neither function calls
/// nor keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let mut plain = Vec::new();
    let mut skip_to: Option<char> = None;
    for c in expr.chars() {
        match (skip_to, c) {
            (Some(close), c) if c == close => skip_to = None,
            (Some(_), _) => {}
            (None, '{') => skip_to = Some('}'),
            (None, '[') => skip_to = Some(']'),
            (None, '"') => skip_to = Some('"'),
            (None, c) => plain.push(c),
        }
    }
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let next_non_space = |from: usize| {
        plain[from..]
            .iter()
            .position(|c| !c.is_whitespace())
            .map(|k| from + k)
    };
    let mut names = Vec::new();
    let mut j = 0;
    while j < plain.len() {
        let c = plain[j];
        if c.is_ascii_digit() || c == '.' || c == '$' {
            // Numbers (0.95, 1e3) and variables are no names.
            while j < plain.len() && (word_char(plain[j]) || plain[j] == '.' || plain[j] == '$') {
                j += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            j += 1;
            continue;
        }
        let start = j;
        while j < plain.len() && word_char(plain[j]) {
            j += 1;
        }
        let word: String = plain[start..j].iter().collect();
        let paren = next_non_space(j).filter(|&k| plain[k] == '(');
        let grouping = [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ];
        if grouping.contains(&word.as_str()) {
            if let Some(k) = paren {
                // Skip the label list.
                j = plain[k..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(plain.len(), |e| k + e + 1);
            }
            continue;
        }
        // Aggregations may take their grouping before the parenthesis: `sum by (x) (...)`.
        let keyword = [
            "and",
            "or",
            "unless",
            "bool",
            "offset",
            "sum",
            "min",
            "max",
            "avg",
            "count",
            "group",
            "stddev",
            "stdvar",
            "topk",
            "bottomk",
            "quantile",
            "count_values",
        ]
        .contains(&word.as_str());
        if paren.is_none() && !keyword {
            names.push(word);
        }
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            r#"sum by (domain) (rate(novacron_a_total{domain=~"$domain"}[$__rate_interval])) / novacron_b"#
        ),
        ["novacron_a_total", "novacron_b"]
    );
    assert_eq!(
        metric_names("histogram_quantile(0.95, sum by (le, op) (rate(x_bucket[5m])))"),
        ["x_bucket"]
    );
    assert_eq!(
        metric_names("absent(novacron_up) or novacron_up == 0"),
        ["novacron_up", "novacron_up"]
    );
}

#[test]
fn dashboard_and_rules_name_only_metrics_the_daemon_exports() {
    let dir = monitoring();
    let text = std::fs::read_to_string(dir.join("grafana/novacron.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/dashboard.schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&dashboard)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "dashboard does not match its schema: {errors:#?}"
    );

    let exported = exported();
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64()),
            "panel id used twice: {title}"
        );
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push((
                format!("panel {title:?}"),
                t["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let rules = std::fs::read_to_string(dir.join("prometheus/novacron-alerts.yml")).expect("rules");
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            exprs.push(("alert rules".to_owned(), expr.to_owned()));
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    let mut unknown = Vec::new();
    for (place, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            if !exported.contains(&name) {
                unknown.push(format!("{place}: {name} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the daemon does not export: {unknown:#?}\nexported: {exported:?}"
    );
}
