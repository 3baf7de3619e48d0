//! Replay: the same step sequence and root hash without any I/O; refusal of a different
//! program; divergence reports for traces that lie.

mod support;

use std::sync::Arc;

use nanovm_runtime::__private_v0_1::Program;
use nanovm_runtime::ToolError;
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Actor, Event, Reply, RunStatus, Trace};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Digest, VaultId};
use nanovm_runtime::{Execution, RunError, RunOptions, Runtime, replay};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{Host, block_on, event_list, fanout, rechain, small, small_steps5};

const START: u64 = 1_700_000_000_000;

fn refund_run(answer: &str, amount: i64, host: &Host) -> Execution {
    let vault = Arc::new(MemoryVault::seeded(3));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().answer("analyze", answer))
        .vault(vault.clone())
        .clock(ManualClock::auto_advance(START))
        .build();
    let input = cr::Input {
        request: "It broke.".into(),
        order_id: "o-1".into(),
        amount_cents: amount,
        email: vault
            .secret(&"bo@example.com".to_string())
            .expect("a secret"),
    };
    block_on(rt.run::<cr::Program>(input, Arc::new(host.clone()), RunOptions::default()))
        .expect("the run executes")
}

fn small_run(answers: &[&str], host: &Host) -> Execution {
    let rt = Runtime::builder()
        .model(ScriptedModel::new().answers("classify", answers.iter().copied()))
        .clock(ManualClock::auto_advance(START))
        .build();
    block_on(rt.run::<small::Program>(
        small::Input::new("pricing"),
        Arc::new(host.clone()),
        RunOptions::default(),
    ))
    .expect("the run executes")
}

/// Replays `e` with `P` and checks the report against the live run.
fn assert_replays<P: Program>(e: &Execution) {
    let report = replay::<P>(&e.trace).expect("the trace replays");
    assert_eq!(report.root, e.root());
    assert_eq!(report.path, e.path);
    assert_eq!(report.status, e.status);
    assert_eq!(report.end_step, e.end_step);
    assert_eq!(report.entries, e.trace.len());
    assert_eq!(report.stopped, None);
    assert_eq!(report.run_id, e.run_id);
    assert_eq!(report.usage, e.usage);
}

fn divergence(err: RunError) -> nanovm_runtime::Mismatch {
    match err {
        RunError::Divergence(m) => *m,
        other => panic!("expected a divergence, got {other}"),
    }
}

fn edited(trace: &Trace, index: usize, edit: impl FnOnce(&mut Event)) -> Trace {
    let mut events = event_list(trace);
    edit(&mut events[index]);
    let t = rechain(events);
    t.verify().expect("the forger re-chained every hash");
    t
}

#[test]
fn replay_reproduces_root_and_steps_without_calling_anything() {
    let host = Host::new();
    let e = refund_run("yes", 100, &host);
    assert_eq!(host.total_calls(), 1);
    assert_replays::<cr::Program>(&e);

    // Through the runtime, and as a resume of a finished run: nothing is called again.
    let fresh = Host::new();
    let model = ScriptedModel::new();
    let rt = Runtime::builder()
        .model(model.clone())
        .clock(ManualClock::new(START))
        .build();
    assert_eq!(
        rt.replay::<cr::Program>(&e.trace).expect("replays").root,
        e.root()
    );
    let again = block_on(rt.resume::<cr::Program>(
        e.trace.clone(),
        Arc::new(fresh.clone()),
        RunOptions::default(),
    ))
    .expect("resumes");
    assert_eq!(again.root(), e.root());
    assert_eq!(again.status, RunStatus::Success);
    assert_eq!(fresh.total_calls(), 0);
    assert_eq!(model.total_calls(), 0);
}

#[test]
fn every_kind_of_run_replays() {
    // Rejection with a secret, suspension, invalid answer.
    assert_replays::<cr::Program>(&refund_run("no", 100, &Host::new()));
    assert_replays::<cr::Program>(&refund_run("yes", 9000, &Host::new()));
    assert_replays::<cr::Program>(&refund_run("maybe", 100, &Host::new()));
    // Retries, then on error.
    let host = Host::new();
    for _ in 0..4 {
        host.respond("issue_refund", Err(ToolError::transient("down")));
    }
    assert_replays::<cr::Program>(&refund_run("yes", 100, &host));
    // Stalls and a stall trip; a cycle.
    let host = Host::new();
    host.respond("fetch", Ok(json!({"status": "again"})));
    assert_replays::<small::Program>(&small_run(&["d", "a", "d", "d", "d", "d"], &host));
    // Parallel with a block retry.
    let host = Host::new();
    host.fallback("score", json!(7))
        .respond("charge", Err(ToolError::transient("busy")));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("summary", "ok"))
        .clock(ManualClock::auto_advance(START))
        .build();
    let e = block_on(rt.run::<fanout::Program>(
        fanout::Input {
            order_id: "o".into(),
        },
        Arc::new(host),
        RunOptions::default(),
    ))
    .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    assert_replays::<fanout::Program>(&e);
}

#[test]
fn a_cancelled_run_replays_from_the_recorded_cancellation() {
    let host = Host::new();
    host.hook("issue_refund", support::hang());
    let vault = Arc::new(MemoryVault::seeded(3));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().answer("analyze", "yes"))
        .vault(vault.clone())
        .clock(ManualClock::new(START))
        .build();
    let token = nanovm_runtime::CancelToken::new();
    let input = cr::Input {
        request: "r".into(),
        order_id: "o".into(),
        amount_cents: 1,
        email: vault.secret(&"x".to_string()).expect("a secret"),
    };
    let run = rt.run::<cr::Program>(
        input,
        Arc::new(host.clone()),
        RunOptions::new().cancel(token.clone()),
    );
    let (e, ()) = block_on(async {
        tokio::join!(run, async {
            while host.calls("issue_refund") == 0 {
                tokio::task::yield_now().await;
            }
            token.cancel();
        })
    });
    let e = e.expect("runs");
    assert_eq!(e.status, RunStatus::Cancelled);
    assert_replays::<cr::Program>(&e);
}

#[test]
fn replay_refuses_a_trace_of_another_program_build() {
    let e = small_run(&["c"], &Host::new());
    let err = replay::<small_steps5::Program>(&e.trace).expect_err("different hash");
    match err {
        RunError::ProgramMismatch {
            program,
            compiled,
            recorded,
        } => {
            assert_eq!(program, "small_steps5");
            assert_eq!(compiled, Digest(small_steps5::PROGRAM_HASH));
            assert_eq!(recorded, Digest(small::PROGRAM_HASH));
        }
        other => panic!("expected ProgramMismatch, got {other}"),
    }
}

#[test]
fn an_edited_tool_result_is_caught_even_when_rechained() {
    let host = Host::new();
    host.respond("fetch", Ok(json!({"status": "ok", "priority": "high"})));
    let e = small_run(&["a"], &host);
    assert_eq!(e.end_step.as_deref(), Some("done_high"));
    let forged = edited(&e.trace, 3, |ev| {
        if let Event::ToolResult { result, .. } = ev {
            *result =
                nanovm_runtime::trace::ToolOutcome::Ok(json!({"status": "ok", "priority": "low"}));
        }
    });
    let m = divergence(replay::<small::Program>(&forged).expect_err("diverges"));
    assert_eq!(m.index, 5);
    assert_eq!(
        m.expected,
        Some(Event::Decision {
            step: "inner".into(),
            arm: None,
            next: "done".into()
        })
    );
    assert_eq!(
        m.recorded,
        Some(Event::Decision {
            step: "inner".into(),
            arm: Some(0),
            next: "done_high".into()
        })
    );
}

#[test]
fn an_edited_model_answer_is_caught() {
    let e = refund_run("yes", 100, &Host::new());
    let forged = edited(&e.trace, 1, |ev| {
        if let Event::Model {
            reply: Reply::Answer { text, .. },
            ..
        } = ev
        {
            *text = "no".into();
        }
    });
    let m = divergence(replay::<cr::Program>(&forged).expect_err("diverges"));
    assert_eq!(m.index, 2, "the guard decides differently");
}

#[test]
fn a_lie_about_the_successor_is_caught() {
    let e = refund_run("yes", 100, &Host::new());
    let forged = edited(&e.trace, 4, |ev| {
        if let Event::ToolResult { next, .. } = ev {
            *next = Some("refund_failed".into());
        }
    });
    let m = divergence(replay::<cr::Program>(&forged).expect_err("diverges"));
    assert_eq!(m.index, 4);
}

#[test]
fn a_forged_budget_trip_is_caught() {
    // customer_refund allows 30 s; a recorded duration trip with a different limit is a lie.
    let e = refund_run("yes", 100, &Host::new());
    let mut events = event_list(&e.trace);
    events.truncate(2);
    events.push(Event::BudgetExceeded {
        step: "policy".into(),
        budget: nanovm_runtime::trace::BudgetKind::MaxDuration,
        limit: 5,
        used: 9,
    });
    events.push(Event::RunEnded {
        status: RunStatus::BudgetExceeded,
        step: Some("policy".into()),
        message: None,
    });
    let m = divergence(replay::<cr::Program>(&rechain(events)).expect_err("diverges"));
    assert_eq!(m.index, 2);
}

#[test]
fn a_truncated_trace_replays_up_to_where_it_stops() {
    let e = refund_run("yes", 100, &Host::new());
    let prefix = Trace::from_entries(e.trace.entries()[..3].to_vec()).expect("a prefix verifies");
    let report = replay::<cr::Program>(&prefix).expect("replays");
    assert_eq!(report.status, RunStatus::Running);
    assert_eq!(report.path, ["analyze", "policy", "refund"]);
    assert_eq!(report.root, prefix.root());
    assert!(report.stopped.is_some());

    // Stopping between an effect's intent and its result is reported as ambiguous.
    let prefix = Trace::from_entries(e.trace.entries()[..4].to_vec()).expect("verifies");
    let report = replay::<cr::Program>(&prefix).expect("replays");
    let why = report.stopped.expect("stopped early");
    assert!(why.contains("ambiguous"), "{why}");
}

#[test]
fn more_recorded_events_than_the_run_produces_is_a_divergence() {
    let e = refund_run("yes", 100, &Host::new());
    let mut events = event_list(&e.trace);
    events.push(Event::Decision {
        step: "policy".into(),
        arm: None,
        next: "reject".into(),
    });
    let m = divergence(replay::<cr::Program>(&rechain(events)).expect_err("diverges"));
    assert_eq!(m.index, e.trace.len());
    assert_eq!(m.expected, None);
}

/// The vault id of the run's `email` (its one secret input).
fn email_id(t: &Trace) -> VaultId {
    nanovm_runtime::trace::secret_inputs(&t.entries()[0].event)[0]
}

fn tombstone(vault_id: VaultId) -> Event {
    Event::Erased {
        vault_id,
        by: Actor::new("dpo", "erasure request 12"),
    }
}

#[test]
fn erasure_events_are_kept_and_do_not_disturb_the_replay() {
    let e = refund_run("no", 100, &Host::new());
    let mut events = event_list(&e.trace);
    events.push(tombstone(email_id(&e.trace)));
    let t = rechain(events);
    let report = replay::<cr::Program>(&t).expect("replays");
    assert_eq!(report.root, t.root());
    assert_eq!(report.status, RunStatus::Success);
}

/// Issue 12 d3: an `erased` event no erasure could have appended is refused by replay, even in
/// a rechained trace (the chain verifies): in the middle of an execution, naming a secret the
/// run does not hold, without an actor, or twice.
#[test]
fn forged_erasures_are_refused_by_replay() {
    let e = refund_run("no", 100, &Host::new());
    let email = email_id(&e.trace);
    let events = event_list(&e.trace);
    let forged = |at: usize, ev: Event| {
        let mut events = events.clone();
        events.insert(at, ev);
        rechain(events)
    };
    let refused = |t: &Trace, what: &str| {
        let err = replay::<cr::Program>(t).expect_err(what);
        assert!(matches!(err, RunError::ForgedErasure(_)), "{what}: {err:?}");
        assert!(err.to_string().contains("forged erasure"), "{what}: {err}");
    };
    // While the run was executing (after its first model call).
    refused(&forged(2, tombstone(email)), "mid-execution");
    // A vault id that is not a secret input of the run.
    refused(
        &forged(events.len(), tombstone(VaultId([1; 16]))),
        "not an input",
    );
    // No actor.
    refused(
        &forged(
            events.len(),
            Event::Erased {
                vault_id: email,
                by: Actor::new("", ""),
            },
        ),
        "no actor",
    );
    // Twice.
    let mut twice = events.clone();
    twice.push(tombstone(email));
    twice.push(tombstone(email));
    refused(&rechain(twice), "twice");
    // The old shape (no `by`) does not even parse as a trace entry.
    let mut ok = events.clone();
    ok.push(tombstone(email));
    let text = rechain(ok).to_jsonl();
    let old = text.replace(r#","by":{"id":"dpo","reason":"erasure request 12"}"#, "");
    assert_ne!(old, text);
    assert!(Trace::from_jsonl(&old).is_err());
}

#[test]
fn an_empty_trace_or_one_without_run_started_is_not_a_run() {
    assert!(matches!(
        replay::<cr::Program>(&Trace::new()),
        Err(RunError::NotARun(_))
    ));
    let t = rechain([tombstone(VaultId([1; 16]))]);
    assert!(matches!(
        replay::<cr::Program>(&t),
        Err(RunError::NotARun(_))
    ));
}
