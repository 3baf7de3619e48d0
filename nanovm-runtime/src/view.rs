//! [`RunView`]: the one reading of a run's events. Where a run stands (its status, the step
//! it ended or waits at, what it waits for), which effects are open, which an operator must
//! reconcile, which secrets it references, which event ids it received (with their payloads'
//! fingerprints), how many entries it has.
//!
//! The stores keep their status columns with it, the durable protocol decides with it what a
//! stored run may be continued with, workers decide with it what a claimed run needs, and it is
//! public for hosts and tools that read traces.

use crate::budget::Usage;
use crate::canonical::Encoder;
use crate::program::{Name, Program, ToolInfo};
use crate::trace::{Actor, Entry, Event, Reply, RunStatus, ToolOutcome};
use crate::value::Json;
use crate::value::{Datum, Digest, VaultId};

/// Where a run stands after the events read so far. Built with [`RunView::of`] (or
/// [`RunView::of_program`]), or moved along one event at a time with [`RunView::apply`].
///
/// The status follows the events that move it: `run_started`, `delivered`, `timed_out`,
/// `reconciled` and `redriven` mean `running`; `suspended` means `suspended` at its step, waiting for its
/// event; `run_ended` sets the status, the step and the message (a suspension keeps what it
/// waits for). Other events (model calls, tool calls, erasures...) leave it as it is.
///
/// ```
/// # use nanovm_runtime::{RunView, trace::{Entry, RunStatus}};
/// # fn show(entries: &[Entry]) {
/// let view = RunView::of(entries);
/// if view.status() == RunStatus::Suspended {
///     println!("waiting for {:?}", view.waiting());
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RunView {
    status: RunStatus,
    step: Option<String>,
    message: Option<String>,
    waiting: Option<Waiting>,
    /// Effects whose intent is recorded and whose outcome is not, in the order of their first
    /// intent.
    open: Vec<OpenEffect>,
    secrets: Vec<VaultId>,
    /// The event ids received, with the fingerprint of each one's payload, in order.
    delivered: Vec<(String, Digest)>,
    entries: u64,
    /// The program's tools, when known: which effects are idempotent.
    tools: Option<&'static [ToolInfo]>,
    /// Every model answer, in order.
    answers: Vec<ModelAnswer>,
    /// The step the run is at ([`RunView::at`]).
    at: Option<String>,
    /// What the run did, counted ([`RunView::activity`]).
    activity: Activity,
    /// The steps the run entered (for [`Activity::rollbacks`]).
    entered: Vec<String>,
    /// The fingerprints of the tool calls' first attempts (for [`Activity::repeated_calls`]).
    calls: Vec<Digest>,
    /// Inside a parallel block: a branch's event came and the block has not joined.
    in_parallel: bool,
    /// Whether [`RunView::activity`] is counted ([`RunView::counting`]).
    counting: bool,
    /// The program hash the run is pinned to ([`RunView::program_hash`]).
    pinned: Option<Digest>,
    /// The last value each step (or branch) completed with ([`RunView::result`]).
    results: Vec<(String, Option<String>, StepValue)>,
    /// What the run consumed, as far as its events tell ([`RunView::usage`]).
    usage: Usage,
    /// Entries into each top-level step ([`RunView::visits`]).
    visits: Vec<(String, u32)>,
    /// The last event read was a `migrated` (the `suspended` after it re-issues the wait).
    after_migration: bool,
    /// The successful results of effects (a `tool_result` that closed an intent), in order.
    effect_results: Vec<(Digest, Json)>,
    /// The program's name, from `run_started`.
    program: Option<String>,
    /// The plain (not secret) recorded inputs, from `run_started`.
    plain_inputs: Vec<(String, Json)>,
    /// The erased secrets, with who erased them, in order ([`RunView::erased`]).
    erased: Vec<(VaultId, Actor)>,
    /// The last event that is not an `erased` closes an execution ([`RunView::at_rest`]).
    rest: bool,
}

/// What a run did, counted from its events ([`RunView::activity`]): the raw material of the
/// drift metrics (`crate::stats`).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Activity {
    /// Every transition the graph took, in order: `(step, next)` from the step-completing
    /// events (`decision`, a `model` or `tool_result` outside a parallel block with `next`,
    /// `joined` with `next`, `delivered`, `timed_out`).
    pub transitions: Vec<(String, String)>,
    /// Transitions into a step the run had entered before (a loop back: `check -> classify`).
    pub rollbacks: u64,
    /// Model and tool attempts after a step's first (`attempt > 1`).
    pub retries: u64,
    /// Tool calls (a `tool_intent`, or a `tool_result` without one), every attempt.
    pub tool_calls: u64,
    /// First attempts of a tool call with the same tool and the same arguments as an earlier
    /// call in the run (a retry of the same attempt chain is not churn).
    pub repeated_calls: u64,
    /// Model calls, every attempt.
    pub model_calls: u64,
    /// Prompt tokens of the model's answers.
    pub prompt_tokens: u64,
    /// Completion tokens of the model's answers.
    pub completion_tokens: u64,
    /// Model replies the graph refuses: an invalid answer (`invalid_answer`), or an answer
    /// outside a parallel block that completed no step (outside the choices with no
    /// `on invalid`, below `min_confidence`).
    pub refusals: u64,
    /// Failed model calls and failed tool calls (errors, not refusals).
    pub faults: u64,
    /// Budget trips (`budget_exceeded` events).
    pub budget_trips: u64,
}

/// The value a step completed with, as recorded: what its transition received.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StepValue {
    /// A model's answer (for a `choose`, the unwrapped, untrimmed text).
    Answer(String),
    /// A tool's result.
    Tool(Json),
    /// An `await`'s payload.
    Event(Json),
}

/// One model answer of a run, as recorded: what was answered, how sure the model was, and
/// whether the graph took it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ModelAnswer {
    /// The step (`step.branch` inside a parallel block).
    pub step: String,
    /// The answer text (for a constrained `choose`, the unwrapped choice).
    pub text: String,
    /// The answer's probability, where the server gave log-probabilities.
    pub probability: Option<f64>,
    /// The constraint mode, if decoding was constrained.
    pub constraint: Option<String>,
    /// The step the graph went to after this answer: for an answer it did not take (outside
    /// the choices, below `min_confidence`), `on invalid`'s target (`None`: retried, or the run
    /// stopped there).
    pub next: Option<String>,
}

/// What a suspended run waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiting {
    /// The event's name.
    pub event: String,
    /// When the `await` times out, in milliseconds since the Unix epoch (`None`: never).
    pub deadline_ms: Option<u64>,
}

/// An effect whose intent is recorded but whose outcome is not (no result, and no operator
/// answer that it happened).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenEffect {
    /// The effect id (the idempotency key).
    pub effect_id: Digest,
    /// The tool.
    pub tool: String,
    /// The step that called it.
    pub step: String,
    /// Whether the tool is declared `idempotent` (`None`: the view does not know the program,
    /// see [`RunView::of_program`]).
    pub idempotent: Option<bool>,
    /// An operator answered that it did not happen ([`crate::Resolution::NotDone`]), and the
    /// run has not been paused for it again since.
    pub not_done: bool,
}

impl Default for RunView {
    fn default() -> Self {
        RunView::new()
    }
}

impl RunView {
    /// The view of a run with no events yet (status `running`), not knowing the program.
    pub fn new() -> RunView {
        RunView {
            status: RunStatus::Running,
            step: None,
            message: None,
            waiting: None,
            open: Vec::new(),
            secrets: Vec::new(),
            delivered: Vec::new(),
            entries: 0,
            tools: None,
            answers: Vec::new(),
            at: None,
            activity: Activity::default(),
            entered: Vec::new(),
            calls: Vec::new(),
            in_parallel: false,
            counting: false,
            pinned: None,
            results: Vec::new(),
            usage: Usage::default(),
            visits: Vec::new(),
            after_migration: false,
            effect_results: Vec::new(),
            program: None,
            plain_inputs: Vec::new(),
            erased: Vec::new(),
            rest: false,
        }
    }

    /// This view, counting what the run does ([`RunView::activity`]) from here on: the drift
    /// metrics read runs with `RunView::new().counting().read(entries)`. Off by default, so
    /// the protocol's readings of a run pay nothing for it.
    #[must_use]
    pub fn counting(mut self) -> RunView {
        self.counting = true;
        self
    }

    /// A view that knows program `P`'s tools, so it can tell which open effects are
    /// idempotent (and so never need an operator).
    pub fn for_program<P: Program>() -> RunView {
        RunView {
            tools: Some(P::info().tools),
            ..RunView::new()
        }
    }

    /// The view of `entries`, not knowing the program (every open effect counts as one an
    /// operator may have to reconcile).
    pub fn of(entries: &[Entry]) -> RunView {
        RunView::new().read(entries)
    }

    /// The view of `entries` of a run of `P`.
    pub fn of_program<P: Program>(entries: &[Entry]) -> RunView {
        RunView::for_program::<P>().read(entries)
    }

    /// The view moved along `entries`.
    #[must_use]
    pub fn read(mut self, entries: &[Entry]) -> RunView {
        for e in entries {
            self.apply(&e.event);
        }
        self
    }

    /// Moves the view along one event.
    pub fn apply(&mut self, event: &Event) {
        self.entries += 1;
        match event {
            Event::Erased { vault_id, by } => self.erased.push((*vault_id, by.clone())),
            event => self.rest = crate::trace::at_rest(event),
        }
        self.apply_status(event);
        self.apply_at(event);
        self.apply_activity(event);
        self.apply_progress(event);
        match event {
            Event::RunStarted {
                inputs, program, ..
            } => {
                self.program = Some(program.to_string());
                self.plain_inputs = inputs
                    .iter()
                    .filter_map(|(name, d)| match d {
                        Datum::Plain(v) => Some((name.to_string(), v.clone())),
                        Datum::Secret { .. } => None,
                    })
                    .collect();
                self.note_secrets(inputs);
            }
            Event::Model {
                step,
                branch,
                reply:
                    Reply::Answer {
                        text,
                        probability,
                        constraint,
                        ..
                    },
                next,
                ..
            } => self.answers.push(ModelAnswer {
                step: match branch {
                    Some(b) => format!("{step}.{b}"),
                    None => step.to_string(),
                },
                text: text.clone(),
                probability: *probability,
                constraint: constraint.clone(),
                next: next.as_ref().map(|n| n.to_string()),
            }),
            Event::Delivered {
                event_id, payload, ..
            } => self
                .delivered
                .push((event_id.clone(), payload_fingerprint(payload))),
            Event::ToolIntent {
                step,
                tool,
                effect_id,
                args,
                ..
            } => {
                self.note_secrets(args);
                if !self.open.iter().any(|o| o.effect_id == *effect_id) {
                    let idempotent = self
                        .tools
                        .map(|ts| ts.iter().any(|t| t.name == tool.as_ref() && t.idempotent));
                    self.open.push(OpenEffect {
                        effect_id: *effect_id,
                        tool: tool.to_string(),
                        step: step.to_string(),
                        idempotent,
                        not_done: false,
                    });
                }
            }
            Event::ToolResult {
                key, args, result, ..
            } => {
                if let Some(args) = args {
                    self.note_secrets(args);
                }
                if let ToolOutcome::Ok(v) = result
                    && self.open.iter().any(|o| o.effect_id == *key)
                {
                    self.effect_results.push((*key, v.clone()));
                }
                self.open.retain(|o| o.effect_id != *key);
            }
            Event::Reconciled {
                effect_id,
                result: Some(_),
                ..
            } => self.open.retain(|o| o.effect_id != *effect_id),
            Event::Reconciled {
                effect_id,
                result: None,
                ..
            } => {
                for o in &mut self.open {
                    if o.effect_id == *effect_id {
                        o.not_done = true;
                    }
                }
            }
            Event::RunEnded {
                status: RunStatus::NeedsReconciliation,
                ..
            } if !self.open.iter().any(|o| o.needs_operator() && !o.not_done) => {
                // Every effect had an answer before this pause: the run went on and may have
                // made the calls, so the answers no longer hold.
                for o in &mut self.open {
                    if o.needs_operator() {
                        o.not_done = false;
                    }
                }
            }
            _ => {}
        }
    }

    /// The result the effect `effect_id` returned, if its tool ever succeeded (the last such
    /// result): an effect that happened, whatever the run did with its answer afterwards.
    pub fn effect_result(&self, effect_id: Digest) -> Option<&Json> {
        self.effect_results
            .iter()
            .rev()
            .find(|(k, _)| *k == effect_id)
            .map(|(_, v)| v)
    }

    /// The model's answers, in order, with their probabilities: how sure the model was of what
    /// the graph decided on.
    pub fn answers(&self) -> &[ModelAnswer] {
        &self.answers
    }

    /// The fingerprint ([`payload_fingerprint`]) of the payload the run received under
    /// `event_id` (of any event name), or `None` if it never received that id.
    pub fn delivered(&self, event_id: &str) -> Option<Digest> {
        self.delivered
            .iter()
            .find(|(id, _)| id == event_id)
            .map(|(_, f)| *f)
    }

    /// Moves only the status, step, message and what the run waits for along `event`: all a
    /// store's record keeps.
    pub(crate) fn apply_status(&mut self, event: &Event) {
        match event {
            Event::RunStarted { .. }
            | Event::Delivered { .. }
            | Event::TimedOut { .. }
            | Event::Reconciled { .. }
            | Event::Redriven { .. } => {
                self.status = RunStatus::Running;
                self.step = None;
                self.message = None;
                self.waiting = None;
            }
            Event::Suspended {
                step,
                event,
                deadline_ms,
            } => {
                self.status = RunStatus::Suspended;
                self.step = Some(step.to_string());
                self.message = None;
                self.waiting = Some(Waiting {
                    event: event.to_string(),
                    deadline_ms: *deadline_ms,
                });
            }
            Event::RunEnded {
                status,
                step,
                message,
            } => {
                self.status = *status;
                self.step = step.as_ref().map(|s| s.to_string());
                self.message.clone_from(message);
                if *status != RunStatus::Suspended {
                    self.waiting = None;
                }
            }
            _ => {}
        }
    }

    /// True for the events that move [`RunView::status`] (and the step, message and waiting).
    pub(crate) fn moves_status(event: &Event) -> bool {
        matches!(
            event,
            Event::RunStarted { .. }
                | Event::Delivered { .. }
                | Event::TimedOut { .. }
                | Event::Reconciled { .. }
                | Event::Suspended { .. }
                | Event::RunEnded { .. }
                | Event::Redriven { .. }
        )
    }

    /// True for the events that end an execution: `run_ended` (any status, also
    /// `needs_reconciliation`) and `suspended`. Nothing follows them in the execution that wrote
    /// them, so the write that carries one is that execution's last (the recorder gives the run's
    /// lease back in it).
    pub(crate) fn ends_execution(event: &Event) -> bool {
        matches!(event, Event::Suspended { .. } | Event::RunEnded { .. })
    }

    /// A view that continues from what a store's record keeps (the status, the step, the
    /// message, what the run waits for); the effects and secrets are not known.
    pub(crate) fn from_record(
        status: RunStatus,
        step: Option<String>,
        message: Option<String>,
        waiting_for: Option<String>,
        deadline_ms: Option<u64>,
    ) -> RunView {
        RunView {
            status,
            step,
            message,
            // A record keeps a deadline only with the event waited for.
            waiting: waiting_for.map(|event| Waiting { event, deadline_ms }),
            ..RunView::new()
        }
    }

    /// What a store's record keeps: status, step, message, the event waited for and its
    /// deadline.
    pub(crate) fn into_record(
        self,
    ) -> (
        RunStatus,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u64>,
    ) {
        let (waiting_for, deadline_ms) = match self.waiting {
            Some(w) => (Some(w.event), w.deadline_ms),
            None => (None, None),
        };
        (
            self.status,
            self.step,
            self.message,
            waiting_for,
            deadline_ms,
        )
    }

    /// The run's status.
    pub fn status(&self) -> RunStatus {
        self.status
    }

    /// The step the run ended at, failed at, or is suspended at.
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// The step the run is at, whatever its status: for a running run the step it is working
    /// in (a model or tool call recorded there, an effect in flight) or the successor the last
    /// completed step chose; for a suspended or ended run its step ([`RunView::step`]). Inside
    /// a parallel step, the parallel step. `None` before the first step is recorded (a run that
    /// has only started) and for a view continued from a store's record.
    pub fn at(&self) -> Option<&str> {
        self.at.as_deref()
    }

    /// What the run did, counted: empty unless the view was made [`RunView::counting`].
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// True while the run is inside a parallel block: a branch's event was recorded and the
    /// block has not joined (nor the run paused or ended) since.
    pub fn in_parallel(&self) -> bool {
        self.in_parallel
    }

    /// Moves [`RunView::activity`] (and [`RunView::in_parallel`]) along `event`.
    fn apply_activity(&mut self, event: &Event) {
        match event {
            Event::Model {
                branch: Some(_), ..
            }
            | Event::ToolIntent {
                branch: Some(_), ..
            }
            | Event::ToolResult {
                branch: Some(_), ..
            } => self.in_parallel = true,
            Event::Joined { .. } | Event::Suspended { .. } | Event::RunEnded { .. } => {
                self.in_parallel = false;
            }
            _ => {}
        }
        if !self.counting {
            return;
        }
        let a = &mut self.activity;
        let mut call =
            |tool: &str, args: &[(Name, Datum)], attempt: u32, calls: &mut Vec<Digest>| {
                a.tool_calls += 1;
                if attempt > 1 {
                    a.retries += 1;
                    return;
                }
                let mut e = Encoder::new();
                e.json(&Json::String(tool.to_string()));
                for (name, d) in args {
                    e.json(&Json::String(name.to_string()));
                    e.datum(d);
                }
                let key = Digest::of(e.bytes());
                if calls.contains(&key) {
                    a.repeated_calls += 1;
                } else {
                    calls.push(key);
                }
            };
        let next = match event {
            Event::ToolIntent {
                tool,
                args,
                attempt,
                ..
            } => {
                call(tool, args, *attempt, &mut self.calls);
                None
            }
            Event::ToolResult {
                step,
                branch,
                tool,
                args,
                attempt,
                result,
                next,
                ..
            } => {
                if let Some(args) = args {
                    call(tool, args, *attempt, &mut self.calls);
                }
                if matches!(result, ToolOutcome::Err { .. }) {
                    a.faults += 1;
                }
                next.as_ref()
                    .filter(|_| branch.is_none())
                    .map(|n| (step, n))
            }
            Event::Model {
                step,
                branch,
                attempt,
                reply,
                next,
                ..
            } => {
                a.model_calls += 1;
                if *attempt > 1 {
                    a.retries += 1;
                }
                match reply {
                    Reply::Answer {
                        prompt_tokens,
                        completion_tokens,
                        ..
                    } => {
                        a.prompt_tokens += prompt_tokens;
                        a.completion_tokens += completion_tokens;
                        if branch.is_none() && next.is_none() {
                            a.refusals += 1;
                        }
                    }
                    Reply::Error {
                        invalid_answer: true,
                        ..
                    } => a.refusals += 1,
                    Reply::Error { .. } => a.faults += 1,
                }
                next.as_ref()
                    .filter(|_| branch.is_none())
                    .map(|n| (step, n))
            }
            Event::Decision { step, next, .. }
            | Event::Delivered { step, next, .. }
            | Event::TimedOut { step, next, .. } => Some((step, next)),
            Event::Joined {
                step,
                next: Some(next),
                ..
            } => Some((step, next)),
            Event::BudgetExceeded { .. } => {
                a.budget_trips += 1;
                None
            }
            _ => None,
        };
        if let Some((step, next)) = next {
            if !self.entered.iter().any(|s| s == step.as_ref()) {
                self.entered.push(step.to_string());
            }
            if self.entered.iter().any(|s| s == next.as_ref()) {
                a.rollbacks += 1;
            } else {
                self.entered.push(next.to_string());
            }
            a.transitions.push((step.to_string(), next.to_string()));
        }
    }

    /// Moves [`RunView::at`] along `event`.
    fn apply_at(&mut self, event: &Event) {
        let at = match event {
            Event::RunStarted { .. } => {
                self.at = None;
                return;
            }
            // Inside a parallel step the run is at that step until it joins, whatever a branch
            // chose.
            Event::Model {
                step, branch, next, ..
            }
            | Event::ToolResult {
                step, branch, next, ..
            } => match (branch, next) {
                (None, Some(next)) => next,
                _ => step,
            },
            Event::Joined { step, next, .. } => next.as_ref().unwrap_or(step),
            Event::Decision { next, .. }
            | Event::Delivered { next, .. }
            | Event::TimedOut { next, .. }
            | Event::Replanned { to: next, .. } => next,
            Event::ToolIntent { step, .. }
            | Event::Suspended { step, .. }
            | Event::BudgetExceeded { step, .. }
            | Event::Reconciled { step, .. } => step,
            Event::RunEnded {
                step: Some(step), ..
            } => step,
            _ => return,
        };
        self.at = Some(at.to_string());
    }

    /// The message it ended with, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// What a suspended run waits for.
    pub fn waiting(&self) -> Option<&Waiting> {
        self.waiting.as_ref()
    }

    /// The effects whose intent is recorded and whose outcome is not, in the order of their
    /// first intent.
    pub fn open_effects(&self) -> &[OpenEffect] {
        &self.open
    }

    /// The effects an operator must reconcile ([`crate::Runtime::reconcile`]): open effects
    /// of tools that are not idempotent, without an operator's answer, in the order of their
    /// first intent. Empty unless the run is paused `needs_reconciliation`.
    ///
    /// An operator's `NotDone` answers one effect for the rest of the pause (while other
    /// effects of the same parallel round still wait for answers); once every effect of the
    /// pause is answered the run calls the tools again, so an effect whose `NotDone` is
    /// followed by a new pause without a result is ambiguous again (the call may have happened
    /// before a crash).
    pub fn to_reconcile(&self) -> Vec<Digest> {
        if self.status != RunStatus::NeedsReconciliation {
            return Vec::new();
        }
        self.open
            .iter()
            .filter(|o| o.needs_operator() && !o.not_done)
            .map(|o| o.effect_id)
            .collect()
    }

    /// The effects the run's pause asks an operator about: [`RunView::to_reconcile`], and
    /// when the view does not know the program (so cannot tell an idempotent tool's open
    /// effect, which a worker simply calls again), only those the pause's message names.
    pub fn to_answer(&self) -> Vec<Digest> {
        let named = self.message.as_deref().unwrap_or_default();
        self.to_reconcile()
            .into_iter()
            .filter(|d| self.tools.is_some() || named.contains(&d.to_hex()))
            .collect()
    }

    /// The vault ids of the secrets the run's inputs and tool arguments reference, in the
    /// order they first appear.
    pub fn secrets(&self) -> &[VaultId] {
        &self.secrets
    }

    /// The secrets erased from the run (its `erased` tombstones), with who erased each and
    /// why, in order.
    pub fn erased(&self) -> &[(VaultId, Actor)] {
        &self.erased
    }

    /// Who erased the secret `vault_id` from the run, if it was.
    pub fn erased_by(&self, vault_id: VaultId) -> Option<&Actor> {
        self.erased
            .iter()
            .find(|(v, _)| *v == vault_id)
            .map(|(_, by)| by)
    }

    /// True when no execution of the run is under way or due to continue on its own: its
    /// last entry that is not an `erased` ended an execution ([`crate::trace::at_rest`]: a
    /// `run_ended`, a `suspended`, a `migrated`). Only then may an erasure append its
    /// tombstones.
    pub fn at_rest(&self) -> bool {
        self.rest
    }

    /// The program the run belongs to (from `run_started`; `None` before it).
    pub fn program(&self) -> Option<&str> {
        self.program.as_deref()
    }

    /// The run's plain recorded inputs, name and value, in declaration order (secret inputs
    /// are left out: the trace holds only their commitments). What a repeated start of the
    /// run is compared with.
    pub fn plain_inputs(&self) -> &[(String, Json)] {
        &self.plain_inputs
    }

    /// The number of events read.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The hash of the program the run is pinned to: the one it started under, or the one the
    /// last `migrated` event moved it to. `None` before `run_started`.
    pub fn program_hash(&self) -> Option<Digest> {
        self.pinned
    }

    /// The last value `step` (of `branch`, inside a parallel step) completed with: the model
    /// answer, tool result or event payload its transition took.
    pub fn result(&self, step: &str, branch: Option<&str>) -> Option<&StepValue> {
        self.results
            .iter()
            .find(|(s, b, _)| s == step && b.as_deref() == branch)
            .map(|(_, _, v)| v)
    }

    /// The last value of every step (or branch) that completed with one, the most recent
    /// last: `(step, branch, value)`.
    pub fn results(&self) -> impl Iterator<Item = (&str, Option<&str>, &StepValue)> {
        self.results
            .iter()
            .map(|(s, b, v)| (s.as_str(), b.as_deref(), v))
    }

    /// What the run consumed, read from its events: steps entered (a step's first attempt,
    /// each branch run, a decision, a suspension, a join), model calls and their tokens, tool
    /// invocations (an effect counts at its intent). A migrated run continues counting from
    /// here.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// How many times the top-level step `step` was entered (what its effect ids count).
    pub fn visits(&self, step: &str) -> u32 {
        self.visits
            .iter()
            .find(|(s, _)| s == step)
            .map_or(0, |(_, n)| *n)
    }

    fn enter(&mut self, step: &str) {
        self.usage.steps += 1;
        match self.visits.iter_mut().find(|(s, _)| s == step) {
            Some((_, n)) => *n += 1,
            None => self.visits.push((step.to_string(), 1)),
        }
    }

    /// Records the value `step` completed with, as the most recent.
    fn complete(&mut self, step: &str, branch: Option<&str>, value: StepValue) {
        self.results
            .retain(|(s, b, _)| !(s == step && b.as_deref() == branch));
        self.results
            .push((step.to_string(), branch.map(str::to_string), value));
    }

    /// Moves the pinned hash, the step results and the usage along `event`.
    fn apply_progress(&mut self, event: &Event) {
        let after_migration = std::mem::take(&mut self.after_migration);
        match event {
            Event::RunStarted { program_hash, .. } => self.pinned = Some(*program_hash),
            Event::Migrated { to, .. } => {
                self.pinned = Some(*to);
                self.after_migration = true;
            }
            Event::Model {
                step,
                branch,
                attempt,
                reply,
                next,
                ..
            } => {
                self.usage.model_calls += 1;
                if *attempt > 1 {
                    self.usage.retries += 1;
                }
                if let Reply::Answer {
                    text,
                    prompt_tokens,
                    completion_tokens,
                    cache_hit,
                    ..
                } = reply
                {
                    self.usage.prompt_tokens += prompt_tokens;
                    self.usage.completion_tokens += completion_tokens;
                    if *cache_hit {
                        self.usage.cache_hits += 1;
                    }
                    if next.is_some() || branch.is_some() {
                        self.complete(step, branch.as_deref(), StepValue::Answer(text.clone()));
                    }
                }
                match (branch, *attempt) {
                    (None, 1) => self.enter(step),
                    (Some(_), 1) => self.usage.steps += 1,
                    _ => {}
                }
            }
            Event::ToolIntent {
                step,
                branch,
                attempt,
                ..
            } => {
                self.usage.tool_calls += 1;
                if *attempt > 1 {
                    self.usage.retries += 1;
                }
                match (branch, *attempt) {
                    (None, 1) => self.enter(step),
                    (Some(_), 1) => self.usage.steps += 1,
                    _ => {}
                }
            }
            Event::ToolResult {
                step,
                branch,
                attempt,
                args,
                result,
                next,
                ..
            } => {
                // An effect's invocation was counted at its intent.
                if args.is_some() {
                    self.usage.tool_calls += 1;
                    if *attempt > 1 {
                        self.usage.retries += 1;
                    }
                    match (branch, *attempt) {
                        (None, 1) => self.enter(step),
                        (Some(_), 1) => self.usage.steps += 1,
                        _ => {}
                    }
                }
                if let crate::trace::ToolOutcome::Ok(v) = result
                    && (next.is_some() || branch.is_some())
                {
                    self.complete(step, branch.as_deref(), StepValue::Tool(v.clone()));
                }
            }
            Event::Decision { step, .. } | Event::Joined { step, .. } => self.enter(step),
            Event::Suspended { step, .. } if !after_migration => self.enter(step),
            Event::Delivered { step, payload, .. } => {
                self.complete(step, None, StepValue::Event(payload.clone()));
            }
            _ => {}
        }
    }

    fn note_secrets(&mut self, data: &[(Name, Datum)]) {
        for (_, d) in data {
            if let Datum::Secret { vault_id, .. } = d
                && !self.secrets.contains(vault_id)
            {
                self.secrets.push(*vault_id);
            }
        }
    }
}

impl OpenEffect {
    /// Whether an operator may have to answer for it: its tool is not known to be idempotent.
    fn needs_operator(&self) -> bool {
        self.idempotent != Some(true)
    }
}

/// The fingerprint of an event payload: blake3 of its canonical encoding, so the same payload
/// with its object keys in another order has the same fingerprint. An event id is an
/// idempotency key: a second delivery under it is a duplicate only with the same fingerprint.
pub fn payload_fingerprint(payload: &Json) -> Digest {
    let mut e = Encoder::new();
    e.json(payload);
    Digest::of(e.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program and the plain inputs come from `run_started`; secrets stay out.
    #[test]
    fn program_and_plain_inputs_are_read_from_run_started() {
        let v = RunView::new();
        assert_eq!(v.program(), None);
        let mut v = v;
        v.apply(&Event::RunStarted {
            run_id: "r".into(),
            program: "refund".into(),
            program_hash: Digest([0; 32]),
            inputs: vec![
                ("order_id".into(), Datum::Plain(Json::from("o-1"))),
                (
                    "email".into(),
                    Datum::Secret {
                        vault_id: VaultId([3; 16]),
                        commitment: Digest([4; 32]),
                    },
                ),
                ("amount_cents".into(), Datum::Plain(Json::from(5))),
            ],
        });
        assert_eq!(v.program(), Some("refund"));
        assert_eq!(
            v.plain_inputs(),
            [
                ("order_id".to_string(), Json::from("o-1")),
                ("amount_cents".to_string(), Json::from(5))
            ]
        );
        assert_eq!(v.secrets(), [VaultId([3; 16])]);
    }

    /// `at` follows the run through its steps: where it is working, the successor it chose,
    /// where it waits, where it ended; nothing before its first step.
    #[test]
    fn at_is_the_step_the_run_is_at() {
        let mut v = RunView::new();
        v.apply(&Event::RunStarted {
            run_id: "r".into(),
            program: "p".into(),
            program_hash: Digest([0; 32]),
            inputs: vec![],
        });
        assert_eq!(v.at(), None);
        v.apply(&Event::ToolIntent {
            step: "pay".into(),
            branch: None,
            attempt: 1,
            tool: "issue_refund".into(),
            effect_id: Digest([1; 32]),
            args: vec![],
        });
        assert_eq!(v.at(), Some("pay"));
        v.apply(&Event::Decision {
            step: "route".into(),
            arm: None,
            next: "review".into(),
        });
        assert_eq!(v.at(), Some("review"));
        v.apply(&Event::Suspended {
            step: "review".into(),
            event: "approval".into(),
            deadline_ms: None,
        });
        assert_eq!(v.at(), Some("review"));
        v.apply(&Event::TimedOut {
            step: "review".into(),
            next: "reject".into(),
        });
        assert_eq!(
            (v.status(), v.step(), v.at()),
            (RunStatus::Running, None, Some("reject"))
        );
        v.apply(&Event::RunEnded {
            status: RunStatus::Success,
            step: Some("done".into()),
            message: None,
        });
        assert_eq!(v.at(), Some("done"));
    }

    /// Ported from the stores' `Progress`: the record follows the lifecycle.
    #[test]
    fn the_status_follows_the_lifecycle() {
        let mut v = RunView::new();
        v.apply(&Event::Suspended {
            step: "wait".into(),
            event: "approval".into(),
            deadline_ms: Some(5),
        });
        assert_eq!(v.status(), RunStatus::Suspended);
        assert_eq!(v.waiting().map(|w| w.event.as_str()), Some("approval"));
        assert_eq!(v.waiting().and_then(|w| w.deadline_ms), Some(5));
        v.apply(&Event::TimedOut {
            step: "wait".into(),
            next: "x".into(),
        });
        assert_eq!(v.status(), RunStatus::Running);
        assert_eq!((v.step(), v.message(), v.waiting()), (None, None, None));
        v.apply(&Event::RunEnded {
            status: RunStatus::Failed,
            step: Some("x".into()),
            message: Some("m".into()),
        });
        assert_eq!(v.status(), RunStatus::Failed);
        assert_eq!(v.step(), Some("x"));
        assert_eq!(v.message(), Some("m"));
        assert_eq!(v.entries(), 3);
    }

    fn intent(key: u8, tool: &'static str) -> Event {
        Event::ToolIntent {
            step: "pay".into(),
            branch: None,
            attempt: 1,
            tool: tool.into(),
            effect_id: Digest([key; 32]),
            args: vec![(
                "card".into(),
                Datum::Secret {
                    vault_id: VaultId([key; 16]),
                    commitment: Digest::ZERO,
                },
            )],
        }
    }

    fn pause() -> Event {
        Event::RunEnded {
            status: RunStatus::NeedsReconciliation,
            step: Some("pay".into()),
            message: None,
        }
    }

    fn answer(key: u8, done: bool) -> Event {
        Event::Reconciled {
            step: "pay".into(),
            effect_id: Digest([key; 32]),
            result: done.then(|| serde_json::json!("ok")),
            by: None,
        }
    }

    /// Ported from `durable::ambiguous_effects`: what an operator must reconcile, through
    /// answers and a second pause.
    #[test]
    fn effects_to_reconcile_follow_the_answers_and_the_pauses() {
        let mut v = RunView::new();
        v.apply(&intent(1, "charge"));
        v.apply(&intent(2, "refund"));
        assert!(v.to_reconcile().is_empty(), "running: nothing to reconcile");
        assert_eq!(v.open_effects().len(), 2);
        v.apply(&pause());
        assert_eq!(v.to_reconcile(), vec![Digest([1; 32]), Digest([2; 32])]);
        v.apply(&answer(1, false));
        v.apply(&pause());
        assert_eq!(v.to_reconcile(), vec![Digest([2; 32])], "NotDone holds");
        v.apply(&answer(2, true));
        assert_eq!(v.open_effects().len(), 1, "Done closes the effect");
        v.apply(&pause());
        assert_eq!(
            v.to_reconcile(),
            vec![Digest([1; 32])],
            "every effect was answered before this pause: ambiguous again"
        );
        assert_eq!(v.secrets(), &[VaultId([1; 16]), VaultId([2; 16])]);
    }

    /// A run is inside a parallel block from a branch's first event to the join.
    #[test]
    fn in_parallel_lasts_until_the_join() {
        let mut v = RunView::new();
        let mut branch = intent(4, "charge");
        if let Event::ToolIntent { branch: b, .. } = &mut branch {
            *b = Some("a".into());
        }
        assert!(!v.in_parallel());
        v.apply(&branch);
        assert!(v.in_parallel());
        v.apply(&Event::Joined {
            step: "fan".into(),
            failed: vec![],
            next: Some("done".into()),
        });
        assert!(!v.in_parallel());
    }

    #[test]
    fn results_close_effects_and_erasures_change_nothing() {
        let mut v = RunView::new();
        v.apply(&intent(3, "charge"));
        let before = v.status();
        v.apply(&Event::Erased {
            vault_id: VaultId([3; 16]),
            by: crate::trace::Actor::new("dpo", "request 3"),
        });
        assert_eq!(v.status(), before);
        v.apply(&Event::ToolResult {
            step: "pay".into(),
            branch: None,
            attempt: 1,
            tool: "charge".into(),
            key: Digest([3; 32]),
            args: None,
            result: crate::trace::ToolOutcome::Ok(serde_json::json!(1)),
            next: None,
        });
        assert!(v.open_effects().is_empty());
        v.apply(&pause());
        assert!(v.to_reconcile().is_empty());
    }
}
