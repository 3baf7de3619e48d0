//! Workers with leases over a shared store: a stalled worker whose lease was taken over is
//! fenced and invokes nothing more, and many workers with stalls finish every run exactly once
//! without executing an effect id twice.
//!
//! The stress test runs on a `MemoryStore` always and on PostgreSQL with `--ignored` (it needs
//! `DATABASE_URL`: `eval "$(.ci/postgres.sh)"`; without it the PostgreSQL case fails).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::model::{ModelReply, ModelRequest};
use nanovm_runtime::store::{JournalError, JournalStore, MemoryStore, RunQuery};
use nanovm_runtime::testing::{FnModel, ManualClock};
use nanovm_runtime::trace::{Event, RunStatus, Trace};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Clock, Resolution, RunError, Runtime, SystemClock, Worker, replay};
use nanovm_runtime::{Digest, Json, Secret};
use nanovm_runtime::{ToolContext, ToolError};
use serde_json::json;

use support::block_on;
use support::customer_refund::{self as cr};

const START: u64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// A mock bank: a ledger of real executions; the idempotent refund honours its key

/// Where a call stops to stall: `Before` the effect happens, or `After` it (a slow answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    Before,
    After,
}

/// How a stalled call waits: blocking its thread (the whole worker, renewals included, stops,
/// as in a GC pause or a frozen VM).
enum Wait {
    /// Until the test sends on the channel.
    Signal(Mutex<mpsc::Receiver<()>>),
    /// For this long (real time).
    Sleep(Duration),
}

#[derive(Default)]
struct Bank {
    /// Every real execution: (effect id, tool).
    ledger: Mutex<Vec<(Digest, &'static str)>>,
    /// Saved results of the idempotent tool, by key.
    saved: Mutex<HashMap<Digest, Json>>,
    /// Calls of each tool (executed or deduplicated).
    calls: AtomicUsize,
    /// Runs whose first call stalls, and how.
    stalls: Mutex<HashMap<String, (Stall, Arc<Wait>)>>,
    /// Told when a call starts stalling.
    stalled: Mutex<Option<mpsc::Sender<String>>>,
}

impl Bank {
    fn stall(&self, run_id: &str, at: Stall, wait: Wait) {
        self.stalls
            .lock()
            .unwrap()
            .insert(run_id.to_string(), (at, Arc::new(wait)));
    }

    fn executions(&self, key: &Digest) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .count()
    }

    fn did(&self, key: &Digest) -> bool {
        self.executions(key) > 0
    }

    /// The result a tool gives for `key` (deterministic, so an operator can restate it).
    fn result(tool: &str, key: &Digest) -> Json {
        json!({ "tool": tool, "id": key.short() })
    }

    fn maybe_stall(&self, ctx: &ToolContext, now: Stall) {
        let stall = {
            let mut stalls = self.stalls.lock().unwrap();
            match stalls.get(ctx.run_id.as_ref()) {
                Some((at, _)) if *at == now => stalls.remove(ctx.run_id.as_ref()),
                _ => None,
            }
        };
        if let Some((_, wait)) = stall {
            if let Some(tx) = &*self.stalled.lock().unwrap() {
                let _ = tx.send(ctx.run_id.to_string());
            }
            match &*wait {
                Wait::Signal(rx) => {
                    let _ = rx.lock().unwrap().recv();
                }
                Wait::Sleep(d) => std::thread::sleep(*d),
            }
        }
    }

    fn execute(&self, ctx: &ToolContext, tool: &'static str, idempotent: bool) -> Json {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.maybe_stall(ctx, Stall::Before);
        let key = ctx.idempotency_key;
        let result = {
            let mut saved = self.saved.lock().unwrap();
            match saved.get(&key) {
                Some(r) if idempotent => r.clone(),
                _ => {
                    self.ledger.lock().unwrap().push((key, tool));
                    let r = Bank::result(tool, &key);
                    saved.insert(key, r.clone());
                    r
                }
            }
        };
        self.maybe_stall(ctx, Stall::After);
        result
    }
}

#[derive(Clone, Default)]
struct Tools(Arc<Bank>);

impl cr::Tools for Tools {
    async fn issue_refund(&self, ctx: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        Ok(self.0.execute(ctx, "issue_refund", true))
    }
    async fn send_rejection(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
    ) -> Result<Json, ToolError> {
        Ok(self.0.execute(ctx, "send_rejection", false))
    }
}

/// Answers `yes` or `no` as the request says (`... #yes`).
fn model() -> FnModel<
    impl Fn(&ModelRequest) -> Result<ModelReply, nanovm_runtime::model::ModelError>
    + Send
    + Sync
    + 'static,
> {
    FnModel::new(|req: &ModelRequest| {
        let yes = req.prompt.ends_with("#yes");
        Ok(ModelReply::text(if yes { "yes" } else { "no" }))
    })
}

fn runtime(store: Arc<dyn JournalStore>, vault: Arc<MemoryVault>, clock: impl Clock) -> Runtime {
    Runtime::builder()
        .model(model())
        .vault(vault)
        .clock(clock)
        .store(store)
        .build()
}

fn input(vault: &MemoryVault, yes: bool) -> cr::Input {
    cr::Input {
        request: format!("It broke. #{}", if yes { "yes" } else { "no" }),
        order_id: "o-1".into(),
        amount_cents: 100,
        email: vault.secret(&"dee@example.com".to_string()).unwrap(),
    }
}

/// The effect id of a run's (single) intent.
async fn effect_in(store: &dyn JournalStore, run_id: &str) -> Digest {
    store
        .load(run_id)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .find_map(|e| match &e.event {
            Event::ToolIntent { effect_id, .. } => Some(*effect_id),
            _ => None,
        })
        .expect("an intent")
}

fn effect_of(store: &dyn JournalStore, run_id: &str) -> Digest {
    block_on(effect_in(store, run_id))
}

// ---------------------------------------------------------------------------------------------
// A stalled worker is fenced

/// What [`takeover`] leaves: A's result, B's execution (reconciled if it had to be), the bank
/// and the store.
type Takeover = (
    Result<Option<nanovm_runtime::Execution>, RunError>,
    nanovm_runtime::Execution,
    Arc<Bank>,
    Arc<dyn JournalStore>,
);

/// Worker A claims run `r` and stalls in the bank (`at`); its lease expires and worker B takes
/// the run over and finishes it; then A wakes up.
fn takeover(yes: bool, at: Stall) -> Takeover {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryStore::new());
    let vault = Arc::new(MemoryVault::seeded(3));
    let clock = ManualClock::new(START);
    let rt = runtime(store.clone(), vault.clone(), clock.clone());
    block_on(rt.submit::<cr::Program>(input(&vault, yes), Some("r"))).unwrap();

    let bank = Arc::new(Bank::default());
    let (release, wait) = mpsc::channel();
    let (tell, stalled) = mpsc::channel();
    *bank.stalled.lock().unwrap() = Some(tell);
    bank.stall("r", at, Wait::Signal(Mutex::new(wait)));
    let tools = Tools(bank.clone());

    let a = {
        let rt = rt.clone();
        let tools = tools.clone();
        std::thread::spawn(move || {
            block_on(Worker::new(rt, "a", 10_000).run_once::<cr::Program>(Arc::new(tools)))
        })
    };
    assert_eq!(stalled.recv().unwrap(), "r");
    // A is frozen (no renewal); its lease runs out and B claims the run.
    clock.advance(Duration::from_millis(10_000));
    let b = Worker::new(rt.clone(), "b", 10_000);
    let mut done = block_on(b.run_once::<cr::Program>(Arc::new(tools.clone())))
        .expect("B executes")
        .expect("B claims the run");
    if done.status == RunStatus::NeedsReconciliation {
        // The operator looks at the bank's ledger.
        let effect = effect_of(&*store, "r");
        let resolution = if bank.did(&effect) {
            Resolution::Done(Bank::result("send_rejection", &effect))
        } else {
            Resolution::NotDone
        };
        done =
            block_on(rt.reconcile::<cr::Program>("r", effect, resolution, Arc::new(tools.clone())))
                .expect("reconciled");
    }
    release.send(()).unwrap();
    let a = a.join().unwrap();
    (a, done, bank, store)
}

#[track_caller]
/// A, holding epoch 1, was refused because the run's lease had moved to `current` (2 once B
/// claimed it; 3 when the operator's reconciliation took its own lease after B).
fn assert_fenced(a: &Result<Option<nanovm_runtime::Execution>, RunError>, current: u64) {
    assert!(
        matches!(
            a,
            Err(RunError::Journal(JournalError::Fenced { held: 1, current: c, .. })) if *c == current
        ),
        "{a:?}"
    );
}

#[test]
fn a_stalled_worker_is_fenced_after_its_idempotent_effect_was_taken_over() {
    let (a, done, bank, store) = takeover(true, Stall::After);
    assert_fenced(&a, 2);
    assert_eq!(done.status, RunStatus::Success);
    let effect = effect_of(&*store, "r");
    assert_eq!(bank.executions(&effect), 1, "the bank honoured the key");
    assert_eq!(
        bank.calls.load(Ordering::SeqCst),
        2,
        "A's call and B's re-call"
    );
    // A wrote nothing after B: the store holds B's trace.
    let stored = block_on(store.load("r")).unwrap().unwrap();
    assert_eq!(stored, done.trace.entries());
    let record = block_on(store.run("r")).unwrap().unwrap();
    assert_eq!(record.lease_owner, None, "B released its lease");
}

#[test]
fn a_stalled_worker_is_fenced_after_its_non_idempotent_effect_was_reconciled() {
    let (a, done, bank, store) = takeover(false, Stall::After);
    assert_fenced(&a, 3);
    assert_eq!(done.status, RunStatus::Success);
    let effect = effect_of(&*store, "r");
    assert_eq!(bank.executions(&effect), 1);
    assert_eq!(
        bank.calls.load(Ordering::SeqCst),
        1,
        "B never called it again"
    );
    let stored = Trace::from_entries(block_on(store.load("r")).unwrap().unwrap()).unwrap();
    assert_eq!(stored.root(), done.root());
    assert_eq!(
        replay::<cr::Program>(&stored).unwrap().status,
        RunStatus::Success
    );
}

#[test]
fn a_worker_fenced_before_its_intent_invokes_no_effect() {
    // A stalls in the model call, before the refund's intent: B does the whole run; A wakes,
    // its intent append is fenced, and it never calls the bank.
    let store: Arc<dyn JournalStore> = Arc::new(MemoryStore::new());
    let vault = Arc::new(MemoryVault::seeded(4));
    let clock = ManualClock::new(START);
    let (release, wait) = mpsc::channel::<()>();
    let (tell, stalled) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let first = AtomicBool::new(true);
    let model = FnModel::new(move |_: &ModelRequest| {
        if first.swap(false, Ordering::SeqCst) {
            let _ = tell.send(());
            let _ = wait.lock().unwrap().recv();
        }
        Ok(ModelReply::text("yes"))
    });
    let rt = Runtime::builder()
        .model(model)
        .vault(vault.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    block_on(rt.submit::<cr::Program>(input(&vault, true), Some("r"))).unwrap();
    let bank = Arc::new(Bank::default());
    let tools = Tools(bank.clone());
    let a = {
        let rt = rt.clone();
        let tools = tools.clone();
        std::thread::spawn(move || {
            block_on(Worker::new(rt, "a", 10_000).run_once::<cr::Program>(Arc::new(tools)))
        })
    };
    stalled.recv().unwrap();
    clock.advance(Duration::from_millis(10_000));
    let done = block_on(Worker::new(rt, "b", 10_000).run_once::<cr::Program>(Arc::new(tools)))
        .unwrap()
        .unwrap();
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(bank.calls.load(Ordering::SeqCst), 1);
    release.send(()).unwrap();
    let a = a.join().unwrap();
    assert_fenced(&a, 2);
    assert_eq!(
        bank.calls.load(Ordering::SeqCst),
        1,
        "no effect after a failed intent append"
    );
    assert_eq!(
        block_on(store.load("r")).unwrap().unwrap(),
        done.trace.entries()
    );
}

#[test]
fn a_worker_renews_its_lease_while_a_step_takes_long() {
    // The bank's call waits (asynchronously) while the clock moves past several lease
    // lengths: the worker's renewals keep the run its own, so nobody else can claim it.
    let store = MemoryStore::new();
    let vault = Arc::new(MemoryVault::seeded(5));
    let clock = ManualClock::new(START);
    let rt = runtime(Arc::new(store.clone()), vault.clone(), clock.clone());
    block_on(rt.submit::<cr::Program>(input(&vault, true), Some("r"))).unwrap();
    let host = support::Host::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    host.hook(
        "issue_refund",
        Arc::new(move |_| {
            let g = g.clone();
            Box::pin(async move { g.notified().await })
        }),
    );
    let worker = Worker::new(rt.clone(), "slow", 3_000);
    let other = Worker::new(rt, "other", 3_000);
    let done = block_on(async {
        let run = worker.run_once::<cr::Program>(Arc::new(host.clone()));
        let drive = async {
            while host.calls("issue_refund") == 0 {
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                // One renewal period at a time, letting the worker renew in between.
                clock.advance(Duration::from_millis(1_000));
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                let stolen = other
                    .run_once::<cr::Program>(Arc::new(support::Host::new()))
                    .await
                    .expect("claims nothing");
                assert!(stolen.is_none(), "the lease was renewed");
            }
            gate.notify_one();
        };
        let (done, ()) = tokio::join!(run, drive);
        done
    })
    .expect("runs")
    .expect("claimed");
    assert_eq!(done.status, RunStatus::Success);
    let record = block_on(store.run("r")).unwrap().unwrap();
    assert_eq!(record.epoch, 1, "claimed once, renewed, never taken over");
}

// ---------------------------------------------------------------------------------------------
// Many workers, many runs, stalls

/// Runs 16 submitted runs (even: refund, idempotent; odd: rejection, not idempotent) with 4
/// worker tasks on a multi-threaded runtime and real short leases; every fifth run's first bank
/// call stalls its worker thread past the lease (before or after the effect). An operator loop
/// reconciles what needs it from the ledger. Then checks every run and the ledger.
async fn many_workers(store: Arc<dyn JournalStore>, prefix: &str) {
    const RUNS: usize = 16;
    const WORKERS: usize = 4;
    const LEASE_MS: u64 = 80;
    let vault = Arc::new(MemoryVault::new());
    let rt = runtime(store.clone(), vault.clone(), SystemClock);
    let bank = Arc::new(Bank::default());
    let ids: Vec<String> = (0..RUNS).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        rt.submit::<cr::Program>(input(&vault, i % 2 == 0), Some(id))
            .await
            .unwrap();
        if i % 5 == 0 {
            // A stall before the effect only for the idempotent refund: a non-idempotent call
            // still in flight when an operator says "not done" would be a second execution,
            // which is exactly what the documentation tells operators to rule out first.
            let at = if i % 10 == 0 {
                Stall::Before
            } else {
                Stall::After
            };
            bank.stall(id, at, Wait::Sleep(Duration::from_millis(4 * LEASE_MS)));
        }
    }
    let tools = Tools(bank.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let fenced = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let worker = Worker::new(rt.clone(), format!("{prefix}-w{w}"), LEASE_MS);
            let tools = tools.clone();
            let stop = stop.clone();
            let fenced = fenced.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match worker
                        .run_once::<cr::Program>(Arc::new(tools.clone()))
                        .await
                    {
                        Ok(Some(_)) => {}
                        Ok(None) => tokio::time::sleep(Duration::from_millis(2)).await,
                        Err(RunError::Journal(JournalError::Fenced { .. })) => {
                            fenced.fetch_add(1, Ordering::SeqCst);
                        }
                        // Two writers racing for the same append: the loser stops.
                        Err(RunError::Journal(JournalError::Conflict { .. })) => {}
                        Err(e) => panic!("worker {w}: {e}"),
                    }
                }
            })
        })
        .collect();

    // The operator: reconciles ambiguous effects from the ledger until every run has ended. As
    // the documentation asks, "not done" is answered only once the original call can no longer
    // land: the ledger is read again after a grace of many leases from the moment the run was
    // seen paused (a worker starved past its lease between writing the intent and calling the
    // tool would otherwise call it after the operator's "not done").
    let give_up = Instant::now() + Duration::from_secs(60);
    let grace = Duration::from_millis(25 * LEASE_MS);
    let mut paused_since: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        let records = store
            .runs(&RunQuery::new().program("customer_refund"))
            .await
            .unwrap();
        let mine: Vec<_> = records
            .into_iter()
            .filter(|r| r.run_id.starts_with(&format!("{prefix}-")))
            .collect();
        if mine.len() == RUNS && mine.iter().all(|r| r.status.is_terminal()) {
            break;
        }
        for r in mine
            .iter()
            .filter(|r| r.status == RunStatus::NeedsReconciliation)
        {
            let effect = effect_in(&*store, &r.run_id).await;
            let since = *paused_since
                .entry(r.run_id.clone())
                .or_insert_with(Instant::now);
            let resolution = if bank.did(&effect) {
                Resolution::Done(Bank::result("send_rejection", &effect))
            } else if since.elapsed() >= grace {
                Resolution::NotDone
            } else {
                continue;
            };
            let _ = rt
                .reconcile::<cr::Program>(&r.run_id, effect, resolution, Arc::new(tools.clone()))
                .await;
        }
        assert!(Instant::now() < give_up, "the runs did not all finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "{prefix}: {RUNS} runs, {WORKERS} workers, {} fenced worker(s), {} bank calls, {} executions",
        fenced.load(Ordering::SeqCst),
        bank.calls.load(Ordering::SeqCst),
        bank.ledger.lock().unwrap().len()
    );

    for (i, id) in ids.iter().enumerate() {
        let entries = store.load(id).await.unwrap().unwrap();
        let trace = Trace::from_entries(entries).expect("verifies");
        let ends = trace
            .entries()
            .iter()
            .filter(|e| matches!(&e.event, Event::RunEnded { status, .. } if status.is_terminal()))
            .count();
        assert_eq!(ends, 1, "{id} ended exactly once");
        let report = replay::<cr::Program>(&trace).expect("replays");
        assert_eq!(report.status, RunStatus::Success, "{id}");
        assert_eq!(report.root, trace.root());
        let effect = effect_in(&*store, id).await;
        assert_eq!(
            bank.executions(&effect),
            1,
            "{id} ({}): one execution of its effect",
            if i % 2 == 0 {
                "idempotent"
            } else {
                "not idempotent"
            }
        );
        let record = store.run(id).await.unwrap().unwrap();
        assert_eq!(record.lease_owner, None, "{id}: no lease left behind");
    }
    assert_eq!(
        bank.ledger.lock().unwrap().len(),
        RUNS,
        "no other execution"
    );
}

/// A multi-threaded runtime with a thread per worker and spares (a stalled worker blocks one).
fn threaded() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn many_workers_finish_every_run_once_on_a_memory_store() {
    threaded().block_on(many_workers(Arc::new(MemoryStore::new()), "mem"));
}

// (This crate's tests always build the `postgres` feature: see the dev-dependency on itself.)
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL); run with --ignored"]
fn many_workers_finish_every_run_once_on_postgres() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let url = support::peers::database_url();
    let schema = format!(
        "nanovm_workers_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    threaded().block_on(async {
        let store =
            PostgresStore::connect_with(&url, PostgresOptions::new().schema(schema.clone()))
                .await
                .expect("connects");
        many_workers(Arc::new(store), "pg").await;
        // Leave the database as it was.
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("drop schema {schema} cascade"))
            .await
            .expect("drops the schema");
    });
}
