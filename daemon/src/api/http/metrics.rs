//! `GET /metrics`: the service's [`Metrics`] in the Prometheus text exposition format 0.0.4.
//! Rendering only; what is measured and how lives in `service::metrics`.

use std::fmt::{Display, Write};

use novacron_domain::DomainState;

use crate::service::metrics::{Metrics, DURATION_BUCKETS};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(m: &Metrics) -> String {
    let mut out = Out(String::with_capacity(4096 + m.domains.len() * 2048));

    out.family("novacron_up", "gauge", "1 while the daemon serves.");
    out.sample("novacron_up", &[], 1);
    out.family(
        "novacron_build_info",
        "gauge",
        "The daemon's version, as a label; always 1.",
    );
    out.sample("novacron_build_info", &[("version", m.version)], 1);
    out.family("novacron_domains", "gauge", "Domains known to the daemon.");
    out.sample("novacron_domains", &[], m.domains.len());
    out.family(
        "novacron_problems",
        "gauge",
        "Files in the state or run directories the daemon could not use.",
    );
    out.sample("novacron_problems", &[], m.problems);
    out.family(
        "novacron_scrape_errors_total",
        "counter",
        "Guest queries that failed or timed out while collecting metrics.",
    );
    for (domain, n) in &m.scrape_errors {
        out.sample("novacron_scrape_errors_total", &[("domain", domain)], n);
    }
    out.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
    );
    if let Some(rss) = m.process.resident_memory_bytes {
        out.sample("process_resident_memory_bytes", &[], rss);
    }
    out.family(
        "process_open_fds",
        "gauge",
        "Open file descriptors of the daemon.",
    );
    if let Some(fds) = m.process.open_fds {
        out.sample("process_open_fds", &[], fds);
    }

    out.family(
        "novacron_operations_total",
        "counter",
        "Operations finished, by operation and result (ok or an error code).",
    );
    for o in &m.operations {
        out.sample(
            "novacron_operations_total",
            &[("op", o.op), ("result", o.result)],
            o.count,
        );
    }
    out.family(
        "novacron_operation_duration_seconds",
        "histogram",
        "How long operations took.",
    );
    for o in &m.operations {
        let labels = [("op", o.op), ("result", o.result)];
        for (bound, n) in DURATION_BUCKETS.iter().zip(o.buckets) {
            let le = bound.to_string();
            out.sample(
                "novacron_operation_duration_seconds_bucket",
                &[labels[0], labels[1], ("le", &le)],
                n,
            );
        }
        out.sample(
            "novacron_operation_duration_seconds_bucket",
            &[labels[0], labels[1], ("le", "+Inf")],
            o.count,
        );
        out.sample(
            "novacron_operation_duration_seconds_sum",
            &labels,
            o.sum_seconds,
        );
        out.sample(
            "novacron_operation_duration_seconds_count",
            &labels,
            o.count,
        );
    }

    out.family(
        "novacron_domain_info",
        "gauge",
        "One series per domain carrying its uuid; always 1.",
    );
    for d in &m.domains {
        let uuid = d.uuid.as_deref().unwrap_or("");
        out.sample(
            "novacron_domain_info",
            &[("domain", &d.name), ("uuid", uuid)],
            1,
        );
    }
    out.family(
        "novacron_domain_state",
        "gauge",
        "1 for the state the domain is in, 0 for the others.",
    );
    for d in &m.domains {
        for s in DomainState::ALL {
            out.sample(
                "novacron_domain_state",
                &[("domain", &d.name), ("state", s.as_str())],
                u8::from(s == d.state),
            );
        }
    }
    out.family(
        "novacron_domain_vcpu_seconds_total",
        "counter",
        "CPU time (user + system, guest time included) of each vCPU thread.",
    );
    for d in &m.domains {
        for (vcpu, secs) in &d.vcpu_seconds {
            let vcpu = vcpu.to_string();
            out.sample(
                "novacron_domain_vcpu_seconds_total",
                &[("domain", &d.name), ("vcpu", &vcpu)],
                secs,
            );
        }
    }
    out.family(
        "novacron_domain_memory_rss_bytes",
        "gauge",
        "Resident memory of the domain's QEMU process.",
    );
    for d in &m.domains {
        if let Some(rss) = d.rss_bytes {
            out.sample(
                "novacron_domain_memory_rss_bytes",
                &[("domain", &d.name)],
                rss,
            );
        }
    }
    out.family(
        "novacron_domain_balloon_bytes",
        "gauge",
        "Current memory of the guest as set by its balloon device.",
    );
    for d in &m.domains {
        if let Some(b) = d.balloon_bytes {
            out.sample("novacron_domain_balloon_bytes", &[("domain", &d.name)], b);
        }
    }
    type Field = fn(&crate::service::metrics::BlockCounters) -> f64;
    let block: [(&str, &str, Field); 8] = [
        ("read_bytes_total", "Bytes read", |b| b.read_bytes as f64),
        ("write_bytes_total", "Bytes written", |b| {
            b.write_bytes as f64
        }),
        ("read_operations_total", "Read requests", |b| {
            b.read_ops as f64
        }),
        ("write_operations_total", "Write requests", |b| {
            b.write_ops as f64
        }),
        ("flush_operations_total", "Flush requests", |b| {
            b.flush_ops as f64
        }),
        ("read_seconds_total", "Time spent on reads", |b| {
            b.read_seconds
        }),
        ("write_seconds_total", "Time spent on writes", |b| {
            b.write_seconds
        }),
        ("flush_seconds_total", "Time spent on flushes", |b| {
            b.flush_seconds
        }),
    ];
    for (suffix, help, field) in block {
        let name = format!("novacron_domain_block_{suffix}");
        out.family(&name, "counter", &format!("{help} by the block device."));
        for d in &m.domains {
            for b in &d.block {
                out.sample(
                    &name,
                    &[("domain", &d.name), ("device", &b.device)],
                    field(b),
                );
            }
        }
    }
    out.0
}

/// The host's memory and the remote hosts' breakers (see `service::host_metrics`), rendered
/// after [`render`]'s families.
pub fn render_host(h: &crate::service::host_metrics::HostMetrics) -> String {
    use novacron_remote_drivers::breaker::BreakerState;
    let mut out = Out(String::with_capacity(1024));
    out.family(
        "novacron_host_memory_bytes",
        "gauge",
        "The host's memory (MemTotal).",
    );
    if let Some(v) = h.memory_bytes {
        out.sample("novacron_host_memory_bytes", &[], v);
    }
    out.family(
        "novacron_host_memory_available_bytes",
        "gauge",
        "Memory available for new work without swapping (MemAvailable).",
    );
    if let Some(v) = h.memory_available_bytes {
        out.sample("novacron_host_memory_available_bytes", &[], v);
    }
    out.family(
        "novacron_remote_host_breaker_state",
        "gauge",
        "1 for the remote host's circuit breaker state (open: read-only, answering from its last inventory).",
    );
    for (host, driver, breaker) in &h.remote {
        for (state, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
        ] {
            out.sample(
                "novacron_remote_host_breaker_state",
                &[("host", host), ("driver", driver), ("state", name)],
                u8::from(*breaker == state),
            );
        }
    }
    out.0
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::metrics::{DomainMetrics, ProcessStats};

    #[test]
    fn renders_families_once_with_escaped_labels() {
        let m = Metrics {
            version: "0.1.0",
            domains: vec![DomainMetrics {
                name: "a\"b\\c".into(),
                uuid: None,
                state: DomainState::Running,
                vcpu_seconds: vec![(0, 1.5)],
                rss_bytes: Some(4096),
                balloon_bytes: None,
                block: Vec::new(),
            }],
            problems: 0,
            operations: Vec::new(),
            scrape_errors: Vec::new(),
            process: ProcessStats::default(),
        };
        let text = render(&m);
        assert!(
            text.contains("novacron_domain_state{domain=\"a\\\"b\\\\c\",state=\"running\"} 1\n")
        );
        assert!(text.contains("novacron_domain_state{domain=\"a\\\"b\\\\c\",state=\"paused\"} 0\n"));
        assert!(text.contains(
            "novacron_domain_vcpu_seconds_total{domain=\"a\\\"b\\\\c\",vcpu=\"0\"} 1.5\n"
        ));
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
    }
}
