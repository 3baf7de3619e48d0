//! Seeing runs as they happen: an [`Observer`] set on the runtime
//! ([`RuntimeBuilder::observer`](crate::RuntimeBuilder::observer)) is handed every entry of
//! every run this runtime executes, in order, with its sequence number and hash, as soon as it
//! is durable.
//!
//! "Durable" is the point: an observer never sees an entry that a crash could still take back.
//! With a store, entries are handed over right after the store write that made them durable
//! (one write per durability point: an effect's intent, a suspension, the end); without one,
//! at the same points of the execution. Entries a continuation reproduces from the stored
//! prefix (a resume, a delivery, a replay) are not handed over again, and a replay
//! ([`Runtime::replay`](crate::Runtime::replay)) hands over nothing. Entries written by other
//! processes (another worker on a shared store) are not seen: read the store for those
//! (`nanovm-server` streams a run from the store for that reason).
//!
//! An observer runs on the executing task: keep it quick (push to a channel, count, log).

use crate::trace::Entry;

/// Sees each entry of every run as it becomes durable (see the module docs).
pub trait Observer: Send + Sync + 'static {
    /// Entry `entry` (its `seq`, `prev`, `hash` and event) of run `run_id` is durable.
    fn entry(&self, run_id: &str, entry: &Entry);
}

impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    fn entry(&self, run_id: &str, entry: &Entry) {
        (**self).entry(run_id, entry);
    }
}
