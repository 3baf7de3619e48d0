//! Run ownership (issue 10, hole 1): a run is owned by one execution from its first durable
//! write to its end or suspension. Two starts of one run id at once, on one store (two
//! runtimes, as two processes would be): the effect executes once, the second start hears
//! that the run is in progress (`RunError::Leased`) and executes nothing; a worker does not
//! take a run a start owns; only once the owner's lease expired (it died) is the run taken
//! over, an idempotent effect re-called with its key, a non-idempotent one left to an
//! operator (`needs_reconciliation`). On the memory store, a SQLite file, and PostgreSQL.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nanovm_runtime::store::{
    Fence, JournalError, JournalStore, Lease, MemoryStore, OPERATION_LEASE_MS, RunQuery, RunRecord,
};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Entry, Event, RunStatus};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{BoxFuture, Clock as _};
use nanovm_runtime::{Execution, RunError, RunOptions, Runtime, Worker};

use support::customer_refund::{self as cr};
use support::{Hook, Host, hang};

const START: u64 = 1_700_000_000_000;

/// Two runtimes on one store (two processes, as far as ownership goes), sharing a vault and a
/// clock that stands still unless a test moves it.
struct Pair {
    a: Runtime,
    b: Runtime,
    vault: Arc<MemoryVault>,
    clock: ManualClock,
}

fn pair(answer: &str, store: impl JournalStore + Clone) -> Pair {
    pair_on(answer, store, ManualClock::new(START))
}

/// [`pair`] on a given clock.
fn pair_on(answer: &str, store: impl JournalStore + Clone, clock: ManualClock) -> Pair {
    let vault = Arc::new(MemoryVault::seeded(3));
    let rt = || {
        Runtime::builder()
            .model(ScriptedModel::new().always("analyze", answer))
            .vault(vault.clone())
            .clock(clock.clone())
            .store(store.clone())
            .build()
    };
    Pair {
        a: rt(),
        b: rt(),
        vault: vault.clone(),
        clock,
    }
}

impl Pair {
    fn input(&self) -> cr::Input {
        cr::Input {
            request: "It broke.".into(),
            order_id: "o-7".into(),
            amount_cents: 100,
            email: self
                .vault
                .secret(&"dee@example.com".to_string())
                .expect("a secret"),
        }
    }
}

fn start(
    rt: &Runtime,
    input: cr::Input,
    host: &Host,
    id: &str,
) -> impl Future<Output = Result<Execution, RunError>> + Send + 'static {
    rt.run::<cr::Program>(input, Arc::new(host.clone()), RunOptions::new().run_id(id))
}

/// A hook that holds the call until `open` is set (a slow payment API).
fn gate(open: &Arc<AtomicBool>) -> Hook {
    let open = open.clone();
    Arc::new(move |_| {
        let open = open.clone();
        Box::pin(async move {
            while !open.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    })
}

/// Waits (in real time, a few seconds at most) until `host` has started a call of `tool`.
async fn called(host: &Host, tool: &str) {
    for _ in 0..5_000 {
        if host.calls(tool) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("`{tool}` was never called");
}

#[track_caller]
fn in_progress(r: Result<Execution, RunError>, id: &str) {
    match r {
        Err(e @ RunError::Leased { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("run `{id}` is in progress")),
                "a clear answer: {msg}"
            );
        }
        other => panic!("expected `run in progress`, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests, for any store
// ---------------------------------------------------------------------------------------------

/// A second start while the first one's effect is in flight: told "in progress", executes
/// nothing; after the first ended, the same start answers the stored outcome.
async fn a_second_start_while_the_owner_runs_is_told_in_progress<S: JournalStore + Clone>(
    store: S,
    id: &str,
) {
    for answer in ["yes", "no"] {
        let id = format!("{id}-{answer}");
        let tool = if answer == "yes" {
            "issue_refund"
        } else {
            "send_rejection"
        };
        let p = pair(answer, store.clone());
        let open = Arc::new(AtomicBool::new(false));
        let first = Host::new();
        first.hook(tool, gate(&open));
        let owner = tokio::spawn(start(&p.a, p.input(), &first, &id));
        called(&first, tool).await;

        let second = Host::new();
        in_progress(start(&p.b, p.input(), &second, &id).await, &id);
        assert_eq!(second.total_calls(), 0, "the second start executed nothing");

        open.store(true, Ordering::SeqCst);
        let done = owner.await.expect("joins").expect("the owner ends the run");
        assert_eq!(done.status, RunStatus::Success);
        let again = start(&p.b, p.input(), &second, &id)
            .await
            .expect("the stored outcome");
        assert_eq!(again.status, RunStatus::Success);
        assert_eq!(again.root(), done.root());
        assert_eq!((first.calls(tool), second.total_calls()), (1, 0));
        // Ended: no lease is left behind.
        let record = store.run(&id).await.unwrap().expect("stored");
        assert_eq!(record.lease_owner, None, "{record:?}");
    }
}

/// Two starts at the same moment, before either wrote anything: one owns the run, the other
/// is told "in progress" (or, had the owner already ended, answered the stored outcome); the
/// effect runs once.
async fn two_simultaneous_starts_execute_the_effect_once<S: JournalStore + Clone>(
    store: S,
    id: &str,
) {
    for round in 0..8 {
        let id = format!("{id}-{round}");
        let p = pair("yes", store.clone());
        let open = Arc::new(AtomicBool::new(false));
        let (h1, h2) = (Host::new(), Host::new());
        h1.hook("issue_refund", gate(&open));
        h2.hook("issue_refund", gate(&open));
        let r1 = tokio::spawn(start(&p.a, p.input(), &h1, &id));
        let r2 = tokio::spawn(start(&p.b, p.input(), &h2, &id));
        // Whichever owns the run calls the refund; the other has answered by then or will.
        while h1.calls("issue_refund") + h2.calls("issue_refund") == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        open.store(true, Ordering::SeqCst);
        let (r1, r2) = (r1.await.expect("joins"), r2.await.expect("joins"));
        let ended = [&r1, &r2]
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|e| e.status == RunStatus::Success))
            .count();
        for r in [r1, r2] {
            if let Err(e) = r {
                in_progress(Err(e), &id);
            }
        }
        assert!(ended >= 1, "round {round}: the owner ends the run");
        assert_eq!(
            h1.calls("issue_refund") + h2.calls("issue_refund"),
            1,
            "round {round}: the effect ran once"
        );
    }
}

/// A worker does not take a run that a start owns and executes.
async fn a_worker_does_not_take_a_run_a_start_owns<S: JournalStore + Clone>(store: S, id: &str) {
    let p = pair("yes", store.clone());
    let open = Arc::new(AtomicBool::new(false));
    let first = Host::new();
    first.hook("issue_refund", gate(&open));
    let owner = tokio::spawn(start(&p.a, p.input(), &first, id));
    called(&first, "issue_refund").await;
    let other = Host::new();
    let worker = Worker::new(p.b.clone(), "w-other", 10_000);
    let took = worker
        .run_once::<cr::Program>(Arc::new(other.clone()))
        .await
        .expect("asks");
    assert!(took.is_none(), "the worker took an owned run: {took:?}");
    assert_eq!(other.total_calls(), 0);
    open.store(true, Ordering::SeqCst);
    let done = owner.await.expect("joins").expect("ends");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(first.calls("issue_refund"), 1);
}

/// The owner died with its effect in flight: until its lease expires the run is in progress;
/// then the next start takes it over. The idempotent refund is called again with the same key;
/// the non-idempotent mail is not called again, the run needs reconciliation.
async fn after_the_owner_died_its_lease_expires_and_the_run_is_taken_over<
    S: JournalStore + Clone,
>(
    store: S,
    id: &str,
) {
    for answer in ["yes", "no"] {
        let id = format!("{id}-{answer}");
        let tool = if answer == "yes" {
            "issue_refund"
        } else {
            "send_rejection"
        };
        let p = pair(answer, store.clone());
        let dead = Host::new();
        dead.hook(tool, hang());
        let owner = tokio::spawn(start(&p.a, p.input(), &dead, &id));
        called(&dead, tool).await;
        owner.abort();
        assert!(owner.await.is_err(), "the owner died");

        let next = Host::new();
        in_progress(start(&p.b, p.input(), &next, &id).await, &id);
        in_progress(
            p.b.resume_journaled::<cr::Program>(&id, Arc::new(next.clone()), RunOptions::new())
                .await,
            &id,
        );
        assert_eq!(next.total_calls(), 0);

        p.clock.advance(Duration::from_millis(OPERATION_LEASE_MS));
        let e = start(&p.b, p.input(), &next, &id)
            .await
            .expect("takes over");
        if answer == "yes" {
            assert_eq!(e.status, RunStatus::Success);
            assert_eq!(next.calls(tool), 1);
            assert_eq!(
                next.records()[0].key,
                dead.records()[0].key,
                "the same idempotency key"
            );
        } else {
            assert_eq!(e.status, RunStatus::NeedsReconciliation);
            assert_eq!(next.total_calls(), 0, "never sent twice");
        }
    }
}

/// What a store of one test leaves behind, cleaned up when the test passed.
trait Leftover {
    async fn done(self);
}

impl Leftover for () {
    async fn done(self) {}
}

#[cfg(feature = "sqlite")]
impl Leftover for tempfile::TempDir {
    async fn done(self) {}
}

/// A PostgreSQL schema.
#[cfg(feature = "postgres")]
impl Leftover for String {
    async fn done(self) {
        drop_schema(&support::peers::database_url(), &self).await;
    }
}

macro_rules! suite {
    ($name:ident, $store:expr, [$($attr:meta),*]) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn a_second_start_while_the_owner_runs_is_told_in_progress() {
                let (store, keep) = $store;
                super::a_second_start_while_the_owner_runs_is_told_in_progress(store, "busy").await;
                keep.done().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn two_simultaneous_starts_execute_the_effect_once() {
                let (store, keep) = $store;
                super::two_simultaneous_starts_execute_the_effect_once(store, "both").await;
                keep.done().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn a_worker_does_not_take_a_run_a_start_owns() {
                let (store, keep) = $store;
                super::a_worker_does_not_take_a_run_a_start_owns(store, "owned").await;
                keep.done().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn after_the_owner_died_its_lease_expires_and_the_run_is_taken_over() {
                let (store, keep) = $store;
                super::after_the_owner_died_its_lease_expires_and_the_run_is_taken_over(
                    store, "dead",
                )
                .await;
                keep.done().await;
            }
        }
    };
}

suite!(memory, (MemoryStore::new(), ()), []);

#[cfg(feature = "sqlite")]
async fn sqlite_file() -> (nanovm_runtime::store::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = nanovm_runtime::store::SqliteStore::open(dir.path().join("own.db"))
        .await
        .expect("opens");
    (store, dir)
}

#[cfg(feature = "sqlite")]
suite!(sqlite, sqlite_file().await, []);

/// Two stores on one schema: two connection pools, as two worker processes have.
#[cfg(feature = "postgres")]
async fn postgres_pair() -> (nanovm_runtime::store::PostgresStore, String) {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let schema = format!(
        "nvmown_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let url = support::peers::database_url();
    let store = PostgresStore::connect_with(&url, PostgresOptions::new().schema(schema.clone()))
        .await
        .expect("connects");
    (store, schema)
}

#[cfg(feature = "postgres")]
suite!(
    postgres,
    postgres_pair().await,
    [ignore = "needs PostgreSQL (DATABASE_URL)"]
);

/// Two PostgreSQL connection pools (two worker processes, each with a runtime and a
/// [`Worker`]) start one run 50 times, with random tool delays and start offsets (seeded);
/// each pool's worker also looks for runs to take meanwhile. Every time, the effect runs once:
/// a start either owns the run, answers its stored outcome, or is told it is in progress, and
/// no worker takes a run a start owns.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
async fn two_postgres_pools_starting_one_run_execute_its_effect_once() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let (one, schema) = postgres_pair().await;
    let url = support::peers::database_url();
    let two = PostgresStore::connect_with(&url, PostgresOptions::new().schema(schema.clone()))
        .await
        .expect("connects");
    let mut seed = 0x5eed_u64;
    let mut below = |n: u64| {
        // SplitMix64.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    };
    let mut told = 0;
    for round in 0..50 {
        let id = format!("pools-{round}");
        let answer = if round % 2 == 0 { "yes" } else { "no" };
        let vault = Arc::new(MemoryVault::seeded(3));
        let rt = |store: PostgresStore| {
            Runtime::builder()
                .model(ScriptedModel::new().always("analyze", answer))
                .vault(vault.clone())
                .store(store)
                .build()
        };
        let (a, b) = (rt(one.clone()), rt(two.clone()));
        let input = Pair {
            a: a.clone(),
            b: b.clone(),
            vault: vault.clone(),
            clock: ManualClock::new(START),
        }
        .input();
        let hosts: Vec<Host> = (0..4).map(|_| Host::new()).collect();
        for h in &hosts {
            let ms = below(20);
            let slow: Hook =
                Arc::new(move |_| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
            h.hook("issue_refund", slow.clone());
            h.hook("send_rejection", slow);
        }
        let offset = Duration::from_millis(below(30));
        let r1 = tokio::spawn(start(&a, input.clone(), &hosts[0], &id));
        let (b2, input2, h2, id2) = (b.clone(), input.clone(), hosts[1].clone(), id.clone());
        let r2 = tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            start(&b2, input2, &h2, &id2).await
        });
        let workers = [(a, &hosts[2]), (b, &hosts[3])].map(|(rt, h)| {
            let worker = Worker::new(rt, format!("w-{round}"), 30_000);
            let h = h.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    let took = worker
                        .run_once::<cr::Program>(Arc::new(h.clone()))
                        .await
                        .expect("asks");
                    assert!(took.is_none(), "a worker took an owned run: {took:?}");
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        });
        let (r1, r2) = (r1.await.expect("joins"), r2.await.expect("joins"));
        for w in workers {
            w.await.expect("the worker took nothing");
        }
        for r in [r1, r2] {
            match r {
                Ok(e) => assert_eq!(e.status, RunStatus::Success, "round {round}"),
                Err(e) => {
                    told += 1;
                    in_progress(Err(e), &id);
                }
            }
        }
        let calls: usize = hosts.iter().map(Host::total_calls).sum();
        assert_eq!(calls, 1, "round {round}: the effect ran once");
    }
    eprintln!("50 rounds, {told} starts told `run in progress`");
    assert!(
        told > 0,
        "no start overlapped another: the test tested nothing"
    );
    drop_schema(&url, &schema).await;
}

#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drops the test schema");
}

// ---------------------------------------------------------------------------------------------
// An owner stalled past its lease
// ---------------------------------------------------------------------------------------------

/// A memory store that, once the intent of `tool` is durable, moves the clock past the lease:
/// the owning process was stalled (descheduled, paused by a debugger, swapped out) right after
/// writing the intent and before calling the tool, long enough for its lease to lapse.
#[derive(Clone)]
struct StallAfterIntent {
    inner: MemoryStore,
    clock: ManualClock,
    tool: &'static str,
    /// Someone else claims the run while the owner is stalled.
    taken_over: bool,
}

impl StallAfterIntent {
    /// After `entries` of `run_id` became durable: the stall, if they hold the intent.
    async fn after_write(&self, run_id: &str, entries: &[Entry]) -> Result<(), JournalError> {
        let intent = entries.iter().any(
            |e| matches!(&e.event, Event::ToolIntent { tool, .. } if tool.as_ref() == self.tool),
        );
        if intent {
            self.clock
                .advance(Duration::from_millis(OPERATION_LEASE_MS + 1));
            if self.taken_over {
                self.inner
                    .claim_run(
                        run_id,
                        "the-next-owner",
                        self.clock.now_ms(),
                        OPERATION_LEASE_MS,
                    )
                    .await?
                    .expect("the lapsed lease can be claimed");
            }
        }
        Ok(())
    }
}

impl JournalStore for StallAfterIntent {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            self.inner.append(run_id, entries, fence).await?;
            self.after_write(run_id, entries).await
        })
    }
    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        Box::pin(async move {
            let lease = self
                .inner
                .start_run(run_id, entries, worker, now_ms, lease_ms)
                .await?;
            self.after_write(run_id, entries).await?;
            Ok(lease)
        })
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
}

/// The owner's lease lapsed between the intent of a non-idempotent effect and its call, and
/// another process took the run over meanwhile: the owner must not call the tool (the new owner
/// pauses the run for an operator, who would see no call and answer "not done": a second
/// send). It stops, fenced, before the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_lease_was_taken_while_it_stalled_does_not_call_a_non_idempotent_tool() {
    let clock = ManualClock::new(START);
    let store = StallAfterIntent {
        inner: MemoryStore::new(),
        clock: clock.clone(),
        tool: "send_rejection",
        taken_over: true,
    };
    let p = pair_on("no", store, clock);
    let host = Host::new();
    let r = start(&p.a, p.input(), &host, "stalled").await;
    assert_eq!(
        host.calls("send_rejection"),
        0,
        "the lapsed owner sent the mail: {r:?}"
    );
    match r {
        Err(RunError::Journal(JournalError::Fenced { .. })) => {}
        other => panic!("expected the owner to be fenced before the call, got {other:?}"),
    }
}

/// The same stall with nobody taking over: the owner renews its lapsed lease before the call
/// (an expired lease nobody claimed is still its own) and the run ends normally, without a
/// needless pause for reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_lapsed_lease_nobody_took_renews_it_and_calls_once() {
    let clock = ManualClock::new(START);
    let store = StallAfterIntent {
        inner: MemoryStore::new(),
        clock: clock.clone(),
        tool: "send_rejection",
        taken_over: false,
    };
    let p = pair_on("no", store, clock);
    let host = Host::new();
    let e = start(&p.a, p.input(), &host, "stalled-alone")
        .await
        .expect("runs");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(host.calls("send_rejection"), 1);
}
