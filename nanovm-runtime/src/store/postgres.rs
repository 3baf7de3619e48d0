//! [`PostgresStore`]: the shared store, for many workers on many machines.

use std::fmt;
use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::append::{Batch, Tip, decode_rows, encode_rows, to_digest, to_status, to_u64};
use super::{
    FeedItem, FeedPos, Fence, JournalError, JournalStore, Lease, LogLeaf, Reference, RunQuery,
    RunRecord,
};
use crate::db::postgres::{Pg, PostgresOptions, pg, pool_err};
use crate::db::{to_i64, wall_ms};
use crate::program::BoxFuture;
use crate::trace::{Entry, RunStatus};
use crate::value::Digest;
use crate::vault::PostgresVault;
use crate::view::RunView;

/// A [`JournalStore`] in a PostgreSQL database, shared by any number of workers. Cheap to
/// clone; clones share the connection pool. [`PostgresStore::vault`] gives a [`PostgresVault`]
/// in the same database.
///
/// One PostgreSQL database (optionally one schema of it) holds every run. Workers
/// [`claim`](JournalStore::claim) runs with `SELECT ... FOR UPDATE SKIP LOCKED` in a single
/// `UPDATE` statement, so concurrent claimers never get the same run and never wait for each
/// other; every claim increments the run's epoch. An append locks its run's row
/// (`SELECT ... FOR UPDATE`), checks fence, sequence and chain against it, inserts the entries
/// and updates the record, in one transaction: an append acknowledged by the store is a
/// committed transaction (durable as the server's `synchronous_commit` makes commits, `on` by
/// default: flushed to the server's WAL). Connections come from a `deadpool-postgres` pool;
/// everything is async, nothing blocks.
///
/// Schema (created on connect if missing, under an advisory lock, in the configured schema):
///
/// ```sql
/// CREATE TABLE nanovm_runs (
///     ord BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- creation order
///     run_id TEXT NOT NULL UNIQUE,
///     program TEXT NOT NULL,
///     program_hash BYTEA NOT NULL,
///     status TEXT NOT NULL,
///     entries BIGINT NOT NULL,
///     last_hash BYTEA NOT NULL,
///     end_step TEXT, message TEXT, waiting_for TEXT, deadline_ms BIGINT,
///     epoch BIGINT NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_ms BIGINT,
///     created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
/// CREATE INDEX nanovm_runs_claim ON nanovm_runs (program, status, ord);
/// CREATE TABLE nanovm_entries (
///     run BIGINT NOT NULL REFERENCES nanovm_runs (ord),
///     seq BIGINT NOT NULL,
///     hash BYTEA NOT NULL,
///     line TEXT NOT NULL,                                     -- trace::entry_line
///     PRIMARY KEY (run, seq));
/// CREATE TABLE nanovm_vault (
///     id TEXT PRIMARY KEY, salt BYTEA, value TEXT,            -- salt, value NULL once erased
///     created_ms BIGINT NOT NULL, erased_ms BIGINT);
/// CREATE TABLE nanovm_feed (                                -- the feed (JournalStore::feed)
///     pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
///     tx xid8 NOT NULL DEFAULT pg_current_xact_id(),          -- the writing transaction
///     run BIGINT NOT NULL, seq BIGINT NOT NULL);
/// CREATE INDEX nanovm_feed_order ON nanovm_feed (tx, pos);
/// ```
///
/// The feed needs PostgreSQL 13 or later (`xid8`).
///
/// Connections are plain TCP or Unix sockets (`NoTls`); put a TLS-terminating proxy or a
/// private network between workers and a remote server.
#[derive(Clone)]
pub struct PostgresStore {
    pg: Arc<Pg>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.pg.schema)
            .finish_non_exhaustive()
    }
}

const RECORD_COLUMNS: &str = "run_id, program, program_hash, status, entries, end_step, message, \
     waiting_for, deadline_ms, epoch, lease_owner, lease_expires_ms, created_ms, updated_ms";

fn record(row: &tokio_postgres::Row) -> Result<RunRecord, JournalError> {
    let run_id: String = row.try_get(0).map_err(pg)?;
    let id = run_id.as_str();
    let hash: Vec<u8> = row.try_get(2).map_err(pg)?;
    let status: String = row.try_get(3).map_err(pg)?;
    let opt_u64 = |i: usize, what: &str| -> Result<Option<u64>, JournalError> {
        let v: Option<i64> = row.try_get(i).map_err(pg)?;
        v.map(|v| to_u64(id, what, v)).transpose()
    };
    let u64_at = |i: usize, what: &str| -> Result<u64, JournalError> {
        to_u64(id, what, row.try_get(i).map_err(pg)?)
    };
    Ok(RunRecord {
        program: row.try_get(1).map_err(pg)?,
        program_hash: to_digest(id, "program_hash", &hash)?,
        status: to_status(id, &status)?,
        entries: u64_at(4, "entries")?,
        end_step: row.try_get(5).map_err(pg)?,
        message: row.try_get(6).map_err(pg)?,
        waiting_for: row.try_get(7).map_err(pg)?,
        deadline_ms: opt_u64(8, "deadline_ms")?,
        epoch: u64_at(9, "epoch")?,
        lease_owner: row.try_get(10).map_err(pg)?,
        lease_expires_ms: opt_u64(11, "lease_expires_ms")?,
        created_ms: u64_at(12, "created_ms")?,
        updated_ms: u64_at(13, "updated_ms")?,
        run_id,
    })
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), creating the tables in
    /// schema `public` if they are missing.
    pub async fn connect(url: &str) -> Result<PostgresStore, JournalError> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// [`PostgresStore::connect`] with options (another schema, the pool size).
    pub async fn connect_with(
        url: &str,
        options: PostgresOptions,
    ) -> Result<PostgresStore, JournalError> {
        Ok(PostgresStore {
            pg: Arc::new(Pg::connect(url, &options).await?),
        })
    }

    /// A vault in the same database (its own table), sharing this store's pool.
    pub fn vault(&self) -> PostgresVault {
        PostgresVault::on(self.pg.clone())
    }

    /// The schema the tables are in.
    pub fn schema(&self) -> &str {
        &self.pg.schema
    }

    /// Appends a batch. With `owner` (`start_run`: a worker and its lease's expiry), the run
    /// must not exist yet, and it is created leased to that worker at epoch 1. With `release`
    /// (`append_release`), the batch is fenced by that lease, which must still be held, and is
    /// given back in the same transaction.
    async fn append_now(
        &self,
        batch: Batch,
        rows: Vec<super::append::Row>,
        fence: Option<Fence>,
        owner: Option<(&str, u64)>,
        release: Option<&Lease>,
    ) -> Result<(), JournalError> {
        let s = &self.pg.schema;
        let run_id = batch.run_id.as_str();
        let mut client = self.pg.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        let select = tx
            .prepare_cached(&format!(
                "SELECT ord, entries, last_hash, epoch, status, end_step, message, waiting_for, \
                 deadline_ms, lease_owner FROM {s}.nanovm_runs WHERE run_id = $1 FOR UPDATE"
            ))
            .await
            .map_err(pg)?;
        let found = tx.query_opt(&select, &[&run_id]).await.map_err(pg)?;
        let stored = match &found {
            Some(row) => {
                let hash: Vec<u8> = row.try_get(2).map_err(pg)?;
                let status: String = row.try_get(4).map_err(pg)?;
                let deadline: Option<i64> = row.try_get(8).map_err(pg)?;
                Some((
                    row.try_get::<_, i64>(0).map_err(pg)?,
                    Tip {
                        at_rest: status != RunStatus::Running.as_str(),
                        entries: to_u64(run_id, "entries", row.try_get(1).map_err(pg)?)?,
                        last_hash: to_digest(run_id, "last_hash", &hash)?,
                        epoch: to_u64(run_id, "epoch", row.try_get(3).map_err(pg)?)?,
                    },
                    RunView::from_record(
                        to_status(run_id, &status)?,
                        row.try_get(5).map_err(pg)?,
                        row.try_get(6).map_err(pg)?,
                        row.try_get(7).map_err(pg)?,
                        deadline
                            .map(|d| to_u64(run_id, "deadline_ms", d))
                            .transpose()?,
                    ),
                ))
            }
            None => None,
        };
        if let Some(lease) = release {
            let (epoch, holder) = match &found {
                Some(row) => (
                    to_u64(run_id, "epoch", row.try_get(3).map_err(pg)?)?,
                    row.try_get::<_, Option<String>>(9).map_err(pg)?,
                ),
                None => (0, None),
            };
            if lease.run_id != run_id
                || epoch != lease.epoch
                || holder.as_deref() != Some(lease.worker.as_str())
            {
                return Err(JournalError::Fenced {
                    run_id: run_id.to_string(),
                    held: lease.epoch,
                    current: epoch,
                });
            }
        }
        match owner {
            Some(_) => batch.check_start(stored.as_ref().map(|(_, t, _)| t))?,
            None => batch.check(stored.as_ref().map(|(_, t, _)| t), fence)?,
        }
        if !batch.secrets.is_empty() {
            let insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {s}.nanovm_secret_refs (vault_id, run_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING"
                ))
                .await
                .map_err(pg)?;
            for v in &batch.secrets {
                tx.execute(&insert, &[&v.to_hex(), &run_id])
                    .await
                    .map_err(pg)?;
            }
        }
        let mut progress = stored
            .as_ref()
            .map_or_else(RunView::new, |(_, _, p)| p.clone());
        for e in &batch.moves {
            progress.apply_status(e);
        }
        let (status, end_step, message, waiting_for, deadline_ms) = progress.into_record();
        let now = to_i64(wall_ms());
        let deadline = deadline_ms.map(to_i64);
        let last_hash = batch.last_hash.0.to_vec();
        let ord = match stored {
            Some((ord, _, _)) => {
                let update = tx
                    .prepare_cached(&format!(
                        "UPDATE {s}.nanovm_runs SET entries = entries + $1, last_hash = $2, \
                         status = $3, end_step = $4, message = $5, waiting_for = $6, \
                         deadline_ms = $7, updated_ms = $8, \
                         program_hash = COALESCE($10, program_hash) WHERE ord = $9"
                    ))
                    .await
                    .map_err(pg)?;
                let pin = batch.pin.as_ref().map(|d| d.0.to_vec());
                tx.execute(
                    &update,
                    &[
                        &to_i64(batch.len),
                        &last_hash,
                        &status.as_str(),
                        &end_step,
                        &message,
                        &waiting_for,
                        &deadline,
                        &now,
                        &ord,
                        &pin,
                    ],
                )
                .await
                .map_err(pg)?;
                ord
            }
            None => {
                // `check` made sure the first entry is this run's `run_started`.
                let (program, hash) = batch
                    .started
                    .clone()
                    .unwrap_or_else(|| (String::new(), Digest::ZERO));
                let insert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {s}.nanovm_runs (run_id, program, program_hash, status, \
                         entries, last_hash, end_step, message, waiting_for, deadline_ms, \
                         created_ms, updated_ms, epoch, lease_owner, lease_expires_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, \
                         $14) \
                         ON CONFLICT (run_id) DO NOTHING RETURNING ord"
                    ))
                    .await
                    .map_err(pg)?;
                let hash = hash.0.to_vec();
                let epoch: i64 = owner.map_or(0, |_| 1);
                let lease_owner = owner.map(|(w, _)| w);
                let lease_expires = owner.map(|(_, e)| to_i64(e));
                let row = tx
                    .query_opt(
                        &insert,
                        &[
                            &run_id,
                            &program,
                            &hash,
                            &status.as_str(),
                            &to_i64(batch.len),
                            &last_hash,
                            &end_step,
                            &message,
                            &waiting_for,
                            &deadline,
                            &now,
                            &epoch,
                            &lease_owner,
                            &lease_expires,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                match row {
                    Some(row) => row.try_get::<_, i64>(0).map_err(pg)?,
                    None => {
                        // Another writer created the run after our SELECT: we lost the race.
                        drop(tx);
                        let n: i64 = client
                            .query_one(
                                &format!("SELECT entries FROM {s}.nanovm_runs WHERE run_id = $1"),
                                &[&run_id],
                            )
                            .await
                            .map_err(pg)?
                            .try_get(0)
                            .map_err(pg)?;
                        return Err(JournalError::Conflict {
                            run_id: run_id.to_string(),
                            expected: to_u64(run_id, "entries", n)?,
                            found: batch.first_seq,
                        });
                    }
                }
            }
        };
        let insert_entries = tx
            .prepare_cached(&format!(
                "INSERT INTO {s}.nanovm_entries (run, seq, hash, line) \
                 SELECT $1, * FROM UNNEST($2::int8[], $3::bytea[], $4::text[])"
            ))
            .await
            .map_err(pg)?;
        let seqs: Vec<i64> = rows.iter().map(|r| to_i64(r.seq)).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| &r.hash[..]).collect();
        let lines: Vec<&str> = rows.iter().map(|r| r.line.as_str()).collect();
        let params: [&(dyn ToSql + Sync); 4] = [&ord, &seqs, &hashes, &lines];
        tx.execute(&insert_entries, &params).await.map_err(pg)?;
        // The feed: numbered in this transaction, ordered by its id (see `feed`).
        let insert_feed = tx
            .prepare_cached(&format!(
                "INSERT INTO {s}.nanovm_feed (run, seq) \
                 SELECT $1, u.seq FROM UNNEST($2::int8[]) WITH ORDINALITY AS u(seq, i) \
                 ORDER BY u.i"
            ))
            .await
            .map_err(pg)?;
        tx.execute(&insert_feed, &[&ord, &seqs]).await.map_err(pg)?;
        if release.is_some() {
            let clear = tx
                .prepare_cached(&format!(
                    "UPDATE {s}.nanovm_runs SET lease_owner = NULL, lease_expires_ms = NULL \
                     WHERE ord = $1"
                ))
                .await
                .map_err(pg)?;
            tx.execute(&clear, &[&ord]).await.map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn load_now(&self, run_id: &str) -> Result<Option<Vec<Entry>>, JournalError> {
        let s = &self.pg.schema;
        let client = self.pg.pool.get().await.map_err(pool_err)?;
        // One statement, one snapshot: the count and the entries agree.
        let st = client
            .prepare_cached(&format!(
                "SELECT r.entries, r.last_hash, e.seq, e.hash, e.line FROM {s}.nanovm_runs r \
                 LEFT JOIN {s}.nanovm_entries e ON e.run = r.ord \
                 WHERE r.run_id = $1 ORDER BY e.seq"
            ))
            .await
            .map_err(pg)?;
        let rows = client.query(&st, &[&run_id]).await.map_err(pg)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let count = to_u64(run_id, "entries", first.try_get(0).map_err(pg)?)?;
        let last_hash: Vec<u8> = first.try_get(1).map_err(pg)?;
        let last_hash = to_digest(run_id, "last_hash", &last_hash)?;
        let mut raw = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: Option<i64> = row.try_get(2).map_err(pg)?;
            let Some(seq) = seq else {
                continue; // a run without entries: the LEFT JOIN's empty side
            };
            let hash: Vec<u8> = row.try_get(3).map_err(pg)?;
            let line: String = row.try_get(4).map_err(pg)?;
            raw.push((to_u64(run_id, "seq", seq)?, hash, line));
        }
        decode_rows(run_id, count, last_hash, raw).map(Some)
    }

    /// The current epoch of a run (0 if unknown), for a `Fenced` error.
    /// Why an update under `lease` changed no row: the run's lease moved on (or the lookup
    /// of its current epoch failed).
    async fn fenced(&self, lease: &Lease) -> JournalError {
        match self.current_epoch(&lease.run_id).await {
            Ok(current) => JournalError::Fenced {
                run_id: lease.run_id.clone(),
                held: lease.epoch,
                current,
            },
            Err(e) => e,
        }
    }

    async fn current_epoch(&self, run_id: &str) -> Result<u64, JournalError> {
        let s = &self.pg.schema;
        let client = self.pg.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &format!("SELECT epoch FROM {s}.nanovm_runs WHERE run_id = $1"),
                &[&run_id],
            )
            .await
            .map_err(pg)?;
        match row {
            Some(r) => to_u64(run_id, "epoch", r.try_get(0).map_err(pg)?),
            None => Ok(0),
        }
    }
}

/// Runs a lease-taking `UPDATE .. RETURNING` whose parameters are `$1` the run (or program)
/// it selects by, `$2` the worker, `$3` now, `$4` the new expiry and `$5` the wall clock; the
/// returned row when it took a lease.
async fn take_lease(
    client: &tokio_postgres::Client,
    st: &tokio_postgres::Statement,
    key: &str,
    worker: &str,
    now_ms: u64,
    expires_ms: u64,
) -> Result<Option<tokio_postgres::Row>, JournalError> {
    client
        .query_opt(
            st,
            &[
                &key,
                &worker,
                &to_i64(now_ms),
                &to_i64(expires_ms),
                &to_i64(wall_ms()),
            ],
        )
        .await
        .map_err(pg)
}

impl JournalStore for PostgresStore {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            let batch = Batch::new(run_id, entries);
            let rows = encode_rows(entries);
            self.append_now(batch, rows, fence, None, None).await
        })
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        Box::pin(self.load_now(run_id))
    }

    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let mut client = self.pg.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            // Appends to the log are serialized: a leaf's index is the number before it.
            tx.execute("SELECT pg_advisory_xact_lock(7243016154300458322)", &[])
                .await
                .map_err(pg)?;
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO {s}.nanovm_log (idx, run_id, leaf) \
                         VALUES ((SELECT COALESCE(MAX(idx) + 1, 0) FROM {s}.nanovm_log), $1, $2) \
                         RETURNING idx"
                    ),
                    &[&run_id, &data],
                )
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            to_u64(run_id, "idx", row.get(0))
        })
    }

    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT idx, run_id, leaf FROM {s}.nanovm_log WHERE idx >= $1 ORDER BY idx"
                    ),
                    &[&to_i64(from)],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| {
                    let run_id: String = r.get(1);
                    Ok(LogLeaf {
                        index: to_u64(&run_id, "idx", r.get(0))?,
                        data: r.get(2),
                        run_id,
                    })
                })
                .collect()
        })
    }

    fn feed<'a>(
        &'a self,
        after: Option<FeedPos>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FeedItem>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            // Ordered by (transaction id, number), and only rows of transactions older than
            // the oldest one still open: every transaction that could still commit rows has a
            // larger id than any row returned, so none can later appear before them.
            let st = client
                .prepare_cached(&format!(
                    "SELECT (f.tx::text)::int8, f.pos, r.run_id, f.seq FROM {s}.nanovm_feed f \
                     JOIN {s}.nanovm_runs r ON r.ord = f.run \
                     WHERE (f.tx, f.pos) > (($1::int8)::text::xid8, $2::int8) \
                     AND f.tx < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY f.tx, f.pos LIMIT $3"
                ))
                .await
                .map_err(pg)?;
            let after = after.unwrap_or_default();
            let rows = client
                .query(
                    &st,
                    &[
                        &to_i64(after.major),
                        &to_i64(after.minor),
                        &to_i64(u64::try_from(limit).unwrap_or(u64::MAX)),
                    ],
                )
                .await
                .map_err(pg)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let run_id: String = row.try_get(2).map_err(pg)?;
                out.push(FeedItem {
                    pos: FeedPos {
                        major: to_u64(&run_id, "tx", row.try_get(0).map_err(pg)?)?,
                        minor: to_u64(&run_id, "pos", row.try_get(1).map_err(pg)?)?,
                    },
                    seq: to_u64(&run_id, "seq", row.try_get(3).map_err(pg)?)?,
                    run_id,
                });
            }
            Ok(out)
        })
    }

    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            client
                .execute(
                    &format!(
                        "INSERT INTO {s}.nanovm_heads (size, head) VALUES ($1, $2) \
                         ON CONFLICT (size) DO UPDATE SET head = EXCLUDED.head"
                    ),
                    &[&to_i64(size), &head],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn link_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            client
                .execute(
                    &format!(
                        "INSERT INTO {s}.nanovm_subjects (subject, run_id) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&subject, &run_id],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn link_sole_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let mut client = self.pg.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            // Racing starts of one run id are serialized on a lock of their own.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('nanovm_subjects:' || $1, 0))",
                &[&run_id],
            )
            .await
            .map_err(pg)?;
            let links: Vec<String> = tx
                .query(
                    &format!("SELECT subject FROM {s}.nanovm_subjects WHERE run_id = $1"),
                    &[&run_id],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(pg)?;
            if links.iter().any(|l| l == subject) {
                return Ok(None);
            }
            if let Some(other) = links.into_iter().next() {
                return Ok(Some(other));
            }
            tx.execute(
                &format!(
                    "INSERT INTO {s}.nanovm_subjects (subject, run_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING"
                ),
                &[&subject, &run_id],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(None)
        })
    }

    fn referencing<'a>(
        &'a self,
        what: &'a Reference,
    ) -> BoxFuture<'a, Result<Vec<String>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let (table, column, key) = match what {
                Reference::Subject(subject) => ("nanovm_subjects", "subject", subject.clone()),
                Reference::Secret(v) => ("nanovm_secret_refs", "vault_id", v.to_hex()),
            };
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT r.run_id FROM {s}.{table} x JOIN {s}.nanovm_runs r \
                         ON r.run_id = x.run_id WHERE x.{column} = $1 ORDER BY r.ord"
                    ),
                    &[&key],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0).map_err(pg))
                .collect()
        })
    }

    fn delete_run<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let id = lease.run_id.as_str();
            let mut client = self.pg.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT ord, epoch, lease_owner FROM {s}.nanovm_runs WHERE run_id = $1 \
                         FOR UPDATE"
                    ),
                    &[&id],
                )
                .await
                .map_err(pg)?;
            let (ord, epoch, owner): (i64, i64, Option<String>) = match &row {
                Some(r) => (
                    r.try_get(0).map_err(pg)?,
                    r.try_get(1).map_err(pg)?,
                    r.try_get(2).map_err(pg)?,
                ),
                None => (0, 0, None),
            };
            let current = to_u64(id, "epoch", epoch)?;
            if row.is_none()
                || current != lease.epoch
                || owner.as_deref() != Some(lease.worker.as_str())
            {
                return Err(JournalError::Fenced {
                    run_id: id.to_string(),
                    held: lease.epoch,
                    current,
                });
            }
            // The feed's rows of the run go with its entries: a feed names only what the store
            // still holds.
            for table in ["nanovm_feed", "nanovm_entries"] {
                tx.execute(&format!("DELETE FROM {s}.{table} WHERE run = $1"), &[&ord])
                    .await
                    .map_err(pg)?;
            }
            for table in ["nanovm_secret_refs", "nanovm_subjects"] {
                tx.execute(
                    &format!("DELETE FROM {s}.{table} WHERE run_id = $1"),
                    &[&id],
                )
                .await
                .map_err(pg)?;
            }
            tx.execute(
                &format!("DELETE FROM {s}.nanovm_runs WHERE ord = $1"),
                &[&ord],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    fn unlink_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            client
                .execute(
                    &format!("DELETE FROM {s}.nanovm_subjects WHERE subject = $1"),
                    &[&subject],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let row = client
                .query_opt(
                    &format!("SELECT head FROM {s}.nanovm_heads ORDER BY size DESC LIMIT 1"),
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let st = client
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM {s}.nanovm_runs WHERE run_id = $1"
                ))
                .await
                .map_err(pg)?;
            match client.query_opt(&st, &[&run_id]).await.map_err(pg)? {
                Some(row) => record(&row).map(Some),
                None => Ok(None),
            }
        })
    }

    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let st = client
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM {s}.nanovm_runs \
                     WHERE ($1::text IS NULL OR program = $1) \
                     AND ($2::text IS NULL OR status = $2) \
                     ORDER BY ord LIMIT $3"
                ))
                .await
                .map_err(pg)?;
            let limit: Option<i64> = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let status = query.status.map(RunStatus::as_str);
            let rows = client
                .query(&st, &[&query.program, &status, &limit])
                .await
                .map_err(pg)?;
            rows.iter().map(record).collect()
        })
    }

    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let st = client
                .prepare_cached(&format!(
                    "UPDATE {s}.nanovm_runs r SET epoch = r.epoch + 1, lease_owner = $2, \
                     lease_expires_ms = $4, updated_ms = $5 \
                     FROM (SELECT ord FROM {s}.nanovm_runs \
                           WHERE program = $1 AND entries > 0 \
                           AND (status = 'running' OR (status = 'suspended' \
                                AND deadline_ms IS NOT NULL AND deadline_ms <= $3)) \
                           AND (lease_expires_ms IS NULL OR lease_expires_ms <= $3) \
                           ORDER BY ord LIMIT 1 FOR UPDATE SKIP LOCKED) c \
                     WHERE r.ord = c.ord RETURNING r.run_id, r.epoch"
                ))
                .await
                .map_err(pg)?;
            let expires_ms = now_ms.saturating_add(lease_ms);
            let Some(row) = take_lease(&client, &st, program, worker, now_ms, expires_ms).await?
            else {
                return Ok(None);
            };
            let run_id: String = row.try_get(0).map_err(pg)?;
            let epoch = to_u64(&run_id, "epoch", row.try_get(1).map_err(pg)?)?;
            Ok(Some(Lease {
                run_id,
                epoch,
                worker: worker.to_string(),
                expires_ms,
            }))
        })
    }

    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            let st = client
                .prepare_cached(&format!(
                    "UPDATE {s}.nanovm_runs r SET epoch = r.epoch + 1, lease_owner = $2, \
                     lease_expires_ms = $4, updated_ms = $5 \
                     FROM (SELECT ord FROM {s}.nanovm_runs \
                           WHERE program = $1 AND entries > 0 AND program_hash = ANY($6) \
                           AND (status = 'running' OR (status = 'suspended' \
                                AND deadline_ms IS NOT NULL AND deadline_ms <= $3)) \
                           AND (lease_expires_ms IS NULL OR lease_expires_ms <= $3) \
                           ORDER BY ord LIMIT 1 FOR UPDATE SKIP LOCKED) c \
                     WHERE r.ord = c.ord RETURNING r.run_id, r.epoch"
                ))
                .await
                .map_err(pg)?;
            let expires_ms = now_ms.saturating_add(lease_ms);
            let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
            let row = client
                .query_opt(
                    &st,
                    &[
                        &program,
                        &worker,
                        &to_i64(now_ms),
                        &to_i64(expires_ms),
                        &to_i64(wall_ms()),
                        &hashes,
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let run_id: String = row.try_get(0).map_err(pg)?;
            let epoch = to_u64(&run_id, "epoch", row.try_get(1).map_err(pg)?)?;
            Ok(Some(Lease {
                run_id,
                epoch,
                worker: worker.to_string(),
                expires_ms,
            }))
        })
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let expires_ms = now_ms.saturating_add(lease_ms);
            let n = {
                let client = self.pg.pool.get().await.map_err(pool_err)?;
                let st = client
                    .prepare_cached(&format!(
                        "UPDATE {s}.nanovm_runs SET lease_expires_ms = $1, updated_ms = $2 \
                         WHERE run_id = $3 AND epoch = $4 AND lease_owner = $5"
                    ))
                    .await
                    .map_err(pg)?;
                client
                    .execute(
                        &st,
                        &[
                            &to_i64(expires_ms),
                            &to_i64(wall_ms()),
                            &lease.run_id,
                            &to_i64(lease.epoch),
                            &lease.worker,
                        ],
                    )
                    .await
                    .map_err(pg)?
            };
            if n == 0 {
                return Err(self.fenced(lease).await);
            }
            Ok(Lease {
                expires_ms,
                ..lease.clone()
            })
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let n = {
                let client = self.pg.pool.get().await.map_err(pool_err)?;
                let st = client
                    .prepare_cached(&format!(
                        "UPDATE {s}.nanovm_runs SET lease_owner = NULL, lease_expires_ms = NULL, \
                         updated_ms = $1 WHERE run_id = $2 AND epoch = $3 AND lease_owner = $4"
                    ))
                    .await
                    .map_err(pg)?;
                client
                    .execute(
                        &st,
                        &[
                            &to_i64(wall_ms()),
                            &lease.run_id,
                            &to_i64(lease.epoch),
                            &lease.worker,
                        ],
                    )
                    .await
                    .map_err(pg)?
            };
            if n == 0 {
                return Err(self.fenced(lease).await);
            }
            Ok(())
        })
    }

    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self.pg.pool.get().await.map_err(pool_err)?;
            // One statement: of concurrent claimers, the first locks the row and the others
            // re-check the lease condition against its committed update.
            let st = client
                .prepare_cached(&format!(
                    "UPDATE {s}.nanovm_runs SET epoch = epoch + 1, lease_owner = $2, \
                     lease_expires_ms = $4, updated_ms = $5 \
                     WHERE run_id = $1 AND (lease_expires_ms IS NULL OR lease_expires_ms <= $3) \
                     RETURNING epoch"
                ))
                .await
                .map_err(pg)?;
            let expires_ms = now_ms.saturating_add(lease_ms);
            let Some(row) = take_lease(&client, &st, run_id, worker, now_ms, expires_ms).await?
            else {
                return Ok(None);
            };
            Ok(Some(Lease {
                run_id: run_id.to_string(),
                epoch: to_u64(run_id, "epoch", row.try_get(0).map_err(pg)?)?,
                worker: worker.to_string(),
                expires_ms,
            }))
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
            let batch = Batch::new(run_id, entries);
            let rows = encode_rows(entries);
            let expires_ms = now_ms.saturating_add(lease_ms);
            self.append_now(batch, rows, None, Some((worker, expires_ms)), None)
                .await?;
            Ok(Lease {
                run_id: run_id.to_string(),
                epoch: 1,
                worker: worker.to_string(),
                expires_ms,
            })
        })
    }

    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            if entries.is_empty() {
                return self.release(lease).await;
            }
            let batch = Batch::new(run_id, entries);
            let rows = encode_rows(entries);
            self.append_now(batch, rows, Some(lease.fence()), None, Some(lease))
                .await
        })
    }
}
