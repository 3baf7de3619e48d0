//! Journal stores: where a run's trace is made durable, and where workers find runs to execute.
//!
//! The executor keeps the trace in memory and hands new entries to the [`JournalStore`] at
//! *durability points* (group commit): before an `effect` tool is called (the intent and
//! everything before it, the previous effect's result included), before the next external act
//! after a non-idempotent effect's result, at suspension, and at the end of the run (with the
//! lease given back, [`JournalStore::append_release`]). One [`JournalStore::append`] call is one
//! durable write; when it returns `Ok`, the entries are *acknowledged*. An effect is therefore never invoked before its intent is acknowledged, which
//! is what lets recovery tell "never started" from "outcome unknown".
//!
//! Besides the entries, a store keeps one [`RunRecord`] per run, maintained from the appended
//! events in the same transaction (status, where it waits, its deadline), and a *lease* per run:
//! workers [`claim`](JournalStore::claim) runnable runs, and every claim increments the run's
//! *epoch*. An append made under a [`Fence`] is refused with [`JournalError::Fenced`] once
//! another worker has claimed the run, so a stalled worker whose lease expired can never write
//! again. A new run is created already leased ([`JournalStore::start_run`]): it is owned by the
//! execution that started it from its first write.
//!
//! Implementations:
//!
//! | store | for | durability |
//! | --- | --- | --- |
//! | [`MemoryStore`] | tests, benchmarks | none (the process) |
//! | `SqliteStore` (feature `sqlite`) | one machine, the embedded default | WAL, `synchronous=FULL`: a commit is fsynced |
//! | `PostgresStore` (feature `postgres`) | many workers on many machines | a committed transaction (the server's `synchronous_commit`) |
//!
//! Every store passes the same conformance suite (`tests/store_conformance.rs`). Stored entries
//! are their canonical JSON line ([`crate::trace::entry_line`]) plus sequence number and hash;
//! [`JournalStore::load`] re-parses them, checks each line is canonical, and re-verifies the
//! hash chain, reporting [`JournalError::Corrupt`] rather than returning wrong data.
//! [`JournalStore::append`] checks the chain too: a store never accepts entries that do not
//! continue the stored run.
//!
//! Inside the executor exactly one type talks to a store (the private `Recorder`).

mod append;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

#[cfg(feature = "postgres")]
pub use crate::db::postgres::PostgresOptions;
#[cfg(feature = "sqlite")]
pub use crate::db::sqlite::SqliteOptions;
pub use crate::error::JournalError;
pub(crate) use append::swapped_with;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::program::BoxFuture;
use crate::trace::{Entry, RunStatus};
use crate::value::{Digest, VaultId};

/// How long the lease of one of the runtime's own operations lasts by default (a new run's
/// start, a duplicate start that resumes a run, a resume, a delivery, a timeout, a
/// reconciliation); renewed every third of that while the run executes, released at the end. See
/// [`RuntimeBuilder::operation_lease`](crate::RuntimeBuilder::operation_lease).
pub const OPERATION_LEASE_MS: u64 = 30_000;

/// The lease epoch an append is made under (see [`JournalStore::append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The epoch of the lease the writer holds.
    pub epoch: u64,
}

/// A worker's claim on a run, returned by [`JournalStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run_id: String,
    /// The run's epoch after the claim; appends under [`Lease::fence`] fail once it moves on.
    pub epoch: u64,
    /// Who holds it.
    pub worker: String,
    /// When it expires (milliseconds since the Unix epoch, on the clock the caller passed).
    pub expires_ms: u64,
}

impl Lease {
    /// The fence for appends made while holding this lease.
    pub fn fence(&self) -> Fence {
        Fence { epoch: self.epoch }
    }
}

/// What a store knows about a run besides its entries; maintained from the appended events in
/// the same transaction as the entries.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The program's name (from `run_started`).
    pub program: String,
    /// The compiled program's hash (from `run_started`).
    pub program_hash: Digest,
    /// `running` from `run_started` until a `run_ended` or `suspended` says otherwise; a
    /// `delivered`, `timed_out` or `reconciled` after it makes the run `running` again.
    pub status: RunStatus,
    /// The number of stored entries (the next sequence number).
    pub entries: u64,
    /// The step where the run ended or is suspended (from `run_ended` / `suspended`).
    pub end_step: Option<String>,
    /// The failure message (from `run_ended`).
    pub message: Option<String>,
    /// The event waited for, while suspended.
    pub waiting_for: Option<String>,
    /// The timeout deadline while suspended (milliseconds since the Unix epoch).
    pub deadline_ms: Option<u64>,
    /// The lease epoch: 0 until first claimed, incremented by every claim.
    pub epoch: u64,
    /// The worker holding the lease, if any.
    pub lease_owner: Option<String>,
    /// When the lease expires, if held.
    pub lease_expires_ms: Option<u64>,
    /// When the store created the record (the store's wall clock; not part of the trace).
    pub created_ms: u64,
    /// When the store last changed it.
    pub updated_ms: u64,
}

/// A filter for [`JournalStore::runs`]. `RunQuery::new().program("p").status(..).limit(10)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs of this program.
    pub program: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many (the oldest).
    pub limit: Option<usize>,
}

impl RunQuery {
    /// Every run.
    pub fn new() -> Self {
        RunQuery::default()
    }

    /// Only runs of `program`.
    #[must_use]
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Only runs with `status`.
    #[must_use]
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// At most `limit` runs.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One leaf of a store's evidence log (see [`JournalStore::log_append`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogLeaf {
    /// Its position in the log, from 0.
    pub index: u64,
    /// The run it is a checkpoint of.
    pub run_id: String,
    /// The leaf's bytes (a signed checkpoint, `crate::evidence::SignedCheckpoint::to_leaf`).
    pub data: Vec<u8>,
}

/// What an erasure looks up in a store's erasure index ([`JournalStore::referencing`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reference {
    /// The runs tied to a data subject ([`JournalStore::link_subject`],
    /// [`RunOptions::subject`](crate::RunOptions::subject)).
    Subject(String),
    /// The runs whose `run_started` records this vault id as a secret input.
    Secret(VaultId),
}

/// The error of the erasure-index methods of a store that keeps no index.
fn no_index<T: Send + 'static>() -> BoxFuture<'static, Result<T, JournalError>> {
    Box::pin(std::future::ready(Err(JournalError::Io(
        "this store keeps no erasure index".into(),
    ))))
}

/// A position in a store's feed (see [`JournalStore::feed`]): opaque to clients, ordered, and
/// written as text (`Display`, `FromStr`) for a stream's `Last-Event-ID`.
///
/// The memory and SQLite stores number entries in commit order (`major` is 0, `minor` the
/// number); PostgreSQL orders by the writing transaction's id, then the number, and reads only
/// what no transaction still open can precede (see `docs/runtime.md`, "All runs").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPos {
    /// The writing transaction (PostgreSQL), 0 elsewhere.
    pub major: u64,
    /// The entry's number in the feed.
    pub minor: u64,
}

impl std::fmt::Display for FeedPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.major == 0 {
            write!(f, "{}", self.minor)
        } else {
            write!(f, "{}.{}", self.major, self.minor)
        }
    }
}

impl std::str::FromStr for FeedPos {
    type Err = JournalError;

    fn from_str(s: &str) -> Result<FeedPos, JournalError> {
        let bad = || JournalError::Io(format!("`{s}` is not a feed position"));
        let (major, minor) = match s.split_once('.') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => (0, s.parse().map_err(|_| bad())?),
        };
        Ok(FeedPos { major, minor })
    }
}

/// One entry of a store's feed: entry `seq` of run `run_id` became durable at `pos`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedItem {
    /// Its position in the feed.
    pub pos: FeedPos,
    /// The run.
    pub run_id: String,
    /// The entry's sequence number in the run.
    pub seq: u64,
}

/// The error of the evidence-log methods of a store that has no log.
fn no_log<T: Send + 'static>() -> BoxFuture<'static, Result<T, JournalError>> {
    Box::pin(std::future::ready(Err(JournalError::Io(
        "this store keeps no evidence log".into(),
    ))))
}

/// Where run traces are made durable, and where workers claim runs.
///
/// One `append` is one durable write: SQLite, one committed transaction with
/// `synchronous=FULL`; PostgreSQL, one committed transaction. Every method is safe to call
/// concurrently from many tasks (and, for PostgreSQL, many processes).
pub trait JournalStore: Send + Sync + 'static {
    /// Appends `entries` to run `run_id`, atomically (all or nothing), durably before `Ok`.
    ///
    /// - `entries[i].seq` must equal the number of entries already stored plus `i`, else
    ///   [`JournalError::Conflict`] (a second writer, or a duplicate start: a `run_started` at
    ///   seq 0 for an existing run id is a conflict).
    /// - The entries must chain onto the stored ones (`prev`, `hash`), and a run's first entry
    ///   must be its `run_started`, else [`JournalError::Invalid`].
    /// - With `fence: Some(f)`, the run's current lease epoch must equal `f.epoch` (checked in
    ///   the same transaction as the write), else [`JournalError::Fenced`]. This is checked
    ///   first. A run that does not exist yet has epoch 0.
    /// - The run's [`RunRecord`] is maintained from the appended events in the same
    ///   transaction.
    ///
    /// An empty `entries` is a no-op.
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>>;

    /// All entries of a run, in order, re-verified (`None`: unknown run).
    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>>;

    /// The run's record (`None`: unknown run).
    fn run<'a>(&'a self, run_id: &'a str)
    -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>>;

    /// Run records matching `query`, ordered by creation (oldest first).
    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>>;

    /// Claims the oldest run of `program` that needs a worker and whose lease is free or
    /// expired (`lease_expires_ms <= now_ms`): status `running`, or `suspended` with
    /// `deadline_ms <= now_ms` (its timeout must fire). Increments the epoch, sets owner and
    /// expiry (`now_ms + lease_ms`), returns the lease. `None` when nothing is claimable.
    /// Concurrent claimers never get the same run (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>>;

    /// [`JournalStore::claim`], restricted to runs recorded under one of `hashes` (the program
    /// hashes, one per version of `program`, the caller can execute): a run of another version
    /// is left alone (not claimed, its epoch unchanged), so a worker never claims, refuses and
    /// gives back a run it cannot execute at every poll.
    ///
    /// Every store of this crate implements it in one statement. The default, for stores
    /// written elsewhere, walks the runnable runs of `program` ([`JournalStore::runs`], oldest
    /// first) and claims the first one recorded under `hashes` with
    /// [`JournalStore::claim_run`] (two claimers may race for it; at most one gets it).
    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(async move {
            for status in [RunStatus::Running, RunStatus::Suspended] {
                let query = RunQuery::new().program(program).status(status);
                for r in self.runs(&query).await? {
                    let runnable = r.entries > 0
                        && (status == RunStatus::Running
                            || r.deadline_ms.is_some_and(|d| d <= now_ms))
                        && r.lease_expires_ms.is_none_or(|e| e <= now_ms)
                        && hashes.contains(&r.program_hash);
                    if !runnable {
                        continue;
                    }
                    if let Some(lease) = self.claim_run(&r.run_id, worker, now_ms, lease_ms).await?
                    {
                        return Ok(Some(lease));
                    }
                }
            }
            Ok(None)
        })
    }

    /// Extends a lease to `now_ms + lease_ms`. [`JournalError::Fenced`] if `lease.epoch` is no
    /// longer the run's epoch, or the lease was released (then `held == current`). An expired
    /// lease nobody took over can still be renewed.
    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>>;

    /// Gives a lease back: owner and expiry cleared, epoch unchanged, so the run can be
    /// claimed again at once. [`JournalError::Fenced`] if stale.
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>>;

    /// Claims the run `run_id` itself, whatever its status (resuming a run a crash left
    /// mid-way, delivering an event to a suspended run), if its lease is free or expired
    /// (`lease_expires_ms <= now_ms`): increments the epoch, sets owner and expiry, returns
    /// the lease. `None` when the run is unknown or another lease on it is still live (also
    /// one of the same worker: extend that with [`JournalStore::renew`]). Of concurrent
    /// claimers of one run, at most one gets it.
    ///
    /// Every store of this crate implements it; the default, for stores written elsewhere
    /// before it existed, fails with [`JournalError::Io`].
    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let _ = (run_id, worker, now_ms, lease_ms);
        Box::pin(std::future::ready(Err(JournalError::Io(
            "this store cannot claim a given run".into(),
        ))))
    }

    /// Creates run `run_id` from its first `entries` (from seq 0, starting with its
    /// `run_started`) *and* gives `worker` its lease (epoch 1, expiring at `now_ms + lease_ms`),
    /// in one transaction: a fresh run is owned from its first durable write, so no other
    /// process can claim it in between. The entries are checked as by
    /// [`JournalStore::append`] without a fence: a run id the store holds already is
    /// [`JournalError::Conflict`] (a concurrent duplicate start; nothing is written).
    ///
    /// Every store of this crate implements it atomically. The default, for stores written
    /// elsewhere, appends and then claims with [`JournalStore::claim_run`]; if another claimer
    /// got in between, it answers `Conflict` as if the run had existed (whoever holds the run
    /// executes it; the caller executed nothing yet).
    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        Box::pin(async move {
            self.append(run_id, entries, None).await?;
            match self.claim_run(run_id, worker, now_ms, lease_ms).await? {
                Some(lease) => Ok(lease),
                None => Err(JournalError::Conflict {
                    run_id: run_id.to_string(),
                    expected: entries.len() as u64,
                    found: 0,
                }),
            }
        })
    }

    /// The last write of an execution that holds `lease`: appends `entries` fenced by the lease
    /// (as [`JournalStore::append`] with `Some(lease.fence())`) *and* gives the lease back (as
    /// [`JournalStore::release`]), in one transaction, so ending or suspending a run costs one
    /// durable write, not two. All or nothing: a stale lease ([`JournalError::Fenced`]: the
    /// epoch moved on, or the lease was released), a `Conflict` or an `Invalid` batch changes
    /// nothing, and the lease is still held. An empty `entries` only releases.
    ///
    /// Every store of this crate implements it atomically. The default, for stores written
    /// elsewhere, appends and then releases (two writes; a crash in between leaves the lease to
    /// expire, as a crash before any release does).
    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            self.append(run_id, entries, Some(lease.fence())).await?;
            self.release(lease).await
        })
    }

    /// The store's feed: every entry of every run, in the order the store made them durable,
    /// after position `after` (`None`: from the start), at most `limit` of them. Each run's
    /// entries appear in `seq` order, each once; an entry appears only once committed, and no
    /// entry can later appear before one already returned, so a reader that resumes after the
    /// last position it processed loses and repeats nothing. Entries stored before the store
    /// kept a feed (an upgraded database) are in it in run order, then `seq` order. It names
    /// entries; read them with [`JournalStore::load`] (which verifies the chain).
    ///
    /// Every store of this crate implements it; the default fails with [`JournalError::Io`].
    fn feed<'a>(
        &'a self,
        after: Option<FeedPos>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FeedItem>, JournalError>> {
        let _ = (after, limit);
        Box::pin(std::future::ready(Err(JournalError::Io(
            "this store keeps no feed".into(),
        ))))
    }

    /// Appends `data` (a signed checkpoint of run `run_id`) to the store's evidence log, an
    /// append-only sequence over all runs (the leaves of the Merkle tree `nanovm audit`
    /// checks); returns its index. Durable before `Ok`.
    ///
    /// Every store of this crate implements it; the default fails with [`JournalError::Io`].
    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        let _ = (run_id, data);
        no_log()
    }

    /// The evidence log's leaves from index `from` on, in order.
    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        let _ = from;
        no_log()
    }

    /// Keeps `head` (a signed tree head's JSON, over `size` leaves) as the store's latest,
    /// unless it holds one over more leaves already.
    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        let _ = (size, head);
        no_log()
    }

    /// The latest signed tree head kept by [`JournalStore::put_head`] (`None`: none yet).
    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        no_log()
    }

    /// Ties run `run_id` to the data subject `subject` in the store's erasure index (the run
    /// need not exist yet: the runtime links a run before its first write, so no run holds a
    /// subject's secrets without the index knowing). Linking twice is a no-op. The subject id
    /// is kept in the index only, never in a trace; use a pseudonymous id (a customer number),
    /// not an email address.
    ///
    /// Every store of this crate implements the erasure index (the secret inputs of every
    /// run are indexed in the transaction that stores its `run_started`); the default fails
    /// with [`JournalError::Io`].
    fn link_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let _ = (run_id, subject);
        no_index()
    }

    /// A start's link: ties run `run_id` to `subject` unless the run is tied to another subject
    /// already and not to this one, atomically (two racing starts naming different subjects
    /// link one). `Ok(None)`: linked (or linked already); `Ok(Some(other))`: the run is tied
    /// to `other` and nothing was linked. The runtime links this way on every start naming a
    /// subject ([`RunOptions::subject`](crate::RunOptions::subject)), so a repeated start with
    /// the run's id cannot tie it to a second subject; [`JournalStore::link_subject`] is the
    /// deliberate way to tie a run to several. The default fails with [`JournalError::Io`].
    fn link_sole_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        let _ = (run_id, subject);
        no_index()
    }

    /// The stored runs that reference `what` (linked to the subject, or holding the secret as
    /// an input), oldest first. Linked run ids with no stored run are left out.
    fn referencing<'a>(
        &'a self,
        what: &'a Reference,
    ) -> BoxFuture<'a, Result<Vec<String>, JournalError>> {
        let _ = what;
        no_index()
    }

    /// Forgets every link of `subject` (after its erasure: the index no longer names it).
    fn unlink_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        let _ = subject;
        no_index()
    }

    /// Retention: deletes the run `lease` holds (its entries, its record and its erasure
    /// index rows), fenced by the lease ([`JournalError::Fenced`] when stale). Its evidence-log
    /// leaves stay: `crate::evidence::prune` records a signed prune leaf first, so an audit
    /// tells a pruned run from a deleted one.
    ///
    /// Every store of this crate implements it; the default fails with [`JournalError::Io`].
    fn delete_run<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        let _ = lease;
        Box::pin(std::future::ready(Err(JournalError::Io(
            "this store cannot delete runs".into(),
        ))))
    }

    /// After an erasure: moves what the store's logs still hold of erased rows out of them
    /// (SQLite: a WAL checkpoint that truncates the WAL). The default does nothing
    /// (PostgreSQL: see `docs/compliance.md` for the `VACUUM` an erasure needs).
    fn compact<'a>(&'a self) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<S: JournalStore + ?Sized> JournalStore for Arc<S> {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).append(run_id, entries, fence)
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        (**self).load(run_id)
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        (**self).run(run_id)
    }

    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        (**self).runs(query)
    }

    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        (**self).claim(program, worker, now_ms, lease_ms)
    }

    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        (**self).claim_versions(program, hashes, worker, now_ms, lease_ms)
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        (**self).renew(lease, now_ms, lease_ms)
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).release(lease)
    }

    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        (**self).claim_run(run_id, worker, now_ms, lease_ms)
    }

    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        (**self).start_run(run_id, entries, worker, now_ms, lease_ms)
    }

    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).append_release(run_id, entries, lease)
    }

    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        (**self).log_append(run_id, data)
    }

    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        (**self).log(from)
    }

    fn feed<'a>(
        &'a self,
        after: Option<FeedPos>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FeedItem>, JournalError>> {
        (**self).feed(after, limit)
    }

    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).put_head(size, head)
    }

    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        (**self).head()
    }

    fn link_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).link_subject(run_id, subject)
    }

    fn link_sole_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        (**self).link_sole_subject(run_id, subject)
    }

    fn referencing<'a>(
        &'a self,
        what: &'a Reference,
    ) -> BoxFuture<'a, Result<Vec<String>, JournalError>> {
        (**self).referencing(what)
    }

    fn unlink_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).unlink_subject(subject)
    }

    fn compact<'a>(&'a self) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).compact()
    }

    fn delete_run<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        (**self).delete_run(lease)
    }
}
