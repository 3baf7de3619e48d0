//! Parallel steps: the round schedule (`after`, `max_concurrency`), declaration-order traces,
//! branch and block retries, and that a succeeded effect branch never runs again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::ToolError;
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Event, RunStatus};
use nanovm_runtime::{Execution, RunOptions, Runtime};
use serde_json::json;

use support::fanout::{self, Input};
use support::{Host, block_on, events, yields};

const START: u64 = 1_700_000_000_000;

fn host() -> Host {
    let h = Host::new();
    h.fallback("validate", json!({"valid": true}))
        .fallback("reserve", json!({"reservation": "res-1"}))
        .fallback("score", json!(42))
        .fallback("charge", json!({"charged": true}));
    h
}

fn run(host: &Host, clock: &ManualClock) -> (Execution, ScriptedModel) {
    let model = ScriptedModel::new().always("summary", "order looks fine");
    let rt = Runtime::builder()
        .model(model.clone())
        .clock(clock.clone())
        .build();
    let e = block_on(rt.run::<fanout::Program>(
        Input {
            order_id: "o-9".into(),
        },
        Arc::new(host.clone()),
        RunOptions::default(),
    ))
    .expect("the run executes");
    (e, model)
}

const HAPPY: [&str; 11] = [
    "run_started",
    "decision:gate",
    // round 1: validation, scoring
    "tool_result:work/validation",
    "tool_result:work/scoring",
    // round 2: reservation (after validation), summary
    "tool_intent:work/reservation",
    "tool_result:work/reservation",
    "model:work/summary",
    // round 3: charging (after reservation and scoring)
    "tool_intent:work/charging",
    "tool_result:work/charging",
    "joined:work",
    "run_ended:done",
];

#[test]
fn rounds_follow_after_and_max_concurrency_in_declaration_order() {
    let host = host();
    for tool in ["validate", "reserve", "score", "charge"] {
        host.hook(tool, yields(3));
    }
    let (e, model) = run(&host, &ManualClock::auto_advance(START));
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.path, ["gate", "work", "done"]);
    assert_eq!(events(&e.trace), HAPPY);
    assert_eq!(
        host.max_in_flight(),
        2,
        "max_concurrency 2 is honoured and used"
    );
    assert_eq!(model.calls("summary"), 1);
    assert_eq!(e.usage.steps, 2 + 5);
    assert_eq!(e.outputs["risk"], json!(42));
    assert_eq!(e.outputs["summary"], json!("order looks fine"));
    let Some(Event::Joined { failed, next, .. }) = e.trace.entries().get(9).map(|en| &en.event)
    else {
        panic!("expected the join");
    };
    assert!(failed.is_empty());
    assert_eq!(next.as_deref(), Some("done"));
}

#[test]
fn the_trace_keeps_declaration_order_when_a_later_branch_finishes_first() {
    let host = host();
    host.hook("validate", yields(10));
    let (e, _) = run(&host, &ManualClock::auto_advance(START));
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(
        &host.completed()[..2],
        ["score", "validate"],
        "scoring finished first"
    );
    assert_eq!(events(&e.trace), HAPPY);
}

#[test]
fn block_retry_reruns_only_the_failed_branch() {
    let host = host();
    host.respond("charge", Err(ToolError::transient("processor busy")));
    let clock = ManualClock::auto_advance(START);
    let (e, _) = run(&host, &clock);
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(
        host.calls("reserve"),
        1,
        "a succeeded effect branch is never re-run"
    );
    assert_eq!(host.calls("validate"), 1);
    assert_eq!(host.calls("score"), 1);
    let charges: Vec<_> = host
        .records()
        .into_iter()
        .filter(|c| c.tool == "charge")
        .collect();
    assert_eq!(charges.len(), 2);
    assert_eq!((charges[0].attempt, charges[1].attempt), (1, 2));
    assert_eq!(
        charges[0].key, charges[1].key,
        "same effect id across the block retry"
    );
    assert_eq!(charges[0].step, "charging");
    assert_eq!(clock.sleeps(), [Duration::from_millis(100)]);
    assert_eq!(
        events(&e.trace)[7..],
        [
            "tool_intent:work/charging",
            "tool_result:work/charging",
            "tool_intent:work/charging",
            "tool_result:work/charging",
            "joined:work",
            "run_ended:done"
        ]
    );
    assert_eq!(e.usage.retries, 1);
}

#[test]
fn a_branch_retry_runs_in_the_next_round() {
    let host = host();
    host.respond("reserve", Err(ToolError::transient("lock timeout")));
    let (e, _) = run(&host, &ManualClock::auto_advance(START));
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(host.calls("reserve"), 2);
    assert_eq!(
        events(&e.trace)[4..],
        [
            // round 2: reservation fails, summary succeeds
            "tool_intent:work/reservation",
            "tool_result:work/reservation",
            "model:work/summary",
            // round 3: the reservation retry alone (charging still waits for it)
            "tool_intent:work/reservation",
            "tool_result:work/reservation",
            // round 4
            "tool_intent:work/charging",
            "tool_result:work/charging",
            "joined:work",
            "run_ended:done"
        ]
    );
}

#[test]
fn exhausted_block_retries_take_on_error_and_list_what_failed() {
    let host = host();
    host.respond("reserve", Err(ToolError::permanent("out of stock")))
        .respond("reserve", Err(ToolError::permanent("out of stock")));
    let (e, _) = run(&host, &ManualClock::auto_advance(START));
    assert_eq!(e.status, RunStatus::Failed);
    assert_eq!(e.message.as_deref(), Some("fanout failed"));
    assert_eq!(e.path, ["gate", "work", "failed"]);
    // A permanent error skips the branch retry; the block retry tries once more.
    assert_eq!(host.calls("reserve"), 2);
    assert_eq!(host.calls("charge"), 0, "charging never became ready");
    let joined = e
        .trace
        .entries()
        .iter()
        .find_map(|en| match &en.event {
            Event::Joined { failed, next, .. } => Some((failed.clone(), next.clone())),
            _ => None,
        })
        .expect("a join");
    assert_eq!(
        joined,
        (
            vec!["reservation".into(), "charging".into()],
            Some("failed".into())
        )
    );
}

#[test]
fn a_branch_result_of_the_wrong_type_is_a_failed_attempt() {
    let host = host();
    host.respond("score", Ok(json!("high")));
    let (e, _) = run(&host, &ManualClock::auto_advance(START));
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(
        host.calls("score"),
        2,
        "rejected once, re-run by the block retry"
    );
    assert_eq!(e.outputs["risk"], json!(42));
}

/// Found by the sabotage simulation (`nanovm-sim`, seed 6051 of `order_pipeline`): a parallel
/// round interrupted with a call in flight recorded the answers that had come back in one write
/// and the interruption in the next. A crash (or a failed write) between the two left a stored
/// trace that no execution could continue: every resume, duplicate start and replay diverged at
/// the first answer recorded as "not applied". A crash at any write of such a run must leave a
/// run that resumes and a trace that replays to its root.
#[test]
fn a_crash_at_any_write_of_an_interrupted_round_leaves_a_run_that_resumes() {
    use nanovm_runtime::store::{JournalStore, MemoryStore};
    use nanovm_runtime::{CancelToken, replay};
    use std::sync::atomic::{AtomicUsize, Ordering};

    for fail_after in 1..=3 {
        let host = host();
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (t, c) = (token.clone(), calls.clone());
        // The first reservation is cancelled while in flight; later ones answer.
        host.hook(
            "reserve",
            Arc::new(move |_| {
                let first = c.fetch_add(1, Ordering::SeqCst) == 0;
                let t = t.clone();
                Box::pin(async move {
                    if first {
                        t.cancel();
                        std::future::pending::<()>().await;
                    }
                })
            }),
        );
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::auto_advance(START);
        let rt = Runtime::builder()
            .model(ScriptedModel::new().always("summary", "order looks fine"))
            .clock(clock.clone())
            .store(store.clone())
            .build();
        store.fail_after(fail_after);
        let first = block_on(rt.run::<fanout::Program>(
            Input {
                order_id: "o-9".into(),
            },
            Arc::new(host.clone()),
            RunOptions::new().run_id("r1").cancel(token),
        ));
        store.fail_after(usize::MAX / 2);
        support::expire_leases(&clock);
        let resumed = block_on(rt.resume_journaled::<fanout::Program>(
            "r1",
            Arc::new(host.clone()),
            RunOptions::new(),
        ));
        let resumed = resumed.unwrap_or_else(|e| {
            panic!(
                "writes after {fail_after} failed (first outcome {:?}); the resume fails: {e}",
                first.as_ref().map(|e| e.status)
            )
        });
        let stored = block_on(store.load("r1")).unwrap().unwrap();
        let trace = nanovm_runtime::trace::Trace::from_entries(stored).unwrap();
        let report = replay::<fanout::Program>(&trace).expect("the stored trace replays");
        assert_eq!(
            report.root,
            trace.root(),
            "writes after {fail_after} failed"
        );
        assert_eq!(resumed.root(), trace.root());
        assert!(
            resumed.status.is_terminal(),
            "writes after {fail_after} failed: {}",
            resumed.status
        );
    }
}
