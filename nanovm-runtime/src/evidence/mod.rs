//! Evidence an auditor accepts: signed checkpoints of runs, and a Merkle log across the runs
//! of a store (`docs/compliance.md`).
//!
//! The blake3 chain of a trace proves it is internally consistent, not who wrote it: anyone
//! with the program can produce a chain that verifies. With a [`Signer`] set on the runtime
//! ([`RuntimeBuilder::signer`](crate::RuntimeBuilder::signer); off by default), every
//! execution that ends (a run end, a suspension, a reconciliation pause) is followed by a
//! [`SignedCheckpoint`] of `(run_id, entries, root, program_hash)`, appended as a leaf to the
//! store's evidence log ([`JournalStore::log_append`]), and by a [`SignedTreeHead`] over the
//! whole log (RFC 6962 hashing, [`merkle`]). [`audit`] checks a store against a key and a head
//! kept elsewhere: a deleted run, a rolled-back store, swapped runs, rewritten rows and forged
//! runs are each reported by name ([`FindingKind`]).
//!
//! The checkpoint is written right after the execution's last write, not in the same
//! transaction: a crash in between leaves entries beyond the last checkpoint, which [`audit`]
//! reports as [`FindingKind::Uncovered`] (a warning, like a run still executing).

pub mod merkle;

mod checkpoint;
mod prune;
mod signer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

pub use checkpoint::{Checkpoint, SignedCheckpoint, SignedTreeHead, TreeHead};
pub use prune::{PruneError, PruneRecord, PruneReport, Pruned, SignedPrune, prune};
pub use signer::{KeyError, KeySigner, PublicKey, Signer};

use crate::store::{JournalError, JournalStore, LogLeaf, Reference, RunQuery, swapped_with};
use crate::trace::{Entry, Event, RunStatus};
use crate::value::VaultId;
use crate::view::RunView;

/// The checkpoint of a trace (`None`: it does not start with `run_started`).
pub fn checkpoint_of(entries: &[Entry]) -> Option<Checkpoint> {
    let (first, last) = (entries.first()?, entries.last()?);
    match &first.event {
        Event::RunStarted {
            run_id,
            program_hash,
            ..
        } => Some(Checkpoint {
            run_id: run_id.clone(),
            entries: entries.len() as u64,
            root: last.hash,
            program_hash: *program_hash,
        }),
        _ => None,
    }
}

/// Signs a checkpoint of `entries` (a run's whole stored trace), appends it to `store`'s log
/// unless the run's latest leaf says the same already, then signs and keeps a tree head over
/// the whole log (time `now_ms`). Reads the whole log once (a fresh [`EvidenceLog`]); the
/// runtime keeps one [`EvidenceLog`] per process instead, and calls
/// [`EvidenceLog::checkpoint`] after every execution end when it has a signer. Call this to
/// checkpoint runs written before signing was turned on.
pub async fn checkpoint(
    store: &dyn JournalStore,
    signer: &dyn Signer,
    now_ms: u64,
    entries: &[Entry],
) -> Result<(), JournalError> {
    EvidenceLog::new()
        .checkpoint(store, signer, now_ms, entries)
        .await
}

/// One store's evidence log as this process has read it: the Merkle tree's frontier
/// ([`merkle::Frontier`]) and every run's latest checkpoint. Built from the whole log on its
/// first use, then kept up to date by reading only the leaves appended since (by this
/// process or another): a checkpoint costs O(log n) hashing and no read of earlier leaves.
/// Use one per store.
#[derive(Debug, Default)]
pub struct EvidenceLog {
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    frontier: merkle::Frontier,
    /// By the log's `run_id` column: the run's latest leaf that parses as a checkpoint.
    latest: HashMap<String, SignedCheckpoint>,
    /// The hashes of the last [`RECENT`] leaves (the last is leaf `size - 1`): to tell a
    /// leaf this process already read from a log replaced under it.
    recent: VecDeque<merkle::Hash>,
}

/// How many recent leaf hashes an [`EvidenceLog`] keeps.
const RECENT: usize = 4096;

impl LogState {
    /// Applies `leaf` if it is the next one; false when there is a gap before it.
    fn apply(&mut self, leaf: &LogLeaf) -> bool {
        let size = self.frontier.size();
        if leaf.index < size {
            return true;
        }
        if leaf.index > size {
            return false;
        }
        let hash = merkle::leaf_hash(&leaf.data);
        self.frontier.push(hash);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(hash);
        if let Some(s) = SignedCheckpoint::from_leaf(&leaf.data) {
            self.latest.insert(leaf.run_id.clone(), s);
        }
        true
    }

    /// Whether leaf `index` (below the size) was read as the leaf hashing to `hash`.
    fn saw(&self, index: u64, hash: &merkle::Hash) -> bool {
        let first = self.frontier.size() - self.recent.len() as u64;
        index
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.recent.get(i))
            .is_some_and(|h| h == hash)
    }
}

impl EvidenceLog {
    /// A log not read yet: its first use reads the store's whole log.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the leaves appended since this process last looked; rebuilds from the whole log
    /// when they do not follow on (the store's log was replaced under the process).
    async fn catch_up(&self, store: &dyn JournalStore) -> Result<(), JournalError> {
        let from = self.state().frontier.size();
        let leaves = store.log(from).await?;
        {
            let mut st = self.state();
            if leaves.iter().all(|l| st.apply(l)) {
                return Ok(());
            }
        }
        let leaves = store.log(0).await?;
        let mut st = self.state();
        *st = LogState::default();
        for l in &leaves {
            if !st.apply(l) {
                return Err(JournalError::Io(format!(
                    "the evidence log skips from leaf {} to leaf {}",
                    st.frontier.size(),
                    l.index
                )));
            }
        }
        Ok(())
    }

    /// [`checkpoint`] through this process's view of the log: appends the checkpoint of
    /// `entries` unless the run's latest leaf says the same already, and signs a tree head
    /// over the whole log, its root from the frontier.
    pub async fn checkpoint(
        &self,
        store: &dyn JournalStore,
        signer: &dyn Signer,
        now_ms: u64,
        entries: &[Entry],
    ) -> Result<(), JournalError> {
        let Some(cp) = checkpoint_of(entries) else {
            return Ok(());
        };
        let key_err = |e: KeyError| JournalError::Io(format!("signing evidence: {e}"));
        self.catch_up(store).await?;
        let same = self
            .state()
            .latest
            .get(&cp.run_id)
            .is_some_and(|l| l.checkpoint == cp && l.key == signer.public_key());
        if same {
            return Ok(());
        }
        let signed = SignedCheckpoint::sign(cp, signer).map_err(key_err)?;
        let leaf = LogLeaf {
            index: 0,
            run_id: signed.checkpoint.run_id.clone(),
            data: signed.to_leaf(),
        };
        self.append_leaf(store, signer, now_ms, leaf)
            .await
            .map(|_| ())
    }

    /// Appends `leaf` (its index is the store's to choose) to the store's log, then signs and
    /// keeps a tree head over the whole log; returns the leaf's index. The log must have been
    /// caught up with before.
    async fn append_leaf(
        &self,
        store: &dyn JournalStore,
        signer: &dyn Signer,
        now_ms: u64,
        leaf: LogLeaf,
    ) -> Result<u64, JournalError> {
        let key_err = |e: KeyError| JournalError::Io(format!("signing evidence: {e}"));
        let index = store.log_append(&leaf.run_id, &leaf.data).await?;
        let hash = merkle::leaf_hash(&leaf.data);
        let (behind, replaced) = {
            let mut st = self.state();
            if index < st.frontier.size() {
                // Read already (a concurrent checkpoint's catch-up), unless the log was
                // replaced under the process and leaf `index` is another one now.
                (false, !st.saw(index, &hash))
            } else {
                (!st.apply(&LogLeaf { index, ..leaf }), false)
            }
        };
        if replaced {
            *self.state() = LogState::default();
        }
        if behind || replaced {
            // Another writer's leaves came first (read them), or read the log again.
            self.catch_up(store).await?;
        }
        let head = {
            let st = self.state();
            TreeHead {
                size: st.frontier.size(),
                root: st.frontier.root(),
                time_ms: now_ms,
            }
        };
        let head = SignedTreeHead::sign(head, signer).map_err(key_err)?;
        store.put_head(head.head.size, &head.to_json()).await?;
        Ok(index)
    }
}

/// What [`audit`] found wrong (or worth saying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// A log leaf that is not a checkpoint signed by the key (a forged or damaged checkpoint).
    ForgedLeaf,
    /// A tree head (the store's or the one kept) that is not signed by the key.
    BadHead,
    /// The log is shorter than a head says it was: an older backup was restored, or
    /// checkpoints were deleted.
    RolledBack,
    /// The log's leaves are not those a head covered: checkpoints rewritten or reordered.
    LogRewritten,
    /// A run that was checkpointed is not in the store.
    DeletedRun,
    /// A run's rows hold another run's trace.
    SwappedRun,
    /// A run's trace is not the one checkpointed (rows rewritten, entries removed, or a re-run
    /// with invented inputs), or its rows do not verify.
    RewrittenRun,
    /// A run that ended or is suspended without any checkpoint signed by the key (written
    /// without the key, or by a runtime without a signer).
    Unsigned,
    /// Entries beyond the run's last checkpoint (a run executing, or a crash between its last
    /// write and its checkpoint), or leaves beyond the store's last head. A warning.
    Uncovered,
    /// A stored run holds a secret input its `run_started` records but the store's erasure
    /// index does not list it for the run (index rows deleted or lost): an erasure by that
    /// vault id would miss the run.
    Unindexed,
    /// A checkpointed run that is not in the store because it was pruned: a prune record
    /// signed by the key follows its last checkpoint in the log, naming who pruned it, when
    /// and why ([`prune`]). Not a problem.
    Pruned,
}

impl FindingKind {
    /// False for what an audit reports without failing: [`FindingKind::Uncovered`] (a warning)
    /// and [`FindingKind::Pruned`] (a recorded prune).
    pub fn is_problem(self) -> bool {
        !matches!(self, FindingKind::Uncovered | FindingKind::Pruned)
    }
}

/// One thing [`audit`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// What.
    pub kind: FindingKind,
    /// The run concerned, if one.
    pub run_id: Option<String>,
    /// A sentence naming what is wrong.
    pub message: String,
}

/// The result of [`audit`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuditReport {
    /// Leaves in the store's log.
    pub leaves: u64,
    /// Runs in the store.
    pub runs: u64,
    /// The store's latest signed tree head, if it is signed by the key and covers the whole
    /// log as it is now: the head to keep for the next audit.
    pub head: Option<SignedTreeHead>,
    /// What was found, problems first in the order checked.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// True when nothing but warnings ([`FindingKind::Uncovered`]) was found.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| !f.kind.is_problem())
    }
}

fn finding(kind: FindingKind, run_id: Option<&str>, message: String) -> Finding {
    Finding {
        kind,
        run_id: run_id.map(str::to_string),
        message,
    }
}

/// Checks run `run_id`'s stored trace against its latest checkpoint `latest` (`(leaf index,
/// checkpoint)`); `others`: the latest checkpoint of every run, to name a swap.
fn check_run(
    run_id: &str,
    loaded: Result<Option<Vec<Entry>>, JournalError>,
    latest: Option<&(u64, Checkpoint)>,
    others: &BTreeMap<String, (u64, Checkpoint)>,
) -> Vec<Finding> {
    use FindingKind::*;
    let id = Some(run_id);
    let entries = match loaded {
        Ok(Some(e)) => e,
        Ok(None) => {
            return match latest {
                Some((i, cp)) => vec![finding(
                    DeletedRun,
                    id,
                    format!(
                        "run `{run_id}` was checkpointed (log leaf {i}: {} entries, root {}) but is not in the store: it was deleted",
                        cp.entries, cp.root
                    ),
                )],
                None => vec![],
            };
        }
        Err(JournalError::Corrupt { reason, .. }) if swapped_with(&reason).is_some() => {
            let other = swapped_with(&reason).unwrap_or_default();
            return vec![finding(
                SwappedRun,
                id,
                format!("run `{run_id}` holds the trace of run `{other}`: runs were swapped"),
            )];
        }
        Err(e) => {
            return vec![finding(
                RewrittenRun,
                id,
                format!(
                    "run `{run_id}`: its stored rows do not verify ({e}): they were rewritten or damaged"
                ),
            )];
        }
    };
    let Some(now) = checkpoint_of(&entries) else {
        return vec![finding(
            RewrittenRun,
            id,
            format!("run `{run_id}`: its stored trace does not start with `run_started`"),
        )];
    };
    let mut out = Vec::new();
    if now.run_id != run_id {
        let also = match others.get(&now.run_id) {
            Some((i, cp))
                if cp.root == now.root
                    || entries
                        .get(cp.entries.saturating_sub(1) as usize)
                        .is_some_and(|e| e.hash == cp.root) =>
            {
                format!(
                    " (the trace checkpointed for `{}` at log leaf {i})",
                    now.run_id
                )
            }
            _ => String::new(),
        };
        out.push(finding(
            SwappedRun,
            id,
            format!(
                "run `{run_id}` holds the trace of run `{}`{also}: runs were swapped",
                now.run_id
            ),
        ));
        return out;
    }
    let status = RunView::of(&entries).status();
    let Some((index, cp)) = latest else {
        if status == RunStatus::Running {
            out.push(finding(
                Uncovered,
                id,
                format!(
                    "run `{run_id}` is running and has no checkpoint yet ({} entries)",
                    now.entries
                ),
            ));
        } else {
            out.push(finding(
                Unsigned,
                id,
                format!(
                    "run `{run_id}` is {status} but no checkpoint signed by this key covers it ({} entries, root {}): it was written without the key (a forged run) or by a runtime without a signer",
                    now.entries, now.root
                ),
            ));
        }
        return out;
    };
    if now == *cp {
        return out;
    }
    let prefix_ok = cp.entries <= now.entries
        && cp.program_hash == now.program_hash
        && usize::try_from(cp.entries)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| entries.get(n))
            .is_some_and(|e| e.hash == cp.root);
    if prefix_ok {
        // Tombstones nobody signed for: an erasure without the key, or written behind its back.
        let tombstones = entries
            .iter()
            .skip(usize::try_from(cp.entries).unwrap_or(usize::MAX))
            .filter(|e| matches!(e.event, Event::Erased { .. }))
            .count();
        out.push(finding(
            Uncovered,
            id,
            format!(
                "run `{run_id}` has {} entries beyond its last checkpoint (log leaf {index}, {} entries){}",
                now.entries - cp.entries,
                cp.entries,
                if tombstones > 0 {
                    format!(
                        ", {tombstones} of them `erased` tombstones no checkpoint vouches for (an erasure made without the signing key, or written behind its back)"
                    )
                } else {
                    String::new()
                }
            ),
        ));
        return out;
    }
    if let Some((other, (i, _))) = others
        .iter()
        .find(|(other, (_, c))| other.as_str() != run_id && c.root == now.root)
    {
        out.push(finding(
            SwappedRun,
            id,
            format!("run `{run_id}` holds the trace checkpointed for run `{other}` (log leaf {i}): runs were swapped"),
        ));
        return out;
    }
    let what = if now.entries < cp.entries {
        "entries were removed, or an older copy of the run restored"
    } else if cp.program_hash != now.program_hash {
        "it was re-run with another program"
    } else {
        "its rows were rewritten and rechained, or it was re-run with invented inputs or results"
    };
    out.push(finding(
        RewrittenRun,
        id,
        format!(
            "run `{run_id}` does not match its last checkpoint (log leaf {index}: {} entries, root {}; stored: {} entries, root {}): {what}",
            cp.entries, cp.root, now.entries, now.root
        ),
    ));
    out
}

/// The latest checkpoint of run `run_id` in `store`'s log signed by `key` (`None`: none).
pub async fn latest_checkpoint(
    store: &dyn JournalStore,
    key: &PublicKey,
    run_id: &str,
) -> Result<Option<SignedCheckpoint>, JournalError> {
    Ok(store
        .log(0)
        .await?
        .iter()
        .rev()
        .filter(|l| l.run_id == run_id)
        .filter_map(|l| SignedCheckpoint::from_leaf(&l.data))
        .find(|s| s.verifies(key) && s.checkpoint.run_id == run_id))
}

/// A proof that a run's checkpoint is a leaf of the log under a signed tree head: what an
/// auditor can check without the store (RFC 6962 inclusion proof).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InclusionProof {
    /// The run's checkpoint (the leaf).
    pub checkpoint: SignedCheckpoint,
    /// Its index in the log.
    pub index: u64,
    /// The signed tree head it is proven under.
    pub head: SignedTreeHead,
    /// The audit path from the leaf to the head's root.
    pub path: Vec<merkle::Hash>,
}

impl InclusionProof {
    /// Whether the checkpoint and the head are signed by `key` and the path leads from the
    /// leaf to the head's root.
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.checkpoint.verifies(key)
            && self.head.verifies(key)
            && merkle::verify_inclusion(
                &self.checkpoint.leaf_hash(),
                self.index,
                self.head.head.size,
                &self.path,
                &self.head.root_hash(),
            )
    }
    /// The JSON form an auditor checks offline: `{"checkpoint": {..}, "index": N, "head":
    /// {..}, "path": ["hex", ..]}`, the checkpoint and the head as their own `to_json`.
    pub fn to_json(&self) -> String {
        let parse = |t: String| serde_json::from_str::<serde_json::Value>(&t).unwrap_or_default();
        serde_json::json!({
            "checkpoint": parse(self.checkpoint.to_json()),
            "index": self.index,
            "head": parse(self.head.to_json()),
            "path": self.path.iter().map(|h| signer::hex(h)).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Parses the JSON form (it says nothing of whether the proof verifies:
    /// [`InclusionProof::verifies`]).
    pub fn from_json(text: &str) -> Result<InclusionProof, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let part = |k: &str| {
            v.get(k)
                .filter(|p| p.is_object())
                .map(serde_json::Value::to_string)
                .ok_or_else(|| format!("`{k}` is missing or not an object"))
        };
        let checkpoint = SignedCheckpoint::from_json(&part("checkpoint")?)
            .map_err(|e| format!("`checkpoint`: {e}"))?;
        let head = SignedTreeHead::from_json(&part("head")?).map_err(|e| format!("`head`: {e}"))?;
        let index = v
            .get("index")
            .and_then(serde_json::Value::as_u64)
            .ok_or("`index` is missing or not a number")?;
        let path = v
            .get("path")
            .and_then(serde_json::Value::as_array)
            .ok_or("`path` is missing or not an array")?
            .iter()
            .map(|h| {
                h.as_str()
                    .and_then(signer::unhex)
                    .and_then(|b| merkle::Hash::try_from(b).ok())
                    .ok_or_else(|| format!("`path`: {h} is not a 32-byte hex hash"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InclusionProof {
            checkpoint,
            index,
            head,
            path,
        })
    }
}

/// The inclusion proof of run `run_id`'s latest checkpoint signed by `key`, under the store's
/// latest signed tree head (`None`: no such checkpoint under a head, or the store's head is
/// not the key's or does not match the log: [`audit`] says which).
pub async fn prove_inclusion(
    store: &dyn JournalStore,
    key: &PublicKey,
    run_id: &str,
) -> Result<Option<InclusionProof>, JournalError> {
    let leaves = store.log(0).await?;
    let Some(head) = store
        .head()
        .await?
        .and_then(|t| SignedTreeHead::from_json(&t).ok())
        .filter(|h| h.verifies(key))
    else {
        return Ok(None);
    };
    let Ok(size) = usize::try_from(head.head.size) else {
        return Ok(None);
    };
    if size > leaves.len() {
        return Ok(None);
    }
    let hashes: Vec<merkle::Hash> = leaves[..size]
        .iter()
        .map(|l| merkle::leaf_hash(&l.data))
        .collect();
    if merkle::root(&hashes) != head.head.root {
        return Ok(None);
    }
    let found = leaves[..size].iter().enumerate().rev().find_map(|(i, l)| {
        let s = SignedCheckpoint::from_leaf(&l.data)?;
        (l.run_id == run_id && s.checkpoint.run_id == run_id && s.verifies(key)).then_some((i, s))
    });
    let Some((index, checkpoint)) = found else {
        return Ok(None);
    };
    let path = merkle::inclusion_proof(&hashes, index).unwrap_or_default();
    Ok(Some(InclusionProof {
        checkpoint,
        index: index as u64,
        head,
        path,
    }))
}

/// Whether run `run_id` of `store` is covered by its latest checkpoint signed by `key`: the
/// findings for that run alone (empty: covered exactly).
pub async fn check_stored_run(
    store: &dyn JournalStore,
    key: &PublicKey,
    run_id: &str,
) -> Result<Vec<Finding>, JournalError> {
    let (latest, _) = latest_checkpoints(&store.log(0).await?, key);
    let loaded = store.load(run_id).await;
    Ok(check_run(run_id, loaded, latest.get(run_id), &latest))
}

/// The latest checkpoint signed by `key` of every run in `leaves`, and the findings about
/// leaves that are not that.
fn latest_checkpoints(
    leaves: &[crate::store::LogLeaf],
    key: &PublicKey,
) -> (BTreeMap<String, (u64, Checkpoint)>, Vec<Finding>) {
    let mut latest = BTreeMap::new();
    let mut findings = Vec::new();
    for (pos, leaf) in leaves.iter().enumerate() {
        let i = leaf.index;
        if i != pos as u64 {
            findings.push(finding(
                FindingKind::LogRewritten,
                Some(&leaf.run_id),
                format!("log leaf {pos} is stored at index {i}: leaves were removed or reordered"),
            ));
        }
        match SignedCheckpoint::from_leaf(&leaf.data) {
            Some(s) if s.verifies(key) && s.checkpoint.run_id == leaf.run_id => {
                latest.insert(leaf.run_id.clone(), (i, s.checkpoint));
            }
            Some(s) if s.verifies(key) => findings.push(finding(
                FindingKind::ForgedLeaf,
                Some(&leaf.run_id),
                format!(
                    "log leaf {i} is filed under run `{}` but checkpoints run `{}`",
                    leaf.run_id, s.checkpoint.run_id
                ),
            )),
            Some(s) => findings.push(finding(
                FindingKind::ForgedLeaf,
                Some(&leaf.run_id),
                format!(
                    "log leaf {i} (run `{}`) is not signed by this key (signed by {}): a forged checkpoint",
                    leaf.run_id, s.key
                ),
            )),
            None => match SignedPrune::from_leaf(&leaf.data) {
                Some(p) if p.verifies(key) && p.record.run_id == leaf.run_id => {}
                Some(p) => findings.push(finding(
                    FindingKind::ForgedLeaf,
                    Some(&leaf.run_id),
                    format!(
                        "log leaf {i} (run `{}`) is a prune record of run `{}` that is not signed by this key or filed under another run: a forged prune",
                        leaf.run_id, p.record.run_id
                    ),
                )),
                None => findings.push(finding(
                    FindingKind::ForgedLeaf,
                    Some(&leaf.run_id),
                    format!("log leaf {i} (run `{}`) is not a signed checkpoint", leaf.run_id),
                )),
            },
        }
    }
    (latest, findings)
}

/// Audits `store` against `key` and, if given, a tree head `kept` from an earlier audit (kept
/// by the operator, or published): every log leaf must be a checkpoint signed by the key, the
/// log must extend the kept head (an RFC 6962 consistency proof), every checkpointed run must
/// still be in the store with exactly the checkpointed trace (or a continuation of it), and
/// every run that ended or is suspended must be checkpointed. See [`FindingKind`].
pub async fn audit(
    store: &dyn JournalStore,
    key: &PublicKey,
    kept: Option<&SignedTreeHead>,
) -> Result<AuditReport, JournalError> {
    use FindingKind::*;
    let leaves = store.log(0).await?;
    let n = leaves.len() as u64;
    let hashes: Vec<merkle::Hash> = leaves.iter().map(|l| merkle::leaf_hash(&l.data)).collect();
    let root_now = merkle::root(&hashes);
    let (latest, mut findings) = latest_checkpoints(&leaves, key);
    let prefix_root = |size: u64| {
        merkle::root(
            &hashes[..usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(hashes.len())],
        )
    };

    // The store's own latest head.
    let mut head = None;
    if let Some(text) = store.head().await? {
        match SignedTreeHead::from_json(&text) {
            Ok(h) if !h.verifies(key) => findings.push(finding(
                BadHead,
                None,
                "the store's latest tree head is not signed by this key".into(),
            )),
            Ok(h) if h.head.size > n => findings.push(finding(
                RolledBack,
                None,
                format!(
                    "the store's own latest tree head covers {} leaves but its log has {n}: checkpoints were deleted",
                    h.head.size
                ),
            )),
            Ok(h) if prefix_root(h.head.size) != h.head.root => findings.push(finding(
                LogRewritten,
                None,
                format!(
                    "the log's first {} leaves are not those of the store's own latest tree head: checkpoints were rewritten",
                    h.head.size
                ),
            )),
            Ok(h) if h.head.size < n => findings.push(finding(
                Uncovered,
                None,
                format!(
                    "the last {} log leaves are not under a signed tree head yet",
                    n - h.head.size
                ),
            )),
            Ok(h) => head = Some(h),
            Err(e) => findings.push(finding(
                BadHead,
                None,
                format!("the store's latest tree head does not parse: {e}"),
            )),
        }
    }

    // The head kept elsewhere.
    if let Some(k) = kept {
        let (size, when) = (k.head.size, k.head.time_ms);
        if !k.verifies(key) {
            findings.push(finding(
                BadHead,
                None,
                "the tree head you kept is not signed by this key".into(),
            ));
        } else if size > n {
            findings.push(finding(
                RolledBack,
                None,
                format!(
                    "the store's log has {n} leaves but the tree head you kept (signed at {when} ms) covers {size}: the store was rolled back (an older backup restored) or checkpoints were deleted"
                ),
            ));
        } else {
            let consistent = size == 0
                || merkle::consistency_proof(&hashes, usize::try_from(size).unwrap_or(usize::MAX))
                    .is_some_and(|p| {
                        merkle::verify_consistency(size, n, &k.head.root, &root_now, &p)
                    });
            if !consistent {
                findings.push(finding(
                    LogRewritten,
                    None,
                    format!(
                        "the log does not extend the tree head you kept ({size} leaves, signed at {when} ms): checkpoints were rewritten, removed or reordered (or another store's backup restored)"
                    ),
                ));
            }
        }
    }

    // Every run against its latest checkpoint; every checkpointed run still there.
    let records = store.runs(&RunQuery::new()).await?;
    let mut seen: HashMap<String, ()> = HashMap::new();
    // The erasure index, per secret: the runs it lists (`None`: the index cannot be read).
    let mut indexed: Option<HashMap<VaultId, Vec<String>>> = Some(HashMap::new());
    for r in &records {
        seen.insert(r.run_id.clone(), ());
        let loaded = store.load(&r.run_id).await;
        let secrets = match &loaded {
            Ok(Some(entries)) => entries
                .first()
                .map_or_else(Vec::new, |e| crate::trace::secret_inputs(&e.event)),
            _ => Vec::new(),
        };
        findings.extend(check_run(&r.run_id, loaded, latest.get(&r.run_id), &latest));
        for v in secrets {
            let Some(index) = indexed.as_mut() else {
                break;
            };
            let runs = match index.get(&v) {
                Some(runs) => runs,
                None => match store.referencing(&Reference::Secret(v)).await {
                    Ok(runs) => index.entry(v).or_insert(runs),
                    Err(e) => {
                        findings.push(finding(
                            Uncovered,
                            None,
                            format!(
                                "the store's erasure index could not be read ({e}): runs hidden from it were not looked for"
                            ),
                        ));
                        indexed = None;
                        break;
                    }
                },
            };
            if !runs.contains(&r.run_id) {
                findings.push(finding(
                    Unindexed,
                    Some(&r.run_id),
                    format!(
                        "run `{}` holds the secret {} (an input of its run_started) but the store's erasure index does not list it: `nanovm erase --vault-id` would miss the run (index rows deleted?)",
                        r.run_id,
                        v.to_hex()
                    ),
                ));
            }
        }
    }
    let pruned = prune::pruned_runs(&leaves, key);
    for run_id in records.iter().map(|r| &r.run_id) {
        if let Some((i, p)) = pruned.get(run_id)
            && latest.get(run_id).is_some_and(|(c, _)| c < i)
        {
            findings.push(finding(
                Uncovered,
                Some(run_id),
                format!(
                    "run `{run_id}` has a prune record (log leaf {i}) but is still in the store: a prune cut short (pruned by `{}`); prune again",
                    p.by.id
                ),
            ));
        }
    }
    for (run_id, (i, cp)) in &latest {
        if !seen.contains_key(run_id) {
            if let Some((pi, p)) = pruned.get(run_id)
                && pi > i
                && p.entries == cp.entries
                && p.root == cp.root
            {
                findings.push(finding(
                    Pruned,
                    Some(run_id),
                    format!(
                        "run `{run_id}` ({} entries, root {}) was pruned by `{}` at {}: {} (prune record: log leaf {pi})",
                        cp.entries, cp.root, p.by.id, crate::time::utc(p.time_ms), p.by.reason
                    ),
                ));
                continue;
            }
            findings.push(finding(
                DeletedRun,
                Some(run_id),
                format!(
                    "run `{run_id}` was checkpointed (log leaf {i}: {} entries, root {}) but is not in the store: it was deleted",
                    cp.entries, cp.root
                ),
            ));
        }
    }
    findings.sort_by_key(|f| !f.kind.is_problem());
    Ok(AuditReport {
        leaves: n,
        runs: records.len() as u64,
        head,
        findings,
    })
}
