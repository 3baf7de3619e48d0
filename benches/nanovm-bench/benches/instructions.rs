//! Instruction counts of one in-memory run of `guard4` and of `linear100` (gungraun, callgrind):
//! exact and repeatable where wall-clock throughput is noisy, so a change to the executor's hot
//! path shows up as a number of instructions, not a percentage lost in noise.
//!
//! ```sh
//! cargo install gungraun-runner --version 0.20.0                         # once (~4 min)
//! cargo bench -p nanovm-bench --bench instructions                        # run, compare to the last run
//! cargo bench -p nanovm-bench --bench instructions -- --save-baseline=main
//! cargo bench -p nanovm-bench --bench instructions -- --baseline=main     # compare to it
//! ```
//!
//! What is measured is exactly one `Runtime::run` of the compiled program, driven to completion
//! by `block_on` on a current-thread tokio runtime. Everything else is outside the measured
//! function: `setup` builds the tokio runtime, the nanovm runtime, the mock model and tools and
//! does warm-up runs (lazy statics, first-call paths, allocator pools); `teardown` checks the
//! run (status, steps, calls, path) and drops it.
//!
//! `observed_run` is `one_run` with a streaming observer on the runtime
//! (`RuntimeBuilder::observer`): each entry, as it is chained, cloned with its run id into a
//! channel, as a server's live stream would consume it (the channel is drained outside the
//! measurement).
//!
//! `limit` is the floor for the same runs: the hash-only cost of one run's events
//! ([`nanovm_bench::Limit`]: canonical encoding and blake3 chaining of every trace entry, as the
//! run did, nothing else). `one_run` over `limit` is how much of a run is overhead outside the
//! hash.

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use nanovm::Execution;
use nanovm_bench::{Bench, Expected, Limit, Workload, tokio_runtime};

/// What the measured function needs, built and warmed up outside the measurement.
struct Ready {
    tokio: tokio::runtime::Runtime,
    bench: Bench,
    expected: Expected,
    /// The streaming observer's channel, if the runtime has one.
    stream: Option<std::sync::mpsc::Receiver<(String, nanovm::trace::Entry)>>,
}

/// A streaming observer: every entry, with its run id, into a channel.
struct Stream(std::sync::Mutex<std::sync::mpsc::Sender<(String, nanovm::trace::Entry)>>);

impl nanovm_runtime::Observer for Stream {
    fn entry(&self, run_id: &str, entry: &nanovm::trace::Entry) {
        let tx = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = tx.send((run_id.to_string(), entry.clone()));
    }
}

const WARM_UP_RUNS: usize = 3;

fn prepare(w: Workload) -> Ready {
    warm(w, Bench::memory(), None)
}

fn prepare_observed(w: Workload) -> Ready {
    let (tx, rx) = std::sync::mpsc::channel();
    warm(
        w,
        Bench::memory_observed(Stream(std::sync::Mutex::new(tx))),
        Some(rx),
    )
}

fn warm(
    w: Workload,
    bench: Bench,
    stream: Option<std::sync::mpsc::Receiver<(String, nanovm::trace::Entry)>>,
) -> Ready {
    let tokio = tokio_runtime();
    let expected = w.expected();
    for _ in 0..WARM_UP_RUNS {
        let e = tokio
            .block_on(bench.run_checked(&expected))
            .unwrap_or_else(|e| panic!("{e}"));
        expected.check_deep(&e).unwrap_or_else(|e| panic!("{e}"));
    }
    if let Some(rx) = &stream {
        assert!(
            rx.try_iter().count() > 0,
            "the observer saw the warm-up runs"
        );
    }
    Ready {
        tokio,
        bench,
        expected,
        stream,
    }
}

fn verify((ready, run): (Ready, Result<Execution, nanovm::RunError>)) {
    let w = ready.expected.workload;
    let e = run.unwrap_or_else(|e| panic!("{}: the run returned an error: {e}", w.name()));
    ready.expected.check(&e).unwrap_or_else(|e| panic!("{e}"));
    if let Some(rx) = &ready.stream {
        let seen = rx.try_iter().count();
        assert_eq!(
            seen,
            e.trace.len(),
            "the observer saw each entry of the run once"
        );
    }
}

// One run. The context is handed back so that dropping it is not measured; the execution
// (trace and all) is handed back too, so its drop is not measured either.
#[library_benchmark]
#[bench::guard4(args = (Workload::Guard4), setup = prepare, teardown = verify)]
#[bench::linear100(args = (Workload::Linear100), setup = prepare, teardown = verify)]
fn one_run(ready: Ready) -> (Ready, Result<Execution, nanovm::RunError>) {
    let w = black_box(ready.expected.workload);
    let run = ready.tokio.block_on(ready.bench.run(w));
    (ready, black_box(run))
}

// One run with a streaming observer.
#[library_benchmark]
#[bench::guard4(args = (Workload::Guard4), setup = prepare_observed, teardown = verify)]
#[bench::linear100(args = (Workload::Linear100), setup = prepare_observed, teardown = verify)]
fn observed_run(ready: Ready) -> (Ready, Result<Execution, nanovm::RunError>) {
    let w = black_box(ready.expected.workload);
    let run = ready.tokio.block_on(ready.bench.run(w));
    (ready, black_box(run))
}

fn prepare_limit(w: Workload) -> Limit {
    let ready = prepare(w);
    let e = ready
        .tokio
        .block_on(ready.bench.run_checked(&ready.expected))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut limit = Limit::of(&e);
    limit.hash_checked().unwrap_or_else(|e| panic!("{e}"));
    limit
}

// The hash chain of one run's events, and nothing else.
#[library_benchmark]
#[bench::guard4(args = (Workload::Guard4), setup = prepare_limit)]
#[bench::linear100(args = (Workload::Linear100), setup = prepare_limit)]
fn limit(mut limit: Limit) -> nanovm::Digest {
    black_box(limit.hash())
}

library_benchmark_group!(name = runs, benchmarks = [one_run, observed_run, limit]);

main!(library_benchmark_groups = runs);
