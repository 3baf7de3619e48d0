//! [`MemoryVault`]: secrets in the process's memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use super::{RevealRecord, Vault, VaultError, checked, commitment, refused};
use crate::db::wall_ms;
use crate::program::{BoxFuture, Reveal, SecretSource, ToolError};
use crate::value::{Digest, Json, SecretRef, VaultId};

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
    /// The reveal log, oldest first.
    reveals: Vec<RevealRecord>,
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
                reveals: Vec::new(),
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

    /// The plaintext stored under `id`, if it matches `commitment` (see [`Vault::value`]).
    pub fn value(&self, id: VaultId, commitment: Digest) -> Result<Json, VaultError> {
        match self.lock().slots.get(&id) {
            Some(Slot::Live { salt, value }) => checked(id, salt, value.clone(), commitment),
            Some(Slot::Erased) => Err(VaultError::Erased(id)),
            None => Err(VaultError::Unknown(id)),
        }
    }

    /// Checks and records a reveal to a tool call, then hands the value out.
    fn reveal_now(&self, reveal: Reveal) -> Result<Json, VaultError> {
        let mut s = self.lock();
        let value = match s.slots.get(&reveal.vault_id) {
            Some(Slot::Live { salt, value }) => {
                checked(reveal.vault_id, salt, value.clone(), reveal.commitment)?
            }
            Some(Slot::Erased) => return Err(VaultError::Erased(reveal.vault_id)),
            None => return Err(VaultError::Unknown(reveal.vault_id)),
        };
        s.reveals.push(RevealRecord {
            reveal,
            at_ms: wall_ms(),
        });
        Ok(value)
    }

    /// Every recorded reveal of `id`, oldest first (see [`Vault::reveals`]).
    pub fn reveals(&self, id: VaultId) -> Vec<RevealRecord> {
        self.lock()
            .reveals
            .iter()
            .filter(|r| r.reveal.vault_id == id)
            .cloned()
            .collect()
    }

    /// Replaces the value stored under `id`, keeping its salt (tests: a vault changed behind
    /// the runtime's back; the commitment no longer matches, so reveals are refused).
    pub fn overwrite(&self, id: VaultId, value: Json) -> Result<(), VaultError> {
        match self.lock().slots.get_mut(&id) {
            Some(Slot::Live { value: v, .. }) => {
                *v = value;
                Ok(())
            }
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
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>> {
        Box::pin(std::future::ready(self.reveal_now(reveal).map_err(refused)))
    }
}

impl Vault for MemoryVault {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        Box::pin(std::future::ready(MemoryVault::put(self, value)))
    }

    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(std::future::ready(MemoryVault::erase(self, id)))
    }

    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>> {
        Box::pin(std::future::ready(MemoryVault::value(self, id, commitment)))
    }

    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>> {
        Box::pin(std::future::ready(Ok(MemoryVault::reveals(self, id))))
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
        assert_eq!(v.value(r.id(), r.commitment()).unwrap(), json!("a@b.c"));
        assert!(v.verify(r.id(), &json!("a@b.c"), r.commitment()));
        v.overwrite(r.id(), json!("e@v.il")).unwrap();
        assert_eq!(
            v.value(r.id(), r.commitment()),
            Err(VaultError::Mismatch(r.id()))
        );
        v.erase(r.id()).unwrap();
        assert_eq!(
            v.value(r.id(), r.commitment()),
            Err(VaultError::Erased(r.id()))
        );
        assert!(!v.verify(r.id(), &json!("a@b.c"), r.commitment()));
        v.erase(r.id()).unwrap();
        assert_eq!(
            v.erase(VaultId([9; 16])),
            Err(VaultError::Unknown(VaultId([9; 16])))
        );
    }
}
