//! The durable protocol on top of a store: duplicate starts, operator reconciliation of
//! ambiguous effects, event delivery (duplicates, refusals, races, late events), timeouts, and
//! pending runs.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nanovm_runtime::BoxFuture;
use nanovm_runtime::Digest;
use nanovm_runtime::store::{JournalError, JournalStore, Lease, MemoryStore, RunQuery, RunRecord};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Entry, Event, RunStatus, Trace};
use nanovm_runtime::{
    DeliverError, Delivery, Execution, ReconcileError, Resolution, RunError, RunOptions, Runtime,
    replay,
};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{
    Host, START, Setup, block_on, crash_during, events, expire_leases, fanout, hang, setup,
    setup_with,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Setup {
    /// Starts run `id` and crashes it while `tool` is in flight (the tool never returns; the
    /// run's future is dropped), then lets the dead process's lease on the run expire. Returns
    /// the crashed process's host, which saw the call.
    fn crash_in(&self, amount: i64, id: &str, tool: &'static str) -> Host {
        let crashed = Host::new();
        crashed.hook(tool, hang());
        crash_during(
            self.rt.run::<cr::Program>(
                self.input(amount),
                Arc::new(crashed.clone()),
                RunOptions::new().run_id(id),
            ),
            &crashed,
            tool,
        );
        // A fresh run is owned from its first write: the dead start holds it this long.
        expire_leases(&self.clock);
        crashed
    }

    fn run(&self, amount: i64, id: &str, host: &Host) -> Result<Execution, RunError> {
        block_on(self.rt.run::<cr::Program>(
            self.input(amount),
            Arc::new(host.clone()),
            RunOptions::new().run_id(id),
        ))
    }

    fn deliver(
        &self,
        id: &str,
        event: &str,
        event_id: &str,
        payload: serde_json::Value,
        host: &Host,
    ) -> Result<Delivery, DeliverError> {
        block_on(self.rt.deliver::<cr::Program>(
            id,
            event,
            event_id,
            payload,
            Arc::new(host.clone()),
        ))
    }

    fn reconcile(
        &self,
        id: &str,
        effect: Digest,
        r: Resolution,
        host: &Host,
    ) -> Result<Execution, ReconcileError> {
        block_on(
            self.rt
                .reconcile::<cr::Program>(id, effect, r, Arc::new(host.clone())),
        )
    }
}

/// Compares what matters of two executions of the same run.
#[track_caller]
fn same_outcome(a: &Execution, b: &Execution) {
    assert_eq!(a.run_id, b.run_id);
    assert_eq!(a.status, b.status);
    assert_eq!(a.end_step, b.end_step);
    assert_eq!(a.message, b.message);
    assert_eq!(a.path, b.path);
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.root(), b.root());
}

// ---------------------------------------------------------------------------------------------
// Duplicate starts

#[test]
fn a_duplicate_start_of_a_finished_run_executes_nothing_and_answers_the_recorded_outcome() {
    let s = setup("yes");
    let host = Host::new();
    let first = s.run(100, "r1", &host).expect("runs");
    assert_eq!(first.status, RunStatus::Success);
    let appends = s.store.appends();
    let again = s.run(100, "r1", &host).expect("answered");
    same_outcome(&first, &again);
    assert_eq!(again.trace, first.trace);
    assert_eq!(host.calls("issue_refund"), 1, "the effect happened once");
    assert_eq!(s.store.appends(), appends, "nothing was written");
    assert_eq!(s.store.entries("r1"), first.trace.entries());
}

#[test]
fn a_duplicate_start_of_a_suspended_or_reconciling_run_answers_its_state() {
    let s = setup("yes");
    let host = Host::new();
    let first = s.run(9000, "wait", &host).expect("runs");
    assert_eq!(first.status, RunStatus::Suspended);
    let again = s.run(9000, "wait", &host).expect("answered");
    same_outcome(&first, &again);

    let s = setup("no");
    s.crash_in(100, "nr", "send_rejection");
    let fresh = Host::new();
    let paused = s.run(100, "nr", &fresh).expect("resumes the crashed run");
    assert_eq!(paused.status, RunStatus::NeedsReconciliation);
    let appends = s.store.appends();
    let again = s.run(100, "nr", &fresh).expect("answered");
    same_outcome(&paused, &again);
    assert_eq!(fresh.total_calls(), 0);
    assert_eq!(s.store.appends(), appends);
}

#[test]
fn a_duplicate_start_of_a_crashed_run_resumes_it_unless_a_worker_holds_it() {
    let s = setup("yes");
    let crashed = s.crash_in(100, "mid", "issue_refund");
    // A worker claims it: a start request must not run it concurrently.
    let now = nanovm_runtime::Clock::now_ms(&s.clock);
    let lease = block_on(s.store.claim("customer_refund", "w1", now, 10_000))
        .expect("claims")
        .expect("the crashed run is claimable");
    let host = Host::new();
    let err = s.run(100, "mid", &host).expect_err("leased");
    assert!(
        matches!(&err, RunError::Leased { owner, .. } if owner == "w1"),
        "{err}"
    );
    assert_eq!(host.total_calls(), 0);
    // The lease expires: the start request resumes the run.
    s.clock.advance(Duration::from_millis(10_000));
    let done = s.run(100, "mid", &host).expect("resumes");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(
        host.calls("issue_refund"),
        1,
        "the idempotent effect, same key"
    );
    assert_eq!(
        host.records()[0].key,
        crashed.records()[0].key,
        "called again with the same idempotency key"
    );
    drop(lease);
}

#[test]
fn a_run_id_in_use_by_another_request_is_refused() {
    let s = setup("yes");
    s.run(100, "r1", &Host::new()).expect("runs");
    let err = s.run(200, "r1", &Host::new()).expect_err("other inputs");
    assert!(
        matches!(&err, RunError::RunIdInUse { reason, .. } if reason.contains("amount_cents")),
        "{err}"
    );
}

/// Hole 6: a second start of a run id with another *secret* input is another request, though
/// the retried request seals its secret anew (a new vault id and salt, so a new commitment):
/// the secret inputs are compared by value, each checked against its commitment in the vault.
/// The same secret sealed again is the same request.
#[test]
fn a_run_id_in_use_with_another_secret_input_is_refused() {
    let s = setup("yes");
    let host = Host::new();
    let first = s.run(100, "sec", &host).expect("runs");
    // The same request, its secret sealed again: answered with the recorded outcome.
    let again = s.run(100, "sec", &host).expect("the same request");
    same_outcome(&first, &again);
    let mut other = s.input(100);
    other.email = s
        .vault
        .secret(&"eve@example.com".to_string())
        .expect("a secret");
    let err = block_on(s.rt.run::<cr::Program>(
        other,
        Arc::new(host.clone()),
        RunOptions::new().run_id("sec"),
    ))
    .expect_err("another secret input");
    assert!(
        matches!(&err, RunError::RunIdInUse { reason, .. } if reason.contains("email")),
        "{err}"
    );
    assert_eq!(host.calls("issue_refund"), 1);
}

// ---------------------------------------------------------------------------------------------
// Reconciliation

/// A run of `answer` that crashed while its non-idempotent effect was in flight, resumed to
/// `needs_reconciliation`. Returns the effect id.
fn ambiguous_rejection(s: &Setup, id: &str) -> Digest {
    let crashed = s.crash_in(100, id, "send_rejection");
    let e = block_on(s.rt.resume_journaled::<cr::Program>(
        id,
        Arc::new(Host::new()),
        RunOptions::new(),
    ))
    .expect("resumes");
    assert_eq!(e.status, RunStatus::NeedsReconciliation);
    crashed.records()[0].key
}

#[test]
fn reconciling_done_continues_with_the_operators_result_without_calling_the_tool() {
    let s = setup("no");
    let effect = ambiguous_rejection(&s, "rc");
    let host = Host::new();
    let done = s
        .reconcile(
            "rc",
            effect,
            Resolution::Done(json!({"sent": true, "by": "ops"})),
            &host,
        )
        .expect("reconciled");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.end_step.as_deref(), Some("rejected"));
    assert_eq!(host.total_calls(), 0, "the tool is not called");
    assert_eq!(
        events(&done.trace)[3..],
        [
            "tool_intent:reject",
            "run_ended:reject",
            "reconciled:reject",
            "tool_result:reject",
            "run_ended:rejected"
        ]
    );
    let Some(Event::ToolResult { result, key, .. }) = done.trace.entries().get(6).map(|e| &e.event)
    else {
        panic!("no tool result after the reconciliation");
    };
    assert_eq!(*key, effect);
    assert_eq!(
        *result,
        nanovm_runtime::trace::ToolOutcome::Ok(json!({"sent": true, "by": "ops"}))
    );
    // Stored, replayable, and a duplicate start answers it.
    assert_eq!(s.store.entries("rc"), done.trace.entries());
    let report = replay::<cr::Program>(&done.trace).expect("replays");
    assert_eq!(report.root, done.root());
    assert_eq!(report.status, RunStatus::Success);
    let again = s.run(100, "rc", &Host::new()).expect("answered");
    same_outcome(&done, &again);
    // And it cannot be reconciled twice.
    let err = s
        .reconcile("rc", effect, Resolution::NotDone, &host)
        .expect_err("not needed");
    assert!(
        matches!(
            err,
            ReconcileError::NotNeeded {
                status: RunStatus::Success,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn reconciling_not_done_calls_the_tool_again_with_the_same_key() {
    let s = setup("no");
    let effect = ambiguous_rejection(&s, "nd");
    let host = Host::new();
    let done = s
        .reconcile("nd", effect, Resolution::NotDone, &host)
        .expect("reconciled");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(host.calls("send_rejection"), 1);
    assert_eq!(host.records()[0].key, effect);
    assert_eq!(
        host.records()[0].attempt,
        1,
        "the same attempt, no second intent"
    );
    assert_eq!(
        events(&done.trace)[5..],
        [
            "reconciled:reject",
            "tool_result:reject",
            "run_ended:rejected"
        ]
    );
    assert_eq!(
        replay::<cr::Program>(&done.trace).expect("replays").root,
        done.root()
    );
}

#[test]
fn a_crash_after_not_done_leaves_the_effect_ambiguous_again() {
    let s = setup("no");
    let effect = ambiguous_rejection(&s, "nd2");
    let crashed = Host::new();
    crashed.hook("send_rejection", hang());
    crash_during(
        s.rt.reconcile::<cr::Program>(
            "nd2",
            effect,
            Resolution::NotDone,
            Arc::new(crashed.clone()),
        ),
        &crashed,
        "send_rejection",
    );
    // The dead process still holds the run's lease until it expires.
    let host = Host::new();
    let err = s.run(100, "nd2", &host).expect_err("leased");
    assert!(matches!(err, RunError::Leased { .. }), "{err}");
    s.clock.advance(Duration::from_millis(
        nanovm_runtime::store::OPERATION_LEASE_MS,
    ));
    // The re-call may have happened: resuming pauses again instead of calling a third time.
    let e = s.run(100, "nd2", &host).expect("resumes");
    assert_eq!(e.status, RunStatus::NeedsReconciliation);
    assert_eq!(host.total_calls(), 0);
    assert_eq!(
        events(&e.trace)[4..],
        ["run_ended:reject", "reconciled:reject", "run_ended:reject"]
    );
    let done = s
        .reconcile(
            "nd2",
            effect,
            Resolution::Done(json!({"sent": true})),
            &host,
        )
        .expect("reconciled");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(host.total_calls(), 0);
    assert_eq!(
        replay::<cr::Program>(&done.trace).expect("replays").root,
        done.root()
    );
}

#[test]
fn reconciliation_is_refused_for_the_wrong_run_state_or_effect_and_nothing_is_written() {
    let s = setup("no");
    let effect = ambiguous_rejection(&s, "x");
    let before = s.store.entries("x");
    let host = Host::new();
    let wrong = Digest::of(b"not an effect");
    let err = s
        .reconcile("x", wrong, Resolution::NotDone, &host)
        .expect_err("not ambiguous");
    assert!(
        matches!(&err, ReconcileError::NotAmbiguous { ambiguous, .. } if ambiguous == &[effect]),
        "{err}"
    );
    let err = s
        .reconcile("nope", effect, Resolution::NotDone, &host)
        .expect_err("unknown");
    assert!(matches!(err, ReconcileError::UnknownRun(_)), "{err}");
    let ok = setup("yes");
    ok.run(100, "fine", &Host::new()).expect("runs");
    let err = ok
        .reconcile("fine", effect, Resolution::NotDone, &host)
        .expect_err("not needed");
    assert!(matches!(err, ReconcileError::NotNeeded { .. }), "{err}");
    assert_eq!(s.store.entries("x"), before);
    assert_eq!(host.total_calls(), 0);
}

#[test]
fn a_parallel_branch_is_reconciled_inside_its_round() {
    let store = MemoryStore::new();
    let (rt, _, clock) = setup_with("yes", store.clone());
    let host = || {
        let h = Host::new();
        h.fallback("score", json!(1));
        h
    };
    let crashed = host();
    crashed.hook("charge", hang());
    crash_during(
        rt.run::<fanout::Program>(
            fanout::Input {
                order_id: "o-3".into(),
            },
            Arc::new(crashed.clone()),
            RunOptions::new().run_id("p"),
        ),
        &crashed,
        "charge",
    );
    expire_leases(&clock);
    let effect = crashed
        .records()
        .iter()
        .find(|c| c.tool == "charge")
        .expect("charged")
        .key;
    let fresh = host();
    let paused = block_on(rt.resume_journaled::<fanout::Program>(
        "p",
        Arc::new(fresh.clone()),
        RunOptions::new(),
    ))
    .expect("resumes");
    assert_eq!(paused.status, RunStatus::NeedsReconciliation);
    let done = block_on(rt.reconcile::<fanout::Program>(
        "p",
        effect,
        Resolution::Done(json!({"charged": 1})),
        Arc::new(fresh.clone()),
    ))
    .expect("reconciled");
    assert_eq!(done.status, RunStatus::Success, "{:?}", done.message);
    assert_eq!(fresh.total_calls(), 0);
    assert_eq!(done.outputs["receipt"], json!({"charged": 1}));
    let report = replay::<fanout::Program>(&done.trace).expect("replays");
    assert_eq!(report.root, done.root());
    assert_eq!(store.entries("p"), done.trace.entries());
}

// ---------------------------------------------------------------------------------------------
// Delivery and timeouts

#[test]
fn a_delivered_event_continues_the_run_and_a_repeat_is_acknowledged_and_ignored() {
    let s = setup("yes");
    let host = Host::new();
    s.run(9000, "d", &host).expect("suspends");
    let d = s
        .deliver("d", "approval", "ev-1", json!({"approved": true}), &host)
        .expect("delivered");
    let Delivery::Resumed(done) = d else {
        panic!("{d:?}")
    };
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
    assert_eq!(s.store.entries("d"), done.trace.entries());
    let appends = s.store.appends();
    // The same event again, after the run moved on: acknowledged, nothing written.
    let again = s
        .deliver("d", "approval", "ev-1", json!({"approved": true}), &host)
        .expect("acknowledged");
    let Delivery::Duplicate(e) = again else {
        panic!("{again:?}")
    };
    same_outcome(&done, &e);
    // Another event id: the run is not waiting any more.
    let err = s
        .deliver("d", "approval", "ev-2", json!({"approved": true}), &host)
        .expect_err("not waiting");
    assert!(
        matches!(
            err,
            DeliverError::NotWaiting {
                status: RunStatus::Success,
                waiting_for: None,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.store.appends(), appends);
    assert_eq!(host.calls("issue_refund"), 1);
}

/// Hole 6: an event id is an idempotency key, and a key names one request. The same id with
/// another payload is not a duplicate to acknowledge and drop silently: it is a conflict, and
/// nothing is written. The same payload (its keys in another order) is still a duplicate.
#[test]
fn the_same_event_id_with_another_payload_is_a_conflict() {
    let s = setup("yes");
    let host = Host::new();
    s.run(9000, "rev", &host).expect("suspends");
    let payload = json!({"approved": true, "note": {"by": "ann", "at": 1}});
    let first = s
        .deliver("rev", "approval", "rev-1", payload, &host)
        .expect("delivered");
    assert!(matches!(first, Delivery::Resumed(_)), "{first:?}");
    let appends = s.store.appends();
    let stored = s.store.entries("rev");
    let err = s
        .deliver(
            "rev",
            "approval",
            "rev-1",
            json!({"approved": false, "note": {"by": "ann", "at": 1}}),
            &host,
        )
        .expect_err("another payload under the same event id");
    assert!(
        matches!(&err, DeliverError::Conflict { run_id, event_id } if run_id == "rev" && event_id == "rev-1"),
        "{err}"
    );
    assert_eq!(s.store.appends(), appends, "nothing was written");
    assert_eq!(s.store.entries("rev"), stored);
    let same = s
        .deliver(
            "rev",
            "approval",
            "rev-1",
            json!({"note": {"at": 1, "by": "ann"}, "approved": true}),
            &host,
        )
        .expect("the same payload is a duplicate");
    assert!(matches!(same, Delivery::Duplicate(_)), "{same:?}");
    assert_eq!(host.calls("issue_refund"), 1);
}

#[test]
fn a_delivery_to_a_run_not_waiting_for_that_event_changes_nothing() {
    let s = setup("yes");
    let host = Host::new();
    s.run(9000, "w", &host).expect("suspends");
    let before = s.store.entries("w");
    let err = s
        .deliver("w", "payment", "ev-1", json!({}), &host)
        .expect_err("another event");
    assert!(
        matches!(&err, DeliverError::NotWaiting { waiting_for: Some(w), status: RunStatus::Suspended, .. } if w == "approval"),
        "{err}"
    );
    let err = s
        .deliver("ghost", "approval", "ev-1", json!({}), &host)
        .expect_err("unknown");
    assert!(matches!(err, DeliverError::UnknownRun(_)), "{err}");
    assert_eq!(s.store.entries("w"), before);
    assert_eq!(host.total_calls(), 0);
}

#[test]
fn a_late_event_takes_the_timeout_edge_and_is_not_recorded() {
    let s = setup("yes");
    let host = Host::new();
    s.run(9000, "late", &host).expect("suspends");
    s.clock.advance(DAY);
    let d = s
        .deliver("late", "approval", "ev-1", json!({"approved": true}), &host)
        .expect("answered");
    let Delivery::TimedOut(e) = d else {
        panic!("{d:?}")
    };
    assert_eq!(e.status, RunStatus::Failed);
    assert_eq!(e.end_step.as_deref(), Some("timed_out"));
    assert_eq!(host.total_calls(), 0);
    assert!(
        !s.store
            .entries("late")
            .iter()
            .any(|e| matches!(e.event, Event::Delivered { .. }))
    );
    // One millisecond earlier it would have been delivered.
    let s = setup("yes");
    s.run(9000, "early", &host).expect("suspends");
    s.clock.advance(DAY - Duration::from_millis(1));
    let d = s
        .deliver(
            "early",
            "approval",
            "ev-1",
            json!({"approved": false}),
            &host,
        )
        .expect("delivered");
    assert!(matches!(d, Delivery::Resumed(_)), "{d:?}");
}

#[test]
fn due_timeouts_fire_and_others_wait() {
    let s = setup("yes");
    let host = Host::new();
    s.run(9000, "t1", &host).expect("suspends");
    s.clock.advance(Duration::from_secs(3600));
    s.run(9001, "t2", &host).expect("suspends");
    let fire = || block_on(s.rt.fire_timeouts::<cr::Program>(Arc::new(host.clone())));
    assert!(fire().expect("fires").is_empty(), "nothing is due");
    s.clock.advance(DAY - Duration::from_secs(3600));
    let fired = fire().expect("fires");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].run_id, "t1");
    assert_eq!(fired[0].end_step.as_deref(), Some("timed_out"));
    assert!(
        events(&fired[0].trace).contains(&"timed_out:manual_review".to_string()),
        "{:?}",
        events(&fired[0].trace)
    );
    assert!(fire().expect("fires").is_empty(), "fired once");
    s.clock.advance(Duration::from_secs(3600));
    let fired = fire().expect("fires");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].run_id, "t2");
    assert_eq!(host.total_calls(), 0);
    // A timed-out run replays to the same root.
    let e = &fired[0];
    assert_eq!(
        replay::<cr::Program>(&e.trace).expect("replays").root,
        e.root()
    );
}

/// A store whose claims and appends wait until `needed` loads have happened: makes two
/// operations read the same snapshot before either claims or writes.
#[derive(Clone)]
struct Gate {
    inner: MemoryStore,
    loads: Arc<AtomicUsize>,
    needed: usize,
}

struct WaitFor {
    loads: Arc<AtomicUsize>,
    needed: usize,
}

impl Future for WaitFor {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.loads.load(Ordering::SeqCst) >= self.needed {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl JournalStore for Gate {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<nanovm_runtime::store::Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            WaitFor {
                loads: self.loads.clone(),
                needed: self.needed,
            }
            .await;
            self.inner.append(run_id, entries, fence).await
        })
    }
    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(run_id)
    }
    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        self.inner.run(run_id)
    }
    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        self.inner.runs(query)
    }
    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        self.inner.claim(program, worker, now_ms, lease_ms)
    }
    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.inner.renew(lease, now_ms, lease_ms)
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        self.inner.release(lease)
    }
    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(async move {
            WaitFor {
                loads: self.loads.clone(),
                needed: self.needed,
            }
            .await;
            self.inner.claim_run(run_id, worker, now_ms, lease_ms).await
        })
    }
}

/// Runs two futures concurrently on this thread and returns both outputs.
fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    block_on(async { tokio::join!(a, b) })
}

#[test]
fn of_two_racing_deliveries_exactly_one_applies() {
    for same_id in [false, true] {
        let memory = MemoryStore::new();
        let gate = Gate {
            inner: memory.clone(),
            loads: Arc::new(AtomicUsize::new(0)),
            needed: usize::MAX,
        };
        // Suspend the run through the plain store, then race through the gate.
        let (rt, vault, _) = setup_with("yes", memory.clone());
        let input = cr::Input {
            request: "It broke.".into(),
            order_id: "o-5".into(),
            amount_cents: 9000,
            email: vault
                .secret(&"cy@example.com".to_string())
                .expect("a secret"),
        };
        block_on(rt.run::<cr::Program>(
            input,
            Arc::new(Host::new()),
            RunOptions::new().run_id("race"),
        ))
        .expect("suspends");
        let gate = Gate { needed: 2, ..gate };
        let racing = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "yes"))
            .vault(vault.clone())
            .clock(ManualClock::new(START))
            .store(gate.clone())
            .build();
        // The winner's effect takes a while, so the loser comes while the run is leased.
        let host = Host::new();
        host.hook("issue_refund", support::yields(50));
        host.hook("send_rejection", support::yields(50));
        let second_id = if same_id { "ev-a" } else { "ev-b" };
        let (a, b) = both(
            racing.deliver::<cr::Program>(
                "race",
                "approval",
                "ev-a",
                json!({"approved": true}),
                Arc::new(host.clone()),
            ),
            racing.deliver::<cr::Program>(
                "race",
                "approval",
                second_id,
                json!({"approved": false}),
                Arc::new(host.clone()),
            ),
        );
        let (won, lost, loser_id) = match (a, b) {
            (Ok(w), Err(l)) => (w, l, second_id),
            (Err(l), Ok(w)) => (w, l, "ev-a"),
            other => panic!("exactly one delivery must apply: {other:?}"),
        };
        assert!(matches!(won, Delivery::Resumed(_)), "{won:?}");
        // The loser finds the run leased by the winner (or, had the winner's lease lapsed,
        // its own append refused): either way before it has done anything.
        assert!(
            matches!(
                lost,
                DeliverError::Run(
                    RunError::Leased { .. }
                        | RunError::Journal(
                            JournalError::Conflict { .. } | JournalError::Fenced { .. }
                        )
                )
            ),
            "{lost}"
        );
        let delivered = memory
            .entries("race")
            .iter()
            .filter(|e| matches!(e.event, Event::Delivered { .. }))
            .count();
        assert_eq!(delivered, 1);
        assert!(host.calls("issue_refund") <= 1);
        // Retrying the loser: the run is no longer waiting (or the id was delivered).
        let retried = block_on(racing.deliver::<cr::Program>(
            "race",
            "approval",
            loser_id,
            json!({"approved": false}),
            Arc::new(host.clone()),
        ));
        if same_id {
            assert!(matches!(retried, Ok(Delivery::Duplicate(_))), "{retried:?}");
        } else {
            assert!(
                matches!(retried, Err(DeliverError::NotWaiting { .. })),
                "{retried:?}"
            );
        }
        let stored = Trace::from_entries(memory.entries("race")).expect("verifies");
        assert_eq!(
            replay::<cr::Program>(&stored).expect("replays").status,
            RunStatus::Success
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Pending runs

#[test]
fn a_submitted_run_is_pending_until_resumed_and_a_resubmission_changes_nothing() {
    let s = setup("yes");
    let input = s.input(100);
    let id = block_on(s.rt.submit::<cr::Program>(input, Some("sub"))).expect("submits");
    assert_eq!(id, "sub");
    let entries = s.store.entries("sub");
    assert_eq!(entries.len(), 1);
    assert!(matches!(entries[0].event, Event::RunStarted { .. }));
    let record = block_on(s.store.run("sub")).expect("reads").expect("known");
    assert_eq!(record.status, RunStatus::Running);
    // The same request again is acknowledged; another one under the id is refused.
    block_on(s.rt.submit::<cr::Program>(s.input(100), Some("sub"))).expect("acknowledged");
    assert_eq!(s.store.entries("sub").len(), 1);
    let err = block_on(s.rt.submit::<cr::Program>(s.input(7), Some("sub"))).expect_err("in use");
    assert!(matches!(err, RunError::RunIdInUse { .. }), "{err}");
    // A start request for it runs it (it is `running`, nobody holds it).
    let host = Host::new();
    let e = s.run(100, "sub", &host).expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(host.calls("issue_refund"), 1);
    assert_eq!(e.trace.entries()[0], entries[0]);
}

#[test]
fn durable_operations_need_a_store() {
    let rt = Runtime::builder().model(ScriptedModel::new()).build();
    let err = block_on(rt.deliver::<cr::Program>(
        "x",
        "approval",
        "e",
        json!(null),
        Arc::new(Host::new()),
    ))
    .expect_err("no store");
    assert!(
        matches!(err, DeliverError::Run(RunError::NoJournal)),
        "{err}"
    );
    let err =
        block_on(rt.fire_timeouts::<cr::Program>(Arc::new(Host::new()))).expect_err("no store");
    assert!(matches!(err, RunError::NoJournal), "{err}");
}
