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
use nanovm_runtime::{Delivery, Observer, RunOptions, Runtime, replay};
use serde_json::json;
use support::{Host, START, customer_refund as cr};

/// Records what it sees and, with a store, checks each entry is stored when it is shown.
#[derive(Clone, Default)]
struct Seen {
    entries: Arc<Mutex<Vec<(String, Entry)>>>,
    store: Option<MemoryStore>,
    not_durable: Arc<Mutex<Vec<u64>>>,
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
