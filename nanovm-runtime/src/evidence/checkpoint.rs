//! Checkpoints and tree heads: what is signed, in a canonical binary encoding (a fixed
//! domain tag, then fixed-width big-endian integers, length-prefixed text and raw hashes), so a
//! signature covers exactly one meaning and can be checked by any implementation.

use serde_json::json;

use super::merkle::{self, Hash};
use super::signer::{KeyError, PublicKey, Signer, hex, unhex};
use crate::value::Digest;

const CHECKPOINT_TAG: &[u8] = b"nanovm checkpoint v1\n";
const HEAD_TAG: &[u8] = b"nanovm tree head v1\n";

/// What a checkpoint says: run `run_id` had `entries` entries, the last one hashing to `root`,
/// and ran the program whose hash is `program_hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The run.
    pub run_id: String,
    /// How many entries the trace had.
    pub entries: u64,
    /// The hash of its last entry (the trace's root).
    pub root: Digest,
    /// The compiled program's hash (from `run_started`).
    pub program_hash: Digest,
}

impl Checkpoint {
    /// The signed bytes: `"nanovm checkpoint v1\n" || u64 len(run_id) || run_id || u64 entries
    /// || root || program_hash` (integers big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_TAG.len() + 80 + self.run_id.len());
        out.extend_from_slice(CHECKPOINT_TAG);
        out.extend_from_slice(&(self.run_id.len() as u64).to_be_bytes());
        out.extend_from_slice(self.run_id.as_bytes());
        out.extend_from_slice(&self.entries.to_be_bytes());
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.program_hash.0);
        out
    }

    fn decode(bytes: &[u8]) -> Option<(Checkpoint, &[u8])> {
        let rest = bytes.strip_prefix(CHECKPOINT_TAG)?;
        let (len, rest) = take_u64(rest)?;
        let len = usize::try_from(len).ok()?;
        if rest.len() < len {
            return None;
        }
        let (id, rest) = rest.split_at(len);
        let run_id = String::from_utf8(id.to_vec()).ok()?;
        let (entries, rest) = take_u64(rest)?;
        let (root, rest) = take_32(rest)?;
        let (program_hash, rest) = take_32(rest)?;
        Some((
            Checkpoint {
                run_id,
                entries,
                root: Digest(root),
                program_hash: Digest(program_hash),
            },
            rest,
        ))
    }
}

fn take_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (n, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*n), rest))
}

fn take_32(b: &[u8]) -> Option<([u8; 32], &[u8])> {
    let (n, rest) = b.split_first_chunk::<32>()?;
    Some((*n, rest))
}

/// A checkpoint with the key that signed it and the signature: one leaf of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What is signed.
    pub checkpoint: Checkpoint,
    /// Who signed it.
    pub key: PublicKey,
    /// The Ed25519 signature of [`Checkpoint::encode`].
    pub signature: [u8; 64],
}

impl SignedCheckpoint {
    /// Signs `checkpoint` with `signer`.
    pub fn sign(checkpoint: Checkpoint, signer: &dyn Signer) -> Result<Self, KeyError> {
        let signature = signer.sign(&checkpoint.encode())?;
        Ok(SignedCheckpoint {
            checkpoint,
            key: signer.public_key(),
            signature,
        })
    }

    /// Whether it is signed by `key`.
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.key == *key && key.verifies(&self.checkpoint.encode(), &self.signature)
    }

    /// The log leaf: the encoded checkpoint, the key, the signature.
    pub fn to_leaf(&self) -> Vec<u8> {
        let mut out = self.checkpoint.encode();
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses a log leaf (`None`: not one).
    pub fn from_leaf(bytes: &[u8]) -> Option<SignedCheckpoint> {
        let (checkpoint, rest) = Checkpoint::decode(bytes)?;
        let (key, rest) = take_32(rest)?;
        let (signature, rest) = rest.split_first_chunk::<64>()?;
        if !rest.is_empty() {
            return None;
        }
        Some(SignedCheckpoint {
            checkpoint,
            key: PublicKey(key),
            signature: *signature,
        })
    }

    /// The JSON form, for a checkpoint kept next to an exported trace (`run_id`, `entries`,
    /// `root`, `program_hash`, `key`, `signature`; hashes and keys in hex).
    pub fn to_json(&self) -> String {
        json!({
            "run_id": self.checkpoint.run_id,
            "entries": self.checkpoint.entries,
            "root": self.checkpoint.root.to_hex(),
            "program_hash": self.checkpoint.program_hash.to_hex(),
            "key": self.key.to_hex(),
            "signature": hex(&self.signature),
        })
        .to_string()
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<SignedCheckpoint, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let text_of = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| format!("`{k}` is missing or not a string"))
        };
        let digest = |k: &str| {
            text_of(k)
                .and_then(|s| Digest::from_hex(s).ok_or_else(|| format!("`{k}` is not a hash")))
        };
        let key: [u8; 32] = unhex(text_of("key")?)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "`key` is not 32 bytes of hex".to_string())?;
        let signature: [u8; 64] = unhex(text_of("signature")?)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "`signature` is not 64 bytes of hex".to_string())?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                run_id: text_of("run_id")?.to_string(),
                entries: v
                    .get("entries")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| "`entries` is missing or not a number".to_string())?,
                root: digest("root")?,
                program_hash: digest("program_hash")?,
            },
            key: PublicKey(key),
            signature,
        })
    }

    /// The leaf's hash in the log (RFC 6962).
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.to_leaf())
    }
}

/// A tree head: the log had `size` leaves with root `root` at `time_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeHead {
    /// Leaves in the log.
    pub size: u64,
    /// The RFC 6962 root over them.
    pub root: Hash,
    /// When it was signed (milliseconds since the Unix epoch, the signer's clock).
    pub time_ms: u64,
}

impl TreeHead {
    /// The signed bytes: `"nanovm tree head v1\n" || u64 size || root || u64 time_ms`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = HEAD_TAG.to_vec();
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out
    }
}

/// A signed tree head, as kept by an operator or published (JSON: `size`, `root`, `time_ms`,
/// `key`, `signature`, hashes and keys in hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// What is signed.
    pub head: TreeHead,
    /// Who signed it.
    pub key: PublicKey,
    /// The Ed25519 signature of [`TreeHead::encode`].
    pub signature: [u8; 64],
}

impl SignedTreeHead {
    /// Signs `head` with `signer`.
    pub fn sign(head: TreeHead, signer: &dyn Signer) -> Result<Self, KeyError> {
        let signature = signer.sign(&head.encode())?;
        Ok(SignedTreeHead {
            head,
            key: signer.public_key(),
            signature,
        })
    }

    /// Whether it is signed by `key`.
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.key == *key && key.verifies(&self.head.encode(), &self.signature)
    }

    /// The root the head signs.
    pub fn root_hash(&self) -> Hash {
        self.head.root
    }

    /// The JSON form (one line).
    pub fn to_json(&self) -> String {
        json!({
            "size": self.head.size,
            "root": hex(&self.head.root),
            "time_ms": self.head.time_ms,
            "key": self.key.to_hex(),
            "signature": hex(&self.signature),
        })
        .to_string()
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<SignedTreeHead, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let num = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("`{k}` is missing or not a number"))
        };
        let bytes = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .and_then(unhex)
                .ok_or_else(|| format!("`{k}` is missing or not hex"))
        };
        let root: Hash = bytes("root")?
            .try_into()
            .map_err(|_| "`root` is not 32 bytes".to_string())?;
        let key: [u8; 32] = bytes("key")?
            .try_into()
            .map_err(|_| "`key` is not 32 bytes".to_string())?;
        let signature: [u8; 64] = bytes("signature")?
            .try_into()
            .map_err(|_| "`signature` is not 64 bytes".to_string())?;
        Ok(SignedTreeHead {
            head: TreeHead {
                size: num("size")?,
                root,
                time_ms: num("time_ms")?,
            },
            key: PublicKey(key),
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::signer::KeySigner;

    #[test]
    fn leaves_and_heads_round_trip_and_verify() {
        let s = KeySigner::from_seed([3; 32]);
        let cp = Checkpoint {
            run_id: "r-1".into(),
            entries: 7,
            root: Digest([9; 32]),
            program_hash: Digest([8; 32]),
        };
        let signed = SignedCheckpoint::sign(cp.clone(), &s).unwrap();
        let back = SignedCheckpoint::from_leaf(&signed.to_leaf()).unwrap();
        assert_eq!(back, signed);
        assert_eq!(
            SignedCheckpoint::from_json(&signed.to_json()).unwrap(),
            signed
        );
        assert!(back.verifies(&s.public_key()));
        let mut forged = back.clone();
        forged.checkpoint.entries = 8;
        assert!(!forged.verifies(&s.public_key()));
        assert!(SignedCheckpoint::from_leaf(&signed.to_leaf()[1..]).is_none());

        let head = SignedTreeHead::sign(
            TreeHead {
                size: 3,
                root: [5; 32],
                time_ms: 1,
            },
            &s,
        )
        .unwrap();
        let back = SignedTreeHead::from_json(&head.to_json()).unwrap();
        assert_eq!(back, head);
        assert!(back.verifies(&s.public_key()));
    }
}
