//! The benchmark workloads of nanovm, shaped like the workloads of the Python system it replaces
//! (`llm-nano-vm` 0.8.9, see `benches/peer/`), and one way to run and check them that the
//! criterion benchmarks, the instruction-count benchmarks and the `compare` binary share.
//!
//! | workload | program | steps per run (nanovm = peer) |
//! | --- | --- | --- |
//! | `guard4` | llm `choose [yes, no]` -> guard -> effect tool -> read-only tool -> end | 4 |
//! | `guard4_budgets` | the same with `max_steps`, `max_tokens`, `max_stalled_steps` | 4 |
//! | `linear10/100/1000` | N read-only tool steps -> end | N |
//! | `parallel10` | a parallel step of 10 tool branches -> llm -> end | 12 (the parallel step, 10 branches, the llm step) |
//! | `effects10` | guard on an input -> 10 effect tool steps -> end: every step after the guard a durable side effect | 11 |
//!
//! The model answers `"yes"` at once ([`MockModel`], no lock), every tool returns `{"ok": true}`
//! at once ([`Noop`]); both count their calls with a relaxed atomic, as the peer's harness
//! counts its mock calls. Every event of every run is hashed into the trace: nanovm cannot run
//! without its hash chain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nanovm::model::{Model, ModelError, ModelReply, ModelRequest};
use nanovm::store::{JournalStore, RunQuery};
use nanovm::trace::{Encoder, Event, RunStatus, entry_hash};
use nanovm::{BoxFuture, ToolContext, ToolError};
use nanovm::{Digest, Json};
use nanovm::{Execution, RunError, RunOptions, Runtime};

pub mod linear;

/// The compiled workloads (`build.rs` compiles `workflows/*.nvm` and the generated linear ones).
mod programs {
    nanovm::include_compiled!("guard4");
    nanovm::include_compiled!("guard4_budgets");
    nanovm::include_compiled!("parallel10");
    nanovm::include_compiled!("effects10");
    nanovm::include_compiled!("linear10");
    nanovm::include_compiled!("linear100");
    nanovm::include_compiled!("linear1000");
    nanovm::include_compiled!("guard4_tight");
}
pub use programs::*;

/// A mock model that gives the same answer to everything, immediately (`"yes"` in the
/// benchmarks, like the peer's `MockLLMAdapter("yes")`). The only shared state is a relaxed
/// call counter, no lock (the peer's mock appends every prompt to a list).
#[derive(Debug)]
pub struct MockModel {
    answer: &'static str,
    calls: AtomicU64,
}

impl MockModel {
    /// A model that always answers `answer`.
    pub fn new(answer: &'static str) -> MockModel {
        MockModel {
            answer,
            calls: AtomicU64::new(0),
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Model for MockModel {
    fn complete<'a>(
        &'a self,
        _req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(ModelReply::text(self.answer))))
    }
}

/// The tools of every workload: return `{"ok": true}` at once (the peer's no-op tool returns
/// `{"ok": True}`), counting calls with a relaxed atomic.
#[derive(Debug, Default)]
pub struct Noop {
    calls: AtomicU64,
}

impl Noop {
    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn ok(&self) -> Result<Json, ToolError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(serde_json::json!({ "ok": true }))
    }
}

impl guard4::Tools for Noop {
    async fn act(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
    async fn finish(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
}

impl guard4_budgets::Tools for Noop {
    async fn act(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
    async fn finish(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
}

impl guard4_tight::Tools for Noop {
    async fn act(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
    async fn finish(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
}

macro_rules! noop_tools {
    ($($program:ident),*) => {$(
        impl $program::Tools for Noop {
            async fn noop(&self, _: &ToolContext) -> Result<Json, ToolError> {
                self.ok()
            }
        }
    )*};
}
noop_tools!(parallel10, linear10, linear100, linear1000);

impl effects10::Tools for Noop {
    async fn charge(&self, _: &ToolContext) -> Result<Json, ToolError> {
        self.ok()
    }
}

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// llm choose -> guard -> effect tool -> tool -> end.
    Guard4,
    /// `Guard4` with `max_steps`, `max_tokens` and `max_stalled_steps` set.
    Guard4Budgets,
    /// 10 tool steps.
    Linear10,
    /// 100 tool steps.
    Linear100,
    /// 1000 tool steps.
    Linear1000,
    /// A parallel step of 10 tool branches, then an llm step.
    Parallel10,
    /// A guard, then 10 effect tool steps: every step after the guard a durable side effect
    /// (intent before, result after).
    Effects10,
}

impl Workload {
    /// Every workload, in the order of the peer's table.
    pub const ALL: [Workload; 7] = [
        Workload::Guard4,
        Workload::Guard4Budgets,
        Workload::Linear10,
        Workload::Linear100,
        Workload::Linear1000,
        Workload::Parallel10,
        Workload::Effects10,
    ];

    /// The name shared with the peer (`benches/peer/peer_bench.py`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Guard4 => "guard4",
            Workload::Guard4Budgets => "guard4_budgets",
            Workload::Linear10 => "linear10",
            Workload::Linear100 => "linear100",
            Workload::Linear1000 => "linear1000",
            Workload::Parallel10 => "parallel10",
            Workload::Effects10 => "effects10",
        }
    }

    /// The workload with this name.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Steps per successful run as nanovm counts them (`Execution::usage.steps`: every entry
    /// into a non-end step, plus one per branch run of a parallel step).
    pub fn steps_per_run(self) -> u64 {
        match self {
            Workload::Guard4 | Workload::Guard4Budgets => 4,
            Workload::Linear10 => 10,
            Workload::Effects10 => 11,
            Workload::Linear100 => 100,
            Workload::Linear1000 => 1000,
            Workload::Parallel10 => 12,
        }
    }

    /// Steps per successful run as the peer counts them (`len(trace.steps)`, see
    /// `benches/peer/README.md`). Equal to [`Workload::steps_per_run`] for every workload.
    pub fn peer_steps_per_run(self) -> u64 {
        match self {
            Workload::Guard4 | Workload::Guard4Budgets => 4,
            Workload::Linear10 => 10,
            Workload::Effects10 => 11,
            Workload::Linear100 => 100,
            Workload::Linear1000 => 1000,
            Workload::Parallel10 => 12,
        }
    }

    /// Tool invocations per successful run.
    pub fn tool_calls(self) -> u64 {
        match self {
            Workload::Guard4 | Workload::Guard4Budgets => 2,
            Workload::Parallel10 | Workload::Effects10 => 10,
            _ => self.steps_per_run(),
        }
    }

    /// Model calls per successful run.
    pub fn model_calls(self) -> u64 {
        match self {
            Workload::Guard4 | Workload::Guard4Budgets | Workload::Parallel10 => 1,
            _ => 0,
        }
    }

    /// `Execution::path` of a successful run: the steps entered, in order, ending with the
    /// `end` step (parallel branches are not in the path; they are counted in `usage.steps`).
    pub fn path(self) -> Vec<String> {
        let names: Vec<String> = match self {
            Workload::Guard4 | Workload::Guard4Budgets => ["ask", "gate", "apply", "finish"]
                .map(String::from)
                .to_vec(),
            Workload::Parallel10 => vec!["par".into(), "ask".into()],
            Workload::Effects10 => std::iter::once("gate".to_string())
                .chain((0..10).map(|i| format!("s{i}")))
                .collect(),
            _ => (0..self.steps_per_run()).map(|i| format!("s{i}")).collect(),
        };
        names.into_iter().chain(["done".to_string()]).collect()
    }

    /// The `.nvm` source of the workload.
    pub fn source(self) -> String {
        match self {
            Workload::Guard4 => include_str!("../workflows/guard4.nvm").to_string(),
            Workload::Guard4Budgets => include_str!("../workflows/guard4_budgets.nvm").to_string(),
            Workload::Parallel10 => include_str!("../workflows/parallel10.nvm").to_string(),
            Workload::Effects10 => include_str!("../workflows/effects10.nvm").to_string(),
            Workload::Linear10 => linear::source(10),
            Workload::Linear100 => linear::source(100),
            Workload::Linear1000 => linear::source(1000),
        }
    }
}

/// Where runs are journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No store: the trace lives in memory (hashing stays on).
    Memory,
    /// A durable store: every effect journaled before and after it runs, the whole run at the
    /// end. Each run gets a fresh run id (a store refuses to start a run id twice).
    Durable,
}

/// A runtime with the mock model and tools, ready to run any [`Workload`].
pub struct Bench {
    runtime: Runtime,
    model: Arc<MockModel>,
    tools: Arc<Noop>,
    mode: Mode,
    next_run: AtomicU64,
}

impl Bench {
    /// In memory, no store; the model answers `"yes"`.
    pub fn memory() -> Bench {
        Bench::memory_answering("yes")
    }

    /// In memory, no store; the model answers `answer` (for the sanity checks).
    pub fn memory_answering(answer: &'static str) -> Bench {
        let model = Arc::new(MockModel::new(answer));
        let runtime = Runtime::builder().model(model.clone()).build();
        Bench::with(runtime, model, Mode::Memory)
    }

    /// In memory, no store, with `observer` set on the runtime (it sees every entry as it is
    /// chained); the model answers `"yes"`.
    pub fn memory_observed(observer: impl nanovm_runtime::Observer) -> Bench {
        let model = Arc::new(MockModel::new("yes"));
        let runtime = Runtime::builder()
            .model(model.clone())
            .observer(observer)
            .build();
        Bench::with(runtime, model, Mode::Memory)
    }

    /// Journaled in `store`; the model answers `"yes"`.
    pub fn durable(store: impl JournalStore) -> Bench {
        let model = Arc::new(MockModel::new("yes"));
        let runtime = Runtime::builder().model(model.clone()).store(store).build();
        Bench::with(runtime, model, Mode::Durable)
    }

    fn with(runtime: Runtime, model: Arc<MockModel>, mode: Mode) -> Bench {
        Bench {
            runtime,
            model,
            tools: Arc::new(Noop::default()),
            mode,
            next_run: AtomicU64::new(0),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Model calls so far.
    pub fn model_calls(&self) -> u64 {
        self.model.calls()
    }

    /// Tool calls so far.
    pub fn tool_calls(&self) -> u64 {
        self.tools.calls()
    }

    /// Runs started so far in [`Mode::Durable`] (each has its own run id).
    pub fn durable_runs(&self) -> u64 {
        self.next_run.load(Ordering::Relaxed)
    }

    /// In [`Mode::Durable`]: the store holds every run started, each ended `success`, and
    /// `last` (the most recent run) reloads from it (hash chain re-verified by the store) with
    /// the same entries and root hash as the execution returned.
    pub async fn check_journal(&self, last: &Execution) -> Result<(), String> {
        let Some(store) = self.runtime.store() else {
            return Err("check_journal: this bench has no store".into());
        };
        let records = store
            .runs(&RunQuery::new())
            .await
            .map_err(|e| format!("journal: listing runs failed: {e}"))?;
        let started = self.durable_runs();
        if records.len() as u64 != started {
            return Err(format!(
                "journal: the store holds {} runs, {started} were started",
                records.len()
            ));
        }
        if let Some(r) = records
            .iter()
            .find(|r| r.status != RunStatus::Success || r.entries == 0)
        {
            return Err(format!(
                "journal: run {} is stored as {} with {} entries",
                r.run_id,
                r.status.as_str(),
                r.entries
            ));
        }
        let loaded = store
            .load(&last.run_id)
            .await
            .map_err(|e| format!("journal: loading run {} failed: {e}", last.run_id))?
            .ok_or_else(|| format!("journal: run {} is not in the store", last.run_id))?;
        let root = loaded.last().map(|e| e.hash);
        if loaded.len() != last.trace.len() || root != Some(last.root()) {
            return Err(format!(
                "journal: run {} is stored with {} entries and root {root:?}, the run had {} \
                 and {:?}",
                last.run_id,
                loaded.len(),
                last.trace.len(),
                last.root()
            ));
        }
        Ok(())
    }

    fn options(&self) -> RunOptions {
        match self.mode {
            // The default run id (blake3 of program hash and inputs), as any caller gets it.
            Mode::Memory => RunOptions::default(),
            Mode::Durable => {
                let n = self.next_run.fetch_add(1, Ordering::Relaxed);
                RunOptions::new().run_id(format!("bench-{n}"))
            }
        }
    }

    /// Runs the workload once.
    pub async fn run(&self, w: Workload) -> Result<Execution, RunError> {
        let rt = &self.runtime;
        let opts = self.options();
        let tools = self.tools.clone();
        match w {
            Workload::Guard4 => {
                rt.run::<guard4::Program>(guard4::Input {}, tools, opts)
                    .await
            }
            Workload::Guard4Budgets => {
                rt.run::<guard4_budgets::Program>(guard4_budgets::Input {}, tools, opts)
                    .await
            }
            Workload::Linear10 => {
                rt.run::<linear10::Program>(linear10::Input {}, tools, opts)
                    .await
            }
            Workload::Linear100 => {
                rt.run::<linear100::Program>(linear100::Input {}, tools, opts)
                    .await
            }
            Workload::Linear1000 => {
                rt.run::<linear1000::Program>(linear1000::Input {}, tools, opts)
                    .await
            }
            Workload::Parallel10 => {
                rt.run::<parallel10::Program>(parallel10::Input {}, tools, opts)
                    .await
            }
            Workload::Effects10 => {
                rt.run::<effects10::Program>(effects10::Input { approved: true }, tools, opts)
                    .await
            }
        }
    }

    /// One run of the workload as a `'static` future, for spawning many at once (boxed; the
    /// sequential benchmarks use [`Bench::run`], which is not).
    pub fn run_owned(&self, w: Workload) -> BoxFuture<'static, Result<Execution, RunError>> {
        let rt = &self.runtime;
        let opts = self.options();
        let tools = self.tools.clone();
        match w {
            Workload::Guard4 => Box::pin(rt.run::<guard4::Program>(guard4::Input {}, tools, opts)),
            Workload::Guard4Budgets => {
                Box::pin(rt.run::<guard4_budgets::Program>(guard4_budgets::Input {}, tools, opts))
            }
            Workload::Linear10 => {
                Box::pin(rt.run::<linear10::Program>(linear10::Input {}, tools, opts))
            }
            Workload::Linear100 => {
                Box::pin(rt.run::<linear100::Program>(linear100::Input {}, tools, opts))
            }
            Workload::Linear1000 => {
                Box::pin(rt.run::<linear1000::Program>(linear1000::Input {}, tools, opts))
            }
            Workload::Parallel10 => {
                Box::pin(rt.run::<parallel10::Program>(parallel10::Input {}, tools, opts))
            }
            Workload::Effects10 => Box::pin(rt.run::<effects10::Program>(
                effects10::Input { approved: true },
                tools,
                opts,
            )),
        }
    }

    /// Runs the workload once and checks the result ([`Expected::check`]).
    pub async fn run_checked(&self, expected: &Expected) -> Result<Execution, String> {
        let w = expected.workload;
        let e = self
            .run(w)
            .await
            .map_err(|err| format!("{}: the run returned an error: {err}", w.name()))?;
        expected.check(&e)?;
        Ok(e)
    }
}

/// What a successful run of a workload looks like; computed once, so that checking a run
/// allocates nothing.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The workload.
    pub workload: Workload,
    /// `usage.steps`.
    pub steps: u64,
    /// `usage.tool_calls`.
    pub tool_calls: u64,
    /// `usage.model_calls`.
    pub model_calls: u64,
    /// `path`, ending with the `end` step.
    pub path: Vec<String>,
}

impl Workload {
    /// What a successful run looks like.
    pub fn expected(self) -> Expected {
        Expected {
            workload: self,
            steps: self.steps_per_run(),
            tool_calls: self.tool_calls(),
            model_calls: self.model_calls(),
            path: self.path(),
        }
    }
}

impl Expected {
    /// The checks made after every timed run: status `success`; exactly the expected number of
    /// steps, model calls and tool calls, no retries and no stalls; a path of the expected
    /// length ending at the success end; a non-empty trace.
    pub fn check(&self, e: &Execution) -> Result<(), String> {
        let u = &e.usage;
        let ok = e.status == RunStatus::Success
            && u.steps == self.steps
            && u.tool_calls == self.tool_calls
            && u.model_calls == self.model_calls
            && u.retries == 0
            && u.stalls == 0
            && e.path.len() == self.path.len()
            && e.path.last().copied() == Some("done")
            && !e.trace.is_empty();
        if ok { Ok(()) } else { Err(self.describe(e)) }
    }

    /// The checks made on every warm-up and calibration run, on top of [`Expected::check`]:
    /// the exact path; the exported JSON Lines trace verifies to the run's entry count and
    /// root hash; a replay of the trace (the compiled transitions re-run over it, no I/O)
    /// reproduces the path and the root hash.
    pub fn check_deep(&self, e: &Execution) -> Result<(), String> {
        let name = self.workload.name();
        self.check(e)?;
        if e.path != self.path {
            return Err(format!("{name}: unexpected path: {}", self.describe(e)));
        }
        let root = e.root();
        match nanovm::trace::verify_jsonl(&e.trace.to_jsonl()) {
            Ok((n, r)) if n == e.trace.len() && r == root => {}
            Ok((n, r)) => {
                return Err(format!(
                    "{name}: exported trace verifies to {n} entries / {r:?}, the run has {} / {root:?}",
                    e.trace.len()
                ));
            }
            Err(err) => return Err(format!("{name}: exported trace does not verify: {err}")),
        }
        let (replayed, path) = replay(self.workload, e)?;
        if replayed != root || path != e.path {
            return Err(format!(
                "{name}: replay gives {replayed:?} along {path:?}, the run {root:?} along {:?}",
                e.path
            ));
        }
        Ok(())
    }

    /// One line describing a run that is not what was expected.
    pub fn describe(&self, e: &Execution) -> String {
        let u = &e.usage;
        let path = if e.path.len() > 12 {
            let mut p: Vec<&str> = e.path[..6].to_vec();
            p.push("...");
            p.extend_from_slice(&e.path[e.path.len() - 4..]);
            p
        } else {
            e.path.clone()
        };
        format!(
            "{}: status={} message={:?} steps={} (expected {}) model_calls={} (expected {}) \
             tool_calls={} (expected {}) retries={} stalls={} path=[{}] ({} entered, expected {}) \
             trace entries={}",
            self.workload.name(),
            e.status.as_str(),
            e.message,
            u.steps,
            self.steps,
            u.model_calls,
            self.model_calls,
            u.tool_calls,
            self.tool_calls,
            u.retries,
            u.stalls,
            path.join(", "),
            e.path.len(),
            self.path.len(),
            e.trace.len()
        )
    }
}

fn replay(w: Workload, e: &Execution) -> Result<(Digest, Vec<&'static str>), String> {
    let report = match w {
        Workload::Guard4 => nanovm::replay::<guard4::Program>(&e.trace),
        Workload::Guard4Budgets => nanovm::replay::<guard4_budgets::Program>(&e.trace),
        Workload::Linear10 => nanovm::replay::<linear10::Program>(&e.trace),
        Workload::Linear100 => nanovm::replay::<linear100::Program>(&e.trace),
        Workload::Linear1000 => nanovm::replay::<linear1000::Program>(&e.trace),
        Workload::Parallel10 => nanovm::replay::<parallel10::Program>(&e.trace),
        Workload::Effects10 => nanovm::replay::<effects10::Program>(&e.trace),
    }
    .map_err(|err| format!("{}: replay failed: {err}", w.name()))?;
    Ok((report.root, report.path))
}

/// Shows that what the benchmarks time is live, as the peer's script does at start-up: the
/// guard stops a "no" before any tool runs, an answer outside the choices ends the run at
/// `refused` before any tool runs, and `max_steps: 2` ends `guard4` with `budget_exceeded`.
pub fn sanity_checks(tokio: &tokio::runtime::Runtime) -> Result<(), String> {
    for answer in ["no", "maybe"] {
        let bench = Bench::memory_answering(answer);
        let e = tokio
            .block_on(bench.run(Workload::Guard4))
            .map_err(|e| format!("sanity: guard4 answering {answer:?}: {e}"))?;
        let refused = e.status == RunStatus::Failed
            && e.end_step.as_deref() == Some("refused")
            && bench.tool_calls() == 0
            && e.usage.tool_calls == 0;
        if !refused {
            return Err(format!(
                "sanity: guard4 answering {answer:?} must end failed at `refused` with no tool \
                 call, got {}",
                Workload::Guard4.expected().describe(&e)
            ));
        }
    }
    let bench = Bench::memory();
    let e = tokio
        .block_on(bench.runtime.run::<guard4_tight::Program>(
            guard4_tight::Input {},
            bench.tools.clone(),
            RunOptions::default(),
        ))
        .map_err(|e| format!("sanity: guard4 with max_steps 2: {e}"))?;
    if e.status != RunStatus::BudgetExceeded || e.usage.steps != 2 {
        return Err(format!(
            "sanity: guard4 with max_steps 2 must end budget_exceeded after 2 steps, got {}",
            Workload::Guard4.expected().describe(&e)
        ));
    }
    Ok(())
}

/// The limit of a workload in memory: the hash-only cost of one run's events, that is the
/// canonical encoding and blake3 chaining of every entry of its trace (`entry_hash`, what
/// `Trace::push` must do for each event), and nothing else: no executor, no allocation, no
/// clock, no tool or model call, not even the run id and effect ids (three more keyed blake3
/// hashes per `guard4` run that a run cannot skip either, left out so the limit is a floor).
/// A workload's time per run over this is how much of a run is overhead outside the hash.
#[derive(Debug)]
pub struct Limit {
    events: Vec<Event>,
    scratch: Encoder,
    root: Digest,
}

impl Limit {
    /// The limit of the run `e` (its events, in order).
    pub fn of(e: &Execution) -> Limit {
        Limit {
            events: e.trace.entries().iter().map(|x| x.event.clone()).collect(),
            scratch: Encoder::with_capacity(512),
            root: e.root(),
        }
    }

    /// Hashes the run's events into a chain, as the run did; returns the root.
    pub fn hash(&mut self) -> Digest {
        let mut prev = Digest::ZERO;
        for (seq, event) in self.events.iter().enumerate() {
            prev = entry_hash(&prev, seq as u64, event, &mut self.scratch);
        }
        prev
    }

    /// Hashes, and checks the root is the run's (the limit hashes exactly what the run did).
    pub fn hash_checked(&mut self) -> Result<Digest, String> {
        let root = self.hash();
        if root != self.root {
            return Err(format!(
                "limit: the events hash to {root:?}, the run's root is {:?}",
                self.root
            ));
        }
        Ok(root)
    }

    /// The number of entries hashed.
    pub fn entries(&self) -> usize {
        self.events.len()
    }
}

/// A current-thread tokio runtime with timers (the executor's `SystemClock` sleeps on tokio).
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime")
}
