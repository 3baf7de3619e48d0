//! [`PostgresVault`]: secrets in a PostgreSQL database, shared by every worker.

use std::fmt;
use std::sync::Arc;

use super::{
    RevealRecord, Vault, VaultError, VaultRow, commitment, random_id_and_salt, refused,
    reveal_record, vault_err, vault_value,
};
use crate::db::postgres::{Pg, PostgresOptions, pg, pool_err};
use crate::db::{to_i64, wall_ms};
use crate::program::{BoxFuture, Reveal, SecretSource, ToolError};
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

    /// The plaintext stored under `id`, if it matches `commitment` (see [`Vault::value`]).
    pub async fn value(&self, id: VaultId, commitment: Digest) -> Result<Json, VaultError> {
        let client = self
            .pg
            .pool
            .get()
            .await
            .map_err(|e| vault_err(pool_err(e)))?;
        let found = self.stored_row(&client, id).await?;
        vault_value(id, commitment, found)
    }

    /// The row `(salt, value, erased_ms)` of `id`, if any.
    async fn stored_row(
        &self,
        client: &deadpool_postgres::Client,
        id: VaultId,
    ) -> Result<Option<VaultRow>, VaultError> {
        let s = &self.pg.schema;
        let row = client
            .query_opt(
                &format!("SELECT salt, value, erased_ms FROM {s}.nanovm_vault WHERE id = $1"),
                &[&id.to_hex()],
            )
            .await
            .map_err(|e| vault_err(pg(e)))?;
        match row {
            Some(row) => Ok(Some((
                row.try_get(0).map_err(|e| vault_err(pg(e)))?,
                row.try_get(1).map_err(|e| vault_err(pg(e)))?,
                row.try_get(2).map_err(|e| vault_err(pg(e)))?,
            ))),
            None => Ok(None),
        }
    }

    /// Checks the stored value against the reveal's commitment and, if it matches, records the
    /// reveal (committed) before handing the value out.
    async fn reveal_now(&self, r: Reveal) -> Result<Json, VaultError> {
        let s = &self.pg.schema;
        let client = self
            .pg
            .pool
            .get()
            .await
            .map_err(|e| vault_err(pool_err(e)))?;
        let found = self.stored_row(&client, r.vault_id).await?;
        let value = vault_value(r.vault_id, r.commitment, found)?;
        client
            .execute(
                &format!(
                    "INSERT INTO {s}.nanovm_reveals \
                     (vault_id, commitment, run_id, step, tool, attempt, key, at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &r.vault_id.to_hex(),
                    &&r.commitment.0[..],
                    &r.run_id,
                    &r.step,
                    &r.tool,
                    &i64::from(r.attempt),
                    &&r.key.0[..],
                    &to_i64(wall_ms()),
                ],
            )
            .await
            .map_err(|e| vault_err(pg(e)))?;
        Ok(value)
    }

    /// Every recorded reveal of `id`, oldest first (see [`Vault::reveals`]).
    pub async fn reveals(&self, id: VaultId) -> Result<Vec<RevealRecord>, VaultError> {
        let s = &self.pg.schema;
        let client = self
            .pg
            .pool
            .get()
            .await
            .map_err(|e| vault_err(pool_err(e)))?;
        let rows = client
            .query(
                &format!(
                    "SELECT vault_id, commitment, run_id, step, tool, attempt, key, at_ms \
                     FROM {s}.nanovm_reveals WHERE vault_id = $1 ORDER BY n"
                ),
                &[&id.to_hex()],
            )
            .await
            .map_err(|e| vault_err(pg(e)))?;
        rows.iter()
            .map(|row| {
                let get = |e| vault_err(pg(e));
                let v: String = row.try_get(0).map_err(get)?;
                let c: Vec<u8> = row.try_get(1).map_err(get)?;
                let key: Vec<u8> = row.try_get(6).map_err(get)?;
                reveal_record(
                    &v,
                    &c,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                    row.try_get(4).map_err(get)?,
                    row.try_get(5).map_err(get)?,
                    &key,
                    row.try_get(7).map_err(get)?,
                )
            })
            .collect()
    }
}

impl SecretSource for PostgresVault {
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>> {
        Box::pin(async move { self.reveal_now(reveal).await.map_err(refused) })
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

    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>> {
        Box::pin(PostgresVault::value(self, id, commitment))
    }

    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>> {
        Box::pin(PostgresVault::reveals(self, id))
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
