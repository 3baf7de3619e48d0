//! Test programs for the executor, and the helpers every test binary shares.
//!
//! The programs are the compiler's real output: `generated/*.rs` are written by
//! `nanovm_dsl::build::Builder` (with `runtime_path("::nanovm_runtime")`) from
//! `../examples/workflows/customer_refund.nvm` and `programs/*.nvm`, checked in, and compared byte
//! for byte with what the compiler generates today by `tests/generated.rs` (re-generate with
//! `NANOVM_BLESS=1 cargo test -p nanovm-runtime --test generated`). So the runtime is tested on
//! the code users get, not on a hand-written imitation of it.
//!
//! [`Host`] is a scripted implementation of every program's `Tools` trait (in `hosts.rs`):
//! results are queued per tool, every call is recorded (step, attempt, idempotency key,
//! arguments), and hooks can make a call wait or move a clock.

// Each test binary uses a different part of the support code.
#![allow(dead_code)]

mod hosts;
pub mod peers;

include!("generated/customer_refund.rs");
include!("generated/fanout.rs");
include!("generated/small.rs");

#[allow(
    unused_imports,
    reason = "only the budget tests are generic over `small`"
)]
pub use hosts::Small;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nanovm_runtime::Runtime;
use nanovm_runtime::store::{JournalStore, MemoryStore};
use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::{Event, Trace};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Digest, Json};
use nanovm_runtime::{ToolContext, ToolError};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The customer_refund fixture of the durability tests (journal.rs, durable.rs)
// ---------------------------------------------------------------------------------------------

/// When every managed clock of the durability tests starts.
pub const START: u64 = 1_700_000_000_000;

/// A runtime journaling into a `MemoryStore`, with its vault and clock.
pub struct Setup {
    /// The runtime under test.
    pub rt: Runtime,
    /// Its journal (clones share the entries).
    pub store: MemoryStore,
    /// Its vault, where the inputs' secrets are stored.
    pub vault: Arc<MemoryVault>,
    /// Its clock, moved only by the test.
    pub clock: ManualClock,
}

/// A runtime on `store`, with `MemoryVault::seeded(11)` and a `ManualClock` at [`START`]; the
/// model answers every `analyze` with `answer` and every `summary` with "fine" (one script for
/// `customer_refund` and `fanout`).
pub fn setup_with(
    answer: &str,
    store: impl JournalStore + Clone,
) -> (Runtime, Arc<MemoryVault>, ManualClock) {
    let vault = Arc::new(MemoryVault::seeded(11));
    let clock = ManualClock::new(START);
    let rt = Runtime::builder()
        .model(
            ScriptedModel::new()
                .always("analyze", answer)
                .always("summary", "fine")
                .shared(),
        )
        .vault(vault.clone())
        .clock(clock.clone())
        .store(store)
        .build();
    (rt, vault, clock)
}

/// [`setup_with`] on a fresh `MemoryStore`.
pub fn setup(answer: &str) -> Setup {
    let store = MemoryStore::new();
    let (rt, vault, clock) = setup_with(answer, store.clone());
    Setup {
        rt,
        store,
        vault,
        clock,
    }
}

impl Setup {
    /// The refund request of order `o-5` for `amount_cents`, the email a secret in the vault.
    pub fn input(&self, amount_cents: i64) -> customer_refund::Input {
        customer_refund::Input {
            request: "It broke.".into(),
            order_id: "o-5".into(),
            amount_cents,
            email: self
                .vault
                .secret(&"cy@example.com".to_string())
                .expect("a secret"),
        }
    }
}

/// Moves `clock` past the runtime's operation lease: the lease of a process that died holding
/// a run (a fresh run is owned from its first write) has expired.
pub fn expire_leases(clock: &ManualClock) {
    clock.advance(std::time::Duration::from_millis(
        nanovm_runtime::store::OPERATION_LEASE_MS,
    ));
}

/// Polls `run` until `host` has started a call of `tool`, then drops the run: a crash while
/// the call is in flight.
pub fn crash_during<F: Future>(run: F, host: &Host, tool: &'static str) {
    block_on(async {
        tokio::select! {
            _ = run => panic!("the run finished, it was meant to crash"),
            () = async {
                while host.calls(tool) == 0 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The scripted host
// ---------------------------------------------------------------------------------------------

/// One recorded tool invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    pub tool: &'static str,
    pub step: &'static str,
    pub attempt: u32,
    pub key: Digest,
    pub args: Json,
}

/// Runs before a tool answers: may wait, move a clock, check the journal...
pub type Hook = Arc<dyn Fn(ToolContext) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Default)]
struct HostState {
    queued: HashMap<&'static str, VecDeque<Result<Json, ToolError>>>,
    defaults: HashMap<&'static str, Json>,
    hooks: HashMap<&'static str, Hook>,
    calls: Vec<CallRecord>,
    completed: Vec<&'static str>,
}

/// A scripted implementation of every test program's tools. Clones share the script.
#[derive(Clone, Default)]
pub struct Host {
    state: Arc<Mutex<HostState>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Host {
    pub fn new() -> Self {
        Host::default()
    }

    fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one answer of `tool`.
    pub fn respond(&self, tool: &'static str, r: Result<Json, ToolError>) -> &Self {
        self.lock().queued.entry(tool).or_default().push_back(r);
        self
    }

    /// The answer of `tool` when its queue is empty (default: `{"ok": true}`).
    pub fn fallback(&self, tool: &'static str, v: Json) -> &Self {
        self.lock().defaults.insert(tool, v);
        self
    }

    /// Runs `hook` at the start of every call of `tool`.
    pub fn hook(&self, tool: &'static str, hook: Hook) -> &Self {
        self.lock().hooks.insert(tool, hook);
        self
    }

    /// Calls of `tool` so far.
    pub fn calls(&self, tool: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.tool == tool).count()
    }

    /// Calls of every tool.
    pub fn total_calls(&self) -> usize {
        self.lock().calls.len()
    }

    /// Every call, in invocation order.
    pub fn records(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// Tools in the order their calls finished.
    pub fn completed(&self) -> Vec<&'static str> {
        self.lock().completed.clone()
    }

    /// The most calls in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// What every generated `Tools` method of the test programs does.
    pub async fn call(
        &self,
        tool: &'static str,
        ctx: &ToolContext,
        args: Json,
    ) -> Result<Json, ToolError> {
        let hook = {
            let mut s = self.lock();
            s.calls.push(CallRecord {
                tool,
                step: ctx.step,
                attempt: ctx.attempt,
                key: ctx.idempotency_key,
                args,
            });
            s.hooks.get(tool).cloned()
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(h) = hook {
            h(ctx.clone()).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut s = self.lock();
        s.completed.push(tool);
        if let Some(r) = s.queued.get_mut(tool).and_then(VecDeque::pop_front) {
            return r;
        }
        Ok(s.defaults
            .get(tool)
            .cloned()
            .unwrap_or_else(|| json!({"ok": true})))
    }
}

/// Yields to the scheduler `n` times (makes a call finish later than its siblings without
/// timing anything).
pub fn yields(n: usize) -> Hook {
    Arc::new(move |_| {
        Box::pin(async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        })
    })
}

/// A hook that never finishes (an in-flight call for cancellation and deadline tests).
pub fn hang() -> Hook {
    Arc::new(|_| Box::pin(std::future::pending()))
}

// ---------------------------------------------------------------------------------------------
// Trace helpers
// ---------------------------------------------------------------------------------------------

/// `kind` or `kind:step[/branch]` for every event: compact, exact step sequences.
pub fn events(trace: &Trace) -> Vec<String> {
    trace
        .entries()
        .iter()
        .map(|e| {
            let ev = &e.event;
            let branch = match ev {
                Event::Model {
                    branch: Some(b), ..
                }
                | Event::ToolIntent {
                    branch: Some(b), ..
                }
                | Event::ToolResult {
                    branch: Some(b), ..
                } => format!("/{b}"),
                _ => String::new(),
            };
            match ev.step() {
                Some(s) => format!("{}:{s}{branch}", ev.kind()),
                None => ev.kind().to_string(),
            }
        })
        .collect()
}

/// The events of a trace, cloned (to edit and re-chain).
pub fn event_list(trace: &Trace) -> Vec<Event> {
    trace.entries().iter().map(|e| e.event.clone()).collect()
}

/// Rebuilds a trace from (possibly edited) events, re-chaining every hash: what an attacker
/// who edits a trace and recomputes the chain produces.
pub fn rechain(events: impl IntoIterator<Item = Event>) -> Trace {
    let mut t = Trace::new();
    let mut scratch = nanovm_runtime::trace::Encoder::new();
    for e in events {
        t.push(e, &mut scratch);
    }
    t
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}
