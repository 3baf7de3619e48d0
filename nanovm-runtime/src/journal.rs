//! Journals: where a run's trace is made durable.
//!
//! The executor keeps the trace in memory and hands new entries to the [`Journal`] at
//! *durability points* (group commit): before an `effect` tool is called (the intent and
//! everything before it), after an effect's result, at suspension, and at the end of the run.
//! One [`Journal::append`] call is one durable write; when it returns `Ok`, the entries are
//! *acknowledged*. An effect is therefore never invoked before its intent is acknowledged, which
//! is what lets recovery tell "never started" from "outcome unknown".
//!
//! This module holds the trait and an in-memory store. Inside the executor exactly one type
//! talks to a journal (the private `Recorder`, which also owns the replay cursor), so durable
//! stores (SQLite, PostgreSQL with leases and epoch fencing) plug in without touching the step
//! loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::program::BoxFuture;
use crate::trace::Entry;

/// Why a journal operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The store could not be read or written.
    #[error("journal I/O failed: {0}")]
    Io(String),
    /// The appended entries do not continue the stored run (another writer got there first,
    /// or entries were skipped).
    #[error("journal conflict on run `{run_id}`: the next entry is #{expected}, got #{found}")]
    Conflict {
        /// The run.
        run_id: String,
        /// The sequence number the store expected next.
        expected: u64,
        /// The sequence number offered.
        found: u64,
    },
}

/// Durable storage for run traces.
///
/// Implementations must make `append` atomic (all entries or none) and durable before
/// returning `Ok`, and must refuse entries that do not continue the stored sequence
/// ([`JournalError::Conflict`]).
pub trait Journal: Send + Sync + 'static {
    /// Appends `entries` (consecutive, continuing the stored run) to the run `run_id`.
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), JournalError>>;

    /// Every stored entry of the run, or `None` if the run is unknown.
    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>>;
}

impl<J: Journal + ?Sized> Journal for Arc<J> {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).append(run_id, entries)
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        (**self).load(run_id)
    }
}

/// A [`Journal`] in memory: for tests and benchmarks (nothing survives the process).
///
/// Clones share the same store. It counts appends (durable writes) and can be told to fail,
/// to exercise error paths.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal {
    shared: Arc<MemoryJournalState>,
}

#[derive(Debug)]
struct MemoryJournalState {
    runs: Mutex<HashMap<String, Vec<Entry>>>,
    appends: AtomicUsize,
    /// Appends after this many successful ones fail (`usize::MAX`: never).
    fail_after: AtomicUsize,
}

impl Default for MemoryJournalState {
    fn default() -> Self {
        MemoryJournalState {
            runs: Mutex::default(),
            appends: AtomicUsize::new(0),
            fail_after: AtomicUsize::new(usize::MAX),
        }
    }
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        MemoryJournal::default()
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.shared
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of successful `append` calls so far (each is one durable write).
    pub fn appends(&self) -> usize {
        self.shared.appends.load(Ordering::SeqCst)
    }

    /// The stored entries of a run (empty if unknown).
    pub fn entries(&self, run_id: &str) -> Vec<Entry> {
        self.runs().get(run_id).cloned().unwrap_or_default()
    }

    /// Makes every append after the next `n` successful ones fail with [`JournalError::Io`].
    pub fn fail_after(&self, n: usize) {
        let done = self.appends();
        self.shared
            .fail_after
            .store(done.saturating_add(n), Ordering::SeqCst);
    }

    /// Replaces a run's stored entries (tests: simulate a crash by truncating, or plant a
    /// recorded prefix).
    pub fn set_entries(&self, run_id: &str, entries: Vec<Entry>) {
        self.runs().insert(run_id.to_string(), entries);
    }

    fn append_now(&self, run_id: &str, entries: &[Entry]) -> Result<(), JournalError> {
        if self.appends() >= self.shared.fail_after.load(Ordering::SeqCst) {
            return Err(JournalError::Io("MemoryJournal told to fail".into()));
        }
        let mut runs = self.runs();
        let stored = runs.entry(run_id.to_string()).or_default();
        if let Some(first) = entries.first()
            && first.seq != stored.len() as u64
        {
            return Err(JournalError::Conflict {
                run_id: run_id.to_string(),
                expected: stored.len() as u64,
                found: first.seq,
            });
        }
        stored.extend_from_slice(entries);
        self.shared.appends.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Journal for MemoryJournal {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(std::future::ready(self.append_now(run_id, entries)))
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        Box::pin(std::future::ready(Ok(self.runs().get(run_id).cloned())))
    }
}
