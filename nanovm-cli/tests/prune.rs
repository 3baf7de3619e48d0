//! `nanovm prune` (issue 12, deliverable 6): retention that an audit accepts. Pruned runs'
//! checkpoint leaves stay and a signed prune record follows them, so `nanovm audit` (against a
//! head kept before the prune) reports "pruned" with who, when and why instead of "deleted
//! run"; a deletion without a record, or with a prune record not signed by the key, is still
//! reported.

use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{KeySigner, PruneRecord, SignedPrune};
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::{Actor, Datum, Encoder, Event, RunStatus, Trace};
use serde_json::json;

mod common;

use common::{nanovm, public_key_file, s};

fn trace(run_id: &str, suspended: bool) -> Trace {
    let mut t = Trace::new();
    let mut e = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "customer_refund".to_string().into(),
            program_hash: Digest::of(b"refund"),
            inputs: vec![("amount_cents".into(), Datum::Plain(json!(100)))],
        },
        &mut e,
    );
    t.push(
        if suspended {
            Event::Suspended {
                step: "manual_review".into(),
                event: "approval".into(),
                deadline_ms: None,
            }
        } else {
            Event::RunEnded {
                status: RunStatus::Success,
                step: Some("refunded".into()),
                message: None,
            }
        },
        &mut e,
    );
    t
}

fn setup(test: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = common::scratch("prune", test);
    let db = dir.join("runs.db");
    common::add_runs(
        &db,
        &[
            ("old1", trace("old1", false), true),
            ("old2", trace("old2", false), true),
            ("waits", trace("waits", true), true),
        ],
    );
    let key = public_key_file(&dir);
    let signing = dir.join("signing.key");
    std::fs::write(&signing, "2a".repeat(32)).unwrap();
    (dir, db, key, signing)
}

fn prune(db: &Path, signing: &Path) -> common::Run {
    nanovm(&[
        "prune",
        "--db",
        s(db),
        "--ended-before",
        "2100-01-01",
        "--by",
        "ops@example.com",
        "--reason",
        "retention: 30 days",
        "--signing-key",
        s(signing),
    ])
}

#[test]
fn pruned_runs_audit_as_pruned_against_a_head_kept_before() {
    let (dir, db, key, signing) = setup("pruned");
    let kept = dir.join("kept.json");
    let a = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--save-head",
        s(&kept),
    ]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    let p = prune(&db, &signing);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(p.stdout.contains("pruned run `old1`"), "{}", p.stdout);
    assert!(p.stdout.contains("pruned run `old2`"), "{}", p.stdout);
    assert!(
        !p.stdout.contains("waits"),
        "a waiting run is not pruned: {}",
        p.stdout
    );
    let runs = nanovm(&["runs", "--db", s(&db)]);
    assert!(
        !runs.stdout.contains("old1") && runs.stdout.contains("waits"),
        "{}",
        runs.stdout
    );
    let a = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--head",
        s(&kept),
    ]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    for id in ["old1", "old2"] {
        let line = a
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("pruned: run `{id}`")))
            .unwrap_or_else(|| panic!("{}", a.stdout));
        assert!(
            line.contains("ops@example.com") && line.contains("retention: 30 days"),
            "{line}"
        );
    }
    assert!(!a.stdout.contains("deleted run"), "{}", a.stdout);
    assert!(a.stdout.contains("extends the kept head"), "{}", a.stdout);
    // Pruning again finds nothing more.
    let p = prune(&db, &signing);
    assert!(p.stdout.contains("0 run(s) pruned"), "{}", p.stdout);
}

#[test]
fn a_deletion_without_a_signed_prune_record_is_still_reported() {
    let (_dir, db, key, signing) = setup("unrecorded");
    assert_eq!(prune(&db, &signing).code, 0);
    // Someone with write access deletes the waiting run, and files a prune record signed
    // with a key of their own.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DELETE FROM nanovm_entries WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = 'waits');
         DELETE FROM nanovm_runs WHERE run_id = 'waits';",
    )
    .unwrap();
    drop(c);
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert!(
        a.stdout.contains("deleted run: run `waits`"),
        "{}",
        a.stdout
    );
    assert!(a.stdout.contains("pruned: run `old1`"), "{}", a.stdout);
    let forged = SignedPrune::sign(
        PruneRecord::new(
            "waits",
            2,
            Digest::ZERO,
            Actor::new("mallory", "cleanup"),
            1,
        ),
        &KeySigner::from_seed([7; 32]),
    )
    .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store.log_append("waits", &forged.to_leaf()).await.unwrap();
        });
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert!(
        a.stdout.contains("deleted run: run `waits`"),
        "{}",
        a.stdout
    );
    assert!(a.stdout.contains("forged prune"), "{}", a.stdout);
}

// Red team (issue 12, retention).

/// A run whose latest checkpoint does not cover its whole trace (a crash between its last
/// write and its checkpoint, or entries written without the key) is not pruned: what is
/// deleted must be proved. It is listed as skipped, stays in the store, and no prune record
/// names it.
#[test]
fn attack_a_run_its_checkpoint_does_not_cover_is_not_pruned() {
    let dir = common::scratch("prune", "uncovered");
    let db = dir.join("runs.db");
    let t = trace("partial", false);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store.append("partial", t.entries(), None).await.unwrap();
            // Checkpointed after its first entry only.
            nanovm_runtime::evidence::checkpoint(
                &store,
                &KeySigner::from_seed([0x2a; 32]),
                1_700_000_000_000,
                &t.entries()[..1],
            )
            .await
            .unwrap();
        });
    common::add_runs(&db, &[("unsigned", trace("unsigned", false), false)]);
    let key = public_key_file(&dir);
    let signing = dir.join("signing.key");
    std::fs::write(&signing, "2a".repeat(32)).unwrap();
    let p = prune(&db, &signing);
    assert!(
        p.stdout.contains("0 run(s) pruned"),
        "{}{}",
        p.stdout,
        p.stderr
    );
    for id in ["partial", "unsigned"] {
        assert!(
            p.stderr.contains(id),
            "{id} listed as skipped: {}",
            p.stderr
        );
    }
    let runs = nanovm(&["runs", "--db", s(&db)]);
    assert!(
        runs.stdout.contains("partial") && runs.stdout.contains("unsigned"),
        "{}",
        runs.stdout
    );
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert!(!a.stdout.contains("pruned:"), "{}", a.stdout);
}

/// A genuine prune record of one run, copied into the log under another run's id after that
/// run was deleted, does not make the deletion look like a prune: the record names the run
/// it was signed for.
#[test]
fn attack_a_prune_record_replayed_for_another_run_is_not_a_prune() {
    let (_dir, db, key, signing) = setup("replayed");
    assert_eq!(prune(&db, &signing).code, 0);
    let c = rusqlite::Connection::open(&db).unwrap();
    let (leaf, n): (Vec<u8>, i64) = c
        .query_row(
            "SELECT leaf, (SELECT count(*) FROM nanovm_log) FROM nanovm_log \
             WHERE run_id = 'old1' ORDER BY idx DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        SignedPrune::from_leaf(&leaf).is_some(),
        "old1's last leaf is its prune record"
    );
    c.execute_batch(
        "DELETE FROM nanovm_entries WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = 'waits');
         DELETE FROM nanovm_runs WHERE run_id = 'waits';",
    )
    .unwrap();
    c.execute(
        "INSERT INTO nanovm_log (idx, run_id, leaf) VALUES (?1, 'waits', ?2)",
        rusqlite::params![n, leaf],
    )
    .unwrap();
    drop(c);
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert!(
        a.stdout.contains("deleted run: run `waits`"),
        "{}",
        a.stdout
    );
    assert!(!a.stdout.contains("pruned: run `waits`"), "{}", a.stdout);
}

/// A run id reused after its run was pruned: the new run is checkpointed, then deleted
/// without a record. The old run's prune record does not cover the new run (it precedes the
/// new run's checkpoint and names other entries): `deleted run`.
#[test]
fn attack_an_old_prune_record_does_not_cover_a_reused_run_id() {
    let (_dir, db, key, signing) = setup("reused");
    assert_eq!(prune(&db, &signing).code, 0);
    common::add_runs(&db, &[("old1", trace("old1", true), true)]);
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DELETE FROM nanovm_entries WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = 'old1');
         DELETE FROM nanovm_runs WHERE run_id = 'old1';",
    )
    .unwrap();
    drop(c);
    let a = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert!(a.stdout.contains("deleted run: run `old1`"), "{}", a.stdout);
    assert!(!a.stdout.contains("pruned: run `old1`"), "{}", a.stdout);
}
