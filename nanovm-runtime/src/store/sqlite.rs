//! [`SqliteStore`]: the embedded store, one database file.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row as SqlRow, params};

use super::append::{Batch, Tip, decode_rows, encode_rows, to_digest, to_status, to_u64};
use super::{
    FeedItem, FeedPos, Fence, JournalError, JournalStore, Lease, LogLeaf, Reference, RunQuery,
    RunRecord,
};
use crate::db::sqlite::{Db, SqliteOptions, io};
use crate::db::{to_i64, wall_ms};
use crate::program::BoxFuture;
use crate::trace::{Entry, RunStatus};
use crate::value::Digest;
use crate::vault::SqliteVault;
use crate::view::RunView;

/// The columns [`record`] reads, in its order.
const RECORD_COLUMNS: &str = "run_id, program, program_hash, status, entries, end_step, message, \
     waiting_for, deadline_ms, epoch, lease_owner, lease_expires_ms, created_ms, updated_ms";

/// A [`JournalStore`] in one SQLite database file. Cheap to clone; clones share the writer
/// thread. [`SqliteStore::vault`] gives a [`SqliteVault`] in the same database.
///
/// Durability: WAL journal, `synchronous=FULL` (every commit fsyncs the WAL before it returns),
/// `busy_timeout` 5 s. One *writer thread* owns the only writing connection: every write (an
/// append, a claim, a renew, a vault put) is a job sent to it, and the caller's future resolves
/// when the job's transaction has been committed. Jobs that queue up while a commit is being
/// synced are coalesced into the next transaction, each in its own savepoint (a job that fails
/// rolls back alone): *group commit across runs*, one fsync for many appends, with no
/// acknowledgement before its commit. Reads run on a small pool of read-only connections on
/// tokio's blocking threads (WAL readers never block the writer), or, for an in-memory
/// database, on the writer thread. Nothing blocks the async runtime.
///
/// Schema (version 4, `PRAGMA user_version`; an older database opened for writing gets what
/// it lacks added: `nanovm_reveals` (version 2), the evidence log (version 3), the feed
/// (version 4)):
///
/// ```sql
/// CREATE TABLE nanovm_runs (
///     ord INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order
///     run_id TEXT NOT NULL UNIQUE,
///     program TEXT NOT NULL,
///     program_hash BLOB NOT NULL,              -- 32 bytes
///     status TEXT NOT NULL,                    -- RunStatus::as_str
///     entries INTEGER NOT NULL,
///     last_hash BLOB NOT NULL,                 -- 32 bytes
///     end_step TEXT, message TEXT, waiting_for TEXT, deadline_ms INTEGER,
///     epoch INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_ms INTEGER,
///     created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
/// CREATE INDEX nanovm_runs_claim ON nanovm_runs (program, status, ord);
/// CREATE TABLE nanovm_entries (
///     run INTEGER NOT NULL,                    -- nanovm_runs.ord
///     seq INTEGER NOT NULL,
///     hash BLOB NOT NULL,                      -- 32 bytes
///     line TEXT NOT NULL,                      -- trace::entry_line
///     PRIMARY KEY (run, seq)) WITHOUT ROWID;
/// CREATE TABLE nanovm_vault (
///     id TEXT PRIMARY KEY,                     -- VaultId hex
///     salt BLOB, value TEXT,                   -- both NULL once erased
///     created_ms INTEGER NOT NULL, erased_ms INTEGER);
/// CREATE TABLE nanovm_reveals (                -- the reveal log (version 2)
///     vault_id TEXT NOT NULL, commitment BLOB NOT NULL,
///     run_id TEXT NOT NULL, step TEXT NOT NULL, tool TEXT NOT NULL,
///     attempt INTEGER NOT NULL, key BLOB NOT NULL, at_ms INTEGER NOT NULL);
/// CREATE INDEX nanovm_reveals_by_secret ON nanovm_reveals (vault_id);
/// CREATE TABLE nanovm_log (                    -- the evidence log (version 3)
///     idx INTEGER PRIMARY KEY,                 -- the leaf's index, from 0
///     run_id TEXT NOT NULL, leaf BLOB NOT NULL);  -- a signed checkpoint
/// CREATE INDEX nanovm_log_by_run ON nanovm_log (run_id, idx);
/// CREATE TABLE nanovm_heads (                  -- signed tree heads (JSON), by size
///     size INTEGER PRIMARY KEY, head TEXT NOT NULL);
/// CREATE TABLE nanovm_feed (                   -- the feed (version 4), commit order
///     pos INTEGER PRIMARY KEY AUTOINCREMENT,
///     run INTEGER NOT NULL, seq INTEGER NOT NULL);  -- nanovm_runs.ord, the entry's seq
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

/// A failed read of the evidence log: a database written before it existed (schema version 2
/// or older, opened read-only) says so plainly.
fn no_log(e: rusqlite::Error) -> JournalError {
    if e.to_string().contains("no such table") {
        io(
            "this database has no evidence log (written before schema version 3; opening it \
            for writing, e.g. with a runtime, adds it)",
        )
    } else {
        io(e)
    }
}

/// A database error while reading a run: a value of the wrong type means the stored data was
/// damaged, anything else is I/O.
fn read_err(run_id: &str, e: rusqlite::Error) -> JournalError {
    match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => JournalError::Corrupt {
            run_id: run_id.to_string(),
            reason: format!("a stored value has the wrong type: {e}"),
        },
        e => io(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode with `synchronous=FULL`.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, JournalError> {
        SqliteStore::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with options.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, JournalError> {
        let db = Db::start(Some(path.as_ref().to_path_buf()), options).await?;
        Ok(SqliteStore { db: Arc::new(db) })
    }

    /// Opens an existing store for reading only, for inspection tools (`nanovm runs`, `nanovm
    /// trace`): the file is opened with `SQLITE_OPEN_READ_ONLY` and never created, no pragma
    /// that writes is issued, and no schema is ever added. A missing file, a file that is not
    /// SQLite, or a database without this store's schema (an empty file, say) is an error.
    /// Every write through the returned store fails.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore, JournalError> {
        let options = SqliteOptions {
            read_only: true,
            ..SqliteOptions::default()
        };
        SqliteStore::open_with(path, options).await
    }

    /// A private in-memory database (nothing survives the store; for tests).
    pub async fn in_memory() -> Result<SqliteStore, JournalError> {
        let db = Db::start(None, SqliteOptions::default()).await?;
        Ok(SqliteStore { db: Arc::new(db) })
    }

    /// A vault in the same database (its own table), sharing this store's writer.
    pub fn vault(&self) -> SqliteVault {
        SqliteVault::on(self.db.clone())
    }

    /// The database file (`None`: in memory).
    pub fn path(&self) -> Option<&Path> {
        self.db.path.as_deref()
    }

    /// How many transactions this store's writer thread has committed since it was opened
    /// (shared by its clones and its [`SqliteStore::vault`]). On a file database every commit
    /// is a sync (`synchronous=FULL`), so this counts what durability costs: a benchmark reads
    /// it before and after a run. Transactions that rolled back are not counted.
    pub fn commits(&self) -> u64 {
        self.db.commits()
    }
}

impl JournalStore for SqliteStore {
    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        let (run_id, data) = (run_id.to_string(), data.to_vec());
        Box::pin(self.db.write(move |c| {
            let index: i64 = c
                .query_row(
                    "INSERT INTO nanovm_log (idx, run_id, leaf) \
                     VALUES ((SELECT IFNULL(MAX(idx) + 1, 0) FROM nanovm_log), ?1, ?2) \
                     RETURNING idx",
                    params![run_id, data],
                    |r| r.get(0),
                )
                .map_err(io)?;
            to_u64(&run_id, "idx", index)
        }))
    }

    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        Box::pin(self.db.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT idx, run_id, leaf FROM nanovm_log WHERE idx >= ?1 ORDER BY idx",
                )
                .map_err(no_log)?;
            let mut rows = st.query(params![to_i64(from)]).map_err(io)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(io)? {
                let index: i64 = row.get(0).map_err(|e| read_err("?", e))?;
                let run_id: String = row.get(1).map_err(|e| read_err("?", e))?;
                let data: Vec<u8> = row.get(2).map_err(|e| read_err(&run_id, e))?;
                out.push(LogLeaf {
                    index: to_u64(&run_id, "idx", index)?,
                    run_id,
                    data,
                });
            }
            Ok(out)
        }))
    }

    fn feed<'a>(
        &'a self,
        after: Option<FeedPos>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FeedItem>, JournalError>> {
        let from = after.map_or(0, |p| to_i64(p.minor));
        let limit = to_i64(u64::try_from(limit).unwrap_or(u64::MAX));
        Box::pin(self.db.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT f.pos, r.run_id, f.seq FROM nanovm_feed f \
                     JOIN nanovm_runs r ON r.ord = f.run \
                     WHERE f.pos > ?1 ORDER BY f.pos LIMIT ?2",
                )
                .map_err(|e| {
                    io(format!(
                        "reading the feed (a database before schema 4 has none): {e}"
                    ))
                })?;
            let mut rows = st.query(params![from, limit]).map_err(io)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(io)? {
                let pos: i64 = row.get(0).map_err(|e| read_err("?", e))?;
                let run_id: String = row.get(1).map_err(|e| read_err("?", e))?;
                let seq: i64 = row.get(2).map_err(|e| read_err(&run_id, e))?;
                out.push(FeedItem {
                    pos: FeedPos {
                        major: 0,
                        minor: to_u64(&run_id, "pos", pos)?,
                    },
                    seq: to_u64(&run_id, "seq", seq)?,
                    run_id,
                });
            }
            Ok(out)
        }))
    }

    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        let head = head.to_string();
        Box::pin(self.db.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO nanovm_heads (size, head) VALUES (?1, ?2)",
                params![to_i64(size), head],
            )
            .map_err(io)?;
            Ok(())
        }))
    }

    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        Box::pin(self.db.read(move |c| {
            c.query_row(
                "SELECT head FROM nanovm_heads ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(no_log)
        }))
    }

    fn link_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let (run_id, subject) = (run_id.to_string(), subject.to_string());
        Box::pin(self.db.write(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO nanovm_subjects (subject, run_id) VALUES (?1, ?2)",
            )
            .and_then(|mut st| st.execute(params![subject, run_id]))
            .map_err(io)?;
            Ok(())
        }))
    }

    fn link_sole_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        let (run_id, subject) = (run_id.to_string(), subject.to_string());
        Box::pin(self.db.write(move |c| {
            // One statement: atomic against every other writer of the file.
            let linked = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO nanovm_subjects (subject, run_id) SELECT ?1, ?2 \
                     WHERE NOT EXISTS (SELECT 1 FROM nanovm_subjects WHERE run_id = ?2 AND subject <> ?1)",
                )
                .and_then(|mut st| st.execute(params![subject, run_id]))
                .map_err(io)?;
            if linked == 1 {
                return Ok(None);
            }
            // Not inserted: linked already, or tied to another subject (links are only ever
            // removed by an erasure's unlink or a prune).
            let links = c
                .prepare_cached("SELECT subject FROM nanovm_subjects WHERE run_id = ?1")
                .and_then(|mut st| {
                    st.query_map(params![run_id], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(io)?;
            if links.contains(&subject) {
                return Ok(None);
            }
            Ok(links.into_iter().next())
        }))
    }

    fn referencing<'a>(
        &'a self,
        what: &'a Reference,
    ) -> BoxFuture<'a, Result<Vec<String>, JournalError>> {
        let (sql, key) = match what {
            Reference::Subject(s) => (
                "SELECT r.run_id FROM nanovm_subjects x JOIN nanovm_runs r ON r.run_id = x.run_id \
                 WHERE x.subject = ?1 ORDER BY r.ord",
                s.clone(),
            ),
            Reference::Secret(v) => (
                "SELECT r.run_id FROM nanovm_secret_refs x JOIN nanovm_runs r ON r.run_id = x.run_id \
                 WHERE x.vault_id = ?1 ORDER BY r.ord",
                v.to_hex(),
            ),
        };
        Box::pin(self.db.read(move |c| {
            let mut st = c.prepare_cached(sql).map_err(io)?;
            let ids = st
                .query_map(params![key], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| read_err("?", e))?;
            Ok(ids)
        }))
    }

    fn unlink_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        let subject = subject.to_string();
        Box::pin(self.db.write(move |c| {
            c.prepare_cached("DELETE FROM nanovm_subjects WHERE subject = ?1")
                .and_then(|mut st| st.execute(params![subject]))
                .map_err(io)?;
            Ok(())
        }))
    }

    fn delete_run<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        let lease = lease.clone();
        Box::pin(self.db.write(move |c| {
            held(c, &lease)?;
            let id = lease.run_id.as_str();
            for sql in [
                // The feed's rows of the run go with its entries: a feed names only what the
                // store still holds.
                "DELETE FROM nanovm_feed WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = ?1)",
                "DELETE FROM nanovm_entries WHERE run = (SELECT ord FROM nanovm_runs WHERE run_id = ?1)",
                "DELETE FROM nanovm_secret_refs WHERE run_id = ?1",
                "DELETE FROM nanovm_subjects WHERE run_id = ?1",
                "DELETE FROM nanovm_runs WHERE run_id = ?1",
            ] {
                c.prepare_cached(sql)
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(io)?;
            }
            Ok(())
        }))
    }

    fn compact<'a>(&'a self) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            if self.db.path.is_some() {
                self.db
                    .on_writer(|c| {
                        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                            r.get::<_, i64>(0)
                        })
                        .map_err(io)
                    })
                    .await
                    .and_then(|busy| {
                        if busy == 0 {
                            Ok(())
                        } else {
                            Err(io(
                                "the WAL checkpoint was blocked by a reader: the WAL may still \
                                 hold erased pages; run the erasure again when readers are idle",
                            ))
                        }
                    })?;
            }
            Ok(())
        })
    }

    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        if entries.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let batch = Batch::new(run_id, entries);
        let rows = encode_rows(entries);
        Box::pin(
            self.db
                .write(move |c| append(c, &batch, rows, fence).map(|_| ())),
        )
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        let run_id = run_id.to_string();
        Box::pin(self.db.read(move |c| load(c, &run_id)))
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        let run_id = run_id.to_string();
        Box::pin(self.db.read(move |c| {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM nanovm_runs WHERE run_id = ?1");
            let mut st = c.prepare_cached(&sql).map_err(io)?;
            let mut rows = st.query(params![run_id]).map_err(io)?;
            match rows.next().map_err(|e| read_err(&run_id, e))? {
                Some(row) => record(row).map(Some),
                None => Ok(None),
            }
        }))
    }

    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        let q = query.clone();
        Box::pin(self.db.read(move |c| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM nanovm_runs \
                 WHERE (?1 IS NULL OR program = ?1) AND (?2 IS NULL OR status = ?2) \
                 ORDER BY ord LIMIT ?3"
            );
            let limit = q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            let mut st = c.prepare_cached(&sql).map_err(io)?;
            let mut rows = st
                .query(params![q.program, q.status.map(RunStatus::as_str), limit])
                .map_err(io)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| read_err("?", e))? {
                out.push(record(row)?);
            }
            Ok(out)
        }))
    }

    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let program = program.to_string();
        let worker = worker.to_string();
        Box::pin(
            self.db
                .write(move |c| claim(c, &program, worker, now_ms, lease_ms)),
        )
    }

    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let program = program.to_string();
        let hashes = hashes.to_vec();
        let worker = worker.to_string();
        Box::pin(
            self.db
                .write(move |c| claim_versions(c, &program, &hashes, worker, now_ms, lease_ms)),
        )
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        let lease = lease.clone();
        Box::pin(self.db.write(move |c| {
            held(c, &lease)?;
            let expires_ms = now_ms.saturating_add(lease_ms);
            c.prepare_cached(
                "UPDATE nanovm_runs SET lease_expires_ms = ?1, updated_ms = ?2 WHERE run_id = ?3",
            )
            .and_then(|mut st| {
                st.execute(params![to_i64(expires_ms), to_i64(wall_ms()), lease.run_id])
            })
            .map_err(io)?;
            Ok(Lease {
                expires_ms,
                ..lease
            })
        }))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        let lease = lease.clone();
        Box::pin(self.db.write(move |c| {
            held(c, &lease)?;
            release(c, &lease)
        }))
    }

    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let run_id = run_id.to_string();
        let worker = worker.to_string();
        Box::pin(
            self.db
                .write(move |c| claim_run(c, run_id, worker, now_ms, lease_ms)),
        )
    }

    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        let batch = Batch::new(run_id, entries);
        let rows = encode_rows(entries);
        let worker = worker.to_string();
        Box::pin(
            self.db
                .write(move |c| start_run(c, &batch, rows, worker, now_ms, lease_ms)),
        )
    }

    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let batch = Batch::new(run_id, entries);
        let rows = encode_rows(entries);
        let lease = lease.clone();
        Box::pin(self.db.write(move |c| {
            if lease.run_id != batch.run_id {
                return Err(JournalError::Fenced {
                    run_id: batch.run_id.clone(),
                    held: lease.epoch,
                    current: 0,
                });
            }
            held(c, &lease)?;
            if batch.len > 0 {
                append(c, &batch, rows, Some(lease.fence()))?;
            }
            release(c, &lease)
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// The operations, on a connection (inside the writer's transaction for writes)
// ---------------------------------------------------------------------------------------------

/// The stored state of a run an append continues.
struct Stored {
    ord: i64,
    tip: Tip,
    progress: RunView,
}

fn stored(c: &Connection, run_id: &str) -> Result<Option<Stored>, JournalError> {
    let mut st = c
        .prepare_cached(
            "SELECT ord, entries, last_hash, epoch, status, end_step, message, waiting_for, \
             deadline_ms FROM nanovm_runs WHERE run_id = ?1",
        )
        .map_err(io)?;
    let mut rows = st.query(params![run_id]).map_err(io)?;
    let Some(row) = rows.next().map_err(|e| read_err(run_id, e))? else {
        return Ok(None);
    };
    let get_err = |e| read_err(run_id, e);
    let hash: Vec<u8> = row.get(2).map_err(get_err)?;
    let status: String = row.get(4).map_err(get_err)?;
    let deadline: Option<i64> = row.get(8).map_err(get_err)?;
    Ok(Some(Stored {
        ord: row.get(0).map_err(get_err)?,
        tip: Tip {
            at_rest: status != RunStatus::Running.as_str(),
            entries: to_u64(run_id, "entries", row.get(1).map_err(get_err)?)?,
            last_hash: to_digest(run_id, "last_hash", &hash)?,
            epoch: to_u64(run_id, "epoch", row.get(3).map_err(get_err)?)?,
        },
        progress: RunView::from_record(
            to_status(run_id, &status)?,
            row.get(5).map_err(get_err)?,
            row.get(6).map_err(get_err)?,
            row.get(7).map_err(get_err)?,
            deadline
                .map(|d| to_u64(run_id, "deadline_ms", d))
                .transpose()?,
        ),
    }))
}

/// Appends a checked batch; returns the run's row (`ord`).
fn append(
    c: &Connection,
    batch: &Batch,
    rows: Vec<super::append::Row>,
    fence: Option<Fence>,
) -> Result<i64, JournalError> {
    let run_id = batch.run_id.as_str();
    let found = stored(c, run_id)?;
    batch.check(found.as_ref().map(|s| &s.tip), fence)?;
    let now = to_i64(wall_ms());
    let (ord, mut progress) = match found {
        Some(s) => (s.ord, s.progress),
        None => {
            // `check` made sure the first entry is this run's `run_started`.
            let (program, hash) = batch
                .started
                .clone()
                .unwrap_or_else(|| (String::new(), Digest::ZERO));
            c.prepare_cached(
                "INSERT INTO nanovm_runs (run_id, program, program_hash, status, entries, \
                 last_hash, created_ms, updated_ms) VALUES (?1, ?2, ?3, 'running', 0, ?4, ?5, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    run_id,
                    program,
                    &hash.0[..],
                    &Digest::ZERO.0[..],
                    now
                ])
            })
            .map_err(io)?;
            (c.last_insert_rowid(), RunView::new())
        }
    };
    {
        let mut st = c
            .prepare_cached(
                "INSERT INTO nanovm_entries (run, seq, hash, line) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(io)?;
        for r in &rows {
            st.execute(params![ord, to_i64(r.seq), &r.hash[..], r.line])
                .map_err(io)?;
        }
        let mut feed = c
            .prepare_cached("INSERT INTO nanovm_feed (run, seq) VALUES (?1, ?2)")
            .map_err(io)?;
        for r in &rows {
            feed.execute(params![ord, to_i64(r.seq)]).map_err(io)?;
        }
    }
    if !batch.secrets.is_empty() {
        let mut st = c
            .prepare_cached(
                "INSERT OR IGNORE INTO nanovm_secret_refs (vault_id, run_id) VALUES (?1, ?2)",
            )
            .map_err(io)?;
        for v in &batch.secrets {
            st.execute(params![v.to_hex(), run_id]).map_err(io)?;
        }
    }
    for e in &batch.moves {
        progress.apply_status(e);
    }
    let (status, end_step, message, waiting_for, deadline_ms) = progress.into_record();
    c.prepare_cached(
        "UPDATE nanovm_runs SET entries = entries + ?1, last_hash = ?2, status = ?3, \
         end_step = ?4, message = ?5, waiting_for = ?6, deadline_ms = ?7, updated_ms = ?8, \
         program_hash = COALESCE(?10, program_hash) WHERE ord = ?9",
    )
    .and_then(|mut st| {
        st.execute(params![
            to_i64(batch.len),
            &batch.last_hash.0[..],
            status.as_str(),
            end_step,
            message,
            waiting_for,
            deadline_ms.map(to_i64),
            now,
            ord,
            batch.pin.as_ref().map(|d| d.0.to_vec())
        ])
    })
    .map_err(io)?;
    Ok(ord)
}

/// [`JournalStore::start_run`]: in one job of the writer (one savepoint), the run is created
/// from its first entries and leased.
fn start_run(
    c: &Connection,
    batch: &Batch,
    rows: Vec<super::append::Row>,
    worker: String,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Lease, JournalError> {
    let found = stored(c, &batch.run_id)?;
    batch.check_start(found.as_ref().map(|s| &s.tip))?;
    let ord = append(c, batch, rows, None)?;
    grant(c, ord, batch.run_id.clone(), 0, worker, now_ms, lease_ms)
}

fn load(c: &Connection, run_id: &str) -> Result<Option<Vec<Entry>>, JournalError> {
    // One read transaction: the count and the rows come from the same snapshot.
    let tx = c.unchecked_transaction().map_err(io)?;
    let run: Option<(i64, i64, Vec<u8>)> = tx
        .prepare_cached("SELECT ord, entries, last_hash FROM nanovm_runs WHERE run_id = ?1")
        .and_then(|mut st| {
            st.query_row(params![run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(|e| read_err(run_id, e))?;
    let Some((ord, count, last_hash)) = run else {
        return Ok(None);
    };
    let count = to_u64(run_id, "entries", count)?;
    let last_hash = to_digest(run_id, "last_hash", &last_hash)?;
    let mut st = tx
        .prepare_cached("SELECT seq, hash, line FROM nanovm_entries WHERE run = ?1 ORDER BY seq")
        .map_err(io)?;
    let mut rows = st.query(params![ord]).map_err(io)?;
    let mut raw = Vec::new();
    while let Some(row) = rows.next().map_err(|e| read_err(run_id, e))? {
        let seq: i64 = row.get(0).map_err(|e| read_err(run_id, e))?;
        let hash: Vec<u8> = row.get(1).map_err(|e| read_err(run_id, e))?;
        let line: String = row.get(2).map_err(|e| read_err(run_id, e))?;
        raw.push((to_u64(run_id, "seq", seq)?, hash, line));
    }
    decode_rows(run_id, count, last_hash, raw).map(Some)
}

fn record(row: &SqlRow<'_>) -> Result<RunRecord, JournalError> {
    let run_id: String = row.get(0).map_err(|e| read_err("?", e))?;
    let id = run_id.as_str();
    let get_err = |e| read_err(id, e);
    let hash: Vec<u8> = row.get(2).map_err(get_err)?;
    let status: String = row.get(3).map_err(get_err)?;
    let opt_u64 = |i: usize, what: &str| -> Result<Option<u64>, JournalError> {
        let v: Option<i64> = row.get(i).map_err(get_err)?;
        v.map(|v| to_u64(id, what, v)).transpose()
    };
    Ok(RunRecord {
        program: row.get(1).map_err(get_err)?,
        program_hash: to_digest(id, "program_hash", &hash)?,
        status: to_status(id, &status)?,
        entries: to_u64(id, "entries", row.get(4).map_err(get_err)?)?,
        end_step: row.get(5).map_err(get_err)?,
        message: row.get(6).map_err(get_err)?,
        waiting_for: row.get(7).map_err(get_err)?,
        deadline_ms: opt_u64(8, "deadline_ms")?,
        epoch: to_u64(id, "epoch", row.get(9).map_err(get_err)?)?,
        lease_owner: row.get(10).map_err(get_err)?,
        lease_expires_ms: opt_u64(11, "lease_expires_ms")?,
        created_ms: to_u64(id, "created_ms", row.get(12).map_err(get_err)?)?,
        updated_ms: to_u64(id, "updated_ms", row.get(13).map_err(get_err)?)?,
        run_id,
    })
}

fn claim(
    c: &Connection,
    program: &str,
    worker: String,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Option<Lease>, JournalError> {
    let now = to_i64(now_ms);
    let found: Option<(i64, String, i64)> = c
        .prepare_cached(
            "SELECT ord, run_id, epoch FROM nanovm_runs WHERE program = ?1 AND entries > 0 \
             AND (status = 'running' \
                  OR (status = 'suspended' AND deadline_ms IS NOT NULL AND deadline_ms <= ?2)) \
             AND (lease_expires_ms IS NULL OR lease_expires_ms <= ?2) \
             ORDER BY ord LIMIT 1",
        )
        .and_then(|mut st| {
            st.query_row(params![program, now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(io)?;
    let Some((ord, run_id, epoch)) = found else {
        return Ok(None);
    };
    grant(c, ord, run_id, epoch, worker, now_ms, lease_ms).map(Some)
}

/// [`claim`] restricted to runs recorded under one of `hashes`.
fn claim_versions(
    c: &Connection,
    program: &str,
    hashes: &[Digest],
    worker: String,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Option<Lease>, JournalError> {
    if hashes.is_empty() {
        return Ok(None);
    }
    let now = to_i64(now_ms);
    let list = (0..hashes.len())
        .map(|i| format!("?{}", i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT ord, run_id, epoch FROM nanovm_runs WHERE program = ?1 AND entries > 0 \
         AND program_hash IN ({list}) \
         AND (status = 'running' \
              OR (status = 'suspended' AND deadline_ms IS NOT NULL AND deadline_ms <= ?2)) \
         AND (lease_expires_ms IS NULL OR lease_expires_ms <= ?2) \
         ORDER BY ord LIMIT 1"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![program.to_string().into(), now.into()];
    values.extend(
        hashes
            .iter()
            .map(|h| rusqlite::types::Value::Blob(h.0.to_vec())),
    );
    let found: Option<(i64, String, i64)> = c
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row(rusqlite::params_from_iter(values), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(io)?;
    let Some((ord, run_id, epoch)) = found else {
        return Ok(None);
    };
    grant(c, ord, run_id, epoch, worker, now_ms, lease_ms).map(Some)
}

fn claim_run(
    c: &Connection,
    run_id: String,
    worker: String,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Option<Lease>, JournalError> {
    let found: Option<(i64, i64, Option<i64>)> = c
        .prepare_cached("SELECT ord, epoch, lease_expires_ms FROM nanovm_runs WHERE run_id = ?1")
        .and_then(|mut st| {
            st.query_row(params![run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(|e| read_err(&run_id, e))?;
    let Some((ord, epoch, expires)) = found else {
        return Ok(None);
    };
    if expires.is_some_and(|e| e > to_i64(now_ms)) {
        return Ok(None);
    }
    grant(c, ord, run_id, epoch, worker, now_ms, lease_ms).map(Some)
}

/// Gives `worker` the lease on run `run_id` (row `ord`, stored epoch `epoch`): the next epoch,
/// expiring `lease_ms` after `now_ms`. The caller has checked that the run is free to claim, in
/// the same transaction.
fn grant(
    c: &Connection,
    ord: i64,
    run_id: String,
    epoch: i64,
    worker: String,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Lease, JournalError> {
    let epoch = to_u64(&run_id, "epoch", epoch)? + 1;
    let expires_ms = now_ms.saturating_add(lease_ms);
    c.prepare_cached(
        "UPDATE nanovm_runs SET epoch = ?1, lease_owner = ?2, lease_expires_ms = ?3, \
         updated_ms = ?4 WHERE ord = ?5",
    )
    .and_then(|mut st| {
        st.execute(params![
            to_i64(epoch),
            worker,
            to_i64(expires_ms),
            to_i64(wall_ms()),
            ord
        ])
    })
    .map_err(io)?;
    Ok(Lease {
        run_id,
        epoch,
        worker,
        expires_ms,
    })
}

/// Clears the lease of `lease`'s run (the caller checked it is held, in the same transaction).
fn release(c: &Connection, lease: &Lease) -> Result<(), JournalError> {
    c.prepare_cached(
        "UPDATE nanovm_runs SET lease_owner = NULL, lease_expires_ms = NULL, \
         updated_ms = ?1 WHERE run_id = ?2",
    )
    .and_then(|mut st| st.execute(params![to_i64(wall_ms()), lease.run_id]))
    .map_err(io)?;
    Ok(())
}

/// Checks that `lease` is still the run's current lease.
fn held(c: &Connection, lease: &Lease) -> Result<(), JournalError> {
    let found: Option<(i64, Option<String>)> = c
        .prepare_cached("SELECT epoch, lease_owner FROM nanovm_runs WHERE run_id = ?1")
        .and_then(|mut st| {
            st.query_row(params![lease.run_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| read_err(&lease.run_id, e))?;
    let (current, owner) = match found {
        Some((epoch, owner)) => (to_u64(&lease.run_id, "epoch", epoch)?, owner),
        None => (0, None),
    };
    if current != lease.epoch || owner.as_deref() != Some(lease.worker.as_str()) {
        return Err(JournalError::Fenced {
            run_id: lease.run_id.clone(),
            held: lease.epoch,
            current,
        });
    }
    Ok(())
}
