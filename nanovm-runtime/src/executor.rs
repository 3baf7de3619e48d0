//! The executor: runs a compiled [`Program`], recording every event into a hash-chained trace.
//!
//! The executor decides nothing about the graph. For each step it asks the program what the
//! step wants ([`Program::action`]), performs that I/O (a model call, a tool call, a
//! suspension), records it, and hands the normalized result back to the compiled transition
//! function ([`Program::transition`]), which names the successor. The exact semantics (what a
//! step is, when budgets trip, retries, parallel scheduling, durability) are specified in
//! `docs/runtime.md`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use nanovm_runtime::{Runtime, RunOptions, ScriptedModel, program::Program};
//! # async fn demo<P: Program>(input: P::Input, tools: Arc<P::Tools>) -> Result<(), nanovm_runtime::RunError> {
//! let runtime = Runtime::builder()
//!     .model(ScriptedModel::new().answer("analyze", "yes"))
//!     .build();
//! let execution = runtime.run::<P>(input, tools, RunOptions::default()).await?;
//! println!("{} after {:?}: root {}", execution.status, execution.path, execution.trace.root());
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::budget::{Backoff, Meter, Trip, Usage};
use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock, millis};
use crate::durable::Inject;
use crate::ids;
use crate::model::{Model, ModelError, ModelReply, ModelRequest};
use crate::program::{
    Action, BoxFuture, BranchId, LlmCall, Name, Next, Outcome, Program, ProgramInfo, SecretSource,
    StepId, StepInfo, StepKind, ToolCall, ToolContext, ToolError, ToolInfo,
};
use crate::recorder::{Halt, Mode, Recorder, divergence};
use crate::store::{Fence, JournalError, JournalStore};
use crate::trace::{BudgetKind, Entry, Event, Reply, RunStatus, ToolOutcome, Trace, VerifyError};
use crate::value::{Datum, Digest, Json};
use crate::vault::{MemoryVault, Vault};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Runs compiled programs. Cheap to clone (one `Arc` inside); share one per process.
///
/// Built with [`Runtime::builder`]. Defaults: no model (a run of a program with an `llm` step
/// fails with [`RunError::NoModel`] before it starts), a [`MemoryVault`], the [`SystemClock`],
/// [`Backoff::default`] (100 ms doubling, capped at 10 s) and no store.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    model: Option<Arc<dyn Model>>,
    vault: Arc<dyn Vault>,
    secrets: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    store: Option<Arc<dyn JournalStore>>,
    /// The lease length of the runtime's own operations on stored runs (`crate::durable`).
    operation_lease_ms: u64,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("model", &self.inner.model.is_some())
            .field("store", &self.inner.store.is_some())
            .field("backoff", &self.inner.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::builder().build()
    }
}

/// Configures a [`Runtime`].
#[derive(Default)]
#[must_use]
pub struct RuntimeBuilder {
    model: Option<Arc<dyn Model>>,
    vault: Option<Arc<dyn Vault>>,
    clock: Option<Arc<dyn Clock>>,
    backoff: Backoff,
    store: Option<Arc<dyn JournalStore>>,
    operation_lease: Option<Duration>,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder").finish_non_exhaustive()
    }
}

// Lets `builder().model(arc)` take an `Arc<dyn Model>` shared with other code.
impl<M: Model + ?Sized> Model for Arc<M> {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        (**self).complete(req)
    }
}

impl RuntimeBuilder {
    /// The language model `llm` steps call (an `Arc<dyn Model>` works too).
    pub fn model(mut self, model: impl Model) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// Where `secret` values live (an `Arc<MemoryVault>` works too, so the caller can keep a
    /// handle to store inputs).
    pub fn vault(mut self, vault: impl Vault) -> Self {
        self.vault = Some(Arc::new(vault));
        self
    }

    /// The clock for backoff, deadlines and the duration budget.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The wait between retry attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Where traces are made durable (see [`crate::store`]; an `Arc<S>` works too).
    pub fn store(mut self, store: impl JournalStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// How long the lease of one of the runtime's own operations on a stored run lasts (a
    /// duplicate start that resumes it, a delivery, a timeout, a reconciliation; renewed every
    /// third of that while the run executes). Default
    /// [`OPERATION_LEASE_MS`](crate::durable::OPERATION_LEASE_MS), 30 s. A process that dies
    /// holding one blocks the run for at most this long.
    pub fn operation_lease(mut self, lease: Duration) -> Self {
        self.operation_lease = Some(lease);
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        let vault: Arc<dyn Vault> = self.vault.unwrap_or_else(|| Arc::new(MemoryVault::new()));
        let secrets: Arc<dyn SecretSource> = vault.clone();
        Runtime {
            inner: Arc::new(Inner {
                model: self.model,
                vault,
                secrets,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                backoff: self.backoff,
                store: self.store,
                operation_lease_ms: self
                    .operation_lease
                    .map_or(crate::durable::OPERATION_LEASE_MS, |d| millis(d).max(1)),
            }),
        }
    }
}

/// Per-run options.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// The run id. Default: derived from the program hash and the recorded inputs
    /// ([`ids::run_id`]).
    pub run_id: Option<String>,
    /// Cancels the run from outside.
    pub cancel: Option<CancelToken>,
    /// The lease epoch every store append of the run is made under (a worker holding a
    /// [`crate::store::Lease`] passes [`crate::store::Lease::fence`]); `None`: unfenced.
    pub fence: Option<Fence>,
}

impl RunOptions {
    /// Default options.
    pub fn new() -> Self {
        RunOptions::default()
    }

    /// Sets the run id: 1 to 256 bytes of printable characters without whitespace
    /// ([`ids::validate_run_id`]); [`Runtime::run`] refuses any other with
    /// [`RunError::InvalidRunId`].
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sets the cancellation token.
    #[must_use]
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Makes every store append of the run carry `fence`.
    #[must_use]
    pub fn fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

/// The result of a run that reached a status (including failures: a failed run is a successful
/// execution of a program that failed).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Execution {
    /// The run id.
    pub run_id: String,
    /// How it ended (or `suspended`).
    pub status: RunStatus,
    /// The step where it ended: the `end` step, the step that failed or tripped a budget, or
    /// the `await` step it is suspended at.
    pub end_step: Option<String>,
    /// The failure message, if any.
    pub message: Option<String>,
    /// The assigned, non-secret variables.
    pub outputs: BTreeMap<String, Json>,
    /// Every step entered, in order, including stalled re-runs and the final `end` step.
    pub path: Vec<&'static str>,
    /// The trace.
    pub trace: Trace,
    /// What the run consumed.
    pub usage: Usage,
    /// Wall-clock measurements (never part of the trace).
    pub metrics: Metrics,
}

impl Execution {
    /// The trace's root hash.
    pub fn root(&self) -> Digest {
        self.trace.root()
    }
}

/// Timings of a run. Not deterministic, so not in the trace.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// The run's clock when it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Wall time the executor spent on the run (monotonic clock).
    pub elapsed: Duration,
    /// Wall time per step entered, in order (parallel: the whole block).
    pub step_durations: Vec<(&'static str, Duration)>,
}

/// A failure that is not a run outcome: the run could not be executed or recorded faithfully.
/// (Run outcomes such as `failed` or `budget_exceeded` are statuses in [`Execution`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The journal refused or failed a write; the run stopped at the last durable point.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The program has an `llm` step but the runtime has no model.
    #[error(
        "step `{step}` calls a model, but the runtime has none (use Runtime::builder().model(..))"
    )]
    NoModel {
        /// The first step that needs one.
        step: &'static str,
    },
    /// The trace was recorded by a different build of the program.
    #[error(
        "the trace was recorded by program `{program}` with hash {recorded}, but this build of `{program}` has hash {compiled}"
    )]
    ProgramMismatch {
        /// The program's name.
        program: &'static str,
        /// The hash of the compiled program.
        compiled: Digest,
        /// The hash recorded in the trace.
        recorded: Digest,
    },
    /// The recorded entries are not the trace of a run.
    #[error("not a run trace: {0}")]
    NotARun(String),
    /// The recorded entries fail hash-chain verification.
    #[error(transparent)]
    Corrupt(#[from] VerifyError),
    /// Re-running the program over a recorded trace produced a different event.
    #[error(transparent)]
    Divergence(Box<Mismatch>),
    /// The compiled program answered something the runtime cannot act on (a step id out of
    /// range, a tool index with no tool); a code generation bug.
    #[error("the compiled program is inconsistent: {0}")]
    InvalidProgram(String),
    /// The run is not in the journal.
    #[error("run `{0}` is not in the journal")]
    UnknownRun(String),
    /// The operation needs a journal and the runtime has none.
    #[error("the runtime has no journal")]
    NoJournal,
    /// The run id chosen in [`RunOptions::run_id`] is not acceptable.
    #[error("invalid run id: {0}")]
    InvalidRunId(#[from] ids::RunIdError),
    /// A replay needed to wait for I/O, which a replay never does (a runtime bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The run is `running` and a worker holds its lease: it is being executed elsewhere.
    #[error("run `{run_id}` is being executed by `{owner}` (lease until {expires_ms} ms)")]
    Leased {
        /// The run.
        run_id: String,
        /// The worker holding the lease.
        owner: String,
        /// When the lease expires, in milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// The run id is taken by a run that is not the one requested (another program, or other
    /// plain inputs).
    #[error("run id `{run_id}` is in use {reason}")]
    RunIdInUse {
        /// The run id.
        run_id: String,
        /// How the stored run differs.
        reason: String,
    },
    /// The program refused a delivered event's payload (it does not have the `await`'s
    /// declared type). Nothing was recorded. ([`crate::Runtime::deliver`] reports it as
    /// [`crate::DeliverError::Payload`].)
    #[error("the program refuses the event's payload: {0}")]
    PayloadRefused(String),
}

/// Errors of [`crate::replay()`]: the same as a run's.
pub type ReplayError = RunError;

/// Where re-running a program over a recorded trace first disagreed with the recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Index (sequence number) of the recorded entry where it happened.
    pub index: usize,
    /// The event the program produces there (`None` when it needed a recorded model reply or
    /// tool result and found something else, or when the program had ended).
    pub expected: Option<Event>,
    /// The recorded event (`None`: the recording had ended).
    pub recorded: Option<Event>,
    /// What the executor was doing.
    pub context: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the trace diverges at entry {}: {}",
            self.index, self.context
        )?;
        match &self.expected {
            Some(e) => write!(f, "; the program produces {e:?}")?,
            None => f.write_str("; the program produces nothing here")?,
        }
        match &self.recorded {
            Some(e) => write!(f, "; the trace records {e:?}"),
            None => f.write_str("; the trace records nothing here"),
        }
    }
}

impl std::error::Error for Mismatch {}

/// The result of [`crate::replay()`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The run id recorded in the trace.
    pub run_id: String,
    /// The status the replay reached (`running` if the trace stops mid-run).
    pub status: RunStatus,
    /// The step where the run ended or suspended.
    pub end_step: Option<String>,
    /// The steps entered, in order (as [`Execution::path`]).
    pub path: Vec<&'static str>,
    /// The root hash of the regenerated trace.
    pub root: Digest,
    /// Entries replayed.
    pub entries: usize,
    /// `None` when the recording covers the run to its end (or its suspension); otherwise why
    /// the replay stopped early (the trace is a prefix of a run, for instance one that crashed
    /// with an effect in flight).
    pub stopped: Option<String>,
    /// What the replayed run consumed (derived from the recorded replies and results).
    pub usage: Usage,
}

impl Runtime {
    /// A builder with the defaults listed on [`Runtime`].
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The vault tools reveal secrets from.
    pub fn vault(&self) -> &Arc<dyn Vault> {
        &self.inner.vault
    }

    /// The lease length of the runtime's own operations on stored runs, in milliseconds.
    pub(crate) fn operation_lease_ms(&self) -> u64 {
        self.inner.operation_lease_ms
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The journal store, if any.
    pub fn store(&self) -> Option<&Arc<dyn JournalStore>> {
        self.inner.store.as_ref()
    }

    /// Runs `P` on `input` until it ends or suspends.
    ///
    /// With a store, a run id the store already holds (the one in `opts`, or the one derived
    /// from the inputs) is a *duplicate start* and executes nothing new: a run that ended, is
    /// suspended or needs reconciliation is answered with its recorded outcome (replayed from
    /// the stored trace); a run a crash left `running` is resumed, unless a worker holds its
    /// lease ([`RunError::Leased`]); a stored run of another program or with other plain inputs
    /// is [`RunError::RunIdInUse`]. See `docs/runtime.md`, "Durability: the protocol".
    ///
    /// The future is `Send + 'static`: spawn it, race it, or drop it (dropping is a crash as
    /// far as the store is concerned: what was flushed stays, and [`Runtime::resume`]
    /// continues from there).
    pub fn run<P: Program>(
        &self,
        input: P::Input,
        tools: Arc<P::Tools>,
        opts: RunOptions,
    ) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
        let this = self.clone();
        // Boxed here, once: the run future is a few kilobytes, and every executor that drives
        // it (`block_on`, `spawn`) would otherwise move it by value.
        Box::pin(async move {
            if let Some(id) = &opts.run_id {
                ids::validate_run_id(id)?;
            }
            // A run id the store knows already is a duplicate start: nothing new is executed
            // (see `crate::durable`).
            if let Some(store) = this.inner.store.clone() {
                let info = P::info();
                let datums = P::record_input(&input);
                let run_id = match &opts.run_id {
                    Some(id) => id.clone(),
                    None => ids::run_id_of(&info.hash, info.inputs, &datums),
                };
                if let Some(entries) = store.load(&run_id).await? {
                    return this.rejoin::<P>(run_id, entries, datums, tools, opts).await;
                }
            }
            execute::<P>(this.inner, Start::Live(input), Some(tools), opts, None).await
        })
    }

    /// Continues a run from `entries` (durable already), applying `inject` where the recorded
    /// prefix ends: the entry point of the durable protocol (`crate::durable`, workers).
    pub(crate) fn continue_recorded<P: Program>(
        &self,
        entries: Vec<Entry>,
        tools: Arc<P::Tools>,
        opts: RunOptions,
        inject: Option<Inject>,
    ) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
        let inner = self.inner.clone();
        Box::pin(execute::<P>(
            inner,
            Start::Recorded(Mode::Resume, entries),
            Some(tools),
            opts,
            inject,
        ))
    }

    /// Continues a run from its recorded trace: replays the recorded prefix (comparing every
    /// event, answering model and tool calls from the recording), then continues live.
    ///
    /// An effect whose intent is recorded but whose result is not (a crash in the ambiguous
    /// window) is called again with the same idempotency key if its tool is `idempotent`;
    /// otherwise the run ends `needs_reconciliation`. The run id comes from the trace
    /// (`opts.run_id` is ignored). The entries of `trace` are taken to be durable already (pass
    /// what the journal holds, or use [`Runtime::resume_journaled`]); only new entries are
    /// appended to the journal. The `max_duration` budget counts from the resumption.
    pub fn resume<P: Program>(
        &self,
        trace: Trace,
        tools: Arc<P::Tools>,
        opts: RunOptions,
    ) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            execute::<P>(
                inner,
                Start::Recorded(Mode::Resume, trace.into_entries()),
                Some(tools),
                opts,
                None,
            )
            .await
        }
    }

    /// Loads run `run_id` from the journal store, verifies it, and [resumes](Runtime::resume) it.
    pub fn resume_journaled<P: Program>(
        &self,
        run_id: &str,
        tools: Arc<P::Tools>,
        opts: RunOptions,
    ) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
        let this = self.clone();
        let run_id = run_id.to_string();
        async move {
            let store = this.inner.store.clone().ok_or(RunError::NoJournal)?;
            let entries = store
                .load(&run_id)
                .await?
                .ok_or_else(|| RunError::UnknownRun(run_id.clone()))?;
            let trace = Trace::from_entries(entries)?;
            this.resume::<P>(trace, tools, opts).await
        }
    }

    /// Replays a recorded trace without calling any model or tool; see [`crate::replay()`].
    pub fn replay<P: Program>(&self, trace: &Trace) -> Result<ReplayReport, ReplayError> {
        crate::replay::replay::<P>(trace)
    }
}

// ---------------------------------------------------------------------------------------------
// Starting a run
// ---------------------------------------------------------------------------------------------

enum Start<P: Program> {
    Live(P::Input),
    Recorded(Mode, Vec<Entry>),
}

/// How a run finished from the executor's point of view.
struct Ended {
    status: RunStatus,
    step: Option<StepId>,
    message: Option<String>,
}

/// Replays the recorded trace in `entries`; used by [`crate::replay()`].
pub(crate) async fn replay_entries<P: Program>(
    entries: Vec<Entry>,
) -> Result<ReplayReport, RunError> {
    let vault = Arc::new(MemoryVault::new());
    let inner = Arc::new(Inner {
        model: None,
        vault: vault.clone(),
        secrets: vault,
        clock: Arc::new(SystemClock),
        backoff: Backoff::none(),
        store: None,
        operation_lease_ms: crate::durable::OPERATION_LEASE_MS,
    });
    let info = P::info();
    let mut exec = match prepare::<P>(
        inner,
        Start::Recorded(Mode::Replay, entries),
        None,
        RunOptions::default(),
        0,
    ) {
        Ok(Prepared::Ready(exec)) => exec,
        Ok(Prepared::Refused { mut rec, message }) => {
            let ended = match rec.emit(run_ended(RunStatus::Failed, None, Some(&message))) {
                Ok(_) => Ok(()),
                Err(Halt::ReplayEnd(why)) => Err(why),
                Err(Halt::Error(e)) => return Err(e),
            };
            if ended.is_ok() {
                check_leftover(&mut rec)?;
            }
            return Ok(ReplayReport {
                run_id: rec.run_id.to_string(),
                status: if ended.is_ok() {
                    RunStatus::Failed
                } else {
                    RunStatus::Running
                },
                end_step: None,
                path: Vec::new(),
                root: rec.trace.root(),
                entries: rec.trace.len(),
                stopped: ended.err(),
                usage: Usage::default(),
            });
        }
        Err(Halt::Error(e)) => return Err(e),
        Err(Halt::ReplayEnd(why)) => return Err(RunError::NotARun(why)),
    };
    let (status, end_step, stopped) = match exec.drive().await {
        Ok(ended) => {
            exec.check_leftover()?;
            (ended.status, ended.step, None)
        }
        Err(Halt::ReplayEnd(why)) => (RunStatus::Running, None, Some(why)),
        Err(Halt::Error(e)) => return Err(e),
    };
    Ok(ReplayReport {
        run_id: exec.rec.run_id.to_string(),
        status,
        end_step: end_step.and_then(|s| info.steps.get(s as usize).map(|i| i.name.to_string())),
        path: exec.path,
        root: exec.rec.trace.root(),
        entries: exec.rec.trace.len(),
        stopped,
        usage: exec.meter.usage,
    })
}

// Built once per run and moved straight into the loop; boxing it would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Prepared<P: Program> {
    Ready(Exec<P>),
    /// `restore` refused the recorded inputs: the run ends `failed` right after `run_started`.
    Refused {
        rec: Recorder,
        message: String,
    },
}

/// The [`Execution`] a recorded trace describes, replayed without any I/O (no model, no tool,
/// no store): status, path, outputs and root as the run recorded them. A trace that stops
/// mid-run gives status `running`, with the reason in `message`.
pub(crate) fn replay_execution<P: Program>(entries: Vec<Entry>) -> Result<Execution, RunError> {
    use std::task::Waker;
    let vault = Arc::new(MemoryVault::new());
    let inner = Arc::new(Inner {
        model: None,
        vault: vault.clone(),
        secrets: vault,
        clock: Arc::new(SystemClock),
        backoff: Backoff::none(),
        store: None,
        operation_lease_ms: crate::durable::OPERATION_LEASE_MS,
    });
    let fut = std::pin::pin!(execute::<P>(
        inner,
        Start::Recorded(Mode::Replay, entries),
        None,
        RunOptions::default(),
        None,
    ));
    let mut fut = fut;
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(RunError::Internal(
            "a replay waited for I/O, which replays never do".into(),
        )),
    }
}

async fn execute<P: Program>(
    inner: Arc<Inner>,
    start: Start<P>,
    tools: Option<Arc<P::Tools>>,
    opts: RunOptions,
    inject: Option<Inject>,
) -> Result<Execution, RunError> {
    let wall = Instant::now();
    let started_ms = inner.clock.now_ms();
    let info = P::info();
    let replay = matches!(start, Start::Recorded(Mode::Replay, _));
    if inner.model.is_none()
        && !replay
        && let Some(step) = first_llm_step(info)
    {
        return Err(RunError::NoModel { step });
    }
    let prepared = prepare::<P>(inner, start, tools, opts, started_ms).map_err(halt_to_error)?;
    let mut exec = match prepared {
        Prepared::Ready(exec) => exec,
        Prepared::Refused { mut rec, message } => {
            let (status, message) =
                match rec.emit(run_ended(RunStatus::Failed, None, Some(&message))) {
                    Ok(_) => (RunStatus::Failed, message),
                    Err(Halt::ReplayEnd(why)) => (RunStatus::Running, why),
                    Err(Halt::Error(e)) => return Err(e),
                };
            check_leftover(&mut rec)?;
            rec.flush().await.map_err(halt_to_error)?;
            return Ok(Execution {
                run_id: rec.run_id.to_string(),
                status,
                end_step: None,
                message: Some(message),
                outputs: BTreeMap::new(),
                path: Vec::new(),
                trace: rec.trace,
                usage: Usage::default(),
                metrics: Metrics {
                    started_ms,
                    elapsed: wall.elapsed(),
                    step_durations: Vec::new(),
                },
            });
        }
    };
    exec.inject = inject;
    let ended = match exec.drive().await {
        Ok(ended) => ended,
        // Only a replay runs out of recorded entries: the trace stops mid-run.
        Err(Halt::ReplayEnd(why)) => Ended {
            status: RunStatus::Running,
            step: None,
            message: Some(why),
        },
        Err(Halt::Error(e)) => return Err(e),
    };
    exec.check_leftover()?;
    if let Some(inject) = exec.inject.take() {
        // The durable protocol checks where the run stands before injecting; reaching this
        // means the check and the executor disagree. Nothing was appended for the input.
        return Err(RunError::Internal(format!(
            "the run {} without reaching the point where {inject:?} applies",
            ended.status
        )));
    }
    Ok(exec.into_execution(ended, wall))
}

/// After a run ended: a recorded prefix must not hold more than the run produced.
fn check_leftover(rec: &mut Recorder) -> Result<(), RunError> {
    match rec.leftover().map_err(halt_to_error)? {
        None => Ok(()),
        Some(entry) => Err(RunError::Divergence(Box::new(Mismatch {
            index: usize::try_from(entry.seq).unwrap_or(usize::MAX),
            expected: None,
            recorded: Some(entry.event.clone()),
            context: "the run ended, but the trace records more".into(),
        }))),
    }
}

fn halt_to_error(h: Halt) -> RunError {
    match h {
        Halt::Error(e) => e,
        Halt::ReplayEnd(why) => RunError::Internal(format!("replay end outside a replay: {why}")),
    }
}

fn first_llm_step(info: &ProgramInfo) -> Option<&'static str> {
    info.steps.iter().find_map(|s| {
        let branch_llm = s
            .parallel
            .is_some_and(|p| p.branches.iter().any(|b| b.kind == StepKind::Llm));
        (s.kind == StepKind::Llm || branch_llm).then_some(s.name)
    })
}

fn run_ended(status: RunStatus, step: Option<&'static str>, message: Option<&str>) -> Event {
    Event::RunEnded {
        status,
        step: step.map(Cow::Borrowed),
        message: message.map(str::to_owned),
    }
}

/// How outside input at an `await` is recorded: `delivered` when an event with this id came
/// (recorded or injected), `timed_out` when the deadline passed.
fn arrival(
    step: Name,
    event: &'static str,
    event_id: Option<String>,
    payload: Json,
    next: Name,
) -> Event {
    match event_id {
        Some(event_id) => Event::Delivered {
            step,
            event: Cow::Borrowed(event),
            event_id,
            payload,
            next,
        },
        None => Event::TimedOut { step, next },
    }
}

/// Builds the executor: records `run_started` and restores the state from the recorded inputs
/// (live runs, resumes and replays all start from the recorded form).
fn prepare<P: Program>(
    inner: Arc<Inner>,
    start: Start<P>,
    tools: Option<Arc<P::Tools>>,
    opts: RunOptions,
    started_ms: u64,
) -> Result<Prepared<P>, Halt> {
    let info = P::info();
    let names = info.inputs.iter().map(|i| Cow::Borrowed(i.name));
    let (mode, run_id, datums, recorded) = match start {
        Start::Live(input) => {
            let datums = P::record_input(&input);
            let run_id = match opts.run_id {
                Some(id) => id,
                None => ids::run_id_of(&info.hash, info.inputs, &datums),
            };
            (Mode::Live, run_id, datums, Vec::new())
        }
        Start::Recorded(mode, entries) => {
            let Some(first) = entries.first() else {
                return Err(RunError::NotARun("the trace is empty".into()).into());
            };
            let Event::RunStarted {
                run_id,
                program_hash,
                inputs,
                ..
            } = &first.event
            else {
                return Err(RunError::NotARun(format!(
                    "the first event is `{}`, not `run_started`",
                    first.event.kind()
                ))
                .into());
            };
            if *program_hash != info.hash {
                return Err(RunError::ProgramMismatch {
                    program: info.name,
                    compiled: info.hash,
                    recorded: *program_hash,
                }
                .into());
            }
            let datums = inputs.iter().map(|(_, d)| d.clone()).collect();
            (mode, run_id.clone(), datums, entries)
        }
    };
    let store = match mode {
        Mode::Replay => None,
        Mode::Live | Mode::Resume => inner.store.clone(),
    };
    // Room for the whole trace of a typical run: about two events per step.
    let capacity = match mode {
        Mode::Live => (info.steps.len() * 2 + 4).min(1024),
        Mode::Replay | Mode::Resume => recorded.len() + 8,
    };
    let mut rec = Recorder::new(
        Arc::from(run_id.as_str()),
        mode,
        store,
        opts.fence,
        recorded,
        capacity,
    );
    let state = P::restore(&datums);
    rec.emit(Event::RunStarted {
        run_id,
        program: Cow::Borrowed(info.name),
        program_hash: info.hash,
        inputs: names.zip(datums).collect(),
    })?;
    let state = match state {
        Ok(s) => s,
        Err(fault) => {
            return Ok(Prepared::Refused {
                rec,
                message: fault.to_string(),
            });
        }
    };
    Ok(Prepared::Ready(Exec {
        meter: Meter::new(info.budget),
        visits: vec![0; info.steps.len()],
        path: Vec::with_capacity(info.steps.len().min(64)),
        cancel: opts.cancel,
        started_ms,
        step_clock: None,
        effect_key: None,
        step_durations: Vec::with_capacity(info.steps.len().min(64)),
        inject: None,
        inner,
        info,
        tools,
        state,
        rec,
    }))
}

// ---------------------------------------------------------------------------------------------
// The step loop
// ---------------------------------------------------------------------------------------------

struct Exec<P: Program> {
    inner: Arc<Inner>,
    info: &'static ProgramInfo,
    tools: Option<Arc<P::Tools>>,
    state: P::State,
    rec: Recorder,
    meter: Meter,
    /// Times each step was entered, indexed by step id.
    visits: Vec<u32>,
    /// The names of the steps entered, in order.
    path: Vec<&'static str>,
    cancel: Option<CancelToken>,
    started_ms: u64,
    step_clock: Option<(&'static str, Instant)>,
    /// See [`ids::effect_key`].
    effect_key: Option<[u8; 32]>,
    step_durations: Vec<(&'static str, Duration)>,
    /// Input from outside (a delivered event, a due timeout, an operator's reconciliation)
    /// applied where the recorded prefix ends; taken when applied.
    inject: Option<Inject>,
}

/// What the step loop does after a step.
enum Flow {
    /// Continue at this step (the current one completed).
    Go(StepId),
    /// Run the same step again (a stall).
    Again,
    /// The run is over (or suspended).
    End(Ended),
}

/// Something outside the program stopped an in-flight call or a step from starting.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Cancelled,
    /// The duration budget ran out, with this much time used (ms).
    OutOfTime(u64),
}

/// The answer to a model or tool call: done, or interrupted.
enum Io<T> {
    Done(T),
    Stopped(Verdict),
}

/// A tool call's answer, or the decision that an ambiguous effect must not be repeated.
enum ToolIo {
    Done(Result<Json, ToolError>),
    Stopped(Verdict),
    Reconcile,
    /// The run is (still) waiting for an operator: the recorded pause was reproduced and no
    /// answer for the effect follows it.
    Paused(Ended),
}

/// The outcome of [`Exec::settle`] at a reconciliation pause.
enum Settle {
    /// No operator answer (yet) for some effect: the run pauses `needs_reconciliation`.
    Paused(Ended),
    /// Every ambiguous effect has an answer: `(effect id, result, live)`; `result: None` means
    /// the effect did not happen, and `live` that the last answer was given in this execution
    /// (so no earlier execution got to call the tools after the answers: calling them now is
    /// safe; otherwise a `None` only holds if the call that followed it is recorded too).
    Resolved(Vec<(Digest, Option<Json>, bool)>),
}

/// The successor named by a transition, with the arm for decisions.
fn target(next: &Next) -> Option<(Option<u32>, StepId)> {
    match next {
        Next::Go(to) => Some((None, *to)),
        Next::Decided { arm, to } => Some((*arm, *to)),
        _ => None,
    }
}

/// Trims the model's text and matches it exactly (case-sensitive) against the admissible
/// answers; anything else is `Invalid`. Text steps get the raw text.
fn normalize<'a>(text: &'a str, choices: Option<&'static [&'static str]>) -> Outcome<'a> {
    match choices {
        Some(cs) => {
            let t = text.trim();
            cs.iter()
                .position(|c| *c == t)
                .map_or(Outcome::Invalid, Outcome::Choice)
        }
        None => Outcome::Text(text),
    }
}

fn into_reply(r: Result<ModelReply, ModelError>) -> Reply {
    match r {
        Ok(m) => Reply::Answer {
            text: m.text,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            cache_hit: m.cache_hit,
            tokens_estimated: m.tokens_estimated,
        },
        Err(e) => Reply::Error {
            message: e.message,
            retryable: e.retryable,
        },
    }
}

fn recorded_reply(r: &Reply) -> Result<ModelReply, ModelError> {
    match r {
        Reply::Answer {
            text,
            prompt_tokens,
            completion_tokens,
            cache_hit,
            tokens_estimated,
        } => Ok(ModelReply {
            text: text.clone(),
            prompt_tokens: *prompt_tokens,
            completion_tokens: *completion_tokens,
            cache_hit: *cache_hit,
            tokens_estimated: *tokens_estimated,
        }),
        Reply::Error { message, retryable } => Err(ModelError {
            message: message.clone(),
            retryable: *retryable,
        }),
    }
}

fn recorded_result(r: &ToolOutcome) -> Result<Json, ToolError> {
    match r {
        ToolOutcome::Ok(v) => Ok(v.clone()),
        ToolOutcome::Err { message, retryable } => Err(ToolError {
            message: message.clone(),
            retryable: *retryable,
        }),
    }
}

fn into_outcome(r: Result<Json, ToolError>) -> ToolOutcome {
    match r {
        Ok(v) => ToolOutcome::Ok(v),
        Err(e) => ToolOutcome::Err {
            message: e.message,
            retryable: e.retryable,
        },
    }
}

fn named(args: Vec<(&'static str, Datum)>) -> Vec<(Name, Datum)> {
    args.into_iter()
        .map(|(n, d)| (Cow::Borrowed(n), d))
        .collect()
}

/// Races `fut` against cancellation and the duration deadline.
///
/// The call is polled once first: a call that completes at once (a cached reply, an in-memory
/// tool) never creates the deadline timer. `deadline` is asked for the timer only when the call
/// has to wait.
async fn race<F: Future>(
    fut: F,
    cancel: Option<&CancelToken>,
    deadline: impl FnOnce() -> Option<BoxFuture<'static, ()>>,
) -> Result<F::Output, Verdict> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(v);
    }
    let deadline = deadline();
    if cancel.is_none() && deadline.is_none() {
        return Ok(fut.await);
    }
    let cancelled = async {
        match cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let timeout = async {
        match deadline {
            Some(d) => d.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        v = fut => Ok(v),
        () = cancelled => Err(Verdict::Cancelled),
        () = timeout => Err(Verdict::OutOfTime(0)),
    }
}

/// The parallel step's in-flight calls, polled together in this task. Unlike a plain join it
/// keeps the outputs of the calls that finished when the whole batch is interrupted.
struct JoinAll<'a, T> {
    slots: Vec<(Option<BoxFuture<'a, T>>, Option<T>)>,
}

impl<T> Unpin for JoinAll<'_, T> {}

impl<T> Future for JoinAll<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for (fut, out) in &mut self.get_mut().slots {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *fut = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// Why a parallel round ends the run before its outcomes are applied.
enum RoundStop {
    /// Cancellation or the duration budget, during the round.
    Interrupted(Verdict),
    /// The replies of the round used more tokens than allowed.
    Tokens(Trip),
    /// After a crash: effects of the round whose outcome is unknown and which must not be
    /// called again.
    Reconcile(Vec<(&'static ToolInfo, Digest)>),
    /// A recorded reconciliation pause with no operator answer (yet) for some effect.
    Paused(Ended),
}

/// The effects of a round whose outcome is unknown and which must not be called again: no
/// answer, an intent recorded before this execution, a tool that is not idempotent, and no
/// operator's `NotDone` in this execution (`cleared`). In declaration order.
fn round_ambiguous<C>(jobs: &[Job<C>], cleared: &[bool]) -> Vec<(&'static ToolInfo, Digest)> {
    jobs.iter()
        .zip(cleared)
        .filter(|(j, c)| {
            !**c && j.answer.is_none()
                && matches!(j.kind, JobKind::Tool { tool, intent_recorded: true, .. } if !tool.idempotent)
        })
        .filter_map(|(j, _)| j.effect())
        .collect()
}

/// Per-branch progress inside one visit of a parallel step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BranchState {
    Pending,
    Succeeded,
    GivenUp,
}

/// One branch run inside a parallel batch.
struct Job<C> {
    branch: usize,
    name: &'static str,
    attempt: u32,
    kind: JobKind<C>,
    answer: Option<JobAnswer>,
}

enum JobKind<C> {
    Model(ModelRequest),
    Tool {
        tool: &'static ToolInfo,
        key: Digest,
        /// The arguments for the result event (read-only tools; effects record them in the
        /// intent).
        args: Option<Vec<(Name, Datum)>>,
        call: Option<C>,
        /// The intent came from the recorded prefix.
        intent_recorded: bool,
    },
}

enum JobAnswer {
    Model(Result<ModelReply, ModelError>),
    Tool(Result<Json, ToolError>),
}

impl<C> Job<C> {
    fn effect(&self) -> Option<(&'static ToolInfo, Digest)> {
        match &self.kind {
            JobKind::Tool { tool, key, .. } if tool.effect => Some((tool, *key)),
            _ => None,
        }
    }
}

/// The message of a reconciliation pause (`run_ended: needs_reconciliation`).
fn pause_message(effects: &[(&'static ToolInfo, Digest)]) -> String {
    let list: Vec<String> = effects
        .iter()
        .map(|(t, k)| format!("`{}` (effect id {})", t.name, k))
        .collect();
    format!(
        "the outcome of effect {} is unknown (its intent was recorded before an interruption) and the tool is not idempotent: an operator must reconcile it",
        list.join(", ")
    )
}

fn in_flight_message(effects: &[(&'static ToolInfo, Digest)]) -> Option<String> {
    if effects.is_empty() {
        return None;
    }
    let list: Vec<String> = effects
        .iter()
        .map(|(t, k)| format!("`{}` (effect id {})", t.name, k))
        .collect();
    Some(format!(
        "interrupted while effect {} was in flight; its outcome is unknown",
        list.join(", ")
    ))
}

impl<P: Program> Exec<P> {
    fn step_info(&self, step: StepId) -> Result<&'static StepInfo, Halt> {
        self.info.steps.get(step as usize).ok_or_else(|| {
            RunError::InvalidProgram(format!(
                "program `{}` named step #{step}, which does not exist",
                self.info.name
            ))
            .into()
        })
    }

    /// The step's name for messages (`?` for an id the program should never produce).
    fn label(&self, step: StepId) -> &'static str {
        self.info.steps.get(step as usize).map_or("?", |s| s.name)
    }

    fn name(&self, step: StepId) -> Result<Name, Halt> {
        Ok(Cow::Borrowed(self.step_info(step)?.name))
    }

    fn tool_info(&self, index: usize) -> Result<&'static ToolInfo, Halt> {
        self.info.tools.get(index).ok_or_else(|| {
            RunError::InvalidProgram(format!(
                "program `{}` called tool #{index}, which does not exist",
                self.info.name
            ))
            .into()
        })
    }

    /// The key of this run's effect ids, derived on first use.
    fn effect_key(&mut self) -> [u8; 32] {
        *self
            .effect_key
            .get_or_insert_with(|| ids::effect_key(&self.rec.run_id))
    }

    fn elapsed_ms(&self) -> u64 {
        self.inner.clock.now_ms().saturating_sub(self.started_ms)
    }

    /// Counts a step entered.
    fn enter(&mut self, step: StepId, name: &'static str) {
        let now = Instant::now();
        self.close_step(now);
        self.step_clock = Some((name, now));
        self.meter.usage.steps += 1;
        if let Some(v) = self.visits.get_mut(step as usize) {
            *v = v.saturating_add(1);
        }
        self.path.push(name);
    }

    /// Ends the timing of the step in progress, if any, at `now`.
    fn close_step(&mut self, now: Instant) {
        if let Some((name, t)) = self.step_clock.take() {
            self.step_durations
                .push((name, now.saturating_duration_since(t)));
        }
    }

    /// The main loop.
    async fn drive(&mut self) -> Result<Ended, Halt> {
        let mut step = self.info.start;
        loop {
            let si = self.step_info(step)?;
            if si.kind != StepKind::End {
                if let Some(ended) = self.interrupted(step).await? {
                    return Ok(ended);
                }
                if let Some(trip) = self.meter.check_steps(1) {
                    return self.trip(step, trip, None).await;
                }
            }
            let action = match P::action(step, &self.state) {
                Ok(a) => a,
                Err(fault) => {
                    return self
                        .end(RunStatus::Failed, Some(step), Some(fault.to_string()))
                        .await;
                }
            };
            let flow = match action {
                Action::End { success, message } => {
                    self.close_step(Instant::now());
                    self.path.push(si.name);
                    let status = if success {
                        RunStatus::Success
                    } else {
                        RunStatus::Failed
                    };
                    return self
                        .end(status, Some(step), message.map(str::to_owned))
                        .await;
                }
                Action::Decide => {
                    self.enter(step, si.name);
                    self.decide(step).await?
                }
                Action::Llm(call) => {
                    self.enter(step, si.name);
                    self.llm(step, call).await?
                }
                Action::Tool(call) => {
                    self.enter(step, si.name);
                    self.tool(step, call).await?
                }
                Action::Parallel => {
                    self.enter(step, si.name);
                    // Boxed: the parallel step's state is large and rare; keeping it out of
                    // the loop's future keeps that small for every other run.
                    Box::pin(self.parallel(step)).await?
                }
                Action::Await { event, timeout } => {
                    self.enter(step, si.name);
                    self.await_event(step, event, timeout).await?
                }
            };
            match flow {
                Flow::Go(to) => {
                    self.meter.completed();
                    step = to;
                }
                Flow::Again => {}
                Flow::End(ended) => return Ok(ended),
            }
        }
    }

    /// Records `run_ended` and makes the trace durable.
    async fn end(
        &mut self,
        status: RunStatus,
        step: Option<StepId>,
        message: Option<String>,
    ) -> Result<Ended, Halt> {
        let step_name = match step {
            Some(s) => Some(self.step_info(s)?.name),
            None => None,
        };
        self.rec
            .emit(run_ended(status, step_name, message.as_deref()))?;
        self.rec.flush().await?;
        Ok(Ended {
            status,
            step,
            message,
        })
    }

    async fn fail(&mut self, step: StepId, message: String) -> Result<Flow, Halt> {
        Ok(Flow::End(
            self.end(RunStatus::Failed, Some(step), Some(message))
                .await?,
        ))
    }

    /// Records a budget trip and ends the run (`stalled` for the stall budget).
    async fn trip(
        &mut self,
        step: StepId,
        trip: Trip,
        message: Option<String>,
    ) -> Result<Ended, Halt> {
        self.rec.emit(Event::BudgetExceeded {
            step: self.name(step)?,
            budget: trip.budget,
            limit: trip.limit,
            used: trip.used,
        })?;
        let status = if trip.budget == BudgetKind::MaxStalledSteps {
            RunStatus::Stalled
        } else {
            RunStatus::BudgetExceeded
        };
        self.end(status, Some(step), message).await
    }

    async fn stop(
        &mut self,
        step: StepId,
        verdict: Verdict,
        message: Option<String>,
    ) -> Result<Ended, Halt> {
        match verdict {
            Verdict::Cancelled => self.end(RunStatus::Cancelled, Some(step), message).await,
            Verdict::OutOfTime(used) => {
                let limit = self.meter.duration_limit_ms().unwrap_or(used);
                let trip = Trip {
                    budget: BudgetKind::MaxDuration,
                    limit,
                    used: used.max(limit),
                };
                self.trip(step, trip, message).await
            }
        }
    }

    /// Cancellation or the duration budget, as recorded (with a recorded prefix) or as it is
    /// now (live).
    fn verdict(&self) -> Option<Verdict> {
        if self.rec.replaying() {
            return self.recorded_verdict();
        }
        if self.rec.replay_over() {
            return None;
        }
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Some(Verdict::Cancelled);
        }
        self.meter.duration_limit_ms()?;
        self.meter
            .check_duration(self.elapsed_ms())
            .map(|t| Verdict::OutOfTime(t.used))
    }

    /// A cancellation or duration trip recorded next. Both are taken as truth (they came from
    /// outside the program) if they are consistent with the program's budget.
    fn recorded_verdict(&self) -> Option<Verdict> {
        self.verdict_in(self.rec.peek()?)
    }

    /// The verdict `event` records, if it is a cancellation or a duration trip consistent with
    /// the program's budget.
    fn verdict_in(&self, event: &Event) -> Option<Verdict> {
        match event {
            Event::RunEnded {
                status: RunStatus::Cancelled,
                ..
            } => Some(Verdict::Cancelled),
            Event::BudgetExceeded {
                budget: BudgetKind::MaxDuration,
                limit,
                used,
                ..
            } if self.meter.duration_limit_ms() == Some(*limit) && used >= limit => {
                Some(Verdict::OutOfTime(*used))
            }
            _ => None,
        }
    }

    /// Checked before every step and every retry attempt: cancellation, then the duration.
    async fn interrupted(&mut self, step: StepId) -> Result<Option<Ended>, Halt> {
        match self.verdict() {
            None => Ok(None),
            Some(v) => self.stop(step, v, None).await.map(Some),
        }
    }

    /// Makes the timer that fires when the duration budget runs out (live runs only). It is
    /// built lazily by [`race`], and owns what it needs, so no borrow of the executor is held
    /// across the call.
    fn deadline(&self) -> impl FnOnce() -> Option<BoxFuture<'static, ()>> + Send + 'static {
        let timer = self
            .meter
            .duration_limit_ms()
            .map(|limit| (self.inner.clock.clone(), self.started_ms, limit));
        move || {
            let (clock, started, limit) = timer?;
            let elapsed = clock.now_ms().saturating_sub(started);
            Some(clock.sleep(Duration::from_millis(limit.saturating_sub(elapsed))))
        }
    }

    /// Turns a live race's result into a verdict with the time used.
    fn live_verdict(&self, v: Verdict) -> Verdict {
        match v {
            Verdict::Cancelled => Verdict::Cancelled,
            Verdict::OutOfTime(_) => Verdict::OutOfTime(self.elapsed_ms()),
        }
    }

    /// Waits before retry attempt `failures + 1`. Recorded attempts and replays do not wait;
    /// the wait never outlasts the duration budget and ends early on cancellation.
    async fn backoff(&mut self, failures: u32) {
        if self.rec.mode == Mode::Replay || self.rec.replaying() {
            return;
        }
        let mut delay = self.inner.backoff.delay(failures);
        if let Some(limit) = self.meter.duration_limit_ms() {
            let remaining = limit.saturating_sub(self.elapsed_ms());
            delay = delay.min(Duration::from_millis(remaining));
        }
        if delay.is_zero() {
            return;
        }
        let sleep = self.inner.clock.sleep(delay);
        let _ = race(sleep, self.cancel.as_ref(), || None).await;
    }

    /// Before attempt `attempt` (2 or more) of a step: the backoff, then the interruption
    /// checks; counts the retry unless the run ends here.
    async fn before_retry(&mut self, step: StepId, attempt: u32) -> Result<Option<Ended>, Halt> {
        self.backoff(attempt - 1).await;
        let ended = self.interrupted(step).await?;
        if ended.is_none() {
            self.meter.usage.retries += 1;
        }
        Ok(ended)
    }

    // --- guard / branch ----------------------------------------------------------------------

    async fn decide(&mut self, step: StepId) -> Result<Flow, Halt> {
        let next = P::transition(step, &mut self.state, Outcome::Decide);
        match target(&next) {
            Some((arm, to)) => {
                self.rec.emit(Event::Decision {
                    step: self.name(step)?,
                    arm,
                    next: self.name(to)?,
                })?;
                Ok(Flow::Go(to))
            }
            None => {
                let msg = self.refusal(step, next);
                self.fail(step, msg).await
            }
        }
    }

    /// The run-failure message for a transition that named no successor.
    fn refusal(&self, step: StepId, next: Next) -> String {
        match next {
            Next::Fail(msg) | Next::Reject(msg) => msg,
            Next::Fault(f) => f.to_string(),
            Next::Stall => format!(
                "the program answered `stall` for step `{}`, which is not a model step",
                self.label(step)
            ),
            Next::Go(_) | Next::Decided { .. } => String::new(),
        }
    }

    // --- llm ---------------------------------------------------------------------------------

    async fn llm(&mut self, step: StepId, call: LlmCall) -> Result<Flow, Halt> {
        let si = self.step_info(step)?;
        let max_attempts = si.retry.saturating_add(1);
        let LlmCall {
            system,
            prompt,
            model,
            max_tokens,
            choices,
        } = call;
        let mut req = ModelRequest {
            step: Cow::Borrowed(si.name),
            model: model.map(Cow::Borrowed),
            system,
            prompt,
            max_tokens,
            choices,
        };
        let mut attempt = 1u32;
        loop {
            if attempt > 1
                && let Some(ended) = self.before_retry(step, attempt).await?
            {
                return Ok(Flow::End(ended));
            }
            if let Some(trip) = self.meter.check_tokens_before() {
                return Ok(Flow::End(self.trip(step, trip, None).await?));
            }
            let answer = match self.ask_model(step, &req).await? {
                Io::Done(a) => a,
                Io::Stopped(v) => return Ok(Flow::End(self.stop(step, v, None).await?)),
            };
            self.meter.usage.model_calls += 1;
            let (reply, failure, retryable) = match answer {
                Ok(reply) => {
                    self.account(&reply);
                    if let Some(trip) = self.meter.check_tokens_after() {
                        self.emit_model(step, &mut req, None, attempt, Ok(reply), None, false)?;
                        return Ok(Flow::End(self.trip(step, trip, None).await?));
                    }
                    let next =
                        P::transition(step, &mut self.state, normalize(&reply.text, req.choices));
                    match next {
                        Next::Go(to) | Next::Decided { to, .. } => {
                            self.emit_model(
                                step,
                                &mut req,
                                None,
                                attempt,
                                Ok(reply),
                                Some(to),
                                false,
                            )?;
                            return Ok(Flow::Go(to));
                        }
                        Next::Stall => {
                            self.emit_model(step, &mut req, None, attempt, Ok(reply), None, false)?;
                            if let Some(trip) = self.meter.stall() {
                                return Ok(Flow::End(self.trip(step, trip, None).await?));
                            }
                            return Ok(Flow::Again);
                        }
                        Next::Reject(msg) => (Ok(reply), msg, true),
                        other @ (Next::Fail(_) | Next::Fault(_)) => {
                            self.emit_model(step, &mut req, None, attempt, Ok(reply), None, false)?;
                            let msg = self.refusal(step, other);
                            return self.fail(step, msg).await;
                        }
                    }
                }
                Err(e) => {
                    let msg = e.message.clone();
                    let retryable = e.retryable;
                    (Err(e), msg, retryable)
                }
            };
            if retryable && attempt < max_attempts {
                self.emit_model(step, &mut req, None, attempt, reply, None, true)?;
                attempt += 1;
                continue;
            }
            let next = P::transition(step, &mut self.state, Outcome::Failed);
            return match target(&next) {
                Some((_, to)) => {
                    self.emit_model(step, &mut req, None, attempt, reply, Some(to), false)?;
                    Ok(Flow::Go(to))
                }
                None => {
                    self.emit_model(step, &mut req, None, attempt, reply, None, false)?;
                    let msg = self.refusal(step, next);
                    self.fail(step, format!("{msg}: {failure}")).await
                }
            };
        }
    }

    fn account(&mut self, reply: &ModelReply) {
        let u = &mut self.meter.usage;
        u.prompt_tokens = u.prompt_tokens.saturating_add(reply.prompt_tokens);
        u.completion_tokens = u.completion_tokens.saturating_add(reply.completion_tokens);
        u.cache_hits += u64::from(reply.cache_hit);
    }

    /// Records a model attempt. `keep` leaves the prompt in `req` for another attempt (cloned);
    /// otherwise it is moved into the event.
    #[allow(clippy::too_many_arguments)]
    fn emit_model(
        &mut self,
        step: StepId,
        req: &mut ModelRequest,
        branch: Option<&'static str>,
        attempt: u32,
        reply: Result<ModelReply, ModelError>,
        next: Option<StepId>,
        keep: bool,
    ) -> Result<(), Halt> {
        let (system, prompt) = if keep {
            (req.system.clone(), req.prompt.clone())
        } else {
            (req.system.take(), std::mem::take(&mut req.prompt))
        };
        let next = match next {
            Some(n) => Some(self.name(n)?),
            None => None,
        };
        self.rec.emit(Event::Model {
            step: self.name(step)?,
            branch: branch.map(Cow::Borrowed),
            attempt,
            model: req.model.clone(),
            system,
            prompt,
            reply: into_reply(reply),
            next,
        })?;
        Ok(())
    }

    /// The model's answer: recorded, or asked live (raced against cancellation and the
    /// duration budget).
    async fn ask_model(
        &mut self,
        step: StepId,
        req: &ModelRequest,
    ) -> Result<Io<Result<ModelReply, ModelError>>, Halt> {
        if self.rec.replaying() {
            if let Some(Event::Model { reply, .. }) = self.rec.peek() {
                return Ok(Io::Done(recorded_reply(reply)));
            }
            if let Some(v) = self.recorded_verdict() {
                return Ok(Io::Stopped(v));
            }
            return Err(self.missing_answer(format!("a model reply for `{}`", req.step)));
        }
        if self.rec.replay_over() {
            return Err(Halt::ReplayEnd(format!(
                "the recorded trace ends before the model reply of `{}`",
                req.step
            )));
        }
        let Some(model) = self.inner.model.clone() else {
            return Err(RunError::NoModel {
                step: self.step_info(step)?.name,
            }
            .into());
        };
        match race(model.complete(req), self.cancel.as_ref(), self.deadline()).await {
            Ok(r) => Ok(Io::Done(r)),
            Err(v) => Ok(Io::Stopped(self.live_verdict(v))),
        }
    }

    fn missing_answer(&self, wanted: String) -> Halt {
        let (index, recorded) = match self.rec.peek_entry() {
            Some(e) => (e.seq, Some(e.event.clone())),
            None => (self.rec.trace.len() as u64, None),
        };
        divergence(index, None, recorded, format!("the program needs {wanted}"))
    }

    // --- call --------------------------------------------------------------------------------

    async fn tool(&mut self, step: StepId, call: P::Call) -> Result<Flow, Halt> {
        let si = self.step_info(step)?;
        let max_attempts = si.retry.saturating_add(1);
        let visit = self.visits.get(step as usize).copied().unwrap_or(1);
        let mut call = Some(call);
        let mut attempt = 1u32;
        loop {
            if attempt > 1 {
                if let Some(ended) = self.before_retry(step, attempt).await? {
                    return Ok(Flow::End(ended));
                }
                // The state is unchanged by a failed attempt: the call is built again.
                call = match P::action(step, &self.state) {
                    Ok(Action::Tool(c)) => Some(c),
                    Ok(_) => {
                        return Err(RunError::InvalidProgram(format!(
                            "step `{}` stopped asking for a tool call between attempts",
                            si.name
                        ))
                        .into());
                    }
                    Err(fault) => return self.fail(step, fault.to_string()).await,
                };
            }
            let Some(c) = call.take() else {
                return Err(RunError::Internal("tool call missing".into()).into());
            };
            if let Some(trip) = self.meter.check_tool_calls(1) {
                return Ok(Flow::End(self.trip(step, trip, None).await?));
            }
            let tool = self.tool_info(c.tool())?;
            let args = named(c.args());
            let effect_key = self.effect_key();
            let key = ids::effect_id_with(
                &mut self.rec.scratch,
                &effect_key,
                si.name,
                None,
                visit,
                &args,
            );
            let (io, args) = self.call_tool(step, attempt, tool, key, args, c).await?;
            let (result, failure, retryable) = match io {
                ToolIo::Done(Ok(json)) => {
                    let next = P::transition(step, &mut self.state, Outcome::Tool(&json));
                    match next {
                        Next::Go(to) | Next::Decided { to, .. } => {
                            self.emit_tool_result(
                                step,
                                None,
                                attempt,
                                tool,
                                key,
                                args,
                                Ok(json),
                                Some(to),
                            )
                            .await?;
                            return Ok(Flow::Go(to));
                        }
                        Next::Reject(msg) => (Ok(json), msg, true),
                        other @ (Next::Fail(_) | Next::Fault(_) | Next::Stall) => {
                            self.emit_tool_result(
                                step,
                                None,
                                attempt,
                                tool,
                                key,
                                args,
                                Ok(json),
                                None,
                            )
                            .await?;
                            let msg = self.refusal(step, other);
                            return self.fail(step, msg).await;
                        }
                    }
                }
                ToolIo::Done(Err(e)) => {
                    let msg = e.message.clone();
                    let retryable = e.retryable;
                    (Err(e), msg, retryable)
                }
                ToolIo::Stopped(v) => {
                    let msg = if tool.effect {
                        in_flight_message(&[(tool, key)])
                    } else {
                        None
                    };
                    return Ok(Flow::End(self.stop(step, v, msg).await?));
                }
                ToolIo::Reconcile => {
                    return Ok(Flow::End(self.reconcile(step, &[(tool, key)]).await?));
                }
                ToolIo::Paused(ended) => return Ok(Flow::End(ended)),
            };
            if retryable && attempt < max_attempts {
                self.emit_tool_result(step, None, attempt, tool, key, args, result, None)
                    .await?;
                attempt += 1;
                continue;
            }
            let next = P::transition(step, &mut self.state, Outcome::Failed);
            return match target(&next) {
                Some((_, to)) => {
                    self.emit_tool_result(step, None, attempt, tool, key, args, result, Some(to))
                        .await?;
                    Ok(Flow::Go(to))
                }
                None => {
                    self.emit_tool_result(step, None, attempt, tool, key, args, result, None)
                        .await?;
                    let msg = self.refusal(step, next);
                    self.fail(step, format!("{msg}: {failure}")).await
                }
            };
        }
    }

    /// Writes the intent of an effect and makes it durable, then gets the answer: recorded,
    /// or by invoking the tool (raced against cancellation and the duration budget). Returns
    /// the arguments for the result event (read-only tools only).
    async fn call_tool(
        &mut self,
        step: StepId,
        attempt: u32,
        tool: &'static ToolInfo,
        key: Digest,
        args: Vec<(Name, Datum)>,
        call: P::Call,
    ) -> Result<(ToolIo, Option<Vec<(Name, Datum)>>), Halt> {
        let step_name = self.step_info(step)?.name;
        let (intent_recorded, args) = if tool.effect {
            let recorded = self.rec.emit(Event::ToolIntent {
                step: Cow::Borrowed(step_name),
                branch: None,
                attempt,
                tool: Cow::Borrowed(tool.name),
                effect_id: key,
                args,
            })?;
            self.rec.flush().await?;
            (recorded, None)
        } else {
            (false, Some(args))
        };
        self.meter.usage.tool_calls += 1;
        // Calling the tool live is safe when its intent is new, when the tool is idempotent,
        // or when an operator said in this execution that the effect did not happen.
        let mut cleared = !intent_recorded || tool.idempotent;
        while self.rec.replaying() {
            if let Some(Event::ToolResult { result, .. }) = self.rec.peek() {
                return Ok((ToolIo::Done(recorded_result(result)), args));
            }
            if tool.effect && self.pause_next() {
                match self.settle(step, vec![(tool, key)]).await? {
                    Settle::Paused(ended) => return Ok((ToolIo::Paused(ended), args)),
                    Settle::Resolved(answers) => match answers.into_iter().next() {
                        Some((_, Some(result), _)) => return Ok((ToolIo::Done(Ok(result)), args)),
                        Some((_, None, live)) => {
                            cleared = live;
                            continue;
                        }
                        None => {
                            return Err(RunError::Internal(
                                "a reconciliation without an answer".into(),
                            )
                            .into());
                        }
                    },
                }
            }
            if let Some(v) = self.recorded_verdict() {
                return Ok((ToolIo::Stopped(v), args));
            }
            return Err(self.missing_answer(format!(
                "a result of tool `{}` for `{step_name}`",
                tool.name
            )));
        }
        if self.rec.replay_over() {
            return Err(Halt::ReplayEnd(format!(
                "the recorded trace ends before the result of tool `{}` at `{step_name}`{}",
                tool.name,
                if intent_recorded {
                    " (its intent is recorded: the outcome is ambiguous)"
                } else {
                    ""
                }
            )));
        }
        if !cleared {
            return Ok((ToolIo::Reconcile, args));
        }
        let ctx = self.context(step_name, attempt, key);
        let Some(tools) = &self.tools else {
            return Err(RunError::Internal("a live call without tools".into()).into());
        };
        let fut = P::invoke(tools, call, ctx);
        let io = match race(fut, self.cancel.as_ref(), self.deadline()).await {
            Ok(r) => ToolIo::Done(r),
            Err(v) => ToolIo::Stopped(self.live_verdict(v)),
        };
        Ok((io, args))
    }

    fn context(&self, step: &'static str, attempt: u32, key: Digest) -> ToolContext {
        ToolContext {
            run_id: self.rec.run_id.clone(),
            step,
            attempt,
            idempotency_key: key,
            vault: self.inner.secrets.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit_tool_result(
        &mut self,
        step: StepId,
        branch: Option<&'static str>,
        attempt: u32,
        tool: &'static ToolInfo,
        key: Digest,
        args: Option<Vec<(Name, Datum)>>,
        result: Result<Json, ToolError>,
        next: Option<StepId>,
    ) -> Result<(), Halt> {
        self.push_tool_result(step, branch, attempt, tool, key, args, result, next)?;
        if tool.effect {
            self.rec.flush().await?;
        }
        Ok(())
    }

    /// Records a tool result without making it durable (a parallel round's results are made
    /// durable together, in one write, after the round: a crash never leaves half of them).
    #[allow(clippy::too_many_arguments)]
    fn push_tool_result(
        &mut self,
        step: StepId,
        branch: Option<&'static str>,
        attempt: u32,
        tool: &'static ToolInfo,
        key: Digest,
        args: Option<Vec<(Name, Datum)>>,
        result: Result<Json, ToolError>,
        next: Option<StepId>,
    ) -> Result<(), Halt> {
        let next = match next {
            Some(n) => Some(self.name(n)?),
            None => None,
        };
        self.rec.emit(Event::ToolResult {
            step: self.name(step)?,
            branch: branch.map(Cow::Borrowed),
            attempt,
            tool: Cow::Borrowed(tool.name),
            key,
            args,
            result: into_outcome(result),
            next,
        })?;
        Ok(())
    }

    /// An effect's intent is recorded, its outcome is not, and its tool is not idempotent:
    /// calling it again could repeat the effect, so an operator must decide.
    async fn reconcile(
        &mut self,
        step: StepId,
        effects: &[(&'static ToolInfo, Digest)],
    ) -> Result<Ended, Halt> {
        let message = pause_message(effects);
        self.end(RunStatus::NeedsReconciliation, Some(step), Some(message))
            .await
    }

    /// True when the recorded prefix continues with a reconciliation pause
    /// (`run_ended: needs_reconciliation`).
    fn pause_next(&self) -> bool {
        matches!(
            self.rec.peek(),
            Some(Event::RunEnded {
                status: RunStatus::NeedsReconciliation,
                ..
            })
        )
    }

    /// At a reconciliation pause for the ambiguous `effects` of `step` (recorded next in the
    /// prefix): reproduces the pause, then takes the operator's answers that follow it, the
    /// recorded `reconciled` events and, where the prefix ends, the injected one (recorded
    /// live and made durable before anything else). Effects still without an answer pause the
    /// run again: reproduced if recorded, live otherwise.
    async fn settle(
        &mut self,
        step: StepId,
        mut effects: Vec<(&'static ToolInfo, Digest)>,
    ) -> Result<Settle, Halt> {
        let step_name = self.name(step)?;
        let mut answers = Vec::new();
        loop {
            let message = pause_message(&effects);
            let recorded = self.rec.emit(run_ended(
                RunStatus::NeedsReconciliation,
                Some(self.step_info(step)?.name),
                Some(&message),
            ))?;
            let paused = Ended {
                status: RunStatus::NeedsReconciliation,
                step: Some(step),
                message: Some(message),
            };
            if !recorded {
                self.rec.flush().await?;
                return Ok(Settle::Paused(paused));
            }
            let before = answers.len();
            while let Some(Event::Reconciled {
                effect_id, result, ..
            }) = self.rec.peek()
            {
                let Some(i) = effects.iter().position(|(_, k)| k == effect_id) else {
                    break;
                };
                let (effect_id, result) = (*effect_id, result.clone());
                effects.remove(i);
                self.rec.emit(Event::Reconciled {
                    step: step_name.clone(),
                    effect_id,
                    result: result.clone(),
                })?;
                answers.push((effect_id, result, false));
            }
            if !self.rec.replaying() && self.rec.mode == Mode::Resume {
                let applies = matches!(&self.inject,
                    Some(Inject::Reconcile { effect_id, .. })
                        if effects.iter().any(|(_, k)| k == effect_id));
                if applies && let Some(Inject::Reconcile { effect_id, result }) = self.inject.take()
                {
                    effects.retain(|(_, k)| *k != effect_id);
                    self.rec.emit(Event::Reconciled {
                        step: step_name.clone(),
                        effect_id,
                        result: result.clone(),
                    })?;
                    self.rec.flush().await?;
                    answers.push((effect_id, result, true));
                }
            }
            if answers.len() == before {
                if self.rec.replaying() {
                    let (index, recorded) = self
                        .rec
                        .peek_entry()
                        .map_or((0, None), |e| (e.seq, Some(e.event.clone())));
                    return Err(divergence(
                        index,
                        None,
                        recorded,
                        format!(
                            "after the reconciliation pause at `{step_name}` only the operator's answers can follow"
                        ),
                    ));
                }
                return Ok(Settle::Paused(paused));
            }
            if effects.is_empty() {
                // A `NotDone` allows calling the tool again only if this execution completed
                // the answers: an execution that recorded the last answer may have made the
                // calls already (a crash lost their results), so then they are ambiguous again.
                let live = answers.last().is_some_and(|(_, _, live)| *live);
                for answer in &mut answers {
                    answer.2 = live;
                }
                return Ok(Settle::Resolved(answers));
            }
        }
    }

    // --- await -------------------------------------------------------------------------------

    async fn await_event(
        &mut self,
        step: StepId,
        event: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Flow, Halt> {
        let deadline_ms = match self.rec.peek() {
            Some(Event::Suspended { deadline_ms, .. }) => *deadline_ms,
            _ => timeout.map(|t| self.inner.clock.now_ms().saturating_add(millis(t))),
        };
        let step_name = self.name(step)?;
        self.rec.emit(Event::Suspended {
            step: step_name.clone(),
            event: Cow::Borrowed(event),
            deadline_ms,
        })?;
        // A delivery or timeout recorded after the suspension continues the run.
        let recorded = match self.rec.peek() {
            Some(Event::Delivered {
                event_id, payload, ..
            }) => Some((Some(event_id.clone()), payload.clone())),
            Some(Event::TimedOut { .. }) => Some((None, Json::Null)),
            _ => None,
        };
        if recorded.is_none()
            && !self.rec.replaying()
            && self.rec.mode == Mode::Resume
            && let Some(flow) = self.injected_event(step, event).await?
        {
            return Ok(flow);
        }
        if let Some((event_id, payload)) = recorded {
            let outcome = match &event_id {
                Some(_) => Outcome::Event(&payload),
                None => Outcome::Timeout,
            };
            let next = P::transition(step, &mut self.state, outcome);
            let Some((_, to)) = target(&next) else {
                let msg = self.refusal(step, next);
                return Err(self.missing_answer(format!(
                    "a delivery it accepts at `{step_name}` (it refuses the recorded one: {msg})"
                )));
            };
            let next = self.name(to)?;
            self.rec
                .emit(arrival(step_name, event, event_id, payload, next))?;
            return Ok(Flow::Go(to));
        }
        self.rec.flush().await?;
        Ok(Flow::End(Ended {
            status: RunStatus::Suspended,
            step: Some(step),
            message: None,
        }))
    }

    /// Where the recorded prefix ends at a suspension: applies an injected delivery of
    /// `event` or timeout, if there is one. The `delivered` / `timed_out` entry is made
    /// durable before the run goes on, so of two racing deliveries only one is ever
    /// acknowledged. A payload the program refuses changes nothing
    /// ([`RunError::PayloadRefused`]).
    async fn injected_event(
        &mut self,
        step: StepId,
        event: &'static str,
    ) -> Result<Option<Flow>, Halt> {
        let applies = match &self.inject {
            Some(Inject::Deliver { event: e, .. }) => e == event,
            Some(Inject::Timeout) => true,
            _ => false,
        };
        if !applies {
            return Ok(None);
        }
        let step_name = self.name(step)?;
        let (next, event_id, payload) = match self.inject.take() {
            Some(Inject::Deliver {
                event_id, payload, ..
            }) => {
                let next = P::transition(step, &mut self.state, Outcome::Event(&payload));
                (next, Some(event_id), payload)
            }
            _ => (
                P::transition(step, &mut self.state, Outcome::Timeout),
                None,
                Json::Null,
            ),
        };
        let Some((_, to)) = target(&next) else {
            let msg = self.refusal(step, next);
            return Err(match event_id {
                Some(_) => RunError::PayloadRefused(msg),
                None => RunError::InvalidProgram(format!(
                    "step `{step_name}` has a deadline but no timeout edge ({msg})"
                )),
            }
            .into());
        };
        let next = self.name(to)?;
        self.rec
            .emit(arrival(step_name, event, event_id, payload, next))?;
        self.rec.flush().await?;
        Ok(Some(Flow::Go(to)))
    }

    // --- parallel ----------------------------------------------------------------------------

    async fn parallel(&mut self, step: StepId) -> Result<Flow, Halt> {
        let si = self.step_info(step)?;
        let Some(par) = si.parallel else {
            return Err(RunError::InvalidProgram(format!(
                "parallel step `{}` has no branch table",
                si.name
            ))
            .into());
        };
        let n = par.branches.len();
        let visit = self.visits.get(step as usize).copied().unwrap_or(1);
        let width = par.max_concurrency.map_or(n, |c| (c as usize).max(1));
        let mut states = vec![BranchState::Pending; n];
        let mut attempts = vec![0u32; n];
        let mut round_attempts = vec![0u32; n];
        let mut block_retries = par.retry;
        let mut first_round = true;
        loop {
            let batch: Vec<usize> = (0..n)
                .filter(|&i| {
                    states[i] == BranchState::Pending
                        && par.branches[i]
                            .after
                            .iter()
                            .all(|&d| states.get(d as usize) == Some(&BranchState::Succeeded))
                })
                .take(width)
                .collect();
            if batch.is_empty() {
                let all_ok = states.iter().all(|s| *s == BranchState::Succeeded);
                if !all_ok && block_retries > 0 && states.contains(&BranchState::GivenUp) {
                    block_retries -= 1;
                    for (s, r) in states.iter_mut().zip(round_attempts.iter_mut()) {
                        if *s == BranchState::GivenUp {
                            *s = BranchState::Pending;
                            *r = 0;
                        }
                    }
                    continue;
                }
                return self.join(step, par.branches, &states, all_ok).await;
            }

            // Between rounds: wait if a branch is being retried, then the interruption checks.
            if !first_round {
                let failures = batch.iter().map(|&i| attempts[i]).max().unwrap_or(0);
                if failures > 0 {
                    self.backoff(failures).await;
                }
                if let Some(ended) = self.interrupted(step).await? {
                    return Ok(Flow::End(ended));
                }
            }
            first_round = false;

            let tool_branches = batch
                .iter()
                .filter(|&&i| par.branches[i].kind == StepKind::Call)
                .count() as u64;
            let trip = self
                .meter
                .check_steps(batch.len() as u64)
                .or_else(|| self.meter.check_tool_calls(tool_branches))
                .or_else(|| {
                    let any_llm = batch.iter().any(|&i| par.branches[i].kind == StepKind::Llm);
                    if any_llm {
                        self.meter.check_tokens_before()
                    } else {
                        None
                    }
                });
            if let Some(trip) = trip {
                return Ok(Flow::End(self.trip(step, trip, None).await?));
            }

            // What each branch asks for.
            let mut jobs: Vec<Job<P::Call>> = Vec::with_capacity(batch.len());
            for &i in &batch {
                let b = &par.branches[i];
                attempts[i] += 1;
                round_attempts[i] += 1;
                if attempts[i] > 1 {
                    self.meter.usage.retries += 1;
                }
                let kind = match P::branch_action(step, i as BranchId, &self.state) {
                    Ok(Action::Llm(call)) => JobKind::Model(ModelRequest {
                        step: Cow::Borrowed(b.name),
                        model: call.model.map(Cow::Borrowed),
                        system: call.system,
                        prompt: call.prompt,
                        max_tokens: call.max_tokens,
                        choices: call.choices,
                    }),
                    Ok(Action::Tool(call)) => {
                        let tool = self.tool_info(call.tool())?;
                        let args = named(call.args());
                        let effect_key = self.effect_key();
                        let key = ids::effect_id_with(
                            &mut self.rec.scratch,
                            &effect_key,
                            si.name,
                            Some(b.name),
                            visit,
                            &args,
                        );
                        JobKind::Tool {
                            tool,
                            key,
                            args: Some(args),
                            call: Some(call),
                            intent_recorded: false,
                        }
                    }
                    Ok(_) => {
                        return Err(RunError::InvalidProgram(format!(
                            "branch `{}` of `{}` asks for neither a model nor a tool call",
                            b.name, si.name
                        ))
                        .into());
                    }
                    Err(fault) => return self.fail(step, fault.to_string()).await,
                };
                jobs.push(Job {
                    branch: i,
                    name: b.name,
                    attempt: attempts[i],
                    kind,
                    answer: None,
                });
            }
            self.meter.usage.steps += batch.len() as u64;

            // Intents of effect branches, in declaration order, made durable together.
            let mut any_effect = false;
            for job in &mut jobs {
                if let JobKind::Tool {
                    tool,
                    key,
                    args,
                    intent_recorded,
                    ..
                } = &mut job.kind
                    && tool.effect
                {
                    any_effect = true;
                    *intent_recorded = self.rec.emit(Event::ToolIntent {
                        step: Cow::Borrowed(si.name),
                        branch: Some(Cow::Borrowed(job.name)),
                        attempt: job.attempt,
                        tool: Cow::Borrowed(tool.name),
                        effect_id: *key,
                        args: args.take().unwrap_or_default(),
                    })?;
                }
            }
            if any_effect {
                self.rec.flush().await?;
            }
            for job in &jobs {
                match job.kind {
                    JobKind::Model(_) => self.meter.usage.model_calls += 1,
                    JobKind::Tool { .. } => self.meter.usage.tool_calls += 1,
                }
            }

            // The answers: recorded, then live for the rest.
            let mut stop = None;
            let verdict = match self.recorded_batch(step, &mut jobs)? {
                Some(v) => Some(v),
                None if jobs.iter().all(|j| j.answer.is_some()) => None,
                None => {
                    // Reconciliation pauses recorded next, with the operator's answers.
                    let mut cleared = vec![false; jobs.len()];
                    let mut verdict = None;
                    while stop.is_none() && self.pause_next() {
                        let ambiguous = round_ambiguous(&jobs, &cleared);
                        if ambiguous.is_empty() {
                            break;
                        }
                        match self.settle(step, ambiguous).await? {
                            Settle::Paused(ended) => stop = Some(RoundStop::Paused(ended)),
                            Settle::Resolved(answers) => {
                                for (key, result, live) in answers {
                                    let found = jobs.iter().position(|j| {
                                        j.answer.is_none()
                                            && j.effect().is_some_and(|(_, k)| k == key)
                                    });
                                    if let Some(j) = found {
                                        match result {
                                            Some(v) => {
                                                jobs[j].answer = Some(JobAnswer::Tool(Ok(v)));
                                            }
                                            None => cleared[j] = live,
                                        }
                                    }
                                }
                                verdict = self.recorded_batch(step, &mut jobs)?;
                                if verdict.is_some() {
                                    break;
                                }
                            }
                        }
                    }
                    if stop.is_some()
                        || verdict.is_some()
                        || jobs.iter().all(|j| j.answer.is_some())
                    {
                        verdict
                    } else if self.rec.upcoming().any(|e| {
                        matches!(
                            e.event,
                            Event::RunEnded {
                                status: RunStatus::NeedsReconciliation,
                                ..
                            }
                        )
                    }) {
                        // A recorded pause, with nothing ambiguous to pause for.
                        return Err(self.missing_answer(format!(
                            "the answers of the branches of `{}`",
                            si.name
                        )));
                    } else if self.rec.mode == Mode::Replay {
                        return Err(Halt::ReplayEnd(format!(
                            "the recorded trace ends inside a round of parallel step `{}`",
                            si.name
                        )));
                    } else {
                        let ambiguous = round_ambiguous(&jobs, &cleared);
                        if ambiguous.is_empty() {
                            self.live_batch(&mut jobs).await?
                        } else {
                            stop = Some(RoundStop::Reconcile(ambiguous));
                            None
                        }
                    }
                }
            };

            for job in &jobs {
                if let Some(JobAnswer::Model(Ok(r))) = &job.answer {
                    self.account(r);
                }
            }
            let stop = stop
                .or(verdict.map(RoundStop::Interrupted))
                .or_else(|| self.meter.check_tokens_after().map(RoundStop::Tokens));
            if let Some(RoundStop::Paused(ended)) = stop {
                // Still waiting for an operator: nothing of the round is recorded (the answers
                // given so far are in the `reconciled` events).
                return Ok(Flow::End(ended));
            }
            if let Some(stop) = stop {
                // Record what came back (nothing applied), then stop.
                let in_flight: Vec<_> = jobs
                    .iter()
                    .filter(|j| j.answer.is_none())
                    .filter_map(Job::effect)
                    .collect();
                for job in jobs {
                    self.record_branch(step, job, None)?;
                }
                if any_effect {
                    self.rec.flush().await?;
                }
                let ended = match stop {
                    RoundStop::Interrupted(v) => {
                        self.stop(step, v, in_flight_message(&in_flight)).await?
                    }
                    RoundStop::Tokens(trip) => self.trip(step, trip, None).await?,
                    RoundStop::Reconcile(effects) => self.reconcile(step, &effects).await?,
                    RoundStop::Paused(ended) => ended,
                };
                return Ok(Flow::End(ended));
            }

            // Apply in declaration order; record each branch's event with its verdict.
            let mut fault = None;
            for job in jobs {
                let i = job.branch;
                let b = &par.branches[i];
                let (next, failure) = match &job.answer {
                    Some(JobAnswer::Model(Ok(reply))) => {
                        let choices = match &job.kind {
                            JobKind::Model(r) => r.choices,
                            JobKind::Tool { .. } => None,
                        };
                        let next = P::apply_branch(
                            step,
                            i as BranchId,
                            &mut self.state,
                            normalize(&reply.text, choices),
                        );
                        branch_verdict(next, "the answer is not one of the admissible choices")
                    }
                    Some(JobAnswer::Tool(Ok(json))) => {
                        let next = P::apply_branch(
                            step,
                            i as BranchId,
                            &mut self.state,
                            Outcome::Tool(json),
                        );
                        branch_verdict(next, "the tool result does not fit")
                    }
                    Some(JobAnswer::Model(Err(ModelError { message, retryable })))
                    | Some(JobAnswer::Tool(Err(ToolError { message, retryable }))) => {
                        (None, Some((message.clone(), *retryable, None)))
                    }
                    None => (None, Some(("no answer".to_string(), false, None))),
                };
                states[i] = match failure {
                    None => BranchState::Succeeded,
                    Some((_, retryable, f)) => {
                        if f.is_some() {
                            fault = fault.or(f);
                        }
                        if retryable && round_attempts[i] < b.retry.saturating_add(1) {
                            BranchState::Pending
                        } else {
                            BranchState::GivenUp
                        }
                    }
                };
                self.record_branch(step, job, next)?;
            }
            if any_effect {
                self.rec.flush().await?;
            }
            if let Some(f) = fault {
                return self.fail(step, f).await;
            }
        }
    }

    /// Answers of the batch from the recorded prefix: the branch events recorded next, in
    /// declaration order, then possibly a recorded interruption. Branches without a recorded
    /// answer stay `None`.
    fn recorded_batch(
        &self,
        step: StepId,
        jobs: &mut [Job<P::Call>],
    ) -> Result<Option<Verdict>, Halt> {
        if !self.rec.replaying() {
            return Ok(None);
        }
        let step_name = self.label(step);
        let mut upcoming = self.rec.upcoming().peekable();
        for job in jobs.iter_mut() {
            let Some(entry) = upcoming.peek() else { break };
            let answer = match (&entry.event, &job.kind) {
                (
                    Event::Model {
                        step: s,
                        branch: Some(b),
                        reply,
                        ..
                    },
                    JobKind::Model(_),
                ) if s == step_name && b == job.name => JobAnswer::Model(recorded_reply(reply)),
                (
                    Event::ToolResult {
                        step: s,
                        branch: Some(b),
                        result,
                        ..
                    },
                    JobKind::Tool { .. },
                ) if s == step_name && b == job.name => JobAnswer::Tool(recorded_result(result)),
                _ => continue,
            };
            // A branch answered already (by an operator's reconciliation) keeps its answer;
            // its recorded result follows in order and is compared when it is recorded.
            if job.answer.is_none() {
                job.answer = Some(answer);
            }
            upcoming.next();
        }
        let after = upcoming.next();
        drop(upcoming);
        if jobs.iter().all(|j| j.answer.is_some()) {
            return Ok(None);
        }
        match after {
            None => Ok(None),
            // A reconciliation pause: the round's caller settles it.
            Some(Entry {
                event:
                    Event::RunEnded {
                        status: RunStatus::NeedsReconciliation,
                        ..
                    },
                ..
            }) => Ok(None),
            Some(entry) => {
                let verdict = self.verdict_in(&entry.event);
                verdict.map(Some).ok_or_else(|| {
                    divergence(
                        entry.seq,
                        None,
                        Some(entry.event.clone()),
                        format!("the program needs the answers of the branches of `{step_name}`"),
                    )
                })
            }
        }
    }

    /// Runs the unanswered jobs concurrently in this task, raced against cancellation and the
    /// duration budget. On interruption, the jobs that finished keep their answers.
    async fn live_batch(&mut self, jobs: &mut [Job<P::Call>]) -> Result<Option<Verdict>, Halt> {
        let model = self.inner.model.clone();
        let mut contexts = Vec::new();
        for job in jobs.iter() {
            if let JobKind::Tool { key, .. } = &job.kind
                && job.answer.is_none()
            {
                contexts.push(self.context(job.name, job.attempt, *key));
            }
        }
        let Some(tools) = &self.tools else {
            return Err(RunError::Internal("a live call without tools".into()).into());
        };
        let mut contexts = contexts.into_iter();
        let mut tool_futs: Vec<(usize, BoxFuture<'static, Result<Json, ToolError>>)> = Vec::new();
        for (j, job) in jobs.iter_mut().enumerate() {
            if job.answer.is_some() {
                continue;
            }
            if let JobKind::Tool { call, .. } = &mut job.kind
                && let (Some(call), Some(ctx)) = (call.take(), contexts.next())
            {
                tool_futs.push((j, P::invoke(tools, call, ctx)));
            }
        }
        let (order, answers, verdict) = {
            let mut slots: Vec<(usize, BoxFuture<'_, JobAnswer>)> = tool_futs
                .into_iter()
                .map(|(j, fut)| {
                    let f: BoxFuture<'_, JobAnswer> =
                        Box::pin(async move { JobAnswer::Tool(fut.await) });
                    (j, f)
                })
                .collect();
            for (j, job) in jobs.iter().enumerate() {
                if let (JobKind::Model(req), None) = (&job.kind, &job.answer) {
                    let Some(m) = model.as_deref() else {
                        return Err(RunError::NoModel { step: job.name }.into());
                    };
                    slots.push((
                        j,
                        Box::pin(async move { JobAnswer::Model(m.complete(req).await) }),
                    ));
                }
            }
            slots.sort_by_key(|(j, _)| *j);
            let order: Vec<usize> = slots.iter().map(|(j, _)| *j).collect();
            let mut join = JoinAll {
                slots: slots.into_iter().map(|(_, f)| (Some(f), None)).collect(),
            };
            let verdict = race(&mut join, self.cancel.as_ref(), self.deadline())
                .await
                .err();
            let JoinAll { slots } = join;
            let answers: Vec<Option<JobAnswer>> = slots.into_iter().map(|(_, out)| out).collect();
            (order, answers, verdict)
        };
        for (j, answer) in order.into_iter().zip(answers) {
            jobs[j].answer = answer;
        }
        Ok(verdict.map(|v| self.live_verdict(v)))
    }

    /// Records a branch's model or tool event (`next`: the successor if accepted); the round
    /// makes them durable together.
    fn record_branch(
        &mut self,
        step: StepId,
        job: Job<P::Call>,
        next: Option<StepId>,
    ) -> Result<(), Halt> {
        let Some(answer) = job.answer else {
            return Ok(());
        };
        match (job.kind, answer) {
            (JobKind::Model(mut req), JobAnswer::Model(reply)) => self.emit_model(
                step,
                &mut req,
                Some(job.name),
                job.attempt,
                reply,
                next,
                false,
            ),
            (
                JobKind::Tool {
                    tool, key, args, ..
                },
                JobAnswer::Tool(result),
            ) => self.push_tool_result(
                step,
                Some(job.name),
                job.attempt,
                tool,
                key,
                args,
                result,
                next,
            ),
            _ => Err(RunError::Internal("a branch answer of the wrong kind".into()).into()),
        }
    }

    async fn join(
        &mut self,
        step: StepId,
        branches: &'static [crate::program::BranchInfo],
        states: &[BranchState],
        all_ok: bool,
    ) -> Result<Flow, Halt> {
        let failed: Vec<Name> = branches
            .iter()
            .zip(states)
            .filter(|(_, s)| **s != BranchState::Succeeded)
            .map(|(b, _)| Cow::Borrowed(b.name))
            .collect();
        let outcome = if all_ok {
            Outcome::Joined
        } else {
            Outcome::Failed
        };
        let next = P::transition(step, &mut self.state, outcome);
        let step_name = self.name(step)?;
        match target(&next) {
            Some((_, to)) => {
                self.rec.emit(Event::Joined {
                    step: step_name,
                    failed,
                    next: Some(self.name(to)?),
                })?;
                Ok(Flow::Go(to))
            }
            None => {
                let names = failed.join(", ");
                self.rec.emit(Event::Joined {
                    step: step_name,
                    failed,
                    next: None,
                })?;
                let msg = self.refusal(step, next);
                let msg = if names.is_empty() {
                    msg
                } else {
                    format!("{msg}: branch {names} did not succeed")
                };
                self.fail(step, msg).await
            }
        }
    }

    // --- the end -----------------------------------------------------------------------------

    /// After the run ended: a recorded prefix must not hold more than the run produced.
    fn check_leftover(&mut self) -> Result<(), RunError> {
        check_leftover(&mut self.rec)
    }

    fn into_execution(mut self, ended: Ended, wall: Instant) -> Execution {
        let now = Instant::now();
        self.close_step(now);
        let info = self.info;
        let name = |s: StepId| info.steps.get(s as usize).map_or("?", |i| i.name);
        Execution {
            run_id: self.rec.run_id.to_string(),
            status: ended.status,
            end_step: ended.step.map(|s| name(s).to_string()),
            message: ended.message,
            outputs: {
                // Inserted one by one: a handful of variables, no need to collect and sort.
                let mut outputs = BTreeMap::new();
                for (k, v) in P::outputs(&self.state) {
                    outputs.insert(k.to_string(), v);
                }
                outputs
            },
            path: self.path,
            trace: self.rec.trace,
            usage: self.meter.usage,
            metrics: Metrics {
                started_ms: self.started_ms,
                elapsed: now.saturating_duration_since(wall),
                step_durations: self.step_durations,
            },
        }
    }
}

/// A branch's `apply_branch` answer as (successor if accepted, failure if not: message,
/// retryable, fault message).
#[allow(clippy::type_complexity)]
fn branch_verdict(
    next: Next,
    invalid: &str,
) -> (Option<StepId>, Option<(String, bool, Option<String>)>) {
    match next {
        Next::Go(to) | Next::Decided { to, .. } => (Some(to), None),
        Next::Reject(msg) => (None, Some((msg, true, None))),
        Next::Stall => (None, Some((invalid.to_string(), true, None))),
        Next::Fail(msg) => (None, Some((msg, false, None))),
        Next::Fault(f) => {
            let m = f.to_string();
            (None, Some((m.clone(), false, Some(m))))
        }
    }
}
