//! Runs outlive deploys: a program's identity is its semantics (not the compiler's release),
//! and a host serves several versions of one program at once.
//!
//! `shop` v1 and v2 (`tests/support/programs/shop_v{1,2}.nvm`) are two texts of one program
//! name, compiled side by side into two modules, as a host that keeps the old build for its
//! runs in flight does.

mod support;

use std::sync::{Arc, OnceLock};

use nanovm_runtime::__private_v0_1::{
    Action, BoxFuture, BranchId, Datum, Fault, Next, Outcome, Program, ProgramInfo, StepId,
};
use nanovm_runtime::store::{JournalStore, MemoryStore, RunQuery};
use nanovm_runtime::testing::ManualClock;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::{
    Delivery, Digest, Json, RunError, RunOptions, Runtime, SEMANTICS_VERSIONS, ToolContext,
    ToolError,
};
use serde_json::json;

use support::{Host, block_on};

#[allow(dead_code, reason = "each version's module is used in part")]
mod v1 {
    include!("support/generated/shop_v1.rs");
}
#[allow(dead_code, reason = "each version's module is used in part")]
mod payment {
    include!("support/generated/pay.rs");
}
#[allow(dead_code, reason = "each version's module is used in part")]
mod v2 {
    include!("support/generated/shop_v2.rs");
}

const START: u64 = 1_700_000_000_000;

macro_rules! shop_tools {
    ($($m:ident),*) => {$(
        impl $m::shop::Tools for Host {
            fn charge(
                &self,
                ctx: &ToolContext,
                order_id: String,
                amount_cents: i64,
            ) -> impl Future<Output = Result<Json, ToolError>> + Send {
                self.call("charge", ctx, json!({"order_id": order_id, "amount_cents": amount_cents}))
            }

            fn ship(
                &self,
                ctx: &ToolContext,
                order_id: String,
            ) -> impl Future<Output = Result<Json, ToolError>> + Send {
                self.call("ship", ctx, json!({"order_id": order_id}))
            }
        }
    )*};
}
shop_tools!(v1, v2);

fn tools1(host: &Host) -> Arc<dyn v1::shop::ToolsDyn> {
    Arc::new(host.clone())
}

fn tools2(host: &Host) -> Arc<dyn v2::shop::ToolsDyn> {
    Arc::new(host.clone())
}

fn input1(order: &str) -> v1::shop::Input {
    v1::shop::Input {
        order_id: order.into(),
        amount_cents: 500,
    }
}

fn input2(order: &str) -> v2::shop::Input {
    v2::shop::Input {
        order_id: order.into(),
        amount_cents: 500,
    }
}

fn runtime(store: &MemoryStore, clock: &ManualClock) -> Runtime {
    Runtime::builder()
        .store(store.clone())
        .clock(clock.clone())
        .backoff(nanovm_runtime::Backoff::none())
        .build()
}

fn opts(run_id: &str) -> RunOptions {
    RunOptions::new().run_id(run_id)
}

// ---------------------------------------------------------------------------------------------
// Item 1: the program's identity is its semantics
// ---------------------------------------------------------------------------------------------

/// `shop` v1 as a compiler of another semantics version would generate it: the same program
/// text, so the same steps and tools, but generated code that behaves differently, hence
/// another semantics version and another hash.
struct ShopNext;

fn next_info() -> &'static ProgramInfo {
    static INFO: OnceLock<ProgramInfo> = OnceLock::new();
    INFO.get_or_init(|| ProgramInfo {
        hash: Digest::of(b"shop under semantics 0.2.0"),
        ..*<v1::shop::Program as Program>::info()
    })
}

type V1 = v1::shop::Program;

impl Program for ShopNext {
    type Input = <V1 as Program>::Input;
    type State = <V1 as Program>::State;
    type Tools = <V1 as Program>::Tools;
    type Call = <V1 as Program>::Call;

    fn info() -> &'static ProgramInfo {
        next_info()
    }
    fn semantics() -> &'static str {
        "0.2.0"
    }
    fn record_input(input: &Self::Input) -> Vec<Datum> {
        V1::record_input(input)
    }
    fn restore(inputs: &[Datum]) -> Result<Self::State, Fault> {
        V1::restore(inputs)
    }
    fn action(step: StepId, state: &Self::State) -> Result<Action<Self::Call>, Fault> {
        V1::action(step, state)
    }
    fn transition(step: StepId, state: &mut Self::State, outcome: Outcome<'_>) -> Next {
        V1::transition(step, state, outcome)
    }
    fn branch_action(
        step: StepId,
        branch: BranchId,
        state: &Self::State,
    ) -> Result<Action<Self::Call>, Fault> {
        V1::branch_action(step, branch, state)
    }
    fn invoke(
        tools: &Arc<Self::Tools>,
        call: Self::Call,
        ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        V1::invoke(tools, call, ctx)
    }
    fn outputs(state: &Self::State) -> Vec<(&'static str, Json)> {
        V1::outputs(state)
    }
}

/// The hash a build pins is the compiler's hash of the source *today* under the semantics
/// version: the generated module carries both, and the runtime executes that version.
#[test]
fn the_pinned_hash_is_the_semantics_hash_of_the_source() {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/programs/shop_v1.nvm"),
    )
    .expect("the source");
    let compiled = nanovm_dsl::compile("shop_v1.nvm", &src);
    assert_eq!(compiled.programs[0].hash, v1::shop::PROGRAM_HASH);
    assert_eq!(
        v1::shop::SEMANTICS_VERSION,
        nanovm_dsl::canonical::SEMANTICS_VERSION
    );
    assert_eq!(<V1 as Program>::semantics(), "0.1.0");
    assert!(SEMANTICS_VERSIONS.contains(&v1::shop::SEMANTICS_VERSION));
}

/// An upgrade that does not change semantics keeps a suspended run resumable: the rebuilt
/// program has the same hash (nothing of the compiler's release is in it), so the run stored
/// before completes after it.
#[test]
fn a_suspended_run_completes_under_a_rebuild_with_the_same_semantics() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let e = block_on(rt.run::<V1>(input1("o-1"), tools1(&host), opts("up-1"))).expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    // "After the upgrade": a new runtime, the program as the compiler generates it today.
    let rt = runtime(&store, &clock);
    let d = block_on(rt.deliver::<V1>("up-1", "approved", "ev-1", json!(true), tools1(&host)))
        .expect("delivered");
    assert!(matches!(&d, Delivery::Resumed(e) if e.status == RunStatus::Success));
    assert_eq!(host.calls("charge"), 1);
}

/// A runtime refuses code generated for a semantics version it does not execute, before
/// anything is recorded, and says so; a stored run is not touched by such a build.
#[test]
fn a_program_of_another_semantics_version_is_refused_and_says_so() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let err = block_on(rt.run::<ShopNext>(input1("o-2"), tools1(&host), opts("next-1")))
        .expect_err("refused");
    assert!(
        matches!(err, RunError::UnsupportedSemantics { found: "0.2.0", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("semantics version 0.2.0") && msg.contains("semantics version 0.1.0"),
        "{msg}"
    );
    assert!(block_on(store.load("next-1")).expect("loads").is_none());
    let err = block_on(rt.submit::<ShopNext>(input1("o-2"), Some("next-2"))).expect_err("refused");
    assert!(err.to_string().contains("semantics version"), "{err}");

    // A run stored under v1 is refused by the build of another semantics version, and by a
    // build of another text, and both messages say why.
    let e = block_on(rt.run::<V1>(input1("o-3"), tools1(&host), opts("stored-1"))).expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    let err = block_on(rt.deliver::<ShopNext>(
        "stored-1",
        "approved",
        "ev-1",
        json!(true),
        tools1(&host),
    ))
    .expect_err("refused");
    assert!(err.to_string().contains("semantics version 0.2.0"), "{err}");
    let err = block_on(rt.deliver::<v2::shop::Program>(
        "stored-1",
        "approved",
        "ev-1",
        json!(true),
        tools2(&host),
    ))
    .expect_err("refused");
    assert!(err.to_string().contains("semantics version"), "{err}");
    let record = block_on(store.run("stored-1"))
        .expect("reads")
        .expect("stored");
    assert_eq!(record.status, RunStatus::Suspended);
    assert_eq!(host.calls("ship"), 0);
    let runs = block_on(store.runs(&RunQuery::new())).expect("lists");
    assert_eq!(runs.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Item 2: several versions at once
// ---------------------------------------------------------------------------------------------

type V2 = v2::shop::Program;

/// The attack: a pending run of v1 on a store whose only worker has v2. Before versions, the
/// worker claimed it, refused it (`ProgramMismatch`), gave it back, and claimed it again at
/// its next poll, forever, bumping the run's epoch each time. Now the worker does not claim a
/// run of a build it does not have: nothing to do, the run untouched.
#[test]
fn a_worker_does_not_claim_runs_of_a_version_it_lacks_in_a_loop() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let id = block_on(rt.submit::<V1>(input1("o-9"), Some("old-1"))).expect("submitted");
    let worker = nanovm_runtime::Worker::new(rt.clone(), "w-v2", 30_000);
    for _ in 0..3 {
        let polled = block_on(worker.run_once::<V2>(tools2(&host)));
        assert!(
            matches!(polled, Ok(None)),
            "a v2 worker must leave the v1 run alone: {polled:?}"
        );
    }
    let record = block_on(store.run(&id)).expect("reads").expect("stored");
    assert_eq!(record.epoch, 0, "never claimed");
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(host.total_calls(), 0);
}

/// The host's deploy: v1 serves a run that suspends; the host adds v2 (v1 still registered);
/// the v1 run completes under v1 (its trace replays under v1 only), a new run starts on v2.
/// Then v1 is removed: a v1 run left suspended is reported, and not claimed by the worker.
#[test]
fn runs_are_routed_to_the_version_they_started_with() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let worker = nanovm_runtime::Worker::new(rt.clone(), "w-1", 30_000);

    // Before the deploy: only v1.
    let before = nanovm_runtime::Versions::new().add::<V1>(tools1(&host));
    block_on(rt.submit::<V1>(input1("o-1"), Some("run-v1"))).expect("submitted");
    let e = block_on(worker.run_once_any(&before))
        .expect("works")
        .expect("a run");
    assert_eq!(
        (e.run_id.as_str(), e.status),
        ("run-v1", RunStatus::Suspended)
    );

    // The deploy: v2 is added, v1 stays.
    let after = before.clone().add::<V2>(tools2(&host));
    assert_eq!(
        after.hashes("shop"),
        vec![v1::shop::PROGRAM_HASH, v2::shop::PROGRAM_HASH]
            .into_iter()
            .map(Digest)
            .collect::<Vec<_>>()
    );
    assert_eq!(after.newest("shop"), Some(Digest(v2::shop::PROGRAM_HASH)));
    // New runs take the newest: the host starts them with v2's types.
    let id2 = block_on(rt.submit::<V2>(input2("o-2"), Some("run-v2"))).expect("submitted");
    let e = block_on(worker.run_once_any(&after))
        .expect("works")
        .expect("a run");
    assert_eq!(
        (e.run_id.as_str(), e.status),
        (id2.as_str(), RunStatus::Suspended)
    );
    // The v1 run's approval arrives: routed to v1, it completes.
    let d = block_on(after.deliver(&rt, "run-v1", "approved", "ev-1", json!(true), None))
        .expect("delivered");
    let done = d.into_execution();
    assert_eq!(done.status, RunStatus::Success);
    assert!(nanovm_runtime::replay::<V1>(&done.trace).is_ok());
    assert!(matches!(
        nanovm_runtime::replay::<V2>(&done.trace),
        Err(RunError::ProgramMismatch { .. })
    ));
    // The v2 run: its shipment fails once and v2 retries it (v1 would not have).
    host.respond("ship", Err(ToolError::transient("carrier down")));
    let d = block_on(after.deliver(&rt, "run-v2", "approved", "ev-2", json!(true), None))
        .expect("delivered");
    assert_eq!(d.execution().status, RunStatus::Success);
    assert_eq!(host.calls("ship"), 3);
    assert!(block_on(after.unserved(&store)).expect("lists").is_empty());

    // A v1 run suspended, then v1 removed: reported, never claimed, operations refused.
    block_on(rt.submit::<V1>(input1("o-3"), Some("run-v1b"))).expect("submitted");
    let e = block_on(worker.run_once_any(&after))
        .expect("works")
        .expect("a run");
    assert_eq!(
        (e.run_id.as_str(), e.status),
        ("run-v1b", RunStatus::Suspended)
    );
    block_on(rt.submit::<V1>(input1("o-4"), Some("run-v1c"))).expect("submitted");
    let only_v2 = after.remove(Digest(v1::shop::PROGRAM_HASH));
    for _ in 0..3 {
        assert!(
            block_on(worker.run_once_any(&only_v2))
                .expect("works")
                .is_none()
        );
    }
    let pending = block_on(store.run("run-v1c"))
        .expect("reads")
        .expect("stored");
    assert_eq!((pending.epoch, pending.status), (0, RunStatus::Running));
    let unserved: Vec<String> = block_on(only_v2.unserved(&store))
        .expect("lists")
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(unserved, vec!["run-v1b".to_string(), "run-v1c".to_string()]);
    let err = block_on(only_v2.deliver(&rt, "run-v1b", "approved", "ev-3", json!(true), None))
        .expect_err("unregistered");
    assert!(err.to_string().contains("not registered"), "{err}");
    assert_eq!(host.calls("charge"), 3);
}

// ---------------------------------------------------------------------------------------------
// Item 4: redrive
// ---------------------------------------------------------------------------------------------

use nanovm_runtime::trace::{Actor, BudgetKind, Event, Trace};
use nanovm_runtime::{RedriveOptions, Resolution, Worker};

fn ops() -> RedriveOptions {
    RedriveOptions::new(Actor::new("ops@example.com", "carrier fixed, INC-42"))
}

/// The shop run charges, is approved, and its shipment fails (v1 has no retry): `failed` at
/// `send`. Returns the store, the runtime, the host.
fn failed_at_send(run_id: &str) -> (MemoryStore, Runtime, Host) {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let e = block_on(rt.run::<V1>(input1("o-7"), tools1(&host), opts(run_id))).expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    host.respond(
        "ship",
        Err(ToolError::permanent("carrier rejected the label")),
    );
    let d = block_on(rt.deliver::<V1>(run_id, "approved", "ev-1", json!(true), tools1(&host)))
        .expect("delivered");
    assert_eq!(d.execution().status, RunStatus::Failed);
    assert_eq!(d.execution().end_step.as_deref(), Some("send"));
    (store, rt, host)
}

/// A redrive continues a failed run at the step where it stopped: the payment made before is
/// not made again (the host's ledger has one charge), the shipment is retried with the same
/// effect id, the `redriven` event (who, why) is in the chain, and replay reproduces the whole
/// trace. A completed run is not redriven.
#[test]
fn a_redriven_failed_run_continues_without_paying_twice() {
    let (store, rt, host) = failed_at_send("rd-1");
    let e = block_on(rt.redrive::<V1>("rd-1", ops(), tools1(&host))).expect("redriven");
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(host.calls("charge"), 1, "the payment is never made again");
    let ships: Vec<_> = host
        .records()
        .into_iter()
        .filter(|c| c.tool == "ship")
        .collect();
    assert_eq!(ships.len(), 2);
    assert_eq!(ships[0].key, ships[1].key, "the effect id is stable");
    let kinds: Vec<&str> = e.trace.entries().iter().map(|x| x.event.kind()).collect();
    let at = kinds
        .iter()
        .position(|k| *k == "redriven")
        .expect("recorded");
    assert_eq!(kinds[at - 1], "run_ended");
    assert!(matches!(
        &e.trace.entries()[at].event,
        Event::Redriven { step, by, extend } if step == "send" && by.id == "ops@example.com" && extend.is_empty()
    ));
    let stored =
        Trace::from_entries(block_on(store.load("rd-1")).unwrap().unwrap()).expect("verifies");
    assert_eq!(stored.root(), e.trace.root());
    let report = nanovm_runtime::replay::<V1>(&stored).expect("replays");
    assert_eq!(report.root, stored.root());
    assert_eq!(report.status, RunStatus::Success);
    // Exported and verified like any trace (the `redriven` line is canonical JSON).
    let jsonl = stored.to_jsonl();
    assert!(jsonl.contains(r#""type":"redriven""#), "{jsonl}");
    assert_eq!(
        nanovm_runtime::trace::verify_jsonl(&jsonl).expect("verifies"),
        (stored.len(), stored.root())
    );
    assert!(nanovm_runtime::trace::completeness(stored.entries()).is_ok());
    // A completed run is refused, and nothing is recorded.
    let err = block_on(rt.redrive::<V1>("rd-1", ops(), tools1(&host))).expect_err("refused");
    assert!(
        matches!(
            err,
            RunError::NotRedrivable {
                status: RunStatus::Success,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        block_on(store.load("rd-1")).unwrap().unwrap().len(),
        stored.len()
    );
}

/// What `nanovm redrive` does without the program: records the redrive under the run's lease
/// and makes it claimable; a worker with the program continues it.
#[test]
fn a_requested_redrive_is_continued_by_a_worker() {
    let (store, rt, host) = failed_at_send("rd-2");
    block_on(rt.request_redrive("rd-2", ops())).expect("recorded");
    let r = block_on(store.run("rd-2")).unwrap().unwrap();
    assert_eq!(
        (r.status, r.lease_owner.as_deref()),
        (RunStatus::Running, None)
    );
    let worker = Worker::new(rt.clone(), "w-1", 30_000);
    let e = block_on(worker.run_once::<V1>(tools1(&host)))
        .expect("works")
        .expect("the run");
    assert_eq!((e.run_id.as_str(), e.status), ("rd-2", RunStatus::Success));
    assert_eq!(host.calls("charge"), 1);
    assert!(nanovm_runtime::replay::<V1>(&e.trace).is_ok());
}

/// The duration budget runs out while a non-idempotent effect is in flight: `budget_exceeded`
/// with the effect's outcome unknown. Redriven with more time, the run does not call the
/// effect again (it may have happened): it pauses for reconciliation, and continues with the
/// operator's answer. Replay reproduces it.
#[test]
fn a_redriven_ambiguous_effect_goes_to_reconciliation() {
    let store = MemoryStore::new();
    let (rt, vault, clock) = support::setup_with("no", store.clone());
    let s = support::Setup {
        rt,
        store: store.clone(),
        vault,
        clock: clock.clone(),
    };
    let host = Host::new();
    let c = clock.clone();
    // The first call never answers and outlasts the duration budget; a second one (the bug
    // this test is about) would answer at once.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    host.hook(
        "send_rejection",
        Arc::new(move |_| {
            let c = c.clone();
            let first = first.swap(false, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if first {
                    c.advance(std::time::Duration::from_secs(31));
                    std::future::pending::<()>().await;
                }
            })
        }),
    );
    let tools: Arc<dyn support::customer_refund::ToolsDyn> = Arc::new(host.clone());
    let e = block_on(s.rt.run::<support::customer_refund::Program>(
        s.input(9000),
        tools.clone(),
        opts("rd-3"),
    ))
    .expect("runs");
    assert_eq!(
        (e.status, e.end_step.as_deref()),
        (RunStatus::BudgetExceeded, Some("reject"))
    );
    assert_eq!(host.calls("send_rejection"), 1);
    let redriven = block_on(s.rt.redrive::<support::customer_refund::Program>(
        "rd-3",
        ops().extend(BudgetKind::MaxDuration, 60_000),
        tools.clone(),
    ))
    .expect("redriven");
    assert_eq!(
        redriven.status,
        RunStatus::NeedsReconciliation,
        "{:?}",
        redriven.message
    );
    assert_eq!(host.calls("send_rejection"), 1, "not called again");
    let view = nanovm_runtime::RunView::of(redriven.trace.entries());
    let [effect] = view.to_reconcile()[..] else {
        panic!("one effect to reconcile: {:?}", view.to_reconcile())
    };
    let done = block_on(s.rt.reconcile::<support::customer_refund::Program>(
        "rd-3",
        effect,
        Resolution::Done(json!({"sent": true})),
        tools,
    ))
    .expect("reconciled");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(host.calls("send_rejection"), 1);
    let report =
        nanovm_runtime::replay::<support::customer_refund::Program>(&done.trace).expect("replays");
    assert_eq!(report.root, done.trace.root());
}

// ---------------------------------------------------------------------------------------------
// Item 5: fork
// ---------------------------------------------------------------------------------------------

/// A fork copies the prefix verbatim (its root at the fork point is the original's, and its
/// `forked` entry chains onto it), re-runs none of the prefix's effects, makes its own effects
/// under its own ids, replays by itself, and leaves the original alone.
#[test]
fn a_fork_shares_the_prefix_root_and_reruns_no_effect() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    let orig = block_on(rt.run::<V1>(input1("o-8"), tools1(&host), opts("orig"))).expect("runs");
    assert_eq!(orig.status, RunStatus::Suspended);
    let kinds: Vec<&str> = orig
        .trace
        .entries()
        .iter()
        .map(|e| e.event.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "decision",
            "tool_intent",
            "tool_result",
            "suspended"
        ]
    );
    let at = 4u64;

    let fork = block_on(rt.fork::<V1>("orig", at, "fork-1", tools1(&host))).expect("forked");
    assert_eq!(
        (fork.run_id.as_str(), fork.status),
        ("fork-1", RunStatus::Suspended)
    );
    let (o, f) = (orig.trace.entries(), fork.trace.entries());
    assert_eq!(
        &f[..=4],
        &o[..=4],
        "the prefix is the original's, byte for byte"
    );
    assert_eq!(
        f[4].hash, o[4].hash,
        "the fork's prefix root is the original's root at entry 4"
    );
    assert_eq!(f[5].prev, o[4].hash);
    assert!(matches!(
        &f[5].event,
        Event::Forked { run_id, from, at_entry: 4, at_hash } if run_id == "fork-1" && from == "orig" && *at_hash == o[4].hash
    ));
    assert_eq!(
        host.calls("charge"),
        1,
        "the prefix's payment is not made again"
    );

    // Both go on, each with its own answer; the fork's shipment has its own effect id.
    let d = block_on(rt.deliver::<V1>(
        "fork-1",
        "approved",
        "ev-f",
        json!("what if"),
        tools1(&host),
    ))
    .expect("delivered");
    assert_eq!(d.execution().status, RunStatus::Success);
    let d = block_on(rt.deliver::<V1>("orig", "approved", "ev-o", json!(true), tools1(&host)))
        .expect("delivered");
    assert_eq!(d.execution().status, RunStatus::Success);
    let ships: Vec<_> = host
        .records()
        .into_iter()
        .filter(|c| c.tool == "ship")
        .collect();
    assert_eq!(ships.len(), 2);
    assert_ne!(ships[0].key, ships[1].key, "the fork's effects are its own");
    assert_eq!(host.calls("charge"), 1);
    // The fork replays by itself, to the same root; the original's trace is untouched.
    let stored =
        Trace::from_entries(block_on(store.load("fork-1")).unwrap().unwrap()).expect("verifies");
    let report = nanovm_runtime::replay::<V1>(&stored).expect("replays");
    assert_eq!(
        (report.root, report.run_id.as_str()),
        (stored.root(), "fork-1")
    );
    let jsonl = stored.to_jsonl();
    assert_eq!(
        nanovm_runtime::trace::verify_jsonl(&jsonl).expect("verifies"),
        (stored.len(), stored.root())
    );
    assert!(nanovm_runtime::trace::completeness(stored.entries()).is_ok());
    let original = block_on(store.load("orig")).unwrap().unwrap();
    assert_eq!(&original[..=4], &o[..=4]);
    assert!(
        original
            .iter()
            .all(|e| !matches!(e.event, Event::Forked { .. }))
    );
}

/// What-if with another answer: the same request forked before the model's answer, under a
/// runtime whose model answers otherwise, takes the other path; the original's effect is not
/// repeated.
#[test]
fn a_fork_takes_another_answer() {
    let store = MemoryStore::new();
    let (yes, vault, clock) = support::setup_with("yes", store.clone());
    let s = support::Setup {
        rt: yes,
        store: store.clone(),
        vault: vault.clone(),
        clock: clock.clone(),
    };
    let host = Host::new();
    let tools: Arc<dyn support::customer_refund::ToolsDyn> = Arc::new(host.clone());
    type Cr = support::customer_refund::Program;
    let orig =
        block_on(s.rt.run::<Cr>(s.input(1200), tools.clone(), opts("cr-orig"))).expect("runs");
    assert_eq!(orig.end_step.as_deref(), Some("refunded"));
    let no = Runtime::builder()
        .model(nanovm_runtime::testing::ScriptedModel::new().always("analyze", "no"))
        .vault(vault)
        .store(store.clone())
        .clock(clock)
        .build();
    let fork = block_on(no.fork::<Cr>("cr-orig", 0, "cr-what-if", tools)).expect("forked");
    assert_eq!(
        (fork.status, fork.end_step.as_deref()),
        (RunStatus::Success, Some("rejected"))
    );
    assert_eq!(fork.trace.entries()[0], orig.trace.entries()[0]);
    assert_eq!(
        (host.calls("issue_refund"), host.calls("send_rejection")),
        (1, 1)
    );
    assert!(nanovm_runtime::replay::<Cr>(&fork.trace).is_ok());
}

/// A fork that would leave an effect without an outcome, past the end, or onto a run id in
/// use is refused, and nothing is recorded.
#[test]
fn bad_forks_are_refused() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = runtime(&store, &clock);
    block_on(rt.run::<V1>(input1("o-9"), tools1(&host), opts("base"))).expect("runs");
    let err = block_on(rt.fork::<V1>("base", 2, "f-open", tools1(&host))).expect_err("open");
    assert!(
        matches!(err, RunError::NotForkable { .. }) && err.to_string().contains("charge"),
        "{err}"
    );
    let err = block_on(rt.fork::<V1>("base", 5, "f-far", tools1(&host))).expect_err("past the end");
    assert!(matches!(err, RunError::NotForkable { .. }), "{err}");
    let err = block_on(rt.fork::<V1>("base", 1, "base", tools1(&host))).expect_err("in use");
    assert!(matches!(err, RunError::RunIdInUse { .. }), "{err}");
    let err = block_on(rt.fork::<V2>("base", 1, "f-v2", tools2(&host))).expect_err("other build");
    assert!(matches!(err, RunError::ProgramMismatch { .. }), "{err}");
    let ids: Vec<String> = block_on(store.runs(&RunQuery::new()))
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, vec!["base".to_string()]);
    assert_eq!(host.calls("charge"), 1);
}

/// A run that ran out of steps is redriven: without more steps it trips again at once (a new
/// `budget_exceeded`, nothing executed); with `steps` extended it goes on and ends.
#[test]
fn a_budget_exceeded_run_continues_with_more_steps() {
    use support::{Small, small_steps5};
    type S5 = small_steps5::Program;
    let store = MemoryStore::new();
    let host = Host::new();
    host.fallback("fetch", json!({"status": "later"}));
    let rt = Runtime::builder()
        .model(nanovm_runtime::testing::ScriptedModel::new().always("classify", "a"))
        .store(store.clone())
        .clock(ManualClock::new(START))
        .backoff(nanovm_runtime::Backoff::none())
        .build();
    let e = block_on(rt.run::<S5>(S5::input("pricing"), S5::tools(&host), opts("steps-1")))
        .expect("runs");
    assert_eq!(e.status, RunStatus::BudgetExceeded);
    let calls = host.total_calls();
    let again = block_on(rt.redrive::<S5>("steps-1", ops(), S5::tools(&host))).expect("redriven");
    assert_eq!(again.status, RunStatus::BudgetExceeded);
    assert_eq!(host.total_calls(), calls, "no step ran");
    let trips = again
        .trace
        .entries()
        .iter()
        .filter(|x| {
            matches!(
                x.event,
                Event::BudgetExceeded {
                    budget: BudgetKind::MaxSteps,
                    ..
                }
            )
        })
        .count();
    assert_eq!(trips, 2);
    host.fallback("fetch", json!({"status": "ok", "priority": "low"}));
    let done = block_on(rt.redrive::<S5>(
        "steps-1",
        ops().extend(BudgetKind::MaxSteps, 10),
        S5::tools(&host),
    ))
    .expect("redriven");
    assert_eq!(
        (done.status, done.end_step.as_deref()),
        (RunStatus::Success, Some("done"))
    );
    let report = nanovm_runtime::replay::<S5>(&done.trace).expect("replays");
    assert_eq!(report.root, done.trace.root());
}

/// Redrive and fork on the SQLite store: what a SQL store keeps of them loads, verifies and
/// replays.
#[test]
fn redrive_and_fork_on_sqlite() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = block_on(nanovm_runtime::store::SqliteStore::open(
        dir.path().join("r.db"),
    ))
    .expect("opens");
    let clock = ManualClock::new(START);
    let host = Host::new();
    let rt = Runtime::builder()
        .store(store.clone())
        .clock(clock)
        .backoff(nanovm_runtime::Backoff::none())
        .build();
    block_on(rt.run::<V1>(input1("o-s"), tools1(&host), opts("sq-1"))).expect("runs");
    let fork = block_on(rt.fork::<V1>("sq-1", 4, "sq-fork", tools1(&host))).expect("forked");
    assert_eq!(fork.status, RunStatus::Suspended);
    host.respond("ship", Err(ToolError::permanent("no label")));
    let d = block_on(rt.deliver::<V1>("sq-fork", "approved", "e", json!(1), tools1(&host)))
        .expect("delivered");
    assert_eq!(d.execution().status, RunStatus::Failed);
    let e = block_on(rt.redrive::<V1>("sq-fork", ops(), tools1(&host))).expect("redriven");
    assert_eq!(e.status, RunStatus::Success);
    let loaded = block_on(store.load("sq-fork")).unwrap().unwrap();
    let trace = Trace::from_entries(loaded).expect("verifies");
    assert_eq!(trace.root(), e.trace.root());
    assert!(nanovm_runtime::replay::<V1>(&trace).is_ok());
    let r = block_on(store.run("sq-fork")).unwrap().unwrap();
    assert_eq!(
        (r.status, r.program_hash),
        (RunStatus::Success, Digest(v1::shop::PROGRAM_HASH))
    );
    assert_eq!(host.calls("charge"), 1);
}

impl payment::pay::Tools for Host {
    fn charge(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("charge", ctx, json!({"order_id": order_id}))
    }
}

/// The attack: the provider charged the card but answered in a shape the program cannot use,
/// so the run failed at `pay` after the money moved. A redrive must not charge again (the
/// ledger has one charge): the effect's recorded result answers it, and the run stops where
/// it did (only a program change, not a redrive, makes that answer usable).
#[test]
fn a_redrive_never_repeats_an_effect_that_succeeded() {
    type Pay = payment::pay::Program;
    let store = MemoryStore::new();
    let host = Host::new();
    host.fallback("charge", json!("charged, receipt to follow"));
    let rt = runtime(&store, &ManualClock::new(START));
    let tools: Arc<dyn payment::pay::ToolsDyn> = Arc::new(host.clone());
    let input = payment::pay::Input {
        order_id: "o-1".into(),
    };
    let e = block_on(rt.run::<Pay>(input, tools.clone(), opts("pay-1"))).expect("runs");
    assert_eq!(
        (e.status, e.end_step.as_deref()),
        (RunStatus::Failed, Some("pay"))
    );
    assert_eq!(host.calls("charge"), 1);
    let again = block_on(rt.redrive::<Pay>("pay-1", ops(), tools)).expect("redriven");
    assert_eq!(host.calls("charge"), 1, "the card is never charged twice");
    assert_eq!(again.status, RunStatus::Failed);
    assert!(nanovm_runtime::replay::<Pay>(&again.trace).is_ok());
}
