//! Throughput of the peer-shaped workloads (see the crate docs), compiled from `.nvm`, in memory,
//! every event hashed into the trace, one run per iteration on a current-thread tokio runtime.
//!
//! ```sh
//! cargo bench -p nanovm-bench --bench workloads            # all
//! cargo bench -p nanovm-bench --bench workloads -- guard4  # a filter
//! ```
//!
//! Criterion reports the time per run and the throughput in steps/s
//! (`Throughput::Elements(steps per run)`); after the run a summary prints runs/s and steps/s
//! of each workload from criterion's estimates. Every measured run is checked (status,
//! steps, calls, path length): a broken run panics instead of producing a number.
//!
//! The `limit` group measures, for each workload, the hash-only cost of one run's events
//! ([`nanovm_bench::Limit`]: the canonical encoding and blake3 chaining of its trace entries,
//! nothing else); the summary prints each workload's time per run over it (1.00× would be a
//! run that costs only its hash chain).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput};
use nanovm_bench::{Bench, Limit, Workload, tokio_runtime};

const GROUP: &str = "workloads";
const LIMIT: &str = "limit";

fn workloads(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let bench = Bench::memory();
    let mut g = c.benchmark_group(GROUP);
    for w in Workload::ALL {
        let expected = w.expected();
        // Deep check once: exact path, the exported trace verifies, a replay agrees.
        let e = tokio
            .block_on(bench.run_checked(&expected))
            .unwrap_or_else(|e| panic!("{e}"));
        expected.check_deep(&e).unwrap_or_else(|e| panic!("{e}"));

        g.throughput(Throughput::Elements(w.steps_per_run()));
        g.bench_function(w.name(), |b| {
            b.iter(|| {
                let e = tokio
                    .block_on(bench.run_checked(&expected))
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(e)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(LIMIT);
    for w in Workload::ALL {
        let e = tokio
            .block_on(bench.run_checked(&w.expected()))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut limit = Limit::of(&e);
        limit
            .hash_checked()
            .unwrap_or_else(|e| panic!("{}: {e}", w.name()));
        g.throughput(Throughput::Elements(w.steps_per_run()));
        g.bench_function(w.name(), |b| b.iter(|| black_box(limit.hash())));
    }
    g.finish();
}

/// Where criterion writes its estimates (the same rule criterion uses, made explicit).
fn output_directory() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("criterion"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion"),
    }
}

/// The time per run (ns) criterion estimated for a workload: the estimate criterion prints
/// (the slope of its linear sampling, or the mean when it sampled flat).
fn estimate_ns(dir: &Path, group: &str, w: Workload) -> Option<f64> {
    let path = dir.join(group).join(w.name()).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

fn main() {
    let dir = output_directory();
    let started = std::time::SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    workloads(&mut c);
    c.final_summary();

    // A summary of this invocation's estimates (skip workloads a filter left out).
    let fresh = |w: Workload| {
        let p = dir.join(GROUP).join(w.name()).join("new/estimates.json");
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    };
    let rows: Vec<_> = Workload::ALL
        .into_iter()
        .filter(|&w| fresh(w))
        .filter_map(|w| estimate_ns(&dir, GROUP, w).map(|ns| (w, ns)))
        .collect();
    if !rows.is_empty() {
        println!(
            "\n| workload | steps/run | time/run | runs/s | steps/s | limit/run (hash only) | ratio to the limit |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (w, ns) in rows {
            let rps = 1e9 / ns;
            let (limit, ratio) = match estimate_ns(&dir, LIMIT, w) {
                Some(l) => (format!("{:.2} µs", l / 1e3), format!("{:.2}×", ns / l)),
                None => ("—".into(), "—".into()),
            };
            println!(
                "| {} | {} | {:.2} µs | {:.0} | {:.0} | {limit} | {ratio} |",
                w.name(),
                w.steps_per_run(),
                ns / 1e3,
                rps,
                rps * w.steps_per_run() as f64
            );
        }
    }
}
