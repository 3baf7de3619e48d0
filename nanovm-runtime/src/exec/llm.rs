//! `llm` steps: ask the model (or take its recorded reply), normalize the answer, retry.

use std::borrow::Cow;

use super::race::race;
use super::recorder::{Halt, divergence};
use super::{Exec, Flow, Io, target};
use crate::error::RunError;
use crate::model::{ModelError, ModelReply, ModelRequest};
use crate::program::{LlmCall, Next, Outcome, Program, StepId};
use crate::trace::{Event, Reply};

/// Trims the model's text and matches it exactly (case-sensitive) against the admissible
/// answers; anything else is `Invalid`. Text steps get the raw text.
pub(super) fn normalize<'a>(
    text: &'a str,
    choices: Option<&'static [&'static str]>,
) -> Outcome<'a> {
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

pub(super) fn into_reply(r: Result<ModelReply, ModelError>) -> Reply {
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

pub(super) fn recorded_reply(r: &Reply) -> Result<ModelReply, ModelError> {
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

impl<P: Program> Exec<P> {
    pub(super) async fn llm(&mut self, step: StepId, call: LlmCall) -> Result<Flow, Halt> {
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
        match race(model.complete(req), self.cancel.as_ref(), self.deadline()).await {
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
