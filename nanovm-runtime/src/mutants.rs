//! Known bugs, re-introducible one at a time for the sabotage simulation's own tests (feature
//! `sabotage-mutants`, never on by default): each [`Mutant`] guards a one-line deviation at the
//! real site, and the switch is per thread and off unless a test turns it on, so a build that
//! has the feature (feature unification in `cargo test --workspace`) behaves exactly like one
//! without it. `nanovm-sim`'s `tests/mutants.rs` shows the simulation reports each of them.

use std::cell::Cell;

/// A known bug the runtime can be told to have again (on the current thread only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mutant {
    /// A fresh run's first write is a plain append: no lease, no fence (the double execution
    /// under concurrent starts, before `JournalStore::start_run`).
    StartWithoutLease,
    /// An effect's intent is not made durable before the tool is called.
    CallBeforeIntentDurable,
    /// An event id the run received before is delivered again.
    AcceptReusedEventId,
    /// Stores accept an append under a stale lease epoch.
    AppendWithoutFence,
    /// An owner whose lease is overdue calls a non-idempotent effect without renewing it first.
    CallWithoutOwnershipCheck,
}

thread_local! {
    static ACTIVE: Cell<Option<Mutant>> = const { Cell::new(None) };
}

/// Turns `mutant` on for the current thread (`None`: the correct runtime again).
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.with(|a| a.set(mutant));
}

/// The mutant switched on for the current thread, if any.
pub fn active() -> Option<Mutant> {
    ACTIVE.with(Cell::get)
}
