//! One seed's world: the store's "disk", the clock, the random stream, the fault switches, the
//! independent ledger of effects, the counters and the violations found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nanovm_runtime::store::MemoryStore;
use nanovm_runtime::trace::Entry;
use nanovm_runtime::{Digest, Json};

use crate::clock::SimClock;
use crate::faults::{Fault, Faults};
use crate::report::{Counters, Violation, ViolationKind};
use crate::rng::Rng;

/// What the simulated services remember about one effect id (the independent ledger).
#[derive(Clone, Debug, Default)]
pub(crate) struct Effect {
    /// The tool.
    pub tool: String,
    /// Declared `idempotent` (the service deduplicates by key).
    pub idempotent: bool,
    /// How many calls with this key reached the tool and returned (for a non-idempotent
    /// tool: how many times the effect happened).
    pub applied: u32,
    /// The first answer (what an operator reads in the service's records).
    pub answer: Option<Json>,
    /// Calls with this key that are still in flight (their process alive).
    pub in_flight: u32,
}

pub(crate) struct State {
    pub rng: Rng,
    pub counters: Counters,
    pub violations: Vec<Violation>,
    pub crashes: BTreeSet<usize>,
    /// (run id, effect id) -> the ledger entry.
    pub effects: BTreeMap<(String, Digest), Effect>,
    /// Runs whose stored entries the simulation damaged (torn writes, corruption).
    pub corrupted: BTreeSet<String>,
    /// Runs in a tool-failure cascade: how many more calls fail.
    pub cascades: BTreeMap<String, u32>,
    /// Executions answered `Ok`: run id and trace, checked against the store at the end.
    pub acks: Vec<(String, Vec<Entry>)>,
}

/// One seed's world, shared by every simulated process of the seed.
pub(crate) struct World {
    pub seed: u64,
    pub faults: Faults,
    pub clock: SimClock,
    pub disk: Arc<MemoryStore>,
    pub lease_ms: u64,
    /// Faults are injected only while this is on (off for the calm rounds at the end).
    pub chaos: AtomicBool,
    next_task: AtomicUsize,
    state: Mutex<State>,
}

impl World {
    pub(crate) fn new(seed: u64, faults: Faults, lease_ms: u64) -> Self {
        World {
            seed,
            faults,
            clock: SimClock::new(1_800_000_000_000),
            disk: Arc::new(MemoryStore::new()),
            lease_ms,
            chaos: AtomicBool::new(true),
            next_task: AtomicUsize::new(0),
            state: Mutex::new(State {
                rng: Rng::new(seed),
                counters: Counters::default(),
                violations: Vec::new(),
                crashes: BTreeSet::new(),
                effects: BTreeMap::new(),
                corrupted: BTreeSet::new(),
                cascades: BTreeMap::new(),
                acks: Vec::new(),
            }),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_task_id(&self) -> usize {
        self.next_task.fetch_add(1, Ordering::SeqCst)
    }

    /// A number in `0..n` from the seed's stream.
    pub(crate) fn below(&self, n: u64) -> u64 {
        self.state().rng.below(n)
    }

    /// True with probability `per_mille / 1000`.
    pub(crate) fn chance(&self, per_mille: u64) -> bool {
        self.state().rng.chance(per_mille)
    }

    /// Whether to inject `fault` now (its class enabled, chaos on, and the dice say so);
    /// counts it when injected.
    pub(crate) fn inject(&self, fault: Fault, per_mille: u64) -> bool {
        if !self.faults.contains(fault) || !self.chaos.load(Ordering::SeqCst) {
            return false;
        }
        let mut s = self.state();
        if !s.rng.chance(per_mille) {
            return false;
        }
        *s.counters.faults.entry(fault).or_default() += 1;
        true
    }

    /// Counts an injected fault decided elsewhere.
    pub(crate) fn count_fault(&self, fault: Fault) {
        *self.state().counters.faults.entry(fault).or_default() += 1;
    }

    /// A process left waiting forever at the end of a batch (a hung call, a lost wake-up) is
    /// killed.
    pub(crate) fn count_fault_hung(&self) {
        self.state().counters.hung += 1;
    }

    /// The current task asks to die at this point (a crash decided inside a store or tool).
    pub(crate) fn request_crash(&self, task: usize) {
        self.state().crashes.insert(task);
    }

    /// Whether `task` asked to die.
    pub(crate) fn take_crash(&self, task: usize) -> bool {
        self.state().crashes.remove(&task)
    }

    /// Records a violation.
    pub(crate) fn violation(&self, kind: ViolationKind, run_id: &str, detail: impl Into<String>) {
        let seed = self.seed;
        self.state().violations.push(Violation {
            kind,
            seed,
            run_id: run_id.to_string(),
            detail: detail.into(),
        });
    }

    pub(crate) fn is_corrupted(&self, run_id: &str) -> bool {
        self.state().corrupted.contains(run_id)
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.state().counters);
    }
}
