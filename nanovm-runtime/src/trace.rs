//! The trace: an append-only, blake3 hash-chained record of everything a run did.
//!
//! Entry `i` stores `hash_i = blake3(hash_{i-1} || seq_i || canonical(event_i))` with
//! `hash_{-1}` = 32 zero bytes; the last hash is the run's *root hash*. Every field that appears
//! in an exported trace is covered: `seq` and `prev` by the formula, the event by its canonical
//! encoding ([`Encoder`]). Wall-clock timings never enter events (they live in
//! [`crate::Metrics`]); the few time-dependent facts that decide control flow (a suspension
//! deadline, a duration budget trip) are recorded as data and therefore hashed.
//!
//! Exported traces are JSON Lines, one [`Entry`] per line, in a canonical text form:
//! [`verify_jsonl`] rejects a line whose bytes differ from the canonical rendering of what it
//! parses to, so no edit of an exported trace, down to a single byte, goes unnoticed.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::canonical::Encoder;
pub use crate::program::{Name, ReplanOn};
pub use crate::value::Datum;
use crate::value::{Digest, Json, VaultId};

/// The status of a run (docs/runtime.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Executing.
    Running,
    /// Waiting for an event (`await`).
    Suspended,
    /// Reached an `end ...: success`.
    Success,
    /// Reached an `end ...: failure`, or a failure had no `on error` edge, or a run-time fault.
    Failed,
    /// A budget ran out.
    BudgetExceeded,
    /// Too many consecutive invalid model answers.
    Stalled,
    /// Cancelled by the caller.
    Cancelled,
    /// After a crash, an effect's outcome is unknown and the tool is not idempotent: an
    /// operator must say whether it happened.
    NeedsReconciliation,
}

impl RunStatus {
    /// The snake_case name, e.g. `"budget_exceeded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Suspended => "suspended",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::BudgetExceeded => "budget_exceeded",
            RunStatus::Stalled => "stalled",
            RunStatus::Cancelled => "cancelled",
            RunStatus::NeedsReconciliation => "needs_reconciliation",
        }
    }

    /// Parses [`RunStatus::as_str`]'s output.
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "suspended" => RunStatus::Suspended,
            "success" => RunStatus::Success,
            "failed" => RunStatus::Failed,
            "budget_exceeded" => RunStatus::BudgetExceeded,
            "stalled" => RunStatus::Stalled,
            "cancelled" => RunStatus::Cancelled,
            "needs_reconciliation" => RunStatus::NeedsReconciliation,
            _ => return None,
        })
    }

    /// True for statuses after which no step ever runs again: `success`, `failed`,
    /// `budget_exceeded`, `stalled`, `cancelled`. (`needs_reconciliation` waits for an operator.)
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success
                | RunStatus::Failed
                | RunStatus::BudgetExceeded
                | RunStatus::Stalled
                | RunStatus::Cancelled
        )
    }

    fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// `max_steps`
    MaxSteps,
    /// `max_tokens`
    MaxTokens,
    /// `max_stalled_steps`
    MaxStalledSteps,
    /// `max_duration` (milliseconds)
    MaxDuration,
    /// `max_tool_calls`
    MaxToolCalls,
}

impl BudgetKind {
    /// The budget's name in the language, e.g. `"max_steps"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::MaxSteps => "max_steps",
            BudgetKind::MaxTokens => "max_tokens",
            BudgetKind::MaxStalledSteps => "max_stalled_steps",
            BudgetKind::MaxDuration => "max_duration",
            BudgetKind::MaxToolCalls => "max_tool_calls",
        }
    }
}

/// Who took an operator action and why, as the caller gave them (recorded on `delivered` and
/// `reconciled`; see [`Runtime::deliver_as`](crate::Runtime::deliver_as)). Hashed with the
/// event when present; an event without one hashes as before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Actor {
    /// Who: an operator's or a service's identity, as the caller authenticated it.
    pub id: String,
    /// Why, in the caller's words (a ticket, a note).
    pub reason: String,
}

impl Actor {
    /// `id` acting for `reason`.
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Actor {
            id: id.into(),
            reason: reason.into(),
        }
    }
}

/// The model's side of a model call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// The model answered.
    Answer {
        /// The raw text, before trimming.
        text: String,
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// Tokens in the completion.
        completion_tokens: u64,
        /// Served from the response cache without calling the model.
        cache_hit: bool,
        /// The token counts are the adapter's estimate, not the server's report. Absent (and
        /// encoded exactly as before the field existed) when false.
        #[serde(default, skip_serializing_if = "is_false")]
        tokens_estimated: bool,
        /// The probability of the answer, from the server's log-probabilities (absent when it
        /// gave none). A `choose` step's `min_confidence` compares against it; replay uses
        /// this recorded value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probability: Option<f64>,
        /// What the server really sent, when it differs from `text` (a constrained answer,
        /// unwrapped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_text: Option<String>,
        /// The constraint mode decoding ran under (`json_schema`, `json_object`, `grammar`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        constraint: Option<String>,
    },
    /// The call failed.
    Error {
        /// What went wrong.
        message: String,
        /// Whether a retry could help.
        retryable: bool,
        /// The server answered with something that is not an answer (refusal, tool call,
        /// truncation); for a `choose` step it follows `on invalid`. Absent when false.
        #[serde(default, skip_serializing_if = "is_false")]
        invalid_answer: bool,
    },
}

/// `skip_serializing_if` for flags that are absent when false.
fn is_false(b: &bool) -> bool {
    !*b
}

/// A tool's side of a tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolOutcome {
    /// The tool returned a value (recorded before decoding against the declared type).
    Ok(Json),
    /// The tool failed.
    Err {
        /// What went wrong.
        message: String,
        /// Whether a retry could help.
        retryable: bool,
    },
}

/// Something that happened in a run.
///
/// Step-completing events carry `next`, the successor the compiled transition chose (`None`
/// when the attempt did not complete the step: a failed attempt that will be retried, a stall).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The run began.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The program's name.
        program: Name,
        /// The compiled program's hash; replay refuses a different one.
        program_hash: Digest,
        /// The inputs in declaration order (secrets as commitments).
        inputs: Vec<(Name, Datum)>,
    },
    /// A model call and its reply. Model calls have no side effects to fence, so request and
    /// reply are one event, written after the reply.
    Model {
        /// The step.
        step: Name,
        /// The branch, inside a parallel step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<Name>,
        /// 1 for the first attempt.
        attempt: u32,
        /// `model: "..."`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<Name>,
        /// The rendered system prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// The rendered prompt.
        prompt: String,
        /// For `choose`: the runtime's instruction naming the admissible answers, sent with
        /// the prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
        /// What came back.
        reply: Reply,
        /// The successor chosen, if this attempt completed the step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<Name>,
    },
    /// Written (and made durable) before an `effect` tool is called.
    ToolIntent {
        /// The step.
        step: Name,
        /// The branch, inside a parallel step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<Name>,
        /// 1 for the first attempt.
        attempt: u32,
        /// The tool.
        tool: Name,
        /// The effect id, passed to the tool as its idempotency key.
        effect_id: Digest,
        /// The arguments (secrets as commitments).
        args: Vec<(Name, Datum)>,
    },
    /// A tool call's outcome.
    ToolResult {
        /// The step.
        step: Name,
        /// The branch, inside a parallel step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<Name>,
        /// 1 for the first attempt.
        attempt: u32,
        /// The tool.
        tool: Name,
        /// The idempotency key the tool received (the effect id for `effect` tools).
        key: Digest,
        /// The arguments, for tools without an intent event (read-only tools).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        args: Option<Vec<(Name, Datum)>>,
        /// What came back.
        result: ToolOutcome,
        /// The successor chosen, if this attempt completed the step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<Name>,
    },
    /// A `guard` or `branch` chose a successor.
    Decision {
        /// The step.
        step: Name,
        /// The 0-based index of the `when` arm that fired; `None` for `otherwise`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arm: Option<u32>,
        /// The successor.
        next: Name,
    },
    /// A parallel step's branches finished (or gave up).
    Joined {
        /// The parallel step.
        step: Name,
        /// Branches that did not succeed, in declaration order (empty on success).
        failed: Vec<Name>,
        /// The successor (`None`: failed without `on error`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<Name>,
    },
    /// The run suspended at an `await`.
    Suspended {
        /// The await step.
        step: Name,
        /// The event waited for.
        event: Name,
        /// When the timeout edge fires, in milliseconds since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// The awaited event arrived.
    Delivered {
        /// The await step.
        step: Name,
        /// The event name.
        event: Name,
        /// The event's id (duplicates are recognised by it).
        event_id: String,
        /// The payload.
        payload: Json,
        /// The successor.
        next: Name,
        /// Who delivered it and why, if the caller said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Actor>,
    },
    /// The await's timeout fired.
    TimedOut {
        /// The await step.
        step: Name,
        /// The timeout edge's target.
        next: Name,
    },
    /// A budget ran out at `step`; the run ends `budget_exceeded` (or `stalled`).
    BudgetExceeded {
        /// The step that would have run.
        step: Name,
        /// Which budget.
        budget: BudgetKind,
        /// The declared limit.
        limit: u64,
        /// What had been used, including the attempt that tripped it.
        used: u64,
    },
    /// An operator resolved an ambiguous effect.
    Reconciled {
        /// The step.
        step: Name,
        /// The effect.
        effect_id: Digest,
        /// `Some`: the effect happened with this result; `None`: it did not happen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Json>,
        /// Who answered and why, if the caller said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Actor>,
    },
    /// A secret input of the run was erased from the vault by an operator (`Runtime::erase`,
    /// `nanovm erase`): the tombstone. No earlier byte changes, so the chain and every earlier
    /// checkpoint still verify. Only an erasure appends it, under the run's lease, after an
    /// entry that closes an execution (or after another `erased`), naming one of the secret
    /// inputs of the run's `run_started`; any other `erased` is refused on load and replay
    /// ([`check_erasures`]).
    Erased {
        /// The erased value's vault id.
        vault_id: VaultId,
        /// Who erased it and why.
        by: Actor,
    },
    /// The run ended (or, for `suspended` and `needs_reconciliation`, paused).
    RunEnded {
        /// The status.
        status: RunStatus,
        /// The step where it ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<Name>,
        /// A failure message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// An operator moved a waiting run from one version of its program to another (`nanovm
    /// migrate`, after `nanovm compat` found the step compatible). The entries before it
    /// belong to the program `from`, the ones after it to `to`: a resume continues at `step`
    /// under `to`, with the state rebuilt from the inputs and `carried`.
    Migrated {
        /// The step the run waits at (the same name in both programs).
        step: Name,
        /// The hash of the program the run was under.
        from: Digest,
        /// The hash of the program it continues under.
        to: Digest,
        /// The variables carried over, each with the step of `to` whose transition stores it.
        carried: Vec<Carried>,
        /// Who migrated it and why.
        by: Actor,
    },
    /// A budget ran out at `step` (the `budget_exceeded` before this entry says which) and a
    /// replanning edge of the program continues the run at `to` with a fresh budget slice,
    /// instead of ending it.
    Replanned {
        /// The step where the budget ran out.
        step: Name,
        /// Which edge.
        on: ReplanOn,
        /// Where the run continues.
        to: Name,
        /// This is the `replan`-th replan along this edge (from 1)...
        replan: u32,
        /// ...of at most `of`.
        of: u32,
        /// When the slice sets `max_duration`: the new limit, in milliseconds since the run
        /// started (the clock is outside the program, so a replay takes it as recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_duration_ms: Option<u64>,
    },
    /// An operator continued a run that had ended `failed`, `budget_exceeded` or `stalled`:
    /// it goes on at `step`, the step where it stopped, with the same effect ids (see
    /// `docs/runtime.md`, "Redrive"). Follows that `run_ended` directly.
    Redriven {
        /// The step the run stopped at and continues at.
        step: Name,
        /// Who redrove it and why.
        by: Actor,
        /// Budgets raised for the rest of the run: each limit grows by the amount
        /// (`max_duration` in milliseconds). Empty: the same limits (the stall streak starts
        /// over either way).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extend: Vec<(BudgetKind, u64)>,
    },
    /// This run is a fork: the entries before this one are a verbatim copy of run `from`'s
    /// entries `0..=at_entry` (so this entry's `prev` is `from`'s hash at `at_entry`), and
    /// from here on it is run `run_id`, a run of its own (see `docs/runtime.md`, "Fork").
    Forked {
        /// The new run (the fork).
        run_id: String,
        /// The run it was forked from.
        from: String,
        /// The last entry of `from` the fork shares.
        at_entry: u64,
        /// `from`'s hash at `at_entry` (the root of the shared prefix).
        at_hash: Digest,
    },
}

/// A variable a migration carries into the new program's state: the value a step of the old
/// program assigned, handed to the transition of the new program's step that assigns the same
/// variable, as if that step had just completed with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Carried {
    /// The variable.
    pub var: String,
    /// The step of the new program whose transition stores it.
    pub step: String,
    /// The branch, when a `parallel` branch assigns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The value, as that step's transition receives it.
    pub value: CarriedValue,
}

impl Carried {
    /// `var`, stored by `step` (of `branch`) receiving `value`.
    pub fn new(
        var: impl Into<String>,
        step: impl Into<String>,
        branch: Option<String>,
        value: CarriedValue,
    ) -> Self {
        Carried {
            var: var.into(),
            step: step.into(),
            branch,
            value,
        }
    }
}

/// How a carried value reaches the new program's transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CarriedValue {
    /// A `choose` answer: the index of the member in the new program's set.
    Choice(u32),
    /// An `llm ... into` answer.
    Text(String),
    /// A tool's result.
    Tool(Json),
    /// An `await`'s payload.
    Event(Json),
}

impl Event {
    /// The snake_case type tag, e.g. `"tool_result"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::Model { .. } => "model",
            Event::ToolIntent { .. } => "tool_intent",
            Event::ToolResult { .. } => "tool_result",
            Event::Decision { .. } => "decision",
            Event::Joined { .. } => "joined",
            Event::Suspended { .. } => "suspended",
            Event::Delivered { .. } => "delivered",
            Event::TimedOut { .. } => "timed_out",
            Event::BudgetExceeded { .. } => "budget_exceeded",
            Event::Reconciled { .. } => "reconciled",
            Event::Erased { .. } => "erased",
            Event::RunEnded { .. } => "run_ended",
            Event::Migrated { .. } => "migrated",
            Event::Replanned { .. } => "replanned",
            Event::Redriven { .. } => "redriven",
            Event::Forked { .. } => "forked",
        }
    }

    /// The step the event belongs to, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::Model { step, .. }
            | Event::ToolIntent { step, .. }
            | Event::ToolResult { step, .. }
            | Event::Decision { step, .. }
            | Event::Joined { step, .. }
            | Event::Suspended { step, .. }
            | Event::Delivered { step, .. }
            | Event::TimedOut { step, .. }
            | Event::BudgetExceeded { step, .. }
            | Event::Reconciled { step, .. }
            | Event::Migrated { step, .. }
            | Event::Replanned { step, .. }
            | Event::Redriven { step, .. } => Some(step),
            Event::RunEnded { step, .. } => step.as_deref(),
            Event::RunStarted { .. } | Event::Erased { .. } | Event::Forked { .. } => None,
        }
    }

    /// A one-line human description, e.g. `refund: issue_refund -> {"id":"rf_1"} -> refunded`.
    /// For logs and examples; the JSONL export is the faithful form.
    pub fn describe(&self) -> String {
        fn short(v: &Json) -> String {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(79).collect::<String>())
            } else {
                s
            }
        }
        fn next(n: &Option<Name>) -> String {
            n.as_ref().map_or(String::new(), |n| format!(" -> {n}"))
        }
        fn by_whom(by: Option<&Actor>) -> String {
            by.map_or(String::new(), |a| format!(" (by {}: {})", a.id, a.reason))
        }
        fn at(step: &str, branch: &Option<Name>) -> String {
            match branch {
                Some(b) => format!("{step}.{b}"),
                None => step.to_string(),
            }
        }
        match self {
            Event::RunStarted {
                run_id,
                program,
                program_hash,
                ..
            } => format!(
                "run {run_id} of `{program}` (program {})",
                program_hash.short()
            ),
            Event::Model {
                step,
                branch,
                attempt,
                reply,
                next: n,
                ..
            } => {
                let what = match reply {
                    Reply::Answer {
                        text,
                        cache_hit,
                        probability,
                        ..
                    } => format!(
                        "model answered {text:?}{}{}",
                        match probability {
                            Some(p) => format!(" (p={p:.3})"),
                            None => String::new(),
                        },
                        if *cache_hit { " (cached)" } else { "" }
                    ),
                    Reply::Error { message, .. } => format!("model failed: {message}"),
                };
                let attempt = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                let n = if n.is_none() && matches!(reply, Reply::Answer { .. }) {
                    " (not accepted)".to_string()
                } else {
                    next(n)
                };
                format!("{}: {what}{attempt}{n}", at(step, branch))
            }
            Event::ToolIntent {
                step,
                branch,
                tool,
                effect_id,
                attempt,
                ..
            } => format!(
                "{}: intent to call effect `{tool}` (effect {}, attempt {attempt})",
                at(step, branch),
                effect_id.short()
            ),
            Event::ToolResult {
                step,
                branch,
                tool,
                result,
                attempt,
                next: n,
                ..
            } => {
                let what = match result {
                    ToolOutcome::Ok(v) => format!("`{tool}` returned {}", short(v)),
                    ToolOutcome::Err { message, .. } => format!("`{tool}` failed: {message}"),
                };
                let attempt = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("{}: {what}{attempt}{}", at(step, branch), next(n))
            }
            Event::Decision { step, arm, next: n } => match arm {
                Some(a) => format!("{step}: `when` #{} holds -> {n}", a + 1),
                None => format!("{step}: otherwise -> {n}"),
            },
            Event::Joined {
                step,
                failed,
                next: n,
            } => {
                if failed.is_empty() {
                    format!("{step}: all branches succeeded{}", next(n))
                } else {
                    format!("{step}: branches {} failed{}", failed.join(", "), next(n))
                }
            }
            Event::Suspended {
                step,
                event,
                deadline_ms,
            } => match deadline_ms {
                Some(d) => format!("{step}: waiting for `{event}` (deadline {d} ms)"),
                None => format!("{step}: waiting for `{event}`"),
            },
            Event::Delivered {
                step,
                event,
                event_id,
                payload,
                next: n,
                by,
            } => format!(
                "{step}: `{event}` {event_id} delivered {}{} -> {n}",
                short(payload),
                by_whom(by.as_ref())
            ),
            Event::TimedOut { step, next: n } => format!("{step}: timed out -> {n}"),
            Event::BudgetExceeded {
                step,
                budget,
                limit,
                used,
            } => format!(
                "{step}: budget `{}` exceeded ({used} of {limit})",
                budget.as_str()
            ),
            Event::Reconciled {
                step,
                effect_id,
                result,
                by,
            } => match result {
                Some(r) => format!(
                    "{step}: operator{} says effect {} happened: {}",
                    by_whom(by.as_ref()),
                    effect_id.short(),
                    short(r)
                ),
                None => format!(
                    "{step}: operator{} says effect {} did not happen",
                    by_whom(by.as_ref()),
                    effect_id.short()
                ),
            },
            Event::Erased { vault_id, by } => {
                format!("secret {} erased{}", vault_id.to_hex(), by_whom(Some(by)))
            }
            Event::RunEnded {
                status,
                step,
                message,
            } => {
                let mut s = format!("run ended: {status}");
                if let Some(step) = step {
                    s.push_str(&format!(" at `{step}`"));
                }
                if let Some(m) = message {
                    s.push_str(&format!(" ({m})"));
                }
                s
            }
            Event::Migrated {
                step,
                from,
                to,
                carried,
                by,
            } => format!(
                "{step}: migrated{} from program {} to {} ({} variable{} carried)",
                by_whom(Some(by)),
                from.short(),
                to.short(),
                carried.len(),
                if carried.len() == 1 { "" } else { "s" }
            ),
            Event::Replanned {
                step,
                on,
                to,
                replan,
                of,
                ..
            } => format!(
                "{step}: {} -> replan {replan} of {of} at `{to}`",
                on.as_str()
            ),
            Event::Redriven { step, by, extend } => {
                let mut s = format!("{step}: redriven{}", by_whom(Some(by)));
                for (kind, n) in extend {
                    s.push_str(&format!(", {} +{n}", kind.as_str()));
                }
                s
            }
            Event::Forked {
                run_id,
                from,
                at_entry,
                at_hash,
            } => format!(
                "forked: run {run_id} from run {from} at entry {at_entry} ({})",
                at_hash.short()
            ),
        }
    }

    /// Writes the canonical encoding (see [`Encoder`]).
    pub fn encode(&self, e: &mut Encoder) {
        fn opt(e: &mut Encoder, v: &Option<Name>) {
            e.opt_str(v.as_deref());
        }
        // An operator action's actor, after the event's other fields, only when present: an
        // event without one hashes exactly as before actors were recorded.
        fn actor(e: &mut Encoder, by: Option<&Actor>) {
            if let Some(a) = by {
                e.tag(0xac).str(&a.id).str(&a.reason);
            }
        }
        match self {
            Event::RunStarted {
                run_id,
                program,
                program_hash,
                inputs,
            } => {
                e.tag(1).str(run_id).str(program).digest(program_hash);
                e.fields(inputs);
            }
            Event::Model {
                step,
                branch,
                attempt,
                model,
                system,
                prompt,
                instruction,
                reply,
                next,
            } => {
                e.tag(2).str(step);
                opt(e, branch);
                e.u32(*attempt);
                opt(e, model);
                e.opt_str(system.as_deref()).str(prompt);
                match reply {
                    Reply::Answer {
                        text,
                        prompt_tokens,
                        completion_tokens,
                        cache_hit,
                        tokens_estimated,
                        probability,
                        raw_text,
                        constraint,
                    } => {
                        // Tag 2 marks estimated counts; reported counts keep tag 0, so traces
                        // written before the flag existed hash as they always did. Tags 3 and
                        // 4 (reported / estimated) add what the server sent: probability, raw
                        // text and constraint mode, each optional.
                        let extended =
                            probability.is_some() || raw_text.is_some() || constraint.is_some();
                        let tag = match (extended, *tokens_estimated) {
                            (false, false) => 0,
                            (false, true) => 2,
                            (true, false) => 3,
                            (true, true) => 4,
                        };
                        e.tag(tag)
                            .str(text)
                            .u64(*prompt_tokens)
                            .u64(*completion_tokens)
                            .bool(*cache_hit);
                        if extended {
                            e.opt(probability.as_ref(), |e, p| {
                                e.u64(p.to_bits());
                            });
                            e.opt_str(raw_text.as_deref())
                                .opt_str(constraint.as_deref());
                        }
                    }
                    Reply::Error {
                        message,
                        retryable,
                        invalid_answer,
                    } => {
                        // Tag 5 marks an invalid answer; other errors keep tag 1.
                        e.tag(if *invalid_answer { 5 } else { 1 })
                            .str(message)
                            .bool(*retryable);
                    }
                }
                opt(e, next);
                // Appended only when present: events without one hash as they always did.
                if let Some(i) = instruction {
                    e.tag(1).str(i);
                }
            }
            Event::ToolIntent {
                step,
                branch,
                attempt,
                tool,
                effect_id,
                args,
            } => {
                e.tag(3).str(step);
                opt(e, branch);
                e.u32(*attempt).str(tool).digest(effect_id).fields(args);
            }
            Event::ToolResult {
                step,
                branch,
                attempt,
                tool,
                key,
                args,
                result,
                next,
            } => {
                e.tag(4).str(step);
                opt(e, branch);
                e.u32(*attempt).str(tool).digest(key);
                e.opt(args.as_ref(), |e, a| {
                    e.fields(a);
                });
                match result {
                    ToolOutcome::Ok(v) => {
                        e.tag(0).json(v);
                    }
                    ToolOutcome::Err { message, retryable } => {
                        e.tag(1).str(message).bool(*retryable);
                    }
                }
                opt(e, next);
            }
            Event::Decision { step, arm, next } => {
                e.tag(5).str(step);
                e.opt(arm.as_ref(), |e, a| {
                    e.u32(*a);
                });
                e.str(next);
            }
            Event::Joined { step, failed, next } => {
                e.tag(6).str(step).u64(failed.len() as u64);
                for f in failed {
                    e.str(f);
                }
                opt(e, next);
            }
            Event::Suspended {
                step,
                event,
                deadline_ms,
            } => {
                e.tag(7).str(step).str(event);
                e.opt(deadline_ms.as_ref(), |e, d| {
                    e.u64(*d);
                });
            }
            Event::Delivered {
                step,
                event,
                event_id,
                payload,
                next,
                by,
            } => {
                e.tag(8)
                    .str(step)
                    .str(event)
                    .str(event_id)
                    .json(payload)
                    .str(next);
                actor(e, by.as_ref());
            }
            Event::TimedOut { step, next } => {
                e.tag(9).str(step).str(next);
            }
            Event::BudgetExceeded {
                step,
                budget,
                limit,
                used,
            } => {
                e.tag(10)
                    .str(step)
                    .str(budget.as_str())
                    .u64(*limit)
                    .u64(*used);
            }
            Event::Reconciled {
                step,
                effect_id,
                result,
                by,
            } => {
                e.tag(11).str(step).digest(effect_id);
                e.opt(result.as_ref(), |e, r| {
                    e.json(r);
                });
                actor(e, by.as_ref());
            }
            Event::Erased { vault_id, by } => {
                e.tag(12);
                e.str(&vault_id.to_hex());
                actor(e, Some(by));
            }
            Event::RunEnded {
                status,
                step,
                message,
            } => {
                e.tag(13).tag(status.code());
                opt(e, step);
                e.opt_str(message.as_deref());
            }
            Event::Migrated {
                step,
                from,
                to,
                carried,
                by,
            } => {
                e.tag(14).str(step).digest(from).digest(to);
                e.u64(carried.len() as u64);
                for c in carried {
                    e.str(&c.var).str(&c.step).opt_str(c.branch.as_deref());
                    match &c.value {
                        CarriedValue::Choice(i) => e.tag(0).u64(u64::from(*i)),
                        CarriedValue::Text(t) => e.tag(1).str(t),
                        CarriedValue::Tool(v) => e.tag(2).json(v),
                        CarriedValue::Event(v) => e.tag(3).json(v),
                    };
                }
                actor(e, Some(by));
            }
            Event::Replanned {
                step,
                on,
                to,
                replan,
                of,
                max_duration_ms,
            } => {
                e.tag(15).str(step).str(on.as_str()).str(to);
                e.u64(u64::from(*replan)).u64(u64::from(*of));
                e.opt(max_duration_ms.as_ref(), |e, v| {
                    e.u64(*v);
                });
            }
            // Tags from 20 on: 14.. are left to other new events.
            Event::Redriven { step, by, extend } => {
                e.tag(20).str(step).str(&by.id).str(&by.reason);
                e.u64(extend.len() as u64);
                for (kind, n) in extend {
                    e.str(kind.as_str()).u64(*n);
                }
            }
            Event::Forked {
                run_id,
                from,
                at_entry,
                at_hash,
            } => {
                e.tag(21)
                    .str(run_id)
                    .str(from)
                    .u64(*at_entry)
                    .digest(at_hash);
            }
        }
    }
}

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the trace, from 0.
    pub seq: u64,
    /// The previous entry's hash (zero for the first).
    pub prev: Digest,
    /// `blake3(prev || seq || canonical(event))`.
    pub hash: Digest,
    /// What happened.
    pub event: Event,
}

/// Computes an entry's hash. `scratch` is reused between calls to avoid allocating.
pub fn entry_hash(prev: &Digest, seq: u64, event: &Event, scratch: &mut Encoder) -> Digest {
    // The same bytes as hashing `prev`, `seq` and the encoding in turn, in one contiguous
    // buffer: one-shot hashing skips the incremental hasher's buffering.
    scratch.clear();
    scratch.digest(prev).u64(seq);
    event.encode(scratch);
    Digest::of(scratch.bytes())
}

/// A run's trace: the entries in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    entries: Vec<Entry>,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Trace::default()
    }

    /// An empty trace with room for `capacity` entries, so a run appending to it does not
    /// reallocate (and move every entry) as it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Trace {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// A trace from entries, checking the chain.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Trace, VerifyError> {
        let trace = Trace { entries };
        trace.verify()?;
        Ok(trace)
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry's hash (zero for an empty trace).
    pub fn root(&self) -> Digest {
        self.entries.last().map_or(Digest::ZERO, |e| e.hash)
    }

    /// Appends an event, chaining it to the last entry.
    pub fn push(&mut self, event: Event, scratch: &mut Encoder) -> &Entry {
        let prev = self.root();
        let seq = self.entries.len() as u64;
        let hash = entry_hash(&prev, seq, &event, scratch);
        self.entries.push(Entry {
            seq,
            prev,
            hash,
            event,
        });
        self.entries.last().expect("just pushed")
    }

    /// Recomputes every hash; reports the first entry that does not match.
    pub fn verify(&self) -> Result<Digest, VerifyError> {
        let mut scratch = Encoder::new();
        let mut prev = Digest::ZERO;
        for (i, entry) in self.entries.iter().enumerate() {
            check_entry(i, entry, &prev, &mut scratch)?;
            prev = entry.hash;
        }
        Ok(prev)
    }

    /// The trace as JSON Lines (one entry per line, canonical text form).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&entry_line(e));
            out.push('\n');
        }
        out
    }

    /// Parses and verifies JSON Lines written by [`Trace::to_jsonl`].
    pub fn from_jsonl(text: &str) -> Result<Trace, VerifyError> {
        let mut scratch = Encoder::new();
        let mut prev = Digest::ZERO;
        let mut entries = Vec::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Ok(Trace::new());
        }
        for (i, line) in body.split('\n').enumerate() {
            let entry: Entry = serde_json::from_str(line).map_err(|e| VerifyError {
                index: i,
                reason: format!("not a trace entry: {e}"),
            })?;
            if entry_line(&entry) != line {
                return Err(VerifyError {
                    index: i,
                    reason: "not in canonical form (the line was edited)".into(),
                });
            }
            check_entry(i, &entry, &prev, &mut scratch)?;
            prev = entry.hash;
            entries.push(entry);
        }
        Ok(Trace { entries })
    }

    /// Consumes the trace, returning its entries.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

/// The canonical JSON text of one entry (no trailing newline).
pub fn entry_line(entry: &Entry) -> String {
    serde_json::to_string(entry).expect("trace entries always serialize")
}

fn check_entry(
    index: usize,
    entry: &Entry,
    prev: &Digest,
    scratch: &mut Encoder,
) -> Result<(), VerifyError> {
    if entry.seq != index as u64 {
        return Err(VerifyError {
            index,
            reason: format!("sequence number {} where {index} belongs", entry.seq),
        });
    }
    if entry.prev != *prev {
        return Err(VerifyError {
            index,
            reason: "`prev` does not match the previous entry's hash".into(),
        });
    }
    let want = entry_hash(prev, entry.seq, &entry.event, scratch);
    if entry.hash != want {
        return Err(VerifyError {
            index,
            reason: "hash does not match the entry's contents".into(),
        });
    }
    Ok(())
}

/// Why a trace failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} is broken: {reason}")]
pub struct VerifyError {
    /// 0-based index of the first broken entry (= line number - 1 in JSONL).
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Verifies exported JSON Lines; returns the entry count and root hash.
pub fn verify_jsonl(text: &str) -> Result<(usize, Digest), VerifyError> {
    let trace = Trace::from_jsonl(text)?;
    Ok((trace.len(), trace.root()))
}

// ---------------------------------------------------------------------------------------------
// Completeness, and verifying JSON Lines as a stream
// ---------------------------------------------------------------------------------------------

/// The longest line [`read_jsonl`] accepts by default (16 MiB): far above any real entry, and
/// a bound on the memory one entry may take while it is checked.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How a complete trace closes: the event a stored run's trace ends with once nothing more will
/// be appended to it without an outside cause (an operator, a delivery, a timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closing {
    /// `run_ended` with this status: a terminal status, or `needs_reconciliation` (a pause).
    Ended(RunStatus),
    /// `suspended`: the run waits at an `await`.
    Suspended,
}

/// Why a trace whose hash chain verifies is not the whole record of one run.
///
/// A trace is *complete* when its first entry is `run_started`, no other entry is, and its last
/// entry that is not an `erased` (erasures may be appended at any time) is a *closing* event:
/// `run_ended` with any status but `running` (terminal statuses, and the
/// `needs_reconciliation` pause), or `suspended`. These are exactly the events a live run ends
/// its stored prefix with before it returns (docs/runtime.md, "Completeness"); anything else
/// is a prefix cut short, for instance by a crash, or by someone truncating the evidence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incomplete {
    /// No entries at all.
    #[error("the trace is empty: it has no `run_started`")]
    Empty,
    /// The first entry is not `run_started`.
    #[error("entry 0 is `{kind}`, but a run's trace starts with `run_started`")]
    NotStarted {
        /// The first entry's event type.
        kind: &'static str,
    },
    /// A `run_started` after the first entry: two runs' traces in one.
    #[error("entry {index} is a second `run_started`: a trace records one run")]
    Restarted {
        /// Its index.
        index: usize,
    },
    /// The trace stops with the run still going: no closing `run_ended` or `suspended`.
    #[error(
        "the trace stops after entry {last} (`{kind}`) with the run still going: \
         no closing `run_ended` or `suspended`"
    )]
    Open {
        /// The index of the last entry that is not an erasure.
        last: usize,
        /// Its event type.
        kind: &'static str,
    },
}

impl Incomplete {
    /// True for [`Incomplete::Open`]: the trace is a well-formed prefix of one run, which a
    /// reader may accept on purpose (`nanovm verify --partial`).
    pub fn is_prefix(&self) -> bool {
        matches!(self, Incomplete::Open { .. })
    }
}

/// Tracks the completeness rule over events seen one at a time.
#[derive(Clone, Debug, Default)]
struct Shape {
    seen: usize,
    first_error: Option<Incomplete>,
    /// The last event that is not an erasure: index, type, and whether it closes.
    last: Option<(usize, &'static str, Option<Closing>)>,
}

impl Shape {
    fn push(&mut self, event: &Event) {
        let index = self.seen;
        self.seen += 1;
        match event {
            Event::RunStarted { .. } if index > 0 && self.first_error.is_none() => {
                self.first_error = Some(Incomplete::Restarted { index });
            }
            e if index == 0 && !matches!(e, Event::RunStarted { .. }) => {
                self.first_error = Some(Incomplete::NotStarted { kind: e.kind() });
            }
            _ => {}
        }
        let closing = match event {
            Event::Erased { .. } => return,
            Event::RunEnded { status, .. } if *status != RunStatus::Running => {
                Some(Closing::Ended(*status))
            }
            Event::Suspended { .. } => Some(Closing::Suspended),
            _ => None,
        };
        self.last = Some((index, event.kind(), closing));
    }

    fn finish(self) -> Result<Closing, Incomplete> {
        if let Some(e) = self.first_error {
            return Err(e);
        }
        match self.last {
            None if self.seen == 0 => Err(Incomplete::Empty),
            // Only erasures: entry 0 was not `run_started`, reported above.
            None => Err(Incomplete::Empty),
            Some((_, _, Some(closing))) => Ok(closing),
            Some((last, kind, None)) => Err(Incomplete::Open { last, kind }),
        }
    }
}

/// Whether `entries` are the complete trace of one run (see [`Incomplete`] for the rule), and
/// if so how it closes. The hash chain is not checked here: see [`Trace::verify`].
pub fn completeness(entries: &[Entry]) -> Result<Closing, Incomplete> {
    let mut shape = Shape::default();
    for e in entries {
        shape.push(&e.event);
    }
    shape.finish()
}

/// Why an `erased` entry of a trace is refused (see [`check_erasures`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} is a forged erasure: {reason}")]
#[non_exhaustive]
pub struct ForgedErasure {
    /// The index of the refused `erased` entry.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// True when an execution of the run has stopped after `event` and nothing runs until an
/// outside cause: `run_ended` with any status but `running`, `suspended`, or `migrated` (the
/// run still waits). An erasure's
/// tombstone may follow only such an entry (or another tombstone).
pub fn at_rest(event: &Event) -> bool {
    match event {
        Event::RunEnded { status, .. } => *status != RunStatus::Running,
        // A migration moves a waiting run to another program: it still waits.
        Event::Suspended { .. } | Event::Migrated { .. } => true,
        _ => false,
    }
}

/// The vault ids of the secret inputs recorded in a `run_started` event, in declaration
/// order (empty for any other event).
pub fn secret_inputs(event: &Event) -> Vec<VaultId> {
    match event {
        Event::RunStarted { inputs, .. } => inputs
            .iter()
            .filter_map(|(_, d)| match d {
                Datum::Secret { vault_id, .. } => Some(*vault_id),
                Datum::Plain(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks every `erased` entry of `entries` (a run's trace, from its `run_started`) is one an
/// erasure could have appended: after an entry that closes an execution ([`at_rest`]) or
/// another `erased`, naming a secret input of the run's `run_started` not erased before, and
/// with an actor (a non-empty id and reason). The executor never writes `erased`; an erasure
/// appends it under the run's lease while nothing executes. Anything else is a forgery (or
/// a tool that is not nanovm's writing to the store) and is refused on load and replay.
///
/// This checks the shape only: someone with the program and write access can still append a
/// well-formed tombstone and rechain; a signed checkpoint of the run (`nanovm audit --key`)
/// is what shows who wrote it.
pub fn check_erasures(entries: &[Entry]) -> Result<(), ForgedErasure> {
    let mut secrets: Vec<VaultId> = Vec::new();
    let mut erased: Vec<VaultId> = Vec::new();
    let mut rest = false;
    for (index, entry) in entries.iter().enumerate() {
        let refuse = |reason: String| Err(ForgedErasure { index, reason });
        match &entry.event {
            Event::Erased { vault_id, by } => {
                if index == 0 {
                    return refuse("a run starts with `run_started`".into());
                }
                if !rest {
                    return refuse(format!(
                        "it follows `{}`, while the run was executing (a tombstone follows \
                         `run_ended`, `suspended` or another `erased`)",
                        entries[index - 1].event.kind()
                    ));
                }
                if by.id.trim().is_empty() || by.reason.trim().is_empty() {
                    return refuse("it names no actor (who erased it and why)".into());
                }
                if !secrets.contains(vault_id) {
                    return refuse(format!(
                        "vault id {} is not a secret input of the run",
                        vault_id.to_hex()
                    ));
                }
                if erased.contains(vault_id) {
                    return refuse(format!("vault id {} is erased twice", vault_id.to_hex()));
                }
                erased.push(*vault_id);
            }
            event => {
                if index == 0 {
                    secrets = secret_inputs(event);
                }
                rest = at_rest(event);
            }
        }
    }
    Ok(())
}

/// Verifies JSON Lines one line at a time, in constant memory per entry: each line must parse
/// as an [`Entry`], be in canonical form, and chain to the previous one (as in
/// [`Trace::from_jsonl`]); completeness is tracked on the way.
#[derive(Debug, Default)]
pub struct JsonlVerifier {
    scratch: Encoder,
    prev: Digest,
    shape: Shape,
}

/// What a stream of JSON Lines verified to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonlSummary {
    /// Entries read.
    pub entries: usize,
    /// The last entry's hash (zero for none).
    pub root: Digest,
    /// Whether they are a complete run ([`completeness`]).
    pub completeness: Result<Closing, Incomplete>,
}

impl JsonlVerifier {
    /// A verifier expecting entry 0.
    pub fn new() -> Self {
        JsonlVerifier::default()
    }

    /// Entries accepted so far.
    pub fn len(&self) -> usize {
        self.shape.seen
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.shape.seen == 0
    }

    /// Checks the next line (without its newline) and returns its entry.
    pub fn push_line(&mut self, line: &str) -> Result<Entry, VerifyError> {
        let index = self.shape.seen;
        let entry: Entry = serde_json::from_str(line).map_err(|e| VerifyError {
            index,
            reason: format!("not a trace entry: {e}"),
        })?;
        if entry_line(&entry) != line {
            return Err(VerifyError {
                index,
                reason: "not in canonical form (the line was edited)".into(),
            });
        }
        check_entry(index, &entry, &self.prev, &mut self.scratch)?;
        self.prev = entry.hash;
        self.shape.push(&entry.event);
        Ok(entry)
    }

    /// The summary of everything pushed.
    pub fn finish(self) -> JsonlSummary {
        JsonlSummary {
            entries: self.shape.seen,
            root: self.prev,
            completeness: self.shape.finish(),
        }
    }
}

/// Why [`read_jsonl`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadJsonlError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The first broken entry (a line that is too long or not UTF-8 breaks the entry it holds).
    #[error(transparent)]
    Broken(#[from] VerifyError),
}

/// Reads and verifies JSON Lines from `reader` as a stream: one line in memory at a time, none
/// longer than `max_line` bytes (see [`MAX_LINE_BYTES`]), so an endless or binary input (say
/// `/dev/zero`) fails after `max_line` bytes instead of filling memory. Each verified entry is
/// handed to `each` (drop it to verify in constant memory, or keep it). The accepted text is
/// [`Trace::to_jsonl`]'s: lines separated by `\n`, the last one optionally terminated.
pub fn read_jsonl<R: std::io::BufRead>(
    mut reader: R,
    max_line: usize,
    mut each: impl FnMut(Entry),
) -> Result<JsonlSummary, ReadJsonlError> {
    use std::io::{BufRead as _, Read as _};
    let mut verifier = JsonlVerifier::new();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let limit = u64::try_from(max_line)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    loop {
        line.clear();
        let n = (&mut reader).take(limit).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let index = verifier.len();
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > max_line {
            return Err(VerifyError {
                index,
                reason: format!("the line is longer than {max_line} bytes"),
            }
            .into());
        }
        // A file holding only a newline is an empty trace, as for `Trace::from_jsonl`.
        if line.is_empty() && index == 0 && reader.fill_buf()?.is_empty() {
            break;
        }
        let text = std::str::from_utf8(&line).map_err(|e| {
            let at = e.valid_up_to();
            VerifyError {
                index,
                reason: format!(
                    "not valid UTF-8 (byte 0x{:02X} at offset {})",
                    line[at],
                    offset + at as u64
                ),
            }
        })?;
        each(verifier.push_line(text)?);
        offset += n as u64;
    }
    Ok(verifier.finish())
}

/// The first place two traces differ.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Index of the first differing entry.
    pub index: usize,
    /// The left trace's entry there (`None`: the left trace ended).
    pub left: Option<Entry>,
    /// The right trace's entry there (`None`: the right trace ended).
    pub right: Option<Entry>,
}

/// The first divergence between two traces, or `None` if they are identical.
pub fn diff(a: &Trace, b: &Trace) -> Option<Divergence> {
    let n = a.len().max(b.len());
    (0..n)
        .find(|&i| a.entries.get(i).map(|e| e.hash) != b.entries.get(i).map(|e| e.hash))
        .map(|index| Divergence {
            index,
            left: a.entries.get(index).cloned(),
            right: b.entries.get(index).cloned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read as _;

    /// An operator action without an actor encodes (and so hashes, and serializes) exactly as
    /// before actors were recorded; with one, the actor is hashed and exported.
    #[test]
    fn an_actor_is_hashed_only_when_present() {
        let plain = Event::Reconciled {
            step: "pay".into(),
            effect_id: Digest([1; 32]),
            result: None,
            by: None,
        };
        let mut e = Encoder::new();
        plain.encode(&mut e);
        let mut before = Encoder::new();
        before.tag(11).str("pay").digest(&Digest([1; 32]));
        before.opt::<Json>(None, |e, r| {
            e.json(r);
        });
        assert_eq!(
            e.bytes(),
            before.bytes(),
            "the encoding without an actor is unchanged"
        );
        let line = serde_json::to_string(&plain).unwrap();
        assert!(!line.contains("\"by\""), "{line}");
        let signed = Event::Reconciled {
            step: "pay".into(),
            effect_id: Digest([1; 32]),
            result: None,
            by: Some(Actor::new("sam", "checked the ledger")),
        };
        let h = |ev: &Event| entry_hash(&Digest::ZERO, 3, ev, &mut Encoder::new());
        assert_ne!(h(&plain), h(&signed));
        let back: Event = serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
        assert_eq!(back, signed);
    }

    fn sample() -> Trace {
        let mut t = Trace::new();
        let mut s = Encoder::new();
        t.push(
            Event::RunStarted {
                run_id: "r1".into(),
                program: "p".into(),
                program_hash: Digest::of(b"p"),
                inputs: vec![("x".into(), Datum::Plain(json!({"a": 1.5, "b": "\u{1}é"})))],
            },
            &mut s,
        );
        t.push(
            Event::ToolResult {
                step: "load".into(),
                branch: None,
                attempt: 1,
                tool: "fetch".into(),
                key: Digest::of(b"k"),
                args: Some(vec![("id".into(), Datum::Plain(json!("7")))]),
                result: ToolOutcome::Ok(json!({"status": "paid", "n": [1, -2, 3e40]})),
                next: Some("done".into()),
            },
            &mut s,
        );
        t.push(
            Event::RunEnded {
                status: RunStatus::Success,
                step: Some("done".into()),
                message: None,
            },
            &mut s,
        );
        t
    }

    #[test]
    fn jsonl_roundtrip_verifies() {
        let t = sample();
        let text = t.to_jsonl();
        let back = Trace::from_jsonl(&text).unwrap();
        assert_eq!(back, t);
        assert_eq!(verify_jsonl(&text).unwrap(), (3, t.root()));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let text = sample().to_jsonl();
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= delta;
                let Ok(s) = String::from_utf8(b) else {
                    continue;
                };
                assert!(
                    verify_jsonl(&s).is_err(),
                    "flip of byte {i} ({:?}) by {delta:#x} went unnoticed",
                    bytes[i] as char
                );
            }
        }
    }

    #[test]
    fn estimated_tokens_are_additive_to_the_format() {
        let model = |tokens_estimated| Event::Model {
            step: "s".into(),
            branch: None,
            attempt: 1,
            model: None,
            system: None,
            prompt: "p".into(),
            instruction: None,
            reply: Reply::Answer {
                text: "a".into(),
                prompt_tokens: 3,
                completion_tokens: 1,
                cache_hit: false,
                tokens_estimated,
                probability: None,
                raw_text: None,
                constraint: None,
            },
            next: None,
        };
        let entry = |ev: Event| {
            let mut t = Trace::new();
            t.push(ev, &mut Encoder::new());
            t
        };
        let reported = entry(model(false));
        let estimated = entry(model(true));
        // Reported counts: the field is absent and the bytes hashed are those of a trace
        // written before the flag existed (reply tag 0).
        let line = reported.to_jsonl();
        assert!(!line.contains("tokens_estimated"));
        let mut e = Encoder::new();
        e.tag(2).str("s").opt_str(None).u32(1).opt_str(None);
        e.opt_str(None).str("p");
        e.tag(0).str("a").u64(3).u64(1).bool(false).opt_str(None);
        let mut old = Encoder::new();
        old.digest(&Digest::ZERO).u64(0);
        let mut want = old.bytes().to_vec();
        want.extend_from_slice(e.bytes());
        assert_eq!(reported.root(), Digest::of(&want));
        // Estimated counts are visible and hashed.
        assert!(estimated.to_jsonl().contains(r#""tokens_estimated":true"#));
        assert_ne!(estimated.root(), reported.root());
        assert_eq!(Trace::from_jsonl(&estimated.to_jsonl()).unwrap(), estimated);
    }

    fn ended(status: RunStatus) -> Event {
        Event::RunEnded {
            status,
            step: None,
            message: None,
        }
    }

    fn trace_of(events: Vec<Event>) -> Trace {
        let mut t = Trace::new();
        let mut s = Encoder::new();
        for e in events {
            t.push(e, &mut s);
        }
        t
    }

    #[test]
    fn completeness_needs_one_run_started_first_and_a_closing_event_last() {
        let full = sample();
        assert_eq!(
            completeness(full.entries()),
            Ok(Closing::Ended(RunStatus::Success))
        );
        assert_eq!(completeness(&[]), Err(Incomplete::Empty));
        // Cut after any entry but the last: open.
        for cut in 1..full.len() {
            let err = completeness(&full.entries()[..cut]).unwrap_err();
            assert!(err.is_prefix(), "{cut}: {err}");
            assert!(err.to_string().contains("no closing"), "{err}");
        }
        // A lone `run_ended`, or anything else first.
        let lone = trace_of(vec![ended(RunStatus::Success)]);
        assert_eq!(
            completeness(lone.entries()),
            Err(Incomplete::NotStarted { kind: "run_ended" })
        );
        // Two runs in one.
        let mut events: Vec<Event> = full.entries().iter().map(|e| e.event.clone()).collect();
        events.extend(events.clone());
        let twice = trace_of(events);
        assert_eq!(
            completeness(twice.entries()),
            Err(Incomplete::Restarted { index: 3 })
        );
        assert!(!Incomplete::Restarted { index: 3 }.is_prefix());
        // A suspension and a reconciliation pause close a stored prefix; erasures may follow.
        let start = full.entries()[0].event.clone();
        let suspended = trace_of(vec![
            start.clone(),
            Event::Suspended {
                step: "wait".into(),
                event: "paid".into(),
                deadline_ms: None,
            },
            Event::Erased {
                vault_id: VaultId([7; 16]),
                by: Actor::new("dpo", "request 7"),
            },
        ]);
        assert_eq!(completeness(suspended.entries()), Ok(Closing::Suspended));
        let paused = trace_of(vec![start.clone(), ended(RunStatus::NeedsReconciliation)]);
        assert_eq!(
            completeness(paused.entries()),
            Ok(Closing::Ended(RunStatus::NeedsReconciliation))
        );
        let running = trace_of(vec![start, ended(RunStatus::Running)]);
        assert!(completeness(running.entries()).unwrap_err().is_prefix());
    }

    #[test]
    fn read_jsonl_streams_and_bounds_lines() {
        let t = sample();
        let text = t.to_jsonl();
        let mut kept = Vec::new();
        let summary = read_jsonl(text.as_bytes(), MAX_LINE_BYTES, |e| kept.push(e)).unwrap();
        assert_eq!((summary.entries, summary.root), (3, t.root()));
        assert_eq!(summary.completeness, Ok(Closing::Ended(RunStatus::Success)));
        assert_eq!(kept, t.entries());
        // The same verdicts as `from_jsonl`, with or without the last newline.
        let bare = text.strip_suffix('\n').unwrap();
        assert_eq!(read_jsonl(bare.as_bytes(), 1 << 20, drop).unwrap(), summary);
        for empty in ["", "\n"] {
            let s = read_jsonl(empty.as_bytes(), 1 << 20, drop).unwrap();
            assert_eq!((s.entries, s.completeness), (0, Err(Incomplete::Empty)));
        }
        let doubled = format!("{text}\n");
        assert!(Trace::from_jsonl(&doubled).is_err());
        assert!(matches!(
            read_jsonl(doubled.as_bytes(), 1 << 20, drop),
            Err(ReadJsonlError::Broken(VerifyError { index: 3, .. }))
        ));
        // An endless line stops at the bound.
        let zeros = std::io::BufReader::new(std::io::repeat(0).take(1 << 30));
        match read_jsonl(zeros, 4096, drop) {
            Err(ReadJsonlError::Broken(e)) => {
                assert_eq!(e.index, 0);
                assert!(e.reason.contains("longer than 4096 bytes"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // A line of exactly the bound is fine; one byte more is not.
        let first = text.lines().next().unwrap();
        assert!(read_jsonl(first.as_bytes(), first.len(), drop).is_ok());
        assert!(read_jsonl(first.as_bytes(), first.len() - 1, drop).is_err());
        // Not UTF-8: the entry holding it, and the byte's offset in the stream.
        let mut bytes = text.clone().into_bytes();
        let at = text.find('\n').unwrap() + 5;
        bytes[at] = 0xFF;
        match read_jsonl(&bytes[..], 1 << 20, drop) {
            Err(ReadJsonlError::Broken(e)) => {
                assert_eq!(e.index, 1);
                assert!(e.reason.contains(&format!("offset {at}")), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn diff_finds_first_divergence() {
        let a = sample();
        let mut b = Trace::new();
        let mut s = Encoder::new();
        for (i, e) in a.entries().iter().enumerate() {
            let mut ev = e.event.clone();
            if i == 1
                && let Event::ToolResult { result, .. } = &mut ev
            {
                *result = ToolOutcome::Ok(json!({"status": "refunded"}));
            }
            b.push(ev, &mut s);
        }
        assert_eq!(diff(&a, &a), None);
        assert_eq!(diff(&a, &b).unwrap().index, 1);
        assert_ne!(a.root(), b.root());
    }
}
