//! [`SqliteVault`]: secrets in a SQLite database, surviving restarts.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::{Vault, VaultError, commitment, random_id_and_salt, vault_err, vault_value};
use crate::db::sqlite::{Db, SqliteOptions, io};
use crate::db::{to_i64, wall_ms};
use crate::program::{BoxFuture, SecretSource, ToolError};
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

    /// The plaintext stored under `id`.
    pub async fn reveal(&self, id: VaultId) -> Result<Json, VaultError> {
        let hex = id.to_hex();
        let found: Option<(Option<String>, Option<i64>)> = self
            .db
            .read(move |c| {
                c.prepare_cached("SELECT value, erased_ms FROM nanovm_vault WHERE id = ?1")
                    .and_then(|mut st| {
                        st.query_row(params![hex], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(io)
            })
            .await
            .map_err(vault_err)?;
        vault_value(id, found)
    }
}

impl SecretSource for SqliteVault {
    fn reveal(&self, id: VaultId) -> BoxFuture<'_, Result<Json, ToolError>> {
        Box::pin(async move {
            SqliteVault::reveal(self, id)
                .await
                .map_err(|e| ToolError::permanent(e.to_string()))
        })
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
