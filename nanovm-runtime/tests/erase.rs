//! Erasure end to end (issue 12, deliverable 3): the store's index finds the runs that hold a
//! subject's secrets, each gets an `erased` tombstone under its lease naming who asked and why,
//! the vault forgets the values, the chain, the checkpoints and the log still verify, replay
//! reproduces the run, and a suspended run whose secret was erased ends with a clear status
//! when resumed instead of calling a tool with a missing value. Tombstones no erasure wrote
//! are refused on load.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::evidence::{self, KeySigner, Signer};
use nanovm_runtime::store::{JournalError, JournalStore, MemoryStore, Reference, SqliteStore};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Actor, Event, RunStatus, Trace, secret_inputs};
use nanovm_runtime::vault::{MemoryVault, VaultError};
use nanovm_runtime::{
    Erase, EraseError, Execution, RunOptions, Runtime, SecretRef, VaultId, replay,
};
use serde_json::json;

use support::customer_refund::{self as cr};
use support::{Host, START, block_on, rechain};

fn dpo() -> Actor {
    Actor::new("dpo@example.com", "GDPR art. 17 request #4711")
}

struct Fx {
    rt: Runtime,
    store: Arc<dyn JournalStore>,
    vault: Arc<MemoryVault>,
}

fn fx_on(store: Arc<dyn JournalStore>, signer: Option<KeySigner>) -> Fx {
    let vault = Arc::new(MemoryVault::seeded(5));
    let b = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(vault.clone())
        .clock(ManualClock::new(START))
        .store(store.clone());
    let rt = match signer {
        Some(s) => b.signer(s).build(),
        None => b.build(),
    };
    Fx { rt, store, vault }
}

impl Fx {
    fn email(&self, address: &str) -> SecretRef<String> {
        self.vault.secret(&address.to_string()).expect("a secret")
    }

    /// A refund of `amount` for `address` as run `id` of `subject`: 100 is refunded at once,
    /// 9000 waits for a reviewer.
    fn run(&self, id: &str, subject: &str, address: &str, amount: i64, host: &Host) -> Execution {
        block_on(self.rt.run::<cr::Program>(
            cr::Input {
                request: "It broke.".into(),
                order_id: "o-1".into(),
                amount_cents: amount,
                email: self.email(address),
            },
            Arc::new(host.clone()),
            RunOptions::new().run_id(id).subject(subject),
        ))
        .expect("runs")
    }

    fn load(&self, id: &str) -> Vec<nanovm_runtime::trace::Entry> {
        block_on(self.store.load(id))
            .expect("loads")
            .expect("stored")
    }

    fn erase(&self, what: Erase) -> Result<nanovm_runtime::Erasure, EraseError> {
        block_on(self.rt.erase(&what, dpo(), Duration::ZERO))
    }
}

fn email_of(entries: &[nanovm_runtime::trace::Entry]) -> VaultId {
    secret_inputs(&entries[0].event)[0]
}

#[test]
fn erasing_a_subject_tombstones_each_of_its_runs_and_only_those() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    assert_eq!(
        f.run("a1", "cust-1", "ann@example.com", 100, &host).status,
        RunStatus::Success
    );
    assert_eq!(
        f.run("a2", "cust-1", "ann@example.com", 9000, &host).status,
        RunStatus::Suspended
    );
    assert_eq!(
        f.run("b1", "cust-2", "bob@example.com", 100, &host).status,
        RunStatus::Success
    );
    let before_b = f.load("b1");
    let report = f.erase(Erase::Subject("cust-1".into())).expect("erases");
    let ids: Vec<&str> = report.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    for id in ["a1", "a2"] {
        let entries = f.load(id);
        let email = email_of(&entries);
        let last = entries.last().expect("entries");
        assert_eq!(
            last.event,
            Event::Erased {
                vault_id: email,
                by: dpo()
            },
            "{id}"
        );
        assert!(
            Trace::from_entries(entries.clone()).is_ok(),
            "{id} verifies"
        );
        let commitment = match &entries[0].event {
            Event::RunStarted { inputs, .. } => match &inputs[3].1 {
                nanovm_runtime::trace::Datum::Secret { commitment, .. } => *commitment,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(
            f.vault.as_ref().value(email, commitment),
            Err(VaultError::Erased(email)),
            "{id}: the value is gone"
        );
    }
    assert_eq!(f.load("b1"), before_b, "another subject's run is untouched");
    // The subject's links are forgotten; a second erasure finds nothing and writes nothing.
    assert!(
        block_on(f.store.referencing(&Reference::Subject("cust-1".into())))
            .unwrap()
            .is_empty()
    );
    let again = f.erase(Erase::Subject("cust-1".into())).expect("erases");
    assert!(again.runs.is_empty());
    // By vault id, the tombstone is already there: nothing is appended twice.
    let a1 = f.load("a1");
    let again = f.erase(Erase::Secret(email_of(&a1))).expect("erases");
    assert_eq!(again.runs.len(), 1);
    assert!(again.runs[0].erased.is_empty());
    assert_eq!(again.runs[0].already, [email_of(&a1)]);
    assert_eq!(f.load("a1"), a1);
}

#[test]
fn replay_after_an_erasure_reproduces_the_same_transitions() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    let before = f.run("r", "cust-1", "ann@example.com", 100, &host);
    f.erase(Erase::Subject("cust-1".into())).expect("erases");
    let after = Trace::from_entries(f.load("r")).expect("verifies");
    assert_eq!(after.len(), before.trace.len() + 1);
    assert_eq!(
        &after.entries()[..before.trace.len()],
        before.trace.entries(),
        "no earlier byte changes"
    );
    let report = replay::<cr::Program>(&after).expect("replays");
    assert_eq!(report.root, after.root());
    assert_eq!(report.status, before.status);
    assert_eq!(report.path, before.path);
}

/// The suspended run's email is erased; the reviewer then rejects, which would mail the
/// customer: the tool is never called, the run ends `failed` saying why, and a replay of the
/// stored trace reproduces exactly that.
#[test]
fn a_resumed_run_whose_secret_was_erased_ends_failed_without_calling_the_tool() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    assert_eq!(
        f.run("w", "cust-1", "ann@example.com", 9000, &host).status,
        RunStatus::Suspended
    );
    f.erase(Erase::Subject("cust-1".into())).expect("erases");
    let delivery = block_on(f.rt.deliver::<cr::Program>(
        "w",
        "approval",
        "ev-1",
        json!({"approved": false}),
        Arc::new(host.clone()),
    ))
    .expect("delivered");
    let e = delivery.into_execution();
    assert_eq!(e.status, RunStatus::Failed);
    let message = e.message.clone().unwrap_or_default();
    assert!(
        message.contains("`email`")
            && message.contains("erased")
            && message.contains("dpo@example.com")
            && message.contains("not called"),
        "{message}"
    );
    assert_eq!(host.calls("send_rejection"), 0);
    let stored = Trace::from_entries(f.load("w")).expect("verifies");
    let report = replay::<cr::Program>(&stored).expect("replays");
    assert_eq!(report.root, stored.root());
    assert_eq!(report.status, RunStatus::Failed);
}

#[test]
fn an_erasure_waits_for_no_execution_and_refuses_a_run_in_flight_writing_nothing() {
    let store = MemoryStore::new();
    let f = fx_on(Arc::new(store.clone()), None);
    let host = Host::new();
    f.run("done", "cust-1", "ann@example.com", 100, &host);
    f.run("busy", "cust-1", "ann@example.com", 9000, &host);
    // Someone is executing `busy` (holds its lease).
    let lease = block_on(store.claim_run("busy", "worker-9", START, 60_000))
        .unwrap()
        .expect("claimed");
    let done = f.load("done");
    let busy = f.load("busy");
    let err = f
        .erase(Erase::Subject("cust-1".into()))
        .expect_err("refused");
    assert!(
        matches!(err, EraseError::Leased { ref run_id, .. } if run_id == "busy"),
        "{err}"
    );
    assert_eq!(f.load("done"), done, "nothing written");
    assert_eq!(f.load("busy"), busy);
    let email = email_of(&done);
    assert!(
        f.vault.as_ref().value(email, commitment_of(&done)).is_ok(),
        "nothing erased"
    );
    block_on(store.release(&lease)).unwrap();
    // A run a crash left mid-execution (running, nobody holds it) is refused too: a worker
    // must take it to a pause or its end first.
    let full = f.run("crashed", "cust-1", "ann@example.com", 100, &host);
    store.set_entries("crashed", full.trace.entries()[..2].to_vec());
    let err = f
        .erase(Erase::Subject("cust-1".into()))
        .expect_err("refused");
    assert!(
        matches!(err, EraseError::Executing { ref run_id, status: RunStatus::Running } if run_id == "crashed"),
        "{err}"
    );
    assert_eq!(f.load("done"), done, "nothing written");
    store.set_entries("crashed", full.trace.entries().to_vec());
    assert!(matches!(
        f.erase(Erase::Subject("cust-1".into())),
        Ok(ref r) if r.runs.len() == 3
    ));
    // An erasure names who asked and why.
    assert!(matches!(
        block_on(f.rt.erase(
            &Erase::Subject("x".into()),
            Actor::new("", ""),
            Duration::ZERO
        )),
        Err(EraseError::NoActor)
    ));
}

fn commitment_of(entries: &[nanovm_runtime::trace::Entry]) -> nanovm_runtime::Digest {
    match &entries[0].event {
        Event::RunStarted { inputs, .. } => match &inputs[3].1 {
            nanovm_runtime::trace::Datum::Secret { commitment, .. } => *commitment,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// With a signer, the runs that got a tombstone are checkpointed again: the audit is clean,
/// every run's latest checkpoint covers its whole trace, and the log only grew.
#[test]
fn after_an_erasure_the_chain_the_checkpoints_and_the_log_verify() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = block_on(SqliteStore::open(dir.path().join("s.db"))).expect("opens");
    let key = KeySigner::from_seed([3; 32]).public_key();
    let f = fx_on(Arc::new(store.clone()), Some(KeySigner::from_seed([3; 32])));
    let host = Host::new();
    f.run("s1", "cust-1", "ann@example.com", 100, &host);
    f.run("s2", "cust-1", "ann@example.com", 9000, &host);
    let before = block_on(evidence::audit(&store, &key, None)).expect("audits");
    assert!(before.ok(), "{:?}", before.findings);
    let kept = before.head.expect("a head");
    f.erase(Erase::Subject("cust-1".into())).expect("erases");
    let after = block_on(evidence::audit(&store, &key, Some(&kept))).expect("audits");
    assert!(after.ok(), "{:?}", after.findings);
    for id in ["s1", "s2"] {
        let entries = f.load(id);
        let cp = block_on(evidence::latest_checkpoint(&store, &key, id))
            .expect("reads")
            .expect("a checkpoint");
        assert_eq!(cp.checkpoint.entries, entries.len() as u64, "{id}");
        assert!(matches!(
            entries.last().map(|e| &e.event),
            Some(Event::Erased { .. })
        ));
    }
}

/// A tombstone written into the store behind the runtime's back (rechained, so the chain
/// verifies) is refused when the run is loaded: in the middle of an execution, or naming a
/// secret the run does not hold.
#[test]
fn a_forged_tombstone_in_the_store_is_refused_on_load() {
    let store = MemoryStore::new();
    let f = fx_on(Arc::new(store.clone()), None);
    let host = Host::new();
    let e = f.run("r", "cust-1", "ann@example.com", 100, &host);
    let email = email_of(e.trace.entries());
    let events: Vec<Event> = e.trace.entries().iter().map(|x| x.event.clone()).collect();
    let plant = |at: usize, ev: Event| {
        let mut evs = events.clone();
        evs.insert(at, ev);
        store.set_entries("r", rechain(evs).into_entries());
        block_on(store.load("r"))
    };
    let tomb = |vault_id| Event::Erased {
        vault_id,
        by: dpo(),
    };
    for (at, ev, what) in [
        (2, tomb(email), "executing"),
        (events.len(), tomb(VaultId([9; 16])), "not a secret input"),
    ] {
        match plant(at, ev) {
            Err(JournalError::Corrupt { reason, .. }) => {
                assert!(reason.contains("forged erasure"), "{what}: {reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The one an erasure writes loads.
    assert!(plant(events.len(), tomb(email)).is_ok());
}

include!("support/generated/secret_fan.rs");

/// The tools of `secret_fan`, counting calls.
#[derive(Clone, Default)]
struct Fan(Arc<std::sync::atomic::AtomicUsize>);

impl secret_fan::Tools for Fan {
    fn mail(
        &self,
        _ctx: &nanovm_runtime::ToolContext,
        _email: nanovm_runtime::Secret<String>,
    ) -> impl std::future::Future<Output = Result<serde_json::Value, nanovm_runtime::ToolError>> + Send
    {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok(json!({"sent": true})))
    }

    fn lookup(
        &self,
        _ctx: &nanovm_runtime::ToolContext,
        _email: nanovm_runtime::Secret<String>,
    ) -> impl std::future::Future<Output = Result<serde_json::Value, nanovm_runtime::ToolError>> + Send
    {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok(json!({"found": true})))
    }
}

/// Inside a `parallel` block too: the secret erased while the run waited is passed to no
/// branch's tool; the run ends `failed` saying so, and the replay agrees.
#[test]
fn a_parallel_branch_never_calls_a_tool_with_an_erased_secret() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let fan = Fan::default();
    let run = |id: &str| {
        block_on(f.rt.run::<secret_fan::Program>(
            secret_fan::Input {
                email: f.email("ann@example.com"),
            },
            Arc::new(fan.clone()),
            RunOptions::new().run_id(id).subject("cust-9"),
        ))
        .expect("runs")
    };
    assert_eq!(run("p1").status, RunStatus::Suspended);
    f.erase(Erase::Subject("cust-9".into())).expect("erases");
    let e = block_on(f.rt.deliver::<secret_fan::Program>(
        "p1",
        "go",
        "go-1",
        json!({"ok": true}),
        Arc::new(fan.clone()),
    ))
    .expect("delivered")
    .into_execution();
    assert_eq!(e.status, RunStatus::Failed);
    let message = e.message.clone().unwrap_or_default();
    assert!(
        message.contains("`email`") && message.contains("erased"),
        "{message}"
    );
    assert_eq!(
        fan.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no tool was called"
    );
    let stored = Trace::from_entries(f.load("p1")).expect("verifies");
    let report = replay::<secret_fan::Program>(&stored).expect("replays");
    assert_eq!(
        (report.root, report.status),
        (stored.root(), RunStatus::Failed)
    );
    // Without the erasure, the same run calls both tools.
    assert_eq!(run("p2").status, RunStatus::Suspended);
    let e = block_on(f.rt.deliver::<secret_fan::Program>(
        "p2",
        "go",
        "go-1",
        json!({"ok": true}),
        Arc::new(fan.clone()),
    ))
    .expect("delivered")
    .into_execution();
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(fan.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A PostgreSQL store whose runs were written before the erasure index existed (its tables
/// dropped here, as in a database of an older nanovm) is backfilled from the stored
/// `run_started` entries when it is next opened, as SQLite is: an erasure by vault id then
/// finds the old run and tombstones it.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
fn an_older_postgres_store_is_backfilled_into_the_erasure_index() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let url = support::peers::database_url();
    let schema = format!(
        "nvmtest_backfill_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(conn);
        let connect = || PostgresStore::connect_with(&url, PostgresOptions::new().schema(&schema));
        let store = connect().await.expect("connects");
        let vault = Arc::new(MemoryVault::seeded(5));
        let runtime = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "yes").shared())
            .vault(vault.clone())
            .clock(ManualClock::new(START))
            .store(Arc::new(store.clone()))
            .build();
        let email = vault
            .secret(&"old@example.com".to_string())
            .expect("a secret");
        let e = runtime
            .run::<cr::Program>(
                cr::Input {
                    request: "It broke.".into(),
                    order_id: "o-1".into(),
                    amount_cents: 100,
                    email,
                },
                Arc::new(Host::new()),
                RunOptions::new().run_id("old-run"),
            )
            .await
            .expect("runs");
        assert_eq!(e.status, RunStatus::Success);
        let v = email_of(e.trace.entries());
        // An older nanovm's database: no erasure index.
        client
            .batch_execute(&format!(
                "DROP TABLE {schema}.nanovm_secret_refs; DROP TABLE {schema}.nanovm_subjects;"
            ))
            .await
            .expect("drops the index");
        drop(runtime);
        drop(store);
        let store: Arc<dyn JournalStore> = Arc::new(connect().await.expect("reconnects"));
        assert_eq!(
            store
                .referencing(&Reference::Secret(v))
                .await
                .expect("reads the index"),
            ["old-run"],
            "the old run is found by its secret after the upgrade"
        );
        // A second open backfills nothing twice (and fails on nothing).
        let again: Arc<dyn JournalStore> = Arc::new(connect().await.expect("reconnects"));
        assert_eq!(
            again.referencing(&Reference::Secret(v)).await.unwrap(),
            ["old-run"]
        );
        let runtime = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "yes").shared())
            .vault(vault.clone())
            .clock(ManualClock::new(START))
            .store(store.clone())
            .build();
        let report = runtime
            .erase(&Erase::Secret(v), dpo(), Duration::ZERO)
            .await
            .expect("erases");
        assert_eq!(report.runs.len(), 1);
        assert_eq!(report.runs[0].erased, [v]);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drops the test schema");
    });
}

/// A repeated start (or submission) with the same run id naming a *different* data subject is
/// refused (`RunError::SubjectInUse`, the other subject not named, nothing linked): an erasure
/// of the second subject must not reach the first subject's run. The same subject again is a
/// plain duplicate start; a run started without a subject is linked by a repeat that names one.
#[test]
fn a_repeated_start_naming_another_subject_is_refused_and_links_nothing() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    let input = |f: &Fx| cr::Input {
        request: "It broke.".into(),
        order_id: "o-1".into(),
        amount_cents: 100,
        email: f.email("ann@example.com"),
    };
    let start = |id: &str, subject: Option<&str>| {
        let mut opts = RunOptions::new().run_id(id);
        if let Some(s) = subject {
            opts = opts.subject(s);
        }
        block_on(f.rt.run::<cr::Program>(input(&f), Arc::new(host.clone()), opts))
    };
    assert_eq!(
        start("r", Some("cust-1")).expect("runs").status,
        RunStatus::Success
    );
    let before = f.load("r");
    match start("r", Some("cust-2")) {
        Err(nanovm_runtime::RunError::SubjectInUse { run_id }) => assert_eq!(run_id, "r"),
        other => panic!("{other:?}"),
    }
    let err = start("r", Some("cust-2")).unwrap_err().to_string();
    assert!(
        !err.contains("cust-1"),
        "the other subject is not told: {err}"
    );
    assert!(
        block_on(f.store.referencing(&Reference::Subject("cust-2".into())))
            .unwrap()
            .is_empty(),
        "nothing linked to the second subject"
    );
    assert_eq!(f.load("r"), before, "nothing written");
    assert_eq!(
        start("r", Some("cust-1")).expect("a duplicate").status,
        RunStatus::Success
    );
    assert_eq!(
        start("r", None).expect("a duplicate").status,
        RunStatus::Success
    );
    // Submitted runs take a subject too, with the same rule.
    let sub = |id: &str, subject: &str| {
        block_on(f.rt.submit_with::<cr::Program>(input(&f), Some(id), Some(subject)))
    };
    assert!(sub("s", "cust-3").expect("submitted").created);
    assert!(!sub("s", "cust-3").expect("a duplicate").created);
    assert!(matches!(
        sub("s", "cust-4"),
        Err(nanovm_runtime::RunError::SubjectInUse { .. })
    ));
    assert_eq!(
        block_on(f.store.referencing(&Reference::Subject("cust-3".into()))).unwrap(),
        ["s"]
    );
    assert!(
        block_on(f.store.referencing(&Reference::Subject("cust-4".into())))
            .unwrap()
            .is_empty()
    );
    // A blank or overlong subject is refused before anything is linked or recorded.
    for bad in [String::new(), "  ".into(), "x".repeat(257)] {
        assert!(
            matches!(
                start("blank", Some(bad.as_str())),
                Err(nanovm_runtime::RunError::InvalidSubject)
            ),
            "{bad:?}"
        );
    }
    assert!(block_on(f.store.run("blank")).unwrap().is_none());
    // An erasure of the refused subject finds nothing; of the first, its run.
    assert!(
        f.erase(Erase::Subject("cust-2".into()))
            .unwrap()
            .runs
            .is_empty()
    );
    assert_eq!(
        f.erase(Erase::Subject("cust-1".into())).unwrap().runs.len(),
        1
    );
    // A run started without a subject is linked by a repeat naming one (its first subject).
    assert_eq!(start("n", None).expect("runs").status, RunStatus::Success);
    assert_eq!(
        start("n", Some("cust-5")).expect("a duplicate").status,
        RunStatus::Success
    );
    assert_eq!(
        block_on(f.store.referencing(&Reference::Subject("cust-5".into()))).unwrap(),
        ["n"]
    );
}

// Red team (issue 12, erasure): an adversary with write access to the store but not the key,
// and a buggy caller.

/// A tombstone naming a secret of *another* run (rechained into this one so the chain
/// verifies) is refused on load: a tombstone may only name a secret input of its own run.
#[test]
fn attack_a_tombstone_naming_another_runs_secret_is_refused() {
    let store = MemoryStore::new();
    let f = fx_on(Arc::new(store.clone()), None);
    let host = Host::new();
    let a = f.run("a", "cust-1", "ann@example.com", 100, &host);
    let b = f.run("b", "cust-2", "bob@example.com", 100, &host);
    let theirs = email_of(b.trace.entries());
    let mut events: Vec<Event> = a.trace.entries().iter().map(|x| x.event.clone()).collect();
    events.push(Event::Erased {
        vault_id: theirs,
        by: dpo(),
    });
    store.set_entries("a", rechain(events).into_entries());
    match block_on(store.load("a")) {
        Err(JournalError::Corrupt { reason, .. }) => {
            assert!(reason.contains("forged erasure"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // And the erasure of `b`'s secret does not touch `a`.
    store.set_entries("a", a.trace.entries().to_vec());
    let report = f.erase(Erase::Secret(theirs)).expect("erases");
    let ids: Vec<&str> = report.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["b"]);
    assert_eq!(f.load("a"), a.trace.entries());
}

/// `--vault-id` of a value two runs share (the same handle passed to both): both runs get a
/// tombstone, the value is erased once, and both still verify and replay.
#[test]
fn attack_a_vault_id_shared_by_two_runs_is_tombstoned_in_both() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    let shared = f.email("shared@example.com");
    for (id, amount) in [("s1", 100), ("s2", 9000)] {
        block_on(f.rt.run::<cr::Program>(
            cr::Input {
                request: "It broke.".into(),
                order_id: "o-1".into(),
                amount_cents: amount,
                email: shared,
            },
            Arc::new(host.clone()),
            RunOptions::new().run_id(id),
        ))
        .expect("runs");
    }
    let v = email_of(&f.load("s1"));
    assert_eq!(email_of(&f.load("s2")), v, "the same handle");
    let report = f.erase(Erase::Secret(v)).expect("erases");
    let ids: Vec<&str> = report.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    assert_eq!(report.vault_ids, [v]);
    for id in ["s1", "s2"] {
        let t = Trace::from_entries(f.load(id)).expect("verifies");
        assert!(matches!(
            t.entries().last().map(|e| &e.event),
            Some(Event::Erased { vault_id, .. }) if *vault_id == v
        ));
        let r = replay::<cr::Program>(&t).expect("replays");
        assert_eq!(r.root, t.root(), "{id}");
    }
    assert_eq!(
        f.vault.as_ref().value(v, commitment_of(&f.load("s1"))),
        Err(VaultError::Erased(v))
    );
}

/// An erasure racing a delivery that resumes the same suspended run, on two threads, many
/// times: whichever wins, the run never calls `send_rejection` after its tombstone (nor with
/// anything but the customer's address before it), holds exactly one tombstone, verifies,
/// and replays to its own root; a run resumed after the tombstone ends `failed` saying why.
#[test]
fn attack_an_erasure_racing_a_delivery_never_lets_a_tool_see_an_erased_secret() {
    race_erasure_and_delivery(Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    race_erasure_and_delivery(Arc::new(
        block_on(SqliteStore::open(dir.path().join("race.db"))).expect("opens"),
    ));
}

fn race_erasure_and_delivery(store: Arc<dyn JournalStore>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let f = fx_on(store, None);
    let (mut before, mut after) = (0, 0);
    for i in 0..90 {
        let id = format!("race-{i}");
        let subject = format!("cust-race-{i}");
        let host = Host::new();
        assert_eq!(
            f.run(&id, &subject, "ann@example.com", 9000, &host).status,
            RunStatus::Suspended
        );
        // Every third iteration the mail takes a moment, so the erasure tries while the
        // delivery's execution holds the run.
        if i % 3 == 2 {
            host.hook(
                "send_rejection",
                Arc::new(|_| {
                    Box::pin(tokio::time::sleep(Duration::from_millis(2)))
                        as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
                }),
            );
        }
        let (rt1, rt2) = (f.rt.clone(), f.rt.clone());
        let (id1, h1) = (id.clone(), host.clone());
        // Alternate which task starts first.
        let erase_first = i % 2 == 0;
        let deliver_task = async move {
            loop {
                match rt1
                    .deliver::<cr::Program>(
                        &id1,
                        "approval",
                        "ev-1",
                        json!({"approved": false}),
                        Arc::new(h1.clone()),
                    )
                    .await
                {
                    Ok(d) => return d.into_execution(),
                    Err(nanovm_runtime::DeliverError::Run(
                        nanovm_runtime::RunError::Leased { .. }
                        | nanovm_runtime::RunError::Journal(JournalError::Fenced { .. })
                        | nanovm_runtime::RunError::Journal(JournalError::Conflict { .. }),
                    )) => tokio::task::yield_now().await,
                    Err(e) => panic!("delivery: {e}"),
                }
            }
        };
        let erase_task = async move {
            loop {
                match rt2
                    .erase(&Erase::Subject(subject.clone()), dpo(), Duration::ZERO)
                    .await
                {
                    Ok(r) => return r,
                    Err(EraseError::Leased { .. } | EraseError::Executing { .. }) => {
                        tokio::task::yield_now().await
                    }
                    Err(e) => panic!("erasure: {e}"),
                }
            }
        };
        let (deliver, erase) = if erase_first {
            let erase = rt.spawn(erase_task);
            (rt.spawn(deliver_task), erase)
        } else {
            let deliver = rt.spawn(deliver_task);
            (deliver, rt.spawn(erase_task))
        };
        let e = rt.block_on(deliver).expect("the delivery task");
        let report = rt.block_on(erase).expect("the erasure task");
        assert_eq!(report.runs.len(), 1, "{id}");
        let stored = Trace::from_entries(f.load(&id)).expect("verifies");
        let events: Vec<&Event> = stored.entries().iter().map(|x| &x.event).collect();
        let tomb = events
            .iter()
            .position(|e| matches!(e, Event::Erased { .. }))
            .expect("a tombstone");
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Erased { .. }))
                .count(),
            1,
            "{id}: one tombstone"
        );
        let delivered = events
            .iter()
            .position(|e| matches!(e, Event::Delivered { .. }))
            .expect("delivered");
        let calls = host.records();
        let mails: Vec<_> = calls
            .iter()
            .filter(|c| c.tool == "send_rejection")
            .collect();
        if tomb < delivered {
            after += 1;
            assert!(
                mails.is_empty(),
                "{id}: a tool saw an erased secret: {mails:?}"
            );
            assert_eq!(e.status, RunStatus::Failed, "{id}");
        } else {
            before += 1;
            assert_eq!(e.status, RunStatus::Success, "{id}: {:?}", e.message);
            assert_eq!(mails.len(), 1, "{id}");
            assert_eq!(mails[0].args["email"], "ann@example.com");
        }
        let r = replay::<cr::Program>(&stored).expect("replays");
        assert_eq!((r.root, r.status), (stored.root(), e.status), "{id}");
    }
    eprintln!("erasure first: {after}, delivery first: {before}");
    assert!(
        after > 0 && before > 0,
        "both orders happened: {after} / {before}"
    );
}

/// Someone with write access deletes a run's erasure-index rows to hide it from
/// `nanovm erase --vault-id`: the erasure then misses it (the index is what it reads), but
/// the audit names the run and the secret the index lost, and fails.
#[test]
fn attack_index_rows_deleted_to_hide_a_run_are_named_by_the_audit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("s.db");
    let store = block_on(SqliteStore::open(&path)).expect("opens");
    let key = KeySigner::from_seed([3; 32]).public_key();
    let f = fx_on(Arc::new(store.clone()), Some(KeySigner::from_seed([3; 32])));
    let host = Host::new();
    f.run("hidden", "cust-1", "ann@example.com", 100, &host);
    f.run("seen", "cust-2", "bob@example.com", 100, &host);
    let clean = block_on(evidence::audit(&store, &key, None)).expect("audits");
    assert!(clean.ok(), "{:?}", clean.findings);
    let v = email_of(&f.load("hidden"));
    let c = rusqlite::Connection::open(&path).expect("opens the file");
    c.execute("DELETE FROM nanovm_secret_refs WHERE run_id = 'hidden'", [])
        .expect("deletes the index rows");
    drop(c);
    // The erasure reads the index: it misses the run (nothing to tombstone).
    assert!(
        block_on(store.referencing(&Reference::Secret(v)))
            .unwrap()
            .is_empty()
    );
    let report = block_on(evidence::audit(&store, &key, None)).expect("audits");
    assert!(!report.ok(), "{:?}", report.findings);
    let named = report
        .findings
        .iter()
        .find(|x| x.kind == evidence::FindingKind::Unindexed)
        .unwrap_or_else(|| panic!("{:?}", report.findings));
    assert_eq!(named.run_id.as_deref(), Some("hidden"));
    assert!(
        named.message.contains(&v.to_hex()) && named.message.contains("erasure index"),
        "{}",
        named.message
    );
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|x| x.kind.is_problem())
            .count(),
        1,
        "{:?}",
        report.findings
    );
}

/// A buggy caller erases a subject whose run is still pending (submitted, no worker has
/// executed it yet): nothing is written or erased, the erasure says which run is not at rest;
/// once a worker has run it to a pause or its end, the erasure goes through.
#[test]
fn attack_erasing_a_pending_run_is_refused_until_a_worker_has_run_it() {
    let store = MemoryStore::new();
    let f = fx_on(Arc::new(store.clone()), None);
    let input = cr::Input {
        request: "It broke.".into(),
        order_id: "o-1".into(),
        amount_cents: 100,
        email: f.email("ann@example.com"),
    };
    block_on(f.rt.submit_with::<cr::Program>(input, Some("queued"), Some("cust-q")))
        .expect("submitted");
    let before = f.load("queued");
    let err = f
        .erase(Erase::Subject("cust-q".into()))
        .expect_err("refused");
    assert!(
        matches!(err, EraseError::Executing { ref run_id, .. } if run_id == "queued"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was erased"), "{err}");
    assert_eq!(f.load("queued"), before, "nothing written");
    let email = email_of(&before);
    assert!(
        f.vault
            .as_ref()
            .value(email, commitment_of(&before))
            .is_ok()
    );
    let worker = nanovm_runtime::Worker::new(f.rt.clone(), "w-1", 30_000);
    let e = block_on(worker.run_once::<cr::Program>(Arc::new(Host::new())))
        .expect("works")
        .expect("a run");
    assert_eq!(e.status, RunStatus::Success);
    let report = f.erase(Erase::Subject("cust-q".into())).expect("erases");
    assert_eq!(report.runs[0].erased, [email]);
}

/// Someone with write access erases a vault value behind nanovm's back (no tombstone): the
/// suspended run that needs it, resumed, still never calls the tool with a missing value:
/// the call fails on the vault's refusal and the run ends `failed` saying the value was
/// erased (no tombstone is invented; the audit does not see a vault-only erasure).
#[test]
fn attack_a_value_erased_without_a_tombstone_never_reaches_a_tool() {
    let f = fx_on(Arc::new(MemoryStore::new()), None);
    let host = Host::new();
    let e = f.run("w", "cust-1", "ann@example.com", 9000, &host);
    assert_eq!(e.status, RunStatus::Suspended);
    let v = email_of(e.trace.entries());
    block_on(nanovm_runtime::vault::Vault::erase(f.vault.as_ref(), v)).expect("erased");
    let outcome = block_on(f.rt.deliver::<cr::Program>(
        "w",
        "approval",
        "ev-1",
        json!({"approved": false}),
        Arc::new(host.clone()),
    ));
    assert_eq!(host.calls("send_rejection"), 0, "{outcome:?}");
    let e = outcome.expect("delivered").into_execution();
    assert_eq!(e.status, RunStatus::Failed, "{:?}", e.message);
    let message = e.message.unwrap_or_default();
    assert!(message.contains("was erased"), "{message}");
    let stored = Trace::from_entries(f.load("w")).expect("verifies");
    assert!(
        !stored
            .entries()
            .iter()
            .any(|x| matches!(x.event, Event::Erased { .. })),
        "no tombstone was invented"
    );
}

/// The audit's cost with its erasure-index check (one index lookup per distinct secret of
/// the stored runs): `NANOVM_AUDIT_RUNS` signed runs with a secret input each (1,000 by
/// default) in a SQLite file, the audit timed three times. `cargo test -p nanovm-runtime
/// --test erase audit_cost -- --ignored --nocapture`; the numbers are in docs/compliance.md.
#[test]
#[ignore = "a measurement: run with --nocapture"]
fn audit_cost() {
    let n: usize = std::env::var("NANOVM_AUDIT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = block_on(SqliteStore::open(dir.path().join("s.db"))).expect("opens");
    let f = fx_on(Arc::new(store.clone()), Some(KeySigner::from_seed([3; 32])));
    let host = Host::new();
    for i in 0..n {
        f.run(
            &format!("r{i}"),
            &format!("cust-{i}"),
            "ann@example.com",
            100,
            &host,
        );
    }
    let key = KeySigner::from_seed([3; 32]).public_key();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let report = block_on(evidence::audit(&store, &key, None)).expect("audits");
        assert!(report.ok(), "{:?}", report.findings);
        println!(
            "audit of {n} runs: {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
}
