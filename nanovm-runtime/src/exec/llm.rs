//! `llm` steps: ask the model (or take its recorded reply), normalize the answer, retry.

use std::borrow::Cow;

use super::race::race;
use super::recorder::{Halt, divergence};
use super::{Exec, Flow, Io, target};
use crate::error::RunError;
use crate::model::{
    ModelError, ModelReply, ModelRequest, answer_instruction, choice_instruction,
    recorded_probability,
};
use crate::program::{LlmCall, Next, Outcome, Program, StepId};
use crate::trace::{Event, Reply};

/// Trims the model's text and matches it exactly (case-sensitive) against the admissible
/// answers; anything else is `Invalid`. Text steps get the raw text. With a `min_confidence`,
/// an admissible answer whose probability is below it, or unknown, is `Invalid` too.
pub(super) fn normalize<'a>(reply: &'a ModelReply, req: &ModelRequest) -> Outcome<'a> {
    match req.choices {
        Some(cs) => {
            let t = reply.text.trim();
            let p = recorded_probability(reply.probability);
            match cs.iter().position(|c| *c == t) {
                Some(i) if confident(p, req.min_confidence) => Outcome::Choice(i),
                _ => Outcome::Invalid,
            }
        }
        None => Outcome::Text(&reply.text),
    }
}

/// Whether an answer with `probability` meets `min`: always without a minimum; with one, only
/// a known probability at or above it (an unknown one fails closed).
fn confident(probability: Option<f64>, min: Option<f64>) -> bool {
    match (min, probability) {
        (None, _) => true,
        (Some(min), Some(p)) => p >= min,
        (Some(_), None) => false,
    }
}

/// The request for an `llm` step or branch: a `choose` carries the instruction naming its
/// admissible answers.
pub(super) fn request(name: &'static str, call: LlmCall) -> ModelRequest {
    let LlmCall {
        system,
        prompt,
        model,
        max_tokens,
        choices,
        min_confidence,
        answer,
    } = call;
    ModelRequest {
        step: Cow::Borrowed(name),
        model: model.map(Cow::Borrowed),
        system,
        prompt,
        max_tokens,
        choices,
        instruction: choices
            .map(choice_instruction)
            .or_else(|| answer.map(answer_instruction)),
        min_confidence,
        answer,
    }
}

pub(super) fn into_reply(r: Result<ModelReply, ModelError>) -> Reply {
    match r {
        Ok(m) => Reply::Answer {
            text: m.text,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            cache_hit: m.cache_hit,
            tokens_estimated: m.tokens_estimated,
            // A probability that is not a number in [0, 1] is not one (and NaN cannot be
            // written as JSON): it is dropped, which a `min_confidence` reads as unknown. The
            // rest is rounded exactly as `normalize` decided on it.
            probability: recorded_probability(m.probability),
            raw_text: m.raw_text,
            constraint: m.constraint,
        },
        Err(e) => Reply::Error {
            message: e.message,
            retryable: e.retryable && !e.invalid_answer,
            invalid_answer: e.invalid_answer,
        },
    }
}

pub(super) fn recorded_reply(r: &Reply) -> Result<ModelReply, ModelError> {
    match r {
        Reply::Answer {
            text,
            prompt_tokens,
            completion_tokens,
            cache_hit,
            tokens_estimated,
            probability,
            raw_text,
            constraint,
        } => Ok(ModelReply {
            text: text.clone(),
            prompt_tokens: *prompt_tokens,
            completion_tokens: *completion_tokens,
            cache_hit: *cache_hit,
            tokens_estimated: *tokens_estimated,
            probability: *probability,
            raw_text: raw_text.clone(),
            constraint: constraint.clone(),
        }),
        Reply::Error {
            message,
            retryable,
            invalid_answer,
        } => Err(ModelError {
            message: message.clone(),
            retryable: *retryable,
            invalid_answer: *invalid_answer,
        }),
    }
}

impl<P: Program> Exec<P> {
    pub(super) async fn llm(&mut self, step: StepId, call: LlmCall) -> Result<Flow, Halt> {
        let si = self.step_info(step)?;
        let max_attempts = si.retry.saturating_add(1);
        let mut req = request(si.name, call);
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
                    let next = P::transition(step, &mut self.state, normalize(&reply, &req));
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
                // A reply that is not an answer (a refusal, an answer cut short) is, for a
                // `choose` or a typed `answer`, an invalid answer like any other: it follows
                // `on invalid`.
                Err(e) if e.invalid_answer && (req.choices.is_some() || req.answer.is_some()) => {
                    let next = P::transition(step, &mut self.state, Outcome::Invalid);
                    match next {
                        Next::Go(to) | Next::Decided { to, .. } => {
                            self.emit_model(
                                step,
                                &mut req,
                                None,
                                attempt,
                                Err(e),
                                Some(to),
                                false,
                            )?;
                            return Ok(Flow::Go(to));
                        }
                        // Without `on invalid`, as for any invalid answer: the step runs again.
                        Next::Stall => {
                            self.emit_model(step, &mut req, None, attempt, Err(e), None, false)?;
                            if let Some(trip) = self.meter.stall() {
                                return Ok(Flow::End(self.trip(step, trip, None).await?));
                            }
                            return Ok(Flow::Again);
                        }
                        Next::Reject(msg) => {
                            let msg = format!("{msg}: {}", e.message);
                            (Err(e), msg, false)
                        }
                        other @ (Next::Fail(_) | Next::Fault(_)) => {
                            self.emit_model(step, &mut req, None, attempt, Err(e), None, false)?;
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

    pub(super) fn account(&mut self, reply: &ModelReply) {
        let u = &mut self.meter.usage;
        u.prompt_tokens = u.prompt_tokens.saturating_add(reply.prompt_tokens);
        u.completion_tokens = u.completion_tokens.saturating_add(reply.completion_tokens);
        u.cache_hits += u64::from(reply.cache_hit);
    }

    /// Records a model attempt. `keep` leaves the prompt in `req` for another attempt (cloned);
    /// otherwise it is moved into the event.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of the `model` event, each from a different place"
    )]
    pub(super) fn emit_model(
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
            instruction: req.instruction.clone(),
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
        let Some(model) = self.engine.model.clone() else {
            return Err(RunError::NoModel {
                step: self.step_info(step)?.name,
            }
            .into());
        };
        // A model call is an external act: a pending effect result goes first.
        self.rec.settle().await?;
        let span = tracing::info_span!("nanovm.model_call", step = %req.step, model = ?req.model);
        let call = tracing::Instrument::instrument(model.complete(req), span);
        let t0 = self
            .engine
            .observer
            .as_ref()
            .map(|_| std::time::Instant::now());
        let raced = race(call, self.cancel.as_ref(), self.deadline()).await;
        if let (Some(o), Some(t0)) = (&self.engine.observer, t0) {
            o.call(&crate::observe::CallTiming {
                kind: crate::observe::CallKind::Model,
                run_id: &self.rec.run_id,
                step: &req.step,
                name: req.model.as_deref().unwrap_or(""),
                attempt: 1,
                elapsed: t0.elapsed(),
                ok: matches!(raced, Ok(Ok(_))),
            });
        }
        match raced {
            Ok(r) => Ok(Io::Done(r)),
            Err(v) => Ok(Io::Stopped(self.live_verdict(v))),
        }
    }

    pub(super) fn missing_answer(&self, wanted: String) -> Halt {
        let (index, recorded) = match self.rec.peek_entry() {
            Some(e) => (e.seq, Some(e.event.clone())),
            None => (self.rec.trace.len() as u64, None),
        };
        divergence(index, None, recorded, format!("the program needs {wanted}"))
    }
}
