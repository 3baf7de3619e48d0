//! `parallel` steps. This file is the block: it schedules the branches in rounds (as `after`,
//! `max_concurrency` and the retries allow), applies each round's answers in declaration order,
//! and joins. [`round`] runs one round: what each branch asks for, the intents of its effects,
//! the answers (recorded, settled with an operator, or live) and their events.

mod round;

use std::borrow::Cow;

use super::llm::normalize;
use super::recorder::Halt;
use super::{Ended, Exec, Flow, target};
use crate::budget::Trip;
use crate::error::RunError;
use crate::ids;
use crate::model::ModelError;
use crate::program::{
    Action, BranchId, BranchInfo, Name, Next, Outcome, Program, Scope, StepId, StepInfo, StepKind,
    ToolCall, ToolError,
};
use crate::trace::Event;
use round::{Job, JobAnswer, JobKind, Round};

/// Per-branch progress inside one visit of a parallel step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BranchState {
    Pending,
    Succeeded,
    GivenUp,
}

/// A branch's failure in a round: message, whether another attempt may fix it, and the
/// message of a fault (which fails the run).
type Failure = (String, bool, Option<String>);

/// The jobs of a round, or the message of a fault of the program (which fails the run).
type Asked<C> = Result<Vec<Job<C>>, String>;

/// The progress of one visit of a parallel step, across its rounds.
struct Block {
    states: Vec<BranchState>,
    /// Attempts per branch in this visit (the backoff and the retry count read them).
    attempts: Vec<u32>,
    /// Attempts per branch since the block was last retried (checked against the branch's
    /// `retry`).
    round_attempts: Vec<u32>,
    /// Block-level retries left.
    block_retries: u32,
}

impl Block {
    fn new(branches: usize, retries: u32) -> Block {
        Block {
            states: vec![BranchState::Pending; branches],
            attempts: vec![0; branches],
            round_attempts: vec![0; branches],
            block_retries: retries,
        }
    }

    /// The next round: the pending branches whose `after` branches all succeeded, in
    /// declaration order, at most `width` of them.
    fn next_batch(&self, branches: &[BranchInfo], width: usize) -> Vec<usize> {
        (0..branches.len())
            .filter(|&i| {
                self.states[i] == BranchState::Pending
                    && branches[i]
                        .after
                        .iter()
                        .all(|&d| self.states.get(d as usize) == Some(&BranchState::Succeeded))
            })
            .take(width)
            .collect()
    }

    fn all_succeeded(&self) -> bool {
        self.states.iter().all(|s| *s == BranchState::Succeeded)
    }

    /// With no branch left to run: if a branch gave up and the block may be retried, makes the
    /// branches that gave up pending again (with fresh attempts) and says so.
    fn retry_given_up(&mut self) -> bool {
        if self.all_succeeded()
            || self.block_retries == 0
            || !self.states.contains(&BranchState::GivenUp)
        {
            return false;
        }
        self.block_retries -= 1;
        for (s, r) in self.states.iter_mut().zip(self.round_attempts.iter_mut()) {
            if *s == BranchState::GivenUp {
                *s = BranchState::Pending;
                *r = 0;
            }
        }
        true
    }
}

impl<P: Program> Exec<P> {
    pub(super) async fn parallel(&mut self, step: StepId) -> Result<Flow, Halt> {
        let si = self.step_info(step)?;
        let Some(par) = si.parallel else {
            return Err(RunError::InvalidProgram(format!(
                "parallel step `{}` has no branch table",
                si.name
            ))
            .into());
        };
        let n = par.branches.len();
        let visit = self.visits.get(step as usize).copied().unwrap_or(1);
        let width = par.max_concurrency.map_or(n, |c| (c as usize).max(1));
        let mut block = Block::new(n, par.retry);
        let mut first_round = true;
        loop {
            let batch = block.next_batch(par.branches, width);
            if batch.is_empty() {
                if block.retry_given_up() {
                    continue;
                }
                let all_ok = block.all_succeeded();
                return self.join(step, par.branches, &block.states, all_ok).await;
            }
            if !first_round && let Some(ended) = self.between_rounds(step, &block, &batch).await? {
                return Ok(Flow::End(ended));
            }
            first_round = false;
            if let Some(trip) = self.round_budget(par.branches, &batch) {
                return Ok(Flow::End(self.trip(step, trip, None).await?));
            }
            let jobs = match self.branch_jobs(step, si, par.branches, &batch, &mut block, visit)? {
                Ok(jobs) => jobs,
                Err(fault) => return self.fail(step, fault).await,
            };
            let (jobs, any_effect) = match self.round(step, si, jobs).await? {
                Round::Answered { jobs, any_effect } => (jobs, any_effect),
                Round::Ended(ended) => return Ok(Flow::End(ended)),
            };
            if let Some(fault) = self
                .apply_round(step, par.branches, jobs, &mut block, any_effect)
                .await?
            {
                return self.fail(step, fault).await;
            }
        }
    }

    /// Between rounds: waits if a branch of `batch` is being retried, then the interruption
    /// checks.
    async fn between_rounds(
        &mut self,
        step: StepId,
        block: &Block,
        batch: &[usize],
    ) -> Result<Option<Ended>, Halt> {
        let failures = batch.iter().map(|&i| block.attempts[i]).max().unwrap_or(0);
        if failures > 0 {
            self.backoff(failures).await?;
        }
        self.interrupted(step).await
    }

    /// The budgets a round of `batch` would exceed: steps, tool calls, then tokens (if a
    /// branch calls the model).
    fn round_budget(&self, branches: &[BranchInfo], batch: &[usize]) -> Option<Trip> {
        let tool_branches = batch
            .iter()
            .filter(|&&i| branches[i].kind == StepKind::Call)
            .count() as u64;
        self.meter
            .check_steps(batch.len() as u64)
            .or_else(|| self.meter.check_tool_calls(tool_branches))
            .or_else(|| {
                let any_llm = batch.iter().any(|&i| branches[i].kind == StepKind::Llm);
                if any_llm {
                    self.meter.check_tokens_before()
                } else {
                    None
                }
            })
    }

    /// What each branch of `batch` asks for, as jobs (counting the attempts); `Err` is the
    /// message of a fault of the program, which fails the run.
    fn branch_jobs(
        &mut self,
        step: StepId,
        si: &'static StepInfo,
        branches: &'static [BranchInfo],
        batch: &[usize],
        block: &mut Block,
        visit: u32,
    ) -> Result<Asked<P::Call>, Halt> {
        let mut jobs: Vec<Job<P::Call>> = Vec::with_capacity(batch.len());
        for &i in batch {
            let b = &branches[i];
            block.attempts[i] += 1;
            block.round_attempts[i] += 1;
            if block.attempts[i] > 1 {
                self.meter.usage.retries += 1;
            }
            let kind = match P::branch_action(step, i as BranchId, &self.state) {
                Ok(Action::Llm(call)) => JobKind::Model(super::llm::request(b.name, call)),
                Ok(Action::Tool(call)) => {
                    let tool = self.tool_info(call.tool())?;
                    let args = super::tool::named(call.args());
                    // A secret argument erased from the run: no branch calls with it, the
                    // run ends here saying so (as a sequential `call` does).
                    if let Some(message) =
                        super::tool::erased_argument(self.rec.trace.entries(), tool.name, &args)
                    {
                        return Ok(Err(message));
                    }
                    let effect_key = self.effect_key()?;
                    let key = ids::effect_id_with(
                        &mut self.rec.scratch,
                        &effect_key,
                        si.name,
                        Some(b.name),
                        visit,
                        &args,
                    );
                    JobKind::Tool {
                        tool,
                        key,
                        scope: Scope::of(&args),
                        args: Some(args),
                        call: Some(call),
                        intent_recorded: false,
                    }
                }
                Ok(_) => {
                    return Err(RunError::InvalidProgram(format!(
                        "branch `{}` of `{}` asks for neither a model nor a tool call",
                        b.name, si.name
                    ))
                    .into());
                }
                Err(fault) => return Ok(Err(fault.to_string())),
            };
            jobs.push(Job {
                branch: i,
                name: b.name,
                attempt: block.attempts[i],
                kind,
                answer: None,
            });
        }
        self.meter.usage.steps += batch.len() as u64;
        Ok(Ok(jobs))
    }

    /// Applies a round's answers in declaration order, recording each branch's event with its
    /// verdict, and updates the branches' states. Returns the message of the first fault.
    async fn apply_round(
        &mut self,
        step: StepId,
        branches: &[BranchInfo],
        jobs: Vec<Job<P::Call>>,
        block: &mut Block,
        any_effect: bool,
    ) -> Result<Option<String>, Halt> {
        let mut fault = None;
        for job in jobs {
            let i = job.branch;
            let (next, failure) = self.branch_outcome(step, &job);
            block.states[i] = match failure {
                None => BranchState::Succeeded,
                Some((_, retryable, f)) => {
                    if f.is_some() {
                        fault = fault.or(f);
                    }
                    if retryable && block.round_attempts[i] < branches[i].retry.saturating_add(1) {
                        BranchState::Pending
                    } else {
                        BranchState::GivenUp
                    }
                }
            };
            self.record_branch(step, job, next)?;
        }
        if any_effect {
            self.rec.flush().await?;
        }
        Ok(fault)
    }

    /// Hands a branch's answer to the program (`apply_branch`): the successor if accepted, the
    /// failure if not.
    fn branch_outcome(
        &mut self,
        step: StepId,
        job: &Job<P::Call>,
    ) -> (Option<StepId>, Option<Failure>) {
        let i = job.branch as BranchId;
        match &job.answer {
            Some(JobAnswer::Model(Ok(reply))) => {
                let outcome = match &job.kind {
                    JobKind::Model(r) => normalize(reply, r),
                    JobKind::Tool { .. } => Outcome::Text(&reply.text),
                };
                let next = P::apply_branch(step, i, &mut self.state, outcome);
                branch_verdict(next, "the answer is not one of the admissible choices")
            }
            Some(JobAnswer::Tool(Ok(json))) => {
                let next = P::apply_branch(step, i, &mut self.state, Outcome::Tool(json));
                branch_verdict(next, "the tool result does not fit")
            }
            Some(JobAnswer::Model(Err(ModelError {
                message, retryable, ..
            })))
            | Some(JobAnswer::Tool(Err(ToolError { message, retryable }))) => {
                (None, Some((message.clone(), *retryable, None)))
            }
            None => (None, Some(("no answer".to_string(), false, None))),
        }
    }

    /// The block is over: `joined` (with the branches that did not succeed) and the successor
    /// the program names for it.
    async fn join(
        &mut self,
        step: StepId,
        branches: &'static [BranchInfo],
        states: &[BranchState],
        all_ok: bool,
    ) -> Result<Flow, Halt> {
        let failed: Vec<Name> = branches
            .iter()
            .zip(states)
            .filter(|(_, s)| **s != BranchState::Succeeded)
            .map(|(b, _)| Cow::Borrowed(b.name))
            .collect();
        let outcome = if all_ok {
            Outcome::Joined
        } else {
            Outcome::Failed
        };
        let next = P::transition(step, &mut self.state, outcome);
        let step_name = self.name(step)?;
        match target(&next) {
            Some((_, to)) => {
                self.rec.emit(Event::Joined {
                    step: step_name,
                    failed,
                    next: Some(self.name(to)?),
                })?;
                Ok(Flow::Go(to))
            }
            None => {
                let names = failed.join(", ");
                self.rec.emit(Event::Joined {
                    step: step_name,
                    failed,
                    next: None,
                })?;
                let msg = self.refusal(step, next);
                let msg = if names.is_empty() {
                    msg
                } else {
                    format!("{msg}: branch {names} did not succeed")
                };
                self.fail(step, msg).await
            }
        }
    }
}

/// A branch's `apply_branch` answer as (successor if accepted, failure if not).
fn branch_verdict(next: Next, invalid: &str) -> (Option<StepId>, Option<Failure>) {
    match next {
        Next::Go(to) | Next::Decided { to, .. } => (Some(to), None),
        Next::Reject(msg) => (None, Some((msg, true, None))),
        Next::Stall => (None, Some((invalid.to_string(), true, None))),
        Next::Fail(msg) => (None, Some((msg, false, None))),
        Next::Fault(f) => {
            let m = f.to_string();
            (None, Some((m.clone(), false, Some(m))))
        }
    }
}
