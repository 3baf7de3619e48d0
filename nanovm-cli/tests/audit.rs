//! `nanovm audit` and `nanovm trace --key` on a real SQLite store with signed checkpoints:
//! a clean audit saves the head to keep; a deleted run, a restored backup and a rechained
//! rewrite are each named (exit 1); a bad key file is a usage error (exit 2).

use std::fs;
use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{self, KeySigner, Signer};
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::{Datum, Encoder, Event, RunStatus, Trace, entry_line};
use serde_json::json;

mod common;

use common::{nanovm, public_key_file, s, signer};

fn scratch(test: &str) -> PathBuf {
    common::scratch("audit", test)
}

/// A store with runs `ids`, each checkpointed; `key.pub` beside it.
fn database(dir: &Path, ids: &[&str]) -> (PathBuf, PathBuf) {
    let path = dir.join("runs.db");
    add_runs(&path, ids);
    (path, public_key_file(dir))
}

fn add_runs(path: &Path, ids: &[&str]) {
    let runs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, trace(id, 100 + i as i64), true))
        .collect();
    common::add_runs(path, &runs);
}

fn trace(run_id: &str, amount: i64) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "customer_refund".to_string().into(),
            program_hash: Digest::of(b"customer_refund"),
            inputs: vec![("amount_cents".into(), Datum::Plain(json!(amount)))],
        },
        &mut s,
    );
    t.push(
        Event::RunEnded {
            status: RunStatus::Success,
            step: Some("refunded".into()),
            message: None,
        },
        &mut s,
    );
    t
}

#[test]
fn a_clean_audit_saves_the_head_and_a_deleted_run_is_named() {
    let dir = scratch("deleted");
    let (db, key) = database(&dir, &["r1", "r2"]);
    let head = dir.join("head.json");
    let r = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--save-head",
        s(&head),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("ok: 2 runs, 2 checkpoints, head 2 leaves"),
        "{}",
        r.stdout
    );
    assert!(fs::read_to_string(&head).unwrap().contains("\"size\":2"));

    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DELETE FROM nanovm_entries WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = 'r1');
         DELETE FROM nanovm_runs WHERE run_id = 'r1';",
    )
    .unwrap();
    drop(c);
    let r = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--head",
        s(&head),
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("deleted run: run `r1` was checkpointed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("audit failed: 1 problem(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_restored_backup_fails_against_the_kept_head() {
    let dir = scratch("backup");
    let (db, key) = database(&dir, &["r1"]);
    let backup = dir.join("backup.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(&format!("VACUUM INTO '{}'", s(&backup)))
        .unwrap();
    drop(c);
    add_runs(&db, &["r2", "r3"]);
    let head = dir.join("head.json");
    let r = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--save-head",
        s(&head),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = nanovm(&[
        "audit",
        "--db",
        s(&backup),
        "--key",
        s(&key),
        "--head",
        s(&head),
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("rolled back: the store's log has 1 leaves but the tree head you kept"),
        "{}",
        r.stdout
    );
}

#[test]
fn trace_with_a_key_refuses_a_rechained_rewrite() {
    let dir = scratch("rewrite");
    let (db, key) = database(&dir, &["r1"]);
    let r = nanovm(&["trace", "--db", s(&db), "--key", s(&key), "r1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    // The refund amount rewritten, the chain recomputed, the stored last hash updated.
    let forged = trace("r1", 99_999);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute("DELETE FROM nanovm_entries", []).unwrap();
    for e in forged.entries() {
        c.execute(
            "INSERT INTO nanovm_entries (run, seq, hash, line) VALUES \
             ((SELECT ord FROM nanovm_runs WHERE run_id = 'r1'), ?1, ?2, ?3)",
            rusqlite::params![e.seq as i64, e.hash.0.to_vec(), entry_line(e)],
        )
        .unwrap();
    }
    c.execute(
        "UPDATE nanovm_runs SET last_hash = ?1 WHERE run_id = 'r1'",
        [forged.root().0.to_vec()],
    )
    .unwrap();
    drop(c);
    // Without the key the forgery passes: the chain is intact.
    assert_eq!(nanovm(&["trace", "--db", s(&db), "r1"]).code, 0);
    let r = nanovm(&["trace", "--db", s(&db), "--key", s(&key), "r1"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("rewritten run: run `r1` does not match its last checkpoint"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_key_that_is_not_one_is_a_usage_error() {
    let dir = scratch("badkey");
    let (db, _) = database(&dir, &["r1"]);
    let r = nanovm(&["audit", "--db", s(&db), "--key", "abcd"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--key abcd"), "{}", r.stderr);
}

#[test]
fn verify_with_a_key_checks_the_exported_checkpoint_covers_the_trace() {
    let dir = scratch("verify");
    let (db, key) = database(&dir, &["r1"]);
    let (jsonl, cp) = (dir.join("r1.jsonl"), dir.join("r1.checkpoint.json"));
    let r = nanovm(&[
        "trace",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--checkpoint-out",
        s(&cp),
        "r1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    fs::write(&jsonl, &r.stdout).unwrap();
    let r = nanovm(&[
        "verify",
        s(&jsonl),
        "--key",
        s(&key),
        "--checkpoint",
        s(&cp),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("the signed checkpoint covers the whole trace"),
        "{}",
        r.stdout
    );

    // A rechained forgery verifies without the key, and fails with it.
    let forged = dir.join("forged.jsonl");
    fs::write(&forged, trace("r1", 99_999).to_jsonl()).unwrap();
    assert_eq!(nanovm(&["verify", s(&forged)]).code, 0);
    let r = nanovm(&[
        "verify",
        s(&forged),
        "--key",
        s(&key),
        "--checkpoint",
        s(&cp),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.starts_with("forged: the trace"), "{}", r.stdout);

    // Another key's view of the same checkpoint: not signed by it.
    let other = dir.join("other.pub");
    fs::write(&other, KeySigner::from_seed([9; 32]).public_key().to_hex()).unwrap();
    let r = nanovm(&[
        "verify",
        s(&jsonl),
        "--key",
        s(&other),
        "--checkpoint",
        s(&cp),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not signed by this key"), "{}", r.stdout);
}

#[test]
fn entries_beyond_the_last_checkpoint_are_reported() {
    let dir = scratch("beyond");
    let (db, key) = database(&dir, &[]);
    let t = trace("p1", 5);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store.append("p1", &t.entries()[..1], None).await.unwrap();
            evidence::checkpoint(&store, &signer(), 1, &t.entries()[..1])
                .await
                .unwrap();
            store.append("p1", &t.entries()[1..], None).await.unwrap();
        });
    let cp = dir.join("p1.checkpoint.json");
    let r = nanovm(&[
        "trace",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--checkpoint-out",
        s(&cp),
        "p1",
    ]);
    assert_eq!(r.code, 0, "a warning, not a failure: {}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: run `p1` has 1 entries beyond its last checkpoint"),
        "{}",
        r.stderr
    );
    let jsonl = dir.join("p1.jsonl");
    fs::write(&jsonl, &r.stdout).unwrap();
    let r = nanovm(&[
        "verify",
        s(&jsonl),
        "--key",
        s(&key),
        "--checkpoint",
        s(&cp),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.starts_with("uncovered: 2 entries, root"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1 entries beyond the last signed checkpoint (1 entries)")
    );
    let r = nanovm(&[
        "verify",
        s(&jsonl),
        "--partial",
        "--key",
        s(&key),
        "--checkpoint",
        s(&cp),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    // The audit of the store says the same, as a warning.
    let r = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("warning: run `p1` has 1 entries beyond"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_database_from_before_the_log_says_so() {
    let dir = scratch("v2");
    let (db, key) = database(&dir, &["r1"]);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("DROP TABLE nanovm_log; DROP TABLE nanovm_heads; PRAGMA user_version = 2;")
        .unwrap();
    drop(c);
    let r = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("this database has no evidence log"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_runs_inclusion_proof_is_printed_and_checked_offline_and_a_tampered_one_fails() {
    let dir = scratch("prove");
    let (db, key) = database(&dir, &["r1", "r2", "r3"]);
    let r = nanovm(&["audit", "--db", s(&db), "--key", s(&key), "--prove", "r2"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let proof: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON proof");
    assert_eq!(proof["index"], 1);
    assert_eq!(proof["checkpoint"]["run_id"], "r2");
    assert_eq!(proof["head"]["size"], 3);
    assert_eq!(proof["path"].as_array().map(Vec::len), Some(2));

    // Offline: no store at all.
    let file = dir.join("proof.json");
    fs::write(&file, &r.stdout).unwrap();
    fs::remove_file(&db).unwrap();
    let check = |p: &Path, k: &str| nanovm(&["audit", "--verify-proof", s(p), "--key", k]);
    let r = check(&file, s(&key));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("ok: run `r2` (2 entries, root "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("is leaf 1 of the log under the head of 3 leaves"),
        "{}",
        r.stdout
    );

    // Tampered: another index, a bent path, a checkpoint claiming more entries, a head
    // over another size, another key, not a proof at all. Each exits 1 and says why.
    let tamper = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = proof.clone();
        edit(&mut v);
        let p = dir.join(format!("{name}.json"));
        fs::write(&p, v.to_string()).unwrap();
        p
    };
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "moved",
            &|v| v["index"] = 0.into(),
            "the audit path does not lead",
        ),
        (
            "bent",
            &|v| {
                let h = v["path"][0].as_str().unwrap().to_string();
                let flipped = if h.starts_with('0') { "1" } else { "0" };
                v["path"][0] = format!("{flipped}{}", &h[1..]).into();
            },
            "the audit path does not lead",
        ),
        (
            "more",
            &|v| v["checkpoint"]["entries"] = 3.into(),
            "the checkpoint is not signed by this key",
        ),
        (
            "resized",
            &|v| v["head"]["size"] = 4.into(),
            "the tree head is not signed by this key",
        ),
    ];
    for (name, edit, why) in cases {
        let r = check(&tamper(name, edit), s(&key));
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        assert!(r.stdout.contains(why), "{name}: {}", r.stdout);
    }
    let other = KeySigner::from_seed([7; 32]).public_key().to_string();
    let r = check(&file, &other);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("not signed by this key"), "{}", r.stdout);
    let garbage = dir.join("garbage.json");
    fs::write(&garbage, "{\"index\": 1}").unwrap();
    let r = check(&garbage, s(&key));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.starts_with("proof invalid: "), "{}", r.stdout);
}

#[test]
fn a_run_without_a_checkpoint_has_no_proof() {
    let dir = scratch("no-proof");
    let (db, key) = database(&dir, &["r1"]);
    let r = nanovm(&["audit", "--db", s(&db), "--key", s(&key), "--prove", "nope"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.starts_with("no proof: run `nope`"), "{}", r.stdout);
    let r = nanovm(&["audit", "--key", s(&key)]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
}
