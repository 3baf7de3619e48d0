//! The PostgreSQL database behind [`PostgresStore`](crate::store::PostgresStore) and
//! [`PostgresVault`](crate::vault::PostgresVault): the options, the connection pool and the
//! schema.

use std::fmt;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::JournalError;

/// Options of [`PostgresStore::connect_with`](crate::store::PostgresStore::connect_with).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The schema the tables live in (created if missing). Default `public`. Lowercase
    /// letters, digits and `_`, starting with a letter or `_`, at most 63 characters.
    pub schema: String,
    /// Connections in the pool. Default 16.
    pub pool_size: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "public".into(),
            pool_size: 16,
        }
    }
}

impl PostgresOptions {
    /// The defaults.
    pub fn new() -> Self {
        PostgresOptions::default()
    }

    /// Sets [`PostgresOptions::schema`].
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets [`PostgresOptions::pool_size`] (at least 1).
    #[must_use]
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }
}

/// A database error, as the stores report it.
pub(crate) fn io(e: impl fmt::Display) -> JournalError {
    JournalError::Io(format!("postgres: {e}"))
}

/// A driver error, with the server's message when there is one.
pub(crate) fn pg(e: tokio_postgres::Error) -> JournalError {
    match e.as_db_error() {
        Some(db) => io(format!("{} ({})", db.message(), db.code().code())),
        None => io(e),
    }
}

/// No connection from the pool.
pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> JournalError {
    io(format!("no connection: {e}"))
}

/// The shared state of a store and its vault.
pub(crate) struct Pg {
    pub(crate) pool: Pool,
    pub(crate) schema: String,
}

impl Pg {
    pub(crate) async fn connect(url: &str, options: &PostgresOptions) -> Result<Pg, JournalError> {
        let s = &options.schema;
        let valid = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(io(format!("`{s}` is not an accepted schema name")));
        }
        let config: tokio_postgres::Config = url.parse().map_err(pg)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .build()
            .map_err(io)?;
        let pg = Pg {
            pool,
            schema: s.clone(),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    async fn migrate(&self) -> Result<(), JournalError> {
        let s = &self.schema;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        // Concurrent first connects would race on CREATE ... IF NOT EXISTS.
        tx.execute("SELECT pg_advisory_xact_lock(7243016154300458321)", &[])
            .await
            .map_err(pg)?;
        // A database of an older nanovm has runs but no erasure index: it is filled below,
        // in this transaction, from the stored `run_started` entries (as SQLite does).
        let had_index: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{s}.nanovm_secret_refs")],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.nanovm_runs (
                ord BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                run_id TEXT NOT NULL UNIQUE,
                program TEXT NOT NULL,
                program_hash BYTEA NOT NULL,
                status TEXT NOT NULL,
                entries BIGINT NOT NULL,
                last_hash BYTEA NOT NULL,
                end_step TEXT,
                message TEXT,
                waiting_for TEXT,
                deadline_ms BIGINT,
                epoch BIGINT NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_expires_ms BIGINT,
                created_ms BIGINT NOT NULL,
                updated_ms BIGINT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS nanovm_runs_claim ON {s}.nanovm_runs (program, status, ord);
            CREATE TABLE IF NOT EXISTS {s}.nanovm_entries (
                run BIGINT NOT NULL REFERENCES {s}.nanovm_runs (ord),
                seq BIGINT NOT NULL,
                hash BYTEA NOT NULL,
                line TEXT NOT NULL,
                PRIMARY KEY (run, seq)
            );
            CREATE TABLE IF NOT EXISTS {s}.nanovm_vault (
                id TEXT PRIMARY KEY,
                salt BYTEA,
                value TEXT,
                created_ms BIGINT NOT NULL,
                erased_ms BIGINT
            );
            CREATE TABLE IF NOT EXISTS {s}.nanovm_reveals (
                n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                vault_id TEXT NOT NULL,
                commitment BYTEA NOT NULL,
                run_id TEXT NOT NULL,
                step TEXT NOT NULL,
                tool TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                key BYTEA NOT NULL,
                at_ms BIGINT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS nanovm_reveals_by_secret ON {s}.nanovm_reveals (vault_id);
            CREATE TABLE IF NOT EXISTS {s}.nanovm_log (
                idx BIGINT PRIMARY KEY,
                run_id TEXT NOT NULL,
                leaf BYTEA NOT NULL
            );
            CREATE INDEX IF NOT EXISTS nanovm_log_by_run ON {s}.nanovm_log (run_id, idx);
            CREATE TABLE IF NOT EXISTS {s}.nanovm_heads (
                size BIGINT PRIMARY KEY,
                head TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {s}.nanovm_secret_refs (
                vault_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                PRIMARY KEY (vault_id, run_id)
            );
            CREATE TABLE IF NOT EXISTS {s}.nanovm_subjects (
                subject TEXT NOT NULL,
                run_id TEXT NOT NULL,
                PRIMARY KEY (subject, run_id)
            );
            CREATE INDEX IF NOT EXISTS nanovm_subjects_by_run ON {s}.nanovm_subjects (run_id);
            CREATE TABLE IF NOT EXISTS {s}.nanovm_feed (
                pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
                run BIGINT NOT NULL,
                seq BIGINT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS nanovm_feed_order ON {s}.nanovm_feed (tx, pos);
            INSERT INTO {s}.nanovm_feed (run, seq) SELECT run, seq FROM {s}.nanovm_entries
                WHERE NOT EXISTS (SELECT 1 FROM {s}.nanovm_feed) ORDER BY run, seq;"
        ))
        .await
        .map_err(pg)?;
        if !had_index {
            let firsts = tx
                .query(
                    &format!(
                        "SELECT r.run_id, e.line FROM {s}.nanovm_entries e \
                         JOIN {s}.nanovm_runs r ON e.run = r.ord WHERE e.seq = 0"
                    ),
                    &[],
                )
                .await
                .map_err(pg)?;
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {s}.nanovm_secret_refs (vault_id, run_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING"
                ))
                .await
                .map_err(pg)?;
            for row in firsts {
                let run_id: String = row.try_get(0).map_err(pg)?;
                let line: String = row.try_get(1).map_err(pg)?;
                // A line that does not parse is damage `load` reports; it indexes nothing.
                if let Ok(entry) = serde_json::from_str::<crate::trace::Entry>(&line) {
                    for v in crate::trace::secret_inputs(&entry.event) {
                        tx.execute(&insert, &[&v.to_hex(), &run_id])
                            .await
                            .map_err(pg)?;
                    }
                }
            }
        }
        tx.commit().await.map_err(pg)
    }
}
