//! [`Runtime`]: the entry point. Built with [`RuntimeBuilder`]; runs, resumes and replays
//! programs, and (with a store) carries out the durable protocol's operations on stored runs
//! (`crate::durable`).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use nanovm_runtime::{Runtime, RunOptions, testing::ScriptedModel, __private_v0_1::Program};
//! # async fn demo<P: Program>(input: P::Input, tools: Arc<P::Tools>) -> Result<(), nanovm_runtime::RunError> {
//! let runtime = Runtime::builder()
//!     .model(ScriptedModel::new().answer("analyze", "yes"))
//!     .build();
//! let execution = runtime.run::<P>(input, tools, RunOptions::default()).await?;
//! println!("{} after {:?}: root {}", execution.status, execution.path, execution.trace.root());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::Backoff;
use crate::clock::{Clock, SystemClock, millis};
use crate::durable::{
    self, DeliverError, Delivery, ReconcileError, RedriveOptions, Resolution, Submitted,
};
use crate::erase::{Erase, EraseError, Erasure};
use crate::error::{JournalError, ReplayError, RunError};
use crate::evidence::Signer;
use crate::exec::recorder::Mode;
use crate::exec::{Engine, Start, execute};
use crate::ids;
use crate::model::Model;
use crate::observe::Observer;
use crate::program::{Program, SecretSource};
use crate::run::{Execution, ReplayReport, RunOptions};
use crate::store::{JournalStore, OPERATION_LEASE_MS};
use crate::trace::{Actor, Event, Trace};
use crate::value::{Digest, Json};
use crate::vault::{MemoryVault, Vault};

/// Runs compiled programs. Cheap to clone (one `Arc` inside); share one per process.
///
/// Built with [`Runtime::builder`]. Defaults: no model (a run of a program with an `llm` step
/// fails with [`RunError::NoModel`] before it starts), a [`MemoryVault`], the [`SystemClock`],
/// [`Backoff::default`] (100 ms doubling, capped at 10 s) and no store.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Engine>,
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
    signer: Option<Arc<dyn Signer>>,
    observer: Option<Arc<dyn Observer>>,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder").finish_non_exhaustive()
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

    /// How long the lease of one of the runtime's own operations on a stored run lasts (a new
    /// run's start, a duplicate start that resumes it, a resume, a delivery, a timeout, a
    /// reconciliation; renewed every third of that while the run executes). Default
    /// [`OPERATION_LEASE_MS`](crate::store::OPERATION_LEASE_MS), 30 s. A process that dies
    /// holding one blocks the run for at most this long.
    pub fn operation_lease(mut self, lease: Duration) -> Self {
        self.operation_lease = Some(lease);
        self
    }

    /// Signs evidence with `signer` (an `Arc<dyn Signer>` works too): with a store, every
    /// execution that ends (a run end, a suspension, a reconciliation pause) is followed by a
    /// signed checkpoint of the run's trace appended to the store's evidence log and a signed
    /// tree head over the log (see [`crate::evidence`], `docs/compliance.md`). Off by default;
    /// nothing in the traces changes either way.
    pub fn signer(mut self, signer: impl Signer) -> Self {
        self.signer = Some(Arc::new(signer));
        self
    }

    /// Hands every entry of every run this runtime executes to `observer` as soon as it is
    /// durable, in order, with its sequence number and hash (see [`Observer`]; an
    /// `Arc<dyn Observer>` works too). Nothing in the traces changes either way.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        let vault: Arc<dyn Vault> = self.vault.unwrap_or_else(|| Arc::new(MemoryVault::new()));
        let secrets: Arc<dyn SecretSource> = vault.clone();
        Runtime {
            inner: Arc::new(Engine {
                model: self.model,
                vault,
                secrets,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                backoff: self.backoff,
                store: self.store,
                operation_lease_ms: self
                    .operation_lease
                    .map_or(OPERATION_LEASE_MS, |d| millis(d).max(1)),
                signer: self.signer,
                evidence_log: crate::evidence::EvidenceLog::new(),
                observer: self.observer,
            }),
        }
    }
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
    /// With a store, a new run is *owned* by this execution from its first durable write to
    /// its end or suspension: that write creates the run and takes its lease in one
    /// transaction ([`JournalStore::start_run`]), every later write is fenced by the lease, and
    /// the lease is renewed while the run executes and released when it returns. A run id the
    /// store already holds (the one in `opts`, or the one derived from the inputs) is a
    /// *duplicate start* and executes nothing new: a run that ended, is suspended or needs
    /// reconciliation is answered with its recorded outcome (replayed from the stored trace); a
    /// run whose owner is alive is [`RunError::Leased`] ("run … is in progress"), never taken
    /// over; a run a crash left `running` (no live lease) is resumed under a lease; a stored run
    /// of another program or with other plain inputs is [`RunError::RunIdInUse`]. With
    /// `opts.fence`, the caller holds the run's lease and fences the writes itself. See
    /// `docs/runtime.md`, "Run ownership".
    ///
    /// The future is `Send + 'static`: spawn it, race it, or drop it (dropping is a crash as
    /// far as the store is concerned: what was flushed stays, the run stays owned until its
    /// lease expires ([`RuntimeBuilder::operation_lease`]), and then a duplicate start or
    /// [`Runtime::resume_journaled`] continues from there).
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
            // A run id the store knows already is a duplicate start: nothing new is executed;
            // a new one is owned from its first write (see `crate::durable`).
            if let Some(store) = this.inner.store.clone() {
                let info = P::info();
                let datums = P::record_input(&input);
                let run_id = match &opts.run_id {
                    Some(id) => id.clone(),
                    None => ids::run_id_of(&info.hash, info.inputs, &datums),
                };
                // Linked before the run's first write: no stored run holds a subject's secrets
                // without the erasure index knowing (a link to a run never written is
                // harmless: the index answers only with stored runs). A stored run of another
                // request is refused before anything is linked, and a run tied to another
                // subject is refused (`RunError::SubjectInUse`).
                if let Some(subject) = &opts.subject {
                    durable::link_start::<P>(&this.inner, &run_id, &datums, subject).await?;
                }
                // The durable paths are boxed on their own: inline, their futures (claims,
                // renewals, rejoins) would make every run's future several kilobytes larger,
                // in memory too, and that future is allocated and moved once per run.
                if opts.fence.is_none() {
                    return Box::pin(durable::start::<P>(
                        &this.inner,
                        run_id,
                        input,
                        datums,
                        tools,
                        opts,
                    ))
                    .await;
                }
                // The caller holds the run's lease and fences the writes itself.
                if let Some(entries) = store.load(&run_id).await? {
                    return Box::pin(durable::rejoin::<P>(
                        &this.inner,
                        run_id,
                        entries,
                        datums,
                        tools,
                        opts,
                    ))
                    .await;
                }
            }
            execute::<P>(
                this.inner,
                Start::Live(input, None),
                Some(tools),
                opts,
                None,
            )
            .await
        })
    }

    /// Continues a run from its recorded trace: replays the recorded prefix (comparing every
    /// event, answering model and tool calls from the recording), then continues live.
    ///
    /// An effect whose intent is recorded but whose result is not (a crash in the ambiguous
    /// window) is called again with the same idempotency key if its tool is `idempotent`;
    /// otherwise the run ends `needs_reconciliation`. The run id comes from the trace
    /// (`opts.run_id` is ignored). The entries of `trace` are taken to be durable already (pass
    /// what the journal holds, or use [`Runtime::resume_journaled`]); only new entries are
    /// appended to the journal. The `max_duration` budget counts from the resumption. With a
    /// store (and no `opts.fence`), the run is claimed first ([`JournalStore::claim_run`]) and
    /// continued under that lease: [`RunError::Leased`] while another execution owns it.
    pub fn resume<P: Program>(
        &self,
        trace: Trace,
        tools: Arc<P::Tools>,
        opts: RunOptions,
    ) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            // With a store, the run is claimed first, like every continuation of a stored run
            // (unless the caller holds its lease and fences the writes itself).
            let stored_run = match trace.entries().first().map(|e| &e.event) {
                Some(Event::RunStarted { run_id, .. })
                    if inner.store.is_some() && opts.fence.is_none() =>
                {
                    Some(run_id.clone())
                }
                _ => None,
            };
            let entries = trace.into_entries();
            match stored_run {
                Some(run_id) => {
                    durable::resume::<P>(&inner, &run_id, Some(entries), tools, opts).await
                }
                None => {
                    let start = Start::Recorded(Mode::Resume, entries, None);
                    execute::<P>(inner, start, Some(tools), opts, None).await
                }
            }
        }
    }

    /// Claims run `run_id` ([`JournalStore::claim_run`]; [`RunError::Leased`] while another
    /// execution owns it), loads it from the journal store, verifies it, and
    /// [resumes](Runtime::resume) it under the lease.
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
            if opts.fence.is_none() {
                return durable::resume::<P>(&this.inner, &run_id, None, tools, opts).await;
            }
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

    /// The engine every run of this runtime executes with.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.inner
    }

    /// Records a run of `P` on `input` as *pending*: appends its `run_started` entry and
    /// nothing else, for a [`Worker`](crate::Worker) to claim and execute. Returns the run id
    /// (`run_id`, or the one derived from the program and the recorded inputs, see
    /// [`ids::run_id`]).
    ///
    /// Submitting the same request again (same run id, program and plain inputs) is
    /// acknowledged and changes nothing; a different request under a run id in use is
    /// [`RunError::RunIdInUse`]. Needs a store ([`RunError::NoJournal`]).
    pub async fn submit<P: Program>(
        &self,
        input: P::Input,
        run_id: Option<&str>,
    ) -> Result<String, RunError> {
        Ok(durable::submit::<P>(&self.inner, input, run_id)
            .await?
            .run_id)
    }

    /// [`Runtime::submit`], saying whether this call recorded the run or found the same
    /// request recorded already ([`Submitted::created`]): of concurrent duplicate submissions,
    /// exactly one is told it created the run.
    pub async fn submit_run<P: Program>(
        &self,
        input: P::Input,
        run_id: Option<&str>,
    ) -> Result<Submitted, RunError> {
        durable::submit::<P>(&self.inner, input, run_id).await
    }

    /// [`Runtime::submit_run`], tying the run to the data subject `subject` in the store's
    /// erasure index, as [`RunOptions::subject`] does for [`Runtime::run`]: a new run is
    /// linked before its `run_started` is written; a stored run only when this is a repeat of
    /// its request (else [`RunError::RunIdInUse`], nothing linked). A run id tied to another subject is
    /// [`RunError::SubjectInUse`] (nothing linked, nothing recorded by this call).
    pub async fn submit_with<P: Program>(
        &self,
        input: P::Input,
        run_id: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Submitted, RunError> {
        let Some(subject) = subject else {
            return durable::submit::<P>(&self.inner, input, run_id).await;
        };
        let info = P::info();
        let datums = P::record_input(&input);
        let id = match run_id {
            Some(id) => {
                ids::validate_run_id(id)?;
                id.to_string()
            }
            None => ids::run_id_of(&info.hash, info.inputs, &datums),
        };
        durable::link_start::<P>(&self.inner, &id, &datums, subject).await?;
        durable::submit::<P>(&self.inner, input, Some(&id)).await
    }

    /// Ties the stored run `run_id` to `subject` the way a start naming it does (see
    /// [`Runtime::submit_with`]): [`RunError::SubjectInUse`] when it is tied to another
    /// subject. For a host that answers a repeated start from the store itself.
    pub async fn link_start_subject(&self, run_id: &str, subject: &str) -> Result<(), RunError> {
        let Some(store) = &self.inner.store else {
            return Err(RunError::NoJournal);
        };
        durable::link_sole_subject(store.as_ref(), run_id, subject).await
    }

    /// Delivers event `event` with id `event_id` and `payload` to run `run_id` of `P`, and
    /// continues the run live (with `tools`) until its next end or suspension.
    ///
    /// * The run must be suspended at an `await` of exactly `event`, else
    ///   [`DeliverError::NotWaiting`].
    /// * An `event_id` the run has received before (any event name, even if the run has moved
    ///   on since) is acknowledged and ignored: [`Delivery::Duplicate`] with the run as stored.
    /// * A payload the program refuses (not of the await's declared type) is
    ///   [`DeliverError::Payload`].
    /// * If the await's deadline has passed on the runtime's clock, the run takes its timeout
    ///   edge instead ([`Delivery::TimedOut`]) and the event is not recorded: a late event
    ///   never overrides a timeout that is due.
    /// * Otherwise `delivered { .., next }` is appended (made durable before anything else
    ///   happens) and the run continues: [`Delivery::Resumed`].
    ///
    /// The run is continued under a lease ([`JournalStore::claim_run`]). Two racing deliveries
    /// to one waiting run: exactly one `delivered` is appended; the other fails with
    /// [`RunError::Leased`] (or `Fenced` / `Conflict`) before doing anything, and retrying it
    /// answers `NotWaiting` (or `Duplicate` for the same event id).
    pub async fn deliver<P: Program>(
        &self,
        run_id: &str,
        event: &str,
        event_id: &str,
        payload: Json,
        tools: Arc<P::Tools>,
    ) -> Result<Delivery, DeliverError> {
        durable::deliver::<P>(&self.inner, run_id, event, event_id, payload, None, tools).await
    }

    /// [`Runtime::deliver`], recording who delivered the event and why: the `delivered` entry
    /// carries `by` (hashed with it, checkpointed with the run). Use it for every delivery a
    /// person or an outside service makes, so the trace says who did what.
    pub async fn deliver_as<P: Program>(
        &self,
        run_id: &str,
        event: &str,
        event_id: &str,
        payload: Json,
        by: Actor,
        tools: Arc<P::Tools>,
    ) -> Result<Delivery, DeliverError> {
        durable::deliver::<P>(
            &self.inner,
            run_id,
            event,
            event_id,
            payload,
            Some(by),
            tools,
        )
        .await
    }

    /// Ties run `run_id` to the data subject `subject` in the store's erasure index (for runs
    /// started without [`RunOptions::subject`], e.g. submitted ones). Needs a store.
    pub async fn link_subject(&self, run_id: &str, subject: &str) -> Result<(), RunError> {
        let Some(store) = &self.inner.store else {
            return Err(RunError::NoJournal);
        };
        store.link_subject(run_id, subject).await?;
        Ok(())
    }

    /// Erases `what` (a data subject's secrets, or one secret) end to end, as operator `by`
    /// (who asked and why, recorded in every tombstone): finds the runs through the store's
    /// erasure index, appends an `erased` tombstone to each under its lease (waiting up to
    /// `wait` for a lease an execution holds), erases the values from this runtime's vault,
    /// and compacts the store (see [`crate::erase()`] and `docs/compliance.md`). With a
    /// signer, every run that got a tombstone is checkpointed again, so its latest checkpoint
    /// covers it. Needs a store.
    pub async fn erase(
        &self,
        what: &Erase,
        by: Actor,
        wait: Duration,
    ) -> Result<Erasure, EraseError> {
        let Some(store) = &self.inner.store else {
            return Err(EraseError::Journal(JournalError::Io(
                "an erasure needs the runtime's store".into(),
            )));
        };
        let report = crate::erase::erase(
            store.as_ref(),
            self.inner.vault.as_ref(),
            self.inner.clock.as_ref(),
            what,
            by,
            wait,
        )
        .await?;
        if let Some(signer) = &self.inner.signer {
            for run in report.runs.iter().filter(|r| !r.erased.is_empty()) {
                if let Some(entries) = store.load(&run.run_id).await? {
                    self.inner
                        .evidence_log
                        .checkpoint(
                            store.as_ref(),
                            signer.as_ref(),
                            self.inner.clock.now_ms(),
                            &entries,
                        )
                        .await?;
                }
            }
        }
        Ok(report)
    }

    /// Fires the timeouts that are due: every run of `P` suspended at an `await` whose deadline
    /// is at or before the clock's `now_ms` takes its timeout edge (`timed_out` is appended)
    /// and continues live with `tools`. Returns the continued runs, oldest first.
    ///
    /// Each run is continued under a lease. Runs whose lease someone holds are left to them,
    /// and runs of another build of `P` (another program hash) are skipped, as are runs that
    /// another writer moved on in the meantime; any other failure stops and is returned.
    pub async fn fire_timeouts<P: Program>(
        &self,
        tools: Arc<P::Tools>,
    ) -> Result<Vec<Execution>, RunError> {
        durable::fire_timeouts::<P>(&self.inner, tools).await
    }

    /// Resolves the ambiguous effect `effect_id` of run `run_id` (status
    /// `needs_reconciliation`) and continues the run live with `tools`.
    ///
    /// Appends `reconciled { step, effect_id, result }` (made durable first), then:
    /// [`Resolution::Done(v)`](Resolution::Done) continues as if the tool had returned `v`;
    /// [`Resolution::NotDone`] calls the tool again with the same idempotency key. If other
    /// effects of the same parallel round are still ambiguous, the run pauses again
    /// (`needs_reconciliation`) naming those. The run is continued under a lease
    /// ([`RunError::Leased`] while someone else holds one).
    ///
    /// Refused, with nothing recorded, when the run does not need reconciliation
    /// ([`ReconcileError::NotNeeded`]) or `effect_id` is not ambiguous
    /// ([`ReconcileError::NotAmbiguous`]). Choose `NotDone` only when the effect certainly did
    /// not happen and the call that was in flight can no longer make it happen (its process is
    /// gone, its request timed out at the other end); when in doubt, ask the other end.
    pub async fn reconcile<P: Program>(
        &self,
        run_id: &str,
        effect_id: Digest,
        resolution: Resolution,
        tools: Arc<P::Tools>,
    ) -> Result<Execution, ReconcileError> {
        durable::reconcile::<P>(&self.inner, run_id, effect_id, resolution, None, tools).await
    }

    /// [`Runtime::reconcile`], recording the operator's identity and reason: the `reconciled`
    /// entry carries `by` (hashed with it, checkpointed with the run).
    pub async fn reconcile_as<P: Program>(
        &self,
        run_id: &str,
        effect_id: Digest,
        resolution: Resolution,
        by: Actor,
        tools: Arc<P::Tools>,
    ) -> Result<Execution, ReconcileError> {
        durable::reconcile::<P>(&self.inner, run_id, effect_id, resolution, Some(by), tools).await
    }

    /// Redrives run `run_id` of `P`, which ended `failed`, `budget_exceeded` or `stalled`:
    /// continues it live with `tools` from the step where it stopped, until its next end or
    /// suspension.
    ///
    /// Under the run's lease, `redriven { step, by, extend }` is appended (made durable before
    /// anything else happens, hashed into the chain like every event), then the run is
    /// resumed: its recorded prefix replays (nothing in it is called again: an effect that
    /// succeeded before is never repeated), the engine passes the recorded `run_ended`, applies
    /// the `redriven` (raised budgets from `opts.extend`, a new stall streak) and continues
    /// the stopped step as the same visit, so its effect ids are the ones the interrupted
    /// attempts had: an effect whose intent an interruption left without an outcome is not
    /// called again but goes to reconciliation (`needs_reconciliation`), and one that failed
    /// is retried with the same idempotency key. Replaying the trace reproduces all of it.
    ///
    /// Refused with [`RunError::NotRedrivable`] (nothing recorded) for a run of another status
    /// (a completed run, a suspended one...), one that stopped before its first step, or one
    /// the program itself ended at an `end ... failure` step; [`RunError::ProgramMismatch`]
    /// for a run of another build; [`RunError::Leased`] while someone holds the run.
    pub async fn redrive<P: Program>(
        &self,
        run_id: &str,
        opts: RedriveOptions,
        tools: Arc<P::Tools>,
    ) -> Result<Execution, RunError> {
        durable::redrive::<P>(&self.inner, run_id, opts, tools).await
    }

    /// Records a redrive of run `run_id` without executing it (no program needed: what
    /// `nanovm redrive` does): under the run's lease, the same checks as [`Runtime::redrive`]
    /// (except those that need the program: that the step is not an `end`), then `redriven`
    /// is appended and the lease given back. The run is `running` again, claimable by a
    /// [`Worker`](crate::Worker) that has its program, which continues it as
    /// [`Runtime::redrive`] would.
    pub async fn request_redrive(
        &self,
        run_id: &str,
        opts: RedriveOptions,
    ) -> Result<(), RunError> {
        durable::request_redrive(&self.inner, run_id, opts).await
    }

    /// Forks run `run_id` of `P` at entry `at_entry`: starts run `new_run_id` whose trace is
    /// a verbatim copy of the original's entries `0..=at_entry` followed by
    /// `forked { run_id: new_run_id, from: run_id, at_entry, at_hash }`, and continues it live
    /// with `tools` (and this runtime's model: the what-if, say another answer) until its
    /// next end or suspension.
    ///
    /// The fork shares the prefix byte for byte, so its root at `at_entry` *is* the
    /// original's (`at_hash`, which the `forked` entry chains onto): anyone holding both can
    /// check the shared history. Nothing in the prefix is executed again (it replays: effects
    /// made by the original are not repeated); what the fork does after it is its own, with
    /// effect ids derived from `new_run_id`, so its effects never share an idempotency key
    /// with the original's. The original is not touched. A fork is a run like any other
    /// (resumed, delivered to, replayed by itself).
    ///
    /// Refused with [`RunError::NotForkable`] (nothing recorded) when the run has no entry
    /// `at_entry`, or when the prefix would leave an effect without an outcome (fork before its
    /// intent or after its result); [`RunError::RunIdInUse`] when `new_run_id` exists;
    /// [`RunError::ProgramMismatch`] for a run of another build.
    pub async fn fork<P: Program>(
        &self,
        run_id: &str,
        at_entry: u64,
        new_run_id: &str,
        tools: Arc<P::Tools>,
    ) -> Result<Execution, RunError> {
        durable::fork::<P>(&self.inner, run_id, at_entry, new_run_id, tools).await
    }
}
