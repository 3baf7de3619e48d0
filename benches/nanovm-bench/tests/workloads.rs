//! The benchmark workloads do what their names say, so that a benchmark never times a broken
//! run: every workload succeeds with the expected steps, calls and path, its trace verifies and
//! replays, the guard and the budgets are live, and steps are counted as the peer counts them.

use nanovm::store::JournalStore;
use nanovm_bench::{Bench, Workload, sanity_checks, tokio_runtime};

#[test]
fn every_workload_runs_as_expected_and_replays() {
    let tokio = tokio_runtime();
    let bench = Bench::memory();
    for w in Workload::ALL {
        let expected = w.expected();
        for _ in 0..2 {
            let e = tokio
                .block_on(bench.run_checked(&expected))
                .unwrap_or_else(|e| panic!("{e}"));
            expected.check_deep(&e).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let runs: u64 = 2;
    let tools: u64 = Workload::ALL.iter().map(|w| w.tool_calls() * runs).sum();
    let models: u64 = Workload::ALL.iter().map(|w| w.model_calls() * runs).sum();
    assert_eq!((bench.tool_calls(), bench.model_calls()), (tools, models));
}

#[test]
fn the_guard_and_the_budgets_are_live() {
    sanity_checks(&tokio_runtime()).unwrap();
}

#[test]
fn steps_are_counted_as_the_peer_counts_them() {
    for w in Workload::ALL {
        assert_eq!(w.steps_per_run(), w.peer_steps_per_run(), "{}", w.name());
        assert_eq!(Workload::from_name(w.name()), Some(w));
    }
    assert_eq!(Workload::Parallel10.steps_per_run(), 12);
}

#[test]
fn the_linear_sources_have_n_calls() {
    for (w, n) in [
        (Workload::Linear10, 10),
        (Workload::Linear100, 100),
        (Workload::Linear1000, 1000),
    ] {
        let src = w.source();
        assert_eq!(src.matches(" = noop() -> ").count(), n);
        assert!(src.contains(&format!("call s{} = noop() -> done", n - 1)));
    }
}

#[test]
fn every_workload_runs_durably_and_the_store_holds_it() {
    let tokio = tokio_runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio
        .block_on(nanovm::store::SqliteStore::open(
            dir.path().join("j.sqlite"),
        ))
        .unwrap();
    let bench = Bench::durable(store);
    for w in Workload::ALL {
        let expected = w.expected();
        let e = tokio
            .block_on(bench.run_checked(&expected))
            .unwrap_or_else(|e| panic!("{e}"));
        expected.check_deep(&e).unwrap_or_else(|e| panic!("{e}"));
        tokio
            .block_on(bench.check_journal(&e))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(bench.durable_runs(), Workload::ALL.len() as u64);
}

#[test]
fn every_step_of_effects10_is_a_durable_effect() {
    // The durable rows of the table compare equal durability only if nanovm's effects workload
    // journals an intent before every call, as the peers checkpoint every step.
    let tokio = tokio_runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio
        .block_on(nanovm::store::SqliteStore::open(
            dir.path().join("j.sqlite"),
        ))
        .unwrap();
    let bench = Bench::durable(store);
    let expected = Workload::Effects10.expected();
    let e = tokio
        .block_on(bench.run_checked(&expected))
        .unwrap_or_else(|e| panic!("{e}"));
    let jsonl = e.trace.to_jsonl();
    assert_eq!(jsonl.matches("\"tool_intent\"").count(), 10, "{jsonl}");
    assert_eq!(bench.tool_calls(), 10);
    tokio
        .block_on(bench.check_journal(&e))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The fewest syncs the protocol allows (docs/runtime.md, "Durability and the at-most-once
/// guarantee"): one durable write before each effect call (its intent, with the previous
/// effect's result and everything since), and one at the end (the last result, the end, the
/// lease given back). Counted on a SQLite file as the writer thread's commits, one run at a
/// time, so a change that adds a sync cannot pass silently.
#[test]
fn a_durable_run_makes_one_commit_per_effect_and_one_at_the_end() {
    let tokio = tokio_runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio
        .block_on(nanovm::store::SqliteStore::open(
            dir.path().join("j.sqlite"),
        ))
        .unwrap();
    let bench = Bench::durable(store.clone());
    for (w, commits) in [
        (Workload::Guard4, 2),
        (Workload::Guard4Budgets, 2),
        (Workload::Effects10, 11),
        (Workload::Linear10, 1),
        (Workload::Linear100, 1),
        (Workload::Parallel10, 1),
    ] {
        let expected = w.expected();
        for _ in 0..2 {
            let before = store.commits();
            let e = tokio
                .block_on(bench.run_checked(&expected))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                store.commits() - before,
                commits,
                "{}: SQLite commits per run",
                w.name()
            );
            tokio
                .block_on(bench.check_journal(&e))
                .unwrap_or_else(|e| panic!("{e}"));
            let record = tokio.block_on(store.run(&e.run_id)).unwrap().unwrap();
            assert_eq!(
                (record.lease_owner, record.lease_expires_ms),
                (None, None),
                "{}: the lease is given back at the end",
                w.name()
            );
        }
    }
}
