//! What every store shares: checking an append against the stored run, the record's progress,
//! and encoding entries as rows.

use super::{Fence, JournalError};
use crate::canonical::Encoder;
use crate::trace::{
    Entry, Event, RunStatus, check_erasures, entry_hash, entry_line, secret_inputs,
};
use crate::value::{Digest, VaultId};
use crate::view::RunView;

/// What a store knows about the end of a stored run, to check an append against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tip {
    /// Entries stored.
    pub entries: u64,
    /// The last entry's hash (zero when none).
    pub last_hash: Digest,
    /// The lease epoch.
    pub epoch: u64,
    /// No execution is under way or due (the record's status is not `running`): an erasure's
    /// tombstone may be appended ([`crate::trace::at_rest`]).
    pub at_rest: bool,
}

/// The program name and hash of a `run_started` event.
pub(crate) fn started(event: &Event) -> Option<(&str, Digest)> {
    match event {
        Event::RunStarted {
            program,
            program_hash,
            ..
        } => Some((program, *program_hash)),
        _ => None,
    }
}

/// The program hash the last `migrated` event of `entries` pins the run to: the record's
/// `program_hash` follows it, so workers, version registries and the CLI find the run under
/// the version that continues it.
pub(crate) fn pin(entries: &[Entry]) -> Option<Digest> {
    entries.iter().rev().find_map(|e| match &e.event {
        Event::Migrated { to, .. } => Some(*to),
        _ => None,
    })
}

/// An append, checked as far as it can be without the store (its own chain and sequence
/// numbers), and reduced to what the store's transaction needs: owned, so it can be moved to a
/// writer thread or a connection task.
#[derive(Debug)]
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) struct Batch {
    pub run_id: String,
    /// Number of entries.
    pub len: u64,
    pub first_seq: u64,
    pub first_prev: Digest,
    pub last_hash: Digest,
    /// Program name and hash, if the first entry is `run_started`.
    pub started: Option<(String, Digest)>,
    /// What is wrong inside the batch, reported after the checks against the store (a fenced
    /// or conflicting writer learns that first).
    pub problem: Option<JournalError>,
    /// The events that move the record ([`RunView::moves_status`]), in order.
    pub moves: Vec<Event>,
    /// The program hash a `migrated` event of the batch pins the run to ([`pin`]).
    pub pin: Option<Digest>,
    /// The vault ids of the secret inputs of a `run_started` at seq 0 in the batch: the
    /// store's erasure index keeps them with the run in the same transaction.
    pub secrets: Vec<VaultId>,
    /// What the tombstone check needs of each event: the `erased` ones in full, any other
    /// as the `run_ended` / `suspended` it may be (only whether it is at rest matters).
    events: Vec<Event>,
}

impl Batch {
    pub(crate) fn new(run_id: &str, entries: &[Entry]) -> Batch {
        let first = entries.first();
        let mut batch = Batch {
            run_id: run_id.to_string(),
            len: entries.len() as u64,
            first_seq: first.map_or(0, |e| e.seq),
            first_prev: first.map_or(Digest::ZERO, |e| e.prev),
            last_hash: entries.last().map_or(Digest::ZERO, |e| e.hash),
            started: first
                .and_then(|e| started(&e.event))
                .map(|(p, h)| (p.to_string(), h)),
            problem: None,
            moves: entries
                .iter()
                .filter(|e| RunView::moves_status(&e.event))
                .map(|e| e.event.clone())
                .collect(),
            pin: pin(entries),
            secrets: first
                .filter(|e| e.seq == 0)
                .map_or_else(Vec::new, |e| secret_inputs(&e.event)),
            events: if entries
                .iter()
                .any(|e| matches!(e.event, Event::Erased { .. }))
            {
                entries.iter().map(|e| e.event.clone()).collect()
            } else {
                Vec::new()
            },
        };
        batch.problem = batch.inspect(entries).err();
        batch
    }

    fn inspect(&self, entries: &[Entry]) -> Result<(), JournalError> {
        let run_id = self.run_id.as_str();
        let invalid = |reason: String| JournalError::Invalid {
            run_id: run_id.to_string(),
            reason,
        };
        let mut scratch = Encoder::new();
        let mut prev = self.first_prev;
        // A fork's copied prefix starts with the original's `run_started`; the batch that
        // creates the fork must then hold its `forked` naming this run.
        let mut started_as: Option<&str> = None;
        for (i, entry) in entries.iter().enumerate() {
            let expected = self.first_seq + i as u64;
            if entry.seq != expected {
                return Err(JournalError::Conflict {
                    run_id: run_id.to_string(),
                    expected,
                    found: entry.seq,
                });
            }
            if entry.prev != prev {
                return Err(invalid(format!(
                    "entry #{expected}: `prev` is not the hash of the entry before it"
                )));
            }
            if entry_hash(&prev, entry.seq, &entry.event, &mut scratch) != entry.hash {
                return Err(invalid(format!(
                    "entry #{expected}: the hash does not match its contents"
                )));
            }
            match (&entry.event, expected) {
                (Event::RunStarted { run_id: id, .. }, 0) if id != run_id => {
                    started_as = Some(id);
                }
                // A fork of a fork holds its parent's `forked` too; the last one names it.
                (Event::Forked { run_id: id, .. }, _) if id == run_id => started_as = None,
                (Event::RunStarted { .. }, 0) => {}
                (event, 0) => {
                    return Err(invalid(format!(
                        "a run starts with `run_started`, not `{}`",
                        event.kind()
                    )));
                }
                (Event::RunStarted { .. }, _) => {
                    return Err(invalid(format!(
                        "entry #{expected}: a second `run_started`"
                    )));
                }
                _ => {}
            }
            prev = entry.hash;
        }
        if let Some(id) = started_as {
            return Err(invalid(format!(
                "its run_started names run `{id}` (and no `forked` names this run)"
            )));
        }
        Ok(())
    }

    /// Checks the batch against the stored tip (`None`: unknown run): fence first, then the
    /// sequence numbers, then the chain.
    pub(crate) fn check(
        &self,
        tip: Option<&Tip>,
        fence: Option<Fence>,
    ) -> Result<(), JournalError> {
        let (stored, last, epoch) =
            tip.map_or((0, Digest::ZERO, 0), |t| (t.entries, t.last_hash, t.epoch));
        if let Some(f) = fence
            && f.epoch != epoch
            && !crate::mutant(crate::Mutant::AppendWithoutFence)
        {
            return Err(JournalError::Fenced {
                run_id: self.run_id.clone(),
                held: f.epoch,
                current: epoch,
            });
        }
        if self.first_seq != stored {
            return Err(JournalError::Conflict {
                run_id: self.run_id.clone(),
                expected: stored,
                found: self.first_seq,
            });
        }
        if self.first_prev != last {
            return Err(JournalError::Invalid {
                run_id: self.run_id.clone(),
                reason: format!("entry #{stored}: `prev` is not the hash of the last stored entry"),
            });
        }
        match &self.problem {
            Some(e) => Err(e.clone()),
            None => self.check_tombstones(tip.is_some_and(|t| t.at_rest)),
        }
    }

    /// An `erased` tombstone is appended only where an erasure could append it: after an
    /// entry that ended an execution (the stored run at rest, or such an entry earlier in the
    /// batch) or another tombstone, naming its actor. Which secret it names is checked on
    /// load (`trace::check_erasures`), where the run's `run_started` is at hand.
    fn check_tombstones(&self, mut rest: bool) -> Result<(), JournalError> {
        for (i, event) in self.events.iter().enumerate() {
            match event {
                Event::Erased { by, .. } => {
                    let why = if !rest {
                        "it would follow an entry of an execution under way"
                    } else if by.id.trim().is_empty() || by.reason.trim().is_empty() {
                        "it names no actor"
                    } else {
                        continue;
                    };
                    return Err(JournalError::Invalid {
                        run_id: self.run_id.clone(),
                        reason: format!(
                            "entry #{}: an `erased` tombstone no erasure could write: {why}",
                            self.first_seq + i as u64
                        ),
                    });
                }
                e => rest = crate::trace::at_rest(e),
            }
        }
        Ok(())
    }
}

impl Batch {
    /// Checks the first entries of a run that must not exist yet
    /// ([`JournalStore::start_run`](super::JournalStore::start_run)): as an unfenced append,
    /// and a run the store holds (even one without entries) is a `Conflict`.
    pub(crate) fn check_start(&self, tip: Option<&Tip>) -> Result<(), JournalError> {
        if self.len == 0 {
            return Err(JournalError::Invalid {
                run_id: self.run_id.clone(),
                reason: "a run starts with `run_started`, and no entries were given".into(),
            });
        }
        self.check(tip, None)?;
        match tip {
            Some(t) => Err(JournalError::Conflict {
                run_id: self.run_id.clone(),
                expected: t.entries,
                found: self.first_seq,
            }),
            None => Ok(()),
        }
    }
}

/// Checks an append of `entries` against the stored tip; see [`Batch::check`].
pub(crate) fn check_append(
    run_id: &str,
    tip: Option<&Tip>,
    entries: &[Entry],
    fence: Option<Fence>,
) -> Result<Digest, JournalError> {
    let batch = Batch::new(run_id, entries);
    batch.check(tip, fence)?;
    Ok(batch.last_hash)
}

/// One stored entry: sequence number, hash and canonical JSON line.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) struct Row {
    pub seq: u64,
    pub hash: [u8; 32],
    pub line: String,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn encode_rows(entries: &[Entry]) -> Vec<Row> {
    entries
        .iter()
        .map(|e| Row {
            seq: e.seq,
            hash: e.hash.0,
            line: entry_line(e),
        })
        .collect()
}

const SWAPPED_PREFIX: &str = "the stored entries are run `";
const SWAPPED_SUFFIX: &str = "`'s (its `run_started` names it)";

/// The run whose entries a run's rows hold, when [`check_loaded`] refused them as another
/// run's (`reason`: the [`JournalError::Corrupt`] reason): what an audit names a swap by.
pub(crate) fn swapped_with(reason: &str) -> Option<&str> {
    reason
        .strip_prefix(SWAPPED_PREFIX)?
        .strip_suffix(SWAPPED_SUFFIX)
}

/// Checks that loaded entries (an unbroken chain already) are the run `run_id`'s: a non-empty
/// run starts with a `run_started` naming `run_id` (every later entry is chained to it), or is
/// a fork whose `forked` entry names `run_id`, and,
/// where the store keeps the run's last hash apart from the entries, the chain ends there. So
/// rows moved between runs, or a run cut short with its entry count adjusted, are refused as
/// [`JournalError::Corrupt`] instead of loading as another run's (or a shorter) trace.
pub(crate) fn check_loaded(
    run_id: &str,
    entries: &[Entry],
    last_hash: Option<Digest>,
) -> Result<(), JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason,
    };
    if let Some(first) = entries.first() {
        match &first.event {
            Event::RunStarted { run_id: named, .. } if named == run_id => {}
            // A fork: its copied prefix starts with the original's `run_started`, and its
            // (chained) `forked` entry names this run.
            Event::RunStarted { .. }
                if entries.iter().any(
                    |e| matches!(&e.event, Event::Forked { run_id: f, .. } if f == run_id),
                ) => {}
            Event::RunStarted { run_id: named, .. } => {
                return Err(corrupt(format!("{SWAPPED_PREFIX}{named}{SWAPPED_SUFFIX}")));
            }
            other => {
                return Err(corrupt(format!(
                    "the stored entries start with `{}`, not `run_started`",
                    other.kind()
                )));
            }
        }
    }
    // An `erased` entry no erasure could have appended (see `trace::check_erasures`).
    check_erasures(entries).map_err(|e| corrupt(e.to_string()))?;
    let end = entries.last().map_or(Digest::ZERO, |e| e.hash);
    match last_hash {
        Some(stored) if stored != end => Err(corrupt(format!(
            "the stored entries end at {}, the run's record keeps the last hash {}",
            end.short(),
            stored.short()
        ))),
        _ => Ok(()),
    }
}

/// Decodes stored rows (in `seq` order): every line must parse, be canonical, agree with its
/// `seq` and `hash` columns, and the whole must be an unbroken hash chain of `expected` entries
/// that is the run's own and ends at the record's `last_hash` ([`check_loaded`]).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn decode_rows(
    run_id: &str,
    expected: u64,
    last_hash: Digest,
    rows: impl IntoIterator<Item = (u64, Vec<u8>, String)>,
) -> Result<Vec<Entry>, JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason,
    };
    let mut scratch = Encoder::new();
    let mut prev = Digest::ZERO;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 16));
    for (i, (seq, hash, line)) in rows.into_iter().enumerate() {
        let i = i as u64;
        let entry: Entry = serde_json::from_str(&line)
            .map_err(|e| corrupt(format!("entry #{i} does not parse: {e}")))?;
        if entry_line(&entry) != line {
            return Err(corrupt(format!("entry #{i} is not in canonical form")));
        }
        if seq != i || entry.seq != i {
            return Err(corrupt(format!(
                "entry #{i} is stored as #{seq} and says #{}",
                entry.seq
            )));
        }
        if hash.as_slice() != entry.hash.0.as_slice() {
            return Err(corrupt(format!(
                "entry #{i}: the stored hash differs from the entry's"
            )));
        }
        if entry.prev != prev || entry_hash(&prev, i, &entry.event, &mut scratch) != entry.hash {
            return Err(corrupt(format!("entry #{i} breaks the hash chain")));
        }
        prev = entry.hash;
        out.push(entry);
    }
    if out.len() as u64 != expected {
        return Err(corrupt(format!(
            "{} entries stored, the run's record says {expected}",
            out.len()
        )));
    }
    check_loaded(run_id, &out, Some(last_hash))?;
    Ok(out)
}

/// A stored signed integer back to `u64`; negative means damaged storage.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_u64(run_id: &str, what: &str, v: i64) -> Result<u64, JournalError> {
    u64::try_from(v).map_err(|_| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: format!("{what} is negative ({v})"),
    })
}

/// A stored 32-byte digest.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_digest(run_id: &str, what: &str, v: &[u8]) -> Result<Digest, JournalError> {
    <[u8; 32]>::try_from(v)
        .map(Digest)
        .map_err(|_| JournalError::Corrupt {
            run_id: run_id.to_string(),
            reason: format!("{what} is {} bytes, not 32", v.len()),
        })
}

/// A stored status name.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL stores and vaults use it")
)]
pub(crate) fn to_status(run_id: &str, v: &str) -> Result<RunStatus, JournalError> {
    RunStatus::parse(v).ok_or_else(|| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: format!("unknown status `{v}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    fn trace(n: usize) -> Trace {
        let mut t = Trace::new();
        let mut s = Encoder::new();
        t.push(
            Event::RunStarted {
                run_id: "r".into(),
                program: "p".into(),
                program_hash: Digest::of(b"p"),
                inputs: Vec::new(),
            },
            &mut s,
        );
        for i in 1..n {
            t.push(
                Event::Decision {
                    step: "s".into(),
                    arm: Some(i as u32),
                    next: "s".into(),
                },
                &mut s,
            );
        }
        t
    }

    #[test]
    fn appends_are_checked_fence_first_then_seq_then_chain() {
        let t = trace(4);
        let e = t.entries();
        assert_eq!(check_append("r", None, &e[..2], None), Ok(e[1].hash));
        let tip = Tip {
            at_rest: false,
            entries: 2,
            last_hash: e[1].hash,
            epoch: 3,
        };
        assert_eq!(
            check_append("r", Some(&tip), &e[2..], Some(Fence { epoch: 3 })),
            Ok(e[3].hash)
        );
        assert!(matches!(
            check_append("r", Some(&tip), &e[2..], Some(Fence { epoch: 2 })),
            Err(JournalError::Fenced {
                held: 2,
                current: 3,
                ..
            })
        ));
        assert!(matches!(
            check_append("r", Some(&tip), &e[3..], None),
            Err(JournalError::Conflict {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            check_append("r", Some(&tip), &e[..1], None),
            Err(JournalError::Conflict {
                expected: 2,
                found: 0,
                ..
            })
        ));
        let mut bad = e[2..].to_vec();
        bad[0].prev = Digest::of(b"x");
        assert!(matches!(
            check_append("r", Some(&tip), &bad, None),
            Err(JournalError::Invalid { .. })
        ));
        assert!(matches!(
            check_append("other", None, &e[..1], None),
            Err(JournalError::Invalid { .. })
        ));
    }

    #[test]
    fn rows_round_trip_and_damage_is_corrupt() {
        let t = trace(3);
        let rows = || {
            encode_rows(t.entries())
                .into_iter()
                .map(|r| (r.seq, r.hash.to_vec(), r.line))
                .collect::<Vec<_>>()
        };
        let last = t.root();
        assert_eq!(decode_rows("r", 3, last, rows()).unwrap(), t.entries());
        assert!(decode_rows("r", 4, last, rows()).is_err());
        assert!(decode_rows("r", 3, Digest::ZERO, rows()).is_err());
        assert!(decode_rows("other", 3, last, rows()).is_err());
        let mut r = rows();
        r[1].2 = r[1].2.replace("\"arm\":1", "\"arm\":2");
        assert!(matches!(
            decode_rows("r", 3, last, r),
            Err(JournalError::Corrupt { .. })
        ));
        let mut r = rows();
        r[2].1[0] ^= 1;
        assert!(decode_rows("r", 3, last, r).is_err());
    }
}
