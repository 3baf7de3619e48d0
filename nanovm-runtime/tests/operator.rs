//! Operator acts recorded at store level ([`nanovm_runtime::act`]), without the program: a
//! cancellation, an answer to an ambiguous effect, an event delivery. Each is appended under
//! the run's lease; a worker that has the program continues the run from there, and every
//! resulting trace replays.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::store::{JournalStore, RunQuery};
use nanovm_runtime::trace::{Actor, Event, RunStatus, Trace};
use nanovm_runtime::{Act, ActError, Acted, RunOptions, RunView, Worker, act, replay};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{Host, START, Setup, block_on, crash_during, expire_leases, hang, setup};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ops() -> Actor {
    Actor::new("ops@example.com", "ticket 42")
}

impl Setup {
    fn act(&self, run_id: &str, a: Act) -> Result<Acted, ActError> {
        block_on(act(
            &self.store,
            &self.clock,
            run_id,
            a,
            ops(),
            Duration::ZERO,
        ))
    }

    fn suspended(&self, id: &str) {
        let e = block_on(self.rt.run::<cr::Program>(
            self.input(9000),
            Arc::new(Host::new()),
            RunOptions::new().run_id(id),
        ))
        .expect("runs");
        assert_eq!(e.status, RunStatus::Suspended);
    }

    /// Run `id` paused `needs_reconciliation` at `reject` (a crash while `send_rejection` was
    /// in flight, then a resume); returns the ambiguous effect id.
    fn paused(&self, id: &str) -> nanovm_runtime::Digest {
        let crashed = Host::new();
        crashed.hook("send_rejection", hang());
        crash_during(
            self.rt.run::<cr::Program>(
                self.input(100),
                Arc::new(crashed.clone()),
                RunOptions::new().run_id(id),
            ),
            &crashed,
            "send_rejection",
        );
        expire_leases(&self.clock);
        let e = block_on(self.rt.run::<cr::Program>(
            self.input(100),
            Arc::new(Host::new()),
            RunOptions::new().run_id(id),
        ))
        .expect("resumes");
        assert_eq!(e.status, RunStatus::NeedsReconciliation);
        RunView::of(&self.store.entries(id)).to_reconcile()[0]
    }

    fn worker(&self, host: &Host) -> Option<nanovm_runtime::Execution> {
        block_on(
            Worker::new(self.rt.clone(), "w1", 30_000)
                .run_once::<cr::Program>(Arc::new(host.clone())),
        )
        .expect("the worker continues the run")
    }

    fn trace(&self, id: &str) -> Trace {
        Trace::from_entries(self.store.entries(id)).expect("verifies")
    }
}

fn deliver(event_id: &str, payload: serde_json::Value) -> Act {
    Act::Deliver {
        step: "manual_review".into(),
        event: "approval".into(),
        event_id: event_id.into(),
        payload,
        next: "review_policy".into(),
        timeout_next: Some("timed_out".into()),
    }
}

#[test]
fn a_cancelled_suspended_run_is_cancelled_for_good_and_replays() {
    let s = setup("yes");
    s.suspended("wait");
    let acted = s.act("wait", Act::Cancel).expect("cancelled");
    assert!(
        matches!(
            acted,
            Acted::Recorded {
                status: RunStatus::Cancelled,
                ..
            }
        ),
        "{acted:?}"
    );
    let record = block_on(s.store.run("wait")).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(record.lease_owner, None, "the lease is given back");
    assert_eq!(
        record.message.as_deref(),
        Some("cancelled by `ops@example.com`: ticket 42")
    );
    assert!(
        s.worker(&Host::new()).is_none(),
        "nothing left for a worker"
    );
    replay::<cr::Program>(&s.trace("wait")).expect("the cancelled trace replays");
    let host = Host::new();
    let again = block_on(s.rt.run::<cr::Program>(
        s.input(9000),
        Arc::new(host.clone()),
        RunOptions::new().run_id("wait"),
    ))
    .expect("a duplicate start answers the stored outcome");
    assert_eq!(again.status, RunStatus::Cancelled);
    assert_eq!(host.total_calls(), 0);
    assert!(matches!(
        s.act("wait", Act::Cancel),
        Err(ActError::Ended {
            status: RunStatus::Cancelled,
            ..
        })
    ));
}

#[test]
fn a_run_paused_for_reconciliation_or_pending_can_be_cancelled() {
    let s = setup("no");
    s.paused("nr");
    s.act("nr", Act::Cancel).expect("cancelled");
    replay::<cr::Program>(&s.trace("nr")).expect("replays");

    let id = block_on(s.rt.submit::<cr::Program>(s.input(100), Some("pending"))).unwrap();
    s.act(&id, Act::Cancel).expect("a pending run is cancelled");
    let host = Host::new();
    assert!(s.worker(&host).is_none());
    replay::<cr::Program>(&s.trace("pending")).expect("replays");
    assert_eq!(host.total_calls(), 0);
}

#[test]
fn a_delivery_recorded_by_an_operator_is_continued_by_a_worker() {
    let s = setup("yes");
    s.suspended("wait");
    let acted = s
        .act("wait", deliver("ev-1", json!({"approved": true})))
        .unwrap();
    assert!(
        matches!(
            acted,
            Acted::Recorded {
                status: RunStatus::Running,
                ..
            }
        ),
        "{acted:?}"
    );
    // The same event again is a duplicate; the same id with another payload a conflict.
    assert!(matches!(
        s.act("wait", deliver("ev-1", json!({"approved": true}))),
        Ok(Acted::Duplicate)
    ));
    assert!(matches!(
        s.act("wait", deliver("ev-1", json!({"approved": false}))),
        Err(ActError::Conflict { .. })
    ));
    let host = Host::new();
    let e = s.worker(&host).expect("the worker claims the running run");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.end_step.as_deref(), Some("refunded"));
    assert_eq!(host.calls("issue_refund"), 1);
    replay::<cr::Program>(&s.trace("wait")).expect("replays");
    let by = s
        .trace("wait")
        .entries()
        .iter()
        .find_map(|e| match &e.event {
            Event::Delivered { by, .. } => by.clone(),
            _ => None,
        });
    assert_eq!(by, Some(ops()), "the trace says who delivered it");
    // Delivered to a run that is not waiting: refused, nothing written.
    let n = s.store.entries("wait").len();
    assert!(matches!(
        s.act("wait", deliver("ev-2", json!({}))),
        Err(ActError::NotWaiting { .. })
    ));
    assert_eq!(s.store.entries("wait").len(), n);
}

#[test]
fn a_late_delivery_takes_the_timeout_edge() {
    let s = setup("yes");
    s.suspended("late");
    s.clock.advance(DAY + Duration::from_secs(1));
    let acted = s
        .act("late", deliver("ev-1", json!({"approved": true})))
        .unwrap();
    assert!(matches!(acted, Acted::TimedOut { .. }), "{acted:?}");
    let e = s.worker(&Host::new()).expect("continued");
    assert_eq!(e.end_step.as_deref(), Some("timed_out"));
    replay::<cr::Program>(&s.trace("late")).expect("replays");
}

#[test]
fn an_answer_recorded_by_an_operator_is_continued_by_a_worker() {
    let s = setup("no");
    let effect = s.paused("nr");
    assert!(matches!(
        s.act(
            "nr",
            Act::Reconcile {
                effect_id: nanovm_runtime::Digest([7; 32]),
                result: json!(1)
            }
        ),
        Err(ActError::NotAmbiguous { .. })
    ));
    let acted = s
        .act(
            "nr",
            Act::Reconcile {
                effect_id: effect,
                result: json!({"sent": true}),
            },
        )
        .unwrap();
    assert!(matches!(
        acted,
        Acted::Recorded {
            status: RunStatus::Running,
            ..
        }
    ));
    let host = Host::new();
    let e = s.worker(&host).expect("continued");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.end_step.as_deref(), Some("rejected"));
    assert_eq!(
        host.total_calls(),
        0,
        "the effect happened: not called again"
    );
    replay::<cr::Program>(&s.trace("nr")).expect("replays");
    assert!(matches!(
        s.act(
            "nr",
            Act::Reconcile {
                effect_id: effect,
                result: json!(1)
            }
        ),
        Err(ActError::NotNeeded { .. })
    ));
}

#[test]
fn an_act_on_a_run_held_by_a_live_lease_fails_and_writes_nothing() {
    let s = setup("yes");
    s.suspended("held");
    let lease = block_on(s.store.claim_run("held", "other-worker", START, 30_000))
        .unwrap()
        .expect("claimed");
    let n = s.store.entries("held").len();
    match s.act("held", Act::Cancel) {
        Err(ActError::Leased { owner, .. }) => assert_eq!(owner, "other-worker"),
        other => panic!("expected Leased, got {other:?}"),
    }
    assert_eq!(s.store.entries("held").len(), n, "nothing written");
    block_on(s.store.release(&lease)).unwrap();
    s.act("held", Act::Cancel).expect("free again");
    let runs = block_on(s.store.runs(&RunQuery::new().status(RunStatus::Cancelled))).unwrap();
    assert_eq!(runs.len(), 1);
}

/// An operator delivers, then cancels before any worker continued the run: the run is
/// `running` between the two (at the step the event led to), and the cancellation ends it
/// there; the trace replays.
#[test]
fn a_run_delivered_to_but_not_yet_continued_can_be_cancelled() {
    let s = setup("yes");
    s.suspended("dc");
    s.act("dc", deliver("ev-1", json!({"approved": true})))
        .unwrap();
    assert_eq!(
        RunView::of(&s.store.entries("dc")).at(),
        Some("review_policy")
    );
    s.act("dc", Act::Cancel).expect("cancelled");
    assert!(s.worker(&Host::new()).is_none());
    replay::<cr::Program>(&s.trace("dc")).expect("replays");
    let record = block_on(s.store.run("dc")).unwrap().unwrap();
    assert_eq!(record.end_step.as_deref(), Some("review_policy"));
}

/// A stored prefix that ends right before an `end` step's `run_ended` (an `await` whose
/// target is an `end` step, cut off by a crash): a cancellation there replays too.
#[test]
fn a_cancellation_recorded_before_an_end_step_replays() {
    let s = setup("yes");
    s.suspended("te");
    // The await's timeout edge leads straight to the `end` step `timed_out`.
    s.clock.advance(DAY + Duration::from_secs(1));
    let acted = s.act("te", deliver("ev-1", json!({}))).unwrap();
    assert!(matches!(acted, Acted::TimedOut { .. }));
    assert_eq!(RunView::of(&s.store.entries("te")).at(), Some("timed_out"));
    s.act("te", Act::Cancel).expect("cancelled");
    replay::<cr::Program>(&s.trace("te")).expect("replays");
}
