//! A parallel program, hand-written as the code generator would emit it:
//!
//! ```text
//! program fanout {
//!     input { order_id: string }
//!     budget { max_steps: 30 }
//!     tool validate(order_id: string) -> json
//!     effect tool reserve(order_id: string) -> json idempotent
//!     tool score(order_id: string) -> int
//!     effect tool charge(order_id: string) -> json
//!     start gate
//!     guard gate { when len(order_id) > 0 -> work  otherwise -> rejected }
//!     parallel work max_concurrency 2 {
//!         call validation = validate(order_id: order_id) into valid
//!         call reservation = reserve(order_id: order_id) into reservation retry 1 after validation
//!         call scoring = score(order_id: order_id) into risk
//!         call charging = charge(order_id: order_id) into receipt after reservation, scoring
//!         llm summary { prompt: "Summarize order {order_id}" into summary }
//!     } retry 1 on error -> failed -> done
//!     end done: success
//!     end failed: failure "fanout failed"
//!     end rejected: failure "no order id"
//! }
//! ```
//!
//! (Block-level `retry 1` is the `ParallelInfo::retry` field.) With `max_concurrency 2` the
//! rounds are: [validation, scoring], [reservation, summary], [charging].

use std::future::Future;
use std::sync::Arc;

use nanovm_runtime::__private_v0_1 as nv;
use nanovm_runtime::__private_v0_1::{
    Action, BranchInfo, Budget, Fault, InputInfo, LlmCall, Next, Outcome, ParallelInfo,
    ProgramInfo, StepId, StepInfo, StepKind, ToolCall, ToolInfo,
};
use nanovm_runtime::trace::Datum;
use nanovm_runtime::{BoxFuture, ToolContext, ToolError};
use nanovm_runtime::{Digest, Json};
use serde_json::json;

use super::{Host, decode, input, plain, unexpected};

pub const PROGRAM_HASH: [u8; 32] = [0xfa; 32];

#[derive(Clone, Debug)]
pub struct Input {
    pub order_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Gate,
    Work,
    Done,
    Failed,
    Rejected,
}

impl Step {
    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<Step> {
        [
            Step::Gate,
            Step::Work,
            Step::Done,
            Step::Failed,
            Step::Rejected,
        ]
        .get(id as usize)
        .copied()
    }

    pub fn name(self) -> &'static str {
        INFO.steps[self as usize].name
    }
}

#[derive(Clone, Debug)]
pub struct State {
    pub order_id: String,
    pub valid: Option<Json>,
    pub reservation: Option<Json>,
    pub risk: Option<i64>,
    pub receipt: Option<Json>,
    pub summary: Option<String>,
}

pub trait Tools: Send + Sync + 'static {
    fn validate(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn reserve(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn score(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn charge(
        &self,
        ctx: &ToolContext,
        order_id: String,
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
                Call::Validate { order_id } => self.validate(&ctx, order_id).await,
                Call::Reserve { order_id } => self.reserve(&ctx, order_id).await,
                Call::Score { order_id } => self.score(&ctx, order_id).await,
                Call::Charge { order_id } => self.charge(&ctx, order_id).await,
            }
        })
    }
}

#[derive(Clone, Debug)]
pub enum Call {
    Validate { order_id: String },
    Reserve { order_id: String },
    Score { order_id: String },
    Charge { order_id: String },
}

impl ToolCall for Call {
    fn tool(&self) -> usize {
        match self {
            Call::Validate { .. } => 0,
            Call::Reserve { .. } => 1,
            Call::Score { .. } => 2,
            Call::Charge { .. } => 3,
        }
    }

    fn args(&self) -> Vec<(&'static str, Datum)> {
        match self {
            Call::Validate { order_id }
            | Call::Reserve { order_id }
            | Call::Score { order_id }
            | Call::Charge { order_id } => vec![("order_id", plain(order_id))],
        }
    }
}

const fn branch(
    name: &'static str,
    kind: StepKind,
    retry: u32,
    after: &'static [u16],
) -> BranchInfo {
    BranchInfo {
        name,
        kind,
        retry,
        after,
    }
}

static WORK: ParallelInfo = ParallelInfo {
    branches: &[
        branch("validation", StepKind::Call, 0, &[]),
        branch("reservation", StepKind::Call, 1, &[0]),
        branch("scoring", StepKind::Call, 0, &[]),
        branch("charging", StepKind::Call, 0, &[1, 2]),
        branch("summary", StepKind::Llm, 0, &[]),
    ],
    max_concurrency: Some(2),
    retry: 1,
};

static INFO: ProgramInfo = ProgramInfo {
    name: "fanout",
    hash: Digest(PROGRAM_HASH),
    budget: Budget {
        max_steps: Some(30),
        max_tokens: None,
        max_stalled_steps: None,
        max_duration: None,
        max_tool_calls: None,
    },
    inputs: &[InputInfo {
        name: "order_id",
        ty: "string",
        secret: false,
    }],
    tools: &[
        ToolInfo {
            name: "validate",
            effect: false,
            idempotent: false,
        },
        ToolInfo {
            name: "reserve",
            effect: true,
            idempotent: true,
        },
        ToolInfo {
            name: "score",
            effect: false,
            idempotent: false,
        },
        ToolInfo {
            name: "charge",
            effect: true,
            idempotent: false,
        },
    ],
    steps: &[
        StepInfo {
            name: "gate",
            kind: StepKind::Guard,
            retry: 0,
            parallel: None,
        },
        StepInfo {
            name: "work",
            kind: StepKind::Parallel,
            retry: 0,
            parallel: Some(&WORK),
        },
        StepInfo {
            name: "done",
            kind: StepKind::End,
            retry: 0,
            parallel: None,
        },
        StepInfo {
            name: "failed",
            kind: StepKind::End,
            retry: 0,
            parallel: None,
        },
        StepInfo {
            name: "rejected",
            kind: StepKind::End,
            retry: 0,
            parallel: None,
        },
    ],
    start: 0,
};

pub fn action(step: Step, _state: &State) -> Result<Action<Call>, Fault> {
    Ok(match step {
        Step::Gate => Action::Decide,
        Step::Work => Action::Parallel,
        Step::Done => Action::End {
            success: true,
            message: None,
        },
        Step::Failed => Action::End {
            success: false,
            message: Some("fanout failed"),
        },
        Step::Rejected => Action::End {
            success: false,
            message: Some("no order id"),
        },
    })
}

pub fn transition(step: Step, state: &mut State, outcome: Outcome<'_>) -> Next {
    match (step, outcome) {
        (Step::Gate, Outcome::Decide) => {
            if !state.order_id.is_empty() {
                Next::Decided {
                    arm: Some(0),
                    to: Step::Work.id(),
                }
            } else {
                Next::Decided {
                    arm: None,
                    to: Step::Rejected.id(),
                }
            }
        }
        (Step::Work, Outcome::Joined) => Next::Go(Step::Done.id()),
        (Step::Work, Outcome::Failed) => Next::Go(Step::Failed.id()),
        (step, outcome) => unexpected(step.name(), &outcome),
    }
}

pub fn branch_action(step: Step, branch: u16, state: &State) -> Result<Action<Call>, Fault> {
    let order_id = state.order_id.clone();
    match (step, branch) {
        (Step::Work, 0) => Ok(Action::Tool(Call::Validate { order_id })),
        (Step::Work, 1) => Ok(Action::Tool(Call::Reserve { order_id })),
        (Step::Work, 2) => Ok(Action::Tool(Call::Score { order_id })),
        (Step::Work, 3) => Ok(Action::Tool(Call::Charge { order_id })),
        (Step::Work, 4) => Ok(Action::Llm(LlmCall {
            system: None,
            prompt: format!("Summarize order {order_id}"),
            model: None,
            max_tokens: None,
            choices: None,
        })),
        (step, branch) => Err(Fault::Input {
            name: "branch",
            message: format!("step `{}` has no branch {branch}", step.name()),
        }),
    }
}

pub fn apply_branch(step: Step, branch: u16, state: &mut State, outcome: Outcome<'_>) -> Next {
    let accepted = Next::Go(Step::Work.id());
    match (step, branch, outcome) {
        (Step::Work, 0, Outcome::Tool(v)) => match decode::<Json>(v, "tool `validate`") {
            Ok(x) => {
                state.valid = Some(x);
                accepted
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Work, 1, Outcome::Tool(v)) => match decode::<Json>(v, "tool `reserve`") {
            Ok(x) => {
                state.reservation = Some(x);
                accepted
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Work, 2, Outcome::Tool(v)) => match decode::<i64>(v, "tool `score`") {
            Ok(x) => {
                state.risk = Some(x);
                accepted
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Work, 3, Outcome::Tool(v)) => match decode::<Json>(v, "tool `charge`") {
            Ok(x) => {
                state.receipt = Some(x);
                accepted
            }
            Err(m) => Next::Reject(m),
        },
        (Step::Work, 4, Outcome::Text(t)) => {
            state.summary = Some(t.to_string());
            accepted
        }
        (step, _, outcome) => unexpected(step.name(), &outcome),
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Program;

impl nv::Program for Program {
    type Input = Input;
    type State = State;
    type Tools = dyn ToolsDyn;
    type Call = Call;

    fn info() -> &'static ProgramInfo {
        &INFO
    }

    fn record_input(input: &Input) -> Vec<Datum> {
        vec![plain(&input.order_id)]
    }

    fn restore(inputs: &[Datum]) -> Result<State, Fault> {
        Ok(State {
            order_id: input(inputs, 0, "order_id")?,
            valid: None,
            reservation: None,
            risk: None,
            receipt: None,
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

    fn branch_action(step: StepId, branch: u16, state: &State) -> Result<Action<Call>, Fault> {
        match Step::from_id(step) {
            Some(s) => branch_action(s, branch, state),
            None => Err(Fault::Input {
                name: "step",
                message: format!("no step has id {step}"),
            }),
        }
    }

    fn apply_branch(step: StepId, branch: u16, state: &mut State, outcome: Outcome<'_>) -> Next {
        match Step::from_id(step) {
            Some(s) => apply_branch(s, branch, state, outcome),
            None => Next::Fail(format!("no step has id {step}")),
        }
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
        if let Some(x) = &state.valid {
            out.push(("valid", x.clone()));
        }
        if let Some(x) = &state.reservation {
            out.push(("reservation", x.clone()));
        }
        if let Some(x) = &state.risk {
            out.push(("risk", Json::from(*x)));
        }
        if let Some(x) = &state.receipt {
            out.push(("receipt", x.clone()));
        }
        if let Some(x) = &state.summary {
            out.push(("summary", Json::from(x.clone())));
        }
        out
    }
}

impl Tools for Host {
    fn validate(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("validate", ctx, json!({ "order_id": order_id }))
    }

    fn reserve(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("reserve", ctx, json!({ "order_id": order_id }))
    }

    fn score(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("score", ctx, json!({ "order_id": order_id }))
    }

    fn charge(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("charge", ctx, json!({ "order_id": order_id }))
    }
}
