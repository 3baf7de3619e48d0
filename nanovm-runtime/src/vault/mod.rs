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
//! vault the run was configured with ([`crate::program::SecretSource`]), and only for the
//! call's own secret arguments. The vault checks the stored value against the commitment the
//! run recorded (`keyed_hash(salt, value)`: a value changed behind the runtime's back is
//! refused, [`VaultError::Mismatch`]) and records the reveal (which secret, to which tool, at
//! which step of which run) before it hands the value out; [`Vault::reveals`] answers "who saw
//! this". Replays never reveal (they call no tool), so they need no vault.

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
use crate::program::{BoxFuture, ToolError};
pub use crate::program::{Reveal, SecretSource};
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
    /// The stored value does not match the commitment the run recorded for it: it (or its
    /// salt) was changed behind the vault's back. It is not handed out.
    #[error(
        "vault: the value with id {} does not match the commitment the run recorded",
        .0.to_hex()
    )]
    Mismatch(VaultId),
    /// A storage backend failed.
    #[error("vault: {0}")]
    Backend(String),
}

/// A recorded reveal: what [`Vault::reveals`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevealRecord {
    /// Which secret, to which tool, at which step of which run.
    pub reveal: Reveal,
    /// When, on the vault's wall clock (milliseconds since the Unix epoch; not part of any
    /// trace).
    pub at_ms: u64,
}

/// A store for secret values. Implementations must be safe to share between runs.
///
/// Tools read through [`SecretSource::reveal`] (the supertrait): checked and recorded.
/// [`Vault::value`] is the host's own checked read (the runtime compares a retried start's
/// secret inputs with it); it is not a reveal to a tool and is not recorded.
pub trait Vault: SecretSource {
    /// Stores `value` under a new id with a new random salt; returns the id and the salted
    /// commitment (see [`commitment`]).
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>>;

    /// Deletes the value and its salt. Erasing an erased id succeeds; an unknown id is an error.
    /// The reveal log keeps its records (they hold no plaintext).
    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>>;

    /// The plaintext stored under `id`, if it matches `commitment` ([`VaultError::Mismatch`]
    /// otherwise). Not recorded as a reveal.
    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>>;

    /// Every recorded reveal of the secret `id`, oldest first: who saw it.
    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>>;
}

// `Runtime::builder().vault(arc)` accepts an `Arc` the caller keeps a clone of.
impl<S: SecretSource + ?Sized> SecretSource for Arc<S> {
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>> {
        (**self).reveal(reveal)
    }
}

impl<V: Vault + ?Sized> Vault for Arc<V> {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        (**self).put(value)
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        (**self).erase(id)
    }

    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>> {
        (**self).value(id, commitment)
    }

    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>> {
        (**self).reveals(id)
    }
}

/// `value` if it is the value `commitment` commits to under `salt`, else
/// [`VaultError::Mismatch`]: what every vault checks before handing a value out.
pub(crate) fn checked(
    id: VaultId,
    salt: &[u8; 32],
    value: Json,
    commitment_: Digest,
) -> Result<Json, VaultError> {
    if commitment(salt, &value) == commitment_ {
        Ok(value)
    } else {
        Err(VaultError::Mismatch(id))
    }
}

/// A vault's refusal, as a tool call sees it (permanent: retrying cannot help).
pub(crate) fn refused(e: VaultError) -> ToolError {
    ToolError::permanent(e.to_string())
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

/// A SQL vault's row: `(salt, value, erased_ms)`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) type VaultRow = (Option<Vec<u8>>, Option<String>, Option<i64>);

/// What a SQL vault answers for `id` from its row `(salt, value, erased_ms)`, or from no
/// row, given the commitment the run recorded: the SQLite and PostgreSQL vaults share this so
/// that they answer alike.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn vault_value(
    id: VaultId,
    commitment: Digest,
    row: Option<VaultRow>,
) -> Result<Json, VaultError> {
    match row {
        None => Err(VaultError::Unknown(id)),
        Some((Some(salt), Some(text), None)) => {
            let salt: [u8; 32] = salt.as_slice().try_into().map_err(|_| {
                VaultError::Backend(format!("a stored salt is {} bytes, not 32", salt.len()))
            })?;
            let value = serde_json::from_str(&text)
                .map_err(|e| VaultError::Backend(format!("a stored value does not parse: {e}")))?;
            checked(id, &salt, value, commitment)
        }
        Some((_, _, Some(_))) => Err(VaultError::Erased(id)),
        // Value or salt gone without an erasure time: not what `erase` leaves.
        Some(_) => Err(VaultError::Mismatch(id)),
    }
}

/// A stored reveal row back to a record (shared by the SQL vaults).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[allow(clippy::too_many_arguments, reason = "the columns of one row")]
pub(crate) fn reveal_record(
    vault_id: &str,
    commitment: &[u8],
    run_id: String,
    step: String,
    tool: String,
    attempt: i64,
    key: &[u8],
    at_ms: i64,
) -> Result<RevealRecord, VaultError> {
    let bad = |what: &str| VaultError::Backend(format!("a stored reveal has a bad {what}"));
    let digest = |b: &[u8], what: &str| <[u8; 32]>::try_from(b).map(Digest).map_err(|_| bad(what));
    Ok(RevealRecord {
        reveal: Reveal {
            vault_id: VaultId::from_hex(vault_id).ok_or_else(|| bad("vault id"))?,
            commitment: digest(commitment, "commitment")?,
            run_id,
            step,
            tool,
            attempt: u32::try_from(attempt).map_err(|_| bad("attempt"))?,
            key: digest(key, "key")?,
        },
        at_ms: u64::try_from(at_ms).map_err(|_| bad("time"))?,
    })
}
