//! The SQLite database behind [`SqliteStore`](crate::store::SqliteStore) and
//! [`SqliteVault`](crate::vault::SqliteVault): its schema, its options, and the one writer
//! thread (with the readers) every write and read of either goes through.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::JournalError;

/// The schema version this code writes (`PRAGMA user_version`). Version 1 lacked
/// `nanovm_reveals` ([`REVEALS`]), version 2 the evidence log ([`EVIDENCE`]), version 3 the
/// feed ([`FEED`]); opening an older database for writing adds what it lacks.
const SCHEMA_VERSION: i64 = 4;

/// The feed (schema version 4): every entry of every run in commit order (the one writer
/// numbers them), for the all-runs stream. Entries stored before are added in run order.
const FEED: &str = "
CREATE TABLE IF NOT EXISTS nanovm_feed (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
";

/// Upgrading to version 4: the entries already stored join the feed, in run order.
const FEED_BACKFILL: &str = "
INSERT INTO nanovm_feed (run, seq) SELECT run, seq FROM nanovm_entries
    WHERE NOT EXISTS (SELECT 1 FROM nanovm_feed) ORDER BY run, seq;
";

/// The evidence log (schema version 3): signed checkpoints as the leaves of the Merkle tree
/// over all runs, and the signed tree heads.
const EVIDENCE: &str = "
CREATE TABLE nanovm_log (
    idx INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    leaf BLOB NOT NULL
);
CREATE INDEX nanovm_log_by_run ON nanovm_log (run_id, idx);
CREATE TABLE nanovm_heads (
    size INTEGER PRIMARY KEY,
    head TEXT NOT NULL
);
";

/// The reveal log (schema version 2): one row per secret handed to a tool call.
const REVEALS: &str = "
CREATE TABLE nanovm_reveals (
    vault_id TEXT NOT NULL,
    commitment BLOB NOT NULL,
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    tool TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    key BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX nanovm_reveals_by_secret ON nanovm_reveals (vault_id);
";

const SCHEMA: &str = "
CREATE TABLE nanovm_runs (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    program TEXT NOT NULL,
    program_hash BLOB NOT NULL,
    status TEXT NOT NULL,
    entries INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    end_step TEXT,
    message TEXT,
    waiting_for TEXT,
    deadline_ms INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX nanovm_runs_claim ON nanovm_runs (program, status, ord);
CREATE TABLE nanovm_entries (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE nanovm_vault (
    id TEXT PRIMARY KEY,
    salt BLOB,
    value TEXT,
    created_ms INTEGER NOT NULL,
    erased_ms INTEGER
);
";

/// Options of [`SqliteStore::open_with`](crate::store::SqliteStore::open_with).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The most write jobs (appends, claims...) the writer thread coalesces into one
    /// transaction. 1 disables group commit across runs (one transaction, one fsync per
    /// append). Default 64.
    pub max_batch: usize,
    /// How long a statement waits for a lock held by another connection or process. Default
    /// 5 s.
    pub busy_timeout: Duration,
    /// Set by [`SqliteStore::open_read_only`](crate::store::SqliteStore::open_read_only):
    /// every connection is read-only.
    pub(crate) read_only: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 64,
            busy_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }
}

impl SqliteOptions {
    /// The defaults.
    pub fn new() -> Self {
        SqliteOptions::default()
    }

    /// Sets [`SqliteOptions::max_batch`] (at least 1).
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    #[must_use]
    pub fn busy_timeout(mut self, t: Duration) -> Self {
        self.busy_timeout = t;
        self
    }
}

/// A database error, as the stores report it.
pub(crate) fn io(e: impl fmt::Display) -> JournalError {
    JournalError::Io(format!("sqlite: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The writer thread and the readers
// ---------------------------------------------------------------------------------------------

type Work<R> = Box<dyn FnOnce(&Connection) -> Result<R, JournalError> + Send>;

/// A write job: runs inside the writer's transaction; its caller hears back after the commit.
trait WriteJob: Send {
    /// Runs the job; true if it succeeded (false: its savepoint is rolled back).
    fn run(&mut self, c: &Connection) -> bool;
    /// Reports the job's result, or `commit`'s error if the transaction did not commit.
    fn finish(self: Box<Self>, commit: Result<(), JournalError>);
}

struct Pending<R> {
    work: Option<Work<R>>,
    out: Option<Result<R, JournalError>>,
    reply: oneshot::Sender<Result<R, JournalError>>,
}

impl<R: Send> WriteJob for Pending<R> {
    fn run(&mut self, c: &Connection) -> bool {
        let out = match self.work.take() {
            Some(work) => work(c),
            None => Err(JournalError::Io("sqlite: a write job ran twice".into())),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), JournalError>) {
        let out = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)) | None, Err(e)) => Err(e),
            (None, Ok(())) => Err(JournalError::Io("sqlite: a write job never ran".into())),
        };
        // The caller may have gone away (its future was dropped): nothing to tell.
        let _ = self.reply.send(out);
    }
}

/// Work for the writer's connection outside any transaction (reads of an in-memory database,
/// checkpoints).
type Other = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Write(Box<dyn WriteJob>),
    Other(Other),
}

pub(crate) struct Db {
    pub(crate) path: Option<PathBuf>,
    jobs: mpsc::Sender<Job>,
    readers: Option<Arc<Readers>>,
    /// Transactions the writer thread committed (each one a sync of a file database).
    commits: Arc<AtomicU64>,
}

struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(io)?;
                c.busy_timeout(self.busy_timeout).map_err(io)?;
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < 8 {
            idle.push(conn);
        }
        out
    }
}

/// The connection of a store opened with [`SqliteStore::open_read_only`](crate::store::SqliteStore::open_read_only): read-only, and only
/// over a database that already holds this store's schema.
fn read_only_connection(
    path: Option<&Path>,
    options: &SqliteOptions,
) -> Result<Connection, JournalError> {
    let path = path.ok_or_else(|| io("a read-only store needs a database file"))?;
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(io)?;
    c.busy_timeout(options.busy_timeout).map_err(io)?;
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(io)?;
    match version {
        // A version 1 database has no reveal log, a version 2 one no evidence log, a version
        // 3 one no feed; reading the runs needs none (reading the log or feed of one fails:
        // it has none).
        1..=3 | SCHEMA_VERSION => Ok(c),
        0 => Err(io(
            "not a nanovm store: the database has no nanovm schema (opened read-only; nothing \
             was created)",
        )),
        v => Err(io(format!(
            "the database has schema version {v}; this nanovm knows {SCHEMA_VERSION}"
        ))),
    }
}

fn writer_connection(
    path: Option<&Path>,
    options: &SqliteOptions,
) -> Result<Connection, JournalError> {
    if options.read_only {
        return read_only_connection(path, options);
    }
    let c = match path {
        Some(p) => Connection::open(p),
        None => Connection::open_in_memory(),
    }
    .map_err(io)?;
    c.busy_timeout(options.busy_timeout).map_err(io)?;
    if path.is_some() {
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(io)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io(format!(
                "the database refused WAL mode (it is in `{mode}`)"
            )));
        }
    }
    c.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")
        .map_err(io)?;
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(io)?;
    match version {
        0..=3 => {
            // Under the write lock, and reading the version again: another process may have
            // created or upgraded the schema meanwhile (two processes opening one file at once).
            let migrate = || -> rusqlite::Result<i64> {
                c.execute_batch("BEGIN IMMEDIATE")?;
                let now: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                match now {
                    0 => c.execute_batch(&format!(
                        "{SCHEMA} {REVEALS} {EVIDENCE} {FEED} PRAGMA user_version = {SCHEMA_VERSION};"
                    ))?,
                    1 => c.execute_batch(&format!(
                        "{REVEALS} {EVIDENCE} {FEED} PRAGMA user_version = {SCHEMA_VERSION};"
                    ))?,
                    2 => c.execute_batch(&format!(
                        "{EVIDENCE} {FEED} PRAGMA user_version = {SCHEMA_VERSION};"
                    ))?,
                    3 => c.execute_batch(&format!(
                        "{FEED} PRAGMA user_version = {SCHEMA_VERSION};"
                    ))?,
                    _ => {}
                }
                let has_entries: bool = c.query_row(
                    "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'nanovm_entries'",
                    [],
                    |r| r.get(0),
                )?;
                if (1..=3).contains(&now) && has_entries {
                    c.execute_batch(FEED_BACKFILL)?;
                }
                c.execute_batch("COMMIT")?;
                Ok(now)
            };
            let now = migrate().map_err(|e| {
                let _ = c.execute_batch("ROLLBACK");
                io(format!(
                    "creating or upgrading the schema (version {version}): {e}"
                ))
            })?;
            if now > SCHEMA_VERSION {
                return Err(io(format!(
                    "the database has schema version {now}; this nanovm knows {SCHEMA_VERSION}"
                )));
            }
        }
        SCHEMA_VERSION => {}
        v => {
            return Err(io(format!(
                "the database has schema version {v}; this nanovm knows {SCHEMA_VERSION}"
            )));
        }
    }
    erasure_index(&c)?;
    Ok(c)
}

/// The erasure index: which runs hold which secret inputs (maintained by every append that
/// stores a `run_started`) and which runs are tied to which data subject. Added to any
/// database opened for writing that lacks it (no schema version of its own: it is additive),
/// filled from the stored `run_started` entries in the same transaction.
const ERASURE_INDEX: &str = "
CREATE TABLE nanovm_secret_refs (
    vault_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (vault_id, run_id)
) WITHOUT ROWID;
CREATE TABLE nanovm_subjects (
    subject TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (subject, run_id)
) WITHOUT ROWID;
";

fn erasure_index(c: &Connection) -> Result<(), JournalError> {
    let build = || -> rusqlite::Result<()> {
        c.execute_batch("BEGIN IMMEDIATE")?;
        let has: i64 = c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'nanovm_secret_refs'",
            [],
            |r| r.get(0),
        )?;
        let runs: i64 = c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'nanovm_entries'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            c.execute_batch(ERASURE_INDEX)?;
        }
        // A start's link looks a run's subjects up by run id.
        c.execute_batch(
            "CREATE INDEX IF NOT EXISTS nanovm_subjects_by_run ON nanovm_subjects (run_id)",
        )?;
        // Filled from the stored runs when created (a vault-only database has none).
        if has == 0 && runs > 0 {
            let mut st = c.prepare(
                "SELECT r.run_id, e.line FROM nanovm_entries e JOIN nanovm_runs r ON e.run = r.ord \
                 WHERE e.seq = 0",
            )?;
            let firsts = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut ins = c.prepare(
                "INSERT OR IGNORE INTO nanovm_secret_refs (vault_id, run_id) VALUES (?1, ?2)",
            )?;
            for (run_id, line) in firsts {
                // A line that does not parse is damage `load` reports; it indexes nothing.
                if let Ok(entry) = serde_json::from_str::<crate::trace::Entry>(&line) {
                    for v in crate::trace::secret_inputs(&entry.event) {
                        ins.execute(rusqlite::params![v.to_hex(), run_id])?;
                    }
                }
            }
        }
        c.execute_batch("COMMIT")
    };
    build().map_err(|e| {
        let _ = c.execute_batch("ROLLBACK");
        io(format!("creating the erasure index: {e}"))
    })
}

impl Db {
    pub(crate) async fn start(
        path: Option<PathBuf>,
        options: SqliteOptions,
    ) -> Result<Db, JournalError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        let thread_options = options.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let thread_commits = commits.clone();
        std::thread::Builder::new()
            .name("nanovm-sqlite-writer".into())
            .spawn(move || {
                let conn = match writer_connection(thread_path.as_deref(), &thread_options) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                writer_loop(&conn, &rx, thread_options.max_batch.max(1), &thread_commits);
            })
            .map_err(|e| io(format!("cannot start the writer thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| io("the writer thread stopped while opening"))??;
        let readers = path.clone().map(|p| {
            Arc::new(Readers {
                path: p,
                busy_timeout: options.busy_timeout,
                idle: Mutex::new(Vec::new()),
            })
        });
        Ok(Db {
            path,
            jobs: tx,
            readers,
            commits,
        })
    }

    /// Transactions committed by the writer thread so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> Result<(), JournalError> {
        self.jobs
            .send(job)
            .map_err(|_| io("the writer thread has stopped"))
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Write(Box::new(Pending {
            work: Some(Box::new(f)),
            out: None,
            reply,
        })))?;
        rx.await
            .map_err(|_| io("the writer thread stopped before committing"))?
    }

    /// Runs `f` on the writer's connection, outside a transaction.
    pub(crate) async fn on_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Other(Box::new(move |c| {
            let _ = reply.send(f(c));
        })))?;
        rx.await.map_err(|_| io("the writer thread has stopped"))?
    }

    /// Runs `f` on a read connection on a blocking thread (a file database), or on the
    /// writer's connection (in memory, or outside a tokio runtime).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        match (&self.readers, tokio::runtime::Handle::try_current()) {
            (Some(readers), Ok(handle)) => {
                let readers = readers.clone();
                handle
                    .spawn_blocking(move || readers.with(f))
                    .await
                    .map_err(|e| io(format!("a read task failed: {e}")))?
            }
            _ => self.on_writer(f).await,
        }
    }
}

fn writer_loop(conn: &Connection, rx: &mpsc::Receiver<Job>, max_batch: usize, commits: &AtomicU64) {
    let mut writes: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max_batch);
    let mut others: Vec<Other> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(w) => writes.push(w),
                Job::Other(o) => others.push(o),
            }
            if writes.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_batch(conn, &mut writes, commits);
        }
        for o in others.drain(..) {
            o(conn);
        }
    }
}

/// Runs `writes` in one transaction, each in its own savepoint when there are several, and
/// tells each job the outcome after the commit (counted in `commits` before anyone hears).
fn commit_batch(c: &Connection, writes: &mut Vec<Box<dyn WriteJob>>, commits: &AtomicU64) {
    let outcome = (|| -> Result<(), JournalError> {
        c.execute_batch("BEGIN IMMEDIATE").map_err(io)?;
        let mut any = false;
        let single = writes.len() == 1;
        let ran = (|| -> Result<(), JournalError> {
            for w in writes.iter_mut() {
                if single {
                    any = w.run(c);
                    continue;
                }
                c.execute_batch("SAVEPOINT job").map_err(io)?;
                if w.run(c) {
                    any = true;
                    c.execute_batch("RELEASE job").map_err(io)?;
                } else {
                    c.execute_batch("ROLLBACK TO job; RELEASE job")
                        .map_err(io)?;
                }
            }
            Ok(())
        })();
        let end = match ran {
            Ok(()) if any => {
                let done = c.execute_batch("COMMIT").map_err(io);
                if done.is_ok() {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                done
            }
            Ok(()) => c.execute_batch("ROLLBACK").map_err(io),
            Err(e) => Err(e),
        };
        if end.is_err() && !c.is_autocommit() {
            let _ = c.execute_batch("ROLLBACK");
        }
        end
    })();
    for w in writes.drain(..) {
        w.finish(outcome.clone());
    }
}
