//! [`PostgresVault`]: secrets in a PostgreSQL database, shared by every worker.

use std::fmt;
use std::sync::Arc;

use super::{Vault, VaultError, commitment, random_id_and_salt, vault_err, vault_value};
use crate::db::postgres::{Pg, PostgresOptions, pg, pool_err};
use crate::db::{to_i64, wall_ms};
use crate::program::{BoxFuture, SecretSource, ToolError};
use crate::value::{Digest, Json, VaultId};

/// A [`Vault`] in a PostgreSQL database (table `nanovm_vault`), shared by every worker.
///
/// [`Vault::erase`] sets value and salt to NULL and keeps the row as a tombstone. PostgreSQL
/// keeps the old row version until the table is vacuumed (autovacuum does it eventually); run
/// `VACUUM nanovm_vault` after erasures when the plaintext must be gone from disk at once.
#[derive(Clone)]
pub struct PostgresVault {
    pg: Arc<Pg>,
}

impl fmt::Debug for PostgresVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresVault")
            .field("schema", &self.pg.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresVault {
    /// The vault in `pg` (a store's database, sharing its pool).
    pub(crate) fn on(pg: Arc<Pg>) -> PostgresVault {
        PostgresVault { pg }
    }

    /// Connects to `url`, creating the tables in schema `public` if they are missing.
    pub async fn connect(url: &str) -> Result<PostgresVault, VaultError> {
        PostgresVault::connect_with(url, PostgresOptions::default()).await
    }

    /// [`PostgresVault::connect`] with options.
    pub async fn connect_with(
        url: &str,
        options: PostgresOptions,
    ) -> Result<PostgresVault, VaultError> {
        Ok(PostgresVault {
            pg: Arc::new(Pg::connect(url, &options).await.map_err(vault_err)?),
        })
    }

    /// The plaintext stored under `id`.
    pub async fn reveal(&self, id: VaultId) -> Result<Json, VaultError> {
        let s = &self.pg.schema;
        let client = self
            .pg
            .pool
            .get()
            .await
            .map_err(|e| vault_err(pool_err(e)))?;
        let row = client
            .query_opt(
                &format!("SELECT value, erased_ms FROM {s}.nanovm_vault WHERE id = $1"),
                &[&id.to_hex()],
            )
            .await
            .map_err(|e| vault_err(pg(e)))?;
        let found = match row {
            Some(row) => Some((
                row.try_get(0).map_err(|e| vault_err(pg(e)))?,
                row.try_get(1).map_err(|e| vault_err(pg(e)))?,
            )),
            None => None,
        };
        vault_value(id, found)
    }
}

impl SecretSource for PostgresVault {
    fn reveal(&self, id: VaultId) -> BoxFuture<'_, Result<Json, ToolError>> {
        Box::pin(async move {
            PostgresVault::reveal(self, id)
                .await
                .map_err(|e| ToolError::permanent(e.to_string()))
        })
    }
}

impl Vault for PostgresVault {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        Box::pin(async move {
            let (id, salt) = random_id_and_salt()?;
            let c = commitment(&salt, &value);
            let text =
                serde_json::to_string(&value).map_err(|e| VaultError::Encode(e.to_string()))?;
            let s = &self.pg.schema;
            let client = self
                .pg
                .pool
                .get()
                .await
                .map_err(|e| vault_err(pool_err(e)))?;
            client
                .execute(
                    &format!(
                        "INSERT INTO {s}.nanovm_vault (id, salt, value, created_ms) \
                         VALUES ($1, $2, $3, $4)"
                    ),
                    &[&id.to_hex(), &&salt[..], &text, &to_i64(wall_ms())],
                )
                .await
                .map_err(|e| vault_err(pg(e)))?;
            Ok((id, c))
        })
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move {
            let s = &self.pg.schema;
            let client = self
                .pg
                .pool
                .get()
                .await
                .map_err(|e| vault_err(pool_err(e)))?;
            let n = client
                .execute(
                    &format!(
                        "UPDATE {s}.nanovm_vault SET salt = NULL, value = NULL, \
                         erased_ms = COALESCE(erased_ms, $1) WHERE id = $2"
                    ),
                    &[&to_i64(wall_ms()), &id.to_hex()],
                )
                .await
                .map_err(|e| vault_err(pg(e)))?;
            if n == 0 {
                return Err(VaultError::Unknown(id));
            }
            Ok(())
        })
    }
}
