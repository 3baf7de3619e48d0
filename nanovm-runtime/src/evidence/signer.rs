//! Who signs the evidence: the [`Signer`] trait and [`KeySigner`], an Ed25519 key read from a
//! file or an environment variable; [`PublicKey`], what an auditor verifies with.
//!
//! Key formats (files and variables alike): 64 hex digits (the 32-byte Ed25519 seed), PKCS#8
//! PEM (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm ed25519` writes) or
//! PKCS#8 DER. Public keys: 64 hex digits or SPKI PEM (`-----BEGIN PUBLIC KEY-----`, what
//! `openssl pkey -pubout` writes).

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Why a key could not be read or a signature not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// The text or bytes are not a key in any accepted format.
    #[error("not an Ed25519 key ({0}); expected 64 hex digits, PKCS#8/SPKI PEM or PKCS#8 DER")]
    Format(String),
    /// The signer failed (a remote signer, an HSM).
    #[error("signing failed: {0}")]
    Sign(String),
}

/// An Ed25519 public key: what verifies checkpoints and tree heads.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits or an SPKI PEM block.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let key = VerifyingKey::from_public_key_pem(text)
                .map_err(|e| KeyError::Format(e.to_string()))?;
            return Ok(PublicKey(key.to_bytes()));
        }
        let bytes = unhex(text).ok_or_else(|| KeyError::Format("not hex".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Format("a public key is 32 bytes".into()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Format(e.to_string()))?;
        Ok(PublicKey(bytes))
    }

    /// Reads a public key file (hex or SPKI PEM).
    pub fn from_file(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyError::Io {
            path: path.display().to_string(),
            error,
        })?;
        PublicKey::parse(&text)
    }

    /// Whether `signature` is this key's signature of `message` (strict verification: no
    /// malleable or small-order encodings).
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// Signs evidence (checkpoints, tree heads) with an Ed25519 key. The key need not live with
/// the store: an implementation may call a KMS or an HSM.
pub trait Signer: Send + Sync + 'static {
    /// The public key that verifies this signer's signatures.
    fn public_key(&self) -> PublicKey;

    /// The Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError>;
}

impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn public_key(&self) -> PublicKey {
        (**self).public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        (**self).sign(message)
    }
}

/// A [`Signer`] holding an Ed25519 private key in memory (zeroized on drop).
pub struct KeySigner {
    key: SigningKey,
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl KeySigner {
    /// The signer of a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> KeySigner {
        KeySigner {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses 64 hex digits (the seed) or a PKCS#8 PEM block.
    pub fn parse(text: &str) -> Result<KeySigner, KeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let key =
                SigningKey::from_pkcs8_pem(text).map_err(|e| KeyError::Format(e.to_string()))?;
            return Ok(KeySigner { key });
        }
        let bytes = unhex(text).ok_or_else(|| KeyError::Format("not hex".into()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Format("a private key seed is 32 bytes".into()))?;
        Ok(KeySigner::from_seed(seed))
    }

    /// Reads a key file: hex, PKCS#8 PEM or PKCS#8 DER.
    pub fn from_file(path: &Path) -> Result<KeySigner, KeyError> {
        let bytes = std::fs::read(path).map_err(|error| KeyError::Io {
            path: path.display().to_string(),
            error,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => KeySigner::parse(text),
            Err(_) => SigningKey::from_pkcs8_der(&bytes)
                .map(|key| KeySigner { key })
                .map_err(|e| KeyError::Format(e.to_string())),
        }
    }

    /// Reads the key from environment variable `var` (hex or PKCS#8 PEM).
    pub fn from_env(var: &str) -> Result<KeySigner, KeyError> {
        let text = std::env::var(var).map_err(|_| KeyError::MissingEnv(var.to_string()))?;
        KeySigner::parse(&text)
    }
}

impl Signer for KeySigner {
    fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let a = KeySigner::from_seed([1; 32]);
        let b = KeySigner::from_seed([2; 32]);
        let sig = a.sign(b"checkpoint").unwrap();
        assert!(a.public_key().verifies(b"checkpoint", &sig));
        assert!(!a.public_key().verifies(b"checkpoinT", &sig));
        assert!(!b.public_key().verifies(b"checkpoint", &sig));
    }

    #[test]
    fn keys_parse_from_hex_and_pem() {
        let a = KeySigner::parse(&hex(&[7; 32])).unwrap();
        assert_eq!(a.public_key(), KeySigner::from_seed([7; 32]).public_key());
        let pk = PublicKey::parse(&a.public_key().to_hex()).unwrap();
        assert_eq!(pk, a.public_key());
        // RFC 8410, section 10.3: the example private key and its public key.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let spki = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let s = KeySigner::parse(pem).unwrap();
        assert_eq!(s.public_key(), PublicKey::parse(spki).unwrap());
        assert!(KeySigner::parse("not a key").is_err());
        assert!(PublicKey::parse("abcd").is_err());
    }
}
