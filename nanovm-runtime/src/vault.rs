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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::canonical::Encoder;
use crate::program::{BoxFuture, SecretSource, ToolError};
use crate::value::{Digest, Json, SecretRef, VaultId};

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
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn random_id_and_salt() -> Result<(VaultId, [u8; 32]), VaultError> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).map_err(|e| VaultError::Random(e.to_string()))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&bytes[16..]);
    Ok((VaultId(id), salt))
}

/// An in-memory [`Vault`]: the default, for tests, examples and single-process use.
///
/// Salts and ids come from the operating system's random number generator, unless the vault
/// was built with [`MemoryVault::seeded`].
pub struct MemoryVault {
    inner: Mutex<VaultState>,
}

struct VaultState {
    /// `Some(seed)`: derive ids and salts from the seed and a counter (tests only).
    seed: Option<u64>,
    counter: u64,
    slots: HashMap<VaultId, Slot>,
}

enum Slot {
    Live { salt: [u8; 32], value: Json },
    Erased,
}

impl Default for MemoryVault {
    fn default() -> Self {
        MemoryVault::new()
    }
}

impl fmt::Debug for MemoryVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("MemoryVault")
            .field("seeded", &s.seed.is_some())
            .field("values", &s.slots.len())
            .finish_non_exhaustive()
    }
}

impl MemoryVault {
    /// An empty vault with random salts.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty vault whose ids and salts are derived from `seed`, so two runs of a test or an
    /// example produce the same commitments, run ids and root hashes.
    ///
    /// **Never use this in production**: anyone who knows the seed can recompute every salt,
    /// and then test guesses of a secret against its commitment in a trace.
    pub fn seeded(seed: u64) -> Self {
        Self::build(Some(seed))
    }

    fn build(seed: Option<u64>) -> Self {
        MemoryVault {
            inner: Mutex::new(VaultState {
                seed,
                counter: 0,
                slots: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VaultState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `value`; returns its id and commitment.
    pub fn put(&self, value: Json) -> Result<(VaultId, Digest), VaultError> {
        let mut s = self.lock();
        let mut bytes = [0u8; 48];
        match s.seed {
            Some(seed) => {
                let mut h = blake3::Hasher::new_derive_key("nanovm MemoryVault::seeded v1");
                h.update(&seed.to_le_bytes())
                    .update(&s.counter.to_le_bytes());
                h.finalize_xof().fill(&mut bytes);
                s.counter += 1;
            }
            None => getrandom::fill(&mut bytes).map_err(|e| VaultError::Random(e.to_string()))?,
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&bytes[16..]);
        let id = VaultId(id);
        let c = commitment(&salt, &value);
        s.slots.insert(id, Slot::Live { salt, value });
        Ok((id, c))
    }

    /// Stores a typed value and returns the handle an `Input` field takes.
    pub fn secret<T: Serialize>(&self, value: &T) -> Result<SecretRef<T>, VaultError> {
        let json = serde_json::to_value(value).map_err(|e| VaultError::Encode(e.to_string()))?;
        let (id, c) = self.put(json)?;
        Ok(SecretRef::from_parts(id, c))
    }

    /// The plaintext stored under `id`.
    pub fn reveal(&self, id: VaultId) -> Result<Json, VaultError> {
        match self.lock().slots.get(&id) {
            Some(Slot::Live { value, .. }) => Ok(value.clone()),
            Some(Slot::Erased) => Err(VaultError::Erased(id)),
            None => Err(VaultError::Unknown(id)),
        }
    }

    /// Deletes the value and salt stored under `id`, keeping a tombstone so later reads say
    /// "erased" rather than "unknown".
    pub fn erase(&self, id: VaultId) -> Result<(), VaultError> {
        match self.lock().slots.get_mut(&id) {
            Some(slot) => {
                *slot = Slot::Erased;
                Ok(())
            }
            None => Err(VaultError::Unknown(id)),
        }
    }

    /// True if `commitment` is the commitment of `value` stored under `id` (false once erased).
    pub fn verify(&self, id: VaultId, value: &Json, commitment_: Digest) -> bool {
        match self.lock().slots.get(&id) {
            Some(Slot::Live { salt, .. }) => commitment(salt, value) == commitment_,
            _ => false,
        }
    }
}

impl SecretSource for MemoryVault {
    fn reveal(&self, id: VaultId) -> BoxFuture<'_, Result<Json, ToolError>> {
        let r = MemoryVault::reveal(self, id).map_err(|e| ToolError::permanent(e.to_string()));
        Box::pin(std::future::ready(r))
    }
}

impl Vault for MemoryVault {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        Box::pin(std::future::ready(MemoryVault::put(self, value)))
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(std::future::ready(MemoryVault::erase(self, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seeded_vaults_agree_and_random_ones_do_not() {
        let a = MemoryVault::seeded(7).put(json!("a@b.c")).unwrap();
        let b = MemoryVault::seeded(7).put(json!("a@b.c")).unwrap();
        assert_eq!(a, b);
        let c = MemoryVault::new().put(json!("a@b.c")).unwrap();
        let d = MemoryVault::new().put(json!("a@b.c")).unwrap();
        assert_ne!(c.1, d.1, "random salts give different commitments");
    }

    #[test]
    fn erase_removes_value_and_salt() {
        let v = MemoryVault::seeded(1);
        let r = v.secret(&"a@b.c").unwrap();
        assert_eq!(v.reveal(r.id()).unwrap(), json!("a@b.c"));
        assert!(v.verify(r.id(), &json!("a@b.c"), r.commitment()));
        v.erase(r.id()).unwrap();
        assert_eq!(v.reveal(r.id()), Err(VaultError::Erased(r.id())));
        assert!(!v.verify(r.id(), &json!("a@b.c"), r.commitment()));
        v.erase(r.id()).unwrap();
        assert_eq!(
            v.erase(VaultId([9; 16])),
            Err(VaultError::Unknown(VaultId([9; 16])))
        );
    }
}
