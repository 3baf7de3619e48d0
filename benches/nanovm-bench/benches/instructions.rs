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
}

const WARM_UP_RUNS: usize = 3;

fn prepare(w: Workload) -> Ready {
    let tokio = tokio_runtime();
    let bench = Bench::memory();
    let expected = w.expected();
    for _ in 0..WARM_UP_RUNS {
        let e = tokio
            .block_on(bench.run_checked(&expected))
            .unwrap_or_else(|e| panic!("{e}"));
        expected.check_deep(&e).unwrap_or_else(|e| panic!("{e}"));
    }
    Ready {
        tokio,
        bench,
        expected,
    }
}

fn verify((ready, run): (Ready, Result<Execution, nanovm::RunError>)) {
    let w = ready.expected.workload;
    let e = run.unwrap_or_else(|e| panic!("{}: the run returned an error: {e}", w.name()));
    ready.expected.check(&e).unwrap_or_else(|e| panic!("{e}"));
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

library_benchmark_group!(name = runs, benchmarks = [one_run, limit]);

main!(library_benchmark_groups = runs);
