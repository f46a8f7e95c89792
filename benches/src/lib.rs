//! Shared helpers for the benchmarks in `benches/benches`: latency statistics and table output.
//! Every benchmark prints its figures beside a baseline measured in the same run.

pub mod daemon;
pub mod http;

use std::time::Duration;

/// Summary of one measured run.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub calls: usize,
    pub median: Duration,
    pub p99: Duration,
    pub per_second: f64,
}

impl Stats {
    /// From per-call latencies (any order) and the wall time of the whole run.
    pub fn from_latencies(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(i).copied().unwrap_or_default()
        };
        Stats {
            calls: latencies.len(),
            median: at(0.5),
            p99: at(0.99),
            per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        }
    }
}

/// Prints `rows` as an aligned table: name, ours, baseline, ratio (ours / baseline).
pub fn print_table(title: &str, rows: &[(&str, f64, f64, f64)]) {
    println!("\n{title}");
    println!(
        "{:<24} {:>12} {:>12} {:>8}",
        "metric", "novacron", "baseline", "ratio"
    );
    for (name, ours, base, ratio) in rows {
        println!("{name:<24} {ours:>12.1} {base:>12.1} {ratio:>7.2}x");
    }
}

/// Median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        // An even count has two middles: their mean (taking the upper one made a "median of
        // two" the larger sample).
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

/// Interleaved rounds: each round holds the same `N` runs (ours and the baselines) measured
/// one after the other, so a slow moment of the machine hits both sides of a comparison.
pub struct Rounds<const N: usize>(pub Vec<[Stats; N]>);

impl<const N: usize> Rounds<N> {
    /// `f` of run `i`, the median over rounds.
    pub fn figure(&self, i: usize, f: fn(&Stats) -> f64) -> f64 {
        median(self.0.iter().map(|r| f(&r[i])).collect())
    }

    /// The median over rounds of the per-round ratio `f(run a) / f(run b)`.
    pub fn ratio(&self, a: usize, b: usize, f: fn(&Stats) -> f64) -> f64 {
        median(self.0.iter().map(|r| f(&r[a]) / f(&r[b])).collect())
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
