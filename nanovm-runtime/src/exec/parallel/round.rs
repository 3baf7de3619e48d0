//! One round of a parallel step: what each branch asks for becomes a [`Job`]; the round records
//! the intents of its effects (durable together), gets the answers (from the recorded prefix,
//! from an operator at a reconciliation pause, or live, all in flight at once) and records the
//! branches' events, or ends the run if it was interrupted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::super::llm::recorded_reply;
use super::super::race::Verdict;
use super::super::race::race;
use super::super::reconcile::{Settle, in_flight_message};
use super::super::recorder::{Halt, Mode, divergence};
use super::super::tool::recorded_result;
use super::super::{Ended, Exec};
use crate::budget::Trip;
use crate::error::RunError;
use crate::model::{ModelError, ModelReply, ModelRequest};
use crate::program::{BoxFuture, Name, Program, Scope, StepId, StepInfo, ToolError, ToolInfo};
use crate::trace::{Entry, Event, RunStatus};
use crate::value::{Datum, Digest, Json};

/// A round's outcome.
pub(super) enum Round<C> {
    /// Every job has its answer (or none, for a branch that got none), to apply.
    Answered {
        jobs: Vec<Job<C>>,
        /// An effect was in the round: its events are made durable after they are recorded.
        any_effect: bool,
    },
    /// The round ended the run (interrupted, out of tokens, or paused for an operator).
    Ended(Ended),
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

/// One branch run inside a parallel batch.
pub(super) struct Job<C> {
    pub(super) branch: usize,
    pub(super) name: &'static str,
    pub(super) attempt: u32,
    pub(super) kind: JobKind<C>,
    pub(super) answer: Option<JobAnswer>,
}

/// What a branch asks for.
pub(super) enum JobKind<C> {
    Model(ModelRequest),
    Tool {
        tool: &'static ToolInfo,
        key: Digest,
        /// The arguments for the result event (read-only tools; effects record them in the
        /// intent).
        args: Option<Vec<(Name, Datum)>>,
        call: Option<C>,
        /// The secrets the call may reveal (its own secret arguments).
        scope: Scope,
        /// The intent came from the recorded prefix.
        intent_recorded: bool,
    },
}

/// A branch's answer.
pub(super) enum JobAnswer {
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

impl<P: Program> Exec<P> {
    /// Runs one round of `jobs`: their intents, their answers, and, if something stopped the
    /// round, its events and the end of the run.
    pub(super) async fn round(
        &mut self,
        step: StepId,
        si: &'static StepInfo,
        mut jobs: Vec<Job<P::Call>>,
    ) -> Result<Round<P::Call>, Halt> {
        let any_effect = self.record_intents(si, &mut jobs)?;
        if any_effect {
            self.rec.flush().await?;
        }
        for job in &jobs {
            match job.kind {
                JobKind::Model(_) => self.meter.usage.model_calls += 1,
                JobKind::Tool { .. } => self.meter.usage.tool_calls += 1,
            }
        }
        let (verdict, stop) = self.answers(step, si, &mut jobs).await?;
        for job in &jobs {
            if let Some(JobAnswer::Model(Ok(r))) = &job.answer {
                self.account(r);
            }
        }
        let stop = stop
            .or(verdict.map(RoundStop::Interrupted))
            .or_else(|| self.meter.check_tokens_after().map(RoundStop::Tokens));
        Ok(match stop {
            None => Round::Answered { jobs, any_effect },
            // Still waiting for an operator: nothing of the round is recorded (the answers
            // given so far are in the `reconciled` events).
            Some(RoundStop::Paused(ended)) => Round::Ended(ended),
            Some(stop) => Round::Ended(self.stop_round(step, jobs, stop, any_effect).await?),
        })
    }

    /// Records the intents of the round's effect branches, in declaration order (made durable
    /// together by the caller). Returns whether there was one.
    fn record_intents(
        &mut self,
        si: &'static StepInfo,
        jobs: &mut [Job<P::Call>],
    ) -> Result<bool, Halt> {
        let mut any_effect = false;
        for job in jobs {
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
                    step: std::borrow::Cow::Borrowed(si.name),
                    branch: Some(std::borrow::Cow::Borrowed(job.name)),
                    attempt: job.attempt,
                    tool: std::borrow::Cow::Borrowed(tool.name),
                    effect_id: *key,
                    args: args.take().unwrap_or_default(),
                })?;
            }
        }
        Ok(any_effect)
    }

    /// The answers of the round: recorded first, then (at recorded reconciliation pauses) the
    /// operator's, then live for the rest. Returns the interruption, if any, and what else
    /// stops the round.
    async fn answers(
        &mut self,
        step: StepId,
        si: &'static StepInfo,
        jobs: &mut [Job<P::Call>],
    ) -> Result<(Option<Verdict>, Option<RoundStop>), Halt> {
        if let Some(v) = self.recorded_batch(step, jobs)? {
            return Ok((Some(v), None));
        }
        if jobs.iter().all(|j| j.answer.is_some()) {
            return Ok((None, None));
        }
        let mut cleared = vec![false; jobs.len()];
        let (verdict, stop) = self.settle_round(step, jobs, &mut cleared).await?;
        if stop.is_some() || verdict.is_some() || jobs.iter().all(|j| j.answer.is_some()) {
            return Ok((verdict, stop));
        }
        if self.rec.upcoming().any(|e| {
            matches!(
                e.event,
                Event::RunEnded {
                    status: RunStatus::NeedsReconciliation,
                    ..
                }
            )
        }) {
            // A recorded pause, with nothing ambiguous to pause for.
            return Err(
                self.missing_answer(format!("the answers of the branches of `{}`", si.name))
            );
        }
        if self.rec.mode == Mode::Replay {
            return Err(Halt::ReplayEnd(format!(
                "the recorded trace ends inside a round of parallel step `{}`",
                si.name
            )));
        }
        let ambiguous = round_ambiguous(jobs, &cleared);
        if ambiguous.is_empty() {
            Ok((self.live_batch(jobs).await?, None))
        } else {
            Ok((None, Some(RoundStop::Reconcile(ambiguous))))
        }
    }

    /// Reconciliation pauses recorded next, with the operator's answers: an effect answered
    /// `Done` gets its result, one answered `NotDone` in this execution may be called again
    /// (`cleared`). Stops at a pause still waiting for an answer.
    async fn settle_round(
        &mut self,
        step: StepId,
        jobs: &mut [Job<P::Call>],
        cleared: &mut [bool],
    ) -> Result<(Option<Verdict>, Option<RoundStop>), Halt> {
        let mut verdict = None;
        while self.pause_next() {
            let ambiguous = round_ambiguous(jobs, cleared);
            if ambiguous.is_empty() {
                break;
            }
            match self.settle(step, ambiguous).await? {
                Settle::Paused(ended) => return Ok((verdict, Some(RoundStop::Paused(ended)))),
                Settle::Resolved(answers) => {
                    for (key, result, live) in answers {
                        let found = jobs.iter().position(|j| {
                            j.answer.is_none() && j.effect().is_some_and(|(_, k)| k == key)
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
                    verdict = self.recorded_batch(step, jobs)?;
                    if verdict.is_some() {
                        break;
                    }
                }
            }
        }
        Ok((verdict, None))
    }

    /// A round that stops the run: records what came back (nothing is applied), then ends the
    /// run as `stop` says. The answers and the end are made durable in **one** write (the
    /// end's): answers recorded as not applied are only ever read together with the event that
    /// says why, so a crash in between cannot leave a trace that no execution can continue
    /// (found by `nanovm-sim`; a crash before that write leaves the round's effects ambiguous,
    /// as for any crash with a call in flight).
    async fn stop_round(
        &mut self,
        step: StepId,
        jobs: Vec<Job<P::Call>>,
        stop: RoundStop,
        any_effect: bool,
    ) -> Result<Ended, Halt> {
        let in_flight: Vec<_> = jobs
            .iter()
            .filter(|j| j.answer.is_none())
            .filter_map(Job::effect)
            .collect();
        // At a pause for an operator, the answers the round has came from operators (the
        // `reconciled` events, durable already: a pause is decided before any live call).
        // Recorded again as branch results they would stand between those answers and the
        // pause, where no replay or resume expects them (found by `nanovm-sim`).
        if !matches!(stop, RoundStop::Reconcile(_)) {
            for job in jobs {
                self.record_branch(step, job, None)?;
            }
        }
        match stop {
            RoundStop::Interrupted(v) => self.stop(step, v, in_flight_message(&in_flight)).await,
            RoundStop::Tokens(trip) => self.trip(step, trip, None).await,
            RoundStop::Reconcile(effects) => self.reconcile(step, &effects).await,
            RoundStop::Paused(ended) => {
                if any_effect {
                    self.rec.flush().await?;
                }
                Ok(ended)
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
        let model = self.engine.model.clone();
        let Some(tools) = &self.tools else {
            return Err(RunError::Internal("a live call without tools".into()).into());
        };
        let mut tool_futs: Vec<(usize, BoxFuture<'static, Result<Json, ToolError>>)> = Vec::new();
        let acts_once = jobs.iter().any(|job| {
            job.answer.is_none()
                && matches!(&job.kind, JobKind::Tool { tool, call: Some(_), .. } if tool.effect && !tool.idempotent)
        });
        // The round's calls are external acts: a pending effect result goes first.
        self.rec.settle().await?;
        if acts_once {
            self.rec.ensure_owned().await?;
        }
        for (j, job) in jobs.iter_mut().enumerate() {
            if job.answer.is_some() {
                continue;
            }
            if let JobKind::Tool {
                tool,
                call,
                key,
                scope,
                ..
            } = &mut job.kind
                && let Some(call) = call.take()
            {
                let ctx = self.context(job.name, job.attempt, *key, &call, scope.clone());
                let span = tracing::info_span!(
                    "nanovm.tool_call",
                    tool = tool.name,
                    step = job.name,
                    effect = tool.effect,
                    effect_id = %key,
                    attempt = job.attempt,
                );
                let fut = tracing::Instrument::instrument(P::invoke(tools, call, ctx), span);
                tool_futs.push((j, Box::pin(fut)));
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
                    let span = tracing::info_span!(
                        "nanovm.model_call",
                        step = %req.step,
                        model = ?req.model,
                    );
                    let call = tracing::Instrument::instrument(m.complete(req), span);
                    slots.push((j, Box::pin(async move { JobAnswer::Model(call.await) })));
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
    pub(super) fn record_branch(
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
}
