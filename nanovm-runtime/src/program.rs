//! The contract between generated code and the runtime.
//!
//! Code generated from a `.nvm` program implements [`Program`] for a unit struct. The runtime
//! drives every run through these functions and nothing else: it never sees the graph, never
//! parses a condition and never decides a successor. It asks the program what the current step
//! wants ([`Program::action`]), performs that I/O (model call, tool call, suspension), records it,
//! and hands the normalized result back ([`Program::transition`]), which answers with the next
//! step. The model proposes; the compiled `match` decides.
//!
//! Users do not implement this trait by hand; its shape may change between minor versions.
//! Generated code reaches it through the hidden `__private_v0_1` module, so a mismatched pair of
//! `nanovm-macros` and `nanovm-runtime` fails to compile instead of misbehaving.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shape::Shape;
use crate::value::{Datum, Digest, Json, Secret, SecretRef, VaultId};

/// The semantics versions of generated code this runtime executes (see
/// [`Program::semantics`]). A program compiled to another one is refused with
/// [`RunError::UnsupportedSemantics`](crate::RunError::UnsupportedSemantics), whose message
/// names both.
pub const SEMANTICS_VERSIONS: &[&str] = &["0.1.0"];

/// A boxed, sendable future, as returned by dynamically dispatched tool calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Index of a step in [`ProgramInfo::steps`] (source order).
pub type StepId = u32;

/// Index of a branch in [`ParallelInfo::branches`] (declaration order).
pub type BranchId = u16;

/// Static facts about a compiled program, generated as a `static`.
#[derive(Debug)]
pub struct ProgramInfo {
    /// The program's name.
    pub name: &'static str,
    /// blake3 of the canonical program text and the semantics version.
    pub hash: Digest,
    /// The budgets declared in the program.
    pub budget: Budget,
    /// The inputs in declaration order.
    pub inputs: &'static [InputInfo],
    /// The declared tools in declaration order.
    pub tools: &'static [ToolInfo],
    /// Every step, indexed by [`StepId`].
    pub steps: &'static [StepInfo],
    /// The entry step.
    pub start: StepId,
}

impl ProgramInfo {
    /// The step with this id.
    ///
    /// # Panics
    /// If `id` is not a step of this program; ids only come from the program itself.
    pub fn step(&self, id: StepId) -> &'static StepInfo {
        &self.steps[id as usize]
    }

    /// Looks a step up by name.
    pub fn step_id(&self, name: &str) -> Option<StepId> {
        self.steps
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as StepId)
    }
}

/// The budgets of a program (docs/language.md, "Files and programs"). `None` means unlimited,
/// except where the runtime documents a default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Steps executed (see the runtime docs for what counts).
    pub max_steps: Option<u64>,
    /// Model tokens, prompt and completion together.
    pub max_tokens: Option<u64>,
    /// Consecutive stalled steps (invalid model answers without `on invalid`).
    pub max_stalled_steps: Option<u64>,
    /// Wall-clock time since the run started.
    pub max_duration: Option<Duration>,
    /// Tool invocations, retries included.
    pub max_tool_calls: Option<u64>,
}

/// What a replanning edge continues after (`on budget_exceeded -> S`, `on stalled -> S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplanOn {
    /// Any budget but the stall budget ran out.
    BudgetExceeded,
    /// The stall budget ran out.
    Stalled,
}

impl ReplanOn {
    /// `"budget_exceeded"` or `"stalled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplanOn::BudgetExceeded => "budget_exceeded",
            ReplanOn::Stalled => "stalled",
        }
    }
}

/// A replanning edge (`on budget_exceeded -> S replans N budget { ... }`): where a run continues
/// when the interruption happens, how many times at most, and the budget slice it gets each time.
#[derive(Debug)]
pub struct ReplanInfo {
    /// What it continues after.
    pub on: ReplanOn,
    /// The step it continues at.
    pub to: StepId,
    /// How many times at most.
    pub replans: u32,
    /// The fresh slice: each budget it sets allows this much more from the replan on.
    pub slice: Budget,
}

/// One declared input.
#[derive(Debug)]
pub struct InputInfo {
    /// The field name.
    pub name: &'static str,
    /// The declared type as written, e.g. `"secret string"`.
    pub ty: &'static str,
    /// True for `secret T`.
    pub secret: bool,
    /// For a record, `list<T>` or `T?` input: its shape (checked at the JSON boundary).
    pub shape: Option<&'static Shape>,
}

/// One `await` step: the event it waits for and the declared type of its payload.
#[derive(Debug)]
pub struct EventInfo {
    /// The `await` step.
    pub step: &'static str,
    /// The event's name.
    pub event: &'static str,
    /// The payload's declared type as written (`json` unless annotated).
    pub ty: &'static str,
    /// For a record, `list<T>` or `T?` payload: its shape.
    pub shape: Option<&'static Shape>,
}

/// One declared tool.
#[derive(Debug)]
pub struct ToolInfo {
    /// The tool's name.
    pub name: &'static str,
    /// Declared with `effect`: journaled with an intent before and an outcome after the call.
    pub effect: bool,
    /// Declared `idempotent`: honours the idempotency key, so an ambiguous call may be retried.
    pub idempotent: bool,
}

/// What kind of node a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// `llm`
    Llm,
    /// `call`
    Call,
    /// `guard`
    Guard,
    /// `branch`
    Branch,
    /// `parallel`
    Parallel,
    /// `await`
    Await,
    /// `end`
    End,
}

impl StepKind {
    /// The keyword, e.g. `"guard"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Llm => "llm",
            StepKind::Call => "call",
            StepKind::Guard => "guard",
            StepKind::Branch => "branch",
            StepKind::Parallel => "parallel",
            StepKind::Await => "await",
            StepKind::End => "end",
        }
    }
}

/// Static facts about one step.
#[derive(Debug)]
pub struct StepInfo {
    /// The step's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: StepKind,
    /// `retry N`: extra attempts after a failed model or tool call (0 when absent).
    pub retry: u32,
    /// For `parallel` steps, the branches and their schedule.
    pub parallel: Option<&'static ParallelInfo>,
}

/// The branches of a `parallel` step.
#[derive(Debug)]
pub struct ParallelInfo {
    /// The branches in declaration order.
    pub branches: &'static [BranchInfo],
    /// `max_concurrency N` (`None`: all ready branches at once).
    pub max_concurrency: Option<u32>,
    /// Block-level `retry N`: re-run the branches that did not succeed, up to N more times.
    pub retry: u32,
}

/// One branch of a `parallel` step.
#[derive(Debug)]
pub struct BranchInfo {
    /// The branch's name.
    pub name: &'static str,
    /// [`StepKind::Llm`] or [`StepKind::Call`].
    pub kind: StepKind,
    /// Branch-level `retry N`.
    pub retry: u32,
    /// `after a, b`: branches that must succeed before this one starts.
    pub after: &'static [BranchId],
}

/// What the current step asks the runtime to do.
#[derive(Debug)]
pub enum Action<C> {
    /// Call the model.
    Llm(LlmCall),
    /// Call a tool with typed arguments.
    Tool(C),
    /// No I/O: a `guard` or `branch` whose successor [`Program::transition`] computes from state.
    Decide,
    /// Run the branches of a `parallel` step ([`Program::branch_action`]), then join.
    Parallel,
    /// Suspend until `event` is delivered, or until `timeout` passes.
    Await {
        /// The event name.
        event: &'static str,
        /// The timeout, if the step has one.
        timeout: Option<Duration>,
    },
    /// Stop: the run is over.
    End {
        /// `success` or `failure`.
        success: bool,
        /// The failure message.
        message: Option<&'static str>,
    },
}

/// A model request as the program builds it (templates already rendered).
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    /// `system: "..."`, rendered.
    pub system: Option<String>,
    /// `prompt: "..."`, rendered.
    pub prompt: String,
    /// `model: "..."`.
    pub model: Option<&'static str>,
    /// `max_tokens: N`.
    pub max_tokens: Option<u32>,
    /// For `choose`: the admissible answers, in declaration order.
    pub choices: Option<&'static [&'static str]>,
    /// For `choose`: `min_confidence P`, the lowest probability of an answer the step accepts.
    pub min_confidence: Option<f64>,
    /// For `answer VAR: TYPE`: the type asked for (its JSON Schema goes to the model; the
    /// generated transition checks the reply against the type).
    pub answer: Option<&'static AnswerType>,
}

/// The type an `llm` step's `answer VAR: TYPE` asks for, as the model is told it.
#[derive(Debug, PartialEq, Eq)]
pub struct AnswerType {
    /// The type as written in the program, e.g. `Refund` or `list<Item>`.
    pub name: &'static str,
    /// Its JSON Schema, as compact JSON text.
    pub schema: &'static str,
}

/// A typed tool call built by generated code.
pub trait ToolCall: Send + 'static {
    /// Index of the tool in [`ProgramInfo::tools`].
    fn tool(&self) -> usize;
    /// The arguments as recorded in the trace, in declaration order (secrets as commitments).
    fn args(&self) -> Vec<(&'static str, Datum)>;
}

/// The normalized result of the current step's action, handed to [`Program::transition`].
#[derive(Debug)]
pub enum Outcome<'a> {
    /// `choose`: the model's trimmed answer is the admissible member with this index.
    Choice(usize),
    /// `into` (or no output clause): the model's text.
    Text(&'a str),
    /// `choose`: the trimmed answer is not one of the admissible members.
    Invalid,
    /// The tool returned this value (not yet decoded against the declared type).
    Tool(&'a Json),
    /// The model or tool call failed and its retries are used up; or a parallel block failed.
    Failed,
    /// A `guard` or `branch`: decide from state.
    Decide,
    /// A parallel block finished with every branch succeeded.
    Joined,
    /// An `await` received its event with this payload.
    Event(&'a Json),
    /// An `await` timed out.
    Timeout,
}

/// What [`Program::transition`] answers.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Continue at this step.
    Go(StepId),
    /// A `guard` or `branch` decided: the `when` arm that fired (`None` for `otherwise`) and
    /// the step it leads to.
    Decided {
        /// 0-based index of the arm, `None` for `otherwise`.
        arm: Option<u32>,
        /// The successor.
        to: StepId,
    },
    /// The model answer was invalid and the step has no `on invalid`: run the step again
    /// (counts as a stalled step).
    Stall,
    /// The outcome does not fit (a tool result or event payload of the wrong type). Nothing was
    /// changed; the runtime treats it as a failed attempt (tools) or refuses it (events).
    Reject(String),
    /// No edge handles this outcome (a failure without `on error`): the run ends `failed`.
    Fail(String),
    /// A run-time error while deciding (a type mismatch on a `json` field): the run ends `failed`.
    Fault(Fault),
}

/// A run-time error raised by generated code, e.g. comparing a `json` string with an `int`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// A `json` value had the wrong type for the comparison or operation.
    #[error("`{path}` is {found}, expected {expected}")]
    Type {
        /// The path as written, e.g. `score.risk`.
        path: String,
        /// What the expression needed.
        expected: &'static str,
        /// What the value was.
        found: &'static str,
    },
    /// A field of a `json` value was missing.
    #[error("`{path}` has no field `{field}`")]
    MissingField {
        /// The path up to the missing field.
        path: String,
        /// The missing field.
        field: String,
    },
    /// A variable read before it was assigned. The checker rules this out; the runtime still
    /// refuses to invent a value.
    #[error("variable `{0}` is not assigned")]
    Unassigned(&'static str),
    /// A recorded input could not be decoded into the program's `Input` type.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input field.
        name: &'static str,
        /// Why.
        message: String,
    },
    /// Integer arithmetic overflowed.
    #[error("integer overflow in `{0}`")]
    Overflow(String),
}

/// Everything a tool invocation knows about its context.
///
/// It can reveal secrets ([`ToolContext::reveal`]), but only the call's own secret arguments,
/// checked against the commitments the run recorded, and every reveal is recorded by the vault
/// ([`crate::vault::Vault::reveals`]). It holds no handle to the vault itself.
#[derive(Clone)]
pub struct ToolContext {
    /// The run.
    pub run_id: Arc<str>,
    /// The step (for a parallel branch, the branch name).
    pub step: &'static str,
    /// The tool called.
    pub tool: &'static str,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The idempotency key: the effect id for `effect` tools, a call id for others. It is the
    /// same for every attempt of the same logical call, so a tool that honours it performs the
    /// effect at most once.
    pub idempotency_key: Digest,
    /// Resolves secrets for the call.
    secrets: Arc<dyn SecretSource>,
    /// The call's secret arguments, as the trace records them: the only secrets it may reveal.
    scope: Scope,
}

/// The secrets one tool call may reveal: its own secret arguments (vault id and commitment).
/// Most calls have none, and then nothing is allocated.
#[derive(Clone, Default)]
pub(crate) struct Scope(Option<Arc<[(VaultId, Digest)]>>);

impl Scope {
    /// The secret arguments among `args` (a call's arguments as the trace records them).
    pub(crate) fn of<N>(args: &[(N, Datum)]) -> Scope {
        let secrets: Vec<(VaultId, Digest)> = args
            .iter()
            .filter_map(|(_, d)| match d {
                Datum::Secret {
                    vault_id,
                    commitment,
                } => Some((*vault_id, *commitment)),
                Datum::Plain(_) => None,
            })
            .collect();
        if secrets.is_empty() {
            Scope(None)
        } else {
            Scope(Some(secrets.into()))
        }
    }

    fn contains(&self, secret: &(VaultId, Digest)) -> bool {
        self.0.as_deref().is_some_and(|s| s.contains(secret))
    }
}

impl fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("run_id", &self.run_id)
            .field("step", &self.step)
            .field("tool", &self.tool)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// The context of one call, which may reveal the secrets of `scope` only.
    pub(crate) fn new(
        run_id: Arc<str>,
        step: &'static str,
        tool: &'static str,
        attempt: u32,
        idempotency_key: Digest,
        secrets: Arc<dyn SecretSource>,
        scope: Scope,
    ) -> ToolContext {
        ToolContext {
            run_id,
            step,
            tool,
            attempt,
            idempotency_key,
            secrets,
            scope,
        }
    }

    /// Fetches a secret's plaintext from the vault, decoded as `T`.
    ///
    /// Refused (a permanent [`ToolError`]) unless `handle` is one of the call's own secret
    /// arguments (the same vault id and commitment), and unless the stored value still matches
    /// the commitment (`keyed_hash(salt, value)`; a value changed in the vault behind the
    /// runtime's back never reaches the tool). The vault records the reveal (which secret, to
    /// which tool, at which step of which run) before it hands the value out.
    pub async fn reveal<T: serde::de::DeserializeOwned>(
        &self,
        handle: &SecretRef<T>,
    ) -> Result<Secret<T>, ToolError> {
        let wanted = (handle.id(), handle.commitment());
        if !self.scope.contains(&wanted) {
            return Err(ToolError::permanent(format!(
                "tool `{}` at `{}` may not reveal secret {}: it is not an argument of this call",
                self.tool,
                self.step,
                handle.id().to_hex()
            )));
        }
        let value = self
            .secrets
            .reveal(Reveal {
                vault_id: handle.id(),
                commitment: handle.commitment(),
                run_id: self.run_id.to_string(),
                step: self.step.to_string(),
                tool: self.tool.to_string(),
                attempt: self.attempt,
                key: self.idempotency_key,
            })
            .await?;
        serde_json::from_value(value)
            .map(Secret::new)
            .map_err(|e| ToolError::permanent(format!("secret has the wrong type: {e}")))
    }
}

/// One reveal of a secret to a tool call: which secret, to which tool, at which step of which
/// run. [`SecretSource::reveal`] gets it, checks it and records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reveal {
    /// The secret's vault id.
    pub vault_id: VaultId,
    /// The commitment the run recorded for it; the stored value must match it.
    pub commitment: Digest,
    /// The run.
    pub run_id: String,
    /// The step (for a parallel branch, the branch name).
    pub step: String,
    /// The tool the value is handed to.
    pub tool: String,
    /// The attempt of the call (1 for the first).
    pub attempt: u32,
    /// The call's idempotency key (for an `effect` tool, the effect id of its `tool_intent`).
    pub key: Digest,
}

/// Where tool calls get secret plaintext from (implemented by vaults).
pub trait SecretSource: Send + Sync + 'static {
    /// The plaintext of the secret `reveal.vault_id`, for the tool call `reveal` describes.
    ///
    /// Implementations must refuse a value that does not match `reveal.commitment`
    /// (`keyed_hash(salt, value)`, see [`crate::vault::commitment`]), an erased or unknown
    /// one, and must record the reveal durably before returning the value.
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>>;
}

/// A tool's failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// What went wrong.
    pub message: String,
    /// `false` when retrying cannot help (bad request, a refusal): the runtime skips the
    /// remaining retries.
    pub retryable: bool,
}

impl ToolError {
    /// A failure worth retrying (timeouts, 5xx, connection resets).
    pub fn transient(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A compiled program. Implemented by generated code; see the module docs.
pub trait Program: Send + Sync + 'static {
    /// The typed inputs (`customer_refund::Input`).
    type Input: Send + 'static;
    /// The program's variables.
    type State: Send + 'static;
    /// The host's tools, as a trait object (`dyn customer_refund::ToolsDyn`).
    type Tools: ?Sized + Send + Sync + 'static;
    /// A typed tool call.
    type Call: ToolCall;

    /// Static facts: name, hash, budget, steps, tools.
    fn info() -> &'static ProgramInfo;

    /// The semantics version the program was compiled to (`nanovm_dsl::canonical::SEMANTICS_VERSION`,
    /// hashed into [`ProgramInfo::hash`]). The runtime executes only the versions in
    /// [`SEMANTICS_VERSIONS`] and refuses any other before anything is recorded.
    ///
    /// The default is for code generated before semantics versions were named: it behaves
    /// as semantics version `0.1.0`.
    fn semantics() -> &'static str {
        "0.1.0"
    }

    /// The program's graph as a Mermaid flowchart (generated code returns its `MERMAID`), for
    /// hosts that show it (the server's program listing). `None`: not known.
    fn graph() -> Option<&'static str> {
        None
    }

    /// The events the program's `await` steps wait for, with their payload types, in source
    /// order (generated code lists them; empty: not known).
    fn events() -> &'static [EventInfo] {
        &[]
    }

    /// The inputs as the trace records them, in declaration order.
    fn record_input(input: &Self::Input) -> Vec<Datum>;

    /// The initial state, built from recorded inputs (live runs, resumes and replays all start
    /// here, so they cannot disagree).
    fn restore(inputs: &[Datum]) -> Result<Self::State, Fault>;

    /// What `step` asks for, given the current state.
    fn action(step: StepId, state: &Self::State) -> Result<Action<Self::Call>, Fault>;

    /// The compiled transition function: applies `outcome` of `step` to the state and names the
    /// successor.
    fn transition(step: StepId, state: &mut Self::State, outcome: Outcome<'_>) -> Next;

    /// What branch `branch` of the parallel step `step` asks for ([`Action::Llm`] or
    /// [`Action::Tool`]).
    ///
    /// The default is for programs without `parallel` steps: no step has a branch.
    fn branch_action(
        step: StepId,
        branch: BranchId,
        state: &Self::State,
    ) -> Result<Action<Self::Call>, Fault> {
        let _ = state;
        Err(Fault::Input {
            name: "branch",
            message: format!("step `{}` has no branch {branch}", step_name::<Self>(step)),
        })
    }

    /// Applies a branch's outcome. [`Next::Go`] (with the parallel step's own id) accepts it;
    /// [`Next::Reject`] marks the attempt failed without changing anything.
    ///
    /// The default is for programs without `parallel` steps: no step has a branch, so no
    /// outcome can be applied and the run fails.
    fn apply_branch(
        step: StepId,
        branch: BranchId,
        state: &mut Self::State,
        outcome: Outcome<'_>,
    ) -> Next {
        let _ = state;
        Next::Fail(format!(
            "step `{}` has no branch {branch} to handle the outcome {outcome:?}",
            step_name::<Self>(step)
        ))
    }

    /// Calls the host's typed tool method for `call`.
    fn invoke(
        tools: &Arc<Self::Tools>,
        call: Self::Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>>;

    /// The assigned, non-secret variables, for [`crate::Execution`]'s outputs.
    fn outputs(state: &Self::State) -> Vec<(&'static str, Json)>;

    /// The program's replanning edges. The default is for programs without them: a budget
    /// that runs out ends the run.
    fn replans() -> &'static [ReplanInfo] {
        &[]
    }
}

/// The name of step `id` of `P`, or the id itself if there is no such step.
fn step_name<P: Program + ?Sized>(id: StepId) -> Cow<'static, str> {
    match P::info().steps.get(id as usize) {
        Some(s) => Cow::Borrowed(s.name),
        None => Cow::Owned(id.to_string()),
    }
}

/// A name that is usually a `&'static str` from generated code but may be owned (imported
/// traces).
pub type Name = Cow<'static, str>;
