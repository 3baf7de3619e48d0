//! nanovm half of the side-by-side benchmark against `llm-nano-vm` 0.8.9
//! (`benches/peer/compare.sh` runs both halves and prints the table).
//!
//! ```text
//! cargo run --release -p nanovm-bench --bin compare -- --json [--quick] [--runs R]
//!     [--workloads guard4,linear10,...] [--modes memory,sqlite] [--n N] [--allocs]
//! cargo run --release -p nanovm-bench --bin compare -- --print-source linear10
//! ```
//!
//! For each workload and mode: warm-up runs (each deep-checked: exact path, the exported trace
//! verifies, a replay reproduces the root hash), calibration (N runs per sample so that a sample
//! takes about 0.75 s), then R samples (default 5, 2 with `--quick`) of N back-to-back runs on
//! one current-thread tokio runtime, timed with `Instant`. Every timed run is checked (status
//! success, exact step, model-call and tool-call counts, path length); after every sample the
//! mock model's and tools' own call counters must equal N times the expected counts. A failed
//! check prints `NANOVM RUN CHECK FAILED: ...` and exits with status 1, before any number is
//! printed for that workload.
//!
//! In the `memory` mode (one run at a time) the limit is measured too: the hash-only cost of the
//! last timed run's events ([`Limit`]: canonical encoding and blake3 chaining of its entries,
//! nothing else), median of R timings; the line gets `limit_us_per_run` and `ratio_to_limit`
//! (time per run over it).
//!
//! Output with `--json`: one JSON line per workload and mode on stdout,
//! `{"side":"nanovm","mode":"memory","workload":"guard4","steps_per_run":4,
//!   "steps_per_sec":...,"runs_per_sec":...,"samples":[...],"n_per_sample":N,"concurrency":1}`
//! (median of the samples), plus, in the `sqlite` mode, `commits_per_run` (the store's own count
//! of committed transactions over the timed samples, [`SqliteStore::commits`]: each one an fsync),
//! plus `allocs_per_run` / `alloc_bytes_per_run` / `reallocs_per_run` with
//! `--allocs`. Without `--json`, a human-readable table. Progress goes to stderr.
//!
//! `--allocs` counts heap allocations with a counting global allocator, in a separate untimed
//! pass after the samples (the allocator is always installed; while not counting it costs one
//! relaxed atomic load per allocation).
//!
//! The `sqlite` mode runs the same workloads durably: `SqliteStore` on a fresh database file in a
//! temporary directory (WAL, `synchronous=FULL`: every commit is fsynced), every run with its own
//! run id. Every effect's intent is made durable before the tool runs and its result right
//! after, and the rest of the run at its end (docs/runtime.md, "Durability"). After every sample
//! the store must hold every run started, each `success`, and the last run must reload (the
//! store re-verifies the hash chain) with the run's entries and root hash.
//!
//! `--concurrency K` keeps K runs in flight (spawned on the same current-thread runtime) instead
//! of one: with a store, their durability points share transactions and fsyncs (the SQLite
//! writer thread's group commit across runs). The JSON line says `"concurrency":K`; the main
//! table of `compare.sh` uses K = 1, like the peer, which runs one run at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nanovm::Execution;
use nanovm::store::SqliteStore;
use nanovm_bench::{Bench, Expected, Limit, Mode, Workload, sanity_checks, tokio_runtime};

// --- allocation counting -------------------------------------------------------------------------

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments; the counters are
// plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(
                new_size.saturating_sub(layout.size()) as u64,
                Ordering::Relaxed,
            );
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`: (allocations, reallocations, bytes requested).
fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, u64, u64, u64) {
    ALLOCS.store(0, Ordering::Relaxed);
    REALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        out,
        ALLOCS.load(Ordering::Relaxed),
        REALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

// --- arguments -----------------------------------------------------------------------------------

const TARGET_SAMPLE: Duration = Duration::from_millis(750);
const QUICK_TARGET_SAMPLE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModeArg {
    Memory,
    Sqlite,
}

impl ModeArg {
    fn name(self) -> &'static str {
        match self {
            ModeArg::Memory => "memory",
            ModeArg::Sqlite => "sqlite",
        }
    }
}

struct Args {
    json: bool,
    quick: bool,
    runs: usize,
    n: Option<u64>,
    allocs: bool,
    concurrency: u64,
    workloads: Vec<Workload>,
    modes: Vec<ModeArg>,
}

const USAGE: &str = "usage: compare [--json] [--quick] [--runs R] [--n N] [--allocs] \
[--concurrency K] [--workloads a,b,...] [--modes memory,sqlite] | --print-source WORKLOAD";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        json: false,
        quick: false,
        runs: 0,
        n: None,
        allocs: false,
        concurrency: 1,
        workloads: Workload::ALL.to_vec(),
        modes: vec![ModeArg::Memory, ModeArg::Sqlite],
    };
    let mut runs = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--json" => args.json = true,
            "--quick" => args.quick = true,
            "--allocs" => args.allocs = true,
            "--runs" => {
                let r: usize = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
                if r == 0 {
                    return Err("--runs must be >= 1".into());
                }
                runs = Some(r);
            }
            "--concurrency" => {
                let c: u64 = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?;
                if c == 0 {
                    return Err("--concurrency must be >= 1".into());
                }
                args.concurrency = c;
            }
            "--n" => {
                let n: u64 = value("--n")?.parse().map_err(|e| format!("--n: {e}"))?;
                if n == 0 {
                    return Err("--n must be >= 1".into());
                }
                args.n = Some(n);
            }
            "--workloads" => {
                args.workloads = value("--workloads")?
                    .split(',')
                    .filter(|w| !w.trim().is_empty())
                    .map(|w| {
                        Workload::from_name(w.trim())
                            .ok_or_else(|| format!("unknown workload `{w}`"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--modes" => {
                args.modes = value("--modes")?
                    .split(',')
                    .map(|m| match m.trim() {
                        "memory" => Ok(ModeArg::Memory),
                        "sqlite" => Ok(ModeArg::Sqlite),
                        other => Err(format!("unknown mode `{other}` (memory, sqlite)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--print-source" => {
                let name = value("--print-source")?;
                let w = Workload::from_name(&name)
                    .ok_or_else(|| format!("unknown workload `{name}`"))?;
                print!("{}", w.source());
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    args.runs = runs.unwrap_or(if args.quick { 2 } else { 5 });
    Ok(Some(args))
}

// --- measuring -----------------------------------------------------------------------------------

struct Measured {
    workload: Workload,
    mode: ModeArg,
    n: u64,
    concurrency: u64,
    samples_sps: Vec<f64>,
    samples_rps: Vec<f64>,
    allocs: Option<(f64, f64, f64)>,
    /// SQLite commits per run over the timed samples (the store's own count), `sqlite` mode.
    commits_per_run: Option<f64>,
    /// The limit, in memory mode: the hash-only cost of one run's events, seconds per run.
    limit_s_per_run: Option<f64>,
}

/// The hash-only cost of `last`'s events ([`Limit`]), seconds per run: the median of `samples`
/// timings of enough back-to-back hashes to take about 50 ms each.
fn measure_limit(last: &Execution, samples: usize) -> Result<f64, String> {
    let mut limit = Limit::of(last);
    limit.hash_checked()?;
    let mut n: u32 = 64;
    loop {
        let t0 = Instant::now();
        for _ in 0..n {
            std::hint::black_box(limit.hash());
        }
        if t0.elapsed() >= Duration::from_millis(50) {
            break;
        }
        n *= 2;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t0 = Instant::now();
        for _ in 0..n {
            std::hint::black_box(limit.hash());
        }
        times.push(t0.elapsed().as_secs_f64() / f64::from(n));
    }
    Ok(median(&times))
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs `n` checked runs back to back (or `concurrency` at a time); returns the elapsed wall
/// time and the last run to complete.
fn timed(
    tokio: &tokio::runtime::Runtime,
    bench: &Bench,
    expected: &Expected,
    n: u64,
    concurrency: u64,
) -> Result<(Duration, Execution), String> {
    if concurrency > 1 {
        return timed_concurrent(tokio, bench, expected, n, concurrency);
    }
    tokio.block_on(async {
        let t0 = Instant::now();
        let mut last = None;
        for i in 0..n {
            let e = bench
                .run_checked(expected)
                .await
                .map_err(|e| format!("run {}/{n} of a sample: {e}", i + 1))?;
            // The previous run is dropped here, inside the timed region, as the peer's is.
            last = Some(e);
        }
        let elapsed = t0.elapsed();
        Ok((elapsed, last.expect("n >= 1")))
    })
}

/// `n` runs with `concurrency` in flight at any time, all on the current-thread runtime (the
/// store's writer thread is the only other thread): what group commit across runs buys.
fn timed_concurrent(
    tokio: &tokio::runtime::Runtime,
    bench: &Bench,
    expected: &Expected,
    n: u64,
    concurrency: u64,
) -> Result<(Duration, Execution), String> {
    let w = expected.workload;
    tokio.block_on(async {
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let mut launched = 0;
        let mut last = None;
        while launched < n.min(concurrency) {
            set.spawn(bench.run_owned(w));
            launched += 1;
        }
        let mut done = 0;
        while let Some(joined) = set.join_next().await {
            done += 1;
            let run = joined.map_err(|e| format!("a run's task failed: {e}"))?;
            let e = run.map_err(|e| format!("run {done}/{n}: the run returned an error: {e}"))?;
            expected
                .check(&e)
                .map_err(|e| format!("run {done}/{n} of a sample: {e}"))?;
            last = Some(e);
            if launched < n {
                set.spawn(bench.run_owned(w));
                launched += 1;
            }
        }
        let elapsed = t0.elapsed();
        Ok((elapsed, last.expect("n >= 1")))
    })
}

/// Runs deep-checked runs until both minima are met; returns the time per run.
fn warm_up(
    tokio: &tokio::runtime::Runtime,
    bench: &Bench,
    expected: &Expected,
    min_runs: u64,
    min_time: Duration,
    total: &mut u64,
) -> Result<Duration, String> {
    tokio.block_on(async {
        let t0 = Instant::now();
        let mut runs = 0u64;
        loop {
            let e = bench.run_checked(expected).await?;
            expected.check_deep(&e)?;
            runs += 1;
            *total += 1;
            let elapsed = t0.elapsed();
            if runs >= min_runs && elapsed >= min_time {
                return Ok(elapsed / runs as u32);
            }
        }
    })
}

fn counters_check(
    bench: &Bench,
    expected: &Expected,
    before: (u64, u64),
    runs: u64,
) -> Result<(), String> {
    let (model0, tools0) = before;
    let model = bench.model_calls() - model0;
    let tools = bench.tool_calls() - tools0;
    if model != runs * expected.model_calls || tools != runs * expected.tool_calls {
        return Err(format!(
            "{}: over {runs} runs the mock model was called {model} times (expected {}) and the \
             tools {tools} times (expected {})",
            expected.workload.name(),
            runs * expected.model_calls,
            runs * expected.tool_calls
        ));
    }
    Ok(())
}

fn measure(
    args: &Args,
    tokio: &tokio::runtime::Runtime,
    bench: &Bench,
    store: Option<&SqliteStore>,
    w: Workload,
    mode: ModeArg,
) -> Result<Measured, String> {
    let expected = w.expected();
    let before = (bench.model_calls(), bench.tool_calls());
    let mut warm_runs = 0;
    let per_run = if args.quick {
        warm_up(tokio, bench, &expected, 2, Duration::ZERO, &mut warm_runs)?
    } else {
        // Discarded: first-call paths, allocator, caches.
        warm_up(
            tokio,
            bench,
            &expected,
            3,
            Duration::from_millis(300),
            &mut warm_runs,
        )?;
        // Calibration.
        warm_up(
            tokio,
            bench,
            &expected,
            2,
            Duration::from_millis(300),
            &mut warm_runs,
        )?
    };
    counters_check(bench, &expected, before, warm_runs)?;
    let per_run = if args.concurrency > 1 {
        // The sequential warm-up says nothing about the rate with many runs in flight.
        let mut n = args.concurrency * 4;
        loop {
            let before = (bench.model_calls(), bench.tool_calls());
            let (elapsed, _) = timed(tokio, bench, &expected, n, args.concurrency)?;
            counters_check(bench, &expected, before, n)?;
            if args.quick || elapsed >= Duration::from_millis(200) {
                break elapsed / n as u32;
            }
            n *= 4;
        }
    } else {
        per_run
    };
    let target = if args.quick {
        QUICK_TARGET_SAMPLE
    } else {
        TARGET_SAMPLE
    };
    let n = args.n.unwrap_or_else(|| {
        let per = per_run.as_secs_f64().max(1e-9);
        (target.as_secs_f64() / per).round().max(1.0) as u64
    });

    let steps = expected.steps as f64;
    let mut samples_sps = Vec::with_capacity(args.runs);
    let mut samples_rps = Vec::with_capacity(args.runs);
    let commits_before = store.map(SqliteStore::commits);
    let mut last_run = None;
    for _ in 0..args.runs {
        let before = (bench.model_calls(), bench.tool_calls());
        let (elapsed, last) = timed(tokio, bench, &expected, n, args.concurrency)?;
        counters_check(bench, &expected, before, n)?;
        if bench.mode() == Mode::Durable {
            tokio.block_on(bench.check_journal(&last))?;
        }
        let rps = n as f64 / elapsed.as_secs_f64();
        last_run = Some(last);
        samples_rps.push(rps);
        samples_sps.push(rps * steps);
    }
    // The store's commits during the timed samples (check_journal only reads), per run.
    let commits_per_run = store
        .zip(commits_before)
        .map(|(s, before)| (s.commits() - before) as f64 / (n * args.runs as u64) as f64);

    let limit_s_per_run = match (mode, &last_run) {
        (ModeArg::Memory, Some(last)) if args.concurrency == 1 => {
            Some(measure_limit(last, args.runs)?)
        }
        _ => None,
    };

    let allocs = if args.allocs {
        let runs = n.clamp(1, 2000);
        let before = (bench.model_calls(), bench.tool_calls());
        let (timed_out, a, r, b) =
            count_allocs(|| timed(tokio, bench, &expected, runs, args.concurrency));
        timed_out?;
        counters_check(bench, &expected, before, runs)?;
        let per = |x: u64| x as f64 / runs as f64;
        Some((per(a), per(r), per(b)))
    } else {
        None
    };

    Ok(Measured {
        workload: w,
        mode,
        n,
        concurrency: args.concurrency,
        samples_sps,
        samples_rps,
        allocs,
        commits_per_run,
        limit_s_per_run,
    })
}

fn json_line(r: &Measured) -> String {
    let w = r.workload;
    let mut fields = vec![
        ("side".to_string(), serde_json::json!("nanovm")),
        ("mode".to_string(), serde_json::json!(r.mode.name())),
        ("workload".to_string(), serde_json::json!(w.name())),
        (
            "steps_per_run".to_string(),
            serde_json::json!(w.steps_per_run()),
        ),
        (
            "steps_per_sec".to_string(),
            serde_json::json!(median(&r.samples_sps)),
        ),
        (
            "runs_per_sec".to_string(),
            serde_json::json!(median(&r.samples_rps)),
        ),
        ("samples".to_string(), serde_json::json!(r.samples_sps)),
        ("n_per_sample".to_string(), serde_json::json!(r.n)),
        ("concurrency".to_string(), serde_json::json!(r.concurrency)),
    ];
    if let Some(c) = r.commits_per_run {
        fields.push(("commits_per_run".into(), serde_json::json!(c)));
    }
    if let Some(l) = r.limit_s_per_run {
        let run_s = 1.0 / median(&r.samples_rps);
        fields.push(("limit_us_per_run".into(), serde_json::json!(l * 1e6)));
        fields.push(("ratio_to_limit".into(), serde_json::json!(run_s / l)));
    }
    if let Some((a, re, b)) = r.allocs {
        fields.push(("allocs_per_run".into(), serde_json::json!(a)));
        fields.push(("reallocs_per_run".into(), serde_json::json!(re)));
        fields.push(("alloc_bytes_per_run".into(), serde_json::json!(b)));
    }
    // serde_json's map keeps keys sorted; write the line by hand to keep the documented order.
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn progress(r: &Measured) {
    let sps = median(&r.samples_sps);
    let min = r.samples_sps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = r.samples_sps.iter().copied().fold(0.0, f64::max);
    let mut line = format!(
        "compare: {:<7}{} {:<15} steps/run={:<5} N={:<7} median {:>13.0} steps/s {:>12.1} runs/s \
         (min {min:.0}, max {max:.0}, {} samples)",
        r.mode.name(),
        if r.concurrency > 1 {
            format!(" x{}", r.concurrency)
        } else {
            String::new()
        },
        r.workload.name(),
        r.workload.steps_per_run(),
        r.n,
        sps,
        median(&r.samples_rps),
        r.samples_sps.len()
    );
    if let Some(c) = r.commits_per_run {
        line.push_str(&format!(" | {c:.2} commits/run"));
    }
    if let Some(l) = r.limit_s_per_run {
        let run_s = 1.0 / median(&r.samples_rps);
        line.push_str(&format!(
            " | limit {:.2} µs/run (hash only), {:.2}× it",
            l * 1e6,
            run_s / l
        ));
    }
    if let Some((a, re, b)) = r.allocs {
        line.push_str(&format!(
            " | {a:.1} allocs + {re:.1} reallocs, {b:.0} bytes per run ({:.2} allocs/step)",
            (a + re) / r.workload.steps_per_run() as f64
        ));
    }
    eprintln!("{line}");
}

// --- modes ---------------------------------------------------------------------------------------

/// A bench for the mode (and the temporary directory its database lives in).
fn bench_for(
    tokio: &tokio::runtime::Runtime,
    mode: ModeArg,
) -> Result<(Bench, Option<tempfile::TempDir>, Option<SqliteStore>), String> {
    match mode {
        ModeArg::Memory => Ok((Bench::memory(), None, None)),
        ModeArg::Sqlite => {
            // A fresh database file per workload, on the disk that holds the temp directory
            // (`TMPDIR`; not tmpfs on the reference machine), WAL and synchronous=FULL as
            // SqliteStore configures every database, default options (group commit across
            // runs, which a sequential benchmark never triggers: one run is in flight at a
            // time, so every durability point is its own transaction and fsync).
            let dir = tempfile::Builder::new()
                .prefix("nanovm-bench-")
                .tempdir()
                .map_err(|e| format!("a temp dir for the database: {e}"))?;
            let path = dir.path().join("journal.sqlite");
            let store = tokio
                .block_on(SqliteStore::open(&path))
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            Ok((Bench::durable(store.clone()), Some(dir), Some(store)))
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let tokio = tokio_runtime();
    eprintln!(
        "compare: nanovm {} | runs={} quick={} | release={} | {} mode(s), {} workload(s)",
        env!("CARGO_PKG_VERSION"),
        args.runs,
        args.quick,
        !cfg!(debug_assertions),
        args.modes.len(),
        args.workloads.len()
    );
    if cfg!(debug_assertions) {
        eprintln!("compare: WARNING: a debug build; numbers are not meaningful (use --release)");
    }
    if let Err(e) = sanity_checks(&tokio) {
        eprintln!("compare: NANOVM RUN CHECK FAILED: {e}");
        return ExitCode::FAILURE;
    }
    let mut results = Vec::new();
    for &mode in &args.modes {
        for &w in &args.workloads {
            // A fresh store (and file) per workload, so one workload's journal does not slow
            // the next one down.
            let (bench, scratch, store) = match bench_for(&tokio, mode) {
                Ok(b) => b,
                Err(why) => {
                    eprintln!("compare: skipping mode {}: {why}", mode.name());
                    break;
                }
            };
            let r = match measure(&args, &tokio, &bench, store.as_ref(), w, mode) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "compare: NANOVM RUN CHECK FAILED: {} {}: {e}",
                        mode.name(),
                        w.name()
                    );
                    return ExitCode::FAILURE;
                }
            };
            drop(bench);
            drop(store);
            drop(scratch);
            progress(&r);
            if args.json {
                println!("{}", json_line(&r));
            }
            results.push(r);
        }
    }
    if !args.json {
        println!("| mode | workload | steps/run | steps/s | runs/s |");
        println!("|---|---|---:|---:|---:|");
        for r in &results {
            println!(
                "| {} | {} | {} | {:.0} | {:.1} |",
                r.mode.name(),
                r.workload.name(),
                r.workload.steps_per_run(),
                median(&r.samples_sps),
                median(&r.samples_rps)
            );
        }
    }
    ExitCode::SUCCESS
}
