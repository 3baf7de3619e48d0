//! [`SqliteVault`]: secrets in a SQLite database, surviving restarts.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::{
    RevealRecord, Vault, VaultError, VaultRow, commitment, random_id_and_salt, refused,
    reveal_record, vault_err, vault_value,
};
use crate::db::sqlite::{Db, SqliteOptions, io};
use crate::db::{to_i64, wall_ms};
use crate::error::JournalError;
use crate::program::{BoxFuture, Reveal, SecretSource, ToolError};
use crate::value::{Digest, Json, VaultId};

/// A [`Vault`] in a SQLite database (table `nanovm_vault`), surviving restarts.
///
/// Salts and ids come from the operating system's random number generator. [`Vault::erase`]
/// sets value and salt to NULL and keeps the row as a tombstone; the writing connection has
/// `secure_delete` on (freed bytes are overwritten with zeros) and the WAL is checkpointed and
/// truncated right after, so the plaintext does not linger in the file.
#[derive(Clone)]
pub struct SqliteVault {
    db: Arc<Db>,
}

impl fmt::Debug for SqliteVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteVault")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl SqliteVault {
    /// The vault in `db` (a store's database, sharing its writer).
    pub(crate) fn on(db: Arc<Db>) -> SqliteVault {
        SqliteVault { db }
    }

    /// Opens (creating if needed) the database at `path` (the same file as a
    /// [`SqliteStore`](crate::store::SqliteStore) is fine).
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteVault, VaultError> {
        let db = Db::start(Some(path.as_ref().to_path_buf()), SqliteOptions::default())
            .await
            .map_err(vault_err)?;
        Ok(SqliteVault { db: Arc::new(db) })
    }

    /// The plaintext stored under `id`, if it matches `commitment` (see [`Vault::value`]).
    pub async fn value(&self, id: VaultId, commitment: Digest) -> Result<Json, VaultError> {
        let hex = id.to_hex();
        let found = self
            .db
            .read(move |c| stored_row(c, &hex))
            .await
            .map_err(vault_err)?;
        vault_value(id, commitment, found)
    }

    /// Checks the stored value against the reveal's commitment and, if it matches, records the
    /// reveal in the same transaction: the value is handed out only after that commits.
    async fn reveal_now(&self, reveal: Reveal) -> Result<Json, VaultError> {
        let r = reveal.clone();
        self.db
            .write(move |c| {
                let found = stored_row(c, &r.vault_id.to_hex())?;
                let value = match vault_value(r.vault_id, r.commitment, found) {
                    Ok(v) => v,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                c.prepare_cached(
                    "INSERT INTO nanovm_reveals \
                     (vault_id, commitment, run_id, step, tool, attempt, key, at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        r.vault_id.to_hex(),
                        &r.commitment.0[..],
                        r.run_id,
                        r.step,
                        r.tool,
                        i64::from(r.attempt),
                        &r.key.0[..],
                        to_i64(wall_ms())
                    ])
                })
                .map_err(io)?;
                Ok(Ok(value))
            })
            .await
            .map_err(vault_err)?
    }

    /// Every recorded reveal of `id`, oldest first (see [`Vault::reveals`]).
    pub async fn reveals(&self, id: VaultId) -> Result<Vec<RevealRecord>, VaultError> {
        let hex = id.to_hex();
        type RawRow = (String, Vec<u8>, String, String, String, i64, Vec<u8>, i64);
        let rows: Vec<RawRow> = self
            .db
            .read(move |c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT vault_id, commitment, run_id, step, tool, attempt, key, at_ms \
                         FROM nanovm_reveals WHERE vault_id = ?1 ORDER BY rowid",
                    )
                    .map_err(io)?;
                let rows = st
                    .query_map(params![hex], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    })
                    .map_err(io)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(io)
            })
            .await
            .map_err(vault_err)?;
        rows.into_iter()
            .map(|(v, c, run, step, tool, attempt, key, at)| {
                reveal_record(&v, &c, run, step, tool, attempt, &key, at)
            })
            .collect()
    }
}

/// The row `(salt, value, erased_ms)` of vault id `hex`, if any.
fn stored_row(c: &rusqlite::Connection, hex: &str) -> Result<Option<VaultRow>, JournalError> {
    c.prepare_cached("SELECT salt, value, erased_ms FROM nanovm_vault WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row(params![hex], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(io)
}

impl SecretSource for SqliteVault {
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>> {
        Box::pin(async move { self.reveal_now(reveal).await.map_err(refused) })
    }
}

impl Vault for SqliteVault {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        Box::pin(async move {
            let (id, salt) = random_id_and_salt()?;
            let c = commitment(&salt, &value);
            let text =
                serde_json::to_string(&value).map_err(|e| VaultError::Encode(e.to_string()))?;
            let hex = id.to_hex();
            self.db
                .write(move |c| {
                    c.prepare_cached(
                        "INSERT INTO nanovm_vault (id, salt, value, created_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut st| st.execute(params![hex, &salt[..], text, to_i64(wall_ms())]))
                    .map_err(io)
                })
                .await
                .map_err(vault_err)?;
            Ok((id, c))
        })
    }

    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>> {
        Box::pin(SqliteVault::value(self, id, commitment))
    }

    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>> {
        Box::pin(SqliteVault::reveals(self, id))
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move {
            let hex = id.to_hex();
            let n = self
                .db
                .write(move |c| {
                    c.prepare_cached(
                        "UPDATE nanovm_vault SET salt = NULL, value = NULL, \
                         erased_ms = COALESCE(erased_ms, ?1) WHERE id = ?2",
                    )
                    .and_then(|mut st| st.execute(params![to_i64(wall_ms()), hex]))
                    .map_err(io)
                })
                .await
                .map_err(vault_err)?;
            if n == 0 {
                return Err(VaultError::Unknown(id));
            }
            // Best effort: move the zeroed pages into the database file and truncate the WAL,
            // which still holds the old page images. Readers can make it a no-op for now; the
            // next automatic checkpoint overwrites the WAL then.
            if self.db.path.is_some() {
                let _ = self
                    .db
                    .on_writer(|c| {
                        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                            .map_err(io)
                    })
                    .await;
            }
            Ok(())
        })
    }
}
