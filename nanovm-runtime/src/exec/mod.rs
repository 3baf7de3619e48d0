//! The step engine: runs a compiled [`Program`], recording every event into a hash-chained trace.
//!
//! The engine decides nothing about the graph. For each step it asks the program what the
//! step wants ([`Program::action`]), performs that I/O (a model call, a tool call, a
//! suspension), records it, and hands the normalized result back to the compiled transition
//! function ([`Program::transition`]), which names the successor. The exact semantics (what a
//! step is, when budgets trip, retries, parallel scheduling, durability) are specified in
//! `docs/runtime.md`.
//!
//! This file holds the step loop (with `guard` / `branch` steps, budgets and interruptions);
//! [`start`] sets a run up and hands back what it gave; each other kind of step has its own
//! file: [`llm`], [`tool`], [`suspend`] (`await`),
//! [`parallel`], and [`reconcile`] for the pauses an ambiguous effect causes. [`recorder`] is
//! the engine's only door to the trace and the journal.

mod llm;
mod parallel;
mod race;
mod reconcile;
pub(crate) mod recorder;
mod start;
mod suspend;
mod tool;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Backoff, Meter, Trip};
use crate::cancel::CancelToken;
use crate::clock::Clock;
use crate::error::RunError;
use crate::evidence::Signer;
use crate::ids;
use crate::model::Model;
use crate::program::{
    Action, BoxFuture, Name, Next, Outcome, Program, ProgramInfo, SecretSource, StepId, StepInfo,
    StepKind, ToolInfo,
};
use crate::store::JournalStore;
use crate::trace::{Actor, BudgetKind, Event, ReplanOn, RunStatus};
use crate::value::{Digest, Json};
use crate::vault::Vault;
use race::{Verdict, race};
use recorder::{Halt, Mode, Recorder};
pub(crate) use start::{
    Ended, Prepared, Start, check_leftover, check_semantics, execute, prepare, run_ended,
};
use tracing::Instrument as _;

/// What every run of a runtime executes with: the runtime's configuration (see
/// `crate::runtime::RuntimeBuilder`), shared behind one `Arc`.
pub(crate) struct Engine {
    pub(crate) model: Option<Arc<dyn Model>>,
    pub(crate) vault: Arc<dyn Vault>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) backoff: Backoff,
    pub(crate) store: Option<Arc<dyn JournalStore>>,
    /// The lease length of the runtime's own operations on stored runs (`crate::durable`).
    pub(crate) operation_lease_ms: u64,
    /// Signs a checkpoint of every execution that ends, into the store's evidence log
    /// (`crate::evidence`); `None`: no evidence is written.
    pub(crate) signer: Option<Arc<dyn Signer>>,
    /// The store's evidence log as this runtime has read it (its Merkle frontier): a
    /// checkpoint reads only the leaves appended since.
    pub(crate) evidence_log: crate::evidence::EvidenceLog,
    /// Sees every entry as it becomes durable (`crate::observe`).
    pub(crate) observer: Option<Arc<dyn crate::observe::Observer>>,
}

/// Input the engine applies where the recorded prefix ends (a live continuation only): what
/// the durable protocol (`crate::durable`) and workers continue a stored run with.
#[derive(Clone, Debug)]
pub(crate) enum Inject {
    /// At the suspension: the event arrived.
    Deliver {
        event: String,
        event_id: String,
        payload: Json,
        by: Option<Actor>,
    },
    /// At the suspension: the deadline passed.
    Timeout,
    /// At the reconciliation pause: the operator's answer for one effect.
    Reconcile {
        effect_id: Digest,
        result: Option<Json>,
        by: Option<Actor>,
    },
}

/// How a cancellation's `run_ended` message names who cancelled.
const CANCELLED_BY: &str = "cancelled by `";

// ---------------------------------------------------------------------------------------------
// The step loop
// ---------------------------------------------------------------------------------------------

pub(crate) struct Exec<P: Program> {
    engine: Arc<Engine>,
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
    /// See [`ids::effect_key`]: the run id it was derived from, and the key.
    effect_key: Option<(Arc<str>, [u8; 32])>,
    step_durations: Vec<(&'static str, Duration)>,
    /// Input from outside (a delivered event, a due timeout, an operator's reconciliation)
    /// applied where the recorded prefix ends; taken when applied.
    inject: Option<Inject>,
    /// Where the loop starts when not at `start`: the step a migrated run waits at.
    first: Option<StepId>,
    /// Replans taken along each of `P::replans()`.
    replans_used: Vec<u32>,
    /// The step entered and not completed yet (`None` between steps): where a redrive
    /// continues without counting a new visit.
    inside: Option<StepId>,
    /// `redriven` events applied so far: after one, an effect whose intent an interrupted
    /// attempt left open is reconciled, not called again.
    redrives: u32,
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

/// The answer to a model or tool call: done, or interrupted.
enum Io<T> {
    Done(T),
    Stopped(Verdict),
}

/// The successor named by a transition, with the arm for decisions.
fn target(next: &Next) -> Option<(Option<u32>, StepId)> {
    match next {
        Next::Go(to) => Some((None, *to)),
        Next::Decided { arm, to } => Some((*arm, *to)),
        _ => None,
    }
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

    /// The key of the effect ids of what the run does next, derived on first use: the run's
    /// own, or in a fork's copied prefix the original run's (recorded events the executor
    /// never produces, such as a fork's `forked`, are taken over first, so the key is the one
    /// of the run the next event belongs to).
    fn effect_key(&mut self) -> Result<[u8; 32], Halt> {
        self.rec.absorb_erasures()?;
        match &self.effect_key {
            Some((run, key)) if *run == self.rec.effect_run => Ok(*key),
            _ => {
                let key = ids::effect_key(&self.rec.effect_run);
                self.effect_key = Some((self.rec.effect_run.clone(), key));
                Ok(key)
            }
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.engine.clock.now_ms().saturating_sub(self.started_ms)
    }

    /// Counts a step entered.
    fn enter(&mut self, step: StepId, name: &'static str) {
        let now = Instant::now();
        self.close_step(now);
        self.step_clock = Some((name, now));
        self.meter.usage.steps += 1;
        self.inside = Some(step);
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

    /// The main loop: runs from the start step to the run's end or suspension, and on from
    /// the step where it stopped after every `redriven` the trace holds there.
    pub(crate) async fn drive(&mut self) -> Result<Ended, Halt> {
        let mut step = self.first.take().unwrap_or(self.info.start);
        loop {
            let ended = self.drive_from(step).await?;
            match self.redriven(&ended)? {
                Some(at) => step = at,
                None => return Ok(ended),
            }
        }
    }

    /// After the run stopped (`ended`): if the recorded trace goes on with a `redriven` at the
    /// step where it stopped (appended by [`crate::Runtime::redrive`] before this execution),
    /// reproduces it, applies it (the raised budgets, a new stall streak) and answers the step
    /// to continue at. The step is continued, not entered anew: its visit count is what it was,
    /// so its effect ids are the ones the interrupted attempts had.
    fn redriven(&mut self, ended: &Ended) -> Result<Option<StepId>, Halt> {
        let redrivable = matches!(
            ended.status,
            RunStatus::Failed | RunStatus::BudgetExceeded | RunStatus::Stalled
        );
        let (true, Some(at)) = (redrivable, ended.step) else {
            return Ok(None);
        };
        let Some(Event::Redriven { by, extend, .. }) = self.rec.peek() else {
            return Ok(None);
        };
        let (by, extend) = (by.clone(), extend.clone());
        // Emitted as the program would: the step must be the one where it stopped.
        self.rec.emit(Event::Redriven {
            step: self.name(at)?,
            by,
            extend: extend.clone(),
        })?;
        self.meter.redrive(&extend);
        if self.inside == Some(at)
            && let Some(v) = self.visits.get_mut(at as usize)
        {
            *v = v.saturating_sub(1);
        }
        self.inside = None;
        self.redrives += 1;
        Ok(Some(at))
    }

    /// Runs from `step` until the run ends or suspends.
    async fn drive_from(&mut self, mut step: StepId) -> Result<Ended, Halt> {
        loop {
            let si = self.step_info(step)?;
            if si.kind != StepKind::End {
                if let Some(ended) = self.interrupted(step).await? {
                    match ended.replan_to {
                        Some(to) => {
                            step = to;
                            continue;
                        }
                        None => return Ok(ended),
                    }
                }
                if let Some(trip) = self.meter.check_steps(1) {
                    let ended = self.trip(step, trip, None).await?;
                    match ended.replan_to {
                        Some(to) => {
                            step = to;
                            continue;
                        }
                        None => return Ok(ended),
                    }
                }
            } else if self.recorded_cancellation() {
                // An operator cancelled the run at store level after its last transition,
                // before its `end` step's `run_ended` was written (`crate::operator`).
                return self.stop(step, Verdict::Cancelled, None).await;
            }
            let action = match P::action(step, &self.state) {
                Ok(a) => a,
                Err(fault) => {
                    return self
                        .end(RunStatus::Failed, Some(step), Some(fault.to_string()))
                        .await;
                }
            };
            let span = tracing::debug_span!("nanovm.step", step = si.name);
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
                    self.decide(step).instrument(span).await?
                }
                Action::Llm(call) => {
                    self.enter(step, si.name);
                    self.llm(step, call).instrument(span).await?
                }
                Action::Tool(call) => {
                    self.enter(step, si.name);
                    self.tool(step, call).instrument(span).await?
                }
                Action::Parallel => {
                    self.enter(step, si.name);
                    // Boxed: the parallel step's state is large and rare; keeping it out of
                    // the loop's future keeps that small for every other run.
                    Box::pin(self.parallel(step).instrument(span)).await?
                }
                Action::Await { event, timeout } => {
                    self.enter(step, si.name);
                    self.await_event(step, event, timeout)
                        .instrument(span)
                        .await?
                }
            };
            match flow {
                Flow::Go(to) => {
                    self.meter.completed();
                    self.inside = None;
                    step = to;
                }
                Flow::Again => {}
                Flow::End(Ended {
                    replan_to: Some(to),
                    ..
                }) => step = to,
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
            replan_to: None,
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
        let (status, on) = if trip.budget == BudgetKind::MaxStalledSteps {
            (RunStatus::Stalled, ReplanOn::Stalled)
        } else {
            (RunStatus::BudgetExceeded, ReplanOn::BudgetExceeded)
        };
        // A replanning edge for this interruption with replans left continues the run at its
        // target with a fresh slice. Not when a call was cut off in flight (`message` says
        // which): its outcome is unknown, and the run must not go on as if it were not.
        if message.is_none()
            && let Some((k, edge)) = P::replans().iter().enumerate().find(|(_, r)| r.on == on)
            && self.replans_used.get(k).is_some_and(|&n| n < edge.replans)
        {
            self.replans_used[k] += 1;
            let to = self.name(edge.to)?;
            let max_duration_ms = edge.slice.max_duration.map(|d| match self.rec.peek() {
                Some(Event::Replanned {
                    max_duration_ms: Some(ms),
                    ..
                }) if self.rec.replaying() => *ms,
                _ => self.elapsed_ms().saturating_add(crate::clock::millis(d)),
            });
            self.rec.emit(Event::Replanned {
                step: self.name(step)?,
                on,
                to,
                replan: self.replans_used[k],
                of: edge.replans,
                max_duration_ms,
            })?;
            self.meter.replan(&edge.slice, max_duration_ms);
            return Ok(Ended {
                status: RunStatus::Running,
                step: Some(step),
                message: None,
                replan_to: Some(edge.to),
            });
        }
        self.end(status, Some(step), message).await
    }

    async fn stop(
        &mut self,
        step: StepId,
        verdict: Verdict,
        message: Option<String>,
    ) -> Result<Ended, Halt> {
        match verdict {
            Verdict::Cancelled => {
                let message = self.cancel_message(message);
                // An operator's cancellation of a run that had not reached its first step
                // (recorded at store level, `crate::operator`) names no step.
                let step = match self.rec.peek() {
                    Some(Event::RunEnded {
                        status: RunStatus::Cancelled,
                        step: None,
                        ..
                    }) if self.rec.replaying() && self.path.is_empty() => None,
                    _ => Some(step),
                };
                self.end(RunStatus::Cancelled, step, message).await
            }
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

    /// The message of a cancellation's `run_ended`: `message`, followed by who cancelled and
    /// why when the token says ([`CancelToken::cancel_by`]). Replaying, the recorded actor is
    /// taken as truth (it came from outside the program), the rest must be reproduced.
    fn cancel_message(&self, message: Option<String>) -> Option<String> {
        let with = |by: String| match &message {
            Some(m) => format!("{m}; {by}"),
            None => by,
        };
        if self.rec.replaying() {
            if let Some(Event::RunEnded {
                status: RunStatus::Cancelled,
                message: Some(recorded),
                ..
            }) = self.rec.peek()
            {
                let rest = match &message {
                    Some(m) => recorded
                        .strip_prefix(m.as_str())
                        .and_then(|r| r.strip_prefix("; ")),
                    None => Some(recorded.as_str()),
                };
                if let Some(by) = rest.filter(|r| r.starts_with(CANCELLED_BY)) {
                    return Some(with(by.to_string()));
                }
            }
            return message;
        }
        match self.cancel.as_ref().and_then(CancelToken::actor) {
            Some(a) => Some(with(format!("{CANCELLED_BY}{}`: {}", a.id, a.reason))),
            None => message,
        }
    }

    /// True when the recorded prefix continues with a cancellation (an operator's, recorded
    /// after a suspension or a reconciliation pause).
    fn recorded_cancellation(&self) -> bool {
        self.rec.replaying()
            && matches!(
                self.rec.peek(),
                Some(Event::RunEnded {
                    status: RunStatus::Cancelled,
                    ..
                })
            )
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
            .map(|limit| (self.engine.clock.clone(), self.started_ms, limit));
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
    /// the wait never outlasts the duration budget and ends early on cancellation. A pending
    /// effect result is made durable before the wait (a crash while waiting must not leave the
    /// failed attempt ambiguous).
    async fn backoff(&mut self, failures: u32) -> Result<(), Halt> {
        if self.rec.mode == Mode::Replay || self.rec.replaying() {
            return Ok(());
        }
        self.rec.settle().await?;
        let mut delay = self.engine.backoff.delay(failures);
        if let Some(limit) = self.meter.duration_limit_ms() {
            let remaining = limit.saturating_sub(self.elapsed_ms());
            delay = delay.min(Duration::from_millis(remaining));
        }
        if delay.is_zero() {
            return Ok(());
        }
        let sleep = self.engine.clock.sleep(delay);
        let _ = race(sleep, self.cancel.as_ref(), || None).await;
        Ok(())
    }

    /// Before attempt `attempt` (2 or more) of a step: the backoff, then the interruption
    /// checks; counts the retry unless the run ends here.
    async fn before_retry(&mut self, step: StepId, attempt: u32) -> Result<Option<Ended>, Halt> {
        self.backoff(attempt - 1).await?;
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
}
