//! Exhaustive crash tests on the shared example workflows.
//!
//! Each scenario is run once through a [`FaultyStore`] that counts store operations, to learn
//! how many operations `N` a crash-free run takes. Then, for EVERY `k` in `0..=N` and both kinds
//! of fault, it is run again with the fault at operation `k`:
//!
//! * **error**: operation `k` (and every later one) fails without being applied; the process
//!   sees the error and exits;
//! * **abort**: operation `k` is applied, then the process dies before seeing the answer (the
//!   runtime's future is dropped right after the write).
//!
//! A new process (a fresh `Runtime` over the same underlying store and vault) then recovers the
//! run the way a client and an operator would: it retries the request (a duplicate start
//! resumes a run left mid-way), re-delivers an event the script had not seen acknowledged, and
//! reconciles an ambiguous effect from the mock bank's ledger (`NotDone` only when the ledger
//! shows the effect did not happen). It asserts:
//!
//! * every effect id in the final trace was executed exactly once by the bank (idempotent tools
//!   honour their key and return the saved result; others execute on every call, so a second
//!   call would show), and the bank executed nothing else;
//! * every entry acknowledged before the crash is still stored, byte-identical;
//! * the final chain verifies;
//! * the final outcome (status, end step, path, outputs) equals the crash-free run's, and so
//!   does the root hash unless an operator had to reconcile (which adds entries).
//!
//! On a `MemoryStore` and on a `SqliteStore` (a temporary file per attempt, opened anew by the
//! recovering process), not sampled. On the `MemoryStore` also every *double* crash: for each
//! crash point of the run, a second crash (both kinds) at every store operation of the process
//! that recovers it, then a clean recovery.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use nanovm::__private_v0_1::{Program, ProgramInfo};
use nanovm::store::OPERATION_LEASE_MS;
use nanovm::store::SqliteStore;
use nanovm::store::{Fence, JournalError, JournalStore, Lease, MemoryStore, RunQuery, RunRecord};
use nanovm::testing::{ManualClock, ScriptedModel};
use nanovm::trace::{Entry, Event, RunStatus, Trace, entry_line};
use nanovm::vault::MemoryVault;
use nanovm::{BoxFuture, ToolContext, ToolError};
use nanovm::{DeliverError, Execution, ReconcileError, Resolution, RunError, RunOptions, Runtime};
use nanovm::{Digest, Json, Secret};
use serde_json::json;

nanovm::include_program!("../examples/workflows/customer_refund.nvm");
nanovm::include_program!("../examples/workflows/order_pipeline.nvm");
nanovm::include_program!("../examples/workflows/payment_recovery.nvm");

const START: u64 = 1_700_000_000_000;

/// A fresh store for one attempt, and how a new process opens the same store again.
struct Store {
    now: Arc<dyn JournalStore>,
    reopen: Box<dyn Fn() -> BoxFuture<'static, Arc<dyn JournalStore>> + Send + Sync>,
}

/// Makes a [`Store`] per attempt.
type NewStore = dyn Fn() -> BoxFuture<'static, Store>;

fn memory_store() -> BoxFuture<'static, Store> {
    Box::pin(async {
        let store: Arc<dyn JournalStore> = Arc::new(MemoryStore::new());
        let again = store.clone();
        Store {
            now: store,
            reopen: Box::new(move || {
                let again = again.clone();
                Box::pin(async move { again })
            }),
        }
    })
}

/// A SQLite file in a fresh temporary directory (removed when the last handle goes).
fn sqlite_store() -> BoxFuture<'static, Store> {
    Box::pin(async {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let path = dir.path().join("runs.db");
        let store: Arc<dyn JournalStore> =
            Arc::new(SqliteStore::open(&path).await.expect("opens the database"));
        Store {
            now: store,
            reopen: Box::new(move || {
                let (dir, path) = (dir.clone(), path.clone());
                Box::pin(async move {
                    let store = SqliteStore::open(&path)
                        .await
                        .expect("reopens the database");
                    let _keep = dir;
                    Arc::new(store) as Arc<dyn JournalStore>
                })
            }),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The faulty store

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Operation `k` and every later one fail, unapplied.
    Error,
    /// Operation `k` is applied, then the process dies.
    Abort,
}

/// Wraps a store; fails (or dies) at operation `k`; remembers every acknowledged entry.
#[derive(Clone)]
struct FaultyStore {
    inner: Arc<dyn JournalStore>,
    fault: Option<(Fault, usize)>,
    ops: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, Entry)>>>,
}

impl FaultyStore {
    fn new(inner: Arc<dyn JournalStore>, fault: Option<(Fault, usize)>) -> Self {
        FaultyStore {
            inner,
            fault,
            ops: Arc::default(),
            dead: Arc::default(),
            acknowledged: Arc::default(),
        }
    }

    fn ops(&self) -> usize {
        self.ops.load(Ordering::SeqCst)
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Runs one operation through the fault.
    fn op<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce() -> BoxFuture<'a, Result<T, JournalError>> + Send + 'a,
        on_ok: impl FnOnce(&T) + Send + 'a,
    ) -> BoxFuture<'a, Result<T, JournalError>> {
        Box::pin(async move {
            if self.is_dead() {
                return std::future::pending().await;
            }
            let n = self.ops.fetch_add(1, Ordering::SeqCst);
            match self.fault {
                Some((Fault::Error, k)) if n >= k => Err(JournalError::Io(format!(
                    "injected failure at operation {n}"
                ))),
                Some((Fault::Abort, k)) if n == k => {
                    let _ = f().await;
                    self.dead.store(true, Ordering::SeqCst);
                    std::future::pending().await
                }
                _ => {
                    let r = f().await;
                    if let Ok(v) = &r {
                        on_ok(v);
                    }
                    r
                }
            }
        })
    }
}

impl JournalStore for FaultyStore {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.op(
            move || self.inner.append(run_id, entries, fence),
            move |()| {
                self.acknowledged
                    .lock()
                    .unwrap()
                    .extend(entries.iter().map(|e| (run_id.to_string(), e.clone())));
            },
        )
    }
    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        self.op(move || self.inner.load(run_id), |_| {})
    }
    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        self.op(move || self.inner.run(run_id), |_| {})
    }
    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        self.op(move || self.inner.runs(query), |_| {})
    }
    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        self.op(
            move || self.inner.claim(program, worker, now_ms, lease_ms),
            |_| {},
        )
    }
    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.op(move || self.inner.renew(lease, now_ms, lease_ms), |_| {})
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        self.op(move || self.inner.release(lease), |_| {})
    }
    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        self.op(
            move || self.inner.claim_run(run_id, worker, now_ms, lease_ms),
            |_| {},
        )
    }
    /// An execution's last write (its entries, and its lease given back): one operation, like
    /// an append.
    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.op(
            move || self.inner.append_release(run_id, entries, lease),
            move |()| {
                self.acknowledged
                    .lock()
                    .unwrap()
                    .extend(entries.iter().map(|e| (run_id.to_string(), e.clone())));
            },
        )
    }
    /// A new run's first write (created and leased at once): one operation, like an append.
    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        self.op(
            move || {
                self.inner
                    .start_run(run_id, entries, worker, now_ms, lease_ms)
            },
            move |_| {
                self.acknowledged
                    .lock()
                    .unwrap()
                    .extend(entries.iter().map(|e| (run_id.to_string(), e.clone())));
            },
        )
    }
}

/// Completes when the faulty store's process has died.
struct Death(FaultyStore);

impl Future for Death {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_dead() {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The mock bank

/// Executes effects and keeps a ledger of every real execution. An `idempotent` tool (as the
/// program declares it) honours its idempotency key: a repeated key returns the saved result
/// without executing (Stripe's semantics). Other effect tools execute on every call.
struct Bank {
    info: &'static ProgramInfo,
    ledger: Mutex<Vec<(Digest, String)>>,
    saved: Mutex<HashMap<Digest, Json>>,
}

impl Bank {
    fn new(info: &'static ProgramInfo) -> Arc<Bank> {
        Arc::new(Bank {
            info,
            ledger: Mutex::default(),
            saved: Mutex::default(),
        })
    }

    /// What the tool answers for `key`: `base` plus the key (deterministic, so an operator can
    /// restate it from the ledger).
    fn answer(base: &Json, key: &Digest) -> Json {
        let mut v = base.clone();
        if let Json::Object(m) = &mut v {
            m.insert("id".into(), json!(key.short()));
        }
        v
    }

    fn call(&self, ctx: &ToolContext, tool: &str, base: Json) -> Result<Json, ToolError> {
        let Some(info) = self.info.tools.iter().find(|t| t.name == tool) else {
            return Err(ToolError::permanent(format!("no tool {tool}")));
        };
        if !info.effect {
            return Ok(base);
        }
        let key = ctx.idempotency_key;
        let mut saved = self.saved.lock().unwrap();
        if info.idempotent
            && let Some(r) = saved.get(&key)
        {
            return Ok(r.clone());
        }
        self.ledger.lock().unwrap().push((key, tool.to_string()));
        let r = Bank::answer(&base, &key);
        saved.insert(key, r.clone());
        Ok(r)
    }

    fn executions(&self, key: &Digest) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .count()
    }

    fn saved(&self, key: &Digest) -> Option<Json> {
        self.saved.lock().unwrap().get(key).cloned()
    }
}

struct Shop(Arc<Bank>);

impl customer_refund::Tools for Shop {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount: i64,
    ) -> Result<Json, ToolError> {
        self.0.call(
            ctx,
            "issue_refund",
            json!({"order_id": order_id, "amount_cents": amount}),
        )
    }
    async fn send_rejection(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "send_rejection", json!({"sent": true}))
    }
}

struct Warehouse(Arc<Bank>);

impl order_pipeline::Tools for Warehouse {
    async fn validate_order(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0.call(ctx, "validate_order", json!({"ok": true}))
    }
    async fn fraud_score(
        &self,
        ctx: &ToolContext,
        _: String,
        _: String,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "fraud_score", json!({"risk": 12}))
    }
    async fn reserve_inventory(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0
            .call(ctx, "reserve_inventory", json!({"reserved": true}))
    }
    async fn confirm_order(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0
            .call(ctx, "confirm_order", json!({"confirmed": true}))
    }
    async fn send_email(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
        _: String,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "send_email", json!({"queued": true}))
    }
    async fn notify_warehouse(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0.call(ctx, "notify_warehouse", json!({"ok": true}))
    }
    async fn refund_order(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0.call(ctx, "refund_order", json!({"refunded": true}))
    }
}

struct Billing(Arc<Bank>);

impl payment_recovery::Tools for Billing {
    async fn fetch_invoice(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0
            .call(ctx, "fetch_invoice", json!({"status": "past_due"}))
    }
    async fn retry_charge(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0
            .call(ctx, "retry_charge", json!({"status": "succeeded"}))
    }
    async fn send_sms(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
        _: String,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "send_sms", json!({"sent": true}))
    }
    async fn send_card_update_link(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.0
            .call(ctx, "send_card_update_link", json!({"sent": true}))
    }
    async fn block_account(
        &self,
        ctx: &ToolContext,
        _: String,
        _: String,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "block_account", json!({"blocked": true}))
    }
    async fn alert_support(
        &self,
        ctx: &ToolContext,
        _: String,
        _: String,
    ) -> Result<Json, ToolError> {
        self.0.call(ctx, "alert_support", json!({"ticket": 1}))
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// One client request and what it expects to deliver afterwards.
struct Scenario<P: Program> {
    name: &'static str,
    /// The model's answers, by step.
    answers: &'static [(&'static str, &'static str)],
    input: fn(&MemoryVault) -> P::Input,
    tools: fn(Arc<Bank>) -> Arc<P::Tools>,
    /// Events the client delivers once the run suspends: (event, event id, payload).
    deliveries: Vec<(&'static str, &'static str, Json)>,
}

/// One simulated process: a runtime over a store (faulty or not), sharing the vault.
fn process(
    store: Arc<dyn JournalStore>,
    vault: &Arc<MemoryVault>,
    answers: &[(&str, &str)],
) -> Runtime {
    process_with_clock(store, vault, answers, ManualClock::new(START))
}

fn process_with_clock(
    store: Arc<dyn JournalStore>,
    vault: &Arc<MemoryVault>,
    answers: &[(&str, &str)],
    clock: ManualClock,
) -> Runtime {
    let mut model = ScriptedModel::new();
    for (step, answer) in answers {
        model = model.always(step, *answer);
    }
    Runtime::builder()
        .model(model)
        .vault(vault.clone())
        .clock(clock)
        .store(store)
        .build()
}

/// True for "someone holds the run's lease" (a process that died holding it, here).
trait Leased {
    fn leased(&self) -> bool;
}

impl Leased for RunError {
    fn leased(&self) -> bool {
        matches!(self, RunError::Leased { .. })
    }
}

impl Leased for DeliverError {
    fn leased(&self) -> bool {
        matches!(self, DeliverError::Run(e) if e.leased())
    }
}

impl Leased for ReconcileError {
    fn leased(&self) -> bool {
        matches!(self, ReconcileError::Run(e) if e.leased())
    }
}

impl Leased for JournalError {
    fn leased(&self) -> bool {
        false
    }
}

const RUN_ID: &str = "run-1";

/// What a scenario left behind.
struct Outcome {
    execution: Execution,
    /// Store operations the process made (crash-free: all of them).
    ops: usize,
    /// Store operations the first recovering process made.
    recovery_ops: usize,
    /// No operator answered and no process waited out a lease: the trace must be the
    /// crash-free run's, root and all.
    same_root_expected: bool,
}

/// The client's script: start, then deliver each event once the run is suspended waiting for
/// it. Stops at the first error (the process exits) or when the store dies.
async fn script<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    rt: &Runtime,
    faulty: &FaultyStore,
    input: &P::Input,
    bank: &Arc<Bank>,
) -> Option<Execution> {
    let run = async {
        let mut e = rt
            .run::<P>(
                input.clone(),
                (s.tools)(bank.clone()),
                RunOptions::new().run_id(RUN_ID),
            )
            .await
            .ok()?;
        for (event, id, payload) in &s.deliveries {
            if e.status != RunStatus::Suspended {
                break;
            }
            e = rt
                .deliver::<P>(RUN_ID, event, id, payload.clone(), (s.tools)(bank.clone()))
                .await
                .ok()?
                .into_execution();
        }
        Some(e)
    };
    tokio::select! {
        biased;
        () = Death(faulty.clone()) => None,
        e = run => e,
    }
}

fn describe(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{:>3} {}", e.seq, e.event.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Awaits `fut`, or `None` if the faulty store's process dies first.
async fn guarded<T>(fut: impl Future<Output = T>, faulty: Option<&FaultyStore>) -> Option<T> {
    match faulty {
        None => Some(fut.await),
        Some(f) => tokio::select! {
            biased;
            () = Death(f.clone()) => None,
            v = fut => Some(v),
        },
    }
}

/// A new process recovers the run: retries the request, re-delivers what the script had not
/// seen acknowledged, reconciles from the ledger, waits out the lease of a process that died
/// holding one. Returns the final execution, whether an operator reconciled, and whether it
/// had to wait (its clock then runs later, so a deadline recorded after that differs).
async fn recover<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    store: &Arc<dyn JournalStore>,
    vault: &Arc<MemoryVault>,
    input: &P::Input,
    bank: &Arc<Bank>,
) -> (Execution, bool, bool) {
    recover_in(s, store, None, vault, input, bank)
        .await
        .unwrap_or_else(|| panic!("{}: a clean recovery cannot die", s.name))
}

/// [`recover`], through `faulty` if given: then a failed or dead store operation ends the
/// recovering process (`None`), as a crash would.
async fn recover_in<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    raw: &Arc<dyn JournalStore>,
    faulty: Option<FaultyStore>,
    vault: &Arc<MemoryVault>,
    input: &P::Input,
    bank: &Arc<Bank>,
) -> Option<(Execution, bool, bool)> {
    let store: Arc<dyn JournalStore> = match &faulty {
        Some(f) => Arc::new(f.clone()),
        None => raw.clone(),
    };
    let clock = ManualClock::new(START);
    let rt = process_with_clock(store.clone(), vault, s.answers, clock.clone());
    let mut reconciled = false;
    let mut waited = false;
    let mut delivered = 0;
    macro_rules! op {
        ($fut:expr, $what:literal) => {
            match guarded($fut, faulty.as_ref()).await {
                None => return None,
                Some(Ok(v)) => v,
                Some(Err(e)) if e.leased() => {
                    // A dead process's lease: wait it out (on this process's clock), retry.
                    clock.advance(Duration::from_millis(OPERATION_LEASE_MS));
                    waited = true;
                    continue;
                }
                Some(Err(_)) if faulty.is_some() => return None,
                Some(Err(e)) => {
                    let entries = raw.load(RUN_ID).await.ok().flatten().unwrap_or_default();
                    panic!("{}: {} failed: {e}\n{}", s.name, $what, describe(&entries))
                }
            }
        };
    }
    let start = || {
        rt.run::<P>(
            input.clone(),
            (s.tools)(bank.clone()),
            RunOptions::new().run_id(RUN_ID),
        )
    };
    for _ in 0..20 {
        let Some(record) = op!(store.run(RUN_ID), "reading the record") else {
            // Nothing was stored: the request is simply retried.
            op!(start(), "retrying the request");
            continue;
        };
        match record.status {
            RunStatus::Running => {
                // A duplicate start resumes a run left mid-way.
                op!(start(), "resuming");
            }
            RunStatus::NeedsReconciliation => {
                let entries = op!(store.load(RUN_ID), "loading").expect("stored");
                let effect = *nanovm::RunView::of_program::<P>(&entries)
                    .to_reconcile()
                    .first()
                    .expect("an ambiguous effect");
                let resolution = match bank.saved(&effect) {
                    Some(result) => Resolution::Done(result),
                    None => Resolution::NotDone,
                };
                reconciled = true;
                op!(
                    rt.reconcile::<P>(RUN_ID, effect, resolution, (s.tools)(bank.clone())),
                    "reconciling"
                );
            }
            RunStatus::Suspended if delivered < s.deliveries.len() => {
                let (event, id, payload) = &s.deliveries[delivered];
                op!(
                    rt.deliver::<P>(RUN_ID, event, id, payload.clone(), (s.tools)(bank.clone())),
                    "delivering"
                );
                delivered += 1;
            }
            _ => {
                // Ended (or suspended with nothing left to deliver): the recorded outcome.
                let e = op!(start(), "answering a duplicate start");
                return Some((e, reconciled, waited));
            }
        }
    }
    panic!("{}: the run did not settle", s.name);
}

/// Runs scenario `s` on a fresh store from `new_store`, with `fault`; then a first recovering
/// process, with `recovery_fault` (a crash while recovering), and if that one dies too, a clean
/// one.
async fn attempt<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    new_store: &NewStore,
    fault: Option<(Fault, usize)>,
    recovery_fault: Option<(Fault, usize)>,
) -> Outcome {
    let Store { now, reopen } = new_store().await;
    let vault = Arc::new(MemoryVault::seeded(7));
    let bank = Bank::new(P::info());
    let input = (s.input)(&vault);
    let faulty = FaultyStore::new(now, fault);
    let acknowledged = faulty.acknowledged.clone();
    let rt = process(Arc::new(faulty.clone()), &vault, s.answers);
    let done = script(s, &rt, &faulty, &input, &bank).await;
    let ops = faulty.ops();
    // The process is gone; a new one opens the store.
    drop((rt, faulty));
    let store = reopen().await;
    let what = format!("{} with {fault:?}, then {recovery_fault:?}", s.name);

    let (execution, reconciled, waited, recovery_ops) = match done {
        Some(e) if fault.is_none() => (e, false, false, 0),
        _ => {
            let second = FaultyStore::new(store.clone(), recovery_fault);
            let first = recover_in(s, &store, Some(second.clone()), &vault, &input, &bank).await;
            let recovery_ops = second.ops();
            acknowledged
                .lock()
                .unwrap()
                .extend(second.acknowledged.lock().unwrap().iter().cloned());
            let (e, r, w) = match first {
                Some(done) => done,
                None => {
                    // The recovering process died too: another one starts over.
                    let store = reopen().await;
                    recover(s, &store, &vault, &input, &bank).await
                }
            };
            (e, r, w, recovery_ops)
        }
    };

    // The final chain verifies and holds every acknowledged entry, byte-identical.
    let stored = store.load(RUN_ID).await.expect("loads").expect("stored");
    let trace = Trace::from_entries(stored.clone()).expect("the stored chain verifies");
    assert_eq!(trace.root(), execution.root(), "{what}");
    for (run, entry) in acknowledged.lock().unwrap().iter() {
        assert_eq!(run, RUN_ID);
        let kept = stored.get(entry.seq as usize).map(entry_line);
        assert_eq!(
            kept.as_deref(),
            Some(entry_line(entry).as_str()),
            "{what}: acknowledged entry #{} lost or changed",
            entry.seq
        );
    }
    // Every effect of the run executed exactly once; nothing else executed.
    let mut effects: Vec<Digest> = Vec::new();
    for e in trace.entries() {
        if let Event::ToolIntent { effect_id, .. } = &e.event
            && !effects.contains(effect_id)
        {
            effects.push(*effect_id);
        }
    }
    for k in &effects {
        assert_eq!(bank.executions(k), 1, "{what}: effect {k}");
    }
    assert_eq!(
        bank.ledger.lock().unwrap().len(),
        effects.len(),
        "{what}: an execution outside the run's effects"
    );
    // An operator's answers add entries, so the root then differs from the crash-free run's
    // (whichever process gave them); so does a deadline recorded after a lease was waited out.
    let reconciled = reconciled
        || trace
            .entries()
            .iter()
            .any(|e| matches!(e.event, Event::Reconciled { .. }));
    Outcome {
        execution,
        ops,
        recovery_ops,
        same_root_expected: !reconciled && !waited,
    }
}

/// Crash-free once, then a crash at every store operation with both faults (and `k = N`, where
/// the fault never fires, as a control). Returns the number of store operations `N`.
async fn every_crash_point<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    new_store: &NewStore,
) -> usize {
    let clean = attempt(s, new_store, None, None).await;
    let want = &clean.execution;
    assert!(
        want.status.is_terminal(),
        "{}: the crash-free run ends ({})",
        s.name,
        want.status
    );
    let mut tried = 0;
    for k in 0..=clean.ops {
        for fault in [Fault::Error, Fault::Abort] {
            let got = attempt(s, new_store, Some((fault, k)), None).await;
            let e = &got.execution;
            let what = format!("{}: {fault:?} at operation {k} of {}", s.name, clean.ops);
            assert_eq!(e.status, want.status, "{what}");
            assert_eq!(e.end_step, want.end_step, "{what}");
            assert_eq!(e.message, want.message, "{what}");
            assert_eq!(e.path, want.path, "{what}");
            assert_eq!(e.outputs, want.outputs, "{what}");
            if got.same_root_expected {
                assert_eq!(e.root(), want.root(), "{what}");
            }
            if k < clean.ops {
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 2 * clean.ops);
    clean.ops
}

/// A crash at every store operation of the run, and for each of them a second crash at every
/// store operation of the process that recovers it. Returns the number of double crashes.
async fn every_double_crash<P: Program<Input: Clone>>(
    s: &Scenario<P>,
    new_store: &NewStore,
) -> usize {
    let clean = attempt(s, new_store, None, None).await;
    let want = &clean.execution;
    let mut tried = 0;
    for k in 0..clean.ops {
        for fault in [Fault::Error, Fault::Abort] {
            let first = attempt(s, new_store, Some((fault, k)), None).await;
            for k2 in 0..first.recovery_ops {
                for fault2 in [Fault::Error, Fault::Abort] {
                    let got = attempt(s, new_store, Some((fault, k)), Some((fault2, k2))).await;
                    let e = &got.execution;
                    let what = format!(
                        "{}: {fault:?} at operation {k}, then {fault2:?} at recovery operation {k2}",
                        s.name
                    );
                    assert_eq!(e.status, want.status, "{what}");
                    assert_eq!(e.end_step, want.end_step, "{what}");
                    assert_eq!(e.path, want.path, "{what}");
                    assert_eq!(e.outputs, want.outputs, "{what}");
                    if got.same_root_expected {
                        assert_eq!(e.root(), want.root(), "{what}");
                    }
                    tried += 1;
                }
            }
        }
    }
    tried
}

fn refund(
    answer: &'static str,
    deliveries: Vec<(&'static str, &'static str, Json)>,
) -> Scenario<customer_refund::Program> {
    let answers: &'static [(&'static str, &'static str)] = match answer {
        "yes" => &[("analyze", "yes")],
        "no" => &[("analyze", "no")],
        _ => &[("analyze", "maybe")],
    };
    Scenario {
        name: match answer {
            "yes" => "customer_refund/yes",
            "no" => "customer_refund/no",
            _ => "customer_refund/invalid+approval",
        },
        answers,
        input: |vault| customer_refund::Input {
            request: "My parcel arrived broken. Please refund it.".into(),
            order_id: "ord_1042".into(),
            amount_cents: 4200,
            email: vault.secret(&"ada@example.com".to_string()).unwrap(),
        },
        tools: |bank| Arc::new(Shop(bank)),
        deliveries,
    }
}

fn order() -> Scenario<order_pipeline::Program> {
    Scenario {
        name: "order_pipeline",
        answers: &[],
        input: |vault| order_pipeline::Input {
            order_id: "o-77".into(),
            country: "DE".into(),
            amount_cents: 1999,
            email: vault.secret(&"bob@example.com".to_string()).unwrap(),
        },
        tools: |bank| Arc::new(Warehouse(bank)),
        deliveries: Vec::new(),
    }
}

fn recovery(answer: &'static str) -> Scenario<payment_recovery::Program> {
    Scenario {
        name: if answer == "funds" {
            "payment_recovery/funds"
        } else {
            "payment_recovery/card"
        },
        answers: if answer == "funds" {
            &[("classify", "funds")]
        } else {
            &[("classify", "card")]
        },
        input: |vault| payment_recovery::Input {
            customer_id: "c9".into(),
            invoice_id: "in_1".into(),
            decline_code: "insufficient_funds".into(),
            attempt: 1,
            phone: vault.secret(&"+49 30 1234".to_string()).unwrap(),
        },
        tools: |bank| Arc::new(Billing(bank)),
        deliveries: Vec::new(),
    }
}

/// One crash at every store operation, or a second crash at every store operation of each
/// recovery too.
#[derive(Clone, Copy)]
enum Crashes {
    Single,
    Double,
}

impl Crashes {
    /// Runs `s` under every crash of this kind; the count the report prints.
    async fn run<P: Program<Input: Clone>>(self, s: &Scenario<P>, new_store: &NewStore) -> usize {
        match self {
            Crashes::Single => every_crash_point(s, new_store).await,
            Crashes::Double => every_double_crash(s, new_store).await,
        }
    }
}

/// Every scenario on stores from `new_store`; prints the crashes per scenario.
async fn all_scenarios(store_name: &str, new_store: &NewStore, crashes: Crashes) {
    let mut report = Vec::new();
    for s in [
        refund("yes", Vec::new()),
        refund("no", Vec::new()),
        refund(
            "maybe",
            vec![(
                "approval",
                "approval-1",
                json!({"approved": true, "by": "dana"}),
            )],
        ),
    ] {
        report.push((s.name, crashes.run(&s, new_store).await));
    }
    report.push(("order_pipeline", crashes.run(&order(), new_store).await));
    for answer in ["funds", "card"] {
        let s = recovery(answer);
        report.push((s.name, crashes.run(&s, new_store).await));
    }
    for (name, n) in report {
        match crashes {
            Crashes::Single => eprintln!(
                "{store_name}: {name}: {n} store operations, {} crashes (error and abort at each)",
                2 * n
            ),
            Crashes::Double => eprintln!(
                "{store_name}: {name}: {n} double crashes (a crash, then a crash while recovering)"
            ),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn every_crash_point_on_a_memory_store() {
    runtime().block_on(all_scenarios("memory", &memory_store, Crashes::Single));
}

/// Crashes while recovering from a crash (memory only: the count is quadratic).
#[test]
fn every_double_crash_on_a_memory_store() {
    runtime().block_on(all_scenarios("memory", &memory_store, Crashes::Double));
}

#[test]
fn every_crash_point_on_a_sqlite_store() {
    runtime().block_on(all_scenarios("sqlite", &sqlite_store, Crashes::Single));
}
