//! Durability: group commit at the documented points, intents durable before effects, and
//! recovery after a crash (idempotent effects re-called with the same key, others sent to
//! reconciliation), plus resuming a suspended run from a recorded delivery.

mod support;

use std::sync::Arc;

use nanovm_runtime::__private_v0_1::{Program, plain};
use nanovm_runtime::store::{JournalError, MemoryStore};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Event, RunStatus, Trace};
use nanovm_runtime::{Execution, RunError, RunOptions, Runtime};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{
    Host, START, Setup, block_on, crash_during, event_list, events, expire_leases, fanout, hang,
    rechain, setup,
};

fn resume<P: Program<Tools = T>, T: ?Sized>(
    s: &Setup,
    run_id: &str,
    tools: Arc<T>,
) -> Result<Execution, RunError>
where
    P::Tools: Send + Sync,
{
    block_on(s.rt.resume_journaled::<P>(run_id, tools, RunOptions::default()))
}

#[test]
fn group_commit_writes_at_the_durability_points_only() {
    let s = setup("yes");
    let host = Host::new();
    let e = block_on(s.rt.run::<cr::Program>(s.input(100), Arc::new(host), RunOptions::default()))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    // Before the effect (entries 0..=3); its result (4) with the end (5), in the write that
    // also gives the lease back: nothing external happens between them.
    assert_eq!(s.store.appends(), 2);
    let record = block_on(nanovm_runtime::store::JournalStore::run(
        &s.store, &e.run_id,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(record.lease_owner, None, "released by the last write");
    assert_eq!(s.store.entries(&e.run_id), e.trace.entries());

    let s = setup("yes");
    let e = block_on(s.rt.run::<cr::Program>(
        s.input(9000),
        Arc::new(Host::new()),
        RunOptions::default(),
    ))
    .expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    assert_eq!(
        s.store.appends(),
        1,
        "no effect: one write, at the suspension"
    );
    assert_eq!(s.store.entries(&e.run_id), e.trace.entries());
}

#[test]
fn an_intent_is_durable_before_its_effect_is_invoked() {
    let s = setup("yes");
    let host = Host::new();
    let store = s.store.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    host.hook(
        "issue_refund",
        Arc::new(move |ctx| {
            let last = store.entries(&ctx.run_id).last().map(|e| e.event.clone());
            seen2
                .lock()
                .expect("lock")
                .push((last, ctx.idempotency_key));
            Box::pin(async {})
        }),
    );
    let e = block_on(s.rt.run::<cr::Program>(s.input(100), Arc::new(host), RunOptions::default()))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    let seen = seen.lock().expect("lock");
    let (
        Some(Event::ToolIntent {
            effect_id, tool, ..
        }),
        key,
    ) = &seen[0]
    else {
        panic!("the journal did not end with the intent: {seen:?}");
    };
    assert_eq!(tool, "issue_refund");
    assert_eq!(
        effect_id, key,
        "the tool's idempotency key is the effect id"
    );
}

#[test]
fn a_journal_failure_stops_the_run_with_an_error() {
    let s = setup("yes");
    s.store.fail_after(0);
    let host = Host::new();
    let err = block_on(s.rt.run::<cr::Program>(
        s.input(100),
        Arc::new(host.clone()),
        RunOptions::default(),
    ))
    .expect_err("the intent cannot be made durable");
    assert!(
        matches!(err, RunError::Journal(JournalError::Io(_))),
        "{err}"
    );
    assert_eq!(host.total_calls(), 0, "no effect without a durable intent");
}

#[test]
fn after_a_crash_an_idempotent_effect_is_called_again_with_the_same_key() {
    let s = setup("yes");
    let host = Host::new();
    host.hook("issue_refund", hang());
    let input = s.input(100);
    let run_id = nanovm_runtime::run_id(
        &cr::Program::info().hash,
        &[
            ("request".into(), plain(&input.request)),
            ("order_id".into(), plain(&input.order_id)),
            ("amount_cents".into(), plain(&input.amount_cents)),
            (
                "email".into(),
                nanovm_runtime::trace::Datum::secret(&input.email),
            ),
        ],
    );
    crash_during(
        s.rt.run::<cr::Program>(input, Arc::new(host.clone()), RunOptions::default()),
        &host,
        "issue_refund",
    );
    expire_leases(&s.clock);
    let stored = s.store.entries(&run_id);
    assert_eq!(
        events(&Trace::from_entries(stored.clone()).expect("verifies")),
        [
            "run_started",
            "model:analyze",
            "decision:policy",
            "tool_intent:refund"
        ]
    );

    let fresh = Host::new();
    fresh.respond("issue_refund", Ok(json!({"refund": "r-9"})));
    let e = resume::<cr::Program, _>(
        &s,
        &run_id,
        Arc::new(fresh.clone()) as Arc<dyn cr::ToolsDyn>,
    )
    .expect("resumes");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.path, ["analyze", "policy", "refund", "refunded"]);
    let first = &host.records()[0];
    let again = &fresh.records()[0];
    assert_eq!(fresh.total_calls(), 1);
    assert_eq!((again.key, again.attempt), (first.key, first.attempt));
    // One intent, then the result: no second intent for the re-call.
    assert_eq!(
        events(&e.trace),
        [
            "run_started",
            "model:analyze",
            "decision:policy",
            "tool_intent:refund",
            "tool_result:refund",
            "run_ended:refunded"
        ]
    );
    assert_eq!(&e.trace.entries()[..4], &stored[..]);
    assert_eq!(s.store.entries(&run_id), e.trace.entries());

    // Resuming the finished run calls nothing.
    let third = Host::new();
    let again = resume::<cr::Program, _>(
        &s,
        &run_id,
        Arc::new(third.clone()) as Arc<dyn cr::ToolsDyn>,
    )
    .expect("resumes");
    assert_eq!(again.root(), e.root());
    assert_eq!(third.total_calls(), 0);
}

#[test]
fn after_a_crash_a_non_idempotent_effect_needs_reconciliation() {
    let s = setup("no");
    let host = Host::new();
    host.hook("send_rejection", hang());
    let opts = RunOptions::new().run_id("run-reject");
    crash_during(
        s.rt.run::<cr::Program>(s.input(100), Arc::new(host.clone()), opts),
        &host,
        "send_rejection",
    );
    expire_leases(&s.clock);
    let fresh = Host::new();
    let e = resume::<cr::Program, _>(
        &s,
        "run-reject",
        Arc::new(fresh.clone()) as Arc<dyn cr::ToolsDyn>,
    )
    .expect("resumes");
    assert_eq!(e.status, RunStatus::NeedsReconciliation);
    assert_eq!(e.end_step.as_deref(), Some("reject"));
    assert_eq!(fresh.total_calls(), 0, "never called twice");
    let msg = e.message.expect("a message");
    assert!(
        msg.contains("send_rejection") && msg.contains(&host.records()[0].key.to_hex()),
        "{msg}"
    );
    assert_eq!(
        events(&e.trace)[3..],
        ["tool_intent:reject", "run_ended:reject"]
    );
}

#[test]
fn a_crash_inside_a_parallel_round_is_recovered_per_branch() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("summary", "fine"))
        .clock(clock.clone())
        .store(store.clone())
        .build();
    let input = || fanout::Input {
        order_id: "o-3".into(),
    };
    let host = || {
        let h = Host::new();
        h.fallback("score", json!(1));
        h
    };

    // Crashes while `tool` is in flight, then resumes with fresh tools.
    let crash_and_resume = |tool: &'static str, run_id: &str| {
        let crashed = host();
        crashed.hook(tool, hang());
        let opts = RunOptions::new().run_id(run_id);
        crash_during(
            rt.run::<fanout::Program>(input(), Arc::new(crashed.clone()), opts),
            &crashed,
            tool,
        );
        expire_leases(&clock);
        let fresh = host();
        let resumed = rt.resume_journaled::<fanout::Program>(
            run_id,
            Arc::new(fresh.clone()),
            RunOptions::default(),
        );
        (block_on(resumed).expect("resumes"), crashed, fresh)
    };

    // The idempotent reservation is re-called with the same key.
    let (e, crashed, fresh) = crash_and_resume("reserve", "p1");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(fresh.calls("reserve"), 1);
    assert_eq!(
        fresh.calls("validate"),
        0,
        "recorded results are not called again"
    );
    assert_eq!(
        fresh.records()[0].key,
        crashed.records().last().expect("a call").key
    );

    // The non-idempotent charge needs reconciliation.
    let (e, _, fresh) = crash_and_resume("charge", "p2");
    assert_eq!(e.status, RunStatus::NeedsReconciliation);
    assert_eq!(fresh.total_calls(), 0);
}

#[test]
fn a_suspended_run_continues_from_a_recorded_delivery() {
    let s = setup("yes");
    let e = block_on(s.rt.run::<cr::Program>(
        s.input(9000),
        Arc::new(Host::new()),
        RunOptions::default(),
    ))
    .expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    // What delivering an event will do (issue 5): append it to the journal, then resume.
    let resume_with = |last: Event, host: &Host| {
        let mut evs = event_list(&e.trace);
        evs.push(last);
        s.store.set_entries(&e.run_id, rechain(evs).into_entries());
        block_on(s.rt.resume_journaled::<cr::Program>(
            &e.run_id,
            Arc::new(host.clone()),
            RunOptions::default(),
        ))
        .expect("resumes")
    };

    // Approved: review_policy sends it to refund.
    let host = Host::new();
    let delivered = Event::Delivered {
        step: "manual_review".into(),
        event: "approval".into(),
        event_id: "ev-1".into(),
        payload: json!({"approved": true, "by": "dana"}),
        next: "review_policy".into(),
        by: None,
    };
    let done = resume_with(delivered, &host);
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(
        done.path,
        [
            "analyze",
            "policy",
            "manual_review",
            "review_policy",
            "refund",
            "refunded"
        ]
    );
    assert_eq!(host.calls("issue_refund"), 1);
    assert_eq!(
        done.outputs["verdict"],
        json!({"approved": true, "by": "dana"})
    );

    // Timed out.
    let host = Host::new();
    let timed_out = Event::TimedOut {
        step: "manual_review".into(),
        next: "timed_out".into(),
    };
    let done = resume_with(timed_out, &host);
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.message.as_deref(), Some("no reviewer answered"));
    assert_eq!(host.total_calls(), 0);

    // A payload the guard cannot read is a fault, not a refund.
    let host = Host::new();
    let odd = Event::Delivered {
        step: "manual_review".into(),
        event: "approval".into(),
        event_id: "ev-2".into(),
        payload: json!({"approved": "yes"}),
        next: "review_policy".into(),
        by: None,
    };
    let done = resume_with(odd, &host);
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.end_step.as_deref(), Some("review_policy"));
    assert_eq!(host.total_calls(), 0);
}

#[test]
fn resuming_an_unknown_run_or_without_a_journal_is_an_error() {
    let s = setup("yes");
    let err = resume::<cr::Program, _>(&s, "nope", Arc::new(Host::new()) as Arc<dyn cr::ToolsDyn>)
        .expect_err("unknown");
    assert!(
        matches!(err, RunError::UnknownRun(ref id) if id == "nope"),
        "{err}"
    );
    let rt = Runtime::builder().model(ScriptedModel::new()).build();
    let err = block_on(rt.resume_journaled::<cr::Program>(
        "x",
        Arc::new(Host::new()),
        RunOptions::default(),
    ))
    .expect_err("no journal");
    assert!(matches!(err, RunError::NoJournal), "{err}");
}

/// Resuming from any prefix of a finished run, with the outside world answering the same way,
/// reproduces the run exactly, except where the prefix ends between a non-idempotent effect's
/// intent and its result: that run needs reconciliation.
#[test]
fn resuming_from_every_prefix_reproduces_the_run() {
    let model = || ScriptedModel::new().always("summary", "fine");
    let host = || {
        let h = Host::new();
        h.fallback("score", json!(5));
        h
    };
    let rt = Runtime::builder()
        .model(model())
        .clock(ManualClock::new(START))
        .build();
    let input = fanout::Input {
        order_id: "o-8".into(),
    };
    let full = block_on(rt.run::<fanout::Program>(input, Arc::new(host()), RunOptions::default()))
        .expect("runs");
    assert_eq!(full.status, RunStatus::Success);
    let entries = full.trace.entries();
    for k in 1..entries.len() {
        let prefix = Trace::from_entries(entries[..k].to_vec()).expect("a prefix verifies");
        let last = &entries[k - 1].event;
        let fresh = host();
        let rt = Runtime::builder()
            .model(model())
            .clock(ManualClock::new(START))
            .build();
        let e = block_on(rt.resume::<fanout::Program>(
            prefix,
            Arc::new(fresh.clone()),
            RunOptions::default(),
        ))
        .expect("resumes");
        let ambiguous_charge = matches!(last, Event::ToolIntent { tool, .. } if tool == "charge");
        if ambiguous_charge {
            assert_eq!(e.status, RunStatus::NeedsReconciliation, "prefix {k}");
            assert_eq!(fresh.calls("charge"), 0, "prefix {k}");
        } else {
            assert_eq!(e.root(), full.root(), "prefix {k} ending with {last:?}");
            assert_eq!(e.path, full.path, "prefix {k}");
        }
        // Nothing recorded is ever called again.
        let recorded_results = entries[..k]
            .iter()
            .filter(|en| matches!(en.event, Event::ToolResult { .. }))
            .count();
        assert!(fresh.total_calls() + recorded_results <= 4, "prefix {k}");
    }
}
