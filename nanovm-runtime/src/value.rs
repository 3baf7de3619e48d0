//! Values that cross the boundary between a run and the outside world: JSON data, digests,
//! and secrets held in the vault.

use std::fmt;
use std::marker::PhantomData;

/// Any JSON value: tool results, event payloads, `json`-typed variables.
pub type Json = serde_json::Value;

/// A 32-byte blake3 digest (trace hashes, program hashes, commitments, effect ids).
///
/// Shown and serialized as 64 lowercase hex digits; parsing accepts nothing else, so a trace
/// file cannot carry two spellings of the same hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest, used as the `prev` of the first trace entry.
    pub const ZERO: Digest = Digest([0; 32]);

    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The first 8 bytes as 16 hex digits, for human output.
    pub fn short(&self) -> String {
        self.to_hex()[..16].to_string()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// The id of a value in the vault: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultId(pub [u8; 16]);

impl VaultId {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut full = [0u8; 32];
        full[..16].copy_from_slice(&self.0);
        Digest(full).to_hex()[..32].to_string()
    }

    /// Parses exactly 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<VaultId> {
        if s.len() != 32 {
            return None;
        }
        let padded = format!("{s}{}", "0".repeat(32));
        let d = Digest::from_hex(&padded)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&d.0[..16]);
        Some(VaultId(out))
    }
}

impl fmt::Debug for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultId({})", self.to_hex())
    }
}

impl serde::Serialize for VaultId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for VaultId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        VaultId::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 32 lowercase hex digits"))
    }
}

/// A handle to a `secret T` value stored in the vault.
///
/// This is the type of a `secret` input field in generated code. It carries no plaintext: only
/// the vault id (to fetch the value when a tool needs it) and the salted commitment
/// `keyed_hash(salt, value)` that the trace records. Create one with a vault's `put`.
pub struct SecretRef<T> {
    id: VaultId,
    commitment: Digest,
    _type: PhantomData<fn() -> T>,
}

impl<T> SecretRef<T> {
    /// A handle from its parts (vaults and generated code use this).
    pub fn from_parts(id: VaultId, commitment: Digest) -> Self {
        SecretRef {
            id,
            commitment,
            _type: PhantomData,
        }
    }

    /// The vault id.
    pub fn id(&self) -> VaultId {
        self.id
    }

    /// The salted commitment recorded in traces.
    pub fn commitment(&self) -> Digest {
        self.commitment
    }
}

impl<T> Clone for SecretRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SecretRef<T> {}

impl<T> PartialEq for SecretRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.commitment == other.commitment
    }
}

impl<T> Eq for SecretRef<T> {}

impl<T> fmt::Debug for SecretRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.commitment.short())
    }
}

/// The recorded form of a handle: `{"vault_id": "<32 hex>", "commitment": "<64 hex>"}`, the
/// same shape as a secret in the trace. Never the plaintext (a handle has none); a generated
/// `Input` serializes its secret fields this way.
impl<T> serde::Serialize for SecretRef<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SecretRefRepr {
            vault_id: self.id,
            commitment: self.commitment,
        }
        .serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for SecretRef<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = SecretRefRepr::deserialize(d)?;
        Ok(SecretRef::from_parts(r.vault_id, r.commitment))
    }
}

/// The serialized form of a [`SecretRef`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefRepr {
    vault_id: VaultId,
    commitment: Digest,
}

/// A secret's plaintext, handed to a tool. `Debug` and `Display` never show the value.
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The plaintext. Call this only where the value must leave the program (the tool's own I/O).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the plaintext.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A value as the trace records it: plain data, or a secret's commitment (never its plaintext).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Datum {
    /// Plain data.
    Plain(Json),
    /// A secret: where it lives and its salted commitment.
    Secret {
        /// The vault id.
        vault_id: VaultId,
        /// `keyed_hash(salt, value)`.
        commitment: Digest,
    },
}

impl Datum {
    /// The recorded form of a secret handle.
    pub fn secret<T>(r: &SecretRef<T>) -> Datum {
        Datum::Secret {
            vault_id: r.id(),
            commitment: r.commitment(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_is_strict() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()), None);
        assert_eq!(Digest::from_hex(&d.to_hex()[1..]), None);
        let v = VaultId([7; 16]);
        assert_eq!(VaultId::from_hex(&v.to_hex()), Some(v));
        assert_eq!(VaultId::from_hex("zz"), None);
    }
}
