//! Erasure end to end: [`erase`] finds every run that holds a data subject's secrets (or one
//! secret) through the store's erasure index, appends an authenticated `erased` tombstone to
//! each under the run's lease, erases the values from the vault, and scrubs the store's logs.
//!
//! The rules (see `docs/compliance.md`, "Erasure"):
//!
//! - **Found by the index.** [`JournalStore::referencing`]: the runs tied to a subject
//!   ([`RunOptions::subject`](crate::RunOptions::subject), [`JournalStore::link_subject`]) or
//!   holding the vault id as a secret input (indexed with the run's `run_started`).
//! - **All or nothing over the runs.** Every affected run is claimed first (waiting up to
//!   `wait` for a lease someone holds) and must be at rest ([`RunView::at_rest`]: ended,
//!   suspended, paused for reconciliation). If one cannot be claimed or is executing, every
//!   lease is given back and nothing is written or erased ([`EraseError::Leased`],
//!   [`EraseError::Executing`]).
//! - **The tombstone first, under the lease.** Each run gets one `erased { vault_id, by }`
//!   per secret input being erased (none twice), appended fenced by its lease and giving the
//!   lease back in the same write, like every operator act. The tombstone changes no earlier
//!   byte: the chain and every earlier checkpoint still verify.
//! - **Then the vault**, then the subject's links, then [`JournalStore::compact`] (SQLite: the
//!   WAL checkpointed and truncated; the database has `secure_delete` on). An erasure cut
//!   short is completed by running it again: tombstones already written are not written twice,
//!   and erasing an erased value succeeds.

use std::time::Duration;

use crate::canonical::Encoder;
use crate::clock::Clock;
use crate::error::JournalError;
use crate::operator::{Claimed, claim, owner};
use crate::store::{JournalStore, Lease, Reference};
use crate::trace::{Actor, Entry, Event, RunStatus, Trace};
use crate::value::VaultId;
use crate::vault::{Vault, VaultError};
use crate::view::RunView;

/// What to erase.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Erase {
    /// Every secret input of every run tied to this data subject.
    Subject(String),
    /// One secret, in every run that holds it.
    Secret(VaultId),
}

impl Erase {
    fn reference(&self) -> Reference {
        match self {
            Erase::Subject(s) => Reference::Subject(s.clone()),
            Erase::Secret(v) => Reference::Secret(*v),
        }
    }
}

/// One run an erasure touched.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasedRun {
    /// The run.
    pub run_id: String,
    /// Its status (unchanged by the erasure).
    pub status: RunStatus,
    /// The secrets erased from it by this erasure (a tombstone each), in input order.
    pub erased: Vec<VaultId>,
    /// Secrets of the erasure the run held a tombstone for already (an earlier erasure).
    pub already: Vec<VaultId>,
    /// The run's entries after the erasure.
    pub entries: u64,
}

/// What [`erase`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Erasure {
    /// The runs, oldest first.
    pub runs: Vec<ErasedRun>,
    /// Every vault value erased (or found erased already), without repeats.
    pub vault_ids: Vec<VaultId>,
}

/// Why [`erase`] refused or failed. In the refusals (`Leased`, `Executing`) nothing was
/// written and nothing erased.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// The actor's id or reason is empty: an erasure names who asked and why.
    #[error(
        "an erasure names who asked for it and why: the actor's id and reason must not be empty"
    )]
    NoActor,
    /// Someone else holds an affected run's lease and still held it when the wait ran out.
    #[error(
        "run `{run_id}` is held by `{owner}`: an erasure never interleaves with an execution; \
         retry later or wait longer (nothing was erased)"
    )]
    Leased {
        /// The run.
        run_id: String,
        /// The lease owner.
        owner: String,
    },
    /// An affected run is executing, or was left mid-way by a crash (not at rest): a worker
    /// must take it to its next pause or its end first.
    #[error(
        "run `{run_id}` is {status} and not at rest (an execution is under way or must be \
         resumed first): erase it when it pauses or ends (nothing was erased)"
    )]
    Executing {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// The vault refused or failed (the tombstones written so far stay; run the erasure again).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store failed, or a run's trace does not verify.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Erases `what` (see the module docs): claims every run the store's index says references
/// it (waiting up to `wait` on `clock` for a lease someone holds), appends the tombstones
/// naming `by` under each run's lease, erases the values from `vault`, forgets a subject's
/// links, and compacts the store. Finding nothing is not an error: an empty [`Erasure`] (a
/// `Secret` no run holds is still erased from the vault if the vault has it).
pub async fn erase(
    store: &dyn JournalStore,
    vault: &dyn Vault,
    clock: &dyn Clock,
    what: &Erase,
    by: Actor,
    wait: Duration,
) -> Result<Erasure, EraseError> {
    if by.id.trim().is_empty() || by.reason.trim().is_empty() {
        return Err(EraseError::NoActor);
    }
    let run_ids = store.referencing(&what.reference()).await?;
    let who = owner("erase", &by);
    // Claim every run first: all or nothing.
    let mut held: Vec<(Lease, Vec<Entry>)> = Vec::new();
    let mut refusal = None;
    for run_id in &run_ids {
        match claim(store, clock, run_id, &who, wait).await {
            Ok(Claimed::Lease(lease)) => {
                let entries = match store.load(run_id).await {
                    Ok(Some(entries)) => entries,
                    Ok(None) => {
                        let _ = store.release(&lease).await;
                        continue;
                    }
                    Err(e) => {
                        held.push((lease, Vec::new()));
                        refusal = Some(EraseError::from(e));
                        break;
                    }
                };
                let view = RunView::of(&entries);
                let status = view.status();
                held.push((lease, entries));
                if !view.at_rest() {
                    refusal = Some(EraseError::Executing {
                        run_id: run_id.clone(),
                        status,
                    });
                    break;
                }
            }
            // Gone since the index was read.
            Ok(Claimed::Missing) => {}
            Ok(Claimed::Busy(record)) => {
                refusal = Some(EraseError::Leased {
                    run_id: run_id.clone(),
                    owner: record.lease_owner.unwrap_or_else(|| "?".into()),
                });
                break;
            }
            Err(e) => {
                refusal = Some(e.into());
                break;
            }
        }
    }
    if let Some(refusal) = refusal {
        for (lease, _) in &held {
            let _ = store.release(lease).await;
        }
        return Err(refusal);
    }
    // The tombstones, each run's in one write that gives its lease back.
    let mut report = Erasure::default();
    let mut leases = held.into_iter();
    while let Some((lease, entries)) = leases.next() {
        match tombstones(&lease.run_id, entries, what, &by) {
            Ok((new, run)) => {
                let written = if new.is_empty() {
                    store.release(&lease).await
                } else {
                    store.append_release(&lease.run_id, &new, &lease).await
                };
                if let Err(e) = written {
                    for (lease, _) in leases {
                        let _ = store.release(&lease).await;
                    }
                    return Err(e.into());
                }
                for v in run.erased.iter().chain(&run.already) {
                    if !report.vault_ids.contains(v) {
                        report.vault_ids.push(*v);
                    }
                }
                report.runs.push(run);
            }
            Err(e) => {
                let _ = store.release(&lease).await;
                for (lease, _) in leases {
                    let _ = store.release(&lease).await;
                }
                return Err(e.into());
            }
        }
    }
    if let Erase::Secret(v) = what
        && !report.vault_ids.contains(v)
    {
        report.vault_ids.push(*v);
    }
    // Then the values. A secret no run of this store holds may live in another vault: an
    // unknown id is not an error when runs were found (their tombstones say what was asked).
    for v in &report.vault_ids {
        match vault.erase(*v).await {
            Ok(()) => {}
            Err(VaultError::Unknown(_)) if !report.runs.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Erase::Subject(subject) = what {
        store.unlink_subject(subject).await?;
    }
    store.compact().await?;
    Ok(report)
}

/// The tombstones `what` adds to a run's stored `entries` (chained onto them), and what to
/// report for the run.
fn tombstones(
    run_id: &str,
    entries: Vec<Entry>,
    what: &Erase,
    by: &Actor,
) -> Result<(Vec<Entry>, ErasedRun), JournalError> {
    let view = RunView::of(&entries);
    let inputs = entries
        .first()
        .map_or_else(Vec::new, |e| crate::trace::secret_inputs(&e.event));
    let targets: Vec<VaultId> = match what {
        Erase::Subject(_) => inputs,
        Erase::Secret(v) => inputs.into_iter().filter(|i| i == v).collect(),
    };
    let mut trace = Trace::from_entries(entries).map_err(|e| JournalError::Corrupt {
        run_id: run_id.to_string(),
        reason: e.to_string(),
    })?;
    let mut scratch = Encoder::new();
    let mut new = Vec::new();
    let mut erased = Vec::new();
    let mut already = Vec::new();
    for v in targets {
        if view.erased_by(v).is_some() {
            already.push(v);
            continue;
        }
        let entry = trace.push(
            Event::Erased {
                vault_id: v,
                by: by.clone(),
            },
            &mut scratch,
        );
        new.push(entry.clone());
        erased.push(v);
    }
    Ok((
        new,
        ErasedRun {
            run_id: run_id.to_string(),
            status: view.status(),
            erased,
            already,
            entries: trace.len() as u64,
        },
    ))
}
