//! Journal store throughput: what durability costs.
//!
//! - `store/effect_steps/{memory,sqlite,postgres}`: whole runs of a linear program of 20
//!   idempotent `effect` steps, steps per second. Each step's intent is made durable before the
//!   call, with the previous step's result; the last result goes with the end and the lease's
//!   release: 21 durable writes per run. Before timing, one run through a counting wrapper prints
//!   the store writes it made (`durable writes per run`), and on SQLite the store's own count of
//!   commits (`SqliteStore::commits`), so a regression in the number of syncs shows.
//! - `store/effect_steps_concurrent/{store}/8`: 8 such runs at once on a multi-threaded runtime.
//! - `store/append/{memory,sqlite,postgres}`: raw one-entry appends to one run, appends/s.
//! - `store/concurrent_appends/{store}/{1,4,16}`: that many tasks appending one entry at a time
//!   to their own runs, total appends/s.
//!
//! `sqlite` is a file with WAL and `synchronous=FULL` (every commit fsynced) in Cargo's
//! benchmark temp directory (on disk, not tmpfs), with group commit across runs (the writer
//! thread coalesces queued appends, `max_batch` 64); `sqlite_nogc` is the same with
//! `max_batch` 1 (one transaction and one fsync per append). PostgreSQL runs when
//! `DATABASE_URL` is set (`eval "$(.ci/postgres.sh)"`), in a schema of its own.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nanovm_runtime::__private_v0_1::{
    Action, Budget, Fault, Next, Outcome, Program, ProgramInfo, StepId, StepInfo, StepKind,
    ToolCall, ToolInfo,
};
use nanovm_runtime::store::{
    Fence, JournalError, JournalStore, Lease, MemoryStore, RunQuery, RunRecord,
};
use nanovm_runtime::store::{SqliteOptions, SqliteStore};
use nanovm_runtime::trace::Datum;
use nanovm_runtime::trace::Encoder;
use nanovm_runtime::trace::{Entry, Event, RunStatus, Trace};
use nanovm_runtime::{BoxFuture, ToolContext, ToolError};
use nanovm_runtime::{Digest, Json};
use nanovm_runtime::{RunOptions, Runtime};

/// Steps per run.
const STEPS: usize = 20;

// --- a linear program of effect steps --------------------------------------------------------

pub trait EffectTools: Send + Sync + 'static {
    fn call(&self, i: u32, key: Digest) -> BoxFuture<'static, Result<Json, ToolError>>;
}

struct Instantly;

impl EffectTools for Instantly {
    fn call(&self, i: u32, _key: Digest) -> BoxFuture<'static, Result<Json, ToolError>> {
        Box::pin(std::future::ready(Ok(Json::from(i))))
    }
}

pub struct Work(u32);

impl ToolCall for Work {
    fn tool(&self) -> usize {
        0
    }

    fn args(&self) -> Vec<(&'static str, Datum)> {
        vec![("i", Datum::Plain(Json::from(self.0)))]
    }
}

struct Effects;

static INFO: LazyLock<ProgramInfo> = LazyLock::new(|| {
    let mut steps: Vec<StepInfo> = (0..STEPS)
        .map(|i| StepInfo {
            name: Box::leak(format!("e{i}").into_boxed_str()),
            kind: StepKind::Call,
            retry: 0,
            parallel: None,
        })
        .collect();
    steps.push(StepInfo {
        name: "end",
        kind: StepKind::End,
        retry: 0,
        parallel: None,
    });
    ProgramInfo {
        name: "effects",
        hash: Digest([0xef; 32]),
        budget: Budget::default(),
        inputs: &[],
        tools: &[ToolInfo {
            name: "charge",
            effect: true,
            idempotent: true,
        }],
        steps: Box::leak(steps.into_boxed_slice()),
        start: 0,
    }
});

impl Program for Effects {
    type Input = ();
    type State = ();
    type Tools = dyn EffectTools;
    type Call = Work;

    fn info() -> &'static ProgramInfo {
        &INFO
    }

    fn record_input(_: &()) -> Vec<Datum> {
        Vec::new()
    }

    fn restore(_: &[Datum]) -> Result<(), Fault> {
        Ok(())
    }

    fn action(step: StepId, _: &()) -> Result<Action<Work>, Fault> {
        Ok(if (step as usize) < STEPS {
            Action::Tool(Work(step))
        } else {
            Action::End {
                success: true,
                message: None,
            }
        })
    }

    fn transition(step: StepId, _: &mut (), outcome: Outcome<'_>) -> Next {
        match outcome {
            Outcome::Tool(_) => Next::Go(step + 1),
            _ => Next::Fail("unexpected".into()),
        }
    }

    fn branch_action(_: StepId, _: u16, _: &()) -> Result<Action<Work>, Fault> {
        Err(Fault::Unassigned("branch"))
    }

    fn apply_branch(_: StepId, _: u16, _: &mut (), _: Outcome<'_>) -> Next {
        Next::Fail("no branches".into())
    }

    fn invoke(
        tools: &Arc<dyn EffectTools>,
        call: Work,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        tools.call(call.0, ctx.idempotency_key)
    }

    fn outputs(_: &()) -> Vec<(&'static str, Json)> {
        Vec::new()
    }
}

// --- stores --------------------------------------------------------------------------------

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn bench_dir() -> &'static std::path::Path {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory for the databases")
    });
    DIR.path()
}

type Store = Arc<dyn JournalStore>;

/// The stores to measure: name and a way to make a fresh one.
fn stores(tokio: &tokio::runtime::Runtime) -> Vec<(&'static str, Store)> {
    let mut out: Vec<(&'static str, Store)> = vec![("memory", Arc::new(MemoryStore::new()))];
    let sqlite = |max_batch| {
        let path = bench_dir().join(format!("{}.db", unique("bench")));
        let store = tokio
            .block_on(SqliteStore::open_with(
                path,
                SqliteOptions::new().max_batch(max_batch),
            ))
            .expect("opens");
        // One untimed run: the writer's own count of commits per run (each one an fsync).
        let before = store.commits();
        let dynamic: Store = Arc::new(store.clone());
        let writes = writes_per_run(tokio, &dynamic);
        eprintln!(
            "store: sqlite (max_batch {max_batch}): {writes} durable writes and {} SQLite commits \
             per run of {STEPS} effect steps",
            store.commits() - before
        );
        store
    };
    out.push(("sqlite", Arc::new(sqlite(64))));
    out.push(("sqlite_nogc", Arc::new(sqlite(1))));
    if let Some(pg) = postgres(tokio) {
        out.push(("postgres", pg));
    }
    out
}

#[cfg(feature = "postgres")]
fn postgres(tokio: &tokio::runtime::Runtime) -> Option<Store> {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL not set (PostgreSQL benchmarks NOT run)");
        return None;
    };
    let schema = format!("nvmbench_{}", std::process::id());
    let store = tokio
        .block_on(PostgresStore::connect_with(
            &url,
            PostgresOptions::new().schema(schema),
        ))
        .expect("connects to DATABASE_URL");
    Some(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &tokio::runtime::Runtime) -> Option<Store> {
    None
}

/// A run's trace: `run_started` then `n` decisions.
fn trace(run_id: &str, n: usize) -> Vec<Entry> {
    let mut t = Trace::with_capacity(n + 1);
    let mut e = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "raw".into(),
            program_hash: Digest([1; 32]),
            inputs: Vec::new(),
        },
        &mut e,
    );
    for i in 0..n {
        t.push(
            Event::Decision {
                step: "s".into(),
                arm: Some(i as u32),
                next: "s".into(),
            },
            &mut e,
        );
    }
    t.into_entries()
}

/// Counts the writes made through it (every method that changes the store); reads pass
/// through uncounted.
struct Counting {
    inner: Store,
    writes: AtomicU64,
}

impl Counting {
    fn count(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl JournalStore for Counting {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.count();
        self.inner.append(run_id, entries, fence)
    }
    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        self.inner.load(run_id)
    }
    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        self.inner.run(run_id)
    }
    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        self.inner.runs(query)
    }
    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        self.count();
        self.inner.claim(program, worker, now_ms, lease_ms)
    }
    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.count();
        self.inner.renew(lease, now_ms, lease_ms)
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        self.count();
        self.inner.release(lease)
    }
    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        self.count();
        self.inner.claim_run(run_id, worker, now_ms, lease_ms)
    }
    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.count();
        self.inner
            .start_run(run_id, entries, worker, now_ms, lease_ms)
    }
    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.count();
        self.inner.append_release(run_id, entries, lease)
    }
}

/// The store writes one run of [`Effects`] makes, counted through [`Counting`].
fn writes_per_run(tokio: &tokio::runtime::Runtime, store: &Store) -> u64 {
    let counting = Arc::new(Counting {
        inner: store.clone(),
        writes: AtomicU64::new(0),
    });
    let rt = Runtime::builder().store(counting.clone()).build();
    let tools: Arc<dyn EffectTools> = Arc::new(Instantly);
    let e = tokio
        .block_on(rt.run::<Effects>((), tools, RunOptions::new().run_id(unique("count"))))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    counting.writes.load(Ordering::Relaxed)
}

// --- the benchmarks ----------------------------------------------------------------------------

fn tokio_mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn effect_steps(c: &mut Criterion) {
    let tokio = tokio_mt();
    let tools: Arc<dyn EffectTools> = Arc::new(Instantly);
    let mut g = c.benchmark_group("store/effect_steps");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(STEPS as u64));
    for (name, store) in stores(&tokio) {
        if name == "sqlite_nogc" {
            continue; // one run at a time: nothing to coalesce
        }
        eprintln!(
            "store/effect_steps/{name}: {} durable writes per run of {STEPS} effect steps",
            writes_per_run(&tokio, &store)
        );
        let rt = Runtime::builder().store(store.clone()).build();
        let run = || {
            tokio.block_on(rt.run::<Effects>(
                (),
                tools.clone(),
                RunOptions::new().run_id(unique("steps")),
            ))
        };
        let e = run().expect("runs");
        assert_eq!(e.status, RunStatus::Success);
        assert_eq!(e.trace.len(), 2 * STEPS + 2);
        g.bench_function(name, |b| b.iter(|| black_box(run().expect("runs").root())));
    }
    g.finish();

    const RUNS: usize = 8;
    let mut g = c.benchmark_group("store/effect_steps_concurrent");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements((STEPS * RUNS) as u64));
    for (name, store) in stores(&tokio) {
        let rt = Runtime::builder().store(store.clone()).build();
        g.bench_function(format!("{name}/{RUNS}"), |b| {
            b.iter(|| {
                tokio.block_on(async {
                    let tasks: Vec<_> = (0..RUNS)
                        .map(|_| {
                            tokio::spawn(rt.run::<Effects>(
                                (),
                                tools.clone(),
                                RunOptions::new().run_id(unique("conc")),
                            ))
                        })
                        .collect();
                    for t in tasks {
                        let e = t.await.expect("joins").expect("runs");
                        assert_eq!(e.status, RunStatus::Success);
                    }
                })
            })
        });
    }
    g.finish();
}

fn appends(c: &mut Criterion) {
    let tokio = tokio_mt();
    let mut g = c.benchmark_group("store/append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (name, store) in stores(&tokio) {
        if name == "sqlite_nogc" {
            continue;
        }
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let id = unique("raw");
                let entries = trace(&id, iters as usize);
                tokio.block_on(async {
                    store
                        .append(&id, &entries[..1], None)
                        .await
                        .expect("starts");
                    let start = Instant::now();
                    for e in &entries[1..] {
                        store
                            .append(&id, std::slice::from_ref(e), None)
                            .await
                            .expect("appends");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("store/concurrent_appends");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (name, store) in stores(&tokio) {
        if name == "memory" {
            continue;
        }
        for writers in [1usize, 4, 16] {
            g.bench_function(format!("{name}/{writers}"), |b| {
                b.iter_custom(|iters| {
                    let per = (iters as usize).div_ceil(writers);
                    let runs: Vec<(String, Vec<Entry>)> = (0..writers)
                        .map(|_| {
                            let id = unique("par");
                            let t = trace(&id, per);
                            (id, t)
                        })
                        .collect();
                    tokio.block_on(async {
                        for (id, t) in &runs {
                            store.append(id, &t[..1], None).await.expect("starts");
                        }
                        let start = Instant::now();
                        let tasks: Vec<_> = runs
                            .into_iter()
                            .map(|(id, t)| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    for e in &t[1..] {
                                        store
                                            .append(&id, std::slice::from_ref(e), None)
                                            .await
                                            .expect("appends");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("joins");
                        }
                        // Normalised to `iters` appends (the last writer may do a few more).
                        start
                            .elapsed()
                            .mul_f64(iters as f64 / (per * writers) as f64)
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, effect_steps, appends);
criterion_main!(benches);
