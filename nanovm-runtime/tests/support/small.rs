//! A small program with a cycle, for stalls, budgets and decision chains, hand-written as the
//! code generator would emit it (once per budget: the variants differ only in `budget {}` and
//! therefore in their `ProgramInfo` and program hash):
//!
//! ```text
//! program small {
//!     input { topic: string }
//!     budget { ... }                      // see the variants below
//!     tool fetch(topic: string) -> json
//!     tool count(topic: string) -> int
//!     start classify
//!     llm classify { prompt: "Classify {topic}: a, b or c" choose label from [a, b, c] } -> route
//!     branch route { when label == "a" -> lookup  when label == "b" -> tally  otherwise -> summarize }
//!     call lookup = fetch(topic: topic) into info retry 2 -> check
//!     branch check { when info.status == "ok" -> inner  otherwise -> classify }
//!     branch inner { when info.priority == "high" -> done_high  otherwise -> done }
//!     call tally = count(topic: topic) into n retry 1 -> done
//!     llm summarize { prompt: "Summarize {topic}" into summary } -> done
//!     end done: success
//!     end done_high: success
//! }
//! ```
//!
//! `classify` has no `on invalid`, so an answer outside [a, b, c] stalls it.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::__private_v0_1 as nv;
use nanovm_runtime::__private_v0_1::{
    Action, Budget, Fault, InputInfo, LlmCall, Next, Outcome, ProgramInfo, StepId, StepInfo,
    StepKind, ToolCall, ToolInfo,
};
use nanovm_runtime::trace::Datum;
use nanovm_runtime::{BoxFuture, ToolContext, ToolError};
use nanovm_runtime::{Digest, Json};
use serde_json::json;

use super::{Host, decode, field, get, input, json_str, plain, unexpected};

#[derive(Clone, Debug)]
pub struct Input {
    pub topic: String,
}

impl Input {
    pub fn new(topic: &str) -> Self {
        Input {
            topic: topic.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    A,
    B,
    C,
}

impl Label {
    pub const NAMES: &'static [&'static str] = &["a", "b", "c"];

    fn from_index(i: usize) -> Option<Self> {
        [Label::A, Label::B, Label::C].get(i).copied()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Classify,
    Route,
    Lookup,
    Check,
    Inner,
    Tally,
    Summarize,
    Done,
    DoneHigh,
}

const STEP_LIST: [Step; 9] = [
    Step::Classify,
    Step::Route,
    Step::Lookup,
    Step::Check,
    Step::Inner,
    Step::Tally,
    Step::Summarize,
    Step::Done,
    Step::DoneHigh,
];

impl Step {
    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<Step> {
        STEP_LIST.get(id as usize).copied()
    }

    pub fn name(self) -> &'static str {
        STEPS[self as usize].name
    }
}

#[derive(Clone, Debug)]
pub struct State {
    pub topic: String,
    pub label: Option<Label>,
    pub info: Option<Json>,
    pub n: Option<i64>,
    pub summary: Option<String>,
}

pub trait Tools: Send + Sync + 'static {
    fn fetch(
        &self,
        ctx: &ToolContext,
        topic: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn count(
        &self,
        ctx: &ToolContext,
        topic: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
}

pub trait ToolsDyn: Send + Sync + 'static {
    fn __invoke(
        self: Arc<Self>,
        call: Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>>;
}

impl<T: Tools> ToolsDyn for T {
    fn __invoke(
        self: Arc<Self>,
        call: Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        Box::pin(async move {
            match call {
                Call::Fetch { topic } => self.fetch(&ctx, topic).await,
                Call::Count { topic } => self.count(&ctx, topic).await,
            }
        })
    }
}

#[derive(Clone, Debug)]
pub enum Call {
    Fetch { topic: String },
    Count { topic: String },
}

impl ToolCall for Call {
    fn tool(&self) -> usize {
        match self {
            Call::Fetch { .. } => 0,
            Call::Count { .. } => 1,
        }
    }

    fn args(&self) -> Vec<(&'static str, Datum)> {
        match self {
            Call::Fetch { topic } | Call::Count { topic } => vec![("topic", plain(topic))],
        }
    }
}

const fn step(name: &'static str, kind: StepKind, retry: u32) -> StepInfo {
    StepInfo {
        name,
        kind,
        retry,
        parallel: None,
    }
}

static INPUTS: &[InputInfo] = &[InputInfo {
    name: "topic",
    ty: "string",
    secret: false,
}];

static TOOLS: &[ToolInfo] = &[
    ToolInfo {
        name: "fetch",
        effect: false,
        idempotent: false,
    },
    ToolInfo {
        name: "count",
        effect: false,
        idempotent: false,
    },
];

static STEPS: &[StepInfo] = &[
    step("classify", StepKind::Llm, 0),
    step("route", StepKind::Branch, 0),
    step("lookup", StepKind::Call, 2),
    step("check", StepKind::Branch, 0),
    step("inner", StepKind::Branch, 0),
    step("tally", StepKind::Call, 1),
    step("summarize", StepKind::Llm, 0),
    step("done", StepKind::End, 0),
    step("done_high", StepKind::End, 0),
];

const NO_BUDGET: Budget = Budget {
    max_steps: Some(50),
    max_tokens: None,
    max_stalled_steps: None,
    max_duration: None,
    max_tool_calls: None,
};

/// One budget variant of the program (generated code has one static `ProgramInfo` per program).
pub trait Variant: Send + Sync + 'static {
    fn info() -> &'static ProgramInfo;
}

macro_rules! variant {
    ($(#[$doc:meta])* $name:ident, $hash:expr, $budget:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl Variant for $name {
            fn info() -> &'static ProgramInfo {
                static INFO: ProgramInfo = ProgramInfo {
                    name: "small",
                    hash: Digest([$hash; 32]),
                    budget: $budget,
                    inputs: INPUTS,
                    tools: TOOLS,
                    steps: STEPS,
                    start: 0,
                };
                &INFO
            }
        }
    };
}

variant!(
    /// `max_steps: 50` only (a program with a cycle must set it); stalls default to 3.
    Plain,
    0x51,
    NO_BUDGET
);
variant!(
    /// `max_steps: 5`
    Steps5,
    0x52,
    Budget {
        max_steps: Some(5),
        ..NO_BUDGET
    }
);
variant!(
    /// `max_tokens: 100`
    Tokens100,
    0x53,
    Budget {
        max_tokens: Some(100),
        ..NO_BUDGET
    }
);
variant!(
    /// `max_tool_calls: 2`
    ToolCalls2,
    0x54,
    Budget {
        max_tool_calls: Some(2),
        ..NO_BUDGET
    }
);
variant!(
    /// `max_duration: 1s`
    Duration1s,
    0x55,
    Budget {
        max_duration: Some(Duration::from_secs(1)),
        ..NO_BUDGET
    }
);
variant!(
    /// `max_stalled_steps: 1`
    Stalls1,
    0x56,
    Budget {
        max_stalled_steps: Some(1),
        ..NO_BUDGET
    }
);

pub fn action(step: Step, state: &State) -> Result<Action<Call>, Fault> {
    Ok(match step {
        Step::Classify => Action::Llm(LlmCall {
            system: None,
            prompt: format!("Classify {}: a, b or c", state.topic),
            model: None,
            max_tokens: None,
            choices: Some(Label::NAMES),
        }),
        Step::Route | Step::Check | Step::Inner => Action::Decide,
        Step::Lookup => Action::Tool(Call::Fetch {
            topic: state.topic.clone(),
        }),
        Step::Tally => Action::Tool(Call::Count {
            topic: state.topic.clone(),
        }),
        Step::Summarize => Action::Llm(LlmCall {
            system: None,
            prompt: format!("Summarize {}", state.topic),
            model: None,
            max_tokens: None,
            choices: None,
        }),
        Step::Done | Step::DoneHigh => Action::End {
            success: true,
            message: None,
        },
    })
}

fn decide_route(state: &State) -> Result<(Option<u32>, Step), Fault> {
    let label = *get(&state.label, "label")?;
    if label == Label::A {
        return Ok((Some(0), Step::Lookup));
    }
    if label == Label::B {
        return Ok((Some(1), Step::Tally));
    }
    Ok((None, Step::Summarize))
}

fn decide_check(state: &State) -> Result<(Option<u32>, Step), Fault> {
    let info = get(&state.info, "info")?;
    if json_str(field(info, "info", "status")?, "info.status")? == "ok" {
        return Ok((Some(0), Step::Inner));
    }
    Ok((None, Step::Classify))
}

fn decide_inner(state: &State) -> Result<(Option<u32>, Step), Fault> {
    let info = get(&state.info, "info")?;
    if json_str(field(info, "info", "priority")?, "info.priority")? == "high" {
        return Ok((Some(0), Step::DoneHigh));
    }
    Ok((None, Step::Done))
}

fn decided(r: Result<(Option<u32>, Step), Fault>) -> Next {
    match r {
        Ok((arm, to)) => Next::Decided { arm, to: to.id() },
        Err(f) => Next::Fault(f),
    }
}

pub fn transition(step: Step, state: &mut State, outcome: Outcome<'_>) -> Next {
    match (step, outcome) {
        (Step::Classify, Outcome::Choice(i)) => match Label::from_index(i) {
            Some(c) => {
                state.label = Some(c);
                Next::Go(Step::Route.id())
            }
            None => Next::Reject(format!("choice index {i} out of range")),
        },
        (Step::Classify, Outcome::Invalid) => Next::Stall,
        (Step::Classify, Outcome::Failed) => {
            Next::Fail("llm step `classify` failed and has no `on error` edge".into())
        }
        (Step::Route, Outcome::Decide) => decided(decide_route(state)),
        (Step::Lookup, Outcome::Tool(v)) => match decode::<Json>(v, "tool `fetch`") {
            Ok(x) => {
                state.info = Some(x);
                Next::Go(Step::Check.id())
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Lookup, Outcome::Failed) => {
            Next::Fail("call `lookup` failed and has no `on error` edge".into())
        }
        (Step::Check, Outcome::Decide) => decided(decide_check(state)),
        (Step::Inner, Outcome::Decide) => decided(decide_inner(state)),
        (Step::Tally, Outcome::Tool(v)) => match decode::<i64>(v, "tool `count`") {
            Ok(x) => {
                state.n = Some(x);
                Next::Go(Step::Done.id())
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Tally, Outcome::Failed) => {
            Next::Fail("call `tally` failed and has no `on error` edge".into())
        }
        (Step::Summarize, Outcome::Text(t)) => {
            state.summary = Some(t.to_string());
            Next::Go(Step::Done.id())
        }
        (Step::Summarize, Outcome::Failed) => {
            Next::Fail("llm step `summarize` failed and has no `on error` edge".into())
        }
        (step, outcome) => unexpected(step.name(), &outcome),
    }
}

/// The compiled program, for budget variant `B`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Program<B = Plain>(PhantomData<B>);

impl<B: Variant> nv::Program for Program<B> {
    type Input = Input;
    type State = State;
    type Tools = dyn ToolsDyn;
    type Call = Call;

    fn info() -> &'static ProgramInfo {
        B::info()
    }

    fn record_input(input: &Input) -> Vec<Datum> {
        vec![plain(&input.topic)]
    }

    fn restore(inputs: &[Datum]) -> Result<State, Fault> {
        Ok(State {
            topic: input(inputs, 0, "topic")?,
            label: None,
            info: None,
            n: None,
            summary: None,
        })
    }

    fn action(step: StepId, state: &State) -> Result<Action<Call>, Fault> {
        match Step::from_id(step) {
            Some(s) => action(s, state),
            None => Err(Fault::Input {
                name: "step",
                message: format!("no step has id {step}"),
            }),
        }
    }

    fn transition(step: StepId, state: &mut State, outcome: Outcome<'_>) -> Next {
        match Step::from_id(step) {
            Some(s) => transition(s, state, outcome),
            None => Next::Fail(format!("no step has id {step}")),
        }
    }

    fn branch_action(step: StepId, branch: u16, _state: &State) -> Result<Action<Call>, Fault> {
        Err(Fault::Input {
            name: "branch",
            message: format!("step {step} has no branch {branch}"),
        })
    }

    fn apply_branch(step: StepId, _branch: u16, _state: &mut State, outcome: Outcome<'_>) -> Next {
        unexpected(&step.to_string(), &outcome)
    }

    fn invoke(
        tools: &Arc<dyn ToolsDyn>,
        call: Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        Arc::clone(tools).__invoke(call, ctx)
    }

    fn outputs(state: &State) -> Vec<(&'static str, Json)> {
        let mut out = Vec::new();
        if let Some(x) = &state.label {
            out.push(("label", Json::from(Label::NAMES[*x as usize])));
        }
        if let Some(x) = &state.info {
            out.push(("info", x.clone()));
        }
        if let Some(x) = &state.n {
            out.push(("n", Json::from(*x)));
        }
        if let Some(x) = &state.summary {
            out.push(("summary", Json::from(x.clone())));
        }
        out
    }
}

impl Tools for Host {
    fn fetch(
        &self,
        ctx: &ToolContext,
        topic: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("fetch", ctx, json!({ "topic": topic }))
    }

    fn count(
        &self,
        ctx: &ToolContext,
        topic: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("count", ctx, json!({ "topic": topic }))
    }
}
