//! The run future is `Send + 'static` for every program: it can be spawned on a multi-threaded
//! runtime. Checked at compile time (the generic function below must type-check for any `P`),
//! then exercised once.

mod support;

use std::future::Future;
use std::sync::Arc;

use nanovm_runtime::__private_v0_1::Program;
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::{Execution, RunError, RunOptions, Runtime};

use support::{Host, small};

fn send_static<F: Future + Send + 'static>(f: F) -> F {
    f
}

/// Compiles only if `run`, `resume` and `resume_journaled` return `Send + 'static` futures
/// for an arbitrary program.
fn futures_of<P: Program>(
    rt: &Runtime,
    input: P::Input,
    tools: Arc<P::Tools>,
) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
    let _resume =
        send_static(rt.resume::<P>(Default::default(), tools.clone(), RunOptions::default()));
    let _journaled =
        send_static(rt.resume_journaled::<P>("id", tools.clone(), RunOptions::default()));
    send_static(rt.run::<P>(input, tools, RunOptions::default()))
}

#[test]
fn the_run_future_can_be_spawned_on_a_multi_threaded_runtime() {
    let rt = Runtime::builder()
        .model(
            ScriptedModel::new()
                .answer("classify", "c")
                .answer("summarize", "ok"),
        )
        .build();
    let fut = futures_of::<small::Program>(&rt, small::Input::new("t"), Arc::new(Host::new()));
    let e = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::spawn(fut).await })
        .expect("the task completes")
        .expect("the run executes");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.path, ["classify", "route", "summarize", "done"]);
}
