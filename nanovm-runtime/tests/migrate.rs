//! Migration of a waiting run to another version of its program (`migrate_run`, what `nanovm
//! migrate` writes): the run continues under the new program, and its trace replays under
//! both hashes where it should (the part before the migration under the old one, the whole
//! under the new one).

use std::sync::{Arc, Mutex};

use nanovm_runtime::store::{JournalStore, MemoryStore};
use nanovm_runtime::testing::ManualClock;
use nanovm_runtime::trace::{Actor, Carried, CarriedValue, Event, RunStatus};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{
    Delivery, Json, MigrateError, Migration, RunOptions, RunView, Runtime, ToolContext, ToolError,
    Versions, migrate_run, replay,
};
use serde_json::json;

#[allow(dead_code, reason = "the tests use part of the generated code")]
mod v1 {
    include!("support/generated/approval_v1.rs");
}
#[allow(dead_code, reason = "the tests use part of the generated code")]
mod v2 {
    include!("support/generated/approval_v2.rs");
}
use v1::approval_flow as old;
use v2::approval_flow as new;

const START: u64 = 1_700_000_000_000;

/// Every payment made: (amount, currency, idempotency key).
#[derive(Default)]
struct Ledger(Mutex<Vec<(i64, String, String)>>);

impl old::Tools for Ledger {
    async fn pay(&self, ctx: &ToolContext, amount_cents: i64) -> Result<Json, ToolError> {
        self.0
            .lock()
            .unwrap()
            .push((amount_cents, "?".into(), ctx.idempotency_key.to_hex()));
        Ok(json!({"paid": amount_cents}))
    }
    async fn notify(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({}))
    }
}

impl new::Tools for Ledger {
    async fn pay(
        &self,
        ctx: &ToolContext,
        amount_cents: i64,
        currency: String,
    ) -> Result<Json, ToolError> {
        self.0
            .lock()
            .unwrap()
            .push((amount_cents, currency, ctx.idempotency_key.to_hex()));
        Ok(json!({"paid": amount_cents}))
    }
    async fn notify(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({}))
    }
}

fn runtime(store: &MemoryStore) -> Runtime {
    Runtime::builder()
        .vault(Arc::new(MemoryVault::seeded(3)))
        .clock(ManualClock::new(START))
        .store(store.clone())
        .build()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn hash_of<P: nanovm_runtime::__private_v0_1::Program>() -> nanovm_runtime::Digest {
    nanovm_runtime::Digest(P::info().hash.0)
}

/// A run of v1 suspended at `review`.
fn suspended_under_v1(store: &MemoryStore, ledger: &Arc<Ledger>) -> Runtime {
    let rt = runtime(store);
    let e = block_on(rt.run::<old::Program>(
        old::Input {
            request: "refund".into(),
            amount_cents: 700,
        },
        ledger.clone(),
        RunOptions::new().run_id("r1"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
    rt
}

fn migration() -> Migration {
    Migration::new(
        "r1",
        hash_of::<old::Program>(),
        hash_of::<new::Program>(),
        "review",
        Vec::new(),
        Actor::new("ops@example.com", "deploy 2: second confirmation"),
    )
}

#[test]
fn a_run_suspended_under_v1_is_refused_by_v2_until_it_is_migrated_then_completes_under_v2() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let rt = suspended_under_v1(&store, &ledger);
    // Before: v2 may not continue a run pinned to v1.
    let refused = block_on(rt.deliver::<new::Program>(
        "r1",
        "approval",
        "ev-1",
        json!({"approved": true}),
        ledger.clone(),
    ));
    assert!(
        format!("{refused:?}").contains("ProgramMismatch"),
        "{refused:?}"
    );
    // The migration: two entries, chained, the record still suspended.
    let appended = block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap();
    assert!(matches!(appended[0].event, Event::Migrated { .. }));
    assert!(matches!(appended[1].event, Event::Suspended { .. }));
    let stored = block_on(store.load("r1")).unwrap().unwrap();
    let view = RunView::of(&stored);
    assert_eq!(view.status(), RunStatus::Suspended);
    assert_eq!(view.program_hash(), Some(hash_of::<new::Program>()));
    // v1 may no longer continue it.
    let stale = block_on(rt.deliver::<old::Program>(
        "r1",
        "approval",
        "ev-1",
        json!({"approved": true}),
        ledger.clone(),
    ));
    assert!(
        format!("{stale:?}").contains("ProgramMismatch"),
        "{stale:?}"
    );
    // v2 continues it: approval, then v2's new confirmation, then the payment in EUR.
    let d = block_on(rt.deliver::<new::Program>(
        "r1",
        "approval",
        "ev-1",
        json!({"approved": true}),
        ledger.clone(),
    ))
    .unwrap();
    let Delivery::Resumed(e) = d else {
        panic!("{d:?}")
    };
    assert_eq!(e.status, RunStatus::Suspended);
    assert_eq!(e.end_step.as_deref(), Some("confirm"));
    let d = block_on(rt.deliver::<new::Program>(
        "r1",
        "confirmation",
        "ev-2",
        json!({"ok": true}),
        ledger.clone(),
    ))
    .unwrap();
    let Delivery::Resumed(done) = d else {
        panic!("{d:?}")
    };
    assert_eq!(done.status, RunStatus::Success, "{:?}", done.message);
    assert_eq!(done.end_step.as_deref(), Some("paid"));
    let paid = ledger.0.lock().unwrap().clone();
    assert_eq!(paid.len(), 1);
    assert_eq!((paid[0].0, paid[0].1.as_str()), (700, "EUR"));
    // The usage goes on from the part before the wait, and the wait is counted once (v2
    // re-enters `review` in place of v1's entry): review, confirm, check, pay_out, as a run
    // that had started under v2.
    assert_eq!(done.usage.steps, 4);

    // Replays: the whole trace under v2 reproduces its root; under v1, the part before the
    // migration replays to where v1 left it (suspended at `review`).
    let stored = block_on(store.load("r1")).unwrap().unwrap();
    let trace = nanovm_runtime::trace::Trace::from_entries(stored.clone()).unwrap();
    let under_v2 = replay::<new::Program>(&trace).unwrap();
    assert_eq!(under_v2.status, RunStatus::Success);
    assert_eq!(under_v2.root, trace.root());
    let migrated_at = stored
        .iter()
        .position(|e| matches!(e.event, Event::Migrated { .. }))
        .unwrap();
    let under_v1 = replay::<old::Program>(&trace).unwrap();
    assert_eq!(under_v1.status, RunStatus::Suspended);
    assert_eq!(under_v1.entries, migrated_at);
    assert_eq!(under_v1.root, stored[migrated_at - 1].hash);
}

#[test]
fn a_migrated_trace_with_an_edited_prefix_does_not_replay() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let rt = suspended_under_v1(&store, &ledger);
    block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap();
    block_on(rt.deliver::<new::Program>(
        "r1",
        "approval",
        "ev-1",
        json!({"approved": false}),
        ledger.clone(),
    ))
    .unwrap();
    let mut entries = block_on(store.load("r1")).unwrap().unwrap();
    // Another target program in the migration: the chain no longer holds.
    if let Event::Migrated { to, .. } = &mut entries[2].event {
        *to = hash_of::<old::Program>();
    }
    let trace = nanovm_runtime::trace::Trace::from_entries(entries);
    assert!(trace.is_err(), "an edited entry breaks the chain");
}

#[test]
fn only_a_run_waiting_where_the_migration_says_and_pinned_to_its_from_is_migrated() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let _rt = suspended_under_v1(&store, &ledger);
    let mut wrong_step = migration();
    wrong_step.step = "confirm".into();
    let e = block_on(migrate_run(&store, &wrong_step, START, 30_000)).unwrap_err();
    assert!(matches!(e, MigrateError::NotWaiting { .. }), "{e}");
    let mut wrong_from = migration();
    wrong_from.from = hash_of::<new::Program>();
    let e = block_on(migrate_run(&store, &wrong_from, START, 30_000)).unwrap_err();
    assert!(matches!(e, MigrateError::Pinned { .. }), "{e}");
    // Once migrated, the same migration is refused (the run is pinned to v2 now).
    block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap();
    let e = block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap_err();
    assert!(matches!(e, MigrateError::Pinned { .. }), "{e}");
    // Nothing was appended by the refusals: run_started, suspended, migrated, suspended.
    assert_eq!(block_on(store.load("r1")).unwrap().unwrap().len(), 4);
}

/// A run of v2 past `review` (its `verdict` assigned), suspended at `confirm`, migrated (to the
/// same program here: the state is rebuilt from the inputs and what the migration carries).
fn at_confirm_migrated(carried: Vec<Carried>) -> (MemoryStore, Runtime, Arc<Ledger>) {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let rt = runtime(&store);
    let e = block_on(rt.run::<new::Program>(
        new::Input {
            request: "refund".into(),
            amount_cents: 300,
        },
        ledger.clone(),
        RunOptions::new().run_id("r2"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
    block_on(rt.deliver::<new::Program>(
        "r2",
        "approval",
        "ev-1",
        json!({"approved": true}),
        ledger.clone(),
    ))
    .unwrap();
    let v2 = hash_of::<new::Program>();
    let m = Migration::new(
        "r2",
        v2,
        v2,
        "confirm",
        carried,
        Actor::new("ops", "rebuild"),
    );
    block_on(migrate_run(&store, &m, START, 30_000)).unwrap();
    (store, rt, ledger)
}

#[test]
fn the_carried_variables_are_what_the_continuation_reads() {
    let verdict = Carried::new(
        "verdict",
        "review",
        None,
        CarriedValue::Event(json!({"approved": true})),
    );
    let (_store, rt, ledger) = at_confirm_migrated(vec![verdict]);
    let d = block_on(rt.deliver::<new::Program>(
        "r2",
        "confirmation",
        "ev-2",
        json!({"ok": true}),
        ledger.clone(),
    ))
    .unwrap();
    let done = d.execution();
    assert_eq!(done.status, RunStatus::Success, "{:?}", done.message);
    assert_eq!(done.end_step.as_deref(), Some("paid"));
    assert_eq!(ledger.0.lock().unwrap().len(), 1);

    // Without `verdict`, the guard that reads it has nothing to read: the run fails there
    // instead of deciding on a default.
    let (_store, rt, ledger) = at_confirm_migrated(Vec::new());
    let d = block_on(rt.deliver::<new::Program>(
        "r2",
        "confirmation",
        "ev-2",
        json!({"ok": true}),
        ledger.clone(),
    ))
    .unwrap();
    let failed = d.execution();
    assert_eq!(failed.status, RunStatus::Failed, "{:?}", failed.message);
    assert!(ledger.0.lock().unwrap().is_empty());
}

#[test]
fn a_carried_value_the_new_step_refuses_stops_the_continuation_before_anything_runs() {
    // `review` stores a json payload; a tool result is not what an `await` takes.
    let wrong = Carried::new(
        "verdict",
        "review",
        None,
        CarriedValue::Tool(json!({"approved": true})),
    );
    let (_store, rt, ledger) = at_confirm_migrated(vec![wrong]);
    let e = block_on(rt.deliver::<new::Program>(
        "r2",
        "confirmation",
        "ev-2",
        json!({"ok": true}),
        ledger.clone(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("migration"), "{e}");
    assert!(ledger.0.lock().unwrap().is_empty());
}

#[test]
fn a_migrated_runs_timeout_is_fired_by_the_new_program_and_not_by_the_old() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let clock = ManualClock::new(START);
    let rt = Runtime::builder()
        .vault(Arc::new(MemoryVault::seeded(3)))
        .clock(clock.clone())
        .store(store.clone())
        .build();
    let e = block_on(rt.run::<old::Program>(
        old::Input {
            request: "refund".into(),
            amount_cents: 700,
        },
        ledger.clone(),
        RunOptions::new().run_id("r1"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
    block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap();
    // The deadline (1h) passes.
    clock.advance(std::time::Duration::from_secs(3601));
    // v1 finds nothing of its own to fire: the run is pinned to v2 now.
    let fired = block_on(rt.fire_timeouts::<old::Program>(ledger.clone())).unwrap();
    assert!(fired.is_empty());
    // v2 fires it: the timeout edge, under v2.
    let fired = block_on(rt.fire_timeouts::<new::Program>(ledger.clone())).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].status, RunStatus::Failed);
    assert_eq!(fired[0].end_step.as_deref(), Some("expired"));
    assert!(ledger.0.lock().unwrap().is_empty());
}

/// A migrated run is the new version's run everywhere a host looks it up: its record names the
/// new hash, so a host serving only v2 routes a delivery to it, a worker of v2 alone may claim
/// it, `Versions::unserved` does not list it, and one serving only v1 reports it as another
/// version's instead of continuing it under v1.
#[test]
fn a_migrated_run_is_routed_to_the_new_version_by_the_registry_and_the_store() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::default());
    let rt = suspended_under_v1(&store, &ledger);
    block_on(migrate_run(&store, &migration(), START, 30_000)).unwrap();
    let record = block_on(store.run("r1")).unwrap().unwrap();
    assert_eq!(
        record.program_hash,
        hash_of::<new::Program>(),
        "the record follows the pin"
    );
    let only_v1 = Versions::new().add::<old::Program>(ledger.clone());
    let unserved = block_on(only_v1.unserved(&store)).unwrap();
    assert_eq!(unserved.len(), 1, "a host of v1 alone cannot serve it");
    let only_v2 = Versions::new().add::<new::Program>(ledger.clone());
    assert!(block_on(only_v2.unserved(&store)).unwrap().is_empty());
    let e = block_on(only_v2.deliver(
        &rt,
        "r1",
        "approval",
        "ev-1",
        json!({"approved": true}),
        None,
    ))
    .unwrap();
    let Delivery::Resumed(e) = e else {
        panic!("resumed under v2: {e:?}")
    };
    assert_eq!(e.end_step.as_deref(), Some("confirm"), "v2's own next step");
    let e = block_on(only_v2.deliver(&rt, "r1", "confirmation", "ev-2", json!({"ok": true}), None))
        .unwrap();
    let Delivery::Resumed(e) = e else {
        panic!("resumed under v2: {e:?}")
    };
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(ledger.0.lock().unwrap().len(), 1, "paid once, under v2");
    assert_eq!(ledger.0.lock().unwrap()[0].1, "EUR");
}

#[path = "support/peers.rs"]
mod peers;

/// The migration on PostgreSQL: the run's lease, the fenced append and the pin work the same
/// on the shared store.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
fn a_run_migrated_on_postgres_completes_under_v2() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let schema = format!(
        "nvmmig_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    );
    let rt_io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_io.block_on(async {
        let store = PostgresStore::connect_with(
            &peers::database_url(),
            PostgresOptions::new().schema(schema),
        )
        .await
        .expect("connects");
        let ledger = Arc::new(Ledger::default());
        let rt = Runtime::builder()
            .vault(Arc::new(MemoryVault::seeded(3)))
            .clock(ManualClock::new(START))
            .store(store.clone())
            .build();
        let e = rt
            .run::<old::Program>(
                old::Input {
                    request: "refund".into(),
                    amount_cents: 700,
                },
                ledger.clone(),
                RunOptions::new().run_id("r1"),
            )
            .await
            .unwrap();
        assert_eq!(e.status, RunStatus::Suspended);
        migrate_run(&store, &migration(), START, 30_000)
            .await
            .unwrap();
        let record = store.run("r1").await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Suspended);
        for (event, id, payload) in [
            ("approval", "ev-1", json!({"approved": true})),
            ("confirmation", "ev-2", json!({"ok": true})),
        ] {
            rt.deliver::<new::Program>("r1", event, id, payload, ledger.clone())
                .await
                .unwrap();
        }
        let entries = store.load("r1").await.unwrap().unwrap();
        let view = RunView::of(&entries);
        assert_eq!(view.status(), RunStatus::Success);
        assert_eq!(ledger.0.lock().unwrap().len(), 1);
    });
}
