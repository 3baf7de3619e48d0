//! `call` steps: the intent of an effect made durable first, then the tool's answer (recorded, or
//! by invoking it), retries, and the result.

use std::borrow::Cow;

use super::race::Verdict;
use super::race::race;
use super::reconcile::{Settle, in_flight_message};
use super::recorder::Halt;
use super::{Ended, Exec, Flow, target};
use crate::error::RunError;
use crate::ids;
use crate::program::{
    Action, Name, Next, Outcome, Program, Scope, StepId, ToolCall, ToolContext, ToolError, ToolInfo,
};
use crate::trace::{Entry, Event, ToolOutcome};
use crate::value::{Datum, Digest, Json};
use crate::view::RunView;

/// A tool call's answer, or the decision that an ambiguous effect must not be repeated.
enum ToolIo {
    Done(Result<Json, ToolError>),
    Stopped(Verdict),
    Reconcile,
    /// The run is (still) waiting for an operator: the recorded pause was reproduced and no
    /// answer for the effect follows it.
    Paused(Ended),
}

pub(super) fn recorded_result(r: &ToolOutcome) -> Result<Json, ToolError> {
    match r {
        ToolOutcome::Ok(v) => Ok(v.clone()),
        ToolOutcome::Err { message, retryable } => Err(ToolError {
            message: message.clone(),
            retryable: *retryable,
        }),
    }
}

pub(super) fn into_outcome(r: Result<Json, ToolError>) -> ToolOutcome {
    match r {
        Ok(v) => ToolOutcome::Ok(v),
        Err(e) => ToolOutcome::Err {
            message: e.message,
            retryable: e.retryable,
        },
    }
}

pub(super) fn named(args: Vec<(&'static str, Datum)>) -> Vec<(Name, Datum)> {
    args.into_iter()
        .map(|(n, d)| (Cow::Borrowed(n), d))
        .collect()
}

/// The failure message of a call that would pass a secret argument erased from the run (read
/// from the trace so far with [`RunView`], so a replay decides it at the same entry), if any.
pub(super) fn erased_argument(
    entries: &[Entry],
    tool: &str,
    args: &[(Name, Datum)],
) -> Option<String> {
    if !args.iter().any(|(_, d)| matches!(d, Datum::Secret { .. })) {
        return None;
    }
    let view = RunView::of(entries);
    args.iter().find_map(|(name, d)| match d {
        Datum::Secret { vault_id, .. } => view.erased_by(*vault_id).map(|by| {
            format!(
                "the secret argument `{name}` of `{tool}` was erased from the vault (by `{}`: {}); \
                 the tool was not called",
                by.id, by.reason
            )
        }),
        Datum::Plain(_) => None,
    })
}

impl<P: Program> Exec<P> {
    pub(super) async fn tool(&mut self, step: StepId, call: P::Call) -> Result<Flow, Halt> {
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
            // A secret argument an erasure removed (the run holds its tombstone): the tool is
            // never called with a value the vault no longer has; the run ends here, saying so.
            if let Some(message) = erased_argument(self.rec.trace.entries(), tool.name, &args) {
                return self.fail(step, message).await;
            }
            let effect_key = self.effect_key()?;
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
        let scope = Scope::of(&args);
        // After a redrive, the attempt an interruption cut short may have left this very
        // effect open (its intent without an outcome): it may have happened, so an operator
        // decides, exactly as after a crash.
        // After a redrive, an effect that succeeded before (its tool returned, and the run
        // then stopped over its answer) is answered from that result: it happened, so it is
        // never made again.
        if tool.effect
            && self.redrives > 0
            && let Some(done) = RunView::of(self.rec.trace.entries()).effect_result(key)
        {
            return Ok((ToolIo::Done(Ok(done.clone())), None));
        }
        if tool.effect && !tool.idempotent && self.redrives > 0 && self.left_open(key) {
            match self.settle(step, vec![(tool, key)]).await? {
                Settle::Paused(ended) => return Ok((ToolIo::Paused(ended), None)),
                Settle::Resolved(answers) => {
                    if let Some((_, Some(result), _)) = answers.into_iter().next() {
                        return Ok((ToolIo::Done(Ok(result)), None));
                    }
                    // It did not happen: called again (a new intent) with the same key.
                }
            }
        }
        let (intent_recorded, args) = if tool.effect {
            let recorded = self.rec.emit(Event::ToolIntent {
                step: Cow::Borrowed(step_name),
                branch: None,
                attempt,
                tool: Cow::Borrowed(tool.name),
                effect_id: key,
                args,
            })?;
            if !crate::mutant(crate::Mutant::CallBeforeIntentDurable) {
                self.rec.flush().await?;
            }
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
        if tool.effect
            && !tool.idempotent
            && !crate::mutant(crate::Mutant::CallWithoutOwnershipCheck)
        {
            self.rec.ensure_owned().await?;
        }
        // A read-only call is an external act too: a pending effect result goes first.
        self.rec.settle().await?;
        let ctx = self.context(step_name, attempt, key, &call, scope);
        let Some(tools) = &self.tools else {
            return Err(RunError::Internal("a live call without tools".into()).into());
        };
        let span = tracing::info_span!(
            "nanovm.tool_call",
            tool = tool.name,
            step = step_name,
            effect = tool.effect,
            effect_id = %key,
            attempt,
        );
        let fut = tracing::Instrument::instrument(P::invoke(tools, call, ctx), span);
        let t0 = self
            .engine
            .observer
            .as_ref()
            .map(|_| std::time::Instant::now());
        let raced = race(fut, self.cancel.as_ref(), self.deadline()).await;
        if let (Some(o), Some(t0)) = (&self.engine.observer, t0) {
            o.call(&crate::observe::CallTiming {
                kind: crate::observe::CallKind::Tool,
                run_id: &self.rec.run_id,
                step: step_name,
                name: tool.name,
                attempt,
                elapsed: t0.elapsed(),
                ok: matches!(raced, Ok(Ok(_))),
            });
        }
        let io = match raced {
            Ok(r) => ToolIo::Done(r),
            Err(v) => ToolIo::Stopped(self.live_verdict(v)),
        };
        Ok((io, args))
    }

    /// Whether the effect `key`'s intent is recorded without an outcome (and without an
    /// operator's answer that it did not happen), as [`RunView`] reads the trace so far.
    fn left_open(&self, key: Digest) -> bool {
        RunView::of(self.rec.trace.entries())
            .open_effects()
            .iter()
            .any(|o| o.effect_id == key && !o.not_done)
    }

    /// The context of a live call of `call`: it may reveal only the call's own secrets,
    /// `scope` ([`Scope::of`] its recorded arguments).
    pub(super) fn context(
        &self,
        step: &'static str,
        attempt: u32,
        key: Digest,
        call: &P::Call,
        scope: Scope,
    ) -> ToolContext {
        let tool = P::info().tools.get(call.tool()).map_or("?", |t| t.name);
        ToolContext::new(
            self.rec.run_id.clone(),
            step,
            tool,
            attempt,
            key,
            self.engine.secrets.clone(),
            scope,
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of the `tool_result` event, each from a different place"
    )]
    pub(super) async fn emit_tool_result(
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
        // An effect's result is made durable by the run's next write: the next effect's intent
        // or the end, or, for a non-idempotent effect, whatever write must precede the next
        // external act (`Recorder::settle`). An idempotent effect's result rides along to the
        // next write whatever comes first: a crash before it has recovery call the tool again
        // with the same key, which the tool answers without acting twice; nobody is asked.
        if tool.effect && !tool.idempotent {
            self.rec.outcome_pending();
        }
        Ok(())
    }

    /// Records a tool result without making it durable (a parallel round's results are made
    /// durable together, in one write, after the round: a crash never leaves half of them).
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of the `tool_result` event, each from a different place"
    )]
    pub(super) fn push_tool_result(
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
}
