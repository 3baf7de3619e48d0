//! Reconciliation pauses: an effect whose outcome is unknown and whose tool is not idempotent
//! stops the run (`needs_reconciliation`) until an operator answers for it.

use super::race::Verdict;
use super::recorder::{Halt, Mode, divergence};
use super::{Ended, Exec, Inject, run_ended};
use crate::program::{Program, StepId, ToolInfo};
use crate::trace::{Event, RunStatus};
use crate::value::{Digest, Json};

/// The outcome of [`Exec::settle`] at a reconciliation pause.
pub(super) enum Settle {
    /// No operator answer (yet) for some effect: the run pauses `needs_reconciliation`.
    Paused(Ended),
    /// Every ambiguous effect has an answer: `(effect id, result, live)`; `result: None` means
    /// the effect did not happen, and `live` that the last answer was given in this execution
    /// (so no earlier execution got to call the tools after the answers: calling them now is
    /// safe; otherwise a `None` only holds if the call that followed it is recorded too).
    Resolved(Vec<(Digest, Option<Json>, bool)>),
}

/// The message of a reconciliation pause (`run_ended: needs_reconciliation`).
pub(super) fn pause_message(effects: &[(&'static ToolInfo, Digest)]) -> String {
    let list: Vec<String> = effects
        .iter()
        .map(|(t, k)| format!("`{}` (effect id {})", t.name, k))
        .collect();
    format!(
        "the outcome of effect {} is unknown (its intent was recorded before an interruption) and the tool is not idempotent: an operator must reconcile it",
        list.join(", ")
    )
}

pub(super) fn in_flight_message(effects: &[(&'static ToolInfo, Digest)]) -> Option<String> {
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
    /// An effect's intent is recorded, its outcome is not, and its tool is not idempotent:
    /// calling it again could repeat the effect, so an operator must decide.
    pub(super) async fn reconcile(
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
    pub(super) fn pause_next(&self) -> bool {
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
    pub(super) async fn settle(
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
                replan_to: None,
            };
            if !recorded {
                self.rec.flush().await?;
                return Ok(Settle::Paused(paused));
            }
            // An operator's cancellation recorded after the pause ends the run there.
            if self.recorded_cancellation() {
                let ended = self.stop(step, Verdict::Cancelled, None).await?;
                return Ok(Settle::Paused(ended));
            }
            let before = answers.len();
            while let Some(Event::Reconciled {
                effect_id,
                result,
                by,
                ..
            }) = self.rec.peek()
            {
                let Some(i) = effects.iter().position(|(_, k)| k == effect_id) else {
                    break;
                };
                let (effect_id, result, by) = (*effect_id, result.clone(), by.clone());
                effects.remove(i);
                self.rec.emit(Event::Reconciled {
                    step: step_name.clone(),
                    effect_id,
                    result: result.clone(),
                    by,
                })?;
                answers.push((effect_id, result, false));
            }
            if !self.rec.replaying() && self.rec.mode == Mode::Resume {
                let applies = matches!(&self.inject,
                    Some(Inject::Reconcile { effect_id, .. })
                        if effects.iter().any(|(_, k)| k == effect_id));
                if applies
                    && let Some(Inject::Reconcile {
                        effect_id,
                        result,
                        by,
                    }) = self.inject.take()
                {
                    effects.retain(|(_, k)| *k != effect_id);
                    self.rec.emit(Event::Reconciled {
                        step: step_name.clone(),
                        effect_id,
                        result: result.clone(),
                        by,
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
}
