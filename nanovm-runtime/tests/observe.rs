//! `RuntimeBuilder::observer`: every entry of every run, in order, once, as soon as it is
//! durable.
//!
//! Attacks: an observer shown an entry the store does not hold yet (a viewer would draw a step
//! a crash can take back), or one whose write failed; an entry shown twice when a run is
//! continued (a delivery reproduces the stored prefix); anything shown by a replay.

mod support;

use std::sync::{Arc, Mutex};

use nanovm_runtime::store::{JournalStore, MemoryStore};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Entry, RunStatus};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{
    CallKind, CallTiming, Delivery, Observer, RunOptions, Runtime, Worker, replay,
};
use serde_json::json;
use support::{Host, START, customer_refund as cr};

/// (kind, run, step, name, attempt, ok) of a call reported.
type Called = (CallKind, String, String, String, u32, bool);

/// Records what it sees and, with a store, checks each entry is stored when it is shown.
#[derive(Clone, Default)]
struct Seen {
    entries: Arc<Mutex<Vec<(String, Entry)>>>,
    store: Option<MemoryStore>,
    not_durable: Arc<Mutex<Vec<u64>>>,
    calls: Arc<Mutex<Vec<Called>>>,
    takeovers: Arc<Mutex<Vec<String>>>,
}

impl Observer for Seen {
    fn entry(&self, run_id: &str, entry: &Entry) {
        if let Some(store) = &self.store
            && !store.entries(run_id).contains(entry)
        {
            self.not_durable.lock().unwrap().push(entry.seq);
        }
        self.entries
            .lock()
            .unwrap()
            .push((run_id.to_string(), entry.clone()));
    }

    fn call(&self, c: &CallTiming<'_>) {
        assert!(c.elapsed < std::time::Duration::from_secs(60));
        self.calls.lock().unwrap().push((
            c.kind,
            c.run_id.to_string(),
            c.step.to_string(),
            c.name.to_string(),
            c.attempt,
            c.ok,
        ));
    }

    fn takeover(&self, run_id: &str) {
        self.takeovers.lock().unwrap().push(run_id.to_string());
    }
}

impl Seen {
    fn of(&self, run_id: &str) -> Vec<Entry> {
        let seen = self.entries.lock().unwrap();
        seen.iter()
            .filter(|(r, _)| r == run_id)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn runtime(answer: &str, store: Option<&MemoryStore>, seen: &Seen) -> (Runtime, Arc<MemoryVault>) {
    let vault = Arc::new(MemoryVault::seeded(11));
    let mut b = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", answer).shared())
        .vault(vault.clone())
        .clock(ManualClock::new(START))
        .observer(seen.clone());
    if let Some(store) = store {
        b = b.store(store.clone());
    }
    (b.build(), vault)
}

fn input(vault: &MemoryVault, amount_cents: i64) -> cr::Input {
    cr::Input {
        request: "It broke.".into(),
        order_id: "o-5".into(),
        amount_cents,
        email: vault.secret(&"cy@example.com".to_string()).unwrap(),
    }
}

#[test]
fn without_a_store_every_entry_is_seen_once_in_order() {
    let seen = Seen::default();
    let (rt, vault) = runtime("yes", None, &seen);
    let e = block_on(rt.run::<cr::Program>(
        input(&vault, 100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("m"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(seen.of("m"), e.trace.entries(), "each entry once, in order");
    // A replay reproduces the run and shows nothing.
    let before = seen.entries.lock().unwrap().len();
    replay::<cr::Program>(&e.trace).unwrap();
    assert_eq!(seen.entries.lock().unwrap().len(), before);
}

#[test]
fn with_a_store_entries_are_seen_once_durable_and_a_continuation_adds_only_its_own() {
    let store = MemoryStore::new();
    let seen = Seen {
        store: Some(store.clone()),
        ..Seen::default()
    };
    let (rt, vault) = runtime("yes", Some(&store), &seen);
    let host = Arc::new(Host::new());
    let e = block_on(rt.run::<cr::Program>(
        input(&vault, 9000),
        host.clone(),
        RunOptions::new().run_id("d"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
    let suspended = seen.of("d").len();
    assert_eq!(seen.of("d"), store.entries("d"));
    let d = block_on(rt.deliver::<cr::Program>(
        "d",
        "approval",
        "ev-1",
        json!({"approved": true}),
        host.clone(),
    ))
    .unwrap();
    let Delivery::Resumed(done) = d else {
        panic!("{d:?}")
    };
    assert_eq!(done.status, RunStatus::Success);
    let all = seen.of("d");
    assert_eq!(all, store.entries("d"), "the stored trace, each entry once");
    assert!(all.len() > suspended);
    assert!(
        seen.not_durable.lock().unwrap().is_empty(),
        "shown before it was stored: {:?}",
        seen.not_durable.lock().unwrap()
    );
    // A repeated delivery changes nothing and shows nothing.
    block_on(rt.deliver::<cr::Program>("d", "approval", "ev-1", json!({"approved": true}), host))
        .unwrap();
    assert_eq!(seen.of("d").len(), all.len());
}

#[test]
fn entries_whose_write_failed_are_never_seen() {
    let store = MemoryStore::new();
    let seen = Seen {
        store: Some(store.clone()),
        ..Seen::default()
    };
    let (rt, vault) = runtime("yes", Some(&store), &seen);
    // The run's first write succeeds; every later one fails.
    store.fail_after(1);
    let r = block_on(rt.run::<cr::Program>(
        input(&vault, 100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("f"),
    ));
    assert!(r.is_err(), "the store failed: {r:?}");
    let stored = block_on(store.load("f")).unwrap().unwrap_or_default();
    assert_eq!(seen.of("f"), stored, "exactly what the store holds");
    assert!(seen.not_durable.lock().unwrap().is_empty());
}

/// Each live model and tool call is reported once with its names (never a value); a replay
/// reports none.
#[test]
fn live_calls_are_reported_with_names_only_and_replay_reports_none() {
    let seen = Seen::default();
    let (rt, vault) = runtime("yes", None, &seen);
    let e = block_on(rt.run::<cr::Program>(
        input(&vault, 100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("c"),
    ))
    .unwrap();
    assert_eq!(e.status, RunStatus::Success);
    let calls = seen.calls.lock().unwrap().clone();
    let kinds: Vec<(CallKind, &str, &str)> = calls
        .iter()
        .map(|(k, r, _, n, _, _)| (*k, r.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (CallKind::Model, "c", ""),
            (CallKind::Tool, "c", "issue_refund")
        ],
        "{calls:?}"
    );
    assert!(calls.iter().all(|c| c.4 == 1 && c.5), "{calls:?}");
    replay::<cr::Program>(&e.trace).unwrap();
    assert_eq!(seen.calls.lock().unwrap().len(), 2);
}

/// A worker that continues a run another execution left mid-way reports a takeover; one that
/// executes a freshly submitted run does not.
#[test]
fn a_worker_reports_a_takeover_of_a_run_left_mid_way_only() {
    let store = MemoryStore::new();
    let seen = Seen::default();
    let (rt, vault) = runtime("yes", Some(&store), &seen);
    // A run left mid-way: the stored prefix of a full run up to its effect's intent.
    let full = block_on(rt.run::<cr::Program>(
        input(&vault, 100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("left"),
    ))
    .unwrap();
    let intent = full
        .trace
        .entries()
        .iter()
        .position(|e| e.event.kind() == "tool_intent")
        .expect("an intent");
    store.set_entries("left", full.trace.entries()[..=intent].to_vec());
    let worker = Worker::new(rt.clone(), "w", 10_000);
    let done = block_on(worker.run_once::<cr::Program>(Arc::new(Host::new())))
        .unwrap()
        .expect("claimed");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(*seen.takeovers.lock().unwrap(), ["left"]);
    block_on(rt.submit::<cr::Program>(input(&vault, 100), Some("fresh"))).unwrap();
    let done = block_on(worker.run_once::<cr::Program>(Arc::new(Host::new())))
        .unwrap()
        .expect("claimed");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(
        *seen.takeovers.lock().unwrap(),
        ["left"],
        "a fresh run is no takeover"
    );
}
