//! A `ScriptedModel` is keyed by step names: a name the program does not have as an `llm` step
//! fails the run when it starts, before anything is recorded, naming the closest step.

use std::error::Error as _;
use std::sync::Arc;

use nanovm::prelude::*;
use nanovm::store::JournalStore as _;
use serde_json::json;

nanovm::include_program!("../examples/workflows/refund.nvm");

struct Payments;

impl refund::Tools for Payments {
    async fn issue_refund(&self, _: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        Ok(json!({ "refund_id": "rf_1" }))
    }
}

fn input() -> refund::Input {
    refund::Input {
        order_id: "ord_1".into(),
        amount_cents: 4200,
    }
}

fn run(model: ScriptedModel, store: MemoryStore) -> Result<Execution, RunError> {
    let runtime = Runtime::builder().model(model).store(store).build();
    let options = RunOptions::new().run_id("r1");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
        .block_on(runtime.run::<refund::Program>(input(), Arc::new(Payments), options))
}

#[test]
fn a_misspelled_step_fails_the_run_before_it_starts_with_the_closest_name() {
    let store = MemoryStore::new();
    let model = ScriptedModel::new().always("traige", "yes");
    let err = run(model.clone(), store.clone()).expect_err("the typo is refused");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            RunError::ModelRefused {
                program: "refund",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        message.contains("`traige`") && message.contains("did you mean `triage`?"),
        "{message}"
    );
    assert!(err.source().is_some(), "the model's error is the source");
    assert_eq!(model.total_calls(), 0, "the model was never called");
    let stored = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
        .block_on(store.load("r1"))
        .expect("the store answers");
    assert_eq!(stored, None, "nothing was recorded");
}

#[test]
fn a_script_for_a_step_that_is_no_llm_step_names_its_kind_and_the_llm_steps() {
    let model = ScriptedModel::new()
        .always("triage", "yes")
        .always("policy", "yes");
    let message = run(model, MemoryStore::new())
        .expect_err("`policy` is a guard")
        .to_string();
    assert!(
        message.contains("`policy`, which is a `guard` step of program `refund`")
            && message.contains("its `llm` steps: triage"),
        "{message}"
    );
}

#[test]
fn the_right_names_run_and_a_shared_script_is_not_checked() {
    let ok = run(
        ScriptedModel::new().always("triage", "yes"),
        MemoryStore::new(),
    )
    .expect("runs");
    assert_eq!(ok.status, RunStatus::Success);
    // A script shared with another program names that program's steps too.
    let shared = ScriptedModel::new()
        .always("triage", "yes")
        .always("analyze", "no")
        .shared();
    let ok = run(shared, MemoryStore::new()).expect("runs");
    assert_eq!(ok.status, RunStatus::Success);
}
