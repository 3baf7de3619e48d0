//! One conformance suite, every journal store: `MemoryStore`, `SqliteStore` (a temporary file
//! and in memory) and `PostgresStore`.
//!
//! Each test is an `async fn` generic over a [`Harness`] (a factory of fresh stores, plus the
//! few store-specific powers a test needs: reopening, damaging a stored entry), instantiated
//! once per store by `suite!`. The PostgreSQL tests are `#[ignore]`d (a plain `cargo test`
//! counts them as ignored, never as passed); `cargo test -- --ignored` runs them on
//! `DATABASE_URL` (`.ci/postgres.sh` prints one), each in its own schema so they can run
//! concurrently, and fails them without it (`.ci/run` does).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nanovm_runtime::store::MemoryStore;
use nanovm_runtime::store::{Fence, JournalError, JournalStore, Lease, RunQuery};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::Encoder;
use nanovm_runtime::trace::{Actor, Datum};
use nanovm_runtime::trace::{
    BudgetKind, Entry, Event, Reply, RunStatus, ToolOutcome, Trace, entry_line,
};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::vault::Vault;
use nanovm_runtime::{Digest, VaultId};
use nanovm_runtime::{RunOptions, Runtime};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Harnesses
// ---------------------------------------------------------------------------------------------

/// A kind of store under test.
trait Harness: Send + Sync + 'static {
    type S: JournalStore + Clone;

    /// An empty store of this kind.
    async fn fresh(&self) -> Self::S;

    /// The same database opened anew (`None`: the store does not survive being dropped).
    async fn reopen(&self, _store: &Self::S) -> Option<Self::S> {
        None
    }

    /// Overwrites the stored text of entry `seq` of `run_id`, behind the store's back (`false`:
    /// this store cannot be damaged from outside).
    async fn damage(&self, store: &Self::S, run_id: &str, seq: u64, line: &str) -> bool;

    /// Swaps the stored entries of runs `a` and `b`, behind the store's back (`false`: this
    /// store cannot be damaged from outside).
    async fn swap_entries(&self, store: &Self::S, a: &str, b: &str) -> bool;

    /// Deletes the last stored entry of `run_id` and lowers the record's entry count to match,
    /// behind the store's back, leaving the record's last hash as it was (`false`: the store
    /// keeps no last hash apart from its entries, or cannot be damaged from outside).
    async fn drop_last_entry(&self, store: &Self::S, run_id: &str) -> bool;

    /// Cleans up after a test that passed.
    async fn finish(&self) {}
}

struct Memory;

impl Harness for Memory {
    type S = MemoryStore;

    async fn fresh(&self) -> MemoryStore {
        MemoryStore::new()
    }

    async fn damage(&self, store: &MemoryStore, run_id: &str, seq: u64, line: &str) -> bool {
        // The memory store holds parsed entries: only a parseable line can be planted.
        let Ok(entry) = serde_json::from_str::<Entry>(line) else {
            return false;
        };
        if entry_line(&entry) != line {
            return false;
        }
        let mut entries = store.entries(run_id);
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| entries.get_mut(i)) else {
            return false;
        };
        *slot = entry;
        store.set_entries(run_id, entries);
        true
    }

    async fn swap_entries(&self, store: &MemoryStore, a: &str, b: &str) -> bool {
        let (ea, eb) = (store.entries(a), store.entries(b));
        store.set_entries(a, eb);
        store.set_entries(b, ea);
        true
    }

    async fn drop_last_entry(&self, _: &MemoryStore, _: &str) -> bool {
        false
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_harness {
    use super::*;
    use nanovm_runtime::store::SqliteStore;

    /// A database file in a temporary directory that lives as long as the test process.
    pub struct SqliteFile;

    fn temp_dir() -> &'static std::path::Path {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
            .path()
    }

    pub fn temp_db() -> std::path::PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        temp_dir().join(format!("store-{}.db", N.fetch_add(1, Ordering::SeqCst)))
    }

    impl Harness for SqliteFile {
        type S = SqliteStore;

        async fn fresh(&self) -> SqliteStore {
            SqliteStore::open(temp_db()).await.expect("opens")
        }

        async fn reopen(&self, store: &SqliteStore) -> Option<SqliteStore> {
            let path = store.path()?.to_path_buf();
            Some(SqliteStore::open(path).await.expect("reopens"))
        }

        async fn damage(&self, store: &SqliteStore, run_id: &str, seq: u64, line: &str) -> bool {
            let Some(path) = store.path() else {
                return false;
            };
            let c = rusqlite::Connection::open(path).expect("a second connection");
            c.busy_timeout(std::time::Duration::from_secs(5)).ok();
            let n = c
                .execute(
                    "UPDATE nanovm_entries SET line = ?1 WHERE seq = ?2 AND run = \
                     (SELECT ord FROM nanovm_runs WHERE run_id = ?3)",
                    rusqlite::params![line, seq as i64, run_id],
                )
                .expect("edits the database");
            n == 1
        }

        async fn swap_entries(&self, store: &SqliteStore, a: &str, b: &str) -> bool {
            let Some(path) = store.path() else {
                return false;
            };
            let c = rusqlite::Connection::open(path).expect("a second connection");
            c.busy_timeout(std::time::Duration::from_secs(5)).ok();
            c.execute_batch(&format!(
                "BEGIN; \
                 UPDATE nanovm_entries SET run = -1 WHERE run = \
                   (SELECT ord FROM nanovm_runs WHERE run_id = '{a}'); \
                 UPDATE nanovm_entries SET run = (SELECT ord FROM nanovm_runs WHERE run_id = '{a}') \
                   WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = '{b}'); \
                 UPDATE nanovm_entries SET run = (SELECT ord FROM nanovm_runs WHERE run_id = '{b}') \
                   WHERE run = -1; \
                 COMMIT;"
            ))
            .expect("edits the database");
            true
        }

        async fn drop_last_entry(&self, store: &SqliteStore, run_id: &str) -> bool {
            let Some(path) = store.path() else {
                return false;
            };
            let c = rusqlite::Connection::open(path).expect("a second connection");
            c.busy_timeout(std::time::Duration::from_secs(5)).ok();
            c.execute_batch(&format!(
                "BEGIN; \
                 DELETE FROM nanovm_entries WHERE run = \
                   (SELECT ord FROM nanovm_runs WHERE run_id = '{run_id}') \
                   AND seq = (SELECT entries - 1 FROM nanovm_runs WHERE run_id = '{run_id}'); \
                 UPDATE nanovm_runs SET entries = entries - 1 WHERE run_id = '{run_id}'; \
                 COMMIT;"
            ))
            .expect("edits the database");
            true
        }
    }

    /// A private in-memory database.
    pub struct SqliteMemory;

    impl Harness for SqliteMemory {
        type S = SqliteStore;

        async fn fresh(&self) -> SqliteStore {
            SqliteStore::in_memory().await.expect("opens")
        }

        async fn damage(&self, _: &SqliteStore, _: &str, _: u64, _: &str) -> bool {
            false
        }

        async fn swap_entries(&self, _: &SqliteStore, _: &str, _: &str) -> bool {
            false
        }

        async fn drop_last_entry(&self, _: &SqliteStore, _: &str) -> bool {
            false
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_harness {
    use super::*;
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};

    /// A unique schema name for one store of one test process.
    pub fn schema() -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "nvmtest_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 1_000_000),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    pub struct Postgres {
        pub url: String,
        /// The schemas this harness created (dropped when the test passes).
        pub schemas: std::sync::Mutex<Vec<String>>,
    }

    /// The PostgreSQL harness; fails the test when `DATABASE_URL` is not set.
    pub fn harness() -> Postgres {
        Postgres {
            url: support::peers::database_url(),
            schemas: std::sync::Mutex::default(),
        }
    }

    pub async fn client(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("a second connection");
        tokio::spawn(conn);
        client
    }

    pub async fn drop_schemas(url: &str, schemas: Vec<String>) {
        let c = client(url).await;
        for s in schemas {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .await
                .expect("drops the test schema");
        }
    }

    impl Harness for Postgres {
        type S = PostgresStore;

        async fn fresh(&self) -> PostgresStore {
            let schema = schema();
            self.schemas.lock().unwrap().push(schema.clone());
            PostgresStore::connect_with(&self.url, PostgresOptions::new().schema(schema))
                .await
                .expect("connects")
        }

        async fn finish(&self) {
            let schemas = std::mem::take(&mut *self.schemas.lock().unwrap());
            drop_schemas(&self.url, schemas).await;
        }

        async fn reopen(&self, store: &PostgresStore) -> Option<PostgresStore> {
            let schema = store.schema().to_string();
            Some(
                PostgresStore::connect_with(&self.url, PostgresOptions::new().schema(schema))
                    .await
                    .expect("reconnects"),
            )
        }

        async fn damage(&self, store: &PostgresStore, run_id: &str, seq: u64, line: &str) -> bool {
            let client = client(&self.url).await;
            let s = store.schema();
            let n = client
                .execute(
                    &format!(
                        "UPDATE {s}.nanovm_entries SET line = $1 WHERE seq = $2 AND run = \
                         (SELECT ord FROM {s}.nanovm_runs WHERE run_id = $3)"
                    ),
                    &[&line, &(seq as i64), &run_id],
                )
                .await
                .expect("edits the database");
            n == 1
        }

        async fn swap_entries(&self, store: &PostgresStore, a: &str, b: &str) -> bool {
            let client = client(&self.url).await;
            let s = store.schema();
            // One statement (foreign and primary keys are checked per row): each entry takes
            // the contents of the other run's entry with the same seq.
            client
                .execute(
                    &format!(
                        "UPDATE {s}.nanovm_entries e SET hash = o.hash, line = o.line \
                         FROM {s}.nanovm_entries o, {s}.nanovm_runs ra, {s}.nanovm_runs rb \
                         WHERE ra.run_id = $1 AND rb.run_id = $2 AND e.seq = o.seq \
                         AND ((e.run = ra.ord AND o.run = rb.ord) \
                           OR (e.run = rb.ord AND o.run = ra.ord))"
                    ),
                    &[&a, &b],
                )
                .await
                .expect("edits the database");
            true
        }

        async fn drop_last_entry(&self, store: &PostgresStore, run_id: &str) -> bool {
            let client = client(&self.url).await;
            let s = store.schema();
            client
                .batch_execute(&format!(
                    "BEGIN; \
                     DELETE FROM {s}.nanovm_entries WHERE run = \
                       (SELECT ord FROM {s}.nanovm_runs WHERE run_id = '{run_id}') \
                       AND seq = (SELECT entries - 1 FROM {s}.nanovm_runs WHERE run_id = '{run_id}'); \
                     UPDATE {s}.nanovm_runs SET entries = entries - 1 WHERE run_id = '{run_id}'; \
                     COMMIT;"
                ))
                .await
                .expect("edits the database");
            true
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building traces
// ---------------------------------------------------------------------------------------------

const PROGRAM: &str = "conformance";

fn program_hash() -> Digest {
    Digest::of(b"conformance program")
}

/// A run's trace under construction.
struct Run {
    id: String,
    trace: Trace,
    scratch: Encoder,
}

impl Run {
    fn new(id: &str) -> Run {
        Run::of_program(id, PROGRAM)
    }

    fn of_program(id: &str, program: &str) -> Run {
        let mut r = Run {
            id: id.to_string(),
            trace: Trace::new(),
            scratch: Encoder::new(),
        };
        r.push(Event::RunStarted {
            run_id: id.to_string(),
            program: program.to_string().into(),
            program_hash: program_hash(),
            inputs: vec![
                (
                    "request".into(),
                    Datum::Plain(json!("It broke, «bad» \u{1}")),
                ),
                (
                    "email".into(),
                    Datum::Secret {
                        vault_id: VaultId([7; 16]),
                        commitment: Digest::of(b"c"),
                    },
                ),
            ],
        });
        r
    }

    fn push(&mut self, event: Event) -> &mut Run {
        self.trace.push(event, &mut self.scratch);
        self
    }

    fn decision(&mut self, i: u32) -> &mut Run {
        self.push(Event::Decision {
            step: "policy".into(),
            arm: Some(i),
            next: "refund".into(),
        })
    }

    fn entries(&self) -> &[Entry] {
        self.trace.entries()
    }

    /// Entries `from..` (what has not been appended yet).
    fn from(&self, from: usize) -> &[Entry] {
        &self.trace.entries()[from..]
    }

    fn len(&self) -> usize {
        self.trace.len()
    }
}

/// Every kind of event, with awkward values.
fn rich_run(id: &str) -> Run {
    let mut r = Run::new(id);
    r.push(Event::Model {
        step: "analyze".into(),
        branch: None,
        attempt: 1,
        model: Some("gpt".into()),
        system: Some("sys\n\"quoted\"".into()),
        prompt: "Is this valid? ✓ 日本語 \u{7f}".into(),
        instruction: Some("Answer with exactly one word: one of yes, no.".into()),
        reply: Reply::Answer {
            text: " yes\n".into(),
            prompt_tokens: 12,
            completion_tokens: u64::MAX,
            cache_hit: false,
            tokens_estimated: false,
            // Not exactly representable in decimal: the store must round-trip the bits.
            probability: Some(0.1 + 0.2),
            raw_text: Some("{\"choice\": \" yes\\n\"}".into()),
            constraint: Some("json_object".into()),
        },
        next: Some("policy".into()),
    })
    .decision(0)
    .push(Event::ToolIntent {
        step: "refund".into(),
        branch: Some("b1".into()),
        attempt: 2,
        tool: "issue_refund".into(),
        effect_id: Digest::of(b"effect"),
        args: vec![("amount_cents".into(), Datum::Plain(json!(1200)))],
    })
    .push(Event::ToolResult {
        step: "refund".into(),
        branch: Some("b1".into()),
        attempt: 2,
        tool: "issue_refund".into(),
        key: Digest::of(b"effect"),
        args: None,
        result: ToolOutcome::Ok(
            json!({"id": "rf_1", "n": [1.5, -2, 3e40, null], "z": {"b": 1, "a": 2}}),
        ),
        next: Some("refunded".into()),
    })
    .push(Event::ToolResult {
        step: "lookup".into(),
        branch: None,
        attempt: 1,
        tool: "lookup_order".into(),
        key: Digest::of(b"k"),
        args: Some(vec![("id".into(), Datum::Plain(json!("o-1")))]),
        result: ToolOutcome::Err {
            message: "timeout".into(),
            retryable: true,
        },
        next: None,
    })
    .push(Event::Joined {
        step: "par".into(),
        failed: vec!["a".into(), "b".into()],
        next: None,
    })
    .push(Event::BudgetExceeded {
        step: "x".into(),
        budget: BudgetKind::MaxTokens,
        limit: 10,
        used: 11,
    })
    .push(Event::RunEnded {
        status: RunStatus::BudgetExceeded,
        step: Some("x".into()),
        message: Some("out of tokens: ü".into()),
    })
    .push(Event::Erased {
        vault_id: VaultId([7; 16]),
        by: Actor::new("dpo", "request ü"),
    });
    r
}

async fn append<S: JournalStore>(
    s: &S,
    run: &Run,
    from: usize,
    to: usize,
) -> Result<(), JournalError> {
    s.append(&run.id, &run.entries()[from..to], None).await
}

fn conflict(r: Result<(), JournalError>) -> (u64, u64) {
    match r {
        Err(JournalError::Conflict {
            expected, found, ..
        }) => (expected, found),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

async fn round_trip_is_byte_exact<H: Harness>(h: &H) {
    let s = h.fresh().await;
    assert_eq!(s.load("nope").await.unwrap(), None);
    assert_eq!(s.run("nope").await.unwrap(), None);
    let run = rich_run("rt-1");
    // In three appends of different sizes, as the executor's group commits make them.
    append(&s, &run, 0, 1).await.unwrap();
    append(&s, &run, 1, 4).await.unwrap();
    append(&s, &run, 4, run.len()).await.unwrap();
    let back = s.load("rt-1").await.unwrap().expect("stored");
    assert_eq!(back, run.entries());
    for (a, b) in back.iter().zip(run.entries()) {
        assert_eq!(entry_line(a), entry_line(b), "byte-exact");
    }
    let t = Trace::from_entries(back).expect("the chain re-verifies");
    assert_eq!(t.root(), run.trace.root());
    // An empty append is a no-op.
    s.append("rt-1", &[], None).await.unwrap();
    s.append("never", &[], None).await.unwrap();
    assert_eq!(s.run("never").await.unwrap(), None);
}

async fn seq_gaps_and_overlaps_conflict<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("seq");
    for i in 0..6 {
        run.decision(i);
    }
    append(&s, &run, 0, 3).await.unwrap();
    // A gap: entries 4.. while 3 is next.
    assert_eq!(conflict(append(&s, &run, 4, 6).await), (3, 4));
    // An overlap: 2.. again.
    assert_eq!(conflict(append(&s, &run, 2, 5).await), (3, 2));
    // A conflict writes nothing; the right continuation still works.
    assert_eq!(s.run("seq").await.unwrap().unwrap().entries, 3);
    append(&s, &run, 3, run.len()).await.unwrap();
    assert_eq!(s.load("seq").await.unwrap().unwrap(), run.entries());
    // A run that does not exist yet must start at 0.
    let other = Run::new("seq-other");
    let mut r2 = Run::new("seq-other");
    r2.decision(1);
    assert_eq!(
        conflict(s.append(&other.id, r2.from(1), None).await),
        (0, 1)
    );
    assert_eq!(s.run("seq-other").await.unwrap(), None);
}

async fn a_duplicate_start_conflicts<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let run = Run::new("dup");
    append(&s, &run, 0, 1).await.unwrap();
    assert_eq!(conflict(append(&s, &run, 0, 1).await), (1, 0));
    // Even a different start for the same run id.
    let mut other = Run::new("dup");
    other.trace = Trace::new();
    other.push(Event::RunStarted {
        run_id: "dup".into(),
        program: "another".into(),
        program_hash: Digest::of(b"another"),
        inputs: Vec::new(),
    });
    assert_eq!(conflict(append(&s, &other, 0, 1).await), (1, 0));
    let rec = s.run("dup").await.unwrap().unwrap();
    assert_eq!((rec.program.as_str(), rec.entries), (PROGRAM, 1));
}

async fn a_batch_with_a_bad_entry_stores_nothing<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("atomic");
    for i in 0..6 {
        run.decision(i);
    }
    append(&s, &run, 0, 2).await.unwrap();
    let before = s.run("atomic").await.unwrap().unwrap();

    // A sequence gap in the middle of the batch.
    let mut gap = run.from(2).to_vec();
    gap.remove(2);
    assert!(matches!(
        s.append("atomic", &gap, None).await,
        Err(JournalError::Conflict {
            expected: 4,
            found: 5,
            ..
        })
    ));
    // A broken hash in the middle of the batch.
    let mut broken = run.from(2).to_vec();
    broken[2].event = Event::Decision {
        step: "policy".into(),
        arm: Some(99),
        next: "refund".into(),
    };
    assert!(matches!(
        s.append("atomic", &broken, None).await,
        Err(JournalError::Invalid { .. })
    ));
    // An entry that does not chain onto the stored ones.
    let mut unchained = run.from(2).to_vec();
    unchained[0].prev = Digest::of(b"elsewhere");
    assert!(matches!(
        s.append("atomic", &unchained, None).await,
        Err(JournalError::Invalid { .. })
    ));
    assert_eq!(s.load("atomic").await.unwrap().unwrap(), run.entries()[..2]);
    let after = s.run("atomic").await.unwrap().unwrap();
    assert_eq!(after.entries, 2);
    assert_eq!(after.status, before.status);

    // A new run whose first batch is bad is not created at all.
    let mut fresh = Run::new("atomic-new");
    fresh.decision(0).decision(1);
    let mut bad = fresh.entries().to_vec();
    bad[1].hash = Digest::of(b"x");
    assert!(s.append("atomic-new", &bad, None).await.is_err());
    assert_eq!(s.run("atomic-new").await.unwrap(), None);
    assert_eq!(s.load("atomic-new").await.unwrap(), None);
    // A run must start with its own run_started.
    let mut named = Run::new("somebody-else");
    named.decision(0);
    assert!(matches!(
        s.append("atomic-new", named.entries(), None).await,
        Err(JournalError::Invalid { .. })
    ));
    assert_eq!(s.run("atomic-new").await.unwrap(), None);
}

async fn the_record_follows_the_lifecycle<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("life");
    run.decision(0);
    append(&s, &run, 0, 2).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(r.run_id, "life");
    assert_eq!(r.program, PROGRAM);
    assert_eq!(r.program_hash, program_hash());
    assert_eq!(r.status, RunStatus::Running);
    assert_eq!(r.entries, 2);
    assert_eq!(r.epoch, 0);
    assert_eq!((r.lease_owner.as_deref(), r.lease_expires_ms), (None, None));
    assert!(r.created_ms > 1_600_000_000_000 && r.updated_ms >= r.created_ms);

    let mark = run.len();
    run.push(Event::Suspended {
        step: "manual_review".into(),
        event: "approval".into(),
        deadline_ms: Some(1_700_000_086_400_000),
    });
    append(&s, &run, mark, run.len()).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Suspended);
    assert_eq!(r.end_step.as_deref(), Some("manual_review"));
    assert_eq!(r.waiting_for.as_deref(), Some("approval"));
    assert_eq!(r.deadline_ms, Some(1_700_000_086_400_000));
    assert_eq!(r.entries, 3);

    let mark = run.len();
    run.push(Event::Delivered {
        step: "manual_review".into(),
        event: "approval".into(),
        event_id: "ev-1".into(),
        payload: json!({"approved": true}),
        next: "review_policy".into(),
        by: None,
    });
    append(&s, &run, mark, run.len()).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert_eq!(
        (r.end_step, r.waiting_for, r.deadline_ms),
        (None, None, None)
    );

    // An ambiguous effect: needs_reconciliation, then an operator's answer makes it runnable.
    let mark = run.len();
    run.push(Event::RunEnded {
        status: RunStatus::NeedsReconciliation,
        step: Some("refund".into()),
        message: Some("issue_refund: outcome unknown".into()),
    });
    append(&s, &run, mark, run.len()).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::NeedsReconciliation);
    assert_eq!(r.end_step.as_deref(), Some("refund"));
    assert_eq!(r.message.as_deref(), Some("issue_refund: outcome unknown"));

    let mark = run.len();
    run.push(Event::Reconciled {
        step: "refund".into(),
        effect_id: Digest::of(b"e"),
        result: Some(json!({"id": "rf"})),
        by: None,
    });
    run.push(Event::Suspended {
        step: "wait2".into(),
        event: "ping".into(),
        deadline_ms: None,
    });
    run.push(Event::TimedOut {
        step: "wait2".into(),
        next: "done".into(),
    });
    // Several status changes in one batch: the last one counts.
    run.push(Event::RunEnded {
        status: RunStatus::Success,
        step: Some("done".into()),
        message: Some("all good".into()),
    });
    append(&s, &run, mark, run.len()).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Success);
    assert_eq!(r.end_step.as_deref(), Some("done"));
    assert_eq!(r.message.as_deref(), Some("all good"));
    assert_eq!((r.waiting_for, r.deadline_ms), (None, None));
    assert_eq!(r.entries, run.len() as u64);
    // An erasure after the end changes nothing but the count.
    let mark = run.len();
    run.push(Event::Erased {
        vault_id: VaultId([7; 16]),
        by: Actor::new("dpo", "erasure request"),
    });
    append(&s, &run, mark, run.len()).await.unwrap();
    let r = s.run("life").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.entries),
        (RunStatus::Success, run.len() as u64)
    );
}

/// Creates a run of `program` in the state `status` (events appended as the executor would).
async fn run_in<S: JournalStore>(s: &S, id: &str, program: &str, state: &str) -> Run {
    let mut run = Run::of_program(id, program);
    match state {
        "running" => {}
        "suspended" => {
            run.push(Event::Suspended {
                step: "wait".into(),
                event: "approval".into(),
                deadline_ms: None,
            });
        }
        "suspended@1000" => {
            run.push(Event::Suspended {
                step: "wait".into(),
                event: "approval".into(),
                deadline_ms: Some(1000),
            });
        }
        "success" | "failed" | "needs_reconciliation" => {
            run.push(Event::RunEnded {
                status: RunStatus::parse(state).unwrap(),
                step: Some("end".into()),
                message: None,
            });
        }
        other => panic!("no state {other}"),
    }
    s.append(id, run.entries(), None).await.unwrap();
    run
}

async fn runs_are_filtered_and_ordered_by_creation<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let made = [
        ("q1", "alpha", "running"),
        ("q2", "beta", "success"),
        ("q3", "alpha", "success"),
        ("q4", "alpha", "suspended"),
        ("q5", "beta", "running"),
        ("q6", "alpha", "success"),
    ];
    for (id, p, st) in made {
        run_in(&s, id, p, st).await;
    }
    let ids = |rs: Vec<nanovm_runtime::store::RunRecord>| {
        rs.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.runs(&RunQuery::new()).await.unwrap()),
        ["q1", "q2", "q3", "q4", "q5", "q6"]
    );
    assert_eq!(
        ids(s.runs(&RunQuery::new().program("alpha")).await.unwrap()),
        ["q1", "q3", "q4", "q6"]
    );
    assert_eq!(
        ids(s
            .runs(&RunQuery::new().status(RunStatus::Success))
            .await
            .unwrap()),
        ["q2", "q3", "q6"]
    );
    assert_eq!(
        ids(s
            .runs(
                &RunQuery::new()
                    .program("alpha")
                    .status(RunStatus::Success)
                    .limit(1)
            )
            .await
            .unwrap()),
        ["q3"]
    );
    assert_eq!(
        ids(s.runs(&RunQuery::new().limit(0)).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(s.runs(&RunQuery::new().program("gamma")).await.unwrap()),
        Vec::<String>::new()
    );
    // Appending later does not reorder.
    let mut q1 = Run::of_program("q1", "alpha");
    q1.decision(3);
    s.append("q1", q1.from(1), None).await.unwrap();
    assert_eq!(
        ids(s.runs(&RunQuery::new().program("alpha")).await.unwrap())[0],
        "q1"
    );
}

async fn claims_take_only_runnable_runs<H: Harness>(h: &H) {
    let s = h.fresh().await;
    run_in(&s, "c-done", "p", "success").await;
    run_in(&s, "c-failed", "p", "failed").await;
    run_in(&s, "c-recon", "p", "needs_reconciliation").await;
    run_in(&s, "c-wait", "p", "suspended").await;
    run_in(&s, "c-timer", "p", "suspended@1000").await;
    run_in(&s, "c-other", "q", "running").await;
    run_in(&s, "c-run1", "p", "running").await;
    run_in(&s, "c-run2", "p", "running").await;

    // Before the timer's deadline: the running ones, oldest first.
    let a = s.claim("p", "w1", 500, 100).await.unwrap().expect("c-run1");
    assert_eq!(
        a,
        Lease {
            run_id: "c-run1".into(),
            epoch: 1,
            worker: "w1".into(),
            expires_ms: 600
        }
    );
    let b = s.claim("p", "w2", 500, 100).await.unwrap().expect("c-run2");
    assert_eq!((b.run_id.as_str(), b.epoch), ("c-run2", 1));
    assert_eq!(s.claim("p", "w3", 500, 100).await.unwrap(), None);
    let r = s.run("c-run1").await.unwrap().unwrap();
    assert_eq!(
        (r.epoch, r.lease_owner.as_deref(), r.lease_expires_ms),
        (1, Some("w1"), Some(600))
    );

    // At the deadline the suspended run's timeout must fire: claimable. Leases still held.
    let t = s
        .claim("p", "w3", 1000, 100)
        .await
        .unwrap()
        .expect("c-timer");
    assert_eq!((t.run_id.as_str(), t.epoch), ("c-timer", 1));
    assert_eq!(s.claim("p", "w3", 599, 100).await.unwrap(), None);

    // After expiry (expires_ms <= now) a lease can be taken over; the epoch moves on.
    let a2 = s.claim("p", "w4", 600, 100).await.unwrap().expect("c-run1");
    assert_eq!(
        (a2.run_id.as_str(), a2.epoch, a2.worker.as_str()),
        ("c-run1", 2, "w4")
    );
    // Another program's runs are never handed out.
    let q = s.claim("q", "w5", 0, 100).await.unwrap().expect("c-other");
    assert_eq!(q.run_id, "c-other");
    // Never: terminal, reconciliation, waiting without a deadline.
    for now in [10_000, 1_000_000] {
        while let Some(l) = s.claim("p", "w6", now, 1).await.unwrap() {
            assert!(
                l.run_id.starts_with("c-run") || l.run_id == "c-timer",
                "{l:?}"
            );
        }
    }
    assert_eq!(s.claim("nobody", "w", 0, 1).await.unwrap(), None);
}

/// `claim_versions` hands out only runs recorded under one of the given program hashes: a run
/// of another version of the program is not claimed (its epoch stays), whatever its age.
async fn claims_by_version_skip_other_versions<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let v1 = program_hash();
    let v2 = Digest::of(b"conformance program, version 2");
    let in_version = |id: &str, hash: Digest| {
        let mut r = Run::of_program(id, "pv");
        let mut t = Trace::new();
        let mut e = Encoder::new();
        for entry in r.trace.entries() {
            let mut ev = entry.event.clone();
            if let Event::RunStarted { program_hash, .. } = &mut ev {
                *program_hash = hash;
            }
            t.push(ev, &mut e);
        }
        r.trace = t;
        r
    };
    for (id, hash) in [("v-old", v1), ("v-new", v2), ("v-old2", v1)] {
        let r = in_version(id, hash);
        s.append(id, r.entries(), None).await.unwrap();
    }
    let l = s
        .claim_versions("pv", &[v2], "w2", 0, 100)
        .await
        .unwrap()
        .expect("the v2 run");
    assert_eq!((l.run_id.as_str(), l.epoch), ("v-new", 1));
    assert_eq!(
        s.claim_versions("pv", &[v2], "w2", 0, 100).await.unwrap(),
        None
    );
    assert_eq!(
        s.claim_versions("pv", &[], "w2", 0, 100).await.unwrap(),
        None
    );
    for id in ["v-old", "v-old2"] {
        let r = s.run(id).await.unwrap().unwrap();
        assert_eq!((r.epoch, r.lease_owner), (0, None), "{id} untouched");
    }
    let l = s
        .claim_versions("pv", &[v2, v1], "w1", 0, 100)
        .await
        .unwrap()
        .expect("the oldest v1 run");
    assert_eq!(l.run_id, "v-old");
    assert_eq!(
        s.claim_versions("other", &[v1, v2], "w1", 0, 100)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_claimers_never_share_a_run<H: Harness>(h: &H) {
    let s = h.fresh().await;
    const RUNS: usize = 40;
    const CLAIMERS: usize = 12;
    for i in 0..RUNS {
        run_in(&s, &format!("cc-{i}"), "p", "running").await;
    }
    let mut tasks = Vec::new();
    for w in 0..CLAIMERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = s
                .claim("p", &format!("w{w}"), 1_000, 60_000)
                .await
                .expect("claims")
            {
                got.push(l);
                tokio::task::yield_now().await;
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a claimer"));
    }
    let ids: HashSet<_> = all.iter().map(|l| l.run_id.clone()).collect();
    assert_eq!(all.len(), RUNS, "every run claimed exactly once: {all:?}");
    assert_eq!(ids.len(), RUNS);
    assert!(all.iter().all(|l| l.epoch == 1));
}

async fn claim_run_takes_one_given_run<H: Harness>(h: &H) {
    let s = h.fresh().await;
    assert_eq!(s.claim_run("nope", "w", 0, 10).await.unwrap(), None);
    run_in(&s, "cr-wait", "p", "suspended").await;
    run_in(&s, "cr-run", "p", "running").await;
    // Whatever the status: a suspended run without a deadline is never claimed by `claim`,
    // but can be taken by id (to deliver an event to it).
    let a = s
        .claim_run("cr-wait", "w1", 1_000, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a,
        Lease {
            run_id: "cr-wait".into(),
            epoch: 1,
            worker: "w1".into(),
            expires_ms: 1_100
        }
    );
    // A live lease is not taken, not even by the same worker; an expired one is.
    assert_eq!(
        s.claim_run("cr-wait", "w2", 1_099, 100).await.unwrap(),
        None
    );
    assert_eq!(
        s.claim_run("cr-wait", "w1", 1_099, 100).await.unwrap(),
        None
    );
    let b = s
        .claim_run("cr-wait", "w2", 1_100, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.epoch, b.worker.as_str()), (2, "w2"));
    assert!(matches!(
        s.renew(&a, 1_100, 100).await,
        Err(JournalError::Fenced {
            held: 1,
            current: 2,
            ..
        })
    ));
    // A run held by id is not handed out by `claim`, and the other way round.
    let c = s
        .claim_run("cr-run", "w3", 0, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.claim("p", "w4", 500, 100).await.unwrap(), None);
    s.release(&c).await.unwrap();
    let d = s.claim("p", "w4", 500, 100).await.unwrap().unwrap();
    assert_eq!((d.run_id.as_str(), d.epoch), ("cr-run", 2));
    assert_eq!(s.claim_run("cr-run", "w5", 550, 100).await.unwrap(), None);
    // Of many concurrent claimers of one run, exactly one wins.
    run_in(&s, "cr-race", "p", "running").await;
    let tasks: Vec<_> = (0..12)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                s.claim_run("cr-race", &format!("w{w}"), 10, 1_000)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(won[0].epoch, 1);
}

/// `start_run`: a fresh run is created and leased in one transaction; a run id in use is a
/// conflict that writes nothing; of concurrent creators of one run, exactly one owns it.
async fn start_run_creates_a_run_owned_from_its_first_write<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("sr");
    run.decision(1);
    run.decision(2);
    let lease = s
        .start_run("sr", &run.entries()[..2], "w1", 1_000, 100)
        .await
        .expect("creates");
    assert_eq!(
        lease,
        Lease {
            run_id: "sr".into(),
            epoch: 1,
            worker: "w1".into(),
            expires_ms: 1_100
        }
    );
    let rec = s.run("sr").await.unwrap().expect("stored");
    assert_eq!(
        (rec.entries, rec.epoch, rec.lease_owner.as_deref()),
        (2, 1, Some("w1"))
    );
    assert_eq!(rec.lease_expires_ms, Some(1_100));
    // A second creation of the run id conflicts and changes nothing.
    assert_eq!(
        conflict(
            s.start_run("sr", &run.entries()[..1], "w2", 1_000, 100)
                .await
                .map(|_| ())
        ),
        (2, 0)
    );
    let again = s.run("sr").await.unwrap().expect("stored");
    assert_eq!((again.entries, again.epoch), (2, 1));
    assert_eq!(again.lease_owner.as_deref(), Some("w1"));
    // Owned: nobody claims it while the lease is live; writes are fenced by it.
    assert_eq!(s.claim_run("sr", "w2", 1_050, 100).await.unwrap(), None);
    assert_eq!(s.claim(PROGRAM, "w2", 1_050, 100).await.unwrap(), None);
    assert!(matches!(
        s.append("sr", run.from(2), Some(Fence { epoch: 0 })).await,
        Err(JournalError::Fenced {
            held: 0,
            current: 1,
            ..
        })
    ));
    s.append("sr", run.from(2), Some(lease.fence()))
        .await
        .expect("the owner writes");
    // Expired: taken over, and the old owner is fenced.
    let taken = s
        .claim_run("sr", "w2", 1_100, 100)
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(taken.epoch, 2);
    assert!(matches!(
        s.renew(&lease, 1_100, 100).await,
        Err(JournalError::Fenced { .. })
    ));
    // No entries is not a run.
    assert!(matches!(
        s.start_run("sr-none", &[], "w1", 0, 100).await,
        Err(JournalError::Invalid { .. })
    ));
    assert_eq!(s.run("sr-none").await.unwrap(), None);
    // Of concurrent creators of one run, exactly one owns it; the others conflict.
    let race = Run::new("sr-race");
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            let entries = race.entries().to_vec();
            tokio::spawn(async move {
                s.start_run("sr-race", &entries, &format!("w{w}"), 10, 1_000)
                    .await
            })
        })
        .collect();
    let mut owners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(lease) => owners.push(lease),
            Err(JournalError::Conflict { .. }) => {}
            Err(e) => panic!("a creator failed otherwise: {e:?}"),
        }
    }
    assert_eq!(owners.len(), 1, "{owners:?}");
    let rec = s.run("sr-race").await.unwrap().expect("stored");
    assert_eq!((rec.entries, rec.epoch), (1, 1));
    assert_eq!(rec.lease_owner.as_deref(), Some(owners[0].worker.as_str()));
}

/// An execution's last write: its entries and the release of its lease in one transaction, all
/// or nothing.
async fn append_release_writes_and_gives_back_at_once<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("ar");
    run.decision(1);
    run.decision(2);
    run.decision(3);
    let lease = s
        .start_run("ar", &run.entries()[..1], "w1", 1_000, 100)
        .await
        .expect("creates");
    // A stale lease (wrong epoch, or another owner): nothing written, the lease still held.
    let stale = Lease {
        epoch: 0,
        ..lease.clone()
    };
    assert!(matches!(
        s.append_release("ar", run.from(1), &stale).await,
        Err(JournalError::Fenced { .. })
    ));
    let other = Lease {
        worker: "w2".into(),
        ..lease.clone()
    };
    assert!(matches!(
        s.append_release("ar", run.from(1), &other).await,
        Err(JournalError::Fenced { .. })
    ));
    // A batch that does not continue the run: nothing written, nothing released.
    assert_eq!(
        conflict(s.append_release("ar", run.from(2), &lease).await),
        (1, 2)
    );
    let rec = s.run("ar").await.unwrap().unwrap();
    assert_eq!(
        (rec.entries, rec.epoch, rec.lease_owner.as_deref()),
        (1, 1, Some("w1"))
    );
    // The owner's last write: entries stored, lease given back, epoch unchanged.
    s.append_release("ar", run.from(1), &lease)
        .await
        .expect("the owner's last write");
    let rec = s.run("ar").await.unwrap().unwrap();
    assert_eq!(
        (
            rec.entries,
            rec.epoch,
            rec.lease_owner,
            rec.lease_expires_ms
        ),
        (4, 1, None, None)
    );
    assert_eq!(s.load("ar").await.unwrap().unwrap(), run.entries());
    // Released: the lease is spent (no second release, no renewal); the run is free to claim.
    assert!(matches!(
        s.append_release("ar", &[], &lease).await,
        Err(JournalError::Fenced { .. })
    ));
    assert!(matches!(
        s.renew(&lease, 1_010, 100).await,
        Err(JournalError::Fenced { .. })
    ));
    let next = s.claim_run("ar", "w2", 1_010, 100).await.unwrap().unwrap();
    assert_eq!(next.epoch, 2);
    // An empty batch only releases.
    s.append_release("ar", &[], &next).await.unwrap();
    let rec = s.run("ar").await.unwrap().unwrap();
    assert_eq!((rec.entries, rec.epoch, rec.lease_owner), (4, 2, None));
    // A lease on a run the store does not hold is fenced.
    let ghost = Lease {
        run_id: "ar-ghost".into(),
        ..next
    };
    assert!(matches!(
        s.append_release("ar-ghost", &Run::new("ar-ghost").entries()[..1], &ghost)
            .await,
        Err(JournalError::Fenced { .. })
    ));
    assert_eq!(s.run("ar-ghost").await.unwrap(), None);
}

async fn renew_release_and_stale_leases<H: Harness>(h: &H) {
    let s = h.fresh().await;
    run_in(&s, "lease", "p", "running").await;
    let l1 = s.claim("p", "w1", 1_000, 100).await.unwrap().unwrap();
    let l1b = s.renew(&l1, 1_050, 100).await.unwrap();
    assert_eq!((l1b.epoch, l1b.expires_ms), (1, 1_150));
    assert_eq!(
        s.run("lease").await.unwrap().unwrap().lease_expires_ms,
        Some(1_150)
    );
    // Not claimable while renewed; an expired lease nobody took can still be renewed.
    assert_eq!(s.claim("p", "w2", 1_100, 100).await.unwrap(), None);
    let l1c = s.renew(&l1b, 5_000, 100).await.unwrap();
    assert_eq!(l1c.expires_ms, 5_100);
    // Released: free at once, epoch unchanged; the old lease can neither renew nor release.
    s.release(&l1c).await.unwrap();
    let r = s.run("lease").await.unwrap().unwrap();
    assert_eq!(
        (r.epoch, r.lease_owner, r.lease_expires_ms),
        (1, None, None)
    );
    assert!(matches!(
        s.renew(&l1c, 5_000, 100).await,
        Err(JournalError::Fenced {
            held: 1,
            current: 1,
            ..
        })
    ));
    assert!(matches!(
        s.release(&l1c).await,
        Err(JournalError::Fenced { .. })
    ));
    let l2 = s.claim("p", "w2", 5_000, 100).await.unwrap().unwrap();
    assert_eq!(l2.epoch, 2);
    // The stale lease of w1 (epoch 1) is fenced everywhere.
    assert!(matches!(
        s.renew(&l1, 5_000, 100).await,
        Err(JournalError::Fenced {
            held: 1,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        s.release(&l1).await,
        Err(JournalError::Fenced {
            held: 1,
            current: 2,
            ..
        })
    ));
    // A lease on a run that does not exist is fenced too.
    let ghost = Lease {
        run_id: "ghost".into(),
        ..l2.clone()
    };
    assert!(matches!(
        s.renew(&ghost, 0, 1).await,
        Err(JournalError::Fenced { .. })
    ));
    s.release(&l2).await.unwrap();
}

async fn a_stale_worker_cannot_append_after_takeover<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = run_in(&s, "fence", "p", "running").await;
    let old = s.claim("p", "old", 1_000, 100).await.unwrap().unwrap();
    run.decision(1);
    s.append("fence", run.from(1), Some(old.fence()))
        .await
        .unwrap();
    // The old worker stalls; its lease expires and another worker takes over.
    let new = s.claim("p", "new", 2_000, 100).await.unwrap().unwrap();
    assert_eq!((new.epoch, old.epoch), (2, 1));
    let mut stale = Run::of_program("fence", "p");
    stale.decision(1).decision(7);
    assert_eq!(
        s.append("fence", stale.from(2), Some(old.fence())).await,
        Err(JournalError::Fenced {
            run_id: "fence".into(),
            held: 1,
            current: 2
        })
    );
    run.decision(2);
    s.append("fence", run.from(2), Some(new.fence()))
        .await
        .unwrap();
    assert_eq!(s.load("fence").await.unwrap().unwrap(), run.entries());
    // Fencing is checked before the sequence: a stale writer learns it is stale.
    assert!(matches!(
        s.append("fence", run.from(1), Some(Fence { epoch: 1 }))
            .await,
        Err(JournalError::Fenced { .. })
    ));
    // A run that does not exist has epoch 0.
    let fresh = Run::of_program("fence-new", "p");
    assert!(matches!(
        s.append("fence-new", fresh.entries(), Some(Fence { epoch: 1 }))
            .await,
        Err(JournalError::Fenced {
            held: 1,
            current: 0,
            ..
        })
    ));
    s.append("fence-new", fresh.entries(), Some(Fence { epoch: 0 }))
        .await
        .unwrap();
}

async fn concurrent_appenders_one_winner_per_seq<H: Harness>(h: &H) {
    let s = h.fresh().await;
    const WRITERS: usize = 6;
    const ROUNDS: usize = 8;
    let base = Run::new("race");
    s.append("race", base.entries(), None).await.unwrap();
    let mut stored = base.entries().to_vec();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let s = s.clone();
            let prefix = stored.clone();
            tasks.push(tokio::spawn(async move {
                let mut t = Trace::from_entries(prefix).unwrap();
                let mut e = Encoder::new();
                // Each writer has its own idea of the next event.
                t.push(
                    Event::Decision {
                        step: format!("w{w}").into(),
                        arm: Some(round as u32),
                        next: "x".into(),
                    },
                    &mut e,
                );
                let mine = t.entries()[t.len() - 1..].to_vec();
                (s.append("race", &mine, None).await, mine)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (r, mine) = t.await.unwrap();
            match r {
                Ok(()) => winners.push(mine),
                Err(JournalError::Conflict {
                    expected, found, ..
                }) => {
                    assert_eq!(
                        (expected, found),
                        (stored.len() as u64 + 1, stored.len() as u64)
                    );
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        stored.extend(winners.remove(0));
    }
    assert_eq!(s.load("race").await.unwrap().unwrap(), stored);
}

async fn a_damaged_entry_loads_as_corrupt<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let run = rich_run("dmg");
    s.append("dmg", run.entries(), None).await.unwrap();
    // The same entry with a different tool result: parses, canonical, but the hash is wrong.
    let mut edited = run.entries()[4].clone();
    let Event::ToolResult { result, .. } = &mut edited.event else {
        panic!("entry 4 is a tool result");
    };
    *result = ToolOutcome::Ok(json!({"id": "rf_EVIL"}));
    assert!(
        h.damage(&s, "dmg", 4, &entry_line(&edited)).await,
        "the harness could not damage the entry (only stores it can damage run this test)"
    );
    match s.load("dmg").await {
        Err(JournalError::Corrupt { run_id, reason }) => {
            assert_eq!(run_id, "dmg");
            assert!(reason.contains('4'), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Not valid JSON at all, or not canonical (a space added), where the store can hold it.
    for line in [
        "garbage".to_string(),
        entry_line(&run.entries()[4]).replacen(':', ": ", 1),
    ] {
        if h.damage(&s, "dmg", 4, &line).await {
            assert!(
                matches!(s.load("dmg").await, Err(JournalError::Corrupt { .. })),
                "{line}"
            );
        }
    }
    // Other runs are unaffected.
    let ok = rich_run("dmg-ok");
    s.append("dmg-ok", ok.entries(), None).await.unwrap();
    assert_eq!(s.load("dmg-ok").await.unwrap().unwrap(), ok.entries());
}

/// Two runs of the same length whose rows are swapped behind the store's back: each chain is
/// intact, so only the run id its `run_started` names tells that the entries are another run's.
/// Loading either must be refused, not answered with the other run's trace.
async fn swapped_runs_load_as_corrupt<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let (a, b) = (rich_run("swap-a"), rich_run("swap-b"));
    s.append("swap-a", a.entries(), None).await.unwrap();
    s.append("swap-b", b.entries(), None).await.unwrap();
    assert!(
        h.swap_entries(&s, "swap-a", "swap-b").await,
        "the harness could not swap the runs (only stores it can damage run this test)"
    );
    for id in ["swap-a", "swap-b"] {
        match s.load(id).await {
            Err(JournalError::Corrupt { run_id, reason }) => {
                assert_eq!(run_id, id);
                assert!(reason.contains("swap-"), "{reason}");
            }
            other => panic!("{id}: expected Corrupt, got {other:?}"),
        }
    }
}

/// The last entry deleted and the entry count lowered to match: the rest is an intact chain,
/// but it does not end at the hash the run's record keeps, so it is refused.
async fn a_lost_tail_loads_as_corrupt<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let run = rich_run("tail");
    s.append("tail", run.entries(), None).await.unwrap();
    assert!(
        h.drop_last_entry(&s, "tail").await,
        "the harness could not cut the run (only stores with a last hash run this test)"
    );
    match s.load("tail").await {
        Err(JournalError::Corrupt { run_id, reason }) => {
            assert_eq!(run_id, "tail");
            assert!(reason.contains("last hash"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

async fn reopening_keeps_everything<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let run = rich_run("keep");
    append(&s, &run, 0, 3).await.unwrap();
    append(&s, &run, 3, run.len()).await.unwrap();
    run_in(&s, "keep-2", "p", "suspended@1000").await;
    let lease = s.claim("p", "w", 2_000, 500).await.unwrap().unwrap();
    let rec = s.run("keep").await.unwrap().unwrap();
    let rec2 = s.run("keep-2").await.unwrap().unwrap();
    let again = h
        .reopen(&s)
        .await
        .expect("the harness reopens the store (only stores that survive it run this test)");
    drop(s);
    assert_eq!(again.load("keep").await.unwrap().unwrap(), run.entries());
    assert_eq!(again.run("keep").await.unwrap().unwrap(), rec);
    assert_eq!(again.run("keep-2").await.unwrap().unwrap(), rec2);
    assert_eq!(rec2.lease_owner.as_deref(), Some("w"));
    // Sequence and leases carry on.
    assert_eq!(
        conflict(append(&again, &run, 0, 1).await),
        (run.len() as u64, 0)
    );
    again.renew(&lease, 2_100, 500).await.unwrap();
    let l2 = again.claim("p", "w2", 2_600, 500).await.unwrap().unwrap();
    assert_eq!(l2.epoch, 2);
}

/// The evidence log: leaves numbered from 0 in append order (also under concurrent appends),
/// read from an index on; the latest head is the one over the most leaves; and a run executed
/// with a signer is checkpointed and covered.
/// An `erased` tombstone appended while the run is executing (its record `running`), or
/// without an actor, is refused and nothing is written; after the run paused it is stored.
async fn a_tombstone_is_appended_only_where_an_erasure_could_write_it<H: Harness>(h: &H) {
    let s = h.fresh().await;
    let mut run = Run::new("t");
    append(&s, &run, 0, run.len()).await.unwrap();
    let tomb = |id: &str| Event::Erased {
        vault_id: VaultId([7; 16]),
        by: Actor::new(id, if id.is_empty() { "" } else { "request" }),
    };
    let mark = run.len();
    run.push(tomb("dpo"));
    let err = append(&s, &run, mark, run.len()).await.unwrap_err();
    assert!(
        matches!(&err, JournalError::Invalid { reason, .. } if reason.contains("execution under way")),
        "{err:?}"
    );
    let mut run = Run::new("t");
    run.push(Event::Suspended {
        step: "wait".into(),
        event: "approval".into(),
        deadline_ms: None,
    });
    append(&s, &run, 1, run.len()).await.unwrap();
    let mark = run.len();
    run.push(tomb(""));
    let err = append(&s, &run, mark, run.len()).await.unwrap_err();
    assert!(
        matches!(&err, JournalError::Invalid { reason, .. } if reason.contains("no actor")),
        "{err:?}"
    );
    let mut ok = Run::new("t");
    ok.push(Event::Suspended {
        step: "wait".into(),
        event: "approval".into(),
        deadline_ms: None,
    });
    ok.push(tomb("dpo"));
    append(&s, &ok, mark, ok.len()).await.unwrap();
    assert_eq!(s.load("t").await.unwrap().unwrap(), ok.entries());
}

/// The erasure index: runs by secret input (indexed with their `run_started`) and by linked
/// subject (a link to a run never stored is not answered), oldest first; unlinking a subject;
/// `delete_run` under the run's lease forgets the run everywhere, a stale lease deletes nothing.
async fn the_erasure_index_finds_runs_and_delete_run_forgets_them<H: Harness>(h: &H) {
    use nanovm_runtime::store::Reference;
    let s = h.fresh().await;
    let secret = Reference::Secret(VaultId([7; 16]));
    s.link_subject("ia", "subj-1").await.unwrap();
    s.link_subject("ia", "subj-1").await.unwrap();
    s.link_subject("ghost", "subj-1").await.unwrap();
    let a = Run::new("ia");
    let b = Run::new("ib");
    append(&s, &a, 0, a.len()).await.unwrap();
    append(&s, &b, 0, b.len()).await.unwrap();
    assert_eq!(s.referencing(&secret).await.unwrap(), ["ia", "ib"]);
    assert!(
        s.referencing(&Reference::Secret(VaultId([8; 16])))
            .await
            .unwrap()
            .is_empty()
    );
    let subject = Reference::Subject("subj-1".into());
    assert_eq!(s.referencing(&subject).await.unwrap(), ["ia"]);
    s.unlink_subject("subj-1").await.unwrap();
    assert!(s.referencing(&subject).await.unwrap().is_empty());
    let lease = s
        .claim_run("ib", "w", 0, 1_000)
        .await
        .unwrap()
        .expect("claimed");
    let stale = Lease {
        epoch: lease.epoch + 1,
        ..lease.clone()
    };
    assert!(matches!(
        s.delete_run(&stale).await,
        Err(JournalError::Fenced { .. })
    ));
    assert!(
        s.run("ib").await.unwrap().is_some(),
        "a stale lease deletes nothing"
    );
    s.delete_run(&lease).await.unwrap();
    assert!(s.run("ib").await.unwrap().is_none());
    assert!(s.load("ib").await.unwrap().is_none());
    assert_eq!(s.referencing(&secret).await.unwrap(), ["ia"]);
    assert_eq!(s.load("ia").await.unwrap().unwrap(), a.entries());
    // The feed forgets the deleted run too, even when its id is taken again: a reader from the
    // start gets the new run's entries once, never at the deleted run's positions.
    let c = Run::new("ib");
    append(&s, &c, 0, c.len()).await.unwrap();
    let feed = s.feed(None, 1_000).await.unwrap();
    let ib: Vec<u64> = feed
        .iter()
        .filter(|i| i.run_id == "ib")
        .map(|i| i.seq)
        .collect();
    assert_eq!(ib, (0..c.len() as u64).collect::<Vec<_>>(), "{feed:?}");
    assert_eq!(feed.iter().filter(|i| i.run_id == "ia").count(), a.len());
    s.compact().await.unwrap();
    // A start's link is exclusive: a run tied to one subject is not tied to a second one by
    // a start naming another (the other subject is answered, nothing linked); the same
    // subject again, or a run tied to none, links.
    assert_eq!(s.link_sole_subject("ia", "subj-2").await.unwrap(), None);
    assert_eq!(s.link_sole_subject("ia", "subj-2").await.unwrap(), None);
    assert_eq!(
        s.link_sole_subject("ia", "subj-3").await.unwrap(),
        Some("subj-2".to_string())
    );
    assert!(
        s.referencing(&Reference::Subject("subj-3".into()))
            .await
            .unwrap()
            .is_empty(),
        "nothing linked"
    );
    // A deliberate second link (`link_subject`) is allowed; a start then still refuses a third.
    s.link_subject("ia", "subj-4").await.unwrap();
    assert!(s.link_sole_subject("ia", "subj-5").await.unwrap().is_some());
    assert_eq!(s.link_sole_subject("ia", "subj-4").await.unwrap(), None);
    // Racing starts of one run id naming different subjects: exactly one links, rounds over.
    for round in 0..6 {
        let run_id = format!("race-{round}");
        let mut tasks = Vec::new();
        for w in 0..6 {
            let s = s.clone();
            let run_id = run_id.clone();
            tasks.push(tokio::spawn(async move {
                s.link_sole_subject(&run_id, &format!("subj-r{w}")).await
            }));
        }
        let mut linked = 0;
        for t in tasks {
            if t.await.unwrap().unwrap().is_none() {
                linked += 1;
            }
        }
        assert_eq!(linked, 1, "round {round}: one start links");
    }
}

async fn the_evidence_log_appends_in_order_and_keeps_the_latest_head<H: Harness>(h: &H) {
    use nanovm_runtime::evidence::{self, KeySigner, Signer};
    let s = h.fresh().await;
    assert!(s.log(0).await.unwrap().is_empty());
    assert_eq!(s.head().await.unwrap(), None);
    assert_eq!(s.log_append("a", b"leaf-0").await.unwrap(), 0);
    assert_eq!(s.log_append("b", b"leaf-1").await.unwrap(), 1);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.log_append("c", format!("c-{i}").as_bytes()).await })
        })
        .collect();
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap().unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (2..10).collect::<Vec<u64>>());
    let leaves = s.log(0).await.unwrap();
    assert_eq!(leaves.len(), 10);
    assert!(leaves.iter().enumerate().all(|(i, l)| l.index == i as u64));
    assert_eq!(
        (leaves[1].run_id.as_str(), leaves[1].data.as_slice()),
        ("b", &b"leaf-1"[..])
    );
    assert_eq!(s.log(9).await.unwrap().len(), 1);
    s.put_head(3, "three").await.unwrap();
    s.put_head(5, "five").await.unwrap();
    s.put_head(4, "four").await.unwrap();
    assert_eq!(s.head().await.unwrap().as_deref(), Some("five"));

    // A signed run on this store.
    let s = h.fresh().await;
    let signer = KeySigner::from_seed([5; 32]);
    let run = rich_run("signed");
    append(&s, &run, 0, run.len()).await.unwrap();
    evidence::checkpoint(&s, &signer, 1_000, run.entries())
        .await
        .unwrap();
    // Checkpointing the same trace again adds nothing.
    evidence::checkpoint(&s, &signer, 2_000, run.entries())
        .await
        .unwrap();
    assert_eq!(s.log(0).await.unwrap().len(), 1);
    let found = evidence::check_stored_run(&s, &signer.public_key(), "signed")
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    let report = evidence::audit(&s, &signer.public_key(), None)
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.head.unwrap().head.size, 1);
}

/// The feed names every entry of every run once, in commit order: a reader that polls it while
/// writers append, resuming after the last position it got, ends with every entry exactly once
/// and each run's entries in `seq` order; a refused append adds nothing.
async fn the_feed_names_every_entry_once_in_commit_order<H: Harness>(h: &H) {
    use nanovm_runtime::store::{FeedItem, FeedPos};
    let s = h.fresh().await;
    assert!(s.feed(None, 100).await.unwrap().is_empty());
    let a = rich_run("feed-a");
    let b = Run::new("feed-b");
    append(&s, &a, 0, 2).await.unwrap();
    s.append("feed-b", b.entries(), None).await.unwrap();
    // A refused append (a gap) adds nothing to the feed.
    assert!(append(&s, &a, 3, 4).await.is_err());
    append(&s, &a, 2, a.len()).await.unwrap();
    let items = s.feed(None, 100).await.unwrap();
    let named: Vec<(&str, u64)> = items.iter().map(|i| (i.run_id.as_str(), i.seq)).collect();
    let mut expected = vec![("feed-a", 0), ("feed-a", 1), ("feed-b", 0)];
    expected.extend((2..a.len() as u64).map(|q| ("feed-a", q)));
    assert_eq!(named, expected);
    assert!(items.windows(2).all(|w| w[0].pos < w[1].pos), "{items:?}");
    // Positions round-trip as text, and paging resumes exactly after one.
    for i in &items {
        assert_eq!(i.pos.to_string().parse::<FeedPos>().unwrap(), i.pos);
    }
    let page = s.feed(Some(items[1].pos), 2).await.unwrap();
    assert_eq!(page, items[2..4].to_vec());

    // Writers on many runs, a reader polling meanwhile.
    let s = h.fresh().await;
    const RUNS: usize = 6;
    let writers: Vec<_> = (0..RUNS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let run = rich_run(&format!("w{w}"));
                for k in 0..run.len() {
                    append(&s, &run, k, k + 1).await.unwrap();
                    tokio::task::yield_now().await;
                }
                run.len()
            })
        })
        .collect();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got: Vec<FeedItem> = Vec::new();
            let total = RUNS * rich_run("x").len();
            let mut after = None;
            for _ in 0..10_000 {
                let page = s.feed(after, 5).await.unwrap();
                if let Some(last) = page.last() {
                    after = Some(last.pos);
                }
                got.extend(page);
                if got.len() >= total {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            got
        })
    };
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    let got = reader.await.unwrap();
    assert_eq!(got.len(), total, "every entry once");
    assert_eq!(
        got,
        s.feed(None, 1000).await.unwrap(),
        "the reader saw the feed's order"
    );
    for w in 0..RUNS {
        let seqs: Vec<u64> = got
            .iter()
            .filter(|i| i.run_id == format!("w{w}"))
            .map(|i| i.seq)
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "run w{w}");
    }
}

/// The executor on the store: a journaled run, its record, and a resume from what was stored.
async fn the_executor_runs_on_the_store<H: Harness>(h: &H) {
    use support::Host;
    use support::customer_refund as cr;
    let s = h.fresh().await;
    let vault = Arc::new(MemoryVault::seeded(3));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes"))
        .vault(vault.clone())
        .clock(ManualClock::new(1_700_000_000_000))
        .store(s.clone())
        .build();
    let input = |amount_cents| cr::Input {
        request: "It broke.".into(),
        order_id: "o-1".into(),
        amount_cents,
        email: vault.secret(&"a@b.c".to_string()).unwrap(),
    };
    let id = unique("exec");
    let e = rt
        .run::<cr::Program>(
            input(100),
            Arc::new(Host::new()),
            RunOptions::new().run_id(&id),
        )
        .await
        .unwrap();
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(s.load(&id).await.unwrap().unwrap(), e.trace.entries());
    let r = s.run(&id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.end_step.as_deref(), r.program.as_str()),
        (RunStatus::Success, Some("refunded"), "customer_refund")
    );
    // Suspended under a lease, then resumed by the worker holding the next lease.
    let id = unique("exec-wait");
    let e = rt
        .run::<cr::Program>(
            input(9000),
            Arc::new(Host::new()),
            RunOptions::new().run_id(&id).fence(Fence { epoch: 0 }),
        )
        .await
        .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
    let r = s.run(&id).await.unwrap().unwrap();
    assert_eq!(r.waiting_for.as_deref(), Some("approval"));
    let deadline = r.deadline_ms.expect("a timeout");
    let lease = s
        .claim("customer_refund", "w", deadline, 1_000)
        .await
        .unwrap()
        .expect("the timer is due");
    assert_eq!(lease.run_id, id);
    let mut evs: Vec<Event> = e.trace.entries().iter().map(|e| e.event.clone()).collect();
    evs.push(Event::TimedOut {
        step: "manual_review".into(),
        next: "timed_out".into(),
    });
    let t = support::rechain(evs);
    s.append(&id, &t.entries()[e.trace.len()..], Some(lease.fence()))
        .await
        .unwrap();
    let done = rt
        .resume_journaled::<cr::Program>(
            &id,
            Arc::new(Host::new()),
            RunOptions::new().fence(lease.fence()),
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    let r = s.run(&id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.message.as_deref()),
        (RunStatus::Failed, Some("no reviewer answered"))
    );
    // A resume under a stale fence cannot write.
    let stale = rt
        .resume::<cr::Program>(
            Trace::from_entries(t.entries().to_vec()).unwrap(),
            Arc::new(Host::new()),
            RunOptions::new().fence(Fence { epoch: 0 }),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(nanovm_runtime::RunError::Journal(
                JournalError::Fenced { .. }
            ))
        ),
        "{stale:?}"
    );
}

/// One module of tests per store: the common tests, then the ones the store's harness can run
/// (`damage`: entries can be damaged behind its back; `reopen`: it survives reopening), every
/// test carrying the attributes given (`#[ignore = ...]` for a store that needs a peer service).
macro_rules! suite {
    ($name:ident, $harness:expr, [$($attr:meta),*], [$($extra:ident),*]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            suite!(@tests $harness; [$($attr),*];
                round_trip_is_byte_exact,
                seq_gaps_and_overlaps_conflict,
                a_duplicate_start_conflicts,
                a_batch_with_a_bad_entry_stores_nothing,
                the_record_follows_the_lifecycle,
                runs_are_filtered_and_ordered_by_creation,
                claims_take_only_runnable_runs,
                claims_by_version_skip_other_versions,
                concurrent_claimers_never_share_a_run,
                claim_run_takes_one_given_run,
                start_run_creates_a_run_owned_from_its_first_write,
                append_release_writes_and_gives_back_at_once,
                renew_release_and_stale_leases,
                a_stale_worker_cannot_append_after_takeover,
                concurrent_appenders_one_winner_per_seq,
                the_evidence_log_appends_in_order_and_keeps_the_latest_head,
                the_erasure_index_finds_runs_and_delete_run_forgets_them,
                a_tombstone_is_appended_only_where_an_erasure_could_write_it,
                the_feed_names_every_entry_once_in_commit_order,
                the_executor_runs_on_the_store
                $(, $extra)*
            );
        }
    };
    (@tests $harness:expr; $attrs:tt; $($test:ident),*) => {
        $( suite!(@one $harness; $attrs; $test); )*
    };
    (@one $harness:expr; [$($attr:meta),*]; $test:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $test() {
            let h = $harness;
            super::$test(&h).await;
            h.finish().await;
        }
    };
}

// Which store can be damaged or reopened is decided here, not found out (and silently skipped)
// inside the tests: the memory store holds parsed entries (a parseable line can be planted, the
// store is gone with the process); an in-memory SQLite database is private to its connection.
suite!(
    memory,
    Memory,
    [],
    [
        a_damaged_entry_loads_as_corrupt,
        swapped_runs_load_as_corrupt
    ]
);
#[cfg(feature = "sqlite")]
suite!(
    sqlite_file,
    sqlite_harness::SqliteFile,
    [],
    [
        a_damaged_entry_loads_as_corrupt,
        swapped_runs_load_as_corrupt,
        a_lost_tail_loads_as_corrupt,
        reopening_keeps_everything
    ]
);
#[cfg(feature = "sqlite")]
suite!(sqlite_memory, sqlite_harness::SqliteMemory, [], []);
#[cfg(feature = "postgres")]
suite!(
    postgres,
    postgres_harness::harness(),
    [ignore = "needs PostgreSQL (DATABASE_URL); run with --ignored"],
    [
        a_damaged_entry_loads_as_corrupt,
        swapped_runs_load_as_corrupt,
        a_lost_tail_loads_as_corrupt,
        reopening_keeps_everything
    ]
);

// ---------------------------------------------------------------------------------------------
// Vaults
// ---------------------------------------------------------------------------------------------

/// put / reveal / erase through the `Vault` trait, with `reopen` giving the same vault anew.
async fn vault_conformance<V: Vault, F: std::future::Future<Output = V>>(reopen: impl Fn() -> F) {
    let v = reopen().await;
    let (a, ca) = v.put(json!({"email": "ann@example.com"})).await.unwrap();
    let (b, cb) = v.put(json!("bob@example.com")).await.unwrap();
    assert_ne!(a, b);
    assert_ne!(ca, cb);
    drop(v);
    let v = reopen().await;
    assert_eq!(
        v.value(a, ca).await.unwrap(),
        json!({"email": "ann@example.com"})
    );
    assert_eq!(v.value(b, cb).await.unwrap(), json!("bob@example.com"));
    // Another commitment than the value's: refused, whoever asks.
    assert_eq!(
        v.value(a, cb).await,
        Err(nanovm_runtime::vault::VaultError::Mismatch(a))
    );
    assert_eq!(
        v.reveals(a).await.unwrap(),
        Vec::new(),
        "nothing revealed yet"
    );
    v.erase(a).await.unwrap();
    v.erase(a).await.unwrap(); // erasing twice is fine
    assert!(matches!(
        v.erase(VaultId([0xee; 16])).await,
        Err(nanovm_runtime::vault::VaultError::Unknown(_))
    ));
    drop(v);
    let v = reopen().await;
    let err = v.value(a, ca).await.expect_err("erased");
    assert!(err.to_string().contains("erased"), "{err}");
    let err = v.value(VaultId([0xee; 16]), ca).await.expect_err("unknown");
    assert!(err.to_string().contains("no value"), "{err}");
    assert_eq!(v.value(b, cb).await.unwrap(), json!("bob@example.com"));
    // Salted commitments: the same value twice gives two commitments.
    let (_, c1) = v.put(json!("same")).await.unwrap();
    let (_, c2) = v.put(json!("same")).await.unwrap();
    assert_ne!(c1, c2);
}

#[tokio::test]
async fn memory_vault_conformance() {
    // "Reopening" a memory vault is sharing it.
    let v = Arc::new(MemoryVault::new());
    vault_conformance(move || std::future::ready(v.clone())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_vault_survives_reopen_and_erases_for_good() {
    use nanovm_runtime::store::SqliteStore;
    use nanovm_runtime::vault::SqliteVault;
    let path = sqlite_harness::temp_db();
    let p = path.clone();
    vault_conformance(move || {
        let p = p.clone();
        async move { SqliteVault::open(p).await.unwrap() }
    })
    .await;
    // The vault shares the store's database; the erased plaintext is gone from the files.
    let store = SqliteStore::open(&path).await.unwrap();
    let v = store.vault();
    let (id, c) = v.put(json!("needle-7f3a9c@example.com")).await.unwrap();
    assert_eq!(
        SqliteVault::value(&v, id, c).await.unwrap(),
        json!("needle-7f3a9c@example.com")
    );
    Vault::erase(&v, id).await.unwrap();
    drop((v, store));
    let mut found = std::collections::BTreeSet::new();
    for suffix in ["", "-wal"] {
        let f = format!("{}{suffix}", path.display());
        if let Ok(bytes) = std::fs::read(&f)
            && bytes
                .windows(b"needle-7f3a9c".len())
                .any(|w| w == b"needle-7f3a9c")
        {
            found.insert(f);
        }
    }
    assert!(found.is_empty(), "erased plaintext still in {found:?}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL); run with --ignored"]
async fn postgres_vault_survives_reconnect() {
    use nanovm_runtime::store::PostgresOptions;
    use nanovm_runtime::vault::PostgresVault;
    let url = support::peers::database_url();
    let schema = postgres_harness::schema();
    let (u, sc) = (url.clone(), schema.clone());
    vault_conformance(move || {
        let url = u.clone();
        let schema = sc.clone();
        async move {
            PostgresVault::connect_with(&url, PostgresOptions::new().schema(schema))
                .await
                .unwrap()
        }
    })
    .await;
    postgres_harness::drop_schemas(&url, vec![schema]).await;
}

/// A SQLite database from before the feed (schema version 3) gets it when opened for writing,
/// with the entries it already holds in it (run order), and new entries after them.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_sqlite_database_gets_the_feed() {
    use nanovm_runtime::store::SqliteStore;
    let path = sqlite_harness::temp_db();
    let a = rich_run("old-a");
    let b = Run::new("old-b");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        append(&s, &a, 0, a.len()).await.unwrap();
        s.append("old-b", b.entries(), None).await.unwrap();
    }
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("DROP TABLE nanovm_feed; PRAGMA user_version = 3;")
            .unwrap();
    }
    let s = SqliteStore::open(&path).await.unwrap();
    let c = Run::new("new-c");
    s.append("new-c", c.entries(), None).await.unwrap();
    let named: Vec<(String, u64)> = s
        .feed(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.run_id, i.seq))
        .collect();
    let mut expected: Vec<(String, u64)> = (0..a.len() as u64)
        .map(|q| ("old-a".to_string(), q))
        .collect();
    expected.push(("old-b".into(), 0));
    expected.push(("new-c".into(), 0));
    assert_eq!(named, expected);
}
