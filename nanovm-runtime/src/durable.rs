//! The durable protocol on top of a [`JournalStore`]: what happens to a run *between*
//! executions.
//!
//! The executor runs a program from a recorded prefix to its next end or suspension; this
//! module decides when and with what it is continued:
//!
//! * **Ownership**: a new run ([`Runtime::run`] of a run id the store does not know) is owned
//!   by its execution from its first write ([`JournalStore::start_run`]: created and leased in
//!   one transaction) to its end or suspension; see [`start`].
//! * **Duplicate starts** ([`Runtime::run`] with a run id the store knows): nothing new is
//!   executed. A run that ended, is suspended or needs reconciliation is answered with its
//!   recorded outcome (replayed from the stored trace); a run whose owner is alive is
//!   [`RunError::Leased`] ("in progress"); a run that is still `running` with no live lease (a
//!   crash left it mid-way) is resumed under a lease.
//! * **Events** ([`Runtime::deliver`](crate::Runtime::deliver)): a suspended run waiting for the named event gets a
//!   `delivered` entry and continues live; an event id the run has seen before is acknowledged
//!   and ignored ([`Delivery::Duplicate`]) if it comes with the same payload (the same
//!   fingerprint), and refused ([`DeliverError::Conflict`]) with another; a payload the program
//!   refuses changes nothing.
//! * **Timeouts** ([`Runtime::fire_timeouts`]): suspended runs whose deadline has passed on the
//!   runtime's [`Clock`](crate::Clock) take their timeout edge.
//! * **Reconciliation** ([`Runtime::reconcile`](crate::Runtime::reconcile)): an operator says whether an ambiguous effect
//!   happened; the run continues with that answer.
//! * **Pending runs** ([`Runtime::submit`]): a `run_started` entry and nothing else, for
//!   [`Worker`](crate::Worker)s to claim.
//!
//! Each operation that continues a run first claims it ([`JournalStore::claim_run`]: a lease
//! with a new epoch, renewed while the run executes, released at the end: by the execution's
//! last write when that write ends or suspends the run), then decides on the
//! trace stored under that lease, and appends fenced by it. Two racing operations on one run
//! cannot both apply: the second finds the run leased ([`RunError::Leased`]), or, had the
//! first one's lease lapsed, its append is refused (`Fenced` or `Conflict`); retrying sees the
//! run as the first one left it. A process that dies holding a lease blocks the run until the
//! lease expires ([`RuntimeBuilder::operation_lease`](crate::RuntimeBuilder::operation_lease)).
//! The rules and the failure matrix are in `docs/runtime.md` ("Durability: the protocol").

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::canonical::Encoder;
use crate::error::RunError;
use crate::exec::recorder::{Claim, Mode};
use crate::exec::{Engine, Inject, Start, execute};
use crate::ids;
use crate::program::{Program, ProgramInfo};
use crate::replay::replay_execution;
use crate::run::{Execution, RunOptions};
use crate::store::{JournalError, JournalStore, Lease, RunQuery};
use crate::trace::{Actor, BudgetKind, Entry, Event, RunStatus, Trace};
use crate::value::{Datum, Digest, Json};
use crate::vault::Vault;
use crate::view::{RunView, payload_fingerprint};

/// What an operator knows about an ambiguous effect (see [`Runtime::reconcile`](crate::Runtime::reconcile)).
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The effect happened and the tool's answer was this value: the run continues as if the
    /// tool had returned it (the tool is not called).
    Done(Json),
    /// The effect did not happen (and the call that was in flight can no longer make it
    /// happen): the tool is called again, with the same idempotency key.
    NotDone,
}

/// Who redrives a run and with which budgets (see [`Runtime::redrive`](crate::Runtime::redrive)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveOptions {
    /// Who redrives it and why (recorded in the `redriven` event).
    pub by: Actor,
    /// Budgets to raise for the rest of the run: each limit grows by the amount
    /// (`max_duration` in milliseconds).
    pub extend: Vec<(BudgetKind, u64)>,
}

impl RedriveOptions {
    /// A redrive by `by`, with the program's budgets as they were.
    pub fn new(by: Actor) -> Self {
        RedriveOptions {
            by,
            extend: Vec::new(),
        }
    }

    /// Raises `budget` by `amount` (milliseconds for `max_duration`).
    #[must_use]
    pub fn extend(mut self, budget: BudgetKind, amount: u64) -> Self {
        self.extend.push((budget, amount));
        self
    }
}

/// The answer to [`Runtime::submit_run`](crate::Runtime::submit_run).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Submitted {
    /// The run id.
    pub run_id: String,
    /// True when this call recorded the run; false when the store held the same request
    /// already (a repeat, or a concurrent duplicate that got there first).
    pub created: bool,
}

/// The answer to [`Runtime::deliver`](crate::Runtime::deliver).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// The event was recorded and the run continued to its next end or suspension.
    Resumed(Execution),
    /// The run had received an event with this id before: nothing was recorded; the execution
    /// is the run as stored (replayed), wherever it is now.
    Duplicate(Execution),
    /// The await's deadline had passed when the event arrived: the run took its timeout edge
    /// instead, and the event was not recorded.
    TimedOut(Execution),
}

impl Delivery {
    /// The run, whichever way the delivery went.
    pub fn execution(&self) -> &Execution {
        match self {
            Delivery::Resumed(e) | Delivery::Duplicate(e) | Delivery::TimedOut(e) => e,
        }
    }

    /// The run, whichever way the delivery went.
    pub fn into_execution(self) -> Execution {
        match self {
            Delivery::Resumed(e) | Delivery::Duplicate(e) | Delivery::TimedOut(e) => e,
        }
    }
}

/// Why [`Runtime::deliver`](crate::Runtime::deliver) did not deliver. Nothing was recorded in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    /// The store has no run with this id.
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    /// The run is not suspended waiting for this event (it ended, runs, waits for another
    /// event, or needs reconciliation).
    #[error("run `{run_id}` is not waiting for `{event}`: it is {status}{}",
        waiting_for.as_ref().map_or(String::new(), |w| format!(" waiting for `{w}`")))]
    NotWaiting {
        /// The run.
        run_id: String,
        /// The event offered.
        event: String,
        /// The run's status.
        status: RunStatus,
        /// The event it waits for, if suspended.
        waiting_for: Option<String>,
    },
    /// The program refuses the payload (it does not have the await's declared type).
    #[error("the payload is refused: {0}")]
    Payload(String),
    /// The run received an event with this id before, with another payload: an event id names
    /// one event, so this is not a duplicate to acknowledge (nor a new event to deliver).
    #[error("run `{run_id}` received event id `{event_id}` before, with another payload")]
    Conflict {
        /// The run.
        run_id: String,
        /// The event id offered.
        event_id: String,
    },
    /// The store failed; someone else is on the run ([`RunError::Leased`], or a lapsed lease's
    /// `Fenced` / `Conflict`: retry, and the delivery is answered as the run then stands); or
    /// the stored trace does not replay.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Why [`Runtime::reconcile`](crate::Runtime::reconcile) refused. Nothing was recorded in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The store has no run with this id.
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    /// The run is not waiting for an operator.
    #[error("run `{run_id}` does not need reconciliation: it is {status}")]
    NotNeeded {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// The effect id is not one whose outcome is unknown.
    #[error("effect {effect_id} of run `{run_id}` is not ambiguous (ambiguous: {})",
        if ambiguous.is_empty() { "none".to_string() } else {
            ambiguous.iter().map(Digest::to_hex).collect::<Vec<_>>().join(", ") })]
    NotAmbiguous {
        /// The run.
        run_id: String,
        /// The effect id offered.
        effect_id: Digest,
        /// The effects that are ambiguous, in the order they were started.
        ambiguous: Vec<Digest>,
    },
    /// The store failed, another writer got there first, or the stored trace does not replay.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The recorded inputs of a `run_started` event, if `entries` starts with one.
fn recorded_start(entries: &[Entry]) -> Option<(&str, &[(crate::program::Name, Datum)])> {
    match &entries.first()?.event {
        Event::RunStarted {
            program, inputs, ..
        } => Some((program, inputs)),
        _ => None,
    }
}

/// Checks that a stored run is the run a start request describes: the same program, the same
/// plain inputs, and the same secret inputs. A retried request seals its secrets again (a new
/// vault id and salt, so a new commitment): a secret input is the same if it is the same
/// handle, or if the two stored values, each checked against its own commitment
/// ([`Vault::value`]), are equal. A secret that cannot be read that way (erased, unknown,
/// changed in the vault) cannot be shown to be the same, so the request is refused.
pub(crate) async fn same_request(
    info: &ProgramInfo,
    vault: &dyn Vault,
    run_id: &str,
    entries: &[Entry],
    datums: &[Datum],
) -> Result<(), RunError> {
    let in_use = |reason: String| RunError::RunIdInUse {
        run_id: run_id.to_string(),
        reason,
    };
    let Some((program, inputs)) = recorded_start(entries) else {
        return Err(in_use(
            "its stored trace does not start with `run_started`".into(),
        ));
    };
    if program != info.name {
        return Err(in_use(format!("by a run of program `{program}`")));
    }
    if inputs.len() != datums.len() {
        return Err(in_use("by a run with other inputs".into()));
    }
    for ((name, stored), offered) in inputs.iter().zip(datums) {
        let differs = |what: &str| in_use(format!("by a run whose input `{name}` is {what}"));
        match (stored, offered) {
            (Datum::Plain(a), Datum::Plain(b)) => {
                if a != b {
                    return Err(differs("different"));
                }
            }
            (
                Datum::Secret {
                    vault_id: a,
                    commitment: ca,
                },
                Datum::Secret {
                    vault_id: b,
                    commitment: cb,
                },
            ) => {
                if (a, ca) == (b, cb) {
                    continue;
                }
                let read = |id, c| vault.value(id, c);
                let (stored, offered) = match (read(*a, *ca).await, read(*b, *cb).await) {
                    (Ok(s), Ok(o)) => (s, o),
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(differs(&format!("a secret that cannot be compared ({e})")));
                    }
                };
                if canonical(&stored) != canonical(&offered) {
                    return Err(differs("a different secret"));
                }
            }
            _ => return Err(differs("of another kind (secret or plain)")),
        }
    }
    Ok(())
}

/// The canonical encoding of a value (object key order does not matter).
fn canonical(v: &Json) -> Vec<u8> {
    let mut e = Encoder::new();
    e.json(v);
    e.bytes().to_vec()
}

/// A lease owner name unique to one operation of this process.
fn owner(op: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nanovm-{op}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What an operation decided from a stored trace.
enum Decision<T> {
    /// Continue the run with this input (or none).
    Execute(Option<Inject>),
    /// Answer without executing.
    Answer(T),
}

/// Hands entries this module wrote itself (outside an execution's recorder) to the observer,
/// once they are durable.
fn observed(engine: &Engine, run_id: &str, entries: &[Entry]) {
    if let Some(o) = &engine.observer {
        for e in entries {
            o.entry(run_id, e);
        }
    }
}

fn required_store(engine: &Engine) -> Result<Arc<dyn JournalStore>, RunError> {
    engine.store.clone().ok_or(RunError::NoJournal)
}

/// The error for a run whose lease someone else holds.
async fn leased(store: &Arc<dyn JournalStore>, run_id: &str) -> RunError {
    let record = store.run(run_id).await.ok().flatten();
    RunError::Leased {
        run_id: run_id.to_string(),
        owner: record
            .as_ref()
            .and_then(|r| r.lease_owner.clone())
            .unwrap_or_else(|| "?".into()),
        expires_ms: record.and_then(|r| r.lease_expires_ms).unwrap_or(0),
    }
}

/// The common shape of every operation on a stored run: `decide` on the stored trace (so
/// cheap refusals take no lease); if it says execute, claim the run (`claim_run`), load and
/// decide again on what is stored now, then continue the run under the lease (fenced
/// appends, renewals) and release it. A live lease of someone else is
/// [`RunError::Leased`].
async fn operate<P: Program, T>(
    engine: &Arc<Engine>,
    op: &str,
    run_id: &str,
    tools: Arc<P::Tools>,
    opts: RunOptions,
    mut decide: impl FnMut(Vec<Entry>) -> Result<Decision<T>, T>,
) -> Result<Result<Execution, T>, RunError> {
    let store = required_store(engine)?;
    let Some(entries) = store.load(run_id).await? else {
        return Err(RunError::UnknownRun(run_id.to_string()));
    };
    match decide(entries) {
        Err(refusal) | Ok(Decision::Answer(refusal)) => return Ok(Err(refusal)),
        Ok(Decision::Execute(_)) => {}
    }
    let now = engine.clock.now_ms();
    let Some(lease) = store
        .claim_run(run_id, &owner(op), now, engine.operation_lease_ms)
        .await?
    else {
        return Err(leased(&store, run_id).await);
    };
    // What is stored now, under the lease, is what counts.
    let loaded = store.load(run_id).await;
    let decided = match loaded {
        Ok(Some(entries)) => match decide(entries.clone()) {
            Ok(Decision::Execute(inject)) => Ok((entries, inject)),
            Ok(Decision::Answer(a)) | Err(a) => Err(Ok(Err(a))),
        },
        Ok(None) => Err(Err(RunError::UnknownRun(run_id.to_string()))),
        Err(e) => Err(Err(e.into())),
    };
    let (entries, inject) = match decided {
        Ok(d) => d,
        Err(answer) => {
            let released = store.release(&lease).await;
            return match (answer, released) {
                (Err(e), _) => Err(e),
                (Ok(a), Ok(())) => Ok(a),
                (Ok(_), Err(e)) => Err(e.into()),
            };
        }
    };
    let (result, lease) = execute_leased::<P>(
        engine,
        &store,
        lease,
        engine.operation_lease_ms,
        entries,
        tools,
        opts,
        inject,
    )
    .await;
    let released = match &lease {
        Some(lease) => store.release(lease).await,
        None => Ok(()),
    };
    match (result, released) {
        (Err(e), _) => Err(e),
        (Ok(e), Ok(())) => Ok(Ok(e)),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}

/// A start request for a run id the store already holds (`entries`): see the module docs.
pub(crate) async fn rejoin<P: Program>(
    engine: &Arc<Engine>,
    run_id: String,
    entries: Vec<Entry>,
    datums: Vec<Datum>,
    tools: Arc<P::Tools>,
    opts: RunOptions,
) -> Result<Execution, RunError> {
    let info = P::info();
    same_request(info, engine.vault.as_ref(), &run_id, &entries, &datums).await?;
    // Mid-way: resume it under a lease (unless someone holds one); otherwise (or if it
    // moved on meanwhile) answer what is stored.
    let decide = |entries: Vec<Entry>| -> Result<Decision<Vec<Entry>>, Vec<Entry>> {
        Ok(match RunView::of(&entries).status() {
            RunStatus::Running => Decision::Execute(None),
            _ => Decision::Answer(entries),
        })
    };
    match operate::<P, Vec<Entry>>(engine, "start", &run_id, tools, opts, decide).await? {
        Ok(e) => Ok(e),
        Err(stored) => replay_execution::<P>(stored),
    }
}

/// A start's link of run `run_id` to the data subject `subject` (a start naming one,
/// [`crate::RunOptions::subject`], [`crate::Runtime::submit_with`]), before anything is
/// written: a stored run must be this very request (else [`RunError::RunIdInUse`]) and must
/// not be tied to another subject (else [`RunError::SubjectInUse`]); nothing is linked when
/// either is refused.
pub(crate) async fn link_start<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    datums: &[Datum],
    subject: &str,
) -> Result<(), RunError> {
    if subject.trim().is_empty() || subject.len() > 256 {
        return Err(RunError::InvalidSubject);
    }
    let store = required_store(engine)?;
    if let Some(entries) = store.load(run_id).await? {
        same_request(P::info(), engine.vault.as_ref(), run_id, &entries, datums).await?;
    }
    link_sole_subject(store.as_ref(), run_id, subject).await
}

/// [`JournalStore::link_sole_subject`], its refusal as [`RunError::SubjectInUse`].
pub(crate) async fn link_sole_subject(
    store: &dyn JournalStore,
    run_id: &str,
    subject: &str,
) -> Result<(), RunError> {
    match store.link_sole_subject(run_id, subject).await? {
        None => Ok(()),
        Some(_) => Err(RunError::SubjectInUse {
            run_id: run_id.to_string(),
        }),
    }
}

/// See [`Runtime::submit`](crate::Runtime::submit).
pub(crate) async fn submit<P: Program>(
    engine: &Arc<Engine>,
    input: P::Input,
    run_id: Option<&str>,
) -> Result<Submitted, RunError> {
    let store = required_store(engine)?;
    crate::exec::check_semantics::<P>()?;
    let info = P::info();
    let datums = P::record_input(&input);
    let run_id = match run_id {
        Some(id) => {
            ids::validate_run_id(id)?;
            id.to_string()
        }
        None => ids::run_id_of(&info.hash, info.inputs, &datums),
    };
    let mut trace = Trace::new();
    trace.push(
        Event::RunStarted {
            run_id: run_id.clone(),
            program: Cow::Borrowed(info.name),
            program_hash: info.hash,
            inputs: info
                .inputs
                .iter()
                .map(|i| Cow::Borrowed(i.name))
                .zip(datums.iter().cloned())
                .collect(),
        },
        &mut Encoder::new(),
    );
    match store.append(&run_id, trace.entries(), None).await {
        Ok(()) => {
            observed(engine, &run_id, trace.entries());
            Ok(Submitted {
                run_id,
                created: true,
            })
        }
        Err(JournalError::Conflict { .. }) => {
            let entries = store
                .load(&run_id)
                .await?
                .ok_or_else(|| RunError::UnknownRun(run_id.clone()))?;
            same_request(info, engine.vault.as_ref(), &run_id, &entries, &datums).await?;
            Ok(Submitted {
                run_id,
                created: false,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// See [`Runtime::deliver`](crate::Runtime::deliver)(crate::Runtime::deliver).
pub(crate) async fn deliver<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    event: &str,
    event_id: &str,
    payload: Json,
    by: Option<Actor>,
    tools: Arc<P::Tools>,
) -> Result<Delivery, DeliverError> {
    let clock = engine.clock.clone();
    let fingerprint = payload_fingerprint(&payload);
    let mut due = false;
    let decide = |entries: Vec<Entry>| -> Result<Decision<Answer>, Answer> {
        let view = RunView::of(&entries);
        let seen = view
            .delivered(event_id)
            .filter(|_| !crate::mutant(crate::Mutant::AcceptReusedEventId));
        match seen {
            Some(f) if f == fingerprint => return Ok(Decision::Answer(Answer::Duplicate(entries))),
            Some(_) => {
                return Err(Answer::Refused(DeliverError::Conflict {
                    run_id: run_id.to_string(),
                    event_id: event_id.to_string(),
                }));
            }
            None => {}
        }
        let deadline_ms = match view.waiting() {
            Some(w) if w.event == event => w.deadline_ms,
            _ => {
                return Err(Answer::Refused(DeliverError::NotWaiting {
                    run_id: run_id.to_string(),
                    event: event.to_string(),
                    status: view.status(),
                    waiting_for: view.waiting().map(|w| w.event.clone()),
                }));
            }
        };
        due = deadline_ms.is_some_and(|d| d <= clock.now_ms());
        Ok(Decision::Execute(Some(if due {
            Inject::Timeout
        } else {
            Inject::Deliver {
                event: event.to_string(),
                event_id: event_id.to_string(),
                payload: payload.clone(),
                by: by.clone(),
            }
        })))
    };
    let outcome =
        operate::<P, Answer>(engine, "deliver", run_id, tools, RunOptions::new(), decide).await;
    match outcome {
        Ok(Ok(e)) if due => Ok(Delivery::TimedOut(e)),
        Ok(Ok(e)) => Ok(Delivery::Resumed(e)),
        Ok(Err(Answer::Duplicate(entries))) => {
            Ok(Delivery::Duplicate(replay_execution::<P>(entries)?))
        }
        Ok(Err(Answer::Refused(e))) => Err(e),
        Err(RunError::UnknownRun(id)) => Err(DeliverError::UnknownRun(id)),
        Err(RunError::PayloadRefused(msg)) => Err(DeliverError::Payload(msg)),
        Err(e) => Err(e.into()),
    }
}

/// See [`Runtime::fire_timeouts`](crate::Runtime::fire_timeouts).
pub(crate) async fn fire_timeouts<P: Program>(
    engine: &Arc<Engine>,
    tools: Arc<P::Tools>,
) -> Result<Vec<Execution>, RunError> {
    let store = required_store(engine)?;
    let info = P::info();
    let now = engine.clock.now_ms();
    let query = RunQuery::new()
        .program(info.name)
        .status(RunStatus::Suspended);
    let mut fired = Vec::new();
    for record in store.runs(&query).await? {
        let due = record.deadline_ms.is_some_and(|d| d <= now);
        let leased = record.lease_expires_ms.is_some_and(|t| t > now);
        if !due || leased {
            continue;
        }
        // The record keeps the hash the run started under; a migrated run is pinned to the
        // program its last `migrated` event names (read from its trace, below).
        let decide = |entries: Vec<Entry>| -> Result<Decision<()>, ()> {
            let view = RunView::of(&entries);
            if view.program_hash() != Some(info.hash) {
                return Ok(Decision::Answer(()));
            }
            match view.waiting() {
                Some(w) if w.deadline_ms.is_some_and(|d| d <= now) => {
                    Ok(Decision::Execute(Some(Inject::Timeout)))
                }
                _ => Ok(Decision::Answer(())),
            }
        };
        match operate::<P, ()>(
            engine,
            "timeout",
            &record.run_id,
            tools.clone(),
            RunOptions::new(),
            decide,
        )
        .await
        {
            Ok(Ok(e)) => fired.push(e),
            // Moved on, or someone else is on it: not ours to fire.
            Ok(Err(()))
            | Err(RunError::Leased { .. })
            | Err(RunError::Journal(JournalError::Conflict { .. } | JournalError::Fenced { .. })) =>
                {}
            Err(e) => return Err(e),
        }
    }
    Ok(fired)
}

/// See [`Runtime::reconcile`](crate::Runtime::reconcile)(crate::Runtime::reconcile).
pub(crate) async fn reconcile<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    effect_id: Digest,
    resolution: Resolution,
    by: Option<Actor>,
    tools: Arc<P::Tools>,
) -> Result<Execution, ReconcileError> {
    let result = match resolution {
        Resolution::Done(v) => Some(v),
        Resolution::NotDone => None,
    };
    let decide = |entries: Vec<Entry>| -> Result<Decision<ReconcileError>, ReconcileError> {
        let view = RunView::of_program::<P>(&entries);
        let status = view.status();
        if status != RunStatus::NeedsReconciliation {
            return Err(ReconcileError::NotNeeded {
                run_id: run_id.to_string(),
                status,
            });
        }
        let ambiguous = view.to_reconcile();
        if !ambiguous.contains(&effect_id) {
            return Err(ReconcileError::NotAmbiguous {
                run_id: run_id.to_string(),
                effect_id,
                ambiguous,
            });
        }
        Ok(Decision::Execute(Some(Inject::Reconcile {
            effect_id,
            result: result.clone(),
            by: by.clone(),
        })))
    };
    match operate::<P, ReconcileError>(
        engine,
        "reconcile",
        run_id,
        tools,
        RunOptions::new(),
        decide,
    )
    .await
    {
        Ok(Ok(e)) => Ok(e),
        Ok(Err(refusal)) => Err(refusal),
        Err(RunError::UnknownRun(id)) => Err(ReconcileError::UnknownRun(id)),
        Err(e) => Err(e.into()),
    }
}

/// Continues a run under `lease`: every append fenced by it, the lease renewed every
/// `lease_ms / 3` on the runtime's clock while the run executes; if a renewal finds the lease
/// taken over, the run is stopped at once (dropped: a crash as far as the store is concerned,
/// and the new owner recovers it). Returns the outcome and the latest lease to release (`None`:
/// the execution's last write gave it back already, [`JournalStore::append_release`]).
#[allow(
    clippy::too_many_arguments,
    reason = "the run, its lease and what it continues with; a struct would only name them again"
)]
pub(crate) async fn execute_leased<P: Program>(
    engine: &Arc<Engine>,
    store: &Arc<dyn JournalStore>,
    lease: Lease,
    lease_ms: u64,
    entries: Vec<Entry>,
    tools: Arc<P::Tools>,
    opts: RunOptions,
    inject: Option<Inject>,
) -> (Result<Execution, RunError>, Option<Lease>) {
    let claim = Arc::new(Claim::new(
        lease.worker.clone(),
        lease_ms,
        engine.clock.clone(),
    ));
    claim.set_lease(lease.clone());
    let run = execute::<P>(
        engine.clone(),
        Start::Recorded(Mode::Resume, entries, Some(claim.clone())),
        Some(tools),
        opts.fence(lease.fence()),
        inject,
    );
    let result = renewing(engine, store, &claim, run).await;
    if claim.released() {
        return (result, None);
    }
    (result, Some(claim.lease().unwrap_or(lease)))
}

/// Drives `run` while renewing the lease `claim` holds (once it holds one) every
/// `lease_ms / 3` on the runtime's clock. A renewal that finds the lease taken over stops the
/// run at once (dropped: a crash as far as the store is concerned) with `Fenced`; a renewal
/// that fails otherwise is retried at the next period (the lease may still be ours, and if it
/// is not, the next append says so).
async fn renewing(
    engine: &Arc<Engine>,
    store: &Arc<dyn JournalStore>,
    claim: &Claim,
    run: impl Future<Output = Result<Execution, RunError>>,
) -> Result<Execution, RunError> {
    let clock = engine.clock.clone();
    let period = Duration::from_millis((claim.lease_ms / 3).max(1));
    let renewals = async {
        claim.taken().await;
        loop {
            clock.sleep(period).await;
            if claim.released() {
                // The last write gave the lease back: the run is done writing.
                return std::future::pending().await;
            }
            let current = claim.taken().await;
            match store.renew(&current, clock.now_ms(), claim.lease_ms).await {
                Ok(renewed) => claim.set_lease(renewed),
                Err(_) if claim.released() => return std::future::pending().await,
                Err(e @ JournalError::Fenced { .. }) => return e,
                Err(_) => {}
            }
        }
    };
    let run = std::pin::pin!(run);
    // Biased (the run first): the poll order, and so the schedule, does not depend on tokio's
    // random choice (the simulation's seed decides it).
    tokio::select! {
        biased;
        r = run => r,
        e = renewals => Err(RunError::Journal(e)),
    }
}

/// Releases `lease` after an operation; the operation's own failure is what the caller hears
/// about, then a failed release.
async fn release_after<T>(
    store: &Arc<dyn JournalStore>,
    lease: Option<Lease>,
    result: Result<T, RunError>,
) -> Result<T, RunError> {
    let released = match &lease {
        Some(lease) => store.release(lease).await,
        None => Ok(()),
    };
    match (result, released) {
        (Err(e), _) => Err(e),
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}

/// A start of a run id the store does not hold ([`Runtime::run`](crate::Runtime::run)): the
/// run is owned from its first write, which creates it and takes its lease in one transaction
/// ([`JournalStore::start_run`]); every later write is fenced by that lease, which is renewed
/// while the run executes and released at its end or suspension. If another start created the
/// run first (the first write conflicts; nothing was executed that a store would remember: no
/// effect is called before its intent is written), this start is a duplicate start after all
/// ([`rejoin`]): it answers the stored outcome, or [`RunError::Leased`] while the other one
/// runs.
pub(crate) async fn start<P: Program>(
    engine: &Arc<Engine>,
    run_id: String,
    input: P::Input,
    datums: Vec<Datum>,
    tools: Arc<P::Tools>,
    opts: RunOptions,
) -> Result<Execution, RunError> {
    let store = required_store(engine)?;
    if let Some(entries) = store.load(&run_id).await? {
        return rejoin::<P>(engine, run_id, entries, datums, tools, opts).await;
    }
    let claim = Claim::new(
        owner("start"),
        engine.operation_lease_ms,
        engine.clock.clone(),
    );
    let claim = Arc::new(claim);
    let run = execute::<P>(
        engine.clone(),
        Start::Live(input, Some(claim.clone())),
        Some(tools.clone()),
        opts.clone(),
        None,
    );
    let result = renewing(engine, &store, &claim, run).await;
    let lease = claim.lease();
    let to_release = claim.to_release();
    match result {
        Err(RunError::Journal(JournalError::Conflict { found: 0, .. })) if lease.is_none() => {
            let entries = store
                .load(&run_id)
                .await?
                .ok_or_else(|| RunError::UnknownRun(run_id.clone()))?;
            rejoin::<P>(engine, run_id, entries, datums, tools, opts).await
        }
        result => release_after(&store, to_release, result).await,
    }
}

/// [`Runtime::resume`](crate::Runtime::resume) and
/// [`Runtime::resume_journaled`](crate::Runtime::resume_journaled) with a store: the run is
/// claimed first ([`JournalStore::claim_run`]), like every other continuation of a stored run,
/// and continued under the lease; [`RunError::Leased`] while someone else holds it.
/// `entries`: the recorded prefix to continue from (`None`: what the store holds, loaded under
/// the lease). A given trace of a run the store does not hold is continued unclaimed (the
/// store refuses any write that does not continue what it holds).
pub(crate) async fn resume<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    entries: Option<Vec<Entry>>,
    tools: Arc<P::Tools>,
    opts: RunOptions,
) -> Result<Execution, RunError> {
    let store = required_store(engine)?;
    let lease_ms = engine.operation_lease_ms;
    let now = engine.clock.now_ms();
    let Some(lease) = store
        .claim_run(run_id, &owner("resume"), now, lease_ms)
        .await?
    else {
        return match (store.run(run_id).await?, entries) {
            (None, None) => Err(RunError::UnknownRun(run_id.to_string())),
            (None, Some(entries)) => {
                let start = Start::Recorded(Mode::Resume, entries, None);
                execute::<P>(engine.clone(), start, Some(tools), opts, None).await
            }
            (Some(_), _) => Err(leased(&store, run_id).await),
        };
    };
    let entries = match entries {
        Some(entries) => Ok(entries),
        None => match store.load(run_id).await {
            Ok(Some(entries)) => Trace::from_entries(entries)
                .map(Trace::into_entries)
                .map_err(RunError::from),
            Ok(None) => Err(RunError::UnknownRun(run_id.to_string())),
            Err(e) => Err(e.into()),
        },
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => return release_after(&store, Some(lease), Err(e)).await,
    };
    let (result, lease) =
        execute_leased::<P>(engine, &store, lease, lease_ms, entries, tools, opts, None).await;
    release_after(&store, lease, result).await
}

/// Why a delivery did not execute.
enum Answer {
    /// The event id was delivered before: the stored run.
    Duplicate(Vec<Entry>),
    /// Not waiting for this event.
    Refused(DeliverError),
}

/// Records a redrive of run `run_id` under its lease: claims it ([`RunError::Leased`] while
/// someone holds it), checks on what is stored under the lease that it stopped `failed`,
/// `budget_exceeded` or `stalled` at a step (and, knowing the program, that the step is not an
/// `end` and the run is of this build), and appends `redriven` fenced by the lease. Returns the
/// lease (still held) and the run's entries, the `redriven` included.
async fn record_redrive(
    engine: &Arc<Engine>,
    store: &Arc<dyn JournalStore>,
    run_id: &str,
    opts: &RedriveOptions,
    program: Option<&'static ProgramInfo>,
) -> Result<(Lease, Vec<Entry>), RunError> {
    let refuse = |status: RunStatus, reason: String| RunError::NotRedrivable {
        run_id: run_id.to_string(),
        status,
        reason,
    };
    // Cheap refusals first, without a lease.
    let entries = store
        .load(run_id)
        .await?
        .ok_or_else(|| RunError::UnknownRun(run_id.to_string()))?;
    let check = |entries: &[Entry]| -> Result<String, RunError> {
        let view = RunView::of(entries);
        let status = view.status();
        if !matches!(
            status,
            RunStatus::Failed | RunStatus::BudgetExceeded | RunStatus::Stalled
        ) {
            return Err(refuse(
                status,
                format!("it is {status}; only a failed, budget_exceeded or stalled run is"),
            ));
        }
        let Some(step) = view.step() else {
            return Err(refuse(status, "it stopped before its first step".into()));
        };
        // A parallel step's branches keep no record across executions of which of them
        // succeeded: redriving one would run them all again.
        let in_branches = entries.iter().any(|e| match &e.event {
            Event::Model {
                step: s, branch, ..
            }
            | Event::ToolIntent {
                step: s, branch, ..
            }
            | Event::ToolResult {
                step: s, branch, ..
            } => branch.is_some() && s == step,
            _ => false,
        });
        if in_branches {
            return Err(refuse(
                status,
                format!(
                    "it stopped in the parallel step `{step}`, which a redrive does not continue yet"
                ),
            ));
        }
        if let Some(info) = program {
            if let Some(Event::RunStarted {
                program_hash: recorded,
                ..
            }) = entries.first().map(|e| &e.event)
                && *recorded != info.hash
            {
                let recorded = *recorded;
                return Err(RunError::ProgramMismatch {
                    program: info.name,
                    compiled: info.hash,
                    recorded,
                });
            }
            let at_end = info
                .step_id(step)
                .is_some_and(|id| info.step(id).kind == crate::program::StepKind::End);
            if at_end {
                return Err(refuse(
                    status,
                    format!("the program itself ended it at `end {step}`"),
                ));
            }
        }
        Ok(step.to_string())
    };
    check(&entries)?;
    let now = engine.clock.now_ms();
    let Some(lease) = store
        .claim_run(run_id, &owner("redrive"), now, engine.operation_lease_ms)
        .await?
    else {
        return Err(leased(store, run_id).await);
    };
    let recorded = async {
        let entries = store
            .load(run_id)
            .await?
            .ok_or_else(|| RunError::UnknownRun(run_id.to_string()))?;
        let step = check(&entries)?;
        let mut trace = Trace::from_entries(entries)?;
        let from = trace.len();
        trace.push(
            Event::Redriven {
                step: step.into(),
                by: opts.by.clone(),
                extend: opts.extend.clone(),
            },
            &mut Encoder::new(),
        );
        store
            .append(run_id, &trace.entries()[from..], Some(lease.fence()))
            .await?;
        observed(engine, run_id, &trace.entries()[from..]);
        Ok::<_, RunError>(trace.into_entries())
    }
    .await;
    match recorded {
        Ok(entries) => Ok((lease, entries)),
        Err(e) => release_after(store, Some(lease), Err(e)).await,
    }
}

/// See [`Runtime::redrive`](crate::Runtime::redrive): records the redrive, then continues the
/// run live under the same lease.
pub(crate) async fn redrive<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    opts: RedriveOptions,
    tools: Arc<P::Tools>,
) -> Result<Execution, RunError> {
    let store = required_store(engine)?;
    crate::exec::check_semantics::<P>()?;
    let (lease, entries) = record_redrive(engine, &store, run_id, &opts, Some(P::info())).await?;
    let (result, lease) = execute_leased::<P>(
        engine,
        &store,
        lease,
        engine.operation_lease_ms,
        entries,
        tools,
        RunOptions::new(),
        None,
    )
    .await;
    release_after(&store, lease, result).await
}

/// See [`Runtime::request_redrive`](crate::Runtime::request_redrive): records the redrive and
/// gives the lease back; the run is `running`, claimable by a worker that has its program.
pub(crate) async fn request_redrive(
    engine: &Arc<Engine>,
    run_id: &str,
    opts: RedriveOptions,
) -> Result<(), RunError> {
    let store = required_store(engine)?;
    let (lease, _) = record_redrive(engine, &store, run_id, &opts, None).await?;
    release_after(&store, Some(lease), Ok(())).await
}

/// See [`Runtime::fork`](crate::Runtime::fork).
pub(crate) async fn fork<P: Program>(
    engine: &Arc<Engine>,
    run_id: &str,
    at_entry: u64,
    new_run_id: &str,
    tools: Arc<P::Tools>,
) -> Result<Execution, RunError> {
    let store = required_store(engine)?;
    crate::exec::check_semantics::<P>()?;
    ids::validate_run_id(new_run_id)?;
    let refuse = |reason: String| RunError::NotForkable {
        run_id: run_id.to_string(),
        reason,
    };
    let entries = store
        .load(run_id)
        .await?
        .ok_or_else(|| RunError::UnknownRun(run_id.to_string()))?;
    let info = P::info();
    if let Some(Event::RunStarted { program_hash, .. }) = entries.first().map(|e| &e.event)
        && *program_hash != info.hash
    {
        return Err(RunError::ProgramMismatch {
            program: info.name,
            compiled: info.hash,
            recorded: *program_hash,
        });
    }
    let Some(at) = usize::try_from(at_entry)
        .ok()
        .filter(|&i| i < entries.len())
    else {
        return Err(refuse(format!(
            "it has {} entries, so no entry {at_entry}",
            entries.len()
        )));
    };
    let mut prefix = entries;
    prefix.truncate(at + 1);
    if let Some(open) = RunView::of_program::<P>(&prefix).open_effects().first() {
        return Err(refuse(format!(
            "entry {at_entry} leaves effect `{}` at `{}` (effect id {}) without an outcome; \
             fork before its intent or after its result",
            open.tool, open.step, open.effect_id
        )));
    }
    let at_hash = prefix[at].hash;
    let mut trace = Trace::from_entries(prefix)?;
    trace.push(
        Event::Forked {
            run_id: new_run_id.to_string(),
            from: run_id.to_string(),
            at_entry,
            at_hash,
        },
        &mut Encoder::new(),
    );
    let entries = trace.into_entries();
    let lease = match store
        .start_run(
            new_run_id,
            &entries,
            &owner("fork"),
            engine.clock.now_ms(),
            engine.operation_lease_ms,
        )
        .await
    {
        Ok(lease) => {
            observed(engine, new_run_id, &entries);
            lease
        }
        Err(JournalError::Conflict { .. }) => {
            return Err(RunError::RunIdInUse {
                run_id: new_run_id.to_string(),
                reason: "by another run: a fork needs a new run id".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let (result, lease) = execute_leased::<P>(
        engine,
        &store,
        lease,
        engine.operation_lease_ms,
        entries,
        tools,
        RunOptions::new(),
        None,
    )
    .await;
    release_after(&store, lease, result).await
}
