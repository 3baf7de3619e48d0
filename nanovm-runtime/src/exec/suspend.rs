//! `await` steps: suspension, and the delivery or timeout that continues the run (recorded, or
//! injected where the recorded prefix ends).

use std::borrow::Cow;
use std::time::Duration;

use super::race::Verdict;
use super::recorder::{Halt, Mode};
use super::{Ended, Exec, Flow, Inject, target};
use crate::clock::millis;
use crate::error::RunError;
use crate::program::{Name, Outcome, Program, StepId};
use crate::trace::{Actor, Event, RunStatus};
use crate::value::Json;

/// How outside input at an `await` is recorded: `delivered` when an event with this id came
/// (recorded or injected), `timed_out` when the deadline passed.
fn arrival(
    step: Name,
    event: &'static str,
    event_id: Option<(String, Option<Actor>)>,
    payload: Json,
    next: Name,
) -> Event {
    match event_id {
        Some((event_id, by)) => Event::Delivered {
            step,
            event: Cow::Borrowed(event),
            event_id,
            payload,
            next,
            by,
        },
        None => Event::TimedOut { step, next },
    }
}

impl<P: Program> Exec<P> {
    pub(super) async fn await_event(
        &mut self,
        step: StepId,
        event: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Flow, Halt> {
        let deadline_ms = match self.rec.peek() {
            Some(Event::Suspended { deadline_ms, .. }) => *deadline_ms,
            _ => timeout.map(|t| self.engine.clock.now_ms().saturating_add(millis(t))),
        };
        let step_name = self.name(step)?;
        self.rec.emit(Event::Suspended {
            step: step_name.clone(),
            event: Cow::Borrowed(event),
            deadline_ms,
        })?;
        // An operator's cancellation recorded after the suspension ends the run there.
        if self.recorded_cancellation() {
            return Ok(Flow::End(self.stop(step, Verdict::Cancelled, None).await?));
        }
        // A delivery or timeout recorded after the suspension continues the run.
        let recorded = match self.rec.peek() {
            Some(Event::Delivered {
                event_id,
                payload,
                by,
                ..
            }) => Some((Some((event_id.clone(), by.clone())), payload.clone())),
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
            replan_to: None,
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
                event_id,
                payload,
                by,
                ..
            }) => {
                let next = P::transition(step, &mut self.state, Outcome::Event(&payload));
                (next, Some((event_id, by)), payload)
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
}
