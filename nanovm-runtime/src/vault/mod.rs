//! The vault: where `secret` values live, so traces only ever hold commitments.
//!
//! A value put into the vault gets a [`VaultId`] and a fresh random 32-byte salt; the trace
//! records `commitment = blake3::keyed_hash(salt, canonical(value))`. The salt never leaves the
//! vault, so a commitment cannot be brute-forced from a guessable value (an email address, a
//! phone number) without it. [`Vault::erase`] deletes value and salt: afterwards the commitment
//! in every trace is an opaque 32-byte string, while the hash chain is unchanged and still
//! verifies.
//!
//! Tools get plaintext only through [`crate::program::ToolContext::reveal`], which asks the
//! vault the run was configured with ([`crate::program::SecretSource`]).

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use serde::Serialize;

use crate::canonical::Encoder;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::error::JournalError;
pub use crate::program::SecretSource;
use crate::program::{BoxFuture, ToolError};
use crate::value::{Digest, Json, SecretRef, VaultId};

pub use memory::MemoryVault;
#[cfg(feature = "postgres")]
pub use postgres::PostgresVault;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteVault;

/// Why a vault operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No value was ever stored under this id.
    #[error("vault: no value with id {}", .0.to_hex())]
    Unknown(VaultId),
    /// The value was erased; its plaintext and salt are gone for good.
    #[error("vault: the value with id {} was erased", .0.to_hex())]
    Erased(VaultId),
    /// The value could not be converted to JSON.
    #[error("vault: cannot store the value: {0}")]
    Encode(String),
    /// The operating system's random number generator failed.
    #[error("vault: no randomness for a salt: {0}")]
    Random(String),
    /// A storage backend failed.
    #[error("vault: {0}")]
    Backend(String),
}

/// A store for secret values. Implementations must be safe to share between runs.
///
/// Reading is [`SecretSource::reveal`] (the supertrait), which is what tools use.
pub trait Vault: SecretSource {
    /// Stores `value` under a new id with a new random salt; returns the id and the salted
    /// commitment (see [`commitment`]).
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>>;

    /// Deletes the value and its salt. Erasing an erased id succeeds; an unknown id is an error.
    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>>;
}

// `Runtime::builder().vault(arc)` accepts an `Arc` the caller keeps a clone of.
impl<S: SecretSource + ?Sized> SecretSource for Arc<S> {
    fn reveal(&self, id: VaultId) -> BoxFuture<'_, Result<Json, ToolError>> {
        (**self).reveal(id)
    }
}

impl<V: Vault + ?Sized> Vault for Arc<V> {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        (**self).put(value)
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        (**self).erase(id)
    }
}

/// The commitment the trace records for a secret: blake3 keyed with the salt, over the value's
/// canonical encoding ([`Encoder::json`], so object key order does not matter).
pub fn commitment(salt: &[u8; 32], value: &Json) -> Digest {
    let mut e = Encoder::new();
    e.json(value);
    Digest(*blake3::keyed_hash(salt, e.bytes()).as_bytes())
}

/// Stores `value` in any vault and returns a typed handle for an `Input` field.
pub async fn seal<T: Serialize>(vault: &dyn Vault, value: &T) -> Result<SecretRef<T>, VaultError> {
    let json = serde_json::to_value(value).map_err(|e| VaultError::Encode(e.to_string()))?;
    let (id, commitment) = vault.put(json).await?;
    Ok(SecretRef::from_parts(id, commitment))
}

/// A new random vault id and salt from the operating system's random number generator (for
/// vaults that persist values).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn random_id_and_salt() -> Result<(VaultId, [u8; 32]), VaultError> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).map_err(|e| VaultError::Random(e.to_string()))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&bytes[16..]);
    Ok((VaultId(id), salt))
}

/// A store failure, as a vault backed by that store reports it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn vault_err(e: JournalError) -> VaultError {
    VaultError::Backend(e.to_string())
}

/// What a SQL vault answers for `id` from its row `(value, erased_ms)`, or from no row: the
/// SQLite and PostgreSQL vaults share this so that they answer alike.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn vault_value(
    id: VaultId,
    row: Option<(Option<String>, Option<i64>)>,
) -> Result<Json, VaultError> {
    match row {
        None => Err(VaultError::Unknown(id)),
        Some((Some(text), None)) => serde_json::from_str(&text)
            .map_err(|e| VaultError::Backend(format!("a stored value does not parse: {e}"))),
        Some(_) => Err(VaultError::Erased(id)),
    }
}
