//! Evidence (issue 12, deliverables 1 and 2): signed checkpoints at every execution end, the
//! Merkle log across runs, and the attacks an audit must name: a rechained rewrite of a run's
//! rows, a forged re-run, a deleted run, a restored backup, swapped runs, a forged checkpoint.
//! Every attack is carried out on the SQLite file behind the store's back, as someone with
//! access to the database (and not to the signing key) would.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nanovm_runtime::BoxFuture;
use nanovm_runtime::evidence::{
    self, AuditReport, FindingKind, KeySigner, PublicKey, SignedTreeHead, Signer,
};
use nanovm_runtime::store::{
    Fence, JournalError, JournalStore, Lease, LogLeaf, RunQuery, RunRecord, SqliteStore,
};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Datum, Entry, Event, RunStatus, entry_line};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Delivery, RunOptions, Runtime};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{Host, START, block_on, rechain};

const SEED: [u8; 32] = [42; 32];

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
    vault: Arc<MemoryVault>,
    key: PublicKey,
}

fn runtime(store: &SqliteStore, vault: &Arc<MemoryVault>, signer: Option<KeySigner>) -> Runtime {
    let b = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(vault.clone())
        .clock(ManualClock::new(START))
        .store(store.clone());
    match signer {
        Some(s) => b.signer(s).build(),
        None => b.build(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    let store = block_on(SqliteStore::open(&path)).expect("opens");
    Fixture {
        _dir: dir,
        path,
        store,
        vault: Arc::new(MemoryVault::seeded(11)),
        key: KeySigner::from_seed(SEED).public_key(),
    }
}

impl Fixture {
    fn signed(&self) -> Runtime {
        runtime(&self.store, &self.vault, Some(KeySigner::from_seed(SEED)))
    }

    fn input(&self, amount_cents: i64) -> cr::Input {
        cr::Input {
            request: "It broke.".into(),
            order_id: "o-5".into(),
            amount_cents,
            email: self
                .vault
                .secret(&"cy@example.com".to_string())
                .expect("a secret"),
        }
    }

    fn run(&self, rt: &Runtime, amount: i64, id: &str) -> nanovm_runtime::Execution {
        block_on(rt.run::<cr::Program>(
            self.input(amount),
            Arc::new(Host::new()),
            RunOptions::new().run_id(id),
        ))
        .expect("runs")
    }

    /// Three runs: two refunded, one suspended for review.
    fn three_runs(&self) -> Runtime {
        let rt = self.signed();
        assert_eq!(self.run(&rt, 100, "r1").status, RunStatus::Success);
        assert_eq!(self.run(&rt, 200, "r2").status, RunStatus::Success);
        assert_eq!(self.run(&rt, 9000, "r3").status, RunStatus::Suspended);
        rt
    }

    fn audit(&self, kept: Option<&SignedTreeHead>) -> AuditReport {
        audit_path(&self.path, &self.key, kept)
    }

    fn head(&self) -> SignedTreeHead {
        let report = self.audit(None);
        assert!(report.ok(), "{:?}", report.findings);
        report.head.expect("a signed head over the whole log")
    }

    fn sql(&self, sql: &str) {
        let c = rusqlite::Connection::open(&self.path).expect("opens the file");
        c.execute_batch(sql).expect("the attack's SQL runs");
    }

    fn ord(&self, run_id: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.path).expect("opens the file");
        c.query_row(
            "SELECT ord FROM nanovm_runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .expect("the run's row")
    }

    /// Replaces run `run_id`'s rows with `trace` (and its stored count and last hash), so the
    /// store loads it without complaint: a rewrite by someone who can rechain.
    fn plant(&self, run_id: &str, trace: &nanovm_runtime::trace::Trace) {
        let ord = self.ord(run_id);
        let c = rusqlite::Connection::open(&self.path).expect("opens the file");
        c.execute("DELETE FROM nanovm_entries WHERE run = ?1", [ord])
            .expect("deletes");
        for e in trace.entries() {
            c.execute(
                "INSERT INTO nanovm_entries (run, seq, hash, line) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![ord, e.seq as i64, e.hash.0.to_vec(), entry_line(e)],
            )
            .expect("inserts");
        }
        c.execute(
            "UPDATE nanovm_runs SET entries = ?1, last_hash = ?2 WHERE ord = ?3",
            rusqlite::params![trace.len() as i64, trace.root().0.to_vec(), ord],
        )
        .expect("updates");
    }
}

fn audit_path(path: &Path, key: &PublicKey, kept: Option<&SignedTreeHead>) -> AuditReport {
    block_on(async {
        let store = SqliteStore::open_read_only(path).await.expect("opens");
        evidence::audit(&store, key, kept).await.expect("audits")
    })
}

/// The problems (not warnings) found, as (kind, run, message).
fn problems(report: &AuditReport) -> Vec<(FindingKind, Option<String>, String)> {
    report
        .findings
        .iter()
        .filter(|f| f.kind != FindingKind::Uncovered)
        .map(|f| (f.kind, f.run_id.clone(), f.message.clone()))
        .collect()
}

fn has(report: &AuditReport, kind: FindingKind, run: Option<&str>, words: &str) -> bool {
    problems(report)
        .iter()
        .any(|(k, r, m)| *k == kind && r.as_deref() == run && m.contains(words))
}

#[test]
fn every_execution_end_is_checkpointed_and_the_checkpoint_covers_the_whole_trace() {
    let f = fixture();
    let rt = f.three_runs();
    let leaves = block_on(f.store.log(0)).expect("reads the log");
    assert_eq!(leaves.len(), 3, "one checkpoint per execution end");
    for id in ["r1", "r2", "r3"] {
        let found = block_on(evidence::check_stored_run(&f.store, &f.key, id)).expect("checks");
        assert!(found.is_empty(), "{id}: {found:?}");
    }
    let head = f.head();
    assert_eq!(head.head.size, 3);

    // The suspended run continues: its new end is checkpointed too, and the log extends the
    // head kept before.
    let d = block_on(rt.deliver::<cr::Program>(
        "r3",
        "approval",
        "ev-1",
        json!({"approved": true}),
        Arc::new(Host::new()),
    ))
    .expect("delivers");
    assert!(matches!(d, Delivery::Resumed(_)));
    let report = f.audit(Some(&head));
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.leaves, 4);
    assert_eq!(report.head.expect("a new head").head.size, 4);

    // A duplicate start answers from the store and signs nothing new.
    f.run(&rt, 100, "r1");
    assert_eq!(block_on(f.store.log(0)).expect("reads").len(), 4);
}

#[test]
fn without_a_signer_nothing_is_signed_and_the_traces_are_the_same() {
    let f = fixture();
    let plain = runtime(&f.store, &f.vault, None);
    let a = f.run(&plain, 100, "plain");
    let signed = f.signed();
    let b = f.run(&signed, 100, "signed");
    assert_eq!(block_on(f.store.log(0)).expect("reads").len(), 1);
    // The same events (only the run id differs): signing adds nothing to a trace.
    assert_eq!(a.trace.len(), b.trace.len());
    let found = block_on(evidence::check_stored_run(&f.store, &f.key, "plain")).expect("checks");
    assert!(
        found.iter().any(|x| x.kind == FindingKind::Unsigned),
        "{found:?}"
    );
}

#[test]
fn a_rechained_rewrite_of_a_runs_rows_is_detected() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    // The refund becomes 99 cents... no: 10000 cents, rechained so the chain verifies.
    let trace = block_on(f.store.load("r1")).expect("loads").expect("r1");
    let events = trace.into_iter().map(|e| match e.event {
        Event::RunStarted {
            run_id,
            program,
            program_hash,
            inputs,
        } => Event::RunStarted {
            run_id,
            program,
            program_hash,
            inputs: inputs
                .into_iter()
                .map(|(n, d)| match (n.as_ref(), d) {
                    ("amount_cents", Datum::Plain(_)) => (n, Datum::Plain(json!(10000))),
                    (_, d) => (n, d),
                })
                .collect(),
        },
        other => other,
    });
    let forged = rechain(events);
    forged.verify().expect("the forgery's chain verifies");
    f.plant("r1", &forged);
    assert!(
        block_on(f.store.load("r1"))
            .expect("the store loads it")
            .is_some()
    );

    let report = f.audit(Some(&kept));
    assert!(!report.ok());
    assert!(
        has(
            &report,
            FindingKind::RewrittenRun,
            Some("r1"),
            "does not match its last checkpoint"
        ),
        "{:?}",
        problems(&report)
    );
    assert_eq!(problems(&report).len(), 1, "{:?}", problems(&report));
    let found = block_on(evidence::check_stored_run(&f.store, &f.key, "r1")).expect("checks");
    assert_eq!(found.len(), 1);
}

#[test]
fn a_forged_re_run_under_an_existing_run_id_is_detected_with_or_without_a_key() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    // Delete r1 and run it again with invented inputs, with no key...
    let ord = f.ord("r1");
    f.sql(&format!(
        "DELETE FROM nanovm_entries WHERE run = {ord}; DELETE FROM nanovm_runs WHERE ord = {ord};"
    ));
    let forger = runtime(&f.store, &f.vault, None);
    assert_eq!(f.run(&forger, 150, "r1").status, RunStatus::Success);
    let report = f.audit(Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::RewrittenRun,
            Some("r1"),
            "invented inputs"
        ),
        "{:?}",
        problems(&report)
    );

    // ... or with a key of the forger's own: the checkpoint it adds is not the operator's.
    let ord = f.ord("r1");
    f.sql(&format!(
        "DELETE FROM nanovm_entries WHERE run = {ord}; DELETE FROM nanovm_runs WHERE ord = {ord};"
    ));
    let forger = runtime(&f.store, &f.vault, Some(KeySigner::from_seed([7; 32])));
    f.run(&forger, 160, "r1");
    let report = f.audit(Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::ForgedLeaf,
            Some("r1"),
            "not signed by this key"
        ),
        "{:?}",
        problems(&report)
    );
    assert!(has(
        &report,
        FindingKind::RewrittenRun,
        Some("r1"),
        "last checkpoint"
    ));
}

#[test]
fn a_deleted_run_is_detected_and_so_is_deleting_its_checkpoint_too() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    let ord = f.ord("r2");
    f.sql(&format!(
        "DELETE FROM nanovm_entries WHERE run = {ord}; DELETE FROM nanovm_runs WHERE ord = {ord};"
    ));
    let report = f.audit(Some(&kept));
    assert_eq!(
        problems(&report),
        vec![(
            FindingKind::DeletedRun,
            Some("r2".to_string()),
            problems(&report)[0].2.clone()
        )]
    );
    assert!(
        problems(&report)[0]
            .2
            .contains("is not in the store: it was deleted")
    );

    // Deleting its checkpoint as well: the log no longer extends the head kept elsewhere.
    f.sql("DELETE FROM nanovm_log WHERE run_id = 'r2'; DELETE FROM nanovm_heads;");
    let report = f.audit(Some(&kept));
    assert!(
        has(&report, FindingKind::RolledBack, None, "rolled back")
            || has(&report, FindingKind::LogRewritten, None, "does not extend"),
        "{:?}",
        problems(&report)
    );
    // Without the kept head, the gap in the indices still shows.
    let report = f.audit(None);
    assert!(
        has(
            &report,
            FindingKind::LogRewritten,
            Some("r3"),
            "removed or reordered"
        ),
        "{:?}",
        problems(&report)
    );
}

#[test]
fn a_restored_backup_is_detected_against_the_kept_head() {
    let f = fixture();
    let rt = f.signed();
    f.run(&rt, 100, "r1");
    let backup = f.path.with_file_name("backup.db");
    f.sql(&format!("VACUUM INTO '{}'", backup.display()));
    // The backup by itself is a consistent store...
    let alone = audit_path(&backup, &f.key, None);
    assert!(alone.ok(), "{:?}", alone.findings);
    // ... and the same run id re-sent from it would produce the same root: only the log knows.
    f.run(&rt, 200, "r2");
    f.run(&rt, 300, "r3");
    let kept = f.head();
    let report = audit_path(&backup, &f.key, Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::RolledBack,
            None,
            "an older backup restored"
        ),
        "{:?}",
        problems(&report)
    );
}

#[test]
fn swapped_runs_are_detected() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    let (a, b) = (f.ord("r1"), f.ord("r2"));
    // Swap the two runs' rows (and their stored counts and last hashes, so both load).
    f.sql(&format!(
        "UPDATE nanovm_entries SET run = CASE run WHEN {a} THEN -1 ELSE run END WHERE run = {a};
         UPDATE nanovm_entries SET run = {a} WHERE run = {b};
         UPDATE nanovm_entries SET run = {b} WHERE run = -1;
         CREATE TEMP TABLE t AS SELECT ord, entries, last_hash FROM nanovm_runs WHERE ord IN ({a}, {b});
         UPDATE nanovm_runs SET entries = (SELECT entries FROM t WHERE t.ord = {b}),
             last_hash = (SELECT last_hash FROM t WHERE t.ord = {b}) WHERE ord = {a};
         UPDATE nanovm_runs SET entries = (SELECT entries FROM t WHERE t.ord = {a}),
             last_hash = (SELECT last_hash FROM t WHERE t.ord = {a}) WHERE ord = {b};"
    ));
    let report = f.audit(Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::SwappedRun,
            Some("r1"),
            "holds the trace of run `r2`"
        ),
        "{:?}",
        problems(&report)
    );
    assert!(has(
        &report,
        FindingKind::SwappedRun,
        Some("r2"),
        "holds the trace of run `r1`"
    ));
}

#[test]
fn a_swap_rechained_under_the_other_run_id_is_detected() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    // r2's events, renamed r1 and rechained, planted as r1: the store loads it as r1.
    let r2 = block_on(f.store.load("r2")).expect("loads").expect("r2");
    let events = r2.into_iter().map(|e| match e.event {
        Event::RunStarted {
            program,
            program_hash,
            inputs,
            ..
        } => Event::RunStarted {
            run_id: "r1".into(),
            program,
            program_hash,
            inputs,
        },
        other => other,
    });
    f.plant("r1", &rechain(events));
    let report = f.audit(Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::RewrittenRun,
            Some("r1"),
            "does not match its last checkpoint"
        ),
        "{:?}",
        problems(&report)
    );
}

#[test]
fn a_forged_or_rewritten_checkpoint_is_detected() {
    let f = fixture();
    f.three_runs();
    let kept = f.head();
    // Flip one byte of a leaf (its signature no longer verifies, and the tree changes).
    f.sql("UPDATE nanovm_log SET leaf = CAST(substr(leaf, 1, length(leaf) - 1) || x'00' AS BLOB) WHERE idx = 1;");
    let report = f.audit(Some(&kept));
    assert!(
        has(
            &report,
            FindingKind::ForgedLeaf,
            Some("r2"),
            "not signed by this key"
        ),
        "{:?}",
        problems(&report)
    );
    assert!(has(
        &report,
        FindingKind::LogRewritten,
        None,
        "does not extend the tree head you kept"
    ));
}

#[test]
fn a_head_signed_by_another_key_is_refused() {
    let f = fixture();
    f.three_runs();
    let mut kept = f.head();
    kept.head.size = 2;
    let report = f.audit(Some(&kept));
    assert!(has(
        &report,
        FindingKind::BadHead,
        None,
        "not signed by this key"
    ));
}

// ---------------------------------------------------------------------------------------------
// Who did what (deliverable 5): operator actions record the caller's actor and reason
// ---------------------------------------------------------------------------------------------

#[test]
fn a_delivery_and_a_reconciliation_record_who_did_it_and_why() {
    use nanovm_runtime::trace::Actor;
    use nanovm_runtime::{Resolution, replay};
    use support::{crash_during, expire_leases, hang};

    let f = fixture();
    let clock = ManualClock::new(START);
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(f.vault.clone())
        .clock(clock.clone())
        .store(f.store.clone())
        .signer(KeySigner::from_seed(SEED))
        .build();
    // A suspended run, delivered to by a named reviewer.
    let waiting = block_on(rt.run::<cr::Program>(
        f.input(9000),
        Arc::new(Host::new()),
        RunOptions::new().run_id("review"),
    ))
    .expect("runs");
    assert_eq!(waiting.status, RunStatus::Suspended);
    let dana = Actor::new("dana@ops", "ticket OPS-12: customer called");
    let d = block_on(rt.deliver_as::<cr::Program>(
        "review",
        "approval",
        "ev-1",
        json!({"approved": false}),
        dana.clone(),
        Arc::new(Host::new()),
    ))
    .expect("delivers");
    let trace = d.into_execution().trace;
    let by = trace.entries().iter().find_map(|e| match &e.event {
        Event::Delivered { by, .. } => Some(by.clone()),
        _ => None,
    });
    assert_eq!(by, Some(Some(dana.clone())));
    assert!(
        trace
            .to_jsonl()
            .contains("\"by\":{\"id\":\"dana@ops\",\"reason\":\"ticket OPS-12: customer called\"}"),
        "the JSONL export names the actor"
    );
    replay::<cr::Program>(&trace).expect("the stored run replays with its actor");

    // A crash while a non-idempotent effect was in flight; an operator answers for it.
    let model_no = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "no").shared())
        .vault(f.vault.clone())
        .clock(clock.clone())
        .store(f.store.clone())
        .signer(KeySigner::from_seed(SEED))
        .build();
    let crashed = Host::new();
    crashed.hook("send_rejection", hang());
    crash_during(
        model_no.run::<cr::Program>(
            f.input(100),
            Arc::new(crashed.clone()),
            RunOptions::new().run_id("nr"),
        ),
        &crashed,
        "send_rejection",
    );
    expire_leases(&clock);
    let paused = block_on(model_no.resume_journaled::<cr::Program>(
        "nr",
        Arc::new(Host::new()),
        RunOptions::new(),
    ))
    .expect("resumes");
    assert_eq!(paused.status, RunStatus::NeedsReconciliation);
    let effect = nanovm_runtime::RunView::of_program::<cr::Program>(paused.trace.entries())
        .to_reconcile()[0];
    let sam = Actor::new("sam@ops", "the mail server's log shows it was sent");
    let done = block_on(model_no.reconcile_as::<cr::Program>(
        "nr",
        effect,
        Resolution::Done(json!({"sent": true})),
        sam.clone(),
        Arc::new(Host::new()),
    ))
    .expect("reconciles");
    let by = done.trace.entries().iter().find_map(|e| match &e.event {
        Event::Reconciled { by, .. } => Some(by.clone()),
        _ => None,
    });
    assert_eq!(by, Some(Some(sam)));
    replay::<cr::Program>(&done.trace).expect("replays");
    // Everything is checkpointed; rewriting who did it afterwards is a rewrite like any other.
    let report = f.audit(None);
    assert!(report.ok(), "{:?}", report.findings);
}

#[test]
fn a_cancellation_names_who_cancelled_and_why_and_replays() {
    use nanovm_runtime::trace::Actor;
    use nanovm_runtime::{CancelToken, replay};

    let f = fixture();
    let rt = f.signed();
    let token = CancelToken::new();
    token.cancel_by(Actor::new("lee@ops", "customer withdrew the request"));
    let e = block_on(rt.run::<cr::Program>(
        f.input(100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("c1").cancel(token),
    ))
    .expect("runs");
    assert_eq!(e.status, RunStatus::Cancelled);
    assert_eq!(
        e.message.as_deref(),
        Some("cancelled by `lee@ops`: customer withdrew the request")
    );
    replay::<cr::Program>(&e.trace).expect("replays with the recorded actor");
    // Any other closing message is not a cancellation this program could have recorded.
    let events = e.trace.into_entries().into_iter().map(|x| match x.event {
        Event::RunEnded { status, step, .. } => Event::RunEnded {
            status,
            step,
            message: Some("something else".into()),
        },
        other => other,
    });
    assert!(replay::<cr::Program>(&rechain(events)).is_err());
    let report = f.audit(None);
    assert!(report.ok(), "{:?}", report.findings);
}

#[test]
fn a_runs_checkpoint_is_proven_in_the_log_under_the_signed_head() {
    let f = fixture();
    f.three_runs();
    let proof = block_on(evidence::prove_inclusion(&f.store, &f.key, "r2"))
        .expect("reads")
        .expect("r2 is under the head");
    assert_eq!((proof.index, proof.head.head.size), (1, 3));
    assert_eq!(proof.checkpoint.checkpoint.run_id, "r2");
    assert!(proof.verifies(&f.key));
    // Another leaf's position, a changed path, another key: no.
    let mut moved = proof.clone();
    moved.index = 0;
    assert!(!moved.verifies(&f.key));
    let mut bent = proof.clone();
    bent.path[0][0] ^= 1;
    assert!(!bent.verifies(&f.key));
    assert!(!proof.verifies(&KeySigner::from_seed([9; 32]).public_key()));
    // Its JSON form round-trips, and is refused when it is not one.
    let back = evidence::InclusionProof::from_json(&proof.to_json()).expect("parses");
    assert_eq!(back, proof);
    assert!(back.verifies(&f.key));
    assert!(evidence::InclusionProof::from_json(r#"{"index": 1}"#).is_err());
    assert!(
        block_on(evidence::prove_inclusion(&f.store, &f.key, "nope"))
            .expect("reads")
            .is_none()
    );
}

/// A store that counts the log leaves read from it: what a checkpoint costs.
#[derive(Clone)]
struct Counting {
    inner: SqliteStore,
    read: Arc<AtomicU64>,
}

impl JournalStore for Counting {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.inner.append(run_id, entries, fence)
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
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
        self.inner.claim_run(run_id, worker, now_ms, lease_ms)
    }

    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.inner
            .start_run(run_id, entries, worker, now_ms, lease_ms)
    }

    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.inner.append_release(run_id, entries, lease)
    }

    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        self.inner.log_append(run_id, data)
    }

    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        Box::pin(async move {
            let leaves = self.inner.log(from).await?;
            self.read.fetch_add(leaves.len() as u64, Ordering::SeqCst);
            Ok(leaves)
        })
    }

    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        self.inner.put_head(size, head)
    }

    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        self.inner.head()
    }
}

#[test]
fn a_checkpoint_reads_only_the_leaves_it_has_not_seen() {
    let f = fixture();
    let counting = Counting {
        inner: f.store.clone(),
        read: Arc::new(AtomicU64::new(0)),
    };
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(f.vault.clone())
        .clock(ManualClock::new(START))
        .store(counting.clone())
        .signer(KeySigner::from_seed(SEED))
        .build();
    // The first checkpoint of the process rebuilds the frontier from the log (empty here).
    f.run(&rt, 100, "warm");
    let before = counting.read.load(Ordering::SeqCst);
    let runs = 40;
    for i in 0..runs {
        f.run(&rt, 100, &format!("c{i}"));
    }
    let read = counting.read.load(Ordering::SeqCst) - before;
    // Recomputing the root from every leaf reads ~2 * (1 + 2 + ... + 40) = 1,640 leaves; the
    // frontier reads at most the leaf just appended, per checkpoint.
    assert!(
        read <= runs,
        "{runs} checkpoints read {read} log leaves: the whole log each time"
    );
    // And the head it signed is the root over every leaf.
    let report = f.audit(None);
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.head.expect("a head").head.size, runs + 1);
}

#[test]
fn two_runtimes_on_one_store_each_read_the_others_leaves_and_sign_the_true_root() {
    let f = fixture();
    let (a, b) = (f.signed(), f.signed());
    for i in 0..7 {
        let rt = if i % 3 == 0 { &b } else { &a };
        f.run(rt, 100, &format!("m{i}"));
        let report = f.audit(None);
        assert!(report.ok(), "after run {i}: {:?}", report.findings);
        assert_eq!(report.head.expect("a head").head.size, i + 1);
    }
}

#[test]
fn a_log_replaced_under_a_running_runtime_is_read_again() {
    let f = fixture();
    let rt = f.three_runs();
    // The log loses its last leaf under the runtime (a restored backup): the next head is
    // still the root of the log as it is, not of what the runtime saw before.
    f.sql("DELETE FROM nanovm_log WHERE idx = 2; DELETE FROM nanovm_heads;");
    f.run(&rt, 100, "after");
    let c = rusqlite::Connection::open(&f.path).expect("opens the file");
    let size: i64 = c
        .query_row("SELECT COUNT(*) FROM nanovm_log", [], |r| r.get(0))
        .expect("counts");
    let report = f.audit(None);
    let head = report.head.expect("a head over the whole log");
    assert_eq!(head.head.size, size as u64);
}

/// The cost of signing per run with `NANOVM_SIGN_RUNS` runs already in the store (1,000 by
/// default): `cargo test --release -p nanovm-runtime --test evidence signing_cost -- --ignored
/// --nocapture`. The numbers are in docs/compliance.md.
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn signing_cost_per_run() {
    let n: usize = std::env::var("NANOVM_SIGN_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sample = 200;
    for signed in [false, true] {
        let f = fixture();
        let rt = runtime(
            &f.store,
            &f.vault,
            signed.then(|| KeySigner::from_seed(SEED)),
        );
        for i in 0..n {
            f.run(&rt, 100, &format!("fill{i}"));
        }
        let t = std::time::Instant::now();
        for i in 0..sample {
            f.run(&rt, 100, &format!("timed{i}"));
        }
        let per = t.elapsed().as_secs_f64() * 1000.0 / sample as f64;
        println!(
            "{}: {per:.2} ms per run with {n} runs in the store",
            if signed { "signed" } else { "unsigned" }
        );
    }
}

#[test]
fn concurrent_runs_of_one_runtime_share_its_frontier_and_sign_the_true_root() {
    let f = fixture();
    let rt = f.signed();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (rt, f) = (rt.clone(), &f);
            s.spawn(move || {
                for i in 0..5 {
                    f.run(&rt, 100, &format!("t{t}-{i}"));
                }
            });
        }
    });
    let report = f.audit(None);
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.head.expect("a head").head.size, 20);
}
