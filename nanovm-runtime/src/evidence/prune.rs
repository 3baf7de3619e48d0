//! Retention: [`prune`] deletes ended runs' entries while their checkpoints stay in the log,
//! after a signed prune record of each run is appended to the log, so [`audit`](super::audit)
//! reports "pruned" (who, when, why) where it would report a deleted run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::signer::{KeyError, PublicKey, Signer};
use super::{EvidenceLog, checkpoint_of};
use crate::store::{JournalError, JournalStore, LogLeaf, OPERATION_LEASE_MS, Reference, RunQuery};
use crate::trace::{Actor, secret_inputs};
use crate::value::Digest;
use crate::vault::{Vault, VaultError};

const PRUNE_TAG: &[u8] = b"nanovm prune v1\n";

/// What a prune record says: run `run_id`, whose last checkpoint covered `entries` entries
/// ending in `root`, was pruned (its entries deleted) by `by` at `time_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneRecord {
    /// The pruned run.
    pub run_id: String,
    /// Its entries when pruned (those of its last checkpoint).
    pub entries: u64,
    /// Its root when pruned.
    pub root: Digest,
    /// Who pruned it and why.
    pub by: Actor,
    /// When (milliseconds since the Unix epoch).
    pub time_ms: u64,
}

impl PruneRecord {
    /// Run `run_id`, of `entries` entries ending in `root`, pruned by `by` at `time_ms`.
    pub fn new(
        run_id: impl Into<String>,
        entries: u64,
        root: Digest,
        by: Actor,
        time_ms: u64,
    ) -> Self {
        PruneRecord {
            run_id: run_id.into(),
            entries,
            root,
            by,
            time_ms,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (n, rest) = b.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*n), rest))
}

fn take_str(b: &[u8]) -> Option<(String, &[u8])> {
    let (len, rest) = take_u64(b)?;
    let len = usize::try_from(len).ok()?;
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    Some((String::from_utf8(s.to_vec()).ok()?, rest))
}

impl PruneRecord {
    /// The signed bytes: `"nanovm prune v1\n" || str run_id || u64 entries || root || str
    /// by.id || str by.reason || u64 time_ms` (`str`: u64 length then UTF-8; integers
    /// big-endian). The tag differs from a checkpoint's, so neither parses as the other.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PRUNE_TAG.len() + 96 + self.run_id.len());
        out.extend_from_slice(PRUNE_TAG);
        put_str(&mut out, &self.run_id);
        out.extend_from_slice(&self.entries.to_be_bytes());
        out.extend_from_slice(&self.root.0);
        put_str(&mut out, &self.by.id);
        put_str(&mut out, &self.by.reason);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<(PruneRecord, &[u8])> {
        let rest = bytes.strip_prefix(PRUNE_TAG)?;
        let (run_id, rest) = take_str(rest)?;
        let (entries, rest) = take_u64(rest)?;
        let (root, rest) = rest.split_first_chunk::<32>()?;
        let (id, rest) = take_str(rest)?;
        let (reason, rest) = take_str(rest)?;
        let (time_ms, rest) = take_u64(rest)?;
        Some((
            PruneRecord {
                run_id,
                entries,
                root: Digest(*root),
                by: Actor::new(id, reason),
                time_ms,
            },
            rest,
        ))
    }
}

/// A prune record with the key that signed it: one leaf of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedPrune {
    /// What is signed.
    pub record: PruneRecord,
    /// Who signed it.
    pub key: PublicKey,
    /// The Ed25519 signature of [`PruneRecord::encode`].
    pub signature: [u8; 64],
}

impl SignedPrune {
    /// Signs `record` with `signer`.
    pub fn sign(record: PruneRecord, signer: &dyn Signer) -> Result<Self, KeyError> {
        let signature = signer.sign(&record.encode())?;
        Ok(SignedPrune {
            record,
            key: signer.public_key(),
            signature,
        })
    }

    /// Whether it is signed by `key`.
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.key == *key && key.verifies(&self.record.encode(), &self.signature)
    }

    /// The log leaf: the encoded record, the key, the signature.
    pub fn to_leaf(&self) -> Vec<u8> {
        let mut out = self.record.encode();
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses a log leaf (`None`: not a prune record).
    pub fn from_leaf(bytes: &[u8]) -> Option<SignedPrune> {
        let (record, rest) = PruneRecord::decode(bytes)?;
        let (key, rest) = rest.split_first_chunk::<32>()?;
        let (signature, rest) = rest.split_first_chunk::<64>()?;
        if !rest.is_empty() {
            return None;
        }
        Some(SignedPrune {
            record,
            key: PublicKey(*key),
            signature: *signature,
        })
    }
}

/// The latest prune record signed by `key` of every run, with its leaf index.
pub(super) fn pruned_runs(
    leaves: &[LogLeaf],
    key: &PublicKey,
) -> BTreeMap<String, (u64, PruneRecord)> {
    let mut out = BTreeMap::new();
    for leaf in leaves {
        if let Some(p) = SignedPrune::from_leaf(&leaf.data)
            && p.verifies(key)
            && p.record.run_id == leaf.run_id
        {
            out.insert(leaf.run_id.clone(), (leaf.index, p.record));
        }
    }
    out
}

/// One run [`prune`] deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// The run.
    pub run_id: String,
    /// Its entries when pruned.
    pub entries: u64,
    /// The index of its prune record in the log.
    pub leaf: u64,
}

/// What [`prune`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// The runs pruned, oldest first.
    pub pruned: Vec<Pruned>,
    /// Runs that ended before the date but were left, and why (held by someone, or not
    /// covered by a checkpoint signed by the key: audit and checkpoint them first).
    pub skipped: Vec<(String, String)>,
}

/// Why [`prune`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// The actor's id or reason is empty.
    #[error("a prune names who pruned and why: the actor's id and reason must not be empty")]
    NoActor,
    /// The store failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The vault failed erasing a pruned run's secret inputs.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Prunes every run that ended (a terminal status) before `ended_before_ms` (its record's
/// last change, on the store's clock): under the run's lease, checks its latest checkpoint
/// signed by `signer` covers its whole trace (otherwise the run is skipped: what was deleted
/// could not be proved), appends a signed [`PruneRecord`] naming `by` to the log with a new
/// signed tree head, deletes the run ([`JournalStore::delete_run`]), and erases from `vault`
/// its secret inputs no remaining run holds. The run's checkpoint leaves stay: the log and
/// every head kept before still verify, and [`audit`](super::audit) reports the run as
/// pruned. Finally compacts the store.
pub async fn prune(
    store: &dyn JournalStore,
    vault: Option<&dyn Vault>,
    signer: &dyn Signer,
    ended_before_ms: u64,
    by: Actor,
    now_ms: u64,
) -> Result<PruneReport, PruneError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if by.id.trim().is_empty() || by.reason.trim().is_empty() {
        return Err(PruneError::NoActor);
    }
    let key = signer.public_key();
    let log = EvidenceLog::new();
    let mut report = PruneReport::default();
    let records = store.runs(&RunQuery::new()).await?;
    for r in records
        .iter()
        .filter(|r| r.status.is_terminal() && r.updated_ms < ended_before_ms)
    {
        let who = format!(
            "operator-prune-{}-{}-{}",
            by.id,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let Some(lease) = store
            .claim_run(&r.run_id, &who, now_ms, OPERATION_LEASE_MS)
            .await?
        else {
            report
                .skipped
                .push((r.run_id.clone(), "someone holds its lease".into()));
            continue;
        };
        let entries = store.load(&r.run_id).await?.unwrap_or_default();
        let covered = match (
            checkpoint_of(&entries),
            super::latest_checkpoint(store, &key, &r.run_id).await?,
        ) {
            (Some(now), Some(SignedCheckpoint { checkpoint, .. })) => checkpoint == now,
            _ => false,
        };
        let Some(Checkpoint {
            entries: n, root, ..
        }) = checkpoint_of(&entries).filter(|_| covered)
        else {
            store.release(&lease).await?;
            report.skipped.push((
                r.run_id.clone(),
                "its latest checkpoint signed by the key does not cover its whole trace \
                 (checkpoint it first: what is deleted must be proved)"
                    .into(),
            ));
            continue;
        };
        let record = PruneRecord {
            run_id: r.run_id.clone(),
            entries: n,
            root,
            by: by.clone(),
            time_ms: now_ms,
        };
        let signed = SignedPrune::sign(record, signer)
            .map_err(|e| JournalError::Io(format!("signing evidence: {e}")))?;
        log.catch_up(store).await?;
        let leaf = log
            .append_leaf(
                store,
                signer,
                now_ms,
                LogLeaf {
                    index: 0,
                    run_id: r.run_id.clone(),
                    data: signed.to_leaf(),
                },
            )
            .await?;
        store.delete_run(&lease).await?;
        if let Some(vault) = vault {
            for v in entries
                .first()
                .map_or_else(Vec::new, |e| secret_inputs(&e.event))
            {
                if store.referencing(&Reference::Secret(v)).await?.is_empty() {
                    match vault.erase(v).await {
                        Ok(()) | Err(VaultError::Unknown(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        report.pruned.push(Pruned {
            run_id: r.run_id.clone(),
            entries: n,
            leaf,
        });
    }
    if !report.pruned.is_empty() {
        store.compact().await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prune_record_round_trips_and_is_no_checkpoint() {
        let signer = crate::evidence::KeySigner::from_seed([1; 32]);
        let r = PruneRecord::new("r-ü", 7, Digest([3; 32]), Actor::new("ops", "90 days"), 5);
        let signed = SignedPrune::sign(r.clone(), &signer).unwrap();
        let leaf = signed.to_leaf();
        let back = SignedPrune::from_leaf(&leaf).expect("parses");
        assert_eq!(back.record, r);
        assert!(back.verifies(&signer.public_key()));
        assert!(SignedCheckpoint::from_leaf(&leaf).is_none());
        let mut bad = leaf.clone();
        bad[20] ^= 1;
        assert!(SignedPrune::from_leaf(&bad).is_none_or(|p| !p.verifies(&signer.public_key())));
        assert!(SignedPrune::from_leaf(&leaf[..leaf.len() - 1]).is_none());
    }
}
