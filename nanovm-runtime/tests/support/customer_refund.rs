//! `customer_refund` from `examples/workflows/customer_refund.nvm`, hand-written as the code
//! generator would emit it:
//!
//! ```text
//! program customer_refund {
//!     input { request: string  order_id: string  amount_cents: int  email: secret string }
//!     budget { max_steps: 20, max_tokens: 8000, max_stalled_steps: 2, max_duration: 30s }
//!     tool lookup_order(order_id: string) -> json
//!     effect tool issue_refund(order_id: string, amount_cents: int) -> json idempotent
//!     effect tool send_rejection(email: secret string) -> json
//!     start analyze
//!     llm analyze {
//!         prompt: "Is this a valid refund request? Answer yes or no.\n{request}"
//!         choose decision from [yes, no]
//!         on invalid -> manual_review
//!     } -> policy
//!     guard policy {
//!         when decision == "yes" and amount_cents <= 5000 -> refund
//!         when decision == "yes" -> manual_review
//!         otherwise -> reject
//!     }
//!     call refund = issue_refund(order_id: order_id, amount_cents: amount_cents) into receipt
//!         retry 3 on error -> refund_failed -> refunded
//!     call reject = send_rejection(email: email) -> rejected
//!     await manual_review = approval into verdict timeout 24h -> timed_out -> review_policy
//!     guard review_policy { when verdict.approved == true -> refund  otherwise -> reject }
//!     end refunded: success
//!     end rejected: success
//!     end refund_failed: failure "refund tool failed"
//!     end timed_out: failure "no reviewer answered"
//! }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::__private_v0_1 as nv;
use nanovm_runtime::__private_v0_1::{
    Action, Budget, Fault, InputInfo, LlmCall, Next, Outcome, ProgramInfo, StepId, StepInfo,
    StepKind, ToolCall, ToolInfo,
};
use nanovm_runtime::trace::Datum;
use nanovm_runtime::{BoxFuture, ToolContext, ToolError};
use nanovm_runtime::{Digest, Json, Secret, SecretRef};
use serde_json::json;

use super::{Host, decode, field, get, input, plain, secret_input, unexpected};

/// blake3 of the canonical program and the compiler version (a fixed stand-in here).
pub const PROGRAM_HASH: [u8; 32] = [0xc5; 32];

/// The typed inputs.
#[derive(Clone, Debug)]
pub struct Input {
    pub request: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub email: SecretRef<String>,
}

/// `choose decision from [yes, no]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Yes,
    No,
}

impl Decision {
    pub const NAMES: &'static [&'static str] = &["yes", "no"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn from_index(i: usize) -> Option<Self> {
        [Decision::Yes, Decision::No].get(i).copied()
    }
}

/// One variant per step, in source order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Analyze,
    Policy,
    Refund,
    Reject,
    ManualReview,
    ReviewPolicy,
    Refunded,
    Rejected,
    RefundFailed,
    TimedOut,
}

const STEPS: [Step; 10] = [
    Step::Analyze,
    Step::Policy,
    Step::Refund,
    Step::Reject,
    Step::ManualReview,
    Step::ReviewPolicy,
    Step::Refunded,
    Step::Rejected,
    Step::RefundFailed,
    Step::TimedOut,
];

impl Step {
    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<Step> {
        STEPS.get(id as usize).copied()
    }

    pub fn name(self) -> &'static str {
        INFO.steps[self as usize].name
    }
}

/// The variables.
#[derive(Clone, Debug)]
pub struct State {
    pub request: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub email: SecretRef<String>,
    pub decision: Option<Decision>,
    pub receipt: Option<Json>,
    pub verdict: Option<Json>,
}

/// The host's tools.
pub trait Tools: Send + Sync + 'static {
    fn lookup_order(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
    fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: Secret<String>,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send;
}

/// Object-safe form of [`Tools`].
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
                Call::LookupOrder { order_id } => self.lookup_order(&ctx, order_id).await,
                Call::IssueRefund {
                    order_id,
                    amount_cents,
                } => self.issue_refund(&ctx, order_id, amount_cents).await,
                Call::SendRejection { email } => {
                    let email = ctx.reveal(&email).await?;
                    self.send_rejection(&ctx, email).await
                }
            }
        })
    }
}

/// A typed tool call.
#[derive(Clone, Debug)]
pub enum Call {
    LookupOrder { order_id: String },
    IssueRefund { order_id: String, amount_cents: i64 },
    SendRejection { email: SecretRef<String> },
}

impl ToolCall for Call {
    fn tool(&self) -> usize {
        match self {
            Call::LookupOrder { .. } => 0,
            Call::IssueRefund { .. } => 1,
            Call::SendRejection { .. } => 2,
        }
    }

    fn args(&self) -> Vec<(&'static str, Datum)> {
        match self {
            Call::LookupOrder { order_id } => vec![("order_id", plain(order_id))],
            Call::IssueRefund {
                order_id,
                amount_cents,
            } => vec![
                ("order_id", plain(order_id)),
                ("amount_cents", plain(amount_cents)),
            ],
            Call::SendRejection { email } => vec![("email", Datum::secret(email))],
        }
    }
}

static INFO: ProgramInfo = ProgramInfo {
    name: "customer_refund",
    hash: Digest(PROGRAM_HASH),
    budget: Budget {
        max_steps: Some(20),
        max_tokens: Some(8000),
        max_stalled_steps: Some(2),
        max_duration: Some(Duration::from_millis(30_000)),
        max_tool_calls: None,
    },
    inputs: &[
        InputInfo {
            name: "request",
            ty: "string",
            secret: false,
        },
        InputInfo {
            name: "order_id",
            ty: "string",
            secret: false,
        },
        InputInfo {
            name: "amount_cents",
            ty: "int",
            secret: false,
        },
        InputInfo {
            name: "email",
            ty: "secret string",
            secret: true,
        },
    ],
    tools: &[
        ToolInfo {
            name: "lookup_order",
            effect: false,
            idempotent: false,
        },
        ToolInfo {
            name: "issue_refund",
            effect: true,
            idempotent: true,
        },
        ToolInfo {
            name: "send_rejection",
            effect: true,
            idempotent: false,
        },
    ],
    steps: &[
        step("analyze", StepKind::Llm, 0),
        step("policy", StepKind::Guard, 0),
        step("refund", StepKind::Call, 3),
        step("reject", StepKind::Call, 0),
        step("manual_review", StepKind::Await, 0),
        step("review_policy", StepKind::Guard, 0),
        step("refunded", StepKind::End, 0),
        step("rejected", StepKind::End, 0),
        step("refund_failed", StepKind::End, 0),
        step("timed_out", StepKind::End, 0),
    ],
    start: 0,
};

const fn step(name: &'static str, kind: StepKind, retry: u32) -> StepInfo {
    StepInfo {
        name,
        kind,
        retry,
        parallel: None,
    }
}

fn go(s: Step) -> Next {
    Next::Go(s.id())
}

pub fn action(step: Step, state: &State) -> Result<Action<Call>, Fault> {
    Ok(match step {
        Step::Analyze => Action::Llm(LlmCall {
            system: None,
            prompt: format!(
                "Is this a valid refund request? Answer yes or no.\n{}",
                state.request
            ),
            model: None,
            max_tokens: None,
            choices: Some(Decision::NAMES),
        }),
        Step::Policy | Step::ReviewPolicy => Action::Decide,
        Step::Refund => Action::Tool(Call::IssueRefund {
            order_id: state.order_id.clone(),
            amount_cents: state.amount_cents,
        }),
        Step::Reject => Action::Tool(Call::SendRejection { email: state.email }),
        Step::ManualReview => Action::Await {
            event: "approval",
            timeout: Some(Duration::from_millis(86_400_000)),
        },
        Step::Refunded | Step::Rejected => Action::End {
            success: true,
            message: None,
        },
        Step::RefundFailed => Action::End {
            success: false,
            message: Some("refund tool failed"),
        },
        Step::TimedOut => Action::End {
            success: false,
            message: Some("no reviewer answered"),
        },
    })
}

fn decide_policy(state: &State) -> Result<(Option<u32>, Step), Fault> {
    if *get(&state.decision, "decision")? == Decision::Yes && state.amount_cents <= 5000 {
        return Ok((Some(0), Step::Refund));
    }
    if *get(&state.decision, "decision")? == Decision::Yes {
        return Ok((Some(1), Step::ManualReview));
    }
    Ok((None, Step::Reject))
}

fn decide_review_policy(state: &State) -> Result<(Option<u32>, Step), Fault> {
    let approved = field(get(&state.verdict, "verdict")?, "verdict", "approved")?;
    let approved = approved.as_bool().ok_or_else(|| Fault::Type {
        path: "verdict.approved".into(),
        expected: "a bool",
        found: "something else",
    })?;
    if approved {
        return Ok((Some(0), Step::Refund));
    }
    Ok((None, Step::Reject))
}

fn decided(r: Result<(Option<u32>, Step), Fault>) -> Next {
    match r {
        Ok((arm, to)) => Next::Decided { arm, to: to.id() },
        Err(f) => Next::Fault(f),
    }
}

pub fn transition(step: Step, state: &mut State, outcome: Outcome<'_>) -> Next {
    match (step, outcome) {
        (Step::Analyze, Outcome::Choice(i)) => match Decision::from_index(i) {
            Some(c) => {
                state.decision = Some(c);
                go(Step::Policy)
            }
            None => Next::Reject(format!("choice index {i} out of range")),
        },
        (Step::Analyze, Outcome::Invalid) => go(Step::ManualReview),
        (Step::Analyze, Outcome::Failed) => {
            Next::Fail("llm step `analyze` failed and has no `on error` edge".into())
        }
        (Step::Policy, Outcome::Decide) => decided(decide_policy(state)),
        (Step::Refund, Outcome::Tool(value)) => {
            match decode::<Json>(value, "tool `issue_refund`") {
                Ok(x) => {
                    state.receipt = Some(x);
                    go(Step::Refunded)
                }
                Err(m) => Next::Reject(m),
            }
        }
        (Step::Refund, Outcome::Failed) => go(Step::RefundFailed),
        (Step::Reject, Outcome::Tool(value)) => {
            match decode::<Json>(value, "tool `send_rejection`") {
                Ok(_) => go(Step::Rejected),
                Err(m) => Next::Reject(m),
            }
        }
        (Step::Reject, Outcome::Failed) => {
            Next::Fail("call `reject` failed and has no `on error` edge".into())
        }
        (Step::ManualReview, Outcome::Event(value)) => {
            match decode::<Json>(value, "the event `approval`") {
                Ok(x) => {
                    state.verdict = Some(x);
                    go(Step::ReviewPolicy)
                }
                Err(m) => Next::Reject(m),
            }
        }
        (Step::ManualReview, Outcome::Timeout) => go(Step::TimedOut),
        (Step::ReviewPolicy, Outcome::Decide) => decided(decide_review_policy(state)),
        (step, outcome) => unexpected(step.name(), &outcome),
    }
}

/// The compiled program.
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
        vec![
            plain(&input.request),
            plain(&input.order_id),
            plain(&input.amount_cents),
            Datum::secret(&input.email),
        ]
    }

    fn restore(inputs: &[Datum]) -> Result<State, Fault> {
        Ok(State {
            request: input(inputs, 0, "request")?,
            order_id: input(inputs, 1, "order_id")?,
            amount_cents: input(inputs, 2, "amount_cents")?,
            email: secret_input(inputs, 3, "email")?,
            decision: None,
            receipt: None,
            verdict: None,
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
        if let Some(x) = &state.decision {
            out.push(("decision", Json::from(x.as_str())));
        }
        if let Some(x) = &state.receipt {
            out.push(("receipt", x.clone()));
        }
        if let Some(x) = &state.verdict {
            out.push(("verdict", x.clone()));
        }
        out
    }
}

impl Tools for Host {
    fn lookup_order(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("lookup_order", ctx, json!({ "order_id": order_id }))
    }

    fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call(
            "issue_refund",
            ctx,
            json!({ "order_id": order_id, "amount_cents": amount_cents }),
        )
    }

    fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: Secret<String>,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("send_rejection", ctx, json!({ "email": email.expose() }))
    }
}
