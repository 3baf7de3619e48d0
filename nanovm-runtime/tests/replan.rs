//! Replanning edges at run time: when the step budget runs out and the program has an
//! `on budget_exceeded` edge with replans left, the run records `budget_exceeded` and
//! `replanned` (chained) and continues at the edge's target with a fresh slice; with no replans
//! left it ends `budget_exceeded` as before. Replay reproduces both.

use std::sync::Arc;

use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{BudgetKind, Event, ReplanOn, RunStatus};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Json, RunOptions, RunView, Runtime, ToolContext, ToolError, replay};
use serde_json::json;

#[allow(dead_code, reason = "the tests use part of the generated code")]
mod generated {
    include!("support/generated/replan.rs");
}
use generated::replan;

/// The search tool; each search takes `takes` on the run's clock.
struct Search {
    clock: ManualClock,
    takes: std::time::Duration,
}

impl replan::Tools for Search {
    async fn search(&self, _: &ToolContext, q: String) -> Result<Json, ToolError> {
        self.clock.advance(self.takes);
        Ok(json!({ "found": q }))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `replan` with the planner always asking for another search and `rethink` answering
/// `verdicts` in turn.
fn run(verdicts: &[&str]) -> nanovm_runtime::Execution {
    run_with(verdicts, std::time::Duration::ZERO)
}

/// [`run`], each search taking `takes`.
fn run_with(verdicts: &[&str], takes: std::time::Duration) -> nanovm_runtime::Execution {
    let clock = ManualClock::new(1_700_000_000_000);
    let rt = Runtime::builder()
        .model(
            ScriptedModel::new()
                .always("plan", "search")
                .answers("rethink", verdicts.iter().copied())
                .shared(),
        )
        .vault(Arc::new(MemoryVault::seeded(1)))
        .clock(clock.clone())
        .build();
    block_on(rt.run::<replan::Program>(
        replan::Input {
            goal: "cheap flights".into(),
        },
        Arc::new(Search { clock, takes }),
        RunOptions::new().run_id("p1"),
    ))
    .unwrap()
}

fn replans(e: &nanovm_runtime::Execution) -> Vec<(String, String, u32, u32)> {
    e.trace
        .entries()
        .iter()
        .filter_map(|x| match &x.event {
            Event::Replanned {
                step,
                to,
                replan,
                of,
                ..
            } => Some((step.to_string(), to.to_string(), *replan, *of)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replanning_run_ends_within_its_declared_bounds() {
    // The loop plan -> route -> look runs out of its 4 steps at `route`; the replan asks
    // `rethink`, which says stop.
    let e = run(&["stop"]);
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(e.end_step.as_deref(), Some("finished"));
    assert_eq!(
        replans(&e),
        [("route".to_string(), "rethink".to_string(), 1, 2)]
    );
    // `budget_exceeded` stays in the trace, right before the replan that answered it.
    let kinds: Vec<&str> = e.trace.entries().iter().map(|x| x.event.kind()).collect();
    let at = kinds.iter().position(|k| *k == "replanned").unwrap();
    assert_eq!(kinds[at - 1], "budget_exceeded");
    // A reader of the trace sees the run move on to the target.
    let view = RunView::of(&e.trace.entries()[..=at]);
    assert_eq!(view.at(), Some("rethink"));
    assert_eq!(view.status(), RunStatus::Running);
    // The declared bound: max_steps 4, plus 4 per replan, 2 replans at most.
    assert!(e.usage.steps <= 4 + 2 * 4, "{:?}", e.usage);
    assert_eq!(e.usage.steps, 6, "{:?}", e.path);
    // Replay reproduces it, replan and all.
    let r = replay::<replan::Program>(&e.trace).unwrap();
    assert_eq!(r.status, RunStatus::Success);
    assert_eq!(r.root, e.trace.root());
}

#[test]
fn replans_exhausted_ends_budget_exceeded() {
    // `rethink` always wants more: two replans, then the third trip ends the run as it would
    // without the edge.
    let e = run(&["more", "more", "more"]);
    assert_eq!(e.status, RunStatus::BudgetExceeded, "{:?}", e.message);
    let r = replans(&e);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].2, r[1].2), (1, 2));
    let last = e.trace.entries().iter().rev().nth(1).unwrap();
    assert!(
        matches!(
            last.event,
            Event::BudgetExceeded {
                budget: BudgetKind::MaxSteps,
                limit: 12,
                ..
            }
        ),
        "{:?}",
        last.event
    );
    assert!(e.usage.steps <= 12, "{:?}", e.usage);
    let r = replay::<replan::Program>(&e.trace).unwrap();
    assert_eq!(r.status, RunStatus::BudgetExceeded);
    assert_eq!(r.root, e.trace.root());
}

#[test]
fn an_edited_replan_is_a_divergence() {
    let e = run(&["stop"]);
    let mut entries = e.trace.entries().to_vec();
    let at = entries
        .iter()
        .position(|x| matches!(x.event, Event::Replanned { .. }))
        .unwrap();
    // Rebuild the chain with the replan claiming a third allowance: the chain verifies, the
    // replay does not.
    if let Event::Replanned { of, .. } = &mut entries[at].event {
        *of = 3;
    }
    let mut t = nanovm_runtime::trace::Trace::new();
    let mut s = nanovm_runtime::trace::Encoder::new();
    for x in entries {
        t.push(x.event, &mut s);
    }
    let err = replay::<replan::Program>(&t).unwrap_err();
    assert!(err.to_string().contains("diverges"), "{err}");
}

#[test]
fn a_stalled_run_replans_along_its_own_edge_and_then_ends_as_before() {
    // `rethink` has no `on invalid`: an answer outside [stop, more] re-runs it (a stall). The
    // step budget runs out first (replan 1 of 2 along `on budget_exceeded`); at `rethink` four
    // stalls exceed the default limit 3 (replan 1 of 1 along `on stalled`, stall limit 1); the
    // step budget runs out again (replan 2 of 2); two more stalls exceed the limit 1, and with
    // no stall replans left the run ends `stalled`, as it would without the edge.
    let e = run(&["maybe"; 20]);
    let edges: Vec<(ReplanOn, u32, u32)> = e
        .trace
        .entries()
        .iter()
        .filter_map(|x| match &x.event {
            Event::Replanned { on, replan, of, .. } => Some((*on, *replan, *of)),
            _ => None,
        })
        .collect();
    assert_eq!(
        edges,
        [
            (ReplanOn::BudgetExceeded, 1, 2),
            (ReplanOn::Stalled, 1, 1),
            (ReplanOn::BudgetExceeded, 2, 2)
        ]
    );
    assert_eq!(e.status, RunStatus::Stalled, "{:?}", e.message);
    assert!(e.usage.steps <= 4 + 2 * 4, "{:?}", e.usage);
    let again = replay::<replan::Program>(&e.trace).unwrap();
    assert_eq!(again.status, e.status);
    assert_eq!(again.root, e.trace.root());
}

#[test]
fn a_duration_slice_is_recorded_and_replayed_from_the_record() {
    // A search takes 11 s of the 10 s: the duration runs out before the step after it. The replan's new limit (elapsed + 10 s) depends on the clock,
    // so it is recorded, and the replay (which reads no clock) takes it from there.
    let e = run_with(&["more", "stop"], std::time::Duration::from_secs(11));
    let limits: Vec<Option<u64>> = e
        .trace
        .entries()
        .iter()
        .filter_map(|x| match &x.event {
            Event::Replanned {
                max_duration_ms, ..
            } => Some(*max_duration_ms),
            _ => None,
        })
        .collect();
    assert!(!limits.is_empty());
    assert!(
        limits.iter().all(|l| l.is_some_and(|ms| ms > 10_000)),
        "{limits:?}"
    );
    let tripped: Vec<BudgetKind> = e
        .trace
        .entries()
        .iter()
        .filter_map(|x| match &x.event {
            Event::BudgetExceeded { budget, .. } => Some(*budget),
            _ => None,
        })
        .collect();
    assert!(tripped.contains(&BudgetKind::MaxDuration), "{tripped:?}");
    let again = replay::<replan::Program>(&e.trace).unwrap();
    assert_eq!(again.status, e.status);
    assert_eq!(again.root, e.trace.root());
}
