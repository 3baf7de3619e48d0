//! Operator acts recorded at store level, without the compiled program: [`act`].
//!
//! A host that has the program answers operators with [`Runtime::deliver_as`],
//! [`Runtime::reconcile_as`] and a [`CancelToken`](crate::CancelToken), and continues the run
//! itself. A tool that only has the store (the `nanovm` command line, an operator's script)
//! records the act the same way, under the run's lease, and leaves the continuation to a
//! [`Worker`](crate::Worker) that has the program: the act's entry makes the run `running`
//! again (a delivery, a timeout, an answer) or ends it (a cancellation), and a worker's
//! [`JournalStore::claim`] picks a `running` run up like any other.
//!
//! The rules are the runtime's own (see `docs/runtime.md`, "Operator acts without the
//! program"): the run is claimed first ([`JournalStore::claim_run`]), the decision is taken on
//! what is stored under that lease, read by [`RunView`], and the one new entry is appended
//! fenced by the lease and gives it back in the same write
//! ([`JournalStore::append_release`]). A run whose lease someone else holds is waited for (up
//! to the caller's `wait`) and then refused with [`ActError::Leased`]: an act never interleaves
//! with an execution. A refused act writes nothing.
//!
//! [`Runtime::deliver_as`]: crate::Runtime::deliver_as
//! [`Runtime::reconcile_as`]: crate::Runtime::reconcile_as

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::canonical::Encoder;
use crate::clock::Clock;
use crate::error::JournalError;
use crate::store::{JournalStore, Lease, OPERATION_LEASE_MS, RunRecord};
use crate::trace::{Actor, Entry, Event, RunStatus, Trace};
use crate::value::{Digest, Json};
use crate::view::{RunView, payload_fingerprint};

/// How often a waiting act tries the run's lease again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// The message of a cancellation's `run_ended`, as the executor writes it for
/// [`CancelToken::cancel_by`](crate::CancelToken::cancel_by) (replay reads it back).
fn cancelled_by(by: &Actor) -> String {
    format!("cancelled by `{}`: {}", by.id, by.reason)
}

/// What an operator does to a stored run (see [`act`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Act {
    /// End the run `cancelled` where it is: suspended at an `await`, paused
    /// `needs_reconciliation`, or `running` with no effect in flight and nobody executing it
    /// (a pending run, a run a crash left mid-way). Open effects stay open in the trace.
    Cancel,
    /// The ambiguous effect `effect_id` of a run paused `needs_reconciliation` happened and
    /// the tool's answer was `result` ([`Resolution::Done`](crate::Resolution::Done)). A
    /// worker continues the run as if the tool had returned it. (`NotDone` lets the tool be
    /// called again, which only the execution that records the answer may do: use
    /// [`Runtime::reconcile_as`](crate::Runtime::reconcile_as).)
    Reconcile {
        /// The ambiguous effect.
        effect_id: Digest,
        /// The tool's answer.
        result: Json,
    },
    /// Deliver event `event` with id `event_id` and `payload` to a run suspended at an `await`
    /// of exactly `event`. The caller read the program: `next` is the await's `-> S` target,
    /// `timeout_next` its `timeout D -> S` target, and the payload has the await's declared
    /// type (a worker's replay refuses the run otherwise). Past the await's deadline the run
    /// takes its timeout edge instead ([`Acted::TimedOut`]), as
    /// [`Runtime::deliver`](crate::Runtime::deliver) does.
    Deliver {
        /// The `await` step the caller read `next` and `timeout_next` from: a run suspended
        /// anywhere else is [`ActError::NotWaiting`].
        step: String,
        /// The event name.
        event: String,
        /// The event id (the idempotency key of the delivery).
        event_id: String,
        /// The payload.
        payload: Json,
        /// The step the await goes to on the event.
        next: String,
        /// The step the await goes to on its timeout, if it has one.
        timeout_next: Option<String>,
    },
}

impl Act {
    /// The act's name, for lease owners and messages (`cancel`, `reconcile`, `deliver`).
    pub fn name(&self) -> &'static str {
        match self {
            Act::Cancel => "cancel",
            Act::Reconcile { .. } => "reconcile",
            Act::Deliver { .. } => "deliver",
        }
    }
}

/// What [`act`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acted {
    /// The act's entry was appended: the run is now `status` with `entries` entries
    /// (`running`: a worker continues it; `cancelled`: it is over).
    Recorded {
        /// The run's status after the act.
        status: RunStatus,
        /// The run's entries after the act.
        entries: u64,
    },
    /// The run had received this event id with the same payload before: nothing written.
    Duplicate,
    /// The await's deadline had passed: `timed_out` was appended instead of the event (a
    /// worker continues the run on its timeout edge).
    TimedOut {
        /// The run's entries after the act.
        entries: u64,
    },
}

/// Why [`act`] refused. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActError {
    /// The store has no run with this id.
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    /// Someone else holds the run's lease (an execution in progress, or another operator),
    /// and it was still held when the wait ran out.
    #[error(
        "run `{run_id}` is held by `{owner}` until {expires_ms} (ms since the Unix epoch): \
         an act never interleaves with an execution; retry later or wait longer"
    )]
    Leased {
        /// The run.
        run_id: String,
        /// The lease owner.
        owner: String,
        /// When its lease expires.
        expires_ms: u64,
    },
    /// The run has ended: there is nothing to act on.
    #[error("run `{run_id}` has ended: it is {status}")]
    Ended {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// A cancellation of a running run with an effect in flight: its outcome must be settled
    /// by a worker first (the run then continues or pauses for an operator).
    #[error(
        "run `{run_id}` has an effect in flight ({}): a worker must settle it before the run can be cancelled",
        effects.iter().map(Digest::to_hex).collect::<Vec<_>>().join(", ")
    )]
    InFlight {
        /// The run.
        run_id: String,
        /// The open effects.
        effects: Vec<Digest>,
    },
    /// A cancellation of a running run stopped inside a parallel block: a worker must take
    /// the block to its join (or a pause) first.
    #[error(
        "run `{run_id}` stopped inside the parallel step `{step}`: a worker must take it to its join before the run can be cancelled"
    )]
    InParallel {
        /// The run.
        run_id: String,
        /// The parallel step.
        step: String,
    },
    /// A delivery to a run that is not suspended waiting for this event.
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
    /// The run received this event id before, with another payload.
    #[error("run `{run_id}` received event id `{event_id}` before, with another payload")]
    Conflict {
        /// The run.
        run_id: String,
        /// The event id offered.
        event_id: String,
    },
    /// A late delivery to an await without a timeout edge named (`timeout_next: None`).
    #[error("the deadline of run `{run_id}`'s await has passed and no timeout target was given")]
    DeadlinePassed {
        /// The run.
        run_id: String,
    },
    /// An answer for a run that is not paused `needs_reconciliation`.
    #[error("run `{run_id}` does not need reconciliation: it is {status}")]
    NotNeeded {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// An answer for an effect the run's pause does not ask about.
    #[error("effect {effect_id} of run `{run_id}` is not ambiguous (ambiguous: {})",
        if ambiguous.is_empty() { "none".to_string() } else {
            ambiguous.iter().map(Digest::to_hex).collect::<Vec<_>>().join(", ") })]
    NotAmbiguous {
        /// The run.
        run_id: String,
        /// The effect id offered.
        effect_id: Digest,
        /// The effects the pause asks about.
        ambiguous: Vec<Digest>,
    },
    /// The store failed, or its trace of the run does not verify.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A lease owner name unique to one operator action of this process (`kind`: an act's name,
/// or `erase`).
pub(crate) fn owner(kind: &str, by: &Actor) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "operator-{kind}-{}-{}-{}",
        by.id,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What [`claim`] found.
pub(crate) enum Claimed {
    /// The run's lease, now held by the operator action.
    Lease(Lease),
    /// The store has no such run.
    Missing,
    /// Someone else still held the lease when the wait ran out: the run's record then.
    Busy(RunRecord),
}

/// Claims `run_id` for an operator action named `who`, trying again every 100 ms on `clock`
/// while someone else holds its lease, for up to `wait`: an operator action never interleaves
/// with an execution or another action.
pub(crate) async fn claim(
    store: &dyn JournalStore,
    clock: &dyn Clock,
    run_id: &str,
    who: &str,
    wait: Duration,
) -> Result<Claimed, JournalError> {
    let give_up = clock.now_ms().saturating_add(wait.as_millis() as u64);
    loop {
        if let Some(lease) = store
            .claim_run(run_id, who, clock.now_ms(), OPERATION_LEASE_MS)
            .await?
        {
            return Ok(Claimed::Lease(lease));
        }
        let Some(record) = store.run(run_id).await? else {
            return Ok(Claimed::Missing);
        };
        if clock.now_ms() >= give_up {
            return Ok(Claimed::Busy(record));
        }
        clock.sleep(RETRY_EVERY).await;
    }
}

/// Records operator `by`'s act `what` on stored run `run_id` under the run's lease (see the
/// module docs): claims the run (retrying every 100 ms on `clock` for up to `wait` while
/// someone else holds it), decides on what is stored under the lease, appends the act's one
/// entry fenced by the lease and gives the lease back in the same write. A worker with the
/// program continues a run the act left `running`.
pub async fn act(
    store: &dyn JournalStore,
    clock: &dyn Clock,
    run_id: &str,
    what: Act,
    by: Actor,
    wait: Duration,
) -> Result<Acted, ActError> {
    let who = owner(what.name(), &by);
    let lease = match claim(store, clock, run_id, &who, wait).await? {
        Claimed::Lease(lease) => lease,
        Claimed::Missing => return Err(ActError::UnknownRun(run_id.to_string())),
        Claimed::Busy(record) => {
            return Err(ActError::Leased {
                run_id: run_id.to_string(),
                owner: record.lease_owner.unwrap_or_else(|| "?".into()),
                expires_ms: record.lease_expires_ms.unwrap_or(0),
            });
        }
    };
    let decided = match store.load(run_id).await {
        Ok(Some(entries)) => decide(run_id, entries, &what, &by, clock.now_ms()),
        Ok(None) => Err(ActError::UnknownRun(run_id.to_string())),
        Err(e) => Err(e.into()),
    };
    match decided {
        Ok((entry, outcome)) => {
            match entry {
                Some(entry) => {
                    store
                        .append_release(run_id, std::slice::from_ref(&entry), &lease)
                        .await?;
                }
                None => release(store, &lease).await?,
            }
            Ok(outcome)
        }
        Err(refusal) => {
            release(store, &lease).await?;
            Err(refusal)
        }
    }
}

async fn release(store: &dyn JournalStore, lease: &Lease) -> Result<(), JournalError> {
    store.release(lease).await
}

/// The act's decision on the stored `entries`: the act's entry, chained onto them (`None`
/// for a duplicate), and what to report; or the refusal.
fn decide(
    run_id: &str,
    entries: Vec<Entry>,
    what: &Act,
    by: &Actor,
    now_ms: u64,
) -> Result<(Option<Entry>, Acted), ActError> {
    let view = RunView::of(&entries);
    let mut trace = Trace::from_entries(entries).map_err(|e| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: e.to_string(),
    })?;
    let status = view.status();
    let (event, outcome) = match what {
        Act::Cancel => {
            let step = match status {
                RunStatus::Suspended | RunStatus::NeedsReconciliation => view.step(),
                RunStatus::Running => {
                    let open: Vec<Digest> =
                        view.open_effects().iter().map(|o| o.effect_id).collect();
                    if !open.is_empty() {
                        return Err(ActError::InFlight {
                            run_id: run_id.to_string(),
                            effects: open,
                        });
                    }
                    if view.in_parallel() {
                        return Err(ActError::InParallel {
                            run_id: run_id.to_string(),
                            step: view.at().unwrap_or_default().to_string(),
                        });
                    }
                    view.at()
                }
                status => {
                    return Err(ActError::Ended {
                        run_id: run_id.to_string(),
                        status,
                    });
                }
            };
            (
                Event::RunEnded {
                    status: RunStatus::Cancelled,
                    step: step.map(|s| Cow::Owned(s.to_string())),
                    message: Some(cancelled_by(by)),
                },
                RunStatus::Cancelled,
            )
        }
        Act::Reconcile { effect_id, result } => {
            if status != RunStatus::NeedsReconciliation {
                return Err(ActError::NotNeeded {
                    run_id: run_id.to_string(),
                    status,
                });
            }
            // Only the effects the pause names ([`RunView::to_answer`]).
            let ambiguous = view.to_answer();
            if !ambiguous.contains(effect_id) {
                return Err(ActError::NotAmbiguous {
                    run_id: run_id.to_string(),
                    effect_id: *effect_id,
                    ambiguous,
                });
            }
            let step = view.step().unwrap_or_default().to_string();
            (
                Event::Reconciled {
                    step: Cow::Owned(step),
                    effect_id: *effect_id,
                    result: Some(result.clone()),
                    by: Some(by.clone()),
                },
                RunStatus::Running,
            )
        }
        Act::Deliver {
            step: at,
            event,
            event_id,
            payload,
            next,
            timeout_next,
        } => {
            match view.delivered(event_id) {
                Some(f) if f == payload_fingerprint(payload) => {
                    return Ok((None, Acted::Duplicate));
                }
                Some(_) => {
                    return Err(ActError::Conflict {
                        run_id: run_id.to_string(),
                        event_id: event_id.clone(),
                    });
                }
                None => {}
            }
            let (step, deadline_ms) = match (view.waiting(), view.step()) {
                (Some(w), Some(step))
                    if w.event == *event && step == at && status == RunStatus::Suspended =>
                {
                    (step.to_string(), w.deadline_ms)
                }
                _ => {
                    return Err(ActError::NotWaiting {
                        run_id: run_id.to_string(),
                        event: event.clone(),
                        status,
                        waiting_for: view.waiting().map(|w| w.event.clone()),
                    });
                }
            };
            if deadline_ms.is_some_and(|d| d <= now_ms) {
                let Some(timeout_next) = timeout_next else {
                    return Err(ActError::DeadlinePassed {
                        run_id: run_id.to_string(),
                    });
                };
                let entry = trace
                    .push(
                        Event::TimedOut {
                            step: Cow::Owned(step),
                            next: Cow::Owned(timeout_next.clone()),
                        },
                        &mut Encoder::new(),
                    )
                    .clone();
                let entries = entry.seq + 1;
                return Ok((Some(entry), Acted::TimedOut { entries }));
            }
            (
                Event::Delivered {
                    step: Cow::Owned(step),
                    event: Cow::Owned(event.clone()),
                    event_id: event_id.clone(),
                    payload: payload.clone(),
                    next: Cow::Owned(next.clone()),
                    by: Some(by.clone()),
                },
                RunStatus::Running,
            )
        }
    };
    let entry = trace.push(event, &mut Encoder::new()).clone();
    let entries = entry.seq + 1;
    Ok((
        Some(entry),
        Acted::Recorded {
            status: outcome,
            entries,
        },
    ))
}
