//! Journal stores: where a run's trace is made durable, and where workers find runs to execute.
//!
//! The executor keeps the trace in memory and hands new entries to the [`JournalStore`] at
//! *durability points* (group commit): before an `effect` tool is called (the intent and
//! everything before it), after an effect's result, at suspension, and at the end of the run.
//! One [`JournalStore::append`] call is one durable write; when it returns `Ok`, the entries are
//! *acknowledged*. An effect is therefore never invoked before its intent is acknowledged, which
//! is what lets recovery tell "never started" from "outcome unknown".
//!
//! Besides the entries, a store keeps one [`RunRecord`] per run, maintained from the appended
//! events in the same transaction (status, where it waits, its deadline), and a *lease* per run:
//! workers [`claim`](JournalStore::claim) runnable runs, and every claim increments the run's
//! *epoch*. An append made under a [`Fence`] is refused with [`JournalError::Fenced`] once
//! another worker has claimed the run, so a stalled worker whose lease expired can never write
//! again.
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
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::canonical::Encoder;
use crate::program::BoxFuture;
use crate::trace::{Entry, Event, RunStatus, entry_hash, entry_line};
use crate::value::Digest;
use crate::view::RunView;

/// How long the lease of one of the runtime's own operations lasts by default (a duplicate
/// start that resumes a run, a delivery, a timeout, a reconciliation); renewed every third of
/// that while the run executes, released at the end. See
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
}

// ---------------------------------------------------------------------------------------------
// What every store shares: checking an append, maintaining the record, encoding entries.
// ---------------------------------------------------------------------------------------------

/// What a store knows about the end of a stored run, to check an append against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tip {
    /// Entries stored.
    pub entries: u64,
    /// The last entry's hash (zero when none).
    pub last_hash: Digest,
    /// The lease epoch.
    pub epoch: u64,
}

/// The program name and hash of a `run_started` event.
pub(crate) fn started(event: &Event) -> Option<(&str, Digest)> {
    match event {
        Event::RunStarted {
            program,
            program_hash,
            ..
        } => Some((program, *program_hash)),
        _ => None,
    }
}

/// An append, checked as far as it can be without the store (its own chain and sequence
/// numbers), and reduced to what the store's transaction needs: owned, so it can be moved to a
/// writer thread or a connection task.
#[derive(Debug)]
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) struct Batch {
    pub run_id: String,
    /// Number of entries.
    pub len: u64,
    pub first_seq: u64,
    pub first_prev: Digest,
    pub last_hash: Digest,
    /// Program name and hash, if the first entry is `run_started`.
    pub started: Option<(String, Digest)>,
    /// What is wrong inside the batch, reported after the checks against the store (a fenced
    /// or conflicting writer learns that first).
    pub problem: Option<JournalError>,
    /// The events that move the record ([`RunView::moves_status`]), in order.
    pub moves: Vec<Event>,
}

impl Batch {
    pub(crate) fn new(run_id: &str, entries: &[Entry]) -> Batch {
        let first = entries.first();
        let mut batch = Batch {
            run_id: run_id.to_string(),
            len: entries.len() as u64,
            first_seq: first.map_or(0, |e| e.seq),
            first_prev: first.map_or(Digest::ZERO, |e| e.prev),
            last_hash: entries.last().map_or(Digest::ZERO, |e| e.hash),
            started: first
                .and_then(|e| started(&e.event))
                .map(|(p, h)| (p.to_string(), h)),
            problem: None,
            moves: entries
                .iter()
                .filter(|e| RunView::moves_status(&e.event))
                .map(|e| e.event.clone())
                .collect(),
        };
        batch.problem = batch.inspect(entries).err();
        batch
    }

    fn inspect(&self, entries: &[Entry]) -> Result<(), JournalError> {
        let run_id = self.run_id.as_str();
        let invalid = |reason: String| JournalError::Invalid {
            run_id: run_id.to_string(),
            reason,
        };
        let mut scratch = Encoder::new();
        let mut prev = self.first_prev;
        for (i, entry) in entries.iter().enumerate() {
            let expected = self.first_seq + i as u64;
            if entry.seq != expected {
                return Err(JournalError::Conflict {
                    run_id: run_id.to_string(),
                    expected,
                    found: entry.seq,
                });
            }
            if entry.prev != prev {
                return Err(invalid(format!(
                    "entry #{expected}: `prev` is not the hash of the entry before it"
                )));
            }
            if entry_hash(&prev, entry.seq, &entry.event, &mut scratch) != entry.hash {
                return Err(invalid(format!(
                    "entry #{expected}: the hash does not match its contents"
                )));
            }
            match (&entry.event, expected) {
                (Event::RunStarted { run_id: id, .. }, 0) if id != run_id => {
                    return Err(invalid(format!("its run_started names run `{id}`")));
                }
                (Event::RunStarted { .. }, 0) => {}
                (event, 0) => {
                    return Err(invalid(format!(
                        "a run starts with `run_started`, not `{}`",
                        event.kind()
                    )));
                }
                (Event::RunStarted { .. }, _) => {
                    return Err(invalid(format!(
                        "entry #{expected}: a second `run_started`"
                    )));
                }
                _ => {}
            }
            prev = entry.hash;
        }
        Ok(())
    }

    /// Checks the batch against the stored tip (`None`: unknown run): fence first, then the
    /// sequence numbers, then the chain.
    pub(crate) fn check(
        &self,
        tip: Option<&Tip>,
        fence: Option<Fence>,
    ) -> Result<(), JournalError> {
        let (stored, last, epoch) =
            tip.map_or((0, Digest::ZERO, 0), |t| (t.entries, t.last_hash, t.epoch));
        if let Some(f) = fence
            && f.epoch != epoch
        {
            return Err(JournalError::Fenced {
                run_id: self.run_id.clone(),
                held: f.epoch,
                current: epoch,
            });
        }
        if self.first_seq != stored {
            return Err(JournalError::Conflict {
                run_id: self.run_id.clone(),
                expected: stored,
                found: self.first_seq,
            });
        }
        if self.first_prev != last {
            return Err(JournalError::Invalid {
                run_id: self.run_id.clone(),
                reason: format!("entry #{stored}: `prev` is not the hash of the last stored entry"),
            });
        }
        match &self.problem {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Checks an append of `entries` against the stored tip; see [`Batch::check`].
pub(crate) fn check_append(
    run_id: &str,
    tip: Option<&Tip>,
    entries: &[Entry],
    fence: Option<Fence>,
) -> Result<Digest, JournalError> {
    let batch = Batch::new(run_id, entries);
    batch.check(tip, fence)?;
    Ok(batch.last_hash)
}

/// One stored entry: sequence number, hash and canonical JSON line.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) struct Row {
    pub seq: u64,
    pub hash: [u8; 32],
    pub line: String,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn encode_rows(entries: &[Entry]) -> Vec<Row> {
    entries
        .iter()
        .map(|e| Row {
            seq: e.seq,
            hash: e.hash.0,
            line: entry_line(e),
        })
        .collect()
}

/// Decodes stored rows (in `seq` order): every line must parse, be canonical, agree with its
/// `seq` and `hash` columns, and the whole must be an unbroken hash chain of `expected` entries.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn decode_rows(
    run_id: &str,
    expected: u64,
    rows: impl IntoIterator<Item = (u64, Vec<u8>, String)>,
) -> Result<Vec<Entry>, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason,
    };
    let mut scratch = Encoder::new();
    let mut prev = Digest::ZERO;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 16));
    for (i, (seq, hash, line)) in rows.into_iter().enumerate() {
        let i = i as u64;
        let entry: Entry = serde_json::from_str(&line)
            .map_err(|e| corrupt(format!("entry #{i} does not parse: {e}")))?;
        if entry_line(&entry) != line {
            return Err(corrupt(format!("entry #{i} is not in canonical form")));
        }
        if seq != i || entry.seq != i {
            return Err(corrupt(format!(
                "entry #{i} is stored as #{seq} and says #{}",
                entry.seq
            )));
        }
        if hash.as_slice() != entry.hash.0.as_slice() {
            return Err(corrupt(format!(
                "entry #{i}: the stored hash differs from the entry's"
            )));
        }
        if entry.prev != prev || entry_hash(&prev, i, &entry.event, &mut scratch) != entry.hash {
            return Err(corrupt(format!("entry #{i} breaks the hash chain")));
        }
        prev = entry.hash;
        out.push(entry);
    }
    if out.len() as u64 != expected {
        return Err(corrupt(format!(
            "{} entries stored, the run's record says {expected}",
            out.len()
        )));
    }
    Ok(out)
}

/// A stored signed integer back to `u64`; negative means damaged storage.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_u64(run_id: &str, what: &str, v: i64) -> Result<u64, JournalError> {
    u64::try_from(v).map_err(|_| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: format!("{what} is negative ({v})"),
    })
}

/// A stored 32-byte digest.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_digest(run_id: &str, what: &str, v: &[u8]) -> Result<Digest, JournalError> {
    <[u8; 32]>::try_from(v)
        .map(Digest)
        .map_err(|_| JournalError::Corrupt {
            run_id: run_id.to_string(),
            reason: format!("{what} is {} bytes, not 32", v.len()),
        })
}

/// A stored status name.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_status(run_id: &str, v: &str) -> Result<RunStatus, JournalError> {
    RunStatus::parse(v).ok_or_else(|| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: format!("unknown status `{v}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    fn trace(n: usize) -> Trace {
        let mut t = Trace::new();
        let mut s = Encoder::new();
        t.push(
            Event::RunStarted {
                run_id: "r".into(),
                program: "p".into(),
                program_hash: Digest::of(b"p"),
                inputs: Vec::new(),
            },
            &mut s,
        );
        for i in 1..n {
            t.push(
                Event::Decision {
                    step: "s".into(),
                    arm: Some(i as u32),
                    next: "s".into(),
                },
                &mut s,
            );
        }
        t
    }

    #[test]
    fn appends_are_checked_fence_first_then_seq_then_chain() {
        let t = trace(4);
        let e = t.entries();
        assert_eq!(check_append("r", None, &e[..2], None), Ok(e[1].hash));
        let tip = Tip {
            entries: 2,
            last_hash: e[1].hash,
            epoch: 3,
        };
        assert_eq!(
            check_append("r", Some(&tip), &e[2..], Some(Fence { epoch: 3 })),
            Ok(e[3].hash)
        );
        assert!(matches!(
            check_append("r", Some(&tip), &e[2..], Some(Fence { epoch: 2 })),
            Err(JournalError::Fenced {
                held: 2,
                current: 3,
                ..
            })
        ));
        assert!(matches!(
            check_append("r", Some(&tip), &e[3..], None),
            Err(JournalError::Conflict {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            check_append("r", Some(&tip), &e[..1], None),
            Err(JournalError::Conflict {
                expected: 2,
                found: 0,
                ..
            })
        ));
        let mut bad = e[2..].to_vec();
        bad[0].prev = Digest::of(b"x");
        assert!(matches!(
            check_append("r", Some(&tip), &bad, None),
            Err(JournalError::Invalid { .. })
        ));
        assert!(matches!(
            check_append("other", None, &e[..1], None),
            Err(JournalError::Invalid { .. })
        ));
    }

    #[test]
    fn rows_round_trip_and_damage_is_corrupt() {
        let t = trace(3);
        let rows = || {
            encode_rows(t.entries())
                .into_iter()
                .map(|r| (r.seq, r.hash.to_vec(), r.line))
                .collect::<Vec<_>>()
        };
        assert_eq!(decode_rows("r", 3, rows()).unwrap(), t.entries());
        assert!(decode_rows("r", 4, rows()).is_err());
        let mut r = rows();
        r[1].2 = r[1].2.replace("\"arm\":1", "\"arm\":2");
        assert!(matches!(
            decode_rows("r", 3, r),
            Err(JournalError::Corrupt { .. })
        ));
        let mut r = rows();
        r[2].1[0] ^= 1;
        assert!(decode_rows("r", 3, r).is_err());
    }
}
