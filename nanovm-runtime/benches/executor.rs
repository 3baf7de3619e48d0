//! Executor throughput: steps per second of whole runs, in memory, every event hashed into the
//! trace.
//!
//! - `guard4`: llm (choose yes/no) -> guard -> effect tool -> read-only tool -> end, 4 steps.
//! - `linear/{10,100,1000}`: N read-only tool steps in a row, then end; the per-step cost must
//!   not grow with the length of the run.
//!
//! The programs are hand-written `Program` impls shaped like generated code. Runs execute on a
//! current-thread tokio runtime; the model and tools answer at once, so what is measured is the
//! executor: actions, transitions, idempotency keys, events, hashing, bookkeeping.

use std::hint::black_box;
use std::sync::{Arc, LazyLock};

use criterion::{Criterion, Throughput, criterion_group};
use nanovm_runtime::__private_v0_1::{
    Action, Budget, Fault, InputInfo, LlmCall, Next, Outcome, Program, ProgramInfo, StepId,
    StepInfo, StepKind, ToolCall, ToolInfo,
};
use nanovm_runtime::model::ModelReply;
use nanovm_runtime::testing::FnModel;
use nanovm_runtime::trace::Datum;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::{BoxFuture, ToolContext, ToolError};
use nanovm_runtime::{Digest, Json};
use nanovm_runtime::{RunOptions, Runtime};

/// The tools of both programs: answer at once.
pub trait BenchTools: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        call: Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>>;
}

struct Instant;

impl BenchTools for Instant {
    fn call(
        self: Arc<Self>,
        call: Call,
        _ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        let v = match call {
            Call::Pay { amount } => Json::from(amount),
            Call::Log | Call::Work { .. } => Json::Bool(true),
        };
        Box::pin(std::future::ready(Ok(v)))
    }
}

pub enum Call {
    Pay { amount: i64 },
    Log,
    Work { i: u32 },
}

impl ToolCall for Call {
    fn tool(&self) -> usize {
        match self {
            Call::Pay { .. } => 0,
            Call::Log => 1,
            Call::Work { .. } => 0,
        }
    }

    fn args(&self) -> Vec<(&'static str, Datum)> {
        match self {
            Call::Pay { amount } => vec![("amount", Datum::Plain(Json::from(*amount)))],
            Call::Log => Vec::new(),
            Call::Work { i } => vec![("i", Datum::Plain(Json::from(*i)))],
        }
    }
}

fn no_branches<C>(_: StepId, _: u16) -> Result<Action<C>, Fault> {
    Err(Fault::Unassigned("branch"))
}

fn invoke(
    tools: &Arc<dyn BenchTools>,
    call: Call,
    ctx: ToolContext,
) -> BoxFuture<'static, Result<Json, ToolError>> {
    Arc::clone(tools).call(call, ctx)
}

// --- guard4 ------------------------------------------------------------------------------------

struct Guard4;

struct GuardState {
    amount: i64,
    approve: Option<bool>,
    paid: Option<Json>,
}

const fn step(name: &'static str, kind: StepKind) -> StepInfo {
    StepInfo {
        name,
        kind,
        retry: 0,
        parallel: None,
    }
}

static GUARD4: ProgramInfo = ProgramInfo {
    name: "guard4",
    hash: Digest([4; 32]),
    budget: Budget {
        max_steps: Some(10),
        max_tokens: None,
        max_stalled_steps: None,
        max_duration: None,
        max_tool_calls: None,
    },
    inputs: &[InputInfo {
        name: "amount",
        ty: "int",
        secret: false,
        shape: None,
    }],
    tools: &[
        ToolInfo {
            name: "pay",
            effect: true,
            idempotent: true,
        },
        ToolInfo {
            name: "log",
            effect: false,
            idempotent: false,
        },
    ],
    steps: &[
        step("ask", StepKind::Llm),
        step("gate", StepKind::Guard),
        step("pay", StepKind::Call),
        step("log", StepKind::Call),
        step("done", StepKind::End),
        step("stop", StepKind::End),
    ],
    start: 0,
};

const YES_NO: &[&str] = &["yes", "no"];

impl Program for Guard4 {
    type Input = i64;
    type State = GuardState;
    type Tools = dyn BenchTools;
    type Call = Call;

    fn info() -> &'static ProgramInfo {
        &GUARD4
    }

    fn record_input(input: &i64) -> Vec<Datum> {
        vec![Datum::Plain(Json::from(*input))]
    }

    fn restore(inputs: &[Datum]) -> Result<GuardState, Fault> {
        match inputs.first() {
            Some(Datum::Plain(v)) => Ok(GuardState {
                amount: v.as_i64().ok_or(Fault::Unassigned("amount"))?,
                approve: None,
                paid: None,
            }),
            _ => Err(Fault::Unassigned("amount")),
        }
    }

    fn action(step: StepId, state: &GuardState) -> Result<Action<Call>, Fault> {
        Ok(match step {
            0 => Action::Llm(LlmCall {
                system: None,
                prompt: format!("Approve a payment of {}? Answer yes or no.", state.amount),
                model: None,
                max_tokens: None,
                choices: Some(YES_NO),
                min_confidence: None,
                answer: None,
            }),
            1 => Action::Decide,
            2 => Action::Tool(Call::Pay {
                amount: state.amount,
            }),
            3 => Action::Tool(Call::Log),
            4 => Action::End {
                success: true,
                message: None,
            },
            _ => Action::End {
                success: false,
                message: Some("refused"),
            },
        })
    }

    fn transition(step: StepId, state: &mut GuardState, outcome: Outcome<'_>) -> Next {
        match (step, outcome) {
            (0, Outcome::Choice(i)) => {
                state.approve = Some(i == 0);
                Next::Go(1)
            }
            (0, _) => Next::Go(5),
            (1, Outcome::Decide) => match state.approve {
                Some(true) if state.amount <= 5000 => Next::Decided {
                    arm: Some(0),
                    to: 2,
                },
                Some(_) => Next::Decided { arm: None, to: 5 },
                None => Next::Fault(Fault::Unassigned("approve")),
            },
            (2, Outcome::Tool(v)) => {
                state.paid = Some(v.clone());
                Next::Go(3)
            }
            (3, Outcome::Tool(_)) => Next::Go(4),
            _ => Next::Fail("unexpected".into()),
        }
    }

    fn branch_action(step: StepId, branch: u16, _: &GuardState) -> Result<Action<Call>, Fault> {
        no_branches(step, branch)
    }

    fn apply_branch(_: StepId, _: u16, _: &mut GuardState, _: Outcome<'_>) -> Next {
        Next::Fail("no branches".into())
    }

    fn invoke(
        tools: &Arc<dyn BenchTools>,
        call: Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        invoke(tools, call, ctx)
    }

    fn outputs(state: &GuardState) -> Vec<(&'static str, Json)> {
        state.paid.iter().map(|p| ("paid", p.clone())).collect()
    }
}

// --- linear N ----------------------------------------------------------------------------------

/// The static facts of a program of `n` tool steps named `s0`.. and an end step.
fn linear_info(n: usize, hash: u8) -> ProgramInfo {
    let mut steps: Vec<StepInfo> = (0..n)
        .map(|i| StepInfo {
            name: Box::leak(format!("s{i}").into_boxed_str()),
            kind: StepKind::Call,
            retry: 0,
            parallel: None,
        })
        .collect();
    steps.push(step("end", StepKind::End));
    ProgramInfo {
        name: "linear",
        hash: Digest([hash; 32]),
        budget: Budget {
            max_steps: Some(n as u64 + 1),
            ..Budget::default()
        },
        inputs: &[],
        tools: &[ToolInfo {
            name: "work",
            effect: false,
            idempotent: false,
        }],
        steps: Box::leak(steps.into_boxed_slice()),
        start: 0,
    }
}

struct LinearState {
    last: Option<Json>,
}

macro_rules! linear {
    ($name:ident, $n:expr) => {
        struct $name;

        impl Program for $name {
            type Input = ();
            type State = LinearState;
            type Tools = dyn BenchTools;
            type Call = Call;

            fn info() -> &'static ProgramInfo {
                static INFO: LazyLock<ProgramInfo> =
                    LazyLock::new(|| linear_info($n, ($n % 251) as u8));
                &INFO
            }

            fn record_input(_: &()) -> Vec<Datum> {
                Vec::new()
            }

            fn restore(_: &[Datum]) -> Result<LinearState, Fault> {
                Ok(LinearState { last: None })
            }

            fn action(step: StepId, _: &LinearState) -> Result<Action<Call>, Fault> {
                Ok(if (step as usize) < $n {
                    Action::Tool(Call::Work { i: step })
                } else {
                    Action::End {
                        success: true,
                        message: None,
                    }
                })
            }

            fn transition(step: StepId, state: &mut LinearState, outcome: Outcome<'_>) -> Next {
                match outcome {
                    Outcome::Tool(v) => {
                        state.last = Some(v.clone());
                        Next::Go(step + 1)
                    }
                    _ => Next::Fail("unexpected".into()),
                }
            }

            fn branch_action(
                step: StepId,
                branch: u16,
                _: &LinearState,
            ) -> Result<Action<Call>, Fault> {
                no_branches(step, branch)
            }

            fn apply_branch(_: StepId, _: u16, _: &mut LinearState, _: Outcome<'_>) -> Next {
                Next::Fail("no branches".into())
            }

            fn invoke(
                tools: &Arc<dyn BenchTools>,
                call: Call,
                ctx: ToolContext,
            ) -> BoxFuture<'static, Result<Json, ToolError>> {
                invoke(tools, call, ctx)
            }

            fn outputs(state: &LinearState) -> Vec<(&'static str, Json)> {
                state.last.iter().map(|v| ("last", v.clone())).collect()
            }
        }
    };
}

linear!(Linear10, 10);
linear!(Linear100, 100);
linear!(Linear1000, 1000);

// --- the benchmarks ----------------------------------------------------------------------------

fn runtime() -> Runtime {
    Runtime::builder()
        .model(FnModel::new(|_| Ok(ModelReply::text("yes"))))
        .build()
}

fn executor(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let rt = runtime();
    let tools: Arc<dyn BenchTools> = Arc::new(Instant);

    // Sanity: the runs do what the names say.
    let e = tokio
        .block_on(rt.run::<Guard4>(1200, tools.clone(), RunOptions::default()))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.usage.steps, 4);

    let mut g = c.benchmark_group("executor");
    g.throughput(Throughput::Elements(4));
    g.bench_function("guard4", |b| {
        b.iter(|| {
            let e = tokio
                .block_on(rt.run::<Guard4>(black_box(1200), tools.clone(), RunOptions::default()))
                .expect("runs");
            black_box(e.trace.root())
        })
    });

    fn linear<P: Program<Input = (), Tools = dyn BenchTools>>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        tokio: &tokio::runtime::Runtime,
        rt: &Runtime,
        tools: &Arc<dyn BenchTools>,
        n: u64,
    ) {
        let e = tokio
            .block_on(rt.run::<P>((), tools.clone(), RunOptions::default()))
            .expect("runs");
        assert_eq!((e.status, e.usage.steps), (RunStatus::Success, n));
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("linear/{n}"), |b| {
            b.iter(|| {
                let e = tokio
                    .block_on(rt.run::<P>((), tools.clone(), RunOptions::default()))
                    .expect("runs");
                black_box(e.trace.root())
            })
        });
    }
    linear::<Linear10>(&mut g, &tokio, &rt, &tools, 10);
    linear::<Linear100>(&mut g, &tokio, &rt, &tools, 100);
    linear::<Linear1000>(&mut g, &tokio, &rt, &tools, 1000);
    g.finish();
}

criterion_group!(benches, executor);

/// `NANOVM_PROFILE=<name>:<runs>` runs one benchmark's body a fixed number of times without
/// criterion, for instruction-exact profiling (`valgrind --tool=callgrind`), e.g.
/// `NANOVM_PROFILE=guard4:20000 valgrind --tool=callgrind target/release/deps/executor-*`.
fn profile(spec: &str) {
    let (name, runs) = spec.split_once(':').unwrap_or((spec, "10000"));
    let runs: usize = runs.parse().unwrap_or(10_000);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let rt = runtime();
    let tools: Arc<dyn BenchTools> = Arc::new(Instant);
    for _ in 0..runs {
        let e = match name {
            "guard4" => {
                tokio.block_on(rt.run::<Guard4>(1200, tools.clone(), RunOptions::default()))
            }
            "linear/10" => {
                tokio.block_on(rt.run::<Linear10>((), tools.clone(), RunOptions::default()))
            }
            "linear/100" => {
                tokio.block_on(rt.run::<Linear100>((), tools.clone(), RunOptions::default()))
            }
            "linear/1000" => {
                tokio.block_on(rt.run::<Linear1000>((), tools.clone(), RunOptions::default()))
            }
            other => panic!("unknown benchmark `{other}`"),
        };
        black_box(e.expect("runs").trace.root());
    }
}

fn main() {
    if let Ok(spec) = std::env::var("NANOVM_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
